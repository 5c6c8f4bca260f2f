//! Accepting connections: the `limits.max_connections` gate, the open-files
//! limit it needs, and handing each admitted connection to a task of its own.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::connection::{serve_connection, Shutdown};
use super::Server;
use crate::metrics::Metrics;

impl Server {
    /// Takes one result of the listener's `accept`: a connection that finds
    /// a free slot is served on a task of its own, one that finds none is
    /// closed at once.
    pub(super) async fn admit(
        &self,
        accepted: std::io::Result<(TcpStream, std::net::SocketAddr)>,
        gate: &mut Gate,
        shutdown: &Arc<Shutdown>,
    ) {
        let (tcp, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                return;
            }
        };
        let Some(slot) = gate.admit(&self.state.metrics) else {
            gate.refuse(tcp, addr, &self.state.metrics);
            return;
        };
        let state = self.state;
        let acceptor = self.acceptor.clone();
        let shutdown = shutdown.clone();
        let limits = self.settings.limits;
        tokio::spawn(async move {
            serve_connection(state, acceptor, tcp, addr, shutdown, limits).await;
            drop(slot);
        });
    }
}

/// The `limits.max_connections` slots. Admission is one atomic
/// `try_acquire` per connection; nothing here runs per request.
///
/// A connection that finds every slot taken is accepted and closed at once
/// rather than left in the listen backlog or held until a slot frees: its
/// client learns immediately that the server is saturated (and can retry or
/// go to another replica), and the server spends neither a file descriptor
/// nor a timer on it.
pub(super) struct Gate {
    slots: Arc<Semaphore>,
    /// Whether the last connection was refused, so that a flood logs one
    /// warning per saturation episode rather than one line per connection.
    saturated: bool,
}

/// One admitted connection's slot: frees the slot and updates
/// `keyward_connections_open` when the connection ends, however it ends.
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: prometheus::IntGauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl Gate {
    pub(super) fn new(max_connections: usize) -> Gate {
        Gate { slots: Arc::new(Semaphore::new(max_connections)), saturated: false }
    }

    /// A slot for a new connection, or `None` if all are taken.
    fn admit(&mut self, metrics: &Metrics) -> Option<Slot> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        self.saturated = false;
        metrics.connections_open.inc();
        Some(Slot { _permit: permit, open: metrics.connections_open.clone() })
    }

    /// Resolves once every admitted connection has ended.
    pub(super) async fn all_closed(&self, max_connections: usize) {
        let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
        let _ = self.slots.acquire_many(all).await;
    }

    /// Closes a connection that found no free slot, and counts it.
    fn refuse(&mut self, tcp: TcpStream, addr: std::net::SocketAddr, metrics: &Metrics) {
        metrics.connections_refused.inc();
        if !self.saturated {
            self.saturated = true;
            tracing::warn!(peer = %addr, "limits.max_connections reached: refusing new connections");
        }
        drop(tcp);
    }
}

/// Raises the soft open-files limit towards the hard one, as Go (and so KES)
/// does at start: with the usual soft limit of 1024, `accept` would fail long
/// before `limits.max_connections` is reached. Warns if it is still too low.
pub(super) fn raise_fd_limit(max_connections: usize) {
    #[cfg(unix)]
    {
        /// Descriptors the server needs besides client connections
        /// (listener, plugin files, log files, the runtime).
        const RESERVE: u64 = 64;
        let wanted = (max_connections as u64).saturating_add(RESERVE);
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit only read and write the struct passed.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return;
            }
            if limit.rlim_cur < wanted && limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit { rlim_cur: limit.rlim_max.min(wanted), rlim_max: limit.rlim_max };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit = raised;
                }
            }
        }
        if limit.rlim_cur < wanted {
            tracing::warn!(
                open_files = limit.rlim_cur,
                max_connections,
                "the open-files limit is below limits.max_connections; accept will fail first"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = max_connections;
}
