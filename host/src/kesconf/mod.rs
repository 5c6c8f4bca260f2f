//! `keyward config import`: converts a KES YAML server config into keyward's
//! TOML, section by section (docs/configuration.md).
//!
//! The conversion is deliberately strict: a KES key we do not know, a TLS
//! proxy or a keystore without a keyward plugin is an error that names it,
//! because a silently dropped setting in a key server is a security bug.
//! `${VAR}` references are copied verbatim; keyward expands them at start-up.

mod kes;
mod toml_text;
mod vault;

pub use kes::parse_go_duration;
use kes::{KesApi, KesCache, KesFile, KesLog, KesPolicy, KesTls, Scalar};
use std::collections::BTreeMap;
use std::time::Duration;
use toml_text::{array, quote, toml_key};

use serde_yaml::Value;

/// Why a KES config could not be converted. Every message names the KES key.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{file}: not a valid KES config: {message}")]
    Yaml { file: String, message: String },
    #[error("{file}: {key}: {message}")]
    Invalid { file: String, key: String, message: String },
}

/// KES keystore types and why keyward cannot take them over (yet).
const UNSUPPORTED_KEYSTORES: &[(&str, &str)] = &[
    ("etcd", "is not supported yet (a keyward etcd plugin is planned)"),
    ("encryptedfs", "has no keyward plugin: its files are encrypted in a KES-specific format; use the fs keystore with `[keystore] seal` for new deployments"),
    ("kes", "(a KES server as keystore) has no keyward plugin"),
    ("generic", "(the KES v0.x generic keystore) has no keyward plugin"),
    ("fortanix", "(Fortanix SDKMS) has no keyward plugin"),
    ("gemalto", "(Thales/Gemalto KeySecure) has no keyward plugin"),
    ("gcp", "(GCP Secret Manager) has no keyward plugin"),
    ("aws", "(AWS Secrets Manager) has no keyward plugin"),
    ("azure", "(Azure Key Vault) has no keyward plugin"),
    ("entrust", "(Entrust KeyControl) has no keyward plugin"),
];

/// Whether the file at `path` reads as a KES server configuration: a YAML
/// mapping with at least one of KES's top-level keys. Used to point someone
/// who passes a KES file to `--config` at `keyward config import`.
pub fn looks_like_kes_config(path: &std::path::Path) -> bool {
    const KES_KEYS: &[&str] = &["address", "admin", "tls", "keystore", "policy", "cache", "log", "api", "keys"];
    let Ok(text) = std::fs::read_to_string(path) else { return false };
    match serde_yaml::from_str::<Value>(&text) {
        Ok(Value::Mapping(map)) => map.keys().any(|k| k.as_str().is_some_and(|k| KES_KEYS.contains(&k))),
        _ => false,
    }
}

/// Converts KES YAML `text` (from `file`, used in messages) to keyward TOML.
pub fn convert(text: &str, file: &str) -> Result<String, ImportError> {
    let kes: KesFile = if text.trim().is_empty() {
        KesFile::default()
    } else {
        serde_yaml::from_str(text).map_err(|e| ImportError::Yaml { file: file.to_string(), message: e.to_string() })?
    };
    Converter { file: file.to_string(), out: String::new() }.run(kes)
}

struct Converter {
    file: String,
    out: String,
}

impl Converter {
    fn err(&self, key: impl Into<String>, message: impl Into<String>) -> ImportError {
        ImportError::Invalid { file: self.file.clone(), key: key.into(), message: message.into() }
    }

    fn line(&mut self, text: impl AsRef<str>) {
        self.out.push_str(text.as_ref());
        self.out.push('\n');
    }

    /// A scalar as a string; `None` for absent, null or empty values.
    fn string(&self, key: &str, v: &Scalar) -> Result<Option<String>, ImportError> {
        match v {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
            Some(Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(self.err(key, "must be a single value, not a list or map")),
        }
    }

    fn strings(&self, key: &str, list: &Option<Vec<Value>>) -> Result<Vec<String>, ImportError> {
        let mut out = Vec::new();
        for (i, v) in list.iter().flatten().enumerate() {
            if let Some(s) = self.string(&format!("{key}[{i}]"), &Some(v.clone()))? {
                out.push(s);
            }
        }
        Ok(out)
    }

    fn run(mut self, kes: KesFile) -> Result<String, ImportError> {
        if let Some(v) = self.string("version", &kes.version)? {
            if v != "v1" {
                return Err(self.err("version", format!("unknown KES config version '{v}' (only v1 exists)")));
            }
        }
        self.line(format!(
            "# keyward server configuration, converted from the KES config '{}' by `keyward config import`.",
            self.file.replace('\n', " ")
        ));
        self.line("# ${VAR} references are kept; keyward replaces them from the environment at start-up.");

        if let Some(addr) = self.string("address", &kes.address)? {
            self.line(format!("address = {}", quote(&listen_address(&addr))));
        }
        self.admin(&kes)?;
        self.tls(kes.tls.unwrap_or_default())?;
        self.cache(kes.cache.unwrap_or_default())?;
        self.log(kes.log.unwrap_or_default())?;
        self.api(kes.api.unwrap_or_default())?;
        self.policies(kes.policy.unwrap_or_default())?;
        match (&kes.keys, &kes.keystore) {
            // Before 2023 `keys` held the keystore.
            (Some(Value::Mapping(_)), None) => self.keystore("keys", kes.keys.clone())?,
            (Some(Value::Mapping(_)), Some(_)) => {
                return Err(self.err("keys", "must be a list of `- name: …` entries when `keystore` is present"))
            }
            _ => {
                self.keys(&kes.keys)?;
                self.keystore("keystore", kes.keystore.clone())?;
            }
        }
        Ok(self.out)
    }

    fn admin(&mut self, kes: &KesFile) -> Result<(), ImportError> {
        let from_admin = match &kes.admin {
            Some(a) => self.string("admin.identity", &a.identity)?,
            None => None,
        };
        let identity = match (from_admin, self.string("root", &kes.root)?) {
            (Some(id), _) | (None, Some(id)) => id,
            (None, None) => {
                return Err(
                    self.err("admin.identity", "missing: KES and keyward need an admin identity (or \"disabled\")")
                )
            }
        };
        self.line("");
        self.line("[admin]");
        self.line(format!("identity = {}", quote(&identity)));
        Ok(())
    }

    fn tls(&mut self, tls: KesTls) -> Result<(), ImportError> {
        if let Some(proxy) = &tls.proxy {
            let ids = self.strings("tls.proxy.identities", &proxy.identities)?;
            if !ids.is_empty() {
                return Err(self.err(
                    "tls.proxy",
                    format!(
                        "keyward does not support TLS proxies that forward client certificates ({} proxy identit{} configured); let clients connect to keyward directly, then remove tls.proxy",
                        ids.len(),
                        if ids.len() == 1 { "y" } else { "ies" }
                    ),
                ));
            }
        }
        let key = self.string("tls.key", &tls.key)?;
        let cert = self.string("tls.cert", &tls.cert)?;
        let (Some(key), Some(cert)) = (key, cert) else {
            return Err(self.err("tls", "missing: tls.key and tls.cert are required"));
        };
        self.line("");
        self.line("[tls]");
        self.line(format!("key = {}", quote(&key)));
        self.line(format!("cert = {}", quote(&cert)));
        if let Some(p) = self.string("tls.password", &tls.password)? {
            self.line(format!("password = {}", quote(&p)));
        }
        if let Some(ca) = self.string("tls.ca", &tls.ca)? {
            self.line(format!("ca = {}", quote(&ca)));
        }
        if let Some(auth) = self.switch("tls.auth", &tls.auth)? {
            self.line(format!("auth = {}", quote(&auth)));
        }
        Ok(())
    }

    /// `on`/`off` values; YAML 1.1 tools write them as booleans.
    fn switch(&self, key: &str, v: &Scalar) -> Result<Option<String>, ImportError> {
        let Some(s) = self.string(key, v)? else {
            return Ok(None);
        };
        if is_env_ref(&s) {
            return Ok(Some(s));
        }
        match s.to_ascii_lowercase().as_str() {
            "on" | "true" => Ok(Some("on".into())),
            "off" | "false" => Ok(Some("off".into())),
            _ => Err(self.err(key, format!("must be \"on\" or \"off\", not '{s}'"))),
        }
    }

    fn duration(&self, key: &str, v: &Scalar) -> Result<Option<String>, ImportError> {
        let Some(s) = self.string(key, v)? else {
            return Ok(None);
        };
        if is_env_ref(&s) {
            return Ok(Some(s));
        }
        let d = parse_go_duration(&s).map_err(|m| self.err(key, format!("'{s}': {m}")))?;
        Ok(Some(format_duration(d)))
    }

    fn cache(&mut self, cache: KesCache) -> Result<(), ImportError> {
        let e = cache.expiry.unwrap_or_default();
        let rows = [
            ("any", self.duration("cache.expiry.any", &e.any)?),
            ("unused", self.duration("cache.expiry.unused", &e.unused)?),
            ("offline", self.duration("cache.expiry.offline", &e.offline)?),
        ];
        if rows.iter().all(|(_, v)| v.is_none()) {
            return Ok(());
        }
        self.line("");
        self.line("[cache.expiry]");
        for (k, v) in rows {
            if let Some(v) = v {
                self.line(format!("{k} = {}", quote(&v)));
            }
        }
        Ok(())
    }

    /// KES log levels (`on`, `off`, `DEBUG` … `ERROR`, `ERROR+n`) become
    /// keyward's switches: `off` and anything above ERROR mean off.
    fn level(&self, key: &str, v: &Scalar) -> Result<Option<String>, ImportError> {
        let Some(s) = self.string(key, v)? else {
            return Ok(None);
        };
        if is_env_ref(&s) {
            return Ok(Some(s));
        }
        let lower = s.to_ascii_lowercase();
        let (base, offset) = match lower.split_once(['+', '-']) {
            Some((b, n)) => {
                let n: i32 = n.trim().parse().map_err(|_| self.err(key, format!("invalid log level '{s}'")))?;
                (b.trim().to_string(), if lower.contains('-') { -n } else { n })
            }
            None => (lower.clone(), 0),
        };
        let value = match base.as_str() {
            "off" | "false" => "off",
            "error" if offset > 0 => "off",
            "on" | "true" | "" | "debug" | "info" | "warn" | "error" => "on",
            _ => return Err(self.err(key, format!("invalid log level '{s}'"))),
        };
        Ok(Some(value.to_string()))
    }

    fn log(&mut self, log: KesLog) -> Result<(), ImportError> {
        let error = self.level("log.error", &log.error)?;
        let audit = self.level("log.audit", &log.audit)?;
        if error.is_none() && audit.is_none() {
            return Ok(());
        }
        self.line("");
        self.line("[log]");
        if let Some(e) = error {
            self.line(format!("error = {}", quote(&e)));
        }
        if let Some(a) = audit {
            self.line(format!("audit = {}", quote(&a)));
        }
        Ok(())
    }

    fn api(&mut self, api: BTreeMap<String, KesApi>) -> Result<(), ImportError> {
        for (path, cfg) in api {
            let key = format!("api.{path}");
            let skip = match self.string(&format!("{key}.skip_auth"), &cfg.skip_auth)? {
                None => None,
                Some(s) => match s.to_ascii_lowercase().as_str() {
                    "true" | "on" => Some(true),
                    "false" | "off" => Some(false),
                    _ => {
                        return Err(self.err(
                            format!("{key}.skip_auth"),
                            format!("must be true or false, not '{s}' (keyward needs a literal value here)"),
                        ))
                    }
                },
            };
            let timeout = self.duration(&format!("{key}.timeout"), &cfg.timeout)?;
            self.line("");
            self.line(format!("[api.{}]", toml_key(&path)));
            if let Some(s) = skip {
                self.line(format!("skip_auth = {s}"));
            }
            if let Some(t) = timeout {
                self.line(format!("timeout = {}", quote(&t)));
            }
        }
        Ok(())
    }

    fn policies(&mut self, policies: BTreeMap<String, KesPolicy>) -> Result<(), ImportError> {
        for (name, p) in policies {
            let key = format!("policy.{name}");
            let allow = self.strings(&format!("{key}.allow"), &p.allow)?;
            let deny = self.strings(&format!("{key}.deny"), &p.deny)?;
            let ids = self.strings(&format!("{key}.identities"), &p.identities)?;
            self.line("");
            if allow.iter().chain(&deny).any(|p| is_glob(p)) {
                self.line("# note: keyward reads a pattern with a wildcard other than one trailing `*` as a glob");
                self.line("# (`*` stops at `/`), as KES v0.x did; KES 2023+ matched such patterns literally.");
            }
            self.line(format!("[policy.{}]", toml_key(&name)));
            self.line(format!("allow = {}", array(&allow)));
            if !deny.is_empty() {
                self.line(format!("deny = {}", array(&deny)));
            }
            if !ids.is_empty() {
                self.line(format!("identities = {}", array(&ids)));
            }
        }
        Ok(())
    }

    fn keys(&mut self, keys: &Option<Value>) -> Result<(), ImportError> {
        let list = match keys {
            None | Some(Value::Null) => return Ok(()),
            Some(Value::Sequence(list)) => list,
            Some(_) => return Err(self.err("keys", "must be a list of `- name: …` entries")),
        };
        for (i, entry) in list.iter().enumerate() {
            let key = format!("keys[{i}]");
            let Value::Mapping(m) = entry else {
                return Err(self.err(key, "must be a `name: …` entry"));
            };
            if let Some(other) = m.keys().find(|k| k.as_str() != Some("name")) {
                return Err(self.err(key, format!("unknown field {}", describe(other))));
            }
            let name = self.string(&format!("{key}.name"), &m.get("name").cloned())?;
            let Some(name) = name else {
                return Err(self.err(format!("{key}.name"), "missing"));
            };
            self.line("");
            self.line("[[keys]]");
            self.line(format!("name = {}", quote(&name)));
        }
        Ok(())
    }

    fn keystore(&mut self, section: &str, ks: Option<Value>) -> Result<(), ImportError> {
        let map = match ks {
            None | Some(Value::Null) => return Ok(()),
            Some(Value::Mapping(m)) => m,
            Some(_) => return Err(self.err(section, "must be a map naming one keystore type")),
        };
        let types: Vec<(String, Value)> = map
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.as_str().map(str::to_string).unwrap_or_else(|| describe(&k)), v))
            .collect();
        if types.len() > 1 {
            let names: Vec<&str> = types.iter().map(|(k, _)| k.as_str()).collect();
            return Err(self.err(section, format!("more than one keystore: {}", names.join(", "))));
        }
        let Some((kind, cfg)) = types.into_iter().next() else {
            return Ok(());
        };
        if kind == "vault" {
            let Value::Mapping(vault) = cfg else {
                return Err(self.err(format!("{section}.vault"), "must be a map"));
            };
            let lines = vault::config_lines(&format!("{section}.vault"), &vault)
                .map_err(|(key, message)| self.err(key, message))?;
            self.line("");
            self.line("[keystore]");
            self.line("plugin = \"vault\"");
            self.line("");
            self.line("[keystore.config]");
            for line in lines {
                self.line(line);
            }
            return Ok(());
        }
        if kind != "fs" {
            let full = match &cfg {
                // Name the nested type as KES does: `aws.secretsmanager`.
                Value::Mapping(m) if m.len() == 1 && kind != "vault" && kind != "kes" => m
                    .keys()
                    .next()
                    .and_then(Value::as_str)
                    .map(|sub| format!("{kind}.{sub}"))
                    .unwrap_or_else(|| kind.clone()),
                _ => kind.clone(),
            };
            let why = UNSUPPORTED_KEYSTORES
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, why)| why.to_string())
                .unwrap_or_else(|| "is not a keystore keyward knows".to_string());
            return Err(self.err(
                format!("{section}.{full}"),
                format!("the KES keystore '{full}' {why}; keyward supports: fs, vault"),
            ));
        }
        let Value::Mapping(fs) = cfg else {
            return Err(self.err(format!("{section}.fs"), "must be a map with `path`"));
        };
        if let Some(other) = fs.keys().find(|k| k.as_str() != Some("path")) {
            return Err(self.err(format!("{section}.fs"), format!("unknown field {}", describe(other))));
        }
        let Some(path) = self.string(&format!("{section}.fs.path"), &fs.get("path").cloned())? else {
            return Err(self.err(format!("{section}.fs.path"), "missing: the fs keystore needs a directory"));
        };
        self.line("");
        self.line("[keystore]");
        self.line("plugin = \"fs\"");
        self.line("");
        self.line("[keystore.config]");
        self.line(format!("path = {}", quote(&path)));
        Ok(())
    }
}

/// A YAML key for messages.
fn describe(v: &Value) -> String {
    match v.as_str() {
        Some(s) => format!("'{s}'"),
        None => format!("{v:?}"),
    }
}

fn is_env_ref(s: &str) -> bool {
    s.contains("${")
}

/// Whether keyward treats a policy pattern as a glob (see docs/configuration.md).
fn is_glob(p: &str) -> bool {
    let body = p.strip_suffix('*').unwrap_or(p);
    body.contains(['*', '?', '['])
}

/// Go accepts `:7373` (all interfaces) and host names; keyward's listen
/// address is an IP and port.
fn listen_address(addr: &str) -> String {
    if is_env_ref(addr) {
        return addr.to_string();
    }
    if let Some(port) = addr.strip_prefix(':') {
        return format!("0.0.0.0:{port}");
    }
    if let Some(port) = addr.strip_prefix("localhost:") {
        return format!("127.0.0.1:{port}");
    }
    addr.to_string()
}

/// A duration keyward's config parser reads back: `5m`, `1h 30m`, `0s`.
fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests;
