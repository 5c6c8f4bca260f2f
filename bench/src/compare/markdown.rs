//! The markdown `compare` prints: a header about the machine and the run,
//! the targets, then one table per figure.

use super::results::{cpu, med, median, mib, paired, reports, Measurement, Results, Startup};
use super::{
    targets, Plan, CONNECTIONS, PAYLOAD_SIZE, ROUTES, SETTLE, SLICE, TARGET_BASELINE, TARGET_KEYWARD, TARGET_NOAUDIT,
};
use crate::load::Report;

pub(super) fn markdown(r: &Results, plan: &Plan) -> String {
    let mut o = header(r, plan);
    o.push_str(&targets::markdown(&targets::verdicts(r), &targets::checks(r)));
    if let Some(s) = &r.startup {
        o.push_str(&startup_table(s));
    }
    if !r.load.is_empty() {
        o.push_str(&throughput_table(r));
        o.push_str(&audit_table(r));
        if let Some(table) = cpu_by_thread_table(r) {
            o.push_str(&table);
        }
        o.push_str(&load_generator_table(r));
    }
    o.push_str(&memory_table(r));
    o
}

/// The machine, the method, and how quiet the machine was.
fn header(r: &Results, plan: &Plan) -> String {
    let m = &r.machine;
    let mut o = format!(
        "## keyward-bench compare — {}\n\n{} CPUs ({}), Linux {}, {}; {} s per measurement after {} s warm-up, servers taking turns of {} ms ({} ms not counted), {} round(s), payload {PAYLOAD_SIZE} B.\n",
        r.date,
        m.cpus,
        m.cpu_model,
        m.kernel,
        if m.keyward_version.is_empty() { "keyward ?" } else { &m.keyward_version },
        plan.duration.as_secs_f64(),
        plan.warmup.as_secs_f64(),
        SLICE.as_millis(),
        SETTLE.as_millis(),
        plan.rounds,
    );
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
    o
}

fn startup_table(s: &Startup) -> String {
    let mm = |v: &[f64]| {
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{} ms (min {}, max {}, n={})", fmt0(median(v.to_vec())), fmt0(min), fmt0(max), v.len())
    };
    let mut o = String::from("### Start-up (spawn → first 200 from /version; audit-file + fs plugins)\n\n");
    o.push_str("| plugin artifacts | median |\n|---|---|\n");
    o.push_str(&format!("| cold (empty KEYWARD_CACHE_DIR) | {} |\n", mm(&s.cold_ms)));
    o.push_str(&format!("| cached | {} |\n\n", mm(&s.cached_ms)));
    o
}

/// keyward against the baseline, every route and connection count.
fn throughput_table(r: &Results) -> String {
    let mut o = String::from("### Throughput and latency (median of rounds)\n\n");
    o.push_str("Ratios are keyward/baseline per round (the two measured in the same run, taking turns), median and range over the rounds.\n\n");
    o.push_str("| route | conns | baseline req/s | keyward req/s | ratio | baseline p99 µs | keyward p99 µs | p99 ratio | baseline CPU µs/req | keyward CPU µs/req | CPU ratio | errors |\n");
    o.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for route in ROUTES {
        let route = route.as_str();
        for c in CONNECTIONS {
            let of = |target, f: fn(&Report) -> f64| med(reports(r, target, route, c), f);
            let ratio =
                |f: fn(&Report) -> f64| fmt_paired(&paired(r, TARGET_KEYWARD, TARGET_BASELINE, route, c, f), false);
            let errors: u64 = r
                .load
                .iter()
                .filter(|m| m.report.route == route && m.report.connections == c)
                .map(|m| m.report.errors)
                .sum();
            o.push_str(&format!(
                "| {route} | {c} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {errors} |\n",
                fmt0(of(TARGET_BASELINE, |x| x.rps)),
                fmt0(of(TARGET_KEYWARD, |x| x.rps)),
                ratio(|x| x.rps),
                fmt0(of(TARGET_BASELINE, |x| x.latency_us.p99)),
                fmt0(of(TARGET_KEYWARD, |x| x.latency_us.p99)),
                ratio(|x| x.latency_us.p99),
                fmt1(of(TARGET_BASELINE, cpu)),
                fmt1(of(TARGET_KEYWARD, cpu)),
                ratio(cpu),
            ));
        }
    }
    o.push('\n');
    o
}

/// keyward with against without the audit sink, where both were measured
/// (empty if nowhere).
fn audit_table(r: &Results) -> String {
    let audit_rows: Vec<(&str, usize)> = ROUTES
        .iter()
        .flat_map(|rt| CONNECTIONS.iter().map(move |&c| (rt.as_str(), c)))
        .filter(|(rt, c)| reports(r, TARGET_NOAUDIT, rt, *c).next().is_some())
        .collect();
    if audit_rows.is_empty() {
        return String::new();
    }
    let mut o = String::from("### Cost of the audit-file sink (keyward with vs without `[[audit]]`)\n\n");
    o.push_str("| route | conns | no audit req/s | audit req/s | throughput cost | no audit p99 µs | audit p99 µs | no audit CPU µs/req | audit CPU µs/req | audit lines / requests |\n");
    o.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (route, c) in audit_rows {
        let of = |target, f: fn(&Report) -> f64| med(reports(r, target, route, c), f);
        let (lines, sent) = r
            .audit
            .iter()
            .filter(|a| a.route == route && a.connections == c)
            .fold((0, 0), |(l, s), a| (l + a.audit_lines, s + a.requests_sent));
        o.push_str(&format!(
            "| {route} | {c} | {} | {} | {} | {} | {} | {} | {} | {lines} / {sent} |\n",
            fmt0(of(TARGET_NOAUDIT, |x| x.rps)),
            fmt0(of(TARGET_KEYWARD, |x| x.rps)),
            fmt_paired(&paired(r, TARGET_KEYWARD, TARGET_NOAUDIT, route, c, |x| x.rps), true),
            fmt0(of(TARGET_NOAUDIT, |x| x.latency_us.p99)),
            fmt0(of(TARGET_KEYWARD, |x| x.latency_us.p99)),
            fmt1(of(TARGET_NOAUDIT, cpu)),
            fmt1(of(TARGET_KEYWARD, cpu)),
        ));
    }
    o.push('\n');
    o
}

/// keyward's CPU per request by thread (with and without audit), where the
/// audit cost was measured: shows whether a cost lands on the request workers
/// or on the audit writer.
fn cpu_by_thread_table(r: &Results) -> Option<String> {
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
    for route in ROUTES {
        for c in CONNECTIONS {
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

/// Load generator overhead: its CPU per request next to the server's.
fn load_generator_table(r: &Results) -> String {
    let mut o = String::from("### Load generator overhead (CPU µs per request, median)\n\n");
    o.push_str("| route | conns | load generator (vs baseline) | baseline server | load generator (vs keyward) | keyward server |\n|---|---:|---:|---:|---:|---:|\n");
    for route in ROUTES {
        let route = route.as_str();
        for c in CONNECTIONS {
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
    o
}

/// RSS after start-up, idle, under load, and with many cached keys.
fn memory_table(r: &Results) -> String {
    let mut o = String::from("### Memory (VmRSS)\n\n| what | MiB |\n|---|---:|\n");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paired_ratios_show_their_median_and_range() {
        let ratios = [0.9, 0.9, 0.85];
        assert_eq!(fmt_paired(&ratios, false), "0.90 (0.85–0.90)");
        assert_eq!(fmt_paired(&ratios, true), "10.0% (10.0%–15.0%)");
        assert_eq!(fmt_paired(&[0.5], false), "0.50");
        assert_eq!(fmt_paired(&[], false), "–");
    }
}
