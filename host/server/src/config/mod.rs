//! Server configuration: the TOML file described in docs/configuration.md.
//!
//! Loading happens in three steps so every error can name what is wrong:
//! 1. `toml` parses the text into [`File`] (`deny_unknown_fields` everywhere, so an
//!    unknown key is reported with its line and column);
//! 2. `${VAR}` references in string values are replaced from the environment;
//! 3. [`Settings::from_file`] checks values and converts them into typed settings.
//!
//! `file` holds the sections as written, `env` the `${VAR}` expansion,
//! `settings` the typed result and `validate` the checks between them;
//! `values` parses single values, `secret` and `toml_error` keep secrets out
//! of debug output and error messages.

mod env;
mod file;
mod secret;
mod settings;
mod toml_error;
mod validate;
mod values;

use std::path::PathBuf;

pub use env::expand_env;
pub use file::{
    AdminSection, ApiSection, AuditSection, CacheSection, ExpirySection, File, KeySection, KeystoreSection,
    LimitsSection, LogSection, PluginsSection, PolicySection, TlsSection,
};
pub use secret::Secret;
pub use settings::{
    Admin, ApiSettings, AuditSettings, CacheSettings, ClientAuth, KeystoreSettings, LimitSettings, LogSettings,
    PolicySettings, Settings, TlsSettings,
};
pub use values::parse_duration;

/// Why a configuration could not be loaded. Each message names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file '{path}': {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file '{path}': {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("config: '{key}' references environment variable '{var}', which is not set")]
    MissingEnv { key: String, var: String },
    #[error("config: '{key}': {message}")]
    Invalid { key: String, message: String },
}

/// A [`ConfigError::Invalid`] naming `key`.
fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

/// What the tests of every part of the config parse.
#[cfg(test)]
mod test_support {
    use std::path::Path;

    use super::{ConfigError, File, Settings};

    pub(super) const ID: &str = "3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22";

    /// A secret value that must never show in output.
    pub(super) const PW: &str = "hunter2-xyz";

    /// Parses, expands and validates config text, as [`Settings::load`] does a file.
    pub(super) fn parse(text: &str) -> Result<Settings, ConfigError> {
        let mut f = File::parse(Path::new("test.toml"), text)?;
        f.expand_env()?;
        Settings::from_file(f)
    }

    /// The smallest valid config: an admin and the TLS files.
    pub(super) fn minimal() -> String {
        format!("[admin]\nidentity = \"{ID}\"\n[tls]\nkey = \"k\"\ncert = \"c\"\n")
    }
}
