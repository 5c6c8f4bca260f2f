//! What the soak measured, the verdict, and how both are printed.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::audit::AuditTally;
use super::mix::Op;
use super::server::{LogSummary, Shutdown};
use super::traffic::{FailureKind, OpCount};
use crate::compare;
use crate::load::Latency;

/// One sample of the server while the traffic runs.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Sample {
    pub(super) t_s: f64,
    pub(super) rss_kib: u64,
    pub(super) fds: u64,
    /// Informational (tokio's blocking pool grows and shrinks with plugin file I/O).
    pub(super) threads: u64,
    pub(super) responses: u64,
    pub(super) rps: f64,
    pub(super) unexpected: u64,
    pub(super) provoked: u64,
    /// Audit lines counted so far (one rotation behind).
    pub(super) audit_lines: u64,
    pub(super) reloads: u64,
}

/// The leak rule for one figure: the median of the last three samples against
/// the median of the first three after the warm-up (see [`SoakArgs::warmup`]).
/// Medians, because a sample can land on a reload, while the old plugins are
/// still being torn down, and RSS moves in 2 MiB steps where the allocator's
/// arenas use transparent huge pages.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Growth {
    /// Time of the first reference sample.
    pub(super) reference_at_s: f64,
    pub(super) reference: f64,
    pub(super) end: f64,
    pub(super) max: f64,
    pub(super) growth: f64,
    pub(super) limit: f64,
    pub(super) ok: bool,
}

/// `values` are `(time, value)` samples; `None` if there are too few after
/// `warmup` for a reference and an end that do not overlap.
pub(super) fn growth(values: &[(f64, f64)], warmup: Duration, limit: impl Fn(f64) -> f64) -> Option<Growth> {
    let first = values.iter().position(|&(t, _)| t > warmup.as_secs_f64())?;
    if first + 6 > values.len() {
        return None;
    }
    let median = |v: &[(f64, f64)]| compare::median(v.iter().map(|&(_, x)| x).collect());
    let reference = median(&values[first..first + 3]);
    let end = median(&values[values.len() - 3..]);
    let limit = limit(reference);
    Some(Growth {
        reference_at_s: values[first].0,
        reference,
        end,
        max: values.iter().map(|&(_, x)| x).fold(0.0, f64::max),
        growth: end - reference,
        limit,
        ok: end - reference <= limit,
    })
}

/// Everything the soak measured; printed as one JSON line.
#[derive(Debug, Default, Serialize)]
pub(super) struct Report {
    pub(super) date: String,
    pub(super) keyward_version: String,
    pub(super) pass: bool,
    pub(super) reasons: Vec<String>,
    pub(super) interrupted: bool,
    pub(super) duration_s: f64,
    pub(super) elapsed_s: f64,
    pub(super) connections: usize,
    pub(super) keys: usize,
    pub(super) reload_every_s: f64,
    pub(super) sample_every_s: f64,
    /// Samples up to here are not the leak rule's reference.
    pub(super) warmup_s: f64,
    pub(super) reloads: u64,
    pub(super) reload_failures: u64,
    /// SIGHUP → the new audit sink's file exists.
    pub(super) reload_ms_median: f64,
    pub(super) reload_ms_max: f64,
    /// Every answer the soak received: readiness probes, set-up, traffic, metrics.
    pub(super) responses: u64,
    pub(super) traffic_responses: u64,
    pub(super) rps: f64,
    pub(super) unexpected: u64,
    pub(super) transport_errors: u64,
    pub(super) provoked: u64,
    /// Unexpected outcomes by kind ("<op>: <what was wrong>").
    pub(super) failures: BTreeMap<String, FailureKind>,
    /// Operations left out of the mix.
    pub(super) without: Vec<Op>,
    pub(super) ops: BTreeMap<Op, OpCount>,
    pub(super) latency_us: Latency,
    pub(super) client_by_status: BTreeMap<u16, u64>,
    pub(super) audit: AuditTally,
    /// `kes_log_audit_events` and `keyward_audit_dropped_events` just before shutdown.
    pub(super) server_audit_events: Option<u64>,
    pub(super) server_audit_dropped: Option<u64>,
    pub(super) rss_kib: Option<Growth>,
    pub(super) fds: Option<Growth>,
    /// After set-up, before the traffic's connections open; and after they
    /// closed, before shutdown: the same figure with every reload in between.
    pub(super) rss_before_traffic_kib: Option<u64>,
    pub(super) fds_before_traffic: Option<u64>,
    pub(super) rss_after_traffic_kib: Option<u64>,
    pub(super) fds_after_traffic: Option<u64>,
    pub(super) shutdown: Shutdown,
    pub(super) log: LogSummary,
    pub(super) samples: Vec<Sample>,
}

pub(super) fn print_sample(x: &Sample) {
    println!(
        "[{:>5.0} s] RSS {:>6.1} MiB  fds {:>4}  threads {:>3}  responses {:>10} ({:>6.0}/s)  unexpected {}  provoked {}  audit lines {}  reloads {}",
        x.t_s,
        compare::mib(x.rss_kib),
        x.fds,
        x.threads,
        x.responses,
        x.rps,
        x.unexpected,
        x.provoked,
        x.audit_lines,
        x.reloads
    );
}

pub(super) fn latency(hist: &Histogram<u64>) -> Latency {
    if hist.is_empty() {
        return Latency::default();
    }
    Latency {
        min: hist.min() as f64,
        mean: hist.mean(),
        p50: hist.value_at_quantile(0.50) as f64,
        p90: hist.value_at_quantile(0.90) as f64,
        p99: hist.value_at_quantile(0.99) as f64,
        p999: hist.value_at_quantile(0.999) as f64,
        max: hist.max() as f64,
    }
}

/// Why the soak failed; empty if it passed.
pub(super) fn verdict(r: &Report) -> Vec<String> {
    let mut why = Vec::new();
    if r.interrupted {
        why.push(format!("interrupted after {:.0} s of {:.0} s", r.elapsed_s, r.duration_s));
    }
    if r.unexpected > 0 {
        why.push(format!(
            "{} unexpected answers or lost requests ({} without an answer)",
            r.unexpected, r.transport_errors
        ));
    }
    if r.audit.lines != r.responses {
        why.push(format!(
            "{} audit lines for {} answered requests (server recorded {:?} events, dropped {:?})",
            r.audit.lines, r.responses, r.server_audit_events, r.server_audit_dropped
        ));
    } else if r.audit.by_status != r.client_by_status || r.audit.unparsed > 0 {
        why.push(format!(
            "audit lines per status {:?} (+{} unreadable) differ from the answers {:?}",
            r.audit.by_status, r.audit.unparsed, r.client_by_status
        ));
    }
    match &r.rss_kib {
        Some(g) if !g.ok => why.push(format!(
            "RSS grew {:.1} MiB ({:.1} → {:.1} MiB), more than {:.1} MiB",
            g.growth / 1024.0,
            g.reference / 1024.0,
            g.end / 1024.0,
            g.limit / 1024.0
        )),
        Some(_) => {}
        None => why.push(format!("too few samples after the {:.0} s warm-up: growth not judged", r.warmup_s)),
    }
    if let Some(g) = r.fds.as_ref().filter(|g| !g.ok) {
        why.push(format!(
            "open descriptors grew by {:.0} ({:.0} → {:.0}), more than {:.0}",
            g.growth, g.reference, g.end, g.limit
        ));
    }
    if r.reload_failures > 0 || r.log.reload_failed > 0 {
        why.push(format!(
            "{} reloads did not complete ({} 'reload failed' in the log)",
            r.reload_failures, r.log.reload_failed
        ));
    }
    if !r.shutdown.graceful {
        why.push(format!("no graceful shutdown (exit code {:?} after {:.0} ms)", r.shutdown.exit_code, r.shutdown.ms));
    }
    why
}

pub(super) fn summary(r: &Report) -> String {
    let mut o = format!(
        "soak: {:.0} s, {} connections, {} keys: {} answers ({} traffic, {:.0}/s), {} unexpected ({} without an answer), {} provoked\n",
        r.elapsed_s, r.connections, r.keys, r.responses, r.traffic_responses, r.rps, r.unexpected, r.transport_errors, r.provoked
    );
    o.push_str(&format!(
        "latency µs: p50 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}\n",
        r.latency_us.p50, r.latency_us.p99, r.latency_us.p999, r.latency_us.max
    ));
    o.push_str(&format!(
        "reloads: {} ({} failed; server logged {} 'configuration reloaded'), SIGHUP → new sink median {:.0} ms, max {:.0} ms\n",
        r.reloads, r.reload_failures, r.log.reloaded, r.reload_ms_median, r.reload_ms_max
    ));
    o.push_str(&format!(
        "audit: {} lines for {} answers; per status {:?} vs {:?}; server counted {:?} before the final metrics request, dropped {:?}\n",
        r.audit.lines,
        r.responses,
        r.audit.by_status,
        r.client_by_status,
        r.server_audit_events,
        r.server_audit_dropped
    ));
    if let Some(g) = &r.rss_kib {
        o.push_str(&format!(
            "RSS: {:.1} MiB at {:.0} s (after the warm-up) → {:.1} MiB at the end ({:+.1} MiB, limit +{:.1}), max {:.1} MiB\n",
            g.reference / 1024.0,
            g.reference_at_s,
            g.end / 1024.0,
            g.growth / 1024.0,
            g.limit / 1024.0,
            g.max / 1024.0
        ));
    }
    if let (Some(a), Some(b)) = (r.fds_before_traffic, r.fds_after_traffic) {
        o.push_str(&format!("fds with no client connected: {a} before the traffic, {b} after it\n"));
    }
    if let Some(g) = &r.fds {
        o.push_str(&format!(
            "fds: {:.0} at {:.0} s → {:.0} at the end ({:+.0}, limit +{:.0}), max {:.0}\n",
            g.reference, g.reference_at_s, g.end, g.growth, g.limit, g.max
        ));
    }
    o.push_str(&format!(
        "shutdown: exit code {:?} after {:.0} ms; server log: {} warnings, {} errors\n",
        r.shutdown.exit_code, r.shutdown.ms, r.log.warnings, r.log.errors
    ));
    for (kind, f) in &r.failures {
        o.push_str(&format!("  {} × {kind} (first at {:.1} s)\n", f.count, f.first_at_s));
    }
    for line in &r.log.first {
        o.push_str(&format!("  server: {line}\n"));
    }
    if r.pass {
        o.push_str("PASS");
    } else {
        o.push_str(&format!("FAIL: {}", r.reasons.join("; ")));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_rule() {
        let timed = |v: &[f64]| v.iter().enumerate().map(|(i, &x)| ((i + 1) as f64 * 10.0, x)).collect::<Vec<_>>();
        let s10 = Duration::from_secs(10);
        let flat = timed(&[10.0, 20.0, 21.0, 20.0, 22.0, 21.0, 20.0, 21.0]);
        let g = growth(&flat, s10, |_| 1.0).unwrap();
        assert_eq!((g.reference_at_s, g.reference, g.end), (20.0, 20.0, 21.0));
        assert!(g.ok);
        let leak = timed(&[10.0, 20.0, 21.0, 20.0, 25.0, 30.0, 35.0, 40.0]);
        assert!(!growth(&leak, s10, |_| 5.0).unwrap().ok);
        assert!(growth(&leak[..6], s10, |_| 5.0).is_none());
        // A warm-up that ends later moves the reference: a climb that levels off passes.
        let levels_off = timed(&[10.0, 20.0, 30.0, 40.0, 41.0, 40.0, 42.0, 41.0, 40.0, 41.0]);
        assert!(!growth(&levels_off, s10, |_| 5.0).unwrap().ok);
        let g = growth(&levels_off, Duration::from_secs(30), |_| 5.0).unwrap();
        assert_eq!((g.reference_at_s, g.reference), (40.0, 40.0));
        assert!(g.ok);
    }
}
