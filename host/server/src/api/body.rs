//! Reading request bodies within their limits, and the process-wide budget
//! for bodies that arrive in pieces.
//!
//! A body that comes in one frame is hyper's own buffer, at most
//! [`crate::server::MAX_HEAD_AND_FRAME`] bytes, and costs nothing extra. A
//! body in several frames has to be joined into a buffer of its own, up to
//! the route's limit; an authorized client holding many such half-sent
//! bodies open could otherwise make the server hold `connections × limit`
//! bytes. The joined buffers of all requests together are held to
//! [`BODY_BUDGET`]: a request that would exceed it is answered 503 at once
//! (clients retry), and a buffer's share returns to the budget when its
//! request ends, however it ends.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;

/// The error a request body yields when it did not fully arrive within the
/// server's `limits.body_timeout`. The server wraps hyper's body to produce
/// it (see `crate::server`); here it becomes a 408 instead of a 400.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within {0:?}")]
pub struct BodyTimedOut(pub std::time::Duration);

/// What [`super::serve`] accepts as a request body: hyper's
/// [`hyper::body::Incoming`], or the server's deadline wrapper around it.
pub trait RequestBody: hyper::body::Body<Data = Bytes, Error: Into<BoxError>> {}
impl<B: hyper::body::Body<Data = Bytes, Error: Into<BoxError>>> RequestBody for B {}

pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Bytes that joined request bodies may hold at once, all requests together.
pub const BODY_BUDGET: usize = 128 << 20;

/// The budget is counted in units of this many bytes, so that a tokio
/// semaphore (whose permits are `u32` per acquisition) can count it.
const UNIT: usize = 1024;

/// The process-wide share of [`BODY_BUDGET`] left.
fn budget() -> &'static Arc<Semaphore> {
    static BUDGET: std::sync::OnceLock<Arc<Semaphore>> = std::sync::OnceLock::new();
    BUDGET.get_or_init(|| Arc::new(Semaphore::new(BODY_BUDGET / UNIT)))
}

/// A buffer that is zeroed when the last `Bytes` made from it is dropped
/// (see [`Bytes::from_owner`]): for request bodies keyward joined, and for
/// answers that carry plaintexts or data keys.
pub struct WipedOnDrop(pub Vec<u8>);

impl AsRef<[u8]> for WipedOnDrop {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for WipedOnDrop {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// A request body, and the share of the budget its buffer holds (returned
/// when this is dropped).
pub struct ReadBody {
    pub bytes: Bytes,
    share: Option<OwnedSemaphorePermit>,
}

impl ReadBody {
    /// The bytes, and the share of the budget to keep while they are used.
    pub fn into_parts(self) -> (Bytes, Option<OwnedSemaphorePermit>) {
        (self.bytes, self.share)
    }
}

fn busy() -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server busy: too many large request bodies in flight")
}

/// Reads the body up to `limit` bytes; more is a 400, as in KES. A body that
/// does not arrive in time is a 408; one that would overrun the body budget
/// is a 503.
///
/// A body that comes in one piece (the usual small request) is returned as
/// that piece: no buffer list, no copy, no budget.
pub async fn read_body(body: impl RequestBody, limit: usize) -> Result<ReadBody, ApiError> {
    read_within(body, limit, budget()).await
}

/// [`read_body`] against the given budget.
async fn read_within(body: impl RequestBody, limit: usize, budget: &Arc<Semaphore>) -> Result<ReadBody, ApiError> {
    // Not refused from its announced length alone: the body is read until
    // it passes the limit (as KES does), so a client still sending it sees
    // the 400 rather than a connection reset.
    let mut body = std::pin::pin!(body);
    let announced = body.size_hint().upper().and_then(|n| usize::try_from(n).ok());
    let mut first: Option<Bytes> = None;
    let mut joined: Option<(Vec<u8>, OwnedSemaphorePermit)> = None;
    let mut len = 0usize;
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let frame = frame.map_err(|e| {
            let e: BoxError = e.into();
            if e.is::<BodyTimedOut>() {
                ApiError::new(StatusCode::REQUEST_TIMEOUT, "request body timeout exceeded")
            } else {
                ApiError::invalid_body()
            }
        })?;
        let Ok(data) = frame.into_data() else { continue };
        len = len.saturating_add(data.len());
        if len > limit {
            return Err(ApiError::invalid_body());
        }
        match (&first, &mut joined) {
            (None, _) => first = Some(data),
            (Some(f), None) => {
                // The buffer is sized once, for the whole body: its
                // announced length, else the route's limit.
                let capacity = announced.unwrap_or(limit).clamp(len, limit);
                let units = u32::try_from(capacity.div_ceil(UNIT)).map_err(|_| busy())?;
                let share = budget.clone().try_acquire_many_owned(units).map_err(|_| busy())?;
                let mut all = Vec::with_capacity(capacity);
                all.extend_from_slice(f);
                all.extend_from_slice(&data);
                joined = Some((all, share));
            }
            (Some(_), Some((all, _))) => all.extend_from_slice(&data),
        }
        if joined.is_none() && body.is_end_stream() {
            break;
        }
    }
    Ok(match joined {
        Some((all, share)) => ReadBody { bytes: Bytes::from_owner(WipedOnDrop(all)), share: Some(share) },
        None => ReadBody { bytes: first.unwrap_or_default(), share: None },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    fn frames(parts: Vec<&'static [u8]>) -> impl RequestBody {
        http_body_util::StreamBody::new(futures_util::stream::iter(
            parts.into_iter().map(|p| Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from_static(p)))),
        ))
    }

    async fn read(parts: Vec<&'static [u8]>, limit: usize) -> Result<Bytes, ApiError> {
        read_body(frames(parts), limit).await.map(|b| b.bytes)
    }

    /// A body is read whole however it is split into frames, and one over
    /// the route's limit is refused whether or not it announced its size.
    #[tokio::test]
    async fn a_body_in_several_frames_is_joined_and_limited() {
        assert_eq!(read(vec![b"{\"a\":", b"1", b"}"], 100).await.unwrap(), &b"{\"a\":1}"[..]);
        assert_eq!(read(vec![b"abc"], 100).await.unwrap(), &b"abc"[..]);
        assert_eq!(read(vec![], 100).await.unwrap(), &b""[..]);
        let over = read(vec![b"abc", b"def"], 5).await.unwrap_err();
        assert_eq!(over.status, StatusCode::BAD_REQUEST);
        let announced = http_body_util::Full::new(Bytes::from_static(b"too long"));
        assert_eq!(read_body(announced, 5).await.err().unwrap().status, StatusCode::BAD_REQUEST);
    }

    /// Joined bodies hold a share of the budget while they live; once the
    /// budget is spent, further joined bodies are a 503 (single-frame bodies
    /// are still served), and the shares return when the bodies are dropped.
    #[tokio::test]
    async fn joined_bodies_are_held_to_the_budget() {
        let budget = Arc::new(Semaphore::new(4 * 64));
        let limit = 64 * UNIT;
        let read = |parts: Vec<&'static [u8]>| read_within(frames(parts), limit, &budget);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(read(vec![b"a", b"b"]).await.unwrap_or_else(|e| panic!("{}", e.message)));
        }
        let refused = read(vec![b"a", b"b"]).await.err().unwrap();
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(read(vec![b"single"]).await.unwrap().bytes, &b"single"[..]);
        held.pop();
        assert_eq!(read(vec![b"a", b"b"]).await.unwrap().bytes, &b"ab"[..]);
        held.clear();
        assert_eq!(budget.available_permits(), 4 * 64);
        // An announced length is what is taken from the budget.
        let announced = http_body_util::Full::new(Bytes::from_static(b"abc"));
        let one = read_within(announced, limit, &budget).await.unwrap();
        assert_eq!(one.bytes, &b"abc"[..]);
    }
}
