//! `keystore.vault` of a KES config, as the bundled `vault` keystore's
//! `[keystore.config]`: KES's keys map one to one (`endpoint`, `engine`,
//! `version`, `namespace`, `prefix`, `transit`, `approle`, `kubernetes`),
//! `tls.ca` becomes the CA the host trusts for Vault and `tls.cert`/`tls.key`
//! the client certificate it presents, `kubernetes.jwt` naming
//! a file becomes `jwt_file` (granted to the plugin), and what keyward does
//! itself (`status.ping`, the legacy `retry` settings) is dropped.

use serde_yaml::{Mapping, Value};

/// Keys of `keystore.vault` and, for tables, the keys they may hold.
const KEYS: &[(&str, &[&str])] = &[
    ("endpoint", &[]),
    ("engine", &[]),
    ("version", &[]),
    ("namespace", &[]),
    ("prefix", &[]),
    ("transit", &["engine", "key"]),
    ("approle", &["namespace", "engine", "id", "secret", "retry"]),
    ("kubernetes", &["namespace", "engine", "role", "jwt", "retry"]),
    ("tls", &["key", "cert", "ca"]),
    ("status", &["ping"]),
];

/// Converts the section (`section` names it in messages) into TOML lines
/// for `[keystore.config]`; an error names the key and says why.
pub(super) fn config_lines(section: &str, vault: &Mapping) -> Result<Vec<String>, (String, String)> {
    let mut lines = Vec::new();
    for (key, value) in vault {
        let Some(key) = key.as_str() else { return Err((section.to_string(), "keys must be strings".into())) };
        let at = format!("{section}.{key}");
        let Some((_, fields)) = KEYS.iter().find(|(k, _)| *k == key) else {
            return Err((at, "is not a key of KES's Vault keystore".into()));
        };
        if value.is_null() || key == "status" {
            continue;
        }
        if fields.is_empty() {
            lines.push(format!("{key} = {}", scalar(&at, value)?));
            continue;
        }
        let Value::Mapping(table) = value else { return Err((at, "must be a map".into())) };
        let mut items = Vec::new();
        for (field, v) in table {
            let field = field.as_str().unwrap_or_default();
            let at = format!("{at}.{field}");
            if !fields.contains(&field) {
                return Err((at, "is not a key of KES's Vault keystore".into()));
            }
            if v.is_null() || field == "retry" {
                continue;
            }
            let text = scalar(&at, v)?;
            match (key, field) {
                ("kubernetes", "jwt") if v.as_str().is_some_and(|s| s.contains('/')) => {
                    items.push(format!("jwt_file = {text}"))
                }
                _ => items.push(format!("{field} = {text}")),
            }
        }
        if !items.is_empty() {
            lines.push(format!("{key} = {{ {} }}", items.join(", ")));
        }
    }
    if !lines.iter().any(|l| l.starts_with("endpoint = ")) {
        return Err((format!("{section}.endpoint"), "missing: the Vault keystore needs Vault's address".into()));
    }
    Ok(lines)
}

fn scalar(at: &str, v: &Value) -> Result<String, (String, String)> {
    match v {
        Value::String(s) => Ok(super::quote(s.trim())),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Number(n) => Ok(super::quote(&n.to_string())),
        _ => Err((at.to_string(), "must be a single value".into())),
    }
}

#[cfg(test)]
mod tests {
    /// KES's `keystore.vault` becomes the `vault` plugin's config, which the
    /// server accepts; what keyward cannot do is refused by name.
    #[test]
    fn a_kes_vault_keystore_becomes_the_vault_plugin() {
        let yaml =
            "address: 0.0.0.0:7373\nadmin:\n  identity: disabled\ntls:\n  key: k\n  cert: c\nkeystore:\n  vault:\n    \
                    endpoint: https://127.0.0.1:8200\n    engine: kv\n    version: v1\n    prefix: my-app\n    \
                    approle:\n      id: ${ROLE}\n      secret: ${SECRET}\n      retry: 15s\n    \
                    kubernetes:\n      role: keyward\n      jwt: /var/run/secrets/token\n    \
                    transit:\n      key: kes\n    tls:\n      ca: /etc/vault-ca.pem\n    status:\n      ping: 10s\n";
        let toml = super::super::convert(yaml, "kes.yml").unwrap();
        assert!(toml.contains("[keystore]\nplugin = \"vault\""), "{toml}");
        for line in [
            "endpoint = \"https://127.0.0.1:8200\"",
            "engine = \"kv\"",
            "prefix = \"my-app\"",
            "approle = { id = \"${ROLE}\", secret = \"${SECRET}\" }",
            "kubernetes = { role = \"keyward\", jwt_file = \"/var/run/secrets/token\" }",
            "transit = { key = \"kes\" }",
            "tls = { ca = \"/etc/vault-ca.pem\" }",
        ] {
            assert!(toml.lines().any(|l| l == line), "no {line:?} in\n{toml}");
        }
        assert!(!toml.contains("ping") && !toml.contains("retry"), "{toml}");
        let file = keyward_server::config::File::parse(std::path::Path::new("out.toml"), &toml).unwrap();
        let settings = keyward_server::config::Settings::from_file(file).unwrap();
        assert_eq!(settings.keystore.unwrap().plugin, "vault");

        // A client certificate (mutual TLS to Vault) is carried over.
        let mtls = yaml.replace(
            "      ca: /etc/vault-ca.pem\n",
            "      ca: /etc/vault-ca.pem\n      cert: /etc/c.pem\n      key: /etc/c.key\n",
        );
        let toml = super::super::convert(&mtls, "kes.yml").unwrap();
        assert!(
            toml.contains("tls = { ca = \"/etc/vault-ca.pem\", cert = \"/etc/c.pem\", key = \"/etc/c.key\" }"),
            "{toml}"
        );
    }
}
