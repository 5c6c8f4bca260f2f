//! What one `compare` run measured (`--json-out` writes it), and the
//! statistics the tables and the targets take from it.

use std::time::SystemTime;

use serde::Serialize;

use crate::load::Report;

/// Everything measured, for `--json-out`.
#[derive(Debug, Default, Serialize)]
pub(super) struct Results {
    pub(super) date: String,
    pub(super) machine: Machine,
    pub(super) startup: Option<Startup>,
    pub(super) idle_rss_kib: Vec<(String, u64)>,
    pub(super) load: Vec<Measurement>,
    pub(super) audit: Vec<AuditCheck>,
    pub(super) memory: Option<Memory>,
    /// Measurements during which a compiler was running on the machine.
    pub(super) measurements_with_builders: usize,
    pub(super) measurements: usize,
    /// Phases left out by an option: their targets are not judged.
    pub(super) skipped: Vec<Phase>,
}

/// A phase of the run that an option can leave out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Phase {
    Startup,
    /// The load matrix, with the idle RSS measured before it.
    Load,
    Memory,
}

impl Phase {
    /// The option that skips it.
    pub(super) fn option(self) -> &'static str {
        match self {
            Phase::Startup => "--no-startup",
            Phase::Load => "--no-load",
            Phase::Memory => "--no-memory",
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub(super) struct Machine {
    pub(super) cpus: usize,
    pub(super) cpu_model: String,
    pub(super) kernel: String,
    pub(super) keyward_version: String,
    pub(super) busy_at_start: f64,
    pub(super) builders_at_start: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct Measurement {
    pub(super) target: String,
    pub(super) round: usize,
    pub(super) report: Report,
}

/// Audit lines keyward's sink wrote during one load run, against the
/// requests of that run: every answered request must have exactly one.
#[derive(Debug, Serialize)]
pub(super) struct AuditCheck {
    pub(super) route: String,
    pub(super) connections: usize,
    pub(super) round: usize,
    /// The load run's requests, warm-up included (`Report::total_requests`).
    pub(super) requests_sent: u64,
    /// The load generator's set-up requests before them (key creation, the
    /// probe): audited too.
    pub(super) setup_requests: u64,
    pub(super) audit_lines: u64,
    pub(super) audit_bytes: u64,
}

impl AuditCheck {
    /// Lines the sink must have written: one per request the run sent.
    pub(super) fn lines_expected(&self) -> u64 {
        self.requests_sent + self.setup_requests
    }
}

#[derive(Debug, Default, Serialize)]
pub(super) struct Startup {
    pub(super) cold_ms: Vec<f64>,
    pub(super) cached_ms: Vec<f64>,
    /// RSS right after a cached start (no request but the probe).
    pub(super) rss_after_start_kib: Option<u64>,
    /// RSS right after a cold start (the compiler's memory may stay mapped).
    pub(super) rss_after_cold_start_kib: Option<u64>,
}

#[derive(Debug, Serialize)]
pub(super) struct Memory {
    pub(super) keys: u64,
    /// Cache misses on a small keystore that grow the plugin's instance pool.
    pub(super) pool_warm_up: Report,
    pub(super) populate_s: f64,
    pub(super) rss_idle_kib: u64,
    pub(super) first_touch: Report,
    pub(super) rss_after_touch_kib: u64,
    pub(super) second_touch: Report,
    pub(super) rss_after_second_touch_kib: u64,
    /// Start-up (ms to first /version) of a keyward on the full keystore, or why it failed.
    pub(super) restart_ms: Result<f64, String>,
}

impl Memory {
    /// What caching every key added to keyward's RSS: the figure the
    /// cached-keys target is about.
    pub(super) fn cached_keys_kib(&self) -> u64 {
        self.rss_after_second_touch_kib.saturating_sub(self.rss_idle_kib)
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

pub(super) fn reports<'a>(
    r: &'a Results,
    target: &'a str,
    route: &'a str,
    conns: usize,
) -> impl Iterator<Item = &'a Report> + 'a {
    r.load
        .iter()
        .filter(move |m| m.target == target && m.report.route == route && m.report.connections == conns)
        .map(|m| &m.report)
}

/// The server's CPU per request (NaN where it could not be read).
pub(super) fn cpu(report: &Report) -> f64 {
    report.server_cpu_us_per_req.unwrap_or(f64::NAN)
}

pub(super) fn med<'a>(it: impl Iterator<Item = &'a Report>, f: impl Fn(&Report) -> f64) -> f64 {
    median(it.map(f).collect())
}

/// The ratios `num / den` of a figure, one per round, each pairing the two
/// servers' measurements of that round (taken back to back, seconds apart).
///
/// The machine's own speed drifts by tens of percent over minutes (the
/// baseline alone has measured 12.5 and 31 µs of CPU per request within the
/// same hour), so a ratio of two medians can pair a fast minute of one server
/// with a slow minute of the other; a ratio within a round cannot.
pub(super) fn paired(
    r: &Results,
    num: &str,
    den: &str,
    route: &str,
    conns: usize,
    f: impl Fn(&Report) -> f64,
) -> Vec<f64> {
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

#[cfg(test)]
mod tests {
    use super::super::{TARGET_BASELINE, TARGET_KEYWARD, TARGET_NOAUDIT};
    use super::*;

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
        // A round missing one server pairs nothing.
        assert!(paired(&r, TARGET_NOAUDIT, TARGET_BASELINE, "encrypt", 16, |x| x.rps).is_empty());
    }

    impl Measurement {
        fn with_route(mut self, route: &str) -> Measurement {
            self.report.route = route.into();
            self
        }
    }
}
