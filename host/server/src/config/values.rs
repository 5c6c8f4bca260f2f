//! Parsers for single config values: durations, on/off switches,
//! connection counts, identities, plugin tables.

use std::time::Duration;

use super::{invalid, ConfigError};

/// Parses a duration such as `5m`, `30s`, `1h30m`, `250ms` or `0`.
pub fn parse_duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    let v = value.trim();
    if v == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(v).map_err(|e| invalid(key, format!("invalid duration '{value}': {e}")))
}

/// `limits.max_connections`: at least 1, and no more than a tokio semaphore
/// can count (so building the server's connection limit cannot fail).
pub(super) fn parse_max_connections(n: i64) -> Result<usize, ConfigError> {
    let max = tokio::sync::Semaphore::MAX_PERMITS;
    match usize::try_from(n) {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(invalid("limits.max_connections", format!("must be between 1 and {max}, not {n}"))),
    }
}

/// A duration that must not be zero: a zero connection timeout would cut
/// every client, and "no timeout" is exactly what these keys exist to prevent.
pub(super) fn positive_duration(key: &str, value: Option<&str>, default: Duration) -> Result<Duration, ConfigError> {
    let Some(value) = value else {
        return Ok(default);
    };
    let d = parse_duration(key, value)?;
    if d.is_zero() {
        return Err(invalid(key, "must be greater than zero"));
    }
    Ok(d)
}

/// Whether `s` has the form of an identity: 64 hex digits (a SHA-256).
pub(super) fn is_hex_identity(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// An on/off switch (`log.error`, `log.audit`); KES's log levels read as on.
pub(super) fn parse_switch(key: &str, value: Option<&str>, default: bool) -> Result<bool, ConfigError> {
    match value.map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) => match v.as_str() {
            "on" | "" | "debug" | "info" | "warn" | "error" => Ok(true),
            "off" => Ok(false),
            _ => Err(invalid(key, format!("must be \"on\" or \"off\", not '{v}'"))),
        },
    }
}

/// A plugin's TOML table as the JSON text its `init` takes (`{}` when absent).
pub(super) fn table_json(key: &str, table: Option<&toml::Table>) -> Result<String, ConfigError> {
    match table {
        None => Ok("{}".to_string()),
        Some(t) => serde_json::to_string(t).map_err(|e| invalid(key, format!("cannot be represented as JSON: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::test_support::{minimal, parse};

    #[test]
    fn bad_durations_and_switches_are_named() {
        let text = format!("{}[cache.expiry]\nany = \"soon\"\n", minimal());
        assert!(parse(&text).unwrap_err().to_string().contains("cache.expiry.any"));
        let text = format!("{}[log]\naudit = \"loud\"\n", minimal());
        assert!(parse(&text).unwrap_err().to_string().contains("log.audit"));
        let text = format!("{}[api.\"/v1/ready\"]\nskip_auth = true\ntimeout = \"15s\"\n", minimal());
        let s = parse(&text).unwrap();
        assert_eq!(s.api["/v1/ready"].timeout, Some(Duration::from_secs(15)));
    }
}
