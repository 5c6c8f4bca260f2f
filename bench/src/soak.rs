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

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use crate::compare::{self, Files};
use crate::load::Target;
use crate::procfs;

mod audit;
mod control;
mod mix;
mod report;
mod server;
mod traffic;

use control::Run;
use mix::Mix;
pub use mix::Op;
use server::{start, wait_ready};
use traffic::{set_up, traffic, Counts, Progress, Shared};

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

fn version(keyward: &Path) -> String {
    std::process::Command::new(keyward)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
