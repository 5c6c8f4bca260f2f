//! Optional sealing of stored values (`[keystore] seal = "file:PATH" | "env:VAR"`).
//!
//! With a seal key the host wraps every encoded key with AES-256-GCM before it
//! reaches the keystore, so a third-party backend only ever sees ciphertext.
//! The key name is the associated data: a sealed value copied to another name
//! does not open.
//!
//! Sealed value layout: `b"kwseal1\0"` (8) || nonce (12) || ciphertext || tag (16).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use rand::RngCore;
use zeroize::{ZeroizeOnDrop, Zeroizing};

const MAGIC: &[u8; 8] = b"kwseal1\0";
const NONCE: usize = 12;

/// Why a seal key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The setting is neither `file:` nor `env:`. It carries only a
    /// description of what was given, never the value: a seal key pasted in
    /// place of a reference is the likeliest way to get here.
    #[error("keystore.seal: expected \"file:PATH\" or \"env:VAR\", got {0}")]
    Syntax(String),
    #[error("keystore.seal: cannot read '{path}': {source}")]
    Read { path: String, source: std::io::Error },
    #[error("keystore.seal: environment variable '{0}' is not set")]
    MissingEnv(String),
    #[error("keystore.seal: the key must be 32 bytes, raw, hex (64 digits) or base64")]
    BadKey,
}

/// The key that wraps stored values.
pub struct Seal {
    cipher: Aes256Gcm,
}

/// The only state is the AES-GCM instance, whose expanded key schedule and
/// GHASH key wipe themselves on drop: the host enables the `zeroize` features
/// of `aes`, `aes-gcm`, `ghash` and `polyval` for exactly this
/// (`tests::the_seal_wipes_its_key_on_drop` fails if one is lost).
impl ZeroizeOnDrop for Seal {}

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seal(..)")
    }
}

/// What a `seal` setting that is no reference looks like, for the error
/// message: the scheme if it has a plausible one, otherwise nothing of it.
fn describe_setting(setting: &str) -> String {
    match setting.split_once(':') {
        Some((scheme, _)) if (1..=10).contains(&scheme.len()) && scheme.bytes().all(|b| b.is_ascii_alphabetic()) => {
            format!("the unknown scheme '{scheme}:'")
        }
        _ => "a value that is no reference (the key itself belongs in a file or an environment variable)".to_string(),
    }
}

/// Decodes a seal key given raw (32 bytes), as hex or as base64. Every
/// decoded buffer is wiped, also one of the wrong length.
fn decode_key(bytes: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
    if bytes.len() == 32 {
        return Ok(Zeroizing::new(bytes.to_vec()));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| SealError::BadKey)?.trim();
    if let Ok(k) = hex::decode(text).map(Zeroizing::new) {
        if k.len() == 32 {
            return Ok(k);
        }
    }
    match base64::engine::general_purpose::STANDARD.decode(text).map(Zeroizing::new) {
        Ok(k) if k.len() == 32 => Ok(k),
        _ => Err(SealError::BadKey),
    }
}

impl Seal {
    /// Loads the seal key named by a `seal` setting.
    pub fn from_setting(setting: &str) -> Result<Seal, SealError> {
        let key = if let Some(path) = setting.strip_prefix("file:") {
            let bytes = Zeroizing::new(
                std::fs::read(path).map_err(|source| SealError::Read { path: path.to_string(), source })?,
            );
            decode_key(&bytes)?
        } else if let Some(var) = setting.strip_prefix("env:") {
            let value = Zeroizing::new(std::env::var(var).map_err(|_| SealError::MissingEnv(var.to_string()))?);
            decode_key(value.as_bytes())?
        } else {
            return Err(SealError::Syntax(describe_setting(setting)));
        };
        Seal::from_key(&key)
    }

    /// A seal from 32 raw key bytes.
    pub fn from_key(key: &[u8]) -> Result<Seal, SealError> {
        let cipher = Aes256Gcm::new_from_slice(key).map_err(|_| SealError::BadKey)?;
        Ok(Seal { cipher })
    }

    /// Wraps `value` stored under `name`.
    pub fn seal(&self, name: &str, value: &[u8]) -> Result<Vec<u8>, String> {
        let mut nonce = [0u8; NONCE];
        rand::thread_rng().fill_bytes(&mut nonce);
        let payload = Payload { msg: value, aad: name.as_bytes() };
        let sealed =
            self.cipher.encrypt(Nonce::from_slice(&nonce), payload).map_err(|_| "cannot seal the value".to_string())?;
        let mut out = Vec::with_capacity(MAGIC.len() + NONCE + sealed.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Unwraps a value stored under `name`.
    pub fn open(&self, name: &str, value: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
        let rest = value
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| "value is not sealed (was it stored before sealing was turned on?)".to_string())?;
        if rest.len() < NONCE + 16 {
            return Err("sealed value is truncated".into());
        }
        let (nonce, sealed) = rest.split_at(NONCE);
        let payload = Payload { msg: sealed, aad: name.as_bytes() };
        self.cipher
            .decrypt(Nonce::from_slice(nonce), payload)
            .map(Zeroizing::new)
            .map_err(|_| "sealed value does not open with the configured seal key".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_under_their_name_and_key() {
        let seal = Seal::from_key(&[7u8; 32]).unwrap();
        let sealed = seal.seal("a", b"secret key bytes").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        assert_eq!(&seal.open("a", &sealed).unwrap()[..], b"secret key bytes");
        assert!(seal.open("b", &sealed).is_err());
        assert!(Seal::from_key(&[8u8; 32]).unwrap().open("a", &sealed).is_err());
        assert!(seal.open("a", b"plain").is_err());
        assert!(seal.open("a", &sealed[..20]).is_err());
    }

    #[test]
    fn keys_load_from_env_in_hex_or_base64() {
        std::env::set_var("KEYWARD_TEST_SEAL_HEX", "11".repeat(32));
        assert!(Seal::from_setting("env:KEYWARD_TEST_SEAL_HEX").is_ok());
        std::env::set_var("KEYWARD_TEST_SEAL_B64", base64::engine::general_purpose::STANDARD.encode([1u8; 32]));
        assert!(Seal::from_setting("env:KEYWARD_TEST_SEAL_B64").is_ok());
        std::env::set_var("KEYWARD_TEST_SEAL_BAD", "short");
        assert!(matches!(Seal::from_setting("env:KEYWARD_TEST_SEAL_BAD"), Err(SealError::BadKey)));
        assert!(matches!(Seal::from_setting("vault:x"), Err(SealError::Syntax(_))));
    }

    #[test]
    fn a_bare_key_is_not_echoed_in_the_error() {
        let key = "ab".repeat(32);
        let err = Seal::from_setting(&key).unwrap_err().to_string();
        assert!(!err.contains(&key[..8]), "{err}");
        assert!(err.contains("file:PATH"), "{err}");
        let b64 = base64::engine::general_purpose::STANDARD.encode([0xa5u8; 32]);
        let err = Seal::from_setting(&b64).unwrap_err().to_string();
        assert!(!err.contains(&b64[..8]), "{err}");
        // A key that happens to contain ':' is not mistaken for a scheme.
        let err = Seal::from_setting("0123456789abcdef0123:456789abcdef").unwrap_err().to_string();
        assert!(!err.contains("0123"), "{err}");
        let err = Seal::from_setting("vault:secret/path").unwrap_err().to_string();
        assert!(err.contains("'vault:'") && !err.contains("secret/path"), "{err}");
    }

    #[test]
    fn the_seal_wipes_its_key_on_drop() {
        fn assert_zeroize_on_drop<T: ZeroizeOnDrop>() {}
        // What makes the `impl ZeroizeOnDrop for Seal` true.
        assert_zeroize_on_drop::<aes::Aes256>();
        assert_zeroize_on_drop::<Seal>();
        assert_eq!(format!("{:?}", Seal::from_key(&[3u8; 32]).unwrap()), "Seal(..)");
    }
}
