//! The state every instance of the plugin shares through `state_dir`.
//!
//! The host may run several instances of one loaded plugin (a pool) and
//! replace any of them at any time, but grants them all the same private
//! directory. Keeping the Vault token there means one login serves every
//! instance, and a new instance starts with the token the others use:
//!
//! * `token.json`: the current token and what is known about it (when it was
//!   obtained or last renewed, its TTL, whether it is renewable), plus the
//!   login backoff (failures, when the next attempt may start, the last error).
//! * `token.lock`: held (created exclusively) by the instance that is logging
//!   in or renewing, so that the others keep using the current token or wait
//!   for the new one rather than logging in too. A lock older than
//!   [`STALE_LOCK_MS`] belonged to an instance that was stopped mid-way.
//!
//! Files are replaced by writing a temporary file and renaming it over the
//! old one, so a reader sees the old or the new content, never a mix. The
//! directory is the host's (mode 0700, removed with the plugin): the token
//! is stored there as it is.

use std::fs;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A lock this old (ms) is abandoned: logins and renewals take well under it.
pub const STALE_LOCK_MS: u64 = 10_000;

/// Milliseconds since the Unix epoch, by the wall clock.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// What is known about the current token. Times are Unix milliseconds.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenState {
    /// Which login produced it ([`crate::config::Auth::fingerprint`]); a
    /// token of another configuration is never used.
    pub fingerprint: String,
    /// Empty when there is no token (never logged in, or found invalid).
    pub token: String,
    /// The token's accessor, for operators (it can revoke, not authenticate).
    pub accessor: String,
    /// When the token was issued (login, or for a static token its lookup).
    pub issued_ms: u64,
    /// When `ttl_s` was learnt (login, renewal or lookup).
    pub refreshed_ms: u64,
    /// The lease left at `refreshed_ms`, in seconds; 0 = it never expires.
    pub ttl_s: u64,
    /// The TTL at login: a renewal that gives less has hit the max TTL.
    pub creation_ttl_s: u64,
    pub renewable: bool,
    /// For a static token: its TTL and renewability were looked up. Until
    /// they are, it is used as it is and the lookup is tried again.
    pub checked: bool,
    /// The last renewal was cut short by the max TTL: log in next time.
    pub capped: bool,
    /// Failed logins or renewals in a row, and when the next may start.
    pub failures: u32,
    pub retry_at_ms: u64,
    pub last_error: String,
    /// The last failure was Vault refusing the credentials (not an outage).
    pub last_refused: bool,
    /// Bumped at every save, so an instance can tell a newer state.
    pub generation: u64,
    /// The `X-Vault-Index` of the saving instance's latest write (the login
    /// or renewal that produced the token): an instance adopting the token
    /// sends it, so a standby that has not seen the login yet forwards the
    /// request instead of refusing the token.
    pub index: Option<String>,
}

impl TokenState {
    /// When the token expires, or `None` if it does not.
    pub fn expires_ms(&self) -> Option<u64> {
        (self.ttl_s > 0).then(|| self.refreshed_ms + self.ttl_s * 1000)
    }

    /// Whether the token may be used at `now`: one past its expiry minus a
    /// safety margin (a tenth of the TTL, from 1 s to 30 s) never is.
    pub fn usable(&self, now: u64) -> bool {
        if self.token.is_empty() {
            return false;
        }
        match self.expires_ms() {
            None => true,
            Some(expires) => {
                let margin = (self.ttl_s * 100).clamp(1_000, 30_000);
                now + margin < expires
            }
        }
    }

    /// Whether it is time to renew (or log in again): past half the TTL.
    /// `static_token`: a static token that cannot be renewed never is.
    pub fn due(&self, now: u64, static_token: bool) -> bool {
        if static_token && !self.checked {
            return true;
        }
        if self.ttl_s == 0 || (static_token && (!self.renewable || self.capped)) {
            return false;
        }
        now >= self.refreshed_ms + self.ttl_s * 500
    }

    /// Records a failed login or renewal: exponential backoff from 1 s,
    /// doubling up to 60 s.
    pub fn failed(&mut self, now: u64, message: &str, refused: bool) {
        self.failures = self.failures.saturating_add(1);
        let wait_s = 1u64 << self.failures.saturating_sub(1).min(6);
        self.retry_at_ms = now + wait_s.min(60) * 1000;
        self.last_error = message.to_string();
        self.last_refused = refused;
    }

    /// Clears the backoff after a success.
    pub fn succeeded(&mut self) {
        self.failures = 0;
        self.retry_at_ms = 0;
        self.last_error.clear();
        self.last_refused = false;
    }
}

/// The state directory.
pub struct Store {
    dir: String,
}

/// Whether this instance got the lock.
pub enum Lock {
    Acquired,
    Busy,
}

fn unique() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    // std seeds RandomState from wasi:random: a fresh value per call.
    let mut h = RandomState::new().build_hasher();
    h.write_u64(now_ms());
    format!("{:016x}", h.finish())
}

impl Store {
    pub fn new(dir: &str) -> Store {
        Store { dir: dir.to_string() }
    }

    fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.dir)
    }

    /// Checks that the directory is there and writable.
    pub fn check(&self) -> Result<(), String> {
        match fs::metadata(&self.dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(format!("state_dir {} is not a directory", self.dir)),
            Err(e) => {
                return Err(format!(
                    "state_dir {} is not accessible ({e}): grant the plugin a private directory there",
                    self.dir
                ))
            }
        }
        let probe = self.path(&format!(".probe.{}", unique()));
        fs::write(&probe, b"").map_err(|e| format!("state_dir {} is not writable: {e}", self.dir))?;
        let _ = fs::remove_file(&probe);
        Ok(())
    }

    fn replace(&self, name: &str, content: &[u8]) -> std::io::Result<()> {
        let temp = self.path(&format!(".{name}.{}.tmp", unique()));
        let written = fs::File::create(&temp).and_then(|mut f| f.write_all(content));
        let renamed = written.and_then(|()| fs::rename(&temp, self.path(name)));
        if renamed.is_err() {
            let _ = fs::remove_file(&temp);
        }
        renamed
    }

    /// The shared token state, if there is a readable one.
    pub fn load(&self) -> Option<TokenState> {
        let text = fs::read(self.path("token.json")).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Saves `state` with its generation bumped (and updated in place).
    pub fn save(&self, state: &mut TokenState) -> Result<(), String> {
        state.generation = state.generation.wrapping_add(1).max(self.load().map_or(0, |s| s.generation + 1));
        let json = serde_json::to_vec(state).map_err(|e| e.to_string())?;
        self.replace("token.json", &json).map_err(|e| format!("cannot save {}: {e}", self.path("token.json")))
    }

    /// Takes the login lock, or says another instance holds it. A stale lock
    /// (its holder was stopped) is taken over.
    pub fn lock(&self) -> Lock {
        let path = self.path("token.lock");
        for _ in 0..2 {
            match fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    let _ = f.write_all(now_ms().to_string().as_bytes());
                    return Lock::Acquired;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let since: Option<u64> = fs::read_to_string(&path).ok().and_then(|t| t.trim().parse().ok());
                    match since {
                        Some(t) if now_ms().saturating_sub(t) < STALE_LOCK_MS => return Lock::Busy,
                        // Being written right now (empty), or stale.
                        None if fs::metadata(&path).and_then(|m| m.modified()).is_ok_and(|m| {
                            SystemTime::now().duration_since(m).map_or(true, |d| d.as_millis() < STALE_LOCK_MS as u128)
                        }) =>
                        {
                            return Lock::Busy
                        }
                        _ => {
                            let _ = fs::remove_file(&path);
                        }
                    }
                }
                // No usable directory: act alone rather than not at all.
                Err(_) => return Lock::Acquired,
            }
        }
        Lock::Busy
    }

    pub fn unlock(&self) {
        let _ = fs::remove_file(self.path("token.lock"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usable_and_due_follow_the_ttl() {
        let t = TokenState { token: "t".into(), refreshed_ms: 1_000_000, ttl_s: 100, ..Default::default() };
        assert!(t.usable(1_000_000) && !t.due(1_000_000, false));
        assert!(t.due(1_050_000, false) && t.usable(1_050_000));
        assert!(t.due(1_050_000, true), "static, not looked up yet");
        let checked = TokenState { checked: true, ..t.clone() };
        assert!(!checked.due(1_050_000, true), "static and not renewable");
        // Margin 10 s: unusable from 1_090_000 on.
        assert!(t.usable(1_089_999) && !t.usable(1_090_000));
        let forever = TokenState { token: "t".into(), ..Default::default() };
        assert!(forever.usable(u64::MAX / 2) && !forever.due(u64::MAX / 2, false));
    }

    #[test]
    fn backoff_doubles_to_a_minute() {
        let mut t = TokenState::default();
        let waits: Vec<u64> = (0..9)
            .map(|_| {
                t.failed(0, "x", false);
                t.retry_at_ms / 1000
            })
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        t.succeeded();
        assert_eq!((t.failures, t.retry_at_ms), (0, 0));
    }
}
