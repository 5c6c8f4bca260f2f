//! `keyward-bench compare`: keyward against the baseline in one run.
//!
//! Generates certificates, measures start-up (cold and cached plugin
//! artifacts), starts the baseline and two keyward servers (with and without
//! the `audit-file` sink), fresh for every round, runs the same workload
//! against each — the servers taking turns in one load run — and measures
//! memory idle, under load and with 100k cached keys. Prints markdown
//! tables; `--json-out` keeps every figure; `--check` fails unless every
//! target was judged and met and the run was clean (see [`targets`]).
//!
//! The method (workloads, measurement lengths, turns) is fixed: the
//! constants below, as BENCHMARKS.md describes them. Only the number of
//! rounds, `--quick`'s smoke run and skipping whole phases change it, and a
//! skipped phase fails `--check`.
//!
//! All traffic goes to 127.0.0.1. Every measurement is bounded in time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::load::Route;
use crate::procfs;

mod ctx;
mod markdown;
mod phases;
mod results;
mod servers;
mod targets;

use ctx::Ctx;
pub(crate) use results::{median, mib, now_rfc3339};
use results::{Machine, Phase, Results};
pub(crate) use servers::{
    base_config, command, free_port, keyward_binary, make_files, spawn_logged, write, Files, Server,
};

#[derive(clap::Args, Clone, Debug)]
pub struct CompareArgs {
    /// The keyward binary (default: `keyward` next to this executable, i.e. target/dist/keyward).
    #[arg(long)]
    pub keyward: Option<PathBuf>,
    /// Measurements per server and workload, each with freshly started servers taking turns.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Skip the throughput/latency comparison (and idle RSS): those targets are not judged.
    #[arg(long)]
    pub no_load: bool,
    /// Skip the start-up measurement: its target is not judged.
    #[arg(long)]
    pub no_startup: bool,
    /// Skip the cached-keys memory measurement: its target is not judged.
    #[arg(long)]
    pub no_memory: bool,
    /// Keys created and touched for the cached-keys memory figure.
    #[arg(long, default_value_t = 100_000)]
    pub memory_keys: u64,
    /// A smoke run: 1 round of 2 s measurements after 0.5 s warm-up, 1 start-up each.
    #[arg(long)]
    pub quick: bool,
    /// Write every figure as JSON to this file.
    #[arg(long)]
    pub json_out: Option<PathBuf>,
    /// Keep the temporary directory (configs, logs, keystores).
    #[arg(long)]
    pub keep: bool,
    /// Wait at most this long for running compilers (rustc, cc, ld) to finish before measuring.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    pub wait_quiet: Duration,
    /// Exit with an error unless every target was judged and met, no request
    /// failed and keyward audited every request it answered.
    #[arg(long)]
    pub check: bool,
}

const TARGET_BASELINE: &str = "baseline";
const TARGET_KEYWARD: &str = "keyward";
const TARGET_NOAUDIT: &str = "keyward-noaudit";
/// Longer than the audit sink's linger plus a write: after this, every
/// answered request's line is in the file.
const AUDIT_SETTLE: Duration = Duration::from_millis(300);

/// The workloads: each route at each connection count.
const ROUTES: [Route; 4] = [Route::Encrypt, Route::Decrypt, Route::Generate, Route::Hmac];
const CONNECTIONS: [usize; 3] = [1, 16, 64];
/// Plaintext and HMAC message bytes.
const PAYLOAD_SIZE: usize = 64;
/// Routes at which keyward without the audit sink is measured too: the cost of audit.
const AUDIT_COST_ROUTES: [Route; 1] = [Route::Encrypt];
/// The servers' turns: each loads one server for `SLICE` while the others
/// idle, the first `SETTLE` of it not counted (the previous server's
/// deferred work, this one's threads waking).
const SLICE: Duration = Duration::from_millis(250);
const SETTLE: Duration = Duration::from_millis(50);

/// What a run measures: the method's lengths and counts (or `--quick`'s),
/// and the phases to run.
#[derive(Debug, Clone)]
struct Plan {
    rounds: usize,
    /// Measured per server and workload, after `warmup`.
    duration: Duration,
    warmup: Duration,
    /// Start-ups measured for each of cold and cached.
    startup_runs: usize,
    memory_keys: u64,
    /// Phases left out by an option.
    skipped: Vec<Phase>,
}

impl Plan {
    fn new(args: &CompareArgs) -> Result<Plan> {
        if args.rounds == 0 {
            bail!("--rounds must be at least 1");
        }
        if args.memory_keys == 0 {
            bail!("--memory-keys must be at least 1 (--no-memory skips the phase)");
        }
        let skipped = [(args.no_startup, Phase::Startup), (args.no_load, Phase::Load), (args.no_memory, Phase::Memory)]
            .into_iter()
            .filter_map(|(skip, phase)| skip.then_some(phase))
            .collect();
        let plan = Plan {
            rounds: args.rounds,
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            startup_runs: 3,
            memory_keys: args.memory_keys,
            skipped,
        };
        if !args.quick {
            return Ok(plan);
        }
        Ok(Plan {
            rounds: 1,
            duration: Duration::from_secs(2),
            warmup: Duration::from_millis(500),
            startup_runs: 1,
            ..plan
        })
    }

    fn runs(&self, phase: Phase) -> bool {
        !self.skipped.contains(&phase)
    }
}

pub fn run(args: CompareArgs) -> Result<()> {
    let plan = Plan::new(&args)?;
    let exe = std::env::current_exe().context("current_exe")?;
    let keyward = keyward_binary(args.keyward.as_deref())?;
    let mut results = Results {
        date: now_rfc3339(),
        machine: machine(&keyward),
        skipped: plan.skipped.clone(),
        ..Results::default()
    };
    wait_until_quiet(&args, &mut results.machine);

    let tmp = std::env::temp_dir().join(format!("keyward-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let files = make_files(&tmp)?;
    servers::cleanup_on_signal(tmp.clone(), args.keep);
    let probe_config =
        crate::tls::client_config(Some(&files.server_cert), &files.client_cert, &files.client_key, false)?;
    let ctx = Ctx {
        exe,
        keyward,
        files,
        rt: tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        probe_config,
    };
    let outcome = phases::run_phases(&ctx, &plan, &mut results);
    if args.keep {
        eprintln!("kept {}", tmp.display());
    } else {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    report(&results, &plan, &args, outcome)
}

/// Waits for a quiet machine (see [`wait_quiet`]) and notes how busy it was.
fn wait_until_quiet(args: &CompareArgs, machine: &mut Machine) {
    machine.builders_at_start = wait_quiet(args.wait_quiet);
    machine.busy_at_start = procfs::machine_busy(Duration::from_secs(1));
    eprintln!(
        "machine: {} CPUs ({}), {:.0}% busy before starting{}",
        machine.cpus,
        machine.cpu_model,
        machine.busy_at_start * 100.0,
        if machine.builders_at_start.is_empty() {
            String::new()
        } else {
            format!(", compilers running: {}", machine.builders_at_start.join(" "))
        }
    );
}

/// Writes `--json-out`, prints the tables (even if a phase failed), then
/// fails if a phase did or, with `--check`, naming every reason the run does
/// not pass.
fn report(results: &Results, plan: &Plan, args: &CompareArgs, outcome: Result<()>) -> Result<()> {
    if let Some(path) = &args.json_out {
        std::fs::write(path, serde_json::to_string_pretty(results)?)
            .with_context(|| format!("write {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    // Print what was measured even if a later phase failed.
    print!("{}", markdown::markdown(results, plan));
    outcome?;
    if args.check {
        let failures = targets::check_failures(results);
        if !failures.is_empty() {
            bail!("--check failed:\n  - {}", failures.join("\n  - "));
        }
    }
    Ok(())
}

fn machine(keyward: &Path) -> Machine {
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: CompareArgs,
    }

    fn plan(argv: &[&str]) -> Result<Plan> {
        let cli = Cli::try_parse_from(std::iter::once("compare").chain(argv.iter().copied()))?;
        Plan::new(&cli.args)
    }

    /// The method is fixed: only the rounds, `--quick` and skipping whole
    /// phases change what is measured; the experiment switches are gone.
    #[test]
    fn the_method_is_fixed_and_quick_shortens_it() {
        let p = plan(&[]).unwrap();
        let method = (p.rounds, p.duration, p.warmup, p.startup_runs, p.memory_keys);
        assert_eq!(method, (5, Duration::from_secs(5), Duration::from_secs(1), 3, 100_000));
        assert!(p.skipped.is_empty());
        let q = plan(&["--quick", "--memory-keys", "10000"]).unwrap();
        let quick = (q.rounds, q.duration, q.warmup, q.startup_runs, q.memory_keys);
        assert_eq!(quick, (1, Duration::from_secs(2), Duration::from_millis(500), 1, 10_000));
        let s = plan(&["--no-memory", "--no-startup"]).unwrap();
        assert_eq!(s.skipped, [Phase::Startup, Phase::Memory]);
        assert!(s.runs(Phase::Load) && !s.runs(Phase::Memory));
        assert!(plan(&["--memory-keys", "0"]).unwrap_err().to_string().contains("--no-memory"));
        assert!(plan(&["--rounds", "0"]).is_err());
        for gone in ["--sequential", "--taskset", "--threads", "--slice", "--settle", "--routes", "--duration"] {
            assert!(plan(&[gone, "1"]).is_err(), "{gone} is not an option any more");
        }
    }
}
