//! [`PluginKeystore`]: a keystore backend that is a WebAssembly component.

use std::sync::Arc;

use async_trait::async_trait;
use wasmtime::component::InstancePre;
use wasmtime::Store;

use super::bindings::keystore::Keystore as KeystoreWorld;
use super::bindings::WitError;
use super::engine::LoadedComponent;
use super::pool::{call_plugin, Pool, PoolOptions, World};
use super::sandbox::HostState;
use super::{PluginEngine, PluginError, PluginKind, PluginSpec, PluginStats};
use keyward_core::keystore::{Keystore, Page, StoreError};

impl World for KeystoreWorld {
    const KIND: PluginKind = PluginKind::Keystore;

    async fn instantiate(pre: &InstancePre<HostState>, store: &mut Store<HostState>) -> wasmtime::Result<Self> {
        let instance = pre.instantiate_async(&mut *store).await?;
        KeystoreWorld::new(&mut *store, &instance)
    }

    async fn init(&self, store: &mut Store<HostState>, config: &str) -> wasmtime::Result<Result<(), WitError>> {
        self.keyward_plugin_keystore_api().call_init(store, config).await
    }
}

/// A [`Keystore`] backed by a `keystore` world plugin.
///
/// Every method runs on a pooled instance under the plugin's call deadline.
/// The plugin's `error` answers map one to one onto [`StoreError`]; a trap
/// becomes [`StoreError::Internal`] and a timeout
/// [`StoreError::Unavailable`]`("plugin call timed out")`, and in both cases
/// the instance is replaced.
pub struct PluginKeystore {
    pool: Pool<KeystoreWorld>,
}

impl std::fmt::Debug for PluginKeystore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginKeystore").field("plugin", &self.pool.loaded()).finish_non_exhaustive()
    }
}

impl PluginKeystore {
    /// Loads the component described by `spec` (verifying its pin before
    /// compiling it), starts one instance and calls its `init` with
    /// `config_json` (the `[keystore.config]` table as a JSON object).
    ///
    /// Fails if the plugin cannot be loaded, is not a keystore, or refuses its
    /// configuration; nothing is left running in that case.
    pub async fn load(
        engine: &PluginEngine,
        spec: &PluginSpec,
        config_json: &str,
        options: PoolOptions,
    ) -> Result<PluginKeystore, PluginError> {
        Ok(PluginKeystore { pool: Pool::load(engine, spec, config_json, options).await? })
    }

    /// Starts a keystore from an already loaded component (e.g. one loaded
    /// once and shared by a reload check and the real start-up).
    pub async fn start(
        loaded: LoadedComponent,
        config_json: &str,
        options: PoolOptions,
    ) -> Result<PluginKeystore, PluginError> {
        Ok(PluginKeystore { pool: Pool::start(loaded, config_json, options).await? })
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

#[async_trait]
impl Keystore for PluginKeystore {
    async fn create(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        call_plugin!(self.pool, "create", |store, world| world
            .keyward_plugin_keystore_api()
            .call_create(store, name, value))
    }

    async fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        call_plugin!(self.pool, "get", |store, world| world.keyward_plugin_keystore_api().call_get(store, name))
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        call_plugin!(self.pool, "delete", |store, world| world.keyward_plugin_keystore_api().call_delete(store, name))
    }

    async fn list(&self, prefix: &str, continue_at: &str, limit: u32) -> Result<Page, StoreError> {
        let (names, next) = call_plugin!(self.pool, "list", |store, world| world
            .keyward_plugin_keystore_api()
            .call_list(store, prefix, continue_at, limit))?;
        Ok(Page { names, next })
    }

    async fn status(&self) -> Result<(), StoreError> {
        call_plugin!(self.pool, "status", |store, world| world.keyward_plugin_keystore_api().call_status(store))
    }
}
