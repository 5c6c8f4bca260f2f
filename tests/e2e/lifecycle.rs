//! Start-up and shutdown behaviour of the process.

use std::time::{Duration, Instant};

use crate::harness::{spawn, TempDir, TestServer};

#[tokio::test]
async fn sigterm_exits_zero_quickly() {
    let mut s = TestServer::start("");
    s.admin_client().get("/v1/status").await.ok();
    s.signal("TERM");
    let start = Instant::now();
    loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status:?}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "server did not exit within 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// SIGTERM lets the request being answered finish (here its body is still
/// arriving) and closes idle keep-alive connections at once, so the server
/// exits as soon as that request is done, well within its 4 s grace period.
#[tokio::test]
async fn sigterm_finishes_in_flight_requests_and_closes_idle_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TestServer::start("");
    let c = s.admin_client();
    // Also leaves an idle keep-alive connection in the client's pool.
    assert_eq!(c.put_empty("/v1/key/create/k").await.status, 200);
    let mut slow = crate::abuse::tls_connect(&s, &s.admin).await;
    let body = br#"{"plaintext":"aGVsbG8="}"#;
    let head = format!("PUT /v1/key/encrypt/k HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n", body.len());
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(&body[..5]).await.unwrap();
    slow.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.signal("TERM");
    let start = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    slow.write_all(&body[5..]).await.unwrap();
    slow.flush().await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200 OK") && response.contains("ciphertext"), "{response}");
    loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status:?}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(2), "server still running {:?} after SIGTERM", start.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The server opts out of transparent huge pages: with them, the allocator's
/// partly used huge pages made RSS climb for half an hour under mixed load
/// (the soak in BENCHMARKS.md). Linux reports the flag in /proc.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn server_runs_without_transparent_huge_pages() {
    let s = TestServer::start("");
    assert_eq!(s.admin_client().get("/v1/status").await.status, 200);
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.child.id())).unwrap();
    let Some(line) = status.lines().find(|l| l.starts_with("THP_enabled:")) else {
        eprintln!("SKIP: this kernel does not report THP_enabled");
        return;
    };
    assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
}

#[test]
fn unknown_config_key_is_refused_with_its_name_and_line() {
    let dir = TempDir::new("badcfg");
    let path = dir.0.join("bad.toml");
    std::fs::write(&path, "[admin]\nidentity = \"disabled\"\n[tls]\nkey = \"k\"\ncert = \"c\"\nkeystroke = 1\n")
        .unwrap();
    let mut child = spawn(&path, &dir.0);
    let status = child.wait().unwrap();
    assert!(!status.success());
    let err = std::fs::read_to_string(dir.0.join("stderr.log")).unwrap();
    assert!(err.contains("keystroke") && err.contains("line 6"), "{err}");
}
