//! The shared wasmtime engine: compiling, caching and vetting components.
//!
//! One [`PluginEngine`] serves every plugin of the process. It owns the
//! wasmtime `Engine` (configured for async calls and epoch interruption), the
//! background thread that advances the epoch, the `Linker` with everything a
//! plugin may import, and the on-disk cache of precompiled components.
//!
//! Loading a component ([`PluginEngine::load`]) is, in order:
//!
//! 1. read the bytes and compute their SHA-256;
//! 2. compare with the pin, if any — **before** any parsing or compiling, so a
//!    tampered file never reaches the compiler;
//! 3. compile, or reuse a precompiled artifact from the cache (keyed by the
//!    SHA-256 and by the engine's compatibility hash, so a wasmtime upgrade or
//!    a config change never reuses stale machine code);
//! 4. check the component's world: it must export our interface at our WIT
//!    version and import nothing we do not provide, with a message naming both
//!    versions when it was built against another `keyward:plugin`; `wasi:http`
//!    counts as provided only when the plugin's grants list hosts;
//! 5. pre-link it — with the linker that has `wasi:http` if and only if hosts
//!    are granted — so instantiating later does no type checking.

use std::hash::Hasher;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::Digest;
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Config, Engine};

use super::cache::CompileCache;
use super::outbound::Outbound;
use super::sandbox::{self, HostState};
use super::scratch::Scratch;
use super::{
    error_chain, sha256_hex, Grants, Limits, PluginError, PluginKind, PluginSource, PluginSpec, WIT_PACKAGE,
    WIT_VERSION,
};

/// How often the epoch advances. Call deadlines are checked at this
/// granularity, and a running plugin yields to the async executor this often,
/// so a busy plugin cannot starve other tasks on its thread.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The wasmtime version compiled in; part of the cache key (with the engine's
/// own compatibility hash) and shown by `keyward plugin inspect`.
pub const WASMTIME_VERSION: &str = "48.0.8";

/// How the engine is set up.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// Directory for precompiled components. `None` compiles every time.
    /// Created (mode 0700) if missing; not used (with a warning) if another
    /// user owns it or could write into it (see [`CompileCache`]).
    pub cache_dir: Option<PathBuf>,
}

/// The process-wide plugin engine. Cheap to clone.
#[derive(Clone)]
pub struct PluginEngine {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    /// Everything but `wasi:http`: for plugins granted no hosts.
    linker: Linker<HostState>,
    /// The same plus `wasi:http`: for plugins with a `grants.hosts` list.
    http_linker: Linker<HostState>,
    cache: Option<CompileCache>,
}

impl std::fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEngine").field("cache", &self.inner.cache).finish_non_exhaustive()
    }
}

/// A compiled, vetted and pre-linked component, ready to instantiate.
#[derive(Clone)]
pub struct LoadedComponent {
    /// The plugin's name.
    pub name: Arc<str>,
    /// The world it implements.
    pub kind: PluginKind,
    /// SHA-256 of its bytes, lowercase hex.
    pub sha256: String,
    /// Its imports and exports.
    pub info: ComponentInfo,
    /// Its sandbox grants.
    pub grants: Grants,
    /// Its limits.
    pub limits: Limits,
    /// Its outbound HTTP client, when it is granted hosts.
    pub(crate) outbound: Option<Arc<Outbound>>,
    /// Its state directory, when its grants ask for one.
    pub(crate) scratch: Option<Arc<Scratch>>,
    pub(crate) pre: InstancePre<HostState>,
    pub(crate) engine: PluginEngine,
}

impl std::fmt::Debug for LoadedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedComponent")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// A component's imports and exports by name, as `keyward plugin inspect`
/// shows them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComponentInfo {
    /// Import names, e.g. `wasi:filesystem/types@0.2.0`.
    pub imports: Vec<String>,
    /// Export names, e.g. `keyward:plugin/keystore-api@0.1.0`.
    pub exports: Vec<String>,
}

/// What `keyward plugin inspect` reports about a file.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// SHA-256 of the bytes, lowercase hex (the manifest pin).
    pub sha256: String,
    /// The keyward world it implements and the WIT version, if recognisable.
    pub world: Option<(PluginKind, String)>,
    /// Imports and exports.
    pub info: ComponentInfo,
}

impl PluginEngine {
    /// Creates the engine and starts its epoch ticker thread.
    ///
    /// The ticker holds only a weak reference, so it stops by itself once the
    /// engine and everything compiled with it are dropped.
    pub fn new(options: EngineOptions) -> Result<PluginEngine, PluginError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.parallel_compilation(true);
        let engine = Engine::new(&config).map_err(|e| PluginError::Engine(error_chain(&e)))?;

        let mut linker = Linker::new(&engine);
        sandbox::add_to_linker(&mut linker, false).map_err(|e| PluginError::Engine(error_chain(&e)))?;
        let mut http_linker = Linker::new(&engine);
        sandbox::add_to_linker(&mut http_linker, true).map_err(|e| PluginError::Engine(error_chain(&e)))?;

        let cache = options.cache_dir.as_deref().and_then(|dir| match CompileCache::open(dir, cache_tag(&engine)) {
            Ok(cache) => Some(cache),
            Err(e) => {
                tracing::warn!("not using the plugin compile cache, compiling plugins at every start: {e}");
                None
            }
        });

        let weak = engine.weak();
        std::thread::Builder::new()
            .name("keyward-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            })
            .map_err(|e| PluginError::Engine(format!("cannot start epoch thread: {e}")))?;

        Ok(PluginEngine { inner: Arc::new(Inner { engine, linker, http_linker, cache }) })
    }

    /// The wasmtime engine (for advanced use; plugins normally need only
    /// [`load`](Self::load)).
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Reads, verifies, compiles (or fetches from the cache), vets and
    /// pre-links the component described by `spec`.
    ///
    /// Compiling takes CPU time (up to seconds for big components on a cold
    /// cache): from async code call [`load_async`](Self::load_async).
    pub fn load(&self, spec: &PluginSpec) -> Result<LoadedComponent, PluginError> {
        let bytes = read_source(&spec.name, &spec.source)?;
        let sha256 = sha256_hex(&bytes);
        if let Some(pin) = &spec.sha256 {
            if !pin.trim().eq_ignore_ascii_case(&sha256) {
                return Err(PluginError::Sha256Mismatch {
                    plugin: spec.name.clone(),
                    expected: pin.trim().to_ascii_lowercase(),
                    actual: sha256,
                });
            }
        }
        let component = self.compile(&spec.name, &sha256, &bytes)?;
        let info = ComponentInfo::of(&self.inner.engine, &component);
        let http = !spec.grants.hosts.is_empty();
        info.check(&spec.name, spec.kind, http)?;
        let linker = if http { &self.inner.http_linker } else { &self.inner.linker };
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| PluginError::Instantiate { plugin: spec.name.clone(), message: error_chain(&e) })?;
        let outbound = Outbound::new(&spec.name, &spec.grants)?;
        let scratch = match &spec.grants.state {
            Some(guest) => Some(Arc::new(Scratch::create(&spec.name, guest)?)),
            None => None,
        };
        Ok(LoadedComponent {
            name: spec.name.as_str().into(),
            kind: spec.kind,
            sha256,
            info,
            grants: spec.grants.clone(),
            limits: spec.limits,
            outbound,
            scratch,
            pre,
            engine: self.clone(),
        })
    }

    /// [`load`](Self::load) on a blocking thread, so compiling does not stall
    /// the async executor.
    pub async fn load_async(&self, spec: &PluginSpec) -> Result<LoadedComponent, PluginError> {
        let this = self.clone();
        let spec = spec.clone();
        let name = spec.name.clone();
        tokio::task::spawn_blocking(move || this.load(&spec))
            .await
            .map_err(|e| PluginError::Engine(format!("plugin {name}: loading task failed: {e}")))?
    }

    /// Describes a component file without requiring it to be a valid keyward
    /// plugin (for `keyward plugin inspect`). It is still compiled (through
    /// the cache), since only a compiled component exposes its types.
    pub fn inspect(&self, name: &str, bytes: &[u8]) -> Result<Inspection, PluginError> {
        let sha256 = sha256_hex(bytes);
        let component = self.compile(name, &sha256, bytes)?;
        let info = ComponentInfo::of(&self.inner.engine, &component);
        Ok(Inspection { sha256, world: info.world(), info })
    }

    /// Compiles `bytes`, going through the precompiled cache when there is one.
    fn compile(&self, name: &str, sha256: &str, bytes: &[u8]) -> Result<Component, PluginError> {
        let engine = &self.inner.engine;
        let compile_err =
            |e: wasmtime::Error| PluginError::Compile { plugin: name.to_string(), message: error_chain(&e) };
        let Some(cache) = &self.inner.cache else {
            return Component::new(engine, bytes).map_err(compile_err);
        };
        match cache.get(sha256) {
            Ok(Some(artifact)) => {
                // SAFETY: `CompileCache::get` returns only an artifact from a
                // file that the server's own user wrote into a directory no
                // other user can write, whose header binds it to these exact
                // component bytes (`sha256`) and to its own digest; its name
                // binds it to this engine's configuration, and wasmtime checks
                // its header against the engine again before using it.
                match unsafe { Component::deserialize(engine, &artifact) } {
                    Ok(component) => return Ok(component),
                    Err(e) => tracing::warn!(
                        plugin = name,
                        dir = %cache.dir().display(),
                        "ignoring unusable precompiled plugin, recompiling: {}",
                        error_chain(&e)
                    ),
                }
            }
            Ok(None) => {}
            Err(reason) => tracing::warn!(
                plugin = name,
                dir = %cache.dir().display(),
                "ignoring precompiled plugin, recompiling: {reason}"
            ),
        }
        let artifact = engine.precompile_component(bytes).map_err(compile_err)?;
        if let Err(e) = cache.put(sha256, &artifact) {
            // A cache that cannot be written only costs start-up time.
            tracing::warn!(plugin = name, dir = %cache.dir().display(), "cannot cache precompiled plugin: {e}");
        }
        // SAFETY: `artifact` was produced just now by this engine.
        unsafe { Component::deserialize(engine, &artifact) }.map_err(compile_err)
    }
}

impl ComponentInfo {
    fn of(engine: &Engine, component: &Component) -> ComponentInfo {
        let ty = component.component_type();
        ComponentInfo {
            imports: ty.imports(engine).map(|(name, _)| name.to_string()).collect(),
            exports: ty.exports(engine).map(|(name, _)| name.to_string()).collect(),
        }
    }

    /// The keyward world this component implements, with the WIT version it
    /// was built against, judged by its exports.
    pub fn world(&self) -> Option<(PluginKind, String)> {
        self.keyward_export().map(|(kind, _, version)| (kind, version.unwrap_or("unversioned").to_string()))
    }

    /// The name of the WIT world this component implements (`keystore`,
    /// `audit-lines`, `audit-sink`), judged by its exports.
    pub fn world_name(&self) -> Option<&'static str> {
        self.keyward_export().map(|(_, iface, _)| match iface {
            "keystore-api" => "keystore",
            "audit-lines-api" => "audit-lines",
            _ => "audit-sink",
        })
    }

    /// The first export that is a keyward world's interface: its kind,
    /// interface name and WIT version.
    fn keyward_export(&self) -> Option<(PluginKind, &'static str, Option<&str>)> {
        self.exports.iter().find_map(|export| {
            let (iface, version) = split_keyward_name(export)?;
            [PluginKind::Keystore, PluginKind::AuditSink].into_iter().find_map(|kind| {
                let known = kind.export_interfaces().iter().find(|&&known| known == iface)?;
                Some((kind, *known, version))
            })
        })
    }

    /// Vets the component for use as a `kind` plugin; `http` says whether it
    /// is granted outbound HTTP (any `grants.hosts`).
    fn check(&self, plugin: &str, kind: PluginKind, http: bool) -> Result<(), PluginError> {
        let expected = format!("{WIT_PACKAGE}@{WIT_VERSION}");
        // A different package version anywhere (export or import) is the most
        // useful thing to report, so look for it first.
        for name in self.exports.iter().chain(&self.imports) {
            if let Some((_, version)) = split_keyward_name(name) {
                if version != Some(WIT_VERSION) {
                    return Err(PluginError::WitVersion {
                        plugin: plugin.to_string(),
                        expected,
                        found: match version {
                            Some(v) => format!("{WIT_PACKAGE}@{v}"),
                            None => format!("{WIT_PACKAGE} (unversioned)"),
                        },
                    });
                }
            }
        }
        if !kind.export_names().any(|export| self.exports.contains(&export)) {
            return Err(PluginError::WrongWorld {
                plugin: plugin.to_string(),
                expected: kind,
                export: kind.export_names().collect::<Vec<_>>().join(" or "),
                found: if self.exports.is_empty() { "nothing".to_string() } else { self.exports.join(", ") },
            });
        }
        for import in &self.imports {
            let refused = |hint: &str| PluginError::UnsupportedImport {
                plugin: plugin.to_string(),
                import: import.clone(),
                hint: hint.to_string(),
            };
            if import.starts_with("wasi:http/") {
                if http {
                    continue;
                }
                return Err(refused(
                    "; outbound HTTP (wasi:http) is linked only for plugins granted hosts: \
                     list the origins it may reach in its manifest entry's grants.hosts",
                ));
            }
            if let Some((iface, _)) = split_keyward_name(import) {
                if !matches!(iface, "types" | "log") {
                    return Err(refused(&format!("; {expected} has no interface {iface:?} for plugins to import")));
                }
            } else if !import.starts_with("wasi:") {
                return Err(refused("; plugins may import only WASI 0.2 and keyward:plugin interfaces"));
            }
        }
        Ok(())
    }
}

/// Splits `keyward:plugin/iface@1.2.3` into `("iface", Some("1.2.3"))`.
fn split_keyward_name(name: &str) -> Option<(&str, Option<&str>)> {
    let rest = name.strip_prefix(WIT_PACKAGE)?.strip_prefix('/')?;
    Some(match rest.split_once('@') {
        Some((iface, version)) => (iface, Some(version)),
        None => (rest, None),
    })
}

fn read_source(plugin: &str, source: &PluginSource) -> Result<Vec<u8>, PluginError> {
    match source {
        PluginSource::Bytes(bytes) => Ok(bytes.to_vec()),
        PluginSource::File(path) => std::fs::read(path).map_err(|source| PluginError::Read {
            plugin: plugin.to_string(),
            path: path.clone(),
            source,
        }),
    }
}

/// Feeds a `std::hash::Hash` value into SHA-256, giving a digest that is
/// stable across processes (unlike `DefaultHasher`, whose algorithm is
/// unspecified), as a cache key must be.
struct Sha256Hasher(sha2::Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        // Only the full digest is used; this exists to satisfy the trait.
        let digest = self.0.clone().finalize();
        let mut word = [0u8; 8];
        word.copy_from_slice(&digest[..8]);
        u64::from_le_bytes(word)
    }
}

fn cache_tag(engine: &Engine) -> String {
    use std::hash::Hash;
    let mut hasher = Sha256Hasher(sha2::Sha256::new());
    WASMTIME_VERSION.hash(&mut hasher);
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..8])
}
