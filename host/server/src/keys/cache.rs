//! The key cache, with KES's three expiry rules:
//!
//! - `any`: every key is evicted every `any`, used or not, so a key deleted
//!   behind the server's back (by another server sharing the store) is noticed;
//! - `unused`: a key not used for `unused` is evicted (checked every `unused/2`);
//! - `offline`: while the keystore is unreachable, nothing is evicted for up to
//!   `offline`, so cached keys keep serving through an outage.
//!
//! Lookups take a read lock and flip an atomic "used" flag: the hot path never
//! writes shared state unless the flag was clear.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::config::CacheSettings;
use keyward_core::crypto::StoredKey;

#[derive(Debug)]
struct Entry {
    key: Arc<StoredKey>,
    used: AtomicBool,
}

/// Decoded keys by name.
#[derive(Debug, Default)]
pub struct Cache {
    entries: RwLock<HashMap<String, Entry>>,
}

impl Cache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Returns the cached key and marks it used.
    pub fn get(&self, name: &str) -> Option<Arc<StoredKey>> {
        let map = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let entry = map.get(name)?;
        if !entry.used.load(Ordering::Relaxed) {
            entry.used.store(true, Ordering::Relaxed);
        }
        Some(entry.key.clone())
    }

    pub fn insert(&self, name: &str, key: Arc<StoredKey>) {
        let mut map = self.entries.write().unwrap_or_else(|e| e.into_inner());
        map.insert(name.to_string(), Entry { key, used: AtomicBool::new(true) });
    }

    pub fn remove(&self, name: &str) {
        let mut map = self.entries.write().unwrap_or_else(|e| e.into_inner());
        map.remove(name);
    }

    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Evicts everything (the `any` rule).
    pub fn clear(&self) {
        let mut map = self.entries.write().unwrap_or_else(|e| e.into_inner());
        map.clear();
    }

    /// Evicts keys not used since the last call and clears the flags of the
    /// rest (the `unused` rule).
    pub fn evict_unused(&self) {
        let mut map = self.entries.write().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, e| e.used.swap(false, Ordering::Relaxed));
    }
}

/// Decides, tick by tick, which expiry rule fires. Kept free of clocks and
/// tasks so it can be tested exactly.
#[derive(Debug)]
pub struct ExpiryClock {
    settings: CacheSettings,
    next_any: Option<Instant>,
    next_unused: Option<Instant>,
    offline_since: Option<Instant>,
}

/// What the cache should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eviction {
    None,
    Unused,
    All,
}

impl ExpiryClock {
    /// Deadlines use `checked_add`: the durations come from the config, and
    /// one too large for the clock (`any = "300000000000y"`) must mean
    /// "never", not a panic in `Instant + Duration`.
    pub fn new(settings: CacheSettings, now: Instant) -> Self {
        let at = |d: Duration| if d.is_zero() { None } else { now.checked_add(d) };
        ExpiryClock { settings, next_any: at(settings.any), next_unused: at(settings.unused / 2), offline_since: None }
    }

    /// How often the caller should call [`ExpiryClock::tick`].
    pub fn resolution(&self) -> Duration {
        let mut r = Duration::from_secs(1);
        for d in [self.settings.any, self.settings.unused / 2] {
            if !d.is_zero() && d < r {
                r = d;
            }
        }
        r.max(Duration::from_millis(10))
    }

    /// Records whether the keystore answered its last probe.
    pub fn set_online(&mut self, online: bool, now: Instant) {
        if online {
            self.offline_since = None;
        } else if self.offline_since.is_none() {
            self.offline_since = Some(now);
        }
    }

    /// Whether the `offline` rule currently protects cached keys.
    fn protected(&self, now: Instant) -> bool {
        match self.offline_since {
            Some(since) if !self.settings.offline.is_zero() => now.duration_since(since) < self.settings.offline,
            _ => false,
        }
    }

    /// Advances the clock to `now` and says what to evict.
    pub fn tick(&mut self, now: Instant) -> Eviction {
        let mut action = Eviction::None;
        if let Some(at) = self.next_unused {
            if now >= at {
                self.next_unused = now.checked_add(self.settings.unused / 2);
                action = Eviction::Unused;
            }
        }
        if let Some(at) = self.next_any {
            if now >= at {
                self.next_any = now.checked_add(self.settings.any);
                action = Eviction::All;
            }
        }
        if self.protected(now) {
            Eviction::None
        } else {
            action
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_core::crypto::{Algorithm, StoredKey};

    fn key() -> Arc<StoredKey> {
        Arc::new(StoredKey::generate(Algorithm::Aes256, ""))
    }

    fn settings(any: u64, unused: u64, offline: u64) -> CacheSettings {
        CacheSettings {
            any: Duration::from_secs(any),
            unused: Duration::from_secs(unused),
            offline: Duration::from_secs(offline),
        }
    }

    #[test]
    fn unused_keys_are_evicted_and_used_ones_kept() {
        let c = Cache::new();
        c.insert("a", key());
        c.insert("b", key());
        c.evict_unused(); // both were just inserted (used): flags cleared
        assert_eq!(c.len(), 2);
        assert!(c.get("a").is_some());
        c.evict_unused();
        assert!(c.get("a").is_some());
        assert!(c.get("b").is_none());
    }

    #[test]
    fn clock_fires_any_and_unused_on_schedule() {
        let t0 = Instant::now();
        let mut clock = ExpiryClock::new(settings(300, 20, 0), t0);
        assert_eq!(clock.tick(t0 + Duration::from_secs(9)), Eviction::None);
        assert_eq!(clock.tick(t0 + Duration::from_secs(10)), Eviction::Unused);
        assert_eq!(clock.tick(t0 + Duration::from_secs(15)), Eviction::None);
        assert_eq!(clock.tick(t0 + Duration::from_secs(300)), Eviction::All);
    }

    #[test]
    fn offline_protects_for_its_duration_only() {
        let t0 = Instant::now();
        let mut clock = ExpiryClock::new(settings(10, 0, 60), t0);
        clock.set_online(false, t0);
        assert_eq!(clock.tick(t0 + Duration::from_secs(10)), Eviction::None);
        assert_eq!(clock.tick(t0 + Duration::from_secs(50)), Eviction::None);
        // The outage outlasted `offline`: eviction resumes.
        assert_eq!(clock.tick(t0 + Duration::from_secs(61)), Eviction::All);
        clock.set_online(true, t0 + Duration::from_secs(62));
        assert_eq!(clock.tick(t0 + Duration::from_secs(71)), Eviction::All);
    }

    #[test]
    fn zero_durations_disable_rules() {
        let t0 = Instant::now();
        let mut clock = ExpiryClock::new(settings(0, 0, 0), t0);
        assert_eq!(clock.tick(t0 + Duration::from_secs(100_000)), Eviction::None);
    }

    /// A duration the clock cannot add (accepted by the config parser) means
    /// "never"; a merely huge one works; neither panics.
    #[test]
    fn durations_beyond_the_clock_never_fire_and_never_panic() {
        let t0 = Instant::now();
        let huge = crate::config::parse_duration("cache.expiry.any", "300000000000y").unwrap();
        let mut clock = ExpiryClock::new(CacheSettings { any: huge, unused: Duration::MAX, offline: huge }, t0);
        clock.set_online(false, t0);
        assert_eq!(clock.tick(t0 + Duration::from_secs(100_000)), Eviction::None);
        let mut clock = ExpiryClock::new(settings(u64::MAX / 4, 20, 0), t0);
        assert_eq!(clock.tick(t0 + Duration::from_secs(10)), Eviction::Unused);
        assert_eq!(clock.tick(t0 + Duration::from_secs(100_000)), Eviction::Unused);
    }
}
