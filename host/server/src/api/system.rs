//! `/version`, `/v1/ready`, `/v1/status`, `/v1/metrics`, `/v1/api`.

use http::StatusCode;
use serde::Serialize;

use super::error::ApiError;
use super::routes::ROUTES;
use super::{empty_reply, json_reply, raw_reply, Call, Reply};
use crate::metrics::Families;
use crate::metrics::ProcessStats;
use keyward_core::keystore::StoreError;

/// The version reported by `/version` and `/v1/status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Serialize)]
struct Version {
    version: &'static str,
    commit: &'static str,
}

pub fn version(_: &Call<'_>) -> Result<Reply, ApiError> {
    json_reply(&Version { version: VERSION, commit: option_env!("KEYWARD_COMMIT").unwrap_or("") })
}

pub async fn ready(call: &Call<'_>) -> Result<Reply, ApiError> {
    match call.state.keys.status().await.1 {
        Ok(()) => empty_reply(),
        Err(StoreError::Unavailable(_)) => {
            Err(ApiError::new(StatusCode::GATEWAY_TIMEOUT, "key store is not reachable"))
        }
        Err(_) => Err(ApiError::new(StatusCode::BAD_GATEWAY, "key store is unavailable")),
    }
}

#[derive(Serialize)]
struct Status {
    version: &'static str,
    os: &'static str,
    arch: &'static str,
    /// Seconds (the current generation's unit).
    uptime: u64,
    num_cpu: usize,
    num_cpu_used: usize,
    mem_heap_used: i64,
    mem_stack_used: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    keystore_latency: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    keystore_unreachable: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    keystore_unavailable: bool,
}

pub async fn status(call: &Call<'_>) -> Result<Reply, ApiError> {
    let (latency, health) = call.state.keys.status().await;
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let p = ProcessStats::read();
    json_reply(&Status {
        version: VERSION,
        os: std::env::consts::OS,
        arch: match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        },
        uptime: call.state.metrics.uptime_secs(),
        num_cpu: cpus,
        num_cpu_used: cpus,
        mem_heap_used: p.rss_bytes,
        mem_stack_used: p.stack_bytes,
        keystore_latency: health.is_ok().then(|| (latency.as_millis() as u64).max(1)),
        keystore_unreachable: matches!(health, Err(StoreError::Unavailable(_))),
        // Go clients reject "unreachable but not unavailable": set both.
        keystore_unavailable: health.is_err(),
    })
}

/// The Prometheus text format. Every Go KES client decodes the whole answer
/// and fails on any family with more than one series (v0.19 on any family,
/// later ones on every family but the request counters), and none of them
/// sends an `Accept` header, while Prometheus and curl always do. So the
/// families keyward breaks down by label are shown only to a request with an
/// `Accept` header; the KES families, all single series, are always there.
pub fn metrics(call: &Call<'_>) -> Result<Reply, ApiError> {
    let families = if call.accepts_any { Families::All } else { Families::SingleSeries };
    raw_reply("text/plain; version=0.0.4; charset=utf-8", call.state.metrics.render(call.state.keys.cached(), families))
}

#[derive(Serialize)]
struct ApiEntry {
    method: &'static str,
    path: &'static str,
    max_body: usize,
    /// Seconds.
    timeout: u64,
}

pub fn api(call: &Call<'_>) -> Result<Reply, ApiError> {
    let overrides = call.state.overrides.load();
    let entries: Vec<ApiEntry> = ROUTES
        .iter()
        .map(|r| ApiEntry {
            method: r.methods.primary(),
            path: r.path,
            max_body: r.max_body,
            timeout: overrides.get(r).and_then(|s| s.timeout).unwrap_or(r.timeout).as_secs(),
        })
        .collect();
    json_reply(&entries)
}
