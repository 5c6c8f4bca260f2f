//! `keyward-bench vault`: the bundled `vault` keystore against a real OpenBao
//! (`bao server -dev` on 127.0.0.1, K/V v2 at `secret/`), each figure next to
//! its baseline measured in the same run:
//!
//! - cached encrypt: keyward with `vault` as the store against the same
//!   server with `fs` (the plugin must not be on the hot path): ≥ 0.9×;
//! - a cache-miss `get` through the plugin against the same HTTP call made
//!   natively with hyper: at most 15 % or 100 µs more, whichever is larger;
//! - key creation through keyward against OpenBao's own K/V write
//!   throughput at the same client concurrency: ≥ 0.8×.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::compare::{base_config, command, free_port, keyward_binary, make_files, spawn_logged, write, Files, Server};
use crate::cores::{pin_command, pin_this_thread, Split};
use crate::load::{self, exchange, request_with, LoadArgs, Route, Target};

#[derive(clap::Args, Clone, Debug)]
pub struct VaultArgs {
    /// The keyward binary (default: next to this one).
    #[arg(long)]
    pub keyward: Option<PathBuf>,
    /// The OpenBao (or Vault) binary.
    #[arg(long, default_value = "bao")]
    pub bao: PathBuf,
    /// Concurrent connections for the throughput phases.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// How long each throughput phase measures.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Sequential cache-miss reads per side.
    #[arg(long, default_value_t = 2000)]
    pub gets: usize,
    /// Exit with status 2 when a target is missed.
    #[arg(long)]
    pub check: bool,
}

/// The dev server's root token.
const TOKEN: &str = "root";

type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// `bao server -dev`, killed on drop.
struct Bao {
    child: Child,
    addr: String,
}

impl Drop for Bao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One measured figure and whether it met its target.
struct Verdict {
    what: &'static str,
    line: String,
    met: bool,
}

pub fn run(args: &VaultArgs) -> Result<bool> {
    // Absolute: the servers start in their own directories.
    let keyward = std::fs::canonicalize(keyward_binary(args.keyward.as_deref())?)?;
    let tmp = std::env::temp_dir().join(format!("keyward-bench-vault-{}", std::process::id()));
    let files = make_files(&tmp)?;
    let cores = Split::halves();
    pin_this_thread(&cores.front).context("pinning the load generator to its CPUs")?;
    println!("CPUs: {}", cores.describe());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let outcome = rt.block_on(measure(args, &keyward, &files, &cores));
    let _ = std::fs::remove_dir_all(&tmp);
    let verdicts = outcome?;
    println!("| figure | keyward | baseline | ratio / difference | target |");
    println!("|---|---|---|---|---|");
    for v in &verdicts {
        println!("{}", v.line);
    }
    let missed: Vec<&str> = verdicts.iter().filter(|v| !v.met).map(|v| v.what).collect();
    if !missed.is_empty() {
        eprintln!("keyward-bench vault: targets missed: {}", missed.join(", "));
    }
    Ok(missed.is_empty() || !args.check)
}

async fn measure(args: &VaultArgs, keyward: &Path, files: &Files, cores: &Split) -> Result<Vec<Verdict>> {
    let bao = start_bao(&args.bao, &files.dir, &cores.backend).await?;
    let http: Http = Client::builder(TokioExecutor::new()).build_http();
    let fs = spawn_keyward(keyward, files, "fs", None, &cores.front)?;
    let vault = spawn_keyward(keyward, files, "vault", Some(&bao.addr), &cores.front)?;
    for server in [&fs, &vault] {
        wait_ready(files, server).await?;
    }
    let mut verdicts = vec![cached_encrypt(args, files, &fs, &vault).await?];
    verdicts.push(cache_miss_get(args, &bao, &http).await?);
    verdicts.push(create_throughput(args, files, &vault, &bao, &http).await?);
    Ok(verdicts)
}

async fn start_bao(bao: &Path, dir: &Path, cpus: &[usize]) -> Result<Bao> {
    let port = free_port()?;
    let mut cmd = command(bao);
    pin_command(&mut cmd, cpus);
    cmd.args(["server", "-dev", "-dev-root-token-id=root"])
        .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
        .env("HOME", dir);
    let child = spawn_logged(cmd, &dir.join("bao")).with_context(|| format!("start {}", bao.display()))?;
    let bao = Bao { child, addr: format!("http://127.0.0.1:{port}") };
    let http: Http = Client::builder(TokioExecutor::new()).build_http();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let req = Request::get(format!("{}/v1/sys/health", bao.addr)).body(Full::new(Bytes::new()))?;
        if http.request(req).await.is_ok_and(|r| r.status() == StatusCode::OK) {
            return Ok(bao);
        }
        if Instant::now() > deadline {
            bail!("OpenBao did not start on {}", bao.addr);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `vault` plugin's config for the dev server: K/V v2 at `secret/`.
fn plugin_config(addr: &str) -> String {
    format!(
        "{{\"endpoint\": \"{addr}\", \"engine\": \"secret\", \"version\": \"v2\", \"prefix\": \"bench\", \
         \"token\": \"{TOKEN}\"}}"
    )
}

fn spawn_keyward(keyward: &Path, files: &Files, name: &str, vault: Option<&str>, cpus: &[usize]) -> Result<Server> {
    let dir = files.dir.join(name);
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let mut text = base_config(files, port, &["/v1/key/*"], &dir.join("keys"));
    if let Some(addr) = vault {
        let start = text.find("[keystore]").ok_or_else(|| anyhow!("no [keystore] in the base config"))?;
        text.truncate(start);
        text.push_str(&format!(
            "[keystore]\nplugin = \"vault\"\n[keystore.config]\nendpoint = \"{addr}\"\nengine = \"secret\"\n\
             version = \"v2\"\nprefix = \"bench\"\ntoken = \"{TOKEN}\"\n"
        ));
    }
    text.push_str("[cache.expiry]\nany = \"1h\"\nunused = \"1h\"\n");
    let config = dir.join("keyward.toml");
    write(&config, &text)?;
    let mut cmd = command(keyward);
    pin_command(&mut cmd, cpus);
    cmd.arg("server").arg("--config").arg(&config).env("KEYWARD_CACHE_DIR", files.dir.join("plugin-cache"));
    let child = spawn_logged(cmd, &dir)?;
    Ok(Server { name: format!("keyward ({name})"), child, port, dir })
}

fn target(files: &Files, addr: SocketAddr) -> Result<Target> {
    let config = crate::tls::client_config(Some(&files.server_cert), &files.client_cert, &files.client_key, false)?;
    Ok(Target {
        connector: TlsConnector::from(config),
        addr,
        server_name: ServerName::try_from("localhost")?,
        authority: addr.to_string(),
        timeout: Duration::from_secs(10),
    })
}

async fn wait_ready(files: &Files, server: &Server) -> Result<()> {
    let config = crate::tls::client_config(Some(&files.server_cert), &files.client_cert, &files.client_key, false)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let name = ServerName::try_from("localhost")?;
        if load::get_status(config.clone(), server.addr(), name, "/version").await.is_ok_and(|s| s.is_success()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} did not start:\n{}", server.name, server.stderr());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Encrypt with one cached key on both servers, taking turns.
async fn cached_encrypt(args: &VaultArgs, files: &Files, fs: &Server, vault: &Server) -> Result<Verdict> {
    let load = LoadArgs {
        url: vec![fs.url(), vault.url()],
        cacert: Some(files.server_cert.clone()),
        cert: files.client_cert.clone(),
        key: files.client_key.clone(),
        insecure: false,
        server_name: Some("localhost".into()),
        route: Route::Encrypt,
        key_name: "bench-encrypt".into(),
        keys: None,
        no_create: false,
        payload_size: 64,
        connections: args.connections,
        duration: args.duration,
        requests: None,
        warmup: Duration::from_secs(1),
        timeout: Duration::from_secs(10),
        threads: None,
        server_pid: vec![fs.pid(), vault.pid()],
        label: vec!["fs".into(), "vault".into()],
        slice: Duration::from_millis(250),
        settle: Duration::from_millis(50),
        json: true,
    };
    let reports = load::run(&load).await?;
    let (f, v) = (&reports[0], &reports[1]);
    if f.errors + v.errors > 0 {
        bail!(
            "encrypt answered errors: fs {} ({:?}), vault {} ({:?})",
            f.errors,
            f.first_error,
            v.errors,
            v.first_error
        );
    }
    let ratio = v.rps / f.rps;
    Ok(Verdict {
        what: "cached encrypt",
        line: format!(
            "| cached encrypt, {} connections (req/s) | {:.0} (`vault`) | {:.0} (`fs`) | {ratio:.2}× | ≥ 0.9× |",
            args.connections, v.rps, f.rps
        ),
        met: ratio >= 0.9,
    })
}

/// Sequential `get`s of one stored key through the plugin and natively, in
/// alternating rounds; the mean of each side.
async fn cache_miss_get(args: &VaultArgs, bao: &Bao, http: &Http) -> Result<Verdict> {
    use keyward_core::crypto::{Algorithm, StoredKey};
    let engine = keyward_plugin_host::PluginEngine::new(keyward_plugin_host::EngineOptions { cache_dir: None })?;
    let plugins = keyward_plugin_host::resolve::Plugins::new(engine, None, false)?;
    let ks = plugins.keystore("vault", &plugin_config(&bao.addr)).await?;
    let value = StoredKey::generate(Algorithm::Aes256, "bench").encode();
    ks.create("bench-get", &value).await.map_err(|e| anyhow!("create: {e}"))?;
    // The request the plugin sends: KES keeps a key in version 1 of its
    // secret, so the plugin asks for that version, with Vault's CSRF header.
    let uri: Arc<str> = format!("{}/v1/secret/data/bench/bench-get?version=1", bao.addr).into();
    let http = http.clone();
    let native = move || {
        let (http, uri) = (http.clone(), uri.clone());
        async move {
            let req = Request::builder()
                .method(Method::GET)
                .uri(&*uri)
                .header("x-vault-request", "true")
                .header("x-vault-token", TOKEN);
            let resp = http.request(req.body(Full::new(Bytes::new()))?).await?;
            let body = resp.into_body().collect().await?.to_bytes();
            let json: serde_json::Value = serde_json::from_slice(&body)?;
            let stored =
                json["data"]["data"]["bench-get"].as_str().ok_or_else(|| anyhow!("no value"))?.as_bytes().to_vec();
            anyhow::Ok(stored)
        }
    };
    if native().await? != *value || ks.get("bench-get").await.map_err(|e| anyhow!("get: {e}"))? != *value {
        bail!("the two reads disagree with what was stored");
    }
    // (wall time, this process's CPU time) per side.
    let (mut plugin, mut baseline) = ((Duration::ZERO, Duration::ZERO), (Duration::ZERO, Duration::ZERO));
    let rounds = 10;
    let per_round = (args.gets / rounds).max(1);
    // Each side reads from a task on the runtime's workers, as keyward's
    // request handlers do: a loop on the thread that called `block_on` would
    // hand every spawned task (hyper's connection, wasi:http's request) to
    // another thread and time those hand-offs instead of the calls.
    let ks = Arc::new(ks);
    for _ in 0..rounds {
        let ks = ks.clone();
        let (wall, cpu) = timed(async move {
            for _ in 0..per_round {
                ks.get("bench-get").await.map_err(|e| anyhow!("get: {e}"))?;
            }
            Ok(())
        })
        .await?;
        plugin = (plugin.0 + wall, plugin.1 + cpu);
        let native = native.clone();
        let (wall, cpu) = timed(async move {
            for _ in 0..per_round {
                native().await?;
            }
            Ok(())
        })
        .await?;
        baseline = (baseline.0 + wall, baseline.1 + cpu);
    }
    let n = (rounds * per_round) as f64;
    let per_read = |d: Duration| d.as_secs_f64() * 1e6 / n;
    let (p, b) = (per_read(plugin.0), per_read(baseline.0));
    let (ratio, extra) = (p / b, p - b);
    let (pc, bc) = (per_read(plugin.1), per_read(baseline.1));
    Ok(Verdict {
        what: "cache-miss get",
        line: format!(
            "| cache-miss `get`, sequential (µs per read; keyward's CPU per read) | {p:.0} (plugin; CPU {pc:.0}) | {b:.0} (hyper; CPU {bc:.0}) | {ratio:.2}×, {extra:+.0} µs | ≤ 1.15× or ≤ +100 µs |"
        ),
        met: ratio <= 1.15 || extra <= 100.0,
    })
}

/// Runs `work` in a task on the runtime's workers; its wall time and the
/// CPU time this process spent meanwhile.
async fn timed(work: impl Future<Output = Result<()>> + Send + 'static) -> Result<(Duration, Duration)> {
    let cpu = crate::procfs::self_cpu_time();
    let t = Instant::now();
    tokio::spawn(work).await??;
    Ok((t.elapsed(), crate::procfs::self_cpu_time().saturating_sub(cpu)))
}

/// Creates through keyward against K/V writes (`cas=0`, the same request
/// the plugin sends) straight to OpenBao, both at `--connections`.
async fn create_throughput(args: &VaultArgs, files: &Files, vault: &Server, bao: &Bao, http: &Http) -> Result<Verdict> {
    let target = Arc::new(target(files, vault.addr())?);
    let created = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let server_cpu = crate::procfs::cpu_time(vault.pid());
    let end = Instant::now() + args.duration;
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let (target, created, failed) = (target.clone(), created.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let (mut sender, mut conn) = target.connect().await?;
            let mut i = 0;
            while Instant::now() < end {
                let path = format!("/v1/key/create/c{c}-{i}");
                i += 1;
                let req = request_with(Method::PUT, &target.authority, &path, Bytes::new());
                let (status, _) = exchange(&mut sender, &mut conn, req).await?;
                let counter = if status == StatusCode::OK { &created } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let keyward_rate = created.load(Ordering::Relaxed) as f64 / args.duration.as_secs_f64();
    // keyward's CPU per create (TLS, API, key generation, the plugin and its HTTP call).
    let cpu_per_create = match (server_cpu, crate::procfs::cpu_time(vault.pid())) {
        (Some(a), Some(b)) => format!(
            "; keyward's CPU {:.0} µs per create",
            b.saturating_sub(a).as_secs_f64() * 1e6 / created.load(Ordering::Relaxed).max(1) as f64
        ),
        _ => String::new(),
    };

    let written = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + args.duration;
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let (http, written, failed, addr) = (http.clone(), written.clone(), failed.clone(), bao.addr.clone());
        let value =
            keyward_core::crypto::StoredKey::generate(keyward_core::crypto::Algorithm::Aes256, "bench").encode();
        let value = String::from_utf8(value.to_vec())?;
        tasks.push(tokio::spawn(async move {
            let mut i = 0;
            while Instant::now() < end {
                let name = format!("n{c}-{i}");
                i += 1;
                let body = serde_json::json!({"data": {&name: &value}, "options": {"cas": 0}}).to_string();
                let req = Request::builder()
                    .method(Method::PUT)
                    .uri(format!("{addr}/v1/secret/data/native/{name}"))
                    .header("X-Vault-Token", TOKEN)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(body)))?;
                let resp = http.request(req).await?;
                let ok = resp.status() == StatusCode::OK;
                resp.into_body().collect().await?;
                let counter = if ok { &written } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let native_rate = written.load(Ordering::Relaxed) as f64 / args.duration.as_secs_f64();
    if failed.load(Ordering::Relaxed) > 0 {
        bail!("{} creates or writes failed", failed.load(Ordering::Relaxed));
    }
    let ratio = keyward_rate / native_rate;
    Ok(Verdict {
        what: "create throughput",
        line: format!(
            "| key create, {} connections (per s) | {keyward_rate:.0} (keyward → `vault`{cpu_per_create}) | {native_rate:.0} (K/V v2 writes to OpenBao) | {ratio:.2}× | ≥ 0.8× |",
            args.connections
        ),
        met: ratio >= 0.8,
    })
}
