//! The plugin's configuration: the `[keystore.config]` table, as JSON.
//!
//! Parsing is strict (an unknown key is an `invalid` error naming it), and
//! everything that can be checked without talking to Vault is checked here,
//! so a bad configuration stops the server at start with a clear message.
//! Messages never repeat a secret (`token`, `approle.secret`, a JWT).

use std::time::Duration;

use serde::Deserialize;

use crate::errors::invalid;
use keyward_sdk::Error;

/// The K/V engine API version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvVersion {
    V1,
    V2,
}

/// How the plugin gets its Vault token.
#[derive(Clone)]
pub enum Auth {
    /// A fixed token (`token`, or `VAULT_TOKEN` from the granted environment).
    Static { token: String },
    /// `auth/<engine>/login` with `role_id` and `secret_id`.
    AppRole { namespace: Option<String>, engine: String, role_id: String, secret_id: String },
    /// `auth/<engine>/login` with `role` and a JWT, read again at each login.
    Kubernetes { namespace: Option<String>, engine: String, role: String, jwt: Jwt },
}

/// Where the Kubernetes service-account JWT comes from.
#[derive(Clone)]
pub enum Jwt {
    /// A file inside the sandbox, read at every login (it is rotated).
    File(String),
    /// The token itself, written into the configuration.
    Literal(String),
}

impl Auth {
    /// A short name for messages and the state file.
    pub fn method(&self) -> &'static str {
        match self {
            Auth::Static { .. } => "token",
            Auth::AppRole { .. } => "approle",
            Auth::Kubernetes { .. } => "kubernetes",
        }
    }

    /// What identifies the login, without any secret: a token obtained with
    /// another fingerprint (an older configuration) is not reused.
    pub fn fingerprint(&self, endpoint: &str) -> String {
        match self {
            Auth::Static { .. } => format!("token {endpoint}"),
            Auth::AppRole { namespace, engine, role_id, .. } => {
                format!("approle {endpoint} {} {engine} {role_id}", namespace.as_deref().unwrap_or("/"))
            }
            Auth::Kubernetes { namespace, engine, role, .. } => {
                format!("kubernetes {endpoint} {} {engine} {role}", namespace.as_deref().unwrap_or("/"))
            }
        }
    }
}

/// The Vault server: `http(s)://host[:port][/base]`.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub https: bool,
    pub authority: String,
    /// A path the API lives under (a reverse proxy), without a trailing `/`;
    /// usually empty.
    pub base: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let (scheme, rest) = url.split_once("://").ok_or("must start with http:// or https://")?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            _ => return Err("must start with http:// or https://".into()),
        };
        if let Some(c) = url.chars().find(|c| !c.is_ascii_graphic() || "\"<>\\^`{|}?#".contains(*c)) {
            return Err(format!("contains {c:?}: give scheme, host, port and at most a path"));
        }
        let split = rest.find('/').unwrap_or(rest.len());
        let (authority, base) = rest.split_at(split);
        if authority.contains('@') {
            return Err("must not contain credentials".into());
        }
        let (host, port) = match authority.rfind(':') {
            Some(i) if !authority[i..].contains(']') => (&authority[..i], Some(&authority[i + 1..])),
            _ => (authority, None),
        };
        if host.is_empty() {
            return Err("has no host".into());
        }
        if let Some(port) = port {
            if port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err("has a port that is not a number from 1 to 65535".into());
            }
        }
        let base = base.trim_end_matches('/').to_string();
        Ok(Endpoint { https, authority: authority.to_string(), base })
    }

    /// `scheme://authority`, how messages name the server.
    pub fn origin(&self) -> String {
        format!("{}://{}", if self.https { "https" } else { "http" }, self.authority)
    }
}

/// Transit wrapping of stored values.
#[derive(Clone)]
pub struct Transit {
    pub engine: String,
    pub key: String,
}

/// The checked configuration.
#[derive(Clone)]
pub struct Config {
    pub endpoint: Endpoint,
    pub engine: String,
    pub version: KvVersion,
    pub namespace: Option<String>,
    pub prefix: String,
    pub transit: Option<Transit>,
    pub auth: Auth,
    pub state_dir: String,
    /// The most one plugin call may spend talking to Vault, retries included.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Attempts after the first for a request that failed in a way a retry may fix.
    pub retries: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    endpoint: Option<String>,
    engine: Option<String>,
    version: Option<String>,
    namespace: Option<String>,
    prefix: Option<String>,
    transit: Option<RawTransit>,
    approle: Option<RawAppRole>,
    kubernetes: Option<RawKubernetes>,
    token: Option<String>,
    state_dir: Option<String>,
    timeout_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    retries: Option<u32>,
    /// KES's `status.ping`; accepted so converted KES configurations load,
    /// and unused: the keyward host decides when to call `status`.
    status: Option<RawStatus>,
    /// KES's client TLS settings: refused with a pointer to the host.
    tls: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTransit {
    engine: Option<String>,
    key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAppRole {
    namespace: Option<String>,
    engine: Option<String>,
    id: Option<String>,
    secret: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKubernetes {
    namespace: Option<String>,
    engine: Option<String>,
    role: Option<String>,
    jwt_file: Option<String>,
    jwt: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatus {
    #[allow(dead_code)]
    ping: Option<serde_json::Value>,
}

/// The longest `timeout_ms`: the host's longest `call_timeout`.
const MAX_TIMEOUT_MS: u64 = 600_000;

/// serde_json's message names an unknown key, which is what the operator
/// needs; but for a value of the wrong type it quotes the value, which may be
/// a secret given in the wrong place, so then only its position is shown.
fn config_error(e: serde_json::Error) -> Error {
    let text = e.to_string();
    if text.starts_with("invalid type") || text.starts_with("invalid value") || text.starts_with("invalid length") {
        // "invalid type: string \"…\", expected u64 at line 1 column 9"
        let expected = text.find(", expected ").map(|i| &text[i + 2..]).unwrap_or("");
        let expected = expected.split(" at line ").next().unwrap_or("");
        invalid(format!(
            "config: a value has the wrong type ({expected}; line {}, column {}; value not shown)",
            e.line(),
            e.column()
        ))
    } else {
        invalid(format!("config: {text}"))
    }
}

/// A non-empty string, trimmed; `None` for absent or blank.
fn given(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
}

/// A Vault path (a mount, a prefix) cleaned as Go's `path.Join` would:
/// empty and `.` segments dropped. `..` is refused rather than resolved, and
/// so is anything a URL path cannot carry as it is.
pub fn clean_path(what: &str, path: &str) -> Result<String, Error> {
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(invalid(format!("{what} must not contain '..'"))),
            p if p.chars().any(|c| c.is_control() || c == '?' || c == '#' || c == '%' || c == ' ') => {
                return Err(invalid(format!("{what} {path:?} contains a character that cannot be used in a path")))
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// An auth namespace: `"/"` means the root namespace (no header), empty means
/// the K/V namespace, anything else is sent as it is.
fn auth_namespace(value: Option<String>, main: &Option<String>) -> Option<String> {
    match value.as_deref().map(str::trim) {
        Some("/") => None,
        Some(ns) if !ns.is_empty() => Some(ns.to_string()),
        _ => main.clone(),
    }
}

impl Config {
    /// Parses and checks the JSON configuration. `env_token` is `VAULT_TOKEN`
    /// from the granted environment, used only when nothing else says how
    /// to authenticate.
    pub fn parse(json: &str, env_token: Option<String>) -> Result<Config, Error> {
        let json = if json.trim().is_empty() { "{}" } else { json };
        let raw: Raw = serde_json::from_str(json).map_err(config_error)?;
        if raw.tls.is_some() {
            return Err(invalid(
                "config: tls is not a setting of this plugin: TLS to Vault (CA, client certificate) is done by the \
                 keyward host's wasi:http client",
            ));
        }
        let _ = raw.status;
        let endpoint = given(raw.endpoint).ok_or_else(|| invalid("config: no endpoint specified"))?;
        let endpoint = Endpoint::parse(&endpoint).map_err(|m| invalid(format!("config: endpoint {m}")))?;
        let engine = clean_path("engine", &given(raw.engine).unwrap_or_else(|| "kv".into()))?;
        if engine.is_empty() {
            return Err(invalid("config: engine is empty"));
        }
        let version = match given(raw.version).as_deref() {
            None | Some("v1") => KvVersion::V1,
            Some("v2") => KvVersion::V2,
            Some(v) => return Err(invalid(format!("config: invalid engine API version {v:?} (use \"v1\" or \"v2\")"))),
        };
        let namespace = given(raw.namespace).filter(|ns| ns != "/");
        let prefix = clean_path("prefix", raw.prefix.as_deref().unwrap_or(""))?;
        let transit = match raw.transit {
            None => None,
            Some(t) => {
                let engine = clean_path("transit.engine", &given(t.engine).unwrap_or_else(|| "transit".into()))?;
                let key = given(t.key).ok_or_else(|| invalid("config: transit.key is empty"))?;
                let key = clean_path("transit.key", &key)?;
                if engine.is_empty() || key.is_empty() || key.contains('/') {
                    return Err(invalid("config: transit.engine and transit.key must be names"));
                }
                Some(Transit { engine, key })
            }
        };
        let mut methods = Vec::new();
        if let Some(a) = raw.approle {
            let role_id = given(a.id).ok_or_else(|| invalid("config: approle.id is empty"))?;
            let secret_id = given(a.secret).ok_or_else(|| invalid("config: approle.secret is empty"))?;
            let engine = clean_path("approle.engine", &given(a.engine).unwrap_or_else(|| "approle".into()))?;
            let namespace = auth_namespace(a.namespace, &namespace);
            methods.push(Auth::AppRole { namespace, engine, role_id, secret_id });
        }
        if let Some(k) = raw.kubernetes {
            let jwt = match (given(k.jwt_file), given(k.jwt)) {
                (Some(file), None) => Jwt::File(file),
                // As KES: a value with a '/' is a file name.
                (None, Some(jwt)) if jwt.contains('/') => Jwt::File(jwt),
                (None, Some(jwt)) => Jwt::Literal(jwt),
                (Some(_), Some(_)) => {
                    return Err(invalid("config: give kubernetes.jwt_file or kubernetes.jwt, not both"))
                }
                (None, None) => return Err(invalid("config: kubernetes.jwt_file is empty")),
            };
            let engine = clean_path("kubernetes.engine", &given(k.engine).unwrap_or_else(|| "kubernetes".into()))?;
            let namespace = auth_namespace(k.namespace, &namespace);
            methods.push(Auth::Kubernetes { namespace, engine, role: k.role.unwrap_or_default(), jwt });
        }
        if let Some(token) = given(raw.token) {
            methods.push(Auth::Static { token });
        }
        let auth = match methods.len() {
            1 => methods.pop().unwrap_or_else(|| unreachable!()),
            0 => match env_token.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()) {
                Some(token) => Auth::Static { token },
                None => {
                    return Err(invalid(
                        "config: no authentication method specified (approle, kubernetes, token, or VAULT_TOKEN \
                         granted in the environment)",
                    ))
                }
            },
            _ => {
                let names: Vec<&str> = methods.iter().map(Auth::method).collect();
                return Err(invalid(format!(
                    "config: more than one authentication method specified ({}); give exactly one",
                    names.join(", ")
                )));
            }
        };
        if let Auth::Static { token } = &auth {
            if token.chars().any(|c| !c.is_ascii_graphic()) {
                return Err(invalid("config: token contains characters a header cannot carry (value not shown)"));
            }
        }
        let state_dir = given(raw.state_dir).unwrap_or_else(|| "/state".into());
        if !state_dir.starts_with('/') {
            return Err(invalid(format!("config: state_dir {state_dir:?} must be an absolute guest path")));
        }
        let timeout_ms = raw.timeout_ms.unwrap_or(1500);
        if timeout_ms == 0 || timeout_ms > MAX_TIMEOUT_MS {
            return Err(invalid(format!("config: timeout_ms must be from 1 to {MAX_TIMEOUT_MS}")));
        }
        let connect_ms = raw.connect_timeout_ms.unwrap_or(1000).max(1);
        let retries = raw.retries.unwrap_or(2);
        if retries > 10 {
            return Err(invalid("config: retries must be at most 10"));
        }
        Ok(Config {
            endpoint,
            engine,
            version,
            namespace,
            prefix,
            transit,
            auth,
            state_dir: state_dir.trim_end_matches('/').to_string(),
            timeout: Duration::from_millis(timeout_ms),
            connect_timeout: Duration::from_millis(connect_ms),
            retries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        match Config::parse(json, None) {
            Err(Error::Invalid(m)) => m,
            Err(_) => panic!("not invalid"),
            Ok(_) => panic!("accepted {json}"),
        }
    }

    #[test]
    fn unknown_keys_and_methods_are_named_and_secrets_never_shown() {
        assert!(err(r#"{"endpoint":"http://v","token":"t","engin":"kv"}"#).contains("unknown field `engin`"));
        assert!(err(r#"{"endpoint":"http://v","approle":{"id":"i","secret":"s","retry":"1s"}}"#).contains("`retry`"));
        assert!(err(r#"{"endpoint":"http://v","token":"t","approle":{"id":"i","secret":"s"}}"#)
            .contains("more than one authentication method"));
        assert!(err(r#"{"endpoint":"http://v"}"#).contains("no authentication method"));
        let m = err(r#"{"endpoint":"http://v","approle":{"id":"i","secret":987654321}}"#);
        assert!(m.contains("expected a string") && !m.contains("987654321"), "{m}");
        assert!(err(r#"{"endpoint":"http://v","token":"t","version":"v3"}"#).contains("v3"));
        assert!(err(r#"{"endpoint":"http://v","token":"t","prefix":"a/../b"}"#).contains(".."));
        assert!(err(r#"{"endpoint":"ftp://v","token":"t"}"#).contains("endpoint"));
        assert!(err(r#"{"endpoint":"http://v","token":"t","tls":{}}"#).contains("host"));
    }

    #[test]
    fn defaults_namespaces_and_jwt_follow_kes() {
        let c = Config::parse(
            r#"{"endpoint":"https://v:8200/","namespace":"ns1","approle":{"namespace":"/","id":"i","secret":"s"}}"#,
            None,
        )
        .ok()
        .unwrap();
        assert_eq!((c.engine.as_str(), c.version, c.state_dir.as_str()), ("kv", KvVersion::V1, "/state"));
        assert!(c.endpoint.https && c.endpoint.authority == "v:8200" && c.endpoint.base.is_empty());
        assert!(matches!(c.auth, Auth::AppRole { namespace: None, .. }));
        let c = Config::parse(
            r#"{"endpoint":"http://v","namespace":"ns1","kubernetes":{"role":"r","jwt":"/var/run/t"}}"#,
            None,
        )
        .ok()
        .unwrap();
        assert!(
            matches!(&c.auth, Auth::Kubernetes { namespace: Some(ns), jwt: Jwt::File(f), .. } if ns == "ns1" && f == "/var/run/t")
        );
        let c = Config::parse(r#"{"endpoint":"http://v"}"#, Some("from-env".into())).ok().unwrap();
        assert!(matches!(&c.auth, Auth::Static { token } if token == "from-env"));
        let c = Config::parse(r#"{"endpoint":"http://v","approle":{"id":"i","secret":"s"}}"#, Some("ignored".into()))
            .ok()
            .unwrap();
        assert_eq!(c.auth.method(), "approle");
    }
}
