//! HTTP API: both KES generations on one port.
//!
//! [`serve`] takes one request through the same steps for every route:
//! route → method → authenticate/authorize → read the body within its limit →
//! handler under the route's timeout → metrics and audit. Handlers only see a
//! [`Call`] and answer `Result<Reply, ApiError>`; every error becomes a JSON
//! `{"message": …}` in one place ([`error`]).

pub mod body;
mod call;
mod enclave;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod go_json;
mod identity;
mod key;
mod path;
mod policy;
mod reply;
pub mod routes;
mod system;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::ACCEPT;
use http::{Request, StatusCode};
use tracing::Instrument;

use crate::state::State;
use crate::tls::IdentityError;
use enclave::{is_default_enclave, KES_ENCLAVE};
use error::ApiError;
use path::RequestPath;
use reply::error_reply;
use routes::{AuthClass, Handler, Route};

pub use body::{BodyTimedOut, RequestBody};
pub use call::{Call, Selector};
pub use enclave::{check_enclave, form_pairs};
pub use reply::{empty_reply, json_reply, ndjson_reply, raw_reply, secret_json_reply, stream_reply, Body, Reply};

/// What a connection knows about its client. Shared (`Arc<str>`) because
/// every request's audit event carries both: a reference count, not a copy.
#[derive(Debug, Clone)]
pub struct Peer {
    pub ip: Option<Arc<str>>,
    pub identity: Result<Arc<str>, IdentityError>,
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
                    match &e.log_detail {
                        Some(detail) => state.errors.error(&format!("{}: {}: {detail}", &*path, e.message)),
                        None => state.errors.error(&format!("{}: {}", &*path, e.message)),
                    }
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
