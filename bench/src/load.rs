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
    /// Server base URL, e.g. https://127.0.0.1:7373
    #[arg(long)]
    pub url: String,
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
    /// Also report CPU time per request and peak RSS of this server process.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// A label copied into the JSON line.
    #[arg(long)]
    pub label: Option<String>,
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
    /// CPU cores busy on the whole machine during the window; what exceeds
    /// `client_cores + server_cores` is other load that disturbed the run.
    pub machine_cores: Option<f64>,
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

struct Shared {
    target: Target,
    route: Route,
    key_name: String,
    keys: u64,
    body: Bytes,
    path: String,
    measure_start: Instant,
    measure_end: Option<Instant>,
    /// Requests-mode budget of measured requests still to send.
    remaining: Option<AtomicU64>,
    issued: AtomicU64,
    first_error: Mutex<Option<String>>,
}

struct WorkerResult {
    hist: Histogram<u64>,
    ok: u64,
    errors: u64,
    total: u64,
    total_errors: u64,
    last_done: Instant,
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

async fn worker(s: Arc<Shared>, (mut sender, mut conn): (Sender, Conn)) -> WorkerResult {
    let mut r = WorkerResult {
        hist: Histogram::new_with_bounds(1, 120_000_000_000, 3).expect("histogram bounds"),
        ok: 0,
        errors: 0,
        total: 0,
        total_errors: 0,
        last_done: s.measure_start,
    };
    let mut broken = false;
    loop {
        let now = Instant::now();
        if let Some(end) = s.measure_end {
            if now >= end {
                break;
            }
        }
        if let Some(remaining) = &s.remaining {
            if now >= s.measure_start {
                // Take one request from the budget; stop when it is spent.
                if remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_err() {
                    break;
                }
            }
        }
        if broken {
            match s.target.connect().await {
                Ok(new) => {
                    (sender, conn) = new;
                    broken = false;
                }
                Err(e) => {
                    r.total += 1;
                    r.total_errors += 1;
                    if Instant::now() >= s.measure_start {
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
        let outcome = tokio::time::timeout(s.target.timeout, exchange(&mut sender, &mut conn, req)).await;
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
                broken = true;
                false
            }
            Err(_) => {
                note_error(&s, || format!("timeout after {:?}", s.target.timeout));
                broken = true;
                false
            }
        };
        if !ok {
            r.total_errors += 1;
        }
        let in_window = done >= s.measure_start && s.measure_end.is_none_or(|end| done < end);
        if in_window {
            if ok {
                r.ok += 1;
                let ns = (done - start).as_nanos().min(u128::from(u64::MAX)) as u64;
                r.hist.saturating_record(ns.max(1));
            } else {
                r.errors += 1;
            }
            r.last_done = done;
        }
    }
    r
}

const SETUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends one setup request on `sender` and returns status and body.
async fn setup_call(c: &mut (Sender, Conn), authority: &str, path: &str, body: Bytes) -> Result<(StatusCode, Bytes)> {
    tokio::time::timeout(SETUP_TIMEOUT, exchange(&mut c.0, &mut c.1, request(authority, path, body)))
        .await
        .map_err(|_| anyhow!("PUT {path} timed out after {SETUP_TIMEOUT:?}"))?
}

fn b64_field(name: &str, bytes: &[u8]) -> Bytes {
    Bytes::from(serde_json::json!({ name: B64.encode(bytes) }).to_string())
}

/// Runs the load described by `args` and returns the report.
pub async fn run(args: &LoadArgs) -> Result<Report> {
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    let keys = args.keys.unwrap_or(1).max(1);
    if keys > 1 && args.route == Route::Decrypt {
        bail!("--keys is not supported with --route decrypt");
    }
    let uri: http::Uri = args.url.parse().with_context(|| format!("invalid --url {}", args.url))?;
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

    let mut shared = Shared {
        target: Target {
            connector: TlsConnector::from(config),
            addr,
            server_name,
            authority: authority.clone(),
            timeout: args.timeout,
        },
        route: args.route,
        key_name: args.key_name.clone(),
        keys,
        body: Bytes::new(),
        path: format!("/v1/key/{}/{}", args.route.as_str(), args.key_name),
        measure_start: Instant::now(),
        measure_end: None,
        remaining: args.requests.map(AtomicU64::new),
        issued: AtomicU64::new(0),
        first_error: Mutex::new(None),
    };

    // Set-up on one connection: create the key(s), build the request body.
    let mut setup = shared.target.connect().await?;
    let key_names: Vec<String> = if keys > 1 {
        (0..keys).map(|i| format!("{}-{i}", args.key_name)).collect()
    } else {
        vec![args.key_name.clone()]
    };
    if !args.no_create {
        for k in &key_names {
            let (status, body) =
                setup_call(&mut setup, &authority, &format!("/v1/key/create/{k}"), Bytes::new()).await?;
            // 400/409: the key exists already (KES answers 400 "key already exists").
            if !status.is_success() && status != StatusCode::BAD_REQUEST && status != StatusCode::CONFLICT {
                bail!("creating key {k}: HTTP {status}: {}", String::from_utf8_lossy(&body));
            }
        }
    }
    let mut payload = vec![0u8; args.payload_size];
    rand::thread_rng().fill_bytes(&mut payload);
    shared.body = match args.route {
        Route::Encrypt => b64_field("plaintext", &payload),
        Route::Hmac => b64_field("message", &payload),
        Route::Generate => Bytes::from_static(b"{}"),
        Route::Decrypt => {
            let path = format!("/v1/key/encrypt/{}", args.key_name);
            let (status, body) = setup_call(&mut setup, &authority, &path, b64_field("plaintext", &payload)).await?;
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
    };
    // One request of the real route, so a misconfiguration fails loudly here.
    let probe_path =
        if keys > 1 { format!("/v1/key/{}/{}", args.route.as_str(), key_names[0]) } else { shared.path.clone() };
    let (status, body) = setup_call(&mut setup, &authority, &probe_path, shared.body.clone()).await?;
    if !status.is_success() {
        bail!("{} {probe_path}: HTTP {status}: {}", args.route.as_str(), String::from_utf8_lossy(&body));
    }

    // Open every connection before the clock starts.
    let mut senders = vec![setup];
    while senders.len() < args.connections {
        senders.push(shared.target.connect().await?);
    }

    let t0 = Instant::now() + Duration::from_millis(5);
    shared.measure_start = t0 + args.warmup;
    shared.measure_end = if args.requests.is_some() { None } else { Some(shared.measure_start + args.duration) };
    let shared = Arc::new(shared);

    // Sample CPU at the window's start and the server's RSS while it runs.
    let done = Arc::new(AtomicBool::new(false));
    let monitor = {
        let shared = shared.clone();
        let done = done.clone();
        let pid = args.server_pid;
        tokio::spawn(async move {
            tokio::time::sleep_until(shared.measure_start.into()).await;
            let start = (procfs::self_cpu_time(), pid.and_then(procfs::cpu_time), procfs::cpu_jiffies());
            let start_by_thread = pid.map(procfs::cpu_time_by_thread).unwrap_or_default();
            let mut rss_max = 0;
            let mut rss_last = None;
            while !done.load(Ordering::Relaxed) {
                if let Some(rss) = pid.and_then(procfs::rss_kib) {
                    rss_max = rss_max.max(rss);
                    rss_last = Some(rss);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (start, start_by_thread, rss_max, rss_last)
        })
    };

    tokio::time::sleep_until(t0.into()).await;
    let handles: Vec<_> = senders.into_iter().map(|sender| tokio::spawn(worker(shared.clone(), sender))).collect();
    let mut results = Vec::with_capacity(handles.len());
    for h in handles {
        results.push(h.await.context("worker panicked")?);
    }
    let end_jiffies = procfs::cpu_jiffies();
    let end_cpu = procfs::self_cpu_time();
    let end_server_cpu = args.server_pid.and_then(procfs::cpu_time);
    let end_by_thread = args.server_pid.map(procfs::cpu_time_by_thread).unwrap_or_default();
    let end_rss = args.server_pid.and_then(procfs::rss_kib);
    done.store(true, Ordering::Relaxed);
    let ((start_cpu, start_server_cpu, start_jiffies), start_by_thread, rss_max, _) =
        monitor.await.context("monitor")?;

    let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000_000, 3).expect("histogram bounds");
    let (mut ok, mut errors, mut total, mut total_errors) = (0, 0, 0, 0);
    let mut last_done = shared.measure_start;
    for r in &results {
        hist.add(&r.hist).expect("same bounds");
        ok += r.ok;
        errors += r.errors;
        total += r.total;
        total_errors += r.total_errors;
        last_done = last_done.max(r.last_done);
    }
    let seconds = match shared.measure_end {
        Some(end) => (end - shared.measure_start).as_secs_f64(),
        None => (last_done - shared.measure_start).as_secs_f64().max(1e-9),
    };
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
    let per_req = |d: Duration| if ok > 0 { d.as_secs_f64() * 1e6 / ok as f64 } else { 0.0 };
    let client_cpu = end_cpu.saturating_sub(start_cpu);
    let server_cpu = match (start_server_cpu, end_server_cpu) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let first_error = shared.first_error.lock().unwrap().clone();
    Ok(Report {
        label: args.label.clone(),
        url: args.url.clone(),
        route: args.route.as_str().to_string(),
        payload_size: args.payload_size,
        connections: args.connections,
        keys,
        seconds,
        requests: ok,
        errors,
        rps: ok as f64 / seconds,
        latency_us: latency,
        total_requests: total,
        total_errors,
        first_error,
        client_cpu_us_per_req: per_req(client_cpu),
        client_cores: client_cpu.as_secs_f64() / seconds,
        server_pid: args.server_pid,
        server_cpu_us_per_req: server_cpu.map(per_req),
        server_cpu_us_per_req_by_thread: end_by_thread
            .iter()
            .filter_map(|(name, end)| Some((name.clone(), per_req(end.saturating_sub(*start_by_thread.get(name)?)))))
            .collect(),
        server_cores: server_cpu.map(|c| c.as_secs_f64() / seconds),
        server_rss_kib_max: args.server_pid.map(|_| rss_max.max(end_rss.unwrap_or(0))),
        server_rss_kib_end: end_rss,
        machine_cores: procfs::busy_cores(start_jiffies, end_jiffies),
    })
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
