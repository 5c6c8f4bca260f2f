//! Loading: the sha256 pin (checked before compiling), the precompiled cache,
//! world and WIT-version checks, manifests, embedded plugins and how names in
//! the server config become plugins.

use std::time::Instant;

use keyward_core::keystore::{Keystore, StoreError};
use keyward_plugin_host::resolve::{Plugins, ResolveError};
use keyward_plugin_host::{
    sha256_hex, EngineOptions, Grants, Limits, Manifest, ManifestError, PluginEngine, PluginError, PluginKeystore,
    PluginKind, PluginSource, PluginSpec, PoolOptions,
};

use crate::{dir_names, engine, pinned, shared_engine, wasm, wasm_bytes, TempDir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_sha256_is_refused_before_compiling() {
    let cache = TempDir::new("pin-cache");
    let engine = PluginEngine::new(EngineOptions { cache_dir: Some(cache.path().to_path_buf()) }).unwrap();
    let mut spec = pinned("fs", "keystore_fs", PluginKind::Keystore, Grants::default());
    let real = spec.sha256.clone().unwrap();
    spec.sha256 = Some("0".repeat(64));
    let e = PluginKeystore::load(&engine, &spec, "{}", PoolOptions::default()).await.unwrap_err();
    match &e {
        PluginError::Sha256Mismatch { plugin, expected, actual } => {
            assert_eq!(plugin, "fs");
            assert_eq!(expected, &"0".repeat(64));
            assert_eq!(actual, &real);
        }
        other => panic!("{other}"),
    }
    let msg = e.to_string();
    assert!(msg.contains("sha256 mismatch") && msg.contains(&real) && msg.contains(&"0".repeat(64)), "{msg}");
    // Nothing was compiled: the cache is still empty.
    assert!(dir_names(cache.path()).is_empty());

    // Garbage with a wrong pin is a pin error, not a compile error: the pin is
    // checked first.
    let garbage = PluginSpec {
        name: "junk".into(),
        kind: PluginKind::Keystore,
        source: PluginSource::Bytes(b"\0asm not really".to_vec().into()),
        sha256: Some("1".repeat(64)),
        grants: Grants::default(),
        limits: Limits::default(),
    };
    assert!(matches!(engine.load(&garbage), Err(PluginError::Sha256Mismatch { .. })));
    let unpinned = PluginSpec { sha256: None, ..garbage };
    assert!(matches!(engine.load(&unpinned), Err(PluginError::Compile { .. })));
    // A pin in upper case is the same pin.
    let mut spec = pinned("fs", "keystore_fs", PluginKind::Keystore, Grants::default());
    spec.sha256 = Some(real.to_ascii_uppercase());
    engine.load(&spec).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precompiled_cache_is_used_and_survives_corruption() {
    let cache = TempDir::new("cache-reuse");
    let spec = pinned("fs", "keystore_fs", PluginKind::Keystore, Grants::default());
    let new_engine = || PluginEngine::new(EngineOptions { cache_dir: Some(cache.path().to_path_buf()) }).unwrap();

    let cold = Instant::now();
    new_engine().load(&spec).unwrap();
    let cold = cold.elapsed();
    let files = dir_names(cache.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].starts_with(spec.sha256.as_deref().unwrap()) && files[0].ends_with(".cwasm"));
    let artifact = cache.path().join(&files[0]);
    let written = std::fs::metadata(&artifact).unwrap().modified().unwrap();

    // A second engine (a restart) loads from the cache and does not rewrite it.
    let warm = Instant::now();
    new_engine().load(&spec).unwrap();
    let warm = warm.elapsed();
    eprintln!("keystore_fs load: cold {cold:?}, from cache {warm:?}");
    assert!(warm < cold, "cache hit ({warm:?}) should beat compiling ({cold:?})");
    assert_eq!(std::fs::metadata(&artifact).unwrap().modified().unwrap(), written);
    assert_eq!(dir_names(cache.path()), files);

    // A corrupt artifact is ignored and replaced.
    std::fs::write(&artifact, b"garbage").unwrap();
    let loaded = new_engine().load(&spec).unwrap();
    assert_eq!(loaded.sha256, spec.sha256.clone().unwrap());
    assert!(std::fs::metadata(&artifact).unwrap().len() > 1000);
    // The replaced artifact works.
    new_engine().load(&spec).unwrap();
}

/// The cache runs what it loads as native code, so a file another local
/// user planted must never be loaded, even one crafted to look exactly like
/// a cache entry for the component (here: the machine code of `audit-file`
/// under `keystore-fs`'s name and digest). Neither a world-writable cache
/// directory nor a foreign-owned or group/other-writable file is used; the
/// pinned component is compiled instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_cache_file_is_never_loaded() {
    use std::os::unix::fs::PermissionsExt;
    let cache = TempDir::new("cache-planted");
    let fs_spec = pinned("fs", "keystore_fs", PluginKind::Keystore, Grants::default());
    let sink_spec = pinned("sink", "audit_file", PluginKind::AuditSink, Grants::default());
    let fs_sha = fs_spec.sha256.clone().unwrap();
    let sink_sha = sink_spec.sha256.clone().unwrap();
    let new_engine = || PluginEngine::new(EngineOptions { cache_dir: Some(cache.path().to_path_buf()) }).unwrap();
    new_engine().load(&fs_spec).unwrap();
    new_engine().load(&sink_spec).unwrap();
    let file_of = |sha: &str| {
        let name = dir_names(cache.path()).into_iter().find(|n| n.starts_with(sha)).unwrap();
        cache.path().join(name)
    };
    let (fs_file, sink_file) = (file_of(&fs_sha), file_of(&sink_sha));
    // The crafted file: audit-file's artifact, its header claiming fs's digest.
    let forged = std::fs::read(&sink_file).unwrap();
    let at = forged.windows(64).position(|w| w == sink_sha.as_bytes()).unwrap();
    let mut crafted = forged.clone();
    crafted[at..at + 64].copy_from_slice(fs_sha.as_bytes());
    // And the bare machine code, with no header at all.
    let header_end = forged.iter().enumerate().filter(|(_, b)| **b == b'\n').nth(2).unwrap().0 + 1;
    let bare = forged[header_end..].to_vec();
    let planted = std::cell::RefCell::new(crafted.clone());
    let plant = |mode: u32, owner: Option<u32>| {
        std::fs::remove_file(&fs_file).unwrap();
        std::fs::write(&fs_file, &*planted.borrow()).unwrap();
        std::fs::set_permissions(&fs_file, std::fs::Permissions::from_mode(mode)).unwrap();
        if let Some(uid) = owner {
            std::os::unix::fs::chown(&fs_file, Some(uid), Some(uid)).unwrap();
        }
    };
    let loads_as_keystore = || {
        let loaded = new_engine().load(&fs_spec).expect("the pinned keystore must load");
        assert_eq!(loaded.info.world().map(|(kind, _)| kind), Some(PluginKind::Keystore));
    };
    // The bare artifact in a private directory, owned by the server's user:
    // without a header binding it to fs's digest it is not used either.
    *planted.borrow_mut() = bare.clone();
    plant(0o600, None);
    loads_as_keystore();

    // Group/other-writable file in a private directory.
    *planted.borrow_mut() = crafted.clone();
    plant(0o666, None);
    loads_as_keystore();
    // A world-writable directory is not used at all: nothing is (re)written.
    plant(0o600, None);
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    loads_as_keystore();
    assert_eq!(std::fs::read(&fs_file).unwrap(), crafted, "an untrusted cache directory was written to");
    std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o700)).unwrap();

    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return crate::skip::skip("a_planted_cache_file_is_never_loaded (foreign owner)", "chown needs root");
    }
    // A file owned by another user (nobody), in a private and in a
    // world-writable directory, crafted or bare.
    for file in [&crafted, &bare] {
        *planted.borrow_mut() = file.clone();
        plant(0o644, Some(65534));
        loads_as_keystore();
        plant(0o644, Some(65534));
        std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        loads_as_keystore();
        std::fs::set_permissions(cache.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    // An honest entry is still used after all that: the file written back
    // by the last load in a private directory is fs's own.
    new_engine().load(&fs_spec).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_world_and_wrong_version_are_refused_by_name() {
    let engine = shared_engine();
    // A keystore loaded as an audit sink.
    let spec = pinned("fs", "keystore_fs", PluginKind::AuditSink, Grants::default());
    let e = engine.load(&spec).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, PluginError::WrongWorld { .. }), "{msg}");
    assert!(
        msg.contains("keyward:plugin/audit-sink-api@0.1.0") && msg.contains("keystore-api") && msg.contains("fs"),
        "{msg}"
    );
    // Declared as one kind in the manifest, configured as the other.
    let e = PluginKeystore::load(&engine, &spec, "{}", PoolOptions::default()).await.unwrap_err();
    assert!(matches!(e, PluginError::KindMismatch { .. }), "{e}");

    // Built against keyward:plugin@0.2.0.
    let spec = pinned("future", "future_wit", PluginKind::Keystore, Grants::default());
    let e = engine.load(&spec).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, PluginError::WitVersion { .. }), "{msg}");
    assert!(
        msg.contains("keyward:plugin@0.2.0") && msg.contains("keyward:plugin@0.1.0") && msg.contains("future"),
        "{msg}"
    );

    // Inspect still describes both.
    let info = engine.inspect("future", &wasm_bytes("future_wit")).unwrap();
    assert_eq!(info.world, Some((PluginKind::Keystore, "0.2.0".to_string())));
    let info = engine.inspect("fs", &wasm_bytes("keystore_fs")).unwrap();
    assert_eq!(info.world, Some((PluginKind::Keystore, "0.1.0".to_string())));
    assert_eq!(info.sha256, sha256_hex(&wasm_bytes("keystore_fs")));
    assert!(info.info.imports.iter().any(|i| i.starts_with("wasi:filesystem/")), "{:?}", info.info.imports);
    let info = engine.inspect("audit", &wasm_bytes("audit_file")).unwrap();
    assert_eq!(info.world, Some((PluginKind::AuditSink, "0.1.0".to_string())));
}

fn write_manifest(dir: &TempDir, body: &str) -> std::path::PathBuf {
    let path = dir.path().join("plugins.toml");
    std::fs::write(&path, body).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_entry_loads_with_its_grants_and_limits() {
    let dir = TempDir::new("manifest");
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    std::fs::copy(wasm("keystore_fs"), dir.path().join("keystore_fs.wasm")).unwrap();
    let sha = sha256_hex(&wasm_bytes("keystore_fs"));
    let manifest_path = write_manifest(
        &dir,
        &format!(
            r#"
[[plugin]]
name = "fs"
kind = "keystore"
path = "keystore_fs.wasm"
sha256 = "{sha}"
[plugin.grants]
dirs = [{{ host = "keys", guest = "/data" }}]
[plugin.limits]
memory = "32MiB"
call_timeout = "1s"
"#
        ),
    );
    let manifest = Manifest::load(&manifest_path).unwrap();
    manifest.require_pins().unwrap();
    let entry = manifest.get("fs").unwrap();
    assert_eq!(entry.limits.memory, 32 << 20);
    assert_eq!(entry.limits.call_timeout, std::time::Duration::from_secs(1));
    // Relative paths are resolved against the manifest's directory.
    assert_eq!(entry.grants.dirs[0].host, keys);
    let ks = PluginKeystore::load(&engine(), &entry.spec(), "{}", PoolOptions::default()).await.unwrap();
    ks.create("from-manifest", b"v").await.unwrap();
    assert_eq!(std::fs::read(keys.join("from-manifest")).unwrap(), b"v");
    assert_eq!(ks.sha256(), sha);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_are_strict() {
    let dir = TempDir::new("manifest-strict");
    // A misspelt grant is an error, never silently ignored.
    let path = write_manifest(
        &dir,
        "[[plugin]]\nname = \"x\"\nkind = \"keystore\"\npath = \"x.wasm\"\n[plugin.grants]\ndir = []\n",
    );
    let e = Manifest::load(&path).unwrap_err();
    assert!(matches!(e, ManifestError::Syntax { .. }) && e.to_string().contains("dir"), "{e}");
    // No pin: fine for --dev, refused otherwise, naming the plugin.
    let path = write_manifest(&dir, "[[plugin]]\nname = \"nopin\"\nkind = \"keystore\"\npath = \"x.wasm\"\n");
    let e = Manifest::load(&path).unwrap().require_pins().unwrap_err();
    assert!(e.to_string().contains("nopin") && e.to_string().contains("sha256"), "{e}");
    let e = Plugins::new(shared_engine(), Some(&path), false).err().unwrap();
    assert!(e.to_string().contains("nopin"), "{e}");
    assert!(Plugins::new(shared_engine(), Some(&path), true).is_ok());
    // A malformed pin.
    let path = write_manifest(
        &dir,
        "[[plugin]]\nname = \"short\"\nkind = \"keystore\"\npath = \"x.wasm\"\nsha256 = \"abc\"\n",
    );
    let e = Manifest::load(&path).unwrap_err();
    assert!(e.to_string().contains("short") && e.to_string().contains("64 hex"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_bytes_need_no_pin() {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let bytes: &'static [u8] = BYTES.get_or_init(|| wasm_bytes("keystore_fs"));
    let dir = TempDir::new("embedded");
    let spec = PluginSpec::embedded("fs", PluginKind::Keystore, bytes, Grants::dir(dir.path(), "/data"));
    let ks = PluginKeystore::load(&shared_engine(), &spec, "{}", PoolOptions::default()).await.unwrap();
    ks.create("embedded", b"v").await.unwrap();
    assert_eq!(ks.get("embedded").await.unwrap(), b"v");
}

/// Config names: a bundled name gets the embedded plugin with host-chosen
/// grants; a manifest entry of the same name overrides it; anything else is
/// an error listing what exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_names_resolve_to_bundled_or_manifest_plugins() {
    let dir = TempDir::new("resolve");
    let keys = dir.path().join("nested").join("keys");
    let plugins = Plugins::new(shared_engine(), None, false).unwrap();
    let config = serde_json::json!({ "path": keys.display().to_string() }).to_string();
    let ks = plugins.keystore("fs", &config).await.unwrap();
    // The embedded fs plugin's directory is created, private, and it is where
    // keys go.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&keys).unwrap().permissions().mode() & 0o777, 0o700);
    }
    ks.create("resolved", b"v").await.unwrap();
    assert_eq!(std::fs::read(keys.join("resolved")).unwrap(), b"v");
    // The plugin sees only its directory, as /data: nothing above it.
    assert_eq!(ks.list("", "", 0).await.unwrap().names, vec!["resolved"]);

    match plugins.keystore("nosuch", "{}").await {
        Err(e @ ResolveError::Unknown { .. }) => {
            assert!(e.to_string().contains("nosuch") && e.to_string().contains("fs"), "{e}")
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("an unknown plugin loaded"),
    }
    match plugins.keystore("fs", "{}").await {
        Err(e) => assert!(e.to_string().contains("path"), "{e}"),
        Ok(_) => panic!("fs without a path loaded"),
    }

    // A manifest entry named "fs" overrides the bundled plugin.
    let sha = sha256_hex(&wasm_bytes("hostile"));
    let manifest = write_manifest(
        &dir,
        &format!(
            "[[plugin]]\nname = \"fs\"\nkind = \"keystore\"\npath = {:?}\nsha256 = \"{sha}\"\n",
            wasm("hostile").display().to_string()
        ),
    );
    let plugins = Plugins::new(shared_engine(), Some(&manifest), false).unwrap();
    let ks = plugins.keystore("fs", &config).await.unwrap();
    assert_eq!(ks.get("count").await.unwrap(), b"1", "not the hostile fixture");
    assert_eq!(ks.get("nothing-stored").await, Ok(b"nothing-stored".to_vec()));
    assert_eq!(ks.status().await, Ok::<(), StoreError>(()));
}
