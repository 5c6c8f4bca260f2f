//! Disk faults under `keystore-fs`, through the real plugin: a full disk and a
//! read-only mount. The machine runs as root, so permissions cannot make a
//! directory unwritable; each test mounts a small tmpfs instead (and skips,
//! saying so, where mounting is not permitted).
//!
//! What must hold: a create that cannot be stored is a clear `unavailable`
//! answer (not a trap), leaves no key file and no temporary file behind, and
//! costs no earlier key; reads keep working; once the fault is gone, creates
//! work again on the same instances.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use keyward_core::keystore::{Keystore, StoreError};
use keyward_plugin_host::{PluginKeystore, PoolOptions};

use crate::fs::TEMP_DIR;
use crate::tmpfs::{fill, Tmpfs};
use crate::{dir_names, fs_keystore};

/// The mounted tmpfs with a `keys` directory, and `keystore-fs` on it.
async fn keystore_on_tmpfs(tmpfs: &Tmpfs) -> (PathBuf, PluginKeystore) {
    let keys = tmpfs.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let ks = fs_keystore(&keys, PoolOptions { max_instances: 2 }).await;
    (keys, ks)
}

/// Asserts that the store holds exactly `names`, on disk and in its listing,
/// and that no temporary file is left.
async fn assert_only_keys(ks: &PluginKeystore, keys: &Path, names: &[&str]) {
    assert_eq!(ks.list("", "", 0).await.unwrap().names, names);
    let on_disk: Vec<String> = dir_names(keys).into_iter().filter(|n| n != TEMP_DIR).collect();
    assert_eq!(on_disk, names);
    let temp = keys.join(TEMP_DIR);
    if temp.exists() {
        assert!(dir_names(&temp).is_empty(), "temporary files left: {:?}", dir_names(&temp));
    }
}

/// Asserts an `unavailable` answer whose message contains `needle`.
#[track_caller]
fn assert_unavailable(got: Result<(), StoreError>, needle: &str) {
    match got {
        Err(StoreError::Unavailable(m)) => assert!(m.contains(needle), "message {m:?} lacks {needle:?}"),
        other => panic!("expected unavailable ({needle}), got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_create_is_a_clear_error_and_leaves_nothing_behind() {
    let Some(tmpfs) = Tmpfs::mount("disk_full_create_is_a_clear_error_and_leaves_nothing_behind") else {
        return;
    };
    let (keys, ks) = keystore_on_tmpfs(&tmpfs).await;
    ks.create("before-1", b"value-1").await.unwrap();
    ks.create("before-2", b"value-2").await.unwrap();

    let filler = fill(tmpfs.path());
    assert_unavailable(ks.create("during", b"value-3").await, "the disk may be full");
    assert_eq!(ks.get("during").await, Err(StoreError::NotFound));
    assert_only_keys(&ks, &keys, &["before-1", "before-2"]).await;

    // Room for part of a value only: the write fails half-way, and the
    // half-written temporary file goes too.
    let file = std::fs::OpenOptions::new().write(true).open(&filler).unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len.saturating_sub(8 << 10)).unwrap();
    assert_unavailable(ks.create("during", &vec![7u8; 64 << 10]).await, "the disk may be full");
    assert_only_keys(&ks, &keys, &["before-1", "before-2"]).await;

    // Reads still work, on these instances and on a fresh one.
    assert_eq!(ks.get("before-1").await.unwrap(), b"value-1");
    let fresh = fs_keystore(&keys, PoolOptions::default()).await;
    assert_eq!(fresh.get("before-2").await.unwrap(), b"value-2");
    ks.status().await.unwrap();
    // Answers, not traps: the instances that saw the errors are still in use.
    assert_eq!(ks.stats().traps.load(Ordering::Relaxed), 0);

    // Space again: the same name can now be created.
    std::fs::remove_file(&filler).unwrap();
    ks.create("during", b"value-3").await.unwrap();
    assert_eq!(ks.get("during").await.unwrap(), b"value-3");
    assert_only_keys(&ks, &keys, &["before-1", "before-2", "during"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_directory_refuses_creates_and_keeps_serving_reads() {
    let Some(tmpfs) = Tmpfs::mount("read_only_directory_refuses_creates_and_keeps_serving_reads") else {
        return;
    };
    let (keys, ks) = keystore_on_tmpfs(&tmpfs).await;
    ks.create("before", b"value-1").await.unwrap();

    tmpfs.set_read_only(true);
    assert_unavailable(ks.create("during", b"value-2").await, "the key directory may be read-only");
    assert_unavailable(ks.delete("before").await, "the key directory may be read-only");
    assert_eq!(ks.get("before").await.unwrap(), b"value-1");
    assert_eq!(ks.get("during").await, Err(StoreError::NotFound));
    assert_only_keys(&ks, &keys, &["before"]).await;
    ks.status().await.unwrap();
    // A new instance starts (init) on the read-only directory and reads.
    let fresh = fs_keystore(&keys, PoolOptions::default()).await;
    assert_eq!(fresh.get("before").await.unwrap(), b"value-1");
    assert_eq!(ks.stats().traps.load(Ordering::Relaxed), 0);
    drop(fresh);

    tmpfs.set_read_only(false);
    ks.create("during", b"value-2").await.unwrap();
    assert_only_keys(&ks, &keys, &["before", "during"]).await;
}

/// A read-only directory that has never seen a create (no temporary
/// directory yet): the first create fails making it, with the same message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_directory_without_temporary_directory() {
    let Some(tmpfs) = Tmpfs::mount("read_only_directory_without_temporary_directory") else {
        return;
    };
    let keys = tmpfs.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::write(keys.join("kes-key"), b"written by KES").unwrap();
    tmpfs.set_read_only(true);
    let ks = fs_keystore(&keys, PoolOptions::default()).await;
    assert_eq!(ks.get("kes-key").await.unwrap(), b"written by KES");
    assert_unavailable(ks.create("new", b"v").await, "the key directory may be read-only");
    assert_eq!(dir_names(&keys), vec!["kes-key"]);
}
