//! Outbound HTTP (`wasi:http`): linked only for plugins granted hosts, only to
//! the granted origins, never past the call's deadline; and the
//! `audit-webhook` sink built on it.
//!
//! The `http-probe` fixture's `get(url)` GETs `url`; every server here is a
//! small hyper server on 127.0.0.1 that records what it was sent.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use keyward_core::audit_sink::{AuditBatch, AuditSink};
use keyward_core::keystore::{Keystore, StoreError};
use keyward_plugin_host::{
    Grants, Limits, PluginAuditSink, PluginError, PluginKeystore, PluginKind, PoolOptions, TIMEOUT_MESSAGE,
};

use crate::{capture_logs, pinned, shared_engine};

/// One request a [`Receiver`] got.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: http::HeaderMap,
    body: Bytes,
}

/// An HTTP/1.1 server on 127.0.0.1 that records every request and answers
/// `503` to the first `fail_first` of them, `status` (200 unless changed) to
/// the rest, with the body `hello <path>` (or `big_body` when it is set).
struct Receiver {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    fail_first: Arc<AtomicUsize>,
    status: Arc<AtomicUsize>,
    big_body: Arc<Mutex<Option<Bytes>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let fail_first = Arc::new(AtomicUsize::new(0));
        let status = Arc::new(AtomicUsize::new(200));
        let big_body = Arc::new(Mutex::new(None::<Bytes>));
        let task = {
            let (seen, connections, fail_first, status, big_body) =
                (seen.clone(), connections.clone(), fail_first.clone(), status.clone(), big_body.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    connections.fetch_add(1, Ordering::SeqCst);
                    let (seen, fail_first, status, big_body) =
                        (seen.clone(), fail_first.clone(), status.clone(), big_body.clone());
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (seen, fail_first, status, big_body) =
                            (seen.clone(), fail_first.clone(), status.clone(), big_body.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let path = parts.uri.path().to_string();
                            seen.lock().unwrap().push(Seen {
                                method: parts.method.to_string(),
                                path: path.clone(),
                                headers: parts.headers,
                                body,
                            });
                            let code = if fail_first
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                                .is_ok()
                            {
                                503
                            } else {
                                status.load(Ordering::SeqCst) as u16
                            };
                            let body = big_body.lock().unwrap().clone();
                            let body = body.unwrap_or_else(|| Bytes::from(format!("hello {path}")));
                            let mut resp = hyper::Response::new(Full::new(body));
                            *resp.status_mut() = hyper::StatusCode::from_u16(code).unwrap();
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    tokio::spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        };
        Receiver { addr, seen, connections, fail_first, status, big_body, task }
    }

    fn origin(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn hosts(origins: &[String]) -> Grants {
    Grants { hosts: origins.to_vec(), ..Grants::default() }
}

async fn probe(grants: Grants, limits: Limits) -> Result<PluginKeystore, PluginError> {
    let mut spec = pinned("probe", "http_probe", PluginKind::Keystore, grants);
    spec.limits = limits;
    PluginKeystore::load(&shared_engine(), &spec, "{}", PoolOptions { max_instances: 1 }).await
}

/// The wasi:http error code in a probe's `unavailable` answer.
fn probe_error(r: Result<Vec<u8>, StoreError>) -> String {
    match r {
        Err(StoreError::Unavailable(m)) => m,
        other => panic!("expected unavailable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_host_is_reachable() {
    let rx = Receiver::start().await;
    // Granted by name with a trailing slash and in upper case: origins compare
    // case-insensitively, paths in grants are not part of the origin.
    let ks = probe(hosts(&[format!("HTTP://127.0.0.1:{}/", rx.addr.port())]), Limits::default()).await.unwrap();
    assert_eq!(ks.get(&rx.url("/hello?x=1")).await.unwrap(), b"hello /hello");
    assert_eq!(ks.get(&rx.url("/again")).await.unwrap(), b"hello /again");
    let seen = rx.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!((seen[0].method.as_str(), seen[0].path.as_str()), ("GET", "/hello"));
    assert_eq!(seen[0].headers["host"], format!("127.0.0.1:{}", rx.addr.port()).as_str());
    // Non-2xx answers reach the plugin as answers, not as host errors.
    rx.status.store(404, Ordering::SeqCst);
    assert!(probe_error(ks.get(&rx.url("/missing")).await).contains("status 404"));
    assert_eq!(ks.stats().traps.load(Ordering::Relaxed), 0);
}

/// Anything but the exact granted origin is refused with `HttpRequestDenied`
/// before a connection is made, and the host logs it with the plugin's name.
#[tokio::test(flavor = "current_thread")]
async fn hosts_not_granted_are_denied_before_connecting() {
    let (captured, _guard) = capture_logs(tracing::Level::WARN);

    let granted = Receiver::start().await;
    let other = Receiver::start().await;
    let ks = probe(hosts(&[granted.origin()]), Limits::default()).await.unwrap();
    let port = granted.addr.port();
    for url in [
        other.url("/secret"),                           // another port
        format!("http://localhost:{port}/secret"),      // same address, other name
        format!("https://127.0.0.1:{port}/secret"),     // other scheme
        format!("http://127.0.0.2:{port}/secret"),      // other host
        format!("http://user@127.0.0.1:{port}/secret"), // credentials in the authority
    ] {
        let m = probe_error(ks.get(&url).await);
        eprintln!("{url}: {m}");
        assert!(m.contains("HttpRequestDenied"), "{url}: {m}");
    }
    assert_eq!(other.connections.load(Ordering::SeqCst), 0, "the denied host was contacted");
    assert_eq!(granted.connections.load(Ordering::SeqCst), 0, "a denied request was sent anyway");
    // Refusals are answers, not traps: the same instance still works.
    assert_eq!(ks.get(&granted.url("/ok")).await.unwrap(), b"hello /ok");
    assert_eq!(ks.stats().instances_created.load(Ordering::Relaxed), 1);

    let out = captured.text();
    let denial = out
        .lines()
        .find(|l| l.contains("denied") && l.contains(&format!("127.0.0.1:{}", other.addr.port())))
        .unwrap_or_else(|| panic!("no denial logged:\n{out}"));
    assert!(denial.contains("WARN"), "{denial}");
    assert!(denial.contains("plugin=\"probe\"") || denial.contains("plugin=probe"), "{denial}");
}

/// A component importing `wasi:http` is refused at load unless it is granted
/// hosts, with a message saying how to grant them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_http_without_a_grant_is_refused_at_load() {
    let e = probe(Grants::default(), Limits::default()).await.unwrap_err();
    match &e {
        PluginError::UnsupportedImport { plugin, import, .. } => {
            assert_eq!(plugin, "probe");
            assert!(import.starts_with("wasi:http/"), "{import}");
        }
        other => panic!("{other}"),
    }
    let message = e.to_string();
    assert!(message.contains("grants.hosts") && message.contains("wasi:http"), "{message}");
    // A malformed grant in a programmatic spec is refused too.
    let e = probe(hosts(&["ftp://127.0.0.1".into()]), Limits::default()).await.unwrap_err();
    assert!(e.to_string().contains("grants.hosts"), "{e}");
}

/// A TCP server on 127.0.0.1 that accepts connections and never answers: its
/// address, the connections it holds, and its task (abort it when done).
async fn silent_server() -> (std::net::SocketAddr, Arc<Mutex<Vec<tokio::net::TcpStream>>>, tokio::task::JoinHandle<()>)
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let task = {
        let held = held.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                held.lock().unwrap().push(stream);
            }
        })
    };
    (addr, held, task)
}

/// A server that accepts and then never answers cannot hold a call past its
/// deadline: the request fails at the deadline (well before the wall-clock
/// backstop) and the call ends as a timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cannot_outlive_the_call_deadline() {
    let (addr, held, silent) = silent_server().await;
    let limits = Limits { call_timeout: Duration::from_millis(300), ..Limits::default() };
    let ks = probe(hosts(&[format!("http://127.0.0.1:{}", addr.port())]), limits).await.unwrap();
    let started = Instant::now();
    let r = ks.get(&format!("http://127.0.0.1:{}/never", addr.port())).await;
    let took = started.elapsed();
    assert_eq!(r, Err(StoreError::Unavailable(TIMEOUT_MESSAGE.into())));
    // The backstop would only fire at 300 + 500 ms.
    assert!(took >= Duration::from_millis(290) && took < Duration::from_millis(650), "{took:?}");
    assert_eq!(held.lock().unwrap().len(), 1, "the request did reach the server");
    assert_eq!(ks.stats().timeouts.load(Ordering::Relaxed), 1);
    assert_eq!(ks.get("next").await.unwrap(), b"next");
    silent.abort();
}

/// The audit line of event `i`.
fn event(i: u32) -> String {
    format!(r#"{{"time":"2024-01-01T00:00:{i:02}Z","request":{{"path":"/v1/key/create/k{i}"}},"n":{i}}}"#)
}

/// Events as the batch a sink is handed: every line followed by `\n`.
fn batch(events: impl IntoIterator<Item = u32>) -> Vec<u8> {
    events.into_iter().map(|i| event(i) + "\n").collect::<String>().into_bytes()
}

async fn webhook(url: &str, origin: &str, extra: &str) -> Result<PluginAuditSink, PluginError> {
    let spec = pinned("webhook", "audit_webhook", PluginKind::AuditSink, hosts(&[origin.to_string()]));
    let config = format!(r#"{{"url": "{url}"{extra}}}"#);
    PluginAuditSink::load(&shared_engine(), &spec, &config, PoolOptions { max_instances: 1 }).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_posts_each_batch_as_ndjson() {
    let rx = Receiver::start().await;
    let sink = webhook(&rx.url("/audit"), &rx.origin(), r#", "headers": {"X-Audit-Token": "s3cret"}"#).await.unwrap();
    sink.write(AuditBatch::new(&batch(0..3))).await.unwrap();
    sink.write(AuditBatch::new(b"")).await.unwrap();
    sink.write(AuditBatch::new(&batch([3]))).await.unwrap();
    let seen = rx.seen();
    assert_eq!(seen.len(), 2, "one request per non-empty batch");
    for s in &seen {
        assert_eq!((s.method.as_str(), s.path.as_str()), ("POST", "/audit"));
        assert_eq!(s.headers["content-type"], "application/x-ndjson");
        assert_eq!(s.headers["x-audit-token"], "s3cret");
    }
    assert_eq!(seen[0].body, batch(0..3));
    assert_eq!(seen[1].body, batch([3]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_retries_5xx_with_backoff_then_gives_up() {
    let rx = Receiver::start().await;
    let sink = webhook(&rx.url("/audit"), &rx.origin(), r#", "retries": 2, "backoff_ms": 50"#).await.unwrap();
    // Two failures, then success: delivered on the third attempt.
    rx.fail_first.store(2, Ordering::SeqCst);
    let started = Instant::now();
    sink.write(AuditBatch::new(&batch([1]))).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(150), "backoff 50 + 100 ms: {:?}", started.elapsed());
    assert_eq!(rx.seen().len(), 3);

    // Always failing: 1 + 2 attempts, then `unavailable`.
    rx.status.store(500, Ordering::SeqCst);
    match sink.write(AuditBatch::new(&batch([2]))).await {
        Err(StoreError::Unavailable(m)) => assert!(m.contains("500") && m.contains("3 attempts"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(rx.seen().len(), 6);

    // A client error is not retried.
    rx.status.store(400, Ordering::SeqCst);
    assert!(
        matches!(sink.write(AuditBatch::new(&batch([3]))).await, Err(StoreError::Internal(m)) if m.contains("400"))
    );
    assert_eq!(rx.seen().len(), 7);
    assert_eq!(sink.stats().traps.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_with_the_receiver_down_fails_fast() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let origin = format!("http://127.0.0.1:{port}");
    // Loads even though nothing listens: the receiver may come up later.
    let sink = webhook(&format!("{origin}/audit"), &origin, r#", "retries": 2, "backoff_ms": 20"#).await.unwrap();
    let started = Instant::now();
    match sink.write(AuditBatch::new(&batch([1]))).await {
        Err(StoreError::Unavailable(m)) => {
            eprintln!("receiver down: {m}");
            assert!(m.contains("3 attempts"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_config_errors_are_load_errors() {
    for (config, needle) in [
        (r#"{}"#, "url"),
        (r#"{"url": "ftp://127.0.0.1/x"}"#, "http"),
        (r#"{"url": "http:///x"}"#, "no host"),
        (r#"{"url": "http://127.0.0.1:99999/x"}"#, "port"),
        (r#"{"url": "http://127.0.0.1:1/x#part"}"#, "fragment"),
        (r#"{"url": "http://127.0.0.1:1/a b"}"#, "' '"),
        (r#"{"url": "http://user:pa55word@127.0.0.1:1/x"}"#, "credentials"),
        (r#"{"url": "http://127.0.0.1:1/x", "retries": 1000}"#, "retries"),
        (r#"{"url": "http://127.0.0.1:1/x", "backoff_ms": 60000}"#, "backoff_ms"),
        (r#"{"url": "http://127.0.0.1:1/x", "timeout_ms": 0}"#, "timeout_ms"),
        (r#"{"url": "http://127.0.0.1:1/x", "headers": {"bad name": "v"}}"#, "header"),
        (r#"{"url": "http://127.0.0.1:1/x", "headers": {"Host": "elsewhere"}}"#, "host"),
        (r#"{"url": "http://127.0.0.1:1/x", "headers": {"Content-Length": "1"}}"#, "content-length"),
        (r#"{"url": "http://127.0.0.1:1/x", "headers": {"Content-Type": "text/plain"}}"#, "content-type"),
        (r#"{"url": "http://127.0.0.1:1/x", "headers": {"Connection": "close"}}"#, "connection"),
        (r#"{"url": "http://127.0.0.1:1/x", "headers": {"X-Key": "a", "x-key": "b"}}"#, "twice"),
        (r#"{"url": "http://127.0.0.1:1/x", "headers": {"Authorization": "Bearer pa55word\n"}}"#, "authorization"),
        (r#"{"url": "http://127.0.0.1:1/x", "colour": "blue"}"#, "colour"),
    ] {
        let spec = pinned("webhook", "audit_webhook", PluginKind::AuditSink, hosts(&["http://127.0.0.1:1".into()]));
        let e = PluginAuditSink::load(&shared_engine(), &spec, config, PoolOptions::default()).await.unwrap_err();
        assert!(
            matches!(&e, PluginError::Init { source: StoreError::Invalid(m), .. } if m.contains(needle)),
            "{config}: {e}"
        );
        // Neither a URL's credentials nor a header value is ever repeated.
        assert!(!e.to_string().contains("pa55word"), "{config}: {e}");
    }
    // The sink may only reach what it is granted: a URL outside the grant is
    // denied by the host and not retried.
    let rx = Receiver::start().await;
    let sink = webhook(&rx.url("/audit"), "http://127.0.0.1:1", "").await.unwrap();
    match sink.write(AuditBatch::new(&batch([1]))).await {
        Err(StoreError::Internal(m)) => assert!(m.contains("denied"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(rx.connections.load(Ordering::SeqCst), 0);
}

/// The scheme is case-insensitive (as in the host's allow-list), and a URL
/// without a path posts to `/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_urls_as_the_host_reads_them() {
    let rx = Receiver::start().await;
    for (url, path) in [
        (format!("HTTP://127.0.0.1:{}/audit", rx.addr.port()), "/audit"),
        (format!("http://127.0.0.1:{}?source=keyward", rx.addr.port()), "/"),
    ] {
        let sink = webhook(&url, &rx.origin(), "").await.unwrap_or_else(|e| panic!("{url}: {e}"));
        sink.write(AuditBatch::new(&batch([1]))).await.unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(rx.seen().last().unwrap().path, path, "{url}");
    }
}

/// A receiver that accepts the connection and never answers: the batch fails
/// within the sink's `timeout_ms`, with the sink's own message, well before
/// the host's call deadline (which would discard the instance and say only
/// "timed out").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_gives_up_on_a_silent_receiver_within_its_time_budget() {
    let (addr, held, silent) = silent_server().await;
    let origin = format!("http://127.0.0.1:{}", addr.port());
    let sink = webhook(&format!("{origin}/audit"), &origin, r#", "timeout_ms": 500, "retries": 3, "backoff_ms": 50"#)
        .await
        .unwrap();
    for _ in 0..2 {
        let started = Instant::now();
        let r = sink.write(AuditBatch::new(&batch([1]))).await;
        let took = started.elapsed();
        match r {
            Err(StoreError::Unavailable(m)) => {
                assert!(m.contains("no answer in time") && m.contains("timeout_ms = 500"), "{m}");
                assert!(m.contains(&origin), "{m}");
            }
            other => panic!("{other:?}"),
        }
        // The call deadline is the default 2 s.
        assert!(took >= Duration::from_millis(480) && took < Duration::from_millis(1200), "{took:?}");
    }
    let stats = sink.stats();
    assert_eq!(stats.timeouts.load(Ordering::Relaxed), 0);
    assert_eq!(stats.traps.load(Ordering::Relaxed), 0);
    assert_eq!(stats.instances_created.load(Ordering::Relaxed), 1, "the instance was thrown away");
    assert_eq!(held.lock().unwrap().len(), 2, "one request per batch");
    silent.abort();
}

/// A retry schedule longer than `timeout_ms` stops at the budget: the sink
/// never starts a retry it could not finish, whatever `retries` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_retries_stop_at_the_time_budget() {
    let rx = Receiver::start().await;
    rx.status.store(503, Ordering::SeqCst);
    // Attempts at 0, 200 and 600 ms; the next would start at 1400 ms.
    let config = r#", "retries": 20, "backoff_ms": 200, "timeout_ms": 1000"#;
    let sink = webhook(&rx.url("/audit"), &rx.origin(), config).await.unwrap();
    let started = Instant::now();
    match sink.write(AuditBatch::new(&batch([1]))).await {
        Err(StoreError::Unavailable(m)) => {
            assert!(m.contains("status 503") && m.contains("3 attempts") && m.contains("timeout_ms"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(600) && took < Duration::from_millis(1000), "{took:?}");
    assert_eq!(rx.seen().len(), 3);
    assert_eq!(sink.stats().timeouts.load(Ordering::Relaxed), 0);
}

/// The answer's body is never read: a receiver answering with more than the
/// plugin's whole memory costs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_ignores_the_response_body() {
    let rx = Receiver::start().await;
    *rx.big_body.lock().unwrap() = Some(Bytes::from(vec![b'x'; 96 << 20]));
    let sink = webhook(&rx.url("/audit"), &rx.origin(), "").await.unwrap();
    for status in [200, 500] {
        rx.status.store(status, Ordering::SeqCst);
        let r = sink.write(AuditBatch::new(&batch([1]))).await;
        assert!(if status == 200 { r.is_ok() } else { r.is_err() }, "{status}: {r:?}");
    }
    assert_eq!(sink.stats().traps.load(Ordering::Relaxed), 0);
    assert_eq!(sink.stats().instances_created.load(Ordering::Relaxed), 1);
}

/// Messages and log lines name the endpoint by its origin: a token in the
/// URL's path or query, and header values, never reach the host log.
#[tokio::test(flavor = "current_thread")]
async fn webhook_messages_never_show_secrets() {
    let (captured, _guard) = capture_logs(tracing::Level::DEBUG);

    let rx = Receiver::start().await;
    rx.status.store(500, Ordering::SeqCst);
    let url = rx.url("/hooks/PATH-T0KEN?key=QUERY-T0KEN");
    let config = r#", "retries": 1, "backoff_ms": 10, "headers": {"Authorization": "Bearer HEADER-T0KEN"}"#;
    let sink = webhook(&url, &rx.origin(), config).await.unwrap();
    let m = match sink.write(AuditBatch::new(&batch([1]))).await {
        Err(StoreError::Unavailable(m)) => m,
        other => panic!("{other:?}"),
    };
    assert!(m.contains(&format!("POST to {}: status 500", rx.origin())) && m.contains("2 attempts"), "{m}");
    let seen = rx.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].path, "/hooks/PATH-T0KEN");
    assert_eq!(seen[0].headers["authorization"], "Bearer HEADER-T0KEN");
    let log = captured.text();
    assert!(log.contains("retry 1 of 1"), "the retry was not logged:\n{log}");
    assert!(!m.contains("T0KEN"), "{m}");
    assert!(!log.contains("T0KEN"), "{log}");
}

/// `https://` goes through rustls with the public (webpki) roots: a granted
/// local server with a self-signed certificate gets a real TLS handshake, and
/// the plugin a TLS error because nothing vouches for that certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_verifies_against_the_public_roots() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let (cert, key) = keyward::dev::self_signed("localhost", vec!["127.0.0.1".into()], false).unwrap();
    let certs = vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handshakes = Arc::new(Mutex::new(Vec::new()));
    let server = {
        let handshakes = handshakes.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let outcome = match acceptor.accept(stream).await {
                    Ok(_) => "accepted".to_string(),
                    Err(e) => e.to_string(),
                };
                handshakes.lock().unwrap().push(outcome);
            }
        })
    };
    let ks = probe(hosts(&[format!("https://127.0.0.1:{port}")]), Limits::default()).await.unwrap();
    let m = probe_error(ks.get(&format!("https://127.0.0.1:{port}/x")).await);
    assert!(m.contains("TlsCertificateError"), "{m}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while handshakes.lock().unwrap().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = handshakes.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_ne!(seen[0], "accepted", "an untrusted certificate was accepted");
    eprintln!("plugin: {m}; server: {}", seen[0]);
    server.abort();
}
