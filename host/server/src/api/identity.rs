//! `/v1/identity/*`: describe, self-describe and list (both generations) and
//! the old generation's delete.

use serde::Serialize;

use super::error::ApiError;
use keyward_core::time_format::rfc3339;
use std::collections::BTreeMap;

use super::policy::Empty;
use super::{empty_reply, json_reply, ndjson_reply, Call, Reply};
use crate::auth::Authority;
use keyward_core::names;

fn identity_not_found() -> ApiError {
    ApiError::not_found("identity does not exist")
}

/// Identities are hex hashes; anything else cannot name one.
fn check_identity(call: &Call<'_>) -> Result<(), ApiError> {
    super::check_enclave(call)?;
    let id = call.name;
    if id.is_empty() || id.len() > 80 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::bad_request(names::invalid_identity(id)));
    }
    Ok(())
}

#[derive(Serialize)]
struct Describe<'a> {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    admin: bool,
    #[serde(skip_serializing_if = "str::is_empty")]
    policy: &'a str,
    created_at: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    created_by: &'a str,
}

pub fn describe(call: &Call<'_>) -> Result<Reply, ApiError> {
    check_identity(call)?;
    let auth = call.state.authority.load();
    let id = call.name.to_ascii_lowercase();
    if auth.is_admin(&id) {
        return json_reply(&Describe {
            admin: true,
            policy: "",
            created_at: rfc3339(auth.started_at()),
            created_by: "",
        });
    }
    let rec = auth.identity(&id).ok_or_else(identity_not_found)?;
    json_reply(&Describe {
        admin: false,
        policy: &rec.policy,
        created_at: rfc3339(rec.created_at),
        created_by: &rec.created_by,
    })
}

/// The self-description every Go client generation decodes without error:
/// old clients read `policy_name`, newer ones `allow`/`deny` objects; a
/// `policy` key would break one or the other, so there is none.
#[derive(Serialize)]
struct SelfDescription<'a> {
    identity: &'a str,
    admin: bool,
    #[serde(skip_serializing_if = "str::is_empty")]
    policy_name: &'a str,
    /// Left out rather than `""` when unknown: Go cannot parse `""` as a time.
    #[serde(skip_serializing_if = "String::is_empty")]
    created_at: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    created_by: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    allow: BTreeMap<&'a str, Empty>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    deny: BTreeMap<&'a str, Empty>,
}

/// Every caller may learn its own identity and policy (KES's newest code
/// answers 404 to non-admins by mistake; we do not copy that).
pub fn describe_self(call: &Call<'_>) -> Result<Reply, ApiError> {
    let auth = call.state.authority.load();
    let id = call.caller();
    let admin = auth.is_admin(id);
    let rec = auth.identity(id).filter(|_| !admin);
    let policy = rec.and_then(|r| auth.policy(&r.policy));
    let created_at = if admin { Some(auth.started_at()) } else { rec.map(|r| r.created_at) };
    json_reply(&SelfDescription {
        identity: id,
        admin,
        policy_name: rec.map(|r| r.policy.as_str()).unwrap_or_default(),
        created_at: created_at.map(rfc3339).unwrap_or_default(),
        created_by: rec.map(|r| r.created_by.as_str()).unwrap_or_default(),
        allow: patterns(policy.map(|p| &p.allow)),
        deny: patterns(policy.map(|p| &p.deny)),
    })
}

pub fn delete(call: &Call<'_>) -> Result<Reply, ApiError> {
    check_identity(call)?;
    let id = call.name.to_ascii_lowercase();
    let auth = call.state.authority.load();
    if auth.is_admin(&id) {
        return Err(ApiError::bad_request("identity is root"));
    }
    if auth.identity(&id).is_none() {
        return Err(identity_not_found());
    }
    call.state.authority.rcu(|a| a.without_identity(&id));
    empty_reply()
}

#[derive(Serialize)]
struct ListNew {
    identities: Vec<String>,
    continue_at: String,
}

#[derive(Serialize)]
struct ListOldLine<'a> {
    identity: &'a str,
    admin: bool,
    policy: &'a str,
    created_at: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    created_by: &'a str,
}

fn sorted_with_admin(auth: &Authority, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let mut ids: Vec<String> = auth.identities().map(|(id, _)| id.clone()).filter(|id| keep(id)).collect();
    if let Some(admin) = auth.admin() {
        if keep(admin) {
            ids.push(admin.to_string());
        }
    }
    ids.sort();
    ids.dedup();
    ids
}

pub fn list(call: &Call<'_>) -> Result<Reply, ApiError> {
    super::check_enclave(call)?;
    let auth = call.state.authority.load();
    let selector = call.selector()?;
    if call.wants_json {
        return json_reply(&ListNew {
            identities: sorted_with_admin(&auth, |id| selector.matches(id)),
            continue_at: String::new(),
        });
    }
    ndjson_reply(auth.identities().filter(|(id, _)| selector.matches(id)).map(|(id, r)| ListOldLine {
        identity: id,
        admin: false,
        policy: &r.policy,
        created_at: rfc3339(r.created_at),
        created_by: &r.created_by,
    }))
}

fn patterns(list: Option<&Vec<String>>) -> BTreeMap<&str, Empty> {
    list.into_iter().flatten().map(|p| (p.as_str(), Empty {})).collect()
}
