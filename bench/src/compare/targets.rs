//! Issue 6's targets, checked against what one `compare` run measured.
//!
//! Each target is judged on the median over the run's rounds of the paired
//! per-round figure (the same numbers the tables print), so a verdict never
//! pairs a fast minute of one server with a slow minute of the other. The
//! plugin `get` target is a criterion benchmark (`bench/benches/plugin.rs`)
//! and is not judged here.

use super::{median, mib, paired, Results, TARGET_BASELINE, TARGET_KEYWARD, TARGET_NOAUDIT};

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

/// One target and how this run measured against it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Verdict {
    pub target: String,
    pub measured: String,
    pub met: bool,
}

/// Every target this run measured, in the order the issue lists them.
/// Targets whose phase was skipped (or measured nothing) are left out.
pub(super) fn verdicts(r: &Results) -> Vec<Verdict> {
    let mut out = Vec::new();
    let mut cells: Vec<(String, usize)> = r
        .load
        .iter()
        .filter(|m| m.target == TARGET_KEYWARD && LOADED.contains(&m.report.connections))
        .map(|m| (m.report.route.clone(), m.report.connections))
        .collect();
    cells.sort();
    cells.dedup();
    for (route, c) in &cells {
        let ratio = median(paired(r, TARGET_KEYWARD, TARGET_BASELINE, route, *c, |x| x.rps));
        if ratio.is_finite() {
            out.push(Verdict {
                target: format!("{route} at {c} connections: throughput ≥ {MIN_THROUGHPUT_RATIO}× baseline"),
                measured: format!("{ratio:.2}×"),
                met: ratio >= MIN_THROUGHPUT_RATIO,
            });
        }
    }
    for (route, c) in &cells {
        let ratio = median(paired(r, TARGET_KEYWARD, TARGET_BASELINE, route, *c, |x| x.latency_us.p99));
        if ratio.is_finite() {
            out.push(Verdict {
                target: format!("{route} at {c} connections: p99 ≤ {MAX_P99_RATIO}× baseline"),
                measured: format!("{ratio:.2}×"),
                met: ratio <= MAX_P99_RATIO,
            });
        }
    }
    // Where keyward without audit was not measured nothing pairs, and the
    // median of no ratios is NaN: no verdict.
    for (route, c) in &cells {
        let cost = 1.0 - median(paired(r, TARGET_KEYWARD, TARGET_NOAUDIT, route, *c, |x| x.rps));
        if cost.is_finite() {
            out.push(Verdict {
                target: format!("{route} at {c} connections: audit costs ≤ {:.0} % throughput", MAX_AUDIT_COST * 100.0),
                measured: format!("{:.1} %", cost * 100.0),
                met: cost <= MAX_AUDIT_COST,
            });
        }
    }
    if let Some(s) = r.startup.as_ref().filter(|s| !s.cached_ms.is_empty()) {
        let ms = median(s.cached_ms.clone());
        out.push(Verdict {
            target: format!("start-up with cached artifacts ≤ {MAX_CACHED_START_MS:.0} ms"),
            measured: format!("{ms:.0} ms"),
            met: ms <= MAX_CACHED_START_MS,
        });
    }
    if let Some((_, kib)) = r.idle_rss_kib.iter().find(|(name, _)| name == TARGET_KEYWARD) {
        let idle = mib(*kib);
        out.push(Verdict {
            target: format!("idle RSS ≤ {MAX_IDLE_RSS_MIB:.0} MiB"),
            measured: format!("{idle:.1} MiB"),
            met: idle <= MAX_IDLE_RSS_MIB,
        });
    }
    if let Some(mem) = r.memory.as_ref().filter(|m| m.keys > 0) {
        let added = mib(mem.cached_keys_kib());
        let limit = MAX_MIB_PER_100K_KEYS * mem.keys as f64 / 100_000.0;
        out.push(Verdict {
            target: format!("{} cached keys add ≤ {limit:.1} MiB", mem.keys),
            measured: format!("{added:.1} MiB"),
            met: added <= limit,
        });
    }
    out
}

/// The verdicts as a markdown section (empty if nothing was judged).
pub(super) fn markdown(verdicts: &[Verdict]) -> String {
    if verdicts.is_empty() {
        return String::new();
    }
    let missed = verdicts.iter().filter(|v| !v.met).count();
    let mut o = String::from("### Targets (issue 6; median of the rounds' paired figures)\n\n");
    o.push_str(&match missed {
        0 => format!("All {} targets measured in this run are met.\n\n", verdicts.len()),
        n => format!("**{n} of {} targets measured in this run are missed.**\n\n", verdicts.len()),
    });
    o.push_str("| target | measured | |\n|---|---:|---|\n");
    for v in verdicts {
        o.push_str(&format!("| {} | {} | {} |\n", v.target, v.measured, if v.met { "met" } else { "**missed**" }));
    }
    o.push('\n');
    o
}

#[cfg(test)]
mod tests {
    use super::super::{Measurement, Memory, Startup};
    use super::*;
    use crate::load::Report;

    fn at(target: &str, round: usize, route: &str, conns: usize, rps: f64, p99: f64) -> Measurement {
        let mut report = Report { route: route.into(), connections: conns, rps, ..Report::default() };
        report.latency_us.p99 = p99;
        Measurement { target: target.into(), round, report }
    }

    fn find<'a>(v: &'a [Verdict], prefix: &str) -> &'a Verdict {
        v.iter().find(|v| v.target.starts_with(prefix)).unwrap_or_else(|| panic!("no verdict for {prefix}: {v:?}"))
    }

    #[test]
    fn load_targets_are_judged_on_the_median_of_paired_rounds() {
        let mut load = Vec::new();
        // encrypt/16: rounds at 0.95, 0.85, 0.92 of the baseline → median 0.92, met;
        // p99 1.2, 1.6, 1.7 → median 1.6, missed.
        for (round, (k, kp99)) in [(95.0, 120.0), (85.0, 160.0), (92.0, 170.0)].into_iter().enumerate() {
            load.push(at(TARGET_BASELINE, round + 1, "encrypt", 16, 100.0, 100.0));
            load.push(at(TARGET_KEYWARD, round + 1, "encrypt", 16, k, kp99));
            // Without audit 2-4 % faster: cost under 5 %.
            load.push(at(TARGET_NOAUDIT, round + 1, "encrypt", 16, k * 1.03, kp99));
        }
        // One connection is not a target: 0.5× is not judged.
        load.push(at(TARGET_BASELINE, 1, "hmac", 1, 100.0, 100.0));
        load.push(at(TARGET_KEYWARD, 1, "hmac", 1, 50.0, 100.0));
        let v = verdicts(&Results { load, ..Results::default() });
        assert_eq!(v.len(), 3, "{v:?}");
        let t = find(&v, "encrypt at 16 connections: throughput");
        assert!(t.met && t.measured == "0.92×", "{t:?}");
        let p = find(&v, "encrypt at 16 connections: p99");
        assert!(!p.met && p.measured == "1.60×", "{p:?}");
        let a = find(&v, "encrypt at 16 connections: audit");
        assert!(a.met && a.measured == "2.9 %", "{a:?}");
        let md = markdown(&v);
        assert!(md.contains("**1 of 3 targets measured in this run are missed.**"), "{md}");
        assert!(md.contains("| encrypt at 16 connections: p99 ≤ 1.5× baseline | 1.60× | **missed** |"), "{md}");
    }

    #[test]
    fn audit_cost_is_judged_only_where_keyward_ran_without_audit() {
        let load = vec![
            at(TARGET_BASELINE, 1, "decrypt", 64, 100.0, 100.0),
            at(TARGET_KEYWARD, 1, "decrypt", 64, 95.0, 100.0),
        ];
        let v = verdicts(&Results { load, ..Results::default() });
        assert_eq!(v.len(), 2, "throughput and p99 only: {v:?}");
        assert!(v.iter().all(|v| !v.target.contains("audit")), "{v:?}");
    }

    #[test]
    fn start_up_and_memory_targets() {
        let touch = || Report::default();
        let r = Results {
            startup: Some(Startup { cached_ms: vec![12.0, 160.0, 11.0], ..Startup::default() }),
            idle_rss_kib: vec![(TARGET_BASELINE.into(), 50 * 1024), (TARGET_KEYWARD.into(), 15 * 1024)],
            memory: Some(Memory {
                keys: 10_000,
                populate_s: 1.0,
                rss_idle_kib: 20 * 1024,
                first_touch: touch(),
                rss_after_touch_kib: 26 * 1024,
                second_touch: touch(),
                // 7 MiB for 10k keys: over the 6.4 MiB that scales to.
                rss_after_second_touch_kib: 27 * 1024,
                restart_ms: Ok(10.0),
            }),
            ..Results::default()
        };
        let v = verdicts(&r);
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(find(&v, "start-up").met, "the median start, not the slowest, is judged");
        let rss = find(&v, "idle RSS");
        assert!(rss.met && rss.measured == "15.0 MiB", "keyward's RSS, not the baseline's: {rss:?}");
        let keys = find(&v, "10000 cached keys add ≤ 6.4 MiB");
        assert!(!keys.met && keys.measured == "7.0 MiB", "{keys:?}");
    }

    #[test]
    fn nothing_measured_nothing_judged() {
        assert!(verdicts(&Results::default()).is_empty());
        assert_eq!(markdown(&[]), "");
    }
}
