//! Each sink's writer: a thread of its own that lingers so a burst becomes
//! one batch, formats what is pending and hands it to the sink.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::queue::SinkQueue;
use super::KEEP_BUFFER;
use crate::metrics::Metrics;
use keyward_core::audit_sink::{AuditBatch, AuditSink};

/// How long a sink's writer gathers events after the first one of a batch
/// arrives. A sink call (a plugin call, a file append, an HTTP POST) costs
/// far more than one event — for the `audit-file` plugin ~0.15 ms of fixed
/// cost per batch, measured: a pool lease, the call, the WASI open and the
/// write's hand-off to the blocking pool — so under load one call per
/// linger rather than one per request keeps audit cheap (the same trade as a
/// Kafka producer's `linger.ms`). 20 ms rather than 5 cut the writer's CPU
/// per event by a third to a half in every paired round; an event at rest
/// reaches its sink at most this late.
pub const LINGER: Duration = Duration::from_millis(20);
/// How long shutdown waits for the sinks to write what is still pending.
pub const FLUSH_GRACE: Duration = Duration::from_secs(2);

/// Resolves once a sink's writer has ended (its thread finished or died).
pub(super) type Writer = tokio::sync::oneshot::Receiver<()>;

/// Starts a sink's writer on a thread of its own (`keyward-audit`, with a
/// runtime of its own whose blocking pool is `keyward-aud-io`): a sink call
/// may block its thread (a WebAssembly sink's file I/O runs on the calling
/// thread, and a disk or journal stall can take milliseconds or more), which
/// on a request worker would hold up every request queued behind it, and on
/// a thread shared by the sinks would hold up the others. Without a thread
/// (one could not be started), the writer runs on the caller's runtime.
pub(super) fn spawn_writer(writer: impl Future<Output = ()> + Send + 'static) -> Writer {
    let (done, ended) = tokio::sync::oneshot::channel();
    let run = async move {
        writer.await;
        let _ = done.send(());
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().thread_name("keyward-aud-io").build()
    else {
        tokio::spawn(run);
        return ended;
    };
    // Shared with the thread so the writer can still run here if the
    // thread cannot be started (`spawn` drops what it was given).
    let slot = Arc::new(Mutex::new(Some(run)));
    let theirs = slot.clone();
    let started = std::thread::Builder::new().name("keyward-audit".into()).spawn(move || {
        if let Some(run) = theirs.lock().unwrap_or_else(PoisonError::into_inner).take() {
            runtime.block_on(run);
        }
    });
    if started.is_err() {
        if let Some(run) = slot.lock().unwrap_or_else(PoisonError::into_inner).take() {
            tokio::spawn(run);
        }
    }
    ended
}

/// Done when every writer of a replaced sink set has ended.
pub(super) type Replaced = futures_util::future::Shared<futures_util::future::BoxFuture<'static, ()>>;

/// Feeds one sink: waits for an event, lingers for [`LINGER`] so that a burst
/// becomes one batch, and writes everything pending. Ends once the queue is
/// closed and empty. Writes nothing until `replaced` (the writers of the
/// sink set this one replaced) is done, or [`FLUSH_GRACE`] has passed.
pub(super) async fn drain(queue: Arc<SinkQueue>, sink: Arc<dyn AuditSink>, metrics: Arc<Metrics>, replaced: Replaced) {
    if tokio::time::timeout(FLUSH_GRACE, replaced).await.is_err() {
        tracing::warn!(sink = %queue.name, "the replaced audit sinks are still writing after {FLUSH_GRACE:?}; starting anyway");
    }
    let (mut batch, mut spares) = (String::new(), Vec::new());
    loop {
        queue.ready.notified().await;
        if !queue.closed.load(Ordering::Acquire) {
            // Sleeping rather than waiting on the queue: requests do not wake
            // this task for each event while it lingers.
            tokio::time::sleep(LINGER).await;
        }
        let count = queue.take(&mut batch, &mut spares);
        if count > 0 {
            if let Err(e) = sink.write(AuditBatch::counted(batch.as_bytes(), count)).await {
                metrics.audit_dropped.inc_by(count as u64);
                tracing::warn!(sink = %queue.name, error = %e, events = count, "audit sink failed; events dropped");
            }
        }
        batch.clear();
        if batch.capacity() > KEEP_BUFFER {
            batch = String::new();
        }
        if queue.closed.load(Ordering::Acquire) && queue.is_empty() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use async_trait::async_trait;
    use keyward_core::keystore::StoreError;

    use super::*;
    use crate::audit::test_support::{record, Blocking, Collect, ALONE};
    use crate::audit::AuditLog;

    /// The test runtime has one thread, as a request worker is one thread:
    /// a sink's write must not run on it.
    #[tokio::test(flavor = "current_thread")]
    async fn a_sink_that_blocks_its_thread_does_not_hold_up_requests() {
        let _alone = ALONE.write().await;
        let log = AuditLog::new(Arc::new(Metrics::new()));
        log.set_sinks(vec![("blocking".into(), Arc::new(Blocking))]);
        record(&log, "/first");
        let mut slowest = Duration::ZERO;
        for _ in 0..40 {
            let t = std::time::Instant::now();
            tokio::time::sleep(Duration::from_millis(10)).await;
            slowest = slowest.max(t.elapsed());
        }
        assert!(slowest < Duration::from_millis(200), "this thread was held for {slowest:?}");
        log.flush_and_close().await;
    }

    /// A sink stalled in a blocking write does not hold up another sink's
    /// batches: each writer has a thread of its own.
    #[tokio::test]
    async fn a_sink_that_blocks_its_thread_does_not_hold_up_the_others() {
        let _shared = ALONE.read().await;
        let log = AuditLog::new(Arc::new(Metrics::new()));
        let collect = Arc::new(Collect::default());
        log.set_sinks(vec![("blocking".into(), Arc::new(Blocking)), ("c".into(), collect.clone())]);
        let arrived = |n| {
            let collect = collect.clone();
            async move {
                let t = Instant::now();
                while collect.paths().len() < n {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                t.elapsed()
            }
        };
        record(&log, "/first");
        arrived(1).await;
        // The blocking sink is now in its 300 ms write of the first batch.
        tokio::time::sleep(Duration::from_millis(30)).await;
        record(&log, "/second");
        let waited = arrived(2).await;
        assert!(waited < Duration::from_millis(200), "the second batch waited {waited:?} for the other sink");
        log.flush_and_close().await;
    }

    /// Records when each of its writes began and ended; each takes `hold`.
    struct Timed {
        hold: Duration,
        spans: Mutex<Vec<(Instant, Instant)>>,
    }

    #[async_trait]
    impl AuditSink for Timed {
        async fn write(&self, _: AuditBatch<'_>) -> Result<(), StoreError> {
            let start = Instant::now();
            tokio::time::sleep(self.hold).await;
            self.spans.lock().unwrap().push((start, Instant::now()));
            Ok(())
        }
    }

    /// After a reload, the new sinks write only once the replaced ones have
    /// written everything (a file written by both gets whole batches, in
    /// order), even when the old sink is slow.
    #[tokio::test]
    async fn a_new_sink_set_writes_after_the_replaced_one() {
        let _shared = ALONE.read().await;
        let log = AuditLog::new(Arc::new(Metrics::new()));
        let timed = |hold| Arc::new(Timed { hold, spans: Mutex::new(Vec::new()) });
        let (old, new) = (timed(Duration::from_millis(300)), timed(Duration::ZERO));
        log.set_sinks(vec![("old".into(), old.clone())]);
        record(&log, "/before");
        log.set_sinks(vec![("new".into(), new.clone())]);
        record(&log, "/after");
        log.flush_and_close().await;
        let (old, new) = (old.spans.lock().unwrap().clone(), new.spans.lock().unwrap().clone());
        assert_eq!((old.len(), new.len()), (1, 1), "one batch each");
        assert!(new[0].0 >= old[0].1, "the new sink wrote while the replaced one was still writing");
    }

    #[tokio::test]
    async fn a_burst_becomes_one_batch() {
        let _shared = ALONE.read().await;
        let log = AuditLog::new(Arc::new(Metrics::new()));
        let collect = Arc::new(Collect::default());
        log.set_sinks(vec![("b".into(), collect.clone())]);
        for i in 0..50 {
            record(&log, &format!("/{i}"));
            // Each event is seen by the writer on its own, as with requests
            // arriving one by one.
            tokio::task::yield_now().await;
        }
        log.flush_and_close().await;
        let batches: Vec<usize> = collect.0.lock().unwrap().iter().map(Vec::len).collect();
        assert_eq!(batches.iter().sum::<usize>(), 50);
        assert!(batches.len() <= 2, "one call per burst, not per event: {batches:?}");
    }
}
