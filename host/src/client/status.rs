//! `keyward status` and `keyward metrics`.

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::key::with_api;
use super::output::{self, str_of};
use super::ClientError;
use crate::cli::ClientArgs;

pub fn status(client: ClientArgs) -> Result<(), ClientError> {
    let json_out = client.json;
    with_api(&client, |api| async move {
        let v: Value = api.get_json("/v1/status").await?;
        if json_out {
            return output::json(&v);
        }
        let num = |k: &str| v.get(k).and_then(Value::as_u64);
        // The old generation reports uptime as a Go Duration (nanoseconds)
        // and has no `os` field; the new one reports seconds.
        let uptime = num("uptime").map(|u| {
            let secs = if v.get("os").is_some() { u } else { u / 1_000_000_000 };
            humantime::format_duration(Duration::from_secs(secs)).to_string()
        });
        let platform = match (str_of(&v, "os"), str_of(&v, "arch")) {
            ("", _) | (_, "") => String::new(),
            (os, arch) => format!("{os}/{arch}"),
        };
        let unreachable = v.get("keystore_unreachable").and_then(Value::as_bool).unwrap_or(false);
        let unavailable = v.get("keystore_unavailable").and_then(Value::as_bool).unwrap_or(false);
        let keystore = if unreachable {
            "unreachable".to_string()
        } else if unavailable {
            "unavailable".to_string()
        } else {
            match num("keystore_latency") {
                Some(ms) => format!("ok ({ms} ms)"),
                None => String::new(),
            }
        };
        output::fields(&[
            ("Server", api.server().to_string()),
            ("Version", str_of(&v, "version").to_string()),
            ("Uptime", uptime.unwrap_or_default()),
            ("Platform", platform),
            ("CPUs", num("num_cpu").map(|n| n.to_string()).unwrap_or_default()),
            ("Memory", num("mem_heap_used").map(mib).unwrap_or_default()),
            ("Keystore", keystore),
        ])
    })
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

pub fn metrics(client: ClientArgs) -> Result<(), ClientError> {
    let json_out = client.json;
    with_api(&client, |api| async move {
        let text = api.get_text("/v1/metrics").await?;
        if json_out {
            output::json(&samples(&text))
        } else {
            output::raw(text.as_bytes())
        }
    })
}

/// Prometheus text as a JSON object: `"name{labels}": value` per sample,
/// the labels as the server wrote them. Lines are split by the
/// `prometheus-parse` crate's line parser; its `Scrape` is not used because
/// it regroups histograms and reorders labels, which would change the keys.
fn samples(text: &str) -> Value {
    use prometheus_parse::LineInfo;
    let mut out = Map::new();
    for line in text.lines() {
        let LineInfo::Sample { metric_name, labels, value, .. } = LineInfo::parse(line) else {
            continue;
        };
        let name = match labels {
            Some(labels) => format!("{metric_name}{{{labels}}}"),
            None => metric_name.to_string(),
        };
        // Counters are whole numbers: keep them integers for `jq`.
        let value = match value.parse::<f64>() {
            Ok(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15 => json!(f as i64),
            Ok(f) if f.is_finite() => json!(f),
            _ => json!(value),
        };
        out.insert(name, value);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_becomes_samples() {
        let text = "# HELP x y\n# TYPE x counter\nkes_http_request_success 3\nkes_http_response_time_bucket{le=\"0.01\"} 2\nweird NaN\n";
        let v = samples(text);
        assert_eq!(v["kes_http_request_success"], json!(3));
        assert_eq!(v["kes_http_response_time_bucket{le=\"0.01\"}"], json!(2));
        assert_eq!(v["weird"], json!("NaN"));
    }

    /// Everything the server itself exposes comes through: every sample
    /// line of a real rendering is one key with its value.
    #[test]
    fn the_servers_own_metrics_parse_completely() {
        let m = keyward_server::metrics::Metrics::new();
        m.requests.begin();
        m.requests.end(200, Duration::from_millis(3));
        m.keystore_errors.with_label_values(&["get", "unavailable"]).inc();
        let text = String::from_utf8(m.render(2, keyward_server::metrics::Families::All)).unwrap();
        let v = samples(&text);
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).collect();
        assert_eq!(v.as_object().map(Map::len), Some(lines.len()), "{text}");
        for line in lines {
            let (key, value) = line.rsplit_once(' ').unwrap();
            assert_eq!(v[key].as_f64(), value.parse::<f64>().ok(), "{line}");
        }
        assert_eq!(v["kes_http_request_success"], json!(1));
        assert_eq!(v["kes_http_response_time_bucket{le=\"0.01\"}"], json!(1));
        assert_eq!(v["keyward_cached_keys"], json!(2));
        assert_eq!(v["keyward_keystore_errors{kind=\"unavailable\",op=\"get\"}"], json!(1), "{text}");
    }
}
