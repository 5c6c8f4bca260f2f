//! The server: listener, TLS handshakes, HTTP/1.1 connections, reload and
//! graceful shutdown.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::api::{self, Peer};
use crate::audit::sink::AuditSink;
use crate::audit::stdout::StdoutSink;
use crate::audit::{AuditLog, ErrorLog};
use crate::auth::Authority;
use crate::config::Settings;
use crate::crypto::StoredKey;
use crate::keys::memory::MemoryStore;
use crate::keys::seal::Seal;
use crate::keys::store::Keystore;
use crate::keys::{KeyError, Keys};
use crate::metrics::Metrics;
use crate::plugin::resolve::{default_cache_dir, Plugins, ResolveError};
use crate::plugin::{EngineOptions, PluginEngine};
use crate::state::{RouteOverrides, State};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Seal(#[from] crate::keys::seal::SealError),
    #[error(transparent)]
    Plugin(#[from] ResolveError),
    #[error("cannot listen on {address}: {source}")]
    Listen { address: std::net::SocketAddr, source: std::io::Error },
    #[error("keys: cannot create '{name}' at start-up: {source}")]
    BootKey { name: String, source: KeyError },
}

/// How long in-flight requests get to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(4);
/// A client must finish its TLS handshake within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

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
    pub state: Arc<State>,
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
        let state = Arc::new(State {
            authority: ArcSwap::from_pointee(Authority::from_settings(&settings, started_at)),
            overrides: ArcSwap::from_pointee(RouteOverrides::new(&settings.api)),
            keys: keys.clone(),
            metrics: metrics.clone(),
            audit,
            errors: ErrorLog::new(metrics),
            started_at,
            default_algorithm: State::detect_algorithm(),
        });
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
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut shutdown = Box::pin(shutdown_signal());
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
                    let state = self.state.clone();
                    let acceptor = acceptor.clone();
                    let watcher = graceful.watcher();
                    tokio::spawn(async move {
                        serve_connection(state, acceptor, tcp, addr, watcher).await;
                    });
                }
                _ = hangup.recv() => {
                    match self.reload().await {
                        Ok(()) => tracing::info!("configuration reloaded"),
                        Err(e) => self.state.errors.error(&format!("reload failed, keeping the old configuration: {e}")),
                    }
                }
                _ = &mut shutdown => break,
            }
        }
        drop(listener);
        tracing::info!("shutting down: finishing in-flight requests");
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
            tracing::warn!("some connections did not finish in time");
        }
        Ok(())
    }
}

async fn serve_connection(
    state: Arc<State>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    addr: std::net::SocketAddr,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let _ = tcp.set_nodelay(true);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(peer = %addr, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(peer = %addr, "TLS handshake timed out");
            return;
        }
    };
    let identity = {
        let (_, conn) = tls.get_ref();
        let chain = conn.peer_certificates().unwrap_or(&[]);
        crate::tls::identity_of_chain(chain)
    };
    let peer = Arc::new(Peer { ip: Some(addr.ip().to_string()), identity });
    let service = service_fn(move |req| api::serve(state.clone(), peer.clone(), req));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(Duration::from_secs(10));
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(peer = %addr, error = %e, "connection ended with an error");
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

fn init_tracing(enabled: bool) {
    let filter = if enabled {
        tracing_subscriber::EnvFilter::try_from_env("KEYWARD_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    } else {
        tracing_subscriber::EnvFilter::new("off")
    };
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

async fn run_server(args: crate::cli::ServerArgs) -> Result<(), String> {
    let (mut settings, path) = if args.dev {
        let files = crate::dev::prepare().map_err(|e| e.to_string())?;
        let address = args.addr.unwrap_or_else(|| ([127, 0, 0, 1], 7373).into());
        eprint!("{}", crate::dev::banner(&files, address));
        (crate::dev::settings(&files, address), None)
    } else {
        let path = args.config.ok_or("--config FILE or --dev is required")?;
        (Settings::load(&path).map_err(|e| e.to_string())?, Some(path))
    };
    if let Some(addr) = args.addr {
        settings.address = addr;
    }
    init_tracing(settings.log.error);
    let server = Server::build(settings, path).await.map_err(|e| e.to_string())?;
    let listener = server.bind().await.map_err(|e| e.to_string())?;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "listening");
    }
    server.run(listener).await.map_err(|e| e.to_string())
}

/// `keyward server`: runs until SIGTERM; exit code 1 if it cannot start.
pub fn run_from_cli(args: crate::cli::ServerArgs) -> std::process::ExitCode {
    // Key files written by keystore plugins (through WASI) and by dev mode
    // must be readable by this user only, as KES writes them (0600).
    #[cfg(unix)]
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("keyward: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_server(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keyward: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
