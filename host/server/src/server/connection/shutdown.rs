//! The server-wide shutdown flag every connection watches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The server is shutting down: every connection finishes the request it is
/// answering and closes (idle ones at once). A flag each connection reads
/// when it is polled, plus one wake-up per connection when it is set: unlike
/// a watch channel, nothing is registered again on every poll.
#[derive(Default)]
pub(in crate::server) struct Shutdown {
    begun: AtomicBool,
    pub(super) notify: Arc<tokio::sync::Notify>,
}

impl Shutdown {
    pub(in crate::server) fn begin(&self) {
        self.begun.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    pub(super) fn begun(&self) -> bool {
        self.begun.load(Ordering::Acquire)
    }
}
