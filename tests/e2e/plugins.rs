//! The server with real plugins: `keystore-fs` as the store (the default of
//! every e2e server, see the harness), a directory written by KES, a pinned
//! manifest entry, `audit-file` as a sink, and plugin reloads on SIGHUP.

use std::path::{Path, PathBuf};
use std::time::Duration;

use keyward_core::crypto::StoredKey;
use serde_json::json;

use crate::harness::{fs_keystore, toml_str, unb64, vectors, Setup, TempDir, TestServer};

/// The names in `dir` that do not start with a dot (key files), sorted.
fn key_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    v.sort();
    v
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The default e2e server keeps its keys through `keystore-fs`, one private
/// file per key in KES's format, created only once acknowledged.
#[tokio::test]
async fn default_store_is_keystore_fs_with_kes_files() {
    let s = TestServer::start("");
    let c = s.admin_client();
    c.put_empty("/v1/key/create/on-disk").await.ok();
    let dir = s.keys_dir();
    assert_eq!(key_files(&dir), vec!["on-disk"]);
    let value = std::fs::read(dir.join("on-disk")).unwrap();
    let stored = StoredKey::decode(&value).expect("the file holds a KES key version");
    assert_eq!(stored.created_by, s.admin.id);
    #[cfg(unix)]
    {
        assert_eq!(mode(&dir.join("on-disk")), 0o600, "key files are private");
        assert_eq!(mode(&dir), 0o700, "the key directory is private");
    }
    // Nothing else in the directory: no temporary files, no index.
    let all: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(all.len(), 1);
    let r = c.get_json("/v1/key/list/*").await;
    assert_eq!(r.json()["names"], json!(["on-disk"]));
    c.delete("/v1/key/delete/on-disk").await.ok();
    assert!(key_files(&dir).is_empty());
    c.get("/v1/key/describe/on-disk").await.expect(404, "key does not exist");
}

/// Keys outlive the process: a restart on the same directory serves them.
#[tokio::test]
async fn keys_survive_a_restart() {
    let keys = TempDir::new("restart-keys");
    let setup = Setup { keystore: Some(fs_keystore(&keys.0)), ..Setup::default() };
    let s = TestServer::start_with(setup.clone());
    let c = s.admin_client();
    c.put_empty("/v1/key/create/durable").await.ok();
    let ct = c.encrypt("durable", b"kept", Some(b"ctx")).await;
    drop(s);
    let s = TestServer::start_with(setup);
    let r = s.admin_client().decrypt("durable", &ct, Some(b"ctx")).await;
    r.ok();
    assert_eq!(unb64(r.json()["plaintext"].as_str().unwrap()), b"kept");
}

/// A directory written by KES's own filesystem keystore (both value formats)
/// is served as it is: the same key bytes, the same HMAC keys.
#[tokio::test]
async fn a_kes_key_directory_is_served_as_is() {
    let v = vectors();
    let keys = TempDir::new("kes-dir");
    let stored: Vec<&serde_json::Value> =
        v["stored_keys"].as_array().unwrap().iter().filter(|k| k["should_fail"].as_bool() != Some(true)).collect();
    assert!(stored.len() >= 5);
    for k in &stored {
        std::fs::write(keys.0.join(k["name"].as_str().unwrap()), k["raw"].as_str().unwrap()).unwrap();
    }
    let s = TestServer::start_with(Setup { keystore: Some(fs_keystore(&keys.0)), ..Setup::default() });
    let c = s.admin_client();
    let listed = c.get_json("/v1/key/list/*").await.json();
    assert_eq!(listed["names"].as_array().unwrap().len(), stored.len(), "{listed}");
    for k in &stored {
        let name = k["name"].as_str().unwrap();
        // Same key bytes: a ciphertext from the KES key opens with an imported
        // copy of the vector's key.
        let copy = format!("{name}-copy");
        c.put(&format!("/v1/key/import/{copy}"), &json!({"key": k["key"], "cipher": k["algorithm"]})).await.ok();
        let ct = c.encrypt(name, b"migrated", None).await;
        let r = c.decrypt(&copy, &ct, None).await;
        r.ok();
        assert_eq!(unb64(r.json()["plaintext"].as_str().unwrap()), b"migrated", "{name}");
        // Legacy JSON values have no HMAC key (409); protobuf values do.
        let mac = c.put(&format!("/v1/key/hmac/{name}"), &json!({"message": ""})).await;
        if k["hmac_key"].is_null() {
            assert_eq!(mac.status, 409, "{name}: {}", mac.text());
        } else {
            mac.ok();
        }
    }
    // kes-pb-aes carries the HMAC key of the hmac-0 vector.
    let hmac0 = &v["hmac"][0];
    let pb = stored.iter().find(|k| k["name"] == "kes-pb-aes").unwrap();
    assert_eq!(pb["hmac_key"], hmac0["hmac_key"]);
    let mac = c.put("/v1/key/hmac/kes-pb-aes", &json!({"message": hmac0["message"]})).await;
    assert_eq!(mac.json()["hmac"], hmac0["hmac"]);
    // Nothing was rewritten.
    for k in &stored {
        let name = k["name"].as_str().unwrap();
        assert_eq!(std::fs::read_to_string(keys.0.join(name)).unwrap(), k["raw"].as_str().unwrap(), "{name}");
    }
}

/// A manifest entry (real pin) for `keystore_fs.wasm` serves as the keystore
/// under its own name, with the grants the manifest gives it.
#[tokio::test]
async fn a_pinned_manifest_plugin_serves_as_the_keystore() {
    let dir = TempDir::new("manifest-fs");
    let wasm = crate::component("keystore_fs.wasm");
    let sha = keyward_plugin_host::sha256_hex(&std::fs::read(&wasm).unwrap());
    std::fs::create_dir(dir.0.join("store")).unwrap();
    let manifest = dir.0.join("plugins.toml");
    std::fs::write(
        &manifest,
        format!(
            "[[plugin]]\nname = \"my-fs\"\nkind = \"keystore\"\npath = {}\nsha256 = \"{sha}\"\n[plugin.grants]\ndirs = [{{ host = \"store\", guest = \"/keys\" }}]\n",
            toml_str(&wasm.display().to_string())
        ),
    )
    .unwrap();
    let s = TestServer::start_with(Setup {
        keystore: Some(format!(
            "[plugins]\nmanifest = {}\n[keystore]\nplugin = \"my-fs\"\n[keystore.config]\npath = \"/keys\"\n",
            toml_str(&manifest.display().to_string())
        )),
        ..Setup::default()
    });
    let c = s.admin_client();
    c.put_empty("/v1/key/create/via-manifest").await.ok();
    assert_eq!(key_files(&dir.0.join("store")), vec!["via-manifest"]);
    let ct = c.encrypt("via-manifest", b"x", None).await;
    c.decrypt("via-manifest", &ct, None).await.ok();
}

/// A server whose `audit-file` sink writes `audit.jsonl` in a directory of
/// the returned one (kept alive with it).
fn server_with_audit_file(tag: &str) -> (TempDir, PathBuf, TestServer) {
    let logs = TempDir::new(tag);
    let file = logs.0.join("audit").join("audit.jsonl");
    let s = TestServer::start(&format!(
        "[[audit]]\nplugin = \"audit-file\"\n[audit.config]\npath = {}\n",
        toml_str(&file.display().to_string())
    ));
    (logs, file, s)
}

/// The lines of an audit file, parsed, once `enough` says so (or after ~5 s).
async fn audit_lines(file: &Path, enough: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
    let mut lines = Vec::new();
    for _ in 0..250 {
        lines = std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
            .collect();
        if enough(&lines) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lines
}

/// `audit-file` as a sink: every request, refused ones included, becomes a
/// JSON line in its file, off the request path.
#[tokio::test]
async fn audit_file_sink_receives_every_event() {
    let (_logs, file, s) = server_with_audit_file("audit-logs");
    let c = s.admin_client();
    c.put_empty("/v1/key/create/audited").await.ok();
    c.get("/v1/key/describe/missing").await;
    s.anonymous().get("/v1/status").await;
    let lines = audit_lines(&file, |l| l.len() >= 3).await;
    let codes: Vec<_> = lines.iter().map(|l| l["response"]["code"].as_u64().unwrap()).collect();
    assert_eq!(codes, vec![200, 404, 400], "{lines:?}");
    assert_eq!(lines[0]["request"]["path"], "/v1/key/create/audited");
    assert_eq!(lines[0]["request"]["identity"], s.admin.id.as_str());
}

/// Reloads while requests keep coming, the sink writing the same file
/// before and after each: the file gets exactly one whole line per request,
/// in the order the client made them (the replaced sink's last lines before
/// the new one's first), none lost or overwritten.
#[tokio::test]
async fn reloads_under_load_keep_every_audit_line_in_order() {
    let (_logs, file, s) = server_with_audit_file("audit-reload");
    let c = s.admin_client();
    let n = 600;
    for i in 0..n {
        c.get(&format!("/v1/key/describe/k{i}")).await.expect(404, "key does not exist");
        if i % 100 == 50 {
            s.signal("HUP");
        }
    }
    let reloads = || s.stderr().matches("configuration reloaded").count();
    let lines = audit_lines(&file, |l| l.len() >= n && reloads() >= 6).await;
    let paths: Vec<&str> = lines.iter().map(|l| l["request"]["path"].as_str().unwrap_or_default()).collect();
    let expected: Vec<String> = (0..n).map(|i| format!("/v1/key/describe/k{i}")).collect();
    assert_eq!(paths, expected);
    assert_eq!(reloads(), 6, "{}", s.stderr());
}

/// SIGHUP reloads the keystore plugin; a replacement that fails to load (a
/// wrong pin) leaves the old one serving, with the reason in the log.
#[tokio::test]
async fn reload_with_a_broken_plugin_keeps_the_old_one() {
    let dir = TempDir::new("reload");
    let wasm = crate::component("keystore_fs.wasm");
    let sha = keyward_plugin_host::sha256_hex(&std::fs::read(&wasm).unwrap());
    std::fs::create_dir(dir.0.join("store")).unwrap();
    let manifest = dir.0.join("plugins.toml");
    let entry = |pin: &str| {
        format!(
            "[[plugin]]\nname = \"fs\"\nkind = \"keystore\"\npath = {}\nsha256 = \"{pin}\"\n[plugin.grants]\ndirs = [{{ host = \"store\", guest = \"/data\" }}]\n",
            toml_str(&wasm.display().to_string())
        )
    };
    std::fs::write(&manifest, entry(&sha)).unwrap();
    let s = TestServer::start_with(Setup {
        keystore: Some(format!(
            "[plugins]\nmanifest = {}\n[keystore]\nplugin = \"fs\"\n",
            toml_str(&manifest.display().to_string())
        )),
        ..Setup::default()
    });
    let c = s.admin_client();
    c.put_empty("/v1/key/create/before").await.ok();
    let bad = "f".repeat(64);
    std::fs::write(&manifest, entry(&bad)).unwrap();
    s.signal("HUP");
    let mut err = String::new();
    for _ in 0..200 {
        err = s.stderr();
        if err.contains("reload failed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(err.contains("reload failed") && err.contains(&bad) && err.contains(&sha), "{err}");
    // The old plugin still serves, on the same directory.
    c.put_empty("/v1/key/create/after").await.ok();
    assert_eq!(key_files(&dir.0.join("store")), vec!["after", "before"]);
    let ct = c.encrypt("before", b"x", None).await;
    c.decrypt("before", &ct, None).await.ok();
    c.get("/v1/status").await.ok();
}
