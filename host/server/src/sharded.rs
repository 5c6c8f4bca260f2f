//! [`Sharded`]: one value per serving thread, for state every request writes.
//!
//! A value that both cores write on every request moves its cache line from
//! one core to the other each time: on the hot path that costs more than the
//! work it guards (measured: copying an audit line into one shared buffer
//! cost ~0.6–0.8 µs per request on two cores). Each thread instead
//! writes the shard it was given on first use; readers (a metrics scrape, an
//! audit writer) visit every shard, which is rare by comparison.

use std::sync::atomic::{AtomicUsize, Ordering};

/// More shards than threads that serve requests on usual machines; threads
/// beyond that share shards, which only costs contention again.
pub const SHARDS: usize = 32;

/// One shard, alone on its cache lines (128 bytes: the adjacent-line
/// prefetcher pairs lines).
#[repr(align(128))]
#[derive(Default)]
struct Padded<T>(T);

thread_local! {
    /// This thread's shard, assigned round-robin on first use.
    static INDEX: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS
    };
}

/// [`SHARDS`] values of `T`; each thread uses its own.
pub struct Sharded<T> {
    shards: Box<[Padded<T>]>,
}

impl<T: Default> Sharded<T> {
    pub fn new() -> Sharded<T> {
        Sharded { shards: (0..SHARDS).map(|_| Padded::default()).collect() }
    }
}

impl<T: Default> Default for Sharded<T> {
    fn default() -> Self {
        Sharded::new()
    }
}

impl<T> Sharded<T> {
    /// The calling thread's shard.
    pub fn local(&self) -> &T {
        // During thread teardown the thread-local may be gone: any shard
        // is correct, only slower.
        let i = INDEX.try_with(|i| *i).unwrap_or(0);
        &self.shards[i % self.shards.len()].0
    }

    /// Every shard, for whoever sums or drains them.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.shards.iter().map(|p| &p.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_keeps_its_shard_and_every_write_is_seen() {
        let sharded: Sharded<AtomicUsize> = Sharded::new();
        let here = sharded.local() as *const AtomicUsize;
        assert_eq!(here, sharded.local() as *const AtomicUsize, "same thread, same shard");
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| sharded.local().fetch_add(1, Ordering::Relaxed));
            }
        });
        assert_eq!(sharded.iter().map(|a| a.load(Ordering::Relaxed)).sum::<usize>(), 8);
        assert_eq!(sharded.iter().count(), SHARDS);
        assert_eq!(std::mem::align_of::<Padded<u8>>(), 128);
    }
}
