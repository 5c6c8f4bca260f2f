//! Tests against tests/fixtures/kes/vectors.json plus round-trip and
//! robustness (never-panic) tests.

use base64::Engine as _;
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::*;

const VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/kes/vectors.json");

fn vectors() -> Value {
    let text = std::fs::read_to_string(VECTORS).expect("read vectors.json");
    serde_json::from_str(&text).expect("parse vectors.json")
}

fn section<'a>(v: &'a Value, name: &str) -> &'a Vec<Value> {
    v[name].as_array().expect("vector section")
}

/// Standard base64 field; null (or absent) means empty.
fn b64(v: &Value) -> Vec<u8> {
    match v {
        Value::Null => Vec::new(),
        Value::String(s) => base64::engine::general_purpose::STANDARD.decode(s).expect("vector base64"),
        other => panic!("not a base64 string: {other}"),
    }
}

fn s(v: &Value) -> &str {
    v.as_str().expect("string field")
}

fn alg(v: &Value) -> Algorithm {
    Algorithm::parse(s(v)).expect("vector algorithm")
}

fn other(a: Algorithm) -> Algorithm {
    match a {
        Algorithm::Aes256 => Algorithm::ChaCha20,
        Algorithm::ChaCha20 => Algorithm::Aes256,
    }
}

#[test]
fn vectors_file_is_found() {
    assert!(std::path::Path::new(VECTORS).is_file(), "{VECTORS}");
}

#[test]
fn vector_decrypt_all_formats() {
    let v = vectors();
    let list = section(&v, "decrypt");
    assert!(!list.is_empty());
    for t in list {
        let name = s(&t["name"]);
        let a = alg(&t["algorithm"]);
        let key = SecretKey::from_bytes(a, &b64(&t["key"])).unwrap();
        assert_eq!(key.key_id(), s(&t["key_id"]), "{name}");
        let ctx = b64(&t["context"]);
        let pt = b64(&t["plaintext"]);
        let raw = b64(&t["ciphertext_raw"]);
        assert_eq!(raw.len(), pt.len() + 44, "{name}");
        for fmt in ["ciphertext_raw", "ciphertext_msgpack", "ciphertext_json"] {
            let ct = b64(&t[fmt]);
            let got = key.decrypt(&ct, &ctx).unwrap_or_else(|e| panic!("{name}/{fmt}: {e}"));
            assert_eq!(&got[..], &pt[..], "{name}/{fmt}");

            let mut wrong_ctx = ctx.clone();
            wrong_ctx.push(b'x');
            assert_eq!(key.decrypt(&ct, &wrong_ctx), Err(DecryptError), "{name}/{fmt}");

            // A key stored with the other type: raw has no algorithm tag and
            // must fail; tagged formats decrypt via the tag (2023 behaviour).
            let mistyped = SecretKey::from_bytes(other(a), &b64(&t["key"])).unwrap();
            let res = mistyped.decrypt(&ct, &ctx);
            if fmt == "ciphertext_raw" {
                assert_eq!(res, Err(DecryptError), "{name}/{fmt}/mistyped");
            } else {
                assert_eq!(&res.unwrap()[..], &pt[..], "{name}/{fmt}/mistyped");
            }
        }
    }
}

/// The raw format ends with the 28 random bytes (IV, then nonce) that
/// encryption drew: given the same ones, keyward writes KES's ciphertext
/// byte for byte.
#[test]
fn vector_encrypt_with_its_randomness_is_byte_exact() {
    let v = vectors();
    for t in section(&v, "decrypt") {
        let name = s(&t["name"]);
        let key = SecretKey::from_bytes(alg(&t["algorithm"]), &b64(&t["key"])).unwrap();
        let raw = b64(&t["ciphertext_raw"]);
        let random: [u8; 28] = raw[raw.len() - 28..].try_into().unwrap();
        let got = key.encrypt_with(&b64(&t["plaintext"]), &b64(&t["context"]), &random).unwrap();
        assert_eq!(got, raw, "{name}");
    }
}

#[test]
fn vector_decrypt_kes_tests() {
    let v = vectors();
    let list = section(&v, "decrypt_kes_tests");
    assert!(!list.is_empty());
    for t in list {
        let name = s(&t["name"]);
        let key = SecretKey::from_bytes(alg(&t["algorithm"]), &b64(&t["key"])).unwrap();
        let got = key.decrypt(&b64(&t["ciphertext"]), &b64(&t["context"])).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&got[..], &b64(&t["plaintext"])[..], "{name}");
    }
}

#[test]
fn vector_tampered_all_fail() {
    let v = vectors();
    let list = section(&v, "tampered");
    assert!(!list.is_empty());
    for t in list {
        let name = s(&t["name"]);
        let key = SecretKey::from_bytes(alg(&t["algorithm"]), &b64(&t["key"])).unwrap();
        let res = key.decrypt(&b64(&t["ciphertext"]), &b64(&t["context"]));
        assert_eq!(res, Err(DecryptError), "{name} must fail");
    }
}

#[test]
fn vector_cross_algorithm_uses_tag_fallback() {
    let v = vectors();
    let list = section(&v, "cross_algorithm");
    assert!(!list.is_empty());
    for t in list {
        let name = s(&t["name"]);
        let key = SecretKey::from_bytes(alg(&t["key_type"]), &b64(&t["key"])).unwrap();
        let ct = b64(&t["ciphertext"]);
        let ctx = b64(&t["context"]);
        let pt = b64(&t["plaintext"]);
        assert_eq!(s(&t["expect_2023"]), "ok");
        let got = key.decrypt(&ct, &ctx).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&got[..], &pt[..], "{name}");

        // Without the tag (same bytes as raw), the stored type alone fails,
        // which is the newest-KES expectation in the vector.
        assert_eq!(s(&t["expect_newest"]), "fail");
        let p = ciphertext::parse(&ct).unwrap();
        assert_eq!(p.tag, Some(alg(&t["ciphertext_algorithm"])));
        let mut raw = p.sealed.to_vec();
        raw.extend_from_slice(&p.iv);
        raw.extend_from_slice(&p.nonce);
        assert_eq!(key.decrypt(&raw, &ctx), Err(DecryptError), "{name}/raw");
    }
}

#[test]
fn vector_hmac() {
    let v = vectors();
    let list = section(&v, "hmac");
    assert!(!list.is_empty());
    for t in list {
        let name = s(&t["name"]);
        let key = HmacKey::from_bytes(&b64(&t["hmac_key"])).unwrap();
        let mac = key.sign(&b64(&t["message"]));
        assert_eq!(&mac[..], &b64(&t["hmac"])[..], "{name}");
        assert_eq!(hex::encode(mac), s(&t["hmac_hex"]), "{name}");
    }
}

#[test]
fn vector_stored_keys() {
    let v = vectors();
    let list = section(&v, "stored_keys");
    assert!(!list.is_empty());
    for t in list {
        let name = s(&t["name"]);
        let raw = s(&t["raw"]).as_bytes();
        if t["should_fail"].as_bool() == Some(true) {
            assert!(StoredKey::decode(raw).is_err(), "{name} must fail");
            continue;
        }
        let k = StoredKey::decode(raw).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&k.key.bytes()[..], &b64(&t["key"])[..], "{name}");
        assert_eq!(k.key.algorithm(), alg(&t["algorithm"]), "{name}");
        match &t["hmac_key"] {
            Value::Null => assert!(k.hmac_key.is_none(), "{name}"),
            h => assert_eq!(&k.hmac_key.as_ref().unwrap().bytes()[..], &b64(h)[..]),
        }
        match &t["created_at"] {
            Value::Null => assert_eq!(k.created_at, None, "{name}"),
            c => {
                let want = OffsetDateTime::parse(s(c), &Rfc3339).unwrap();
                assert_eq!(k.created_at, Some(want), "{name}");
            }
        }
        assert_eq!(k.created_by, t["created_by"].as_str().unwrap_or(""), "{name}");

        if s(&t["format"]) == "protobuf-base64" {
            assert_eq!(&k.encode()[..], raw, "{name}: re-encoding must be byte-identical");
        } else {
            // Legacy values re-encode to protobuf (without HMAC) and read back.
            let again = StoredKey::decode(&k.encode()).unwrap();
            assert_eq!(again.key.bytes(), k.key.bytes(), "{name}");
            assert_eq!(again.key.algorithm(), k.key.algorithm(), "{name}");
            assert!(again.hmac_key.is_none());
            assert_eq!(again.created_at, k.created_at, "{name}");
            assert_eq!(again.created_by, k.created_by, "{name}");
        }
    }
}

#[test]
fn algorithm_names() {
    for (name, a) in [
        ("AES256", Algorithm::Aes256),
        ("AES256-GCM_SHA256", Algorithm::Aes256),
        ("ChaCha20", Algorithm::ChaCha20),
        ("XCHACHA20-POLY1305", Algorithm::ChaCha20),
    ] {
        assert_eq!(Algorithm::parse(name), Ok(a));
        assert_eq!(name.parse::<Algorithm>(), Ok(a));
    }
    for bad in ["", "aes256", "AES-256-GCM", "chacha20", "ChaCha20Poly1305"] {
        assert_eq!(Algorithm::parse(bad), Err(CryptoError::UnsupportedAlgorithm));
    }
    assert_eq!(Algorithm::Aes256.as_str(), "AES256");
    assert_eq!(Algorithm::ChaCha20.to_string(), "ChaCha20");
    for a in [Algorithm::Aes256, Algorithm::ChaCha20] {
        assert_eq!(Algorithm::from_proto_type(a.proto_type()), Some(a));
    }
    assert_eq!(Algorithm::Aes256.proto_type(), 1);
    assert_eq!(Algorithm::ChaCha20.proto_type(), 2);
    assert_eq!(Algorithm::from_proto_type(0), None);
    assert_eq!(Algorithm::from_proto_type(3), None);
    let _ = Algorithm::platform_default();
}

#[test]
fn key_lengths_and_key_id() {
    assert_eq!(SecretKey::from_bytes(Algorithm::Aes256, &[0; 31]).unwrap_err(), CryptoError::InvalidKeyLength(31));
    assert!(SecretKey::from_bytes(Algorithm::Aes256, &[0; 33]).is_err());
    assert!(HmacKey::from_bytes(&[0; 16]).is_err());
    let zero = SecretKey::from_bytes(Algorithm::Aes256, &[0; 32]).unwrap();
    assert_eq!(zero.key_id(), "66687aadf862bd776c8fc18b8e9f8e20");
}

#[test]
fn debug_never_prints_key_bytes() {
    let key = SecretKey::from_bytes(Algorithm::ChaCha20, &[0xab; 32]).unwrap();
    let stored = StoredKey {
        key,
        hmac_key: Some(HmacKey::from_bytes(&[0xcd; 32]).unwrap()),
        created_at: None,
        created_by: String::new(),
    };
    let dbg = format!("{stored:?} {:?}", stored.key);
    for needle in ["171", "ab", "AB", "205", "cd", "q6ur"] {
        assert!(!dbg.contains(needle), "{needle} in {dbg}");
    }
}

/// Every type that holds key material, and every buffer this module hands
/// out with a key or plaintext in it, wipes itself on drop. Written against
/// the function signatures, so changing a return type to a plain `Vec` or
/// array fails to compile here.
#[test]
// The signatures spelled out are the point of the test.
#[allow(clippy::type_complexity)]
fn key_material_is_wiped_on_drop() {
    use zeroize::ZeroizeOnDrop;
    fn zod<T: ZeroizeOnDrop>() {}
    zod::<SecretKey>();
    zod::<HmacKey>();
    zod::<StoredKey>();
    zod::<Option<HmacKey>>();
    fn data_key_plaintext<T: ZeroizeOnDrop, C>(_: fn(&SecretKey, &[u8]) -> Result<(T, C), CryptoError>) {}
    data_key_plaintext(generate_data_key);
    fn decrypted<T: ZeroizeOnDrop>(_: fn(&SecretKey, &[u8], &[u8]) -> Result<T, DecryptError>) {}
    decrypted(SecretKey::decrypt);
    fn encoded<T: ZeroizeOnDrop>(_: fn(&StoredKey) -> T) {}
    encoded(StoredKey::encode);
    // The cipher instances made per message from derived keys.
    zod::<aes::Aes256>();
    zod::<chacha20poly1305::ChaCha20Poly1305>();
}

#[test]
fn roundtrip_both_algorithms() {
    for a in [Algorithm::Aes256, Algorithm::ChaCha20] {
        let key = SecretKey::generate(a);
        assert_eq!(key.algorithm(), a);
        for len in [0usize, 1, 15, 16, 17, 64, 1000] {
            let pt: Vec<u8> = (0..len).map(|i| i as u8).collect();
            for ctx in [&b""[..], b"context", b"{\"bucket\":\"b\"}"] {
                let ct = key.encrypt(&pt, ctx).unwrap();
                assert_eq!(ct.len(), pt.len() + 44);
                assert_eq!(&key.decrypt(&ct, ctx).unwrap()[..], &pt[..]);
                // fresh randomness every time
                assert_ne!(key.encrypt(&pt, ctx).unwrap(), ct);
                // wrong context / wrong key / wrong type fail
                assert_eq!(key.decrypt(&ct, b"other"), Err(DecryptError));
                if !ctx.is_empty() {
                    assert_eq!(key.decrypt(&ct, b""), Err(DecryptError));
                }
                let wrong = SecretKey::generate(a);
                assert_eq!(wrong.decrypt(&ct, ctx), Err(DecryptError));
                let mistyped = SecretKey::from_bytes(other(a), key.bytes()).unwrap();
                assert_eq!(mistyped.decrypt(&ct, ctx), Err(DecryptError));
            }
        }
    }
}

#[test]
fn data_key_roundtrip() {
    for a in [Algorithm::Aes256, Algorithm::ChaCha20] {
        let key = SecretKey::generate(a);
        let (pt, ct) = generate_data_key(&key, b"ctx").unwrap();
        assert_eq!(ct.len(), 32 + 44);
        assert_eq!(&key.decrypt(&ct, b"ctx").unwrap()[..], &pt[..]);
        // The data key and the ciphertext's IV and nonce are drawn together:
        // none of the key's bytes may turn up as the IV.
        assert!(!pt.windows(16).any(|w| w == &ct[ct.len() - 28..ct.len() - 12]));
        assert_eq!(key.decrypt(&ct, b""), Err(DecryptError));
    }
}

/// Builds a 2023-style msgpack ciphertext from a raw one.
fn to_msgpack(alg_name: &str, key_id: &str, raw: &[u8]) -> Vec<u8> {
    let (sealed, rest) = raw.split_at(raw.len() - 28);
    let mut out = vec![0x95, 0xa0 | alg_name.len() as u8];
    out.extend_from_slice(alg_name.as_bytes());
    out.push(0xd9);
    out.push(key_id.len() as u8);
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(&[0xc4, 16]);
    out.extend_from_slice(&rest[..16]);
    out.extend_from_slice(&[0xc4, 12]);
    out.extend_from_slice(&rest[16..]);
    out.extend_from_slice(&[0xc5, (sealed.len() >> 8) as u8, sealed.len() as u8]);
    out.extend_from_slice(sealed);
    out
}

#[test]
fn structured_formats_details() {
    let key = SecretKey::generate(Algorithm::Aes256);
    let raw = key.encrypt(b"hello", b"").unwrap();

    // key-id is ignored; short and long algorithm names are accepted.
    for name in ["AES256-GCM_SHA256", "AES256"] {
        let mp = to_msgpack(name, "not-the-key-id", &raw);
        assert_eq!(&key.decrypt(&mp, b"").unwrap()[..], b"hello");
    }
    // Unknown algorithm name, trailing byte: not msgpack -> raw -> fails.
    assert!(key.decrypt(&to_msgpack("AES-256-GCM", "", &raw), b"").is_err());
    let mut trailing = to_msgpack("AES256", "", &raw);
    trailing.push(0);
    assert!(key.decrypt(&trailing, b"").is_err());
    // Huge declared lengths must not panic.
    for bad in [
        &[0x95, 0xdb, 0xff, 0xff, 0xff, 0xff][..],
        &[0x95, 0xa6, b'A', b'E', b'S', b'2', b'5', b'6', 0xa0, 0xc6, 0xff, 0xff, 0xff, 0xff],
        &[0x95],
        b"{",
        b"{}",
    ] {
        assert!(key.decrypt(bad, b"").is_err());
    }

    // JSON: Go's encoding/json matches field names case-insensitively and
    // ignores unknown fields.
    let b = |x: &[u8]| base64::engine::general_purpose::STANDARD.encode(x);
    let (sealed, rest) = raw.split_at(raw.len() - 28);
    let json = format!(
        r#"{{"AEAD":"AES-256-GCM-HMAC-SHA-256","Iv":"{}","nonce":"{}","bytes":"{}","extra":1}}"#,
        b(&rest[..16]),
        b(&rest[16..]),
        b(sealed)
    );
    assert_eq!(&key.decrypt(json.as_bytes(), b"").unwrap()[..], b"hello");
    // Wrong JSON types make the JSON parse fail (-> raw -> fails).
    let json_bad_id = json.replacen(r#""extra":1"#, r#""id":5"#, 1);
    assert!(key.decrypt(json_bad_id.as_bytes(), b"").is_err());
    // Empty sealed part is rejected even when structured.
    let json_empty = format!(
        r#"{{"aead":"AES-256-GCM-HMAC-SHA-256","iv":"{}","nonce":"{}","bytes":""}}"#,
        b(&rest[..16]),
        b(&rest[16..])
    );
    assert!(key.decrypt(json_empty.as_bytes(), b"").is_err());
}

#[test]
fn stored_key_generate_roundtrip() {
    for a in [Algorithm::Aes256, Algorithm::ChaCha20] {
        let k = StoredKey::generate(a, "3ecfcdf38fcbe141ae26a1030f81e96b753365a46760ae6b578698a97c59fd22");
        assert!(k.hmac_key.is_some() && k.created_at.is_some());
        let enc = k.encode();
        let d = StoredKey::decode(&enc).unwrap();
        assert_eq!(d.key.bytes(), k.key.bytes());
        assert_eq!(d.key.algorithm(), a);
        assert_eq!(d.hmac_key.as_ref().unwrap().bytes(), k.hmac_key.as_ref().unwrap().bytes());
        assert_eq!(d.created_at, k.created_at);
        assert_eq!(d.created_by, k.created_by);
        assert_eq!(d.encode(), enc);
        // A trailing newline (e.g. a file edited by hand) is tolerated like Go.
        let mut nl = enc.clone();
        nl.push(b'\n');
        assert!(StoredKey::decode(&nl).is_ok());
    }
    // Pre-1970 and sub-second times survive the protobuf timestamp.
    let mut k = StoredKey::generate(Algorithm::Aes256, "");
    k.created_at = Some(OffsetDateTime::parse("1969-12-31T23:59:59.5Z", &Rfc3339).unwrap());
    assert_eq!(StoredKey::decode(&k.encode()).unwrap().created_at, k.created_at);
}

#[test]
fn stored_key_legacy_json_rules() {
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let ok = |j: String| StoredKey::decode(j.as_bytes());
    let k = ok(format!(r#"{{"bytes":"{key}","algorithm":""}}"#)).unwrap();
    assert_eq!(k.key.algorithm(), Algorithm::Aes256);
    let k = ok(format!(r#"{{"bytes":"{key}","algorithm":"ChaCha20","created_by":null}}"#)).unwrap();
    assert_eq!(k.key.algorithm(), Algorithm::ChaCha20);
    assert_eq!(k.created_by, "");
    for bad in [
        format!(r#"{{"bytes":"{key}","algorithm":"AES128"}}"#),
        format!(r#"{{"bytes":"{key}","created_at":""}}"#),
        format!(r#"{{"bytes":"{key}","created_by":5}}"#),
        r#"{"bytes":"AAAA"}"#.to_string(),
        r#"{}"#.to_string(),
        r#"[]"#.to_string(),
        r#"null"#.to_string(),
        r#""abc""#.to_string(),
        String::new(),
        "!!!!".to_string(),
    ] {
        assert!(ok(bad.clone()).is_err(), "{bad}");
    }
}

/// Never panics on arbitrary input, and a mutated valid ciphertext either
/// fails or yields exactly the original plaintext.
#[test]
fn property_random_inputs_never_panic() {
    let mut rng = StdRng::seed_from_u64(0x6b65_7977_6172);
    let aes = SecretKey::generate(Algorithm::Aes256);
    let chacha = SecretKey::generate(Algorithm::ChaCha20);
    let firsts = [0x95u8, b'{', 0x00, 0xff];
    for i in 0..20_000 {
        let len = rng.gen_range(0..160);
        let mut buf = vec![0u8; len];
        rng.fill_bytes(&mut buf);
        if len > 0 && i % 2 == 0 {
            buf[0] = firsts[rng.gen_range(0..firsts.len())];
        }
        assert!(aes.decrypt(&buf, b"").is_err());
        assert!(chacha.decrypt(&buf, b"x").is_err());
        let _ = StoredKey::decode(&buf);
        let text = base64::engine::general_purpose::STANDARD.encode(&buf);
        let _ = StoredKey::decode(text.as_bytes());
    }

    let v = vectors();
    // (key, ciphertext, context, plaintext)
    type Seed = (SecretKey, Vec<u8>, Vec<u8>, Vec<u8>);
    let mut seeds: Vec<Seed> = Vec::new();
    for t in section(&v, "decrypt") {
        let key = SecretKey::from_bytes(alg(&t["algorithm"]), &b64(&t["key"])).unwrap();
        for fmt in ["ciphertext_raw", "ciphertext_msgpack", "ciphertext_json"] {
            seeds.push((key.clone(), b64(&t[fmt]), b64(&t["context"]), b64(&t["plaintext"])));
        }
    }
    for _ in 0..20_000 {
        let (key, ct, ctx, pt) = &seeds[rng.gen_range(0..seeds.len())];
        let mut m = ct.clone();
        match rng.gen_range(0..4) {
            0 if !m.is_empty() => {
                let at = rng.gen_range(0..m.len());
                m[at] ^= 1 << rng.gen_range(0..8);
            }
            1 => m.truncate(rng.gen_range(0..=m.len())),
            2 => m.push(rng.gen()),
            _ => {
                let at = rng.gen_range(0..=m.len());
                m.insert(at, rng.gen());
            }
        }
        if let Ok(got) = key.decrypt(&m, ctx) {
            assert_eq!(&got[..], &pt[..]);
        }
    }

    for t in section(&v, "stored_keys") {
        let raw = s(&t["raw"]).as_bytes().to_vec();
        for _ in 0..2_000 {
            let mut m = raw.clone();
            if m.is_empty() {
                break;
            }
            let at = rng.gen_range(0..m.len());
            match rng.gen_range(0..3) {
                0 => m[at] = rng.gen(),
                1 => m.truncate(at),
                _ => m[at] ^= 1 << rng.gen_range(0..8),
            }
            let _ = StoredKey::decode(&m);
        }
    }
}

/// Mutating the decoded protobuf (not its base64) exercises the protobuf
/// decoder rather than just the base64 one.
#[test]
fn property_protobuf_mutations_never_panic() {
    let mut rng = StdRng::seed_from_u64(42);
    let enc = StoredKey::generate(Algorithm::ChaCha20, "someone").encode();
    let pb = base64::engine::general_purpose::STANDARD.decode(&enc).unwrap();
    for _ in 0..20_000 {
        let mut m = pb.clone();
        for _ in 0..rng.gen_range(1..4) {
            let at = rng.gen_range(0..m.len());
            m[at] = rng.gen();
        }
        if rng.gen_bool(0.3) {
            m.truncate(rng.gen_range(0..=m.len()));
        }
        let text = base64::engine::general_purpose::STANDARD.encode(&m);
        if let Ok(k) = StoredKey::decode(text.as_bytes()) {
            // Whatever decoded must re-encode and decode again.
            assert!(StoredKey::decode(&k.encode()).is_ok());
        }
    }
}
