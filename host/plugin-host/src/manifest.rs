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
use crate::grants::{check_no_control, resolve};
pub use crate::grants::{ClientCert, DirGrant, Grants};

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
    /// Where the file was fetched from (`https://…`), for `keyward plugin
    /// pull`; the server itself never fetches.
    pub source: Option<String>,
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
    source: Option<String>,
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
    grants.validate(base)?;
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
    if let Some(source) = &raw.source {
        if !["https://", "http://", "oci://"].iter().any(|scheme| source.starts_with(scheme)) {
            return Err(format!("source {source:?} must be an http(s):// URL or an oci:// reference"));
        }
        check_no_control("source", source)?;
    }
    let path = resolve(base, &raw.path);
    Ok(ManifestEntry { name: raw.name, kind: raw.kind, path, sha256, source: raw.source, grants, limits })
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

/// Parses sizes like `64MiB`, `1GiB`, `512KiB`, `100MB`, `65536` (bytes),
/// as the `bytesize` crate reads them (units case-insensitive, `KB` = 1000,
/// `KiB` = 1024), within what one WebAssembly memory can be.
pub fn parse_memory(s: &str) -> Result<u64, String> {
    let bytes = s
        .trim()
        .parse::<bytesize::ByteSize>()
        .map_err(|e| format!("{s:?} is not a size like \"64MiB\" ({e})"))?
        .as_u64();
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
        assert!(parse_memory("5GiB").unwrap_err().contains("4GiB"));
        assert!(parse_memory("64 lightyears").is_err());
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

    #[test]
    fn a_client_certificate_is_resolved_and_needs_hosts() {
        let entry = "[[plugin]]\nname = \"p\"\nkind = \"keystore\"\npath = \"a.wasm\"\n[plugin.grants]\n";
        let text =
            format!("{entry}hosts = [\"https://v:8200\"]\nclient_cert = {{ cert = \"c.pem\", key = \"/k/c.key\" }}\n");
        let m = parse(&text).unwrap();
        let client = m.plugins[0].grants.client_cert.clone().unwrap();
        assert_eq!(client.cert, Path::new("/etc/keyward/c.pem"));
        assert_eq!(client.key, Path::new("/k/c.key"));
        let err = parse(&format!("{entry}client_cert = {{ cert = \"c.pem\", key = \"c.key\" }}\n")).unwrap_err();
        assert!(err.to_string().contains("grants.client_cert is given but grants.hosts is empty"), "{err}");
        let err =
            parse(&format!("{entry}hosts = [\"https://v\"]\nclient_cert = {{ cert = \"c.pem\" }}\n")).unwrap_err();
        assert!(err.to_string().contains("key"), "{err}");
    }
}
