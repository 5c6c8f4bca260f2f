//! The audit-sink seam: where batches of audit events go.
//!
//! Same shape as the WIT `audit-sink` world. Sinks are fed off the request path
//! by a bounded queue; a slow or failing sink never delays a response.

use std::sync::Arc;

use async_trait::async_trait;

use crate::keys::store::StoreError;

/// One audit event. `json` is the exact KES audit line (without the newline);
/// the other fields are the same facts, pre-parsed so a sink can filter or route
/// without parsing JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// RFC 3339 time the request arrived.
    pub time: String,
    /// Client IP address, if known. Shared by every event of a connection.
    pub ip: Option<Arc<str>>,
    /// URL path (no query).
    pub path: String,
    /// Client identity (hex SHA-256 of the certificate's public key), if any.
    /// Shared by every event of a connection.
    pub identity: Option<Arc<str>>,
    /// HTTP status sent.
    pub status: u16,
    /// Time taken to answer, in microseconds.
    pub duration_us: u64,
    /// The KES-shaped JSON line.
    pub json: String,
}

/// A destination for audit events.
#[async_trait]
pub trait AuditSink: Send + Sync + 'static {
    /// Writes a batch of events. An error means the whole batch may be lost;
    /// the caller counts it and moves on.
    async fn write(&self, events: &[AuditEvent]) -> Result<(), StoreError>;
}
