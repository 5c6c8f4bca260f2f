//! [`PluginAuditSink`]: an audit sink that is a WebAssembly component.

use std::sync::Arc;

use async_trait::async_trait;
use wasmtime::component::InstancePre;
use wasmtime::Store;

use super::bindings::audit_lines::AuditLines as AuditLinesWorld;
use super::bindings::audit_sink::AuditSink as AuditSinkWorld;
use super::bindings::{WitError, WitEvent};
use super::engine::LoadedComponent;
use super::pool::{call_plugin, Pool, PoolOptions, World};
use super::sandbox::HostState;
use super::{PluginEngine, PluginError, PluginKind, PluginSpec, PluginStats};
use keyward_core::audit_sink::{AuditBatch, AuditEvent, AuditSink};
use keyward_core::keystore::StoreError;

/// An instance of an audit sink component, in whichever of the two audit
/// worlds it implements.
pub(crate) enum SinkWorld {
    /// `audit-lines`: takes a batch as the lines themselves.
    Lines(AuditLinesWorld),
    /// `audit-sink`: takes a batch as one record per event.
    Events(AuditSinkWorld),
}

impl World for SinkWorld {
    const KIND: PluginKind = PluginKind::AuditSink;

    async fn instantiate(pre: &InstancePre<HostState>, store: &mut Store<HostState>) -> wasmtime::Result<Self> {
        let instance = pre.instantiate_async(&mut *store).await?;
        // The engine has already checked that one of the two is exported.
        match AuditLinesWorld::new(&mut *store, &instance) {
            Ok(world) => Ok(SinkWorld::Lines(world)),
            Err(_) => Ok(SinkWorld::Events(AuditSinkWorld::new(&mut *store, &instance)?)),
        }
    }

    async fn init(&self, store: &mut Store<HostState>, config: &str) -> wasmtime::Result<Result<(), WitError>> {
        match self {
            SinkWorld::Lines(w) => w.keyward_plugin_audit_lines_api().call_init(store, config).await,
            SinkWorld::Events(w) => w.keyward_plugin_audit_sink_api().call_init(store, config).await,
        }
    }
}

/// An [`AuditSink`] backed by an `audit-lines` or `audit-sink` world plugin.
///
/// Same containment as [`PluginKeystore`](super::PluginKeystore): pooled
/// instances, a deadline per batch, traps and timeouts discard the instance.
pub struct PluginAuditSink {
    pool: Pool<SinkWorld>,
}

impl std::fmt::Debug for PluginAuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginAuditSink").field("plugin", &self.pool.loaded()).finish_non_exhaustive()
    }
}

impl PluginAuditSink {
    /// Loads the component described by `spec` (verifying its pin before
    /// compiling it), starts one instance and calls its `init` with
    /// `config_json` (the `[audit.config]` table as a JSON object).
    pub async fn load(
        engine: &PluginEngine,
        spec: &PluginSpec,
        config_json: &str,
        options: PoolOptions,
    ) -> Result<PluginAuditSink, PluginError> {
        Ok(PluginAuditSink { pool: Pool::load(engine, spec, config_json, options).await? })
    }

    /// Starts a sink from an already loaded component.
    pub async fn start(
        loaded: LoadedComponent,
        config_json: &str,
        options: PoolOptions,
    ) -> Result<PluginAuditSink, PluginError> {
        Ok(PluginAuditSink { pool: Pool::start(loaded, config_json, options).await? })
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        self.pool.name()
    }

    /// SHA-256 of the component, lowercase hex.
    pub fn sha256(&self) -> &str {
        &self.pool.loaded().sha256
    }

    /// Live counters (calls, errors, traps, timeouts, instances created).
    pub fn stats(&self) -> Arc<PluginStats> {
        self.pool.stats().clone()
    }
}

fn to_wit(e: &AuditEvent) -> WitEvent<'_> {
    WitEvent {
        time: &e.time,
        ip: e.ip.as_deref(),
        path: &e.path,
        identity: e.identity.as_deref(),
        status: e.status,
        duration_us: e.duration_us,
        json: &e.json,
    }
}

#[async_trait]
impl AuditSink for PluginAuditSink {
    async fn write(&self, batch: AuditBatch<'_>) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        call_plugin!(self.pool, "write", |store, world| async {
            match world {
                SinkWorld::Lines(w) => w.keyward_plugin_audit_lines_api().call_write(store, batch.lines()).await,
                SinkWorld::Events(w) => {
                    // A sink built for per-event records gets them parsed
                    // back from the lines (off the request path).
                    let events: Vec<AuditEvent> = batch.iter().filter_map(AuditEvent::parse).collect();
                    let records: Vec<WitEvent> = events.iter().map(to_wit).collect();
                    w.keyward_plugin_audit_sink_api().call_write(store, &records).await
                }
            }
        })
    }
}
