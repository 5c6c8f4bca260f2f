//! From a name in the server config to a running plugin.
//!
//! A name is looked up in the manifest first (an operator's entry overrides a
//! bundled plugin of the same name), then among the plugins embedded in the
//! binary. Embedded plugins get the grants their own config implies (see
//! `bundled.rs`): the `fs` keystore sees exactly its configured directory as
//! `/data`, `vault` may reach exactly its endpoint, and so on.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::{
    Manifest, ManifestError, PluginAuditSink, PluginEngine, PluginError, PluginKeystore, PluginKind, PluginSpec,
    PoolOptions,
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
        let Some(bundled) = crate::bundled::get(name) else {
            return Err(ResolveError::Unknown {
                name: name.to_string(),
                bundled: crate::bundled::names().collect::<Vec<_>>().join(", "),
            });
        };
        let mut config: Map<String, Value> = serde_json::from_str(config_json).unwrap_or_default();
        let (grants, limits) = bundled.prepare(&mut config).map_err(|m| config_error(name, m))?;
        let mut spec = PluginSpec::embedded(name, kind, bundled.bytes, grants);
        spec.limits = limits;
        Ok((spec, Value::Object(config).to_string()))
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
