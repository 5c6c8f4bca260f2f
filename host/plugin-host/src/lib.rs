//! The WebAssembly plugin host.
//!
//! keyward's keystore backends and audit sinks are WASI 0.2 components built
//! against the WIT package `keyward:plugin@0.1.0` (`wit/` at the repository
//! root, the single source of truth for the ABI). This module loads them with
//! wasmtime and adapts them to the host's own seams:
//!
//! * [`PluginKeystore`] implements [`keyward_core::keystore::Keystore`];
//! * [`PluginAuditSink`] implements [`keyward_core::audit_sink::AuditSink`].
//!
//! How a plugin is contained, and why:
//!
//! * **Integrity before code**: the component's SHA-256 is checked against the
//!   manifest pin before anything parses or compiles it ([`engine`]).
//! * **One compile, many instances**: components are compiled once per engine
//!   (with an on-disk cache of precompiled artifacts keyed by SHA-256 and
//!   engine version) and instantiated into a small pool; each instance has its
//!   own `Store`, so plugin memory is never shared between concurrent calls.
//! * **Least authority**: each instance's WASI context holds only the granted
//!   preopened directories and named environment variables; no stdin/stdout,
//!   stderr goes to the host log, and all sockets are refused ([`sandbox`]).
//! * **Bounded resources**: a per-instance memory limit and a per-call
//!   deadline enforced with epoch interruption; a call past its deadline
//!   fails with [`StoreError::Unavailable`](keyward_core::keystore::StoreError)
//!   and its instance is thrown away.
//! * **Fail small**: an instance that trapped or timed out is discarded and a
//!   fresh one is made for the next call; a plugin's own `error` answers map
//!   one to one onto [`StoreError`](keyward_core::keystore::StoreError).
//! * **Outbound HTTP only where granted**: `wasi:http` (for webhook, etcd and
//!   vault plugins) is linked only for plugins whose `grants.hosts` lists
//!   origins, and each request must go to one of them exactly (scheme, host
//!   and port; anything else is refused before a connection is made) and ends
//!   at the call's deadline ([`sandbox`]). A component that imports
//!   `wasi:http` without such a grant is refused at load time with a message
//!   saying how to grant hosts.
//!
//! Typical use (the server's start-up path):
//!
//! ```ignore
//! let engine = PluginEngine::new(EngineOptions { cache_dir: Some(cache) })?;
//! let manifest = Manifest::load("plugins.toml".as_ref())?;
//! if !dev { manifest.require_pins()?; }
//! let entry = manifest.get("fs").ok_or(...)?;
//! let store = PluginKeystore::load(&engine, &entry.spec(), &config_json, PoolOptions::default()).await?;
//! // or, for an embedded first-party plugin:
//! let spec = PluginSpec::embedded("fs", KEYSTORE_FS_WASM, Grants::dir("/var/lib/keyward", "/data"));
//! ```

pub mod audit;
pub mod bundled;
pub mod cache;
pub mod contract;
pub mod engine;
pub mod grants;
pub mod keystore;
pub mod manifest;
mod outbound;
mod pool;
pub mod resolve;
pub mod sandbox;
mod scratch;
pub mod tools;

pub use audit::PluginAuditSink;
pub use engine::{ComponentInfo, EngineOptions, Inspection, LoadedComponent, PluginEngine};
pub use grants::{ClientCert, DirGrant, Grants};
pub use keystore::PluginKeystore;
pub use manifest::{Limits, Manifest, ManifestEntry, ManifestError};
pub use pool::{PluginStats, PoolOptions, TIMEOUT_MESSAGE};

use std::borrow::Cow;
use std::path::PathBuf;

/// The WIT package name every plugin must be built against.
pub const WIT_PACKAGE: &str = "keyward:plugin";
/// The WIT package version this host implements. Changing any signature in
/// `wit/` means bumping this, and the host then refuses older components with
/// a message naming both versions.
pub const WIT_VERSION: &str = "0.1.0";

/// Host bindings generated from `wit/` by wasmtime's `bindgen!`.
///
/// Exports are async so a plugin call can be interrupted at its deadline
/// without blocking an executor thread; the `log` import is a plain function
/// (it only emits a tracing event).
pub(crate) mod bindings {
    /// The `audit-sink` world; it also owns the shared `types` and `log`
    /// interfaces, which the `keystore` bindings reuse.
    pub mod audit_sink {
        wasmtime::component::bindgen!({
            path: "../../wit/keyward-plugin@0.1.0",
            world: "keyward:plugin/audit-sink@0.1.0",
            exports: { default: async },
            // `write` takes events borrowed from the host's batch: no copy
            // of five strings per event before they are copied into the guest.
            ownership: Borrowing { duplicate_if_necessary: false },
        });
    }
    /// The `audit-lines` world: batches of audit lines (preferred by sinks).
    pub mod audit_lines {
        wasmtime::component::bindgen!({
            path: "../../wit/keyward-plugin@0.1.0",
            world: "keyward:plugin/audit-lines@0.1.0",
            exports: { default: async },
            with: {
                "keyward:plugin/types": super::audit_sink::keyward::plugin::types,
                "keyward:plugin/log": super::audit_sink::keyward::plugin::log,
            },
        });
    }
    /// The `keystore` world.
    pub mod keystore {
        wasmtime::component::bindgen!({
            path: "../../wit/keyward-plugin@0.1.0",
            world: "keyward:plugin/keystore@0.1.0",
            exports: { default: async },
            with: {
                "keyward:plugin/types": super::audit_sink::keyward::plugin::types,
                "keyward:plugin/log": super::audit_sink::keyward::plugin::log,
            },
        });
    }

    pub use audit_sink::keyward::plugin::log as wit_log;
    pub use audit_sink::keyward::plugin::types::{Error as WitError, Event as WitEvent};
}

/// Which world a plugin implements; the manifest's `kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    /// The `keystore` world: exports `keystore-api`.
    Keystore,
    /// The `audit-sink` world: exports `audit-sink-api`.
    AuditSink,
}

impl PluginKind {
    /// The WIT world name, as written in `wit/`.
    pub fn world(self) -> &'static str {
        match self {
            PluginKind::Keystore => "keystore",
            PluginKind::AuditSink => "audit-sink",
        }
    }

    /// The interfaces a component of this kind may export (one of them),
    /// as written in `wit/`, preferred first. An audit sink exports either
    /// `audit-lines-api` (batches of lines) or the original `audit-sink-api`
    /// (per-event records); the manifest `kind` is `audit-sink` for both.
    pub fn export_interfaces(self) -> &'static [&'static str] {
        match self {
            PluginKind::Keystore => &["keystore-api"],
            PluginKind::AuditSink => &["audit-lines-api", "audit-sink-api"],
        }
    }

    /// The fully qualified export names a component of this kind may have,
    /// e.g. `keyward:plugin/keystore-api@0.1.0`.
    pub fn export_names(self) -> impl Iterator<Item = String> {
        self.export_interfaces().iter().map(|iface| format!("{WIT_PACKAGE}/{iface}@{WIT_VERSION}"))
    }
}

impl std::fmt::Display for PluginKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.world())
    }
}

/// Where a component's bytes come from.
#[derive(Debug, Clone)]
pub enum PluginSource {
    /// A `.wasm` file on disk (manifest entries).
    File(PathBuf),
    /// Bytes already in memory, typically a first-party plugin embedded in the
    /// binary with `include_bytes!`.
    Bytes(Cow<'static, [u8]>),
}

/// Everything needed to load one plugin: a manifest entry, or an embedded
/// first-party plugin with host-chosen grants.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// The plugin's name, used in every log line and error about it.
    pub name: String,
    /// Which world the host expects it to implement.
    pub kind: PluginKind,
    /// Where its bytes are.
    pub source: PluginSource,
    /// Expected SHA-256 (lowercase hex). Checked before compiling; `None` skips
    /// the check (embedded plugins, `--dev`).
    pub sha256: Option<String>,
    /// What the sandbox lets it reach.
    pub grants: Grants,
    /// Memory and time limits.
    pub limits: Limits,
}

impl PluginSpec {
    /// A spec for a plugin embedded in the binary. Embedded bytes are part of
    /// the trusted build, so no pin is needed.
    pub fn embedded(name: &str, kind: PluginKind, bytes: &'static [u8], grants: Grants) -> Self {
        PluginSpec {
            name: name.to_string(),
            kind,
            source: PluginSource::Bytes(Cow::Borrowed(bytes)),
            sha256: None,
            grants,
            limits: Limits::default(),
        }
    }
}

/// Why loading or running a plugin failed, outside of the plugin's own
/// `error` answers. Every case names the plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The manifest could not be read or is invalid.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The component file could not be read.
    #[error("plugin {plugin}: cannot read {path}: {source}")]
    Read {
        /// Plugin name.
        plugin: String,
        /// File that could not be read.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The component's SHA-256 does not match its pin. Nothing was compiled.
    #[error("plugin {plugin}: sha256 mismatch: manifest pins {expected}, file has {actual}; refusing to load it")]
    Sha256Mismatch {
        /// Plugin name.
        plugin: String,
        /// The pinned digest.
        expected: String,
        /// The digest of the bytes we were given.
        actual: String,
    },
    /// The bytes are not a valid component, or compiling them failed.
    #[error("plugin {plugin}: not a loadable WebAssembly component: {message}")]
    Compile {
        /// Plugin name.
        plugin: String,
        /// Wasmtime's explanation.
        message: String,
    },
    /// The component is built against a different version of our WIT package.
    #[error(
        "plugin {plugin}: built against {found}, but this host implements {expected}; rebuild it against {expected}"
    )]
    WitVersion {
        /// Plugin name.
        plugin: String,
        /// What this host implements, e.g. `keyward:plugin@0.1.0`.
        expected: String,
        /// What the component uses, e.g. `keyward:plugin@0.2.0`.
        found: String,
    },
    /// The component does not implement the world the configuration expects.
    #[error("plugin {plugin}: is not a keyward {expected} plugin: it does not export {export} (it exports: {found})")]
    WrongWorld {
        /// Plugin name.
        plugin: String,
        /// The expected world, e.g. `keystore`.
        expected: PluginKind,
        /// The export we looked for.
        export: String,
        /// What it exports instead, comma-separated.
        found: String,
    },
    /// The component imports something this host does not provide.
    #[error("plugin {plugin}: imports {import}, which this host does not provide{hint}")]
    UnsupportedImport {
        /// Plugin name.
        plugin: String,
        /// The import name.
        import: String,
        /// Extra advice, starting with "; " when present.
        hint: String,
    },
    /// The grants could not be turned into a sandbox (e.g. a preopen directory
    /// is missing on the host).
    #[error("plugin {plugin}: {message}")]
    Sandbox {
        /// Plugin name.
        plugin: String,
        /// What is wrong.
        message: String,
    },
    /// Linking or instantiating failed (type mismatch with our WIT, a trap in
    /// a start function).
    #[error("plugin {plugin}: cannot instantiate: {message}")]
    Instantiate {
        /// Plugin name.
        plugin: String,
        /// Wasmtime's explanation.
        message: String,
    },
    /// The plugin's `init` refused its configuration (or failed otherwise).
    #[error("plugin {plugin}: init failed: {source}")]
    Init {
        /// Plugin name.
        plugin: String,
        /// The mapped error the plugin (or the host, for traps/timeouts) gave.
        source: keyward_core::keystore::StoreError,
    },
    /// The server configuration uses a plugin as a kind it is not declared as
    /// (e.g. an `audit-sink` entry named as the keystore).
    #[error("plugin {plugin}: is declared as {declared} but used as {wanted}")]
    KindMismatch {
        /// Plugin name.
        plugin: String,
        /// The kind in its manifest entry or spec.
        declared: PluginKind,
        /// The kind the configuration needs.
        wanted: PluginKind,
    },
    /// The engine could not be set up, or the compile cache is unusable.
    #[error("plugin engine: {0}")]
    Engine(String),
}

/// Renders a wasmtime error with its whole cause chain on one line, so logs
/// and messages say e.g. "error while executing ...: wasm trap: unreachable".
pub(crate) fn error_chain(err: &wasmtime::Error) -> String {
    let mut out = String::new();
    for (i, cause) in err.chain().enumerate() {
        if i > 0 {
            out.push_str(": ");
        }
        out.push_str(&cause.to_string());
    }
    out
}

/// Hex SHA-256 of `bytes`, the form used by pins and the compile cache.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
