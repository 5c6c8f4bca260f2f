//! What a plugin's sandbox lets it reach: the `[plugin.grants]` table of
//! the manifest, and the checks that keep each grant to one plain meaning
//! (a misspelt or ambiguous grant would run a plugin with other authority
//! than the operator wrote down).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

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
    /// A client certificate (PEM chain and key) HTTPS to the granted hosts
    /// presents: a backend that requires mutual TLS.
    #[serde(default)]
    pub client_cert: Option<ClientCert>,
}

/// The certificate chain and private key files of a TLS client identity.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCert {
    /// PEM certificate chain, the client's own certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl Grants {
    /// Checks every grant and resolves relative host paths against `base`
    /// (the manifest's directory). Messages name the grant (`grants.…`).
    pub fn validate(&mut self, base: &Path) -> Result<(), String> {
        let mut guests = HashSet::new();
        for (i, dir) in self.dirs.iter_mut().enumerate() {
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
        for (i, var) in self.env.iter().enumerate() {
            check_env_name(var).map_err(|m| format!("grants.env[{i}]: {var:?} {m}"))?;
        }
        for (i, host) in self.hosts.iter().enumerate() {
            check_http_origin(host).map_err(|m| format!("grants.hosts[{i}]: {host:?}: {m}"))?;
        }
        if let Some(ca) = &mut self.ca {
            if self.hosts.is_empty() {
                return Err("grants.ca is given but grants.hosts is empty: it would trust a CA for nothing".into());
            }
            check_no_control("grants.ca", &ca.to_string_lossy())?;
            *ca = resolve(base, ca);
        }
        if let Some(state) = &self.state {
            check_guest_path("grants.state", state)?;
            if !guests.insert(state.clone()) {
                return Err(format!("grants.state: {state:?} is also a granted directory"));
            }
        }
        if let Some(client) = &mut self.client_cert {
            if self.hosts.is_empty() {
                return Err("grants.client_cert is given but grants.hosts is empty: it would be shown to nobody".into());
            }
            for (key, path) in
                [("grants.client_cert.cert", &mut client.cert), ("grants.client_cert.key", &mut client.key)]
            {
                check_no_control(key, &path.to_string_lossy())?;
                *path = resolve(base, path);
            }
        }
        Ok(())
    }

    /// Grants exactly one directory, as the host does for the embedded `fs`
    /// plugin.
    pub fn dir(host: impl Into<PathBuf>, guest: impl Into<String>) -> Self {
        Grants { dirs: vec![DirGrant { host: host.into(), guest: guest.into() }], ..Grants::default() }
    }
}

/// Refuses control characters (NUL included) in a path from the manifest:
/// they are never meant, they make messages and logs misleading, and a NUL
/// would only be refused by the OS much later, when an instance is built.
pub(crate) fn check_no_control(key: &str, value: &str) -> Result<(), String> {
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

/// `p` against `base` unless it is absolute.
pub(crate) fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
