//! The config file as written: its TOML sections, before `${VAR}`
//! expansion and validation.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use zeroize::Zeroizing;

use super::secret::Secret;
use super::toml_error::render_toml_error;
use super::ConfigError;

/// The file as written, before `${VAR}` expansion and validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub address: Option<String>,
    pub admin: Option<AdminSection>,
    pub tls: Option<TlsSection>,
    #[serde(default)]
    pub cache: CacheSection,
    #[serde(default)]
    pub log: LogSection,
    #[serde(default)]
    pub api: BTreeMap<String, ApiSection>,
    #[serde(default)]
    pub policy: BTreeMap<String, PolicySection>,
    #[serde(default)]
    pub keys: Vec<KeySection>,
    pub plugins: Option<PluginsSection>,
    pub keystore: Option<KeystoreSection>,
    #[serde(default)]
    pub audit: Vec<AuditSection>,
    #[serde(default)]
    pub limits: LimitsSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    pub identity: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub key: String,
    pub cert: String,
    pub password: Option<Secret>,
    pub ca: Option<String>,
    pub auth: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSection {
    #[serde(default)]
    pub expiry: ExpirySection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpirySection {
    pub any: Option<String>,
    pub unused: Option<String>,
    pub offline: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    pub error: Option<String>,
    pub audit: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    #[serde(default)]
    pub skip_auth: bool,
    pub timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default)]
    pub identities: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySection {
    pub name: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsSection {
    pub manifest: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeystoreSection {
    pub plugin: String,
    pub config: Option<toml::Table>,
    pub seal: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    pub plugin: String,
    pub config: Option<toml::Table>,
}

/// `[limits]`: connection-abuse defences. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub max_connections: Option<i64>,
    pub handshake_timeout: Option<String>,
    pub header_timeout: Option<String>,
    pub body_timeout: Option<String>,
    pub write_timeout: Option<String>,
}

impl File {
    /// Parses TOML text. Unknown keys and wrong types are errors naming line and key.
    pub fn parse(path: &Path, text: &str) -> Result<File, ConfigError> {
        toml::from_str(text)
            .map_err(|e| ConfigError::Syntax { path: path.to_path_buf(), message: render_toml_error(text, &e) })
    }

    /// Reads and parses a config file, then expands `${VAR}` references.
    pub fn load(path: &Path) -> Result<File, ConfigError> {
        // The text holds `tls.password` (unless it comes from `${VAR}`): wiped on drop.
        let text = Zeroizing::new(
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?,
        );
        let mut file = File::parse(path, &text)?;
        file.expand_env()?;
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::test_support::{minimal, parse};

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = format!("{}[cache.expiry]\nany = \"5m\"\nsometimes = \"1s\"\n", minimal());
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("sometimes"), "{err}");
        assert!(err.contains("line 8"), "{err}");
    }
}
