//! The validated, typed settings the server runs with.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::secret::Secret;

/// Whether the admin is an identity or disabled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admin {
    Identity(String),
    Disabled,
}

/// TLS client-certificate verification mode (`tls.auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// A certificate is required but not verified against a CA (KES default).
    Any,
    /// A certificate chain is verified against `tls.ca`.
    Verify,
}

/// Where server-generated log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogSettings {
    pub error: bool,
    pub audit: bool,
}

#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub key: PathBuf,
    pub cert: PathBuf,
    /// For a PKCS#8-encrypted `key`.
    pub password: Option<Secret>,
    pub ca: Option<PathBuf>,
    pub auth: ClientAuth,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    pub any: Duration,
    pub unused: Duration,
    pub offline: Duration,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings { any: Duration::from_secs(300), unused: Duration::from_secs(20), offline: Duration::ZERO }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiSettings {
    pub skip_auth: bool,
    pub timeout: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySettings {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    pub identities: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct KeystoreSettings {
    pub plugin: String,
    /// The plugin's TOML table, as JSON text for its `init`.
    pub config_json: String,
    pub seal: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub plugin: String,
    pub config_json: String,
}

/// Connection-abuse defences (`[limits]`), applied per connection by the
/// server. Read at start only: SIGHUP does not change them, because live
/// connections were admitted under the old values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    /// Connections served at once (TLS handshakes included); more are
    /// accepted and closed at once, so a flood cannot exhaust file descriptors.
    pub max_connections: usize,
    /// A client must finish its TLS handshake within this time, so
    /// connections that never send a ClientHello hold a slot only briefly.
    pub handshake_timeout: Duration,
    /// A request's head must arrive within this time. hyper starts the same
    /// clock when it waits for the next request on a kept-alive connection,
    /// so it is also the keep-alive idle timeout.
    pub header_timeout: Duration,
    /// A request's whole body must arrive within this time of the handler
    /// starting to read it (else 408), so a stalled upload cannot pin a handler.
    pub body_timeout: Duration,
    /// How long an answer may wait for the client to read it before the
    /// connection is cut (checked every `header_timeout`, so cut within
    /// that much more): a follower of `/v1/log/audit` that stopped reading
    /// would otherwise hold its connection for good. Long enough for a
    /// person to pause a pager.
    pub write_timeout: Duration,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(5),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(60),
        }
    }
}

/// Validated, typed server settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub address: SocketAddr,
    pub admin: Admin,
    pub tls: TlsSettings,
    pub cache: CacheSettings,
    pub log: LogSettings,
    pub api: BTreeMap<String, ApiSettings>,
    pub policies: BTreeMap<String, PolicySettings>,
    pub keys: Vec<String>,
    pub plugin_manifest: Option<PathBuf>,
    pub keystore: Option<KeystoreSettings>,
    pub audit: Vec<AuditSettings>,
    pub limits: LimitSettings,
    /// Started with `--dev`: manifest entries need no sha256 pin.
    pub dev: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{minimal, parse, ID};

    #[test]
    fn minimal_config_gets_kes_defaults() {
        let s = parse(&minimal()).unwrap();
        assert_eq!(s.address.to_string(), "0.0.0.0:7373");
        assert_eq!(s.admin, Admin::Identity(ID.into()));
        assert_eq!(s.cache, CacheSettings::default());
        assert_eq!(s.tls.auth, ClientAuth::Any);
    }

    #[test]
    fn limits_default_when_absent() {
        assert_eq!(parse(&minimal()).unwrap().limits, LimitSettings::default());
    }
}
