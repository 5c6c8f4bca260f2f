//! The built-in stdout audit sink (`log.audit = "on"`): one JSON line per event.

use std::io::Write;

use async_trait::async_trait;

use keyward_core::audit_sink::{AuditBatch, AuditSink};
use keyward_core::keystore::StoreError;

/// Writes audit lines to standard output, one batch per write.
#[derive(Debug, Default)]
pub struct StdoutSink;

#[async_trait]
impl AuditSink for StdoutSink {
    async fn write(&self, batch: AuditBatch<'_>) -> Result<(), StoreError> {
        let mut out = std::io::stdout().lock();
        out.write_all(batch.lines())
            .and_then(|_| out.flush())
            .map_err(|e| StoreError::Unavailable(format!("stdout: {e}")))
    }
}
