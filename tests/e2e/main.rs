//! End-to-end tests: the real `keyward` binary over real mutual TLS.

#[path = "../common/guests.rs"]
mod guests;
mod harness;
#[path = "../common/skip.rs"]
mod skip;
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
#[path = "../common/openbao.rs"]
mod openbao;
#[path = "../common/openbao_cluster.rs"]
mod openbao_cluster;
mod plugin_add;
mod plugin_cli;
mod plugin_oci;
mod plugins;
mod policies;
#[path = "../common/registry.rs"]
mod registry;
mod seal;
mod secrets;
mod startup;
mod system;
mod tls;
mod vault;
mod vault_cluster;
mod webhook;

/// A component file: the checked-in copy of a bundled plugin
/// (`keystore_fs.wasm`, ...), or a fixture built from `plugins/`.
pub fn component(file: &str) -> std::path::PathBuf {
    if guests::BUNDLED.iter().any(|(_, f)| *f == file) {
        return guests::bundled_dir().join(file);
    }
    guests::built_dir().join(file)
}
