//! The plugin manifest, `plugins.toml`.
//!
//! ```toml
//! [[plugin]]
//! name = "fs"                       # referenced from the server config
//! kind = "keystore"                 # keystore | audit-sink
//! path = "keystore_fs.wasm"         # relative to the manifest
//! sha256 = "9f2c…"                  # required unless the server runs with --dev
//! [plugin.grants]
//! dirs  = [{ host = "/var/lib/keyward", guest = "/data" }]
//! hosts = ["https://127.0.0.1:2379"]
//! env   = ["ETCD_TOKEN"]
//! [plugin.limits]
//! memory = "64MiB"
//! call_timeout = "2s"
//! ```
//!
//! Parsing is strict (`deny_unknown_fields`) because a misspelt grant or limit
//! silently ignored would run a plugin with different authority than the
//! operator wrote down. Relative paths (`path`, `grants.dirs[].host`) are
//! resolved against the manifest's directory, so a manifest and its plugins
//! can be moved together.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{PluginKind, PluginSource, PluginSpec};

/// Default per-instance memory limit when the manifest gives none.
pub const DEFAULT_MEMORY: u64 = 64 * 1024 * 1024;
/// Default per-call deadline when the manifest gives none.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// The most a 32-bit WebAssembly memory can ever hold.
const MAX_MEMORY: u64 = 4 * 1024 * 1024 * 1024;
/// Longer than this and a "timeout" is not protecting anything.
const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(600);

/// Why a manifest was refused. Every case says which file and, where it
/// applies, which plugin.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file could not be read.
    #[error("cannot read plugin manifest {path}: {source}")]
    Read {
        /// The manifest path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not valid TOML, or not the manifest schema (unknown key, wrong type).
    /// The message includes the line and column.
    #[error("plugin manifest {path}: {message}")]
    Syntax {
        /// The manifest path.
        path: PathBuf,
        /// The parser's explanation, with location.
        message: String,
    },
    /// One entry is well-formed TOML but makes no sense.
    #[error("plugin manifest {path}: plugin {plugin:?}: {message}")]
    Invalid {
        /// The manifest path.
        path: PathBuf,
        /// The entry's name (or its index when it has no usable name).
        plugin: String,
        /// What is wrong.
        message: String,
    },
    /// An entry has no `sha256` and the server is not in `--dev` mode.
    #[error(
        "plugin manifest {path}: plugin {plugin:?} has no sha256 pin (required unless the server runs with --dev)"
    )]
    MissingPin {
        /// The manifest path.
        path: PathBuf,
        /// The entry's name.
        plugin: String,
    },
}

/// One directory grant: `host` is opened by the host and shown to the plugin
/// as `guest`; the plugin can see nothing of the host filesystem outside it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    /// Host directory (resolved against the manifest's directory if relative).
    pub host: PathBuf,
    /// Absolute path the plugin uses for it, e.g. `/data`.
    pub guest: String,
}

/// What a plugin's sandbox lets it reach. The default grants nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Preopened directories.
    #[serde(default)]
    pub dirs: Vec<DirGrant>,
    /// Outbound HTTP allow-list of origins (`scheme://host[:port]`, http or
    /// https). A plugin is linked with `wasi:http` only when this is not
    /// empty, and may then reach exactly these origins (compared
    /// case-insensitively, default port filled in; see `sandbox`).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Environment variables passed through by name (value read from the
    /// host's environment when an instance is created; absent ones are
    /// simply not set).
    #[serde(default)]
    pub env: Vec<String>,
    /// A PEM file of the CA certificates that HTTPS to the granted hosts
    /// trusts instead of the public roots (a backend with a private CA).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// Where the plugin sees a private directory the host creates when it
    /// loads the plugin, shared by all its instances and removed when the
    /// plugin is unloaded: state the instances of a pool must share (a
    /// backend's login token), never persisted.
    #[serde(default)]
    pub state: Option<String>,
}

impl Grants {
    /// Grants exactly one directory, as the host does for the embedded `fs`
    /// plugin.
    pub fn dir(host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        Grants { dirs: vec![DirGrant { host: host.into(), guest: guest.into() }], ..Grants::default() }
    }
}

/// Resource limits for each instance of a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum linear memory of one instance, in bytes.
    pub memory: u64,
    /// Maximum wall time of one call (and of instantiation + `init`).
    pub call_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { memory: DEFAULT_MEMORY, call_timeout: DEFAULT_CALL_TIMEOUT }
    }
}

/// One `[[plugin]]` entry, validated, with paths resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// Name referenced from the server config.
    pub name: String,
    /// The world it implements.
    pub kind: PluginKind,
    /// Absolute (or manifest-relative resolved) path of the `.wasm` file.
    pub path: PathBuf,
    /// Expected SHA-256, lowercase hex.
    pub sha256: Option<String>,
    /// Sandbox grants, with host paths resolved.
    pub grants: Grants,
    /// Limits.
    pub limits: Limits,
}

impl ManifestEntry {
    /// The load spec for this entry.
    pub fn spec(&self) -> PluginSpec {
        PluginSpec {
            name: self.name.clone(),
            kind: self.kind,
            source: PluginSource::File(self.path.clone()),
            sha256: self.sha256.clone(),
            grants: self.grants.clone(),
            limits: self.limits,
        }
    }
}

/// A parsed, validated `plugins.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Manifest {
    /// Where it was read from (for messages); empty for in-memory manifests.
    pub path: PathBuf,
    /// Entries in file order; names are unique.
    pub plugins: Vec<ManifestEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    plugin: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: String,
    kind: PluginKind,
    path: PathBuf,
    #[serde(default)]
    sha256: Option<String>,
    #[serde(default)]
    grants: Grants,
    #[serde(default)]
    limits: RawLimits,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    #[serde(default)]
    memory: Option<String>,
    #[serde(default)]
    call_timeout: Option<String>,
}

impl Manifest {
    /// Reads and validates the manifest at `path`.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ManifestError::Read { path: path.to_path_buf(), source })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&text, path, &base)
    }

    /// Parses manifest text. `path` is only used in messages; relative paths
    /// inside are resolved against `base`.
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Manifest, ManifestError> {
        let raw: RawManifest = toml::from_str(text)
            .map_err(|e| ManifestError::Syntax { path: path.to_path_buf(), message: e.to_string() })?;
        let mut seen = HashSet::new();
        let mut plugins = Vec::with_capacity(raw.plugin.len());
        for (index, entry) in raw.plugin.into_iter().enumerate() {
            let label = if entry.name.is_empty() { format!("#{}", index + 1) } else { entry.name.clone() };
            let invalid =
                |message: String| ManifestError::Invalid { path: path.to_path_buf(), plugin: label.clone(), message };
            let entry = validate_entry(entry, base).map_err(invalid)?;
            if !seen.insert(entry.name.clone()) {
                return Err(ManifestError::Invalid {
                    path: path.to_path_buf(),
                    plugin: entry.name,
                    message: "name is used by more than one [[plugin]] entry".into(),
                });
            }
            plugins.push(entry);
        }
        Ok(Manifest { path: path.to_path_buf(), plugins })
    }

    /// Fails if any entry lacks a `sha256` pin. Call it unless the server runs
    /// with `--dev`: a pin is what makes "this file is the plugin I reviewed"
    /// true.
    pub fn require_pins(&self) -> Result<(), ManifestError> {
        match self.plugins.iter().find(|p| p.sha256.is_none()) {
            Some(p) => Err(ManifestError::MissingPin { path: self.path.clone(), plugin: p.name.clone() }),
            None => Ok(()),
        }
    }

    /// The entry named `name`, if any.
    pub fn get(&self, name: &str) -> Option<&ManifestEntry> {
        self.plugins.iter().find(|p| p.name == name)
    }
}

fn validate_entry(raw: RawEntry, base: &Path) -> Result<ManifestEntry, String> {
    check_plugin_name(&raw.name)?;
    if raw.path.as_os_str().is_empty() {
        return Err("path is empty".into());
    }
    check_no_control("path", &raw.path.to_string_lossy())?;
    let sha256 = match raw.sha256 {
        None => None,
        Some(s) => {
            let s = s.trim().to_ascii_lowercase();
            if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("sha256 must be 64 hex digits, got {s:?}"));
            }
            Some(s)
        }
    };
    let mut grants = raw.grants;
    let mut guests = HashSet::new();
    for (i, dir) in grants.dirs.iter_mut().enumerate() {
        let key = format!("grants.dirs[{i}]");
        if dir.host.as_os_str().is_empty() {
            return Err(format!("{key}.host is empty"));
        }
        check_no_control(&format!("{key}.host"), &dir.host.to_string_lossy())?;
        dir.host = resolve(base, &dir.host);
        check_guest_path(&format!("{key}.guest"), &dir.guest)?;
        if !guests.insert(dir.guest.clone()) {
            return Err(format!("{key}.guest: {:?} is granted twice", dir.guest));
        }
    }
    for (i, var) in grants.env.iter().enumerate() {
        check_env_name(var).map_err(|m| format!("grants.env[{i}]: {var:?} {m}"))?;
    }
    for (i, host) in grants.hosts.iter().enumerate() {
        check_http_origin(host).map_err(|m| format!("grants.hosts[{i}]: {host:?}: {m}"))?;
    }
    if let Some(ca) = &mut grants.ca {
        if grants.hosts.is_empty() {
            return Err("grants.ca is given but grants.hosts is empty: it would trust a CA for nothing".into());
        }
        check_no_control("grants.ca", &ca.to_string_lossy())?;
        *ca = resolve(base, ca);
    }
    if let Some(state) = &grants.state {
        check_guest_path("grants.state", state)?;
        if !guests.insert(state.clone()) {
            return Err(format!("grants.state: {state:?} is also a granted directory"));
        }
    }
    let limits = Limits {
        memory: match raw.limits.memory {
            None => DEFAULT_MEMORY,
            Some(s) => parse_memory(&s).map_err(|m| format!("limits.memory: {m}"))?,
        },
        call_timeout: match raw.limits.call_timeout {
            None => DEFAULT_CALL_TIMEOUT,
            Some(s) => {
                let d = humantime::parse_duration(s.trim()).map_err(|e| format!("limits.call_timeout: {s:?}: {e}"))?;
                if d.is_zero() || d > MAX_CALL_TIMEOUT {
                    return Err(format!(
                        "limits.call_timeout: {s:?} must be more than 0 and at most {}",
                        humantime::format_duration(MAX_CALL_TIMEOUT)
                    ));
                }
                d
            }
        },
    };
    Ok(ManifestEntry { name: raw.name, kind: raw.kind, path: resolve(base, &raw.path), sha256, grants, limits })
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// Plugin names appear in the server config, logs and metrics labels, so keep
/// them to a safe, unsurprising alphabet.
fn check_plugin_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name is empty".into());
    }
    if name.len() > 64 {
        return Err("name is longer than 64 bytes".into());
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
        return Err(format!("name {name:?} may only contain ASCII letters, digits, '-', '_' and '.'"));
    }
    Ok(())
}

/// Refuses control characters (NUL included) in a path from the manifest:
/// they are never meant, they make messages and logs misleading, and a NUL
/// would only be refused by the OS much later, when an instance is built.
fn check_no_control(key: &str, value: &str) -> Result<(), String> {
    match value.chars().find(|c| c.is_control()) {
        Some(c) => Err(format!("{key}: {value:?} contains the control character {c:?}")),
        None => Ok(()),
    }
}

/// A guest path is the name the plugin sees for a preopen. It must be one
/// plain absolute spelling (no `//`, `.`, `..` or trailing `/`), so that two
/// grants cannot name the same guest directory differently.
fn check_guest_path(key: &str, guest: &str) -> Result<(), String> {
    check_no_control(key, guest)?;
    if !guest.starts_with('/') {
        return Err(format!("{key}: {guest:?} must be absolute (e.g. \"/data\")"));
    }
    if guest.split('/').any(|c| c == "..") {
        return Err(format!("{key}: {guest:?} must not contain \"..\""));
    }
    if guest != "/" && guest[1..].split('/').any(|c| c.is_empty() || c == ".") {
        return Err(format!(
            "{key}: {guest:?} must be a plain absolute path like \"/data\" (no \"//\", \".\" or trailing '/')"
        ));
    }
    Ok(())
}

/// Environment names are passed to `std::env::var` and into the plugin: only
/// the portable shell spelling (letters, digits, `_`, not starting with a
/// digit) is accepted, which also rules out `=`, NUL and spaces.
fn check_env_name(name: &str) -> Result<(), &'static str> {
    let portable = name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    match name.bytes().next() {
        None => Err("is empty"),
        Some(first) if portable && !first.is_ascii_digit() => Ok(()),
        Some(_) => Err("is not an environment variable name (letters, digits and '_', not starting with a digit)"),
    }
}

/// Accepts `http(s)://host[:port]` with nothing after the authority: grants
/// are per origin, a path would suggest a precision we do not enforce.
fn check_http_origin(origin: &str) -> Result<(), String> {
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or("must start with http:// or https://")?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() {
        return Err("has no host".into());
    }
    if authority.contains(['/', '?', '#', '@']) {
        return Err("must be scheme://host[:port] with no path, query or credentials".into());
    }
    if let Some(c) = authority.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("contains {c:?}, which cannot be part of a host"));
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        // IPv6 literal: `[addr]` or `[addr]:port`.
        let (addr, after) = bracketed.split_once(']').ok_or("unclosed '[' in IPv6 address")?;
        addr.parse::<std::net::Ipv6Addr>().map_err(|_| format!("[{addr}] is not an IPv6 address"))?;
        match after {
            "" => (addr, None),
            p => (addr, Some(p.strip_prefix(':').ok_or("unexpected text after ']'")?)),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    // A DNS name or an IPv4 address; `_` is not DNS but occurs in internal names.
    if !authority.starts_with('[') && !host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) {
        return Err(format!("host {host:?} may only contain ASCII letters, digits, '-', '.' and '_'"));
    }
    if let Some(port) = port {
        port.parse::<u16>().map_err(|_| format!("port {port:?} is not a number 0-65535"))?;
    }
    Ok(())
}

/// Parses sizes like `64MiB`, `1GiB`, `512KiB`, `100MB`, `65536` (bytes).
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size like \"64MiB\""))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => return Err(format!("{s:?}: unknown unit {other:?} (use B, KiB, MiB, GiB, KB, MB or GB)")),
    };
    let bytes = n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))?;
    if bytes == 0 {
        return Err(format!("{s:?} must be more than 0"));
    }
    if bytes > MAX_MEMORY {
        return Err(format!("{s:?} is more than a 32-bit WebAssembly memory can hold (4GiB)"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(text, Path::new("plugins.toml"), Path::new("/etc/keyward"))
    }

    #[test]
    fn full_entry() {
        let m = parse(
            r#"
[[plugin]]
name = "fs"
kind = "keystore"
path = "keystore_fs.wasm"
sha256 = "9F2C000000000000000000000000000000000000000000000000000000000000"
[plugin.grants]
dirs  = [{ host = "keys", guest = "/data" }]
hosts = ["https://127.0.0.1:2379"]
env   = ["ETCD_TOKEN"]
[plugin.limits]
memory = "64MiB"
call_timeout = "2s"

[[plugin]]
name = "audit"
kind = "audit-sink"
path = "/opt/audit_file.wasm"
"#,
        )
        .unwrap();
        assert_eq!(m.plugins.len(), 2);
        let fs = m.get("fs").unwrap();
        assert_eq!(fs.kind, PluginKind::Keystore);
        assert_eq!(fs.path, PathBuf::from("/etc/keyward/keystore_fs.wasm"));
        assert!(fs.sha256.as_deref().unwrap().starts_with("9f2c"));
        assert_eq!(fs.grants.dirs[0].host, PathBuf::from("/etc/keyward/keys"));
        assert_eq!(fs.limits.memory, 64 << 20);
        assert_eq!(fs.limits.call_timeout, Duration::from_secs(2));
        let audit = m.get("audit").unwrap();
        assert_eq!(audit.kind, PluginKind::AuditSink);
        assert_eq!(audit.limits, Limits::default());
        assert!(m.require_pins().is_err());
    }

    #[test]
    fn unknown_key_is_refused_with_location() {
        let e =
            parse("[[plugin]]\nname = \"fs\"\nkind = \"keystore\"\npath = \"a.wasm\"\n[plugin.grants]\nnet = true\n")
                .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("net"), "{msg}");
        assert!(msg.contains("line 6"), "{msg}");
    }

    #[test]
    fn bad_values_name_the_plugin() {
        for (body, needle) in [
            ("sha256 = \"abc\"", "sha256"),
            ("[plugin.limits]\nmemory = \"64 parsecs\"", "limits.memory"),
            ("[plugin.limits]\nmemory = \"8GiB\"", "4GiB"),
            ("[plugin.limits]\ncall_timeout = \"forever\"", "call_timeout"),
            ("[plugin.grants]\ndirs = [{ host = \"/x\", guest = \"data\" }]", "absolute"),
            ("[plugin.grants]\nhosts = [\"ftp://x\"]", "http"),
            ("[plugin.grants]\nenv = [\"A=B\"]", "grants.env"),
        ] {
            let text = format!("[[plugin]]\nname = \"p1\"\nkind = \"keystore\"\npath = \"a.wasm\"\n{body}\n");
            let msg = parse(&text).unwrap_err().to_string();
            assert!(msg.contains("\"p1\""), "{msg}");
            assert!(msg.contains(needle), "{needle}: {msg}");
        }
    }

    #[test]
    fn duplicate_names_and_kinds() {
        let dup = "[[plugin]]\nname = \"a\"\nkind = \"keystore\"\npath = \"a.wasm\"\n[[plugin]]\nname = \"a\"\nkind = \"keystore\"\npath = \"b.wasm\"\n";
        assert!(parse(dup).unwrap_err().to_string().contains("more than one"));
        let kind = "[[plugin]]\nname = \"a\"\nkind = \"database\"\npath = \"a.wasm\"\n";
        assert!(parse(kind).unwrap_err().to_string().contains("database"));
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_memory("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_memory("100MB").unwrap(), 100_000_000);
        assert_eq!(parse_memory("65536").unwrap(), 65536);
        assert!(parse_memory("0MiB").is_err());
        assert!(parse_memory("MiB").is_err());
    }

    #[test]
    fn origins() {
        assert!(check_http_origin("https://127.0.0.1:2379").is_ok());
        assert!(check_http_origin("http://vault.internal").is_ok());
        assert!(check_http_origin("https://[::1]:8200").is_ok());
        assert!(check_http_origin("https://[::1]").is_ok());
        assert!(check_http_origin("https://x/path").is_err());
        assert!(check_http_origin("https://x:notaport").is_err());
        assert!(check_http_origin("https://").is_err());
    }

    /// Odd characters in grants are refused at load, with a message naming
    /// the plugin and the exact key (and showing the character escaped).
    #[test]
    fn odd_characters_in_grants_are_refused_naming_the_key() {
        for (body, key) in [
            (r#"dirs = [{ host = "/var/k\u0000eys", guest = "/data" }]"#, "grants.dirs[0].host"),
            (r#"dirs = [{ host = "/var/keys\n", guest = "/data" }]"#, "grants.dirs[0].host"),
            (r#"dirs = [{ host = "", guest = "/data" }]"#, "grants.dirs[0].host"),
            (
                r#"dirs = [{ host = "/a", guest = "/a" }, { host = "/b", guest = "/da\u0000ta" }]"#,
                "grants.dirs[1].guest",
            ),
            (r#"dirs = [{ host = "/a", guest = "/data\t" }]"#, "grants.dirs[0].guest"),
            (r#"dirs = [{ host = "/a", guest = "/data/" }]"#, "grants.dirs[0].guest"),
            (r#"dirs = [{ host = "/a", guest = "//data" }]"#, "grants.dirs[0].guest"),
            (r#"dirs = [{ host = "/a", guest = "/./data" }]"#, "grants.dirs[0].guest"),
            (r#"dirs = [{ host = "/a", guest = "/x/../data" }]"#, "grants.dirs[0].guest"),
            (r#"dirs = [{ host = "/a", guest = "/d" }, { host = "/b", guest = "/d" }]"#, "grants.dirs[1].guest"),
            (r#"env = ["OK", "BAD\u0000NAME"]"#, "grants.env[1]"),
            (r#"env = [""]"#, "grants.env[0]"),
            (r#"env = ["WITH SPACE"]"#, "grants.env[0]"),
            (r#"env = ["A=B"]"#, "grants.env[0]"),
            (r#"env = ["1ST"]"#, "grants.env[0]"),
            (r#"env = ["PATH\n"]"#, "grants.env[0]"),
            (r#"hosts = ["https://ok.example", "https://ev\u0000il.example"]"#, "grants.hosts[1]"),
            (r#"hosts = ["https://evil.example\r\nX-Injected: 1"]"#, "grants.hosts[0]"),
            (r#"hosts = ["https://a b"]"#, "grants.hosts[0]"),
            (r#"hosts = ["https://:8200"]"#, "grants.hosts[0]"),
            (r#"hosts = ["https://[not-v6]:8200"]"#, "grants.hosts[0]"),
            (r#"hosts = ["https://bad%host"]"#, "grants.hosts[0]"),
        ] {
            let text =
                format!("[[plugin]]\nname = \"p1\"\nkind = \"keystore\"\npath = \"a.wasm\"\n[plugin.grants]\n{body}\n");
            let msg = parse(&text).unwrap_err().to_string();
            assert!(msg.contains("\"p1\"") && msg.contains(key), "{body}: {msg}");
            assert!(!msg.contains('\0') && !msg.contains('\n') && !msg.contains('\r'), "unescaped: {msg:?}");
        }
        let text = "[[plugin]]\nname = \"p1\"\nkind = \"keystore\"\npath = \"a\\u0000.wasm\"\n";
        assert!(parse(text).unwrap_err().to_string().contains("path"));
    }

    #[test]
    fn ordinary_grants_are_accepted() {
        let text = r#"[[plugin]]
name = "p1"
kind = "keystore"
path = "a.wasm"
[plugin.grants]
dirs = [{ host = "/var/lib/key ward", guest = "/" }, { host = "k", guest = "/data/keys-2" }]
env = ["ETCD_TOKEN", "_x", "a1"]
hosts = ["https://vault.internal:8200", "http://10.0.0.1", "https://[::1]:2379", "https://etcd_1.svc/"]
"#;
        let m = parse(text).unwrap();
        assert_eq!(m.plugins[0].grants.dirs.len(), 2);
    }
}
