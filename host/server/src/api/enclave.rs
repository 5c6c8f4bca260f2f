//! Enclaves: only the default one exists, however a client names one.

use super::error::ApiError;
use super::Call;

/// The header kes-go (v0.2) names an enclave with; v0.22 uses the
/// `enclave` query parameter instead.
pub(super) const KES_ENCLAVE: &str = "kes-enclave";

pub(super) fn is_default_enclave(name: &[u8]) -> bool {
    name.is_empty() || name == b"default"
}

/// Handles the `enclave` query parameter and the `Kes-Enclave` header alike:
/// only the default enclave exists.
pub fn check_enclave(call: &Call<'_>) -> Result<(), ApiError> {
    let in_query =
        || call.query.is_some_and(|q| form_pairs(q).any(|(k, v)| k == "enclave" && !is_default_enclave(v.as_bytes())));
    if call.other_enclave || in_query() {
        return Err(ApiError::not_found("enclave does not exist"));
    }
    Ok(())
}

/// Splits a query string into decoded key/value pairs.
pub fn form_pairs(q: &str) -> impl Iterator<Item = (String, String)> + '_ {
    q.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
        (dec(k), dec(v))
    })
}
