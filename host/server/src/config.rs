//! Server configuration: the TOML file described in DESIGN.md.
//!
//! Loading happens in three steps so every error can name what is wrong:
//! 1. `toml` parses the text into [`File`] (`deny_unknown_fields` everywhere, so an
//!    unknown key is reported with its line and column);
//! 2. `${VAR}` references in string values are replaced from the environment;
//! 3. [`Settings::from_file`] checks values and converts them into typed settings.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use zeroize::Zeroizing;

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

/// A secret setting (`tls.password`): wiped from memory when dropped, and
/// never shown by `Debug`, so printing settings or a parsed file (in a log
/// line, a panic message, a test failure) cannot leak it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(Zeroizing::new(value))
    }

    /// The secret text, for the one place that needs it (decrypting the key).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

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

/// Replaces every `${VAR}` in `value` from the environment.
///
/// KES only expands a scalar that is entirely `${VAR}`; we accept references
/// anywhere in a string, which is a superset. `$` not followed by `{` is literal.
pub fn expand_env(key: &str, value: &str) -> Result<String, ConfigError> {
    expand_env_shown(key, value, true)
}

/// [`expand_env`]; `show = false` keeps `value` out of error messages.
fn expand_env_shown(key: &str, value: &str, show: bool) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(invalid(
                key,
                if show { format!("unterminated '${{' in '{value}'") } else { "unterminated '${'".to_string() },
            ));
        };
        let var = &after[..end];
        if var.is_empty() {
            return Err(invalid(key, "empty '${}' reference"));
        }
        match std::env::var(var) {
            Ok(v) => out.push_str(&v),
            Err(_) => return Err(ConfigError::MissingEnv { key: key.to_string(), var: var.to_string() }),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn expand_in_place(key: &str, value: &mut String) -> Result<(), ConfigError> {
    if value.contains("${") {
        *value = expand_env(key, value)?;
    }
    Ok(())
}

fn expand_opt(key: &str, value: &mut Option<String>) -> Result<(), ConfigError> {
    match value {
        Some(v) => expand_in_place(key, v),
        None => Ok(()),
    }
}

/// Expands `${VAR}` in a secret without echoing it in an error, replacing
/// the whole [`Secret`] so the unexpanded text is wiped on drop.
fn expand_secret(key: &str, value: &mut Option<Secret>) -> Result<(), ConfigError> {
    if let Some(v) = value {
        if v.expose().contains("${") {
            *v = Secret::new(expand_env_shown(key, v.expose(), false)?);
        }
    }
    Ok(())
}

fn expand_table(key: &str, table: &mut toml::Table) -> Result<(), ConfigError> {
    for (k, v) in table.iter_mut() {
        expand_value(&format!("{key}.{k}"), v)?;
    }
    Ok(())
}

fn expand_value(key: &str, value: &mut toml::Value) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(s) => expand_in_place(key, s),
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                expand_value(&format!("{key}[{i}]"), item)?;
            }
            Ok(())
        }
        toml::Value::Table(t) => expand_table(key, t),
        _ => Ok(()),
    }
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

    /// Replaces `${VAR}` in every string value.
    pub fn expand_env(&mut self) -> Result<(), ConfigError> {
        expand_opt("address", &mut self.address)?;
        if let Some(admin) = &mut self.admin {
            expand_in_place("admin.identity", &mut admin.identity)?;
        }
        if let Some(tls) = &mut self.tls {
            expand_in_place("tls.key", &mut tls.key)?;
            expand_in_place("tls.cert", &mut tls.cert)?;
            expand_secret("tls.password", &mut tls.password)?;
            expand_opt("tls.ca", &mut tls.ca)?;
            expand_opt("tls.auth", &mut tls.auth)?;
        }
        let e = &mut self.cache.expiry;
        expand_opt("cache.expiry.any", &mut e.any)?;
        expand_opt("cache.expiry.unused", &mut e.unused)?;
        expand_opt("cache.expiry.offline", &mut e.offline)?;
        expand_opt("log.error", &mut self.log.error)?;
        expand_opt("log.audit", &mut self.log.audit)?;
        for (path, api) in &mut self.api {
            expand_opt(&format!("api.\"{path}\".timeout"), &mut api.timeout)?;
        }
        for (name, p) in &mut self.policy {
            for (list, field) in [(&mut p.allow, "allow"), (&mut p.deny, "deny"), (&mut p.identities, "identities")] {
                for (i, v) in list.iter_mut().enumerate() {
                    expand_in_place(&format!("policy.{name}.{field}[{i}]"), v)?;
                }
            }
        }
        for (i, k) in self.keys.iter_mut().enumerate() {
            expand_in_place(&format!("keys[{i}].name"), &mut k.name)?;
        }
        if let Some(p) = &mut self.plugins {
            expand_in_place("plugins.manifest", &mut p.manifest)?;
        }
        if let Some(ks) = &mut self.keystore {
            expand_in_place("keystore.plugin", &mut ks.plugin)?;
            expand_opt("keystore.seal", &mut ks.seal)?;
            if let Some(c) = &mut ks.config {
                expand_table("keystore.config", c)?;
            }
        }
        for (i, a) in self.audit.iter_mut().enumerate() {
            expand_in_place(&format!("audit[{i}].plugin"), &mut a.plugin)?;
            if let Some(c) = &mut a.config {
                expand_table(&format!("audit[{i}].config"), c)?;
            }
        }
        let l = &mut self.limits;
        expand_opt("limits.handshake_timeout", &mut l.handshake_timeout)?;
        expand_opt("limits.header_timeout", &mut l.header_timeout)?;
        expand_opt("limits.body_timeout", &mut l.body_timeout)?;
        expand_opt("limits.write_timeout", &mut l.write_timeout)?;
        Ok(())
    }
}

/// Whether a TOML key names something secret, whose value an error message
/// must not quote. `password` is the only such key keyward itself reads;
/// `secret` and `token` cover plugin tables (`[keystore.config]`, `[audit.config]`).
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "secret", "token"].iter().any(|word| key.contains(word))
}

/// Whether line `line` (0-based) of `text` belongs to a statement that sets a
/// secret key. A line inside a multi-line string (`"""`, `'''`) belongs to
/// the statement that opened it, even if it contains `=`; any other line
/// without `=` continues the statement above (a multi-line array).
fn on_secret_line(text: &str, line: usize) -> bool {
    let mut secret = false;
    let mut open: Option<&str> = None;
    for l in text.split('\n').take(line + 1) {
        if let Some(delim) = open {
            if l.contains(delim) {
                open = None;
            }
            continue;
        }
        if let Some((key, value)) = l.split_once('=') {
            secret = is_secret_key(key);
            let value = value.trim_start();
            open = ["\"\"\"", "'''"].into_iter().find(|d| value.starts_with(d) && value.matches(d).count() == 1);
        }
    }
    secret
}

/// A TOML error as text. The toml crate quotes the offending source line
/// (and a type error quotes the value); when that line sets a secret key the
/// quote is left out and values in backticks are replaced, so a typo next to
/// `password = "…"` cannot print the password to the terminal or a log.
fn render_toml_error(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return e.to_string().trim_end().to_string();
    };
    let start = span.start.min(text.len());
    let before = &text.as_bytes()[..start];
    let line = before.iter().filter(|&&b| b == b'\n').count();
    if !on_secret_line(text, line) {
        return e.to_string().trim_end().to_string();
    }
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
    format!(
        "TOML parse error at line {}, column {column} (the line is not shown: it sets a secret)\n{}",
        line + 1,
        redact_quoted(e.message())
    )
}

/// Whether a `` `…` `` quote in a toml error message is safe to keep on a
/// secret line: a single character (the parser's hints, expected `` `"` ``) or
/// a key name (unknown field `` `passwrd` ``, expected one of `` `key` ``…).
/// A string value is never quoted in these messages (a secret is read as a
/// string, so only a non-string can be a type error), and the only non-string
/// TOML values that look like a key are `true`, `false`, `inf` and `nan`.
fn harmless_quote(quote: &str) -> bool {
    let key_like = quote.starts_with(|c: char| c.is_ascii_alphabetic())
        && quote.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !["true", "false", "inf", "nan"].contains(&quote);
    quote.chars().count() <= 1 || key_like
}

/// Replaces every `` `…` `` quote in `message` that could be a value with `` `<redacted>` ``.
fn redact_quoted(message: &str) -> String {
    let parts: Vec<&str> = message.split('`').collect();
    let mut out = String::with_capacity(message.len());
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push('`');
        }
        // Odd parts lie between a pair of backticks (an unpaired last one is not a quote).
        let quoted = i % 2 == 1 && i + 1 < parts.len();
        out.push_str(if quoted && !harmless_quote(part) { "<redacted>" } else { part });
    }
    out
}

/// Parses a duration such as `5m`, `30s`, `1h30m`, `250ms` or `0`.
pub fn parse_duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    let v = value.trim();
    if v == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(v).map_err(|e| invalid(key, format!("invalid duration '{value}': {e}")))
}

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

/// `limits.max_connections`: at least 1, and no more than a tokio semaphore
/// can count (so building the server's connection limit cannot fail).
fn parse_max_connections(n: i64) -> Result<usize, ConfigError> {
    let max = tokio::sync::Semaphore::MAX_PERMITS;
    match usize::try_from(n) {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(invalid("limits.max_connections", format!("must be between 1 and {max}, not {n}"))),
    }
}

/// A duration that must not be zero: a zero connection timeout would cut
/// every client, and "no timeout" is exactly what these keys exist to prevent.
fn positive_duration(key: &str, value: Option<&str>, default: Duration) -> Result<Duration, ConfigError> {
    let Some(value) = value else {
        return Ok(default);
    };
    let d = parse_duration(key, value)?;
    if d.is_zero() {
        return Err(invalid(key, "must be greater than zero"));
    }
    Ok(d)
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

fn is_hex_identity(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn parse_switch(key: &str, value: Option<&str>, default: bool) -> Result<bool, ConfigError> {
    match value.map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(default),
        Some(v) => match v.as_str() {
            "on" | "" | "debug" | "info" | "warn" | "error" => Ok(true),
            "off" => Ok(false),
            _ => Err(invalid(key, format!("must be \"on\" or \"off\", not '{v}'"))),
        },
    }
}

fn table_json(key: &str, table: Option<&toml::Table>) -> Result<String, ConfigError> {
    match table {
        None => Ok("{}".to_string()),
        Some(t) => serde_json::to_string(t).map_err(|e| invalid(key, format!("cannot be represented as JSON: {e}"))),
    }
}

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
        let address_text = file.address.as_deref().unwrap_or("0.0.0.0:7373");
        let address: SocketAddr = address_text
            .trim()
            .parse()
            .map_err(|e| invalid("address", format!("invalid listen address '{address_text}': {e}")))?;

        let admin_text = file.admin.as_ref().map(|a| a.identity.trim().to_string()).unwrap_or_default();
        let admin = if admin_text.is_empty() {
            return Err(invalid("admin.identity", "no admin identity"));
        } else if admin_text.eq_ignore_ascii_case("disabled") {
            Admin::Disabled
        } else if is_hex_identity(&admin_text) {
            Admin::Identity(admin_text.to_ascii_lowercase())
        } else {
            // KES accepts any string: one that is not a hash can never match,
            // which effectively disables the admin. We say so instead.
            return Err(invalid(
                "admin.identity",
                format!("'{admin_text}' is neither a 64-digit hex identity nor \"disabled\""),
            ));
        };

        let Some(tls) = file.tls else {
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
        let tls = TlsSettings {
            key: PathBuf::from(tls.key.trim()),
            cert: PathBuf::from(tls.cert.trim()),
            password: tls.password.filter(|p| !p.is_empty()),
            ca,
            auth,
        };

        let defaults = CacheSettings::default();
        let e = &file.cache.expiry;
        let dur = |key: &str, v: &Option<String>, d: Duration| match v {
            None => Ok(d),
            Some(v) => parse_duration(key, v),
        };
        let cache = CacheSettings {
            any: dur("cache.expiry.any", &e.any, defaults.any)?,
            unused: dur("cache.expiry.unused", &e.unused, defaults.unused)?,
            offline: dur("cache.expiry.offline", &e.offline, defaults.offline)?,
        };

        let log = LogSettings {
            error: parse_switch("log.error", file.log.error.as_deref(), true)?,
            audit: parse_switch("log.audit", file.log.audit.as_deref(), false)?,
        };

        let mut api = BTreeMap::new();
        for (path, section) in file.api {
            let key = format!("api.\"{path}\".timeout");
            let timeout = match &section.timeout {
                None => None,
                Some(t) => Some(parse_duration(&key, t)?),
            };
            api.insert(path, ApiSettings { skip_auth: section.skip_auth, timeout });
        }

        let mut policies = BTreeMap::new();
        let mut owner: BTreeMap<String, String> = BTreeMap::new();
        for (name, p) in file.policy {
            if !keyward_core::names::valid_name_new(&name) {
                return Err(invalid(
                    format!("policy.{name}"),
                    "policy name is empty, too long or contains invalid characters",
                ));
            }
            let mut identities = Vec::with_capacity(p.identities.len());
            for (i, id) in p.identities.iter().enumerate() {
                let key = format!("policy.{name}.identities[{i}]");
                let id = id.trim().to_ascii_lowercase();
                if id.is_empty() {
                    continue;
                }
                if !is_hex_identity(&id) {
                    return Err(invalid(key, format!("'{id}' is not a 64-digit hex identity")));
                }
                if admin == Admin::Identity(id.clone()) {
                    return Err(invalid(key, "identity is the admin identity and cannot have a policy"));
                }
                if let Some(other) = owner.insert(id.clone(), name.clone()) {
                    return Err(invalid(
                        key,
                        format!("identity already has a policy: '{id}' is also in policy '{other}'"),
                    ));
                }
                identities.push(id);
            }
            check_patterns(&name, "allow", &p.allow)?;
            check_patterns(&name, "deny", &p.deny)?;
            policies.insert(name, PolicySettings { allow: p.allow, deny: p.deny, identities });
        }

        let mut keys = Vec::new();
        for (i, k) in file.keys.into_iter().enumerate() {
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

        let keystore = match file.keystore {
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
        };
        let limits = LimitSettings::from_section(&file.limits)?;
        let mut audit = Vec::new();
        for (i, a) in file.audit.into_iter().enumerate() {
            if a.plugin.trim().is_empty() {
                return Err(invalid(format!("audit[{i}].plugin"), "no plugin named"));
            }
            audit.push(AuditSettings {
                plugin: a.plugin.trim().to_string(),
                config_json: table_json(&format!("audit[{i}].config"), a.config.as_ref())?,
            });
        }

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

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22";

    fn parse(text: &str) -> Result<Settings, ConfigError> {
        let mut f = File::parse(Path::new("test.toml"), text)?;
        f.expand_env()?;
        Settings::from_file(f)
    }

    fn minimal() -> String {
        format!("[admin]\nidentity = \"{ID}\"\n[tls]\nkey = \"k\"\ncert = \"c\"\n")
    }

    #[test]
    fn minimal_config_gets_kes_defaults() {
        let s = parse(&minimal()).unwrap();
        assert_eq!(s.address.to_string(), "0.0.0.0:7373");
        assert_eq!(s.admin, Admin::Identity(ID.into()));
        assert_eq!(s.cache, CacheSettings::default());
        assert_eq!(s.tls.auth, ClientAuth::Any);
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = format!("{}[cache.expiry]\nany = \"5m\"\nsometimes = \"1s\"\n", minimal());
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("sometimes"), "{err}");
        assert!(err.contains("line 8"), "{err}");
    }

    #[test]
    fn env_references_are_expanded_and_missing_ones_named() {
        std::env::set_var("KEYWARD_TEST_ADMIN_ID", ID);
        let text = "[admin]\nidentity = \"${KEYWARD_TEST_ADMIN_ID}\"\n[tls]\nkey = \"${KEYWARD_TEST_UNSET_VAR}\"\ncert = \"c\"\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains("KEYWARD_TEST_UNSET_VAR") && err.contains("tls.key"), "{err}");
        let text = "[admin]\nidentity = \"${KEYWARD_TEST_ADMIN_ID}\"\n[tls]\nkey = \"k\"\ncert = \"c\"\n";
        assert_eq!(parse(text).unwrap().admin, Admin::Identity(ID.into()));
    }

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
    fn bad_durations_and_switches_are_named() {
        let text = format!("{}[cache.expiry]\nany = \"soon\"\n", minimal());
        assert!(parse(&text).unwrap_err().to_string().contains("cache.expiry.any"));
        let text = format!("{}[log]\naudit = \"loud\"\n", minimal());
        assert!(parse(&text).unwrap_err().to_string().contains("log.audit"));
        let text = format!("{}[api.\"/v1/ready\"]\nskip_auth = true\ntimeout = \"15s\"\n", minimal());
        let s = parse(&text).unwrap();
        assert_eq!(s.api["/v1/ready"].timeout, Some(Duration::from_secs(15)));
    }

    #[test]
    fn admin_must_be_set() {
        let err = parse("[tls]\nkey = \"k\"\ncert = \"c\"\n").unwrap_err().to_string();
        assert!(err.contains("admin.identity"), "{err}");
        let s = parse("[admin]\nidentity = \"disabled\"\n[tls]\nkey = \"k\"\ncert = \"c\"\n").unwrap();
        assert_eq!(s.admin, Admin::Disabled);
    }

    #[test]
    fn limits_default_when_absent() {
        assert_eq!(parse(&minimal()).unwrap().limits, LimitSettings::default());
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

    const PW: &str = "hunter2-xyz";

    #[test]
    fn password_is_redacted_in_debug_output() {
        let text = format!("{}password = \"{PW}\"\n", minimal());
        let file = File::parse(Path::new("t.toml"), &text).unwrap();
        let shown = format!("{file:?}");
        assert!(!shown.contains(PW) && shown.contains("<redacted>"), "{shown}");
        let s = Settings::from_file(file).unwrap();
        assert_eq!(s.tls.password.as_ref().map(Secret::expose), Some(PW));
        for shown in [format!("{s:?}"), format!("{s:#?}"), format!("{:?}", s.tls)] {
            assert!(!shown.contains(PW) && shown.contains("<redacted>"), "{shown}");
        }
    }

    #[test]
    fn password_from_env_is_expanded_and_never_echoed() {
        std::env::set_var("KEYWARD_TEST_TLS_PW", PW);
        let text = format!("{}password = \"${{KEYWARD_TEST_TLS_PW}}\"\n", minimal());
        assert_eq!(parse(&text).unwrap().tls.password.as_ref().map(Secret::expose), Some(PW));
        let text = format!("{}password = \"{PW}${{oops\"\n", minimal());
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("tls.password") && !err.contains(PW), "{err}");
    }

    #[test]
    fn toml_errors_on_a_secret_line_do_not_show_the_value() {
        let tls = minimal();
        for (what, text, line) in [
            ("unterminated string", format!("{tls}password = \"{PW}\n"), 6),
            ("bare value", format!("{tls}password = {PW}\n"), 6),
            ("not a string", format!("{tls}password = 4242424242\n"), 6),
            ("trailing junk", format!("{tls}password = \"{PW}\" {PW}\n"), 6),
            ("quoted key", format!("{tls}\"password\" = {PW}\n"), 6),
            ("unterminated multi-line string", format!("{tls}password = \"\"\"{PW}\nmore-{PW}\n"), 0),
            ("multi-line string with =", format!("{tls}password = '''\n{PW}\na={PW}\n'''x\n"), 9),
            ("inside a multi-line string", format!("{tls}password = \"\"\"\na={PW}\\q\n\"\"\"\n"), 7),
            ("plugin token", format!("{tls}[keystore]\nplugin = \"x\"\n[keystore.config]\napi_token = \"{PW}\n"), 9),
        ] {
            let err = parse(&text).unwrap_err().to_string();
            assert!(!err.contains("hunter2") && !err.contains("4242424242"), "{what}: {err}");
            assert!(err.contains("TOML parse error at line"), "{what}: {err}");
            if line > 0 {
                assert!(err.contains(&format!("line {line},")), "{what}: {err}");
            }
        }
    }

    #[test]
    fn toml_errors_elsewhere_keep_the_source_line() {
        let text = format!("{}[cache.expiry]\nany = \"5m\"\nsometimes = \"1s\"\n", minimal());
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("8 | sometimes = \"1s\""), "{err}");
        // The statement after a multi-line secret is shown again.
        let text = format!("{}password = \"\"\"\n{PW}\n\"\"\"\nca = 5\n", minimal());
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("9 | ca = 5") && !err.contains(PW), "{err}");
    }

    #[test]
    fn quoted_values_are_redacted_and_key_names_kept() {
        assert_eq!(
            redact_quoted("invalid type: integer `42`, expected a string"),
            "invalid type: integer `<redacted>`, expected a string"
        );
        assert_eq!(redact_quoted("unknown field `pasword`, expected `key`"), "unknown field `pasword`, expected `key`");
        assert_eq!(redact_quoted("expected `\"`, found `true`"), "expected `\"`, found `<redacted>`");
        assert_eq!(redact_quoted("odd ` quote"), "odd ` quote");
    }
}
