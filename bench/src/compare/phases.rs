//! The phases of a `compare` run: start-up, the load matrix (every route and
//! connection count, round by round, the servers taking turns) and memory
//! with many cached keys.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::ctx::Ctx;
use super::results::{AuditCheck, Measurement, Memory, Phase, Results, Startup};
use super::servers::{audit_path, drain_audit, Server};
use super::{Plan, AUDIT_COST_ROUTES, AUDIT_SETTLE, CONNECTIONS, PAYLOAD_SIZE, ROUTES, SETTLE, SLICE, TARGET_KEYWARD};
use crate::load::{Report, Route};
use crate::procfs;

pub(super) fn run_phases(ctx: &Ctx, plan: &Plan, results: &mut Results) -> Result<()> {
    let cache = ctx.files.dir.join("cache");

    if plan.runs(Phase::Startup) {
        results.startup = Some(run_startup(ctx, plan.startup_runs, &cache)?);
    }

    if results.startup.is_none() {
        // Compile the plugins into the shared cache first (not measured), so
        // every server below starts from cached artifacts.
        let (mut srv, t0) = ctx.spawn_keyward("startup-cached", true, false, &cache)?;
        ctx.wait_ready(&mut srv, t0)?;
        srv.stop();
    }

    if plan.runs(Phase::Load) {
        run_load_matrix(ctx, plan, &cache, results)?;
    }

    if plan.runs(Phase::Memory) {
        results.memory = Some(run_memory(ctx, plan.memory_keys, &cache)?);
    }
    Ok(())
}

/// Start-ups with an empty plugin cache (each its own), then with the shared
/// `cache` filled.
fn run_startup(ctx: &Ctx, runs: usize, cache: &Path) -> Result<Startup> {
    let mut s = Startup::default();
    for i in 0..runs {
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
    let (mut srv, t0) = ctx.spawn_keyward("startup-cached", true, false, cache)?;
    ctx.wait_ready(&mut srv, t0)?;
    srv.stop();
    for _ in 0..runs {
        let (mut srv, t0) = ctx.spawn_keyward("startup-cached", true, false, cache)?;
        let t = ctx.wait_ready(&mut srv, t0)?;
        std::thread::sleep(Duration::from_millis(500));
        s.rss_after_start_kib = procfs::rss_kib(srv.pid());
        srv.stop();
        eprintln!("start-up, cached plugin artifacts: {:.0} ms", t.as_secs_f64() * 1e3);
        s.cached_ms.push(t.as_secs_f64() * 1e3);
    }
    Ok(s)
}

/// Progress through the load matrix, for the log lines.
struct Progress {
    n: usize,
    of: usize,
}

fn run_load_matrix(ctx: &Ctx, plan: &Plan, cache: &Path, results: &mut Results) -> Result<()> {
    // All three servers, keyward without audit included (it is measured at
    // `AUDIT_COST_ROUTES`).
    let idle = ctx.start_round(cache, true)?;
    std::thread::sleep(Duration::from_secs(1));
    for s in idle.servers() {
        results.idle_rss_kib.push((s.name.clone(), procfs::rss_kib(s.pid()).unwrap_or(0)));
    }
    idle.stop();

    let mut progress = Progress { n: 0, of: announce(plan) };
    for route in ROUTES {
        for conns in CONNECTIONS {
            let extra = load_options(plan, conns);
            for round in 0..plan.rounds {
                let servers = ctx.start_round(cache, AUDIT_COST_ROUTES.contains(&route))?;
                // Keyward second: `run_order` puts it next to both others.
                let targets: Vec<&Server> = servers.servers().collect();
                let order: Vec<&Server> = run_order(targets.len(), round).into_iter().map(|i| targets[i]).collect();
                let labels: Vec<String> =
                    order.iter().map(|s| format!("{}/{}/c{}/r{}", s.name, route.as_str(), conns, round + 1)).collect();
                if !procfs::busy_builders().is_empty() {
                    results.measurements_with_builders += order.len();
                }
                results.measurements += order.len();
                let reports = ctx.load(&order, route, &extra, &labels)?;
                for ((server, label), report) in order.iter().zip(&labels).zip(reports) {
                    record(server, label, route, round + 1, report, &mut progress, results);
                }
                servers.stop();
            }
        }
    }
    Ok(())
}

/// Prints how many measurements the matrix takes and about how long; the count.
fn announce(plan: &Plan) -> usize {
    let servers_measured: usize = ROUTES
        .iter()
        .map(|r| CONNECTIONS.len() * plan.rounds * if AUDIT_COST_ROUTES.contains(r) { 3 } else { 2 })
        .sum();
    let turns = plan.duration.as_secs_f64() / (SLICE - SETTLE).as_secs_f64();
    let per_server = Duration::from_secs_f64(plan.warmup.as_secs_f64() + turns.ceil() * SLICE.as_secs_f64());
    eprintln!(
        "{servers_measured} measurements of {:?} + {:?} warm-up, servers taking turns of {SLICE:?} ({SETTLE:?} not counted): about {} s",
        plan.duration,
        plan.warmup,
        (per_server * servers_measured as u32).as_secs()
    );
    servers_measured
}

/// The load generator's options for one workload at `conns` connections.
fn load_options(plan: &Plan, conns: usize) -> Vec<String> {
    vec![
        "--connections".to_string(),
        conns.to_string(),
        "--payload-size".into(),
        PAYLOAD_SIZE.to_string(),
        "--duration".into(),
        humantime::format_duration(plan.duration).to_string(),
        "--warmup".into(),
        humantime::format_duration(plan.warmup).to_string(),
        "--key-name".into(),
        "bench".into(),
        "--slice".into(),
        humantime::format_duration(SLICE).to_string(),
        "--settle".into(),
        humantime::format_duration(SETTLE).to_string(),
    ]
}

/// Logs one server's measurement and keeps it; for keyward, also counts the
/// audit lines its requests left.
fn record(
    server: &Server,
    label: &str,
    route: Route,
    round: usize,
    report: Report,
    progress: &mut Progress,
    results: &mut Results,
) {
    progress.n += 1;
    eprintln!(
        "[{}/{}] {label}: {:.0} req/s, p99 {:.0} µs, errors {}, server {:.1} µs CPU/req, other load {:.2} cores",
        progress.n,
        progress.of,
        report.rps,
        report.latency_us.p99,
        report.errors,
        report.server_cpu_us_per_req.unwrap_or(f64::NAN),
        report.other_cores.unwrap_or(f64::NAN),
    );
    if server.name == TARGET_KEYWARD {
        // Let the audit queue drain, then count the lines (judged by `--check`).
        std::thread::sleep(AUDIT_SETTLE);
        let (lines, bytes) = drain_audit(&audit_path(&server.dir));
        results.audit.push(AuditCheck {
            route: route.as_str().into(),
            connections: report.connections,
            round,
            requests_sent: report.total_requests,
            setup_requests: report.setup_requests,
            audit_lines: lines,
            audit_bytes: bytes,
        });
    }
    results.load.push(Measurement { target: server.name.clone(), round, report });
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

/// The load generator's options for one `encrypt` to each of the `n` keys
/// `<prefix>-0 …`, which exist already.
fn each_key_once(prefix: &str, n: u64, conns: usize) -> Vec<String> {
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
        PAYLOAD_SIZE.to_string(),
    ]
}

fn run_memory(ctx: &Ctx, keys: u64, cache: &Path) -> Result<Memory> {
    let name = "keyward-100k";
    let dir = ctx.files.dir.join(name);
    let keys_dir = dir.join("keys");
    // The fs plugin's `init` reads the whole key directory (stale temp-file
    // clean-up), and every new pooled instance runs `init`: with N keys on disk
    // that exceeds the 2 s call timeout. So: start on a small keystore, grow
    // the instance pool with concurrent cache misses, and only then write the
    // N keys. A restart on the full keystore is tried at the end.
    populate(&keys_dir, "w", 256, &ctx.files.client_id)?;
    let (mut srv, t0) = ctx.spawn_keyward(name, false, true, cache)?;
    ctx.wait_ready(&mut srv, t0)?;
    let pool_warm_up = ctx.load_one(&srv, Route::Encrypt, &each_key_once("w", 256, 16), "keyward/100k/pool-warm-up")?;
    if pool_warm_up.total_errors > 0 {
        eprintln!("pool warm-up: {} errors ({:?})", pool_warm_up.total_errors, pool_warm_up.first_error);
    }
    let t = Instant::now();
    eprintln!("writing {keys} keys into the fs keystore…");
    populate(&keys_dir, "k", keys, &ctx.files.client_id)?;
    let populate_s = t.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(1));
    let rss_idle_kib = procfs::rss_kib(srv.pid()).unwrap_or(0);
    let touch = each_key_once("k", keys, 16);
    let first_touch = ctx.load_one(&srv, Route::Encrypt, &touch, "keyward/100k/first-touch")?;
    eprintln!(
        "touched {} keys (cache misses through the fs plugin): {:.0} req/s, {} errors{}",
        first_touch.requests,
        first_touch.rps,
        first_touch.errors,
        first_touch.first_error.as_deref().map(|e| format!(" ({e})")).unwrap_or_default()
    );
    std::thread::sleep(Duration::from_secs(1));
    let rss_after_touch_kib = procfs::rss_kib(srv.pid()).unwrap_or(0);
    let second_touch = ctx.load_one(&srv, Route::Encrypt, &touch, "keyward/100k/second-touch")?;
    eprintln!("touched them again (cached): {:.0} req/s, {} errors", second_touch.rps, second_touch.errors);
    std::thread::sleep(Duration::from_millis(500));
    let rss_after_second_touch_kib = procfs::rss_kib(srv.pid()).unwrap_or(0);
    srv.stop();
    Ok(Memory {
        keys,
        pool_warm_up,
        populate_s,
        rss_idle_kib,
        first_touch,
        rss_after_touch_kib,
        second_touch,
        rss_after_second_touch_kib,
        restart_ms: restart(ctx, name, cache, keys)?,
    })
}

/// Does keyward start on a keystore of `keys` keys? The time to the first
/// `/version`, or the last line of why not.
fn restart(ctx: &Ctx, name: &str, cache: &Path, keys: u64) -> Result<Result<f64, String>> {
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
        Ok(ms) => eprintln!("restart on {keys} keys: {ms:.0} ms to first /version"),
        Err(e) => eprintln!("restart on {keys} keys FAILED: {e}"),
    }
    Ok(restart)
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
}
