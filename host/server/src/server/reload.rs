//! Reloading on SIGHUP: the config file and manifest are read again and
//! what may change while connections stay open is swapped in.

use std::sync::Arc;

use super::backends::{open_audit_sinks, open_keystore};
use super::{Server, StartError};
use crate::auth::Authority;
use crate::config::Settings;
use crate::state::RouteOverrides;
use keyward_plugin_host::resolve::Plugins;

impl Server {
    /// Re-reads the config file and manifest: policies, identities, `[api]`
    /// overrides, the keystore plugin and audit sinks change; cached keys and
    /// connections stay. Everything new is loaded before anything is swapped,
    /// so a plugin that fails to load leaves the old configuration serving.
    pub async fn reload(&self) -> Result<(), StartError> {
        let Some(path) = &self.config_path else {
            return Ok(());
        };
        let settings = Settings::load(path)?;
        let plugins = Plugins::new(self.engine.clone(), settings.plugin_manifest.as_deref(), self.settings.dev)?;
        let store = open_keystore(&settings, &plugins).await?;
        let sinks = open_audit_sinks(&settings, &plugins).await?;
        self.state.keys.swap_store(store);
        self.state.authority.store(Arc::new(Authority::from_settings(&settings, self.state.started_at)));
        self.state.overrides.store(Arc::new(RouteOverrides::new(&settings.api)));
        self.state.audit.set_sinks(sinks);
        Ok(())
    }

    /// [`Server::reload`] on SIGHUP: a failure is logged and reported on the
    /// error log, and the old configuration keeps serving.
    pub(super) async fn reload_on_hangup(&self) {
        match self.reload().await {
            Ok(()) => tracing::info!("configuration reloaded"),
            Err(e) => self.state.errors.error(&format!("reload failed, keeping the old configuration: {e}")),
        }
    }
}
