//! What one plugin instance can see and do: its store data, its WASI context
//! built from the manifest grants, and the host functions it imports.
//!
//! The WASI context starts from nothing and adds only what is granted:
//!
//! * filesystem: exactly the `grants.dirs` preopens (read-write), nothing
//!   else; a plugin cannot create symbolic links (see [`add_to_linker`]);
//! * environment: exactly the variables named in `grants.env` that are set;
//! * stdin empty, stdout discarded, stderr forwarded line by line to the host
//!   log (so a panicking plugin's message is not lost);
//! * sockets: TCP, UDP and name lookup all disabled;
//! * clocks and random: the host's;
//! * outbound HTTP (`wasi:http/outgoing-handler` and `wasi:http/types`): linked
//!   only for plugins whose grants list hosts (see below).
//!
//! ## Outbound HTTP
//!
//! A plugin whose `grants.hosts` is empty is vetted and linked without
//! `wasi:http` (the engine refuses a component importing it, see `engine.rs`).
//! One with hosts gets wasmtime's `wasi:http` implementation behind
//! `HttpPolicy`, whose `send_request` hook:
//!
//! * compares the request's origin (`scheme://host:port`, default port filled
//!   in, case-insensitive) with the granted origins, and answers
//!   `HttpRequestDenied` — before any DNS lookup or connection — when it is
//!   not one of them, logging the refusal at `warn` with the plugin's name;
//! * bounds the whole exchange by the call's deadline: sending and waiting
//!   for the response head, each read of the response body, and the
//!   connection itself all end at the deadline. A plugin blocked on the
//!   network is not running WebAssembly, so the epoch cannot stop it; this
//!   makes its request fail at the deadline, and the epoch check then ends
//!   the call as timed out as soon as the plugin runs again.
//!
//! Requests go out through the plugin's `Outbound` (`outbound.rs`) client: pooled
//! keep-alive connections, rustls with the webpki (Mozilla) roots or the
//! CA file the grants name.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::{DnsErrorPayload, ErrorCode};
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::bindings::wit_log;
use super::outbound::{IoFuture, Outbound};
use super::scratch::Scratch;
use super::{Grants, Limits, PluginError};

/// The longest log line a plugin can emit; longer ones are cut, so a plugin
/// cannot flood the host log with one giant message.
const MAX_LOG_LINE: usize = 4096;

/// Upper bound on table elements per instance (function references). Plenty
/// for any real plugin; stops a plugin from growing tables to eat host memory
/// that the linear-memory limit does not count.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

/// The data of one plugin instance's `Store`.
pub struct HostState {
    /// The plugin's name, for log lines and errors.
    pub(crate) plugin: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limits: StoreLimits,
    /// When the current call must end; `None` between calls.
    pub(crate) deadline: Option<Instant>,
    /// Set by the epoch callback when it interrupted a call at its deadline,
    /// so the caller can tell a timeout from any other trap.
    pub(crate) timed_out: bool,
    /// `wasi:http` state; reachable only when the plugin was linked with HTTP.
    http: WasiHttpCtx,
    /// The outbound HTTP allow-list and the current call's deadline.
    http_policy: HttpPolicy,
}

impl HostState {
    /// Builds the state for a fresh instance from the plugin's grants.
    ///
    /// Fails when a granted host directory cannot be opened: an instance must
    /// never start with less (or more) than the operator granted.
    pub(crate) fn new(
        plugin: &Arc<str>,
        grants: &Grants,
        limits: &Limits,
        outbound: Option<Arc<Outbound>>,
        scratch: Option<&Scratch>,
    ) -> Result<HostState, PluginError> {
        let mut b = WasiCtxBuilder::new();
        b.allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
        // Filesystem calls run on the calling thread instead of hopping to
        // tokio's blocking pool once per WASI call: a key read is several such
        // calls (open, stat, read, close) and each hop cost more than the
        // syscall itself (wasmtime issue 7973). The preopens are local
        // directories the operator granted, so these are short syscalls; the
        // call's epoch deadline and backstop still bound the plugin as a whole.
        b.allow_blocking_current_thread(true);
        b.stderr(LogStderr { plugin: plugin.clone() });
        for dir in &grants.dirs {
            b.preopened_dir(&dir.host, &dir.guest, FsPerms::ReadWrite).map_err(|e| PluginError::Sandbox {
                plugin: plugin.to_string(),
                message: format!(
                    "cannot open granted directory {} (for {}): {}",
                    dir.host.display(),
                    dir.guest,
                    super::error_chain(&e)
                ),
            })?;
        }
        if let Some(scratch) = scratch {
            b.preopened_dir(scratch.host(), scratch.guest(), FsPerms::ReadWrite).map_err(|e| PluginError::Sandbox {
                plugin: plugin.to_string(),
                message: format!("cannot open the state directory: {}", super::error_chain(&e)),
            })?;
        }
        for name in &grants.env {
            if let Ok(value) = std::env::var(name) {
                b.env(name, value);
            }
        }
        // Linear memory is the plugin's; usize is at least 32 bits and the
        // manifest caps memory at 4GiB, so this conversion only saturates on
        // 16-bit targets we do not build for.
        let memory = usize::try_from(limits.memory).unwrap_or(usize::MAX);
        Ok(HostState {
            plugin: plugin.clone(),
            wasi: b.build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new().memory_size(memory).table_elements(MAX_TABLE_ELEMENTS).build(),
            deadline: None,
            timed_out: false,
            http: WasiHttpCtx::new(),
            http_policy: HttpPolicy { plugin: plugin.clone(), outbound, deadline: None },
        })
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        // Every wasi:http host call comes through here, so the policy always
        // sees the deadline of the call in progress.
        self.http_policy.deadline = self.deadline;
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.http_policy }
    }
}

/// The [`WasiHttpHooks`] of one instance: the plugin's allow-list and
/// client, and the deadline of the call in progress.
struct HttpPolicy {
    plugin: Arc<str>,
    outbound: Option<Arc<Outbound>>,
    deadline: Option<Instant>,
}

/// How long a denied request's body is swallowed when no call deadline is
/// armed (never the case during a call; a bound all the same).
const DENIED_BODY_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

type HttpResult<T> = Result<T, wasmtime_wasi_http::Error>;

impl WasiHttpHooks for HttpPolicy {
    fn p2_error_from_connect(&mut self, err: &std::io::Error) -> ErrorCode {
        self.note("connection failed", err);
        match err.kind() {
            std::io::ErrorKind::TimedOut => ErrorCode::ConnectionTimeout,
            _ => ErrorCode::ConnectionRefused,
        }
    }

    fn p2_error_from_hyper(&mut self, err: &hyper::Error) -> ErrorCode {
        self.note("protocol error", err);
        if err.is_timeout() {
            ErrorCode::HttpResponseTimeout
        } else {
            ErrorCode::HttpProtocolError
        }
    }

    fn p2_error_from_tls(&mut self, err: &std::io::Error) -> ErrorCode {
        self.note("TLS failure", err);
        let rustls_error = err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
        match rustls_error {
            Some(rustls::Error::InvalidCertificate(_)) => ErrorCode::TlsCertificateError,
            _ => ErrorCode::TlsProtocolError,
        }
    }

    fn p2_error_from_dns(&mut self, err: &rustls::pki_types::InvalidDnsNameError) -> ErrorCode {
        self.note("invalid host name", err);
        ErrorCode::DnsError(DnsErrorPayload { rcode: Some("invalid dns name".to_string()), info_code: None })
    }

    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _request_body_errors: IoFuture,
    ) -> Box<dyn Future<Output = HttpResult<(http::Response<WasiBody>, IoFuture)>> + Send> {
        let allowed = match &self.outbound {
            Some(outbound) => outbound.allows(request.uri()),
            None => Err(request.uri().to_string()),
        };
        if let Err(shown) = allowed {
            tracing::warn!(
                target: "keyward::plugin",
                plugin = &*self.plugin,
                "outbound HTTP request denied: {shown} is not in the plugin's grants.hosts"
            );
            // Nothing is sent anywhere, but the plugin may be writing the
            // request body after `handle` (the usual order); swallow it until
            // it ends (or the call's deadline passes), so the plugin learns of
            // the denial from the response rather than from a broken stream.
            let until = self.deadline.unwrap_or_else(|| Instant::now() + DENIED_BODY_DRAIN);
            let mut body = request.into_body();
            return Box::new(async move {
                let drain = async { while let Some(Ok(_)) = body.frame().await {} };
                let _ = tokio::time::timeout_at(tokio::time::Instant::from_std(until), drain).await;
                Err(wasmtime_wasi_http::Error::HttpRequestDenied)
            });
        }
        let deadline = self.deadline.map(tokio::time::Instant::from_std);
        let outbound = self.outbound.clone();
        let _ = options;
        Box::new(async move {
            let Some(outbound) = outbound else { return Err(wasmtime_wasi_http::Error::HttpRequestDenied) };
            let response = outbound.send(request, deadline).await?;
            let response = response.map(|inner| {
                DeadlineBody { inner, sleep: deadline.map(|at| Box::pin(tokio::time::sleep_until(at))) }.boxed_unsync()
            });
            let io: IoFuture = Box::new(async { Ok(()) });
            Ok((response, io))
        })
    }
}

/// Network failures are the plugin's to report (it answers with its own
/// error, which the host logs and counts); the host notes them only at debug
/// level, tagged with the plugin, instead of wasmtime-wasi-http's untagged
/// warnings.
impl HttpPolicy {
    fn note(&self, what: &str, err: &dyn std::fmt::Display) {
        tracing::debug!(target: "keyward::plugin", plugin = &*self.plugin, "outbound HTTP {what}: {err}");
    }
}

/// A response body whose reads fail once the call's deadline has passed.
struct DeadlineBody {
    inner: WasiBody,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<HttpResult<Frame<Bytes>>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if let Some(sleep) = &mut this.sleep {
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Some(Err(wasmtime_wasi_http::Error::ConnectionReadTimeout)));
            }
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The `keyward:plugin/log` import: plugin messages become tracing events
/// tagged with the plugin's name.
impl wit_log::Host for HostState {
    fn log(&mut self, level: wit_log::Level, message: String) {
        emit(&self.plugin, level, &message);
    }
}

fn emit(plugin: &str, level: wit_log::Level, message: &str) {
    let message = truncate(message, MAX_LOG_LINE);
    match level {
        wit_log::Level::Trace => tracing::trace!(target: "keyward::plugin", plugin, "{message}"),
        wit_log::Level::Debug => tracing::debug!(target: "keyward::plugin", plugin, "{message}"),
        wit_log::Level::Info => tracing::info!(target: "keyward::plugin", plugin, "{message}"),
        wit_log::Level::Warn => tracing::warn!(target: "keyward::plugin", plugin, "{message}"),
        wit_log::Level::Error => tracing::error!(target: "keyward::plugin", plugin, "{message}"),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Adds everything a plugin may import to `linker`: WASI 0.2 (gated per
/// instance by its [`WasiCtx`]), `keyward:plugin/log`, and with `http` the
/// `wasi:http` outgoing handler and types (gated by `HttpPolicy`).
pub fn add_to_linker(linker: &mut Linker<HostState>, http: bool) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    refuse_symlink_creation(linker)?;
    if http {
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    }
    wit_log::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    Ok(())
}

/// The WASI filesystem interface whose `symlink-at` [`refuse_symlink_creation`]
/// replaces: the version wasmtime-wasi 48 implements (guests importing any
/// 0.2.x are linked to it).
const WASI_FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// Makes `descriptor.symlink-at` answer `not-permitted`. wasmtime never lets
/// a plugin *follow* a link out of its preopen, but it would let it *create*
/// one (`keys/k -> /etc/shadow`) that an operator's tools, a backup or
/// another process could follow later. No keystore or audit plugin needs
/// links, so none may make them.
fn refuse_symlink_creation(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime::component::Resource;
    use wasmtime_wasi::p2::bindings::filesystem::types::{Descriptor, ErrorCode as FsError};

    linker.allow_shadowing(true);
    let defined = linker.instance(WASI_FILESYSTEM_TYPES).and_then(|mut types| {
        types.func_wrap_async(
            "[method]descriptor.symlink-at",
            |_store, (_dir, _target, _link): (Resource<Descriptor>, String, String)| {
                Box::new(async { Ok((Err::<(), FsError>(FsError::NotPermitted),)) })
            },
        )
    });
    linker.allow_shadowing(false);
    defined
}

/// A plugin's stderr: each line becomes a `warn` event in the host log.
///
/// Plugins should use the `log` import, but a Rust panic message (or a
/// Python traceback) goes to stderr, and it is exactly what an operator needs
/// when a plugin traps.
struct LogStderr {
    plugin: Arc<str>,
}

impl IsTerminal for LogStderr {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStderr {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LineWriter { plugin: self.plugin.clone(), buf: Vec::new() })
    }
}

/// Splits written bytes into lines and logs each one.
struct LineWriter {
    plugin: Arc<str>,
    buf: Vec<u8>,
}

impl LineWriter {
    fn flush_line(&mut self, upto: usize) {
        let line: Vec<u8> = self.buf.drain(..upto).collect();
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        if !text.is_empty() {
            emit(&self.plugin, wit_log::Level::Warn, &format!("stderr: {text}"));
        }
    }
}

impl tokio::io::AsyncWrite for LineWriter {
    fn poll_write(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        self.buf.extend_from_slice(data);
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            self.flush_line(pos + 1);
        }
        // A line that never ends must not grow without bound.
        if self.buf.len() >= MAX_LOG_LINE {
            let len = self.buf.len();
            self.flush_line(len);
        }
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let len = self.buf.len();
        self.flush_line(len);
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        let len = self.buf.len();
        self.flush_line(len);
    }
}
