//! Audit and error logs.
//!
//! Every request produces one [`AuditEvent`]. It goes, off the request path, to
//! each configured sink through its own bounded queue (a full queue drops the
//! event and counts it: a slow sink never slows a response), and to any client
//! following `/v1/log/audit`. Error messages go to the tracing log and to
//! clients following `/v1/log/error`.

pub mod sink;
pub mod stdout;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{broadcast, mpsc};

use crate::metrics::Metrics;
use sink::{AuditEvent, AuditSink};

/// Events a sink may have queued before new ones are dropped.
pub const QUEUE_CAPACITY: usize = 8192;
/// Largest batch handed to a sink in one call.
pub const MAX_BATCH: usize = 512;
/// How long a sink's queue gathers events after the first one of a batch
/// arrives. A sink call (a plugin call, a file append, an HTTP POST) costs
/// far more than one event, so under load one call per few milliseconds
/// rather than one per request keeps audit nearly free (the same trade as a
/// Kafka producer's `linger.ms`); at rest an event waits at most this long.
pub const LINGER: Duration = Duration::from_millis(5);
/// How long shutdown waits for the sinks to write what is still queued.
pub const FLUSH_GRACE: Duration = Duration::from_secs(2);

/// Builds the KES-shaped audit event for one request.
///
/// This runs on the request path for every request while anyone listens, so
/// the line is written straight into one buffer rather than through serde
/// (same bytes; the unit tests compare both).
pub fn event(
    received: time::OffsetDateTime,
    ip: Option<Arc<str>>,
    path: String,
    identity: Option<Arc<str>>,
    status: u16,
    duration: Duration,
) -> AuditEvent {
    let time = crate::api::rfc3339(received);
    let duration_us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
    let mut json = String::with_capacity(128 + path.len() + identity.as_ref().map_or(0, |i| i.len()));
    json.push_str(r#"{"time":""#);
    json.push_str(&time);
    json.push_str(r#"","request":{"#);
    if let Some(ip) = &ip {
        json.push_str(r#""ip":"#);
        push_json_string(&mut json, ip);
        json.push(',');
    }
    json.push_str(r#""path":"#);
    push_json_string(&mut json, &path);
    if let Some(identity) = &identity {
        json.push_str(r#","identity":"#);
        push_json_string(&mut json, identity);
    }
    // The response time is nanoseconds truncated to microseconds: every Go
    // client decodes it as a `time.Duration` (the newest KES server's
    // milliseconds are a bug).
    json.push_str(r#"},"response":{"code":"#);
    json.push_str(itoa::Buffer::new().format(status));
    json.push_str(r#","time":"#);
    json.push_str(itoa::Buffer::new().format(duration_us.saturating_mul(1000)));
    json.push_str("}}");
    AuditEvent { time, ip, path, identity, status, duration_us, json }
}

/// Appends `s` as a JSON string literal, escaped exactly as serde_json does.
fn push_json_string(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        // Rare (a path with quotes or control characters): let serde escape it.
        out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\"")));
    }
}

/// A named sink with its queue and the task writing to it.
struct SinkQueue {
    tx: mpsc::Sender<AuditEvent>,
    /// Taken by [`AuditLog::flush_and_close`], which awaits it.
    writer: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Fans audit events out to sinks and followers.
pub struct AuditLog {
    sinks: ArcSwap<Vec<SinkQueue>>,
    followers: broadcast::Sender<Arc<str>>,
    metrics: Arc<Metrics>,
}

impl AuditLog {
    pub fn new(metrics: Arc<Metrics>) -> AuditLog {
        let (followers, _) = broadcast::channel(1024);
        AuditLog { sinks: ArcSwap::from_pointee(Vec::new()), followers, metrics }
    }

    /// Replaces the set of sinks (start-up and SIGHUP). Events already queued
    /// for the old sinks are still delivered to them.
    pub fn set_sinks(&self, sinks: Vec<(String, Arc<dyn AuditSink>)>) {
        let queues = sinks
            .into_iter()
            .map(|(name, sink)| {
                let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
                let writer = tokio::spawn(drain(name, sink, rx, self.metrics.clone()));
                SinkQueue { tx, writer: std::sync::Mutex::new(Some(writer)) }
            })
            .collect();
        self.sinks.store(Arc::new(queues));
    }

    /// Stops taking events and waits (at most [`FLUSH_GRACE`]) until every
    /// sink has written what was queued: the last requests before a shutdown
    /// are audited too.
    pub async fn flush_and_close(&self) {
        let queues = self.sinks.swap(Arc::new(Vec::new()));
        let writers: Vec<_> = queues.iter().filter_map(|q| q.writer.lock().ok().and_then(|mut w| w.take())).collect();
        // Dropping the list closes the queues; a `record` running right now
        // holds its own reference and closes them when it is done, so the
        // writers still end after the last event either way.
        drop(queues);
        if tokio::time::timeout(FLUSH_GRACE, futures_util::future::join_all(writers)).await.is_err() {
            tracing::warn!("audit sinks did not finish writing within {FLUSH_GRACE:?}; queued events may be lost");
        }
    }

    /// Whether anyone would see an event: lets the request path skip building one.
    pub fn wanted(&self) -> bool {
        !self.sinks.load().is_empty() || self.followers.receiver_count() > 0
    }

    /// Queues an event for every sink and follower; never waits.
    pub fn record(&self, event: AuditEvent) {
        self.metrics.log_audit_events.inc();
        if self.followers.receiver_count() > 0 {
            let _ = self.followers.send(Arc::from(event.json.as_str()));
        }
        let sinks = self.sinks.load();
        let Some((last, rest)) = sinks.split_last() else {
            return;
        };
        for s in rest {
            if s.tx.try_send(event.clone()).is_err() {
                self.metrics.audit_dropped.inc();
            }
        }
        if last.tx.try_send(event).is_err() {
            self.metrics.audit_dropped.inc();
        }
    }

    /// A stream of audit lines for `/v1/log/audit`.
    pub fn follow(&self) -> broadcast::Receiver<Arc<str>> {
        self.followers.subscribe()
    }
}

/// Feeds one sink: waits for an event, lingers for [`LINGER`] so that a burst
/// becomes one batch (up to [`MAX_BATCH`]), and writes the batch. Ends when
/// every sender is gone and the queue is empty.
async fn drain(name: String, sink: Arc<dyn AuditSink>, mut rx: mpsc::Receiver<AuditEvent>, metrics: Arc<Metrics>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if batch.len() < MAX_BATCH && !rx.is_closed() {
            // Sleeping rather than waiting on the queue: senders do not wake
            // this task for each event while it lingers.
            tokio::time::sleep(LINGER).await;
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(event) => batch.push(event),
                    Err(_) => break,
                }
            }
        }
        if let Err(e) = sink.write(&batch).await {
            metrics.audit_dropped.inc_by(batch.len() as u64);
            tracing::warn!(sink = %name, error = %e, events = batch.len(), "audit sink failed; events dropped");
        }
        batch.clear();
    }
}

/// The error log: tracing output plus followers of `/v1/log/error`.
pub struct ErrorLog {
    followers: broadcast::Sender<Arc<str>>,
    metrics: Arc<Metrics>,
}

impl ErrorLog {
    pub fn new(metrics: Arc<Metrics>) -> ErrorLog {
        let (followers, _) = broadcast::channel(1024);
        ErrorLog { followers, metrics }
    }

    /// Records a server-side failure. The message must never contain secrets.
    pub fn error(&self, message: &str) {
        self.metrics.log_error_events.inc();
        tracing::error!("{message}");
        if self.followers.receiver_count() > 0 {
            let line = serde_json::json!({ "message": message }).to_string();
            let _ = self.followers.send(Arc::from(line));
        }
    }

    /// A stream of error lines for `/v1/log/error`.
    pub fn follow(&self) -> broadcast::Receiver<Arc<str>> {
        self.followers.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::store::StoreError;
    use async_trait::async_trait;
    use std::sync::Mutex;

    fn at(unix_nanos: i128) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp_nanos(unix_nanos).unwrap()
    }

    #[test]
    fn event_json_has_the_kes_shape() {
        let e = event(
            at(1_704_067_200_000_000_000),
            Some("127.0.0.1".into()),
            "/v1/key/create/k".into(),
            Some("ab".into()),
            200,
            Duration::from_millis(3),
        );
        assert_eq!(
            e.json,
            r#"{"time":"2024-01-01T00:00:00Z","request":{"ip":"127.0.0.1","path":"/v1/key/create/k","identity":"ab"},"response":{"code":200,"time":3000000}}"#
        );
        assert_eq!((e.time.as_str(), e.status, e.duration_us), ("2024-01-01T00:00:00Z", 200, 3000));
    }

    /// The hand-written line is byte for byte what serde writes for the same
    /// facts, for the paths and identities a client can send.
    #[test]
    fn event_json_matches_serde() {
        #[derive(serde::Serialize)]
        struct Line<'a> {
            time: &'a str,
            request: Request<'a>,
            response: Response,
        }
        #[derive(serde::Serialize)]
        struct Response {
            code: u16,
            time: u64,
        }
        #[derive(serde::Serialize)]
        struct Request<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            ip: Option<&'a str>,
            path: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            identity: Option<&'a str>,
        }
        let paths = ["/v1/key/encrypt/k", "/a\"b", "/ctl\u{1}\u{1f}\n\t", "/ünïcödé/日本", "/\u{7f}", ""];
        for (i, path) in paths.into_iter().enumerate() {
            for (ip, identity) in [(None, None), (Some("::1"), Some("x\"y")), (Some("10.0.0.1"), None)] {
                let micros = [0u64, 1, 999_999, 12_345_678_901][i % 4];
                let e = event(
                    at(1_700_000_000_123_456_789),
                    ip.map(Arc::from),
                    path.to_string(),
                    identity.map(Arc::from),
                    404,
                    Duration::from_micros(micros),
                );
                let expected = serde_json::to_string(&Line {
                    time: "2023-11-14T22:13:20.123456789Z",
                    request: Request { ip, path, identity },
                    response: Response { code: 404, time: micros * 1000 },
                })
                .unwrap();
                assert_eq!(e.json, expected);
            }
        }
    }

    struct Collect(Mutex<Vec<String>>);

    #[async_trait]
    impl AuditSink for Collect {
        async fn write(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
            self.0.lock().unwrap().extend(events.iter().map(|e| e.path.clone()));
            Ok(())
        }
    }

    struct Stuck;

    #[async_trait]
    impl AuditSink for Stuck {
        async fn write(&self, _: &[AuditEvent]) -> Result<(), StoreError> {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn every_event_reaches_a_sink_and_a_stuck_sink_drops_without_blocking() {
        let metrics = Arc::new(Metrics::new());
        let log = AuditLog::new(metrics.clone());
        let collect = Arc::new(Collect(Mutex::new(Vec::new())));
        log.set_sinks(vec![("c".into(), collect.clone()), ("stuck".into(), Arc::new(Stuck))]);
        let n = 20_000;
        for i in 0..n {
            log.record(event(at(0), None, format!("/{i}"), None, 200, Duration::ZERO));
            // Paced at ~500k events/s, far beyond what HTTPS requests can
            // produce, yet slow enough that a sink keeping up loses nothing
            // while the writer lingers.
            if i % 500 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        for _ in 0..200 {
            if collect.0.lock().unwrap().len() == n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(collect.0.lock().unwrap().len(), n);
        let dropped = metrics.audit_dropped.get() as usize;
        assert!(dropped >= n - QUEUE_CAPACITY - MAX_BATCH, "dropped {dropped}");
    }

    #[tokio::test]
    async fn shutdown_writes_what_is_still_queued() {
        let log = AuditLog::new(Arc::new(Metrics::new()));
        let collect = Arc::new(Collect(Mutex::new(Vec::new())));
        log.set_sinks(vec![("c".into(), collect.clone())]);
        for i in 0..100 {
            log.record(event(at(0), None, format!("/{i}"), None, 200, Duration::ZERO));
        }
        // Nothing written yet: the writer is still lingering.
        log.flush_and_close().await;
        assert_eq!(collect.0.lock().unwrap().len(), 100);
        assert!(!log.wanted(), "a closed log takes no more events");
    }

    #[tokio::test]
    async fn a_burst_becomes_one_batch() {
        struct Batches(Mutex<Vec<usize>>);
        #[async_trait]
        impl AuditSink for Batches {
            async fn write(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
                self.0.lock().unwrap().push(events.len());
                Ok(())
            }
        }
        let log = AuditLog::new(Arc::new(Metrics::new()));
        let batches = Arc::new(Batches(Mutex::new(Vec::new())));
        log.set_sinks(vec![("b".into(), batches.clone())]);
        for i in 0..50 {
            log.record(event(at(0), None, format!("/{i}"), None, 200, Duration::ZERO));
            // Each event is seen by the writer on its own, as with requests
            // arriving one by one.
            tokio::task::yield_now().await;
        }
        log.flush_and_close().await;
        let batches = batches.0.lock().unwrap();
        assert_eq!(batches.iter().sum::<usize>(), 50);
        assert!(batches.len() <= 2, "one call per burst, not per event: {batches:?}");
    }
}
