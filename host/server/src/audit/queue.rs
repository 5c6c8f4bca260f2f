//! Each sink's pending events: one buffer per serving thread, holding the
//! facts of each line rather than its text, bounded in events and in bytes.

use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Notify;

use super::line::Answered;
use super::merge::write_lines;
use super::KEEP_BUFFER;
use crate::sharded::Sharded;

/// Events a sink may have pending from one serving thread before that
/// thread's new ones are dropped (a server has one serving thread per CPU):
/// several times what one thread answers while its sink's writer lingers
/// ([`LINGER`]), so that a sink call taking tens of milliseconds loses nothing.
///
/// [`LINGER`]: super::LINGER
pub const QUEUE_CAPACITY: usize = 8192;
/// Bytes of text (request paths, identities, IP addresses) a sink may have
/// pending from one serving thread before that thread's new events are
/// dropped (the path is a client's choice).
pub const QUEUE_BYTES: usize = 2 << 20;

/// One answered request waiting for its sink's writer: the facts of its
/// line, with its text fields kept in [`Pending::text`]. A quarter of the
/// line's size: the request path writes this, and the writer formats it
/// (measured: formatting on the request path cost the workers ~0.5 µs per
/// request, most of it in writing the line's bytes).
pub(super) struct Event {
    pub(super) answered: Instant,
    received: SystemTime,
    /// The response time in whole microseconds (all the line keeps).
    micros: u64,
    /// Where the event's text ends in [`Pending::text`]: its IP address,
    /// identity and path, back to back, end there.
    pub(super) end: u32,
    /// The lengths of its IP address and identity, if it has them.
    ip: Option<u32>,
    identity: Option<u32>,
    status: u16,
}

// One cache line per event on the platforms served (what the measurement
// above was taken with); a field added here should keep it so.
const _: () = assert!(std::mem::size_of::<Event>() <= 64);

/// What a sink has not been handed yet, from one serving thread.
#[derive(Default)]
pub(super) struct Pending {
    /// The events' text fields, back to back.
    text: String,
    /// The events, in the order their requests were answered.
    pub(super) events: Vec<Event>,
}

impl Pending {
    /// Records one event; `false` (and nothing recorded) if the buffer is
    /// full, in events or in bytes.
    pub(super) fn push(&mut self, request: &Answered<'_>) -> bool {
        if self.events.len() >= QUEUE_CAPACITY {
            return false;
        }
        let start = self.text.len();
        // Each length is at most `end`, checked to fit a u32 below.
        let mut field = |s: &str| {
            self.text.push_str(s);
            s.len() as u32
        };
        let ip = request.ip.map(&mut field);
        let identity = request.identity.map(&mut field);
        self.text.push_str(request.path);
        let end = match u32::try_from(self.text.len()) {
            Ok(end) if self.text.len() <= QUEUE_BYTES => end,
            _ => {
                self.text.truncate(start);
                return false;
            }
        };
        self.events.push(Event {
            answered: request.answered,
            received: request.received,
            micros: u64::try_from(request.duration.as_micros()).unwrap_or(u64::MAX),
            end,
            ip,
            identity,
            status: request.status,
        });
        true
    }

    /// The `i`th event's facts.
    pub(super) fn event(&self, i: usize) -> Answered<'_> {
        let e = &self.events[i];
        let mut at = if i == 0 { 0 } else { self.events[i - 1].end as usize };
        // The offsets are the ones `push` wrote, always on field boundaries;
        // `get` keeps this total regardless.
        let mut field = |len: u32| {
            let s = self.text.get(at..at + len as usize).unwrap_or_default();
            at += len as usize;
            s
        };
        let ip = e.ip.map(&mut field);
        let identity = e.identity.map(&mut field);
        Answered {
            received: e.received,
            ip,
            path: self.text.get(at..e.end as usize).unwrap_or_default(),
            identity,
            status: e.status,
            duration: Duration::from_micros(e.micros),
            answered: e.answered,
        }
    }

    pub(super) fn clear(&mut self) {
        self.text.clear();
        self.events.clear();
        if self.text.capacity() > KEEP_BUFFER {
            *self = Pending::default();
        }
    }
}

/// One sink's pending lines, shared by the request path and its writer task.
pub(super) struct SinkQueue {
    pub(super) name: String,
    /// One buffer per serving thread: requests on different cores never
    /// write the same memory (the copy into one shared buffer measured
    /// ~0.6–0.8 µs per request on two cores).
    pub(super) pending: Sharded<Mutex<Pending>>,
    /// Notified when a buffer goes from empty to not empty, and on close.
    pub(super) ready: Notify,
    /// Set once no one can add events any more: the writer then writes what
    /// is left and ends.
    pub(super) closed: AtomicBool,
}

fn lock(pending: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    // Nothing panics while holding the lock; if something did, the buffer is
    // still a valid list of whole lines.
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SinkQueue {
    pub(super) fn new(name: String) -> SinkQueue {
        SinkQueue { name, pending: Sharded::new(), ready: Notify::new(), closed: AtomicBool::new(false) }
    }

    /// Records one event in the calling thread's buffer; `false` (event
    /// dropped, buffer unchanged) if that buffer is full.
    pub(super) fn push(&self, request: &Answered<'_>) -> bool {
        let mut p = lock(self.pending.local());
        if !p.push(request) {
            return false;
        }
        let first = p.events.len() == 1;
        drop(p);
        if first {
            self.ready.notify_one();
        }
        true
    }

    /// Writes the lines of everything pending into `batch` (empty) in the
    /// order the requests were answered; returns how many events it took.
    /// Each thread's buffer is locked only to swap it with an empty one from
    /// `spares` (which gets the taken buffers back, emptied).
    pub(super) fn take(&self, batch: &mut String, spares: &mut Vec<Pending>) -> usize {
        let mut taken = Vec::new();
        for pending in self.pending.iter() {
            let mut p = lock(pending);
            if p.events.is_empty() {
                continue;
            }
            let mut empty = spares.pop().unwrap_or_default();
            std::mem::swap(&mut *p, &mut empty);
            taken.push(empty);
        }
        let count = taken.iter().map(|p| p.events.len()).sum();
        write_lines(batch, &taken);
        for mut p in taken {
            p.clear();
            spares.push(p);
        }
        count
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pending.iter().all(|p| lock(p).events.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::audit::test_support::{record, Stuck, ALONE};
    use crate::audit::AuditLog;
    use crate::metrics::Metrics;

    /// An event that would take a buffer past its byte bound is dropped
    /// whole: what is pending stays a list of whole events.
    #[tokio::test(flavor = "current_thread")]
    async fn a_full_buffer_drops_whole_events() {
        // Alone: formatting megabytes of lines in a debug build would hold
        // up the other tests' writers on two CPUs.
        let _alone = ALONE.write().await;
        let metrics = Arc::new(Metrics::new());
        let log = AuditLog::new(metrics.clone());
        log.set_sinks(vec![("stuck".into(), Arc::new(Stuck))]);
        let long = format!("/{}", "a".repeat(100_000));
        // The stuck writer takes at most one batch (at most a full buffer,
        // whenever its linger ends); the rest piles up here: three buffers'
        // worth of lines overflow whatever it took.
        let recorded = 3 * (QUEUE_BYTES / long.len() + 1);
        for _ in 0..recorded {
            record(&log, &long);
        }
        let sinks = log.sinks.load();
        let pending = lock(sinks[0].queue.pending.local());
        let kept = pending.events.len();
        assert!((15..=25).contains(&kept), "{kept} events of ~100 KB kept under a {QUEUE_BYTES}-byte bound");
        let dropped = metrics.audit_dropped.get();
        assert!(dropped > 0 && kept as u64 + dropped <= recorded as u64, "kept {kept}, dropped {dropped}");
        assert!(pending.text.len() <= QUEUE_BYTES);
        assert_eq!(pending.events.last().map(|e| e.end as usize), Some(pending.text.len()), "no partial event");
        for i in 0..kept {
            assert_eq!(pending.event(i).path, long);
        }
    }

    #[tokio::test]
    async fn a_queue_is_bounded_in_bytes_too() {
        let _shared = ALONE.read().await;
        let metrics = Arc::new(Metrics::new());
        let log = AuditLog::new(metrics.clone());
        log.set_sinks(vec![("stuck".into(), Arc::new(Stuck))]);
        let long = format!("/{}", "x".repeat(64 * 1024));
        for _ in 0..200 {
            record(&log, &long);
        }
        let held = 200 - metrics.audit_dropped.get() as usize;
        // One batch may have been taken by the (stuck) writer already.
        assert!(held <= 2 * QUEUE_BYTES / long.len() + 1, "{held} events of 64 KiB held");
    }
}
