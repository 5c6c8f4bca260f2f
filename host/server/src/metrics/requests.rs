//! The per-request figures: KES's request counters, the active-requests
//! gauge and the response-time histogram.
//!
//! Every request updates them, from whichever core serves it. Kept as plain
//! shared atomics (as `prometheus`'s own types are), every update would move
//! a cache line from the other core, several per request. Instead each thread
//! writes its own shard ([`Sharded`]), and a scrape sums the shards: the
//! exposition is exactly what the `prometheus` types would produce.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto;

use crate::sharded::Sharded;

/// Upper bounds of the response-time histogram, in seconds (KES's).
pub const BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 3.0, 5.0, 10.0];

/// One thread's figures.
#[derive(Default)]
struct Shard {
    success: AtomicU64,
    error: AtomicU64,
    failure: AtomicU64,
    active: AtomicI64,
    count: AtomicU64,
    sum_nanos: AtomicU64,
    /// Requests per bucket (not cumulative); the last counts those slower
    /// than every bound.
    buckets: [AtomicU64; BUCKETS.len() + 1],
}

/// The figures, sharded by thread. Register it with a registry as a
/// collector.
pub struct RequestStats {
    shards: Sharded<Shard>,
    descs: [Desc; 5],
}

/// The five metric families: name, help.
const FAMILIES: [(&str, &str); 5] = [
    ("kes_http_request_success", "Number of requests that have been served successfully."),
    ("kes_http_request_error", "Number of request that failed due to some error. (HTTP 4xx status code)"),
    ("kes_http_request_failure", "Number of request that failed due to some internal failure. (HTTP 5xx status code)"),
    ("kes_http_request_active", "Number of active requests that are not finished, yet."),
    ("kes_http_response_time", "Histogram of request response times spawning from 10ms to 10s."),
];

impl RequestStats {
    pub fn new() -> RequestStats {
        let descs = FAMILIES.map(|(name, help)| {
            Desc::new(name.to_string(), help.to_string(), Vec::new(), Default::default())
                .unwrap_or_else(|_| super::unreachable_metric(name))
        });
        RequestStats { shards: Sharded::new(), descs }
    }

    fn shard(&self) -> &Shard {
        self.shards.local()
    }

    /// A request started.
    pub fn begin(&self) {
        self.shard().active.fetch_add(1, Ordering::Relaxed);
    }

    /// A request finished with `status` after `elapsed`.
    pub fn end(&self, status: u16, elapsed: Duration) {
        let s = self.shard();
        s.active.fetch_sub(1, Ordering::Relaxed);
        let class = match status {
            500.. => &s.failure,
            400..=499 => &s.error,
            _ => &s.success,
        };
        class.fetch_add(1, Ordering::Relaxed);
        let seconds = elapsed.as_secs_f64();
        let bucket = BUCKETS.iter().position(|&bound| seconds <= bound).unwrap_or(BUCKETS.len());
        s.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        s.sum_nanos.fetch_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
        s.count.fetch_add(1, Ordering::Relaxed);
    }

    fn sum(&self, field: impl Fn(&Shard) -> u64) -> u64 {
        self.shards.iter().map(field).fold(0, u64::wrapping_add)
    }
}

impl Default for RequestStats {
    fn default() -> Self {
        RequestStats::new()
    }
}

/// The family `desc` names, holding `metric`.
fn family(desc: &Desc, kind: proto::MetricType, metric: proto::Metric) -> proto::MetricFamily {
    let mut f = proto::MetricFamily::default();
    f.set_name(desc.fq_name.clone());
    f.set_help(desc.help.clone());
    f.set_field_type(kind);
    f.set_metric(vec![metric]);
    f
}

fn counter(value: u64) -> proto::Metric {
    let mut c = proto::Counter::default();
    c.set_value(value as f64);
    let mut m = proto::Metric::default();
    m.set_counter(c);
    m
}

impl Collector for RequestStats {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        let active = self.shards.iter().map(|s| s.active.load(Ordering::Relaxed)).sum::<i64>();
        let mut gauge = proto::Gauge::default();
        gauge.set_value(active as f64);
        let mut h = proto::Histogram::default();
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(BUCKETS.len());
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.sum(|s| s.buckets[i].load(Ordering::Relaxed));
            let mut b = proto::Bucket::default();
            b.set_cumulative_count(cumulative);
            b.set_upper_bound(*bound);
            buckets.push(b);
        }
        h.set_bucket(buckets);
        h.set_sample_count(self.sum(|s| s.count.load(Ordering::Relaxed)));
        h.set_sample_sum(self.sum(|s| s.sum_nanos.load(Ordering::Relaxed)) as f64 / 1e9);
        let mut histogram = proto::Metric::default();
        histogram.set_histogram(h);
        vec![
            family(
                &self.descs[0],
                proto::MetricType::COUNTER,
                counter(self.sum(|s| s.success.load(Ordering::Relaxed))),
            ),
            family(&self.descs[1], proto::MetricType::COUNTER, counter(self.sum(|s| s.error.load(Ordering::Relaxed)))),
            family(
                &self.descs[2],
                proto::MetricType::COUNTER,
                counter(self.sum(|s| s.failure.load(Ordering::Relaxed))),
            ),
            family(&self.descs[3], proto::MetricType::GAUGE, proto::Metric::from_gauge(gauge)),
            family(&self.descs[4], proto::MetricType::HISTOGRAM, histogram),
        ]
    }
}

/// A counter bumped on the request path (KES's `kes_log_audit_events`: one
/// per audited request), sharded like [`RequestStats`]; exposed exactly as a
/// `prometheus` `IntCounter` with the same name.
pub struct RequestCounter {
    shards: Sharded<AtomicU64>,
    desc: Desc,
}

impl RequestCounter {
    pub fn new(name: &str, help: &str) -> RequestCounter {
        let desc = Desc::new(name.to_string(), help.to_string(), Vec::new(), Default::default())
            .unwrap_or_else(|_| super::unreachable_metric(name));
        RequestCounter { shards: Sharded::new(), desc }
    }

    pub fn inc(&self) {
        self.shards.local().fetch_add(1, Ordering::Relaxed);
    }

    /// The total over every thread.
    pub fn get(&self) -> u64 {
        self.shards.iter().map(|c| c.load(Ordering::Relaxed)).fold(0, u64::wrapping_add)
    }
}

impl Collector for RequestCounter {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        vec![family(&self.desc, proto::MetricType::COUNTER, counter(self.get()))]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder, Histogram, HistogramOpts, IntCounter, IntGauge, Registry, TextEncoder};

    fn text(r: &Registry) -> String {
        let mut out = Vec::new();
        TextEncoder::new().encode(&r.gather(), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// The sharded counter reads exactly like an `IntCounter` bumped as often.
    #[test]
    fn a_request_counter_matches_an_int_counter() {
        let (name, help) = ("kes_log_audit_events", "Number of audit log events written to the audit log targets.");
        let sharded = Registry::new();
        let events = std::sync::Arc::new(RequestCounter::new(name, help));
        sharded.register(Box::new(super::super::Shared(events.clone()))).unwrap();
        let plain = Registry::new();
        let c = IntCounter::new(name, help).unwrap();
        plain.register(Box::new(c.clone())).unwrap();
        std::thread::scope(|scope| {
            for _ in 0..6 {
                scope.spawn(|| (0..50).for_each(|_| events.inc()));
            }
        });
        c.inc_by(300);
        assert_eq!(events.get(), 300);
        assert_eq!(text(&sharded), text(&plain));
    }

    /// The sharded figures are exposed exactly as `prometheus`'s own
    /// counter, gauge and histogram types expose the same updates, whichever
    /// threads made them.
    #[test]
    fn exposition_matches_the_prometheus_types() {
        let sharded = Registry::new();
        let stats = std::sync::Arc::new(RequestStats::new());
        sharded.register(Box::new(super::super::Shared(stats.clone()))).unwrap();

        let plain = Registry::new();
        let c = |i: usize| {
            let c = IntCounter::new(FAMILIES[i].0, FAMILIES[i].1).unwrap();
            plain.register(Box::new(c.clone())).unwrap();
            c
        };
        let (success, error, failure) = (c(0), c(1), c(2));
        let active = IntGauge::new(FAMILIES[3].0, FAMILIES[3].1).unwrap();
        plain.register(Box::new(active.clone())).unwrap();
        let time =
            Histogram::with_opts(HistogramOpts::new(FAMILIES[4].0, FAMILIES[4].1).buckets(BUCKETS.to_vec())).unwrap();
        plain.register(Box::new(time.clone())).unwrap();

        let requests: Vec<(u16, u64)> =
            (0..300u64).map(|i| ([200, 404, 503][i as usize % 3], i * 37_000_000)).collect();
        std::thread::scope(|scope| {
            for chunk in requests.chunks(50) {
                let stats = &stats;
                scope.spawn(move || {
                    for &(status, ms) in chunk {
                        stats.begin();
                        stats.end(status, Duration::from_nanos(ms));
                    }
                });
            }
        });
        stats.begin();
        active.inc();
        for &(status, nanos) in &requests {
            match status {
                500.. => failure.inc(),
                400..=499 => error.inc(),
                _ => success.inc(),
            }
            time.observe(Duration::from_nanos(nanos).as_secs_f64());
        }
        let (sharded, plain) = (text(&sharded), text(&plain));
        // Sums of many float seconds differ from the nanosecond sum in the
        // last digits; compare the sum numerically, the rest byte for byte.
        let split = |t: &str| {
            let (sum, rest): (Vec<&str>, Vec<&str>) =
                t.lines().partition(|l| l.starts_with("kes_http_response_time_sum"));
            (sum.concat().rsplit(' ').next().unwrap_or_default().parse::<f64>().unwrap(), rest.join("\n"))
        };
        let ((s1, r1), (s2, r2)) = (split(&sharded), split(&plain));
        assert_eq!(r1, r2);
        assert!((s1 - s2).abs() < 1e-6, "{s1} vs {s2}");
    }
}
