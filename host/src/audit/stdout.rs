//! The built-in stdout audit sink (`log.audit = "on"`): one JSON line per event.

use std::io::Write;

use async_trait::async_trait;

use super::sink::{AuditEvent, AuditSink};
use crate::keys::store::StoreError;

/// Writes audit lines to standard output, one batch per write.
#[derive(Debug, Default)]
pub struct StdoutSink;

#[async_trait]
impl AuditSink for StdoutSink {
    async fn write(&self, events: &[AuditEvent]) -> Result<(), StoreError> {
        let mut buf = Vec::with_capacity(events.len() * 160);
        for e in events {
            buf.extend_from_slice(e.json.as_bytes());
            buf.push(b'\n');
        }
        let mut out = std::io::stdout().lock();
        out.write_all(&buf).and_then(|_| out.flush()).map_err(|e| StoreError::Unavailable(format!("stdout: {e}")))
    }
}
