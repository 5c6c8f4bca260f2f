//! KES's YAML server configuration, as `keyward config import` reads it:
//! every section KES knows (strictly: an unknown key is an error), and Go's
//! duration syntax.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_yaml::Value;

/// One scalar as written (string, number or bool).
pub(super) type Scalar = Option<Value>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KesFile {
    pub(super) version: Scalar,
    pub(super) address: Scalar,
    pub(super) admin: Option<KesAdmin>,
    /// The admin before KES v0.18 (`root: <identity>`).
    pub(super) root: Scalar,
    pub(super) tls: Option<KesTls>,
    pub(super) cache: Option<KesCache>,
    pub(super) log: Option<KesLog>,
    #[serde(default)]
    pub(super) api: Option<BTreeMap<String, KesApi>>,
    #[serde(default)]
    pub(super) policy: Option<BTreeMap<String, KesPolicy>>,
    /// A list of keys to create (2023+), or the keystore (before 2023).
    pub(super) keys: Option<Value>,
    pub(super) keystore: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KesAdmin {
    pub(super) identity: Scalar,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KesTls {
    pub(super) key: Scalar,
    pub(super) cert: Scalar,
    pub(super) password: Scalar,
    pub(super) ca: Scalar,
    pub(super) auth: Scalar,
    pub(super) proxy: Option<KesProxy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KesProxy {
    #[serde(default)]
    pub(super) identities: Option<Vec<Value>>,
    #[allow(dead_code)] // read only to accept the key
    pub(super) header: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KesCache {
    pub(super) expiry: Option<KesExpiry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KesExpiry {
    pub(super) any: Scalar,
    pub(super) unused: Scalar,
    pub(super) offline: Scalar,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KesLog {
    pub(super) error: Scalar,
    pub(super) audit: Scalar,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KesApi {
    pub(super) skip_auth: Scalar,
    pub(super) timeout: Scalar,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KesPolicy {
    #[serde(default)]
    pub(super) allow: Option<Vec<Value>>,
    #[serde(default)]
    pub(super) deny: Option<Vec<Value>>,
    #[serde(default)]
    pub(super) identities: Option<Vec<Value>>,
}

/// Parses a Go duration (`1h30m`, `1.5s`, `300ms`, `0`). Negative ones are
/// refused, as KES refuses them.
pub fn parse_go_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.starts_with('-') {
        return Err("must not be negative".into());
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return Err("invalid duration (expected a number)".into());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| "invalid number in duration".to_string())?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let nanos_per = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err("missing unit in duration (use ns, us, ms, s, m or h)".into()),
            u => return Err(format!("unknown unit '{u}' in duration")),
        };
        total += n * nanos_per;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err("duration is too long".into());
    }
    Ok(Duration::from_nanos(total.round() as u64))
}
