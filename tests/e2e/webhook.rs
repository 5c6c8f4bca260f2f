//! The bundled `audit-webhook` sink: a receiver on 127.0.0.1 gets every audit
//! event of the server; with the receiver down, requests are just as fast, the
//! lost events are counted in `keyward_audit_dropped_events` and the failures
//! logged without the URL's token.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::harness::{Client, TestServer};

/// An HTTP/1.1 receiver on 127.0.0.1 that keeps every ndjson line POSTed to
/// it. Stopping it closes the listener and every open connection.
struct Receiver {
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<Value>>>,
    bad: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(addr: SocketAddr) -> Receiver {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let bad = Arc::new(Mutex::new(Vec::new()));
        let task = {
            let (lines, bad) = (lines.clone(), bad.clone());
            tokio::spawn(async move {
                let mut connections = tokio::task::JoinSet::new();
                while let Ok((stream, _)) = listener.accept().await {
                    let (lines, bad) = (lines.clone(), bad.clone());
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (lines, bad) = (lines.clone(), bad.clone());
                        async move {
                            let ok = req.method() == hyper::Method::POST
                                && req.uri().path() == "/audit"
                                && req.headers().get("content-type").is_some_and(|v| v == "application/x-ndjson");
                            if !ok {
                                bad.lock().unwrap().push(format!("{} {} {:?}", req.method(), req.uri(), req.headers()));
                            }
                            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let text = String::from_utf8_lossy(&body).into_owned();
                            if !text.ends_with('\n') {
                                bad.lock().unwrap().push(format!("body without a final newline: {text:?}"));
                            }
                            let mut lines = lines.lock().unwrap();
                            for line in text.lines() {
                                match serde_json::from_str(line) {
                                    Ok(v) => lines.push(v),
                                    Err(e) => bad.lock().unwrap().push(format!("{e}: {line:?}")),
                                }
                            }
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                        }
                    });
                    // Dropped (so aborted) with the accept task.
                    connections.spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        };
        Receiver { addr, lines, bad, task }
    }

    fn count(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    fn paths(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| l["request"]["path"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Waits (at most 10 s) until `n` events arrived, then a little longer
    /// so that any extra event would show.
    async fn wait_for(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.count() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

fn webhook_config(url: &str) -> String {
    format!("[[audit]]\nplugin = \"audit-webhook\"\n[audit.config]\nurl = \"{url}\"\nretries = 3\nbackoff_ms = 100\n")
}

async fn dropped(c: &Client) -> u64 {
    let text = c.get("/v1/metrics").await.text();
    text.lines()
        .find_map(|l| l.strip_prefix("keyward_audit_dropped_events "))
        .unwrap_or_else(|| panic!("no keyward_audit_dropped_events in:\n{text}"))
        .trim()
        .parse::<f64>()
        .unwrap() as u64
}

/// Median wall time of `n` describe requests (each one audited).
async fn median_latency(c: &Client, n: usize, sent: &mut Vec<String>) -> Duration {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        c.get("/v1/key/describe/hooked").await.ok();
        times.push(started.elapsed());
        sent.push("/v1/key/describe/hooked".into());
    }
    times.sort();
    times[n / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_gets_every_event_and_a_dead_receiver_costs_nothing() {
    let rx = Receiver::start("127.0.0.1:0".parse().unwrap()).await;
    let addr = rx.addr;
    // Webhook URLs often carry a credential; it must never reach the log.
    let s = TestServer::start(&webhook_config(&format!("http://127.0.0.1:{}/audit?token=E2E-T0KEN", addr.port())));
    let c = s.admin_client();

    // Every request, refused ones included, arrives once and in order.
    let mut sent = Vec::new();
    c.put_empty("/v1/key/create/hooked").await.ok();
    sent.push("/v1/key/create/hooked".to_string());
    for i in 0..20 {
        let path = match i % 4 {
            0 => "/v1/key/describe/hooked".to_string(),
            1 => format!("/v1/key/describe/missing-{i}"),
            2 => "/v1/status".to_string(),
            _ => format!("/v1/key/create/hooked-{i}"),
        };
        let r = if path.starts_with("/v1/key/create/") { c.put_empty(&path).await } else { c.get(&path).await };
        assert!(r.status == 200 || r.status == 404, "{path}: {}", r.status);
        sent.push(path);
    }
    s.anonymous().get("/v1/key/describe/hooked").await; // refused: no certificate
    sent.push("/v1/key/describe/hooked".to_string());
    rx.wait_for(sent.len()).await;
    assert_eq!(rx.paths(), sent, "bad requests: {:?}", rx.bad.lock().unwrap());
    assert!(rx.bad.lock().unwrap().is_empty(), "{:?}", rx.bad.lock().unwrap());
    let codes: Vec<u64> = rx.lines.lock().unwrap().iter().map(|l| l["response"]["code"].as_u64().unwrap()).collect();
    assert_eq!(codes[0], 200);
    assert_eq!(codes[2], 404);
    assert_eq!(*codes.last().unwrap(), 400, "refused requests are audited too");

    // Latency with the receiver up (its events all delivered afterwards).
    let up = median_latency(&c, 40, &mut sent).await;
    rx.wait_for(sent.len()).await;
    assert_eq!(rx.count(), sent.len());
    assert_eq!(dropped(&c).await, 0);
    rx.stop().await;

    // Receiver down: the same requests are as fast, and the sink's failures
    // (after its retries, off the request path) are counted as drops.
    let down = median_latency(&c, 40, &mut sent).await;
    eprintln!("median latency: receiver up {up:?}, down {down:?}");
    assert!(down <= up * 2 + Duration::from_millis(20), "up {up:?}, down {down:?}");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut lost = 0;
    while lost == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        lost = dropped(&c).await;
    }
    assert!(lost > 0, "no dropped events counted; stderr:\n{}", s.stderr());
    // The failures are in the server log, with the reason.
    let log = s.stderr();
    assert!(log.contains("audit sink failed") && log.contains("attempts"), "{log}");
    assert!(!log.contains("T0KEN"), "the URL's token is in the log:\n{log}");

    // The receiver comes back on the same address: new events flow again.
    let rx = Receiver::start(addr).await;
    c.get("/v1/key/describe/after-outage").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rx.paths().iter().any(|p| p == "/v1/key/describe/after-outage") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(rx.paths().iter().any(|p| p == "/v1/key/describe/after-outage"), "{:?}", rx.paths());
    rx.stop().await;
}

/// The bundled sink is granted its URL's origin only; a config without a
/// usable URL stops the server at start-up with a clear message.
#[tokio::test]
async fn webhook_needs_an_http_url() {
    for (config, needle) in [
        ("[[audit]]\nplugin = \"audit-webhook\"\n", "url"),
        ("[[audit]]\nplugin = \"audit-webhook\"\n[audit.config]\nurl = \"ftp://127.0.0.1/x\"\n", "http"),
    ] {
        let e = TestServer::try_start(crate::harness::Setup { extra_config: config.to_string(), ..Default::default() })
            .err()
            .unwrap_or_else(|| panic!("{config}: the server started"));
        assert!(e.contains("audit-webhook") && e.contains(needle), "{config}: {e}");
    }
}
