//! One authorized call as a handler sees it, and how a listing argument
//! selects names.

use bytes::Bytes;

use super::error::ApiError;
use super::go_json;
use super::routes::Route;
use crate::state::State;

/// How a listing argument selects names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    All,
    Prefix(String),
    Glob(String),
}

impl Selector {
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Selector::All => true,
            Selector::Prefix(p) => name.starts_with(p.as_str()),
            Selector::Glob(g) => crate::auth::glob::glob_match(g, name),
        }
    }

    /// The prefix a store can narrow its listing by.
    pub fn prefix(&self) -> &str {
        match self {
            Selector::Prefix(p) => p,
            _ => "",
        }
    }
}

/// One authorized call, as a handler sees it.
pub struct Call<'a> {
    pub state: &'a State,
    pub route: &'static Route,
    /// The resource name after the route prefix (percent-decoded).
    pub name: &'a str,
    /// The caller's identity (absent only on routes that need none).
    pub identity: Option<&'a str>,
    /// Whether a listing should be JSON (`Accept: application/json`).
    /// No Go client sends `Accept`; all of them read ndjson.
    pub wants_json: bool,
    /// The request has an `Accept` header (the Go KES clients send none).
    pub accepts_any: bool,
    /// The `Kes-Enclave` header named an enclave other than the default.
    pub other_enclave: bool,
    pub query: Option<&'a str>,
    pub body: Bytes,
}

impl Call<'_> {
    /// The identity, for routes that require one.
    pub fn caller(&self) -> &str {
        self.identity.unwrap_or_default()
    }

    /// Parses the listing argument.
    ///
    /// JSON listings (new generation) take a prefix, optionally ending in `*`.
    /// ndjson listings take `*`/empty for all, a glob if the pattern has glob
    /// characters (old generation), and otherwise a prefix — what the newer Go
    /// clients, which also read ndjson, mean by it.
    pub fn selector(&self) -> Result<Selector, ApiError> {
        let p = self.name;
        if self.wants_json {
            if !keyward_core::names::valid_pattern_new(p) {
                return Err(ApiError::bad_request(keyward_core::names::invalid_listing_pattern(p)));
            }
            let prefix = p.strip_suffix('*').unwrap_or(p);
            return Ok(if prefix.is_empty() { Selector::All } else { Selector::Prefix(prefix.to_string()) });
        }
        if p.is_empty() || p == "*" {
            return Ok(Selector::All);
        }
        keyward_core::names::validate_pattern_old(p).map_err(|e| ApiError::bad_request(e.to_string()))?;
        if p.contains(['*', '?', '[', '\\']) {
            Ok(Selector::Glob(p.to_string()))
        } else {
            Ok(Selector::Prefix(p.to_string()))
        }
    }

    /// Decodes a JSON object body, matching field names as Go does
    /// ([`go_json`]); any malformed body is the same 400.
    ///
    /// serde would also fill a struct from a JSON array; Go (and so KES)
    /// refuses that, and so do we.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        if self.body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::invalid_body());
        }
        self.json_any()
    }

    /// Decodes any JSON body (arrays included), matching field names as Go
    /// does.
    pub fn json_any<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        go_json::from_slice(&self.body).map_err(|_| ApiError::invalid_body())
    }
}
