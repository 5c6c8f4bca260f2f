//! One HTTP exchange with Vault over `wasi:http`, redirects included.
//!
//! The host's `wasi:http` implementation does the connecting, TLS (with its
//! trust roots) and the origin allow-list (`grants.hosts`); a request to an
//! origin not granted fails with `HttpRequestDenied` before any connection.
//! Every request opens a new connection (as KES does, with keep-alives off),
//! and nothing here waits past the caller's deadline.

use std::time::{Duration, Instant};

use waki::bindings::wasi::clocks::monotonic_clock;
use waki::bindings::wasi::http::outgoing_handler;
use waki::bindings::wasi::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingResponse, Method, OutgoingBody, OutgoingRequest, RequestOptions,
    Scheme,
};
use waki::bindings::wasi::io::poll;
use waki::bindings::wasi::io::streams::StreamError;

use crate::config::Endpoint;

/// Redirects followed for one request: a standby points at the active node,
/// which answers; more than that is a loop.
const MAX_REDIRECTS: usize = 3;
/// Bytes per write to a request body stream.
const WRITE_CHUNK: usize = 4096;

/// A request to `/v1/<path>`.
pub struct Request {
    pub method: Method,
    /// The API path after `/v1/`, already percent-encoded.
    pub path: String,
    /// The query string without `?`, or empty.
    pub query: String,
    /// Header names (lower case) and values. Values may be secret (the token):
    /// they never appear in a message.
    pub headers: Vec<(&'static str, String)>,
    pub body: Option<Vec<u8>>,
    /// The most body bytes accepted in the answer.
    pub max_body: usize,
    /// Another node to send it to (`http(s)://host:port`, a cluster node's
    /// `api_addr`) instead of the endpoint; held to the same rules as a
    /// redirect.
    pub node: Option<String>,
}

impl Request {
    pub fn new(method: Method, path: String) -> Request {
        Request { method, path, query: String::new(), headers: Vec::new(), body: None, max_body: 1 << 20, node: None }
    }

    /// `GET kv/my-key`: how messages name a request (no query, no body).
    pub fn describe(&self) -> String {
        format!("{} {}", method_name(&self.method), self.path)
    }
}

pub fn method_name(method: &Method) -> &'static str {
    match method {
        Method::Get => "GET",
        Method::Put => "PUT",
        Method::Post => "POST",
        Method::Delete => "DELETE",
        _ => "request",
    }
}

/// Vault's answer: status, body, and the consistency index if it sent one.
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
    /// `X-Vault-Index`, for read-after-write consistency on HA clusters.
    pub index: Option<String>,
}

/// Why an exchange failed before a complete answer arrived.
pub struct Failure {
    pub message: String,
    /// Whether another attempt may succeed (a refused connection, a timeout),
    /// as opposed to a refusal by the host or a certificate problem.
    pub retry: bool,
}

/// Where a request goes: the endpoint at first, a redirect's target after.
struct Target {
    https: bool,
    authority: String,
    path_with_query: String,
}

impl Target {
    fn origin(&self) -> String {
        format!("{}://{}", if self.https { "https" } else { "http" }, self.authority)
    }
}

pub struct Http {
    pub endpoint: Endpoint,
    pub connect_timeout: Duration,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Waits until `pollable` is ready or `deadline` passes; false on the latter.
fn wait(pollable: &waki::bindings::wasi::io::poll::Pollable, deadline: Instant) -> bool {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return false;
    }
    let timer = monotonic_clock::subscribe_duration(nanos(left));
    poll::poll(&[pollable, &timer]);
    true
}

fn response(future: &FutureIncomingResponse, deadline: Instant) -> Result<IncomingResponse, ErrorCode> {
    loop {
        match future.get() {
            Some(Ok(result)) => return result,
            Some(Err(())) => return Err(ErrorCode::InternalError(Some("response already taken".into()))),
            None => {
                if !wait(&future.subscribe(), deadline) {
                    return Err(ErrorCode::ConnectionReadTimeout);
                }
            }
        }
    }
}

/// A `Location` header: an absolute `http(s)://` URL or an absolute path on
/// the same origin.
fn redirect_target(current: &Target, location: &str) -> Result<Target, String> {
    if location.starts_with('/') && !location.starts_with("//") {
        return Ok(Target {
            https: current.https,
            authority: current.authority.clone(),
            path_with_query: location.into(),
        });
    }
    let endpoint = Endpoint::parse(location.split(['?', '#']).next().unwrap_or(""))
        .map_err(|m| format!("redirected to a Location that {m}"))?;
    let after_authority = &location[location.find("://").map_or(0, |i| i + 3)..];
    let path = after_authority.find(['/', '?']).map_or("/", |i| &after_authority[i..]);
    let path = path.split('#').next().unwrap_or("/");
    let path_with_query = if path.starts_with('?') { format!("/{path}") } else { path.to_string() };
    if current.https && !endpoint.https {
        return Err(format!("refusing a redirect from {} to plain http ({})", current.origin(), endpoint.origin()));
    }
    Ok(Target { https: endpoint.https, authority: endpoint.authority, path_with_query })
}

impl Http {
    /// Sends `request`, following up to [`MAX_REDIRECTS`] redirects, and
    /// returns the first answer that is not one. Redirects re-send the same
    /// method, headers and body, as Vault's own client does for `307`; the
    /// host refuses any origin it has not granted.
    pub fn send(&self, request: &Request, deadline: Instant) -> Result<Response, Failure> {
        let query = if request.query.is_empty() { String::new() } else { format!("?{}", request.query) };
        let mut target = Target {
            https: self.endpoint.https,
            authority: self.endpoint.authority.clone(),
            path_with_query: format!("{}/v1/{}{query}", self.endpoint.base, request.path),
        };
        if let Some(node) = &request.node {
            let location = format!("{}/v1/{}{query}", node.trim_end_matches('/'), request.path);
            target = redirect_target(&target, &location)
                .map_err(|m| Failure { message: format!("{}: node {node}: {m}", request.describe()), retry: false })?;
        }
        for hop in 0..=MAX_REDIRECTS {
            let (response, location) = self.exchange(&target, request, deadline, hop > 0)?;
            match (response.status, location) {
                (301 | 302 | 307 | 308, Some(location)) if hop < MAX_REDIRECTS => {
                    target = redirect_target(&target, &location)
                        .map_err(|m| Failure { message: format!("{}: {m}", request.describe()), retry: false })?;
                }
                (301 | 302 | 307 | 308, _) => {
                    return Err(Failure {
                        message: format!("{}: too many redirects (last to {})", request.describe(), target.origin()),
                        retry: false,
                    })
                }
                _ => return Ok(response),
            }
        }
        unreachable!("the loop returns on its last hop")
    }

    fn failure(&self, request: &Request, target: &Target, redirected: bool, code: ErrorCode) -> Failure {
        let origin = target.origin();
        let (message, retry) = match code {
            ErrorCode::HttpRequestDenied if redirected => {
                (format!("redirected to {origin}, which the host refused: add it to grants.hosts"), false)
            }
            ErrorCode::HttpRequestDenied => (format!("the host refused {origin}: add it to grants.hosts"), false),
            ErrorCode::TlsCertificateError => {
                (format!("the TLS certificate of {origin} is not trusted by the keyward host"), false)
            }
            ErrorCode::ConnectionRefused => (format!("{origin} refused the connection"), true),
            ErrorCode::ConnectionTimeout => (format!("connecting to {origin} timed out"), true),
            ErrorCode::ConnectionReadTimeout | ErrorCode::HttpResponseTimeout => {
                (format!("no answer from {origin} in time"), true)
            }
            ErrorCode::DnsError(_) => (format!("cannot resolve the host of {origin}"), true),
            ErrorCode::HttpRequestUriInvalid | ErrorCode::HttpRequestMethodInvalid | ErrorCode::ConfigurationError => {
                (format!("request to {origin} refused by the HTTP layer ({code:?})"), false)
            }
            code => (format!("{origin}: {code:?}"), true),
        };
        Failure { message: format!("{}: {message}", request.describe()), retry }
    }

    /// One request to `target`; the answer and its `Location` header.
    fn exchange(
        &self,
        target: &Target,
        request: &Request,
        deadline: Instant,
        redirected: bool,
    ) -> Result<(Response, Option<String>), Failure> {
        let fatal = |m: &str| Failure { message: format!("{}: {m}", request.describe()), retry: false };
        let mut headers: Vec<(String, Vec<u8>)> =
            request.headers.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect();
        if request.body.is_some() {
            headers.push(("content-type".into(), b"application/json".to_vec()));
        }
        let fields = Fields::from_list(&headers).map_err(|_| fatal("a request header was refused"))?;
        let outgoing = OutgoingRequest::new(fields);
        outgoing.set_method(&request.method).map_err(|()| fatal("cannot set the method"))?;
        let scheme = if target.https { Scheme::Https } else { Scheme::Http };
        outgoing.set_scheme(Some(&scheme)).map_err(|()| fatal("cannot set the scheme"))?;
        outgoing.set_authority(Some(&target.authority)).map_err(|()| fatal("the host or port is not valid"))?;
        outgoing.set_path_with_query(Some(&target.path_with_query)).map_err(|()| fatal("the path is not valid"))?;
        let body = outgoing.body().map_err(|()| fatal("cannot open the request body"))?;
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        let options = RequestOptions::new();
        let _ = options.set_connect_timeout(Some(nanos(self.connect_timeout.min(left))));
        let _ = options.set_first_byte_timeout(Some(nanos(left)));
        let _ = options.set_between_bytes_timeout(Some(nanos(left)));
        let future = outgoing_handler::handle(outgoing, Some(options))
            .map_err(|e| self.failure(request, target, redirected, e))?;
        // A failed write means the connection failed: the reason is in the
        // response, so wait for it either way.
        let written = (|| {
            let stream = body.write()?;
            for chunk in request.body.as_deref().unwrap_or_default().chunks(WRITE_CHUNK) {
                stream.blocking_write_and_flush(chunk).map_err(|_| ())?;
            }
            Ok::<_, ()>(())
        })();
        let finished = OutgoingBody::finish(body, None);
        let incoming = response(&future, deadline).map_err(|e| self.failure(request, target, redirected, e))?;
        let status = incoming.status();
        if written.is_err() || finished.is_err() {
            return Err(Failure {
                message: format!(
                    "{}: {} answered {status} before the request was sent",
                    request.describe(),
                    target.origin()
                ),
                retry: matches!(status, 429 | 500..=599),
            });
        }
        let headers = incoming.headers();
        let header =
            |name: &str| headers.get(&name.to_string()).into_iter().next().and_then(|v| String::from_utf8(v).ok());
        let index = header("x-vault-index").filter(|v| !v.is_empty());
        let location = header("location");
        drop(headers);
        let body = read_body(&incoming, request.max_body, deadline).map_err(|m| Failure {
            message: format!("{}: reading the answer from {}: {m}", request.describe(), target.origin()),
            retry: true,
        })?;
        Ok((Response { status, body, index }, location))
    }
}

/// The whole body of `response`, at most `max` bytes, before `deadline`.
fn read_body(response: &IncomingResponse, max: usize, deadline: Instant) -> Result<Vec<u8>, String> {
    let body = response.consume().map_err(|()| "the body was already taken".to_string())?;
    let stream = body.stream().map_err(|()| "the body stream was already taken".to_string())?;
    let mut out = Vec::new();
    let result = loop {
        match stream.read(64 * 1024) {
            Ok(chunk) if chunk.is_empty() => {
                if !wait(&stream.subscribe(), deadline) {
                    break Err("timed out".to_string());
                }
            }
            Ok(chunk) => {
                out.extend_from_slice(&chunk);
                if out.len() > max {
                    break Err(format!("the answer is larger than {max} bytes"));
                }
            }
            Err(StreamError::Closed) => break Ok(out),
            Err(StreamError::LastOperationFailed(e)) => break Err(e.to_debug_string()),
        }
    };
    // The stream is a child of the body: it goes first.
    drop(stream);
    drop(body);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(https: bool) -> Target {
        Target { https, authority: "standby:8200".into(), path_with_query: "/v1/kv/a".into() }
    }

    #[test]
    fn redirects_keep_path_and_query_and_refuse_downgrades() {
        let t = redirect_target(&target(false), "http://active:8200/v1/kv/a?list=true").ok().unwrap();
        assert_eq!((t.authority.as_str(), t.path_with_query.as_str()), ("active:8200", "/v1/kv/a?list=true"));
        let t = redirect_target(&target(true), "/v1/kv/b").ok().unwrap();
        assert_eq!((t.https, t.authority.as_str(), t.path_with_query.as_str()), (true, "standby:8200", "/v1/kv/b"));
        assert!(redirect_target(&target(true), "http://active:8200/v1/kv/a").is_err());
        let t = redirect_target(&target(false), "https://active:8200").ok().unwrap();
        assert_eq!(t.path_with_query, "/");
    }
}
