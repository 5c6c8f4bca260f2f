//! Prometheus metrics under KES's names, so existing dashboards keep working,
//! plus keyward's own plugin and audit counters.

mod requests;

use std::sync::Arc;
use std::time::Instant;

use prometheus::core::{Collector, Desc};
use prometheus::{proto, Encoder, IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

pub use requests::{RequestCounter, RequestStats};

/// All server metrics. Cloning handles is cheap; the registry owns them.
pub struct Metrics {
    registry: Registry,
    started: Instant,
    /// KES's per-request counters, active gauge and response-time histogram.
    pub requests: Arc<RequestStats>,
    pub log_error_events: IntCounter,
    /// Bumped by every audited request: sharded, not a shared atomic.
    pub log_audit_events: Arc<RequestCounter>,
    pub audit_dropped: IntCounter,
    /// Keystore calls that failed for reasons other than not-found/exists,
    /// by operation and kind (`unavailable` covers plugin timeouts,
    /// `internal` plugin traps).
    pub keystore_errors: IntCounterVec,
    /// Connections holding a slot of `limits.max_connections` (handshaking or serving).
    pub connections_open: IntGauge,
    /// Connections closed at once because every slot was taken.
    pub connections_refused: IntCounter,
    /// Connections cut because the client was too slow, by phase
    /// (`handshake`: TLS not finished in time; `header`: no complete request
    /// head in time, which includes idle keep-alive connections).
    pub connections_timed_out: IntCounterVec,
    up_time: IntGauge,
    num_cpu: IntGauge,
    num_cpu_used: IntGauge,
    num_threads: IntGauge,
    mem_heap_used: IntGauge,
    mem_heap_objects: IntGauge,
    mem_stack_used: IntGauge,
    cached_keys: IntGauge,
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).unwrap_or_else(|_| unreachable_metric(name));
    let _ = r.register(Box::new(c.clone()));
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).unwrap_or_else(|_| unreachable_metric(name));
    let _ = r.register(Box::new(g.clone()));
    g
}

/// Registers a collector the registry shares with [`Metrics`].
struct Shared<C>(Arc<C>);

impl<C: Collector> Collector for Shared<C> {
    fn desc(&self) -> Vec<&Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        self.0.collect()
    }
}

/// Metric names and help texts are constants checked by the tests, so
/// construction cannot fail at run time.
#[cold]
fn unreachable_metric(name: &str) -> ! {
    panic!("invalid built-in metric definition '{name}'")
}

/// Process facts read from `/proc/self` (Linux); zeros elsewhere.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessStats {
    pub threads: i64,
    pub rss_bytes: i64,
    pub stack_bytes: i64,
}

impl ProcessStats {
    pub fn read() -> ProcessStats {
        let mut s = ProcessStats::default();
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            for line in status.lines() {
                let mut parts = line.split_whitespace();
                let (Some(k), Some(v)) = (parts.next(), parts.next()) else {
                    continue;
                };
                let v: i64 = v.parse().unwrap_or(0);
                match k {
                    "Threads:" => s.threads = v,
                    "VmRSS:" => s.rss_bytes = v * 1024,
                    "VmStk:" => s.stack_bytes = v * 1024,
                    _ => {}
                }
            }
        }
        s
    }
}

/// Which metric families an exposition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Families {
    /// Every family.
    All,
    /// Only families without labels (histogram buckets are not labels):
    /// what every KES client generation can decode.
    SingleSeries,
}

impl Metrics {
    pub fn new() -> Metrics {
        let r = Registry::new();
        let requests = Arc::new(RequestStats::new());
        let _ = r.register(Box::new(Shared(requests.clone())));
        let keystore_errors = IntCounterVec::new(
            Opts::new(
                "keyward_keystore_errors",
                "Keystore calls that failed, by operation and kind (unavailable, invalid, internal).",
            ),
            &["op", "kind"],
        )
        .unwrap_or_else(|_| unreachable_metric("keyward_keystore_errors"));
        let _ = r.register(Box::new(keystore_errors.clone()));
        let connections_timed_out = IntCounterVec::new(
            Opts::new(
                "keyward_connections_timed_out_total",
                "Connections cut because the client was too slow, by phase (handshake, header, write: not reading its answer).",
            ),
            &["phase"],
        )
        .unwrap_or_else(|_| unreachable_metric("keyward_connections_timed_out_total"));
        let _ = r.register(Box::new(connections_timed_out.clone()));
        // Shown as 0 from the start, so rate() works before the first timeout.
        for phase in ["handshake", "header"] {
            let _ = connections_timed_out.with_label_values(&[phase]);
        }
        Metrics {
            requests,
            log_error_events: counter(
                &r,
                "kes_log_error_events",
                "Number of error log events written to the error log targets.",
            ),
            log_audit_events: {
                let c = Arc::new(RequestCounter::new(
                    "kes_log_audit_events",
                    "Number of audit log events written to the audit log targets.",
                ));
                let _ = r.register(Box::new(Shared(c.clone())));
                c
            },
            audit_dropped: counter(
                &r,
                "keyward_audit_dropped_events",
                "Audit events dropped because a sink's queue was full or a sink failed.",
            ),
            keystore_errors,
            connections_open: gauge(
                &r,
                "keyward_connections_open",
                "Client connections currently open (TLS handshakes included).",
            ),
            connections_refused: counter(
                &r,
                "keyward_connections_refused_total",
                "Connections closed on accept because limits.max_connections were open.",
            ),
            connections_timed_out,
            up_time: gauge(&r, "kes_system_up_time", "The time the server has been up and running in seconds."),
            num_cpu: gauge(&r, "kes_system_num_cpu", "The number of logical CPUs available on the system."),
            num_cpu_used: gauge(&r, "kes_system_num_cpu_used", "The number of logical CPUs usable by the server."),
            num_threads: gauge(&r, "kes_system_num_threads", "The number of concurrent threads."),
            mem_heap_used: gauge(&r, "kes_system_mem_heap_used", "The number of bytes that are currently allocated."),
            mem_heap_objects: gauge(
                &r,
                "kes_system_mem_heap_objects",
                "The number of objects that are currently allocated.",
            ),
            mem_stack_used: gauge(
                &r,
                "kes_system_mem_stack_used",
                "The number of bytes that are currently used as stack memory.",
            ),
            cached_keys: gauge(&r, "keyward_cached_keys", "Keys held in the key cache."),
            registry: r,
            started: Instant::now(),
        }
    }

    /// Seconds since start.
    pub fn uptime_secs(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    /// Renders the Prometheus text format, refreshing the system gauges first.
    pub fn render(&self, cached_keys: usize, families: Families) -> Vec<u8> {
        let cpus = std::thread::available_parallelism().map(|n| n.get() as i64).unwrap_or(1);
        let p = ProcessStats::read();
        self.up_time.set(self.uptime_secs() as i64);
        self.num_cpu.set(cpus);
        self.num_cpu_used.set(cpus);
        self.num_threads.set(p.threads);
        self.mem_heap_used.set(p.rss_bytes);
        self.mem_heap_objects.set(0);
        self.mem_stack_used.set(p.stack_bytes);
        self.cached_keys.set(cached_keys as i64);
        let mut out = Vec::new();
        let mut gathered = self.registry.gather();
        if families == Families::SingleSeries {
            gathered.retain(|family| family.get_metric().iter().all(|m| m.get_label().is_empty()));
        }
        let _ = TextEncoder::new().encode(&gathered, &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_kes_metric_names() {
        let m = Metrics::new();
        for status in [200, 404, 502] {
            m.requests.begin();
            m.requests.end(status, std::time::Duration::from_millis(1));
        }
        let text = String::from_utf8(m.render(3, Families::All)).unwrap();
        for name in [
            "kes_http_request_success 1",
            "kes_http_request_error 1",
            "kes_http_request_failure 1",
            "kes_http_request_active",
            "kes_http_response_time_bucket{le=\"0.01\"} 3",
            "kes_log_error_events",
            "kes_log_audit_events",
            "kes_system_up_time",
            "kes_system_num_cpu",
            "kes_system_mem_heap_used",
            "keyward_cached_keys 3",
            "keyward_connections_open 0",
            "keyward_connections_refused_total 0",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
