//! The third-language plugin: `examples/js-keystore`, a filesystem keystore
//! written in JavaScript and built into a component with ComponentizeJS.
//!
//! Like the Python one (`python.rs`), it must pass the same keystore contract
//! as `keystore-fs` ([`keystore_contract`]), behave like it on disk (KES
//! layout, name checks, listings that skip non-keys), and serve a real
//! `keyward server` from a manifest entry with a real sha256 pin. One more
//! test prints what a `get` costs per call.
//!
//! The component is built at test time by `examples/js-keystore/build.sh`
//! into `target/js-plugin/` (rebuilt when `app.js`, `keystore-js.wit`,
//! `build.sh`, the npm package files or `wit/` is newer). The pinned tools are
//! installed with `npm ci` (from `package-lock.json`) if missing; where that
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

/// The example's directory.
fn example() -> PathBuf {
    root().join("examples/js-keystore")
}

/// Where the tests build the component (the default of build.sh).
fn js_wasm() -> PathBuf {
    // CARGO_TARGET_TMPDIR is `<target dir>/tmp`.
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap();
    target.join("js-plugin").join("keystore_js.wasm")
}

/// Limits for the JavaScript plugin: the default 64 MiB of memory is plenty
/// (the engine's snapshot is a few MiB); instance start-up takes
/// milliseconds, but every call enters the JavaScript engine on a CI machine
/// busy with other tests, so the deadline has headroom.
fn js_limits() -> Limits {
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
    let example = example();
    let mut inputs: Vec<PathBuf> = ["app.js", "keystore-js.wit", "build.sh", "package.json", "package-lock.json"]
        .iter()
        .map(|f| example.join(f))
        .collect();
    if let Ok(entries) = std::fs::read_dir(root().join("wit").join("keyward-plugin@0.1.0")) {
        inputs.extend(entries.flatten().map(|e| e.path()));
    }
    inputs.iter().any(|p| modified(p).is_some_and(|m| m > built))
}

/// The engine for the JavaScript tests. Its compile cache is the one the
/// test servers use (see `harness::spawn`), so the ~14 MB component is
/// compiled once per build of it, not once per test or server.
fn js_engine() -> PluginEngine {
    static ENGINE: OnceLock<PluginEngine> = OnceLock::new();
    ENGINE
        .get_or_init(|| PluginEngine::new(EngineOptions { cache_dir: Some(harness::plugin_cache_dir()) }).unwrap())
        .clone()
}

/// Builds the JavaScript component if needed, compiles it into the cache, and
/// returns its path; or `None` (the tests skipped) when the pinned tools
/// cannot be installed.
pub(crate) fn js_plugin() -> Option<PathBuf> {
    static READY: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut ready = READY.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(wasm) = ready.as_ref() {
        return Some(wasm.clone());
    }
    let wasm = js_wasm();
    let build_sh = example().join("build.sh");
    let have_tool = || Command::new("bash").arg(&build_sh).arg("--check").output().is_ok_and(|o| o.status.success());
    if !have_tool() {
        // `cargo test` needs nothing installed by hand: get the versions
        // package-lock.json pins from the npm registry.
        let installed = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(example())
            .status()
            .is_ok_and(|s| s.success());
        if !installed || !have_tool() {
            static SAID: AtomicBool = AtomicBool::new(false);
            if !SAID.swap(true, Ordering::Relaxed) {
                crate::skip::skip(
                    "js plugin tests",
                    "ComponentizeJS is not installed and `npm ci` in examples/js-keystore failed (are node and npm installed?)",
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
            .expect("run examples/js-keystore/build.sh");
        assert!(
            out.status.success(),
            "examples/js-keystore/build.sh failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("js keystore: built {} in {:.1?}", wasm.display(), started.elapsed());
    }
    // Compile once here, while holding the lock, so tests starting together
    // do not each compile it (a cache hit when the file has not changed).
    let started = Instant::now();
    js_engine().load(&js_spec(&wasm, Path::new("/"))).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "js keystore: {} bytes, compiled (or fetched from the cache) in {:.1?}",
        std::fs::metadata(&wasm).unwrap().len(),
        started.elapsed()
    );
    *ready = Some(wasm.clone());
    Some(wasm)
}

/// A spec for the JavaScript component on `dir` (granted as `/data`), pinned.
fn js_spec(wasm: &Path, dir: &Path) -> PluginSpec {
    let bytes = std::fs::read(wasm).unwrap();
    PluginSpec {
        name: "js-fs".into(),
        kind: PluginKind::Keystore,
        source: PluginSource::File(wasm.to_path_buf()),
        sha256: Some(sha256_hex(&bytes)),
        grants: Grants::dir(dir, "/data"),
        limits: js_limits(),
    }
}

async fn js_keystore(wasm: &Path, dir: &Path, options: PoolOptions) -> PluginKeystore {
    PluginKeystore::load(&js_engine(), &js_spec(wasm, dir), r#"{"path": "/data"}"#, options)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

// Four workers, as for keystore-fs's own contract test (`contract.rs`): with
// two, a loaded machine could serve the 16 concurrent creates one after
// another on a single instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn js_keystore_passes_the_keystore_contract() {
    let Some(wasm) = js_plugin() else { return };
    let dir = TempDir::new("js-contract");

    // What loading costs once the component is compiled: reading and hashing
    // the file plus fetching the machine code from the cache; then starting
    // an instance (instantiate + `init`).
    let t = Instant::now();
    let loaded = js_engine().load_async(&js_spec(&wasm, dir.path())).await.unwrap();
    let load = t.elapsed();
    let t = Instant::now();
    let ks = PluginKeystore::start(loaded, r#"{"path": "/data"}"#, PoolOptions { max_instances: 4 }).await.unwrap();
    let start = t.elapsed();
    eprintln!("js keystore: load from the compile cache {load:.2?}, first instance + init {start:.2?}");

    let stats = ks.stats();
    keystore_contract(Arc::new(ks)).await;
    let s = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert!(s(&stats.instances_created) > 1, "the concurrent part ran on one instance only");
    assert_eq!((s(&stats.traps), s(&stats.timeouts)), (0, 0), "a JavaScript instance trapped or timed out");
    assert!(dir_names(dir.path()).is_empty(), "{:?}", dir_names(dir.path()));
}

/// What `keystore-fs` does beyond the contract, the JavaScript plugin does
/// too: KES's on-disk layout, name checks, listings that skip non-keys (and
/// in byte order beyond U+FFFF, where JavaScript's own string order
/// differs), config errors, and storage shared between instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_keystore_behaves_like_keystore_fs() {
    let Some(wasm) = js_plugin() else { return };
    let dir = TempDir::new("js-fs");

    // A directory written by KES: plain files named by key.
    let kes_value = br#"{"bytes":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEy","algorithm":"AES256-GCM_SHA256"}"#;
    std::fs::write(dir.path().join("minio-key"), kes_value).unwrap();
    // A crash leftover, a dot file and a directory: none of them is a key.
    std::fs::write(dir.path().join(".tmp-deadbeef"), b"half").unwrap();
    std::fs::write(dir.path().join(".DS_Store"), b"x").unwrap();
    std::fs::create_dir(dir.path().join("k99-subdir")).unwrap();

    let ks = js_keystore(&wasm, dir.path(), PoolOptions::default()).await;
    assert_eq!(ks.get("minio-key").await.unwrap(), kes_value);
    assert_eq!(ks.create("minio-key", b"x").await, Err(StoreError::Exists));
    ks.create("k1", b"value-1").await.unwrap();
    // One plain file holding exactly the value; no temporary file left.
    assert_eq!(std::fs::read(dir.path().join("k1")).unwrap(), b"value-1");
    assert_eq!(dir_names(dir.path()), vec![".DS_Store", ".tmp-deadbeef", "k1", "k99-subdir", "minio-key"]);
    assert_eq!(ks.list("", "", 0).await.unwrap().names, vec!["k1", "minio-key"]);
    assert_eq!(ks.list("k", "", 1).await.unwrap().next, "", "k99-subdir is not a key");
    // A symbolic link and a name that is not UTF-8 are not keys either (the
    // host reports the latter as an error entry, which the listing skips).
    #[cfg(unix)]
    std::os::unix::fs::symlink("minio-key", dir.path().join("k98-link")).unwrap();
    #[cfg(unix)]
    std::fs::write(dir.path().join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"k3-\xff")), b"x")
        .unwrap();
    assert_eq!(ks.list("", "", 0).await.unwrap().names, vec!["k1", "minio-key"]);
    // Reading a directory is the plugin's `internal` error, not a trap.
    assert!(matches!(ks.get("k99-subdir").await, Err(StoreError::Internal(_))));

    for bad in ["", "a/b", "..", "../escape", ".hidden", ".tmp-0123", "x\0y", "/abs", "a\\b", "tab\there"] {
        match ks.create(bad, b"v").await {
            Err(StoreError::Invalid(_)) => {}
            other => panic!("create({bad:?}) = {other:?}"),
        }
        assert!(matches!(ks.get(bad).await, Err(StoreError::Invalid(_))), "get({bad:?})");
        assert!(matches!(ks.delete(bad).await, Err(StoreError::Invalid(_))), "delete({bad:?})");
    }
    assert!(!dir.path().parent().unwrap().join("escape").exists());
    // The limit is 255 bytes of UTF-8, not 255 JavaScript (UTF-16) units.
    let long = "n".repeat(256);
    assert!(matches!(ks.create(&long, b"v").await, Err(StoreError::Invalid(_))));
    let wide = "\u{1F511}".repeat(64);
    assert!(matches!(ks.create(&wide, b"v").await, Err(StoreError::Invalid(_))));

    // Ascending byte order: U+E000..U+FFFF sort before U+10000 and above in
    // UTF-8, after them in UTF-16.
    let unicode = ["u-\u{1F511}", "u-\u{FFFD}", "u-\u{E000}", "u-b"];
    for n in unicode {
        ks.create(n, b"").await.unwrap();
    }
    assert_eq!(ks.list("u-", "", 0).await.unwrap().names, vec!["u-b", "u-\u{E000}", "u-\u{FFFD}", "u-\u{1F511}"]);
    assert_eq!(ks.list("u-", "u-\u{FFFE}", 0).await.unwrap().names, vec!["u-\u{1F511}"]);
    for n in unicode {
        ks.delete(n).await.unwrap();
    }

    // Another plugin (separate instances) sees the same keys: no state lives
    // only in an instance's memory.
    let other = js_keystore(&wasm, dir.path(), PoolOptions::default()).await;
    assert_eq!(other.get("k1").await.unwrap(), b"value-1");
    other.delete("k1").await.unwrap();
    assert_eq!(ks.get("k1").await, Err(StoreError::NotFound));
    ks.status().await.unwrap();
    let s = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(s(&ks.stats().traps), 0, "a JavaScript instance trapped");

    // Configuration errors are `invalid` at load time, naming the problem.
    let spec = js_spec(&wasm, dir.path());
    for (config, needle) in [
        (r#"{"path": "/elsewhere"}"#, "/elsewhere"),
        (r#"{"path": "/data", "colour": "blue"}"#, "colour"),
        (r#"{"path": 7}"#, "path"),
        (r#"{"path": "/data/minio-key"}"#, "not a directory"),
        ("[]", "object"),
        ("not json", "config"),
    ] {
        let e = PluginKeystore::load(&js_engine(), &spec, config, PoolOptions::default()).await.unwrap_err();
        assert!(
            matches!(&e, PluginError::Init { source: StoreError::Invalid(m), .. } if m.contains(needle)),
            "config {config}: {e}"
        );
    }
    // The key directory may be below the granted one.
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let sub = PluginKeystore::load(&js_engine(), &spec, r#"{"path": "/data/sub"}"#, PoolOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    sub.create("in-sub", b"s").await.unwrap();
    assert_eq!(std::fs::read(dir.path().join("sub").join("in-sub")).unwrap(), b"s");
    assert_eq!(sub.list("", "", 0).await.unwrap().names, vec!["in-sub"]);
    sub.status().await.unwrap();
}

/// Temporary files live where keystore-fs keeps them (`.tmp-keyward/`), so
/// either plugin can serve the directory the other wrote: `init` reclaims
/// only stale ones there (reading that directory, not the keys), a create
/// leaves nothing behind, and each plugin reads what the other created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_keystore_shares_keystore_fs_layout() {
    let Some(wasm) = js_plugin() else { return };
    let dir = TempDir::new("js-temp");
    let temp = plant_temporaries(dir.path());

    let js = js_keystore(&wasm, dir.path(), PoolOptions::default()).await;
    assert_eq!(dir_names(&temp), vec!["fresh"]);
    js.create("from-js", b"j").await.unwrap();
    assert_eq!(dir_names(&temp), vec!["fresh"], "a create leaves no temporary file");
    let rust = fs_keystore(dir.path(), PoolOptions::default()).await;
    assert_eq!(rust.get("from-js").await.unwrap(), b"j");
    rust.create("from-rust", b"r").await.unwrap();
    assert_eq!(js.get("from-rust").await.unwrap(), b"r");
    drop((js, rust));

    // Once only stale files were left, the directory goes with them; a
    // create that finds it missing makes it and removes it again.
    age_file(&temp.join("fresh"), Duration::from_secs(3600));
    let js = js_keystore(&wasm, dir.path(), PoolOptions::default()).await;
    assert_eq!(dir_names(dir.path()), vec!["from-js", "from-rust"]);
    js.create("again", b"a").await.unwrap();
    assert_eq!(dir_names(dir.path()), vec!["again", "from-js", "from-rust"]);
}

/// What one call costs through the plugin host for the JavaScript and Python
/// keystores, next to `keystore-fs` on the same kind of directory: every
/// call enters the language's interpreter. Printed, not asserted: on a CI
/// machine busy with other tests any bound would be flaky.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_language_keystores_get_cost_per_call() {
    let Some(wasm) = js_plugin() else { return };
    let Some(py_wasm) = crate::python::python_plugin() else { return };
    const CALLS: u32 = 200;
    let value = vec![7u8; 256];
    let js_dir = TempDir::new("js-cost");
    let js = js_keystore(&wasm, js_dir.path(), PoolOptions { max_instances: 1 }).await;
    let py_dir = TempDir::new("py-cost");
    let py = crate::python::python_keystore(&py_wasm, py_dir.path(), PoolOptions { max_instances: 1 }).await;
    let fs_dir = TempDir::new("js-cost-fs");
    let rust = fs_keystore(fs_dir.path(), PoolOptions { max_instances: 1 }).await;
    let mut get = Vec::new();
    let mut status = Vec::new();
    for ks in [&js, &py, &rust] {
        ks.create("cost", &value).await.unwrap();
        // Warm up: the instance exists, its first calls are behind it.
        for _ in 0..20 {
            assert_eq!(ks.get("cost").await.unwrap(), value);
        }
        let t = Instant::now();
        for _ in 0..CALLS {
            ks.get("cost").await.unwrap();
        }
        get.push(t.elapsed() / CALLS);
        let t = Instant::now();
        for _ in 0..CALLS {
            ks.status().await.unwrap();
        }
        status.push(t.elapsed() / CALLS);
    }
    eprintln!(
        "keystore get per call: JavaScript {:.0?}, Python {:.0?}, Rust keystore-fs {:.0?}; \
         status: {:.0?}, {:.0?}, {:.0?}",
        get[0], get[1], get[2], status[0], status[1], status[2]
    );
}

/// The real server, configured with a manifest entry (real sha256 pin) for
/// the JavaScript plugin: create a key, encrypt and decrypt with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_keystore_serves_a_real_server() {
    let Some(wasm) = js_plugin() else { return };
    let work = TempDir::new("js-server");
    let keys = work.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let pin = sha256_hex(&std::fs::read(&wasm).unwrap());
    let manifest = work.path().join("plugins.toml");
    std::fs::write(
        &manifest,
        format!(
            "[[plugin]]\nname = \"js-fs\"\nkind = \"keystore\"\npath = {}\nsha256 = \"{pin}\"\n\
             [plugin.grants]\ndirs = [{{ host = {}, guest = \"/data\" }}]\n\
             [plugin.limits]\nmemory = \"64MiB\"\ncall_timeout = \"5s\"\n",
            harness::toml_str(&wasm.display().to_string()),
            harness::toml_str(&keys.display().to_string()),
        ),
    )
    .unwrap();

    // js_plugin() compiled it into the servers' cache, so the server's
    // start-up (which the harness waits for) has no cold compile in it.
    let server = harness::TestServer::start_with(harness::Setup {
        keystore: Some(format!(
            "[plugins]\nmanifest = {}\n[keystore]\nplugin = \"js-fs\"\n[keystore.config]\npath = \"/data\"\n",
            harness::toml_str(&manifest.display().to_string())
        )),
        ..harness::Setup::default()
    });
    let c = server.admin_client();
    c.put_empty("/v1/key/create/js-key").await.ok();
    c.put_empty("/v1/key/create/js-key").await.expect(400, "key already exists");
    let ct = c.encrypt("js-key", b"hello from javascript", Some(b"ctx")).await;
    let r = c.decrypt("js-key", &ct, Some(b"ctx")).await;
    r.ok();
    assert_eq!(harness::unb64(r.json()["plaintext"].as_str().unwrap()), b"hello from javascript");
    // The key is a file the JavaScript plugin wrote into the granted directory.
    assert_eq!(dir_names(&keys), vec!["js-key"]);
    c.delete("/v1/key/delete/js-key").await.ok();
    assert!(dir_names(&keys).is_empty());
    assert!(!server.stderr().contains("trapped"), "{}", server.stderr());
}
