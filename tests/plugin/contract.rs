//! The keystore contract (`keyward_plugin_host::contract`) against the
//! first-party `fs` plugin; the other plugins' tests run it too.

use std::sync::Arc;

pub use keyward_plugin_host::contract::keystore_contract;
use keyward_plugin_host::PoolOptions;

use crate::{fs_keystore, TempDir};

// Four workers: a plugin call holds its worker (the fs calls run inline), so
// with two, a loaded machine could serve the 16 concurrent creates one after
// another on a single instance (seen once in a full suite).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keystore_fs_passes_the_keystore_contract() {
    let dir = TempDir::new("contract");
    let ks = fs_keystore(dir.path(), PoolOptions { max_instances: 4 }).await;
    let stats = ks.stats();
    keystore_contract(Arc::new(ks)).await;
    // The concurrent part really ran on more than one instance.
    assert!(stats.instances_created.load(std::sync::atomic::Ordering::Relaxed) > 1);
    assert!(crate::dir_names(dir.path()).is_empty(), "{:?}", crate::dir_names(dir.path()));
}
