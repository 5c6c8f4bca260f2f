//! Sealing: with `[keystore] seal`, the keystore only ever sees ciphertext.

use serde_json::json;

use crate::harness::{b64, toml_str, unb64, Setup, TestServer};

fn sealed_keystore(dir: &std::path::Path, seal: &str) -> String {
    format!(
        "[keystore]\nplugin = \"fs\"\nseal = {}\n[keystore.config]\npath = {}\n",
        toml_str(seal),
        toml_str(&dir.display().to_string())
    )
}

/// All byte strings that would reveal `key` if found in a stored file.
fn leaks(key: &[u8]) -> Vec<Vec<u8>> {
    vec![key.to_vec(), b64(key).into_bytes(), hex::encode(key).into_bytes()]
}

#[tokio::test]
async fn sealed_fs_directory_holds_no_plaintext_key_bytes() {
    let keys = crate::harness::TempDir::new("sealed-keys");
    let seal_file = keys.0.join("..").join(format!("seal-{}", std::process::id()));
    std::fs::write(&seal_file, hex::encode([9u8; 32])).unwrap();
    let setup = Setup {
        keystore: Some(sealed_keystore(&keys.0, &format!("file:{}", seal_file.display()))),
        ..Setup::default()
    };
    let s = TestServer::start_with(setup.clone());
    let c = s.admin_client();
    let key = [0x5au8; 32];
    c.put("/v1/key/import/imported", &json!({"key": b64(&key), "cipher": "AES256"})).await.ok();
    c.put_empty("/v1/key/create/created").await.ok();
    let ct = c.encrypt("imported", b"secret", None).await;

    let mut files = 0;
    for entry in std::fs::read_dir(&keys.0).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        files += 1;
        for leak in leaks(&key) {
            assert!(!bytes.windows(leak.len()).any(|w| w == leak.as_slice()), "stored file reveals the key");
        }
        assert!(bytes.starts_with(b"kwseal1\0"), "stored value is not sealed");
    }
    assert_eq!(files, 2);

    // A restart with the same seal key reads the keys back.
    drop(s);
    let s = TestServer::start_with(setup);
    let r = s.admin_client().decrypt("imported", &ct, None).await;
    r.ok();
    assert_eq!(unb64(r.json()["plaintext"].as_str().unwrap()), b"secret");

    // With another seal key, reading the key fails with a gateway error, and
    // nothing is overwritten.
    std::fs::write(&seal_file, hex::encode([1u8; 32])).unwrap();
    drop(s);
    let s = TestServer::start_with(Setup {
        keystore: Some(sealed_keystore(&keys.0, &format!("file:{}", seal_file.display()))),
        ..Setup::default()
    });
    let r = s.admin_client().decrypt("imported", &ct, None).await;
    r.expect(502, "failed to read key");
    let _ = std::fs::remove_file(&seal_file);
}
