//! What one plugin instance can see and do: its store data, its WASI context
//! built from the manifest grants, and the host functions it imports.
//!
//! The WASI context starts from nothing and adds only what is granted:
//!
//! * filesystem: exactly the `grants.dirs` preopens (read-write), nothing else;
//! * environment: exactly the variables named in `grants.env` that are set;
//! * stdin empty, stdout discarded, stderr forwarded line by line to the host
//!   log (so a panicking plugin's message is not lost);
//! * sockets: TCP, UDP and name lookup all disabled;
//! * clocks and random: the host's.
//!
//! ## Outbound HTTP seam
//!
//! `grants.hosts` is parsed and validated by the manifest but nothing here links
//! `wasi:http` yet. When the etcd/vault/webhook plugins arrive, this is where
//! it goes: add `wasmtime-wasi-http`, give [`HostState`] a `WasiHttpCtx`,
//! implement `WasiHttpView::send_request` to refuse any authority not in
//! [`HostState::allowed_hosts`], call `wasmtime_wasi_http::add_only_http_to_linker_async`
//! in [`add_to_linker`], and drop `wasi:http` from the refused imports in
//! `engine.rs`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::wit_log;
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
    /// Outbound HTTP allow-list, kept for the `wasi:http` seam (module docs).
    #[allow(dead_code)]
    pub(crate) allowed_hosts: Arc<[String]>,
}

impl HostState {
    /// Builds the state for a fresh instance from the plugin's grants.
    ///
    /// Fails when a granted host directory cannot be opened: an instance must
    /// never start with less (or more) than the operator granted.
    pub fn new(plugin: &Arc<str>, grants: &Grants, limits: &Limits) -> Result<HostState, PluginError> {
        let mut b = WasiCtxBuilder::new();
        b.allow_tcp(false).allow_udp(false).allow_ip_name_lookup(false);
        b.stderr(LogStderr { plugin: plugin.clone() });
        for dir in &grants.dirs {
            b.preopened_dir(&dir.host, &dir.guest, FsPerms::ReadWrite)
                .map_err(|e| PluginError::Sandbox {
                    plugin: plugin.to_string(),
                    message: format!(
                        "cannot open granted directory {} (for {}): {}",
                        dir.host.display(),
                        dir.guest,
                        super::error_chain(&e)
                    ),
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
            limits: StoreLimitsBuilder::new()
                .memory_size(memory)
                .table_elements(MAX_TABLE_ELEMENTS)
                .build(),
            deadline: None,
            timed_out: false,
            allowed_hosts: grants.hosts.clone().into(),
        })
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
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
/// instance by its [`WasiCtx`]) and `keyward:plugin/log`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wit_log::add_to_linker::<HostState, HasSelf<HostState>>(linker, |s| s)?;
    Ok(())
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
        Box::new(LineWriter {
            plugin: self.plugin.clone(),
            buf: Vec::new(),
        })
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
