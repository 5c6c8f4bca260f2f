//! `keyward-bench compare`: keyward against the baseline in one run.
//!
//! Generates certificates, measures start-up (cold and cached plugin
//! artifacts), starts the baseline and two keyward servers (with and without
//! the `audit-file` sink), fresh for every round, runs the same workload
//! against each — the servers taking turns in one load run, or with
//! `--sequential` one after the other — and measures memory idle, under load
//! and with 100k cached keys. Prints markdown tables; `--json-out` keeps
//! every figure.
//!
//! All traffic goes to 127.0.0.1. Every measurement is bounded in time.

use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use rustls::pki_types::ServerName;
use serde::Serialize;

use crate::load::{self, Report, Route};
use crate::procfs;

mod targets;

#[derive(clap::Args, Clone, Debug)]
pub struct CompareArgs {
    /// The keyward binary (default: `keyward` next to this executable, i.e. target/dist/keyward).
    #[arg(long)]
    pub keyward: Option<PathBuf>,
    /// Measurements per server and workload, each with freshly started servers (taking turns unless --sequential).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Length of each measurement.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub duration: Duration,
    /// Warm-up before each measurement (same connections, not counted).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub warmup: Duration,
    #[arg(long, value_enum, value_delimiter = ',', default_value = "encrypt,decrypt,generate,hmac")]
    pub routes: Vec<Route>,
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub connections: Vec<usize>,
    #[arg(long, default_value_t = 64)]
    pub payload_size: usize,
    /// Routes at which keyward without the audit sink is measured too (the
    /// cost of audit): a comma-separated list, `all` or `none`.
    #[arg(long, default_value = "encrypt")]
    pub audit_cost_routes: String,
    /// Pin servers and load generator: `SERVER_CPUS:CLIENT_CPUS` in taskset -c syntax, e.g. `0:1`.
    #[arg(long)]
    pub taskset: Option<String>,
    /// Worker threads of the load generator (default: one per CPU).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Skip the throughput/latency comparison.
    #[arg(long)]
    pub no_load: bool,
    /// Skip the start-up measurement.
    #[arg(long)]
    pub no_startup: bool,
    /// Skip the 100k-keys memory measurement.
    #[arg(long)]
    pub no_memory: bool,
    /// Start-ups measured for each of cold and cached.
    #[arg(long, default_value_t = 3)]
    pub startup_runs: usize,
    /// Keys created and touched for the cached-keys memory figure.
    #[arg(long, default_value_t = 100_000)]
    pub memory_keys: u64,
    /// Shorthand for a smoke run: --rounds 1 --duration 2s --warmup 500ms --startup-runs 1.
    #[arg(long)]
    pub quick: bool,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// Keep the temporary directory (configs, logs, keystores).
    #[arg(long)]
    pub keep: bool,
    /// Measure each server alone, one after the other (before session 10),
    /// instead of all of a workload's servers taking turns in one run.
    #[arg(long)]
    pub sequential: bool,
    /// Length of each server's turn when they take turns.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "250ms")]
    pub slice: Duration,
    /// The start of each turn that is not counted (the previous server's
    /// deferred work, this one's threads waking).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "50ms")]
    pub settle: Duration,
    /// Wait at most this long for running compilers (rustc, cc, ld) to finish before measuring.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    pub wait_quiet: Duration,
    /// Exit with an error if any of issue 6's targets measured in this run is missed.
    #[arg(long)]
    pub check: bool,
}

/// Everything measured, for `--json-out`.
#[derive(Debug, Default, Serialize)]
struct Results {
    date: String,
    machine: Machine,
    startup: Option<Startup>,
    idle_rss_kib: Vec<(String, u64)>,
    load: Vec<Measurement>,
    audit: Vec<AuditCheck>,
    memory: Option<Memory>,
    /// Measurements during which a compiler was running on the machine.
    measurements_with_builders: usize,
    measurements: usize,
}

#[derive(Debug, Default, Serialize)]
struct Machine {
    cpus: usize,
    cpu_model: String,
    kernel: String,
    keyward_version: String,
    busy_at_start: f64,
    builders_at_start: Vec<String>,
    taskset: Option<String>,
}

#[derive(Debug, Serialize)]
struct Measurement {
    target: String,
    round: usize,
    report: Report,
}

#[derive(Debug, Serialize)]
struct AuditCheck {
    route: String,
    connections: usize,
    round: usize,
    requests_sent: u64,
    audit_lines: u64,
    audit_bytes: u64,
}

#[derive(Debug, Default, Serialize)]
struct Startup {
    cold_ms: Vec<f64>,
    cached_ms: Vec<f64>,
    /// RSS right after a cached start (no request but the probe).
    rss_after_start_kib: Option<u64>,
    /// RSS right after a cold start (the compiler's memory may stay mapped).
    rss_after_cold_start_kib: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Memory {
    keys: u64,
    populate_s: f64,
    rss_idle_kib: u64,
    first_touch: Report,
    rss_after_touch_kib: u64,
    second_touch: Report,
    rss_after_second_touch_kib: u64,
    /// Start-up (ms to first /version) of a keyward on the full keystore, or why it failed.
    restart_ms: Result<f64, String>,
}

impl Memory {
    /// What caching every key added to keyward's RSS: the figure the
    /// cached-keys target is about.
    fn cached_keys_kib(&self) -> u64 {
        self.rss_after_second_touch_kib.saturating_sub(self.rss_idle_kib)
    }
}

const TARGET_BASELINE: &str = "baseline";
const TARGET_KEYWARD: &str = "keyward";
const TARGET_NOAUDIT: &str = "keyward-noaudit";
/// Longer than the audit sink's linger plus a write: after this, every
/// answered request's line is in the file.
const AUDIT_SETTLE: Duration = Duration::from_millis(300);

/// A server process, killed on drop.
pub(crate) struct Server {
    pub name: String,
    pub child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        // SIGTERM first (graceful), then SIGKILL if it lingers.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(6);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// Generated certificates and the identities they stand for.
pub(crate) struct Files {
    pub dir: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub admin_id: String,
    pub client_id: String,
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A command for `program`, under `taskset -c cpus` if given. The child gets
/// SIGTERM if `compare` dies, so no server outlives an interrupted run.
pub(crate) fn command(program: &Path, cpus: Option<&str>) -> Command {
    let mut c = match cpus {
        Some(list) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(list).arg(program);
            c
        }
        None => Command::new(program),
    };
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        c.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    c
}

/// On SIGINT/SIGTERM: remove the temp dir and exit (the servers and load
/// generators get SIGTERM from the kernel, see [`command`]).
fn cleanup_on_signal(tmp: PathBuf, keep: bool) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        rt.block_on(async {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        });
        eprintln!("keyward-bench compare: interrupted");
        if !keep {
            // Give the servers a moment to exit before removing their files.
            std::thread::sleep(Duration::from_millis(300));
            let _ = std::fs::remove_dir_all(&tmp);
        }
        std::process::exit(130);
    });
}

pub(crate) fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).with_context(|| format!("write {}", path.display()))
}

pub(crate) fn make_files(dir: &Path) -> Result<Files> {
    use keyward::dev::self_signed;
    std::fs::create_dir_all(dir)?;
    let (sc, sk) = self_signed("localhost", vec!["localhost".into(), "127.0.0.1".into()], false)?;
    let (cc, ck) = self_signed("keyward-bench-client", vec![], true)?;
    let (ac, _) = self_signed("keyward-bench-admin", vec![], true)?;
    let f = Files {
        dir: dir.to_path_buf(),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.crt"),
        client_key: dir.join("client.key"),
        admin_id: keyward_server::tls::identity_of_cert(ac.as_bytes()).ok_or_else(|| anyhow!("admin identity"))?,
        client_id: keyward_server::tls::identity_of_cert(cc.as_bytes()).ok_or_else(|| anyhow!("client identity"))?,
    };
    write(&f.server_cert, &sc)?;
    write(&f.server_key, &sk)?;
    write(&f.client_cert, &cc)?;
    write(&f.client_key, &ck)?;
    Ok(f)
}

/// A keyward config: a policy identity (not admin) allowed `/v1/key/*`, stdout
/// audit off, the `fs` keystore, optionally the `audit-file` sink and a long
/// cache expiry.
fn keyward_config(f: &Files, dir: &Path, port: u16, audit: bool, long_cache: bool) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let mut text = base_config(f, port, &["/v1/key/*"], &dir.join("keys"));
    if long_cache {
        text.push_str("[cache.expiry]\nany = \"1h\"\nunused = \"1h\"\n");
    }
    if audit {
        text.push_str(&format!(
            "[[audit]]\nplugin = \"audit-file\"\n[audit.config]\npath = \"{}\"\n",
            audit_path(dir).display()
        ));
    }
    let path = dir.join("keyward.toml");
    write(&path, &text)?;
    Ok(path)
}

/// What every keyward the benchmarks start has: the address, the admin,
/// TLS, stdout audit off, the client's policy allowing `allow`, and the `fs`
/// keystore on `keys`.
pub(crate) fn base_config(f: &Files, port: u16, allow: &[&str], keys: &Path) -> String {
    let allow = allow.iter().map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join(", ");
    format!(
        "address = \"127.0.0.1:{port}\"\n\
         [admin]\nidentity = \"{admin}\"\n\
         [tls]\nkey = \"{key}\"\ncert = \"{cert}\"\n\
         [log]\nerror = \"on\"\naudit = \"off\"\n\
         [policy.bench]\nallow = [{allow}]\nidentities = [\"{client}\"]\n\
         [keystore]\nplugin = \"fs\"\n[keystore.config]\npath = \"{keys}\"\n",
        admin = f.admin_id,
        client = f.client_id,
        key = f.server_key.display(),
        cert = f.server_cert.display(),
        keys = keys.display(),
    )
}

fn audit_path(dir: &Path) -> PathBuf {
    dir.join("audit").join("audit.jsonl")
}

pub(crate) fn spawn_logged(mut cmd: Command, dir: &Path) -> Result<Child> {
    std::fs::create_dir_all(dir)?;
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .stdout(File::create(dir.join("stdout.log"))?)
        .stderr(File::create(dir.join("stderr.log"))?);
    cmd.spawn().context("spawn server")
}

struct Ctx {
    exe: PathBuf,
    keyward: PathBuf,
    files: Files,
    server_cpus: Option<String>,
    client_cpus: Option<String>,
    threads: Option<usize>,
    rt: tokio::runtime::Runtime,
    probe_config: Arc<rustls::ClientConfig>,
}

impl Ctx {
    fn spawn_keyward(&self, name: &str, audit: bool, long_cache: bool, cache_dir: &Path) -> Result<(Server, Instant)> {
        let dir = self.files.dir.join(name);
        let port = free_port()?;
        let config = keyward_config(&self.files, &dir, port, audit, long_cache)?;
        let mut cmd = command(&self.keyward, self.server_cpus.as_deref());
        cmd.arg("server").arg("--config").arg(&config).env("KEYWARD_CACHE_DIR", cache_dir);
        let started = Instant::now();
        let child = spawn_logged(cmd, &dir)?;
        Ok((Server { name: name.to_string(), child, port, dir }, started))
    }

    fn spawn_baseline(&self) -> Result<(Server, Instant)> {
        let dir = self.files.dir.join(TARGET_BASELINE);
        let port = free_port()?;
        let mut cmd = command(&self.exe, self.server_cpus.as_deref());
        cmd.arg("baseline")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--cert")
            .arg(&self.files.server_cert)
            .arg("--key")
            .arg(&self.files.server_key);
        let started = Instant::now();
        let child = spawn_logged(cmd, &dir)?;
        Ok((Server { name: TARGET_BASELINE.into(), child, port, dir }, started))
    }

    /// Polls `/version` until it answers 2xx; the time since `since`.
    fn wait_ready(&self, server: &mut Server, since: Instant) -> Result<Duration> {
        let limit = Duration::from_secs(120);
        let name = ServerName::try_from("localhost").expect("valid name");
        loop {
            let probe = load::get_status(self.probe_config.clone(), server.addr(), name.clone(), "/version");
            let ok = self.rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), probe).await });
            if let Ok(Ok(status)) = ok {
                if status.is_success() {
                    return Ok(since.elapsed());
                }
            }
            if let Some(status) = server.child.try_wait()? {
                bail!("{} exited ({status}) before serving:\n{}", server.name, server.stderr());
            }
            if since.elapsed() > limit {
                bail!("{} did not answer /version within {limit:?}:\n{}", server.name, server.stderr());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Runs the load generator against one server.
    fn load_one(&self, server: &Server, route: Route, extra: &[String], label: &str) -> Result<Report> {
        let mut reports = self.load(&[server], route, extra, &[label.to_string()])?;
        reports.pop().ok_or_else(|| anyhow!("load generator printed no report"))
    }

    /// Runs the load generator against `servers` (taking turns when more
    /// than one): one report per server, in order.
    fn load(&self, servers: &[&Server], route: Route, extra: &[String], labels: &[String]) -> Result<Vec<Report>> {
        let mut cmd = command(&self.exe, self.client_cpus.as_deref());
        cmd.arg("load");
        for (server, label) in servers.iter().zip(labels) {
            cmd.arg("--url")
                .arg(server.url())
                .arg("--server-pid")
                .arg(server.pid().to_string())
                .arg("--label")
                .arg(label);
        }
        cmd.arg("--server-name")
            .arg("localhost")
            .arg("--cacert")
            .arg(&self.files.server_cert)
            .arg("--cert")
            .arg(&self.files.client_cert)
            .arg("--key")
            .arg(&self.files.client_key)
            .arg("--route")
            .arg(route.as_str())
            .arg("--json")
            .args(extra);
        if let Some(t) = self.threads {
            cmd.arg("--threads").arg(t.to_string());
        }
        let out = cmd.stdin(Stdio::null()).output().context("run load generator")?;
        let names = || servers.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ");
        if !out.status.success() {
            let logs: String = servers.iter().map(|s| format!("{} stderr:\n{}\n", s.name, s.stderr())).collect();
            bail!(
                "load generator against {} failed ({}):\n{}\n{logs}",
                names(),
                out.status,
                String::from_utf8_lossy(&out.stderr),
            );
        }
        let reports: Vec<Report> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        if reports.len() != servers.len() {
            bail!("load generator printed {} reports for {} servers ({})", reports.len(), servers.len(), names());
        }
        Ok(reports)
    }
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub(crate) fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

fn machine(keyward: &Path, taskset: Option<&String>) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|s| s.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let version = Command::new(keyward)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    Machine {
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        cpu_model,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
        keyward_version: version,
        busy_at_start: 0.0,
        builders_at_start: Vec::new(),
        taskset: taskset.cloned(),
    }
}

/// Waits (bounded) until no compiler runs and the machine is mostly idle;
/// returns the compilers still running.
fn wait_quiet(limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut said = false;
    loop {
        let busy = procfs::busy_builders();
        let load = procfs::machine_busy(Duration::from_secs(1));
        if (busy.is_empty() && load < 0.25) || Instant::now() >= deadline {
            return busy;
        }
        if !said {
            eprintln!(
                "waiting (at most {limit:?}) for the machine to be quiet: {:.0}% busy{}",
                load * 100.0,
                if busy.is_empty() { String::new() } else { format!(", compilers: {}", busy.join(" ")) }
            );
            said = true;
        }
        std::thread::sleep(Duration::from_secs(4));
    }
}

/// Counts lines and bytes of the audit file, then empties it (the sink opens
/// it for appending on every batch, so this is safe while it runs).
fn drain_audit(path: &Path) -> (u64, u64) {
    let Ok(bytes) = std::fs::read(path) else {
        return (0, 0);
    };
    let lines = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
    if let Ok(f) = std::fs::OpenOptions::new().write(true).open(path) {
        let _ = f.set_len(0);
    }
    (lines, bytes.len() as u64)
}

/// `--keyward`, or the `keyward` binary next to this executable (both are
/// built into target/dist by the same cargo command).
pub(crate) fn keyward_binary(given: Option<&Path>) -> Result<PathBuf> {
    let keyward = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe().context("current_exe")?.with_file_name("keyward"),
    };
    if !keyward.is_file() {
        bail!(
            "{} not found: build it with `cargo build --profile dist -p keyward -p keyward-bench` or pass --keyward",
            keyward.display()
        );
    }
    Ok(keyward)
}

pub fn run(mut args: CompareArgs) -> Result<()> {
    if args.quick {
        args.rounds = 1;
        args.duration = Duration::from_secs(2);
        args.warmup = Duration::from_millis(500);
        args.startup_runs = 1;
    }
    if !args.sequential && args.slice <= args.settle {
        bail!("--slice ({:?}) must be longer than --settle ({:?})", args.slice, args.settle);
    }
    let exe = std::env::current_exe().context("current_exe")?;
    let keyward = keyward_binary(args.keyward.as_deref())?;
    let (server_cpus, client_cpus) = match &args.taskset {
        Some(spec) => {
            let (s, c) =
                spec.split_once(':').ok_or_else(|| anyhow!("--taskset wants SERVER_CPUS:CLIENT_CPUS, e.g. 0:1"))?;
            (Some(s.to_string()), Some(c.to_string()))
        }
        None => (None, None),
    };
    let audit_cost_routes: Vec<Route> = match args.audit_cost_routes.as_str() {
        "all" => args.routes.clone(),
        "none" | "" => Vec::new(),
        list => list
            .split(',')
            .map(|r| {
                <Route as clap::ValueEnum>::from_str(r.trim(), true).map_err(|e| anyhow!("--audit-cost-routes: {e}"))
            })
            .collect::<Result<_>>()?,
    };

    let mut results =
        Results { date: now_rfc3339(), machine: machine(&keyward, args.taskset.as_ref()), ..Results::default() };
    let still_busy = wait_quiet(args.wait_quiet);
    results.machine.builders_at_start = still_busy;
    results.machine.busy_at_start = procfs::machine_busy(Duration::from_secs(1));
    eprintln!(
        "machine: {} CPUs ({}), {:.0}% busy before starting{}",
        results.machine.cpus,
        results.machine.cpu_model,
        results.machine.busy_at_start * 100.0,
        if results.machine.builders_at_start.is_empty() {
            String::new()
        } else {
            format!(", compilers running: {}", results.machine.builders_at_start.join(" "))
        }
    );

    let tmp = std::env::temp_dir().join(format!("keyward-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let files = make_files(&tmp)?;
    cleanup_on_signal(tmp.clone(), args.keep);
    let probe_config =
        crate::tls::client_config(Some(&files.server_cert), &files.client_cert, &files.client_key, false)?;
    let ctx = Ctx {
        exe,
        keyward,
        files,
        server_cpus,
        client_cpus,
        threads: args.threads,
        rt: tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        probe_config,
    };
    let outcome = run_phases(&ctx, &args, &audit_cost_routes, &mut results);
    if args.keep {
        eprintln!("kept {}", tmp.display());
    } else {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    // Print what was measured even if a later phase failed.
    print!("{}", markdown(&results, &args));
    outcome?;
    if args.check {
        let missed: Vec<String> = targets::verdicts(&results)
            .into_iter()
            .filter(|v| !v.met)
            .map(|v| format!("{} ({})", v.target, v.measured))
            .collect();
        if !missed.is_empty() {
            bail!("{} target(s) missed: {}", missed.len(), missed.join("; "));
        }
    }
    Ok(())
}

fn run_phases(ctx: &Ctx, args: &CompareArgs, audit_cost_routes: &[Route], results: &mut Results) -> Result<()> {
    let cache = ctx.files.dir.join("cache");

    if !args.no_startup {
        let mut s = Startup::default();
        for i in 0..args.startup_runs {
            let cold_cache = ctx.files.dir.join(format!("cache-cold-{i}"));
            let (mut srv, t0) = ctx.spawn_keyward("startup-cold", true, false, &cold_cache)?;
            let t = ctx.wait_ready(&mut srv, t0)?;
            std::thread::sleep(Duration::from_millis(500));
            s.rss_after_cold_start_kib = procfs::rss_kib(srv.pid());
            srv.stop();
            let _ = std::fs::remove_dir_all(&cold_cache);
            eprintln!("start-up, cold plugin cache: {:.0} ms", t.as_secs_f64() * 1e3);
            s.cold_ms.push(t.as_secs_f64() * 1e3);
        }
        // Fill the shared cache once (not counted), then measure cached starts.
        let (mut srv, t0) = ctx.spawn_keyward("startup-cached", true, false, &cache)?;
        ctx.wait_ready(&mut srv, t0)?;
        srv.stop();
        for _ in 0..args.startup_runs {
            let (mut srv, t0) = ctx.spawn_keyward("startup-cached", true, false, &cache)?;
            let t = ctx.wait_ready(&mut srv, t0)?;
            std::thread::sleep(Duration::from_millis(500));
            s.rss_after_start_kib = procfs::rss_kib(srv.pid());
            srv.stop();
            eprintln!("start-up, cached plugin artifacts: {:.0} ms", t.as_secs_f64() * 1e3);
            s.cached_ms.push(t.as_secs_f64() * 1e3);
        }
        results.startup = Some(s);
    }

    if results.startup.is_none() {
        // Compile the plugins into the shared cache first (not measured), so
        // every server below starts from cached artifacts.
        let (mut srv, t0) = ctx.spawn_keyward("startup-cached", true, false, &cache)?;
        ctx.wait_ready(&mut srv, t0)?;
        srv.stop();
    }

    if !args.no_load {
        run_load_matrix(ctx, args, audit_cost_routes, &cache, results)?;
    }

    if !args.no_memory && args.memory_keys > 0 {
        results.memory = Some(run_memory(ctx, args, &cache)?);
    }
    Ok(())
}

fn run_load_matrix(
    ctx: &Ctx,
    args: &CompareArgs,
    audit_cost_routes: &[Route],
    cache: &Path,
    results: &mut Results,
) -> Result<()> {
    let with_noaudit = !audit_cost_routes.is_empty();
    let idle = ctx.start_round(cache, with_noaudit)?;
    std::thread::sleep(Duration::from_secs(1));
    for s in idle.servers() {
        results.idle_rss_kib.push((s.name.clone(), procfs::rss_kib(s.pid()).unwrap_or(0)));
    }
    idle.stop();

    let servers_measured: usize = args
        .routes
        .iter()
        .map(|r| args.connections.len() * args.rounds * if audit_cost_routes.contains(r) { 3 } else { 2 })
        .sum();
    let per_server = if args.sequential {
        args.warmup + args.duration + Duration::from_millis(400)
    } else {
        let turns = args.duration.as_secs_f64() / (args.slice - args.settle).as_secs_f64();
        Duration::from_secs_f64(args.warmup.as_secs_f64() + turns.ceil() * args.slice.as_secs_f64())
    };
    eprintln!(
        "{servers_measured} measurements of {:?} + {:?} warm-up{}: about {} s",
        args.duration,
        args.warmup,
        if args.sequential {
            String::new()
        } else {
            format!(", servers taking turns of {:?} ({:?} not counted)", args.slice, args.settle)
        },
        (per_server * servers_measured as u32).as_secs()
    );
    let mut n = 0;
    for &route in &args.routes {
        for &conns in &args.connections {
            let mut extra = vec![
                "--connections".to_string(),
                conns.to_string(),
                "--payload-size".into(),
                args.payload_size.to_string(),
                "--duration".into(),
                humantime::format_duration(args.duration).to_string(),
                "--warmup".into(),
                humantime::format_duration(args.warmup).to_string(),
                "--key-name".into(),
                "bench".into(),
            ];
            if !args.sequential {
                extra.extend([
                    "--slice".into(),
                    humantime::format_duration(args.slice).to_string(),
                    "--settle".into(),
                    humantime::format_duration(args.settle).to_string(),
                ]);
            }
            for round in 0..args.rounds {
                let servers = ctx.start_round(cache, audit_cost_routes.contains(&route))?;
                // Keyward second: `run_order` puts it next to both others.
                let targets: Vec<&Server> = servers.servers().collect();
                let order: Vec<&Server> = run_order(targets.len(), round).into_iter().map(|i| targets[i]).collect();
                // Sequential: one server at a time; otherwise all of them in turns.
                let groups: Vec<&[&Server]> =
                    if args.sequential { order.chunks(1).collect() } else { vec![order.as_slice()] };
                for group in groups {
                    let labels: Vec<String> = group
                        .iter()
                        .map(|s| format!("{}/{}/c{}/r{}", s.name, route.as_str(), conns, round + 1))
                        .collect();
                    if !procfs::busy_builders().is_empty() {
                        results.measurements_with_builders += group.len();
                    }
                    results.measurements += group.len();
                    let reports = ctx.load(group, route, &extra, &labels)?;
                    for ((server, label), report) in group.iter().zip(&labels).zip(reports) {
                        n += 1;
                        eprintln!(
                            "[{n}/{servers_measured}] {label}: {:.0} req/s, p99 {:.0} µs, errors {}, server {:.1} µs CPU/req, other load {:.2} cores",
                            report.rps,
                            report.latency_us.p99,
                            report.errors,
                            report.server_cpu_us_per_req.unwrap_or(f64::NAN),
                            report.other_cores.unwrap_or(f64::NAN),
                        );
                        if server.name == TARGET_KEYWARD {
                            // Let the audit queue drain, then check every request was logged.
                            std::thread::sleep(AUDIT_SETTLE);
                            let (lines, bytes) = drain_audit(&audit_path(&server.dir));
                            results.audit.push(AuditCheck {
                                route: route.as_str().into(),
                                connections: conns,
                                round: round + 1,
                                requests_sent: report.total_requests,
                                audit_lines: lines,
                                audit_bytes: bytes,
                            });
                        }
                        results.load.push(Measurement { target: server.name.clone(), round: round + 1, report });
                    }
                }
                servers.stop();
            }
        }
    }
    Ok(())
}

/// The servers one round of a workload measures. Started afresh for every
/// round: two identical keyward processes measured in turns differ by up to
/// ±3 % (where their memory and threads happen to land), so one process kept
/// for a whole run would bias all its rounds the same way.
struct Round {
    baseline: Server,
    keyward: Server,
    noaudit: Option<Server>,
}

impl Round {
    /// Baseline, keyward, then keyward without audit if started: keyward
    /// second, so that `run_order` puts it next to each of the others.
    fn servers(&self) -> impl Iterator<Item = &Server> {
        [Some(&self.baseline), Some(&self.keyward), self.noaudit.as_ref()].into_iter().flatten()
    }

    fn stop(self) {
        self.baseline.stop();
        self.keyward.stop();
        if let Some(s) = self.noaudit {
            s.stop();
        }
    }
}

impl Ctx {
    /// Starts the servers of one round and waits until each answers; the
    /// audit lines of the readiness probes are discarded, so that a round's
    /// audit check counts only its own requests.
    fn start_round(&self, cache: &Path, with_noaudit: bool) -> Result<Round> {
        let (mut baseline, t0) = self.spawn_baseline()?;
        self.wait_ready(&mut baseline, t0)?;
        let (mut keyward, t0) = self.spawn_keyward(TARGET_KEYWARD, true, false, cache)?;
        self.wait_ready(&mut keyward, t0)?;
        let mut noaudit = None;
        if with_noaudit {
            let (mut s, t0) = self.spawn_keyward(TARGET_NOAUDIT, false, false, cache)?;
            self.wait_ready(&mut s, t0)?;
            noaudit = Some(s);
        }
        // The probes' lines reach the file within the sink's linger.
        std::thread::sleep(AUDIT_SETTLE);
        drain_audit(&audit_path(&keyward.dir));
        Ok(Round { baseline, keyward, noaudit })
    }
}

/// Native pre-population of the `fs` keystore directory: one file per key,
/// holding the newest KES keystore value, exactly what the plugin writes on
/// `create` (without the per-key fsync, which would dominate the run).
fn populate(dir: &Path, prefix: &str, n: u64, created_by: &str) -> Result<()> {
    use keyward_core::crypto::{Algorithm, StoredKey};
    std::fs::create_dir_all(dir)?;
    for i in 0..n {
        let value = StoredKey::generate(Algorithm::Aes256, created_by).encode();
        std::fs::write(dir.join(format!("{prefix}-{i}")), value)?;
    }
    Ok(())
}

fn run_memory(ctx: &Ctx, args: &CompareArgs, cache: &Path) -> Result<Memory> {
    let name = "keyward-100k";
    let dir = ctx.files.dir.join(name);
    let keys_dir = dir.join("keys");
    let many = |prefix: &str, n: u64, conns: usize| {
        vec![
            "--keys".to_string(),
            n.to_string(),
            "--key-name".into(),
            prefix.into(),
            "--no-create".into(),
            "--requests".into(),
            n.to_string(),
            "--warmup".into(),
            "0s".into(),
            "--connections".into(),
            conns.to_string(),
            "--payload-size".into(),
            args.payload_size.to_string(),
        ]
    };
    // The fs plugin's `init` reads the whole key directory (stale temp-file
    // clean-up), and every new pooled instance runs `init`: with N keys on disk
    // that exceeds the 2 s call timeout. So: start on a small keystore, grow
    // the instance pool with concurrent cache misses, and only then write the
    // N keys. A restart on the full keystore is tried at the end.
    populate(&keys_dir, "w", 256, &ctx.files.client_id)?;
    let (mut srv, t0) = ctx.spawn_keyward(name, false, true, cache)?;
    ctx.wait_ready(&mut srv, t0)?;
    let warm = ctx.load_one(&srv, Route::Encrypt, &many("w", 256, 16), "keyward/100k/pool-warm-up")?;
    if warm.errors > 0 {
        eprintln!("pool warm-up: {} errors ({:?})", warm.errors, warm.first_error);
    }
    let t = Instant::now();
    eprintln!("writing {} keys into the fs keystore…", args.memory_keys);
    populate(&keys_dir, "k", args.memory_keys, &ctx.files.client_id)?;
    let populate_s = t.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(1));
    let rss_idle_kib = procfs::rss_kib(srv.pid()).unwrap_or(0);
    let first_touch =
        ctx.load_one(&srv, Route::Encrypt, &many("k", args.memory_keys, 16), "keyward/100k/first-touch")?;
    eprintln!(
        "touched {} keys (cache misses through the fs plugin): {:.0} req/s, {} errors{}",
        first_touch.requests,
        first_touch.rps,
        first_touch.errors,
        first_touch.first_error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
    );
    std::thread::sleep(Duration::from_secs(1));
    let rss_after_touch_kib = procfs::rss_kib(srv.pid()).unwrap_or(0);
    let second_touch =
        ctx.load_one(&srv, Route::Encrypt, &many("k", args.memory_keys, 16), "keyward/100k/second-touch")?;
    eprintln!("touched them again (cached): {:.0} req/s, {} errors", second_touch.rps, second_touch.errors);
    std::thread::sleep(Duration::from_millis(500));
    let rss_after_second_touch_kib = procfs::rss_kib(srv.pid()).unwrap_or(0);
    srv.stop();

    // Does keyward start on a keystore of this size?
    let (mut srv, t0) = ctx.spawn_keyward(name, false, true, cache)?;
    let restart = match ctx.wait_ready(&mut srv, t0) {
        Ok(t) => Ok(t.as_secs_f64() * 1e3),
        Err(e) => {
            let msg = format!("{e:#}");
            let last = msg.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").to_string();
            Err(last)
        }
    };
    srv.stop();
    match &restart {
        Ok(ms) => eprintln!("restart on {} keys: {ms:.0} ms to first /version", args.memory_keys),
        Err(e) => eprintln!("restart on {} keys FAILED: {e}", args.memory_keys),
    }
    Ok(Memory {
        keys: args.memory_keys,
        populate_s,
        rss_idle_kib,
        first_touch,
        rss_after_touch_kib,
        second_touch,
        rss_after_second_touch_kib,
        restart_ms: restart,
    })
}

fn reports<'a>(r: &'a Results, target: &'a str, route: &'a str, conns: usize) -> impl Iterator<Item = &'a Report> + 'a {
    r.load
        .iter()
        .filter(move |m| m.target == target && m.report.route == route && m.report.connections == conns)
        .map(|m| &m.report)
}

/// The server's CPU per request (NaN where it could not be read).
fn cpu(report: &Report) -> f64 {
    report.server_cpu_us_per_req.unwrap_or(f64::NAN)
}

fn med<'a>(it: impl Iterator<Item = &'a Report>, f: impl Fn(&Report) -> f64) -> f64 {
    median(it.map(f).collect())
}

/// The ratios `num / den` of a figure, one per round, each pairing the two
/// servers' measurements of that round (taken back to back, seconds apart).
///
/// The machine's own speed drifts by tens of percent over minutes (the
/// baseline alone has measured 12.5 and 31 µs of CPU per request within the
/// same hour), so a ratio of two medians can pair a fast minute of one server
/// with a slow minute of the other; a ratio within a round cannot.
fn paired(r: &Results, num: &str, den: &str, route: &str, conns: usize, f: impl Fn(&Report) -> f64) -> Vec<f64> {
    let of = |target: &str, round: usize| {
        r.load
            .iter()
            .find(|m| {
                m.target == target && m.round == round && m.report.route == route && m.report.connections == conns
            })
            .map(|m| f(&m.report))
    };
    let rounds = r.load.iter().map(|m| m.round).max().unwrap_or(0);
    (1..=rounds).filter_map(|round| Some(of(num, round)? / of(den, round)?)).filter(|x| x.is_finite()).collect()
}

/// keyward's CPU per request by thread (with and without audit), where the
/// audit cost was measured: shows whether a cost lands on the request workers
/// or on the audit writer.
fn cpu_by_thread_table(r: &Results, args: &CompareArgs) -> Option<String> {
    let targets = [TARGET_NOAUDIT, TARGET_KEYWARD];
    let measured = |m: &&Measurement| targets.contains(&m.target.as_str());
    let names: std::collections::BTreeSet<&str> = r
        .load
        .iter()
        .filter(measured)
        .flat_map(|m| m.report.server_cpu_us_per_req_by_thread.keys().map(String::as_str))
        .collect();
    if names.is_empty() {
        return None;
    }
    let mut o =
        String::from("### keyward CPU by thread (µs per request, median of rounds)\n\n| route | conns | server |");
    for name in &names {
        o.push_str(&format!(" {name} |"));
    }
    o.push_str("\n|---|---:|---|");
    o.push_str(&"---:|".repeat(names.len()));
    o.push('\n');
    for route in &args.routes {
        for &c in &args.connections {
            if reports(r, TARGET_NOAUDIT, route.as_str(), c).next().is_none() {
                continue;
            }
            for target in targets {
                o.push_str(&format!("| {} | {c} | {target} |", route.as_str()));
                for name in &names {
                    let v = median(
                        reports(r, target, route.as_str(), c)
                            .filter_map(|x| x.server_cpu_us_per_req_by_thread.get(*name).copied())
                            .collect(),
                    );
                    o.push_str(&format!(" {} |", fmt2(v)));
                }
                o.push('\n');
            }
        }
    }
    o.push('\n');
    Some(o)
}

/// Median of per-round ratios with their range: `0.91 (0.88–0.93)`.
fn fmt_paired(ratios: &[f64], as_cost: bool) -> String {
    let show = |x: f64| if as_cost { format!("{:.1}%", (1.0 - x) * 100.0) } else { fmt2(x) };
    match ratios.len() {
        0 => "–".into(),
        1 => show(ratios[0]),
        _ => {
            let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            // A cost falls as the ratio rises: its range runs the other way.
            let (a, b) = if as_cost { (hi, lo) } else { (lo, hi) };
            format!("{} ({}–{})", show(median(ratios.to_vec())), show(a), show(b))
        }
    }
}

fn fmt2(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}")
    } else {
        "–".into()
    }
}

fn fmt0(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.0}")
    } else {
        "–".into()
    }
}

fn fmt1(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.1}")
    } else {
        "–".into()
    }
}

fn markdown(r: &Results, args: &CompareArgs) -> String {
    let mut o = String::new();
    let m = &r.machine;
    o.push_str(&format!(
        "## keyward-bench compare — {}\n\n{} CPUs ({}), Linux {}, {}; {} s per measurement after {} s warm-up, {}, {} round(s), payload {} B{}.\n",
        r.date,
        m.cpus,
        m.cpu_model,
        m.kernel,
        if m.keyward_version.is_empty() { "keyward ?" } else { &m.keyward_version },
        args.duration.as_secs_f64(),
        args.warmup.as_secs_f64(),
        if args.sequential {
            "servers measured one after the other".to_string()
        } else {
            format!(
                "servers taking turns of {} ms ({} ms not counted)",
                args.slice.as_millis(),
                args.settle.as_millis()
            )
        },
        args.rounds,
        args.payload_size,
        match &m.taskset {
            Some(t) => format!(", pinned (servers:client) {t}"),
            None => ", not pinned".into(),
        }
    ));
    o.push_str(&format!(
        "Machine {:.0}% busy just before the run; compilers seen during {} of {} measurements.\n\n",
        m.busy_at_start * 100.0,
        r.measurements_with_builders,
        r.measurements
    ));
    let other: Vec<f64> = r.load.iter().filter_map(|m| m.report.other_cores).collect();
    if !other.is_empty() {
        let max = other.iter().copied().fold(0.0, f64::max);
        let disturbed = other.iter().filter(|&&x| x > 0.2).count();
        o.push_str(&format!(
            "CPU used by other processes during the measurements: median {:.2} cores, max {:.2}; {} of {} measurements had more than 0.2 cores of other load.\n\n",
            median(other.clone()),
            max,
            disturbed,
            other.len()
        ));
    }

    o.push_str(&targets::markdown(&targets::verdicts(r)));

    if let Some(s) = &r.startup {
        let mm = |v: &[f64]| {
            let min = v.iter().copied().fold(f64::INFINITY, f64::min);
            let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            format!("{} ms (min {}, max {}, n={})", fmt0(median(v.to_vec())), fmt0(min), fmt0(max), v.len())
        };
        o.push_str("### Start-up (spawn → first 200 from /version; audit-file + fs plugins)\n\n");
        o.push_str("| plugin artifacts | median |\n|---|---|\n");
        o.push_str(&format!("| cold (empty KEYWARD_CACHE_DIR) | {} |\n", mm(&s.cold_ms)));
        o.push_str(&format!("| cached | {} |\n\n", mm(&s.cached_ms)));
    }

    if !r.load.is_empty() {
        o.push_str("### Throughput and latency (median of rounds)\n\n");
        o.push_str(if args.sequential {
            "Ratios are keyward/baseline per round (the two measured back to back), median and range over the rounds.\n\n"
        } else {
            "Ratios are keyward/baseline per round (the two measured in the same run, taking turns), median and range over the rounds.\n\n"
        });
        o.push_str("| route | conns | baseline req/s | keyward req/s | ratio | baseline p99 µs | keyward p99 µs | p99 ratio | baseline CPU µs/req | keyward CPU µs/req | CPU ratio | errors |\n");
        o.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        for route in &args.routes {
            let route = route.as_str();
            for &c in &args.connections {
                let b_rps = med(reports(r, TARGET_BASELINE, route, c), |x| x.rps);
                let k_rps = med(reports(r, TARGET_KEYWARD, route, c), |x| x.rps);
                let b_p99 = med(reports(r, TARGET_BASELINE, route, c), |x| x.latency_us.p99);
                let k_p99 = med(reports(r, TARGET_KEYWARD, route, c), |x| x.latency_us.p99);
                let b_cpu = med(reports(r, TARGET_BASELINE, route, c), cpu);
                let k_cpu = med(reports(r, TARGET_KEYWARD, route, c), cpu);
                let errors: u64 = r
                    .load
                    .iter()
                    .filter(|m| m.report.route == route && m.report.connections == c)
                    .map(|m| m.report.errors)
                    .sum();
                o.push_str(&format!(
                    "| {route} | {c} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {errors} |\n",
                    fmt0(b_rps),
                    fmt0(k_rps),
                    fmt_paired(&paired(r, TARGET_KEYWARD, TARGET_BASELINE, route, c, |x| x.rps), false),
                    fmt0(b_p99),
                    fmt0(k_p99),
                    fmt_paired(&paired(r, TARGET_KEYWARD, TARGET_BASELINE, route, c, |x| x.latency_us.p99), false),
                    fmt1(b_cpu),
                    fmt1(k_cpu),
                    fmt_paired(&paired(r, TARGET_KEYWARD, TARGET_BASELINE, route, c, cpu), false),
                ));
            }
        }
        o.push('\n');

        let audit_rows: Vec<(&str, usize)> = args
            .routes
            .iter()
            .flat_map(|rt| args.connections.iter().map(move |&c| (rt.as_str(), c)))
            .filter(|(rt, c)| reports(r, TARGET_NOAUDIT, rt, *c).next().is_some())
            .collect();
        if !audit_rows.is_empty() {
            o.push_str("### Cost of the audit-file sink (keyward with vs without `[[audit]]`)\n\n");
            o.push_str("| route | conns | no audit req/s | audit req/s | throughput cost | no audit p99 µs | audit p99 µs | no audit CPU µs/req | audit CPU µs/req | audit lines / requests |\n");
            o.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
            for (route, c) in audit_rows {
                let n_rps = med(reports(r, TARGET_NOAUDIT, route, c), |x| x.rps);
                let a_rps = med(reports(r, TARGET_KEYWARD, route, c), |x| x.rps);
                let n_p99 = med(reports(r, TARGET_NOAUDIT, route, c), |x| x.latency_us.p99);
                let a_p99 = med(reports(r, TARGET_KEYWARD, route, c), |x| x.latency_us.p99);
                let n_cpu = med(reports(r, TARGET_NOAUDIT, route, c), cpu);
                let a_cpu = med(reports(r, TARGET_KEYWARD, route, c), cpu);
                let (lines, sent) = r
                    .audit
                    .iter()
                    .filter(|a| a.route == route && a.connections == c)
                    .fold((0, 0), |(l, s), a| (l + a.audit_lines, s + a.requests_sent));
                o.push_str(&format!(
                    "| {route} | {c} | {} | {} | {} | {} | {} | {} | {} | {lines} / {sent} |\n",
                    fmt0(n_rps),
                    fmt0(a_rps),
                    fmt_paired(&paired(r, TARGET_KEYWARD, TARGET_NOAUDIT, route, c, |x| x.rps), true),
                    fmt0(n_p99),
                    fmt0(a_p99),
                    fmt1(n_cpu),
                    fmt1(a_cpu),
                ));
            }
            o.push('\n');
        }

        if let Some(table) = cpu_by_thread_table(r, args) {
            o.push_str(&table);
        }

        // Load generator overhead: its CPU per request next to the server's.
        o.push_str("### Load generator overhead (CPU µs per request, median)\n\n");
        o.push_str("| route | conns | load generator (vs baseline) | baseline server | load generator (vs keyward) | keyward server |\n|---|---:|---:|---:|---:|---:|\n");
        for route in &args.routes {
            let route = route.as_str();
            for &c in &args.connections {
                o.push_str(&format!(
                    "| {route} | {c} | {} | {} | {} | {} |\n",
                    fmt1(med(reports(r, TARGET_BASELINE, route, c), |x| x.client_cpu_us_per_req)),
                    fmt1(med(reports(r, TARGET_BASELINE, route, c), cpu)),
                    fmt1(med(reports(r, TARGET_KEYWARD, route, c), |x| x.client_cpu_us_per_req)),
                    fmt1(med(reports(r, TARGET_KEYWARD, route, c), cpu)),
                ));
            }
        }
        o.push('\n');
    }

    o.push_str("### Memory (VmRSS)\n\n| what | MiB |\n|---|---:|\n");
    if let Some(s) = &r.startup {
        if let Some(k) = s.rss_after_start_kib {
            o.push_str(&format!("| keyward just after a cached start | {:.1} |\n", mib(k)));
        }
        if let Some(k) = s.rss_after_cold_start_kib {
            o.push_str(&format!("| keyward just after a cold start (plugins compiled in-process) | {:.1} |\n", mib(k)));
        }
    }
    for (name, kib) in &r.idle_rss_kib {
        o.push_str(&format!("| {name} idle (after start, before load) | {:.1} |\n", mib(*kib)));
    }
    for target in [TARGET_BASELINE, TARGET_KEYWARD, TARGET_NOAUDIT] {
        let max = r
            .load
            .iter()
            .filter(|m| m.target == target && m.report.connections == 64)
            .filter_map(|m| m.report.server_rss_kib_max)
            .max();
        if let Some(k) = max {
            o.push_str(&format!("| {target} peak under 64-connection load | {:.1} |\n", mib(k)));
        }
    }
    if let Some(mem) = &r.memory {
        o.push_str(&format!(
            "| keyward (no audit sink, pool warmed) idle with {n} keys in the keystore, none cached | {:.1} |\n\
             | … after touching all {n} (cached) | {:.1} |\n\
             | … after touching them again | {:.1} |\n\
             | **{n} cached keys add** | **{:.1}** |\n\n\
             First touch (each a cache miss through the fs plugin, 16 connections): {:.0} req/s, p99 {:.0} µs, {} errors. \
             Second touch (cached): {:.0} req/s, p99 {:.0} µs, {} errors.\n",
            mib(mem.rss_idle_kib),
            mib(mem.rss_after_touch_kib),
            mib(mem.rss_after_second_touch_kib),
            mib(mem.cached_keys_kib()),
            mem.first_touch.rps,
            mem.first_touch.latency_us.p99,
            mem.first_touch.errors,
            mem.second_touch.rps,
            mem.second_touch.latency_us.p99,
            mem.second_touch.errors,
            n = mem.keys,
        ));
        match &mem.restart_ms {
            Ok(ms) => {
                o.push_str(&format!("Restart on the {}-key keystore: {ms:.0} ms to the first /version.\n", mem.keys))
            }
            Err(e) => o.push_str(&format!("Restart on the {}-key keystore **failed**: `{e}`\n", mem.keys)),
        }
    }
    o
}

/// The order in which round `round` measures `k` servers, where server 1
/// (keyward) is compared with each of the others (0, the baseline, and 2,
/// keyward without audit): keyward runs right next to every server it is
/// compared with, so each ratio pairs two measurements taken back to back
/// (the machine's speed drifts over minutes), and the order flips every
/// round so that neither side is always the earlier one.
fn run_order(k: usize, round: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..k).collect();
    if round % 2 == 1 {
        order.reverse();
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keyward (server 1) is measured next to the baseline and to keyward
    /// without audit in every round, first and second in turn.
    #[test]
    fn keyward_runs_next_to_each_server_it_is_compared_with() {
        for k in [2, 3] {
            let mut keyward_first = [0, 0, 0];
            for round in 0..4 {
                let order = run_order(k, round);
                assert_eq!(order.iter().copied().collect::<std::collections::BTreeSet<_>>().len(), k, "{order:?}");
                let at = |server| order.iter().position(|&s| s == server).unwrap();
                for other in (0..k).filter(|&s| s != 1) {
                    assert_eq!(at(1).abs_diff(at(other)), 1, "round {round}: {order:?}");
                    keyward_first[other] += usize::from(at(1) < at(other));
                }
            }
            for other in (0..k).filter(|&s| s != 1) {
                assert_eq!(keyward_first[other], 2, "keyward first in half the rounds against {other}");
            }
        }
    }

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn ratios_pair_the_servers_within_each_round() {
        let at = |target: &str, round: usize, rps: f64| Measurement {
            target: target.into(),
            round,
            report: Report { route: "encrypt".into(), connections: 16, rps, ..Report::default() },
        };
        // The machine got twice as fast after round 1; each round is paired
        // with itself, whatever the order the servers ran in.
        let r = Results {
            load: vec![
                at(TARGET_BASELINE, 1, 100.0),
                at(TARGET_KEYWARD, 1, 90.0),
                at(TARGET_BASELINE, 2, 200.0),
                at(TARGET_KEYWARD, 2, 180.0),
                at(TARGET_KEYWARD, 3, 170.0),
                at(TARGET_BASELINE, 3, 200.0),
                at(TARGET_KEYWARD, 1, 1.0).with_route("decrypt"),
            ],
            ..Results::default()
        };
        let ratios = paired(&r, TARGET_KEYWARD, TARGET_BASELINE, "encrypt", 16, |x| x.rps);
        assert_eq!(ratios, vec![0.9, 0.9, 0.85]);
        assert_eq!(fmt_paired(&ratios, false), "0.90 (0.85–0.90)");
        assert_eq!(fmt_paired(&ratios, true), "10.0% (10.0%–15.0%)");
        assert_eq!(fmt_paired(&[], false), "–");
        // A round missing one server pairs nothing.
        assert!(paired(&r, TARGET_NOAUDIT, TARGET_BASELINE, "encrypt", 16, |x| x.rps).is_empty());
    }

    impl Measurement {
        fn with_route(mut self, route: &str) -> Measurement {
            self.report.route = route.into();
            self
        }
    }

    #[test]
    fn audit_file_is_counted_and_emptied() {
        let dir = std::env::temp_dir().join(format!("keyward-bench-audit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.jsonl");
        std::fs::write(&path, "{}\n{}\n{}\n").unwrap();
        assert_eq!(drain_audit(&path), (3, 9));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        assert_eq!(drain_audit(&dir.join("missing")), (0, 0));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn keyward_config_has_policy_identity_and_audit_plugin() {
        let dir = std::env::temp_dir().join(format!("keyward-bench-config-{}", std::process::id()));
        let files = make_files(&dir).unwrap();
        let path = keyward_config(&files, &dir.join("k"), 7000, true, true).unwrap();
        // keyward itself accepts it…
        let settings = keyward_server::config::Settings::load(&path).unwrap();
        assert_eq!(settings.audit.len(), 1);
        // …and it says what the benchmark needs.
        let text = std::fs::read_to_string(path).unwrap();
        let value: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(value["policy"]["bench"]["identities"][0].as_str(), Some(files.client_id.as_str()));
        assert_ne!(files.client_id, files.admin_id);
        assert_eq!(value["log"]["audit"].as_str(), Some("off"));
        assert_eq!(value["audit"][0]["plugin"].as_str(), Some("audit-file"));
        assert_eq!(value["keystore"]["plugin"].as_str(), Some("fs"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
