//! The bundled `vault` keystore passes the keystore contract against a real
//! OpenBao: K/V v2 with a token and with AppRole, and K/V v1 with AppRole
//! under KES's least-privilege policy (which has no `update`: on v1 that is
//! what makes a second create of one name fail instead of overwriting).

use keyward_plugin_host::resolve::Plugins;
use serde_json::json;

use crate::contract::keystore_contract;
use crate::openbao::OpenBao;
use crate::shared_engine;

async fn contract(bao: &OpenBao, config: serde_json::Value) {
    let plugins = Plugins::new(shared_engine(), None, false).unwrap();
    let ks =
        plugins.keystore("vault", &bao.plugin_config(config.clone())).await.unwrap_or_else(|e| panic!("{config}: {e}"));
    keystore_contract(ks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keystore_vault_passes_the_keystore_contract() {
    let Some(bao) = OpenBao::start("keystore_vault_passes_the_keystore_contract").await else { return };
    contract(&bao, json!({"engine": "kv2", "version": "v2", "prefix": "token", "token": "root"})).await;
    let (id, secret) = bao.approle().await;
    let approle = json!({"id": id, "secret": secret});
    contract(&bao, json!({"engine": "kv2", "version": "v2", "prefix": "approle", "approle": approle})).await;
    contract(&bao, json!({"engine": "kv", "prefix": "approle", "approle": approle})).await;
}
