//! Building the WIT `error` values, and Vault's error answers.
//!
//! Every message starts with `vault: `. None ever carries the token, the
//! AppRole secret, a JWT or a stored value: requests are described by method
//! and path, and Vault's own error strings (which name paths and reasons, not
//! request bodies) are cut to a bounded length.

use keyward_sdk::Error;

/// The longest piece of a Vault error answer quoted in a message.
const MAX_QUOTED: usize = 300;

pub fn invalid(message: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("vault: {message}"))
}

pub fn unavailable(message: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("vault: {message}"))
}

pub fn internal(message: impl std::fmt::Display) -> Error {
    Error::Internal(format!("vault: {message}"))
}

/// Vault's `{"errors": [...]}`, joined, trimmed and bounded; empty when the
/// body has none.
pub fn vault_errors(body: &serde_json::Value) -> String {
    let Some(errors) = body.get("errors").and_then(|e| e.as_array()) else {
        return String::new();
    };
    let joined = errors
        .iter()
        .filter_map(|e| e.as_str())
        // Vault wraps some as "1 error occurred:\n\t* permission denied\n\n".
        .map(|e| e.replace("\n\t* ", " ").replace('\n', " ").trim().to_string())
        .collect::<Vec<_>>()
        .join("; ");
    bounded(&joined)
}

/// `text` cut to [`MAX_QUOTED`] bytes (on a character boundary), control
/// characters replaced.
pub fn bounded(text: &str) -> String {
    let mut out: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if out.len() > MAX_QUOTED {
        let mut end = MAX_QUOTED;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
        out.push('…');
    }
    out
}

/// Maps a Vault answer that is not a success, for the request described by
/// `what` (e.g. `GET kv/my-key`). 403 and 404 are the caller's to interpret
/// first; what reaches here is final.
pub fn status_error(what: &str, status: u16, body: &serde_json::Value) -> Error {
    let errors = vault_errors(body);
    let detail = if errors.is_empty() { String::new() } else { format!(": {errors}") };
    match status {
        503 if errors.contains("sealed") => unavailable(format!("{what}: the server is sealed")),
        429 | 500..=599 => unavailable(format!("{what}: status {status}{detail}")),
        // A K/V v2 mount that was just created (or upgraded from v1) refuses
        // requests with a 400 until its upgrade finishes: a wait, not a bad
        // request.
        400 if errors.contains("upgrade from non-versioned to versioned") => {
            unavailable(format!("{what}: the K/V engine is still upgrading to version 2 (400){detail}"))
        }
        412 => unavailable(format!("{what}: the node has not caught up with an earlier write (412){detail}")),
        403 => unavailable(format!("{what}: permission denied (403){detail}: check the token's policies")),
        400 => invalid(format!("{what}: refused (400){detail}")),
        404 if errors.contains("no handler for route") => {
            internal(format!("{what}: nothing is mounted there (404){detail}: check engine and namespace"))
        }
        _ => internal(format!("{what}: status {status}{detail}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_joined_and_bounded() {
        let body = serde_json::json!({"errors": ["1 error occurred:\n\t* permission denied\n\n", "x"]});
        assert_eq!(vault_errors(&body), "1 error occurred: permission denied; x");
        let long = "é".repeat(400);
        assert!(bounded(&long).len() <= MAX_QUOTED + 3);
    }

    #[test]
    fn a_kv_v2_mount_still_upgrading_is_unavailable_not_a_bad_request() {
        let upgrading = serde_json::json!({"errors": ["Waiting for the primary to upgrade from non-versioned to versioned data. This backend will be unavailable for a brief period and will resume service when the primary is finished."]});
        assert!(matches!(status_error("GET kv2/data/k", 400, &upgrading), Error::Unavailable(_)));
        let bad = serde_json::json!({"errors": ["invalid request"]});
        assert!(matches!(status_error("GET kv2/data/k", 400, &bad), Error::Invalid(_)));
    }
}
