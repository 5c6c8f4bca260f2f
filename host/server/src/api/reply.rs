//! Answers: the response body type and the helpers handlers build their
//! replies with, errors included.

use std::convert::Infallible;

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT, ALLOW, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::BodyExt;
use serde::Serialize;

use super::body::WipedOnDrop;
use super::error::ApiError;

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

/// An answer with its whole body. hyper writes `content-length` from the
/// body's exact size (`0` included, as Go's server does), so it is not set here:
/// that would be two more allocations per request.
fn full(status: StatusCode, content_type: Option<&'static str>, body: Vec<u8>) -> Reply {
    full_bytes(status, content_type, Bytes::from(body))
}

fn full_bytes(status: StatusCode, content_type: Option<&'static str>, body: Bytes) -> Reply {
    let mut r = Response::new(Body::full(body));
    *r.status_mut() = status;
    if let Some(ct) = content_type {
        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    r
}

/// `value` as JSON ending in a newline, as Go's encoder writes it.
fn json_body<T: Serialize>(value: &T) -> Result<Vec<u8>, ApiError> {
    let mut body = serde_json::to_vec(value)
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "failed to encode response"))?;
    body.push(b'\n');
    Ok(body)
}

/// 200 with a JSON body.
pub fn json_reply<T: Serialize>(value: &T) -> Result<Reply, ApiError> {
    Ok(full(StatusCode::OK, Some("application/json"), json_body(value)?))
}

/// 200 with a JSON body that carries a secret (a plaintext, a data key):
/// the buffer is zeroed once hyper has written it and let it go.
pub fn secret_json_reply<T: Serialize>(value: &T) -> Result<Reply, ApiError> {
    let body = Bytes::from_owner(WipedOnDrop(json_body(value)?));
    Ok(full_bytes(StatusCode::OK, Some("application/json"), body))
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

/// The JSON answer for an error, with `Allow` (and `Accept`) on a 405.
pub(super) fn error_reply(e: &ApiError) -> Reply {
    let mut r = full(e.status, Some("application/json"), e.body());
    if let Some(m) = e.allow {
        r.headers_mut().insert(ACCEPT, HeaderValue::from_static(m));
        r.headers_mut().insert(ALLOW, HeaderValue::from_static(m));
    }
    r
}
