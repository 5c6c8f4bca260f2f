//! Secret keys (encrypt/decrypt) and HMAC keys.

use std::fmt;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit};
use chacha20::cipher::consts::U10;
use chacha20poly1305::ChaCha20Poly1305;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::ciphertext::{self, IV_LEN, NONCE_LEN, RANDOM_LEN, TAG_LEN};
use super::{Algorithm, CryptoError, DecryptError, KEY_LEN};

/// 32 key bytes on the heap, wiped when dropped.
///
/// Boxed so that moving the key that owns them (into the cache, into an
/// `Arc`, across an `await`) moves a pointer and not the bytes: a move leaves
/// the old location as it was, and a wipe on drop only reaches the last one.
#[derive(Clone)]
pub(crate) struct KeyBytes(Box<[u8; KEY_LEN]>);

impl KeyBytes {
    /// Zero bytes, filled in place by the caller.
    fn zeroed() -> Self {
        KeyBytes(Box::new([0u8; KEY_LEN]))
    }

    /// A copy of `bytes`, which must be [`KEY_LEN`] long.
    fn copy_from(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != KEY_LEN {
            return Err(CryptoError::InvalidKeyLength(bytes.len()));
        }
        let mut key = Self::zeroed();
        key.0.copy_from_slice(bytes);
        Ok(key)
    }
}

impl Zeroize for KeyBytes {
    fn zeroize(&mut self) {
        (*self.0).zeroize();
    }
}

impl Drop for KeyBytes {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for KeyBytes {}

/// A 32-byte secret key together with the cipher it is used with.
///
/// The key bytes are wiped when the value is dropped (the derive fails to
/// compile if a field is added that cannot be wiped and is not marked
/// `skip`) and are never printed by `Debug`. There is deliberately no
/// accessor for the raw bytes outside this module: KES never hands a key out
/// again once it is stored.
#[derive(Clone, ZeroizeOnDrop)]
pub struct SecretKey {
    #[zeroize(skip)]
    algorithm: Algorithm,
    bytes: KeyBytes,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey").field("algorithm", &self.algorithm).field("bytes", &"<redacted>").finish()
    }
}

impl SecretKey {
    /// Generates a new key from the operating system's CSPRNG.
    ///
    /// # Panics
    /// Only if the OS random number generator is unavailable, in which case no
    /// key can be created safely at all.
    pub fn generate(algorithm: Algorithm) -> Self {
        let mut bytes = KeyBytes::zeroed();
        OsRng.fill_bytes(&mut bytes.0[..]);
        SecretKey { algorithm, bytes }
    }

    /// Wraps existing key bytes (import, keystore decoding). The slice must be
    /// exactly 32 bytes, as KES requires for both algorithms.
    pub fn from_bytes(algorithm: Algorithm, bytes: &[u8]) -> Result<Self, CryptoError> {
        Ok(SecretKey { algorithm, bytes: KeyBytes::copy_from(bytes)? })
    }

    /// The cipher this key is used with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The raw key bytes; private to the crypto module (the keystore encoder
    /// needs them, nothing outside should).
    pub(super) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes.0
    }

    /// The key-id the 2023 and older KES generations wrote into ciphertexts:
    /// lowercase hex of the first 16 bytes of `SHA-256(key)`.
    ///
    /// Decryption ignores it (as KES 2023+ does); it is exposed for diagnostics
    /// and tests.
    pub fn key_id(&self) -> String {
        let digest = Sha256::digest(&self.bytes.0[..]);
        hex::encode(&digest[..16])
    }

    /// Encrypts `plaintext` and authenticates `context` (the AAD; pass `&[]`
    /// when the request has no context, which KES treats the same as null or
    /// empty).
    ///
    /// Output is the newest KES raw format `ct || tag(16) || iv(16) || nonce(12)`
    /// with 28 fresh random bytes per call, so every KES generation since
    /// 2024-02 (and keyward) can decrypt it.
    ///
    /// Fails only if the OS RNG fails or the plaintext exceeds the AEAD limit
    /// (64 GiB), which KES reports as 500 `failed to encrypt plaintext`.
    pub fn encrypt(&self, plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut random = [0u8; RANDOM_LEN];
        os_random(&mut random)?;
        self.encrypt_with(plaintext, context, &random)
    }

    /// [`SecretKey::encrypt`] with its 28 random bytes (IV, then nonce)
    /// already drawn: the same inputs give the same ciphertext.
    pub(super) fn encrypt_with(
        &self,
        plaintext: &[u8],
        context: &[u8],
        random: &[u8; RANDOM_LEN],
    ) -> Result<Vec<u8>, CryptoError> {
        let mut iv = [0u8; IV_LEN];
        let mut nonce = [0u8; NONCE_LEN];
        iv.copy_from_slice(&random[..IV_LEN]);
        nonce.copy_from_slice(&random[IV_LEN..]);

        let capacity = plaintext.len().checked_add(TAG_LEN + RANDOM_LEN).ok_or(CryptoError::Encrypt)?;
        let mut out = Vec::with_capacity(capacity);
        out.extend_from_slice(plaintext);
        match seal(self.algorithm, &self.bytes.0, &iv, &nonce, &mut out, context) {
            Ok(tag) => {
                out.extend_from_slice(&tag);
                out.extend_from_slice(random);
                Ok(out)
            }
            Err(err) => {
                // `out` may still hold the plaintext copy.
                out.zeroize();
                Err(err)
            }
        }
    }

    /// Decrypts a ciphertext in any KES format: raw (newest), msgpack (first
    /// byte `0x95`, 2023 generation) or JSON (first byte `{`, <= v0.19.1),
    /// following API.md's "newest parse rule": a structured ciphertext that does
    /// not parse is treated as raw, and raw input of 28 bytes or less fails.
    ///
    /// The cipher is this key's algorithm (newest KES). If that fails and the
    /// ciphertext is msgpack/JSON whose algorithm tag names the *other* cipher,
    /// the tag's cipher is tried as well, as the 2023 generation did; otherwise
    /// ciphertexts written by 2023 KES for keys whose stored type disagrees with
    /// the tag would become undecryptable. The embedded key-id is ignored.
    ///
    /// Every failure is the same [`DecryptError`].
    pub fn decrypt(&self, ciphertext: &[u8], context: &[u8]) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
        let parsed = ciphertext::parse(ciphertext).ok_or(DecryptError)?;
        let open_with = |algorithm| open(algorithm, &self.bytes.0, &parsed.iv, &parsed.nonce, &parsed.sealed, context);
        match open_with(self.algorithm) {
            Ok(plaintext) => Ok(plaintext),
            Err(err) => match parsed.tag {
                Some(tag) if tag != self.algorithm => open_with(tag),
                _ => Err(err),
            },
        }
    }
}

/// Generates a random 32-byte data key and encrypts it with `key` and
/// `context`, as KES's `/v1/key/generate` does. Returns `(plaintext,
/// ciphertext)`; the plaintext is on the heap (moving it copies no key
/// bytes) and is wiped when dropped.
pub fn generate_data_key(key: &SecretKey, context: &[u8]) -> Result<(Zeroizing<Vec<u8>>, Vec<u8>), CryptoError> {
    // The data key and the ciphertext's IV and nonce in one draw.
    let mut drawn = Zeroizing::new([0u8; KEY_LEN + RANDOM_LEN]);
    os_random(&mut drawn[..])?;
    let (data_key, random) = drawn.split_at(KEY_LEN);
    let random: &[u8; RANDOM_LEN] = random.try_into().map_err(|_| CryptoError::Random)?;
    let ciphertext = key.encrypt_with(data_key, context, random)?;
    Ok((Zeroizing::new(data_key.to_vec()), ciphertext))
}

/// Fills `out` from the operating system's generator. One call is one
/// system call (~0.3–0.5 µs here, most of it the kernel's generator set-up),
/// so each request draws everything it needs at once.
fn os_random(out: &mut [u8]) -> Result<(), CryptoError> {
    OsRng.try_fill_bytes(out).map_err(|_| CryptoError::Random)
}

/// A 32-byte HMAC-SHA256 key, stored next to a secret key (KES 2024+).
///
/// It is an independent random key, not derived from the secret key, so it
/// must be generated and stored with the key version. Wiped on drop, never
/// printed by `Debug`.
#[derive(Clone, ZeroizeOnDrop)]
pub struct HmacKey {
    bytes: KeyBytes,
}

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacKey(<redacted>)")
    }
}

impl HmacKey {
    /// Generates a new key from the OS CSPRNG.
    ///
    /// # Panics
    /// Only if the OS random number generator is unavailable.
    pub fn generate() -> Self {
        let mut bytes = KeyBytes::zeroed();
        OsRng.fill_bytes(&mut bytes.0[..]);
        HmacKey { bytes }
    }

    /// Wraps existing key bytes; must be exactly 32 bytes (KES rejects others).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        Ok(HmacKey { bytes: KeyBytes::copy_from(bytes)? })
    }

    /// `HMAC-SHA256(key, message)`, the value of KES's `/v1/key/hmac`.
    pub fn sign(&self, message: &[u8]) -> [u8; 32] {
        hmac_sha256(&self.bytes.0, message)
    }

    pub(super) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes.0
    }
}

/// HMAC-SHA256 with a 32-byte key.
///
/// The key is zero-padded to the 64-byte SHA-256 block, which is exactly what
/// HMAC does with short keys (RFC 2104); this uses the infallible
/// fixed-size constructor instead of `new_from_slice`, so there is no error
/// path to handle.
fn hmac_sha256(key: &[u8; KEY_LEN], message: &[u8]) -> [u8; 32] {
    let mut block = Zeroizing::new([0u8; 64]);
    block[..KEY_LEN].copy_from_slice(key);
    let mut mac = <Hmac<Sha256> as KeyInit>::new((&*block).into());
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// The per-message AEAD key: HMAC-SHA256(key, iv) for AES256, HChaCha20(key,
/// iv) for ChaCha20. Deriving a fresh key per message is what lets KES use
/// random 96-bit nonces without a practical collision bound.
fn message_key(algorithm: Algorithm, key: &[u8; KEY_LEN], iv: &[u8; IV_LEN]) -> Zeroizing<[u8; KEY_LEN]> {
    match algorithm {
        Algorithm::Aes256 => Zeroizing::new(hmac_sha256(key, iv)),
        Algorithm::ChaCha20 => {
            let mut derived = chacha20::hchacha::<U10>(key.into(), iv.into());
            let mut out = Zeroizing::new([0u8; KEY_LEN]);
            out.copy_from_slice(&derived);
            derived.as_mut_slice().zeroize();
            out
        }
    }
}

/// Encrypts `buf` in place and returns the 16-byte tag.
fn seal(
    algorithm: Algorithm,
    key: &[u8; KEY_LEN],
    iv: &[u8; IV_LEN],
    nonce: &[u8; NONCE_LEN],
    buf: &mut [u8],
    aad: &[u8],
) -> Result<[u8; TAG_LEN], CryptoError> {
    let k = message_key(algorithm, key, iv);
    let tag = match algorithm {
        Algorithm::Aes256 => Aes256Gcm::new((&*k).into()).encrypt_in_place_detached(nonce.into(), aad, buf),
        Algorithm::ChaCha20 => ChaCha20Poly1305::new((&*k).into()).encrypt_in_place_detached(nonce.into(), aad, buf),
    }
    .map_err(|_| CryptoError::Encrypt)?;
    Ok(tag.into())
}

/// Verifies and decrypts `sealed = ct || tag` into a fresh zeroizing buffer.
fn open(
    algorithm: Algorithm,
    key: &[u8; KEY_LEN],
    iv: &[u8; IV_LEN],
    nonce: &[u8; NONCE_LEN],
    sealed: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, DecryptError> {
    let Some(ct_len) = sealed.len().checked_sub(TAG_LEN) else {
        return Err(DecryptError);
    };
    let (ct, tag) = sealed.split_at(ct_len);
    let tag: &[u8; TAG_LEN] = tag.try_into().map_err(|_| DecryptError)?;
    let mut buf = Zeroizing::new(ct.to_vec());
    let k = message_key(algorithm, key, iv);
    match algorithm {
        Algorithm::Aes256 => {
            Aes256Gcm::new((&*k).into()).decrypt_in_place_detached(nonce.into(), aad, &mut buf[..], tag.into())
        }
        Algorithm::ChaCha20 => {
            ChaCha20Poly1305::new((&*k).into()).decrypt_in_place_detached(nonce.into(), aad, &mut buf[..], tag.into())
        }
    }
    .map_err(|_| DecryptError)?;
    Ok(buf)
}

#[cfg(test)]
mod wipe_tests {
    use super::*;

    #[test]
    fn key_bytes_zeroize_clears_the_heap_copy() {
        let mut k = KeyBytes::copy_from(&[0x5a; KEY_LEN]).unwrap();
        let copy = k.clone();
        k.zeroize();
        assert_eq!(*k.0, [0u8; KEY_LEN]);
        // A clone is its own allocation, untouched by wiping the original.
        assert_eq!(*copy.0, [0x5a; KEY_LEN]);
        assert!(KeyBytes::copy_from(&[0; 31]).is_err());
    }

    #[test]
    fn moving_a_key_does_not_move_its_bytes() {
        let key = SecretKey::from_bytes(Algorithm::Aes256, &[1; KEY_LEN]).unwrap();
        let at = key.bytes().as_ptr();
        let moved = Box::new(key);
        assert_eq!(moved.bytes().as_ptr(), at);
    }
}
