//! Hostile and malformed input: every case gets the KES status and a JSON
//! message, the server keeps serving, and no stored key changes.

use serde_json::json;

use crate::harness::{b64, unb64, TestServer};

#[tokio::test]
async fn malformed_bodies_and_names_are_refused_and_nothing_changes() {
    let s = TestServer::start("");
    let c = s.admin_client();
    c.put_empty("/v1/key/create/k").await.ok();
    let ct = c.encrypt("k", b"precious", None).await;

    let bad = "invalid request body";
    for body in [&b"{"[..], b"not json", b"[]", b"{\"plaintext\": 5}", b"{\"plaintext\": \"***\"}", b"\xff\xfe"] {
        let r = c.send("PUT", "/v1/key/encrypt/k", Some(body), &[]).await;
        r.expect(400, bad);
    }
    c.put("/v1/key/decrypt/k", &json!({"ciphertext": "%%%"})).await.expect(400, bad);
    c.put("/v1/key/decrypt/k", &json!({"ciphertext": b64(b"short")}))
        .await
        .expect(400, "decryption failed: ciphertext is not authentic");
    c.put("/v1/key/hmac/k", &json!({"message": 12})).await.expect(400, bad);
    c.send("PUT", "/v1/key/generate/k", Some(b"{"), &[]).await.expect(400, bad);
    // Oversize body (limit 1 MiB).
    let huge = vec![b'a'; (1 << 20) + 10];
    c.send("PUT", "/v1/key/encrypt/k", Some(&huge), &[]).await.expect(400, bad);

    // Invalid names.
    let long = "a".repeat(81);
    for name in ["-lead", "trail-", &long, "a%2Fb", "_", "sp%20ace", "%00"] {
        let r = c.put_empty(&format!("/v1/key/create/{name}")).await;
        assert_eq!(r.status, 400, "{name}: {}", r.text());
        assert!(r.message().contains("is empty, too long or contains invalid characters"), "{name}: {}", r.message());
    }
    // `..` as raw bytes on the wire (client libraries normalise it away).
    for path in ["/v1/key/create/..", "/v1/key/create/%2E%2E", "/v1/key/delete/../create/x"] {
        let method = if path.contains("delete") { "DELETE" } else { "PUT" };
        let raw = crate::harness::raw_request(
            &s,
            &s.admin,
            &format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert!(raw.starts_with("HTTP/1.1 400"), "{path}: {raw}");
        assert!(raw.contains("{\"message\":"), "{path}: {raw}");
    }
    let r = c.put_empty("/v1/key/create/a/b").await;
    assert_eq!(r.status, 400);
    let r = c.put_empty("/v1/key/create").await;
    assert_eq!(r.status, 400);
    r.message();

    // Unknown paths and wrong methods.
    let r = c.get("/v1/nothing").await;
    assert_eq!(r.status, 404);
    r.message();
    let r = c.get("/").await;
    assert_eq!(r.status, 404);
    r.message();
    let r = c.get("/v1/status/").await;
    assert_eq!(r.status, 404);
    let r = c.get("/v1/key/create/k").await;
    r.expect(405, "received method 'GET' expected 'PUT'");
    assert_eq!(r.headers["accept"], "PUT");
    c.send("POST", "/v1/status", None, &[]).await.expect(405, "received method 'POST' expected 'GET'");
    c.put_empty("/v1/key/delete/k").await.expect(405, "received method 'PUT' expected 'DELETE'");

    // The key is untouched and the server still serves.
    let r = c.decrypt("k", &ct, None).await;
    r.ok();
    assert_eq!(unb64(r.json()["plaintext"].as_str().unwrap()), b"precious");
    let l = c.get_json("/v1/key/list/*").await;
    assert_eq!(l.json()["names"], json!(["k"]));
}

#[tokio::test]
async fn garbage_on_the_socket_does_not_hurt_other_clients() {
    use tokio::io::AsyncWriteExt;
    let s = TestServer::start("");
    // Plain HTTP and random bytes on the TLS port.
    for junk in [&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], &[0u8; 4096], b"\x16\x03\x01\xff\xff"] {
        let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        let _ = tcp.write_all(junk).await;
        drop(tcp);
    }
    s.admin_client().get("/v1/status").await.ok();
}
