//! The key front: the cache in front of whichever [`Keystore`] is
//! configured. Handlers ask this module for keys by name; only it talks to the
//! store, encodes stored values and applies optional sealing.

pub mod cache;
pub mod memory;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::config::CacheSettings;
use cache::{Cache, Eviction, ExpiryClock};
use keyward_core::crypto::StoredKey;
use keyward_core::keystore::{Keystore, Page, StoreError};
use keyward_core::seal::Seal;

/// What went wrong with a key operation, in terms a handler can answer with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key does not exist")]
    NotFound,
    #[error("key already exists")]
    Exists,
    /// The store failed; `op` says which operation ("create", "read", ...).
    #[error("failed to {op} key: {source}")]
    Store {
        op: &'static str,
        #[source]
        source: StoreError,
    },
    /// The stored value could not be decoded (corrupt, or sealed with another key).
    #[error("failed to read key: stored value of '{name}' is not a valid key: {reason}")]
    Corrupt { name: String, reason: String },
}

fn store_error(op: &'static str) -> impl Fn(StoreError) -> KeyError {
    move |e| match e {
        StoreError::NotFound => KeyError::NotFound,
        StoreError::Exists => KeyError::Exists,
        other => KeyError::Store { op, source: other },
    }
}

/// Cached access to keys in the configured keystore.
pub struct Keys {
    store: ArcSwap<Arc<dyn Keystore>>,
    cache: Cache,
    seal: Option<Seal>,
    errors: Option<prometheus::IntCounterVec>,
    /// Whether the last store call (a request's or the status probe's) found
    /// the store unreachable. The expiry task reads it on every tick, so the
    /// `offline` rule protects cached keys from the moment an outage is seen
    /// rather than from the next periodic probe.
    unreachable: AtomicBool,
}

impl Keys {
    pub fn new(store: Arc<dyn Keystore>, seal: Option<Seal>) -> Keys {
        Keys {
            store: ArcSwap::from_pointee(store),
            cache: Cache::new(),
            seal,
            errors: None,
            unreachable: AtomicBool::new(false),
        }
    }

    /// Counts keystore failures in `counter` (labels: op, kind).
    pub fn with_error_counter(mut self, counter: prometheus::IntCounterVec) -> Keys {
        self.errors = Some(counter);
        self
    }

    /// Counts a failed store call, then passes the error on.
    fn count(&self, op: &'static str, e: StoreError) -> StoreError {
        let kind = match &e {
            StoreError::NotFound | StoreError::Exists => return e,
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Invalid(_) => "invalid",
            StoreError::Internal(_) => "internal",
        };
        if let Some(c) = &self.errors {
            c.with_label_values(&[op, kind]).inc();
        }
        e
    }

    /// Records whether a store call reached the store: `unavailable` means
    /// it did not; any other answer, error or not, means it did.
    fn observe<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        self.unreachable.store(matches!(r, Err(StoreError::Unavailable(_))), Ordering::Relaxed);
        r
    }

    fn store(&self) -> Arc<dyn Keystore> {
        Arc::clone(&self.store.load())
    }

    /// Replaces the keystore (plugin reload). Cached keys stay: they are the
    /// same keys, and the next `any` expiry refreshes them.
    pub fn swap_store(&self, store: Arc<dyn Keystore>) {
        self.store.store(Arc::new(store));
    }

    /// Stores a new key; [`KeyError::Exists`] if the name is taken. Returns
    /// only after the store acknowledged the write.
    pub async fn create(&self, name: &str, key: StoredKey) -> Result<(), KeyError> {
        // The encoded key is wiped once stored; a sealed value need not be,
        // but one type for both keeps it simple.
        let mut value = key.encode();
        if let Some(seal) = &self.seal {
            value = seal
                .seal(name, &value)
                .map(zeroize::Zeroizing::new)
                .map_err(|e| KeyError::Store { op: "create", source: StoreError::Internal(e) })?;
        }
        self.observe(self.store().create(name, &value).await)
            .map_err(|e| store_error("create")(self.count("create", e)))?;
        self.cache.insert(name, Arc::new(key));
        Ok(())
    }

    /// Returns a key, from the cache or else from the store.
    pub async fn get(&self, name: &str) -> Result<Arc<StoredKey>, KeyError> {
        match self.cache.get(name) {
            Some(k) => Ok(k),
            // Boxed: the fetch's state would otherwise make every request's
            // future larger, cache hits included (see `api::dispatch`).
            None => Box::pin(self.fetch(name)).await,
        }
    }

    /// Reads a key from the store and caches it.
    async fn fetch(&self, name: &str) -> Result<Arc<StoredKey>, KeyError> {
        // Unless sealed, the stored value is the key itself: wiped on drop.
        let value = self
            .observe(self.store().get(name).await)
            .map(zeroize::Zeroizing::new)
            .map_err(|e| store_error("read")(self.count("get", e)))?;
        let plain;
        let value = match &self.seal {
            Some(seal) => {
                plain =
                    seal.open(name, &value).map_err(|reason| KeyError::Corrupt { name: name.to_string(), reason })?;
                &plain[..]
            }
            None => &value[..],
        };
        let key = StoredKey::decode(value)
            .map_err(|e| KeyError::Corrupt { name: name.to_string(), reason: e.to_string() })?;
        let key = Arc::new(key);
        self.cache.insert(name, key.clone());
        Ok(key)
    }

    /// Deletes a key from the store and the cache.
    pub async fn delete(&self, name: &str) -> Result<(), KeyError> {
        let result =
            self.observe(self.store().delete(name).await).map_err(|e| store_error("delete")(self.count("delete", e)));
        self.cache.remove(name);
        result
    }

    /// One page of names starting with `prefix`, from `continue_at` on.
    pub async fn list(&self, prefix: &str, continue_at: &str, limit: u32) -> Result<Page, KeyError> {
        self.observe(self.store().list(prefix, continue_at, limit).await)
            .map_err(|e| KeyError::Store { op: "list", source: self.count("list", e) })
    }

    /// Every name with `prefix` that `keep` accepts, following pages to the end.
    pub async fn list_all(&self, prefix: &str, keep: impl Fn(&str) -> bool) -> Result<Vec<String>, KeyError> {
        let mut out = Vec::new();
        let mut at = String::new();
        loop {
            let page = self.list(prefix, &at, 1024).await?;
            out.extend(page.names.into_iter().filter(|n| keep(n)));
            if page.next.is_empty() || page.next <= at {
                return Ok(out);
            }
            at = page.next;
        }
    }

    /// Asks the store whether it is healthy, and how long it took to answer.
    pub async fn status(&self) -> (Duration, Result<(), StoreError>) {
        let start = Instant::now();
        let r = self.observe(self.store().status().await);
        (start.elapsed(), r)
    }

    /// Number of cached keys.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Runs the cache expiry rules forever (spawn it as a task).
    pub async fn run_expiry(self: Arc<Self>, settings: CacheSettings) {
        let mut clock = ExpiryClock::new(settings, Instant::now());
        let probe_every = Duration::from_secs(10);
        let mut next_probe = Instant::now() + probe_every;
        let mut tick = tokio::time::interval(clock.resolution());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = Instant::now();
            if !settings.offline.is_zero() {
                if now >= next_probe {
                    next_probe = now + probe_every;
                    // Updates `unreachable`, like every store call.
                    let _ = self.status().await;
                }
                clock.set_online(!self.unreachable.load(Ordering::Relaxed), Instant::now());
            }
            match clock.tick(now) {
                Eviction::None => {}
                Eviction::Unused => self.cache.evict_unused(),
                Eviction::All => self.cache.clear(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_core::crypto::Algorithm;
    use memory::MemoryStore;

    #[tokio::test]
    async fn create_get_delete_round_trip() {
        let keys = Keys::new(Arc::new(MemoryStore::new()), None);
        let k = StoredKey::generate(Algorithm::Aes256, "me");
        let ct = k.key.encrypt(b"hi", b"").unwrap();
        keys.create("k", k).await.unwrap();
        assert_eq!(keys.create("k", StoredKey::generate(Algorithm::Aes256, "me")).await, Err(KeyError::Exists));
        let got = keys.get("k").await.unwrap();
        assert_eq!(&got.key.decrypt(&ct, b"").unwrap()[..], b"hi");
        keys.delete("k").await.unwrap();
        assert_eq!(keys.get("k").await.err(), Some(KeyError::NotFound));
        assert_eq!(keys.delete("k").await, Err(KeyError::NotFound));
    }

    #[tokio::test]
    async fn uncached_key_is_read_from_the_store() {
        let store = Arc::new(MemoryStore::new());
        let k = StoredKey::generate(Algorithm::ChaCha20, "me");
        store.create("k", &k.encode()).await.unwrap();
        let keys = Keys::new(store, None);
        assert_eq!(keys.get("k").await.unwrap().key.algorithm(), Algorithm::ChaCha20);
        assert_eq!(keys.cached(), 1);
    }
}
