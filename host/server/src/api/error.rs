//! The one place where errors become HTTP statuses and `{"message": …}` bodies.

use std::borrow::Cow;

use http::StatusCode;

use crate::auth::AuthError;
use crate::keys::KeyError;
use crate::tls::IdentityError;
use keyward_core::crypto::CryptoError;
use keyward_core::keystore::StoreError;

/// An error answer: a status and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: Cow<'static, str>,
    /// For 405: the method the route expects (sent in `Accept`/`Allow`).
    pub allow: Option<&'static str>,
    /// What the error log says besides the message, never sent to the
    /// client: a keystore's own account of an internal failure.
    pub log_detail: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError { status, message: message.into(), allow: None, log_detail: None }
    }

    pub fn bad_request(message: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<Cow<'static, str>>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// A route that does not exist.
    pub fn no_route() -> ApiError {
        ApiError::not_found("404 page not found")
    }

    pub fn method_not_allowed(got: &str, expected: &'static str) -> ApiError {
        ApiError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: format!("received method '{got}' expected '{expected}'").into(),
            allow: Some(expected),
            log_detail: None,
        }
    }

    /// A request body that is malformed, of the wrong shape or too large.
    pub fn invalid_body() -> ApiError {
        ApiError::bad_request("invalid request body")
    }

    pub fn timeout() -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "request timeout exceeded")
    }

    pub fn not_authentic() -> ApiError {
        ApiError::bad_request("decryption failed: ciphertext is not authentic")
    }

    /// The JSON body. Byte-compatible with the current KES generation:
    /// `{"message":` + JSON string + newline + `}`.
    pub fn body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.message.len() + 16);
        out.extend_from_slice(b"{\"message\":");
        // Serialising a str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, self.message.as_ref());
        out.extend_from_slice(b"\n}");
        out
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        match e {
            AuthError::Forbidden => ApiError::new(StatusCode::FORBIDDEN, e.to_string()),
        }
    }
}

impl From<IdentityError> for ApiError {
    fn from(e: IdentityError) -> ApiError {
        ApiError::bad_request(e.to_string())
    }
}

impl From<CryptoError> for ApiError {
    fn from(_: CryptoError) -> ApiError {
        ApiError::not_authentic()
    }
}

/// Keystore failures: 502 when the store answered with an error, 503 when it
/// could not be reached or timed out (so clients and load balancers retry).
fn store_status(e: &StoreError) -> StatusCode {
    match e {
        StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        StoreError::Invalid(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::BAD_GATEWAY,
    }
}

impl From<KeyError> for ApiError {
    fn from(e: KeyError) -> ApiError {
        match e {
            KeyError::NotFound => ApiError::not_found("key does not exist"),
            KeyError::Exists => ApiError::bad_request("key already exists"),
            KeyError::Store { op, ref source } => {
                let detail = match source {
                    StoreError::Unavailable(m) => format!(": keystore unavailable: {m}"),
                    StoreError::Invalid(m) => format!(": {m}"),
                    StoreError::Internal(_) => ": keystore error".to_string(),
                    _ => String::new(),
                };
                let mut error = ApiError::new(store_status(source), format!("failed to {op} key{detail}"));
                if let StoreError::Internal(m) = source {
                    error.log_detail = Some(m.clone());
                }
                error
            }
            KeyError::Corrupt { name, reason } => ApiError {
                log_detail: Some(format!("stored key '{name}' cannot be decoded: {reason}")),
                ..ApiError::new(StatusCode::BAD_GATEWAY, "failed to read key")
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_kes_shaped_json() {
        let e = ApiError::bad_request("a \"quoted\" message");
        assert_eq!(e.body(), b"{\"message\":\"a \\\"quoted\\\" message\"\n}");
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["message"], "a \"quoted\" message");
    }

    #[test]
    fn store_failures_map_to_gateway_statuses() {
        let e: ApiError = KeyError::Store { op: "read", source: StoreError::Unavailable("timed out".into()) }.into();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.message, "failed to read key: keystore unavailable: timed out");
        let e: ApiError = KeyError::Store { op: "create", source: StoreError::Internal("trap".into()) }.into();
        assert_eq!(e.status, StatusCode::BAD_GATEWAY);
        // The keystore's own words go to the error log, not to the client.
        assert_eq!(e.message, "failed to create key: keystore error");
        assert_eq!(e.log_detail.as_deref(), Some("trap"));
    }
}
