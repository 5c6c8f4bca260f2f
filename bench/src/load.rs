//! `keyward-bench load`: a closed-loop HTTPS load generator with client
//! certificates and keep-alive, for any KES-compatible server.
//!
//! Each connection is one hyper HTTP/1.1 connection over tokio-rustls that
//! sends its next request as soon as the previous response body has been read.
//! Latency is measured per request from just before sending to the last byte
//! of the body, into an HDR histogram per connection (merged at the end).
//! Connections are opened before the clock starts; the warm-up runs on the same
//! connections and is not counted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rand::RngCore;
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::procfs;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    Encrypt,
    Decrypt,
    Generate,
    Hmac,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Encrypt => "encrypt",
            Route::Decrypt => "decrypt",
            Route::Generate => "generate",
            Route::Hmac => "hmac",
        }
    }
}

#[derive(clap::Args, Clone, Debug)]
pub struct LoadArgs {
    /// Server base URL, e.g. https://127.0.0.1:7373. Given more than once,
    /// the servers take turns (see --slice) and each gets its own report.
    #[arg(long, required = true)]
    pub url: Vec<String>,
    /// CA certificate (PEM) that signed the server certificate.
    #[arg(long)]
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM).
    #[arg(long)]
    pub cert: PathBuf,
    /// Client private key (PEM).
    #[arg(long)]
    pub key: PathBuf,
    /// Do not verify the server certificate.
    #[arg(long)]
    pub insecure: bool,
    /// TLS server name to verify (default: the URL's host).
    #[arg(long)]
    pub server_name: Option<String>,
    #[arg(long, value_enum, default_value = "encrypt")]
    pub route: Route,
    /// Key name the requests use (created first unless --no-create).
    #[arg(long, default_value = "keyward-bench")]
    pub key_name: String,
    /// Spread requests round-robin over N keys named `<key-name>-<i>` (not for decrypt).
    #[arg(long)]
    pub keys: Option<u64>,
    /// Do not create the key(s) first.
    #[arg(long)]
    pub no_create: bool,
    /// Plaintext (encrypt/decrypt) or message (hmac) size in bytes.
    #[arg(long, default_value_t = 64)]
    pub payload_size: usize,
    /// Concurrent keep-alive connections, one request in flight on each.
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// How long to measure (after the warm-up).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub duration: Duration,
    /// Measure this many requests instead of a duration.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Warm-up before measuring (same connections, not counted).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub warmup: Duration,
    /// Per-request timeout.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub timeout: Duration,
    /// Runtime worker threads of the load generator (default: one per CPU).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also report CPU time per request and peak RSS of this server process
    /// (once per --url, in the same order).
    #[arg(long)]
    pub server_pid: Vec<u32>,
    /// A label copied into the JSON line (once per --url, in the same order).
    #[arg(long)]
    pub label: Vec<String>,
    /// With several --url: how long each server's turn lasts. The turns
    /// rotate until every server has been measured for --duration.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "250ms")]
    pub slice: Duration,
    /// With several --url: the start of each turn that is not measured.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "50ms")]
    pub settle: Duration,
    /// Print only the JSON line.
    #[arg(long)]
    pub json: bool,
}

/// Latency figures in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// Everything one run measured; printed as one JSON line.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub label: Option<String>,
    pub url: String,
    pub route: String,
    pub payload_size: usize,
    pub connections: usize,
    pub keys: u64,
    /// Length of the measured window in seconds.
    pub seconds: f64,
    /// Successful requests completed in the window.
    pub requests: u64,
    /// Failed requests (non-2xx or transport errors) in the window.
    pub errors: u64,
    pub rps: f64,
    pub latency_us: Latency,
    /// Requests sent in total, warm-up included.
    pub total_requests: u64,
    /// Errors in total, warm-up included.
    pub total_errors: u64,
    /// Requests of the set-up before them (creating the keys, the ciphertext
    /// for decrypt, the probe), all answered: a server that audits every
    /// request logs `total_requests + setup_requests`.
    #[serde(default)]
    pub setup_requests: u64,
    pub first_error: Option<String>,
    /// CPU time the load generator itself used per measured request.
    pub client_cpu_us_per_req: f64,
    /// CPU cores the load generator kept busy during the window.
    pub client_cores: f64,
    pub server_pid: Option<u32>,
    pub server_cpu_us_per_req: Option<f64>,
    /// The server's CPU per request by thread name (threads alive at both
    /// ends of the window): request workers vs an audit writer, for example.
    #[serde(default)]
    pub server_cpu_us_per_req_by_thread: BTreeMap<String, f64>,
    pub server_cores: Option<f64>,
    pub server_rss_kib_max: Option<u64>,
    pub server_rss_kib_end: Option<u64>,
    /// CPU cores busy on the whole machine during the window.
    pub machine_cores: Option<f64>,
    /// What of `machine_cores` neither the load generator nor the servers
    /// it drove used: other load that disturbed the run.
    #[serde(default)]
    pub other_cores: Option<f64>,
}

/// Where requests go and how connections to it are opened; `soak` drives
/// its own traffic over the same connections.
pub struct Target {
    pub connector: TlsConnector,
    pub addr: SocketAddr,
    pub server_name: ServerName<'static>,
    /// The `Host` header of every request.
    pub authority: String,
    /// Bound on opening a connection (TCP, TLS and HTTP handshakes) and, in
    /// `load`, on each request.
    pub timeout: Duration,
}

/// One server being driven: where requests go and what they carry.
struct Shared {
    target: Target,
    route: Route,
    key_name: String,
    keys: u64,
    body: Bytes,
    path: String,
    /// Requests-mode budget of measured requests still to send.
    remaining: Option<AtomicU64>,
    issued: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// Requests the set-up sent, see [`Report::setup_requests`].
    setup_requests: u64,
}

/// When requests count: those completed in `[start, end)`; the workers stop
/// sending at `end` (or when the requests budget is spent).
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    end: Option<Instant>,
}

/// One keep-alive connection; a worker that finds it broken opens a new one.
struct Link {
    sender: Sender,
    conn: Conn,
    broken: bool,
}

/// What a stretch of load counted, per connection and merged.
struct Tally {
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
    /// Requests sent, counted or not (warm-up, settle).
    total: u64,
    total_errors: u64,
    last_done: Option<Instant>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            hist: Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("histogram bounds"),
            ok: 0,
            errors: 0,
            total: 0,
            total_errors: 0,
            last_done: None,
        }
    }

    fn add(&mut self, other: &Tally) {
        self.hist.add(&other.hist).expect("same bounds");
        self.ok += other.ok;
        self.errors += other.errors;
        self.total += other.total;
        self.total_errors += other.total_errors;
        self.last_done = self.last_done.max(other.last_done);
    }
}

pub type Sender = SendRequest<Full<Bytes>>;
pub type Conn =
    Pin<Box<hyper::client::conn::http1::Connection<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>, Full<Bytes>>>>;

impl Target {
    /// Opens a connection. The caller polls the returned connection future in
    /// the same task as it sends (see [`exchange`]), so a request costs no
    /// cross-task wake-ups in the load generator.
    pub async fn connect(&self) -> Result<(Sender, Conn)> {
        tokio::time::timeout(self.timeout, self.connect_inner())
            .await
            .map_err(|_| anyhow!("connecting to {} timed out after {:?}", self.addr, self.timeout))?
    }

    async fn connect_inner(&self) -> Result<(Sender, Conn)> {
        let tcp = TcpStream::connect(self.addr).await.with_context(|| format!("connect {}", self.addr))?;
        tcp.set_nodelay(true)?;
        let tls = self.connector.connect(self.server_name.clone(), tcp).await.context("TLS handshake")?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        Ok((sender, Box::pin(conn)))
    }
}

/// Sends one request while driving its connection; `Err` means the
/// connection is unusable.
pub async fn exchange(sender: &mut Sender, conn: &mut Conn, req: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes)> {
    tokio::select! {
        biased;
        r = send(sender, req) => r,
        r = conn.as_mut() => match r {
            Ok(()) => bail!("connection closed by the server"),
            Err(e) => Err(e.into()),
        },
    }
}

fn request(authority: &str, path: &str, body: Bytes) -> Request<Full<Bytes>> {
    request_with(Method::PUT, authority, path, body)
}

/// A request with a JSON body (empty for GET and DELETE).
pub fn request_with(method: Method, authority: &str, path: &str, body: Bytes) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .expect("valid request")
}

/// Sends one request; `Err` means the connection is unusable.
async fn send(sender: &mut Sender, req: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes)> {
    sender.ready().await?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

fn note_error(s: &Shared, msg: impl FnOnce() -> String) {
    let mut first = s.first_error.lock().unwrap();
    if first.is_none() {
        *first = Some(msg());
    }
}

/// One connection in closed loop until the window ends; the connection
/// comes back for the next stretch of load.
async fn worker(s: Arc<Shared>, w: Window, mut link: Link) -> (Tally, Link) {
    let mut r = Tally::new();
    loop {
        let now = Instant::now();
        if w.end.is_some_and(|end| now >= end) {
            break;
        }
        if let Some(remaining) = &s.remaining {
            if now >= w.start {
                // Take one request from the budget; stop when it is spent.
                if remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_err() {
                    break;
                }
            }
        }
        if link.broken {
            match s.target.connect().await {
                Ok((sender, conn)) => link = Link { sender, conn, broken: false },
                Err(e) => {
                    r.total += 1;
                    r.total_errors += 1;
                    if Instant::now() >= w.start {
                        r.errors += 1;
                    }
                    note_error(&s, || format!("reconnect: {e:#}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let n = s.issued.fetch_add(1, Ordering::Relaxed);
        let req = if s.keys > 1 {
            let path = format!("/v1/key/{}/{}-{}", s.route.as_str(), s.key_name, n % s.keys);
            request(&s.target.authority, &path, s.body.clone())
        } else {
            request(&s.target.authority, &s.path, s.body.clone())
        };
        let start = Instant::now();
        let outcome = tokio::time::timeout(s.target.timeout, exchange(&mut link.sender, &mut link.conn, req)).await;
        let done = Instant::now();
        r.total += 1;
        let ok = match outcome {
            Ok(Ok((status, _))) if status.is_success() => true,
            Ok(Ok((status, body))) => {
                note_error(&s, || format!("HTTP {status}: {}", String::from_utf8_lossy(&body)));
                false
            }
            Ok(Err(e)) => {
                note_error(&s, || format!("transport: {e:#}"));
                link.broken = true;
                false
            }
            Err(_) => {
                note_error(&s, || format!("timeout after {:?}", s.target.timeout));
                link.broken = true;
                false
            }
        };
        if !ok {
            r.total_errors += 1;
        }
        let in_window = done >= w.start && w.end.is_none_or(|end| done < end);
        if in_window {
            if ok {
                r.ok += 1;
                let ns = (done - start).as_nanos().min(u128::from(u64::MAX)) as u64;
                r.hist.saturating_record(ns.max(1));
            } else {
                r.errors += 1;
            }
            r.last_done = Some(done);
        }
    }
    (r, link)
}

/// Keeps every connection to one server busy through `w`: returns the
/// connections and what the window counted.
async fn drive(s: &Arc<Shared>, links: Vec<Link>, w: Window) -> Result<(Vec<Link>, Tally)> {
    let handles: Vec<_> = links.into_iter().map(|link| tokio::spawn(worker(s.clone(), w, link))).collect();
    let mut tally = Tally::new();
    let mut links = Vec::with_capacity(handles.len());
    for h in handles {
        let (t, link) = h.await.context("worker panicked")?;
        tally.add(&t);
        links.push(link);
    }
    Ok((links, tally))
}

const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The connection the set-up runs on, counting its requests.
struct Setup {
    conn: (Sender, Conn),
    authority: String,
    requests: u64,
}

impl Setup {
    /// Sends one set-up request (`PUT path`) and returns status and body.
    async fn call(&mut self, path: &str, body: Bytes) -> Result<(StatusCode, Bytes)> {
        let (sender, conn) = &mut self.conn;
        let answer = tokio::time::timeout(SETUP_TIMEOUT, exchange(sender, conn, request(&self.authority, path, body)))
            .await
            .map_err(|_| anyhow!("PUT {path} timed out after {SETUP_TIMEOUT:?}"))??;
        self.requests += 1;
        Ok(answer)
    }

    /// Creates the keys; one that exists already is fine.
    async fn create_keys(&mut self, names: &[String]) -> Result<()> {
        for k in names {
            let (status, body) = self.call(&format!("/v1/key/create/{k}"), Bytes::new()).await?;
            // 400/409: the key exists already (KES answers 400 "key already exists").
            if !status.is_success() && status != StatusCode::BAD_REQUEST && status != StatusCode::CONFLICT {
                bail!("creating key {k}: HTTP {status}: {}", String::from_utf8_lossy(&body));
            }
        }
        Ok(())
    }

    /// The body every request of `route` sends: for decrypt, a ciphertext the
    /// server makes of the payload with `key`.
    async fn body(&mut self, route: Route, key: &str, payload: &[u8]) -> Result<Bytes> {
        Ok(match route {
            Route::Encrypt => b64_field("plaintext", payload),
            Route::Hmac => b64_field("message", payload),
            Route::Generate => Bytes::from_static(b"{}"),
            Route::Decrypt => {
                let path = format!("/v1/key/encrypt/{key}");
                let (status, body) = self.call(&path, b64_field("plaintext", payload)).await?;
                if !status.is_success() {
                    bail!("encrypt (to get a ciphertext): HTTP {status}: {}", String::from_utf8_lossy(&body));
                }
                #[derive(Deserialize)]
                struct Enc {
                    ciphertext: String,
                }
                let enc: Enc = serde_json::from_slice(&body).context("encrypt response")?;
                Bytes::from(serde_json::json!({ "ciphertext": enc.ciphertext }).to_string())
            }
        })
    }
}

fn b64_field(name: &str, bytes: &[u8]) -> Bytes {
    Bytes::from(serde_json::json!({ name: B64.encode(bytes) }).to_string())
}

/// Connects to the server at `url`, creates the key(s), builds the request
/// body, sends one probe request and opens every connection.
async fn prepare(args: &LoadArgs, url: &str) -> Result<(Arc<Shared>, Vec<Link>)> {
    let keys = args.keys.unwrap_or(1).max(1);
    let uri: http::Uri = url.parse().with_context(|| format!("invalid --url {url}"))?;
    if uri.scheme_str() != Some("https") {
        bail!("--url must be https://");
    }
    let host = uri.host().ok_or_else(|| anyhow!("--url has no host"))?.trim_matches(['[', ']']).to_string();
    let port = uri.port_u16().unwrap_or(443);
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .with_context(|| format!("resolve {host}"))?
        .next()
        .ok_or_else(|| anyhow!("{host} does not resolve"))?;
    let name = args.server_name.clone().unwrap_or_else(|| host.clone());
    let server_name = ServerName::try_from(name.clone()).map_err(|_| anyhow!("invalid server name {name}"))?;
    let config = crate::tls::client_config(args.cacert.as_deref(), &args.cert, &args.key, args.insecure)?;
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or_else(|| format!("{host}:{port}"));
    let target = Target { connector: TlsConnector::from(config), addr, server_name, authority, timeout: args.timeout };

    // Set-up on one connection: create the key(s), build the request body.
    let mut setup = Setup { conn: target.connect().await?, authority: target.authority.clone(), requests: 0 };
    let key_names: Vec<String> = if keys > 1 {
        (0..keys).map(|i| format!("{}-{i}", args.key_name)).collect()
    } else {
        vec![args.key_name.clone()]
    };
    if !args.no_create {
        setup.create_keys(&key_names).await?;
    }
    let mut payload = vec![0u8; args.payload_size];
    rand::thread_rng().fill_bytes(&mut payload);
    let body = setup.body(args.route, &args.key_name, &payload).await?;
    // One request of the real route, so a misconfiguration fails loudly here.
    let path = format!("/v1/key/{}/{}", args.route.as_str(), args.key_name);
    let probe_path = if keys > 1 { format!("/v1/key/{}/{}", args.route.as_str(), key_names[0]) } else { path.clone() };
    let (status, answer) = setup.call(&probe_path, body.clone()).await?;
    if !status.is_success() {
        bail!("{} {probe_path}: HTTP {status}: {}", args.route.as_str(), String::from_utf8_lossy(&answer));
    }

    // Open every connection before the clock starts.
    let mut links = vec![setup.conn];
    while links.len() < args.connections {
        links.push(target.connect().await?);
    }
    let links = links.into_iter().map(|(sender, conn)| Link { sender, conn, broken: false }).collect();
    let shared = Shared {
        target,
        route: args.route,
        key_name: args.key_name.clone(),
        keys,
        body,
        path,
        remaining: args.requests.map(AtomicU64::new),
        issued: AtomicU64::new(0),
        first_error: Mutex::new(None),
        setup_requests: setup.requests,
    };
    Ok((Arc::new(shared), links))
}

/// CPU counters read at both ends of a measurement.
struct Usage {
    client: Duration,
    machine: Option<(u64, u64)>,
    /// Per server: its whole CPU time and the time by thread name.
    servers: Vec<(Option<Duration>, BTreeMap<String, Duration>)>,
}

impl Usage {
    fn sample(pids: &[Option<u32>]) -> Usage {
        Usage {
            client: procfs::self_cpu_time(),
            machine: procfs::cpu_jiffies(),
            servers: pids
                .iter()
                .map(|pid| (pid.and_then(procfs::cpu_time), pid.map(procfs::cpu_time_by_thread).unwrap_or_default()))
                .collect(),
        }
    }
}

/// Samples every server's RSS every 100 ms until told to stop; the peaks.
fn watch_rss(pids: Vec<Option<u32>>, not_before: Instant, done: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<u64>> {
    tokio::spawn(async move {
        tokio::time::sleep_until(not_before.into()).await;
        let mut max = vec![0; pids.len()];
        while !done.load(Ordering::Relaxed) {
            for (m, pid) in max.iter_mut().zip(&pids) {
                *m = (*m).max(pid.and_then(procfs::rss_kib).unwrap_or(0));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        max
    })
}

/// Runs the load described by `args`: one report per `--url`, in order.
pub async fn run(args: &LoadArgs) -> Result<Vec<Report>> {
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    if args.url.is_empty() {
        bail!("--url is required");
    }
    if args.keys.unwrap_or(1) > 1 && args.route == Route::Decrypt {
        bail!("--keys is not supported with --route decrypt");
    }
    for (flag, n) in [("--server-pid", args.server_pid.len()), ("--label", args.label.len())] {
        if n != 0 && n != args.url.len() {
            bail!("{flag} must be given once per --url ({n} for {} URLs)", args.url.len());
        }
    }
    if args.url.len() > 1 {
        if args.requests.is_some() {
            bail!("--requests needs a single --url (several servers take turns for --duration)");
        }
        if args.slice <= args.settle {
            bail!("--slice ({:?}) must be longer than --settle ({:?})", args.slice, args.settle);
        }
    }
    let mut servers = Vec::with_capacity(args.url.len());
    for url in &args.url {
        servers.push(prepare(args, url).await?);
    }
    let pids: Vec<Option<u32>> = (0..args.url.len()).map(|i| args.server_pid.get(i).copied()).collect();
    if servers.len() > 1 {
        return run_in_turns(args, servers, &pids).await;
    }
    let (shared, links) = servers.pop().ok_or_else(|| anyhow!("--url is required"))?;
    Ok(vec![run_alone(args, shared, links, pids[0]).await?])
}

/// One server: warm-up, then measure, on the same connections without a pause.
async fn run_alone(args: &LoadArgs, shared: Arc<Shared>, links: Vec<Link>, pid: Option<u32>) -> Result<Report> {
    let t0 = Instant::now() + Duration::from_millis(5);
    let start = t0 + args.warmup;
    let w = Window { start, end: if args.requests.is_some() { None } else { Some(start + args.duration) } };
    let done = Arc::new(AtomicBool::new(false));
    // CPU is counted from the window's start, while the warm-up runs.
    let first = tokio::spawn(async move {
        tokio::time::sleep_until(start.into()).await;
        Usage::sample(&[pid])
    });
    let rss = watch_rss(vec![pid], start, done.clone());
    tokio::time::sleep_until(t0.into()).await;
    let (_, tally) = drive(&shared, links, w).await?;
    let last = Usage::sample(&[pid]);
    done.store(true, Ordering::Relaxed);
    let first = first.await.context("usage sampler")?;
    let rss_max = rss.await.context("RSS monitor")?;
    let seconds = match w.end {
        Some(end) => (end - start).as_secs_f64(),
        None => tally.last_done.map_or(1e-9, |d| (d - start).as_secs_f64().max(1e-9)),
    };
    let cpu = CpuShare {
        client: last.client.saturating_sub(first.client),
        client_requests: tally.ok,
        server: server_usage(&first, &last, 0),
        server_requests: tally.ok,
        server_seconds: seconds,
        wall_seconds: seconds,
        machine_cores: procfs::busy_cores(first.machine, last.machine),
        other_cores: other_cores(&first, &last, seconds),
    };
    Ok(report(args, 0, &shared, &tally, seconds, &cpu, pid, rss_max[0]))
}

/// Several servers taking turns: each turn (`--slice`) loads one server
/// while the others idle, and the turns rotate until each server has been
/// measured for `--duration`. A machine whose speed drifts over seconds and
/// minutes then slows every server alike, so their ratios hold still.
/// The first `--settle` of a turn is not counted: the previous server
/// finishes its deferred work (an audit batch) and this one's threads wake.
async fn run_in_turns(
    args: &LoadArgs,
    servers: Vec<(Arc<Shared>, Vec<Link>)>,
    pids: &[Option<u32>],
) -> Result<Vec<Report>> {
    let measured_per_turn = args.slice - args.settle;
    let turns = args.duration.as_nanos().div_ceil(measured_per_turn.as_nanos()).max(1) as usize;
    let warmup_turns = args.warmup.as_nanos().div_ceil(args.slice.as_nanos()) as usize;
    let k = servers.len();
    let (shared, mut links): (Vec<_>, Vec<_>) = servers.into_iter().unzip();
    let mut tallies: Vec<Tally> = (0..k).map(|_| Tally::new()).collect();
    let mut busy = vec![Duration::ZERO; k];
    let done = Arc::new(AtomicBool::new(false));
    let rss = watch_rss(pids.to_vec(), Instant::now(), done.clone());
    let run_start = Instant::now();
    let first = Usage::sample(pids);
    for turn in 0..warmup_turns + turns {
        let measured = turn >= warmup_turns;
        for i in turn_order(k, turn) {
            let now = Instant::now();
            let end = now + args.slice;
            let w = Window { start: if measured { now + args.settle } else { end }, end: Some(end) };
            let (back, tally) = drive(&shared[i], std::mem::take(&mut links[i]), w).await?;
            links[i] = back;
            tallies[i].add(&tally);
            busy[i] += end - now;
        }
    }
    let last = Usage::sample(pids);
    done.store(true, Ordering::Relaxed);
    let rss_max = rss.await.context("RSS monitor")?;
    let seconds = (measured_per_turn * turns as u32).as_secs_f64();
    let wall = run_start.elapsed().as_secs_f64();
    let client_requests = tallies.iter().map(|t| t.total).sum();
    let client = last.client.saturating_sub(first.client);
    let machine_cores = procfs::busy_cores(first.machine, last.machine);
    let other_cores = other_cores(&first, &last, wall);
    Ok((0..k)
        .map(|i| {
            let cpu = CpuShare {
                client,
                client_requests,
                server: server_usage(&first, &last, i),
                // The whole run: a server's deferred work may land in
                // another's turn, and counts for it all the same.
                server_requests: tallies[i].total,
                server_seconds: busy[i].as_secs_f64(),
                wall_seconds: wall,
                machine_cores,
                other_cores,
            };
            report(args, i, &shared[i], &tallies[i], seconds, &cpu, pids[i], rss_max[i])
        })
        .collect())
}

/// The order of the `k` servers in round `turn` of their turns: rotated by
/// one every round, so each server goes first as often as the others and
/// no server always follows the same one.
fn turn_order(k: usize, turn: usize) -> impl Iterator<Item = usize> {
    (0..k).map(move |j| (j + turn) % k)
}

/// Cores the machine spent on anything but the load generator and the
/// servers sampled, between two samples `wall_seconds` apart.
fn other_cores(first: &Usage, last: &Usage, wall_seconds: f64) -> Option<f64> {
    let machine = procfs::busy_cores(first.machine, last.machine)?;
    let mut ours = last.client.saturating_sub(first.client);
    for i in 0..last.servers.len() {
        ours += server_usage(first, last, i).0?;
    }
    Some((machine - ours.as_secs_f64() / wall_seconds).max(0.0))
}

/// Server `i`'s CPU between two samples: the total, and by thread name
/// (threads alive at both ends).
fn server_usage(first: &Usage, last: &Usage, i: usize) -> (Option<Duration>, BTreeMap<String, Duration>) {
    let (a, a_by) = &first.servers[i];
    let (b, b_by) = &last.servers[i];
    let total = a.zip(*b).map(|(a, b)| b.saturating_sub(a));
    let by_thread =
        b_by.iter().filter_map(|(name, end)| Some((name.clone(), end.saturating_sub(*a_by.get(name)?)))).collect();
    (total, by_thread)
}

/// The CPU a report divides among requests.
struct CpuShare {
    client: Duration,
    /// Requests the load generator's CPU is divided among.
    client_requests: u64,
    server: (Option<Duration>, BTreeMap<String, Duration>),
    /// Requests the server's CPU is divided among.
    server_requests: u64,
    /// Time the server was under load, for its busy cores.
    server_seconds: f64,
    /// Time between the two samples.
    wall_seconds: f64,
    /// Cores busy on the whole machine between the two samples.
    machine_cores: Option<f64>,
    /// Cores busy with neither the load generator nor any server driven.
    other_cores: Option<f64>,
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &LoadArgs,
    i: usize,
    shared: &Shared,
    tally: &Tally,
    seconds: f64,
    cpu: &CpuShare,
    pid: Option<u32>,
    rss_max: u64,
) -> Report {
    let ok = tally.ok;
    let hist = &tally.hist;
    let us = |ns: u64| ns as f64 / 1000.0;
    let latency = if ok > 0 {
        Latency {
            min: us(hist.min()),
            mean: hist.mean() / 1000.0,
            p50: us(hist.value_at_quantile(0.50)),
            p90: us(hist.value_at_quantile(0.90)),
            p99: us(hist.value_at_quantile(0.99)),
            p999: us(hist.value_at_quantile(0.999)),
            max: us(hist.max()),
        }
    } else {
        Latency::default()
    };
    let per_req = |d: Duration, n: u64| if n > 0 { d.as_secs_f64() * 1e6 / n as f64 } else { 0.0 };
    let end_rss = pid.and_then(procfs::rss_kib);
    let (server_cpu, by_thread) = &cpu.server;
    let first_error = shared.first_error.lock().unwrap().clone();
    Report {
        label: args.label.get(i).cloned(),
        url: args.url[i].clone(),
        route: args.route.as_str().to_string(),
        payload_size: args.payload_size,
        connections: args.connections,
        keys: shared.keys,
        seconds,
        requests: ok,
        errors: tally.errors,
        rps: ok as f64 / seconds,
        latency_us: latency,
        total_requests: tally.total,
        total_errors: tally.total_errors,
        setup_requests: shared.setup_requests,
        first_error,
        client_cpu_us_per_req: per_req(cpu.client, cpu.client_requests),
        client_cores: cpu.client.as_secs_f64() / cpu.wall_seconds,
        server_pid: pid,
        server_cpu_us_per_req: server_cpu.map(|c| per_req(c, cpu.server_requests)),
        server_cpu_us_per_req_by_thread: by_thread
            .iter()
            .map(|(name, c)| (name.clone(), per_req(*c, cpu.server_requests)))
            .collect(),
        server_cores: server_cpu.map(|c| c.as_secs_f64() / cpu.server_seconds),
        server_rss_kib_max: pid.map(|_| rss_max.max(end_rss.unwrap_or(0))),
        server_rss_kib_end: end_rss,
        machine_cores: cpu.machine_cores,
        other_cores: cpu.other_cores,
    }
}

/// A human-readable summary of a report.
pub fn summary(r: &Report) -> String {
    let l = &r.latency_us;
    let mut s = format!(
        "{route} {size} B, {conns} connection(s), {secs:.1} s: {rps:.0} req/s, {ok} ok, {err} errors\n\
         latency µs: p50 {p50:.0}  p90 {p90:.0}  p99 {p99:.0}  p99.9 {p999:.0}  max {max:.0}  (mean {mean:.0})\n\
         load generator CPU: {ccpu:.1} µs/request ({ccores:.2} cores)",
        route = r.route,
        size = r.payload_size,
        conns = r.connections,
        secs = r.seconds,
        rps = r.rps,
        ok = r.requests,
        err = r.errors,
        p50 = l.p50,
        p90 = l.p90,
        p99 = l.p99,
        p999 = l.p999,
        max = l.max,
        mean = l.mean,
        ccpu = r.client_cpu_us_per_req,
        ccores = r.client_cores,
    );
    if let (Some(cpu), Some(cores)) = (r.server_cpu_us_per_req, r.server_cores) {
        s.push_str(&format!(
            "\nserver CPU: {cpu:.1} µs/request ({cores:.2} cores), RSS max {} KiB",
            r.server_rss_kib_max.unwrap_or(0)
        ));
    }
    if let Some(m) = r.machine_cores {
        s.push_str(&format!("\nmachine: {m:.2} cores busy in total"));
    }
    if let Some(e) = &r.first_error {
        s.push_str(&format!("\nfirst error: {e}"));
    }
    s
}

/// One `GET path` on a fresh connection; the response status. For readiness
/// and start-up probes.
pub async fn get_status(
    config: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    server_name: ServerName<'static>,
    path: &str,
) -> Result<StatusCode> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let tls = TlsConnector::from(config).connect(server_name, tcp).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    let mut conn: Conn = Box::pin(conn);
    let req = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(http::header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))?;
    let (status, _) = exchange(&mut sender, &mut conn, req).await?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Over `k` consecutive rounds every server goes first once, and every
    /// server is preceded by each of the others (the last of a round leads
    /// into the first of the next) — so none is always measured right after
    /// the same neighbour's deferred work.
    #[test]
    fn turns_rotate_fairly() {
        for k in [2, 3] {
            let sequence: Vec<usize> = (0..k * 4).flat_map(|turn| turn_order(k, turn)).collect();
            for round in sequence.chunks(k) {
                assert_eq!(round.iter().copied().collect::<std::collections::BTreeSet<_>>().len(), k, "{round:?}");
            }
            let firsts: Vec<usize> = sequence.chunks(k).map(|r| r[0]).collect();
            for s in 0..k {
                assert_eq!(firsts.iter().filter(|&&f| f == s).count(), 4, "k={k}: {firsts:?}");
            }
            let mut preceded = std::collections::BTreeSet::new();
            for pair in sequence.windows(2) {
                preceded.insert((pair[0], pair[1]));
            }
            for a in 0..k {
                for b in (0..k).filter(|&b| b != a) {
                    assert!(preceded.contains(&(a, b)), "k={k}: {b} never follows {a}: {sequence:?}");
                }
            }
        }
    }
}
