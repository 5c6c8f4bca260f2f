//! End-to-end tests: the real `keyward` binary over real mutual TLS.

mod harness;
#[path = "../common/tmpfs.rs"]
mod tmpfs;

mod abuse;
mod auth;
mod bad_input;
mod cli;
mod crash;
mod disk;
mod hostile;
mod keys;
mod lifecycle;
mod memory;
mod plugin_cli;
mod plugins;
mod policies;
mod seal;
mod secrets;
mod system;
mod tls;
mod webhook;
