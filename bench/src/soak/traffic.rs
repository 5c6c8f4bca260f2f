//! The traffic itself: one closed loop per connection, every answer
//! checked and counted, and the requests outside it (set-up, metrics).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Method, StatusCode};
use rand::RngCore;
use serde::Serialize;

use super::mix::{json_field, Call, Fixture, Mix, Op, Worker, STABLE_PREFIX};
use crate::load::{self, Conn, Sender, Target};

/// Distinct kinds of failure kept for the report (the rest are counted under
/// one "other" entry); the first few failures are also printed at once.
pub(super) const FAILURE_KINDS: usize = 20;
pub(super) const FAILURES_PRINTED: usize = 5;

/// Answers per HTTP status: what the audit log is checked against.
#[derive(Debug, Default, Clone, Serialize)]
pub(super) struct Counts {
    pub(super) by_status: BTreeMap<u16, u64>,
}

impl Counts {
    pub(super) fn add(&mut self, status: StatusCode) {
        *self.by_status.entry(status.as_u16()).or_default() += 1;
    }

    pub(super) fn merge(&mut self, other: &Counts) {
        for (s, n) in &other.by_status {
            *self.by_status.entry(*s).or_default() += n;
        }
    }

    pub(super) fn total(&self) -> u64 {
        self.by_status.values().sum()
    }
}

/// Counters the controller reads while the traffic runs.
#[derive(Default)]
pub(super) struct Progress {
    pub(super) responses: AtomicU64,
    /// Wrong answers plus requests that got none (transport errors, timeouts).
    pub(super) unexpected: AtomicU64,
    pub(super) transport: AtomicU64,
    pub(super) provoked: AtomicU64,
    pub(super) failures: Mutex<BTreeMap<String, FailureKind>>,
}

/// Failures of one kind: the operation and what was wrong.
#[derive(Debug, Clone, Serialize)]
pub(super) struct FailureKind {
    pub(super) count: u64,
    /// Seconds into the traffic of the first one.
    pub(super) first_at_s: f64,
}

/// A response body or error on one line, shortened.
pub(super) fn one_line(s: &str) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(160) {
        Some((at, _)) => format!("{}…", &flat[..at]),
        None => flat,
    }
}

impl Progress {
    /// Counts an unexpected outcome of `request` (an operation `op`), printing the first few.
    pub(super) fn fail(&self, since: Instant, op: &str, request: &str, why: &str) {
        let n = self.unexpected.fetch_add(1, Ordering::Relaxed);
        let at = since.elapsed().as_secs_f64();
        let why = one_line(why);
        if (n as usize) < FAILURES_PRINTED {
            eprintln!("soak: unexpected at {at:.1} s: {request}: {why}");
        }
        let mut kinds = self.failures.lock().unwrap();
        let mut kind = format!("{op}: {why}");
        if kinds.len() >= FAILURE_KINDS && !kinds.contains_key(&kind) {
            kind = "(other kinds)".into();
        }
        kinds.entry(kind).or_insert(FailureKind { count: 0, first_at_s: at }).count += 1;
    }
}

/// Successful and unexpected answers of one operation.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub(super) struct OpCount {
    pub(super) ok: u64,
    pub(super) unexpected: u64,
}

/// Everything one connection's loop measured.
pub(super) struct WorkerOut {
    pub(super) counts: Counts,
    pub(super) ops: BTreeMap<Op, OpCount>,
    pub(super) hist: Histogram<u64>,
}

pub(super) struct Shared {
    pub(super) target: Target,
    pub(super) fixture: Fixture,
    pub(super) mix: Mix,
    pub(super) progress: Progress,
    pub(super) stop: AtomicBool,
    pub(super) started: Instant,
}

/// One connection's closed loop until [`Shared::stop`]: send, check, repeat.
/// A connection that breaks is counted as a failure and reopened.
pub(super) async fn traffic(s: Arc<Shared>, id: usize, first: (Sender, Conn)) -> WorkerOut {
    let mut w = Worker::new(id);
    let mut out = WorkerOut {
        counts: Counts::default(),
        ops: BTreeMap::new(),
        hist: Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds"),
    };
    let mut conn = Some(first);
    while !s.stop.load(Ordering::Relaxed) {
        let Some(c) = conn.as_mut() else {
            conn = reconnect(&s).await;
            continue;
        };
        let call = w.plan(&s.fixture, &s.mix);
        let req = load::request_with(call.method.clone(), &s.target.authority, &call.path, call.body.clone());
        let sent = Instant::now();
        let outcome = tokio::time::timeout(s.target.timeout, load::exchange(&mut c.0, &mut c.1, req)).await;
        let entry = out.ops.entry(call.op).or_default();
        let (status, body) = match outcome {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                lost(&s, &call, format!("transport: {e:#}"), entry);
                conn = None;
                continue;
            }
            Err(_) => {
                lost(&s, &call, format!("no answer within {:?}", s.target.timeout), entry);
                conn = None;
                continue;
            }
        };
        out.hist.saturating_record(sent.elapsed().as_micros().max(1) as u64);
        out.counts.add(status);
        s.progress.responses.fetch_add(1, Ordering::Relaxed);
        match s.fixture.verify(&call, status, &body) {
            Ok(()) => {
                entry.ok += 1;
                if call.op.provoked() {
                    s.progress.provoked.fetch_add(1, Ordering::Relaxed);
                }
                w.own.extend(call.created);
            }
            Err(why) => {
                entry.unexpected += 1;
                s.progress.fail(s.started, &format!("{:?}", call.op), &call.request_line(), &why);
            }
        }
    }
    out
}

/// A request that got no answer: a failure, and its connection is dropped.
pub(super) fn lost(s: &Shared, call: &Call, why: String, entry: &mut OpCount) {
    entry.unexpected += 1;
    s.progress.transport.fetch_add(1, Ordering::Relaxed);
    s.progress.fail(s.started, &format!("{:?}", call.op), &call.request_line(), &why);
}

/// Reopens a connection that broke; a failure to connect is counted too.
pub(super) async fn reconnect(s: &Shared) -> Option<(Sender, Conn)> {
    match s.target.connect().await {
        Ok(c) => Some(c),
        Err(e) => {
            s.progress.transport.fetch_add(1, Ordering::Relaxed);
            s.progress.fail(s.started, "Connect", &s.target.addr.to_string(), &format!("{e:#}"));
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}

/// One request outside the traffic (set-up, metrics), counted for the audit
/// check whatever its status.
pub(super) async fn call(
    c: &mut (Sender, Conn),
    target: &Target,
    counts: &mut Counts,
    method: Method,
    path: &str,
    body: Bytes,
) -> Result<Bytes> {
    let req = load::request_with(method.clone(), &target.authority, path, body);
    let (status, body) = tokio::time::timeout(target.timeout, load::exchange(&mut c.0, &mut c.1, req))
        .await
        .map_err(|_| anyhow!("{method} {path}: no answer within {:?}", target.timeout))??;
    counts.add(status);
    if status != StatusCode::OK {
        bail!("{method} {path}: HTTP {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(body)
}

pub(super) fn b64_body(field: &str, bytes: &[u8]) -> Bytes {
    Bytes::from(serde_json::json!({ field: B64.encode(bytes) }).to_string())
}

/// Creates the long-lived keys and records a ciphertext and an HMAC of each.
pub(super) async fn set_up(target: &Target, counts: &mut Counts, keys: usize, payload_size: usize) -> Result<Fixture> {
    let mut rng = rand::thread_rng();
    let (mut plaintext, mut message, mut garbage) = (vec![0u8; payload_size], vec![0u8; payload_size], [0u8; 64]);
    rng.fill_bytes(&mut plaintext);
    rng.fill_bytes(&mut message);
    rng.fill_bytes(&mut garbage);
    let mut f = Fixture {
        names: (0..keys).map(|i| format!("{STABLE_PREFIX}{i}")).collect(),
        encrypt_body: b64_body("plaintext", &plaintext),
        plaintext_b64: B64.encode(&plaintext),
        hmac_body: b64_body("message", &message),
        decrypt_bodies: Vec::with_capacity(keys),
        hmacs: Vec::with_capacity(keys),
        garbage_body: b64_body("ciphertext", &garbage),
    };
    let mut c = target.connect().await?;
    for name in &f.names {
        call(&mut c, target, counts, Method::PUT, &format!("/v1/key/create/{name}"), Bytes::new()).await?;
        let body =
            call(&mut c, target, counts, Method::PUT, &format!("/v1/key/encrypt/{name}"), f.encrypt_body.clone())
                .await?;
        let ciphertext = json_field(&body, "ciphertext").map_err(|e| anyhow!("encrypt {name}: {e}"))?;
        f.decrypt_bodies.push(Bytes::from(serde_json::json!({ "ciphertext": ciphertext }).to_string()));
        let body =
            call(&mut c, target, counts, Method::PUT, &format!("/v1/key/hmac/{name}"), f.hmac_body.clone()).await?;
        f.hmacs.push(json_field(&body, "hmac").map_err(|e| anyhow!("hmac {name}: {e}"))?);
    }
    Ok(f)
}
