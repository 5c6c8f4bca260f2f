//! What a connection's requests and writes are doing ([`Activity`]), and the
//! wrappers that note it: around each answer ([`Answer`], and
//! [`EndsWhenDropped`] for a streamed one) and around the transport
//! ([`WriteWatch`]). The connection's watchdog reads it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};

use crate::api;

/// What a connection's requests are doing, for its
/// [`HeadWatchdog`](super::watchdog::HeadWatchdog): how many
/// were handed to the API and how many it has answered, and when the last
/// answer was ready. Written only by the connection's own task (plain
/// loads and stores; atomics only because the task may move between threads).
pub(super) struct Activity {
    pub(super) since: std::time::Instant,
    pub(super) begun: AtomicU64,
    pub(super) ended: AtomicU64,
    /// Nanoseconds after `since` at which the last request ended.
    pub(super) last_end: AtomicU64,
    /// One more than the nanoseconds after `since` at which a write to the
    /// client started waiting for it to read; 0 while writes go through.
    write_blocked: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Activity {
        Activity {
            since: std::time::Instant::now(),
            begun: AtomicU64::new(0),
            ended: AtomicU64::new(0),
            last_end: AtomicU64::new(0),
            write_blocked: AtomicU64::new(0),
        }
    }

    /// Nanoseconds since `since`.
    fn now(&self) -> u64 {
        u64::try_from(self.since.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A write could not go out: the client is not reading (for now).
    fn write_waits(&self) {
        if self.write_blocked.load(Ordering::Relaxed) == 0 {
            self.write_blocked.store(self.now().saturating_add(1), Ordering::Relaxed);
        }
    }

    /// A write went out.
    fn write_went_out(&self) {
        if self.write_blocked.load(Ordering::Relaxed) != 0 {
            self.write_blocked.store(0, Ordering::Relaxed);
        }
    }

    /// How long the oldest write still waiting has waited, if one is.
    pub(super) fn write_blocked_for(&self) -> Option<Duration> {
        match self.write_blocked.load(Ordering::Relaxed) {
            0 => None,
            at => Some(Duration::from_nanos(self.now().saturating_sub(at - 1))),
        }
    }

    /// A request head arrived in full.
    pub(super) fn begin(&self) {
        self.begun.store(self.begun.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Its answer is ready: from now on the connection waits for the next head.
    fn end(&self) {
        self.last_end.store(self.now(), Ordering::Relaxed);
        self.ended.store(self.ended.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A request's answer, noting in the connection's [`Activity`] when it
    /// is ready.
    ///
    /// A hand-written future rather than an `async` block: the block would
    /// hold the request's future as a captured value and, once polled, move
    /// it into a second slot of its own to await it; that copy of the whole
    /// future into memory not touched yet was the request path's largest
    /// source of cache misses (callgrind, encrypt: ~23 of keyward's ~150
    /// more per request than the baseline's). Here it is polled where it lies.
    pub(super) struct Answer<F> {
        #[pin]
        pub(super) reply: F,
        // Taken when the answer is ready.
        pub(super) activity: Option<Arc<Activity>>,
    }
}

impl<F: Future<Output = Result<http::Response<api::Body>, std::convert::Infallible>>> Future for Answer<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Poll::Ready(Ok(reply)) = this.reply.poll(cx) else {
            return Poll::Pending;
        };
        let Some(activity) = this.activity.take() else {
            return Poll::Ready(Ok(reply));
        };
        if reply.body().size_hint().exact().is_some() {
            activity.end();
            return Poll::Ready(Ok(reply));
        }
        // A streamed answer (log following) keeps the request going until
        // its body is done.
        Poll::Ready(Ok(reply.map(|body| api::Body::Stream(BodyExt::boxed(EndsWhenDropped { body, activity })))))
    }
}

/// A connection's transport, noting in its [`Activity`] when a write has to
/// wait for the client to read and when writes go through again: what lets
/// the [`HeadWatchdog`](super::watchdog::HeadWatchdog) cut a client that stopped reading its answer (a
/// follower of `/v1/log/audit` that never reads would otherwise hold its
/// connection for good). Costs a load per write.
pub(super) struct WriteWatch<T> {
    pub(super) inner: T,
    pub(super) activity: Arc<Activity>,
}

impl<T> WriteWatch<T> {
    fn note<R>(&self, poll: Poll<std::io::Result<R>>) -> Poll<std::io::Result<R>> {
        match &poll {
            Poll::Pending => self.activity.write_waits(),
            Poll::Ready(Ok(_)) => self.activity.write_went_out(),
            Poll::Ready(Err(_)) => {}
        }
        poll
    }
}

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for WriteWatch<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for WriteWatch<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.note(poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.note(poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.note(poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A streamed response body that marks its request ended when it is dropped
/// (sent in full, or the connection gone).
struct EndsWhenDropped {
    body: api::Body,
    activity: Arc<Activity>,
}

impl Drop for EndsWhenDropped {
    fn drop(&mut self) {
        self.activity.end();
    }
}

impl Body for EndsWhenDropped {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
