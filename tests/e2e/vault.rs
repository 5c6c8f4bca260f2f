//! The bundled `vault` keystore against a real OpenBao: keys round-trip in
//! KES's exact layout on K/V v1 and v2, with a token and with AppRole (and
//! Transit wrapping); keys KES wrote are served and decrypt KES's
//! ciphertexts; a sealed OpenBao leaves cached keys serving and answers the
//! rest 503 until it is unsealed, without restarting keyward.

use serde_json::{json, Value};

use crate::harness::{b64, unb64, vectors, Setup, TestServer};
use crate::openbao::OpenBao;

fn server(bao: &OpenBao, keystore: &str, extra: &str) -> TestServer {
    TestServer::start_with(Setup {
        keystore: Some(bao.keystore(keystore)),
        extra_config: extra.to_string(),
        ..Setup::default()
    })
}

/// Create, duplicate, describe, list, encrypt/decrypt, delete, and what
/// OpenBao holds afterwards: one secret per key at KES's path, whose data
/// maps the key's name to its stored value.
async fn round_trip(s: &TestServer, bao: &OpenBao, read_path: &str, wrapped: bool) {
    let c = s.admin_client();
    c.put_empty("/v1/key/create/app-key").await.ok();
    c.put_empty("/v1/key/create/app-key").await.expect(400, "key already exists");
    c.put_empty("/v1/key/create/other").await.ok();
    let d = c.get("/v1/key/describe/app-key").await;
    assert_eq!(d.ok().json()["created_by"], s.admin.id.as_str());
    let names = c.get_json("/v1/key/list/").await.json();
    assert_eq!(names["names"], json!(["app-key", "other"]), "{names}");
    let ct = c.encrypt("app-key", b"a secret", Some(b"ctx")).await;
    let plain = c.decrypt("app-key", &ct, Some(b"ctx")).await.json();
    assert_eq!(unb64(plain["plaintext"].as_str().unwrap()), b"a secret");

    let secret = bao.call("GET", &format!("{read_path}app-key"), Value::Null).await;
    let data = if read_path.contains("/data/") { &secret["data"]["data"] } else { &secret["data"] };
    let stored = data["app-key"].as_str().unwrap_or_else(|| panic!("no value named after the key: {secret}"));
    if wrapped {
        assert!(stored.starts_with("vault:v1:"), "not a Transit ciphertext: {stored}");
    } else {
        // KES's stored-key encoding: base64 of the protobuf message.
        assert!(stored.starts_with("CiQK"), "not KES's encoding: {stored}");
    }
    c.delete("/v1/key/delete/other").await.ok();
    c.get("/v1/key/describe/other").await.expect(404, "key does not exist");
    let (status, _) = bao.try_call("GET", &format!("{read_path}other"), Value::Null).await;
    assert_eq!(status, 404, "the deleted key is still in OpenBao");
}

#[tokio::test]
async fn keys_round_trip_in_kes_layout_on_kv_v1_and_v2() {
    let Some(bao) = OpenBao::start("keys_round_trip_in_kes_layout_on_kv_v1_and_v2").await else { return };
    // K/V v1, a static token.
    let s = server(&bao, "engine = \"kv\"\nprefix = \"keyward\"\ntoken = \"root\"\n", "");
    round_trip(&s, &bao, "kv/keyward/", false).await;
    drop(s);
    // K/V v2, AppRole with KES's policy, Transit wrapping.
    let (id, secret) = bao.approle().await;
    let config = format!(
        "engine = \"kv2\"\nversion = \"v2\"\nprefix = \"keyward\"\ntransit = {{ key = \"keyward\" }}\n\
         approle = {{ id = \"{id}\", secret = \"{secret}\" }}\n"
    );
    let s = server(&bao, &config, "");
    round_trip(&s, &bao, "kv2/data/keyward/", true).await;
    let log = s.stderr();
    assert!(!log.contains(&secret), "the secret_id reached the log");
}

/// Keys written by KES (with plain HTTP, KES's path and value formats: the
/// legacy JSON and the base64 protobuf) are listed, described and decrypt
/// the ciphertexts made with them.
#[tokio::test]
async fn keys_kes_wrote_into_vault_are_served_and_decrypt_kes_ciphertexts() {
    let Some(bao) = OpenBao::start("keys_kes_wrote_into_vault_are_served_and_decrypt_kes_ciphertexts").await else {
        return;
    };
    let v = vectors();
    let stored = v["stored_keys"].as_array().unwrap().iter().find(|k| k["format"] == "protobuf-base64").unwrap();
    bao.call("PUT", "kv/kes-pb", json!({"kes-pb": stored["raw"]})).await;
    let mut decrypted = 0;
    for (i, case) in v["decrypt"].as_array().unwrap().iter().enumerate() {
        let name = format!("kes-json-{i}");
        let value = json!({"bytes": case["key"], "algorithm": case["algorithm"],
                           "created_at": "2024-01-12T10:39:20.886816Z", "created_by": "kes"})
        .to_string();
        bao.call("PUT", &format!("kv/{name}"), json!({ name.clone(): value })).await;
    }
    let s = server(&bao, "engine = \"kv\"\ntoken = \"root\"\n", "");
    let c = s.admin_client();
    let d = c.get("/v1/key/describe/kes-pb").await;
    assert_eq!(d.ok().json()["created_by"], stored["created_by"]);
    assert_eq!(d.json()["created_at"], stored["created_at"]);
    for (i, case) in v["decrypt"].as_array().unwrap().iter().enumerate() {
        let name = format!("kes-json-{i}");
        let context = case["context"].as_str().map(unb64);
        for format in ["ciphertext_raw", "ciphertext_msgpack", "ciphertext_json"] {
            let Some(ct) = case[format].as_str() else { continue };
            let r = c.decrypt(&name, &unb64(ct), context.as_deref()).await;
            assert_eq!(r.ok().json()["plaintext"], case["plaintext"], "{name} {format}");
            decrypted += 1;
        }
    }
    assert!(decrypted >= 10, "only {decrypted} KES ciphertexts checked");
    let listed = c.get_json("/v1/key/list/kes*").await.json();
    assert_eq!(listed["names"].as_array().unwrap().len(), v["decrypt"].as_array().unwrap().len() + 1);
    // HMAC works with the protobuf key (it carries an HMAC key).
    c.put("/v1/key/hmac/kes-pb", &json!({"message": b64(b"m")})).await.ok();
}

/// OpenBao sealed during service: a cached key keeps serving (within
/// `cache.expiry.offline`, from the moment the outage is seen), an uncached
/// one answers 503 with the reason,
/// `/v1/status` reports the keystore unreachable; unsealed, everything works
/// again without restarting keyward.
#[tokio::test]
async fn a_sealed_vault_leaves_cached_keys_serving_and_recovers() {
    let Some(bao) = OpenBao::start("a_sealed_vault_leaves_cached_keys_serving_and_recovers").await else { return };
    let s = server(&bao, "engine = \"kv\"\ntoken = \"root\"\n", "[cache.expiry]\nany = \"3s\"\noffline = \"1h\"\n");
    let c = s.admin_client();
    c.put_empty("/v1/key/create/cached").await.ok();
    c.encrypt("cached", b"x", None).await;
    // A key keyward has never read (another node created it).
    let v = vectors();
    let stored =
        &v["stored_keys"].as_array().unwrap().iter().find(|k| k["format"] == "protobuf-base64").unwrap()["raw"];
    bao.call("PUT", "kv/cold", json!({"cold": stored})).await;
    bao.seal().await;
    // The outage is seen (by a request or the periodic probe) ...
    let status = c.get("/v1/status").await;
    assert_eq!(status.ok().json()["keystore_unreachable"], true, "{}", status.text());
    // ... and from then on, past `any`, the cached key still serves.
    tokio::time::sleep(std::time::Duration::from_millis(3500)).await;
    c.encrypt("cached", b"still", None).await;
    let r = c.put("/v1/key/encrypt/cold", &json!({"plaintext": b64(b"x")})).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.message().contains("keystore unavailable") && r.message().contains("sealed"), "{}", r.message());
    let r = c.put_empty("/v1/key/create/new").await;
    assert_eq!(r.status, 503, "{}", r.text());
    bao.unseal().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let r = c.put_empty("/v1/key/create/new").await;
        if r.status == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no recovery after unseal: {}", r.text());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    c.encrypt("cold", b"x", None).await;
    let status = c.get("/v1/status").await.json();
    assert!(!status["keystore_unreachable"].as_bool().unwrap_or(false), "{status}");
}

/// AppRole tokens living 5 s, renewable up to 15 s, under 45 s of traffic
/// that reaches Vault every second (the cache expires keys after 1 s): not
/// one request fails, the token is renewed before it expires and replaced
/// by a new login before its maximum TTL, and the pool's instances share it
/// (a handful of logins, not one per instance or per request). Counted from
/// OpenBao's own token records (accessors and their renewal times).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_tokens_are_renewed_and_replaced_without_a_failed_request() {
    let test = "short_lived_tokens_are_renewed_and_replaced_without_a_failed_request";
    let Some(bao) = OpenBao::start(test).await else { return };
    let (id, secret) = bao.approle_with_ttl("short", "5s", "15s").await;
    let config = format!(
        "engine = \"kv2\"\nversion = \"v2\"\napprole = {{ engine = \"approle\", id = \"{id}\", secret = \"{secret}\" }}\n"
    );
    let s = server(&bao, &config, "[cache.expiry]\nany = \"1s\"\nunused = \"1s\"\n");
    let c = s.admin_client();
    c.put_empty("/v1/key/create/k0").await.ok();
    let started = std::time::Instant::now();
    let (mut requests, mut failures, mut created) = (0, Vec::new(), 1);
    let mut tokens = std::collections::BTreeMap::<String, bool>::new();
    let mut most_alive = 0;
    while started.elapsed() < std::time::Duration::from_secs(45) {
        let r = c.put("/v1/key/encrypt/k0", &json!({"plaintext": b64(b"x")})).await;
        requests += 1;
        if r.status != 200 {
            failures.push(format!("{:?}: {} {}", started.elapsed(), r.status, r.text()));
        }
        if requests % 5 == 0 {
            let alive = bao.role_tokens("short").await;
            most_alive = most_alive.max(alive.len());
            for (accessor, renewed) in alive {
                *tokens.entry(accessor).or_default() |= renewed;
            }
        }
        if requests % 10 == 0 {
            let r = c.put_empty(&format!("/v1/key/create/k{created}")).await;
            created += 1;
            if r.status != 200 {
                failures.push(format!("{:?}: create {} {}", started.elapsed(), r.status, r.text()));
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(failures.is_empty(), "{} of {requests} requests failed:\n{}", failures.len(), failures.join("\n"));
    let logins = tokens.len();
    let renewed = tokens.values().filter(|r| **r).count();
    eprintln!(
        "{requests} requests, {created} keys; {logins} tokens issued, {renewed} renewed, at most {most_alive} alive"
    );
    // 45 s at a 15 s maximum TTL: a new login every 10-15 s, each token
    // renewed before its 5 s run out; never more than the current token and
    // the one it replaced.
    assert!((3..=8).contains(&logins), "{logins} logins in 45 s of 15 s tokens");
    assert!(renewed >= logins - 1, "only {renewed} of {logins} tokens were renewed");
    assert!(most_alive <= 2, "{most_alive} tokens alive at once: instances do not share the token");
    assert!(!s.stderr().contains(&secret), "the secret_id reached the log");
}

/// A CA-signed certificate for `names` (client or server), PEM cert and key.
fn signed(issuer: &rcgen::Issuer<'static, rcgen::KeyPair>, names: &[&str]) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = rcgen::CertificateParams::new(names).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "keyward test");
    (params.signed_by(&key, issuer).unwrap().pem(), key.serialize_pem())
}

/// An OpenBao listener that requires a client certificate (mutual TLS):
/// keyward presents the one `tls.cert`/`tls.key` name (the host does, the
/// plugin never sees the key) and serves keys over it; without one the
/// handshake is refused and keyward answers 503 naming the TLS failure.
#[tokio::test]
async fn the_vault_keystore_presents_a_client_certificate_when_openbao_requires_one() {
    let test = "the_vault_keystore_presents_a_client_certificate_when_openbao_requires_one";
    let dir = crate::harness::TempDir::new("mtls");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "vault test CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_pem = ca_params.self_signed(&ca_key).unwrap().pem();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let (server_pem, server_key) = signed(&issuer, &["127.0.0.1"]);
    let (client_pem, client_key) = signed(&issuer, &[]);
    let file = |name: &str, text: &str| {
        let path = dir.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let (ca, server_cert, server_key) =
        (file("ca.pem", &ca_pem), file("server.pem", &server_pem), file("server.key", &server_key));
    let (client_cert, client_key) = (file("client.pem", &client_pem), file("client.key", &client_key));
    let port = crate::harness::free_port();
    let listener = format!(
        "listener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  tls_cert_file = \"{server_cert}\"\n  \
         tls_key_file = \"{server_key}\"\n  tls_client_ca_file = \"{ca}\"\n  \
         tls_require_and_verify_client_cert = true\n}}\n"
    );
    let Some(_bao) = OpenBao::start_with(test, Some(&listener)).await else { return };
    let keystore = |tls: &str| {
        format!(
            "[keystore]\nplugin = \"vault\"\n[keystore.config]\nendpoint = \"https://127.0.0.1:{port}\"\n\
             engine = \"kv\"\ntoken = \"root\"\ntls = {{ {tls} }}\n"
        )
    };
    let with_cert = format!("ca = \"{ca}\", cert = \"{client_cert}\", key = \"{client_key}\"");
    let s = TestServer::start_with(Setup { keystore: Some(keystore(&with_cert)), ..Setup::default() });
    let c = s.admin_client();
    c.put_empty("/v1/key/create/over-mtls").await.ok();
    let ct = c.encrypt("over-mtls", b"x", None).await;
    c.decrypt("over-mtls", &ct, None).await.ok();
    drop(s);

    // The same without the client certificate: the handshake is refused.
    let without =
        TestServer::try_start(Setup { keystore: Some(keystore(&format!("ca = \"{ca}\""))), ..Setup::default() });
    if let Ok(s) = without {
        let r = s.admin_client().put_empty("/v1/key/create/no-cert").await;
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(r.message().contains("keystore unavailable"), "{}", r.message());
    }
}
