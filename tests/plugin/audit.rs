//! `audit-file`: JSON lines appended to a file in its granted directory.

use keyward::audit::sink::{AuditEvent, AuditSink};
use keyward::keys::store::StoreError;
use keyward::plugin::{Grants, PluginAuditSink, PluginError, PluginKind, PoolOptions};

use crate::{pinned, shared_engine, TempDir};

fn event(i: u32) -> AuditEvent {
    AuditEvent {
        time: format!("2024-01-01T00:00:{i:02}Z"),
        ip: Some("127.0.0.1".into()),
        path: "/v1/key/create/a".into(),
        identity: if i.is_multiple_of(2) { None } else { Some("ab".repeat(32).into()) },
        status: 200,
        duration_us: 42 + u64::from(i),
        json: format!(r#"{{"time":"2024-01-01T00:00:{i:02}Z","request":{{"path":"/v1/key/create/a"}},"n":{i}}}"#),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_file_appends_json_lines() {
    let dir = TempDir::new("audit");
    let spec = pinned("audit-file", "audit_file", PluginKind::AuditSink, Grants::dir(dir.path(), "/logs"));
    let sink =
        PluginAuditSink::load(&shared_engine(), &spec, r#"{"path": "/logs/audit.jsonl"}"#, PoolOptions::default())
            .await
            .unwrap();
    let batch1: Vec<AuditEvent> = (0..3).map(event).collect();
    let batch2: Vec<AuditEvent> = (3..5).map(event).collect();
    sink.write(&batch1).await.unwrap();
    sink.write(&[]).await.unwrap();
    sink.write(&batch2).await.unwrap();
    let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let expected: String = (0..5).map(|i| format!("{}\n", event(i).json)).collect();
    assert_eq!(text, expected);
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap();
    }

    // A file that exists already is appended to, not truncated.
    let sink2 =
        PluginAuditSink::load(&shared_engine(), &spec, r#"{"path": "/logs/audit.jsonl"}"#, PoolOptions::default())
            .await
            .unwrap();
    sink2.write(&[event(9)]).await.unwrap();
    let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 6);
    assert_eq!(sink2.stats().calls.load(std::sync::atomic::Ordering::Relaxed), 1, "an empty batch is not a call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_file_without_grant_fails_at_load() {
    let spec = pinned("audit-file", "audit_file", PluginKind::AuditSink, Grants::default());
    let e = PluginAuditSink::load(&shared_engine(), &spec, r#"{"path": "/logs/audit.jsonl"}"#, PoolOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(&e, PluginError::Init { source: StoreError::Invalid(m), .. } if m.contains("preopen")), "{e}");
}
