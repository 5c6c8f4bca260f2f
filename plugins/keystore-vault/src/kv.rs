//! KES's K/V layout: where a key lives and how its value is written.
//!
//! A key `N` is one secret at `<engine>/<prefix>/N` (v1) or
//! `<engine>/data/<prefix>/N` (v2) whose data is `{"N": "<value>"}`. The
//! value string is the host's stored-key encoding as it is when that is
//! UTF-8 text (KES's JSON or base64 protobuf: what KES writes), else
//! `keyward:base64:` and its base64; with transit, Vault's `vault:vN:…`
//! ciphertext of the value's base64, as KES does.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use keyward_sdk::{Error, Page};
use serde_json::Value;
use waki::bindings::wasi::http::types::Method;

use crate::config::{Config, KvVersion};
use crate::errors::{internal, invalid};
use crate::http::Request;
use crate::vault::{Reply, Vault};

/// Marks a value stored as base64 because it is not UTF-8 text (or could be
/// mistaken for one of these markers).
pub const BASE64_MARK: &str = "keyward:base64:";

/// The longest key name accepted (KES's are at most 80 bytes).
const MAX_NAME: usize = 255;

/// Refuses names that cannot be one path segment of a secret.
pub fn check_name(name: &str) -> Result<(), Error> {
    let why = if name.is_empty() {
        "key name is empty"
    } else if name.len() > MAX_NAME {
        "key name is too long"
    } else if name.contains('/') {
        "key name contains '/'"
    } else if name == "." || name == ".." {
        "key name is '.' or '..'"
    } else if name.chars().any(char::is_control) {
        "key name contains a control character"
    } else {
        return Ok(());
    };
    Err(invalid(format!("{why}: {name:?}")))
}

/// Percent-encodes each segment of a path; `/` stays.
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn join(parts: &[&str]) -> String {
    parts.iter().filter(|p| !p.is_empty()).copied().collect::<Vec<_>>().join("/")
}

impl Config {
    /// `P/N`: how messages name a key, as KES does.
    pub fn location(&self, name: &str) -> String {
        join(&[&self.prefix, name])
    }

    /// The secret's API path: `E/P/N` or `E/data/P/N`.
    pub fn secret_path(&self, name: &str) -> String {
        let path = match self.version {
            KvVersion::V1 => join(&[&self.engine, &self.prefix, name]),
            KvVersion::V2 => join(&[&self.engine, "data", &self.prefix, name]),
        };
        encode_path(&path)
    }

    /// What a delete removes: the v1 secret, or every v2 version and the metadata.
    pub fn delete_path(&self, name: &str) -> String {
        match self.version {
            KvVersion::V1 => self.secret_path(name),
            KvVersion::V2 => encode_path(&join(&[&self.engine, "metadata", &self.prefix, name])),
        }
    }

    /// The folder listed for names, with a trailing `/`.
    pub fn list_path(&self) -> String {
        let path = match self.version {
            KvVersion::V1 => join(&[&self.engine, &self.prefix]),
            KvVersion::V2 => join(&[&self.engine, "metadata", &self.prefix]),
        };
        encode_path(&path) + "/"
    }

    /// A read of the key: v2 reads version 1, the one `cas: 0` created.
    pub fn read_request(&self, name: &str) -> Request {
        let mut request = Request::new(Method::Get, self.secret_path(name));
        if self.version == KvVersion::V2 {
            request.query = "version=1".into();
        }
        request
    }
}

/// Page size when the host asks for `limit = 0`, as KES pages.
const DEFAULT_PAGE: usize = 1024;

/// One page of a listing from the names Vault returned: sub-folders (ending
/// in `/`) skipped, filtered by prefix, from `continue_at` on, sorted.
pub fn page<'a>(names: impl Iterator<Item = &'a str>, prefix: &str, continue_at: &str, limit: u32) -> Page {
    let mut names: Vec<String> =
        names.filter(|n| !n.ends_with('/') && n.starts_with(prefix) && *n >= continue_at).map(str::to_string).collect();
    names.sort_unstable();
    names.dedup();
    let limit = if limit == 0 { DEFAULT_PAGE } else { limit as usize };
    let next = names.get(limit).cloned().unwrap_or_default();
    names.truncate(limit);
    Page { names, next }
}

/// Whether a stored string is a transit ciphertext: `vault:v<digits>:`.
pub fn is_transit(value: &str) -> bool {
    let Some(rest) = value.strip_prefix("vault:v") else { return false };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && rest.as_bytes().get(digits) == Some(&b':')
}

/// The string stored for `value` without transit.
pub fn to_stored(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(text) if !text.starts_with(BASE64_MARK) && !is_transit(text) => text.to_string(),
        _ => format!("{BASE64_MARK}{}", STANDARD.encode(value)),
    }
}

/// The value of a stored string that is not a transit ciphertext.
pub fn from_stored(stored: &str, location: &str) -> Result<Vec<u8>, Error> {
    match stored.strip_prefix(BASE64_MARK) {
        Some(b64) => STANDARD
            .decode(b64)
            .map_err(|_| internal(format!("'{location}' is marked {BASE64_MARK} but is not valid base64"))),
        None => Ok(stored.as_bytes().to_vec()),
    }
}

/// What the answer to a read of a key holds.
pub enum Found {
    /// The value string under the key's name.
    Value(String),
    /// Nothing there.
    Missing,
}

/// Interprets the answer to [`Config::read_request`].
pub fn read_answer(config: &Config, name: &str, reply: &Reply) -> Result<Found, Error> {
    let location = config.location(name);
    let warnings = reply.warnings();
    if warnings.contains("Invalid path for a versioned K/V") {
        return Err(internal(format!(
            "engine '{}' is a K/V version 2 mount, but version = \"v1\" is configured",
            config.engine
        )));
    }
    let data = match (reply.status, config.version) {
        (200, KvVersion::V1) => &reply.json["data"],
        // A v2 read on a v1 mount reads a v1 secret at `E/data/P/N` that a
        // v2 write left there, ignoring `version`.
        (200, KvVersion::V2) if warnings.contains("unrecognized parameters") => {
            return Err(internal(format!(
                "engine '{}' looks like a K/V version 1 mount, but version = \"v2\" is configured",
                config.engine
            )));
        }
        (200, KvVersion::V2) => &reply.json["data"]["data"],
        (404, KvVersion::V2) if reply.json["data"]["metadata"].is_object() => {
            let meta = &reply.json["data"]["metadata"];
            let how = if meta["destroyed"].as_bool() == Some(true) { "destroyed" } else { "deleted" };
            return Err(internal(format!(
                "version 1 of '{location}' is {how}: the key cannot be read (KES reads version 1 too); \
                 undelete it, or remove the key's metadata to free the name"
            )));
        }
        (404, _) if crate::errors::vault_errors(&reply.json).contains("no handler for route") => {
            return Err(reply.error(&format!("reading '{location}'")));
        }
        (404, _) => return Ok(Found::Missing),
        _ => return Err(reply.error(&format!("reading '{location}'"))),
    };
    match data.get(name) {
        Some(Value::String(s)) => Ok(Found::Value(s.clone())),
        Some(Value::Null) | None => Err(internal(format!("'{location}' exists but has no entry named {name:?}"))),
        Some(_) => Err(internal(format!("'{location}' holds a value that is not a string (invalid K/V format)"))),
    }
}

impl Vault {
    /// Checks once per instance that the engine is a K/V mount of the
    /// configured version (`sys/internal/ui/mounts`, which any token with a
    /// capability on the mount may read). If Vault will not tell, it is not
    /// checked; a failed request is checked again next time.
    pub fn check_mount(&self, deadline: std::time::Instant) -> Result<(), Error> {
        if self.mount_checked.get() {
            return Ok(());
        }
        let token = self.token(deadline).map_err(|f| f.error())?;
        let request = Request::new(Method::Get, format!("sys/internal/ui/mounts/{}", encode_path(&self.config.engine)));
        let Ok(reply) = self.call(request, crate::vault::Ns::Main, Some(&token), deadline) else {
            return Ok(());
        };
        self.mount_checked.set(true);
        if !reply.ok() {
            return Ok(());
        }
        let data = &reply.json["data"];
        let kind = data["type"].as_str().unwrap_or("");
        let engine = &self.config.engine;
        if !matches!(kind, "kv" | "generic") {
            return Err(internal(format!("engine '{engine}' is a {kind:?} mount, not a K/V secrets engine")));
        }
        let mounted = match data["options"]["version"].as_str() {
            Some("2") => KvVersion::V2,
            _ => KvVersion::V1,
        };
        let mount = data["path"].as_str().unwrap_or("").trim_end_matches('/');
        if mounted == KvVersion::V2 && !mount.is_empty() && mount != engine {
            // v2 paths put `data/` right after the mount.
            return Err(internal(format!(
                "engine '{engine}' is inside the K/V version 2 mount '{mount}': set engine = \"{mount}\" and put \
                 the rest into prefix"
            )));
        }
        if mounted != self.config.version {
            let (is, set) = if mounted == KvVersion::V2 { ("2", "v1") } else { ("1", "v2") };
            return Err(internal(format!(
                "engine '{engine}' is a K/V version {is} mount, but version = \"{set}\" is configured"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(version: &str, prefix: &str) -> Config {
        let json = format!(
            r#"{{"endpoint":"http://v:8200","engine":"kv","version":"{version}","prefix":"{prefix}","token":"t"}}"#
        );
        Config::parse(&json, None).ok().unwrap()
    }

    #[test]
    fn paths_follow_kes() {
        let c = config("v1", "");
        assert_eq!((c.secret_path("k"), c.list_path(), c.location("k")), ("kv/k".into(), "kv/".into(), "k".into()));
        let c = config("v2", "/a//b/");
        assert_eq!(c.secret_path("k"), "kv/data/a/b/k");
        assert_eq!(c.delete_path("k"), "kv/metadata/a/b/k");
        assert_eq!(c.list_path(), "kv/metadata/a/b/");
        assert_eq!(c.read_request("k").query, "version=1");
        assert_eq!(c.secret_path("a b%"), "kv/data/a/b/a%20b%25");
    }

    #[test]
    fn values_round_trip() {
        for value in [&b"CiQKIA=="[..], b"{\"bytes\":\"x\"}", b"\xff\x00kwseal1", b"keyward:base64:x", b"vault:v1:abc"]
        {
            let stored = to_stored(value);
            assert!(!is_transit(&stored));
            assert_eq!(from_stored(&stored, "k").ok().unwrap(), value);
        }
        assert_eq!(to_stored(b"CiQKIA=="), "CiQKIA==");
        assert!(is_transit("vault:v12:x") && !is_transit("vault:v:x") && !is_transit("vault:vx:"));
    }

    #[test]
    fn pages_skip_folders_and_continue() {
        let names = ["b2", "a/", "b1", "c", "b3", "b1"];
        let p = page(names.iter().copied(), "b", "", 2);
        assert_eq!((p.names, p.next.as_str()), (vec!["b1".to_string(), "b2".to_string()], "b3"));
        let p = page(names.iter().copied(), "b", "b3", 2);
        assert_eq!((p.names, p.next.as_str()), (vec!["b3".to_string()], ""));
        assert_eq!(page(names.iter().copied(), "", "", 0).names.len(), 4);
    }

    fn reply(status: u16, json: &str) -> Reply {
        Reply { status, json: serde_json::from_str(json).unwrap() }
    }

    #[test]
    fn read_answers_follow_vault() {
        let v1 = config("v1", "p");
        let v2 = config("v2", "p");
        assert!(matches!(read_answer(&v1, "k", &reply(200, r#"{"data":{"k":"v"}}"#)), Ok(Found::Value(v)) if v == "v"));
        assert!(matches!(read_answer(&v2, "k", &reply(200, r#"{"data":{"data":{"k":"v"}}}"#)), Ok(Found::Value(_))));
        assert!(matches!(read_answer(&v2, "k", &reply(404, r#"{"errors":[]}"#)), Ok(Found::Missing)));
        let deleted = r#"{"data":{"data":null,"metadata":{"deletion_time":"x","destroyed":false,"version":1}}}"#;
        assert!(
            matches!(read_answer(&v2, "k", &reply(404, deleted)), Err(Error::Internal(m)) if m.contains("deleted"))
        );
        let mixup = r#"{"data":null,"warnings":["Invalid path for a versioned K/V secrets engine. See…"]}"#;
        assert!(
            matches!(read_answer(&v1, "k", &reply(404, mixup)), Err(Error::Internal(m)) if m.contains("version 2"))
        );
        let unmounted = r#"{"errors":["no handler for route \"x/k\". route entry not found."]}"#;
        assert!(matches!(read_answer(&v1, "k", &reply(404, unmounted)), Err(Error::Internal(_))));
        assert!(matches!(read_answer(&v1, "k", &reply(200, r#"{"data":{"k":1}}"#)), Err(Error::Internal(_))));
        assert!(matches!(
            read_answer(&v1, "k", &reply(503, r#"{"errors":["Vault is sealed"]}"#)),
            Err(Error::Unavailable(_))
        ));
        assert!(matches!(
            read_answer(&v1, "k", &reply(403, r#"{"errors":["permission denied"]}"#)),
            Err(Error::Unavailable(_))
        ));
    }

    #[test]
    fn names_are_one_segment() {
        assert!(check_name("my-key").is_ok());
        for bad in ["", "a/b", ".", "..", "a\nb"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
