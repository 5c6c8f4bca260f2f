//! KES-compatible cryptography: secret keys, ciphertext formats, HMAC keys and
//! the value a keystore holds for one key name.
//!
//! Everything here follows API.md sections 5 and 6 (the MinIO KES wire and
//! storage formats), because keyward must decrypt ciphertexts produced by every
//! KES generation and read keystores written by KES:
//!
//! * [`SecretKey::encrypt`] emits the newest *raw* format
//!   (`sealed || iv(16) || nonce(12)`), [`SecretKey::decrypt`] also accepts the
//!   2023 msgpack and the pre-2023 JSON formats.
//! * [`StoredKey::encode`] writes the newest keystore value (base64 of a
//!   protobuf `KeyVersion`), [`StoredKey::decode`] also reads the legacy JSON.
//!
//! The module depends only on external crates, so it can be tested on its own.
//! Key material lives in [`zeroize::Zeroizing`] buffers and never appears in
//! `Debug` output or error messages.

mod ciphertext;
mod key;
mod stored;

#[cfg(test)]
mod tests;

use std::fmt;
use std::str::FromStr;

use zeroize::Zeroizing;

pub use key::{generate_data_key, HmacKey, SecretKey};
pub use stored::StoredKey;

/// Length in bytes of every secret key and HMAC key.
pub const KEY_LEN: usize = 32;

/// The cipher a [`SecretKey`] is used with.
///
/// KES calls this the key *type*; it is fixed when the key is created and is
/// stored with it, so the same key bytes are never used with two ciphers on
/// purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Per-message key `HMAC-SHA256(key, iv)`, then AES-256-GCM.
    Aes256,
    /// Per-message key `HChaCha20(key, iv)`, then IETF ChaCha20-Poly1305.
    ChaCha20,
}

impl Algorithm {
    /// The name the newest KES uses in API responses (`AES256` / `ChaCha20`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::Aes256 => "AES256",
            Algorithm::ChaCha20 => "ChaCha20",
        }
    }

    /// The name every Go client generation decodes: v0.22 knows only
    /// `AES256-GCM_SHA256` and `XCHACHA20-POLY1305`, kes-go and kms-go know
    /// those as well as `AES256` and `ChaCha20`. Key descriptions answer this.
    pub const fn client_name(self) -> &'static str {
        match self {
            Algorithm::Aes256 => "AES256-GCM_SHA256",
            Algorithm::ChaCha20 => "XCHACHA20-POLY1305",
        }
    }

    /// Parses every name any KES generation uses for a key type:
    /// `AES256`, `AES256-GCM_SHA256`, `ChaCha20`, `XCHACHA20-POLY1305`
    /// (case-sensitive, as in KES).
    ///
    /// The empty string is *not* accepted here; only the legacy stored-key JSON
    /// treats an empty algorithm as AES256, and [`StoredKey::decode`] handles
    /// that itself.
    pub fn parse(name: &str) -> Result<Self, CryptoError> {
        match name {
            "AES256" | "AES256-GCM_SHA256" => Ok(Algorithm::Aes256),
            "ChaCha20" | "XCHACHA20-POLY1305" => Ok(Algorithm::ChaCha20),
            _ => Err(CryptoError::UnsupportedAlgorithm),
        }
    }

    /// The protobuf `SecretKey.type` number (1 = AES256, 2 = ChaCha20).
    pub const fn proto_type(self) -> u32 {
        match self {
            Algorithm::Aes256 => 1,
            Algorithm::ChaCha20 => 2,
        }
    }

    /// Inverse of [`Algorithm::proto_type`]; `None` for unknown numbers.
    pub const fn from_proto_type(t: u32) -> Option<Self> {
        match t {
            1 => Some(Algorithm::Aes256),
            2 => Some(Algorithm::ChaCha20),
            _ => None,
        }
    }

    /// The algorithm KES picks for new keys when none is requested: AES256 if
    /// the CPU accelerates AES-GCM, otherwise ChaCha20 (constant-time and fast
    /// in software). A FIPS deployment should use [`Algorithm::Aes256`]
    /// unconditionally instead.
    pub fn platform_default() -> Self {
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        {
            if std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq") {
                return Algorithm::Aes256;
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("aes") && std::arch::is_aarch64_feature_detected!("pmull") {
                return Algorithm::Aes256;
            }
        }
        Algorithm::ChaCha20
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Algorithm {
    type Err = CryptoError;

    /// Same as [`Algorithm::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::parse(s)
    }
}

/// The single error every failed decryption returns.
///
/// KES deliberately does not say *why* a ciphertext was rejected (malformed,
/// truncated, wrong key, wrong context, tampered): one message for all cases
/// avoids giving an attacker an oracle. The message is the KES text, so the
/// HTTP layer can send it unchanged with status 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("decryption failed: ciphertext is not authentic")]
pub struct DecryptError;

/// Errors of this module other than decryption failures.
///
/// Messages never contain key bytes or the rejected input, so they are safe to
/// log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The algorithm name or protobuf type number is not a KES key type.
    #[error("crypto: unsupported key algorithm")]
    UnsupportedAlgorithm,
    /// A secret or HMAC key was not exactly [`KEY_LEN`] bytes long.
    #[error("crypto: invalid key length {0}, expected 32 bytes")]
    InvalidKeyLength(usize),
    /// The operating system's random number generator failed.
    #[error("crypto: random number generator failed")]
    Random,
    /// The AEAD refused to seal (only possible for plaintexts of many GiB).
    #[error("failed to encrypt plaintext")]
    Encrypt,
    /// A ciphertext could not be decrypted (see [`DecryptError`]).
    #[error(transparent)]
    Decrypt(#[from] DecryptError),
    /// A keystore value is neither valid legacy JSON nor valid base64 protobuf;
    /// the reason is a fixed description, never the value itself.
    #[error("crypto: invalid stored key: {0}")]
    InvalidStoredKey(&'static str),
}

/// Standard base64 as Go's `base64.StdEncoding` decodes it: padding required,
/// non-zero trailing bits tolerated. (Go additionally skips `\r` and `\n`,
/// which [`go_base64_decode`] handles.) Encoding output is identical to the
/// `STANDARD` engine.
const GO_BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);

/// Decodes base64 like Go's `base64.StdEncoding.Decode` (used by KES for JSON
/// `[]byte` fields and for keystore values). The result and any intermediate
/// copy are zeroized, since the input may be key material.
fn go_base64_decode(input: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    use base64::Engine as _;
    // Decode into a buffer that already has the needed capacity, so no
    // reallocation leaves an unwiped copy behind (also on error).
    let decode = |data: &[u8]| {
        let mut out = Zeroizing::new(Vec::with_capacity(base64::decoded_len_estimate(data.len())));
        GO_BASE64.decode_vec(data, &mut out).ok()?;
        Some(out)
    };
    if input.iter().any(|&c| c == b'\r' || c == b'\n') {
        let mut stripped = Zeroizing::new(Vec::with_capacity(input.len()));
        stripped.extend(input.iter().copied().filter(|&c| c != b'\r' && c != b'\n'));
        decode(&stripped[..])
    } else {
        decode(input)
    }
}
