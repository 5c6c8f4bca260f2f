//! A connection's watchdog: its header timeout, its write timeout and its
//! graceful close on shutdown, checked in one wrapper around hyper's
//! connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::server::graceful::GracefulConnection;
use tokio::time::Sleep;

use super::activity::Activity;
use super::shutdown::Shutdown;
use crate::config::LimitSettings;

/// A connection's header timeout: the connection is closed when a request
/// head has not fully arrived within `limits.header_timeout` of the moment
/// the server started waiting for it (after the handshake, or after the
/// previous answer). Covers heads that stall or trickle (progress does not
/// extend the deadline) and idle keep-alive connections, as hyper's own
/// `header_read_timeout` does — but with one timer per connection, checked
/// only when it fires, instead of a timer armed and cancelled per request.
/// The same timer, while a request is active, cuts a client that has left
/// an answer unread for `limits.write_timeout` (see
/// [`WriteWatch`](super::activity::WriteWatch)).
/// It also starts the connection's graceful close when the server shuts
/// down: both are checks on each poll of the connection, kept in one wrapper
/// so a poll pays for one.
pub(super) struct HeadWatchdog<F> {
    conn: Pin<Box<F>>,
    shutdown: Arc<Shutdown>,
    /// Registered with `shutdown` on the first poll; `None` once the
    /// connection was told to shut down.
    shutdown_signal: Option<Pin<Box<tokio::sync::futures::OwnedNotified>>>,
    shutdown_registered: bool,
    timer: Pin<Box<Sleep>>,
    activity: Arc<Activity>,
    /// `limits.header_timeout`.
    timeout: Duration,
    /// `limits.write_timeout`: checked each time the timer fires while a
    /// request is active, which is at least this often.
    write_timeout: Duration,
    /// `activity.begun` when the timer was last armed.
    begun_at_arming: u64,
    /// Whether the timer has been polled since it was last armed.
    timer_registered: bool,
}

/// Why a [`HeadWatchdog`] closed its connection.
#[derive(Debug)]
pub(super) enum Cut {
    /// No complete request head within the timeout.
    Head,
    /// An answer waited `limits.write_timeout` for the client to read it.
    Write,
}

impl<F: GracefulConnection> HeadWatchdog<F> {
    pub(super) fn new(
        conn: F,
        activity: Arc<Activity>,
        shutdown: Arc<Shutdown>,
        limits: LimitSettings,
    ) -> HeadWatchdog<F> {
        let timeout = limits.header_timeout;
        let timer = Box::pin(tokio::time::sleep(timeout));
        let shutdown_signal = Some(Box::pin(shutdown.notify.clone().notified_owned()));
        HeadWatchdog {
            conn: Box::pin(conn),
            shutdown,
            shutdown_signal,
            shutdown_registered: false,
            timer,
            activity,
            timeout,
            write_timeout: limits.write_timeout,
            begun_at_arming: 0,
            timer_registered: false,
        }
    }

    /// Starts hyper's graceful close once the server shuts down.
    fn watch_shutdown(&mut self, cx: &mut Context<'_>) {
        let Some(signal) = &mut self.shutdown_signal else { return };
        if self.shutdown.begun() {
            self.shutdown_signal = None;
            self.conn.as_mut().graceful_shutdown();
        } else if !self.shutdown_registered {
            // Polled once, to register the task's waker: polling it again
            // would take the signal's lock, shared by every connection. A
            // wake-up by `begin` makes the task poll, and the flag is set.
            self.shutdown_registered = true;
            if signal.as_mut().poll(cx).is_ready() {
                self.shutdown_signal = None;
                self.conn.as_mut().graceful_shutdown();
            }
        }
    }
}

impl<F: GracefulConnection> Future for HeadWatchdog<F> {
    type Output = Result<F::Output, Cut>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.watch_shutdown(cx);
        if let Poll::Ready(done) = this.conn.as_mut().poll(cx) {
            return Poll::Ready(Ok(done));
        }
        // The timer keeps the task's waker once polled (the connection is
        // one task, so the waker never changes): later wake-ups only look
        // at whether it fired, rather than re-registering on every poll.
        if this.timer_registered && !this.timer.is_elapsed() {
            return Poll::Pending;
        }
        this.timer_registered = true;
        while this.timer.as_mut().poll(cx).is_ready() {
            let a = &this.activity;
            let (begun, ended) = (a.begun.load(Ordering::Relaxed), a.ended.load(Ordering::Relaxed));
            let deadline = if begun != ended {
                // A request is being handled (or its streamed answer sent):
                // route and body timeouts govern it, not this one — unless
                // its answer has waited `write_timeout` for the client to
                // read (checked at each expiry of this timer).
                if a.write_blocked_for().is_some_and(|waited| waited >= this.write_timeout) {
                    return Poll::Ready(Err(Cut::Write));
                }
                tokio::time::Instant::now() + this.timeout.min(this.write_timeout)
            } else if begun != this.begun_at_arming {
                // Requests came and went: the wait for the next head started
                // when the last one ended.
                tokio::time::Instant::from_std(a.since + Duration::from_nanos(a.last_end.load(Ordering::Relaxed)))
                    + this.timeout
            } else {
                return Poll::Ready(Err(Cut::Head));
            };
            this.begun_at_arming = begun;
            this.timer.as_mut().reset(deadline);
        }
        Poll::Pending
    }
}
