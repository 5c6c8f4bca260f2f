//! Validating a parsed [`File`] into [`Settings`], section by section: each
//! check names the key at fault.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::{
    AdminSection, ApiSection, AuditSection, ExpirySection, File, KeySection, KeystoreSection, LimitsSection,
    LogSection, PolicySection, TlsSection,
};
use super::settings::{
    Admin, ApiSettings, AuditSettings, CacheSettings, ClientAuth, KeystoreSettings, LimitSettings, LogSettings,
    PolicySettings, Settings, TlsSettings,
};
use super::values::{
    is_hex_identity, parse_duration, parse_max_connections, parse_switch, positive_duration, table_json,
};
use super::{invalid, ConfigError};

impl Settings {
    /// Loads, expands and validates the config file at `path`.
    ///
    /// Relative paths in the file (TLS files, manifest) stay relative to the
    /// working directory, as with KES.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        Settings::from_file(File::load(path)?)
    }

    /// Validates a parsed file.
    pub fn from_file(file: File) -> Result<Settings, ConfigError> {
        let address = listen_address(file.address.as_deref())?;
        let admin = admin_identity(file.admin.as_ref())?;
        let tls = tls_settings(file.tls)?;
        let cache = cache_settings(&file.cache.expiry)?;
        let log = log_settings(&file.log)?;
        let api = api_settings(file.api)?;
        let policies = policy_settings(file.policy, &admin)?;
        let keys = boot_keys(file.keys)?;
        let keystore = keystore_settings(file.keystore)?;
        let limits = LimitSettings::from_section(&file.limits)?;
        let audit = audit_settings(file.audit)?;
        Ok(Settings {
            address,
            admin,
            tls,
            cache,
            log,
            api,
            policies,
            keys,
            plugin_manifest: file.plugins.map(|p| PathBuf::from(p.manifest)),
            keystore,
            audit,
            limits,
            dev: false,
        })
    }
}

/// `address`: KES's default when absent.
fn listen_address(address: Option<&str>) -> Result<SocketAddr, ConfigError> {
    let address_text = address.unwrap_or("0.0.0.0:7373");
    address_text.trim().parse().map_err(|e| invalid("address", format!("invalid listen address '{address_text}': {e}")))
}

/// `[admin] identity`: required, a hex identity or `disabled`.
fn admin_identity(section: Option<&AdminSection>) -> Result<Admin, ConfigError> {
    let admin_text = section.map(|a| a.identity.trim().to_string()).unwrap_or_default();
    if admin_text.is_empty() {
        Err(invalid("admin.identity", "no admin identity"))
    } else if admin_text.eq_ignore_ascii_case("disabled") {
        Ok(Admin::Disabled)
    } else if is_hex_identity(&admin_text) {
        Ok(Admin::Identity(admin_text.to_ascii_lowercase()))
    } else {
        // KES accepts any string: one that is not a hash can never match,
        // which effectively disables the admin. We say so instead.
        Err(invalid("admin.identity", format!("'{admin_text}' is neither a 64-digit hex identity nor \"disabled\"")))
    }
}

/// `[tls]`: required, with a key and a certificate; `auth = "on"` needs a CA.
fn tls_settings(tls: Option<TlsSection>) -> Result<TlsSettings, ConfigError> {
    let Some(tls) = tls else {
        return Err(invalid("tls", "missing: a server key and certificate are required"));
    };
    if tls.key.trim().is_empty() {
        return Err(invalid("tls.key", "no private key file"));
    }
    if tls.cert.trim().is_empty() {
        return Err(invalid("tls.cert", "no certificate file"));
    }
    let auth = match tls.auth.as_deref().map(str::trim) {
        None | Some("") | Some("off") => ClientAuth::Any,
        Some("on") => ClientAuth::Verify,
        Some(other) => return Err(invalid("tls.auth", format!("must be \"on\" or \"off\", not '{other}'"))),
    };
    let ca = tls.ca.filter(|c| !c.trim().is_empty()).map(PathBuf::from);
    if auth == ClientAuth::Verify && ca.is_none() {
        return Err(invalid("tls.ca", "tls.auth = \"on\" needs a CA file to verify client certificates against"));
    }
    Ok(TlsSettings {
        key: PathBuf::from(tls.key.trim()),
        cert: PathBuf::from(tls.cert.trim()),
        password: tls.password.filter(|p| !p.is_empty()),
        ca,
        auth,
    })
}

/// `[cache.expiry]`: KES's defaults for keys left out.
fn cache_settings(e: &ExpirySection) -> Result<CacheSettings, ConfigError> {
    let defaults = CacheSettings::default();
    let dur = |key: &str, v: &Option<String>, d: Duration| match v {
        None => Ok(d),
        Some(v) => parse_duration(key, v),
    };
    Ok(CacheSettings {
        any: dur("cache.expiry.any", &e.any, defaults.any)?,
        unused: dur("cache.expiry.unused", &e.unused, defaults.unused)?,
        offline: dur("cache.expiry.offline", &e.offline, defaults.offline)?,
    })
}

/// `[log]`: error lines on, audit lines off unless switched.
fn log_settings(log: &LogSection) -> Result<LogSettings, ConfigError> {
    Ok(LogSettings {
        error: parse_switch("log.error", log.error.as_deref(), true)?,
        audit: parse_switch("log.audit", log.audit.as_deref(), false)?,
    })
}

/// `[api."/path"]`: per-route `skip_auth` and `timeout`.
fn api_settings(sections: BTreeMap<String, ApiSection>) -> Result<BTreeMap<String, ApiSettings>, ConfigError> {
    let mut api = BTreeMap::new();
    for (path, section) in sections {
        let key = format!("api.\"{path}\".timeout");
        let timeout = match &section.timeout {
            None => None,
            Some(t) => Some(parse_duration(&key, t)?),
        };
        api.insert(path, ApiSettings { skip_auth: section.skip_auth, timeout });
    }
    Ok(api)
}

/// `[policy.NAME]`: valid names, identities in at most one policy and never
/// the admin's, patterns that can match a request path.
fn policy_settings(
    sections: BTreeMap<String, PolicySection>,
    admin: &Admin,
) -> Result<BTreeMap<String, PolicySettings>, ConfigError> {
    let mut policies = BTreeMap::new();
    let mut owner: BTreeMap<String, String> = BTreeMap::new();
    for (name, p) in sections {
        if !keyward_core::names::valid_name_new(&name) {
            return Err(invalid(
                format!("policy.{name}"),
                "policy name is empty, too long or contains invalid characters",
            ));
        }
        let identities = policy_identities(&name, &p.identities, admin, &mut owner)?;
        check_patterns(&name, "allow", &p.allow)?;
        check_patterns(&name, "deny", &p.deny)?;
        policies.insert(name, PolicySettings { allow: p.allow, deny: p.deny, identities });
    }
    Ok(policies)
}

/// One policy's `identities`, lower-cased, blanks skipped. `owner` maps each
/// identity already placed to its policy.
fn policy_identities(
    name: &str,
    listed: &[String],
    admin: &Admin,
    owner: &mut BTreeMap<String, String>,
) -> Result<Vec<String>, ConfigError> {
    let mut identities = Vec::with_capacity(listed.len());
    for (i, id) in listed.iter().enumerate() {
        let key = format!("policy.{name}.identities[{i}]");
        let id = id.trim().to_ascii_lowercase();
        if id.is_empty() {
            continue;
        }
        if !is_hex_identity(&id) {
            return Err(invalid(key, format!("'{id}' is not a 64-digit hex identity")));
        }
        if *admin == Admin::Identity(id.clone()) {
            return Err(invalid(key, "identity is the admin identity and cannot have a policy"));
        }
        if let Some(other) = owner.insert(id.clone(), name.to_string()) {
            return Err(invalid(key, format!("identity already has a policy: '{id}' is also in policy '{other}'")));
        }
        identities.push(id);
    }
    Ok(identities)
}

/// Refuses a policy pattern that no request path can match (a `deny`
/// written that way would silently not be enforced), naming the policy, the
/// list and the pattern.
fn check_patterns(policy: &str, list: &str, patterns: &[String]) -> Result<(), ConfigError> {
    for (i, pattern) in patterns.iter().enumerate() {
        if let Some(why) = crate::auth::pattern::Pattern::from_config(pattern).unmatchable() {
            return Err(invalid(
                format!("policy.{policy}.{list}[{i}]"),
                format!("pattern '{pattern}' can never match a request path: {why}"),
            ));
        }
    }
    Ok(())
}

/// `[[keys]]`: the keys created at start, each a valid name listed once.
fn boot_keys(sections: Vec<KeySection>) -> Result<Vec<String>, ConfigError> {
    let mut keys = Vec::new();
    for (i, k) in sections.into_iter().enumerate() {
        let name = k.name.trim().to_string();
        if !keyward_core::names::valid_name_new(&name) {
            return Err(invalid(
                format!("keys[{i}].name"),
                format!("key name '{name}' is empty, too long or contains invalid characters"),
            ));
        }
        if keys.contains(&name) {
            return Err(invalid(format!("keys[{i}].name"), format!("key '{name}' is listed twice")));
        }
        keys.push(name);
    }
    Ok(keys)
}

/// `[keystore]`: a plugin name and its table as JSON.
fn keystore_settings(section: Option<KeystoreSection>) -> Result<Option<KeystoreSettings>, ConfigError> {
    Ok(match section {
        None => None,
        Some(ks) => {
            if ks.plugin.trim().is_empty() {
                return Err(invalid("keystore.plugin", "no plugin named"));
            }
            Some(KeystoreSettings {
                plugin: ks.plugin.trim().to_string(),
                config_json: table_json("keystore.config", ks.config.as_ref())?,
                seal: ks.seal.filter(|s| !s.trim().is_empty()),
            })
        }
    })
}

/// `[[audit]]`: each a plugin name and its table as JSON.
fn audit_settings(sections: Vec<AuditSection>) -> Result<Vec<AuditSettings>, ConfigError> {
    let mut audit = Vec::new();
    for (i, a) in sections.into_iter().enumerate() {
        if a.plugin.trim().is_empty() {
            return Err(invalid(format!("audit[{i}].plugin"), "no plugin named"));
        }
        audit.push(AuditSettings {
            plugin: a.plugin.trim().to_string(),
            config_json: table_json(&format!("audit[{i}].config"), a.config.as_ref())?,
        });
    }
    Ok(audit)
}

impl LimitSettings {
    /// Validates `[limits]`, filling in defaults for missing keys.
    fn from_section(section: &LimitsSection) -> Result<LimitSettings, ConfigError> {
        let defaults = LimitSettings::default();
        Ok(LimitSettings {
            max_connections: match section.max_connections {
                None => defaults.max_connections,
                Some(n) => parse_max_connections(n)?,
            },
            handshake_timeout: positive_duration(
                "limits.handshake_timeout",
                section.handshake_timeout.as_deref(),
                defaults.handshake_timeout,
            )?,
            header_timeout: positive_duration(
                "limits.header_timeout",
                section.header_timeout.as_deref(),
                defaults.header_timeout,
            )?,
            body_timeout: positive_duration(
                "limits.body_timeout",
                section.body_timeout.as_deref(),
                defaults.body_timeout,
            )?,
            write_timeout: positive_duration(
                "limits.write_timeout",
                section.write_timeout.as_deref(),
                defaults.write_timeout,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::{minimal, parse, ID};

    #[test]
    fn identity_in_two_policies_is_refused() {
        let text = format!(
            "{}[policy.a]\nidentities = [\"{ID2}\"]\n[policy.b]\nidentities = [\"{ID2}\"]\n",
            minimal(),
            ID2 = "aa".repeat(32)
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("already has a policy"), "{err}");
    }

    #[test]
    fn patterns_that_can_never_match_are_refused_by_name() {
        let text = format!(
            "{}[policy.app]\nallow = [\"/v1/key/*\"]\ndeny = [\"/v1/key/decrypt/x\", \"/v1/key/encrypt/app-%73ecret\"]\n",
            minimal()
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("policy.app.deny[1]") && err.contains("/v1/key/encrypt/app-%73ecret"), "{err}");
        assert!(err.contains("percent-encoded"), "{err}");
        let text = format!("{}[policy.app]\nallow = [\"/v1/key/create/ k\"]\n", minimal());
        assert!(parse(&text).unwrap_err().to_string().contains("policy.app.allow[0]"));
    }

    #[test]
    fn admin_cannot_have_a_policy() {
        let text = format!("{}[policy.a]\nidentities = [\"{ID}\"]\n", minimal());
        assert!(parse(&text).unwrap_err().to_string().contains("admin"));
    }

    #[test]
    fn admin_must_be_set() {
        let err = parse("[tls]\nkey = \"k\"\ncert = \"c\"\n").unwrap_err().to_string();
        assert!(err.contains("admin.identity"), "{err}");
        let s = parse("[admin]\nidentity = \"disabled\"\n[tls]\nkey = \"k\"\ncert = \"c\"\n").unwrap();
        assert_eq!(s.admin, Admin::Disabled);
    }

    #[test]
    fn limits_are_parsed() {
        let text = format!(
            "{}[limits]\nmax_connections = 10\nhandshake_timeout = \"250ms\"\nheader_timeout = \"2s\"\nbody_timeout = \"1m\"\nwrite_timeout = \"90s\"\n",
            minimal()
        );
        let l = parse(&text).unwrap().limits;
        assert_eq!(l.max_connections, 10);
        assert_eq!(l.handshake_timeout, Duration::from_millis(250));
        assert_eq!(l.header_timeout, Duration::from_secs(2));
        assert_eq!(l.body_timeout, Duration::from_secs(60));
        assert_eq!(l.write_timeout, Duration::from_secs(90));
    }

    #[test]
    fn bad_limits_are_named() {
        for (line, key) in [
            ("max_connections = 0", "limits.max_connections"),
            ("max_connections = -5", "limits.max_connections"),
            ("handshake_timeout = \"0s\"", "limits.handshake_timeout"),
            ("header_timeout = \"soon\"", "limits.header_timeout"),
            ("body_timeout = \"0\"", "limits.body_timeout"),
            ("write_timeout = \"never\"", "limits.write_timeout"),
            ("idle_timeout = \"5s\"", "idle_timeout"),
        ] {
            let err = parse(&format!("{}[limits]\n{line}\n", minimal())).unwrap_err().to_string();
            assert!(err.contains(key), "{line}: {err}");
        }
    }

    #[test]
    fn keystore_config_becomes_json() {
        let text = format!("{}[keystore]\nplugin = \"fs\"\n[keystore.config]\npath = \"/data\"\n", minimal());
        let s = parse(&text).unwrap();
        let ks = s.keystore.unwrap();
        assert_eq!(ks.plugin, "fs");
        assert_eq!(ks.config_json, r#"{"path":"/data"}"#);
    }
}
