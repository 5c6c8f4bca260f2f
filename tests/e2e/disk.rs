//! A full disk under the default `fs` keystore, through the server: what a
//! client is told, and that the server keeps serving (and creating again once
//! there is room). The key directory is on a small tmpfs (the tests run as
//! root, where permissions cannot make a disk unwritable); where mounting is
//! not permitted the test prints a SKIP line and passes.

use crate::harness::{fs_keystore, unb64, Setup, TestServer};
use crate::tmpfs::{fill, Tmpfs};

/// The key names of a new-generation listing.
async fn listed(c: &crate::harness::Client) -> Vec<String> {
    let r = c.get_json("/v1/key/list/*").await;
    r.ok();
    r.json()["names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn a_full_disk_is_a_503_with_a_clear_message_and_the_server_keeps_serving() {
    let Some(tmpfs) = Tmpfs::mount("a_full_disk_is_a_503_with_a_clear_message_and_the_server_keeps_serving") else {
        return;
    };
    let keys = tmpfs.path().join("keys");
    // Declared after the mount, so the server is stopped before the unmount.
    let server = TestServer::start_with(Setup { keystore: Some(fs_keystore(&keys)), ..Setup::default() });
    let c = server.admin_client();
    c.put_empty("/v1/key/create/before").await.ok();
    let ct = c.encrypt("before", b"secret", None).await;

    let filler = fill(tmpfs.path());
    let r = c.put_empty("/v1/key/create/during").await;
    assert_eq!(r.status, 503, "body: {}", r.text());
    let message = r.message();
    eprintln!("a client creating a key on a full disk is told: 503 {message:?}");
    assert!(message.starts_with("failed to create key: keystore unavailable:"), "{message}");
    assert!(message.contains("the disk may be full"), "{message}");

    // The server keeps serving: other routes, the existing key, reads of the
    // keystore; and the failed key does not exist anywhere.
    c.get("/version").await.ok();
    let r = c.decrypt("before", &ct, None).await;
    r.ok();
    assert_eq!(unb64(r.json()["plaintext"].as_str().unwrap()), b"secret");
    c.get("/v1/key/describe/during").await.expect(404, "key does not exist");
    assert_eq!(listed(&c).await, vec!["before"]);
    assert!(!keys.join("during").exists());
    assert!(!server.stderr().contains("panicked"), "{}", server.stderr());

    // Room again: the same create succeeds.
    std::fs::remove_file(&filler).unwrap();
    c.put_empty("/v1/key/create/during").await.ok();
    c.encrypt("during", b"more", None).await;
    assert_eq!(listed(&c).await, vec!["before", "during"]);
}
