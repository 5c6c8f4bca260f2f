//! `audit-webhook`: POSTs keyward audit events to an HTTP(S) endpoint.
//!
//! It exports the `audit-lines` world. Each `write` sends its whole batch as
//! one request whose body is the batch exactly as the host gave it, every
//! event's exact KES audit line followed by `\n`, with
//! `Content-Type: application/x-ndjson`. A connection failure (refused,
//! reset, connect timeout), a 5xx, a 408 or a 429 is retried with exponential
//! backoff; any other answer outside 2xx, and a request the host refuses
//! (origin not granted), fails the batch at once. The whole batch has a time
//! budget (`timeout_ms`): the wait for an answer ends with it, and no retry
//! starts after it. When the retries or the budget run out, the batch fails
//! with `unavailable`; the host then counts the events as dropped and moves on
//! (it never retries a batch, and requests never wait for a sink).
//!
//! Configuration (the `[audit.config]` table):
//!
//! ```json
//! {"url": "http://127.0.0.1:9999/audit", "retries": 3, "backoff_ms": 100,
//!  "headers": {"Authorization": "Bearer …"}, "connect_timeout_ms": 1000,
//!  "timeout_ms": 1500}
//! ```
//!
//! * `url` (required): `http://` or `https://`, no credentials, no fragment.
//!   The host must grant its origin (`grants.hosts`); the bundled copy is
//!   granted exactly that origin.
//! * `retries` (default 3, at most 20): attempts after the first one.
//! * `backoff_ms` (default 100, at most 10000): wait before the first retry;
//!   doubled before each next one (capped at 10 s per wait).
//! * `headers` (default none): extra request headers, e.g. for authentication.
//!   `Content-Type`, `Content-Length`, `Host` and the connection-level headers
//!   are the HTTP layer's and refused.
//! * `connect_timeout_ms` (default 1000): per attempt.
//! * `timeout_ms` (default 1500): the most one batch may take, every attempt
//!   and wait included. An attempt gets what is left of it to connect and to
//!   get the answer's status line, and no retry is started that would not
//!   begin before it ends.
//!
//! All attempts of one batch happen inside one host call, which the host stops
//! at the plugin's `call_timeout` (2 s by default): keep `timeout_ms` below it,
//! so that a failing batch ends with this sink's own message (what failed, after
//! how many attempts) rather than as a timed-out call whose instance the host
//! throws away.
//!
//! Error messages and log lines name the endpoint by its origin only
//! (`https://host:port`): webhook URLs often carry a token in their path or
//! query, and header values (credentials) never appear anywhere.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use keyward_sdk::{log, AuditSink, Error};
use waki::bindings::wasi::clocks::monotonic_clock;
use waki::bindings::wasi::http::outgoing_handler;
use waki::bindings::wasi::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingResponse, Method, OutgoingBody, OutgoingRequest, RequestOptions,
    Scheme,
};
use waki::bindings::wasi::io::poll;
use waki::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, TRANSFER_ENCODING};

/// The longest single wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The most retries a configuration may ask for.
const MAX_RETRIES: u32 = 20;
/// The longest `timeout_ms` (the host's longest `call_timeout`).
const MAX_TIMEOUT: Duration = Duration::from_secs(600);
/// Bytes per write to the request body stream (the most `wasi:io` takes at once).
const WRITE_CHUNK: usize = 4096;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    url: String,
    #[serde(default = "default_retries")]
    retries: u32,
    #[serde(default = "default_backoff_ms")]
    backoff_ms: u64,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default = "default_connect_timeout_ms")]
    connect_timeout_ms: u64,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
}

fn default_retries() -> u32 {
    3
}

fn default_backoff_ms() -> u64 {
    100
}

fn default_connect_timeout_ms() -> u64 {
    1000
}

fn default_timeout_ms() -> u64 {
    1500
}

/// Where the batches go: the URL split the way `wasi:http` takes it.
struct Target {
    https: bool,
    /// `host[:port]`, as in the URL.
    authority: String,
    /// Path and query, `/` when the URL has neither.
    path_with_query: String,
}

impl Target {
    /// Parses an absolute `http(s)://` URL with a host, no credentials and no
    /// fragment. Error messages never repeat the URL (it may hold a token).
    fn parse(url: &str) -> Result<Target, String> {
        let (scheme, rest) = url.split_once("://").ok_or("must start with http:// or https://")?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            _ => return Err("must start with http:// or https://".into()),
        };
        if let Some(c) = url.chars().find(|c| !c.is_ascii_graphic() || "\"<>\\^`{|}".contains(*c)) {
            return Err(format!("contains {c:?}, which a URL cannot hold unencoded"));
        }
        if rest.contains('#') {
            return Err("must not have a #fragment (it would never be sent)".into());
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.contains('@') {
            return Err("must not contain credentials (use headers)".into());
        }
        // The port is what follows the last ':' outside an IPv6 literal.
        let (host, port) = match authority.rfind(':') {
            Some(i) if !authority[i..].contains(']') => (&authority[..i], Some(&authority[i + 1..])),
            _ => (authority, None),
        };
        if host.is_empty() {
            return Err("has no host".into());
        }
        if let Some(port) = port {
            if port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err("has a port that is not a number from 1 to 65535".into());
            }
        }
        let path_with_query = match path {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        Ok(Target { https, authority: authority.to_string(), path_with_query })
    }

    /// `scheme://authority`: how messages name the endpoint.
    fn origin(&self) -> String {
        format!("{}://{}", if self.https { "https" } else { "http" }, self.authority)
    }

    fn scheme(&self) -> Scheme {
        if self.https {
            Scheme::Https
        } else {
            Scheme::Http
        }
    }
}

struct Webhook {
    target: Target,
    /// The origin, for messages.
    origin: String,
    retries: u32,
    backoff: Duration,
    connect_timeout: Duration,
    timeout: Duration,
    /// Request headers, `Content-Type` included, as `wasi:http` fields take them.
    headers: Vec<(String, Vec<u8>)>,
}

/// Why one attempt failed, and whether another attempt may help.
struct Failure {
    message: String,
    retry: bool,
}

/// Headers the HTTP layer sets itself (or `wasi:http` refuses).
fn reserved(name: &HeaderName) -> bool {
    [CONTENT_TYPE, CONTENT_LENGTH, HOST, CONNECTION, TRANSFER_ENCODING].contains(name)
        || ["keep-alive", "proxy-connection", "upgrade", "te", "trailer"].contains(&name.as_str())
}

/// Checks and lowers the configured headers; messages name the header, never
/// its value.
fn request_headers(configured: &BTreeMap<String, String>) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut headers: Vec<(String, Vec<u8>)> = Vec::with_capacity(configured.len() + 1);
    for (name, value) in configured {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("bad header name {name:?}"))?;
        if reserved(&name) {
            return Err(format!("header {name} is set by the HTTP layer and cannot be configured"));
        }
        if headers.iter().any(|(n, _)| *n == name.as_str()) {
            return Err(format!("header {name} is given twice (header names ignore case)"));
        }
        HeaderValue::from_str(value)
            .map_err(|_| format!("the value of header {name} is not a valid header value (not shown)"))?;
        headers.push((name.as_str().to_string(), value.as_bytes().to_vec()));
    }
    headers.push((CONTENT_TYPE.as_str().to_string(), b"application/x-ndjson".to_vec()));
    Ok(headers)
}

/// `d` in nanoseconds, as `wasi:clocks` durations are.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Waits for the response, at most until `deadline`. Dropping the future on
/// a timeout makes the host abandon the request and close its connection.
fn response(future: &FutureIncomingResponse, deadline: Instant) -> Result<IncomingResponse, ErrorCode> {
    loop {
        match future.get() {
            Some(Ok(result)) => return result,
            Some(Err(())) => return Err(ErrorCode::InternalError(Some("response already taken".into()))),
            None => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ErrorCode::ConnectionReadTimeout);
                }
                let ready = future.subscribe();
                let timer = monotonic_clock::subscribe_duration(nanos(left));
                poll::poll(&[&ready, &timer]);
            }
        }
    }
}

impl Webhook {
    /// A request for one attempt, with the headers and target set.
    fn request(&self) -> Result<OutgoingRequest, String> {
        let fields = Fields::from_list(&self.headers).map_err(|e| format!("request headers refused: {e:?}"))?;
        let request = OutgoingRequest::new(fields);
        request.set_method(&Method::Post).map_err(|()| "cannot set the method")?;
        request.set_scheme(Some(&self.target.scheme())).map_err(|()| "cannot set the scheme")?;
        request.set_authority(Some(&self.target.authority)).map_err(|()| "the URL's host or port is not valid")?;
        request
            .set_path_with_query(Some(&self.target.path_with_query))
            .map_err(|()| "the URL's path or query is not valid")?;
        Ok(request)
    }

    fn failure(&self, code: ErrorCode) -> Failure {
        let retry = !matches!(
            code,
            ErrorCode::HttpRequestDenied
                | ErrorCode::HttpRequestUriInvalid
                | ErrorCode::HttpRequestMethodInvalid
                | ErrorCode::TlsCertificateError
                | ErrorCode::ConfigurationError
        );
        let message = match code {
            ErrorCode::HttpRequestDenied => {
                format!("the host denied the request to {} (not in grants.hosts)", self.origin)
            }
            ErrorCode::ConnectionReadTimeout | ErrorCode::HttpResponseTimeout => {
                format!("POST to {}: no answer in time ({code:?})", self.origin)
            }
            code => format!("POST to {}: {code:?}", self.origin),
        };
        Failure { message, retry }
    }

    /// One POST of `body`, which must be answered before `deadline`.
    fn attempt(&self, body: &[u8], deadline: Instant) -> Result<(), Failure> {
        let fatal = |m: String| Failure { message: format!("POST to {}: {m}", self.origin), retry: false };
        let request = self.request().map_err(fatal)?;
        let outgoing = request.body().map_err(|()| fatal("cannot open the request body".into()))?;
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        let options = RequestOptions::new();
        // The host bounds connecting (and the HTTP handshake) by the first,
        // sending the request and receiving the status line by the second;
        // `response` stops waiting at the deadline whatever happened before.
        let _ = options.set_connect_timeout(Some(nanos(self.connect_timeout.min(left))));
        let _ = options.set_first_byte_timeout(Some(nanos(left)));
        let future = outgoing_handler::handle(request, Some(options)).map_err(|e| self.failure(e))?;
        // A write fails when the connection does (refused, reset, denied by
        // the host): the reason is then in the response, so wait for it
        // either way.
        let written = (|| {
            let stream = outgoing.write()?;
            for chunk in body.chunks(WRITE_CHUNK) {
                stream.blocking_write_and_flush(chunk).map_err(|_| ())?;
            }
            Ok::<_, ()>(())
        })();
        let finished = OutgoingBody::finish(outgoing, None);
        let response = response(&future, deadline).map_err(|e| self.failure(e))?;
        if written.is_err() || finished.is_err() {
            // Answered before the whole batch was sent (say, 413): whatever
            // the status, the batch did not arrive.
            let status = response.status();
            return Err(Failure {
                message: format!("POST to {}: status {status} before the batch was sent", self.origin),
                retry: matches!(status, 408 | 429 | 500..=599),
            });
        }
        // The answer's body is not read: only the status matters, and a
        // large or slow body must not cost memory or time. Dropping the
        // response closes the connection.
        let status = response.status();
        match status {
            200..=299 => Ok(()),
            408 | 429 | 500..=599 => {
                Err(Failure { message: format!("POST to {}: status {status}", self.origin), retry: true })
            }
            300..=399 => Err(Failure {
                message: format!("POST to {}: status {status} (redirects are not followed)", self.origin),
                retry: false,
            }),
            _ => Err(Failure { message: format!("POST to {}: status {status}", self.origin), retry: false }),
        }
    }
}

fn invalid(message: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("audit-webhook config: {message}"))
}

impl AuditSink for Webhook {
    fn init(config: &str) -> Result<Self, Error> {
        let config: Config = serde_json::from_str(config).map_err(invalid)?;
        let target = Target::parse(config.url.trim()).map_err(|m| invalid(format_args!("url {m}")))?;
        if config.retries > MAX_RETRIES {
            return Err(invalid(format_args!("retries must be at most {MAX_RETRIES}")));
        }
        let backoff = Duration::from_millis(config.backoff_ms);
        if backoff > MAX_BACKOFF {
            return Err(invalid(format_args!("backoff_ms must be at most {}", MAX_BACKOFF.as_millis())));
        }
        let timeout = Duration::from_millis(config.timeout_ms);
        if timeout.is_zero() || timeout > MAX_TIMEOUT {
            return Err(invalid(format_args!("timeout_ms must be from 1 to {}", MAX_TIMEOUT.as_millis())));
        }
        let headers = request_headers(&config.headers).map_err(invalid)?;
        let webhook = Webhook {
            origin: target.origin(),
            target,
            retries: config.retries,
            backoff,
            connect_timeout: Duration::from_millis(config.connect_timeout_ms.max(1)),
            timeout,
            headers,
        };
        // Everything a request is made of is checked now, by the same
        // `wasi:http` calls every batch makes, so a bad header or URL is a
        // start-up error rather than a failure per batch.
        webhook.request().map_err(invalid)?;
        Ok(webhook)
    }

    /// The batch is already ndjson: it is the request body as it is.
    fn write(&self, body: Vec<u8>) -> Result<(), Error> {
        if body.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let deadline = started + self.timeout;
        let mut wait = self.backoff;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let failure = match self.attempt(&body, deadline) {
                Ok(()) => return Ok(()),
                Err(f) => f,
            };
            if !failure.retry {
                return Err(Error::Internal(failure.message));
            }
            let tried = if attempts == 1 { "1 attempt".to_string() } else { format!("{attempts} attempts") };
            if attempts > self.retries {
                return Err(Error::Unavailable(format!("{} (gave up after {tried})", failure.message)));
            }
            if Instant::now() + wait >= deadline {
                return Err(Error::Unavailable(format!(
                    "{} (gave up after {tried} in {} ms: another would not start within timeout_ms = {})",
                    failure.message,
                    started.elapsed().as_millis(),
                    self.timeout.as_millis()
                )));
            }
            log::debug(&format!("{}; retry {attempts} of {} in {wait:?}", failure.message, self.retries));
            // A WASI monotonic-clock wait: the instance blocks in the host
            // without spinning.
            std::thread::sleep(wait);
            wait = (wait * 2).min(MAX_BACKOFF);
        }
    }
}

keyward_sdk::export_audit_sink!(Webhook);
