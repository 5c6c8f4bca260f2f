//! The second-language plugin: `examples/python-keystore`, a filesystem
//! keystore written in Python and built into a component with componentize-py.
//!
//! It must pass the same keystore contract as `keystore-fs`
//! ([`keystore_contract`]), behave like it on disk (KES layout, name checks,
//! listings that skip non-keys), and serve a real `keyward server` from a
//! manifest entry with a real sha256 pin.
//!
//! The component is built at test time by `examples/python-keystore/build.sh`
//! into `target/python-plugin/` (rebuilt when `app.py`, `build.sh` or `wit/`
//! is newer). componentize-py is installed from PyPI if missing; where that
//! fails, the tests are skipped (`skip.rs`: a failure under CI).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use keyward_core::keystore::{Keystore, StoreError};
use keyward_plugin_host::{
    sha256_hex, EngineOptions, Grants, Limits, PluginEngine, PluginError, PluginKeystore, PluginKind, PluginSource,
    PluginSpec, PoolOptions,
};

use crate::contract::keystore_contract;
use crate::fs::{age_file, plant_temporaries};
use crate::{dir_names, fs_keystore, TempDir};

use crate::harness;

/// The repository root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Where the tests build the component (the default of build.sh).
fn python_wasm() -> PathBuf {
    // CARGO_TARGET_TMPDIR is `<target dir>/tmp`.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap();
    target.join("python-plugin").join("keystore_py.wasm")
}

/// Limits for the Python plugin. Its memory starts at a 12.4 MiB snapshot of
/// the interpreter's heap, so the default 64 MiB leaves plenty of room;
/// instance start-up takes milliseconds, but calls run interpreted Python on
/// a CI machine busy with other tests, so the deadline has headroom.
fn python_limits() -> Limits {
    Limits { call_timeout: Duration::from_secs(5), ..Limits::default() }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Whether the built component is missing or older than any of its inputs.
fn stale(wasm: &Path) -> bool {
    let Some(built) = modified(wasm) else {
        return true;
    };
    let example = root().join("examples/python-keystore");
    let mut inputs = vec![example.join("app.py"), example.join("build.sh")];
    if let Ok(entries) = std::fs::read_dir(root().join("wit").join("keyward-plugin@0.1.0")) {
        inputs.extend(entries.flatten().map(|e| e.path()));
    }
    inputs.iter().any(|p| modified(p).is_some_and(|m| m > built))
}

/// The engine for the Python tests. Its compile cache is the one the test
/// servers use (see `harness::spawn`), so the ~18 MB component is compiled
/// once per build of it, not once per test or server.
fn python_engine() -> PluginEngine {
    static ENGINE: OnceLock<PluginEngine> = OnceLock::new();
    ENGINE
        .get_or_init(|| PluginEngine::new(EngineOptions { cache_dir: Some(harness::plugin_cache_dir()) }).unwrap())
        .clone()
}

/// Builds the Python component if needed, compiles it into the cache, and
/// returns its path; or `None` (the tests skipped) when componentize-py
/// cannot be installed.
pub(crate) fn python_plugin() -> Option<PathBuf> {
    static READY: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut ready = READY.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(wasm) = ready.as_ref() {
        return Some(wasm.clone());
    }
    let wasm = python_wasm();
    let build_sh = root().join("examples/python-keystore/build.sh");
    let have_tool = || Command::new("bash").arg(&build_sh).arg("--check").output().is_ok_and(|o| o.status.success());
    if !have_tool() {
        // `cargo test` needs nothing installed by hand: get the version the
        // example is written against from PyPI.
        let install = ["-m", "pip", "install", "--quiet", "componentize-py==0.25.1"];
        let installed = Command::new("python3").args(install).status().is_ok_and(|s| s.success());
        if !installed || !have_tool() {
            static SAID: AtomicBool = AtomicBool::new(false);
            if !SAID.swap(true, Ordering::Relaxed) {
                crate::skip::skip(
                    "python plugin tests",
                    "componentize-py is not installed and `python3 -m pip install componentize-py==0.25.1` failed",
                );
            }
            return None;
        }
    }
    if stale(&wasm) {
        let started = Instant::now();
        let out = Command::new("bash")
            .arg(&build_sh)
            .arg(wasm.parent().unwrap())
            .output()
            .expect("run examples/python-keystore/build.sh");
        assert!(
            out.status.success(),
            "examples/python-keystore/build.sh failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("python keystore: built {} in {:.1?}", wasm.display(), started.elapsed());
    }
    // Compile once here, while holding the lock, so tests starting together
    // do not each compile it (a cache hit when the file has not changed).
    let started = Instant::now();
    python_engine().load(&python_spec(&wasm, Path::new("/"))).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "python keystore: {} bytes, compiled (or fetched from the cache) in {:.1?}",
        std::fs::metadata(&wasm).unwrap().len(),
        started.elapsed()
    );
    *ready = Some(wasm.clone());
    Some(wasm)
}

/// A spec for the Python component on `dir` (granted as `/data`), pinned.
fn python_spec(wasm: &Path, dir: &Path) -> PluginSpec {
    let bytes = std::fs::read(wasm).unwrap();
    PluginSpec {
        name: "python-fs".into(),
        kind: PluginKind::Keystore,
        source: PluginSource::File(wasm.to_path_buf()),
        sha256: Some(sha256_hex(&bytes)),
        grants: Grants::dir(dir, "/data"),
        limits: python_limits(),
    }
}

pub(crate) async fn python_keystore(wasm: &Path, dir: &Path, options: PoolOptions) -> PluginKeystore {
    PluginKeystore::load(&python_engine(), &python_spec(wasm, dir), r#"{"path": "/data"}"#, options)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_keystore_passes_the_keystore_contract() {
    let Some(wasm) = python_plugin() else { return };
    let dir = TempDir::new("py-contract");

    // What loading costs once the component is compiled: reading and hashing
    // the file plus fetching the machine code from the cache; then starting
    // an instance (instantiate + `init`).
    let t = Instant::now();
    let loaded = python_engine().load_async(&python_spec(&wasm, dir.path())).await.unwrap();
    let load = t.elapsed();
    let t = Instant::now();
    let ks = PluginKeystore::start(loaded, r#"{"path": "/data"}"#, PoolOptions { max_instances: 4 }).await.unwrap();
    let start = t.elapsed();
    eprintln!("python keystore: load from the compile cache {load:.2?}, first instance + init {start:.2?}");

    let stats = ks.stats();
    keystore_contract(Arc::new(ks)).await;
    let s = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert!(s(&stats.instances_created) > 1, "the concurrent part ran on one instance only");
    assert_eq!((s(&stats.traps), s(&stats.timeouts)), (0, 0), "a Python instance trapped or timed out");
    assert!(dir_names(dir.path()).is_empty(), "{:?}", dir_names(dir.path()));
}

/// What `keystore-fs` does beyond the contract, the Python plugin does too:
/// KES's on-disk layout, name checks, listings that skip non-keys, config
/// errors, and storage shared between instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_keystore_behaves_like_keystore_fs() {
    let Some(wasm) = python_plugin() else { return };
    let dir = TempDir::new("py-fs");

    // A directory written by KES: plain files named by key.
    let kes_value = br#"{"bytes":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEy","algorithm":"AES256-GCM_SHA256"}"#;
    std::fs::write(dir.path().join("minio-key"), kes_value).unwrap();
    // A crash leftover, a dot file and a directory: none of them is a key.
    std::fs::write(dir.path().join(".tmp-deadbeef"), b"half").unwrap();
    std::fs::write(dir.path().join(".DS_Store"), b"x").unwrap();
    std::fs::create_dir(dir.path().join("k99-subdir")).unwrap();

    let ks = python_keystore(&wasm, dir.path(), PoolOptions::default()).await;
    assert_eq!(ks.get("minio-key").await.unwrap(), kes_value);
    assert_eq!(ks.create("minio-key", b"x").await, Err(StoreError::Exists));
    ks.create("k1", b"value-1").await.unwrap();
    // One plain file holding exactly the value; no temporary file left.
    assert_eq!(std::fs::read(dir.path().join("k1")).unwrap(), b"value-1");
    assert_eq!(dir_names(dir.path()), vec![".DS_Store", ".tmp-deadbeef", "k1", "k99-subdir", "minio-key"]);
    assert_eq!(ks.list("", "", 0).await.unwrap().names, vec!["k1", "minio-key"]);
    assert_eq!(ks.list("k", "", 1).await.unwrap().next, "", "k99-subdir is not a key");

    for bad in ["", "a/b", "..", "../escape", ".hidden", ".tmp-0123", "x\0y", "/abs", "a\\b", "tab\there"] {
        match ks.create(bad, b"v").await {
            Err(StoreError::Invalid(_)) => {}
            other => panic!("create({bad:?}) = {other:?}"),
        }
        assert!(matches!(ks.get(bad).await, Err(StoreError::Invalid(_))), "get({bad:?})");
        assert!(matches!(ks.delete(bad).await, Err(StoreError::Invalid(_))), "delete({bad:?})");
    }
    assert!(!dir.path().parent().unwrap().join("escape").exists());
    let long = "n".repeat(256);
    assert!(matches!(ks.create(&long, b"v").await, Err(StoreError::Invalid(_))));

    // Another plugin (separate instances) sees the same keys: no state lives
    // only in an instance's memory.
    let other = python_keystore(&wasm, dir.path(), PoolOptions::default()).await;
    assert_eq!(other.get("k1").await.unwrap(), b"value-1");
    other.delete("k1").await.unwrap();
    assert_eq!(ks.get("k1").await, Err(StoreError::NotFound));
    ks.status().await.unwrap();

    // Configuration errors are `invalid` at load time, naming the problem.
    let spec = python_spec(&wasm, dir.path());
    for (config, needle) in [
        (r#"{"path": "/elsewhere"}"#, "/elsewhere"),
        (r#"{"path": "/data", "colour": "blue"}"#, "colour"),
        (r#"{"path": 7}"#, "path"),
        ("not json", "config"),
    ] {
        let e = PluginKeystore::load(&python_engine(), &spec, config, PoolOptions::default()).await.unwrap_err();
        assert!(
            matches!(&e, PluginError::Init { source: StoreError::Invalid(m), .. } if m.contains(needle)),
            "config {config}: {e}"
        );
    }
}

/// Temporary files live where keystore-fs keeps them (`.tmp-keyward/`), so
/// either plugin can serve the directory the other wrote: `init` reclaims
/// only stale ones there (reading that directory, not the keys), a create
/// leaves nothing behind, and each plugin reads what the other created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_keystore_shares_keystore_fs_layout() {
    let Some(wasm) = python_plugin() else { return };
    let dir = TempDir::new("py-temp");
    let temp = plant_temporaries(dir.path());

    let py = python_keystore(&wasm, dir.path(), PoolOptions::default()).await;
    assert_eq!(dir_names(&temp), vec!["fresh"]);
    py.create("from-python", b"p").await.unwrap();
    assert_eq!(dir_names(&temp), vec!["fresh"], "a create leaves no temporary file");
    let rust = fs_keystore(dir.path(), PoolOptions::default()).await;
    assert_eq!(rust.get("from-python").await.unwrap(), b"p");
    rust.create("from-rust", b"r").await.unwrap();
    assert_eq!(py.get("from-rust").await.unwrap(), b"r");
    drop((py, rust));

    // Once only stale files were left, the directory goes with them; a
    // create that finds it missing makes it and removes it again.
    age_file(&temp.join("fresh"), Duration::from_secs(3600));
    let py = python_keystore(&wasm, dir.path(), PoolOptions::default()).await;
    assert_eq!(dir_names(dir.path()), vec!["from-python", "from-rust"]);
    py.create("again", b"a").await.unwrap();
    assert_eq!(dir_names(dir.path()), vec!["again", "from-python", "from-rust"]);
}

/// The real server, configured with a manifest entry (real sha256 pin) for
/// the Python plugin: create a key, encrypt and decrypt with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_keystore_serves_a_real_server() {
    let Some(wasm) = python_plugin() else { return };
    let work = TempDir::new("py-server");
    let keys = work.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let pin = sha256_hex(&std::fs::read(&wasm).unwrap());
    let manifest = work.path().join("plugins.toml");
    std::fs::write(
        &manifest,
        format!(
            "[[plugin]]\nname = \"python-fs\"\nkind = \"keystore\"\npath = {}\nsha256 = \"{pin}\"\n\
             [plugin.grants]\ndirs = [{{ host = {}, guest = \"/data\" }}]\n\
             [plugin.limits]\nmemory = \"64MiB\"\ncall_timeout = \"5s\"\n",
            harness::toml_str(&wasm.display().to_string()),
            harness::toml_str(&keys.display().to_string()),
        ),
    )
    .unwrap();

    // python_plugin() compiled it into the servers' cache, so the server's
    // start-up (which the harness waits for) has no cold compile in it.
    let server = harness::TestServer::start_with(harness::Setup {
        keystore: Some(format!(
            "[plugins]\nmanifest = {}\n[keystore]\nplugin = \"python-fs\"\n[keystore.config]\npath = \"/data\"\n",
            harness::toml_str(&manifest.display().to_string())
        )),
        ..harness::Setup::default()
    });
    let c = server.admin_client();
    c.put_empty("/v1/key/create/py-key").await.ok();
    c.put_empty("/v1/key/create/py-key").await.expect(400, "key already exists");
    let ct = c.encrypt("py-key", b"hello from python", Some(b"ctx")).await;
    let r = c.decrypt("py-key", &ct, Some(b"ctx")).await;
    r.ok();
    assert_eq!(harness::unb64(r.json()["plaintext"].as_str().unwrap()), b"hello from python");
    // The key is a file the Python plugin wrote into the granted directory.
    assert_eq!(dir_names(&keys), vec!["py-key"]);
    c.delete("/v1/key/delete/py-key").await.ok();
    assert!(dir_names(&keys).is_empty());
    assert!(!server.stderr().contains("trapped"), "{}", server.stderr());
}
