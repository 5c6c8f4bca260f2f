//! Native crypto per ciphertext format: encrypt (raw output), decrypt of the
//! raw (2024+), msgpack (2023) and JSON (<= v0.19.1) KES formats, HMAC,
//! data-key generation and decoding a stored key (the work of a cache miss).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use keyward_core::crypto::{generate_data_key, Algorithm, SecretKey, StoredKey};

const IV: usize = 16;
const NONCE: usize = 12;

/// Splits a raw ciphertext `sealed || iv || nonce`.
fn split(raw: &[u8]) -> (&[u8], &[u8], &[u8]) {
    let (sealed, rest) = raw.split_at(raw.len() - IV - NONCE);
    let (iv, nonce) = rest.split_at(IV);
    (sealed, iv, nonce)
}

fn msgpack_str(out: &mut Vec<u8>, s: &[u8]) {
    if s.len() < 32 {
        out.push(0xa0 | s.len() as u8);
    } else {
        out.push(0xd9);
        out.push(s.len() as u8);
    }
    out.extend_from_slice(s);
}

fn msgpack_bin(out: &mut Vec<u8>, b: &[u8]) {
    if b.len() < 256 {
        out.extend_from_slice(&[0xc4, b.len() as u8]);
    } else {
        out.push(0xc5);
        out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(b);
}

/// The same ciphertext in the 2023 msgpack format.
fn to_msgpack(raw: &[u8], key: &SecretKey) -> Vec<u8> {
    let (sealed, iv, nonce) = split(raw);
    let mut out = vec![0x95];
    let alg: &[u8] = match key.algorithm() {
        Algorithm::Aes256 => b"AES256-GCM_SHA256",
        Algorithm::ChaCha20 => b"XCHACHA20-POLY1305",
    };
    msgpack_str(&mut out, alg);
    msgpack_str(&mut out, key.key_id().as_bytes());
    msgpack_bin(&mut out, iv);
    msgpack_bin(&mut out, nonce);
    msgpack_bin(&mut out, sealed);
    out
}

/// The same ciphertext in the pre-2023 JSON format.
fn to_json(raw: &[u8], key: &SecretKey) -> Vec<u8> {
    let (sealed, iv, nonce) = split(raw);
    let aead = match key.algorithm() {
        Algorithm::Aes256 => "AES-256-GCM-HMAC-SHA-256",
        Algorithm::ChaCha20 => "ChaCha20Poly1305",
    };
    serde_json::json!({
        "aead": aead,
        "id": key.key_id(),
        "iv": B64.encode(iv),
        "nonce": B64.encode(nonce),
        "bytes": B64.encode(sealed),
    })
    .to_string()
    .into_bytes()
}

fn bench(c: &mut Criterion) {
    let sizes = [64usize, 1024];
    for alg in [Algorithm::Aes256, Algorithm::ChaCha20] {
        let key = SecretKey::generate(alg);
        let mut g = c.benchmark_group(format!("encrypt/{alg}"));
        for &n in &sizes {
            let pt = vec![7u8; n];
            g.throughput(Throughput::Bytes(n as u64));
            g.bench_with_input(BenchmarkId::from_parameter(n), &pt, |b, pt| b.iter(|| key.encrypt(pt, b"").unwrap()));
        }
        g.finish();

        let mut g = c.benchmark_group(format!("decrypt/{alg}"));
        for &n in &sizes {
            let pt = vec![7u8; n];
            let raw = key.encrypt(&pt, b"").unwrap();
            let formats = [("raw", raw.clone()), ("msgpack", to_msgpack(&raw, &key)), ("json", to_json(&raw, &key))];
            g.throughput(Throughput::Bytes(n as u64));
            for (format, ct) in formats {
                assert_eq!(&key.decrypt(&ct, b"").unwrap()[..], &pt[..], "{format} ciphertext must decrypt");
                g.bench_with_input(BenchmarkId::new(format, n), &ct, |b, ct| b.iter(|| key.decrypt(ct, b"").unwrap()));
            }
        }
        g.finish();
    }

    let stored = StoredKey::generate(Algorithm::Aes256, "bench");
    let hmac = stored.hmac_key.clone().unwrap();
    let msg = [7u8; 64];
    c.bench_function("hmac/64", |b| b.iter(|| hmac.sign(&msg)));
    c.bench_function("generate_data_key/AES256", |b| b.iter(|| generate_data_key(&stored.key, b"").unwrap()));
    let encoded = stored.encode();
    c.bench_function("stored_key/decode", |b| b.iter(|| StoredKey::decode(&encoded).unwrap()));
}

criterion_group!(benches, bench);
criterion_main!(benches);
