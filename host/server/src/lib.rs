//! keyward-server: the KES API server.
//!
//! A request goes TLS ([`tls`]: the client's identity) → [`api`] (route,
//! authorization against [`auth`], the handler) → [`keys`] (the cache in front
//! of the keystore plugin) → `keyward_core::crypto` → the answer, recorded by
//! [`audit`] and [`metrics`]. [`server`] runs it all from a listener, with
//! SIGHUP reloads and graceful shutdown; [`config`] is the TOML it starts from.

pub mod api;
pub mod audit;
pub mod auth;
pub mod config;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod server;
pub mod sharded;
pub mod state;
pub mod tls;
