//! Who may do what: the admin, policies, and identities assigned to them.
//!
//! The whole state is an immutable [`Authority`] snapshot behind an
//! [`arc_swap::ArcSwap`]: every request reads it without locking, and a SIGHUP
//! reload or a write through the old policy API swaps in a new snapshot.

pub mod glob;
pub mod pattern;

use std::collections::BTreeMap;
use std::sync::Arc;

use time::OffsetDateTime;

use crate::config::{Admin, Settings};
use pattern::{Pattern, Policy};

/// A named policy and where it came from.
#[derive(Debug, Clone)]
pub struct PolicyRecord {
    /// Allow patterns as written.
    pub allow: Vec<String>,
    /// Deny patterns as written.
    pub deny: Vec<String>,
    /// The compiled matcher.
    pub policy: Policy,
    pub created_at: OffsetDateTime,
    pub created_by: String,
}

impl PolicyRecord {
    /// A policy from the config file: a trailing-`*` pattern is a prefix match,
    /// other wildcards are globs (see docs/configuration.md).
    fn from_config(allow: Vec<String>, deny: Vec<String>, created_at: OffsetDateTime, created_by: String) -> Self {
        let policy = Policy {
            allow: allow.iter().map(|p| Pattern::from_config(p)).collect(),
            deny: deny.iter().map(|p| Pattern::from_config(p)).collect(),
        };
        PolicyRecord { allow, deny, policy, created_at, created_by }
    }

    /// A policy written through kes-go's `CreatePolicy` (2023 generation):
    /// a trailing `*` is a prefix, anything else is exact.
    pub fn from_new_api(allow: Vec<String>, deny: Vec<String>, created_by: String) -> Self {
        let policy = Policy {
            allow: allow.iter().map(|p| Pattern::new_generation(p)).collect(),
            deny: deny.iter().map(|p| Pattern::new_generation(p)).collect(),
        };
        PolicyRecord { allow, deny, policy, created_at: OffsetDateTime::now_utc(), created_by }
    }

    /// A policy written through the old (v0.19) API: every pattern is a glob.
    pub fn from_old_api(allow: Vec<String>, deny: Vec<String>, created_by: String) -> Self {
        let policy = Policy {
            allow: allow.iter().map(|p| Pattern::glob(p)).collect(),
            deny: deny.iter().map(|p| Pattern::glob(p)).collect(),
        };
        PolicyRecord { allow, deny, policy, created_at: OffsetDateTime::now_utc(), created_by }
    }
}

/// An identity's policy assignment.
#[derive(Debug, Clone)]
pub struct IdentityRecord {
    pub policy: String,
    pub created_at: OffsetDateTime,
    pub created_by: String,
}

/// Why a request is refused before it reaches a handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("not authorized: insufficient permissions")]
    Forbidden,
}

/// One consistent view of the admin, policies and identity assignments.
#[derive(Debug, Clone)]
pub struct Authority {
    admin: Option<String>,
    started_at: OffsetDateTime,
    policies: BTreeMap<String, Arc<PolicyRecord>>,
    identities: BTreeMap<String, IdentityRecord>,
}

impl Authority {
    /// Builds the state the config file describes.
    pub fn from_settings(settings: &Settings, started_at: OffsetDateTime) -> Authority {
        let admin = match &settings.admin {
            Admin::Identity(id) => Some(id.clone()),
            Admin::Disabled => None,
        };
        let by = admin.clone().unwrap_or_default();
        let mut policies = BTreeMap::new();
        let mut identities = BTreeMap::new();
        for (name, p) in &settings.policies {
            let record = PolicyRecord::from_config(p.allow.clone(), p.deny.clone(), started_at, by.clone());
            policies.insert(name.clone(), Arc::new(record));
            for id in &p.identities {
                identities.insert(
                    id.clone(),
                    IdentityRecord { policy: name.clone(), created_at: started_at, created_by: by.clone() },
                );
            }
        }
        Authority { admin, started_at, policies, identities }
    }

    /// The admin identity, if the admin is not disabled.
    pub fn admin(&self) -> Option<&str> {
        self.admin.as_deref()
    }

    /// When this server (and so the config's policies) started.
    pub fn started_at(&self) -> OffsetDateTime {
        self.started_at
    }

    pub fn is_admin(&self, identity: &str) -> bool {
        self.admin.as_deref() == Some(identity)
    }

    /// Decides whether `identity` may call `path` (no query string):
    /// the admin may do anything; others need a policy whose deny rules do not
    /// match and one of whose allow rules does.
    pub fn authorize(&self, identity: &str, path: &str) -> Result<(), AuthError> {
        if self.is_admin(identity) {
            return Ok(());
        }
        let allowed = self
            .identities
            .get(identity)
            .and_then(|rec| self.policies.get(&rec.policy))
            .is_some_and(|p| p.policy.is_allowed(path));
        if allowed {
            Ok(())
        } else {
            Err(AuthError::Forbidden)
        }
    }

    pub fn policy(&self, name: &str) -> Option<&Arc<PolicyRecord>> {
        self.policies.get(name)
    }

    pub fn policies(&self) -> impl Iterator<Item = (&String, &Arc<PolicyRecord>)> {
        self.policies.iter()
    }

    pub fn identity(&self, id: &str) -> Option<&IdentityRecord> {
        self.identities.get(id)
    }

    pub fn identities(&self) -> impl Iterator<Item = (&String, &IdentityRecord)> {
        self.identities.iter()
    }

    /// Old API: creates or replaces a policy.
    pub fn with_policy(&self, name: &str, record: PolicyRecord) -> Authority {
        let mut next = self.clone();
        next.policies.insert(name.to_string(), Arc::new(record));
        next
    }

    /// Old API: removes a policy (identities keep pointing at the name and are denied).
    pub fn without_policy(&self, name: &str) -> Authority {
        let mut next = self.clone();
        next.policies.remove(name);
        next
    }

    /// Old API: assigns `identity` to `policy`, replacing any earlier assignment.
    pub fn with_assignment(&self, identity: &str, policy: &str, by: &str) -> Authority {
        let mut next = self.clone();
        next.identities.insert(
            identity.to_string(),
            IdentityRecord {
                policy: policy.to_string(),
                created_at: OffsetDateTime::now_utc(),
                created_by: by.to_string(),
            },
        );
        next
    }

    /// Old API: forgets an identity.
    pub fn without_identity(&self, identity: &str) -> Authority {
        let mut next = self.clone();
        next.identities.remove(identity);
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{File, Settings};
    use std::path::Path;

    const ADMIN: &str = "3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22";

    fn authority(extra: &str) -> Authority {
        let text = format!("[admin]\nidentity = \"{ADMIN}\"\n[tls]\nkey = \"k\"\ncert = \"c\"\n{extra}");
        let settings = Settings::from_file(File::parse(Path::new("t"), &text).unwrap()).unwrap();
        Authority::from_settings(&settings, OffsetDateTime::now_utc())
    }

    #[test]
    fn admin_may_do_anything_and_strangers_nothing() {
        let a = authority("");
        assert!(a.authorize(ADMIN, "/v1/key/create/x").is_ok());
        assert_eq!(a.authorize(&"b".repeat(64), "/v1/key/create/x"), Err(AuthError::Forbidden));
    }

    #[test]
    fn deny_beats_allow_and_prefix_crosses_slashes() {
        let id = "a".repeat(64);
        let a = authority(&format!(
            "[policy.app]\nallow = [\"/v1/key/*\"]\ndeny = [\"/v1/key/delete/*\"]\nidentities = [\"{id}\"]\n"
        ));
        assert!(a.authorize(&id, "/v1/key/create/my-key").is_ok());
        assert_eq!(a.authorize(&id, "/v1/key/delete/my-key"), Err(AuthError::Forbidden));
        assert_eq!(a.authorize(&id, "/v1/policy/list/*"), Err(AuthError::Forbidden));
    }

    #[test]
    fn old_api_policies_are_globs() {
        let id = "c".repeat(64);
        let a = authority("")
            .with_policy("p", PolicyRecord::from_old_api(vec!["/v1/key/*".into()], vec![], ADMIN.into()))
            .with_assignment(&id, "p", ADMIN);
        // A glob `*` does not cross `/`.
        assert_eq!(a.authorize(&id, "/v1/key/create/x"), Err(AuthError::Forbidden));
        let a = a.with_policy("p", PolicyRecord::from_old_api(vec!["/v1/key/*/*".into()], vec![], ADMIN.into()));
        assert!(a.authorize(&id, "/v1/key/create/x").is_ok());
        assert_eq!(a.without_policy("p").authorize(&id, "/v1/key/create/x"), Err(AuthError::Forbidden));
    }
}
