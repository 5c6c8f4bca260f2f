//! The Vault token: reuse, renewal and login, shared by all instances.
//!
//! An instance uses its own copy of the shared state ([`crate::state`]) as
//! long as the token is fresh (before half its TTL). After that it reads the
//! shared file (another instance may have renewed already), and if the token
//! still needs care, takes the lock and renews it (`auth/token/renew-self`),
//! or logs in again when it cannot be renewed, renewal failed, or the max TTL
//! cut the last renewal short. Failed attempts back off exponentially (1 s to
//! 60 s, shared through the file); meanwhile a token that is still usable is
//! used, and one that is not is never sent.

use std::time::{Duration, Instant};

use keyward_sdk::{log, Error};
use serde_json::{json, Value};
use waki::bindings::wasi::http::types::Method;

use crate::config::{Auth, Jwt};
use crate::errors::{bounded, unavailable, vault_errors};
use crate::http::Request;
use crate::state::{now_ms, Lock, TokenState};
use crate::vault::{Ns, Reply, Vault};

/// Why no token could be had.
pub struct AuthFailure {
    pub message: String,
    /// Vault refused the credentials (as opposed to being unreachable).
    pub refused: bool,
}

impl AuthFailure {
    fn new(message: impl Into<String>, refused: bool) -> AuthFailure {
        AuthFailure { message: message.into(), refused }
    }

    pub fn error(&self) -> Error {
        unavailable(&self.message)
    }
}

/// The text of an error, without the `vault: ` every message starts with.
pub fn text(error: &Error) -> String {
    let m = match error {
        Error::NotFound => "not found",
        Error::Exists => "exists",
        Error::Unavailable(m) | Error::Invalid(m) | Error::Internal(m) => m.as_str(),
    };
    m.strip_prefix("vault: ").unwrap_or(m).to_string()
}

/// How a renewal failed.
enum Renewal {
    /// Vault refused (the token is invalid or not renewable): log in.
    Refused(String),
    /// Vault could not be asked: try again later.
    Failed(String),
}

/// A token from `auth` of a login or renewal answer.
struct Lease {
    token: String,
    accessor: String,
    ttl_s: u64,
    renewable: bool,
}

fn lease(reply: &Reply) -> Option<Lease> {
    let auth = reply.json.get("auth").filter(|a| a.is_object())?;
    let token = auth.get("client_token").and_then(Value::as_str).filter(|t| !t.is_empty())?;
    Some(Lease {
        token: token.to_string(),
        accessor: auth.get("accessor").and_then(Value::as_str).unwrap_or_default().to_string(),
        ttl_s: auth.get("lease_duration").and_then(Value::as_u64).unwrap_or(0),
        renewable: auth.get("renewable").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// `status N: errors`, for a failed auth request.
fn answer(reply: &Reply) -> String {
    let errors = vault_errors(&reply.json);
    if errors.is_empty() {
        format!("status {}", reply.status)
    } else {
        format!("status {}: {errors}", reply.status)
    }
}

impl Vault {
    fn fingerprint(&self) -> String {
        self.config.auth.fingerprint(&self.config.endpoint.origin())
    }

    fn is_static(&self) -> bool {
        matches!(self.config.auth, Auth::Static { .. })
    }

    /// This instance's token if it is fresh: usable and not due for care.
    fn fresh(&self, now: u64) -> Option<String> {
        let state = self.token.borrow();
        let t = state.as_ref()?;
        (t.fingerprint == self.fingerprint() && t.usable(now) && !t.due(now, self.is_static())).then(|| t.token.clone())
    }

    /// Takes the shared state if it belongs to this configuration and is
    /// newer than this instance's copy.
    fn adopt_shared(&self) {
        let Some(shared) = self.store.load() else { return };
        if shared.fingerprint != self.fingerprint() {
            return;
        }
        if let Auth::Static { token } = &self.config.auth {
            if !shared.token.is_empty() && shared.token != *token {
                return;
            }
        }
        let mut mine = self.token.borrow_mut();
        if mine.as_ref().is_none_or(|m| m.generation != shared.generation) {
            self.adopt_index(shared.index.clone());
            *mine = Some(shared);
        }
    }

    /// The current state, or a fresh one for this configuration.
    fn current(&self) -> TokenState {
        let fp = self.fingerprint();
        self.token
            .borrow()
            .clone()
            .filter(|t| t.fingerprint == fp)
            .unwrap_or(TokenState { fingerprint: fp, ..Default::default() })
    }

    /// A token to send now, renewing or logging in first if needed.
    pub fn token(&self, deadline: Instant) -> Result<String, AuthFailure> {
        if let Some(token) = self.fresh(now_ms()) {
            return Ok(token);
        }
        self.adopt_shared();
        loop {
            let now = now_ms();
            if let Some(token) = self.fresh(now) {
                return Ok(token);
            }
            let current = self.current();
            if current.retry_at_ms > now {
                return backing_off(&current, now);
            }
            match self.store.lock() {
                Lock::Acquired => {
                    let result = self.maintain(deadline);
                    self.store.unlock();
                    return result;
                }
                Lock::Busy if current.usable(now) => return Ok(current.token),
                Lock::Busy => {
                    // Another instance is logging in: wait for its token.
                    let pause = Duration::from_millis(50);
                    if Instant::now() + pause >= deadline {
                        return Err(AuthFailure::new("another instance is logging in to Vault; no token yet", false));
                    }
                    std::thread::sleep(pause);
                    self.adopt_shared();
                }
            }
        }
    }

    /// Under the lock: renews, looks up or logs in, and saves the outcome.
    fn maintain(&self, deadline: Instant) -> Result<String, AuthFailure> {
        self.adopt_shared();
        let now = now_ms();
        if let Some(token) = self.fresh(now) {
            return Ok(token);
        }
        let mut state = self.current();
        if state.retry_at_ms > now {
            return backing_off(&state, now);
        }
        let outcome = match &self.config.auth {
            Auth::Static { token } => self.refresh_static(&mut state, token, deadline),
            _ => self.refresh_login(&mut state, deadline),
        };
        match &outcome {
            Ok(()) => state.succeeded(),
            Err(f) => {
                log::warn(&format!("vault: {}", f.message));
                state.failed(now, &f.message, f.refused);
            }
        }
        state.index = self.current_index();
        if let Err(e) = self.store.save(&mut state) {
            log::warn(&format!("vault: {e}; the token is kept by this instance only"));
        }
        *self.token.borrow_mut() = Some(state.clone());
        match outcome {
            _ if state.usable(now_ms()) => Ok(state.token),
            Ok(()) => Err(AuthFailure::new("the new token is already expired", false)),
            Err(f) => Err(f),
        }
    }

    /// A static token: looked up once for its TTL, renewed only if renewable.
    fn refresh_static(&self, state: &mut TokenState, token: &str, deadline: Instant) -> Result<(), AuthFailure> {
        if state.token != token || !state.checked {
            // Usable right away; its lifetime is learnt when Vault answers.
            state.token = token.to_string();
            let request = Request::new(Method::Get, "auth/token/lookup-self".into());
            let reply =
                self.call(request, Ns::Main, Some(token), deadline).map_err(|e| AuthFailure::new(text(&e), false))?;
            if !reply.ok() {
                let refused = matches!(reply.status, 400 | 403);
                if refused {
                    state.token.clear();
                }
                return Err(AuthFailure::new(format!("looking up the configured token: {}", answer(&reply)), refused));
            }
            let data = &reply.json["data"];
            let now = now_ms();
            state.accessor = data["accessor"].as_str().unwrap_or_default().to_string();
            state.issued_ms = now;
            state.refreshed_ms = now;
            state.ttl_s = data["ttl"].as_u64().unwrap_or(0);
            state.creation_ttl_s = data["creation_ttl"].as_u64().unwrap_or(state.ttl_s);
            state.renewable = data["renewable"].as_bool().unwrap_or(false);
            state.checked = true;
            log::info(&format!(
                "vault: using the configured token (accessor {}, {})",
                state.accessor,
                lifetime(state.ttl_s, state.renewable)
            ));
            return Ok(());
        }
        if !state.usable(now_ms()) {
            return Err(AuthFailure::new(
                "the configured token has expired (or is about to): configure a new one, or use approle/kubernetes",
                true,
            ));
        }
        match self.renew(token, deadline) {
            Ok(lease) => {
                apply_renewal(state, &lease);
                Ok(())
            }
            Err(Renewal::Refused(m)) => {
                state.token.clear();
                Err(AuthFailure::new(format!("the configured token cannot be renewed: {m}"), true))
            }
            Err(Renewal::Failed(m)) => Err(AuthFailure::new(m, false)),
        }
    }

    /// A login method: renew while that works, else log in.
    fn refresh_login(&self, state: &mut TokenState, deadline: Instant) -> Result<(), AuthFailure> {
        if state.usable(now_ms()) && state.renewable && !state.capped {
            match self.renew(&state.token, deadline) {
                Ok(lease) => {
                    apply_renewal(state, &lease);
                    if state.usable(now_ms()) {
                        return Ok(());
                    }
                    // Near its max TTL a renewal gives only what is left,
                    // which may already be inside the safety margin.
                    log::info("vault: the renewed token expires too soon (its max TTL is near); logging in again");
                }
                Err(Renewal::Failed(m)) => return Err(AuthFailure::new(m, false)),
                Err(Renewal::Refused(m)) => log::info(&format!("vault: {m}; logging in again")),
            }
        }
        self.login(state, deadline)
    }

    /// `auth/token/renew-self` with the default increment, as KES does.
    fn renew(&self, token: &str, deadline: Instant) -> Result<Lease, Renewal> {
        let mut request = Request::new(Method::Put, "auth/token/renew-self".into());
        request.body = Some(br#"{"increment":0}"#.to_vec());
        let reply =
            self.call(request, self.token_ns(), Some(token), deadline).map_err(|e| Renewal::Failed(text(&e)))?;
        match reply.status {
            200..=299 => lease(&reply).ok_or_else(|| Renewal::Failed("renew-self answered without a token".into())),
            400..=499 if reply.status != 412 && reply.status != 429 => {
                Err(Renewal::Refused(format!("renewing the token: {}", answer(&reply))))
            }
            _ => Err(Renewal::Failed(format!("renewing the token: {}", answer(&reply)))),
        }
    }

    /// Logs in with AppRole or Kubernetes and puts the new token in `state`.
    fn login(&self, state: &mut TokenState, deadline: Instant) -> Result<(), AuthFailure> {
        let (engine, namespace, body) = match &self.config.auth {
            Auth::AppRole { namespace, engine, role_id, secret_id } => {
                (engine, namespace, json!({"role_id": role_id, "secret_id": secret_id}))
            }
            Auth::Kubernetes { namespace, engine, role, jwt } => {
                let jwt = match jwt {
                    // Read at every login: the kubelet rotates the file.
                    Jwt::File(path) => std::fs::read_to_string(path)
                        .map_err(|e| {
                            AuthFailure::new(format!("cannot read the Kubernetes JWT file {path}: {e}"), false)
                        })?
                        .trim()
                        .to_string(),
                    Jwt::Literal(jwt) => jwt.clone(),
                };
                (engine, namespace, json!({"role": role, "jwt": jwt}))
            }
            Auth::Static { .. } => return Err(AuthFailure::new("a static token cannot log in", true)),
        };
        let method = self.config.auth.method();
        let mut request = Request::new(Method::Put, format!("auth/{engine}/login"));
        request.body = Some(body.to_string().into_bytes());
        let reply = self
            .call(request, Ns::Login(namespace.as_deref()), None, deadline)
            .map_err(|e| AuthFailure::new(format!("{method} login: {}", text(&e)), false))?;
        if !reply.ok() {
            let refused = matches!(reply.status, 400 | 401 | 403 | 404);
            return Err(AuthFailure::new(format!("{method} login refused: {}", answer(&reply)), refused));
        }
        let lease =
            lease(&reply).ok_or_else(|| AuthFailure::new(format!("{method} login answered without a token"), false))?;
        let now = now_ms();
        state.token = lease.token;
        state.accessor = lease.accessor;
        state.issued_ms = now;
        state.refreshed_ms = now;
        state.ttl_s = lease.ttl_s;
        state.creation_ttl_s = lease.ttl_s;
        state.renewable = lease.renewable;
        state.capped = false;
        state.checked = true;
        log::info(&format!(
            "vault: logged in with {method} (token accessor {}, {})",
            state.accessor,
            lifetime(state.ttl_s, state.renewable)
        ));
        Ok(())
    }

    /// After Vault said `token` is invalid: under the lock, drops it from the
    /// shared state (unless another instance replaced it already) and logs
    /// in again.
    pub fn replace_invalid(&self, token: &str, deadline: Instant) -> Result<String, AuthFailure> {
        if self.is_static() {
            return Err(AuthFailure::new("permission denied: the configured token is invalid or expired", true));
        }
        loop {
            self.adopt_shared();
            let current = self.current();
            if current.token != token && current.usable(now_ms()) {
                return Ok(current.token);
            }
            match self.store.lock() {
                Lock::Acquired => {
                    self.adopt_shared();
                    let mut state = self.current();
                    if state.token == token {
                        log::warn("vault: the token was refused as invalid before its expiry; logging in again");
                        state.token.clear();
                        // No backoff: this is no repeated login failure.
                        state.retry_at_ms = 0;
                        if let Err(e) = self.store.save(&mut state) {
                            log::warn(&format!("vault: {e}"));
                        }
                        *self.token.borrow_mut() = Some(state);
                    }
                    let result = self.maintain(deadline);
                    self.store.unlock();
                    return result;
                }
                Lock::Busy => {
                    let pause = Duration::from_millis(50);
                    if Instant::now() + pause >= deadline {
                        return Err(AuthFailure::new("another instance is logging in to Vault; no token yet", false));
                    }
                    std::thread::sleep(pause);
                }
            }
        }
    }
}

/// The error while backing off: the last failure, and when the next try is.
fn backing_off(state: &TokenState, now: u64) -> Result<String, AuthFailure> {
    if state.usable(now) {
        return Ok(state.token.clone());
    }
    let wait = state.retry_at_ms.saturating_sub(now).div_ceil(1000);
    let last = bounded(&state.last_error);
    Err(AuthFailure::new(format!("no valid token: {last} (next attempt in {wait} s)"), state.last_refused))
}

fn apply_renewal(state: &mut TokenState, lease: &Lease) {
    let now = now_ms();
    state.refreshed_ms = now;
    state.ttl_s = lease.ttl_s;
    state.renewable = lease.renewable;
    // Less than a login gives: the max TTL is near. Renewing again would
    // give even less, so the next care is a new login.
    state.capped = lease.ttl_s < state.creation_ttl_s;
    log::debug(&format!(
        "vault: token renewed ({}{})",
        lifetime(lease.ttl_s, lease.renewable),
        if state.capped { ", capped by its max TTL: the next refresh logs in" } else { "" }
    ));
}

fn lifetime(ttl_s: u64, renewable: bool) -> String {
    match (ttl_s, renewable) {
        (0, _) => "no expiry".into(),
        (t, true) => format!("TTL {t} s, renewable"),
        (t, false) => format!("TTL {t} s, not renewable"),
    }
}
