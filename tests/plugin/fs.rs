//! What is specific to `keystore-fs`: KES's on-disk layout, name checks,
//! listings that skip everything that is not a key, configuration errors.

use std::sync::Arc;

use keyward::keys::store::{Keystore, StoreError};
use keyward::plugin::{Grants, PluginError, PluginKeystore, PluginKind, PoolOptions};

use crate::{dir_names, fs_keystore, pinned, shared_engine, TempDir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_create_get_delete_on_disk() {
    let dir = TempDir::new("fs");
    let ks = fs_keystore(dir.path(), PoolOptions::default()).await;

    ks.create("my-key", b"value-1").await.unwrap();
    assert_eq!(ks.create("my-key", b"other").await, Err(StoreError::Exists));
    // KES's layout: one plain file, named by the key, holding exactly the
    // value; no temporary file is left behind.
    assert_eq!(std::fs::read(dir.path().join("my-key")).unwrap(), b"value-1");
    assert_eq!(dir_names(dir.path()), vec!["my-key"]);

    ks.delete("my-key").await.unwrap();
    assert!(dir_names(dir.path()).is_empty());
    ks.status().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_rejects_bad_names() {
    let dir = TempDir::new("fs-names");
    let ks = fs_keystore(dir.path(), PoolOptions::default()).await;
    for bad in ["", "a/b", "..", "../escape", ".hidden", ".tmp-0123", "x\0y", "/abs", "a\\b"] {
        match ks.create(bad, b"v").await {
            Err(StoreError::Invalid(_)) => {}
            other => panic!("create({bad:?}) = {other:?}"),
        }
        assert!(matches!(ks.get(bad).await, Err(StoreError::Invalid(_))), "get({bad:?})");
        assert!(matches!(ks.delete(bad).await, Err(StoreError::Invalid(_))), "delete({bad:?})");
    }
    assert!(dir_names(dir.path()).is_empty());
    assert!(!dir.path().parent().unwrap().join("escape").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_listing_skips_temporary_and_hidden_files_and_directories() {
    let dir = TempDir::new("fs-list");
    let ks = fs_keystore(dir.path(), PoolOptions::default()).await;
    ks.create("k1", b"v").await.unwrap();
    ks.create("k2", b"v").await.unwrap();
    // A crash leftover, a dot file and a directory: none of them is a key.
    std::fs::write(dir.path().join(".tmp-deadbeef"), b"half").unwrap();
    std::fs::write(dir.path().join(".DS_Store"), b"x").unwrap();
    std::fs::create_dir(dir.path().join("k99-subdir")).unwrap();
    let all = ks.list("", "", 0).await.unwrap();
    assert_eq!(all.names, vec!["k1", "k2"]);
    assert_eq!(ks.list("k", "", 1).await.unwrap().next, "k2");
}

/// A directory written by KES's own fs keystore: plain files named by key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_reads_a_kes_directory() {
    let dir = TempDir::new("fs-kes");
    let kes_value = br#"{"bytes":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEy","algorithm":"AES256-GCM_SHA256","created_at":"2024-01-01T00:00:00Z","created_by":"abc"}"#;
    std::fs::write(dir.path().join("minio-key"), kes_value).unwrap();
    std::fs::write(dir.path().join("backup_key"), b"raw").unwrap();
    let ks = fs_keystore(dir.path(), PoolOptions::default()).await;
    assert_eq!(ks.get("minio-key").await.unwrap(), kes_value);
    assert_eq!(ks.list("", "", 0).await.unwrap().names, vec!["backup_key", "minio-key"]);
    assert_eq!(ks.create("minio-key", b"x").await, Err(StoreError::Exists));
    // And what keyward writes is what KES reads: the value, nothing else.
    ks.create("from-keyward", kes_value).await.unwrap();
    assert_eq!(std::fs::read(dir.path().join("from-keyward")).unwrap(), kes_value);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_concurrent_create_has_one_winner_on_disk() {
    let dir = TempDir::new("fs-race");
    let ks = Arc::new(fs_keystore(dir.path(), PoolOptions { max_instances: 4 }).await);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let ks = ks.clone();
        tasks.push(tokio::spawn(async move { ks.create("race", format!("v{i}").as_bytes()).await }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err(StoreError::Exists) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(ok, 1);
    // The losers' temporary files are gone too.
    assert_eq!(dir_names(dir.path()), vec!["race"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_bad_config_fails_at_load() {
    let dir = TempDir::new("fs-config");
    let spec = pinned("fs", "keystore_fs", PluginKind::Keystore, Grants::dir(dir.path(), "/data"));
    let e = PluginKeystore::load(&shared_engine(), &spec, r#"{"path": "/elsewhere"}"#, PoolOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(&e, PluginError::Init { source: StoreError::Invalid(m), .. } if m.contains("/elsewhere")), "{e}");
    let e =
        PluginKeystore::load(&shared_engine(), &spec, r#"{"pth": "/data"}"#, PoolOptions::default()).await.unwrap_err();
    assert!(e.to_string().contains("pth"), "{e}");
    // A granted host directory that does not exist.
    let spec = pinned("fs", "keystore_fs", PluginKind::Keystore, Grants::dir(dir.path().join("nope"), "/data"));
    let e = PluginKeystore::load(&shared_engine(), &spec, "{}", PoolOptions::default()).await.unwrap_err();
    assert!(matches!(e, PluginError::Sandbox { .. }), "{e}");
    assert!(e.to_string().contains("nope"), "{e}");
}
