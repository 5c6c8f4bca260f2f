//! keyward: a KES-compatible key-management server, and the command line
//! that runs it and talks to it.
//!
//! This crate is the binary's wiring and the client; the server, the plugin
//! host and the core are crates of their own (see ARCHITECTURE.md):
//!
//! * `keyward_core`: keys, KES cryptography, the keystore and audit-sink traits;
//! * `keyward_plugin_host`: WebAssembly plugins behind those traits;
//! * `keyward_server`: TLS identities, policies, the API, the key cache, audit.

pub mod cli;
pub mod client;
pub mod dev;
pub mod kesconf;
pub mod plugins;
pub mod run;
