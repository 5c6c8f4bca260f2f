//! Key routes of both generations: create, import, describe, list, delete,
//! generate, encrypt, decrypt, bulk decrypt, HMAC.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use crate::harness::{b64, unb64, vectors, TestServer};

#[tokio::test]
async fn create_describe_delete_in_both_generations() {
    let s = TestServer::start("");
    let c = s.admin_client();
    // New generation: PUT. Old generation: POST. Both create.
    c.put_empty("/v1/key/create/new-key").await.ok();
    c.send("POST", "/v1/key/create/old-key", None, &[]).await.ok();
    c.put_empty("/v1/key/create/new-key").await.expect(400, "key already exists");
    c.send("POST", "/v1/key/create/old-key", None, &[]).await.expect(400, "key already exists");

    let d = c.get("/v1/key/describe/new-key").await;
    d.ok();
    let v = d.json();
    assert_eq!(v["name"], "new-key");
    // The name every Go client generation decodes (v0.22 rejects "AES256").
    assert_eq!(v["algorithm"], "AES256-GCM_SHA256");
    assert_eq!(v["created_by"], s.admin.id.as_str());
    assert!(v["created_at"].as_str().unwrap().contains('T'));
    assert!(d.text().ends_with('\n'));
    assert_eq!(d.content_type, "application/json");

    c.get("/v1/key/describe/missing").await.expect(404, "key does not exist");
    c.delete("/v1/key/delete/new-key").await.ok();
    c.delete("/v1/key/delete/new-key").await.expect(404, "key does not exist");
    c.get("/v1/key/describe/new-key").await.expect(404, "key does not exist");
}

#[tokio::test]
async fn encrypt_decrypt_generate_round_trip_with_context() {
    let s = TestServer::start("");
    let c = s.admin_client();
    c.put_empty("/v1/key/create/k").await.ok();
    let ct = c.encrypt("k", b"hello world", Some(b"ctx")).await;
    assert_eq!(ct.len(), 11 + 16 + 16 + 12, "raw format: ct||tag||iv||nonce");
    let r = c.decrypt("k", &ct, Some(b"ctx")).await;
    r.ok();
    assert_eq!(unb64(r.json()["plaintext"].as_str().unwrap()), b"hello world");
    c.decrypt("k", &ct, Some(b"other")).await.expect(400, "decryption failed: ciphertext is not authentic");
    c.decrypt("k", &ct, None).await.expect(400, "decryption failed: ciphertext is not authentic");

    // Generate: with and without a body, old (POST) and new (PUT).
    for (method, body) in [("PUT", None), ("PUT", Some(json!({"context": b64(b"c")}))), ("POST", Some(json!({})))] {
        let r = c
            .send(method, "/v1/key/generate/k", body.as_ref().map(|b| b.to_string().into_bytes()).as_deref(), &[])
            .await;
        r.ok();
        let v = r.json();
        let plain = unb64(v["plaintext"].as_str().unwrap());
        assert_eq!(plain.len(), 32);
        let ctx = body.as_ref().and_then(|b| b["context"].as_str()).map(unb64);
        let d = c.decrypt("k", &unb64(v["ciphertext"].as_str().unwrap()), ctx.as_deref()).await;
        d.ok();
        assert_eq!(unb64(d.json()["plaintext"].as_str().unwrap()), plain);
    }
    c.put("/v1/key/encrypt/missing", &json!({"plaintext": ""})).await.expect(404, "key does not exist");
}

/// Whatever encrypt and generate answer, decrypt accepts: the largest
/// plaintext (and context) an encrypt body can carry makes a ciphertext whose
/// decrypt body is larger than 1 MiB, and it still decrypts, alone and in a
/// bulk call; one byte more plaintext is refused by encrypt, not by decrypt.
#[tokio::test]
async fn the_largest_ciphertext_encrypt_makes_decrypts() {
    const MIB: usize = 1 << 20;
    let s = TestServer::start("");
    let c = s.admin_client();
    c.put_empty("/v1/key/create/big").await.ok();
    let body_of = |plain: usize, ctx: usize| {
        json!({"plaintext": b64(&vec![7u8; plain]), "context": b64(&vec![9u8; ctx])}).to_string().into_bytes()
    };
    // Half and half: the plaintext and the context both grow in the answer.
    for (plain, ctx) in [(MIB / 4 * 3 - 30, 0), (MIB / 8 * 3 - 30, MIB / 8 * 3 - 30)] {
        let mut plain = plain;
        while body_of(plain + 3, ctx).len() <= MIB {
            plain += 3;
        }
        let body = body_of(plain, ctx);
        assert!(body.len() <= MIB && body_of(plain + 3, ctx).len() > MIB);
        let r = c.send("PUT", "/v1/key/encrypt/big", Some(&body), &[]).await;
        r.ok();
        let ct = r.json()["ciphertext"].as_str().unwrap().to_string();
        let decrypt = json!({"ciphertext": ct, "context": b64(&vec![9u8; ctx])});
        assert!(decrypt.to_string().len() > MIB, "the decrypt body must exceed 1 MiB for this test to mean anything");
        let d = c.put("/v1/key/decrypt/big", &decrypt).await;
        d.ok();
        assert_eq!(unb64(d.json()["plaintext"].as_str().unwrap()).len(), plain);
        let bulk = c.post("/v1/key/bulk/decrypt/big", &json!([decrypt])).await;
        bulk.ok();
        assert_eq!(unb64(bulk.json()[0]["plaintext"].as_str().unwrap()).len(), plain);
        let over = c.send("PUT", "/v1/key/encrypt/big", Some(&body_of(plain + 3, ctx)), &[]).await;
        assert_eq!(over.status, 400, "{}", over.text());
    }
    // Generate with the largest context.
    let mut ctx = MIB / 4 * 3 - 30;
    while json!({"context": b64(&vec![1u8; ctx + 3])}).to_string().len() <= MIB {
        ctx += 3;
    }
    let g = c.put("/v1/key/generate/big", &json!({"context": b64(&vec![1u8; ctx])})).await;
    g.ok();
    let d = c
        .put("/v1/key/decrypt/big", &json!({"ciphertext": g.json()["ciphertext"], "context": b64(&vec![1u8; ctx])}))
        .await;
    d.ok();
    assert_eq!(d.json()["plaintext"], g.json()["plaintext"]);
}

/// Decrypts a server ciphertext with code written here from the spec, not the
/// server's crypto module: per-message key HMAC-SHA256(key, iv), AES-256-GCM.
fn independent_aes_decrypt(key: &[u8], ciphertext: &[u8], context: &[u8]) -> Vec<u8> {
    let n = ciphertext.len();
    let (sealed, rest) = ciphertext.split_at(n - 28);
    let (iv, nonce) = rest.split_at(16);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    mac.update(iv);
    let derived = mac.finalize().into_bytes();
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(&derived).unwrap();
    cipher.decrypt(aes_gcm::Nonce::from_slice(nonce), Payload { msg: sealed, aad: context }).unwrap()
}

/// ChaCha20: per-message key HChaCha20(key, iv), IETF ChaCha20-Poly1305.
fn independent_chacha_decrypt(key: &[u8], ciphertext: &[u8], context: &[u8]) -> Vec<u8> {
    use chacha20poly1305::ChaCha20Poly1305;
    let n = ciphertext.len();
    let (sealed, rest) = ciphertext.split_at(n - 28);
    let (iv, nonce) = rest.split_at(16);
    let derived = chacha20::hchacha::<chacha20::cipher::consts::U10>(key.into(), iv.into());
    let cipher = ChaCha20Poly1305::new_from_slice(&derived).unwrap();
    cipher.decrypt(chacha20poly1305::Nonce::from_slice(nonce), Payload { msg: sealed, aad: context }).unwrap()
}

#[tokio::test]
async fn server_ciphertexts_decrypt_with_an_independent_implementation() {
    let s = TestServer::start("");
    let c = s.admin_client();
    let aes_key = [0x42u8; 32];
    let chacha_key = [0x17u8; 32];
    c.put("/v1/key/import/aes", &json!({"key": b64(&aes_key), "cipher": "AES256"})).await.ok();
    c.put("/v1/key/import/cha", &json!({"key": b64(&chacha_key), "cipher": "ChaCha20"})).await.ok();
    assert_eq!(c.get("/v1/key/describe/cha").await.json()["algorithm"], "XCHACHA20-POLY1305");
    for plaintext in [&b""[..], b"x", &[7u8; 1000]] {
        let ct = c.encrypt("aes", plaintext, Some(b"ctx")).await;
        assert_eq!(independent_aes_decrypt(&aes_key, &ct, b"ctx"), plaintext);
        let ct = c.encrypt("cha", plaintext, None).await;
        assert_eq!(independent_chacha_decrypt(&chacha_key, &ct, b""), plaintext);
    }
}

#[tokio::test]
async fn vectors_in_all_three_formats_decrypt() {
    let s = TestServer::start("");
    let c = s.admin_client();
    let v = vectors();
    let mut checked = 0;
    for (i, case) in v["decrypt"].as_array().unwrap().iter().enumerate() {
        let name = format!("vec-{i}");
        let r =
            c.put(&format!("/v1/key/import/{name}"), &json!({"key": case["key"], "cipher": case["algorithm"]})).await;
        r.ok();
        let ctx = case["context"].as_str().map(unb64);
        for format in ["ciphertext_raw", "ciphertext_msgpack", "ciphertext_json"] {
            let r = c.decrypt(&name, &unb64(case[format].as_str().unwrap()), ctx.as_deref()).await;
            assert_eq!(r.status, 200, "{} {format}: {}", case["name"], r.text());
            assert_eq!(r.json()["plaintext"], case["plaintext"], "{} {format}", case["name"]);
            checked += 1;
        }
    }
    for (i, case) in v["decrypt_kes_tests"].as_array().unwrap().iter().enumerate() {
        let name = format!("kes-{i}");
        c.put(&format!("/v1/key/import/{name}"), &json!({"key": case["key"], "cipher": case["algorithm"]})).await.ok();
        let ctx = case["context"].as_str().map(unb64);
        let r = c.decrypt(&name, &unb64(case["ciphertext"].as_str().unwrap()), ctx.as_deref()).await;
        assert_eq!(r.status, 200, "{}: {}", case["name"], r.text());
        assert_eq!(r.json()["plaintext"], case["plaintext"]);
        checked += 1;
    }
    for (i, case) in v["tampered"].as_array().unwrap().iter().enumerate() {
        let name = format!("bad-{i}");
        c.put(&format!("/v1/key/import/{name}"), &json!({"key": case["key"], "cipher": case["algorithm"]})).await.ok();
        let ctx = case["context"].as_str().map(unb64);
        c.decrypt(&name, &unb64(case["ciphertext"].as_str().unwrap()), ctx.as_deref())
            .await
            .expect(400, "decryption failed: ciphertext is not authentic");
        checked += 1;
    }
    assert!(checked > 100, "only {checked} vectors checked");
}

#[tokio::test]
async fn import_old_and_new_shapes_and_their_errors() {
    let s = TestServer::start("");
    let c = s.admin_client();
    let key = b64(&[1u8; 32]);
    c.post("/v1/key/import/old", &json!({"bytes": key, "algorithm": "AES256-GCM_SHA256"})).await.ok();
    c.post("/v1/key/import/old2", &json!({"bytes": key, "algorithm": "XCHACHA20-POLY1305"})).await.ok();
    c.post("/v1/key/import/old3", &json!({"bytes": key, "algorithm": "DES"})).await.expect(400, "invalid algorithm");
    c.post("/v1/key/import/old4", &json!({"bytes": b64(&[1u8; 16]), "algorithm": ""}))
        .await
        .expect(400, "invalid key size");
    c.put("/v1/key/import/new", &json!({"key": key, "cipher": "AES256"})).await.ok();
    c.put("/v1/key/import/new", &json!({"key": key, "cipher": "AES256"})).await.expect(400, "key already exists");
    c.put("/v1/key/import/n2", &json!({"key": key, "cipher": "DES"}))
        .await
        .expect(406, "algorithm 'DES' is not supported");
    c.put("/v1/key/import/n3", &json!({"key": b64(&[1u8; 31]), "cipher": "ChaCha20"}))
        .await
        .expect(406, "invalid key size for 'ChaCha20'");
    c.put("/v1/key/import/n4", &json!({"nothing": 1})).await.expect(400, "invalid import key request body");
    // Same key bytes, so the same plaintext decrypts across keys.
    let ct = c.encrypt("old", b"p", None).await;
    c.decrypt("new", &ct, None).await.ok();
    assert!(c.get("/v1/key/describe/n2").await.status == 404);
}

#[tokio::test]
async fn hmac_matches_an_independent_hmac_and_old_keys_get_409() {
    let s = TestServer::start("");
    let c = s.admin_client();
    c.put_empty("/v1/key/create/h").await.ok();
    let a = c.put("/v1/key/hmac/h", &json!({"message": b64(b"msg")})).await;
    a.ok();
    let mac = unb64(a.json()["hmac"].as_str().unwrap());
    assert_eq!(mac.len(), 32);
    let b = c.put("/v1/key/hmac/h", &json!({"message": b64(b"msg")})).await;
    assert_eq!(b.json()["hmac"], a.json()["hmac"], "HMAC is deterministic");
    let other = c.put("/v1/key/hmac/h", &json!({"message": b64(b"msh")})).await;
    assert_ne!(other.json()["hmac"], a.json()["hmac"]);
    c.put("/v1/key/hmac/none", &json!({"message": ""})).await.expect(404, "key does not exist");
    // An independent check of the HMAC needs the HMAC key, which never leaves
    // the server; the vectors check the computation itself (hmac section) in
    // the crypto unit tests. Here: the message changes the tag, the key too.
    c.put_empty("/v1/key/create/h2").await.ok();
    let z = c.put("/v1/key/hmac/h2", &json!({"message": b64(b"msg")})).await;
    assert_ne!(z.json()["hmac"], a.json()["hmac"]);
}

#[tokio::test]
async fn bulk_decrypt_old_generation() {
    let s = TestServer::start("");
    let c = s.admin_client();
    c.put_empty("/v1/key/create/b").await.ok();
    let one = c.encrypt("b", b"one", None).await;
    let two = c.encrypt("b", b"two", Some(b"c")).await;
    let r = c
        .post(
            "/v1/key/bulk/decrypt/b",
            &json!([{"ciphertext": b64(&one)}, {"ciphertext": b64(&two), "context": b64(b"c")}]),
        )
        .await;
    r.ok();
    let v = r.json();
    assert_eq!(unb64(v[0]["plaintext"].as_str().unwrap()), b"one");
    assert_eq!(unb64(v[1]["plaintext"].as_str().unwrap()), b"two");
    c.post("/v1/key/bulk/decrypt/b", &json!([{"ciphertext": b64(&one)}, {"ciphertext": b64(&two)}]))
        .await
        .expect(400, "decryption failed: ciphertext is not authentic");
    let many: Vec<_> = (0..1001).map(|_| json!({"ciphertext": b64(&one)})).collect();
    c.post("/v1/key/bulk/decrypt/b", &json!(many)).await.expect(400, "too many ciphertexts");
}

#[tokio::test]
async fn listing_new_json_by_prefix_and_old_ndjson_by_glob() {
    let s = TestServer::start("");
    let c = s.admin_client();
    for n in ["app-1", "app-2", "app-10", "other", "apple"] {
        c.put_empty(&format!("/v1/key/create/{n}")).await.ok();
    }
    // New: JSON, prefix, sorted.
    // (KES refuses a pattern ending in `-`: names cannot end in one.)
    c.get_json("/v1/key/list/app-").await.expect(400, "listing pattern 'app-' is empty, too long or is invalid");
    let r = c.get_json("/v1/key/list/app-*").await;
    r.ok();
    assert_eq!(r.json(), json!({"names": ["app-1", "app-10", "app-2"]}));
    let r = c.get_json("/v1/key/list/*").await;
    assert_eq!(r.json()["names"].as_array().unwrap().len(), 5);
    let r = c.get_json("/v1/key/list/app*").await;
    assert_eq!(r.json()["names"].as_array().unwrap().len(), 4);
    c.get_json("/v1/key/list/a*b").await.expect(400, "listing pattern 'a*b' is empty, too long or is invalid");
    // Old: ndjson, glob.
    let r = c.send("GET", "/v1/key/list/*-1*", None, &[("accept", "application/x-ndjson")]).await;
    r.ok();
    assert_eq!(r.content_type, "application/x-ndjson");
    let mut names: Vec<_> = r.lines().iter().map(|l| l["name"].as_str().unwrap().to_string()).collect();
    names.sort();
    assert_eq!(names, ["app-1", "app-10"]);
    let r = c.send("GET", "/v1/key/list/*-1", None, &[("accept", "application/x-ndjson")]).await;
    assert_eq!(r.lines(), [json!({"name": "app-1"})]);
    let r = c.send("GET", "/v1/key/list/app", None, &[("accept", "application/x-ndjson")]).await;
    assert_eq!(r.lines().len(), 4, "no glob characters: a prefix, as newer clients mean it");
    // No Accept header: ndjson, which every Go client reads.
    let r = c.get("/v1/key/list/*").await;
    assert_eq!(r.content_type, "application/x-ndjson");
    assert_eq!(r.lines().len(), 5);
    let r = c.get("/v1/key/list/nomatch*").await;
    r.ok();
    assert!(r.body.is_empty());
}

#[tokio::test]
async fn json_listing_pages_at_1024() {
    let s = TestServer::start("");
    let c = s.admin_client();
    for i in 0..1030 {
        c.put_empty(&format!("/v1/key/create/k{i:05}")).await.ok();
    }
    let r = c.get_json("/v1/key/list/k").await;
    let v = r.json();
    assert_eq!(v["names"].as_array().unwrap().len(), 1024);
    assert_eq!(v["continue_at"], "k01024");
}

/// Every answer says its length, as KES's (Go) server does: clients that
/// read exactly `content-length` bytes (or reuse the connection after it)
/// depend on it, for empty answers (`0`) as much as for JSON ones.
#[tokio::test]
async fn answers_carry_their_content_length() {
    let s = TestServer::start("");
    let c = s.admin_client();
    let length = |r: &crate::harness::Resp| -> Option<usize> {
        r.headers.get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok())
    };
    let created = c.put_empty("/v1/key/create/sized").await;
    created.ok();
    assert_eq!(length(&created), Some(0), "empty answer: {:?}", created.headers);
    let json = c.get("/v1/key/describe/sized").await;
    json.ok();
    assert_eq!(length(&json), Some(json.body.len()), "JSON answer: {:?}", json.headers);
    let error = c.get("/v1/key/describe/missing").await;
    assert_eq!(error.status, 404);
    assert_eq!(length(&error), Some(error.body.len()), "error answer: {:?}", error.headers);
}
