//! Everything a request handler may need, shared by all connections.

use std::sync::Arc;

use arc_swap::ArcSwap;
use time::OffsetDateTime;

use crate::api::routes::Route;
use crate::audit::{AuditLog, ErrorLog};
use crate::auth::Authority;
use crate::config::ApiSettings;
use crate::keys::Keys;
use crate::metrics::Metrics;
use keyward_core::crypto::Algorithm;

/// Per-route overrides from the `[api]` config section.
#[derive(Debug, Clone, Default)]
pub struct RouteOverrides {
    entries: Vec<(String, ApiSettings)>,
}

impl RouteOverrides {
    pub fn new(api: &std::collections::BTreeMap<String, ApiSettings>) -> Self {
        let entries = api.iter().map(|(p, s)| (p.trim_end_matches('/').to_string(), s.clone())).collect();
        RouteOverrides { entries }
    }

    /// The settings for `route`, matched on its path without a trailing slash.
    pub fn get(&self, route: &Route) -> Option<&ApiSettings> {
        let path = route.path.trim_end_matches('/');
        self.entries.iter().find(|(p, _)| p == path).map(|(_, s)| s)
    }
}

/// Shared server state.
pub struct State {
    pub authority: ArcSwap<Authority>,
    pub overrides: ArcSwap<RouteOverrides>,
    pub keys: Arc<Keys>,
    pub metrics: Arc<Metrics>,
    pub audit: AuditLog,
    pub errors: ErrorLog,
    pub started_at: OffsetDateTime,
    /// The algorithm of keys created without one: AES256 where the CPU has
    /// AES instructions, as KES does, else ChaCha20.
    pub default_algorithm: Algorithm,
}

impl State {
    /// The algorithm KES would choose on this CPU.
    pub fn detect_algorithm() -> Algorithm {
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        {
            if std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq") {
                return Algorithm::Aes256;
            }
            Algorithm::ChaCha20
        }
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("aes") {
                return Algorithm::Aes256;
            }
            Algorithm::ChaCha20
        }
        #[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
        {
            Algorithm::ChaCha20
        }
    }
}
