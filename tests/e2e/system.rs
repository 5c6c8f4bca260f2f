//! version, status, ready, api, metrics, audit and error logs.

use crate::harness::TestServer;

#[tokio::test]
async fn version_status_ready_api() {
    let s = TestServer::start("");
    let c = s.admin_client();
    let v = c.get("/version").await;
    v.ok();
    assert!(v.json()["version"].is_string());
    // The commit the binary was built from (empty only outside a git checkout).
    let commit = v.json()["commit"].as_str().unwrap().to_string();
    if std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.git").exists() {
        assert!(commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit()), "{commit:?}");
    }
    let st = c.get("/v1/status").await;
    st.ok();
    let j = st.json();
    for field in [
        "version",
        "os",
        "arch",
        "uptime",
        "num_cpu",
        "num_cpu_used",
        "mem_heap_used",
        "mem_stack_used",
        "keystore_latency",
    ] {
        assert!(!j[field].is_null(), "status lacks {field}: {j}");
    }
    assert!(j["uptime"].is_u64());
    assert!(j["keystore_latency"].as_u64().unwrap() >= 1);
    c.get("/v1/ready").await.ok();
    let api = c.get("/v1/api").await;
    let routes = api.json();
    let paths: Vec<_> = routes.as_array().unwrap().iter().map(|r| r["path"].as_str().unwrap().to_string()).collect();
    for p in ["/v1/key/create/", "/v1/key/hmac/", "/v1/key/bulk/decrypt/", "/v1/policy/write/", "/v1/log/audit"] {
        assert!(paths.contains(&p.to_string()), "{p} missing from /v1/api");
    }
    let enc = routes.as_array().unwrap().iter().find(|r| r["path"] == "/v1/key/encrypt/").unwrap();
    assert_eq!(enc["method"], "PUT");
    assert_eq!(enc["max_body"], 1 << 20);
    assert_eq!(enc["timeout"], 15);
}

#[tokio::test]
async fn metrics_count_requests_by_class() {
    let s = TestServer::start("");
    let c = s.admin_client();
    c.put_empty("/v1/key/create/m").await.ok();
    c.get("/v1/key/describe/none").await;
    let m = c.get("/v1/metrics").await;
    m.ok();
    let text = m.text();
    for name in [
        "kes_http_request_success",
        "kes_http_request_error",
        "kes_http_request_failure",
        "kes_http_response_time_bucket",
        "kes_system_up_time",
        "kes_log_audit_events",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
    let error_line = text.lines().find(|l| l.starts_with("kes_http_request_error ")).unwrap();
    assert!(error_line.ends_with(" 1"), "{error_line}");
}

/// What a Go KES client makes of `/v1/metrics`: expfmt's text parser groups
/// samples into families (a histogram's `_bucket`, `_sum` and `_count` are
/// one family, its `le` buckets one series); the client then walks every
/// family. v0.19 refuses any family with other than one series; v0.22,
/// kes-go and kms-go refuse any but the three request counters (which they
/// sum). Returns each family with its number of series.
fn families_as_go_reads_them(text: &str) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut types = std::collections::BTreeMap::new();
    let mut families: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            types.insert(name.to_string(), kind.to_string());
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, _value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = series.split_once('{').map(|(n, l)| (n, l.trim_end_matches('}'))).unwrap_or((series, ""));
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| matches!(types.get(*base).map(String::as_str), Some("histogram" | "summary")))
            })
            .unwrap_or(name);
        let key: Vec<&str> = labels
            .split(',')
            .filter(|l| !l.is_empty() && !l.starts_with("le=") && !l.starts_with("quantile="))
            .collect();
        families.entry(family.to_string()).or_default().insert(key.join(","));
    }
    families
}

/// `Metrics()` of every KES client generation: the answer to a request as
/// they send it (no `Accept` header) decodes; every family holds exactly one
/// series, the strictest (v0.19) rule. A scraper (`Accept` given) also gets
/// keyward's labelled families.
#[tokio::test]
async fn metrics_decode_in_every_kes_client_generation() {
    let s = TestServer::start("[limits]\nhandshake_timeout = \"1s\"\n");
    // Make the labelled families have several series.
    drop(tokio::net::TcpStream::connect(s.addr).await.unwrap());
    let c = s.admin_client();
    c.get("/v1/key/describe/none").await;
    let raw = crate::harness::raw_request(
        &s,
        &s.admin,
        "GET /v1/metrics HTTP/1.1\r\nHost: localhost\r\nUser-Agent: Go-http-client/1.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let families = families_as_go_reads_them(body);
    assert!(families.len() >= 14, "{families:?}");
    for (family, series) in &families {
        assert_eq!(series.len(), 1, "family {family} has {} series, which Go clients refuse: {series:?}", series.len());
    }
    for kes in ["kes_http_request_success", "kes_http_response_time", "kes_system_up_time", "kes_log_audit_events"] {
        assert!(families.contains_key(kes), "{kes} missing");
    }
    // Prometheus (and curl, and reqwest) send an Accept header.
    let scraped = families_as_go_reads_them(&c.get("/v1/metrics").await.text());
    assert!(scraped["keyward_connections_timed_out_total"].len() >= 2, "{scraped:?}");
}

#[tokio::test]
async fn audit_lines_on_stdout_cover_every_request_including_refused_ones() {
    let s = TestServer::start("[log]\naudit = \"on\"\n");
    let c = s.admin_client();
    c.put_empty("/v1/key/create/a").await.ok();
    s.anonymous().get("/v1/status").await;
    c.get("/nowhere").await;
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = s.stdout().lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).collect::<Vec<_>>();
        if lines.len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["request"]["path"], "/v1/key/create/a");
    assert_eq!(lines[0]["request"]["identity"], s.admin.id.as_str());
    assert_eq!(lines[0]["request"]["ip"], "127.0.0.1");
    assert_eq!(lines[0]["response"]["code"], 200);
    assert!(lines[0]["response"]["time"].is_u64());
    assert!(lines[0]["time"].is_string());
    assert_eq!(lines[1]["response"]["code"], 400);
    assert!(lines[1]["request"].get("identity").is_none());
    assert_eq!(lines[2]["response"]["code"], 404);
}

#[tokio::test]
async fn audit_log_stream_follows_requests() {
    let s = TestServer::start("");
    let c = s.admin_client();
    let mut stream = c.http.get(format!("{}/v1/log/audit", c.base)).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "application/x-ndjson");
    // Give the subscription a moment, then make a request to be seen.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    c.put_empty("/v1/key/create/seen").await.ok();
    // The stream's own request is audited too; read until the create shows.
    let mut seen = String::new();
    while !seen.contains("/v1/key/create/seen") {
        let chunk =
            tokio::time::timeout(std::time::Duration::from_secs(5), stream.chunk()).await.unwrap().unwrap().unwrap();
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    for line in seen.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(v["response"]["code"].is_u64());
    }
}

#[tokio::test]
async fn boot_keys_are_created_at_start() {
    let s = TestServer::start("[[keys]]\nname = \"boot-key\"\n");
    s.admin_client().get("/v1/key/describe/boot-key").await.ok();
}
