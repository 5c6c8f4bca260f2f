//! HTTP API: both KES generations on one port.
//!
//! [`serve`] takes one request through the same steps for every route:
//! route → method → authenticate/authorize → read the body within its limit →
//! handler under the route's timeout → metrics and audit. Handlers only see a
//! [`Call`] and answer `Result<Reply, ApiError>`; every error becomes a JSON
//! `{"message": …}` in one place ([`error`]).

pub mod body;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod go_json;
mod identity;
mod key;
mod policy;
pub mod routes;
mod system;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, ALLOW, CONTENT_TYPE};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use serde::Serialize;
use tracing::Instrument;

use crate::state::State;
use crate::tls::IdentityError;
use error::ApiError;
use routes::{AuthClass, Handler, Route};

pub use body::{BodyTimedOut, RequestBody};

/// Response body: a full buffer (every answer but log following) or a
/// stream. An enum rather than a boxed body, so the usual answer costs no
/// allocation beyond its bytes.
pub enum Body {
    /// The whole body (`None` once sent, or when empty).
    Full(Option<Bytes>),
    /// A stream of frames.
    Stream(BoxBody<Bytes, Infallible>),
}

impl Body {
    fn full(bytes: Bytes) -> Body {
        Body::Full(Some(bytes).filter(|b| !b.is_empty()))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(bytes) => std::task::Poll::Ready(bytes.take().map(|b| Ok(hyper::body::Frame::data(b)))),
            Body::Stream(stream) => std::pin::Pin::new(stream).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(bytes) => bytes.is_none(),
            Body::Stream(stream) => stream.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Body::Full(bytes) => hyper::body::SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Stream(stream) => stream.size_hint(),
        }
    }
}
/// A finished response.
pub type Reply = Response<Body>;

/// What a connection knows about its client. Shared (`Arc<str>`) because
/// every request's audit event carries both: a reference count, not a copy.
#[derive(Debug, Clone)]
pub struct Peer {
    pub ip: Option<Arc<str>>,
    pub identity: Result<Arc<str>, IdentityError>,
}

/// How a listing argument selects names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    All,
    Prefix(String),
    Glob(String),
}

impl Selector {
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Selector::All => true,
            Selector::Prefix(p) => name.starts_with(p.as_str()),
            Selector::Glob(g) => crate::auth::pattern::glob_match(g, name),
        }
    }

    /// The prefix a store can narrow its listing by.
    pub fn prefix(&self) -> &str {
        match self {
            Selector::Prefix(p) => p,
            _ => "",
        }
    }
}

/// One authorized call, as a handler sees it.
pub struct Call<'a> {
    pub state: &'a State,
    pub route: &'static Route,
    /// The resource name after the route prefix (percent-decoded).
    pub name: &'a str,
    /// The caller's identity (absent only on routes that need none).
    pub identity: Option<&'a str>,
    /// Whether a listing should be JSON (`Accept: application/json`).
    /// No Go client sends `Accept`; all of them read ndjson.
    pub wants_json: bool,
    /// The request has an `Accept` header (the Go KES clients send none).
    pub accepts_any: bool,
    /// The `Kes-Enclave` header named an enclave other than the default.
    pub other_enclave: bool,
    pub query: Option<&'a str>,
    pub body: Bytes,
}

impl Call<'_> {
    /// The identity, for routes that require one.
    pub fn caller(&self) -> &str {
        self.identity.unwrap_or_default()
    }

    /// Parses the listing argument.
    ///
    /// JSON listings (new generation) take a prefix, optionally ending in `*`.
    /// ndjson listings take `*`/empty for all, a glob if the pattern has glob
    /// characters (old generation), and otherwise a prefix — what the newer Go
    /// clients, which also read ndjson, mean by it.
    pub fn selector(&self) -> Result<Selector, ApiError> {
        let p = self.name;
        if self.wants_json {
            if !keyward_core::names::valid_pattern_new(p) {
                return Err(ApiError::bad_request(keyward_core::names::invalid_listing_pattern(p)));
            }
            let prefix = p.strip_suffix('*').unwrap_or(p);
            return Ok(if prefix.is_empty() { Selector::All } else { Selector::Prefix(prefix.to_string()) });
        }
        if p.is_empty() || p == "*" {
            return Ok(Selector::All);
        }
        keyward_core::names::validate_pattern_old(p).map_err(|e| ApiError::bad_request(e.to_string()))?;
        if p.contains(['*', '?', '[', '\\']) {
            Ok(Selector::Glob(p.to_string()))
        } else {
            Ok(Selector::Prefix(p.to_string()))
        }
    }

    /// Decodes a JSON object body, matching field names as Go does
    /// ([`go_json`]); any malformed body is the same 400.
    ///
    /// serde would also fill a struct from a JSON array; Go (and so KES)
    /// refuses that, and so do we.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        if self.body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::invalid_body());
        }
        self.json_any()
    }

    /// Decodes any JSON body (arrays included), matching field names as Go
    /// does.
    pub fn json_any<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        go_json::from_slice(&self.body).map_err(|_| ApiError::invalid_body())
    }
}

/// An answer with its whole body. hyper writes `content-length` from the
/// body's exact size (`0` included, as Go's server does), so it is not set here:
/// that would be two more allocations per request.
fn full(status: StatusCode, content_type: Option<&'static str>, body: Vec<u8>) -> Reply {
    let mut r = Response::new(Body::full(Bytes::from(body)));
    *r.status_mut() = status;
    if let Some(ct) = content_type {
        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    r
}

/// 200 with a JSON body (ending in a newline, as Go's encoder writes).
pub fn json_reply<T: Serialize>(value: &T) -> Result<Reply, ApiError> {
    let mut body = serde_json::to_vec(value)
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "failed to encode response"))?;
    body.push(b'\n');
    Ok(full(StatusCode::OK, Some("application/json"), body))
}

/// 200 with a JSON body that carries a secret (a plaintext, a data key):
/// the buffer is zeroed once hyper has written it and let it go.
pub fn secret_json_reply<T: Serialize>(value: &T) -> Result<Reply, ApiError> {
    let mut body = serde_json::to_vec(value)
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "failed to encode response"))?;
    body.push(b'\n');
    let mut r = Response::new(Body::full(Bytes::from_owner(body::WipedOnDrop(body))));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(r)
}

/// 200 with no body.
pub fn empty_reply() -> Result<Reply, ApiError> {
    Ok(full(StatusCode::OK, None, Vec::new()))
}

/// 200 with newline-delimited JSON lines.
pub fn ndjson_reply<T: Serialize>(items: impl IntoIterator<Item = T>) -> Result<Reply, ApiError> {
    let mut body = Vec::new();
    for item in items {
        serde_json::to_writer(&mut body, &item)
            .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "failed to encode response"))?;
        body.push(b'\n');
    }
    Ok(full(StatusCode::OK, Some("application/x-ndjson"), body))
}

/// 200 with an arbitrary body and content type (metrics).
pub fn raw_reply(content_type: &'static str, body: Vec<u8>) -> Result<Reply, ApiError> {
    Ok(full(StatusCode::OK, Some(content_type), body))
}

/// A streaming ndjson body that forwards lines from a broadcast channel until
/// the client goes away.
pub fn stream_reply(rx: crate::audit::follow::Follower) -> Result<Reply, ApiError> {
    use crate::audit::follow::RecvError;
    use futures_util::stream;
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    let lines = stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(line) => {
                    let mut b = Vec::with_capacity(line.len() + 1);
                    b.extend_from_slice(line.as_bytes());
                    b.push(b'\n');
                    return Some((Ok::<_, Infallible>(Frame::data(Bytes::from(b))), rx));
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    });
    let mut r = Response::new(Body::Stream(BodyExt::boxed(StreamBody::new(lines))));
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    Ok(r)
}

fn error_reply(e: &ApiError) -> Reply {
    let mut r = full(e.status, Some("application/json"), e.body());
    if let Some(m) = e.allow {
        r.headers_mut().insert(ACCEPT, HeaderValue::from_static(m));
        r.headers_mut().insert(ALLOW, HeaderValue::from_static(m));
    }
    r
}

fn header_has(headers: &http::HeaderMap, name: http::header::HeaderName, needle: &str) -> bool {
    headers.get_all(name).iter().any(|v| v.to_str().is_ok_and(|s| s.to_ascii_lowercase().contains(needle)))
}

/// Serves one request. Never fails: every error is a JSON answer.
///
/// Everything decided from the head alone (routing, authorization) happens
/// here, before the future is made: what the future carries, and so what is
/// copied each time hyper moves it, is only what the handler needs.
pub fn serve<B: RequestBody>(
    state: &'static State,
    peer: Arc<Peer>,
    req: Request<B>,
) -> impl Future<Output = Result<Reply, Infallible>> {
    let start = Instant::now();
    // The wall-clock arrival time is only for the audit line.
    let received = state.audit.wanted().then(std::time::SystemTime::now);
    state.metrics.requests.begin();
    let (mut head, body) = req.into_parts();
    let path = RequestPath::new(std::mem::take(&mut head.uri));
    let identity = peer.identity.as_ref().ok().cloned();
    // Attached with `instrument`, not entered: an entered span guard held
    // across an await would tag whatever else runs on this thread meanwhile.
    let span = tracing::debug_span!("request", method = %head.method, path = %&*path);
    let admitted = admit(state, &peer, &path, &head);
    drop(head);
    async move {
        let result = match admitted {
            Ok(admitted) => {
                let timeout = admitted.timeout;
                within(timeout, run(state, &path, identity.as_deref(), admitted, body)).instrument(span.clone()).await
            }
            Err(e) => Err(e),
        };
        let _enter = span.enter();
        let reply = match result {
            Ok(r) => r,
            Err(e) => {
                if e.status.is_server_error() && e.status != StatusCode::NOT_IMPLEMENTED {
                    state.errors.error(&format!("{}: {}", &*path, e.message));
                }
                error_reply(&e)
            }
        };
        let status = reply.status().as_u16();
        let elapsed = start.elapsed();
        state.metrics.requests.end(status, elapsed);
        if let Some(received) = received {
            state.audit.record(&crate::audit::Answered {
                received,
                ip: peer.ip.as_deref(),
                path: &path,
                identity: identity.as_deref(),
                status,
                duration: elapsed,
                answered: start + elapsed,
            });
        }
        tracing::debug!(status, micros = elapsed.as_micros() as u64, "served");
        Ok(reply)
    }
}

/// A request that may run: its route and what its handler needs from the head.
struct Admitted {
    route: &'static Route,
    /// Where the resource name starts in the path (it is the path's tail).
    name_at: usize,
    timeout: std::time::Duration,
    wants_json: bool,
    /// The request has an `Accept` header.
    accepts_any: bool,
    /// The `Kes-Enclave` header names an enclave other than the default.
    other_enclave: bool,
}

/// Routes and authenticates a request from its head alone: everything
/// before the body is read.
fn admit(state: &State, peer: &Peer, path: &RequestPath, head: &http::request::Parts) -> Result<Admitted, ApiError> {
    let (route, name) = routes::find(path).ok_or_else(ApiError::no_route)?;
    if !route.methods.allows(&head.method) {
        return Err(ApiError::method_not_allowed(head.method.as_str(), route.methods.primary()));
    }
    let overrides = state.overrides.load();
    let setting = overrides.get(route);
    let auth = match setting {
        Some(s) if s.skip_auth => AuthClass::None,
        _ => route.auth,
    };
    let timeout = setting.and_then(|s| s.timeout).unwrap_or(route.timeout);
    authenticate(state, peer, path, auth)?;
    let other_enclave = head.headers.get(KES_ENCLAVE).is_some_and(|v| !is_default_enclave(v.as_bytes()));
    let accepts_any = head.headers.contains_key(ACCEPT);
    let wants_json = header_has(&head.headers, ACCEPT, "application/json")
        && !header_has(&head.headers, ACCEPT, "application/x-ndjson");
    Ok(Admitted { route, name_at: path.len() - name.len(), timeout, wants_json, accepts_any, other_enclave })
}

/// A request's URL path, percent-decoded. Kept as the URI's own bytes when
/// it has nothing to decode (nearly always), so most requests copy no path.
enum RequestPath {
    Raw(http::uri::PathAndQuery),
    /// The decoded path, and the URI's bytes for the query.
    Decoded {
        path: String,
        raw: http::uri::PathAndQuery,
    },
}

impl RequestPath {
    fn new(uri: http::Uri) -> RequestPath {
        let raw = uri.into_parts().path_and_query.unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        if !raw.path().contains('%') {
            return RequestPath::Raw(raw);
        }
        // A path that is not UTF-8 once decoded is taken as sent, as before.
        match percent_encoding::percent_decode_str(raw.path()).decode_utf8() {
            Ok(std::borrow::Cow::Owned(path)) => RequestPath::Decoded { path, raw },
            Ok(std::borrow::Cow::Borrowed(_)) | Err(_) => RequestPath::Raw(raw),
        }
    }

    /// The query, as sent (not decoded).
    fn query(&self) -> Option<&str> {
        match self {
            RequestPath::Raw(raw) | RequestPath::Decoded { raw, .. } => raw.query(),
        }
    }
}

impl std::ops::Deref for RequestPath {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            RequestPath::Raw(raw) => raw.path(),
            RequestPath::Decoded { path, .. } => path,
        }
    }
}

/// Reads the body of an admitted request and runs its handler.
async fn run<B: RequestBody>(
    state: &State,
    path: &RequestPath,
    identity: Option<&str>,
    admitted: Admitted,
    body: B,
) -> Result<Reply, ApiError> {
    let route = admitted.route;
    // The body's share of the body budget is held until the handler is done.
    let (body, _share) = match route.max_body {
        0 => (Bytes::new(), None),
        limit => body::read_body(body, limit).await?.into_parts(),
    };
    let call = Call {
        state,
        route,
        name: path.get(admitted.name_at..).unwrap_or_default(),
        identity,
        wants_json: admitted.wants_json,
        accepts_any: admitted.accepts_any,
        other_enclave: admitted.other_enclave,
        query: path.query(),
        body,
    };
    dispatch(call).await
}

/// Runs a handler under the route's timeout (zero: none).
///
/// The handler is polled once before the timer is armed: most requests (a
/// cached key, a body that came with the head) finish in that first poll, and
/// then cost no timer registration at all. One that waits (a keystore call, a
/// slow body) gets the full timeout from that point on.
///
/// A hand-written future rather than an `async fn`: an `async fn` would hold
/// the handler twice (as its argument and as its pinned local), doubling the
/// size of every request's future, which is moved several times per request.
fn within<F: Future<Output = Result<Reply, ApiError>>>(timeout: std::time::Duration, handler: F) -> Within<F> {
    Within { handler, timeout, timer: None }
}

pin_project_lite::pin_project! {
    /// The future of [`within`].
    struct Within<F> {
        #[pin]
        handler: F,
        timeout: std::time::Duration,
        // Boxed: only the rare waiting request pays for a timer.
        timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    }
}

impl<F: Future<Output = Result<Reply, ApiError>>> Future for Within<F> {
    type Output = Result<Reply, ApiError>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        let this = self.project();
        if let std::task::Poll::Ready(result) = this.handler.poll(cx) {
            return std::task::Poll::Ready(result);
        }
        if this.timeout.is_zero() {
            return std::task::Poll::Pending;
        }
        let timeout = *this.timeout;
        let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match timer.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(Err(ApiError::timeout())),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

/// Checks the caller against the route's auth class.
fn authenticate(state: &State, peer: &Peer, path: &str, auth: AuthClass) -> Result<(), ApiError> {
    match auth {
        AuthClass::None => Ok(()),
        AuthClass::Identify => peer.identity.as_ref().map(|_| ()).map_err(|e| (*e).into()),
        AuthClass::Policy => {
            let id = peer.identity.as_ref().map_err(|e| ApiError::from(*e))?;
            state.authority.load().authorize(id, path).map_err(ApiError::from)
        }
    }
}

/// Runs the route's handler.
///
/// The four hot handlers (a cached key's encrypt, decrypt, generate, hmac)
/// are awaited in place; every other one is boxed. Each request's whole
/// future is moved a few times (into hyper, through the span and the
/// timeout), and inline it would be as large as the largest handler's state:
/// boxing the rare ones keeps those moves small for the requests that matter.
async fn dispatch(call: Call<'_>) -> Result<Reply, ApiError> {
    match call.route.handler {
        Handler::KeyGenerate => key::generate(&call).await,
        Handler::KeyEncrypt => key::encrypt(&call).await,
        Handler::KeyDecrypt => key::decrypt(&call).await,
        Handler::KeyHmac => key::hmac(&call).await,
        _ => Box::pin(dispatch_other(call)).await,
    }
}

/// Every handler but the hot four (see [`dispatch`]).
async fn dispatch_other(call: Call<'_>) -> Result<Reply, ApiError> {
    match call.route.handler {
        Handler::Version => system::version(&call),
        Handler::Ready => system::ready(&call).await,
        Handler::Status => system::status(&call).await,
        Handler::Metrics => system::metrics(&call),
        Handler::Api => system::api(&call),
        Handler::LogError => stream_reply(call.state.errors.follow()),
        Handler::LogAudit => stream_reply(call.state.audit.follow()),
        Handler::EnclaveCreate => Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, "creating enclaves is not supported")),
        Handler::EnclaveDelete => Err(ApiError::new(StatusCode::NOT_IMPLEMENTED, "deleting enclaves is not supported")),
        Handler::KeyCreate => key::create(&call).await,
        Handler::KeyImport => key::import(&call).await,
        Handler::KeyDescribe => key::describe(&call).await,
        Handler::KeyDelete => key::delete(&call).await,
        Handler::KeyList => key::list(&call).await,
        Handler::KeyBulkDecrypt => key::bulk_decrypt(&call).await,
        Handler::KeyGenerate => key::generate(&call).await,
        Handler::KeyEncrypt => key::encrypt(&call).await,
        Handler::KeyDecrypt => key::decrypt(&call).await,
        Handler::KeyHmac => key::hmac(&call).await,
        Handler::PolicyDescribe => policy::describe(&call),
        Handler::PolicyRead => policy::read(&call),
        Handler::PolicyWrite => policy::write(&call),
        Handler::PolicyAssign => policy::assign(&call),
        Handler::PolicyList => policy::list(&call),
        Handler::PolicyDelete => policy::delete(&call),
        Handler::IdentityDescribe => identity::describe(&call),
        Handler::IdentitySelf => identity::describe_self(&call),
        Handler::IdentityList => identity::list(&call),
        Handler::IdentityDelete => identity::delete(&call),
    }
}

/// The header kes-go (v0.2) names an enclave with; v0.22 uses the
/// `enclave` query parameter instead.
const KES_ENCLAVE: &str = "kes-enclave";

fn is_default_enclave(name: &[u8]) -> bool {
    name.is_empty() || name == b"default"
}

/// Handles the `enclave` query parameter and the `Kes-Enclave` header alike:
/// only the default enclave exists.
pub fn check_enclave(call: &Call<'_>) -> Result<(), ApiError> {
    let in_query =
        || call.query.is_some_and(|q| form_pairs(q).any(|(k, v)| k == "enclave" && !is_default_enclave(v.as_bytes())));
    if call.other_enclave || in_query() {
        return Err(ApiError::not_found("enclave does not exist"));
    }
    Ok(())
}

/// Splits a query string into decoded key/value pairs.
pub fn form_pairs(q: &str) -> impl Iterator<Item = (String, String)> + '_ {
    q.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
        (dec(k), dec(v))
    })
}
