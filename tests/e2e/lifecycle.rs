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
