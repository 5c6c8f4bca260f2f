//! The error log: server-side failures to the tracing log and to followers
//! of `/v1/log/error`.

use std::sync::Arc;

use super::follow::{Follower, Followers};
use crate::metrics::Metrics;

/// The error log: tracing output plus followers of `/v1/log/error`.
pub struct ErrorLog {
    followers: Followers,
    metrics: Arc<Metrics>,
}

impl ErrorLog {
    pub fn new(metrics: Arc<Metrics>) -> ErrorLog {
        ErrorLog { followers: Followers::new(), metrics }
    }

    /// Records a server-side failure. The message must never contain secrets.
    pub fn error(&self, message: &str) {
        self.metrics.log_error_events.inc();
        tracing::error!("{message}");
        self.followers.send_with(|| Arc::from(serde_json::json!({ "message": message }).to_string()));
    }

    /// A stream of error lines for `/v1/log/error`.
    pub fn follow(&self) -> Follower {
        self.followers.follow()
    }
}
