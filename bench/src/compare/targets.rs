//! Issue 6's targets and the checks of a clean run, judged on what one
//! `compare` run measured.
//!
//! Each target is judged on the median over the run's rounds of the paired
//! per-round figure (the same numbers the tables print), so a verdict never
//! pairs a fast minute of one server with a slow minute of the other. The
//! plugin `get` target is a criterion benchmark (`bench/benches/plugin.rs`)
//! and is not judged here.
//!
//! Every target of the standard set gets a verdict: one that could not be
//! judged says why (its phase skipped by an option, or nothing measured).
//! A clean run also had no failed request in any load run, and keyward's
//! audit sink wrote exactly one line per request keyward answered.
//! `--check` passes only if all of that holds: see [`check_failures`].

use super::results::{median, mib, paired, Phase, Results};
use super::{AUDIT_COST_ROUTES, ROUTES, TARGET_BASELINE, TARGET_KEYWARD, TARGET_NOAUDIT};
use crate::load::Report;

/// Throughput at least this share of the baseline's.
const MIN_THROUGHPUT_RATIO: f64 = 0.9;
/// p99 latency at most this multiple of the baseline's.
const MAX_P99_RATIO: f64 = 1.5;
/// Audit (the file plugin) costs at most this share of throughput.
const MAX_AUDIT_COST: f64 = 0.05;
/// Start-up with cached plugin artifacts, to the first served request.
const MAX_CACHED_START_MS: f64 = 150.0;
const MAX_IDLE_RSS_MIB: f64 = 40.0;
/// Memory 100,000 cached keys may add (scaled to the keys a run caches).
const MAX_MIB_PER_100K_KEYS: f64 = 64.0;
/// Connection counts the throughput and p99 targets are set for.
const LOADED: [usize; 2] = [16, 64];
/// Load runs named in a failed check; the rest are counted.
const NAMED: usize = 3;

/// How a target or check came out.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Judgement {
    Met,
    Missed,
    /// Why it could not be judged.
    NotJudged(String),
}

/// One target (or check) and how this run measured against it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Verdict {
    pub target: String,
    pub measured: String,
    pub judgement: Judgement,
}

impl Verdict {
    /// `value` judged by `met`, shown by `show`; NaN is not judged, for `why_not`.
    fn of(target: String, value: f64, show: impl Fn(f64) -> String, met: bool, why_not: String) -> Verdict {
        if !value.is_finite() {
            return Verdict { target, measured: "–".into(), judgement: Judgement::NotJudged(why_not) };
        }
        let judgement = if met { Judgement::Met } else { Judgement::Missed };
        Verdict { target, measured: show(value), judgement }
    }
}

/// Why the targets of `phases` have no figure: every one of them skipped by
/// its option, or else nothing was measured although a phase ran.
fn why_not(r: &Results, phases: &[Phase]) -> String {
    if phases.iter().all(|p| r.skipped.contains(p)) {
        let options: Vec<&str> = phases.iter().map(|p| p.option()).collect();
        format!("skipped by {}", options.join(" and "))
    } else {
        "not measured".into()
    }
}

/// Every target of the standard set, in the order the issue lists them.
pub(super) fn verdicts(r: &Results) -> Vec<Verdict> {
    let mut routes: Vec<&str> = ROUTES.iter().map(|r| r.as_str()).collect();
    routes.sort();
    let cells: Vec<(&str, usize)> = routes.iter().flat_map(|&rt| LOADED.map(|c| (rt, c))).collect();
    let load = || why_not(r, &[Phase::Load]);
    let mut out = Vec::new();
    for &(route, c) in &cells {
        let ratio = median(paired(r, TARGET_KEYWARD, TARGET_BASELINE, route, c, |x| x.rps));
        out.push(Verdict::of(
            format!("{route} at {c} connections: throughput ≥ {MIN_THROUGHPUT_RATIO}× baseline"),
            ratio,
            |x| format!("{x:.2}×"),
            ratio >= MIN_THROUGHPUT_RATIO,
            load(),
        ));
    }
    for &(route, c) in &cells {
        let ratio = median(paired(r, TARGET_KEYWARD, TARGET_BASELINE, route, c, |x| x.latency_us.p99));
        out.push(Verdict::of(
            format!("{route} at {c} connections: p99 ≤ {MAX_P99_RATIO}× baseline"),
            ratio,
            |x| format!("{x:.2}×"),
            ratio <= MAX_P99_RATIO,
            load(),
        ));
    }
    // Where keyward without audit was not measured nothing pairs, and the
    // median of no ratios is NaN: not judged.
    for &(route, c) in cells.iter().filter(|(rt, _)| AUDIT_COST_ROUTES.iter().any(|a| a.as_str() == *rt)) {
        let cost = 1.0 - median(paired(r, TARGET_KEYWARD, TARGET_NOAUDIT, route, c, |x| x.rps));
        out.push(Verdict::of(
            format!("{route} at {c} connections: audit costs ≤ {:.0} % throughput", MAX_AUDIT_COST * 100.0),
            cost,
            |x| format!("{:.1} %", x * 100.0),
            cost <= MAX_AUDIT_COST,
            load(),
        ));
    }
    out.extend([start_up(r), idle_rss(r), cached_keys(r)]);
    out
}

fn start_up(r: &Results) -> Verdict {
    let ms = r.startup.as_ref().map_or(f64::NAN, |s| median(s.cached_ms.clone()));
    Verdict::of(
        format!("start-up with cached artifacts ≤ {MAX_CACHED_START_MS:.0} ms"),
        ms,
        |x| format!("{x:.0} ms"),
        ms <= MAX_CACHED_START_MS,
        why_not(r, &[Phase::Startup]),
    )
}

/// keyward's RSS after start, before any load (measured before the load
/// matrix; 0 is an RSS that could not be read).
fn idle_rss(r: &Results) -> Verdict {
    let kib = r.idle_rss_kib.iter().find(|(name, kib)| name == TARGET_KEYWARD && *kib > 0).map(|(_, kib)| *kib);
    let idle = kib.map_or(f64::NAN, mib);
    Verdict::of(
        format!("idle RSS ≤ {MAX_IDLE_RSS_MIB:.0} MiB"),
        idle,
        |x| format!("{x:.1} MiB"),
        idle <= MAX_IDLE_RSS_MIB,
        why_not(r, &[Phase::Load]),
    )
}

fn cached_keys(r: &Results) -> Verdict {
    let why = why_not(r, &[Phase::Memory]);
    let Some(mem) = r.memory.as_ref().filter(|m| m.keys > 0 && m.rss_idle_kib > 0 && m.rss_after_second_touch_kib > 0)
    else {
        let target = format!("cached keys add ≤ {MAX_MIB_PER_100K_KEYS:.0} MiB per 100000");
        return Verdict::of(target, f64::NAN, |_| String::new(), false, why);
    };
    let added = mib(mem.cached_keys_kib());
    let limit = MAX_MIB_PER_100K_KEYS * mem.keys as f64 / 100_000.0;
    Verdict::of(
        format!("{} cached keys add ≤ {limit:.1} MiB", mem.keys),
        added,
        |x| format!("{x:.1} MiB"),
        added <= limit,
        why,
    )
}

/// The checks of a clean run: no failed request, every request audited.
pub(super) fn checks(r: &Results) -> Vec<Verdict> {
    vec![failed_requests(r), audit_lines(r)]
}

/// Every load run of the run, named: the load matrix's and the memory phase's.
fn load_runs(r: &Results) -> Vec<(String, &Report)> {
    let matrix = r.load.iter().map(|m| {
        let name = m
            .report
            .label
            .clone()
            .unwrap_or_else(|| format!("{}/{}/c{}/r{}", m.target, m.report.route, m.report.connections, m.round));
        (name, &m.report)
    });
    let memory = r.memory.iter().flat_map(|mem| {
        [("pool-warm-up", &mem.pool_warm_up), ("first-touch", &mem.first_touch), ("second-touch", &mem.second_touch)]
            .map(|(what, report)| (report.label.clone().unwrap_or_else(|| format!("keyward/memory/{what}")), report))
    });
    matrix.chain(memory).collect()
}

/// A figure for a table cell: one line, no `|`, at most 80 characters.
fn cell(s: &str) -> String {
    let flat = s.split_whitespace().collect::<Vec<_>>().join(" ").replace('|', "/");
    match flat.char_indices().nth(80) {
        Some((at, _)) => format!("{}…", &flat[..at]),
        None => flat,
    }
}

/// `items`, the first [`NAMED`] of them, and how many more.
fn named(items: &[String]) -> String {
    let mut s = items.iter().take(NAMED).cloned().collect::<Vec<_>>().join("; ");
    if items.len() > NAMED {
        s.push_str(&format!("; {} more", items.len() - NAMED));
    }
    s
}

/// Non-2xx answers and requests without one, warm-up included, in every
/// load run (`Report::total_errors`).
fn failed_requests(r: &Results) -> Verdict {
    let target = "no failed requests (non-2xx or no answer) in any load run".to_string();
    let runs = load_runs(r);
    if runs.is_empty() {
        let why = why_not(r, &[Phase::Load, Phase::Memory]);
        return Verdict { target, measured: "–".into(), judgement: Judgement::NotJudged(why) };
    }
    let sent: u64 = runs.iter().map(|(_, x)| x.total_requests).sum();
    let failed: Vec<String> = runs
        .iter()
        .filter(|(_, x)| x.total_errors > 0)
        .map(|(name, x)| format!("{name}: {} ({})", x.total_errors, cell(x.first_error.as_deref().unwrap_or("?"))))
        .collect();
    let errors: u64 = runs.iter().map(|(_, x)| x.total_errors).sum();
    if failed.is_empty() {
        return Verdict { target, measured: format!("0 of {sent}"), judgement: Judgement::Met };
    }
    Verdict {
        target,
        measured: format!("{errors} of {sent} in {} run(s): {}", failed.len(), named(&failed)),
        judgement: Judgement::Missed,
    }
}

/// The audit sink's lines after each load run against the requests keyward
/// answered in it (the load generator's set-up included).
fn audit_lines(r: &Results) -> Verdict {
    let target = "audit lines = requests keyward answered, in every load run".to_string();
    if r.audit.is_empty() {
        let why = why_not(r, &[Phase::Load]);
        return Verdict { target, measured: "–".into(), judgement: Judgement::NotJudged(why) };
    }
    let lines: u64 = r.audit.iter().map(|a| a.audit_lines).sum();
    let expected: u64 = r.audit.iter().map(|a| a.lines_expected()).sum();
    let differ: Vec<String> = r
        .audit
        .iter()
        .filter(|a| a.audit_lines != a.lines_expected())
        .map(|a| {
            let run = format!("{TARGET_KEYWARD}/{}/c{}/r{}", a.route, a.connections, a.round);
            format!("{run}: {} lines for {} requests", a.audit_lines, a.lines_expected())
        })
        .collect();
    if differ.is_empty() {
        let measured = format!("{lines} / {expected} in {} runs", r.audit.len());
        return Verdict { target, measured, judgement: Judgement::Met };
    }
    Verdict {
        target,
        measured: format!("{} of {} runs differ: {}", differ.len(), r.audit.len(), named(&differ)),
        judgement: Judgement::Missed,
    }
}

/// Why `--check` fails this run (empty: it passes): every target missed,
/// targets not judged (grouped by why), and every failed check.
pub(super) fn check_failures(r: &Results) -> Vec<String> {
    let mut out = Vec::new();
    let mut not_judged: Vec<(String, Vec<String>)> = Vec::new();
    for v in verdicts(r).into_iter().chain(checks(r)) {
        match v.judgement {
            Judgement::Met => {}
            Judgement::Missed => out.push(format!("missed: {} (measured {})", v.target, v.measured)),
            Judgement::NotJudged(why) => match not_judged.iter_mut().find(|(w, _)| *w == why) {
                Some((_, targets)) => targets.push(v.target),
                None => not_judged.push((why, vec![v.target])),
            },
        }
    }
    for (why, targets) in not_judged {
        out.push(format!("{} not judged ({why}): {}", targets.len(), targets.join("; ")));
    }
    out
}

fn row(v: &Verdict) -> String {
    let judgement = match &v.judgement {
        Judgement::Met => "met".to_string(),
        Judgement::Missed => "**missed**".into(),
        Judgement::NotJudged(why) => format!("**not judged: {why}**"),
    };
    format!("| {} | {} | {judgement} |\n", v.target, v.measured)
}

/// The verdicts and the checks as markdown sections.
pub(super) fn markdown(verdicts: &[Verdict], checks: &[Verdict]) -> String {
    let count = |j: fn(&Judgement) -> bool| verdicts.iter().filter(|v| j(&v.judgement)).count();
    let missed = count(|j| *j == Judgement::Missed);
    let not_judged = count(|j| matches!(j, Judgement::NotJudged(_)));
    let n = verdicts.len();
    let mut o = String::from("### Targets (issue 6; median of the rounds' paired figures)\n\n");
    o.push_str(&match (missed, not_judged) {
        (0, 0) => format!("All {n} targets measured in this run are met.\n\n"),
        (m, 0) => format!("**{m} of {n} targets measured in this run are missed.**\n\n"),
        (0, u) => format!("**{u} of {n} targets not judged: a partial run does not pass `--check`.**\n\n"),
        (m, u) => format!("**{u} of {n} targets not judged, {m} missed: a partial run does not pass `--check`.**\n\n"),
    });
    o.push_str("| target | measured | |\n|---|---:|---|\n");
    o.extend(verdicts.iter().map(row));
    o.push_str("\n### Clean run (`--check` fails otherwise)\n\n| check | measured | |\n|---|---|---|\n");
    o.extend(checks.iter().map(row));
    o.push('\n');
    o
}

#[cfg(test)]
mod tests;
