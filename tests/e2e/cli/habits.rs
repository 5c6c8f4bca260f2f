//! What scripts written for the `kes` CLI rely on, run against the real
//! binary: API keys (`KES_API_KEY`, `--api-key`), `kes identity` for API
//! keys, the `MINIO_KES_*` names, comma-separated server lists, `-s`, JSON
//! from `key encrypt`/`key dek` when piped, and the positional context of
//! `key decrypt`/`key dek`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::Value;

use super::{fails, kw, kw_env, ok, stdout, DevServer, BIN, CLIENT_ENV};
use crate::harness::{free_port, Ident, Setup, TempDir, TestServer};

/// An API key and its identity, verified independently of keyward
/// (/tmp/kes-client-research.md section 8).
const KEY: &str = "kes:v1:AGaV6VXHasF0FnaB60WdCOeTZ8eTIDikL4zlN16c8NAs";
const KEY_ID: &str = "ea9826089311fe44d7590408ede9150f7c637b6cab0a91ee6fe1aa5d9fb366f6";

/// A server whose policy `app` lets `identity` create keys and use them.
fn server_for(identity: &str) -> TestServer {
    TestServer::start(&format!(
        "[policy.app]\nallow = [\"/v1/key/create/*\", \"/v1/key/encrypt/*\", \"/v1/key/decrypt/*\", \"/v1/key/generate/*\"]\nidentities = [\"{identity}\"]\n"
    ))
}

/// The address and CA flags for a [`TestServer`].
fn at(server: &TestServer) -> (String, String) {
    (format!("https://127.0.0.1:{}", server.addr.port()), server.dir.0.join("server.crt").display().to_string())
}

fn json(o: &Output) -> Value {
    let text = ok(o);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"))
}

#[test]
fn kes_api_key_reaches_a_server_whose_policy_names_its_identity() {
    let server = server_for(KEY_ID);
    let (url, ca) = at(&server);
    let env = [("KES_API_KEY", KEY), ("KES_SERVER", url.as_str())];
    assert_eq!(ok(&kw_env(&["key", "create", "k1", "--cacert", &ca], &env, None)), "");
    // The server computed the identity from the certificate the client made.
    let me = json(&kw_env(&["identity", "self", "--json", "--cacert", &ca], &env, None));
    assert_eq!(me["identity"], KEY_ID, "{me}");
    assert_eq!(ok(&kw(&["identity", "of", KEY])).trim(), KEY_ID);

    // The flag and the other names work too.
    ok(&kw(&["key", "create", "k2", "--api-key", KEY, "-s", &url, "--cacert", &ca]));
    for name in ["KEYWARD_API_KEY", "MINIO_KES_API_KEY"] {
        ok(&kw_env(&["key", "dek", "k1", "--server", &url, "--cacert", &ca], &[(name, KEY)], None));
    }
    // A key whose identity no policy names is refused by the server.
    let stranger = json(&kw(&["identity", "new", "--api-key", "--json"]));
    let stranger_key = stranger["api_key"].as_str().unwrap();
    let line = fails(&kw(&["key", "create", "k3", "--api-key", stranger_key, "-s", &url, "--cacert", &ca]), 1);
    assert_eq!(line, "keyward: not authorized: insufficient permissions");
}

#[test]
fn identity_new_prints_an_api_key_and_identity_of_reads_it_back() {
    let made = json(&kw(&["identity", "new", "--api-key", "--json"]));
    let (key, id) = (made["api_key"].as_str().unwrap(), made["identity"].as_str().unwrap());
    assert!(key.starts_with("kes:v1:") && id.len() == 64, "{made}");
    assert_eq!(ok(&kw(&["identity", "of", key])).trim(), id);
    // Piped without --json: the key alone, as `kes identity new` prints it.
    let piped = ok(&kw(&["identity", "new", "--api-key"]));
    assert_eq!(piped.lines().count(), 1, "{piped:?}");
    assert!(piped.starts_with("kes:v1:") && piped.trim().len() == 51, "{piped:?}");
    assert_eq!(ok(&kw(&["identity", "of", piped.trim()])).trim().len(), 64);
    // The server agrees with `identity of` on a freshly made key.
    let server = server_for(id);
    let (url, ca) = at(&server);
    ok(&kw(&["key", "create", "mine", "--api-key", key, "-s", &url, "--cacert", &ca]));
    // --api-key writes no files, so file options make no sense with it.
    assert_eq!(kw(&["identity", "new", "--api-key", "--key", "a.key", "--cert", "a.crt"]).status.code(), Some(2));
    assert_eq!(kw(&["identity", "new", "--api-key", "name"]).status.code(), Some(2));
}

#[test]
fn malformed_or_conflicting_api_keys_are_refused_clearly() {
    let secret_part = "sbDvZFqUPFFwxRS4EkuoEb2nyyInkdKSUEYHXFHeTouW";
    let wrong_type = format!("kes:v1:{secret_part}");
    let line = fails(&kw_env(&["key", "ls"], &[("KES_API_KEY", &wrong_type)], None), 2);
    assert!(line.contains("API key is not valid") && line.contains("KES_API_KEY"), "{line}");
    assert!(!line.contains(secret_part), "the key is echoed: {line}");
    let line = fails(&kw(&["key", "ls", "--api-key", "kes:v1:AAAA"]), 2);
    assert!(line.contains("3 bytes, not 33") && line.contains("--api-key"), "{line}");
    let line = fails(&kw(&["identity", "of", "kes:v1:%%"]), 2);
    assert!(line.contains("not base64"), "{line}");

    // Both kinds of credentials from the same place: ambiguous, as in kes.
    let env = [("KES_API_KEY", KEY), ("KES_CLIENT_CERT", "/x.crt"), ("KES_CLIENT_KEY", "/x.key")];
    let line = fails(&kw_env(&["key", "ls"], &env, None), 2);
    assert!(line.contains("KES_API_KEY") && line.contains("KES_CLIENT_CERT"), "{line}");
    assert_eq!(kw(&["key", "ls", "--api-key", KEY, "--cert", "/x.crt"]).status.code(), Some(2));
    // From different places the more specific one is used: here the flag
    // over the MinIO host's certificate variables (missing files would fail).
    let server = server_for(KEY_ID);
    let (url, ca) = at(&server);
    let env = [("MINIO_KES_CERT_FILE", "/nonexistent.crt"), ("MINIO_KES_KEY_FILE", "/nonexistent.key")];
    ok(&kw_env(&["key", "create", "k", "--api-key", KEY, "-s", &url, "--cacert", &ca], &env, None));
}

#[test]
fn encrypt_and_dek_print_kes_json_when_piped() {
    let s = DevServer::start();
    ok(&s.run(&["key", "create", "k"]));
    let out = ok(&s.run(&["key", "encrypt", "k", "hello"]));
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let ct = v["ciphertext"].as_str().unwrap();
    assert_eq!(out, format!("{{\"ciphertext\":\"{ct}\"}}\n"), "one line, as kes prints it");
    assert_eq!(ok(&s.run(&["key", "decrypt", "k", ct])), "hello");
    assert_eq!(ok(&s.run(&["key", "encrypt", "k", "hello", "--json"])).lines().count(), 1);

    let out = ok(&s.run(&["key", "dek", "k"]));
    let v: Value = serde_json::from_str(&out).unwrap();
    let (pt, ct) = (v["plaintext"].as_str().unwrap(), v["ciphertext"].as_str().unwrap());
    assert_eq!(out, format!("{{\"plaintext\":\"{pt}\",\"ciphertext\":\"{ct}\"}}\n"), "kes's fields in kes's order");
    assert_eq!(B64.decode(pt).unwrap().len(), 32);
    let back = json(&s.run(&["key", "decrypt", "--json", "k", ct]));
    assert_eq!(back["plaintext"], pt);

    // The kes idiom, through a shell pipe into a JSON reader.
    if Command::new("jq").arg("--version").output().is_ok() {
        let flags = s.flags().join(" ");
        let script = format!("{BIN} key encrypt k 'from a script' {flags} | jq -r .ciphertext");
        let ct = ok(&Command::new("sh").arg("-c").arg(&script).output().unwrap()).trim().to_string();
        assert_eq!(ok(&s.run(&["key", "decrypt", "k", &ct])), "from a script");
    }
}

/// On a terminal the output stays text; `script` provides the terminal.
#[test]
fn encrypt_and_dek_print_text_on_a_terminal() {
    let s = DevServer::start();
    ok(&s.run(&["key", "create", "k"]));
    let run_on_tty = |args: &[&str]| -> Option<String> {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(s.flags());
        let line = std::iter::once(BIN).chain(all).map(|a| format!("'{a}'")).collect::<Vec<_>>().join(" ");
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &line, "/dev/null"]);
        for v in CLIENT_ENV {
            cmd.env_remove(v);
        }
        let out = cmd.output().ok().filter(|o| o.status.success())?;
        Some(stdout(&out).replace('\r', ""))
    };
    let Some(out) = run_on_tty(&["key", "encrypt", "k", "hello"]) else {
        eprintln!("skipped: `script` cannot provide a terminal here");
        return;
    };
    let ct = out.trim();
    assert!(!ct.starts_with('{') && B64.decode(ct).is_ok(), "{out:?}");
    assert_eq!(ok(&s.run(&["key", "decrypt", "k", ct])), "hello");
    let out = run_on_tty(&["key", "dek", "k"]).unwrap_or_default();
    assert!(out.contains("plaintext:") && out.contains("ciphertext:") && !out.contains('{'), "{out:?}");
    let out = run_on_tty(&["key", "encrypt", "k", "hello", "--json"]).unwrap_or_default();
    assert!(out.trim().starts_with("{\"ciphertext\":"), "--json still forces JSON: {out:?}");
}

#[test]
fn decrypt_and_dek_take_a_base64_context_positionally_as_kes_does() {
    let s = DevServer::start();
    ok(&s.run(&["key", "create", "k"]));
    let context = B64.encode("app=billing");
    // kes key dek NAME CONTEXT; kes key decrypt NAME CIPHERTEXT CONTEXT
    let dek = json(&s.run(&["key", "dek", "k", &context]));
    let ct = dek["ciphertext"].as_str().unwrap();
    let back = json(&s.run(&["key", "decrypt", "--json", "k", ct, &context]));
    assert_eq!(back["plaintext"], dek["plaintext"]);
    // The same associated data as --context with its text.
    let back = json(&s.run(&["key", "decrypt", "--json", "k", ct, "--context", "app=billing"]));
    assert_eq!(back["plaintext"], dek["plaintext"]);
    let line = fails(&s.run(&["key", "decrypt", "k", ct]), 1);
    assert!(line.contains("not authentic"), "{line}");
    let line = fails(&s.run(&["key", "decrypt", "k", ct, &B64.encode("app=other")]), 1);
    assert!(line.contains("not authentic"), "{line}");

    // encrypt --context TEXT pairs with the positional base64 of TEXT.
    let enc = json(&s.run(&["key", "encrypt", "k", "secret", "--context", "app=billing"]));
    assert_eq!(ok(&s.run(&["key", "decrypt", "k", enc["ciphertext"].as_str().unwrap(), &context])), "secret");

    let line = fails(&s.run(&["key", "dek", "k", "not base64!"]), 2);
    assert!(line.contains("context is not valid base64") && line.contains("--context"), "{line}");
    assert_eq!(s.run(&["key", "dek", "k", &context, "--context", "x"]).status.code(), Some(2));
    assert_eq!(s.run(&["key", "decrypt", "k", ct, &context, "extra"]).status.code(), Some(2));
}

/// Writes `ident`'s certificate and key into `dir`; returns their paths.
fn write_ident(dir: &Path, ident: &Ident) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("client.crt"), dir.join("client.key"));
    std::fs::write(&cert, &ident.cert_pem).unwrap();
    std::fs::write(&key, &ident.key_pem).unwrap();
    (cert, key)
}

#[test]
fn minio_kes_names_come_after_the_keyward_and_kes_names() {
    let s = DevServer::start();
    let dead = format!("https://127.0.0.1:{}", free_port());
    let minio = [
        ("MINIO_KES_SERVER", s.url.as_str()),
        ("MINIO_KES_CERT_FILE", s.cert.as_str()),
        ("MINIO_KES_KEY_FILE", s.key.as_str()),
        ("KEYWARD_CACERT", s.ca.as_str()),
    ];
    ok(&kw_env(&["key", "create", "from-minio-names"], &minio, None));
    // KES_SERVER and KEYWARD_SERVER win over MINIO_KES_SERVER.
    for name in ["KES_SERVER", "KEYWARD_SERVER"] {
        let mut env = minio.to_vec();
        env.push((name, &dead));
        let line = fails(&kw_env(&["status"], &env, None), 1);
        assert!(line.contains(&dead), "{name}: {line}");
    }
    // KES_CLIENT_CERT/KEY win over MINIO_KES_CERT_FILE/KEY_FILE.
    let dir = TempDir::new("cli-minio");
    let (cert, key) = write_ident(&dir.0, &Ident::new("stranger"));
    let mut env = minio.to_vec();
    env.extend([("KES_CLIENT_CERT", cert.to_str().unwrap()), ("KES_CLIENT_KEY", key.to_str().unwrap())]);
    assert_eq!(fails(&kw_env(&["key", "ls"], &env, None), 1), "keyward: not authorized: insufficient permissions");
}

#[test]
fn several_servers_are_tried_in_turn_while_they_cannot_be_reached() {
    let admin = Ident::new("admin");
    let start = || TestServer::start_with(Setup { admin: Some(admin.clone()), ..Setup::default() });
    let (a, b) = (start(), start());
    let dir = TempDir::new("cli-servers");
    let (cert, key) = write_ident(&dir.0, &admin);
    let ca = dir.0.join("cas.pem");
    std::fs::write(&ca, format!("{}{}", a.server_cert_pem, b.server_cert_pem)).unwrap();
    let (cert, key, ca) = (cert.to_str().unwrap(), key.to_str().unwrap(), ca.to_str().unwrap());
    let creds = ["--cert", cert, "--key", key, "--cacert", ca];
    let (url_a, url_b) = (at(&a).0, at(&b).0);
    let dead = format!("https://127.0.0.1:{}", free_port());
    let run = |servers: &str, args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["-s", servers]);
        all.extend(creds);
        kw(&all)
    };

    // The first server is down: the second one answers, for every request.
    ok(&run(&format!("{dead},{url_b}"), &["key", "create", "on-b"]));
    let status = ok(&run(&format!("{dead}, {url_b}"), &["status"]));
    assert!(status.contains(&url_b), "{status}");
    let env = [
        ("KES_SERVER", format!("{dead},{url_a}")),
        ("KES_CLIENT_CERT", cert.to_string()),
        ("KES_CLIENT_KEY", key.to_string()),
        ("KEYWARD_CACERT", ca.to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ok(&kw_env(&["key", "create", "on-a"], &env, None));

    // An answer, even an error, is final: the next server is not asked.
    let line = fails(&run(&format!("{url_a},{url_b}"), &["key", "describe", "on-b"]), 1);
    assert_eq!(line, "keyward: key does not exist");
    ok(&run(&format!("{url_b},{url_a}"), &["key", "describe", "on-b"]));

    // None reachable: each server with its reason.
    let dead2 = format!("https://127.0.0.1:{}", free_port());
    let line = fails(&run(&format!("{dead},{dead2}"), &["status"]), 1);
    assert!(line.contains("cannot reach any server") && line.contains(&dead) && line.contains(&dead2), "{line}");
    assert_eq!(line.matches("connection refused").count(), 2, "{line}");
}
