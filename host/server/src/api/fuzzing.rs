//! Entry point for the fuzz targets in `fuzz/` (cargo-fuzz); not an API.
//!
//! [`parse_bodies`] decodes one body as every request type of `key.rs`, the
//! way the handlers do: object bodies through the same check as
//! [`Call::json`](super::Call::json) (first non-whitespace byte `{`, then
//! serde_json with Go's field matching), the bulk-decrypt array as [`Call::json_any`](super::Call::json_any),
//! and `generate` also accepting an empty body.

use serde::de::DeserializeOwned;

use super::key::{ContextRequest, DecryptRequest, EncryptRequest, HmacRequest, ImportRequest};

/// Which request types accepted the body.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    pub import: bool,
    pub generate: bool,
    pub encrypt: bool,
    pub decrypt: bool,
    /// Number of ciphertexts in a bulk-decrypt array.
    pub bulk_decrypt: Option<usize>,
    pub hmac: bool,
}

/// `Call::json`: refuses anything but a JSON object, then serde_json.
fn object<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    any(body)
}

/// `Call::json_any`.
fn any<T: DeserializeOwned>(body: &[u8]) -> Option<T> {
    super::go_json::from_slice(body).ok()
}

/// Decodes `body` as each `/v1/key/*` request type.
pub fn parse_bodies(body: &[u8]) -> Decoded {
    Decoded {
        import: object::<ImportRequest>(body).is_some(),
        generate: body.is_empty() || object::<ContextRequest>(body).is_some(),
        encrypt: object::<EncryptRequest>(body).is_some(),
        decrypt: object::<DecryptRequest>(body).is_some(),
        bulk_decrypt: any::<Vec<DecryptRequest>>(body).map(|v| v.len()),
        hmac: object::<HmacRequest>(body).is_some(),
    }
}
