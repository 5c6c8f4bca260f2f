//! The keystore and audit sinks the config names, opened at start and again
//! on each reload.

use std::sync::Arc;

use super::StartError;
use crate::audit::stdout::StdoutSink;
use crate::config::Settings;
use crate::keys::memory::MemoryStore;
use keyward_core::audit_sink::AuditSink;
use keyward_core::keystore::Keystore;
use keyward_plugin_host::resolve::{default_cache_dir, Plugins};
use keyward_plugin_host::{EngineOptions, PluginEngine};

/// The plugin engine, shared by every load and reload.
pub(super) fn plugin_engine() -> Result<PluginEngine, StartError> {
    PluginEngine::new(EngineOptions { cache_dir: default_cache_dir() }).map_err(|e| StartError::Plugin(e.into()))
}

/// Builds the keystore named in the config: the built-in in-memory store
/// (`memory`, also the default without a `[keystore]`), or a plugin.
pub async fn open_keystore(settings: &Settings, plugins: &Plugins) -> Result<Arc<dyn Keystore>, StartError> {
    match &settings.keystore {
        None => Ok(Arc::new(MemoryStore::new())),
        Some(ks) if ks.plugin == "memory" => Ok(Arc::new(MemoryStore::new())),
        Some(ks) => Ok(plugins.keystore(&ks.plugin, &ks.config_json).await?),
    }
}

/// Builds the audit sinks named in the config, plus stdout if `log.audit = "on"`.
pub async fn open_audit_sinks(
    settings: &Settings,
    plugins: &Plugins,
) -> Result<Vec<(String, Arc<dyn AuditSink>)>, StartError> {
    let mut sinks: Vec<(String, Arc<dyn AuditSink>)> = Vec::new();
    if settings.log.audit {
        sinks.push(("stdout".into(), Arc::new(StdoutSink)));
    }
    for a in &settings.audit {
        sinks.push((a.plugin.clone(), plugins.audit_sink(&a.plugin, &a.config_json).await?));
    }
    Ok(sinks)
}
