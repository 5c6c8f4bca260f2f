use super::super::results::{AuditCheck, Measurement, Memory, Startup};
use super::super::CONNECTIONS;
use super::*;

fn at(target: &str, round: usize, route: &str, conns: usize, rps: f64, p99: f64) -> Measurement {
    let mut report = Report { route: route.into(), connections: conns, rps, total_requests: 1000, ..Report::default() };
    report.latency_us.p99 = p99;
    Measurement { target: target.into(), round, report }
}

fn find<'a>(v: &'a [Verdict], prefix: &str) -> &'a Verdict {
    v.iter().find(|v| v.target.starts_with(prefix)).unwrap_or_else(|| panic!("no verdict for {prefix}: {v:?}"))
}

fn not_judged(why: &str) -> Judgement {
    Judgement::NotJudged(why.into())
}

fn memory(keys: u64, idle_mib: u64, after_mib: u64) -> Memory {
    let touch = |n| Report { total_requests: n, ..Report::default() };
    Memory {
        keys,
        pool_warm_up: touch(256),
        populate_s: 1.0,
        rss_idle_kib: idle_mib * 1024,
        first_touch: touch(keys),
        rss_after_touch_kib: after_mib * 1024,
        second_touch: touch(keys),
        rss_after_second_touch_kib: after_mib * 1024,
        restart_ms: Ok(10.0),
    }
}

/// A complete, clean run of 3 rounds that meets every target: keyward at
/// 0.95× the baseline's throughput and 1.2× its p99, audit costing 2 %,
/// every request audited (the load generator's 2 set-up requests too).
fn full() -> Results {
    let mut r = Results {
        startup: Some(Startup { cached_ms: vec![12.0, 14.0, 13.0], ..Startup::default() }),
        idle_rss_kib: vec![(TARGET_BASELINE.into(), 8 * 1024), (TARGET_KEYWARD.into(), 15 * 1024)],
        memory: Some(memory(100_000, 20, 46)),
        ..Results::default()
    };
    for route in ROUTES.map(|r| r.as_str()) {
        for c in CONNECTIONS {
            for round in 1..=3 {
                r.load.push(at(TARGET_BASELINE, round, route, c, 100.0, 100.0));
                r.load.push(at(TARGET_KEYWARD, round, route, c, 95.0, 120.0));
                if route == "encrypt" {
                    r.load.push(at(TARGET_NOAUDIT, round, route, c, 97.0, 110.0));
                }
                r.audit.push(AuditCheck {
                    route: route.into(),
                    connections: c,
                    round,
                    requests_sent: 1000,
                    setup_requests: 2,
                    audit_lines: 1002,
                    audit_bytes: 1002 * 300,
                });
            }
        }
    }
    r
}

#[test]
fn a_complete_clean_run_passes() {
    let r = full();
    let v = verdicts(&r);
    assert_eq!(v.len(), 21, "8 throughput, 8 p99, 2 audit cost, start-up, idle RSS, cached keys: {v:?}");
    assert!(v.iter().all(|v| v.judgement == Judgement::Met), "{v:?}");
    let c = checks(&r);
    assert!(c.iter().all(|v| v.judgement == Judgement::Met), "{c:?}");
    assert_eq!(find(&c, "audit lines").measured, "36072 / 36072 in 36 runs");
    assert!(find(&c, "no failed requests").measured.starts_with("0 of "), "{c:?}");
    assert!(check_failures(&r).is_empty(), "{:?}", check_failures(&r));
    let md = markdown(&v, &c);
    assert!(md.contains("All 21 targets measured in this run are met."), "{md}");
    assert!(md.contains("| no failed requests (non-2xx or no answer) in any load run | 0 of "), "{md}");
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
    let judged: Vec<&Verdict> = v.iter().filter(|v| !matches!(v.judgement, Judgement::NotJudged(_))).collect();
    assert_eq!(judged.len(), 3, "{judged:?}");
    let t = find(&v, "encrypt at 16 connections: throughput");
    assert!(t.judgement == Judgement::Met && t.measured == "0.92×", "{t:?}");
    let p = find(&v, "encrypt at 16 connections: p99");
    assert!(p.judgement == Judgement::Missed && p.measured == "1.60×", "{p:?}");
    let a = find(&v, "encrypt at 16 connections: audit");
    assert!(a.judgement == Judgement::Met && a.measured == "2.9 %", "{a:?}");
    assert!(v.iter().all(|v| !v.target.starts_with("hmac at 1 ")), "{v:?}");
    let md = markdown(&v, &[]);
    assert!(md.contains("**18 of 21 targets not judged, 1 missed: a partial run does not pass `--check`.**"), "{md}");
    assert!(md.contains("| encrypt at 16 connections: p99 ≤ 1.5× baseline | 1.60× | **missed** |"), "{md}");
}

#[test]
fn audit_cost_is_judged_only_where_keyward_ran_without_audit() {
    let mut r = full();
    r.load.retain(|m| !(m.target == TARGET_NOAUDIT && m.report.connections == 64));
    let v = verdicts(&r);
    assert_eq!(find(&v, "encrypt at 16 connections: audit").judgement, Judgement::Met);
    let a = find(&v, "encrypt at 64 connections: audit");
    assert_eq!((a.judgement.clone(), a.measured.as_str()), (not_judged("not measured"), "–"), "{a:?}");
    // Only the routes the method measures without audit have the target.
    assert!(v.iter().all(|v| !v.target.contains("audit") || v.target.starts_with("encrypt")), "{v:?}");
    assert_eq!(
        check_failures(&r),
        ["1 not judged (not measured): encrypt at 64 connections: audit costs ≤ 5 % throughput"]
    );
}

#[test]
fn start_up_and_memory_targets() {
    let r = Results {
        startup: Some(Startup { cached_ms: vec![12.0, 160.0, 11.0], ..Startup::default() }),
        idle_rss_kib: vec![(TARGET_BASELINE.into(), 50 * 1024), (TARGET_KEYWARD.into(), 15 * 1024)],
        // 7 MiB for 10k keys: over the 6.4 MiB that scales to.
        memory: Some(memory(10_000, 20, 27)),
        ..Results::default()
    };
    let v = verdicts(&r);
    assert_eq!(find(&v, "start-up").judgement, Judgement::Met, "the median start, not the slowest, is judged");
    let rss = find(&v, "idle RSS");
    assert!(
        rss.judgement == Judgement::Met && rss.measured == "15.0 MiB",
        "keyward's RSS, not the baseline's: {rss:?}"
    );
    let keys = find(&v, "10000 cached keys add ≤ 6.4 MiB");
    assert!(keys.judgement == Judgement::Missed && keys.measured == "7.0 MiB", "{keys:?}");
}

/// A phase left out by its option: its targets say so, and `--check` fails.
#[test]
fn a_skipped_phase_is_named_and_fails_the_check() {
    let mut r = full();
    r.memory = None;
    r.skipped = vec![Phase::Memory];
    let v = verdicts(&r);
    let keys = find(&v, "cached keys add");
    assert_eq!(keys.judgement, not_judged("skipped by --no-memory"));
    assert_eq!(v.iter().filter(|v| v.judgement != Judgement::Met).count(), 1, "{v:?}");
    let md = markdown(&v, &checks(&r));
    assert!(
        md.contains("| cached keys add ≤ 64 MiB per 100000 | – | **not judged: skipped by --no-memory** |"),
        "{md}"
    );
    assert!(md.contains("**1 of 21 targets not judged: a partial run does not pass `--check`.**"), "{md}");
    assert_eq!(check_failures(&r), ["1 not judged (skipped by --no-memory): cached keys add ≤ 64 MiB per 100000"]);

    let mut r = full();
    r.startup = None;
    r.skipped = vec![Phase::Startup];
    assert_eq!(find(&verdicts(&r), "start-up").judgement, not_judged("skipped by --no-startup"));
    assert_eq!(check_failures(&r).len(), 1);

    // --no-load: 16 load targets, 2 audit costs, idle RSS and the audit
    // check; failed requests are still judged on the memory phase's runs.
    let mut r = full();
    (r.load, r.audit, r.idle_rss_kib) = (Vec::new(), Vec::new(), Vec::new());
    r.skipped = vec![Phase::Load];
    let failures = check_failures(&r);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].starts_with("20 not judged (skipped by --no-load): decrypt at 16 connections"), "{failures:?}");
    let c = checks(&r);
    assert_eq!(find(&c, "audit lines").judgement, not_judged("skipped by --no-load"));
    assert_eq!(find(&c, "no failed requests").judgement, Judgement::Met);
    r.memory = None;
    r.skipped.push(Phase::Memory);
    let c = checks(&r);
    assert_eq!(find(&c, "no failed requests").judgement, not_judged("skipped by --no-load and --no-memory"));
}

/// A phase that was meant to run but measured nothing (a cell missing,
/// NaN medians, an RSS that could not be read): not judged, and `--check`
/// fails.
#[test]
fn a_phase_that_measured_nothing_is_not_judged() {
    let mut r = full();
    r.load.retain(|m| !(m.report.route == "hmac" && m.report.connections == 64));
    r.startup = Some(Startup::default());
    r.idle_rss_kib = vec![(TARGET_KEYWARD.into(), 0)];
    let v = verdicts(&r);
    for prefix in ["hmac at 64 connections: throughput", "hmac at 64 connections: p99", "start-up", "idle RSS"] {
        assert_eq!(find(&v, prefix).judgement, not_judged("not measured"), "{prefix}");
    }
    let failures = check_failures(&r);
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].starts_with("4 not judged (not measured): hmac at 64 connections: throughput"), "{failures:?}");

    // Nothing measured at all: every target and check says so.
    let r = Results::default();
    let v = verdicts(&r);
    assert_eq!(v.len(), 21);
    assert!(v.iter().chain(&checks(&r)).all(|v| v.judgement == not_judged("not measured")), "{v:?}");
    assert_eq!(
        check_failures(&r),
        [format!("23 not judged (not measured): {}", {
            let all: Vec<String> = v.iter().chain(&checks(&r)).map(|v| v.target.clone()).collect();
            all.join("; ")
        })]
    );
}

/// Any failed request in any load run — non-2xx or no answer, in the
/// window or the warm-up, in the load matrix or the memory phase — fails
/// `--check`, naming the run and its first error.
#[test]
fn failed_requests_fail_the_check() {
    let mut r = full();
    let m = r.load.iter_mut().find(|m| m.target == TARGET_KEYWARD && m.report.route == "decrypt").unwrap();
    m.report.label = Some("keyward/decrypt/c1/r1".into());
    // Both in the warm-up: none in the measured window.
    (m.report.errors, m.report.total_errors) = (0, 2);
    m.report.first_error = Some("HTTP 500: {\"message\":\n \"a|b\"}".into());
    let c = checks(&r);
    let f = find(&c, "no failed requests");
    assert_eq!(f.judgement, Judgement::Missed);
    assert!(f.measured.starts_with("2 of "), "{f:?}");
    assert!(f.measured.ends_with(" in 1 run(s): keyward/decrypt/c1/r1: 2 (HTTP 500: {\"message\": \"a/b\"})"), "{f:?}");
    let failures = check_failures(&r);
    assert_eq!(failures.len(), 1, "the targets are all met: {failures:?}");
    assert!(failures[0].starts_with("missed: no failed requests (non-2xx or no answer) in any load run (measured 2 of"));

    // The memory phase's load runs count too.
    let mut r = full();
    r.memory.as_mut().unwrap().second_touch.total_errors = 1;
    let f = find(&checks(&r), "no failed requests").clone();
    assert_eq!(f.judgement, Judgement::Missed);
    assert!(f.measured.contains("keyward/memory/second-touch: 1 (?)"), "{f:?}");
}

/// Every request keyward answered, the load generator's set-up included,
/// has exactly one audit line: fewer (lost events) or more fails `--check`.
#[test]
fn audit_lines_must_equal_the_requests_keyward_answered() {
    let mut r = full();
    r.audit[4].audit_lines = 1000; // the set-up requests' lines missing
    let c = checks(&r);
    let a = find(&c, "audit lines");
    assert_eq!(a.judgement, Judgement::Missed);
    assert_eq!(a.measured, "1 of 36 runs differ: keyward/encrypt/c16/r2: 1000 lines for 1002 requests");
    assert_eq!(
        check_failures(&r),
        ["missed: audit lines = requests keyward answered, in every load run (measured 1 of 36 runs differ: keyward/encrypt/c16/r2: 1000 lines for 1002 requests)"]
    );

    // Extra lines fail too; past three runs, the rest are counted.
    let mut r = full();
    for a in r.audit.iter_mut().take(5) {
        a.audit_lines += 1;
    }
    let a = find(&checks(&r), "audit lines").clone();
    assert_eq!(a.judgement, Judgement::Missed);
    assert!(
        a.measured.starts_with("5 of 36 runs differ: keyward/encrypt/c1/r1: 1003 lines for 1002 requests;"),
        "{a:?}"
    );
    assert!(a.measured.ends_with("; 2 more"), "{a:?}");
}
