//! `SecretKey::decrypt` on arbitrary ciphertexts in all three KES formats
//! (raw, msgpack, JSON), with fixed keys of both algorithms.
//!
//! Input: `selector(1) || context_len(1) || context || ciphertext`.
//! `selector & 0x7f` indexes [`KEYS`] (mod its length); bit 7 uses the key with
//! the *other* algorithm, which drives the 2023 cross-algorithm fallback.
//!
//! Checks, besides "never panics":
//! * **authenticity**: every plaintext `decrypt` returns must be what an
//!   independent AEAD open (written here from the spec in vectors.json, using
//!   the cipher crates directly) yields for some reading of the input as
//!   raw/msgpack/JSON, with the key's algorithm or, for a structured
//!   ciphertext, the algorithm its tag names;
//! * **completeness** for raw input: a raw ciphertext that opens under the
//!   key's algorithm (and does not start like a structured one) must decrypt.
#![no_main]

use std::sync::OnceLock;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::Aes256Gcm;
use base64::Engine as _;
use chacha20::cipher::consts::U10;
use chacha20poly1305::ChaCha20Poly1305;
use hmac::{Hmac, Mac};
use keyward_core::crypto::{Algorithm, SecretKey};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sha2::Sha256;

/// The keys of vectors.json's `decrypt` and `decrypt_kes_tests` sections, so
/// the seed ciphertexts decrypt. fuzz/seed.py reads this table from here: keep
/// one `("ALGORITHM", "base64")` pair per line.
const KEYS: &[(&str, &str)] = &[
    ("AES256", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
    ("ChaCha20", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
    ("AES256", "dDHbTWgo+Yh3u804SYB5OyVMy6RiLeJYBQth1f6KlEU="),
    ("ChaCha20", "dDHbTWgo+Yh3u804SYB5OyVMy6RiLeJYBQth1f6KlEU="),
    ("AES256", "nXb1KroGToYw1uyAE5nF/PFPcB7qKAsabccWw54KICI="),
    ("AES256", "oP2EY452pX8HY7o3QvfMplCHRiSEHFQ0VObd88BYt4U="),
    ("AES256", "E23ND4LsZmBTik/HHKYHCn3BXvebmBfAMwk3KEujJoY="),
    ("AES256", "Q/yp9o6Z5PmdtTUm8cX8bgfyuijRRfwm1wi+JMzd6KY="),
    ("AES256", "ju/pFnpzCcvruUu2KQldOT0zq++es5QAtZjzD0kwrBU="),
    ("AES256", "QufXS7OJ10dPG1p2I9ZWZ4azQrzJbaShCi8snSGiyOw="),
    ("ChaCha20", "zJN33cOOt0s0JAB4K26zzwX00tWuBVZvZtMvHWXoJu8="),
    ("ChaCha20", "pRus3GpMkekXMlwVdXC23evtr1ncYBNw/hV3nTytig4="),
    ("ChaCha20", "3pui0fn5D/8IfHoJUgisDT/KZIbn5Tu3Fq3+/0G4Dwo="),
    ("ChaCha20", "zHQ7Gh808WSJ81rgKqeP2cW6YJsIV9S+TYllcomVcTI="),
];

struct Key {
    bytes: [u8; 32],
    /// The same bytes as keyward keys, home algorithm first.
    secret: [SecretKey; 2],
}

fn keys() -> &'static [Key] {
    static KEYS_DECODED: OnceLock<Vec<Key>> = OnceLock::new();
    KEYS_DECODED.get_or_init(|| {
        KEYS.iter()
            .map(|(alg, b64)| {
                let raw = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
                let bytes: [u8; 32] = raw.as_slice().try_into().unwrap();
                let algorithm = Algorithm::parse(alg).unwrap();
                let other = match algorithm {
                    Algorithm::Aes256 => Algorithm::ChaCha20,
                    Algorithm::ChaCha20 => Algorithm::Aes256,
                };
                Key {
                    bytes,
                    secret: [
                        SecretKey::from_bytes(algorithm, &bytes).unwrap(),
                        SecretKey::from_bytes(other, &bytes).unwrap(),
                    ],
                }
            })
            .collect()
    })
}

// ---- reference implementation (spec: vectors.json "description") ----------

/// `sealed = ct || tag(16)` opened with the per-message key
/// HMAC-SHA256(key, iv) + AES-256-GCM, or HChaCha20(key, iv) +
/// ChaCha20-Poly1305; AAD = context.
fn ref_open(alg: Algorithm, key: &[u8; 32], iv: &[u8], nonce: &[u8], sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    if iv.len() != 16 || nonce.len() != 12 || sealed.len() < 16 {
        return None;
    }
    let payload = Payload { msg: sealed, aad };
    match alg {
        Algorithm::Aes256 => {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).ok()?;
            mac.update(iv);
            let k = mac.finalize().into_bytes();
            Aes256Gcm::new(&k).decrypt(nonce.into(), payload).ok()
        }
        Algorithm::ChaCha20 => {
            let k = chacha20::hchacha::<U10>(key.into(), iv.into());
            ChaCha20Poly1305::new(&k).decrypt(nonce.into(), payload).ok()
        }
    }
}

/// One way of splitting the input into (iv, nonce, sealed).
struct Reading {
    iv: Vec<u8>,
    nonce: Vec<u8>,
    sealed: Vec<u8>,
    /// The algorithm a structured ciphertext names (None: raw).
    tag: Option<Algorithm>,
}

fn raw_reading(ct: &[u8]) -> Option<Reading> {
    if ct.len() <= 28 {
        return None;
    }
    let (sealed, rest) = ct.split_at(ct.len() - 28);
    Some(Reading {
        iv: rest[..16].to_vec(),
        nonce: rest[16..].to_vec(),
        sealed: sealed.to_vec(),
        tag: None,
    })
}

fn take<'a>(rd: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if n > rd.len() {
        return None;
    }
    let (head, tail) = rd.split_at(n);
    *rd = tail;
    Some(head)
}

/// fixarray(5)[alg str, key-id str, iv bin, nonce bin, sealed bin], read with
/// the `rmp` crate (more permissive than keyward, which is fine: the check
/// only needs *some* reading to authenticate).
fn msgpack_reading(ct: &[u8]) -> Option<Reading> {
    let mut rd = ct;
    if rmp::decode::read_array_len(&mut rd).ok()? != 5 {
        return None;
    }
    let n = rmp::decode::read_str_len(&mut rd).ok()? as usize;
    let tag = match take(&mut rd, n)? {
        b"AES256-GCM_SHA256" | b"AES256" => Algorithm::Aes256,
        b"XCHACHA20-POLY1305" | b"ChaCha20" => Algorithm::ChaCha20,
        _ => return None,
    };
    let n = rmp::decode::read_str_len(&mut rd).ok()? as usize;
    take(&mut rd, n)?;
    let mut bin = || {
        let n = rmp::decode::read_bin_len(&mut rd).ok()? as usize;
        take(&mut rd, n).map(<[u8]>::to_vec)
    };
    let (iv, nonce, sealed) = (bin()?, bin()?, bin()?);
    Some(Reading { iv, nonce, sealed, tag: Some(tag) })
}

/// Go's base64.StdEncoding: `\r`/`\n` skipped, padding required, trailing
/// bits tolerated.
fn go_b64(s: &str) -> Option<Vec<u8>> {
    const GO: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireCanonical)
            .with_decode_allow_trailing_bits(true),
    );
    let s: String = s.chars().filter(|&c| c != '\r' && c != '\n').collect();
    GO.decode(s).ok()
}

/// {aead, id?, iv, nonce, bytes}: every field matched case-insensitively (as
/// Go's encoding/json does), all combinations of candidates tried.
fn json_readings(ct: &[u8]) -> Vec<Reading> {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(ct) else {
        return Vec::new();
    };
    let field = |name: &str| -> Vec<&Value> {
        let c: Vec<&Value> = obj.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v).collect();
        if c.is_empty() {
            vec![&Value::Null]
        } else {
            c
        }
    };
    let bytes = |v: &Value| match v {
        Value::Null => Some(Vec::new()),
        Value::String(s) => go_b64(s),
        _ => None,
    };
    let mut out = Vec::new();
    for aead in field("aead") {
        let tag = match aead.as_str() {
            Some("AES-256-GCM-HMAC-SHA-256") => Algorithm::Aes256,
            Some("ChaCha20Poly1305") => Algorithm::ChaCha20,
            _ => continue,
        };
        for iv in field("iv").into_iter().filter_map(bytes) {
            for nonce in field("nonce").into_iter().filter_map(bytes) {
                for sealed in field("bytes").into_iter().filter_map(bytes) {
                    if out.len() < 256 {
                        out.push(Reading { iv: iv.clone(), nonce: nonce.clone(), sealed, tag: Some(tag) });
                    }
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let [selector, ctx_len, rest @ ..] = data else {
        return;
    };
    let table = keys();
    let key = &table[usize::from(selector & 0x7f) % table.len()];
    let flip = selector & 0x80 != 0;
    let secret = &key.secret[usize::from(flip)];
    let algorithm = secret.algorithm();
    let (context, ciphertext) = rest.split_at(usize::from(*ctx_len).min(rest.len()));

    let result = secret.decrypt(ciphertext, context);

    let raw = raw_reading(ciphertext);
    if let Ok(plaintext) = &result {
        let mut readings: Vec<Reading> = raw.into_iter().collect();
        readings.extend(msgpack_reading(ciphertext));
        readings.extend(json_readings(ciphertext));
        let authentic = readings.iter().any(|r| {
            let mut algs = vec![algorithm];
            algs.extend(r.tag.filter(|&t| t != algorithm));
            algs.iter().any(|&alg| {
                ref_open(alg, &key.bytes, &r.iv, &r.nonce, &r.sealed, context).as_deref() == Some(&plaintext[..])
            })
        });
        assert!(authentic, "decrypt returned a plaintext no authentic reading of the input yields");
    } else if let Some(r) = raw {
        if !matches!(ciphertext.first(), Some(0x95 | b'{')) {
            let expected = ref_open(algorithm, &key.bytes, &r.iv, &r.nonce, &r.sealed, context);
            assert!(expected.is_none(), "authentic raw ciphertext was rejected");
        }
    }
});
