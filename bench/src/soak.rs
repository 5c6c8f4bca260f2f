//! `keyward-bench soak`: a long run of mixed traffic against a real keyward
//! whose plugins are reloaded every minute, checking what a short benchmark
//! cannot: that memory and file descriptors stay flat, that no request fails
//! unless the soak provoked it, and that the audit sink gets exactly one event
//! per request (issue 7).
//!
//! * Set-up: certificates and a config like `compare`'s (a policy identity,
//!   the bundled `fs` keystore plugin, the bundled `audit-file` sink writing
//!   into the temp dir, stdout audit off), `keyward server --config`, then
//!   `--keys` long-lived keys with a reference ciphertext and HMAC each.
//! * Traffic: `--connections` keep-alive connections, each a closed loop over
//!   the weighted [`MIX`] (less any `--without`). Every answer is checked
//!   against what that request must get (status, and the body where the soak
//!   knows it: decrypt returns the plaintext, HMACs match the set-up ones,
//!   listings hold exactly the long-lived keys); a provoked failure (describe
//!   of a missing key → 404, decrypt of garbage → 400) is counted apart.
//! * Every `--reload-every`: the config is rewritten with a new audit file
//!   name and the server gets SIGHUP, which rebuilds both the keystore and
//!   the audit-sink plugin; the new file appearing confirms the reload.
//! * Every `--sample-every`: the server's RSS, open descriptors and threads
//!   are sampled, and the audit file is rotated (see [`AuditFiles`]) so a
//!   30-minute run does not leave gigabytes of audit lines behind. The leak
//!   rule ([`Growth`]) compares the end with the samples after a warm-up.
//! * At the end: SIGTERM (the server flushes queued audit events before it
//!   exits), then the audit lines are counted, per status, against every
//!   answer the soak received — set-up, readiness probes and the final
//!   metrics request included.
//!
//! Only 127.0.0.1 is contacted, and the run ends by itself.

use std::collections::{BTreeMap, VecDeque};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Method, StatusCode};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use rustls::pki_types::ServerName;
use serde::Serialize;
use tokio_rustls::TlsConnector;

use crate::compare::{self, Files, Server};
use crate::load::{self, Conn, Latency, Sender, Target};
use crate::procfs;

#[derive(clap::Args, Clone, Debug)]
pub struct SoakArgs {
    /// The keyward binary (default: `keyward` next to this executable, i.e. target/dist/keyward).
    #[arg(long)]
    pub keyward: Option<PathBuf>,
    /// How long the mixed traffic runs.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30m")]
    pub duration: Duration,
    /// Concurrent keep-alive connections, one request in flight on each.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// Send SIGHUP this often (the server rebuilds its keystore and audit-sink plugins); 0s: never.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub reload_every: Duration,
    /// Sample RSS and open descriptors, and rotate the audit file, this often.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub sample_every: Duration,
    /// Long-lived keys the traffic spreads over (created at set-up, never deleted).
    #[arg(long, default_value_t = 256)]
    pub keys: usize,
    /// Plaintext (encrypt/decrypt) and message (hmac) size in bytes.
    #[arg(long, default_value_t = 64)]
    pub payload_size: usize,
    /// Per-request timeout; a request that takes longer is a failure.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub timeout: Duration,
    /// Runtime worker threads of the traffic generator (default: one per CPU).
    #[arg(long)]
    pub threads: Option<usize>,
    /// RSS growth tolerated: the larger of this many MiB and --rss-tolerance-pct.
    #[arg(long, default_value_t = 8.0)]
    pub rss_tolerance_mib: f64,
    /// RSS growth tolerated, in percent of the warm reference (see --rss-tolerance-mib).
    #[arg(long, default_value_t = 10.0)]
    pub rss_tolerance_pct: f64,
    /// Growth of open file descriptors tolerated.
    #[arg(long, default_value_t = 5)]
    pub fd_tolerance: u64,
    /// Leave these operations out of the mix (comma-separated), e.g. while a
    /// known bug in one is open; create and delete go together.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub without: Vec<Op>,
    /// Samples up to this point are not used as the leak rule's reference
    /// (default: a quarter of --duration, at most 5 minutes, at least one --sample-every).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub warmup: Option<Duration>,
    /// Keep the temporary directory (config, server log, keystore) even when the soak passes.
    #[arg(long)]
    pub keep: bool,
}

impl SoakArgs {
    /// See `--warmup`. Under the mixed traffic keyward's RSS climbs for about
    /// four minutes (85 → 108 MiB: allocator arenas, the plugin pools growing
    /// to their maximum) and is then flat (±0.5 MiB over the next six minutes
    /// and 17 reloads, in a 10-minute run), so a reference taken in the first
    /// minute would read the climb as a leak.
    fn warmup(&self) -> Duration {
        self.warmup.unwrap_or((self.duration / 4).min(Duration::from_secs(300))).max(self.sample_every)
    }

    /// Samples the leak rule needs: those in the warm-up, then three for the
    /// reference and three more, disjoint, for the end.
    fn samples_needed(&self) -> u32 {
        (self.warmup().as_secs_f64() / self.sample_every.as_secs_f64()).floor() as u32 + 6
    }
}
/// Keys a connection creates before it deletes one: the churn stays at a few
/// hundred keys however long the run.
const CHURN_KEYS_PER_CONNECTION: usize = 4;
/// How long a reload may take before it counts as failed.
const RELOAD_LIMIT: Duration = Duration::from_secs(20);
/// How long the server may take to exit after SIGTERM (4 s of in-flight grace
/// plus 2 s of audit flush, with room) before it is killed.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(30);
/// Distinct kinds of failure kept for the report (the rest are counted under
/// one "other" entry); the first few failures are also printed at once.
const FAILURE_KINDS: usize = 20;
const FAILURES_PRINTED: usize = 5;
/// Prefix of the long-lived keys; churn keys and missing keys never match it,
/// so a listing of it has exactly `--keys` names.
const STABLE_PREFIX: &str = "soak-k-";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Encrypt,
    Decrypt,
    Generate,
    Hmac,
    Describe,
    List,
    Create,
    Delete,
    /// Describe of a key that never existed: must be 404.
    DescribeMissing,
    /// Decrypt of random bytes: must be 400 (not authentic).
    DecryptGarbage,
}

impl Op {
    /// Whether the soak sends it to get an error answer on purpose.
    fn provoked(self) -> bool {
        matches!(self, Op::DescribeMissing | Op::DecryptGarbage)
    }
}

/// The traffic mix, in requests per 10,000: mostly cached-key
/// cryptography, as in real use; creates and deletes (plugin calls with an
/// fsync each) churn a few keys per connection; a listing reads the whole key
/// directory through the plugin, so it is rare; 3 % are provoked failures,
/// one of which (a missing key) goes through the keystore plugin too.
const MIX: [(Op, u32); 10] = [
    (Op::Encrypt, 3000),
    (Op::Decrypt, 2200),
    (Op::Generate, 1500),
    (Op::Hmac, 1500),
    (Op::Describe, 1090),
    (Op::List, 10),
    (Op::Create, 200),
    (Op::Delete, 200),
    (Op::DescribeMissing, 150),
    (Op::DecryptGarbage, 150),
];

/// [`MIX`] less the operations left out.
struct Mix {
    ops: Vec<(Op, u32)>,
    total: u32,
}

impl Mix {
    fn new(without: &[Op]) -> Result<Mix> {
        if without.contains(&Op::Create) != without.contains(&Op::Delete) {
            bail!("--without: create and delete go together (each connection deletes only keys it created)");
        }
        let ops: Vec<(Op, u32)> = MIX.into_iter().filter(|(op, _)| !without.contains(op)).collect();
        let total = ops.iter().map(|(_, w)| w).sum();
        if total == 0 {
            bail!("--without leaves nothing to send");
        }
        Ok(Mix { ops, total })
    }

    /// The operation for a uniform draw in `0..total`.
    fn pick(&self, mut draw: u32) -> Op {
        for &(op, weight) in &self.ops {
            if draw < weight {
                return op;
            }
            draw -= weight;
        }
        self.ops[0].0
    }
}

/// Answers per HTTP status: what the audit log is checked against.
#[derive(Debug, Default, Clone, Serialize)]
struct Counts {
    by_status: BTreeMap<u16, u64>,
}

impl Counts {
    fn add(&mut self, status: StatusCode) {
        *self.by_status.entry(status.as_u16()).or_default() += 1;
    }

    fn merge(&mut self, other: &Counts) {
        for (s, n) in &other.by_status {
            *self.by_status.entry(*s).or_default() += n;
        }
    }

    fn total(&self) -> u64 {
        self.by_status.values().sum()
    }
}

/// What the traffic needs to know in advance to check every answer.
struct Fixture {
    names: Vec<String>,
    encrypt_body: Bytes,
    /// What every decrypt of a set-up ciphertext must return.
    plaintext_b64: String,
    hmac_body: Bytes,
    /// Per long-lived key: a decrypt body (a set-up ciphertext) and the HMAC of the message.
    decrypt_bodies: Vec<Bytes>,
    hmacs: Vec<String>,
    garbage_body: Bytes,
}

/// One request of the traffic and what it is about.
struct Call {
    op: Op,
    method: Method,
    path: String,
    body: Bytes,
    /// Index of the long-lived key it uses.
    key: usize,
    /// The churn key a create makes.
    created: Option<String>,
}

impl Call {
    fn request_line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

fn json_field(body: &[u8], field: &str) -> Result<String, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("not JSON ({e})"))?;
    v.get(field).and_then(|f| f.as_str()).map(str::to_string).ok_or_else(|| format!("no '{field}' string"))
}

impl Fixture {
    /// Checks one answer; `Err` says what was wrong with it.
    fn verify(&self, call: &Call, status: StatusCode, body: &[u8]) -> Result<(), String> {
        let expected = match call.op {
            Op::DescribeMissing => StatusCode::NOT_FOUND,
            Op::DecryptGarbage => StatusCode::BAD_REQUEST,
            _ => StatusCode::OK,
        };
        if status != expected {
            return Err(format!("HTTP {status}, expected {expected}: {}", String::from_utf8_lossy(body)));
        }
        let same = |field: &str, want: &str| match json_field(body, field) {
            Ok(got) if got == want => Ok(()),
            Ok(got) => Err(format!("'{field}' is {got:?}, expected {want:?}")),
            Err(e) => Err(e),
        };
        match call.op {
            Op::Encrypt => json_field(body, "ciphertext").map(drop),
            Op::Decrypt => same("plaintext", &self.plaintext_b64),
            Op::Hmac => same("hmac", &self.hmacs[call.key]),
            Op::Describe => same("name", &self.names[call.key]),
            Op::Generate => json_field(body, "plaintext").and_then(|_| json_field(body, "ciphertext")).map(drop),
            Op::List => self.verify_listing(body),
            Op::Create | Op::Delete | Op::DescribeMissing | Op::DecryptGarbage => Ok(()),
        }
    }

    /// An ndjson listing of [`STABLE_PREFIX`]: exactly the long-lived keys.
    fn verify_listing(&self, body: &[u8]) -> Result<(), String> {
        let mut n = 0;
        for line in body.split(|&b| b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)) {
            let name = json_field(line, "name")?;
            if !name.starts_with(STABLE_PREFIX) {
                return Err(format!("listing holds {name:?}"));
            }
            n += 1;
        }
        if n != self.names.len() {
            return Err(format!("listing has {n} names, expected {}", self.names.len()));
        }
        Ok(())
    }
}

/// One connection's request generator: picks operations and keeps track of
/// the churn keys it created (and so may delete).
struct Worker {
    id: usize,
    seq: u64,
    own: VecDeque<String>,
    rng: StdRng,
}

impl Worker {
    fn new(id: usize) -> Worker {
        Worker { id, seq: 0, own: VecDeque::new(), rng: StdRng::from_entropy() }
    }

    /// The operation to send next: a draw from the mix, with creates and
    /// deletes swapped so each connection holds 0..=[`CHURN_KEYS_PER_CONNECTION`].
    fn next_op(&mut self, mix: &Mix) -> Op {
        match mix.pick(self.rng.gen_range(0..mix.total)) {
            Op::Create if self.own.len() >= CHURN_KEYS_PER_CONNECTION => Op::Delete,
            Op::Delete if self.own.is_empty() => Op::Create,
            op => op,
        }
    }

    fn plan(&mut self, f: &Fixture, mix: &Mix) -> Call {
        let op = self.next_op(mix);
        let key = self.rng.gen_range(0..f.names.len());
        let name = &f.names[key];
        let call = |method, path: String, body| Call { op, method, path, body, key, created: None };
        match op {
            Op::Encrypt => call(Method::PUT, format!("/v1/key/encrypt/{name}"), f.encrypt_body.clone()),
            Op::Decrypt => call(Method::PUT, format!("/v1/key/decrypt/{name}"), f.decrypt_bodies[key].clone()),
            Op::Generate => call(Method::PUT, format!("/v1/key/generate/{name}"), Bytes::from_static(b"{}")),
            Op::Hmac => call(Method::PUT, format!("/v1/key/hmac/{name}"), f.hmac_body.clone()),
            Op::Describe => call(Method::GET, format!("/v1/key/describe/{name}"), Bytes::new()),
            Op::List => call(Method::GET, format!("/v1/key/list/{STABLE_PREFIX}*"), Bytes::new()),
            Op::DecryptGarbage => call(Method::PUT, format!("/v1/key/decrypt/{name}"), f.garbage_body.clone()),
            Op::DescribeMissing => {
                self.seq += 1;
                call(Method::GET, format!("/v1/key/describe/soak-missing-{}-{}", self.id, self.seq), Bytes::new())
            }
            Op::Create => {
                self.seq += 1;
                let churn = format!("soak-c{}-{}", self.id, self.seq);
                Call {
                    created: Some(churn.clone()),
                    ..call(Method::PUT, format!("/v1/key/create/{churn}"), Bytes::new())
                }
            }
            Op::Delete => {
                // A delete that fails leaves the key untracked: it is never retried.
                let churn = self.own.pop_front().expect("next_op deletes only with a key in hand");
                call(Method::DELETE, format!("/v1/key/delete/{churn}"), Bytes::new())
            }
        }
    }
}

/// Counters the controller reads while the traffic runs.
#[derive(Default)]
struct Progress {
    responses: AtomicU64,
    /// Wrong answers plus requests that got none (transport errors, timeouts).
    unexpected: AtomicU64,
    transport: AtomicU64,
    provoked: AtomicU64,
    failures: Mutex<BTreeMap<String, FailureKind>>,
}

/// Failures of one kind: the operation and what was wrong.
#[derive(Debug, Clone, Serialize)]
struct FailureKind {
    count: u64,
    /// Seconds into the traffic of the first one.
    first_at_s: f64,
}

/// A response body or error on one line, shortened.
fn one_line(s: &str) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(160) {
        Some((at, _)) => format!("{}…", &flat[..at]),
        None => flat,
    }
}

impl Progress {
    /// Counts an unexpected outcome of `request` (an operation `op`), printing the first few.
    fn fail(&self, since: Instant, op: &str, request: &str, why: &str) {
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
struct OpCount {
    ok: u64,
    unexpected: u64,
}

/// Everything one connection's loop measured.
struct WorkerOut {
    counts: Counts,
    ops: BTreeMap<Op, OpCount>,
    hist: Histogram<u64>,
}

struct Shared {
    target: Target,
    fixture: Fixture,
    mix: Mix,
    progress: Progress,
    stop: AtomicBool,
    started: Instant,
}

/// One connection's closed loop until [`Shared::stop`]: send, check, repeat.
/// A connection that breaks is counted as a failure and reopened.
async fn traffic(s: Arc<Shared>, id: usize, first: (Sender, Conn)) -> WorkerOut {
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
fn lost(s: &Shared, call: &Call, why: String, entry: &mut OpCount) {
    entry.unexpected += 1;
    s.progress.transport.fetch_add(1, Ordering::Relaxed);
    s.progress.fail(s.started, &format!("{:?}", call.op), &call.request_line(), &why);
}

/// Reopens a connection that broke; a failure to connect is counted too.
async fn reconnect(s: &Shared) -> Option<(Sender, Conn)> {
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
async fn call(
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

fn b64_body(field: &str, bytes: &[u8]) -> Bytes {
    Bytes::from(serde_json::json!({ field: B64.encode(bytes) }).to_string())
}

/// Creates the long-lived keys and records a ciphertext and an HMAC of each.
async fn set_up(target: &Target, counts: &mut Counts, keys: usize, payload_size: usize) -> Result<Fixture> {
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

/// Audit lines counted, in total and per `response.code`.
#[derive(Debug, Default, Clone, Serialize)]
struct AuditTally {
    lines: u64,
    by_status: BTreeMap<u16, u64>,
    /// Lines without a readable `"code":` (never expected).
    unparsed: u64,
}

/// The `response.code` of a KES audit line, found without a JSON parse: a
/// 30-minute run writes tens of millions of lines.
fn status_of(line: &[u8]) -> Option<u16> {
    const KEY: &[u8] = b"\"code\":";
    let at = line.windows(KEY.len()).rposition(|w| w == KEY)? + KEY.len();
    let digits = line[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&line[at..at + digits]).ok()?.parse().ok()
}

impl AuditTally {
    fn count_file(&mut self, path: &Path) -> Result<()> {
        let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
        for line in std::io::BufReader::with_capacity(1 << 20, file).split(b'\n') {
            let line = line.with_context(|| format!("read {}", path.display()))?;
            if line.is_empty() {
                continue;
            }
            self.lines += 1;
            match status_of(&line) {
                Some(s) => *self.by_status.entry(s).or_default() += 1,
                None => self.unparsed += 1,
            }
        }
        Ok(())
    }
}

/// The audit-file sink's output directory. The sink opens its file by path
/// for every batch (creating it if missing), so renaming the file is a safe rotation:
/// a batch that opened it before the rename lands in the renamed file, later
/// ones in a new file. A renamed file is counted and removed one rotation
/// later, when no batch can still be writing to it.
struct AuditFiles {
    dir: PathBuf,
    pending: Vec<PathBuf>,
    rotations: u64,
    tally: AuditTally,
}

/// The sink's file for config generation `generation` (a new one per reload).
fn audit_file(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("audit-{generation}.jsonl"))
}

fn is_live_audit_file(p: &Path) -> bool {
    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
}

impl AuditFiles {
    fn live_files(&self) -> Result<Vec<PathBuf>> {
        let entries = std::fs::read_dir(&self.dir).with_context(|| format!("read {}", self.dir.display()))?;
        Ok(entries.flatten().map(|e| e.path()).filter(|p| is_live_audit_file(p)).collect())
    }

    fn count_pending(&mut self) -> Result<()> {
        for p in std::mem::take(&mut self.pending) {
            self.tally.count_file(&p)?;
            std::fs::remove_file(&p).with_context(|| format!("remove {}", p.display()))?;
        }
        Ok(())
    }

    /// Counts what was rotated last time and rotates the live files.
    fn rotate(&mut self) -> Result<()> {
        self.count_pending()?;
        for live in self.live_files()? {
            let rotated = self.dir.join(format!("rotated-{}.jsonl", self.rotations));
            self.rotations += 1;
            std::fs::rename(&live, &rotated).with_context(|| format!("rotate {}", live.display()))?;
            self.pending.push(rotated);
        }
        Ok(())
    }

    /// Counts everything left; only once the server has exited.
    fn finish(&mut self) -> Result<()> {
        self.count_pending()?;
        for live in self.live_files()? {
            self.tally.count_file(&live)?;
        }
        Ok(())
    }
}

/// One sample of the server while the traffic runs.
#[derive(Debug, Clone, Serialize)]
struct Sample {
    t_s: f64,
    rss_kib: u64,
    fds: u64,
    /// Informational (tokio's blocking pool grows and shrinks with plugin file I/O).
    threads: u64,
    responses: u64,
    rps: f64,
    unexpected: u64,
    provoked: u64,
    /// Audit lines counted so far (one rotation behind).
    audit_lines: u64,
    reloads: u64,
}

/// The leak rule for one figure: the median of the last three samples against
/// the median of the first three after the warm-up (see [`SoakArgs::warmup`]).
/// Medians, because a sample can land on a reload, while the old plugins are
/// still being torn down, and RSS moves in 2 MiB steps where the allocator's
/// arenas use transparent huge pages.
#[derive(Debug, Clone, Serialize)]
struct Growth {
    /// Time of the first reference sample.
    reference_at_s: f64,
    reference: f64,
    end: f64,
    max: f64,
    growth: f64,
    limit: f64,
    ok: bool,
}

/// `values` are `(time, value)` samples; `None` if there are too few after
/// `warmup` for a reference and an end that do not overlap.
fn growth(values: &[(f64, f64)], warmup: Duration, limit: impl Fn(f64) -> f64) -> Option<Growth> {
    let first = values.iter().position(|&(t, _)| t > warmup.as_secs_f64())?;
    if first + 6 > values.len() {
        return None;
    }
    let median = |v: &[(f64, f64)]| compare::median(v.iter().map(|&(_, x)| x).collect());
    let reference = median(&values[first..first + 3]);
    let end = median(&values[values.len() - 3..]);
    let limit = limit(reference);
    Some(Growth {
        reference_at_s: values[first].0,
        reference,
        end,
        max: values.iter().map(|&(_, x)| x).fold(0.0, f64::max),
        growth: end - reference,
        limit,
        ok: end - reference <= limit,
    })
}

/// How the server ended after SIGTERM.
#[derive(Debug, Default, Clone, Serialize)]
struct Shutdown {
    ms: f64,
    exit_code: Option<i32>,
    /// Exited by itself with status 0 within the limit.
    graceful: bool,
}

/// What the server's log says about reloads and problems.
#[derive(Debug, Default, Clone, Serialize)]
struct LogSummary {
    reloaded: u64,
    reload_failed: u64,
    warnings: u64,
    errors: u64,
    /// The first few WARN/ERROR lines.
    first: Vec<String>,
}

fn summarize_log(text: &str) -> LogSummary {
    let mut s = LogSummary::default();
    for line in text.lines() {
        s.reloaded += u64::from(line.contains("configuration reloaded"));
        s.reload_failed += u64::from(line.contains("reload failed"));
        let (warn, error) = (line.contains(" WARN "), line.contains(" ERROR "));
        s.warnings += u64::from(warn);
        s.errors += u64::from(error);
        if (warn || error) && s.first.len() < 5 {
            s.first.push(line.to_string());
        }
    }
    s
}

/// Everything the soak measured; printed as one JSON line.
#[derive(Debug, Default, Serialize)]
struct Report {
    date: String,
    keyward_version: String,
    pass: bool,
    reasons: Vec<String>,
    interrupted: bool,
    duration_s: f64,
    elapsed_s: f64,
    connections: usize,
    keys: usize,
    reload_every_s: f64,
    sample_every_s: f64,
    /// Samples up to here are not the leak rule's reference.
    warmup_s: f64,
    reloads: u64,
    reload_failures: u64,
    /// SIGHUP → the new audit sink's file exists.
    reload_ms_median: f64,
    reload_ms_max: f64,
    /// Every answer the soak received: readiness probes, set-up, traffic, metrics.
    responses: u64,
    traffic_responses: u64,
    rps: f64,
    unexpected: u64,
    transport_errors: u64,
    provoked: u64,
    /// Unexpected outcomes by kind ("<op>: <what was wrong>").
    failures: BTreeMap<String, FailureKind>,
    /// Operations left out of the mix.
    without: Vec<Op>,
    ops: BTreeMap<Op, OpCount>,
    latency_us: Latency,
    client_by_status: BTreeMap<u16, u64>,
    audit: AuditTally,
    /// `kes_log_audit_events` and `keyward_audit_dropped_events` just before shutdown.
    server_audit_events: Option<u64>,
    server_audit_dropped: Option<u64>,
    rss_kib: Option<Growth>,
    fds: Option<Growth>,
    /// After set-up, before the traffic's connections open; and after they
    /// closed, before shutdown: the same figure with every reload in between.
    rss_before_traffic_kib: Option<u64>,
    fds_before_traffic: Option<u64>,
    rss_after_traffic_kib: Option<u64>,
    fds_after_traffic: Option<u64>,
    shutdown: Shutdown,
    log: LogSummary,
    samples: Vec<Sample>,
}

/// The keyward under test: its process, config and current generation.
struct Keyward {
    server: Server,
    files: Files,
    config: PathBuf,
    audit_dir: PathBuf,
    generation: u64,
}

/// The config of generation `generation`: `compare`'s (plus `/v1/metrics`
/// for the final check) with the audit-file sink writing that generation's
/// file, so that every reload really builds a different sink.
fn config_text(files: &Files, port: u16, dir: &Path, generation: u64) -> String {
    let mut text = compare::base_config(files, port, &["/v1/key/*", "/v1/metrics"], &dir.join("keys"));
    text.push_str(&format!(
        "[[audit]]\nplugin = \"audit-file\"\n[audit.config]\npath = \"{}\"\n",
        audit_file(&dir.join("audit"), generation).display()
    ));
    text
}

impl Keyward {
    fn config_text(&self) -> String {
        config_text(&self.files, self.server.port, &self.server.dir, self.generation)
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill has no memory effects; the pid is our own child's.
        unsafe {
            libc::kill(self.server.pid() as libc::pid_t, signal);
        }
    }

    fn stderr_tail(&self) -> String {
        let text = self.server.stderr();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Rewrites the config with the next audit file and sends SIGHUP; returns
    /// once the new sink has opened its file, i.e. the plugins were rebuilt.
    async fn reload(&mut self) -> Result<Duration> {
        self.generation += 1;
        compare::write(&self.config, &self.config_text())?;
        let file = audit_file(&self.audit_dir, self.generation);
        let sent = Instant::now();
        self.signal(libc::SIGHUP);
        while !file.exists() {
            if sent.elapsed() > RELOAD_LIMIT {
                bail!("reload {}: no new audit sink within {RELOAD_LIMIT:?}", self.generation);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(sent.elapsed())
    }

    fn exited(&mut self) -> Result<Option<std::process::ExitStatus>> {
        Ok(self.server.child.try_wait()?)
    }

    /// SIGTERM, then waits (at most [`SHUTDOWN_LIMIT`]) for the exit.
    async fn shut_down(&mut self) -> Result<Shutdown> {
        let sent = Instant::now();
        self.signal(libc::SIGTERM);
        loop {
            if let Some(status) = self.exited()? {
                let ms = sent.elapsed().as_secs_f64() * 1e3;
                return Ok(Shutdown { ms, exit_code: status.code(), graceful: status.success() });
            }
            if sent.elapsed() > SHUTDOWN_LIMIT {
                let _ = self.server.child.kill();
                let _ = self.server.child.wait();
                return Ok(Shutdown { ms: sent.elapsed().as_secs_f64() * 1e3, exit_code: None, graceful: false });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Writes the first config and starts `keyward server --config` in `dir`.
fn start(keyward: &Path, files: Files, dir: &Path) -> Result<Keyward> {
    let audit_dir = dir.join("audit");
    std::fs::create_dir_all(&audit_dir)?;
    let port = compare::free_port()?;
    let config = dir.join("keyward.toml");
    compare::write(&config, &config_text(&files, port, dir, 0))?;
    let mut cmd = compare::command(keyward, None);
    cmd.arg("server").arg("--config").arg(&config).env("KEYWARD_CACHE_DIR", dir.join("cache"));
    let child = compare::spawn_logged(cmd, dir)?;
    let server = Server { name: "keyward".into(), child, port, dir: dir.to_path_buf() };
    Ok(Keyward { server, files, config, audit_dir, generation: 0 })
}

/// Polls `/version` until it answers 200 (every answer is audited, so each
/// is counted).
async fn wait_ready(k: &mut Keyward, config: Arc<rustls::ClientConfig>, counts: &mut Counts) -> Result<()> {
    let since = Instant::now();
    let name = ServerName::try_from("localhost").expect("valid name");
    loop {
        let probe = load::get_status(config.clone(), k.server.addr(), name.clone(), "/version");
        if let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(5), probe).await {
            counts.add(status);
            if status.is_success() {
                return Ok(());
            }
        }
        if let Some(status) = k.exited()? {
            bail!("keyward exited ({status}) before serving:\n{}", k.stderr_tail());
        }
        if since.elapsed() > Duration::from_secs(120) {
            bail!("keyward did not answer /version within 120 s:\n{}", k.stderr_tail());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One value of a Prometheus text exposition.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok()).map(|v| v as u64)
}

fn validate(args: &SoakArgs) -> Result<()> {
    Mix::new(&args.without)?;
    if args.connections == 0 || args.keys == 0 {
        bail!("--connections and --keys must be at least 1");
    }
    if args.sample_every.is_zero() {
        bail!("--sample-every must be more than 0");
    }
    let needed = args.sample_every * args.samples_needed();
    if args.duration < needed {
        bail!(
            "--duration must be at least {needed:?}: the warm-up ({:?}) and 6 samples (--sample-every {:?}) to judge growth",
            args.warmup(),
            args.sample_every
        );
    }
    Ok(())
}

/// Runs the soak; `Ok(pass)`, or `Err` if it could not run at all.
pub async fn run(args: &SoakArgs) -> Result<bool> {
    validate(args)?;
    let keyward = compare::keyward_binary(args.keyward.as_deref())?;
    let dir = std::env::temp_dir().join(format!("keyward-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let files = compare::make_files(&dir)?;
    let outcome = soak(args, &keyward, files, &dir).await;
    let keep = args.keep || !matches!(outcome, Ok(true));
    if keep {
        eprintln!("soak: kept {} (config, server log stderr.log, keystore)", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    outcome
}

/// The traffic, the reloads and the samples, until the duration is up or an
/// interrupt; then the stop, shutdown and audit count.
async fn soak(args: &SoakArgs, keyward_bin: &Path, files: Files, dir: &Path) -> Result<bool> {
    let client = crate::tls::client_config(Some(&files.server_cert), &files.client_cert, &files.client_key, false)?;
    let mut k = start(keyward_bin, files, dir)?;
    let mut counts = Counts::default();
    wait_ready(&mut k, client.clone(), &mut counts).await?;
    let target = Target {
        connector: TlsConnector::from(client),
        addr: k.server.addr(),
        server_name: ServerName::try_from("localhost").expect("valid name"),
        authority: format!("127.0.0.1:{}", k.server.port),
        timeout: args.timeout,
    };
    let fixture = set_up(&target, &mut counts, args.keys, args.payload_size).await?;
    // Give the server a moment to close the set-up connection.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = (procfs::rss_kib(k.server.pid()), procfs::fd_count(k.server.pid()));
    let mut conns = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        conns.push(target.connect().await?);
    }
    eprintln!(
        "soak: keyward pid {} on {}, {} keys, {} connections, {:?}, reload every {:?}",
        k.server.pid(),
        target.addr,
        args.keys,
        args.connections,
        args.duration,
        args.reload_every
    );
    let shared = Arc::new(Shared {
        target,
        fixture,
        mix: Mix::new(&args.without)?,
        progress: Progress::default(),
        stop: AtomicBool::new(false),
        started: Instant::now(),
    });
    let workers: Vec<_> =
        conns.into_iter().enumerate().map(|(i, c)| tokio::spawn(traffic(shared.clone(), i, c))).collect();
    let mut run = Run::new(args, k, shared, keyward_bin);
    (run.report.rss_before_traffic_kib, run.report.fds_before_traffic) = before;
    let controlled = run.control().await;
    run.s.stop.store(true, Ordering::Relaxed);
    run.report.elapsed_s = run.s.started.elapsed().as_secs_f64();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds");
    for w in workers {
        let out = w.await.context("traffic task panicked")?;
        counts.merge(&out.counts);
        hist.add(&out.hist).expect("same bounds");
        for (op, c) in out.ops {
            let e = run.report.ops.entry(op).or_default();
            e.ok += c.ok;
            e.unexpected += c.unexpected;
        }
    }
    controlled?;
    run.finish(counts, &hist).await
}

/// The soak once the traffic runs: the server, the shared counters, the
/// audit files and the report being filled in.
struct Run<'a> {
    args: &'a SoakArgs,
    k: Keyward,
    s: Arc<Shared>,
    audit: AuditFiles,
    report: Report,
    reload_ms: Vec<f64>,
    /// Time and response count of the previous sample, for its rate.
    last: (Instant, u64),
}

impl<'a> Run<'a> {
    fn new(args: &'a SoakArgs, k: Keyward, s: Arc<Shared>, keyward_bin: &Path) -> Run<'a> {
        let audit =
            AuditFiles { dir: k.audit_dir.clone(), pending: Vec::new(), rotations: 0, tally: AuditTally::default() };
        let report = Report {
            date: compare::now_rfc3339(),
            keyward_version: version(keyward_bin),
            duration_s: args.duration.as_secs_f64(),
            connections: args.connections,
            keys: args.keys,
            reload_every_s: args.reload_every.as_secs_f64(),
            sample_every_s: args.sample_every.as_secs_f64(),
            without: args.without.clone(),
            ..Report::default()
        };
        let last = (s.started, 0);
        Run { args, k, s, audit, report, reload_ms: Vec::new(), last }
    }

    /// Samples and reloads on schedule until the end or an interrupt
    /// (SIGINT/SIGTERM), which ends the traffic early.
    async fn control(&mut self) -> Result<()> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let (args, started) = (self.args, self.s.started);
        let end = started + args.duration;
        let mut next_sample = started + args.sample_every;
        let never = end + Duration::from_secs(3600);
        let mut next_reload = if args.reload_every.is_zero() { never } else { started + args.reload_every };
        loop {
            let next = next_sample.min(next_reload).min(end);
            tokio::select! {
                _ = tokio::time::sleep_until(next.into()) => {}
                _ = tokio::signal::ctrl_c() => self.report.interrupted = true,
                _ = term.recv() => self.report.interrupted = true,
            }
            if self.report.interrupted {
                eprintln!("soak: interrupted; stopping the traffic and shutting the server down");
                return Ok(());
            }
            let now = Instant::now();
            if now >= next_sample {
                let sample = self.take_sample()?;
                print_sample(&sample);
                self.report.samples.push(sample);
                next_sample += args.sample_every;
            }
            if now >= end {
                return Ok(());
            }
            if now >= next_reload {
                self.reload().await;
                next_reload += args.reload_every;
            }
        }
    }

    async fn reload(&mut self) {
        self.report.reloads += 1;
        match self.k.reload().await {
            Ok(took) => self.reload_ms.push(took.as_secs_f64() * 1e3),
            Err(e) => {
                self.report.reload_failures += 1;
                eprintln!("soak: {e:#}\n{}", self.k.stderr_tail());
            }
        }
    }

    fn take_sample(&mut self) -> Result<Sample> {
        if let Some(status) = self.k.exited()? {
            bail!("keyward exited during the soak ({status}):\n{}", self.k.stderr_tail());
        }
        let pid = self.k.server.pid();
        let (rss_kib, fds) = (procfs::rss_kib(pid).unwrap_or(0), procfs::fd_count(pid).unwrap_or(0));
        let threads = procfs::threads(pid).unwrap_or(0);
        self.audit.rotate()?;
        let now = Instant::now();
        let p = &self.s.progress;
        let responses = p.responses.load(Ordering::Relaxed);
        let rps = (responses - self.last.1) as f64 / (now - self.last.0).as_secs_f64().max(1e-9);
        self.last = (now, responses);
        Ok(Sample {
            t_s: (now - self.s.started).as_secs_f64(),
            rss_kib,
            fds,
            threads,
            responses,
            rps,
            unexpected: p.unexpected.load(Ordering::Relaxed),
            provoked: p.provoked.load(Ordering::Relaxed),
            audit_lines: self.audit.tally.lines,
            reloads: self.report.reloads,
        })
    }

    /// After the traffic: metrics, graceful shutdown, the audit count, the verdict.
    async fn finish(mut self, mut counts: Counts, hist: &Histogram<u64>) -> Result<bool> {
        let pid = self.k.server.pid();
        // The server notices the traffic's connections closing a moment later.
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.report.rss_after_traffic_kib = procfs::rss_kib(pid);
        self.report.fds_after_traffic = procfs::fd_count(pid);
        let target = &self.s.target;
        let mut c = target.connect().await?;
        let metrics = call(&mut c, target, &mut counts, Method::GET, "/v1/metrics", Bytes::new()).await?;
        drop(c);
        let metrics = String::from_utf8_lossy(&metrics);
        self.report.server_audit_events = metric(&metrics, "kes_log_audit_events");
        self.report.server_audit_dropped = metric(&metrics, "keyward_audit_dropped_events");
        self.report.shutdown = self.k.shut_down().await?;
        self.audit.finish()?;
        self.report.audit = self.audit.tally.clone();
        self.report.log = summarize_log(&self.k.server.stderr());
        self.fill_in(counts, hist);
        let r = &mut self.report;
        r.reasons = verdict(r);
        r.pass = r.reasons.is_empty();
        println!("{}", summary(r));
        println!("{}", serde_json::to_string(r)?);
        Ok(r.pass)
    }

    /// The figures of the report that come from the counters and samples.
    fn fill_in(&mut self, counts: Counts, hist: &Histogram<u64>) {
        let (p, r, args) = (&self.s.progress, &mut self.report, self.args);
        r.traffic_responses = p.responses.load(Ordering::Relaxed);
        r.rps = r.traffic_responses as f64 / r.elapsed_s.max(1e-9);
        r.unexpected = p.unexpected.load(Ordering::Relaxed);
        r.transport_errors = p.transport.load(Ordering::Relaxed);
        r.provoked = p.provoked.load(Ordering::Relaxed);
        r.failures = p.failures.lock().unwrap().clone();
        r.responses = counts.total();
        r.client_by_status = counts.by_status;
        r.latency_us = latency(hist);
        r.reload_ms_median = compare::median(self.reload_ms.clone());
        r.reload_ms_max = self.reload_ms.iter().copied().fold(f64::NAN, f64::max);
        let rss: Vec<(f64, f64)> = r.samples.iter().map(|x| (x.t_s, x.rss_kib as f64)).collect();
        let fds: Vec<(f64, f64)> = r.samples.iter().map(|x| (x.t_s, x.fds as f64)).collect();
        let warmup = args.warmup();
        r.warmup_s = warmup.as_secs_f64();
        let rss_limit = |base: f64| (args.rss_tolerance_mib * 1024.0).max(base * args.rss_tolerance_pct / 100.0);
        r.rss_kib = growth(&rss, warmup, rss_limit);
        r.fds = growth(&fds, warmup, |_| args.fd_tolerance as f64);
    }
}

fn print_sample(x: &Sample) {
    println!(
        "[{:>5.0} s] RSS {:>6.1} MiB  fds {:>4}  threads {:>3}  responses {:>10} ({:>6.0}/s)  unexpected {}  provoked {}  audit lines {}  reloads {}",
        x.t_s,
        compare::mib(x.rss_kib),
        x.fds,
        x.threads,
        x.responses,
        x.rps,
        x.unexpected,
        x.provoked,
        x.audit_lines,
        x.reloads
    );
}

fn latency(hist: &Histogram<u64>) -> Latency {
    if hist.is_empty() {
        return Latency::default();
    }
    Latency {
        min: hist.min() as f64,
        mean: hist.mean(),
        p50: hist.value_at_quantile(0.50) as f64,
        p90: hist.value_at_quantile(0.90) as f64,
        p99: hist.value_at_quantile(0.99) as f64,
        p999: hist.value_at_quantile(0.999) as f64,
        max: hist.max() as f64,
    }
}

/// Why the soak failed; empty if it passed.
fn verdict(r: &Report) -> Vec<String> {
    let mut why = Vec::new();
    if r.interrupted {
        why.push(format!("interrupted after {:.0} s of {:.0} s", r.elapsed_s, r.duration_s));
    }
    if r.unexpected > 0 {
        why.push(format!(
            "{} unexpected answers or lost requests ({} without an answer)",
            r.unexpected, r.transport_errors
        ));
    }
    if r.audit.lines != r.responses {
        why.push(format!(
            "{} audit lines for {} answered requests (server recorded {:?} events, dropped {:?})",
            r.audit.lines, r.responses, r.server_audit_events, r.server_audit_dropped
        ));
    } else if r.audit.by_status != r.client_by_status || r.audit.unparsed > 0 {
        why.push(format!(
            "audit lines per status {:?} (+{} unreadable) differ from the answers {:?}",
            r.audit.by_status, r.audit.unparsed, r.client_by_status
        ));
    }
    match &r.rss_kib {
        Some(g) if !g.ok => why.push(format!(
            "RSS grew {:.1} MiB ({:.1} → {:.1} MiB), more than {:.1} MiB",
            g.growth / 1024.0,
            g.reference / 1024.0,
            g.end / 1024.0,
            g.limit / 1024.0
        )),
        Some(_) => {}
        None => why.push(format!("too few samples after the {:.0} s warm-up: growth not judged", r.warmup_s)),
    }
    if let Some(g) = r.fds.as_ref().filter(|g| !g.ok) {
        why.push(format!(
            "open descriptors grew by {:.0} ({:.0} → {:.0}), more than {:.0}",
            g.growth, g.reference, g.end, g.limit
        ));
    }
    if r.reload_failures > 0 || r.log.reload_failed > 0 {
        why.push(format!(
            "{} reloads did not complete ({} 'reload failed' in the log)",
            r.reload_failures, r.log.reload_failed
        ));
    }
    if !r.shutdown.graceful {
        why.push(format!("no graceful shutdown (exit code {:?} after {:.0} ms)", r.shutdown.exit_code, r.shutdown.ms));
    }
    why
}

fn summary(r: &Report) -> String {
    let mut o = format!(
        "soak: {:.0} s, {} connections, {} keys: {} answers ({} traffic, {:.0}/s), {} unexpected ({} without an answer), {} provoked\n",
        r.elapsed_s, r.connections, r.keys, r.responses, r.traffic_responses, r.rps, r.unexpected, r.transport_errors, r.provoked
    );
    o.push_str(&format!(
        "latency µs: p50 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}\n",
        r.latency_us.p50, r.latency_us.p99, r.latency_us.p999, r.latency_us.max
    ));
    o.push_str(&format!(
        "reloads: {} ({} failed; server logged {} 'configuration reloaded'), SIGHUP → new sink median {:.0} ms, max {:.0} ms\n",
        r.reloads, r.reload_failures, r.log.reloaded, r.reload_ms_median, r.reload_ms_max
    ));
    o.push_str(&format!(
        "audit: {} lines for {} answers; per status {:?} vs {:?}; server counted {:?} before the final metrics request, dropped {:?}\n",
        r.audit.lines,
        r.responses,
        r.audit.by_status,
        r.client_by_status,
        r.server_audit_events,
        r.server_audit_dropped
    ));
    if let Some(g) = &r.rss_kib {
        o.push_str(&format!(
            "RSS: {:.1} MiB at {:.0} s (after the warm-up) → {:.1} MiB at the end ({:+.1} MiB, limit +{:.1}), max {:.1} MiB\n",
            g.reference / 1024.0,
            g.reference_at_s,
            g.end / 1024.0,
            g.growth / 1024.0,
            g.limit / 1024.0,
            g.max / 1024.0
        ));
    }
    if let (Some(a), Some(b)) = (r.fds_before_traffic, r.fds_after_traffic) {
        o.push_str(&format!("fds with no client connected: {a} before the traffic, {b} after it\n"));
    }
    if let Some(g) = &r.fds {
        o.push_str(&format!(
            "fds: {:.0} at {:.0} s → {:.0} at the end ({:+.0}, limit +{:.0}), max {:.0}\n",
            g.reference, g.reference_at_s, g.end, g.growth, g.limit, g.max
        ));
    }
    o.push_str(&format!(
        "shutdown: exit code {:?} after {:.0} ms; server log: {} warnings, {} errors\n",
        r.shutdown.exit_code, r.shutdown.ms, r.log.warnings, r.log.errors
    ));
    for (kind, f) in &r.failures {
        o.push_str(&format!("  {} × {kind} (first at {:.1} s)\n", f.count, f.first_at_s));
    }
    for line in &r.log.first {
        o.push_str(&format!("  server: {line}\n"));
    }
    if r.pass {
        o.push_str("PASS");
    } else {
        o.push_str(&format!("FAIL: {}", r.reasons.join("; ")));
    }
    o
}

fn version(keyward: &Path) -> String {
    std::process::Command::new(keyward)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_adds_up_and_every_op_is_drawn() {
        let mix = Mix::new(&[]).unwrap();
        assert_eq!(mix.total, 10_000);
        let drawn: std::collections::BTreeSet<Op> = (0..mix.total).map(|d| mix.pick(d)).collect();
        assert_eq!(drawn.len(), MIX.len());
        let less = Mix::new(&[Op::List]).unwrap();
        assert!((0..less.total).all(|d| less.pick(d) != Op::List));
        assert!(Mix::new(&[Op::Create]).is_err());
        let provoked = MIX.iter().filter(|(op, _)| op.provoked()).map(|(_, w)| w).sum::<u32>();
        assert_eq!(provoked, 300);
    }

    #[test]
    fn churn_stays_bounded() {
        let f = Fixture {
            names: vec!["soak-k-0".into()],
            encrypt_body: Bytes::new(),
            plaintext_b64: String::new(),
            hmac_body: Bytes::new(),
            decrypt_bodies: vec![Bytes::new()],
            hmacs: vec![String::new()],
            garbage_body: Bytes::new(),
        };
        let mut w = Worker::new(3);
        let mix = Mix::new(&[]).unwrap();
        for _ in 0..100_000 {
            let call = w.plan(&f, &mix);
            w.own.extend(call.created);
            assert!(w.own.len() <= CHURN_KEYS_PER_CONNECTION);
        }
    }

    #[test]
    fn audit_status_is_read_from_the_line() {
        let line = br#"{"time":"2024-01-01T00:00:00Z","request":{"ip":"127.0.0.1","path":"/v1/key/describe/x","identity":"ab"},"response":{"code":404,"time":3000}}"#;
        assert_eq!(status_of(line), Some(404));
        assert_eq!(status_of(b"{}"), None);
    }

    #[test]
    fn rotation_counts_every_line_once() {
        let dir = std::env::temp_dir().join(format!("keyward-soak-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let line = r#"{"response":{"code":200,"time":1}}"#;
        let mut a = AuditFiles { dir: dir.clone(), pending: Vec::new(), rotations: 0, tally: AuditTally::default() };
        std::fs::write(audit_file(&dir, 0), format!("{line}\n{line}\n")).unwrap();
        a.rotate().unwrap();
        assert_eq!(a.tally.lines, 0, "counted one rotation later");
        std::fs::write(audit_file(&dir, 1), format!("{line}\n")).unwrap();
        a.rotate().unwrap();
        assert_eq!(a.tally.lines, 2);
        std::fs::write(audit_file(&dir, 1), format!("{}\n", line.replace("200", "400"))).unwrap();
        a.finish().unwrap();
        assert_eq!(a.tally.lines, 4);
        assert_eq!(a.tally.by_status, BTreeMap::from([(200, 3), (400, 1)]));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn growth_rule() {
        let timed = |v: &[f64]| v.iter().enumerate().map(|(i, &x)| ((i + 1) as f64 * 10.0, x)).collect::<Vec<_>>();
        let s10 = Duration::from_secs(10);
        let flat = timed(&[10.0, 20.0, 21.0, 20.0, 22.0, 21.0, 20.0, 21.0]);
        let g = growth(&flat, s10, |_| 1.0).unwrap();
        assert_eq!((g.reference_at_s, g.reference, g.end), (20.0, 20.0, 21.0));
        assert!(g.ok);
        let leak = timed(&[10.0, 20.0, 21.0, 20.0, 25.0, 30.0, 35.0, 40.0]);
        assert!(!growth(&leak, s10, |_| 5.0).unwrap().ok);
        assert!(growth(&leak[..6], s10, |_| 5.0).is_none());
        // A warm-up that ends later moves the reference: a climb that levels off passes.
        let levels_off = timed(&[10.0, 20.0, 30.0, 40.0, 41.0, 40.0, 42.0, 41.0, 40.0, 41.0]);
        assert!(!growth(&levels_off, s10, |_| 5.0).unwrap().ok);
        let g = growth(&levels_off, Duration::from_secs(30), |_| 5.0).unwrap();
        assert_eq!((g.reference_at_s, g.reference), (40.0, 40.0));
        assert!(g.ok);
    }

    #[test]
    fn listing_must_hold_exactly_the_stable_keys() {
        let f = Fixture {
            names: vec!["soak-k-0".into(), "soak-k-1".into()],
            encrypt_body: Bytes::new(),
            plaintext_b64: String::new(),
            hmac_body: Bytes::new(),
            decrypt_bodies: Vec::new(),
            hmacs: Vec::new(),
            garbage_body: Bytes::new(),
        };
        assert!(f.verify_listing(b"{\"name\":\"soak-k-0\"}\n{\"name\":\"soak-k-1\"}\n").is_ok());
        assert!(f.verify_listing(b"{\"name\":\"soak-k-0\"}\n").is_err());
        assert!(f.verify_listing(b"{\"name\":\"soak-k-0\"}\n{\"name\":\"soak-c1-1\"}\n").is_err());
    }
}
