//! `audit-webhook`: POSTs keyward audit events to an HTTP(S) endpoint.
//!
//! Each `write` sends its whole batch as one request: every event's `json`
//! (the exact KES audit line) followed by `\n`, with
//! `Content-Type: application/x-ndjson`. A connection failure, a timeout, a
//! 5xx, a 408 or a 429 is retried with exponential backoff; any other answer
//! outside 2xx fails the batch at once. After the last retry the batch fails
//! with `unavailable`; the host then counts the events as dropped and moves
//! on (it never retries a batch, and requests never wait for a sink).
//!
//! Configuration (the `[audit.config]` table):
//!
//! ```json
//! {"url": "http://127.0.0.1:9999/audit", "retries": 3, "backoff_ms": 100,
//!  "headers": {"Authorization": "Bearer …"}, "connect_timeout_ms": 1000}
//! ```
//!
//! * `url` (required): `http://` or `https://`. The host must grant its origin
//!   (`grants.hosts`); the bundled copy is granted exactly that origin.
//! * `retries` (default 3): attempts after the first one.
//! * `backoff_ms` (default 100): wait before the first retry; doubled before
//!   each next one (capped at 10 s per wait).
//! * `headers` (default none): extra request headers, e.g. for authentication.
//! * `connect_timeout_ms` (default 1000): per attempt.
//!
//! All attempts of one batch happen inside one host call, so `retries` and
//! `backoff_ms` must fit the plugin's `call_timeout` (2 s by default): with the
//! defaults the waits add up to 100 + 200 + 400 = 700 ms. A call that runs past
//! its deadline is stopped by the host and its batch dropped all the same.

use std::collections::BTreeMap;
use std::time::Duration;

use keyward_sdk::{log, AuditSink, Error, Event};
use waki::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use waki::{Client, ErrorCode};

/// The longest single wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The most retries a configuration may ask for.
const MAX_RETRIES: u32 = 20;

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

struct Webhook {
    url: String,
    retries: u32,
    backoff: Duration,
    connect_timeout: Duration,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// Why one attempt failed, and whether another attempt may help.
struct Failure {
    message: String,
    retry: bool,
}

/// The batch as ndjson: one event's KES JSON line per line.
fn render(events: &[Event]) -> Vec<u8> {
    let size = events.iter().map(|e| e.json.len() + 1).sum();
    let mut out = Vec::with_capacity(size);
    for event in events {
        // A raw line break would split one event into two lines; well-formed
        // JSON never contains one, so replace defensively.
        if event.json.contains('\n') {
            out.extend_from_slice(event.json.replace('\n', " ").as_bytes());
        } else {
            out.extend_from_slice(event.json.as_bytes());
        }
        out.push(b'\n');
    }
    out
}

/// `url` must be an absolute http(s) URL with a host.
fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("must start with http:// or https://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err("has no host".into());
    }
    if authority.contains('@') {
        return Err("must not contain credentials (use headers)".into());
    }
    Ok(())
}

impl Webhook {
    fn attempt(&self, body: &[u8]) -> Result<(), Failure> {
        let request = Client::new()
            .post(&self.url)
            .connect_timeout(self.connect_timeout)
            .headers(self.headers.iter().cloned())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"))
            .body(body.to_vec());
        let response = request.send().map_err(|e| {
            let denied = matches!(e.downcast_ref::<ErrorCode>(), Some(ErrorCode::HttpRequestDenied));
            Failure {
                message: if denied {
                    format!("the host denied the request to {} (not in grants.hosts)", self.url)
                } else if e.to_string().contains("StreamError") {
                    // The connection failed while the batch was being written.
                    format!("POST {}: connection failed while sending ({e}); is the receiver up?", self.url)
                } else {
                    format!("POST {}: {e}", self.url)
                },
                retry: !denied,
            }
        })?;
        let status = response.status_code();
        // Read (and drop) the answer so the connection finishes cleanly.
        let _ = response.body();
        match status {
            200..=299 => Ok(()),
            408 | 429 | 500..=599 => {
                Err(Failure { message: format!("POST {}: status {status}", self.url), retry: true })
            }
            _ => Err(Failure { message: format!("POST {}: status {status}", self.url), retry: false }),
        }
    }
}

impl AuditSink for Webhook {
    fn init(config: &str) -> Result<Self, Error> {
        let config: Config =
            serde_json::from_str(config).map_err(|e| Error::Invalid(format!("audit-webhook config: {e}")))?;
        check_url(&config.url)
            .map_err(|m| Error::Invalid(format!("audit-webhook config: url {:?} {m}", config.url)))?;
        if config.retries > MAX_RETRIES {
            return Err(Error::Invalid(format!("audit-webhook config: retries must be at most {MAX_RETRIES}")));
        }
        let mut headers = Vec::with_capacity(config.headers.len());
        for (name, value) in &config.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| Error::Invalid(format!("audit-webhook config: bad header name {name:?}")))?;
            if name == CONTENT_TYPE {
                return Err(Error::Invalid("audit-webhook config: Content-Type is always application/x-ndjson".into()));
            }
            let value = HeaderValue::from_str(value)
                .map_err(|_| Error::Invalid(format!("audit-webhook config: bad value for header {name}")))?;
            headers.push((name, value));
        }
        Ok(Webhook {
            url: config.url,
            retries: config.retries,
            backoff: Duration::from_millis(config.backoff_ms),
            connect_timeout: Duration::from_millis(config.connect_timeout_ms.max(1)),
            headers,
        })
    }

    fn write(&self, events: Vec<Event>) -> Result<(), Error> {
        if events.is_empty() {
            return Ok(());
        }
        let body = render(&events);
        let mut wait = self.backoff;
        let mut attempt = 0;
        loop {
            let failure = match self.attempt(&body) {
                Ok(()) => return Ok(()),
                Err(f) => f,
            };
            if !failure.retry {
                return Err(Error::Internal(failure.message));
            }
            if attempt >= self.retries {
                return Err(Error::Unavailable(format!(
                    "{} (gave up after {} attempts)",
                    failure.message,
                    attempt + 1
                )));
            }
            attempt += 1;
            log::debug(&format!("{}; retry {attempt} of {} in {wait:?}", failure.message, self.retries));
            // A WASI monotonic-clock wait: the instance blocks in the host
            // without spinning.
            std::thread::sleep(wait);
            wait = (wait * 2).min(MAX_BACKOFF);
        }
    }
}

keyward_sdk::export_audit_sink!(Webhook);
