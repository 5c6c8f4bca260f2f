//! [`AuditLog`]: each answered request recorded for every sink and every
//! follower of `/v1/log/audit`, and the set of sinks replaced on reload.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use futures_util::FutureExt;

use super::follow::{Follower, Followers};
use super::line::{push_line, Answered};
use super::queue::SinkQueue;
use super::writer::{drain, spawn_writer, Writer, FLUSH_GRACE};
use super::KEEP_BUFFER;
use crate::metrics::Metrics;
use keyward_core::audit_sink::AuditSink;

thread_local! {
    /// Where the request path writes the audit line for followers: reused,
    /// so that following costs one allocation per event (the shared line).
    static SCRATCH: RefCell<String> = const { RefCell::new(String::new()) };
}

/// A sink in the current set. Dropped when the set is replaced and no
/// request is still recording into it: only then is its queue closed, so no
/// event recorded into it is ever left behind.
pub(super) struct SinkHandle {
    pub(super) queue: Arc<SinkQueue>,
    /// Taken by whoever waits for the writer to end: the next sink set or
    /// [`AuditLog::flush_and_close`].
    writer: Mutex<Option<Writer>>,
}

impl SinkHandle {
    /// The writer's handle, for whoever waits for it to end (only one can).
    fn take_writer(&self) -> Option<Writer> {
        self.writer.lock().ok().and_then(|mut w| w.take())
    }
}

impl Drop for SinkHandle {
    fn drop(&mut self) {
        self.queue.closed.store(true, Ordering::Release);
        self.queue.ready.notify_one();
    }
}

/// Fans audit events out to sinks and followers.
pub struct AuditLog {
    pub(super) sinks: ArcSwap<Vec<SinkHandle>>,
    /// Whether `sinks` is not empty: what [`AuditLog::wanted`] reads on every
    /// request, one plain load instead of an `ArcSwap` load (which takes
    /// and gives back a slot of the thread's debt list).
    has_sinks: AtomicBool,
    followers: Followers,
    metrics: Arc<Metrics>,
}

impl AuditLog {
    pub fn new(metrics: Arc<Metrics>) -> AuditLog {
        AuditLog {
            sinks: ArcSwap::from_pointee(Vec::new()),
            has_sinks: AtomicBool::new(false),
            followers: Followers::new(),
            metrics,
        }
    }

    /// Replaces the set of sinks (start-up and SIGHUP). Events already
    /// recorded for the old sinks are still delivered to them. Not called
    /// concurrently with itself or [`AuditLog::flush_and_close`] (the
    /// server's one loop does all three), which keeps `has_sinks` in step.
    ///
    /// The new sinks' writers start writing once the replaced ones have
    /// finished (or after [`FLUSH_GRACE`]): a file gets the old set's last
    /// lines before the new set's first, and two sinks writing the same file
    /// across a reload never write at the same time.
    pub fn set_sinks(&self, sinks: Vec<(String, Arc<dyn AuditSink>)>) {
        let replaced: Vec<_> = self.sinks.load().iter().filter_map(SinkHandle::take_writer).collect();
        let replaced = futures_util::future::join_all(replaced).map(drop).boxed().shared();
        let handles = sinks
            .into_iter()
            .map(|(name, sink)| {
                let queue = Arc::new(SinkQueue::new(name));
                let writer = spawn_writer(drain(queue.clone(), sink, self.metrics.clone(), replaced.clone()));
                SinkHandle { queue, writer: Mutex::new(Some(writer)) }
            })
            .collect::<Vec<_>>();
        let any = !handles.is_empty();
        self.sinks.store(Arc::new(handles));
        self.has_sinks.store(any, Ordering::Release);
    }

    /// Stops taking events and waits (at most [`FLUSH_GRACE`]) until every
    /// sink has written what was pending: the last requests before a shutdown
    /// are audited too.
    pub async fn flush_and_close(&self) {
        self.has_sinks.store(false, Ordering::Release);
        let handles = self.sinks.swap(Arc::new(Vec::new()));
        let writers: Vec<_> = handles.iter().filter_map(SinkHandle::take_writer).collect();
        // Dropping the set closes the queues; a `record` running right now
        // holds its own reference and closes them when it is done, so the
        // writers still end after the last event either way.
        drop(handles);
        if tokio::time::timeout(FLUSH_GRACE, futures_util::future::join_all(writers)).await.is_err() {
            tracing::warn!("audit sinks did not finish writing within {FLUSH_GRACE:?}; pending events may be lost");
        }
    }

    /// Whether anyone would see an event: lets the request path skip building one.
    pub fn wanted(&self) -> bool {
        self.has_sinks.load(Ordering::Acquire) || self.followers.any()
    }

    /// Records one request for every sink and follower; never waits.
    pub fn record(&self, request: &Answered<'_>) {
        self.metrics.log_audit_events.inc();
        for sink in self.sinks.load().iter() {
            if !sink.queue.push(request) {
                self.metrics.audit_dropped.inc();
            }
        }
        self.followers.send_with(|| {
            SCRATCH.with_borrow_mut(|line| {
                line.clear();
                push_line(line, request);
                let shared = Arc::from(line.as_str());
                if line.capacity() > KEEP_BUFFER {
                    *line = String::new();
                }
                shared
            })
        });
    }

    /// A stream of audit lines for `/v1/log/audit`.
    pub fn follow(&self) -> Follower {
        self.followers.follow()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::audit::test_support::{record, Collect, Stuck, ALONE};
    use crate::audit::QUEUE_CAPACITY;

    #[tokio::test]
    async fn every_event_reaches_a_sink_and_a_stuck_sink_drops_without_blocking() {
        let _shared = ALONE.read().await;
        let metrics = Arc::new(Metrics::new());
        let log = AuditLog::new(metrics.clone());
        let collect = Arc::new(Collect::default());
        log.set_sinks(vec![("c".into(), collect.clone()), ("stuck".into(), Arc::new(Stuck))]);
        let n: usize = 20_000;
        for i in 0..n {
            record(&log, &format!("/{i}"));
            // Paced at up to ~100k events/s, beyond what HTTPS requests
            // produce, and never more than half a queue ahead of the sink
            // that keeps up: a writer starved for a while (a debug build
            // sharing two CPUs with other tests) delays it, loses nothing.
            if i % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
                while i.saturating_sub(collect.count()) > QUEUE_CAPACITY / 2 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        for _ in 0..200 {
            if collect.paths().len() == n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let expected: Vec<String> = (0..n).map(|i| format!("/{i}")).collect();
        assert_eq!(collect.paths(), expected, "every event, in order");
        // The stuck sink holds its first batch and a full queue; the rest of
        // its events are dropped and counted.
        let dropped = metrics.audit_dropped.get() as usize;
        assert!(dropped > 0 && dropped <= n - QUEUE_CAPACITY, "dropped {dropped}");
    }

    #[tokio::test]
    async fn shutdown_writes_what_is_still_pending() {
        let _shared = ALONE.read().await;
        let log = AuditLog::new(Arc::new(Metrics::new()));
        let collect = Arc::new(Collect::default());
        assert!(!log.wanted(), "no sink, no follower");
        log.set_sinks(vec![("c".into(), collect.clone())]);
        assert!(log.wanted());
        for i in 0..100 {
            record(&log, &format!("/{i}"));
        }
        // Nothing written yet: the writer is still lingering.
        log.flush_and_close().await;
        assert_eq!(collect.paths().len(), 100);
        assert!(!log.wanted(), "a closed log takes no more events");
    }

    #[tokio::test]
    async fn replaced_sinks_still_get_what_was_recorded_for_them() {
        let _shared = ALONE.read().await;
        let log = AuditLog::new(Arc::new(Metrics::new()));
        let (old, new) = (Arc::new(Collect::default()), Arc::new(Collect::default()));
        log.set_sinks(vec![("old".into(), old.clone())]);
        record(&log, "/before");
        log.set_sinks(vec![("new".into(), new.clone())]);
        record(&log, "/after");
        // Shutdown waits for the replaced writers too: the new ones wait for them.
        log.flush_and_close().await;
        assert_eq!((old.paths(), new.paths()), (vec!["/before".to_string()], vec!["/after".to_string()]));
    }
}
