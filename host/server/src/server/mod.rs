//! The server: listener, TLS handshakes, HTTP/1.1 connections, reload and
//! graceful shutdown.
//!
//! [`Server::build`] opens everything the config names (`backends`),
//! [`Server::bind`] the listener and [`Server::run`] serves: `accept` admits
//! connections and `connection` runs each one; `signals` waits for SIGHUP,
//! which starts a `reload`, and for SIGTERM/SIGINT, which start a graceful
//! shutdown.

mod accept;
mod backends;
mod connection;
mod reload;
mod signals;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::audit::{AuditLog, ErrorLog};
use crate::auth::Authority;
use crate::config::Settings;
use crate::keys::{KeyError, Keys};
use crate::metrics::Metrics;
use crate::state::{RouteOverrides, State};
use accept::{raise_fd_limit, Gate};
use backends::plugin_engine;
use connection::Shutdown;
use keyward_core::crypto::StoredKey;
use keyward_core::seal::Seal;
use keyward_plugin_host::resolve::{Plugins, ResolveError};
use keyward_plugin_host::PluginEngine;
use signals::{hangup_stream, shutdown_signal};

pub use backends::{open_audit_sinks, open_keystore};

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

    /// Binds the configured address.
    pub async fn bind(&self) -> Result<TcpListener, StartError> {
        let address = self.settings.address;
        TcpListener::bind(address).await.map_err(|source| StartError::Listen { address, source })
    }

    /// Serves until SIGTERM/SIGINT, then lets in-flight requests finish.
    pub async fn run(self, listener: TcpListener) -> Result<(), StartError> {
        let limits = self.settings.limits;
        let mut gate = Gate::new(limits.max_connections);
        raise_fd_limit(limits.max_connections);
        let shutdown = Arc::new(Shutdown::default());
        let mut terminate = Box::pin(shutdown_signal());
        let mut hangup = hangup_stream();
        loop {
            tokio::select! {
                accepted = listener.accept() => self.admit(accepted, &mut gate, &shutdown).await,
                _ = hangup.recv() => self.reload_on_hangup().await,
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
