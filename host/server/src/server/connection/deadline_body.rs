//! Request bodies with a deadline (`limits.body_timeout`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::Sleep;

use crate::api;

/// A request body that must arrive in full within `limit`, else it yields
/// [`api::BodyTimedOut`] (a 408). hyper only times request heads; without
/// this, a client announcing a body and then stalling would hold its handler
/// until the route timeout (or forever on routes without one).
///
/// The timer is created only when the body is not already buffered, so the
/// usual small request whose body came with its head costs no timer at all.
/// It is never reset by progress: a client trickling one byte at a time is
/// cut at the same deadline as one that stalls.
pub(super) struct DeadlineBody {
    inner: Incoming,
    limit: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl DeadlineBody {
    pub(super) fn new(inner: Incoming, limit: Duration) -> DeadlineBody {
        DeadlineBody { inner, limit, timer: None }
    }
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        let limit = this.limit;
        let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(api::BodyTimedOut(limit))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
