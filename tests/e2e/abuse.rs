//! Connection abuse against the real server (127.0.0.1 only): slow request
//! heads and bodies, idle keep-alive connections, TLS handshake floods and
//! more connections than `limits.max_connections`. Each test sets small
//! `[limits]` so it ends within seconds, checks that the abusive connections
//! are cut at their deadline (not before, not much after), that a well-behaved
//! client is served *while* the abuse is going on, and that nothing panicked.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::harness::{Client, Ident, Setup, TestServer};

/// Generous upper bound on how late a deadline may fire on a loaded 2-core
/// machine; the point is "cut", not "cut to the millisecond".
const SLACK: Duration = Duration::from_millis(2500);

fn start(extra: &str) -> TestServer {
    TestServer::start_with(Setup { extra_config: extra.to_string(), ..Setup::default() })
}

/// A TLS connection to `server` presenting `who`'s certificate.
pub(crate) async fn tls_connect(server: &TestServer, who: &Ident) -> TlsStream<TcpStream> {
    crate::harness::tls_connect(server, Some(who)).await
}

/// How a connection ended: when (since `since`) and what the server sent.
#[derive(Debug)]
struct Closed {
    after: Duration,
    received: String,
}

/// Reads until the server closes the connection (EOF or reset), at most
/// `limit`; `None` if it was still open then.
async fn wait_closed(mut r: impl AsyncReadExt + Unpin, since: Instant, limit: Duration) -> Option<Closed> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::from_std(since + limit);
    loop {
        match tokio::time::timeout_at(deadline, r.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Some(Closed { after: since.elapsed(), received: String::from_utf8_lossy(&received).into() });
            }
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// Writes `bytes` one at a time, `every` apart, until the server closes.
async fn trickle(mut w: impl AsyncWrite + Unpin, bytes: &[u8], every: Duration) {
    for b in bytes.iter().cycle() {
        if w.write_all(&[*b]).await.is_err() || w.flush().await.is_err() {
            return;
        }
        tokio::time::sleep(every).await;
    }
}

/// Asserts `c` was cut between `timeout` (minus a little timer jitter) and
/// `timeout + SLACK`.
#[track_caller]
fn assert_cut_at(what: &str, c: &Option<Closed>, timeout: Duration) {
    let Some(c) = c else { panic!("{what}: still open {:?} after its timeout", timeout + SLACK) };
    assert!(c.after >= timeout - Duration::from_millis(100), "{what}: cut early, after {:?}", c.after);
    assert!(c.after < timeout + SLACK, "{what}: cut late, after {:?}", c.after);
}

/// One sample's value from Prometheus text: `series` is the name, with its
/// labels if any (`keyward_connections_timed_out_total{phase="header"}`).
async fn metric(c: &Client, series: &str) -> f64 {
    let text = c.get("/v1/metrics").await.text();
    sample(&text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// `series`'s value in Prometheus text, if it is there (a labelled series
/// appears once it has been counted).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
}

/// Polls `series` until it equals `want` (within 3 s).
async fn wait_metric(c: &Client, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let got = metric(c, series).await;
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{series} is {got}, expected {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[track_caller]
fn assert_no_panic(server: &TestServer) {
    let stderr = server.stderr();
    assert!(!stderr.contains("panicked"), "server stderr:\n{stderr}");
}

/// Serves `n` status requests on fresh connections; returns when done.
async fn served(server: &TestServer, n: usize) -> Instant {
    for _ in 0..n {
        server.admin_client().get("/v1/status").await.ok();
    }
    Instant::now()
}

/// `limits.header_timeout`: request heads that stall, trickle, never start,
/// and idle keep-alive connections are all closed at the deadline, while a
/// normal client is served in the meantime.
#[tokio::test]
async fn slow_and_idle_request_heads_are_cut_at_header_timeout() {
    let timeout = Duration::from_secs(2);
    let server = start("[limits]\nheader_timeout = \"2s\"\n");
    let admin = server.admin.clone();

    // Half a request head, then nothing.
    let mut stalled = tls_connect(&server, &admin).await;
    stalled.write_all(b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n").await.unwrap();
    let stalled_at = Instant::now();
    let stalled = tokio::spawn(wait_closed(stalled, stalled_at, timeout + SLACK));

    // A handshake and then not a single byte (shorter than an HTTP/2
    // preface, which an auto-detecting server would wait for forever).
    let silent = tls_connect(&server, &admin).await;
    let silent = tokio::spawn(wait_closed(silent, Instant::now(), timeout + SLACK));

    // A head sent one byte every 100 ms: progress must not reset the clock.
    let (r, w) = tokio::io::split(tls_connect(&server, &admin).await);
    let trickling = tokio::spawn(wait_closed(r, Instant::now(), timeout + SLACK));
    let writer = tokio::spawn(trickle(w, b"GET /v1/status HTTP/1.1\r\nX-Slow: ", Duration::from_millis(100)));

    // A served request, then an idle keep-alive connection.
    let mut idle = tls_connect(&server, &admin).await;
    idle.write_all(b"GET /version HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let idle = tokio::spawn(wait_closed(idle, Instant::now(), timeout + SLACK));

    let served_at = served(&server, 5).await;
    let stalled = stalled.await.unwrap();
    let silent = silent.await.unwrap();
    let trickling = trickling.await.unwrap();
    let idle = idle.await.unwrap();
    writer.abort();
    eprintln!(
        "normal client done after {:?}; cut after: stalled {:?} silent {:?} trickling {:?} idle {:?}",
        served_at - stalled_at,
        stalled.as_ref().map(|c| c.after),
        silent.as_ref().map(|c| c.after),
        trickling.as_ref().map(|c| c.after),
        idle.as_ref().map(|c| c.after)
    );
    assert!(served_at - stalled_at < timeout, "the normal client was not served while the slow ones were held");
    for (what, c) in [("stalled head", &stalled), ("silent", &silent), ("trickling head", &trickling)] {
        assert_cut_at(what, c, timeout);
        assert!(!c.as_ref().unwrap().received.contains("200 OK"), "{what} was served: {c:?}");
    }
    // The idle connection got its answer first, then was closed as idle.
    let idle_received = &idle.as_ref().map(|c| c.received.clone()).unwrap_or_default();
    assert!(idle_received.starts_with("HTTP/1.1 200 OK"), "{idle:?}");
    assert_cut_at("idle keep-alive", &idle, timeout);

    let c = server.admin_client();
    let cut = metric(&c, "keyward_connections_timed_out_total{phase=\"header\"}").await;
    assert!(cut >= 4.0, "header timeouts counted: {cut}");
    assert_no_panic(&server);
}

/// The header timeout covers waiting for a request head only: a client
/// following the audit log (one request whose answer streams for as long as
/// it likes) keeps receiving lines well past `limits.header_timeout`, and the
/// same connection is cut only once the stream ends and no new head comes.
#[tokio::test]
async fn a_followed_log_outlives_the_header_timeout() {
    let server = start("[limits]\nheader_timeout = \"1s\"\n");
    let mut follower = tls_connect(&server, &server.admin).await;
    follower.write_all(b"GET /v1/log/audit HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let c = server.admin_client();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Repeated: lines arrive in the order requests are answered; look for
    // one made 2.5 s after the stream started.
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        c.get("/v1/key/describe/after-the-timeout").await;
        let mut buf = [0u8; 4096];
        match tokio::time::timeout(Duration::from_millis(200), follower.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => panic!("the follower was cut: {}", String::from_utf8_lossy(&received)),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if String::from_utf8_lossy(&received).contains("/v1/key/describe/after-the-timeout") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("/v1/key/describe/after-the-timeout"), "no line after the header timeout: {text}");
    assert_no_panic(&server);
}

/// `limits.write_timeout`: a client that stops reading its answer is cut: a
/// follower of the audit log that never reads holds its connection only
/// until a write to it has waited that long (checked every
/// `header_timeout`, so cut within that much more), counted as
/// `phase="write"`; a follower that reads, on the same server at the same
/// time, keeps its stream.
#[tokio::test]
async fn a_follower_that_stops_reading_is_cut() {
    // 2 s: far longer than the reading follower's reader ever waits for CPU.
    let server = start("[limits]\nheader_timeout = \"1s\"\nwrite_timeout = \"2s\"\n");
    let follow = b"GET /v1/log/audit HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let mut stuck = tls_connect(&server, &server.admin).await;
    stuck.write_all(follow).await.unwrap();
    let mut reading = tls_connect(&server, &server.admin).await;
    reading.write_all(follow).await.unwrap();
    let (seen_tx, mut seen_rx) = tokio::sync::watch::channel(Vec::new());
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        // Only what came last matters to the test: the latest 8 KiB.
        let mut tail = Vec::new();
        loop {
            match reading.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    tail.extend_from_slice(&buf[..n]);
                    tail.drain(..tail.len().saturating_sub(8192));
                    seen_tx.send_replace(tail.clone());
                }
            }
        }
    });

    // Audit lines with long paths (the key name is refused, the request
    // still audited) fill the stuck follower's socket and buffers fast.
    let c = server.admin_client();
    let long = format!("/v1/key/describe/{}", "x".repeat(4000));
    let series = "keyward_connections_timed_out_total{phase=\"write\"}";
    let started = Instant::now();
    loop {
        for _ in 0..50 {
            c.get(&long).await;
        }
        if sample(&c.get("/v1/metrics").await.text(), series) == Some(1.0) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the follower that stopped reading is still served");
    }
    eprintln!("stuck follower cut after {:?}", started.elapsed());
    assert!(started.elapsed() >= Duration::from_secs(2), "cut before write_timeout");

    // The reading follower still gets new lines.
    c.get("/v1/key/describe/after-the-cut").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&seen_rx.borrow_and_update()).contains("/v1/key/describe/after-the-cut") {
        assert!(Instant::now() < deadline, "the reading follower got no line after the cut");
        let _ = tokio::time::timeout(Duration::from_millis(200), seen_rx.changed()).await;
    }
    assert!(!reader.is_finished(), "the reading follower was cut");
    reader.abort();
    // The stuck one: what was in flight, then the end of the connection.
    let closed = wait_closed(stuck, Instant::now(), Duration::from_secs(10)).await;
    assert!(closed.is_some(), "the stuck follower's connection is still open");
    assert_no_panic(&server);
}

/// The head of a request announcing `Content-Length: 1000` to `path`.
fn head_with_body(path: &str) -> String {
    format!("PUT {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
}

/// `limits.body_timeout`: a body that stalls after 10 of 1000 bytes, and one
/// that trickles, get a JSON 408 at the deadline (long before the route's
/// 15 s timeout) and their connections close; a normal client is served
/// meanwhile, and no handler stays busy afterwards.
#[tokio::test]
async fn slow_request_bodies_get_a_408_at_body_timeout_and_free_their_handler() {
    let timeout = Duration::from_secs(2);
    let server = start("[limits]\nbody_timeout = \"2s\"\n");
    let admin = server.admin.clone();
    let c = server.admin_client();
    c.put_empty("/v1/key/create/abuse").await.ok();

    let mut stalled = tls_connect(&server, &admin).await;
    stalled.write_all(head_with_body("/v1/key/encrypt/abuse").as_bytes()).await.unwrap();
    stalled.write_all(b"{\"plaint").await.unwrap();
    stalled.flush().await.unwrap();
    let stalled_at = Instant::now();
    let stalled = tokio::spawn(wait_closed(stalled, stalled_at, timeout + SLACK));

    let mut t = tls_connect(&server, &admin).await;
    t.write_all(head_with_body("/v1/key/encrypt/abuse").as_bytes()).await.unwrap();
    let (r, w) = tokio::io::split(t);
    let trickling = tokio::spawn(wait_closed(r, Instant::now(), timeout + SLACK));
    let writer = tokio::spawn(trickle(w, b"{\"plaintext\": \"", Duration::from_millis(100)));

    // Meanwhile: real work on the same route.
    for _ in 0..5 {
        let ct = c.encrypt("abuse", b"secret", None).await;
        c.decrypt("abuse", &ct, None).await.ok();
    }
    let served_at = Instant::now();

    let stalled = stalled.await.unwrap();
    let trickling = trickling.await.unwrap();
    writer.abort();
    eprintln!(
        "normal client done after {:?}; 408 after: stalled {:?} trickling {:?}",
        served_at - stalled_at,
        stalled.as_ref().map(|c| c.after),
        trickling.as_ref().map(|c| c.after)
    );
    assert!(served_at - stalled_at < timeout, "the normal client was not served while the slow ones were held");
    for (what, closed) in [("stalled body", &stalled), ("trickling body", &trickling)] {
        assert_cut_at(what, closed, timeout);
        let received = &closed.as_ref().unwrap().received;
        assert!(received.starts_with("HTTP/1.1 408 "), "{what}: {received:?}");
        assert!(received.to_ascii_lowercase().contains("content-type: application/json"), "{what}: {received:?}");
        assert!(received.contains("{\"message\":\"request body timeout exceeded\"\n}"), "{what}: {received:?}");
    }

    // No handler is still waiting for a body: the only active request is
    // the metrics request itself.
    wait_metric(&c, "kes_http_request_active", 1.0).await;
    c.encrypt("abuse", b"after", None).await;
    assert_no_panic(&server);
}

/// `[api."/path"] timeout` also bounds reading the body: with a route
/// timeout shorter than `limits.body_timeout`, a stalled body is the route's
/// 503 at the route's deadline, and other routes are unaffected.
#[tokio::test]
async fn a_route_timeout_shorter_than_body_timeout_cuts_a_slow_body() {
    let timeout = Duration::from_secs(1);
    let server = start("[limits]\nbody_timeout = \"10s\"\n[api.\"/v1/key/hmac\"]\ntimeout = \"1s\"\n");
    let c = server.admin_client();
    c.put_empty("/v1/key/create/abuse").await.ok();

    let mut stalled = tls_connect(&server, &server.admin).await;
    stalled.write_all(head_with_body("/v1/key/hmac/abuse").as_bytes()).await.unwrap();
    stalled.write_all(b"{\"message").await.unwrap();
    let started = Instant::now();
    let stalled = tokio::spawn(wait_closed(stalled, started, timeout + SLACK));
    c.encrypt("abuse", b"secret", None).await;
    let served_at = started.elapsed();

    let stalled = stalled.await.unwrap();
    eprintln!("normal client done after {served_at:?}; 503 after {:?}", stalled.as_ref().map(|c| c.after));
    assert!(served_at < timeout, "the normal client took {served_at:?}");
    assert_cut_at("stalled hmac body", &stalled, timeout);
    let received = &stalled.as_ref().unwrap().received;
    assert!(received.starts_with("HTTP/1.1 503 "), "{received:?}");
    assert!(received.contains("{\"message\":\"request timeout exceeded\"\n}"), "{received:?}");
    wait_metric(&c, "kes_http_request_active", 1.0).await;
    assert_no_panic(&server);
}

/// The first 20 bytes of a TLS 1.2/1.3 ClientHello record announcing 512
/// bytes: the server has to wait for the rest.
const HALF_A_CLIENT_HELLO: [u8; 20] =
    [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 1, 2, 3, 4, 5, 6, 7, 8, 9];

/// `limits.handshake_timeout`: 200 TCP connections that never complete a
/// TLS handshake (150 silent, 50 stuck halfway through a ClientHello) do not
/// keep a real mTLS client from being served at once, and each is closed
/// when its handshake time is up.
#[tokio::test]
async fn a_handshake_flood_does_not_starve_real_clients() {
    let timeout = Duration::from_secs(2);
    let server = start("[limits]\nhandshake_timeout = \"2s\"\n");
    let c = server.admin_client();
    let before = metric(&c, "keyward_connections_timed_out_total{phase=\"handshake\"}").await;

    let flood_at = Instant::now();
    let mut flood = Vec::new();
    for i in 0..200 {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        if i % 4 == 0 {
            tcp.write_all(&HALF_A_CLIENT_HELLO).await.unwrap();
        }
        flood.push(tokio::spawn(wait_closed(tcp, Instant::now(), timeout + SLACK)));
    }
    let opened = flood_at.elapsed();

    // A fresh client (its own handshake) while all 200 are held.
    let started = Instant::now();
    server.admin_client().get("/v1/status").await.ok();
    let latency = started.elapsed();
    let served_at = flood_at.elapsed();

    let mut cut = Vec::new();
    for f in flood {
        let closed = f.await.unwrap();
        assert_cut_at("flood connection", &closed, timeout);
        cut.push(closed.map(|c| c.after).unwrap_or_default());
    }
    cut.sort();
    eprintln!(
        "flood opened in {opened:?}; real client served in {latency:?} ({served_at:?} into the flood); flood cut after {:?}..{:?}",
        cut[0],
        cut[cut.len() - 1]
    );
    assert!(latency < Duration::from_secs(1), "a real client waited {latency:?} during the flood");
    assert!(served_at < timeout, "the real client was served only after the flood was cut");

    let after = metric(&c, "keyward_connections_timed_out_total{phase=\"handshake\"}").await;
    assert!(after - before >= 200.0, "handshake timeouts counted: {before} -> {after}");
    wait_metric(&c, "keyward_connections_open", 1.0).await;
    assert_no_panic(&server);
}

/// `limits.max_connections = 4`: with four connections held (mid-handshake),
/// further connections are closed at once and counted, a real client is
/// refused too rather than queued, and once the held ones go a new client is
/// served.
#[tokio::test]
async fn connections_over_max_connections_are_refused_until_a_slot_frees() {
    let server = start("[limits]\nmax_connections = 4\nhandshake_timeout = \"8s\"\n");
    let before = metric(&server.admin_client(), "keyward_connections_refused_total").await;
    assert_eq!(before, 0.0);
    // The metrics client's connection has closed: wait until its slot is free.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // Accepted in order: these three find every slot taken.
    let mut extra = Vec::new();
    for _ in 0..3 {
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        extra.push(tokio::spawn(wait_closed(tcp, Instant::now(), Duration::from_secs(2))));
    }
    for e in extra {
        let closed = e.await.unwrap().expect("an extra connection was kept open");
        assert!(closed.after < Duration::from_secs(1), "refused only after {:?}", closed.after);
        assert!(closed.received.is_empty(), "{closed:?}");
    }
    let started = Instant::now();
    let refused = server.admin_client().try_send("GET", "/v1/status", None, &[]).await;
    assert!(refused.is_err(), "a client was served beyond max_connections: {refused:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "refusal took {:?}", started.elapsed());
    // The held connections are still open: they hold their slots.
    let mut probe = [0u8; 1];
    let still_open = tokio::time::timeout(Duration::from_millis(200), held[0].read(&mut probe)).await;
    assert!(still_open.is_err(), "a held connection was closed: {still_open:?}");

    drop(held);
    let c = server.admin_client();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match c.try_send("GET", "/v1/status", None, &[]).await {
            Ok(r) if r.status == 200 => break,
            other => assert!(Instant::now() < deadline, "no slot freed: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = metric(&c, "keyward_connections_refused_total").await;
    assert!(refused >= 4.0, "refused connections counted: {refused}");
    wait_metric(&c, "keyward_connections_open", 1.0).await;
    assert_no_panic(&server);
}
