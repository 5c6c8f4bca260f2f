//! From a name in the server config to a running plugin.
//!
//! A name is looked up in the manifest first (an operator's entry overrides a
//! bundled plugin of the same name), then among the plugins embedded in the
//! binary. Embedded plugins get host-chosen grants: the `fs` keystore sees
//! exactly its configured directory as `/data`; `audit-file` sees the
//! directory of its log file as `/logs`; `audit-webhook` may reach exactly the
//! origin (`scheme://host:port`) of its configured `url` over HTTP.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{
    Grants, Manifest, ManifestError, PluginAuditSink, PluginEngine, PluginError, PluginKeystore, PluginKind,
    PluginSpec, PoolOptions,
};
use keyward_core::audit_sink::AuditSink;
use keyward_core::keystore::Keystore;

/// Why a configured plugin could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("plugin '{name}' is not in the manifest and is not a bundled plugin (bundled: {bundled})")]
    Unknown { name: String, bundled: String },
    #[error("plugin {plugin}: {message}")]
    Config { plugin: String, message: String },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

fn config_error(plugin: &str, message: impl Into<String>) -> ResolveError {
    ResolveError::Config { plugin: plugin.to_string(), message: message.into() }
}

/// The plugin engine plus the manifest in force.
#[derive(Clone)]
pub struct Plugins {
    engine: PluginEngine,
    manifest: Option<Arc<Manifest>>,
}

/// The default compile cache: `$KEYWARD_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/keyward`, else `~/.cache/keyward`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("KEYWARD_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("keyward"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("keyward"))
}

impl Plugins {
    /// Loads the manifest (pins required unless `dev`) and sets up the engine.
    pub fn new(engine: PluginEngine, manifest: Option<&Path>, dev: bool) -> Result<Plugins, ResolveError> {
        let manifest = match manifest {
            Some(path) => {
                let m = Manifest::load(path)?;
                if !dev {
                    m.require_pins()?;
                }
                Some(Arc::new(m))
            }
            None => None,
        };
        Ok(Plugins { engine, manifest })
    }

    pub fn engine(&self) -> &PluginEngine {
        &self.engine
    }

    /// The spec and `init` config for `name` used as `kind`.
    fn resolve(&self, name: &str, kind: PluginKind, config_json: &str) -> Result<(PluginSpec, String), ResolveError> {
        if let Some(entry) = self.manifest.as_ref().and_then(|m| m.get(name)) {
            return Ok((entry.spec(), config_json.to_string()));
        }
        let Some(bytes) = crate::bundled::find(name) else {
            return Err(ResolveError::Unknown {
                name: name.to_string(),
                bundled: crate::bundled::names().collect::<Vec<_>>().join(", "),
            });
        };
        let mut config: Map<String, Value> = serde_json::from_str(config_json).unwrap_or_default();
        let host_path = |key: &str| -> Result<PathBuf, ResolveError> {
            match config.get(key) {
                Some(Value::String(p)) if !p.is_empty() => Ok(PathBuf::from(p)),
                _ => Err(config_error(name, format!("config needs a '{key}' string"))),
            }
        };
        let (grants, guest_config) = match name {
            "fs" => {
                let dir = host_path("path")?;
                create_private_dir(&dir)
                    .map_err(|e| config_error(name, format!("cannot create '{}': {e}", dir.display())))?;
                config.insert("path".into(), Value::String("/data".into()));
                (Grants::dir(dir, "/data"), config)
            }
            "audit-file" => {
                let file = host_path("path")?;
                let file_name = file
                    .file_name()
                    .and_then(|f| f.to_str())
                    .ok_or_else(|| config_error(name, "'path' must name a file"))?
                    .to_string();
                let dir = match file.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                create_private_dir(&dir)
                    .map_err(|e| config_error(name, format!("cannot create '{}': {e}", dir.display())))?;
                config.insert("path".into(), Value::String(format!("/logs/{file_name}")));
                (Grants::dir(dir, "/logs"), config)
            }
            "audit-webhook" => {
                let url = match config.get("url") {
                    Some(Value::String(u)) if !u.is_empty() => u.clone(),
                    _ => return Err(config_error(name, "config needs a 'url' string")),
                };
                let origin =
                    super::sandbox::Origin::parse(&url).map_err(|m| config_error(name, format!("url {url:?}: {m}")))?;
                let grants = Grants { hosts: vec![origin.to_string()], ..Grants::default() };
                (grants, config)
            }
            _ => (Grants::default(), config),
        };
        let spec = PluginSpec::embedded(name, kind, bytes, grants);
        Ok((spec, Value::Object(guest_config).to_string()))
    }

    /// Loads the keystore plugin `name` and runs its `init`.
    pub async fn keystore(&self, name: &str, config_json: &str) -> Result<Arc<dyn Keystore>, ResolveError> {
        let (spec, config) = self.resolve(name, PluginKind::Keystore, config_json)?;
        let ks = PluginKeystore::load(&self.engine, &spec, &config, PoolOptions::default()).await?;
        Ok(Arc::new(ks))
    }

    /// Loads the audit-sink plugin `name` and runs its `init`.
    pub async fn audit_sink(&self, name: &str, config_json: &str) -> Result<Arc<dyn AuditSink>, ResolveError> {
        let (spec, config) = self.resolve(name, PluginKind::AuditSink, config_json)?;
        let sink = PluginAuditSink::load(&self.engine, &spec, &config, PoolOptions { max_instances: 1 }).await?;
        Ok(Arc::new(sink))
    }
}

/// Creates `dir` (and parents) with mode 0700 if it does not exist.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}
