//! The first-party plugins embedded in the binary, and the grants the host
//! gives each from its configuration.
//!
//! The components are checked in under `host/plugin-host/bundled/` (built
//! from `plugins/`; `bundled/README.md` says how), so building keyward needs
//! no wasm toolchain. `tests/plugin/bundled.rs` checks that they are exactly
//! what their sources build.
//!
//! A config that names one of these with no manifest entry of that name uses
//! the embedded copy, which needs no sha256 pin: it is part of the binary.
//! Its grants come from its own config (an operator's manifest entry would
//! state them instead): exactly what that config says it needs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use super::outbound::Origin;
use super::{ClientCert, DirGrant, Grants, Limits};

/// Derives a bundled plugin's grants and limits from its config, rewriting
/// the config into what the plugin sees.
type Prepare = fn(&mut Map<String, Value>) -> Result<(Grants, Limits), String>;

/// One bundled plugin.
pub struct Bundled {
    /// The name configs use (`plugin = "fs"`).
    pub name: &'static str,
    /// The crate in `plugins/` that builds it.
    pub krate: &'static str,
    /// The component.
    pub bytes: &'static [u8],
    /// Derives the grants and limits from the plugin's config, rewriting the
    /// config into what the plugin sees (guest paths instead of host paths,
    /// host-only keys removed).
    prepare: Prepare,
}

impl Bundled {
    /// The grants and limits for `config`, which becomes the plugin's view.
    pub fn prepare(&self, config: &mut Map<String, Value>) -> Result<(Grants, Limits), String> {
        (self.prepare)(config)
    }
}

/// Every bundled plugin.
pub const BUNDLED: &[Bundled] = &[
    Bundled { name: "fs", krate: "keystore-fs", bytes: include_bytes!("../bundled/keystore_fs.wasm"), prepare: fs },
    Bundled {
        name: "vault",
        krate: "keystore-vault",
        bytes: include_bytes!("../bundled/keystore_vault.wasm"),
        prepare: vault,
    },
    Bundled {
        name: "audit-file",
        krate: "audit-file",
        bytes: include_bytes!("../bundled/audit_file.wasm"),
        prepare: audit_file,
    },
    Bundled {
        name: "audit-webhook",
        krate: "audit-webhook",
        bytes: include_bytes!("../bundled/audit_webhook.wasm"),
        prepare: audit_webhook,
    },
];

/// The bundled plugin a config names (`fs`, `vault`, `audit-file`,
/// `audit-webhook`).
pub fn get(name: &str) -> Option<&'static Bundled> {
    BUNDLED.iter().find(|b| b.name == name)
}

/// The embedded component for a plugin name used in configs.
pub fn find(name: &str) -> Option<&'static [u8]> {
    get(name).map(|b| b.bytes)
}

/// Names of all bundled plugins, for messages.
pub fn names() -> impl Iterator<Item = &'static str> {
    BUNDLED.iter().map(|b| b.name)
}

fn host_path(config: &Map<String, Value>, key: &str) -> Result<PathBuf, String> {
    match config.get(key) {
        Some(Value::String(p)) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => Err(format!("config needs a '{key}' string")),
    }
}

/// Creates `dir` (and parents) with mode 0700 if it does not exist.
fn create_private_dir(dir: &Path) -> Result<(), String> {
    crate::cache::create_private_dir(dir).map_err(|e| format!("cannot create '{}': {e}", dir.display()))
}

/// `fs`: exactly the configured directory, as `/data`.
fn fs(config: &mut Map<String, Value>) -> Result<(Grants, Limits), String> {
    let dir = host_path(config, "path")?;
    create_private_dir(&dir)?;
    config.insert("path".into(), Value::String("/data".into()));
    Ok((Grants::dir(dir, "/data"), Limits::default()))
}

/// `audit-file`: the directory of the log file, as `/logs`.
fn audit_file(config: &mut Map<String, Value>) -> Result<(Grants, Limits), String> {
    let file = host_path(config, "path")?;
    let file_name = file.file_name().and_then(|f| f.to_str()).ok_or("'path' must name a file")?.to_string();
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    create_private_dir(&dir)?;
    config.insert("path".into(), Value::String(format!("/logs/{file_name}")));
    Ok((Grants::dir(dir, "/logs"), Limits::default()))
}

/// `audit-webhook`: the origin of its `url`, nothing else.
fn audit_webhook(config: &mut Map<String, Value>) -> Result<(Grants, Limits), String> {
    let url = match config.get("url") {
        Some(Value::String(u)) if !u.is_empty() => u.clone(),
        _ => return Err("config needs a 'url' string".into()),
    };
    let origin = Origin::parse(&url).map_err(|m| format!("url {url:?}: {m}"))?;
    Ok((Grants { hosts: vec![origin.to_string()], ..Grants::default() }, Limits::default()))
}

/// How long one call to the `vault` keystore may take: a remote Vault, a
/// login and a retry fit; the plugin's own `timeout_ms` (3.5 s) ends first
/// and says what failed.
const VAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// `vault`: the origin of its `endpoint` (plus any `hosts` a standby may
/// redirect to), a private state directory shared by its instances (its
/// token), the CA file of `tls.ca`, the client certificate of
/// `tls.cert`/`tls.key` (mutual TLS), the directory of a Kubernetes JWT file,
/// and `VAULT_TOKEN` when no credentials are configured. `tls` and `hosts`
/// are the host's keys: the plugin does not see them.
fn vault(config: &mut Map<String, Value>) -> Result<(Grants, Limits), String> {
    let endpoint = match config.get("endpoint") {
        Some(Value::String(u)) if !u.is_empty() => u.clone(),
        _ => return Err("config needs an 'endpoint' string (e.g. \"https://vault.internal:8200\")".into()),
    };
    let mut hosts = vec![Origin::parse(&endpoint).map_err(|m| format!("endpoint {endpoint:?}: {m}"))?.to_string()];
    match config.remove("hosts") {
        None => {}
        Some(Value::Array(extra)) => {
            for h in extra {
                let h = h.as_str().ok_or("'hosts' must be a list of origins")?;
                hosts.push(Origin::parse(h).map_err(|m| format!("hosts: {h:?}: {m}"))?.to_string());
            }
        }
        Some(_) => return Err("'hosts' must be a list of origins".into()),
    }
    let mut grants = Grants { hosts, state: Some("/state".into()), ..Grants::default() };
    match config.remove("tls") {
        None => {}
        Some(Value::Object(tls)) => {
            let (mut cert, mut key) = (None, None);
            for (name, value) in tls {
                let path = match value {
                    Value::String(p) if !p.is_empty() => PathBuf::from(p),
                    _ => return Err(format!("tls.{name} must be a file path")),
                };
                match name.as_str() {
                    "ca" => grants.ca = Some(path),
                    "cert" => cert = Some(path),
                    "key" => key = Some(path),
                    other => return Err(format!("tls.{other}: unknown (tls.ca, tls.cert and tls.key are supported)")),
                }
            }
            grants.client_cert = match (cert, key) {
                (Some(cert), Some(key)) => Some(ClientCert { cert, key }),
                (None, None) => None,
                _ => return Err("tls.cert and tls.key go together: the client certificate and its private key".into()),
            };
        }
        Some(_) => return Err("'tls' must be a table (tls.ca, tls.cert, tls.key)".into()),
    }
    if let Some(Value::Object(k8s)) = config.get_mut("kubernetes") {
        if let Some(Value::String(file)) = k8s.get("jwt_file").cloned() {
            let file = PathBuf::from(file);
            let (Some(dir), Some(name)) = (file.parent(), file.file_name().and_then(|n| n.to_str())) else {
                return Err("kubernetes.jwt_file must name a file".into());
            };
            grants.dirs.push(DirGrant { host: dir.to_path_buf(), guest: "/secrets".into() });
            k8s.insert("jwt_file".into(), Value::String(format!("/secrets/{name}")));
        }
    }
    if !["token", "approle", "kubernetes"].iter().any(|k| config.contains_key(*k)) {
        grants.env.push("VAULT_TOKEN".into());
    }
    config.entry("timeout_ms").or_insert(Value::from(3500));
    Ok((grants, Limits { call_timeout: VAULT_CALL_TIMEOUT, ..Limits::default() }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_plugins_are_components() {
        for name in names() {
            let bytes = find(name).unwrap();
            // A component's preamble: \0asm, then version 0x0d and layer 1.
            assert_eq!(&bytes[..4], b"\0asm", "{name}");
            assert_eq!(&bytes[4..8], &[0x0d, 0x00, 0x01, 0x00], "{name} is not a component");
        }
    }

    #[test]
    fn vault_gets_its_endpoint_a_state_directory_and_its_ca() {
        let mut config: Map<String, Value> = serde_json::from_str(
            r#"{"endpoint": "https://Vault.internal:8200", "hosts": ["https://standby:8200"],
                "tls": {"ca": "/etc/keyward/vault-ca.pem"}, "approle": {"id": "r", "secret": "s"}}"#,
        )
        .unwrap();
        let (grants, limits) = vault(&mut config).unwrap();
        assert_eq!(grants.hosts, ["https://vault.internal:8200", "https://standby:8200"]);
        assert_eq!(grants.ca.as_deref(), Some(Path::new("/etc/keyward/vault-ca.pem")));
        assert_eq!(grants.state.as_deref(), Some("/state"));
        assert!(grants.env.is_empty(), "credentials are configured: no VAULT_TOKEN");
        assert_eq!(limits.call_timeout, VAULT_CALL_TIMEOUT);
        assert!(!config.contains_key("tls") && !config.contains_key("hosts"), "host keys reach the plugin");
        let mut bare: Map<String, Value> = serde_json::from_str(r#"{"endpoint": "http://127.0.0.1:8200"}"#).unwrap();
        assert_eq!(vault(&mut bare).unwrap().0.env, ["VAULT_TOKEN"]);
        let mut half: Map<String, Value> =
            serde_json::from_str(r#"{"endpoint": "http://v:8200", "tls": {"cert": "c.pem"}}"#).unwrap();
        assert!(vault(&mut half).unwrap_err().contains("tls.cert and tls.key go together"));
        let mut mtls: Map<String, Value> = serde_json::from_str(
            r#"{"endpoint": "https://v:8200", "tls": {"cert": "/etc/keyward/c.pem", "key": "/etc/keyward/c.key"}}"#,
        )
        .unwrap();
        let client = vault(&mut mtls).unwrap().0.client_cert.unwrap();
        assert_eq!(
            (client.cert.to_str(), client.key.to_str()),
            (Some("/etc/keyward/c.pem"), Some("/etc/keyward/c.key"))
        );
    }
}
