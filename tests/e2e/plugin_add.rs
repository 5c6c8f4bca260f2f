//! `keyward plugin add`, `rm`, `ls` and `pull` on real manifests: the
//! repository's commented `examples/plugins.toml`, components from files and
//! from an HTTP server.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use crate::harness::TempDir;
use crate::plugin_cli::{keyward, sha256_of, wasm};

/// The example manifest copied into `dir`, with its relative paths made
/// absolute so the copy points at the same components.
fn example_manifest(dir: &TempDir) -> (std::path::PathBuf, String) {
    let examples = crate::guests::root().join("examples");
    let text = std::fs::read_to_string(examples.join("plugins.toml")).unwrap();
    let text = text.replace("path = \"../", &format!("path = \"{}/", crate::guests::root().display()));
    let manifest = dir.0.join("plugins.toml");
    std::fs::write(&manifest, &text).unwrap();
    // The directories its entries grant (examples/certs.sh makes them).
    for granted in ["data/keys", "data/audit"] {
        std::fs::create_dir_all(dir.0.join(granted)).unwrap();
    }
    (manifest, text)
}

#[test]
fn add_pins_a_local_component_keeps_comments_and_rm_restores_the_file() {
    let cache = TempDir::new("add-cache");
    let dir = TempDir::new("add");
    let (manifest, original) = example_manifest(&dir);
    let m = manifest.to_str().unwrap();
    let component = wasm("keystore_fs.wasm");
    let keys = dir.0.join("keys");
    std::fs::create_dir(&keys).unwrap();
    let grant = format!("{}:/data", keys.display());
    let args = ["plugin", "add", component.to_str().unwrap(), "--manifest", m, "--name", "fs2", "--grant-dir", &grant];
    let (code, out, err) = keyward(&args, &cache);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("world:   keyward:plugin/keystore@0.1.0"), "{out}");
    assert!(out.contains(&format!("sha256:  {}", sha256_of(&component))), "{out}");
    let added = std::fs::read_to_string(&manifest).unwrap();
    // Every line of the original is still there, in order (the new entry
    // goes after the last one, before the file's closing comments).
    let mut kept = added.lines();
    for line in original.lines() {
        assert!(kept.any(|l| l == line), "lost or moved: {line:?}\n{added}");
    }
    assert!(added.contains(&format!("sha256 = \"{}\"", sha256_of(&component))), "{added}");

    let (code, out, err) = keyward(&["plugin", "ls", "--manifest", m], &cache);
    assert_eq!(code, 0, "{err}");
    let line = out.lines().find(|l| l.starts_with("fs2\t")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.ends_with("ok keyward:plugin/keystore@0.1.0"), "{line}");
    let (code, out, err) = keyward(&["plugin", "check", m], &cache);
    assert_eq!(code, 0, "{err}");
    // Kinds as the manifest spells them.
    assert!(out.contains("ok    fs2 (keystore, ") && out.contains("ok    audit-file (audit-sink, "), "{out}");

    // Refused: a name that is taken, and a file that is not a component.
    // Each leaves the manifest byte-identical.
    let (code, _, err) = keyward(&args, &cache);
    assert_eq!(code, 1);
    assert!(err.contains("'fs2' is already there"), "{err}");
    let garbage = dir.0.join("garbage.wasm");
    std::fs::write(&garbage, b"\0asm\x01\0\0\0not really").unwrap();
    let (code, _, err) = keyward(&["plugin", "add", garbage.to_str().unwrap(), "--manifest", m], &cache);
    assert_eq!(code, 1, "{err}");
    let core = dir.0.join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let (code, _, err) = keyward(&["plugin", "add", core.to_str().unwrap(), "--manifest", m], &cache);
    assert_eq!(code, 1, "a core module was accepted");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(std::fs::read_to_string(&manifest).unwrap(), added);

    let (code, _, err) = keyward(&["plugin", "rm", "fs2", "--manifest", m], &cache);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&manifest).unwrap().trim_end(), original.trim_end());
    let (code, _, err) = keyward(&["plugin", "rm", "fs2", "--manifest", m], &cache);
    assert_eq!((code, err.trim_end()), (1, format!("keyward: no [[plugin]] named 'fs2' in {m}").as_str()));
}

/// Serves `body` to every request until the test ends; the body can be
/// swapped (a tag moved to other bytes).
fn serve(body: Arc<Mutex<Vec<u8>>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/audit.wasm", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut head = [0u8; 4096];
            let _ = stream.read(&mut head);
            let body = body.lock().unwrap().clone();
            let _ = write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            let _ = stream.write_all(&body);
        }
    });
    url
}

#[test]
fn add_downloads_pins_and_pull_refuses_bytes_that_no_longer_match() {
    let cache = TempDir::new("pull-cache");
    let dir = TempDir::new("pull");
    let manifest = dir.0.join("plugins.toml");
    let m = manifest.to_str().unwrap();
    let audit = std::fs::read(wasm("audit_file.wasm")).unwrap();
    let served = Arc::new(Mutex::new(audit.clone()));
    let url = serve(served.clone());
    let saved = dir.0.join("components");
    let args = ["plugin", "add", &url, "--manifest", m, "--dir", saved.to_str().unwrap()];
    let (code, out, err) = keyward(&args, &cache);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("world:   keyward:plugin/audit-lines@0.1.0"), "{out}");
    let file = saved.join("audit.wasm");
    assert_eq!(std::fs::read(&file).unwrap(), audit);
    let text = std::fs::read_to_string(&manifest).unwrap();
    assert!(
        text.contains(&format!("source = \"{url}\"")) && text.contains("path = \"components/audit.wasm\""),
        "{text}"
    );

    // The file is gone: pull fetches it again and checks it against the pin.
    std::fs::remove_file(&file).unwrap();
    let (code, out, err) = keyward(&["plugin", "pull", "--manifest", m], &cache);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("pulled 'audit'"), "{out}");
    assert_eq!(std::fs::read(&file).unwrap(), audit);

    // What the URL serves changed: nothing is written, both digests named.
    let other = std::fs::read(wasm("keystore_fs.wasm")).unwrap();
    *served.lock().unwrap() = other.clone();
    std::fs::remove_file(&file).unwrap();
    let (code, _, err) = keyward(&["plugin", "pull", "--manifest", m], &cache);
    assert_eq!(code, 1);
    let (new, pinned) = (keyward_plugin_host::sha256_hex(&other), keyward_plugin_host::sha256_hex(&audit));
    assert!(err.contains(&new) && err.contains(&pinned), "{err}");
    assert!(!file.exists(), "a file that does not match the pin was written");

    // A server that is down: a clear error, the manifest unchanged.
    let (code, _, err) = keyward(&["plugin", "add", "http://127.0.0.1:9/x.wasm", "--manifest", m], &cache);
    assert_eq!(code, 1);
    assert!(err.contains("http://127.0.0.1:9/x.wasm"), "{err}");
    assert_eq!(std::fs::read_to_string(&manifest).unwrap(), text);
}
