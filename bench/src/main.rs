//! keyward-bench: benchmark tooling for keyward (see BENCHMARKS.md).
//!
//! * `load`: an HTTPS load generator with client certificates and keep-alive,
//!   for any KES-compatible server;
//! * `baseline`: bare hyper + rustls + keyward's crypto, the ceiling for this
//!   stack;
//! * `compare`: start-up, throughput, latency and memory of keyward against the
//!   baseline in one run;
//! * `soak`: a long mixed-traffic run with plugin reloads, checking for leaks,
//!   failed requests and lost audit events.

mod baseline;
mod compare;
mod cores;
mod load;
mod procfs;
mod soak;
mod tls;
mod vault;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "keyward-bench",
    version,
    about = "Benchmarks for keyward: load generator, baseline server, comparison"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Drive a KES-compatible server over mTLS and report req/s and latency.
    Load(load::LoadArgs),
    /// Serve encrypt/decrypt/generate/hmac with bare hyper + rustls (the ceiling).
    Baseline(baseline::BaselineArgs),
    /// Start the baseline and keyward, measure both in one run, print markdown tables.
    Compare(compare::CompareArgs),
    /// Mixed traffic for a long time with plugin reloads: RSS, fds, failures, one audit event per request.
    Soak(soak::SoakArgs),
    /// The `vault` keystore against a real OpenBao: cached encrypt vs `fs`, cache-miss get vs native HTTP, create vs K/V writes.
    Vault(vault::VaultArgs),
}

/// A tokio runtime with `threads` workers (default: one per CPU); a single
/// worker is a current-thread runtime, which avoids the multi-thread
/// scheduler's hand-offs.
fn runtime(threads: Option<usize>) -> Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let n = threads.unwrap_or(cpus).max(1);
    let mut b = if n == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(n);
        b
    };
    Ok(b.enable_all().build()?)
}

fn main() {
    let cli = Cli::parse();
    let outcome = match cli.command {
        // The load generator needs no more threads than connections.
        Cmd::Load(args) => runtime(Some(args.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(args.connections)
        })))
        .and_then(|rt| {
            for report in rt.block_on(load::run(&args))? {
                if !args.json {
                    println!("{}", load::summary(&report));
                }
                println!("{}", serde_json::to_string(&report)?);
            }
            Ok(())
        }),
        Cmd::Baseline(args) => runtime(args.threads).and_then(|rt| {
            rt.block_on(async {
                tokio::select! {
                    r = baseline::run(&args) => r,
                    _ = shutdown() => Ok(()),
                }
            })
        }),
        Cmd::Compare(args) => compare::run(args),
        // Exit code 2 is a failed verdict, 1 a soak that could not run.
        Cmd::Soak(args) => runtime(args.threads).and_then(|rt| rt.block_on(soak::run(&args))).map(|pass| {
            if !pass {
                std::process::exit(2);
            }
        }),
        Cmd::Vault(args) => vault::run(&args).map(|pass| {
            if !pass {
                std::process::exit(2);
            }
        }),
    };
    if let Err(e) = outcome {
        eprintln!("keyward-bench: {e:#}");
        std::process::exit(1);
    }
}

async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    /// Certificates for an in-process baseline and its client, in `dir`.
    fn certificates(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        let (sc, sk) = keyward::dev::self_signed("localhost", vec!["localhost".into()], false).unwrap();
        let (cc, ck) = keyward::dev::self_signed("client", vec![], true).unwrap();
        for (name, pem) in [("s.crt", &sc), ("s.key", &sk), ("c.crt", &cc), ("c.key", &ck)] {
            std::fs::write(dir.join(name), pem).unwrap();
        }
    }

    /// A baseline server on 127.0.0.1 inside the test process: its URL.
    async fn baseline_server(dir: &Path) -> (String, tokio::task::JoinHandle<anyhow::Result<()>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cert, key) = (dir.join("s.crt"), dir.join("s.key"));
        (
            format!("https://127.0.0.1:{port}"),
            tokio::spawn(async move { baseline::serve_on(listener, &cert, &key).await }),
        )
    }

    /// Load arguments against `url`, with the test's certificates.
    fn load_args(dir: &Path, url: Vec<String>, route: load::Route) -> load::LoadArgs {
        load::LoadArgs {
            url,
            cacert: Some(dir.join("s.crt")),
            cert: dir.join("c.crt"),
            key: dir.join("c.key"),
            insecure: false,
            server_name: Some("localhost".into()),
            route,
            key_name: "k".into(),
            keys: None,
            no_create: false,
            payload_size: 64,
            connections: 2,
            duration: Duration::from_secs(1),
            requests: None,
            warmup: Duration::from_millis(50),
            timeout: Duration::from_secs(5),
            threads: None,
            server_pid: vec![],
            label: vec![],
            slice: Duration::from_millis(250),
            settle: Duration::from_millis(50),
            json: true,
        }
    }

    /// The load generator against the baseline, in-process on 127.0.0.1, for
    /// every route: a bounded smoke test that the tooling works.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn load_against_baseline() {
        let dir = std::env::temp_dir().join(format!("keyward-bench-test-{}", std::process::id()));
        certificates(&dir);
        let (url, server) = baseline_server(&dir).await;
        for route in [load::Route::Encrypt, load::Route::Decrypt, load::Route::Generate, load::Route::Hmac] {
            let args = load::LoadArgs {
                requests: Some(50),
                server_pid: vec![std::process::id()],
                ..load_args(&dir, vec![url.clone()], route)
            };
            let report = load::run(&args).await.unwrap().remove(0);
            assert_eq!(report.errors, 0, "{route:?}: {:?}", report.first_error);
            assert!(report.requests >= 50, "{route:?}: {}", report.requests);
            // Create and probe; for decrypt also the encrypt that made its ciphertext.
            assert_eq!(report.setup_requests, if route == load::Route::Decrypt { 3 } else { 2 }, "{route:?}");
            assert!(report.latency_us.p50 > 0.0 && report.latency_us.p99 >= report.latency_us.p50);
            assert!(report.server_rss_kib_max.unwrap_or(0) > 0);
            let line = serde_json::to_string(&report).unwrap();
            let back: load::Report = serde_json::from_str(&line).unwrap();
            assert_eq!(back.requests, report.requests);
        }
        // Spreading over several keys, created first.
        let args = load::LoadArgs {
            key_name: "many".into(),
            keys: Some(20),
            payload_size: 16,
            connections: 4,
            requests: Some(20),
            warmup: Duration::ZERO,
            ..load_args(&dir, vec![url], load::Route::Encrypt)
        };
        let report = load::run(&args).await.unwrap().remove(0);
        assert_eq!(report.errors, 0, "{:?}", report.first_error);
        assert_eq!(report.setup_requests, 21, "20 creates and the probe");
        server.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Two servers taking turns: one report each, in --url order, each
    /// measured for the whole --duration in turns of --slice minus --settle,
    /// and the unmeasured warm-up and settle requests sent but not counted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn servers_take_turns() {
        let dir = std::env::temp_dir().join(format!("keyward-bench-turns-{}", std::process::id()));
        certificates(&dir);
        let (a, server_a) = baseline_server(&dir).await;
        let (b, server_b) = baseline_server(&dir).await;
        let args = load::LoadArgs {
            label: vec!["a".into(), "b".into()],
            duration: Duration::from_millis(550),
            warmup: Duration::from_millis(100),
            slice: Duration::from_millis(150),
            settle: Duration::from_millis(50),
            ..load_args(&dir, vec![a.clone(), b.clone()], load::Route::Encrypt)
        };
        let reports = load::run(&args).await.unwrap();
        assert_eq!(reports.len(), 2);
        for (report, (url, label)) in reports.iter().zip([(&a, "a"), (&b, "b")]) {
            assert_eq!((&report.url, report.label.as_deref()), (url, Some(label)));
            assert_eq!(report.errors, 0, "{label}: {:?}", report.first_error);
            // 550 ms in turns of 100 measured ms: six turns.
            assert!((report.seconds - 0.6).abs() < 1e-9, "{label}: {}", report.seconds);
            assert!(report.requests > 0, "{label}");
            assert!(report.total_requests > report.requests, "{label}: warm-up and settle are not counted");
            assert!((report.rps - report.requests as f64 / report.seconds).abs() < 1e-6);
        }

        // Several servers take turns for a duration, not a request count;
        // per-server options come once per server.
        let requests = load::LoadArgs { requests: Some(10), ..args.clone() };
        let err = load::run(&requests).await.unwrap_err().to_string();
        assert!(err.contains("--requests needs a single --url"), "{err}");
        let labels = load::LoadArgs { label: vec!["a".into()], ..args.clone() };
        let err = load::run(&labels).await.unwrap_err().to_string();
        assert!(err.contains("--label must be given once per --url"), "{err}");
        let slice = load::LoadArgs { settle: args.slice, ..args };
        let err = load::run(&slice).await.unwrap_err().to_string();
        assert!(err.contains("must be longer than --settle"), "{err}");
        server_a.abort();
        server_b.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
