//! End-to-end tests: the real `keyward` binary over real mutual TLS.

mod harness;

mod auth;
mod bad_input;
mod keys;
mod lifecycle;
mod policies;
mod system;
mod tls;
