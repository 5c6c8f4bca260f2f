//! keyward: a KES-compatible key-management server.
//!
//! The host does TLS, identity, policy and all cryptography natively; where
//! keys are stored and where audit events go is behind the [`keys::store`] and
//! [`audit::sink`] seams, which WebAssembly plugins implement.

pub mod api;
pub mod audit;
pub mod auth;
pub mod bundled;
pub mod cli;
pub mod client;
pub mod config;
pub mod crypto;
pub mod dev;
pub mod kesconf;
pub mod keys;
pub mod logging;
pub mod metrics;
pub mod plugin;
pub mod server;
pub mod sharded;
pub mod state;
pub mod tls;
