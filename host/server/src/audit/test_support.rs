//! What the audit tests share: sinks that collect, stall or block, the lock
//! that lets the heaviest tests run alone, and a way to record an event.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;

use super::{Answered, AuditLog};
use keyward_core::audit_sink::{AuditBatch, AuditSink};
use keyward_core::keystore::StoreError;

/// The wall-clock time `unix_nanos` after the epoch.
pub(super) fn at(unix_nanos: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(unix_nanos)
}

/// Records the paths of every batch it is handed, batch by batch.
#[derive(Default)]
pub(super) struct Collect(pub(super) Mutex<Vec<Vec<String>>>);

impl Collect {
    pub(super) fn paths(&self) -> Vec<String> {
        self.0.lock().unwrap().concat()
    }

    pub(super) fn count(&self) -> usize {
        self.0.lock().unwrap().iter().map(Vec::len).sum()
    }
}

#[async_trait]
impl AuditSink for Collect {
    async fn write(&self, batch: AuditBatch<'_>) -> Result<(), StoreError> {
        let paths = batch.iter().map(|l| keyward_core::audit_sink::AuditEvent::parse(l).unwrap().path).collect();
        self.0.lock().unwrap().push(paths);
        Ok(())
    }
}

pub(super) struct Stuck;

#[async_trait]
impl AuditSink for Stuck {
    async fn write(&self, _: AuditBatch<'_>) -> Result<(), StoreError> {
        std::future::pending().await
    }
}

/// Tests that load the two CPUs run alone (write lock): the others'
/// writers would fall behind and drop events.
pub(super) static ALONE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Blocks its thread while writing, as a sink's file I/O does on a
/// stalled disk.
pub(super) struct Blocking;

#[async_trait]
impl AuditSink for Blocking {
    async fn write(&self, _: AuditBatch<'_>) -> Result<(), StoreError> {
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    }
}

/// Records an answered request for `path`.
pub(super) fn record(log: &AuditLog, path: &str) {
    log.record(&Answered {
        received: at(0),
        ip: None,
        path,
        identity: None,
        status: 200,
        duration: Duration::ZERO,
        answered: Instant::now(),
    });
}
