//! The server: listener, TLS handshakes, HTTP/1.1 connections, reload and
//! graceful shutdown.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulConnection;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;

use crate::api::{self, Peer};
use crate::audit::stdout::StdoutSink;
use crate::audit::{AuditLog, ErrorLog};
use crate::auth::Authority;
use crate::config::{LimitSettings, Settings};
use crate::keys::memory::MemoryStore;
use crate::keys::{KeyError, Keys};
use crate::metrics::Metrics;
use crate::state::{RouteOverrides, State};
use keyward_core::audit_sink::AuditSink;
use keyward_core::crypto::StoredKey;
use keyward_core::keystore::Keystore;
use keyward_core::seal::Seal;
use keyward_plugin_host::resolve::{default_cache_dir, Plugins, ResolveError};
use keyward_plugin_host::{EngineOptions, PluginEngine};

/// The most a connection's read buffer holds: a request head larger than
/// this is answered 431 and the connection closed, and a body is read in
/// frames of at most this size. KES's API needs heads of a few hundred
/// bytes; Go's servers allow 1 MB, of which no KES client uses more than a
/// few KiB. Together with rustls' buffers this bounds what a connection that
/// has not yet been authorized can make the server hold (see the README's
/// security model).
pub const MAX_HEAD_AND_FRAME: usize = 64 * 1024;
/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Seal(#[from] keyward_core::seal::SealError),
    #[error(transparent)]
    Plugin(#[from] ResolveError),
    #[error("cannot listen on {address}: {source}")]
    Listen { address: std::net::SocketAddr, source: std::io::Error },
    #[error("keys: cannot create '{name}' at start-up: {source}")]
    BootKey { name: String, source: KeyError },
}

/// How long in-flight requests get to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);

/// The plugin engine, shared by every load and reload.
fn plugin_engine() -> Result<PluginEngine, StartError> {
    PluginEngine::new(EngineOptions { cache_dir: default_cache_dir() }).map_err(|e| StartError::Plugin(e.into()))
}

/// Builds the keystore named in the config: the built-in in-memory store
/// (`memory`, also the default without a `[keystore]`), or a plugin.
pub async fn open_keystore(settings: &Settings, plugins: &Plugins) -> Result<Arc<dyn Keystore>, StartError> {
    match &settings.keystore {
        None => Ok(Arc::new(MemoryStore::new())),
        Some(ks) if ks.plugin == "memory" => Ok(Arc::new(MemoryStore::new())),
        Some(ks) => Ok(plugins.keystore(&ks.plugin, &ks.config_json).await?),
    }
}

/// Builds the audit sinks named in the config, plus stdout if `log.audit = "on"`.
pub async fn open_audit_sinks(
    settings: &Settings,
    plugins: &Plugins,
) -> Result<Vec<(String, Arc<dyn AuditSink>)>, StartError> {
    let mut sinks: Vec<(String, Arc<dyn AuditSink>)> = Vec::new();
    if settings.log.audit {
        sinks.push(("stdout".into(), Arc::new(StdoutSink)));
    }
    for a in &settings.audit {
        sinks.push((a.plugin.clone(), plugins.audit_sink(&a.plugin, &a.config_json).await?));
    }
    Ok(sinks)
}

/// A running server's shared state plus what it needs to reload.
pub struct Server {
    /// Lives as long as the process: every request refers to it, and a
    /// shared reference costs nothing where cloning an `Arc` would make both
    /// cores write its count on every request.
    pub state: &'static State,
    acceptor: TlsAcceptor,
    engine: PluginEngine,
    settings: Settings,
    config_path: Option<PathBuf>,
}

impl Server {
    /// Builds the state: keystore, cache, policies, audit. Creates the
    /// `[[keys]]` listed in the config if they are missing.
    pub async fn build(settings: Settings, config_path: Option<PathBuf>) -> Result<Server, StartError> {
        // TLS first: a bad certificate or password fails before anything listens.
        let acceptor = TlsAcceptor::from(crate::tls::server_config(&settings.tls)?);
        let metrics = Arc::new(Metrics::new());
        let engine = plugin_engine()?;
        let plugins = Plugins::new(engine.clone(), settings.plugin_manifest.as_deref(), settings.dev)?;
        let store = open_keystore(&settings, &plugins).await?;
        let seal = match settings.keystore.as_ref().and_then(|k| k.seal.as_deref()) {
            Some(s) => Some(Seal::from_setting(s)?),
            None => None,
        };
        let keys = Arc::new(Keys::new(store, seal).with_error_counter(metrics.keystore_errors.clone()));
        let started_at = time::OffsetDateTime::now_utc();
        let audit = AuditLog::new(metrics.clone());
        audit.set_sinks(open_audit_sinks(&settings, &plugins).await?);
        let state: &'static State = Box::leak(Box::new(State {
            authority: ArcSwap::from_pointee(Authority::from_settings(&settings, started_at)),
            overrides: ArcSwap::from_pointee(RouteOverrides::new(&settings.api)),
            keys: keys.clone(),
            metrics: metrics.clone(),
            audit,
            errors: ErrorLog::new(metrics),
            started_at,
            default_algorithm: State::detect_algorithm(),
        }));
        let admin = state.authority.load().admin().unwrap_or_default().to_string();
        for name in &settings.keys {
            let key = StoredKey::generate(state.default_algorithm, admin.clone());
            match keys.create(name, key).await {
                Ok(()) | Err(KeyError::Exists) => {}
                Err(source) => return Err(StartError::BootKey { name: name.clone(), source }),
            }
        }
        tokio::spawn(keys.clone().run_expiry(settings.cache));
        Ok(Server { state, acceptor, engine, settings, config_path })
    }

    /// Re-reads the config file and manifest: policies, identities, `[api]`
    /// overrides, the keystore plugin and audit sinks change; cached keys and
    /// connections stay. Everything new is loaded before anything is swapped,
    /// so a plugin that fails to load leaves the old configuration serving.
    pub async fn reload(&self) -> Result<(), StartError> {
        let Some(path) = &self.config_path else {
            return Ok(());
        };
        let settings = Settings::load(path)?;
        let plugins = Plugins::new(self.engine.clone(), settings.plugin_manifest.as_deref(), self.settings.dev)?;
        let store = open_keystore(&settings, &plugins).await?;
        let sinks = open_audit_sinks(&settings, &plugins).await?;
        self.state.keys.swap_store(store);
        self.state.authority.store(Arc::new(Authority::from_settings(&settings, self.state.started_at)));
        self.state.overrides.store(Arc::new(RouteOverrides::new(&settings.api)));
        self.state.audit.set_sinks(sinks);
        Ok(())
    }

    /// Binds the configured address.
    pub async fn bind(&self) -> Result<TcpListener, StartError> {
        let address = self.settings.address;
        TcpListener::bind(address).await.map_err(|source| StartError::Listen { address, source })
    }

    /// Serves until SIGTERM/SIGINT, then lets in-flight requests finish.
    pub async fn run(self, listener: TcpListener) -> Result<(), StartError> {
        let acceptor = self.acceptor.clone();
        let limits = self.settings.limits;
        let mut gate = Gate::new(limits.max_connections);
        raise_fd_limit(limits.max_connections);
        let shutdown = Arc::new(Shutdown::default());
        let mut terminate = Box::pin(shutdown_signal());
        let mut hangup = hangup_stream();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (tcp, addr) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of file descriptors and the like: back off, keep serving.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Some(slot) = gate.admit(&self.state.metrics) else {
                        gate.refuse(tcp, addr, &self.state.metrics);
                        continue;
                    };
                    let state = self.state;
                    let acceptor = acceptor.clone();
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        serve_connection(state, acceptor, tcp, addr, shutdown, limits).await;
                        drop(slot);
                    });
                }
                _ = hangup.recv() => {
                    match self.reload().await {
                        Ok(()) => tracing::info!("configuration reloaded"),
                        Err(e) => self.state.errors.error(&format!("reload failed, keeping the old configuration: {e}")),
                    }
                }
                _ = &mut terminate => break,
            }
        }
        drop(listener);
        tracing::info!("shutting down: finishing in-flight requests");
        shutdown.begin();
        if tokio::time::timeout(SHUTDOWN_GRACE, gate.all_closed(limits.max_connections)).await.is_err() {
            tracing::warn!("some connections did not finish in time");
        }
        self.state.audit.flush_and_close().await;
        Ok(())
    }
}

/// The `limits.max_connections` slots. Admission is one atomic
/// `try_acquire` per connection; nothing here runs per request.
///
/// A connection that finds every slot taken is accepted and closed at once
/// rather than left in the listen backlog or held until a slot frees: its
/// client learns immediately that the server is saturated (and can retry or
/// go to another replica), and the server spends neither a file descriptor
/// nor a timer on it.
struct Gate {
    slots: Arc<Semaphore>,
    /// Whether the last connection was refused, so that a flood logs one
    /// warning per saturation episode rather than one line per connection.
    saturated: bool,
}

/// One admitted connection's slot: frees the slot and updates
/// `keyward_connections_open` when the connection ends, however it ends.
struct Slot {
    _permit: OwnedSemaphorePermit,
    open: prometheus::IntGauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl Gate {
    fn new(max_connections: usize) -> Gate {
        Gate { slots: Arc::new(Semaphore::new(max_connections)), saturated: false }
    }

    /// A slot for a new connection, or `None` if all are taken.
    fn admit(&mut self, metrics: &Metrics) -> Option<Slot> {
        let permit = self.slots.clone().try_acquire_owned().ok()?;
        self.saturated = false;
        metrics.connections_open.inc();
        Some(Slot { _permit: permit, open: metrics.connections_open.clone() })
    }

    /// Resolves once every admitted connection has ended.
    async fn all_closed(&self, max_connections: usize) {
        let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
        let _ = self.slots.acquire_many(all).await;
    }

    /// Closes a connection that found no free slot, and counts it.
    fn refuse(&mut self, tcp: TcpStream, addr: std::net::SocketAddr, metrics: &Metrics) {
        metrics.connections_refused.inc();
        if !self.saturated {
            self.saturated = true;
            tracing::warn!(peer = %addr, "limits.max_connections reached: refusing new connections");
        }
        drop(tcp);
    }
}

/// Raises the soft open-files limit towards the hard one, as Go (and so KES)
/// does at start: with the usual soft limit of 1024, `accept` would fail long
/// before `limits.max_connections` is reached. Warns if it is still too low.
fn raise_fd_limit(max_connections: usize) {
    #[cfg(unix)]
    {
        /// Descriptors the server needs besides client connections
        /// (listener, plugin files, log files, the runtime).
        const RESERVE: u64 = 64;
        let wanted = (max_connections as u64).saturating_add(RESERVE);
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit only read and write the struct passed.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return;
            }
            if limit.rlim_cur < wanted && limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit { rlim_cur: limit.rlim_max.min(wanted), rlim_max: limit.rlim_max };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit = raised;
                }
            }
        }
        if limit.rlim_cur < wanted {
            tracing::warn!(
                open_files = limit.rlim_cur,
                max_connections,
                "the open-files limit is below limits.max_connections; accept will fail first"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = max_connections;
}

/// Runs one client connection: TLS handshake under `limits.handshake_timeout`,
/// then HTTP/1.1 with `limits.header_timeout` and `limits.body_timeout`.
async fn serve_connection(
    state: &'static State,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    addr: std::net::SocketAddr,
    shutdown: Arc<Shutdown>,
    limits: LimitSettings,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(peer = %addr, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            state.metrics.connections_timed_out.with_label_values(&["handshake"]).inc();
            tracing::debug!(peer = %addr, "TLS handshake timed out");
            return;
        }
    };
    let identity = {
        let (_, conn) = tls.get_ref();
        let chain = conn.peer_certificates().unwrap_or(&[]);
        crate::tls::identity_of_chain(chain)
    };
    let peer = Arc::new(Peer { ip: Some(addr.ip().to_string().into()), identity: identity.map(Arc::from) });
    let metrics = state.metrics.clone();
    let body_timeout = limits.body_timeout;
    let activity = Arc::new(Activity::new());
    let requests = activity.clone();
    let service = service_fn(move |req: http::Request<Incoming>| {
        requests.begin();
        let reply = api::serve(state, peer.clone(), req.map(|body| DeadlineBody::new(body, body_timeout)));
        Answer { reply, activity: Some(requests.clone()) }
    });
    // hyper's own HTTP/1 connection, not hyper-util's `auto` one: `auto`
    // first waits for 24 bytes to tell HTTP/2 from HTTP/1 with no timeout,
    // so a client that handshakes and then sends nothing would hold its
    // slot forever. HTTP/2 is not served anyway. The header timeout is the
    // connection's `HeadWatchdog`, not hyper's (which arms a timer per request).
    let io = WriteWatch { inner: tls, activity: activity.clone() };
    let conn = http1::Builder::new().max_buf_size(MAX_HEAD_AND_FRAME).serve_connection(TokioIo::new(io), service);
    match HeadWatchdog::new(conn, activity, shutdown, limits).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(peer = %addr, error = %e, "connection ended with an error"),
        Err(Cut::Head) => {
            metrics.connections_timed_out.with_label_values(&["header"]).inc();
            tracing::debug!(peer = %addr, "request head not received within limits.header_timeout");
        }
        Err(Cut::Write) => {
            metrics.connections_timed_out.with_label_values(&["write"]).inc();
            tracing::debug!(peer = %addr, "answer not read by the client within limits.write_timeout");
        }
    }
}

/// What a connection's requests are doing, for its [`HeadWatchdog`]: how many
/// were handed to the API and how many it has answered, and when the last
/// answer was ready. Written only by the connection's own task (plain
/// loads and stores; atomics only because the task may move between threads).
struct Activity {
    since: std::time::Instant,
    begun: AtomicU64,
    ended: AtomicU64,
    /// Nanoseconds after `since` at which the last request ended.
    last_end: AtomicU64,
    /// One more than the nanoseconds after `since` at which a write to the
    /// client started waiting for it to read; 0 while writes go through.
    write_blocked: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
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
    fn write_blocked_for(&self) -> Option<Duration> {
        match self.write_blocked.load(Ordering::Relaxed) {
            0 => None,
            at => Some(Duration::from_nanos(self.now().saturating_sub(at - 1))),
        }
    }

    /// A request head arrived in full.
    fn begin(&self) {
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
    struct Answer<F> {
        #[pin]
        reply: F,
        // Taken when the answer is ready.
        activity: Option<Arc<Activity>>,
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
/// the [`HeadWatchdog`] cut a client that stopped reading its answer (a
/// follower of `/v1/log/audit` that never reads would otherwise hold its
/// connection for good). Costs a load per write.
struct WriteWatch<T> {
    inner: T,
    activity: Arc<Activity>,
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

/// The server is shutting down: every connection finishes the request it is
/// answering and closes (idle ones at once). A flag each connection reads
/// when it is polled, plus one wake-up per connection when it is set: unlike
/// a watch channel, nothing is registered again on every poll.
#[derive(Default)]
struct Shutdown {
    begun: AtomicBool,
    notify: Arc<tokio::sync::Notify>,
}

impl Shutdown {
    fn begin(&self) {
        self.begun.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    fn begun(&self) -> bool {
        self.begun.load(Ordering::Acquire)
    }
}

/// A connection's header timeout: the connection is closed when a request
/// head has not fully arrived within `limits.header_timeout` of the moment
/// the server started waiting for it (after the handshake, or after the
/// previous answer). Covers heads that stall or trickle (progress does not
/// extend the deadline) and idle keep-alive connections, as hyper's own
/// `header_read_timeout` does — but with one timer per connection, checked
/// only when it fires, instead of a timer armed and cancelled per request.
/// The same timer, while a request is active, cuts a client that has left
/// an answer unread for `limits.write_timeout` (see [`WriteWatch`]).
/// It also starts the connection's graceful close when the server shuts
/// down: both are checks on each poll of the connection, kept in one wrapper
/// so a poll pays for one.
struct HeadWatchdog<F> {
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
enum Cut {
    /// No complete request head within the timeout.
    Head,
    /// An answer waited `limits.write_timeout` for the client to read it.
    Write,
}

impl<F: GracefulConnection> HeadWatchdog<F> {
    fn new(conn: F, activity: Arc<Activity>, shutdown: Arc<Shutdown>, limits: LimitSettings) -> HeadWatchdog<F> {
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

/// A request body that must arrive in full within `limit`, else it yields
/// [`api::BodyTimedOut`] (a 408). hyper only times request heads; without
/// this, a client announcing a body and then stalling would hold its handler
/// until the route timeout (or forever on routes without one).
///
/// The timer is created only when the body is not already buffered, so the
/// usual small request whose body came with its head costs no timer at all.
/// It is never reset by progress: a client trickling one byte at a time is
/// cut at the same deadline as one that stalls.
struct DeadlineBody {
    inner: Incoming,
    limit: Duration,
    timer: Option<Pin<Box<Sleep>>>,
}

impl DeadlineBody {
    fn new(inner: Incoming, limit: Duration) -> DeadlineBody {
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

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// SIGHUP notifications (never fires where there are none).
struct Hangup {
    #[cfg(unix)]
    inner: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = &mut self.inner {
            s.recv().await;
            return;
        }
        std::future::pending::<()>().await
    }
}

fn hangup_stream() -> Hangup {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        Hangup { inner: signal(SignalKind::hangup()).ok() }
    }
    #[cfg(not(unix))]
    Hangup {}
}

/// Tasks a runtime worker polls between two looks at the I/O driver
/// (tokio's default is 61). A request is one short task, so under load the
/// default has each worker go to the driver every ~1 ms; measured with 64
/// keep-alive connections on 2 CPUs, 200 cut p99 latency from ~4.5 ms to
/// ~2.7 ms at the same throughput (BENCHMARKS.md). Idle workers still wait
/// on the driver at once, so this only matters under load.
const EVENT_INTERVAL: u32 = 200;

/// The runtime a server runs on. Its workers are named so `ps -L`, `top -H`
/// and `keyward-bench` tell the request workers (and their blocking pool)
/// from the audit and epoch threads.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .event_interval(EVENT_INTERVAL)
        .thread_name("keyward-worker")
        .build()
}
