//! Plugin-level tests: the plugin host (`keyward_plugin_host`) driving the real
//! first-party components and the hostile fixtures, without a server.
//!
//! The bundled components are the checked-in ones (`host/plugin-host/bundled/`); the
//! fixtures are built from `plugins/` by [`guests`] on first use.
//!
//! * [`contract`]: the keystore contract every backend must pass, as a
//!   reusable function ([`contract::keystore_contract`]), run here against
//!   `keystore-fs`;
//! * [`fs`]: what is specific to `keystore-fs` (on-disk layout, KES directory
//!   compatibility, name checks, configuration errors);
//! * [`disk`]: `keystore-fs` on a full and on a read-only disk (a small
//!   tmpfs; skipped where mounting is not permitted);
//! * [`audit`]: the `audit-file` sink, appending JSON lines;
//! * [`loading`]: pins, the compile cache, worlds and WIT versions, manifests,
//!   embedded plugins and config-name resolution;
//! * [`hostile`]: containment of loops, traps, huge allocations, blocked
//!   calls, sandbox escapes and cancelled calls;
//! * [`python`] and [`js`]: the example keystores written in Python and
//!   JavaScript (`examples/`), against the same contract.

mod audit;
mod bundled;
mod contract;
mod disk;
mod examples;
mod fs;
mod guest_tests;
#[path = "../common/guests.rs"]
mod guests;
/// The e2e harness (test servers over mTLS), for the second-language
/// plugins' server tests.
#[allow(dead_code)]
#[path = "../e2e/harness.rs"]
mod harness;
mod hostile;
mod http;
mod js;
mod loading;
#[path = "../common/openbao.rs"]
mod openbao;
mod python;
#[path = "../common/skip.rs"]
mod skip;
mod templates;
#[path = "../common/tmpfs.rs"]
mod tmpfs;
mod vault;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use keyward_plugin_host::{
    sha256_hex, EngineOptions, Grants, Limits, PluginEngine, PluginError, PluginKeystore, PluginKind, PluginSource,
    PluginSpec, PoolOptions,
};

/// Path of the component `name` (`keystore_fs`, `audit_file`, `hostile`,
/// `future_wit`): the checked-in file for a bundled plugin, a fresh build
/// for a fixture.
pub fn wasm(name: &str) -> PathBuf {
    let file = format!("{name}.wasm");
    if guests::BUNDLED.iter().any(|(_, f)| *f == file) {
        return guests::bundled_dir().join(file);
    }
    guests::built_dir().join(file)
}

/// The bytes of the component `name`.
pub fn wasm_bytes(name: &str) -> Vec<u8> {
    let path = wasm(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A spec for the component file `plugin`, pinned to its real SHA-256.
pub fn pinned(name: &str, plugin: &str, kind: PluginKind, grants: Grants) -> PluginSpec {
    PluginSpec {
        name: name.into(),
        kind,
        source: PluginSource::File(wasm(plugin)),
        sha256: Some(sha256_hex(&wasm_bytes(plugin))),
        grants,
        limits: Limits::default(),
    }
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "keyward-plugin-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An engine without a compile cache.
pub fn engine() -> PluginEngine {
    PluginEngine::new(EngineOptions::default()).unwrap()
}

/// One engine for the whole test binary, with a compile cache, so each
/// component is compiled once per run (as in the server).
pub fn shared_engine() -> PluginEngine {
    static ENGINE: OnceLock<(PluginEngine, TempDir)> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let cache = TempDir::new("cache");
            let engine = PluginEngine::new(EngineOptions { cache_dir: Some(cache.path().to_path_buf()) }).unwrap();
            (engine, cache)
        })
        .0
        .clone()
}

/// `keystore-fs` on `dir`, granted as `/data`.
pub async fn fs_keystore(dir: &Path, options: PoolOptions) -> PluginKeystore {
    let spec = pinned("fs", "keystore_fs", PluginKind::Keystore, Grants::dir(dir, "/data"));
    PluginKeystore::load(&shared_engine(), &spec, r#"{"path": "/data"}"#, options).await.unwrap()
}

/// The hostile fixture with these limits, grants, `init` config and pool size.
pub async fn hostile(limits: Limits, grants: Grants, config: &str, max: usize) -> Result<PluginKeystore, PluginError> {
    let mut spec = pinned("hostile", "hostile", PluginKind::Keystore, grants);
    spec.limits = limits;
    PluginKeystore::load(&shared_engine(), &spec, config, PoolOptions { max_instances: max }).await
}

/// Default limits with a 300 ms call timeout.
pub fn short_timeout() -> Limits {
    Limits { call_timeout: Duration::from_millis(300), ..Limits::default() }
}

/// The names in `dir`, sorted.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

/// Tracing output captured by [`capture_logs`].
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures this thread's tracing output (the host's log lines and what
/// plugins log through it) up to `level`, without ANSI colours, for as long as
/// the returned guard lives. Use it in `current_thread` tests, so that
/// everything runs on the thread that holds the guard.
#[must_use = "logs are captured only while the guard lives"]
pub fn capture_logs(level: tracing::Level) -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber =
        tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).with_max_level(level).finish();
    (captured, tracing::subscriber::set_default(subscriber))
}
