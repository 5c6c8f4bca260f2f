//! The value a keystore holds for one key name (API.md section 6).
//!
//! Newest format: base64 (standard, padded) of the protobuf message
//! `miniohq.kms.KeyVersion`:
//!
//! ```text
//! KeyVersion { 1: SecretKey{1: bytes key, 2: uint32 type},
//!              2: HMACKey{1: bytes key, 2: uint32 hash /* 1 = SHA256 */},
//!              3: google.protobuf.Timestamp{1: int64 seconds, 2: int32 nanos},
//!              4: string created_by }
//! ```
//!
//! Legacy format (KES <= 2023): a JSON object
//! `{"version"?, "bytes", "algorithm"?, "created_at"?, "created_by"?}` without an
//! HMAC key. Like KES, a value that is valid JSON is always parsed as the
//! legacy format; anything else must be base64 protobuf.

use base64::Engine as _;
use prost::bytes::Bytes;
use prost::Message;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::ciphertext::{json_field, json_str};
use super::{go_base64_decode, Algorithm, CryptoError, HmacKey, SecretKey};

/// protobuf `HMACKey.hash` value for SHA-256, the only hash KES supports.
const HASH_SHA256: u32 = 1;

const NANOS_PER_SECOND: i128 = 1_000_000_000;

/// One stored key version: what KES keeps per key name.
#[derive(Clone, Debug)]
pub struct StoredKey {
    /// The encryption key (and its algorithm).
    pub key: SecretKey,
    /// The key for `/v1/key/hmac`. `None` for keys created before KES stored
    /// HMAC keys (legacy JSON values); KES answers 409 for those.
    pub hmac_key: Option<HmacKey>,
    /// Creation time; `None` if the stored value has none (legacy JSON without
    /// `created_at`, or protobuf without field 3).
    pub created_at: Option<OffsetDateTime>,
    /// Identity of the creator; empty if unknown.
    pub created_by: String,
}

/// The secret fields wipe themselves on drop; the assertion below keeps it
/// so if a field's type changes.
impl ZeroizeOnDrop for StoredKey {}

const _: () = {
    fn zeroize_on_drop<T: ZeroizeOnDrop>(_: &T) {}
    #[allow(dead_code)]
    fn secret_fields_zeroize_on_drop(k: &StoredKey) {
        zeroize_on_drop(&k.key);
        zeroize_on_drop(&k.hmac_key);
    }
};

impl StoredKey {
    /// Creates a new key version as `/v1/key/create` does: a random secret key
    /// of `algorithm`, a random HMAC key, creation time now (UTC).
    ///
    /// # Panics
    /// Only if the OS random number generator is unavailable.
    pub fn generate(algorithm: Algorithm, created_by: impl Into<String>) -> Self {
        Self::new(SecretKey::generate(algorithm), created_by)
    }

    /// Wraps an existing secret key as `/v1/key/import` does: KES 2024+ also
    /// generates a fresh HMAC key for imported keys, and stamps the time now.
    ///
    /// # Panics
    /// Only if the OS random number generator is unavailable.
    pub fn new(key: SecretKey, created_by: impl Into<String>) -> Self {
        StoredKey {
            key,
            hmac_key: Some(HmacKey::generate()),
            created_at: Some(OffsetDateTime::now_utc()),
            created_by: created_by.into(),
        }
    }

    /// Encodes in the newest KES keystore format (base64 of protobuf
    /// `KeyVersion`), byte-identical to what KES writes for the same values.
    ///
    /// KES itself refuses to encode a version without an HMAC key; here the
    /// HMAC field is simply omitted in that case (and `created_at` is omitted
    /// when `None`), so that re-encoding a legacy value never fails.
    /// [`StoredKey::decode`] reads such values back, but KES would not, so only
    /// keys created with [`StoredKey::generate`]/[`StoredKey::new`] should be
    /// written to a keystore shared with KES.
    ///
    /// The returned base64 text contains the key, so it comes in a buffer
    /// that is wiped on drop, as are all intermediate buffers.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let pb = PbKeyVersion {
            key: Some(PbSecretKey {
                key: zeroizing_bytes(self.key.bytes()),
                r#type: self.key.algorithm().proto_type(),
            }),
            hmac_key: self.hmac_key.as_ref().map(|h| PbHmacKey { key: zeroizing_bytes(h.bytes()), hash: HASH_SHA256 }),
            created_at: self.created_at.map(timestamp_from_time),
            created_by: self.created_by.clone(),
        };
        let encoded = Zeroizing::new(pb.encode_to_vec());
        // `encode` allocates the exact output length up front, so the text
        // is never reallocated and this is its only copy.
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&encoded[..]).into_bytes())
    }

    /// Decodes a keystore value in either format (see the module docs).
    ///
    /// Like KES's `ParseKeyVersion`: valid JSON selects the legacy format
    /// (an empty or absent `algorithm` means AES256); otherwise the value must
    /// be base64 protobuf (`\r`/`\n` are ignored, as Go's decoder does). The
    /// secret key must be 32 bytes of type 1 or 2; an HMAC key, if present,
    /// must be 32 bytes with hash 1. Unlike KES, a protobuf value without an
    /// HMAC key is accepted (as `hmac_key: None`).
    ///
    /// Errors never include the value. Decoded key bytes only ever live in
    /// zeroizing buffers.
    pub fn decode(value: &[u8]) -> Result<Self, CryptoError> {
        match serde_json::from_slice::<Value>(value) {
            Ok(json) => decode_json(&WipeOnDrop(json).0),
            Err(_) => decode_protobuf(value),
        }
    }
}

fn invalid(reason: &'static str) -> CryptoError {
    CryptoError::InvalidStoredKey(reason)
}

fn decode_json(json: &Value) -> Result<StoredKey, CryptoError> {
    let obj = json.as_object().ok_or(invalid("legacy JSON value is not an object"))?;
    let bytes = json_str(json_field(obj, "bytes")).ok_or(invalid("'bytes' is not a string"))?;
    let key_bytes = match bytes {
        None => Zeroizing::new(Vec::new()),
        Some(b64) => go_base64_decode(b64.as_bytes()).ok_or(invalid("'bytes' is not valid base64"))?,
    };
    let algorithm = match json_str(json_field(obj, "algorithm")).ok_or(invalid("'algorithm' is not a string"))? {
        None | Some("") => Algorithm::Aes256,
        Some(name) => Algorithm::parse(name)?,
    };
    let key = SecretKey::from_bytes(algorithm, &key_bytes)?;
    // Go's time.Time: null/absent leaves the zero time, any string must be
    // RFC 3339 (so "" is an error, as in KES).
    let created_at = match json_str(json_field(obj, "created_at")).ok_or(invalid("'created_at' is not a string"))? {
        None => None,
        Some(s) => {
            let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| invalid("'created_at' is not an RFC 3339 time"))?;
            // `9999-12-31T23:59:59-01:00` parses, but its instant is in year
            // 10000 UTC, which `encode` would write as a timestamp `decode`
            // then refuses (found by fuzz/stored_key).
            if t.checked_to_offset(time::UtcOffset::UTC).is_none() {
                return Err(invalid("timestamp out of range"));
            }
            Some(t)
        }
    };
    let created_by = json_str(json_field(obj, "created_by"))
        .ok_or(invalid("'created_by' is not a string"))?
        .unwrap_or_default()
        .to_owned();
    Ok(StoredKey { key, hmac_key: None, created_at, created_by })
}

fn decode_protobuf(value: &[u8]) -> Result<StoredKey, CryptoError> {
    let raw = go_base64_decode(value).ok_or(invalid("neither JSON nor base64"))?;
    // Decoding from a `Bytes` that owns the zeroizing buffer makes the key
    // fields zero-copy slices of it, so no unwiped copy is ever made.
    let pb = PbKeyVersion::decode(Bytes::from_owner(raw)).map_err(|_| invalid("invalid protobuf KeyVersion"))?;
    let secret = pb.key.as_ref().ok_or(invalid("missing secret key"))?;
    let algorithm = Algorithm::from_proto_type(secret.r#type).ok_or(CryptoError::UnsupportedAlgorithm)?;
    let key = SecretKey::from_bytes(algorithm, &secret.key)?;
    let hmac_key = match &pb.hmac_key {
        None => None,
        Some(h) if h.hash != HASH_SHA256 => return Err(invalid("unsupported HMAC hash")),
        Some(h) => Some(HmacKey::from_bytes(&h.key)?),
    };
    let created_at = pb.created_at.map(time_from_timestamp).transpose()?;
    Ok(StoredKey { key, hmac_key, created_at, created_by: pb.created_by.clone() })
}

/// Copies key bytes into a `Bytes` whose storage is wiped when released.
fn zeroizing_bytes(key: &[u8; 32]) -> Bytes {
    Bytes::from_owner(Zeroizing::new(*key))
}

fn timestamp_from_time(t: OffsetDateTime) -> PbTimestamp {
    let n = t.unix_timestamp_nanos();
    // `time` limits years to +-9999, so the seconds always fit in i64 and the
    // Euclidean remainder is in 0..1e9 as protobuf requires.
    PbTimestamp { seconds: n.div_euclid(NANOS_PER_SECOND) as i64, nanos: n.rem_euclid(NANOS_PER_SECOND) as i32 }
}

/// Like Go's `Timestamp.AsTime` (which normalises out-of-range nanos), but a
/// time outside `time`'s range is an error rather than a wrap-around.
fn time_from_timestamp(ts: PbTimestamp) -> Result<OffsetDateTime, CryptoError> {
    let n = i128::from(ts.seconds) * NANOS_PER_SECOND + i128::from(ts.nanos);
    OffsetDateTime::from_unix_timestamp_nanos(n).map_err(|_| invalid("timestamp out of range"))
}

/// Wipes every string of a parsed JSON value when dropped: the legacy format
/// holds the base64 key in the `bytes` string.
struct WipeOnDrop(Value);

impl Drop for WipeOnDrop {
    fn drop(&mut self) {
        fn wipe(v: &mut Value) {
            match v {
                Value::String(s) => s.zeroize(),
                Value::Array(a) => a.iter_mut().for_each(wipe),
                Value::Object(m) => m.values_mut().for_each(wipe),
                _ => {}
            }
        }
        wipe(&mut self.0);
    }
}

// ---- protobuf messages (package miniohq.kms), derived by hand: no protoc ----
// Debug is implemented manually so that key bytes are never printed.

#[derive(Clone, PartialEq, Message)]
#[prost(skip_debug)]
struct PbKeyVersion {
    #[prost(message, optional, tag = "1")]
    key: Option<PbSecretKey>,
    #[prost(message, optional, tag = "2")]
    hmac_key: Option<PbHmacKey>,
    #[prost(message, optional, tag = "3")]
    created_at: Option<PbTimestamp>,
    #[prost(string, tag = "4")]
    created_by: String,
}

#[derive(Clone, PartialEq, Message)]
#[prost(skip_debug)]
struct PbSecretKey {
    #[prost(bytes = "bytes", tag = "1")]
    key: Bytes,
    #[prost(uint32, tag = "2")]
    r#type: u32,
}

#[derive(Clone, PartialEq, Message)]
#[prost(skip_debug)]
struct PbHmacKey {
    #[prost(bytes = "bytes", tag = "1")]
    key: Bytes,
    #[prost(uint32, tag = "2")]
    hash: u32,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, Message)]
struct PbTimestamp {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

macro_rules! redacted_debug {
    ($($t:ty),*) => {$(
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($t), "{<redacted>}"))
            }
        }
    )*};
}
redacted_debug!(PbKeyVersion, PbSecretKey, PbHmacKey);

#[cfg(test)]
mod fuzz_regressions {
    use super::*;

    /// fuzz/stored_key: a legacy value whose `created_at` is in year 10000
    /// UTC was accepted, but re-encoding it produced a value `decode` refused.
    #[test]
    fn created_at_beyond_year_9999_utc_is_refused() {
        let v = br#"{"bytes":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","created_at":"9999-12-31T23:59:59-23:59"}"#;
        assert_eq!(StoredKey::decode(v).unwrap_err(), invalid("timestamp out of range"));
        // The latest representable instants still round-trip.
        for t in ["9999-12-31T23:59:59Z", "9999-12-31T23:59:59+01:00", "0000-01-01T00:00:00+23:59"] {
            let v = format!(r#"{{"bytes":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","created_at":"{t}"}}"#);
            let key = StoredKey::decode(v.as_bytes()).unwrap_or_else(|e| panic!("{t}: {e}"));
            let back = StoredKey::decode(&key.encode()).unwrap();
            assert_eq!(back.created_at, key.created_at, "{t}");
        }
    }
}
