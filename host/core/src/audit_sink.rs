//! The audit-sink seam: where batches of audit events go.
//!
//! A batch is the events' KES audit lines, newline-delimited, exactly as they
//! are written to a file: the shape of the WIT `audit-lines` world, and what a
//! file, stdout or webhook sink forwards without touching each event. Sinks are
//! fed off the request path; a slow or failing sink never delays a response.

use async_trait::async_trait;

use crate::keystore::StoreError;

/// A batch of one or more audit events: each event's KES audit JSON line
/// followed by `\n`, in the order they were recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuditBatch<'a> {
    lines: &'a [u8],
    count: usize,
}

impl<'a> AuditBatch<'a> {
    /// Wraps newline-delimited audit lines (each ending in `\n`).
    pub fn new(lines: &'a [u8]) -> AuditBatch<'a> {
        AuditBatch { lines, count: lines.iter().filter(|&&b| b == b'\n').count() }
    }

    /// Wraps lines whose number the caller already knows.
    pub fn counted(lines: &'a [u8], count: usize) -> AuditBatch<'a> {
        debug_assert_eq!(count, AuditBatch::new(lines).count);
        AuditBatch { lines, count }
    }

    /// The batch as written to a file: every line followed by `\n`.
    pub fn lines(&self) -> &'a [u8] {
        self.lines
    }

    /// How many events the batch holds.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Each event's line, without its `\n`. Lines are built from Rust
    /// strings, so they are UTF-8; one that is not would be skipped.
    pub fn iter(&self) -> impl Iterator<Item = &'a str> {
        self.lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()).filter_map(|l| std::str::from_utf8(l).ok())
    }
}

/// One audit event as separate facts: what a sink built for the WIT
/// `audit-sink` world (per-event records) receives. Parsed back from the
/// event's line, which stays the single source of truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// RFC 3339 time the request arrived.
    pub time: String,
    /// Client IP address, if known.
    pub ip: Option<String>,
    /// URL path (no query).
    pub path: String,
    /// Client identity (hex SHA-256 of the certificate's public key), if any.
    pub identity: Option<String>,
    /// HTTP status sent.
    pub status: u16,
    /// Time taken to answer, in microseconds.
    pub duration_us: u64,
    /// The KES-shaped JSON line (without the newline).
    pub json: String,
}

impl AuditEvent {
    /// The facts of one KES audit line, or `None` if it is not one.
    pub fn parse(line: &str) -> Option<AuditEvent> {
        #[derive(serde::Deserialize)]
        struct Line {
            time: String,
            request: Request,
            response: Response,
        }
        #[derive(serde::Deserialize)]
        struct Request {
            ip: Option<String>,
            path: String,
            identity: Option<String>,
        }
        #[derive(serde::Deserialize)]
        struct Response {
            code: u16,
            /// Nanoseconds (a Go `time.Duration`).
            time: u64,
        }
        let l: Line = serde_json::from_str(line).ok()?;
        Some(AuditEvent {
            time: l.time,
            ip: l.request.ip,
            path: l.request.path,
            identity: l.request.identity,
            status: l.response.code,
            duration_us: l.response.time / 1000,
            json: line.to_string(),
        })
    }
}

/// A destination for audit events.
#[async_trait]
pub trait AuditSink: Send + Sync + 'static {
    /// Writes a batch of events. An error means the whole batch may be lost;
    /// the caller counts it and moves on.
    async fn write(&self, batch: AuditBatch<'_>) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_counts_and_splits_its_lines() {
        let batch = AuditBatch::new(b"{\"a\":1}\n{\"b\":2}\n");
        assert_eq!(batch.len(), 2);
        assert_eq!(batch.iter().collect::<Vec<_>>(), [r#"{"a":1}"#, r#"{"b":2}"#]);
        assert!(AuditBatch::new(b"").is_empty());
    }

    #[test]
    fn an_event_parses_back_from_its_line() {
        let line = r#"{"time":"2024-01-01T00:00:00Z","request":{"ip":"::1","path":"/a\"b","identity":"ab"},"response":{"code":404,"time":3000000}}"#;
        let e = AuditEvent::parse(line).unwrap();
        assert_eq!((e.time.as_str(), e.ip.as_deref(), e.path.as_str()), ("2024-01-01T00:00:00Z", Some("::1"), "/a\"b"));
        assert_eq!((e.identity.as_deref(), e.status, e.duration_us, e.json.as_str()), (Some("ab"), 404, 3000, line));
        let anonymous = r#"{"time":"t","request":{"path":"/"},"response":{"code":200,"time":0}}"#;
        assert_eq!(AuditEvent::parse(anonymous).map(|e| (e.ip, e.identity)), Some((None, None)));
        assert_eq!(AuditEvent::parse("not json"), None);
    }
}
