//! Audit sinks: `audit-file` (the `audit-lines` world) appends the lines to a
//! file in its granted directory; a sink built for the original `audit-sink`
//! world still gets every event's fields.

use keyward_core::audit_sink::{AuditBatch, AuditSink};
use keyward_core::keystore::StoreError;
use keyward_plugin_host::{Grants, PluginAuditSink, PluginEngine, PluginError, PluginKind, PoolOptions};

use crate::{pinned, shared_engine, TempDir};

/// The audit line of request `i`, as the host writes it.
fn line(i: u32) -> String {
    let identity = if i.is_multiple_of(2) { String::new() } else { format!(r#","identity":"{}""#, "ab".repeat(32)) };
    format!(
        r#"{{"time":"2024-01-01T00:00:{i:02}Z","request":{{"ip":"127.0.0.1","path":"/v1/key/create/a{i}"{identity}}},"response":{{"code":200,"time":{}}}}}"#,
        (42 + u64::from(i)) * 1000
    )
}

/// Requests as the batch a sink is handed: every line followed by `\n`.
fn batch(requests: impl IntoIterator<Item = u32>) -> Vec<u8> {
    requests.into_iter().map(|i| line(i) + "\n").collect::<String>().into_bytes()
}

async fn audit_file(engine: &PluginEngine, dir: &TempDir) -> PluginAuditSink {
    let spec = pinned("audit-file", "audit_file", PluginKind::AuditSink, Grants::dir(dir.path(), "/logs"));
    PluginAuditSink::load(engine, &spec, r#"{"path": "/logs/audit.jsonl"}"#, PoolOptions::default()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_file_appends_json_lines() {
    let dir = TempDir::new("audit");
    let sink = audit_file(&shared_engine(), &dir).await;
    sink.write(AuditBatch::new(&batch(0..3))).await.unwrap();
    sink.write(AuditBatch::new(b"")).await.unwrap();
    sink.write(AuditBatch::new(&batch(3..5))).await.unwrap();
    let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert_eq!(text.as_bytes(), batch(0..5));
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }

    // A file that exists already is appended to, not truncated.
    let sink2 = audit_file(&shared_engine(), &dir).await;
    sink2.write(AuditBatch::new(&batch([9]))).await.unwrap();
    let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 6);
    assert_eq!(sink2.stats().calls.load(std::sync::atomic::Ordering::Relaxed), 1, "an empty batch is not a call");
}

/// A batch far larger than one system write (the host's file streams take
/// 64 KiB at a time) reaches the file whole, after what was there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_file_writes_a_large_batch_whole() {
    let dir = TempDir::new("audit-large");
    let sink = audit_file(&shared_engine(), &dir).await;
    sink.write(AuditBatch::new(&batch([0]))).await.unwrap();
    let large = batch(1..8000);
    assert!(large.len() > 1 << 20);
    sink.write(AuditBatch::new(&large)).await.unwrap();
    let text = std::fs::read(dir.path().join("audit.jsonl")).unwrap();
    assert_eq!(text, [batch([0]), large].concat());
}

/// Rotation: a file truncated in place (copytruncate) gets the next batch
/// at its new start, with no gap where the old lines were; a file renamed
/// away is left alone and a new one is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_file_follows_rotation() {
    let dir = TempDir::new("audit-rotate");
    let path = dir.path().join("audit.jsonl");
    let sink = audit_file(&shared_engine(), &dir).await;
    sink.write(AuditBatch::new(&batch(0..3))).await.unwrap();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
    sink.write(AuditBatch::new(&batch([3]))).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), batch([3]));

    std::fs::rename(&path, dir.path().join("audit.jsonl.1")).unwrap();
    sink.write(AuditBatch::new(&batch([4]))).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), batch([4]));
    assert_eq!(std::fs::read(dir.path().join("audit.jsonl.1")).unwrap(), batch([3]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_file_without_grant_fails_at_load() {
    let spec = pinned("audit-file", "audit_file", PluginKind::AuditSink, Grants::default());
    let e = PluginAuditSink::load(&shared_engine(), &spec, r#"{"path": "/logs/audit.jsonl"}"#, PoolOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(&e, PluginError::Init { source: StoreError::Invalid(m), .. } if m.contains("preopen")), "{e}");
}

/// A sink built for the original `audit-sink` world (one record per event)
/// loads under the same manifest `kind` and gets each event's facts, parsed
/// from the lines the host records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_event_sink_gets_every_field() {
    let dir = TempDir::new("audit-events");
    let spec = pinned("events", "audit_events", PluginKind::AuditSink, Grants::dir(dir.path(), "/logs"));
    let sink =
        PluginAuditSink::load(&shared_engine(), &spec, r#"{"path": "/logs/events.jsonl"}"#, PoolOptions::default())
            .await
            .unwrap();
    sink.write(AuditBatch::new(&batch(0..2))).await.unwrap();
    let text = std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap();
    let got: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let expected: Vec<serde_json::Value> = (0..2u32)
        .map(|i| {
            serde_json::json!({
                "time": format!("2024-01-01T00:00:{i:02}Z"),
                "ip": "127.0.0.1",
                "path": format!("/v1/key/create/a{i}"),
                "identity": if i == 1 { serde_json::json!("ab".repeat(32)) } else { serde_json::Value::Null },
                "status": 200,
                "duration_us": 42 + i,
                "json": line(i),
            })
        })
        .collect();
    assert_eq!(got, expected);
}
