//! Requests to Vault: headers, retries within the call's budget, the
//! consistency index, and a fresh login when the token turns out invalid.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use keyward_sdk::{log, Error};
use serde_json::Value;
use waki::bindings::wasi::http::types::Method;

use crate::config::{Auth, Config};
use crate::errors::{status_error, unavailable};
use crate::http::{Http, Request};
use crate::state::{Store, TokenState};

/// A parsed answer.
pub struct Reply {
    pub status: u16,
    /// The JSON body, `Null` when empty or not JSON.
    pub json: Value,
}

impl Reply {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// Vault's warnings, joined (they tell a K/V v1/v2 mix-up apart).
    pub fn warnings(&self) -> String {
        match self.json.get("warnings").and_then(Value::as_array) {
            Some(w) => w.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("; "),
            None => String::new(),
        }
    }

    /// The error for an answer the caller does not accept.
    pub fn error(&self, what: &str) -> Error {
        status_error(what, self.status, &self.json)
    }
}

/// Which namespace header a request carries.
#[derive(Clone, Copy)]
pub enum Ns<'a> {
    /// None at all (`sys/health`, `sys/leader`, and the root namespace).
    Root,
    /// The configured K/V namespace.
    Main,
    /// A login's own namespace (`None` = root).
    Login(Option<&'a str>),
}

/// Statuses worth another attempt: rate limiting, a node behind on the
/// index, and server errors other than "not implemented".
fn retry_status(reply: &Reply) -> bool {
    match reply.status {
        412 | 429 | 500 | 502 | 504 => true,
        // A sealed node stays sealed for longer than one call.
        503 => !crate::errors::vault_errors(&reply.json).contains("sealed"),
        _ => false,
    }
}

/// One instance's connection to Vault.
pub struct Vault {
    pub config: Config,
    pub http: Http,
    pub store: Store,
    /// This instance's copy of the shared token state.
    pub token: RefCell<Option<TokenState>>,
    /// The newest `X-Vault-Index` this instance has seen.
    index: RefCell<Option<String>>,
    /// Whether the K/V mount's type and version were checked.
    pub mount_checked: Cell<bool>,
}

impl Vault {
    pub fn new(config: Config) -> Vault {
        let http = Http { endpoint: config.endpoint.clone(), connect_timeout: config.connect_timeout };
        let store = Store::new(&config.state_dir);
        Vault {
            config,
            http,
            store,
            token: RefCell::new(None),
            index: RefCell::new(None),
            mount_checked: Cell::new(false),
        }
    }

    /// The deadline of a call starting now.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.config.timeout
    }

    fn note_index(&self, index: Option<String>) {
        if index.is_some() {
            *self.index.borrow_mut() = index;
        }
    }

    /// Drops the index after Vault kept answering that it cannot reach that
    /// state (412): after a restore from a snapshot it never will, and every
    /// request would fail until the plugin is reloaded.
    fn forget_index(&self) {
        if self.index.borrow_mut().take().is_some() {
            log::warn("vault: the cluster did not reach the last write's index (412); no longer requiring it");
        }
    }

    /// Takes the index a token state was saved with (another instance's
    /// login or renewal), so this instance's requests with that token reach
    /// a node that knows it.
    pub fn adopt_index(&self, index: Option<String>) {
        if index.is_some() {
            *self.index.borrow_mut() = index;
        }
    }

    /// The index to send (and to save with the token state): that of this
    /// instance's latest write, kept in memory rather than read from the state
    /// directory on every request; a key missing on a standby is read again
    /// on the active node anyway.
    pub fn current_index(&self) -> Option<String> {
        self.index.borrow().clone()
    }

    /// Sends a request, retrying what a retry may fix while time is left.
    /// Any HTTP answer is returned (the caller interprets it); only a
    /// request that never got one is an error (`unavailable`).
    pub fn call(&self, mut request: Request, ns: Ns, token: Option<&str>, deadline: Instant) -> Result<Reply, Error> {
        request.headers.push(("x-vault-request", "true".into()));
        let namespace = match ns {
            Ns::Root => None,
            Ns::Main => self.config.namespace.as_deref(),
            Ns::Login(ns) => ns,
        };
        if let Some(ns) = namespace {
            request.headers.push(("x-vault-namespace", ns.to_string()));
        }
        if let Some(token) = token {
            request.headers.push(("x-vault-token", token.to_string()));
        }
        if !matches!(ns, Ns::Root) {
            if let Some(index) = self.current_index() {
                request.headers.push(("x-vault-index", index));
                request.headers.push(("x-vault-inconsistent", "forward-active-node".into()));
            }
        }
        let mut wait = Duration::from_millis(100);
        let mut attempt = 0;
        loop {
            attempt += 1;
            // What failed in a way another attempt may fix.
            let why = match self.http.send(&request, deadline) {
                Ok(response) => {
                    let json = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
                    let reply = Reply { status: response.status, json };
                    // Reads carry an index too (OpenBao), but only a write's
                    // matters: it is the state later reads must see.
                    if reply.ok() && !matches!(request.method, Method::Get) {
                        self.note_index(response.index);
                    }
                    if !retry_status(&reply) || attempt > self.config.retries || Instant::now() + wait >= deadline {
                        if reply.status == 412 {
                            self.forget_index();
                        }
                        return Ok(reply);
                    }
                    format!("status {}", reply.status)
                }
                Err(failure) if !failure.retry || attempt > self.config.retries => {
                    let tries = if attempt > 1 { format!(" ({attempt} attempts)") } else { String::new() };
                    return Err(unavailable(format!("{}{tries}", failure.message)));
                }
                Err(failure) if Instant::now() + wait >= deadline => {
                    return Err(unavailable(format!(
                        "{} ({}; no time left for another within timeout_ms)",
                        failure.message,
                        if attempt == 1 { "1 attempt".to_string() } else { format!("{attempt} attempts") }
                    )));
                }
                Err(failure) => failure.message,
            };
            log::debug(&format!("vault: {}: {why}; attempt {} in {wait:?}", request.describe(), attempt + 1));
            std::thread::sleep(wait);
            wait *= 2;
        }
    }

    /// The active node's address (its `api_addr`) when the endpoint is a
    /// standby that knows one, from `sys/leader`; `None` when the endpoint is
    /// the active node, a server without HA, or cannot tell.
    pub fn active_node(&self, deadline: Instant) -> Option<String> {
        let reply = self.call(Request::new(Method::Get, "sys/leader".into()), Ns::Root, None, deadline).ok()?;
        if !reply.ok() || reply.json["is_self"].as_bool() != Some(false) {
            return None;
        }
        reply.json["leader_address"].as_str().filter(|a| !a.is_empty()).map(str::to_string)
    }

    /// Sends a request with the token, in the K/V namespace. If Vault answers
    /// 403 and the token itself turns out to be invalid (not a policy
    /// refusal), logs in again and sends it once more.
    pub fn authed(&self, make: impl Fn() -> Request, deadline: Instant) -> Result<Reply, Error> {
        self.check_mount(deadline)?;
        let token = self.token(deadline).map_err(|f| f.error())?;
        let reply = self.call(make(), Ns::Main, Some(&token), deadline)?;
        if reply.status != 403 {
            return Ok(reply);
        }
        match self.token_valid(&token, deadline) {
            Some(false) => {
                let token = self.replace_invalid(&token, deadline).map_err(|f| f.error())?;
                self.call(make(), Ns::Main, Some(&token), deadline)
            }
            // A policy refusal, or unknown: the caller reports the 403.
            _ => Ok(reply),
        }
    }

    /// The namespace the token lives in, for `renew-self` and `lookup-self`:
    /// the login's. (KES sends them in the K/V namespace; OpenBao accepts a
    /// parent namespace's token there too, other servers may not.)
    pub fn token_ns(&self) -> Ns<'_> {
        match &self.config.auth {
            Auth::AppRole { namespace, .. } | Auth::Kubernetes { namespace, .. } => Ns::Login(namespace.as_deref()),
            Auth::Static { .. } => Ns::Main,
        }
    }

    /// `auth/token/lookup-self` with `token`: `Some(false)` when Vault says
    /// the token is not valid (403), `None` when that cannot be told.
    pub fn token_valid(&self, token: &str, deadline: Instant) -> Option<bool> {
        let request = Request::new(Method::Get, "auth/token/lookup-self".into());
        match self.call(request, self.token_ns(), Some(token), deadline) {
            Ok(reply) if reply.ok() => Some(true),
            Ok(reply) if reply.status == 403 => Some(false),
            _ => None,
        }
    }
}
