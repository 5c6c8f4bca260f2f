//! Requests to a KES-compatible server and the translation of every failure
//! into one readable line.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::ClientError;

/// How long one non-streaming request may take in total.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Most listing pages followed before giving up: a server that keeps
/// answering `continue_at` must not make the client loop forever.
const MAX_PAGES: usize = 100_000;

/// Characters left as they are in a path segment: unreserved ones and `*`,
/// which listings use as "everything".
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'*');

/// Percent-encodes one path segment (a key, policy or identity name).
pub fn segment(name: &str) -> String {
    utf8_percent_encode(name, SEGMENT).to_string()
}

/// The innermost error message of a chain: reqwest's outer messages ("error
/// sending request for url …") say nothing about what went wrong.
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last: &dyn std::error::Error = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// A connected client: the HTTP client and the servers' base URLs.
pub struct Api {
    http: reqwest::Client,
    /// The servers to try, in order; never empty.
    bases: Vec<String>,
    /// The index of the server that answered last: the command's later
    /// requests start there instead of waiting on a dead server again.
    current: AtomicUsize,
    /// Whether the user named a CA (changes the hint for untrusted servers).
    has_ca: bool,
}

impl Api {
    /// An [`Api`] over `bases` (at least one; an empty list is given the
    /// default server rather than failing later on an index).
    pub fn new(http: reqwest::Client, mut bases: Vec<String>, has_ca: bool) -> Api {
        if bases.is_empty() {
            bases.push(super::connect::DEFAULT_SERVER.to_string());
        }
        Api { http, bases, current: AtomicUsize::new(0), has_ca }
    }

    /// The base URL of the server in use (the one that answered last).
    pub fn server(&self) -> &str {
        let i = self.current.load(Ordering::Relaxed);
        self.bases.get(i).or(self.bases.first()).map_or("", String::as_str)
    }

    fn request(&self, base: &str, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{base}{path}"))
    }

    /// Why a request failed in transport, with a hint for the usual causes.
    fn transport_reason(&self, e: &reqwest::Error) -> String {
        let cause = root_cause(e);
        let lower = cause.to_ascii_lowercase();
        if e.is_timeout() {
            "the request timed out".to_string()
        } else if lower.contains("invalid peer certificate") || lower.contains("unknownissuer") {
            let hint = if self.has_ca {
                "check that --cacert (KEYWARD_CACERT) is the CA that signed the server's certificate"
            } else {
                "pass the CA that signed it with --cacert FILE (or KEYWARD_CACERT), or --insecure to skip verification"
            };
            format!("the server's certificate is not trusted ({cause}); {hint}")
        } else if lower.contains("received fatal alert") {
            format!("the server refused the TLS handshake ({cause}); is the client certificate one it accepts?")
        } else if lower.contains("connection refused") {
            "connection refused; is the server running and is the address right?".to_string()
        } else if e.is_connect()
            && (lower.contains("dns") || lower.contains("resolve") || lower.contains("name or service"))
        {
            format!("cannot resolve the host name ({cause})")
        } else {
            cause
        }
    }

    fn transport_error(&self, server: &str, e: &reqwest::Error) -> ClientError {
        ClientError::Connect { server: server.to_string(), reason: self.transport_reason(e) }
    }

    /// Sends the request `build` makes for a base URL, trying the servers in
    /// turn from the last one that answered. Only a failed connection moves
    /// on to the next server: once a server has answered (even with an
    /// error) or the request may have reached it, trying another could
    /// repeat a change. A non-2xx answer becomes [`ClientError::Server`]
    /// carrying the server's `message`.
    async fn send(&self, build: impl Fn(&str) -> RequestBuilder) -> Result<Response, ClientError> {
        let start = self.current.load(Ordering::Relaxed);
        let mut failed = Vec::new();
        for i in 0..self.bases.len() {
            let idx = (start + i) % self.bases.len();
            let base = &self.bases[idx];
            match build(base).send().await {
                Ok(resp) => {
                    self.current.store(idx, Ordering::Relaxed);
                    return self.check(resp).await;
                }
                Err(e) if e.is_connect() => failed.push((base.clone(), self.transport_reason(&e))),
                Err(e) => return Err(self.transport_error(base, &e)),
            }
        }
        Err(unreachable(failed))
    }

    /// Passes a 2xx answer on and turns any other into an error.
    async fn check(&self, resp: Response) -> Result<Response, ClientError> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.bytes().await.unwrap_or_default();
        Err(ClientError::Server { status: status.as_u16(), message: error_message(status, &body) })
    }

    async fn body(&self, resp: Response) -> Result<bytes::Bytes, ClientError> {
        resp.bytes().await.map_err(|e| self.transport_error(self.server(), &e))
    }

    /// GET `path` and decode a JSON answer.
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let resp = self
            .send(|base| {
                self.request(base, Method::GET, path)
                    .header(reqwest::header::ACCEPT, "application/json")
                    .timeout(REQUEST_TIMEOUT)
            })
            .await?;
        decode(&self.body(resp).await?)
    }

    /// GET `path` and return the body as text (metrics).
    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let resp = self.send(|base| self.request(base, Method::GET, path).timeout(REQUEST_TIMEOUT)).await?;
        Ok(String::from_utf8_lossy(&self.body(resp).await?).into_owned())
    }

    /// PUT a JSON body and decode a JSON answer.
    pub async fn put_json<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T, ClientError> {
        let resp = self.send(|base| self.request(base, Method::PUT, path).json(body).timeout(REQUEST_TIMEOUT)).await?;
        decode(&self.body(resp).await?)
    }

    /// PUT with an optional JSON body; the answer's body is ignored.
    pub async fn put(&self, path: &str, body: Option<&Value>) -> Result<(), ClientError> {
        let resp = self
            .send(|base| {
                let req = self.request(base, Method::PUT, path).timeout(REQUEST_TIMEOUT);
                match body {
                    Some(b) => req.json(b),
                    None => req,
                }
            })
            .await?;
        self.body(resp).await.map(drop)
    }

    /// DELETE `path`.
    pub async fn delete(&self, path: &str) -> Result<(), ClientError> {
        let resp = self.send(|base| self.request(base, Method::DELETE, path).timeout(REQUEST_TIMEOUT)).await?;
        self.body(resp).await.map(drop)
    }

    /// GET a never-ending stream (logs): no overall timeout.
    pub async fn stream(&self, path: &str) -> Result<LineStream, ClientError> {
        let resp = self.send(|base| self.request(base, Method::GET, path)).await?;
        Ok(LineStream { resp, pending: Vec::new() })
    }

    /// Lists names under `route` (e.g. `/v1/key/list/`) starting with
    /// `prefix`, following `continue_at` as the KES clients do (the next page
    /// is requested with `continue_at` as its prefix). `field` is the array
    /// holding the names (`names` or `identities`).
    ///
    /// A server that only speaks the old generation answers ndjson
    /// (`{"name":…}` or `{"identity":…}` per line); that is accepted too.
    pub async fn list(&self, route: &str, prefix: &str, field: &str) -> Result<Vec<String>, ClientError> {
        let mut names = Vec::new();
        // A name cannot end in `-`, so neither can a listing argument
        // (`app-` is a 400 in KES and here). Ask for the shorter prefix and
        // filter locally: that works on every server generation.
        let mut next = prefix.trim_end_matches('-').to_string();
        for _ in 0..MAX_PAGES {
            let arg = if next.is_empty() { "*".to_string() } else { segment(&next) };
            let path = format!("{route}{arg}");
            let resp = self
                .send(|base| {
                    self.request(base, Method::GET, &path)
                        .header(reqwest::header::ACCEPT, "application/json")
                        .timeout(REQUEST_TIMEOUT)
                })
                .await?;
            let ndjson = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.starts_with("application/x-ndjson"));
            let body = self.body(resp).await?;
            if ndjson {
                names.extend(parse_ndjson_names(&body)?);
                break;
            }
            let page: Value = decode(&body)?;
            let items = page.get(field).and_then(Value::as_array).cloned().unwrap_or_default();
            names.extend(items.iter().filter_map(Value::as_str).map(str::to_string));
            let cont = page.get("continue_at").and_then(Value::as_str).unwrap_or_default();
            // Stop on an empty or non-advancing continuation.
            if cont.is_empty() || cont == next || !cont.starts_with(prefix) {
                break;
            }
            next = cont.to_string();
        }
        names.retain(|n| n.starts_with(prefix));
        names.dedup();
        Ok(names)
    }
}

/// The error for a command none of whose servers could be reached: the
/// single server's reason as before, or every server with its own.
fn unreachable(failed: Vec<(String, String)>) -> ClientError {
    match <[_; 1]>::try_from(failed) {
        Ok([(server, reason)]) => ClientError::Connect { server, reason },
        Err(all) => ClientError::Unreachable(
            all.iter().map(|(server, reason)| format!("{server}: {reason}")).collect::<Vec<_>>().join("; "),
        ),
    }
}

/// The `message` of an error answer, or the status when there is none
/// (KES answers some errors, like unknown paths, in plain text).
pub fn error_message(status: reqwest::StatusCode, body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        if let Some(m) = v.get("message").and_then(Value::as_str) {
            if !m.trim().is_empty() {
                return m.trim().to_string();
            }
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if !text.is_empty() && text.len() <= 200 && !text.starts_with('{') {
        return text.to_string();
    }
    format!("the server answered {status}")
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ClientError> {
    serde_json::from_slice(body).map_err(|e| ClientError::Failed(format!("unexpected answer from the server: {e}")))
}

/// Names from an old-generation ndjson listing; an `{"error":…}` line is the
/// server's failure mid-stream.
fn parse_ndjson_names(body: &[u8]) -> Result<Vec<String>, ClientError> {
    let mut names = Vec::new();
    for line in body.split(|b| *b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)) {
        let v: Value = decode(line)?;
        if let Some(err) = v.get("error").and_then(Value::as_str).filter(|e| !e.is_empty()) {
            return Err(ClientError::Server { status: 200, message: err.to_string() });
        }
        if let Some(n) = ["name", "identity"].iter().find_map(|f| v.get(*f).and_then(Value::as_str)) {
            names.push(n.to_string());
        }
    }
    Ok(names)
}

/// A response body read line by line as it arrives.
pub struct LineStream {
    resp: Response,
    pending: Vec<u8>,
}

impl LineStream {
    /// The next complete line (without its newline), or `None` at the end.
    pub async fn next_line(&mut self) -> Result<Option<String>, ClientError> {
        loop {
            if let Some(pos) = self.pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=pos).collect();
                return Ok(Some(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned()));
            }
            match self.resp.chunk().await {
                Ok(Some(chunk)) => self.pending.extend_from_slice(&chunk),
                Ok(None) if self.pending.is_empty() => return Ok(None),
                Ok(None) => return Ok(Some(String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned())),
                Err(e) => return Err(ClientError::Failed(format!("the log stream broke: {}", root_cause(&e)))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_come_from_the_body_or_the_status() {
        let s = reqwest::StatusCode::NOT_FOUND;
        assert_eq!(error_message(s, br#"{"message":"key does not exist"}"#), "key does not exist");
        assert_eq!(error_message(s, b"404 page not found\n"), "404 page not found");
        assert_eq!(error_message(s, b""), "the server answered 404 Not Found");
    }

    #[test]
    fn segments_are_encoded_but_stars_kept() {
        assert_eq!(segment("my-key_1"), "my-key_1");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
        assert_eq!(segment("*"), "*");
    }

    #[test]
    fn ndjson_listings_are_read_and_errors_surface() {
        let names = parse_ndjson_names(b"{\"name\":\"a\"}\n{\"name\":\"b\"}\n").unwrap();
        assert_eq!(names, ["a", "b"]);
        assert!(parse_ndjson_names(b"{\"error\":\"boom\"}\n").is_err());
    }
}
