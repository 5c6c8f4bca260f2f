//! Audit and error logs.
//!
//! Every request produces one audit line, KES's JSON shape. The request
//! path only records the event: its facts go into each sink's pending buffer
//! for the serving thread (a lock no other core takes but the writer's, every
//! few milliseconds; a full buffer drops the event and counts it, so a slow
//! sink never slows a response), and the line is sent to any client
//! following `/v1/log/audit`. Each sink's writer formats everything pending a
//! few milliseconds later into one [`AuditBatch`]: the request path allocates
//! nothing per event and writes a fraction of the line's bytes, and a sink
//! (typically a WebAssembly plugin) is called once per batch with the lines
//! it will write.
//!
//! Each sink's writer runs on a thread of its own (`keyward-audit`), never
//! on a request worker: a sink may block the thread it runs on (a WebAssembly
//! sink's file I/O runs on the calling thread), and a sink stalled that way
//! holds up neither requests nor the other sinks.
//!
//! Order: lines reach a sink in the order their requests were answered, as
//! with one shared log: the writer merges the threads' buffers by the
//! (monotonic) answer time, so a client's sequential requests are audited in
//! the order it made them, whichever threads served them.
//!
//! Error messages go to the tracing log and to clients following
//! `/v1/log/error`.

pub mod follow;
pub mod stdout;

use std::cell::RefCell;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use futures_util::FutureExt;
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::sharded::Sharded;
use follow::{Follower, Followers};
use keyward_core::audit_sink::{AuditBatch, AuditSink};

/// Events a sink may have pending from one serving thread before that
/// thread's new ones are dropped (a server has one serving thread per CPU):
/// several times what one thread answers while its sink's writer lingers
/// ([`LINGER`]), so that a sink call taking tens of milliseconds loses nothing.
pub const QUEUE_CAPACITY: usize = 8192;
/// Bytes of text (request paths, identities, IP addresses) a sink may have
/// pending from one serving thread before that thread's new events are
/// dropped (the path is a client's choice).
pub const QUEUE_BYTES: usize = 2 << 20;
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
/// A writer's batch buffer larger than this after a burst is given back.
const KEEP_BUFFER: usize = 1 << 20;

/// What the audit line of one answered request records.
#[derive(Debug, Clone, Copy)]
pub struct Answered<'a> {
    /// When the request arrived (wall clock).
    pub received: SystemTime,
    /// The client's IP address, if known.
    pub ip: Option<&'a str>,
    /// The URL path, percent-decoded, without the query.
    pub path: &'a str,
    /// The client's identity, if it presented a certificate.
    pub identity: Option<&'a str>,
    /// The HTTP status sent.
    pub status: u16,
    /// How long the answer took.
    pub duration: Duration,
    /// When the answer was ready (monotonic): orders the lines of requests
    /// answered on different threads.
    pub answered: Instant,
}

/// The KES audit line for one request (without a newline).
pub fn line(request: &Answered<'_>) -> String {
    let mut out = String::with_capacity(160 + request.path.len());
    push_line(&mut out, request);
    out
}

/// Appends the KES audit line for one request to `out`, without a newline.
///
/// Written by hand rather than through serde since it runs for every
/// request (same bytes; the unit tests compare both).
fn push_line(out: &mut String, request: &Answered<'_>) {
    let duration_us = u64::try_from(request.duration.as_micros()).unwrap_or(u64::MAX);
    out.push_str(r#"{"time":""#);
    push_time(out, request.received);
    out.push_str(r#"","request":{"#);
    if let Some(ip) = request.ip {
        out.push_str(r#""ip":"#);
        push_json_string(out, ip);
        out.push(',');
    }
    out.push_str(r#""path":"#);
    push_json_string(out, request.path);
    if let Some(identity) = request.identity {
        out.push_str(r#","identity":"#);
        push_json_string(out, identity);
    }
    // The response time is nanoseconds truncated to microseconds: every Go
    // client decodes it as a `time.Duration` (the newest KES server's
    // milliseconds are a bug).
    out.push_str(r#"},"response":{"code":"#);
    out.push_str(itoa::Buffer::new().format(request.status));
    out.push_str(r#","time":"#);
    out.push_str(itoa::Buffer::new().format(duration_us.saturating_mul(1000)));
    out.push_str("}}");
}

thread_local! {
    /// The last whole second [`push_time`] wrote on this thread, as unix
    /// seconds and RFC 3339 text without the `Z`.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
}

/// Appends `t` in RFC 3339 (UTC, nanoseconds), the text
/// [`keyward_core::time_format::push_rfc3339`] writes for the same instant. The calendar
/// date and time of day are worked out once per second per thread: nearly
/// every line under load shares them with the one before. A clock set
/// before 1970 reads as the epoch.
fn push_time(out: &mut String, t: SystemTime) {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let (secs, nanos) = (since.as_secs(), since.subsec_nanos());
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != secs || text.is_empty() {
            let whole = i64::try_from(secs).ok().and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok());
            text.clear();
            keyward_core::time_format::push_rfc3339(text, whole.unwrap_or(time::OffsetDateTime::UNIX_EPOCH));
            text.pop(); // the `Z`: the fraction comes before it
            *second = secs;
        }
        out.push_str(text);
    });
    keyward_core::time_format::push_fraction_z(out, nanos);
}

/// Appends `s` as a JSON string literal, escaped exactly as serde_json does.
/// The result never contains a raw line break, so a line stays one line.
fn push_json_string(out: &mut String, s: &str) {
    // A fold rather than `all`: no early exit, so the check is vectorised
    // (it runs over the path, IP and identity of every request).
    if s.bytes().fold(true, |plain, b| plain & (b >= 0x20) & (b != b'"') & (b != b'\\')) {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        // Rare (a path with quotes or control characters): let serde escape it.
        out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\"")));
    }
}

thread_local! {
    /// Where the request path writes the audit line for followers: reused,
    /// so that following costs one allocation per event (the shared line).
    static SCRATCH: RefCell<String> = const { RefCell::new(String::new()) };
}

/// One answered request waiting for its sink's writer: the facts of its
/// line, with its text fields kept in [`Pending::text`]. A quarter of the
/// line's size: the request path writes this, and the writer formats it
/// (measured: formatting on the request path cost the workers ~0.5 µs per
/// request, most of it in writing the line's bytes).
struct Event {
    answered: Instant,
    received: SystemTime,
    /// The response time in whole microseconds (all the line keeps).
    micros: u64,
    /// Where the event's text ends in [`Pending::text`]: its IP address,
    /// identity and path, back to back, end there.
    end: u32,
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
struct Pending {
    /// The events' text fields, back to back.
    text: String,
    /// The events, in the order their requests were answered.
    events: Vec<Event>,
}

impl Pending {
    /// Records one event; `false` (and nothing recorded) if the buffer is
    /// full, in events or in bytes.
    fn push(&mut self, request: &Answered<'_>) -> bool {
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
    fn event(&self, i: usize) -> Answered<'_> {
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

    fn clear(&mut self) {
        self.text.clear();
        self.events.clear();
        if self.text.capacity() > KEEP_BUFFER {
            *self = Pending::default();
        }
    }
}

/// One sink's pending lines, shared by the request path and its writer task.
struct SinkQueue {
    name: String,
    /// One buffer per serving thread: requests on different cores never
    /// write the same memory (the copy into one shared buffer measured
    /// ~0.6–0.8 µs per request on two cores).
    pending: Sharded<Mutex<Pending>>,
    /// Notified when a buffer goes from empty to not empty, and on close.
    ready: Notify,
    /// Set once no one can add events any more: the writer then writes what
    /// is left and ends.
    closed: AtomicBool,
}

fn lock(pending: &Mutex<Pending>) -> MutexGuard<'_, Pending> {
    // Nothing panics while holding the lock; if something did, the buffer is
    // still a valid list of whole lines.
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SinkQueue {
    fn new(name: String) -> SinkQueue {
        SinkQueue { name, pending: Sharded::new(), ready: Notify::new(), closed: AtomicBool::new(false) }
    }

    /// Records one event in the calling thread's buffer; `false` (event
    /// dropped, buffer unchanged) if that buffer is full.
    fn push(&self, request: &Answered<'_>) -> bool {
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
    fn take(&self, batch: &mut String, spares: &mut Vec<Pending>) -> usize {
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

    fn is_empty(&self) -> bool {
        self.pending.iter().all(|p| lock(p).events.is_empty())
    }
}

/// Lines a writer formats between offers of its CPU to other threads.
/// Formatting a batch takes a few hundred microseconds under load, on a CPU
/// a request worker may be waiting for; yielding every so often lets the
/// worker in (paired in turns, encrypt at 16 connections: p99 7-15 % lower
/// in 4 of 4 runs; one yield costs ~1 µs).
const LINES_PER_YIELD: usize = 128;

/// Appends the lines of the events in `buffers` to `out`, each followed by
/// a newline, by answer time. Each buffer is already in that order (one
/// thread's).
fn write_lines(out: &mut String, buffers: &[Pending]) {
    let mut next = vec![0usize; buffers.len()];
    for written in 1.. {
        let earliest = (0..buffers.len())
            .filter(|&b| next[b] < buffers[b].events.len())
            .min_by_key(|&b| buffers[b].events[next[b]].answered);
        let Some(b) = earliest else { return };
        if written % LINES_PER_YIELD == 0 {
            std::thread::yield_now();
        }
        push_line(out, &buffers[b].event(next[b]));
        out.push('\n');
        next[b] += 1;
    }
}

/// A sink in the current set. Dropped when the set is replaced and no
/// request is still recording into it: only then is its queue closed, so no
/// event recorded into it is ever left behind.
struct SinkHandle {
    queue: Arc<SinkQueue>,
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
    sinks: ArcSwap<Vec<SinkHandle>>,
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

/// Resolves once a sink's writer has ended (its thread finished or died).
type Writer = tokio::sync::oneshot::Receiver<()>;

/// Starts a sink's writer on a thread of its own (`keyward-audit`, with a
/// runtime of its own whose blocking pool is `keyward-aud-io`): a sink call
/// may block its thread (a WebAssembly sink's file I/O runs on the calling
/// thread, and a disk or journal stall can take milliseconds or more), which
/// on a request worker would hold up every request queued behind it, and on
/// a thread shared by the sinks would hold up the others. Without a thread
/// (one could not be started), the writer runs on the caller's runtime.
fn spawn_writer(writer: impl Future<Output = ()> + Send + 'static) -> Writer {
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
type Replaced = futures_util::future::Shared<futures_util::future::BoxFuture<'static, ()>>;

/// Feeds one sink: waits for an event, lingers for [`LINGER`] so that a burst
/// becomes one batch, and writes everything pending. Ends once the queue is
/// closed and empty. Writes nothing until `replaced` (the writers of the
/// sink set this one replaced) is done, or [`FLUSH_GRACE`] has passed.
async fn drain(queue: Arc<SinkQueue>, sink: Arc<dyn AuditSink>, metrics: Arc<Metrics>, replaced: Replaced) {
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

/// The error log: tracing output plus followers of `/v1/log/error`.
pub struct ErrorLog {
    followers: Followers,
    metrics: Arc<Metrics>,
}

impl ErrorLog {
    pub fn new(metrics: Arc<Metrics>) -> ErrorLog {
        ErrorLog { followers: Followers::new(), metrics }
    }

    /// Records a server-side failure. The message must never contain secrets.
    pub fn error(&self, message: &str) {
        self.metrics.log_error_events.inc();
        tracing::error!("{message}");
        self.followers.send_with(|| Arc::from(serde_json::json!({ "message": message }).to_string()));
    }

    /// A stream of error lines for `/v1/log/error`.
    pub fn follow(&self) -> Follower {
        self.followers.follow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use keyward_core::keystore::StoreError;

    fn at(unix_nanos: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(unix_nanos)
    }

    #[test]
    fn a_line_has_the_kes_shape() {
        let l = line(&Answered {
            received: at(1_704_067_200_000_000_000),
            ip: Some("127.0.0.1"),
            path: "/v1/key/create/k",
            identity: Some("ab"),
            status: 200,
            duration: Duration::from_millis(3),
            answered: Instant::now(),
        });
        assert_eq!(
            l,
            r#"{"time":"2024-01-01T00:00:00Z","request":{"ip":"127.0.0.1","path":"/v1/key/create/k","identity":"ab"},"response":{"code":200,"time":3000000}}"#
        );
    }

    /// The time written once per second per thread is the text of the full
    /// formatter for every instant, whether the second changes or not, and
    /// backwards too (a clock step).
    #[test]
    fn times_match_the_rfc3339_formatter_across_seconds() {
        let instants = [
            1_700_000_000_123_456_789u64,
            1_700_000_000_999_999_999,
            1_700_000_001_000_000_000,
            1_700_000_001_000_000_100,
            1_699_999_999_500_000_000,
            0,
            1_500,
            18_446_744_073_709_551_615,
            1_704_067_200_000_000_000,
        ];
        for nanos in instants {
            let mut out = String::new();
            push_time(&mut out, at(nanos));
            let reference = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos)).unwrap();
            assert_eq!(out, keyward_core::time_format::rfc3339(reference), "{nanos}");
        }
    }

    /// The hand-written line is byte for byte what serde writes for the same
    /// facts, for the paths and identities a client can send.
    #[test]
    fn a_line_matches_serde() {
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
                let received = at(1_700_000_000_123_456_789);
                let l = line(&Answered {
                    received,
                    ip,
                    path,
                    identity,
                    status: 404,
                    duration: Duration::from_micros(micros),
                    answered: Instant::now(),
                });
                let expected = serde_json::to_string(&Line {
                    time: "2023-11-14T22:13:20.123456789Z",
                    request: Request { ip, path, identity },
                    response: Response { code: 404, time: micros * 1000 },
                })
                .unwrap();
                assert_eq!(l, expected);
                assert!(!l.contains('\n'), "one event, one line: {l}");
            }
        }
    }

    /// Records the paths of every batch it is handed, batch by batch.
    #[derive(Default)]
    struct Collect(Mutex<Vec<Vec<String>>>);

    impl Collect {
        fn paths(&self) -> Vec<String> {
            self.0.lock().unwrap().concat()
        }

        fn count(&self) -> usize {
            self.0.lock().unwrap().iter().map(Vec::len).sum()
        }
    }

    #[async_trait]
    impl AuditSink for Collect {
        async fn write(&self, batch: AuditBatch<'_>) -> Result<(), StoreError> {
            let paths = batch.iter().map(|l| keyward_core::audit_sink::AuditEvent::parse(l).unwrap().path).collect();
            self.0.lock().unwrap().push(paths);
            Ok(())
        }
    }

    struct Stuck;

    #[async_trait]
    impl AuditSink for Stuck {
        async fn write(&self, _: AuditBatch<'_>) -> Result<(), StoreError> {
            std::future::pending().await
        }
    }

    /// Tests that load the two CPUs run alone (write lock): the others'
    /// writers would fall behind and drop events.
    static ALONE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

    /// Blocks its thread while writing, as a sink's file I/O does on a
    /// stalled disk.
    struct Blocking;

    #[async_trait]
    impl AuditSink for Blocking {
        async fn write(&self, _: AuditBatch<'_>) -> Result<(), StoreError> {
            std::thread::sleep(Duration::from_millis(300));
            Ok(())
        }
    }

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

    /// The writer's lines are exactly the lines of the events the request
    /// path recorded, whatever fields they have, in answer order across
    /// threads' buffers.
    #[test]
    fn pending_events_become_their_lines() {
        let start = Instant::now();
        let events = [
            (Some("127.0.0.1"), Some("ab12"), "/v1/key/encrypt/k", 200, Duration::from_nanos(1_234_567)),
            (None, None, "", 404, Duration::ZERO),
            (Some("::1"), None, "/ünï\"cödé/\u{1}", 500, Duration::from_secs(3)),
            (None, Some("x\"y"), "/v1/status", 403, Duration::from_nanos(999)),
        ];
        let (mut even, mut odd) = (Pending::default(), Pending::default());
        let mut expected = String::new();
        for (i, (ip, identity, path, status, duration)) in events.into_iter().enumerate() {
            let answered = Answered {
                received: at(1_700_000_000_123_456_789 + i as u64),
                ip,
                path,
                identity,
                status,
                duration,
                answered: start + Duration::from_millis(i as u64),
            };
            assert!(if i % 2 == 0 { even.push(&answered) } else { odd.push(&answered) });
            expected.push_str(&line(&answered));
            expected.push('\n');
        }
        let mut out = String::new();
        write_lines(&mut out, &[odd, even]);
        assert_eq!(out, expected);
    }

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

    fn record(log: &AuditLog, path: &str) {
        log.record(&Answered {
            received: at(0),
            ip: None,
            path,
            identity: None,
            status: 200,
            duration: Duration::ZERO,
            answered: Instant::now(),
        });
    }

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

    /// Requests answered on several threads: nothing is lost, and each
    /// thread's lines keep their order (the merge across threads is checked
    /// by `sequential_requests_on_different_threads_stay_in_order`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_recorded_on_many_threads_all_arrive_each_thread_in_order() {
        let _shared = ALONE.read().await;
        let log = AuditLog::new(Arc::new(Metrics::new()));
        let collect = Arc::new(Collect::default());
        log.set_sinks(vec![("c".into(), collect.clone())]);
        let (threads, each) = (4, 2000);
        std::thread::scope(|s| {
            for t in 0..threads {
                let log = &log;
                s.spawn(move || {
                    for i in 0..each {
                        record(log, &format!("/{t}/{i}"));
                        if i % 250 == 0 {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                    }
                });
            }
        });
        log.flush_and_close().await;
        let paths = collect.paths();
        assert_eq!(paths.len(), threads * each, "every event");
        for t in 0..threads {
            let prefix = format!("/{t}/");
            let mine: Vec<&String> = paths.iter().filter(|p| p.starts_with(&prefix)).collect();
            let expected: Vec<String> = (0..each).map(|i| format!("/{t}/{i}")).collect();
            assert!(mine.into_iter().eq(expected.iter()), "thread {t}'s lines in the order recorded");
        }
    }

    /// A client's requests one after another, each answered on a
    /// different thread: the sink gets them in the order they were made.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sequential_requests_on_different_threads_stay_in_order() {
        let _shared = ALONE.read().await;
        let log = AuditLog::new(Arc::new(Metrics::new()));
        let collect = Arc::new(Collect::default());
        log.set_sinks(vec![("c".into(), collect.clone())]);
        let n = 60;
        std::thread::scope(|s| {
            for i in 0..n {
                let log = &log;
                // A new thread for each: consecutive ones get different shards.
                s.spawn(move || record(log, &format!("/{i}"))).join().unwrap();
            }
        });
        log.flush_and_close().await;
        let expected: Vec<String> = (0..n).map(|i| format!("/{i}")).collect();
        assert_eq!(collect.paths(), expected);
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
