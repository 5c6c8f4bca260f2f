//! Secrets hygiene, end to end: key bytes, plaintexts, data keys, the seal
//! key, the TLS key and its password never reach the server's logs, audit
//! events (stdout, the audit-file plugin, `/v1/log/audit`), the error log
//! (stderr, `/v1/log/error`), error answers, or any file the server writes —
//! and a plaintext appears only in the HTTP response it belongs to.
//!
//! The session runs with the most verbose log filter, so a secret printed at
//! `trace` level is caught as well. Each secret is searched for raw, as hex,
//! as a decimal byte list (a `Debug`-printed `Vec<u8>`), and as standard and
//! URL-safe base64 at every 3-byte alignment (base64 of a longer buffer that
//! contains the secret shares no prefix with the secret's own base64).
//! [`scanner_finds_every_encoding_and_nothing_else`] shows the scanner finds
//! all of these forms, and every run checks that a harmless canary (a key
//! name) *is* found in each output it scans, so an output the collection
//! silently missed would fail the test rather than pass it.
//!
//! Also here: files holding keys in `--dev` mode are private.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use keyward_core::seal::Seal;
use rcgen::{CertificateParams, DnType, KeyPair};
use serde_json::{json, Value};

use crate::harness::{b64, free_port, toml_str, unb64, vectors, Client, Ident, Resp, Setup, TempDir, TestServer};

// ---- the scanner ----

/// A byte string as one `char` per byte (Latin-1). Substring search on these
/// strings is exact byte-substring search (UTF-8 is self-synchronising), and
/// `str::contains` is fast even in a debug build.
fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

/// Something that must not leak, with every form it is searched for in.
struct Secret {
    label: String,
    forms: Vec<(&'static str, String)>,
}

/// The encodings a leak of `bytes` could take in text output.
fn forms(bytes: &[u8]) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("raw", latin1(bytes)),
        ("hex", hex::encode(bytes)),
        ("HEX", hex::encode_upper(bytes)),
        // `{:?}` of a byte array or Vec: "[12, 250, ...]".
        ("decimal", bytes.iter().take(16).map(|b| b.to_string()).collect::<Vec<_>>().join(", ")),
    ];
    for (name, engine) in [("base64", &STANDARD_NO_PAD), ("base64url", &URL_SAFE_NO_PAD)] {
        // Embedded at any position, the secret's bytes from the first 3-byte
        // boundary inside it onwards encode to the same characters; only the
        // whole groups are stable, so the needle stops at the last one.
        let mut any = false;
        for offset in 0..3 {
            let whole = bytes.len().saturating_sub(offset) / 3 * 3;
            if whole * 4 / 3 >= 16 {
                out.push((name, engine.encode(&bytes[offset..offset + whole])));
                any = true;
            }
        }
        if !any {
            out.push((name, engine.encode(bytes)));
        }
    }
    out
}

impl Secret {
    fn new(label: impl Into<String>, bytes: &[u8]) -> Secret {
        assert!(bytes.len() >= 12, "a secret this short could match by chance");
        Secret { label: label.into(), forms: forms(bytes) }
    }

    /// The first form of this secret found in `haystack` (Latin-1, see [`latin1`]).
    fn found_in(&self, haystack: &str) -> Option<&'static str> {
        self.forms.iter().find(|(_, needle)| haystack.contains(needle.as_str())).map(|(form, _)| *form)
    }
}

/// One output of the server: a log, a file, a stream, an HTTP response.
struct Source {
    name: String,
    text: String,
    /// Labels of the secrets this output may carry (a decrypt response carries
    /// its plaintext).
    allowed: Vec<String>,
}

/// Every (output, secret, form) where a secret appears where it must not.
fn leaks(sources: &[Source], secrets: &[Secret]) -> Vec<String> {
    let mut out = Vec::new();
    for source in sources {
        for secret in secrets {
            if source.allowed.contains(&secret.label) {
                continue;
            }
            if let Some(form) = secret.found_in(&source.text) {
                out.push(format!("{} ({form}) in {}", secret.label, source.name));
            }
        }
    }
    out
}

#[test]
fn scanner_finds_every_encoding_and_nothing_else() {
    let secret: Vec<u8> = (0..32).map(|i| (i * 37 + 11) as u8).collect();
    let s = Secret::new("s", &secret);
    let found = |hay: &[u8]| s.found_in(&latin1(hay));
    // Embedded at every alignment in every form a log line could carry.
    for pad in 0..4usize {
        let mut buf = vec![0xEEu8; pad];
        buf.extend_from_slice(&secret);
        buf.extend_from_slice(b"tail");
        let line = |x: String| format!("level=debug msg=\"value: {x}\" more").into_bytes();
        assert_eq!(found(&buf), Some("raw"));
        assert!(found(&line(STANDARD.encode(&buf))).is_some(), "base64 at pad {pad}");
        assert!(found(&line(URL_SAFE_NO_PAD.encode(&buf))).is_some(), "base64url at pad {pad}");
        assert!(found(&line(hex::encode(&buf))).is_some(), "hex at pad {pad}");
        assert!(found(&line(hex::encode_upper(&buf))).is_some(), "HEX at pad {pad}");
        assert!(found(&line(format!("{:?}", buf))).is_some(), "Debug Vec<u8> at pad {pad}");
        // Inside JSON, as an audit event or error body would hold it.
        let event = json!({ "message": STANDARD.encode(&buf) }).to_string();
        assert!(found(event.as_bytes()).is_some(), "JSON at pad {pad}");
    }
    // A Debug-printed fixed array (`Zeroizing<[u8; 32]>`).
    let array: [u8; 32] = secret.clone().try_into().unwrap();
    assert!(found(format!("{array:?}").as_bytes()).is_some());
    // A different value of the same shape is not reported.
    let mut other = secret.clone();
    other[0] ^= 1;
    other[16] ^= 1;
    other[31] ^= 1;
    let hay = [STANDARD.encode(&other), hex::encode(&other), format!("{other:?}")].join(" ");
    assert_eq!(found(hay.as_bytes()), None, "{hay}");
    // leaks() honours what a source may carry.
    let sources = [
        Source { name: "a".into(), text: latin1(hex::encode(&secret).as_bytes()), allowed: vec![] },
        Source { name: "b".into(), text: latin1(&secret), allowed: vec!["s".into()] },
    ];
    assert_eq!(leaks(&sources, &[Secret::new("s", &secret)]), vec!["s (hex) in a"]);
}

// ---- helpers ----

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    b
}

/// Every file under `dir` (recursively) as (path, bytes), skipping `except`.
fn files_under(dir: &Path, except: &[PathBuf]) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if except.contains(&p) {
                continue;
            }
            if p.is_dir() {
                todo.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push((p, bytes));
            }
        }
    }
    out
}

fn varint(b: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&first, rest) = b.split_first()?;
        *b = rest;
        v |= u64::from(first & 0x7f) << shift;
        if first & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The length-delimited fields of a protobuf message, as (number, bytes).
fn pb_fields(mut b: &[u8]) -> Option<Vec<(u64, &[u8])>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let tag = varint(&mut b)?;
        match tag & 7 {
            0 => {
                varint(&mut b)?;
            }
            2 => {
                let len = usize::try_from(varint(&mut b)?).ok()?;
                if len > b.len() {
                    return None;
                }
                let (field, rest) = b.split_at(len);
                out.push((tag >> 3, field));
                b = rest;
            }
            _ => return None,
        }
    }
    Some(out)
}

/// The secret key and HMAC key bytes inside a KES protobuf key value (base64
/// of `KeyVersion`), read without the host's decoder so the test does not
/// depend on what it checks.
fn stored_key_material(value: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let Ok(raw) = STANDARD.decode(value) else { return Vec::new() };
    let mut out = Vec::new();
    for (field, msg) in pb_fields(&raw).unwrap_or_default() {
        let what = match field {
            1 => "key",
            2 => "hmac",
            _ => continue,
        };
        for (inner, bytes) in pb_fields(msg).unwrap_or_default() {
            if inner == 1 {
                out.push((what, bytes.to_vec()));
            }
        }
    }
    out
}

/// The 32-byte private scalar of a PKCS#8 P-256 key (what rcgen generates):
/// the OCTET STRING after `version 1` in the embedded `ECPrivateKey`.
fn p256_scalar(pkcs8_der: &[u8]) -> Vec<u8> {
    let marker = [0x02, 0x01, 0x01, 0x04, 0x20];
    let at = pkcs8_der.windows(marker.len()).position(|w| w == marker).expect("a P-256 PKCS#8 key");
    pkcs8_der[at + marker.len()..at + marker.len() + 32].to_vec()
}

/// Follows an ndjson log stream into a buffer until the server goes away. The
/// harness client gives up after 30 s, so this one has no timeout.
async fn follow(s: &TestServer, path: &str) -> (Arc<Mutex<Vec<u8>>>, tokio::task::JoinHandle<()>) {
    let ca = reqwest::Certificate::from_pem(s.server_cert_pem.as_bytes()).unwrap();
    let id = reqwest::Identity::from_pem(format!("{}\n{}", s.admin.cert_pem, s.admin.key_pem).as_bytes()).unwrap();
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .identity(id)
        .resolve("localhost", s.addr)
        .build()
        .unwrap();
    let mut r = http.get(s.url(path)).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = buf.clone();
    let task = tokio::spawn(async move {
        while let Ok(Some(chunk)) = r.chunk().await {
            sink.lock().unwrap().extend_from_slice(&chunk);
        }
    });
    (buf, task)
}

/// The admin's session: every request and response is kept for the scan.
struct Session {
    c: Client,
    secrets: Vec<Secret>,
    responses: Vec<Source>,
}

impl Session {
    fn secret(&mut self, label: &str, bytes: &[u8]) {
        self.secrets.push(Secret::new(label, bytes));
    }

    /// Sends a request; the response may carry the secrets labelled `allowed`.
    async fn send(&mut self, method: &str, path: &str, body: Option<&[u8]>, allowed: &[&str]) -> Resp {
        let headers = [("content-type", "application/json")];
        let r = self.c.send(method, path, body, if body.is_some() { &headers[..] } else { &[] }).await;
        let mut text = format!("{} {path} -> {}\n", method, r.status);
        for (k, v) in &r.headers {
            text.push_str(&format!("{k}: {}\n", latin1(v.as_bytes())));
        }
        text.push_str(&latin1(&r.body));
        self.responses.push(Source {
            name: format!("response to {method} {path} ({})", r.status),
            text,
            allowed: allowed.iter().map(|s| s.to_string()).collect(),
        });
        r
    }

    async fn json(&mut self, method: &str, path: &str, body: Value, allowed: &[&str]) -> Resp {
        self.send(method, path, Some(body.to_string().as_bytes()), allowed).await
    }

    /// Encrypts `plaintext` (a secret labelled `label`) with both API
    /// generations (PUT and POST), decrypts each ciphertext with the right
    /// context (the only answers that may carry the plaintext) and with a
    /// wrong one; returns the PUT ciphertext.
    async fn round_trip(&mut self, key: &str, label: &str, plaintext: &[u8]) -> Vec<u8> {
        self.secret(label, plaintext);
        let context = format!("context for {key}");
        let mut first = None;
        for method in ["PUT", "POST"] {
            let body = json!({ "plaintext": b64(plaintext), "context": b64(context.as_bytes()) });
            let r = self.json(method, &format!("/v1/key/encrypt/{key}"), body, &[]).await;
            r.ok();
            let ct = r.json()["ciphertext"].as_str().unwrap().to_string();
            let body = json!({ "ciphertext": ct, "context": b64(context.as_bytes()) });
            let r = self.json(method, &format!("/v1/key/decrypt/{key}"), body, &[label]).await;
            r.ok();
            assert_eq!(unb64(r.json()["plaintext"].as_str().unwrap()), plaintext);
            let body = json!({ "ciphertext": ct, "context": b64(b"another context") });
            let r = self.json(method, &format!("/v1/key/decrypt/{key}"), body, &[]).await;
            r.expect(400, "decryption failed: ciphertext is not authentic");
            first.get_or_insert(unb64(&ct));
        }
        first.unwrap()
    }
}

/// Writes a key value straight into the keystore directory, sealed if the
/// store is sealed, as another server or a restore would have left it.
fn plant(keys: &Path, seal: Option<&Seal>, name: &str, value: &[u8]) {
    let value = match seal {
        Some(seal) => seal.seal(name, value).unwrap(),
        None => value.to_vec(),
    };
    std::fs::write(keys.join(name), value).unwrap();
}

/// Polls `read` until `done` holds for its result (or 20 s pass).
async fn wait_for(what: &str, mut read: impl FnMut() -> String, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = read();
        if done(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what} never showed the expected content:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---- the session ----

async fn no_secret_escapes(sealed: bool) {
    let tag = if sealed { "sealed" } else { "plain" };
    let audit_dir = TempDir::new(&format!("secrets-audit-{tag}"));
    let audit_file = audit_dir.0.join("audit.jsonl");
    let seal_dir = TempDir::new(&format!("secrets-seal-{tag}"));
    let seal_key = random::<32>();
    let seal = sealed.then(|| Seal::from_key(&seal_key).unwrap());
    std::fs::write(seal_dir.0.join("seal.key"), hex::encode(seal_key)).unwrap();
    let keys = TempDir::new(&format!("secrets-keys-{tag}"));
    let mut keystore = String::from("[keystore]\nplugin = \"fs\"\n");
    if sealed {
        keystore
            .push_str(&format!("seal = {}\n", toml_str(&format!("file:{}", seal_dir.0.join("seal.key").display()))));
    }
    keystore.push_str(&format!("[keystore.config]\npath = {}\n", toml_str(&keys.0.display().to_string())));

    // A password-protected server key; the password comes from the
    // environment, so even the config file holds no secret and is scanned.
    use pkcs8::der::Decode;
    let tls_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let tls_cert = params.self_signed(&tls_key).unwrap();
    let tls_password = hex::encode(random::<16>());
    let der = tls_key.serialize_der();
    let encrypted = pkcs8::PrivateKeyInfo::from_der(&der).unwrap().encrypt(rand::rngs::OsRng, &tls_password).unwrap();
    let tls_key_pem = encrypted.to_pem("ENCRYPTED PRIVATE KEY", pkcs8::LineEnding::LF).unwrap().to_string();

    let canary = format!("canary-{}", hex::encode(random::<16>()));
    let mut s = TestServer::start_with(Setup {
        server_tls: Some((tls_cert.pem(), tls_key_pem)),
        tls_extra: "password = \"${KEYWARD_TEST_TLS_PASSWORD}\"\n".into(),
        extra_config: format!(
            "[log]\nerror = \"on\"\naudit = \"on\"\n[[keys]]\nname = \"boot\"\n\
             [[audit]]\nplugin = \"audit-file\"\n[audit.config]\npath = {}\n",
            toml_str(&audit_file.display().to_string())
        ),
        keystore: Some(keystore),
        env: vec![
            ("KEYWARD_TEST_TLS_PASSWORD".into(), tls_password.clone()),
            // Everything keyward and its plugins log, and rustls/hyper/wasmtime at debug.
            ("KEYWARD_LOG".into(), "debug,keyward=trace,cranelift_codegen=info,wasmtime_cranelift=info".into()),
        ],
        ..Setup::default()
    });
    let (audit_stream, audit_task) = follow(&s, "/v1/log/audit").await;
    let (error_stream, error_task) = follow(&s, "/v1/log/error").await;
    let mut t = Session { c: s.admin_client(), secrets: Vec::new(), responses: Vec::new() };
    t.secret("seal key", &seal_key);
    t.secret("TLS key password", tls_password.as_bytes());
    t.secret("TLS private key", &p256_scalar(&der));

    // Imports, both generations, and imports that fail: the bytes of a
    // refused key are as secret as those of an accepted one.
    let k_new = random::<32>();
    t.secret("imported key (new API)", &k_new);
    t.json("PUT", "/v1/key/import/imp-new", json!({"key": b64(&k_new), "cipher": "AES256"}), &[]).await.ok();
    let k_old = random::<32>();
    t.secret("imported key (old API)", &k_old);
    let body = json!({"bytes": b64(&k_old), "algorithm": "XCHACHA20-POLY1305"});
    t.json("POST", "/v1/key/import/imp-old", body, &[]).await.ok();
    let k_dup = random::<32>();
    t.secret("key refused: name taken", &k_dup);
    let r = t.json("PUT", "/v1/key/import/imp-new", json!({"key": b64(&k_dup), "cipher": "AES256"}), &[]).await;
    r.expect(400, "key already exists");
    let k_short = random::<31>();
    t.secret("key refused: 31 bytes (new API)", &k_short);
    let r = t.json("PUT", "/v1/key/import/imp-short", json!({"key": b64(&k_short), "cipher": "AES256"}), &[]).await;
    r.expect(406, "invalid key size for 'AES256'");
    let k_short_old = random::<33>();
    t.secret("key refused: 33 bytes (old API)", &k_short_old);
    let r = t.json("POST", "/v1/key/import/imp-short", json!({"bytes": b64(&k_short_old)}), &[]).await;
    r.expect(400, "invalid key size");
    let k_cipher = random::<32>();
    t.secret("key refused: unknown cipher", &k_cipher);
    let body = json!({"key": b64(&k_cipher), "cipher": canary});
    let r = t.json("PUT", "/v1/key/import/imp-cipher", body, &[]).await;
    assert_eq!(r.status, 406, "{}", r.text());
    let k_b64 = random::<32>();
    t.secret("key refused: bad base64", &k_b64);
    let body = json!({"key": format!("{}!", b64(&k_b64)), "cipher": "AES256"});
    assert_eq!(t.json("PUT", "/v1/key/import/imp-b64", body, &[]).await.status, 400);
    let body = format!("{{\"key\": \"{}\", \"cipher\": \"AES256\"", b64(&k_b64));
    assert_eq!(t.send("PUT", "/v1/key/import/imp-json", Some(body.as_bytes()), &[]).await.status, 400);
    t.send("PUT", "/v1/key/create/made", None, &[]).await.ok();
    t.send("PUT", &format!("/v1/key/create/{canary}"), None, &[]).await.ok();

    // Keys another KES wrote: the newest protobuf format (a vector with a
    // known HMAC key) and the legacy JSON one.
    let v = vectors();
    let stored = &v["stored_keys"][0];
    assert_eq!(stored["format"], "protobuf-base64");
    t.secret("stored vector key", &unb64(stored["key"].as_str().unwrap()));
    t.secret("stored vector HMAC key", &unb64(stored["hmac_key"].as_str().unwrap()));
    plant(&keys.0, seal.as_ref(), "vec-stored", stored["raw"].as_str().unwrap().as_bytes());
    let k_legacy = random::<32>();
    t.secret("legacy JSON key", &k_legacy);
    let legacy =
        json!({"bytes": b64(&k_legacy), "algorithm": "AES256-GCM_SHA256", "created_at": "2020-01-01T00:00:00Z"});
    plant(&keys.0, seal.as_ref(), "legacy", legacy.to_string().as_bytes());

    // Stored values that fail to decode: the error path must not print them.
    let k_corrupt = random::<32>();
    t.secret("key in a corrupt legacy value", &k_corrupt);
    let corrupt = json!({"bytes": b64(&k_corrupt), "created_at": "yesterday"});
    plant(&keys.0, seal.as_ref(), "corrupt-json", corrupt.to_string().as_bytes());
    let k_corrupt_pb = random::<31>();
    t.secret("key in a corrupt protobuf value", &k_corrupt_pb);
    let mut pb = vec![0x0a, 0x23, 0x0a, 0x1f];
    pb.extend_from_slice(&k_corrupt_pb);
    pb.extend_from_slice(&[0x10, 0x01]);
    plant(&keys.0, seal.as_ref(), "corrupt-pb", STANDARD.encode(&pb).as_bytes());
    if sealed {
        // A value stored before sealing was turned on.
        let k_unsealed = random::<32>();
        t.secret("key in an unsealed value", &k_unsealed);
        let value = json!({"bytes": b64(&k_unsealed)}).to_string();
        std::fs::write(keys.0.join("unsealed"), value).unwrap();
    }
    for name in ["corrupt-json", "corrupt-pb"].into_iter().chain(sealed.then_some("unsealed")) {
        let p = random::<24>();
        t.secret(&format!("plaintext for {name}"), &p);
        let r = t.json("PUT", &format!("/v1/key/encrypt/{name}"), json!({"plaintext": b64(&p)}), &[]).await;
        r.expect(502, "failed to read key");
    }
    // The unsealed value is the test's own plaintext file, not the server's.
    let _ = std::fs::remove_file(keys.0.join("unsealed"));

    // Encrypt/decrypt on every key, both generations.
    let mut cts = Vec::new();
    for key in ["imp-new", "imp-old", "made", "boot", "vec-stored", "legacy"] {
        let ct = t.round_trip(key, &format!("plaintext for {key}"), &random::<48>()).await;
        cts.push((key, ct));
    }
    let marker = format!("keyward-plaintext-marker-{}", hex::encode(random::<12>()));
    let marker_ct = t.round_trip("imp-new", "ASCII plaintext", marker.as_bytes()).await;

    // Old ciphertext formats (msgpack, JSON) under an imported vector key.
    let dec = &v["decrypt"][0];
    t.secret("vector decrypt key", &unb64(dec["key"].as_str().unwrap()));
    let body = json!({"key": dec["key"], "cipher": dec["algorithm"]});
    t.json("PUT", "/v1/key/import/vec-dec", body, &[]).await.ok();
    for format in ["ciphertext_msgpack", "ciphertext_json", "ciphertext_raw"] {
        let body = json!({"ciphertext": dec[format], "context": dec["context"]});
        let r = t.json("POST", "/v1/key/decrypt/vec-dec", body, &[]).await;
        r.ok();
        assert_eq!(r.json()["plaintext"], dec["plaintext"], "{format}");
    }

    // Decryption failures: wrong key, tampered, garbage, too short.
    let (_, ct_new) = &cts[0];
    let r = t.json("PUT", "/v1/key/decrypt/imp-old", json!({"ciphertext": b64(ct_new)}), &[]).await;
    r.expect(400, "decryption failed: ciphertext is not authentic");
    let mut tampered = marker_ct.clone();
    tampered[3] ^= 0x40;
    let r = t.json("POST", "/v1/key/decrypt/imp-new", json!({"ciphertext": b64(&tampered)}), &[]).await;
    r.expect(400, "decryption failed: ciphertext is not authentic");
    for garbage in [random::<64>().to_vec(), random::<20>().to_vec(), b"{\"aead\":\"nope\"}".to_vec()] {
        let r = t.json("PUT", "/v1/key/decrypt/imp-new", json!({"ciphertext": b64(&garbage)}), &[]).await;
        r.expect(400, "decryption failed: ciphertext is not authentic");
    }

    // Bad requests that carry plaintexts: bad base64, broken JSON, too big,
    // unknown key.
    let p_b64 = random::<40>();
    t.secret("plaintext in bad base64", &p_b64);
    for method in ["PUT", "POST"] {
        let body = json!({"plaintext": format!("{}*", b64(&p_b64))});
        assert_eq!(t.json(method, "/v1/key/encrypt/imp-new", body, &[]).await.status, 400);
        let body = format!("{{\"plaintext\": \"{}\"", b64(&p_b64));
        assert_eq!(t.send(method, "/v1/key/encrypt/imp-new", Some(body.as_bytes()), &[]).await.status, 400);
    }
    let p_big = random::<40>();
    t.secret("plaintext in an oversize body", &p_big);
    let body = format!("{{\"plaintext\": \"{}{}\"}}", b64(&p_big), "A".repeat((1 << 20) + 100));
    assert_eq!(t.send("PUT", "/v1/key/encrypt/imp-new", Some(body.as_bytes()), &[]).await.status, 400);
    let p_missing = random::<40>();
    t.secret("plaintext for a missing key", &p_missing);
    let r = t.json("PUT", "/v1/key/encrypt/no-such-key", json!({"plaintext": b64(&p_missing)}), &[]).await;
    r.expect(404, "key does not exist");

    // Bulk decryption (old API): the answer carries exactly its plaintexts.
    let (p1, p2) = (random::<40>(), random::<40>());
    let c1 = t.round_trip("imp-old", "bulk plaintext 1", &p1).await;
    let c2 = t.round_trip("imp-old", "bulk plaintext 2", &p2).await;
    let ctx = b64(b"context for imp-old");
    let body = json!([{"ciphertext": b64(&c1), "context": ctx}, {"ciphertext": b64(&c2), "context": ctx}]);
    let r = t.json("POST", "/v1/key/bulk/decrypt/imp-old", body, &["bulk plaintext 1", "bulk plaintext 2"]).await;
    r.ok();
    let body = json!([{"ciphertext": b64(&c1), "context": ctx}, {"ciphertext": b64(&c2)}]);
    let r = t.json("POST", "/v1/key/bulk/decrypt/imp-old", body, &[]).await;
    r.expect(400, "decryption failed: ciphertext is not authentic");

    // Data keys, both generations, with and without a context; each
    // plaintext data key may appear only in its own answers.
    let mut n = 0;
    for key in ["imp-new", "imp-old", "made", "vec-stored"] {
        for (method, body) in [("PUT", Some(json!({"context": b64(b"dek context")}))), ("POST", None)] {
            n += 1;
            let label = format!("data key {n}");
            let path = format!("/v1/key/generate/{key}");
            let r = match &body {
                Some(b) => t.json(method, &path, b.clone(), &[label.as_str()]).await,
                None => t.send(method, &path, None, &[label.as_str()]).await,
            };
            r.ok();
            let plain = unb64(r.json()["plaintext"].as_str().unwrap());
            assert_eq!(plain.len(), 32);
            t.secret(&label, &plain);
            let ct = r.json()["ciphertext"].clone();
            let context = body.as_ref().map(|b| b["context"].clone()).unwrap_or(Value::Null);
            let body = json!({"ciphertext": ct, "context": context});
            let r = t.json(method, &format!("/v1/key/decrypt/{key}"), body, &[label.as_str()]).await;
            r.ok();
            assert_eq!(unb64(r.json()["plaintext"].as_str().unwrap()), plain);
        }
    }

    // HMAC: the message is secret too; the vector key proves the planted
    // value was the one used.
    let m = random::<40>();
    t.secret("HMAC message", &m);
    for key in ["imp-new", "made"] {
        t.json("PUT", &format!("/v1/key/hmac/{key}"), json!({"message": b64(&m)}), &[]).await.ok();
    }
    let hv = v["hmac"].as_array().unwrap().iter().find(|h| h["hmac_key"] == stored["hmac_key"]).unwrap();
    let r = t.json("PUT", "/v1/key/hmac/vec-stored", json!({"message": hv["message"]}), &[]).await;
    r.ok();
    assert_eq!(r.json()["hmac"], hv["hmac"]);
    let r = t.json("PUT", "/v1/key/hmac/legacy", json!({"message": b64(&m)}), &[]).await;
    r.expect(409, "key does not support HMAC");

    // A server-side error (logged, streamed) that names the canary: a key
    // under the canary's name whose stored value does not decode.
    let corrupt_canary = format!("{canary}-corrupt");
    plant(&keys.0, seal.as_ref(), &corrupt_canary, b"not a key");
    let r = t.send("GET", &format!("/v1/key/describe/{corrupt_canary}"), None, &[]).await;
    r.expect(502, "failed to read key");
    let last = format!("/v1/key/describe/{canary}");
    t.send("GET", &last, None, &[]).await.ok();

    // Everything logged: wait for the last event in each audit output, then
    // stop the server gracefully so every log is flushed.
    let audit =
        wait_for("audit file", || std::fs::read_to_string(&audit_file).unwrap_or_default(), |t| t.contains(&last))
            .await;
    wait_for("stdout audit", || s.stdout(), |t| t.contains(&last)).await;
    wait_for("audit stream", || latin1(&audit_stream.lock().unwrap()), |t| t.contains(&last)).await;
    wait_for("error stream", || latin1(&error_stream.lock().unwrap()), |t| t.contains(&canary)).await;
    assert!(audit.contains("/v1/key/import/imp-new") && audit.contains("/v1/key/decrypt/vec-dec"), "{audit}");
    s.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "server did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), audit_task).await;
    let _ = tokio::time::timeout(Duration::from_secs(5), error_task).await;

    // The keys the server generated itself (and the HMAC keys of imported
    // ones) are secrets too: read them from the store, unsealing if needed.
    let mut stored_names = Vec::new();
    for (path, value) in files_under(&keys.0, &[]) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let value = match &seal {
            Some(seal) => match seal.open(&name, &value) {
                Ok(v) => v.to_vec(),
                Err(_) => continue,
            },
            None => value,
        };
        for (what, bytes) in stored_key_material(&value) {
            t.secret(&format!("stored {what} of '{name}'"), &bytes);
            stored_names.push(name.clone());
        }
    }
    for name in ["made", "boot", "imp-new", "imp-old", "vec-dec", "vec-stored"] {
        assert!(stored_names.iter().any(|n| n == name), "no key material read for {name}: {stored_names:?}");
    }

    // Collect every output: all files in the server's directory (logs,
    // config, certificates), the audit file, the keystore if sealed, both
    // streams, and every HTTP answer.
    let mut sources = Vec::new();
    let mut dirs = vec![&s.dir.0, &audit_dir.0];
    if sealed {
        dirs.push(&keys.0);
    }
    for dir in dirs {
        for (path, bytes) in files_under(dir, &[]) {
            let text = format!("{}\n{}", path.display(), latin1(&bytes));
            sources.push(Source { name: path.display().to_string(), text, allowed: vec![] });
        }
    }
    sources.push(Source { name: "/v1/log/audit".into(), text: latin1(&audit_stream.lock().unwrap()), allowed: vec![] });
    sources.push(Source { name: "/v1/log/error".into(), text: latin1(&error_stream.lock().unwrap()), allowed: vec![] });
    let stderr = s.stderr();
    eprintln!(
        "scanning {} outputs ({} bytes of stderr) for {} secrets",
        sources.len() + t.responses.len(),
        stderr.len(),
        t.secrets.len()
    );
    sources.append(&mut t.responses);

    // The canary (a key name, not secret) must show up in each kind of output,
    // or the scan is not looking where it should.
    let canary_secret = Secret::new("canary", &hex::decode(canary.trim_start_matches("canary-")).unwrap());
    let has_canary = |name: &str| {
        sources
            .iter()
            .filter(|s| s.name.ends_with(name) || s.name == name)
            .any(|s| canary_secret.found_in(&s.text).is_some())
    };
    for name in ["stdout.log", "stderr.log", "audit.jsonl", "/v1/log/audit", "/v1/log/error"] {
        assert!(has_canary(name), "the canary is missing from {name}: that output was not scanned");
    }
    assert!(
        sources.iter().any(|s| s.name.contains("imp-cipher") && canary_secret.found_in(&s.text).is_some()),
        "error answers not scanned"
    );
    if sealed {
        assert!(has_canary(&canary), "keystore directory not scanned");
    }

    let found = leaks(&sources, &t.secrets);
    assert!(found.is_empty(), "secrets leaked:\n{}", found.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_audit_errors_or_files() {
    no_secret_escapes(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_audit_errors_or_files_with_a_sealed_store() {
    no_secret_escapes(true).await;
}

/// A seal key written where a `file:`/`env:` reference belongs (an easy
/// mistake) must not be echoed in the start-up error.
#[test]
fn a_seal_key_in_place_of_a_reference_is_not_echoed() {
    let key = hex::encode(random::<32>());
    let err = TestServer::try_start(Setup {
        keystore: Some(format!("[keystore]\nplugin = \"memory\"\nseal = \"{key}\"\n")),
        ..Setup::default()
    })
    .err()
    .expect("started with a bare seal key");
    assert!(err.contains("keystore.seal"), "{err}");
    let secret = Secret::new("seal key", key.as_bytes());
    assert_eq!(secret.found_in(&err), None, "the seal key is in the error: {err}");
    assert_eq!(Secret::new("seal key", &hex::decode(&key).unwrap()).found_in(&err), None, "{err}");
}

// ---- files holding keys are private ----

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// `--dev` writes the server key and the admin key into a temp directory:
/// the directory is 0700 and every file 0600, whatever the caller's umask;
/// its keystore directory and key files too.
#[cfg(unix)]
#[tokio::test]
async fn dev_mode_files_are_private() {
    let dir = TempDir::new("secrets-dev");
    let port = free_port();
    let err = std::fs::File::create(dir.0.join("stderr.log")).unwrap();
    // A permissive umask in the caller must not matter.
    let mut child = Command::new("sh")
        .args(["-c", &format!("umask 000; exec \"$0\" server --dev --addr 127.0.0.1:{port}")])
        .arg(env!("CARGO_BIN_EXE_keyward"))
        .env("KEYWARD_CACHE_DIR", crate::harness::plugin_cache_dir())
        .current_dir(&dir.0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _kill = Kill(&mut child);
    let read = || std::fs::read_to_string(dir.0.join("stderr.log")).unwrap_or_default();
    let banner = wait_for("dev banner", read, |t| {
        t.contains("keyward status") && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })
    .await;
    let value = |label: &str| -> PathBuf {
        banner.lines().find_map(|l| l.trim().strip_prefix(label)).map(|v| PathBuf::from(v.trim())).unwrap()
    };
    let (cert, key, ca) = (value("admin cert:"), value("admin key:"), value("server CA:"));
    let dev_dir = key.parent().unwrap().to_path_buf();
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _remove = Remove(dev_dir.clone());

    // A key created through the API lands in the dev keystore, privately.
    let ident = Ident {
        cert_pem: std::fs::read_to_string(&cert).unwrap(),
        key_pem: std::fs::read_to_string(&key).unwrap(),
        id: String::new(),
    };
    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .identity(reqwest::Identity::from_pem(format!("{}\n{}", ident.cert_pem, ident.key_pem).as_bytes()).unwrap())
        .build()
        .unwrap();
    let c = Client { http, base: format!("https://127.0.0.1:{port}") };
    c.put_empty("/v1/key/create/dev-key").await.ok();

    assert_eq!(mode(&dev_dir), 0o700, "{}", dev_dir.display());
    let mut seen = 0;
    for (path, _) in files_under(&dev_dir, &[]) {
        assert_eq!(mode(&path), 0o600, "{} is not private", path.display());
        seen += 1;
    }
    let keys = dev_dir.join("keys");
    assert_eq!(mode(&keys), 0o700);
    assert_eq!(mode(&keys.join("dev-key")), 0o600);
    assert!(seen >= 5, "expected server and admin keys and certificates and a key file, saw {seen}");
    for p in [&dev_dir.join("server.key"), &key] {
        assert!(std::fs::read_to_string(p).unwrap().contains("PRIVATE KEY"), "{}", p.display());
    }
}
