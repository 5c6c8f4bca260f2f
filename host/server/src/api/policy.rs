//! `/v1/policy/*`: describe, read and list (both generations) and the old
//! generation's write, assign and delete. Policies written through the old API
//! live in memory until the next restart or SIGHUP, as in KES.

use std::collections::BTreeMap;

use http::StatusCode;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::{empty_reply, json_reply, ndjson_reply, Call, Reply};
use crate::auth::pattern::Pattern;
use crate::auth::PolicyRecord;
use keyward_core::names;
use keyward_core::time_format::rfc3339;

fn check_name(call: &Call<'_>) -> Result<(), ApiError> {
    super::check_enclave(call)?;
    if names::valid_name_new(call.name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(names::invalid_policy_name(call.name)))
    }
}

/// The old-only routes (write, assign, delete) keep the old rules and messages.
fn check_old_name(call: &Call<'_>) -> Result<(), ApiError> {
    super::check_enclave(call)?;
    names::validate_name_old(call.name.trim()).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn policy_not_found() -> ApiError {
    ApiError::not_found("policy does not exist")
}

#[derive(Serialize)]
struct Describe<'a> {
    name: &'a str,
    created_at: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    created_by: &'a str,
}

pub fn describe(call: &Call<'_>) -> Result<Reply, ApiError> {
    check_name(call)?;
    let auth = call.state.authority.load();
    let p = auth.policy(call.name).ok_or_else(policy_not_found)?;
    json_reply(&Describe { name: call.name, created_at: rfc3339(p.created_at), created_by: &p.created_by })
}

/// New shape: patterns as keys of JSON objects (`{"<pattern>": {}}`).
#[derive(Serialize)]
pub struct ReadNew<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    allow: BTreeMap<&'a str, Empty>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    deny: BTreeMap<&'a str, Empty>,
    created_at: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    created_by: &'a str,
}

#[derive(Serialize)]
pub struct Empty {}

impl<'a> ReadNew<'a> {
    pub fn of(name: &'a str, p: &'a PolicyRecord) -> Self {
        ReadNew {
            name,
            allow: p.allow.iter().map(|s| (s.as_str(), Empty {})).collect(),
            deny: p.deny.iter().map(|s| (s.as_str(), Empty {})).collect(),
            created_at: rfc3339(p.created_at),
            created_by: &p.created_by,
        }
    }
}

pub fn read(call: &Call<'_>) -> Result<Reply, ApiError> {
    check_name(call)?;
    let auth = call.state.authority.load();
    let p = auth.policy(call.name).ok_or_else(policy_not_found)?;
    // Old clients want arrays, newer ones objects; nothing in the request
    // tells them apart, and every client since 2023 needs objects.
    json_reply(&ReadNew::of(call.name, p))
}

/// A policy as the Go clients send it: `{"Allow": [...], "Deny": [...]}`
/// from v0.19-v0.22 (untagged Go fields, matched case-insensitively), or
/// `{"Allow": {"<pattern>": {}}, ...}` from kes-go's `CreatePolicy`. Other
/// fields (`Info`, `CreatedAt`, `CreatedBy`) are ignored, as KES ignored them.
#[derive(Deserialize)]
struct WriteRequest {
    #[serde(default)]
    allow: Patterns,
    #[serde(default)]
    deny: Patterns,
}

/// A list of patterns, or the keys of an object; `null` is none.
#[derive(Default)]
struct Patterns(Vec<String>);

impl<'de> Deserialize<'de> for Patterns {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Shape {
            List(Vec<String>),
            Map(BTreeMap<String, serde::de::IgnoredAny>),
        }
        Ok(Patterns(match Option::<Shape>::deserialize(d)? {
            None => Vec::new(),
            Some(Shape::List(list)) => list,
            Some(Shape::Map(map)) => map.into_keys().collect(),
        }))
    }
}

pub fn write(call: &Call<'_>) -> Result<Reply, ApiError> {
    check_old_name(call)?;
    let req: WriteRequest = call.json()?;
    // `/v1/policy/create` is kes-go's, of the 2023 generation: its patterns
    // are prefixes (trailing `*`) or exact; `/v1/policy/write` is v0.19's,
    // whose patterns are globs.
    let new_generation = call.route.path == "/v1/policy/create/";
    let compile = if new_generation { Pattern::new_generation } else { Pattern::glob };
    for pattern in req.allow.0.iter().chain(&req.deny.0) {
        if let Some(why) = compile(pattern).unmatchable() {
            return Err(ApiError::bad_request(format!("policy pattern '{pattern}' can never match: {why}")));
        }
    }
    let (allow, deny, by) = (req.allow.0, req.deny.0, call.caller().to_string());
    let record = if new_generation {
        PolicyRecord::from_new_api(allow, deny, by)
    } else {
        PolicyRecord::from_old_api(allow, deny, by)
    };
    call.state.authority.rcu(|a| a.with_policy(call.name, record.clone()));
    empty_reply()
}

#[derive(Deserialize)]
struct AssignRequest {
    #[serde(default)]
    identity: String,
}

pub fn assign(call: &Call<'_>) -> Result<Reply, ApiError> {
    check_old_name(call)?;
    let req: AssignRequest = call.json()?;
    let id = req.identity.trim().to_ascii_lowercase();
    if id.is_empty() {
        return Err(ApiError::bad_request("identity is unknown"));
    }
    if id == call.caller() {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "identity cannot assign policy to itself"));
    }
    if call.state.authority.load().is_admin(&id) {
        return Err(ApiError::bad_request("identity is root"));
    }
    call.state.authority.rcu(|a| a.with_assignment(&id, call.name, call.caller()));
    empty_reply()
}

pub fn delete(call: &Call<'_>) -> Result<Reply, ApiError> {
    check_old_name(call)?;
    call.state.authority.rcu(|a| a.without_policy(call.name));
    empty_reply()
}

#[derive(Serialize)]
struct ListNew {
    names: Vec<String>,
    continue_at: String,
}

#[derive(Serialize)]
struct ListOldLine<'a> {
    name: &'a str,
    created_at: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    created_by: &'a str,
}

pub fn list(call: &Call<'_>) -> Result<Reply, ApiError> {
    super::check_enclave(call)?;
    let auth = call.state.authority.load();
    let selector = call.selector()?;
    if call.wants_json {
        let names = auth.policies().filter(|(n, _)| selector.matches(n)).map(|(n, _)| n.clone()).collect();
        return json_reply(&ListNew { names, continue_at: String::new() });
    }
    ndjson_reply(auth.policies().filter(|(n, _)| selector.matches(n)).map(|(n, p)| ListOldLine {
        name: n,
        created_at: rfc3339(p.created_at),
        created_by: &p.created_by,
    }))
}
