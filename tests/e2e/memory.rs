//! What unfinished requests can make the server hold, measured on the
//! server's resident memory (`VmRSS`): request heads from clients without a
//! certificate, and half-sent bodies from an authorized one.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::harness::{Setup, TestServer};

/// Connections each test opens at once.
const CONNECTIONS: usize = 300;
const KIB: usize = 1024;

/// The server's resident set in KiB.
fn rss_kib(server: &TestServer) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// How many file descriptors the server has open (its connections among them).
fn open_fds(server: &TestServer) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", server.child.id())).map(|d| d.count()).unwrap_or(0)
}

/// Waits (at most 10 s) until the server is down to `fds` descriptors again:
/// the connections the test dropped are closed on its side too, so what
/// they held has been released before the next measurement. A busy machine
/// can take longer than any fixed pause for that.
async fn wait_for_fds(server: &TestServer, fds: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while open_fds(server) > fds && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TLS connection without a client certificate.
async fn anonymous_tls(server: &TestServer) -> TlsStream<TcpStream> {
    crate::harness::tls_connect(server, None).await
}

/// A request head of about `size` bytes that never ends (no blank line).
fn unfinished_head(size: usize) -> Vec<u8> {
    let mut head = b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\nX-Filler: ".to_vec();
    head.resize(size, b'a');
    head
}

/// Opens [`CONNECTIONS`] anonymous connections, each writing `head` (for at
/// most 3 s: the server may stop reading), and returns them still open with
/// what each received so far.
async fn hold_heads(server: &TestServer, head: &[u8]) -> Vec<(TlsStream<TcpStream>, Vec<u8>)> {
    let mut held = Vec::new();
    for _ in 0..CONNECTIONS {
        let mut tls = anonymous_tls(server).await;
        let _ = tokio::time::timeout(Duration::from_secs(3), tls.write_all(head)).await;
        let _ = tokio::time::timeout(Duration::from_millis(1), tls.flush()).await;
        held.push(tls);
    }
    let mut out = Vec::new();
    for mut tls in held {
        let mut got = vec![0u8; 256];
        let n = match tokio::time::timeout(Duration::from_millis(5), tls.read(&mut got)).await {
            Ok(Ok(n)) => n,
            _ => 0,
        };
        got.truncate(n);
        out.push((tls, got));
    }
    out
}

/// 300 connections without a certificate, each sending a 400 KiB request
/// head that never ends, leave the server holding at most ~100 KiB each
/// (the heads are answered 431 and cut at 64 KiB); 300 held heads just under
/// the limit cost no more; and what the clients held is freed when they go:
/// wave after wave of them, the server levels off instead of growing by
/// their size each time (the allocator keeps freed pages for reuse, so RSS
/// does not drop back to where it started).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_request_heads_hold_a_bounded_amount_of_memory() {
    let server = TestServer::start_with(Setup {
        extra_config: "[limits]\nheader_timeout = \"60s\"\n".into(),
        ..Setup::default()
    });
    server.admin_client().get("/v1/status").await.ok();
    let base = rss_kib(&server);

    let fds = open_fds(&server);

    let big = hold_heads(&server, &unfinished_head(400 * KIB)).await;
    let with_big = rss_kib(&server);
    let answered_431 = big.iter().filter(|(_, got)| String::from_utf8_lossy(got).starts_with("HTTP/1.1 431")).count();
    drop(big);
    wait_for_fds(&server, fds).await;
    let mut waves = Vec::new();
    for _ in 0..6 {
        let held = hold_heads(&server, &unfinished_head(60 * KIB)).await;
        waves.push(rss_kib(&server));
        drop(held);
        wait_for_fds(&server, fds).await;
    }
    eprintln!(
        "RSS: base {base} KiB; 300 x 400 KiB heads {with_big} KiB ({answered_431} saw 431); \
         waves of 300 x 60 KiB held heads {waves:?} KiB"
    );
    // Before the head limit, hyper buffered each 400 KiB head whole: about
    // 0.37 MiB per connection, 110 MiB for these 300.
    let per_connection = |rss: usize| rss.saturating_sub(base) / CONNECTIONS;
    assert!(per_connection(with_big) <= 128, "{} KiB per connection with 400 KiB heads", per_connection(with_big));
    assert!(answered_431 > 0, "no oversized head was answered 431");
    assert!(per_connection(waves[0]) <= 128, "{} KiB per connection held", per_connection(waves[0]));
    // Memory kept per wave would add ~25 MiB each time. Compared peak to
    // peak (the last three waves against the first three), so one wave that
    // the allocator happened to measure low does not count as growth after it.
    let wave_size = waves[0].saturating_sub(base);
    let peak = |w: &[usize]| w.iter().copied().max().unwrap_or(0);
    let late_growth = peak(&waves[3..]).saturating_sub(peak(&waves[..3]));
    assert!(late_growth < wave_size / 2, "RSS kept growing wave after wave: {waves:?} (base {base})");
    server.admin_client().get("/v1/status").await.ok();
}
