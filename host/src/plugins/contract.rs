//! `keyward plugin test FILE`: the keystore contract run against a component
//! file, in a scratch directory granted as `/data` (or the grants given), as
//! the server would run it: pooled instances, concurrent calls.

use std::path::Path;
use std::sync::Arc;

use keyward_plugin_host::{
    sha256_hex, DirGrant, Grants, Limits, PluginKeystore, PluginKind, PluginSource, PluginSpec, PoolOptions,
};

use super::PluginCmdError;

/// What `plugin test` was given.
#[derive(Debug, Default)]
pub struct TestRequest {
    pub file: std::path::PathBuf,
    /// `HOST:GUEST` grants; none: a fresh directory as `/data`.
    pub grant_dirs: Vec<String>,
    pub grant_hosts: Vec<String>,
    /// The `init` configuration (JSON); default `{"path": "/data"}`.
    pub config: Option<String>,
    /// Per-call limit (e.g. `5s` for an interpreter-based plugin).
    pub call_timeout: Option<String>,
}

pub fn test(req: &TestRequest) -> Result<String, PluginCmdError> {
    let bytes = std::fs::read(&req.file)
        .map_err(|source| PluginCmdError::Read { path: req.file.display().to_string(), source })?;
    let scratch =
        tempfile::tempdir().map_err(|source| PluginCmdError::Write { path: "a temporary directory".into(), source })?;
    let mut grants = Grants { hosts: req.grant_hosts.clone(), ..Grants::default() };
    for (host, guest) in super::dir_grants(&req.grant_dirs)? {
        grants.dirs.push(DirGrant { host: host.into(), guest });
    }
    if grants.dirs.is_empty() {
        grants.dirs.push(DirGrant { host: scratch.path().to_path_buf(), guest: "/data".into() });
    }
    // The checks a manifest's grants get (guest paths, origins, relative host
    // paths against the working directory).
    grants.validate(Path::new(".")).map_err(PluginCmdError::Refused)?;
    let mut limits = Limits::default();
    if let Some(t) = &req.call_timeout {
        limits.call_timeout =
            humantime::parse_duration(t).map_err(|e| PluginCmdError::Refused(format!("--call-timeout {t:?}: {e}")))?;
    }
    let spec = PluginSpec {
        name: "under-test".into(),
        kind: PluginKind::Keystore,
        source: PluginSource::File(req.file.clone()),
        sha256: Some(sha256_hex(&bytes)),
        grants,
        limits,
    };
    let config = req.config.clone().unwrap_or_else(|| r#"{"path": "/data"}"#.into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .map_err(|e| PluginCmdError::Refused(e.to_string()))?;
    // A broken rule panics inside the contract; it is reported as this
    // command's error, not as a panic message, while the contract runs.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = rt.block_on(async {
        let engine = super::engine().map_err(|e| e.to_string())?;
        let ks = PluginKeystore::load(&engine, &spec, &config, PoolOptions { max_instances: 4 })
            .await
            .map_err(|e| e.to_string())?;
        let contract = tokio::spawn(keyward_plugin_host::contract::keystore_contract(Arc::new(ks)));
        contract.await.map_err(|e| match e.try_into_panic() {
            Ok(panic) => panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the contract check panicked".into()),
            Err(e) => e.to_string(),
        })
    });
    std::panic::set_hook(hook);
    let file = req.file.display();
    match outcome {
        Ok(()) => Ok(format!("ok: {file} passes the keystore contract\n")),
        Err(why) => Err(PluginCmdError::Refused(format!("{file} fails the keystore contract: {why}"))),
    }
}
