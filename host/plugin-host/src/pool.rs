//! A pool of instances of one plugin, and the rules for a single call.
//!
//! Each instance is its own wasmtime `Store` (own memory, own WASI context),
//! used by one call at a time. A call leases an idle instance (or creates one,
//! up to [`PoolOptions::max_instances`]), arms its deadline, runs, and then:
//!
//! * plugin answered (`ok` or its own `error`): the instance goes back idle;
//! * plugin trapped or ran past its deadline: the instance is dropped, and the
//!   next call gets a fresh one, initialised from scratch;
//! * the caller went away mid-call (its future was dropped): the lease is
//!   dropped with the instance in it, so a half-finished call can never leak
//!   into the next one.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};
use wasmtime::component::InstancePre;
use wasmtime::{Store, UpdateDeadline};

use super::bindings::WitError;
use super::engine::LoadedComponent;
use super::sandbox::HostState;
use super::{error_chain, PluginEngine, PluginError, PluginKind, PluginSpec};
use keyward_core::keystore::StoreError;

/// The message of every timed-out call; the HTTP layer shows it as a 503.
pub const TIMEOUT_MESSAGE: &str = "plugin call timed out";

/// Extra wall time, beyond the epoch deadline, before the host gives up on a
/// call from outside. The epoch deadline only fires while WebAssembly code
/// runs; this backstop also covers a plugin blocked in a host call (e.g.
/// waiting on a WASI pollable).
const BACKSTOP_GRACE: Duration = Duration::from_millis(500);

/// How a plugin's instances are pooled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// Most instances alive at once, which is also the most concurrent calls
    /// into the plugin. Memory use is bounded by this times `limits.memory`.
    pub max_instances: usize,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions { max_instances: 4 }
    }
}

/// Counters for one plugin, for metrics and `/v1/status`.
#[derive(Debug, Default)]
pub struct PluginStats {
    /// Calls made (not counting `init`).
    pub calls: AtomicU64,
    /// Calls the plugin answered with its own `error`.
    pub errors: AtomicU64,
    /// Calls (or instance start-ups) that trapped.
    pub traps: AtomicU64,
    /// Calls (or instance start-ups) stopped at their deadline.
    pub timeouts: AtomicU64,
    /// Instances created (and initialised) over the plugin's life.
    pub instances_created: AtomicU64,
}

/// What the pool needs from a generated world binding.
pub(crate) trait World: Sized + Send + 'static {
    /// The manifest `kind` of components that implement this world.
    const KIND: PluginKind;

    /// Instantiates the component and wraps the instance.
    fn instantiate(
        pre: &InstancePre<HostState>,
        store: &mut Store<HostState>,
    ) -> impl Future<Output = wasmtime::Result<Self>> + Send;

    /// Calls the world's exported `init`.
    fn init(
        &self,
        store: &mut Store<HostState>,
        config: &str,
    ) -> impl Future<Output = wasmtime::Result<Result<(), WitError>>> + Send;
}

/// One live instance.
pub(crate) struct Instance<W> {
    pub(crate) store: Store<HostState>,
    pub(crate) world: W,
}

/// The instances of one plugin.
pub(crate) struct Pool<W> {
    loaded: LoadedComponent,
    config: Arc<str>,
    idle: Mutex<Vec<Instance<W>>>,
    permits: Semaphore,
    stats: Arc<PluginStats>,
}

/// Refuses a component declared as `declared` where `wanted` is needed.
fn check_kind(plugin: &str, declared: PluginKind, wanted: PluginKind) -> Result<(), PluginError> {
    if declared == wanted {
        return Ok(());
    }
    Err(PluginError::KindMismatch { plugin: plugin.to_string(), declared, wanted })
}

/// The result of running one plugin call under a deadline: outer `Err` = the
/// backstop fired, middle `Err` = a trap, inner `Err` = the plugin's answer.
pub(crate) type Outcome<R> = Result<wasmtime::Result<Result<R, WitError>>, tokio::time::error::Elapsed>;

impl<W: World> Pool<W> {
    /// Loads the component described by `spec` (verifying its pin before
    /// compiling it) and starts the pool; a spec declared as another kind is
    /// refused before anything is read.
    pub(crate) async fn load(
        engine: &PluginEngine,
        spec: &PluginSpec,
        config: &str,
        options: PoolOptions,
    ) -> Result<Pool<W>, PluginError> {
        check_kind(&spec.name, spec.kind, W::KIND)?;
        let loaded = engine.load_async(spec).await?;
        Self::start(loaded, config, options).await
    }

    /// Creates the pool and starts one instance right away, so a bad
    /// configuration or a plugin that cannot start fails at load time (and a
    /// reload keeps the old plugin) rather than on the first request.
    pub(crate) async fn start(
        loaded: LoadedComponent,
        config: &str,
        options: PoolOptions,
    ) -> Result<Pool<W>, PluginError> {
        check_kind(&loaded.name, loaded.kind, W::KIND)?;
        let pool = Pool {
            loaded,
            config: config.into(),
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(options.max_instances.max(1)),
            stats: Arc::new(PluginStats::default()),
        };
        let first = pool.create().await.map_err(|e| match e {
            CreateError::Plugin(e) => e,
            CreateError::Store(source) => PluginError::Init { plugin: pool.loaded.name.to_string(), source },
        })?;
        pool.put_back(first);
        Ok(pool)
    }

    pub(crate) fn name(&self) -> &str {
        &self.loaded.name
    }

    pub(crate) fn loaded(&self) -> &LoadedComponent {
        &self.loaded
    }

    pub(crate) fn stats(&self) -> &Arc<PluginStats> {
        &self.stats
    }

    /// The outer wall-clock bound of one call.
    pub(crate) fn backstop(&self) -> Duration {
        self.loaded.limits.call_timeout.saturating_add(BACKSTOP_GRACE)
    }

    /// Leases an instance for one call, creating one if none is idle.
    ///
    /// Waits at most one call timeout for a free slot: if every instance is
    /// still busy by then, the plugin is overloaded and the caller is told so
    /// rather than queued without bound.
    pub(crate) async fn lease(&self) -> Result<Lease<'_, W>, StoreError> {
        let permit = match tokio::time::timeout(self.loaded.limits.call_timeout, self.permits.acquire()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_closed)) => return Err(StoreError::Unavailable("plugin is shut down".into())),
            Err(_) => return Err(StoreError::Unavailable("plugin is busy: no instance became free in time".into())),
        };
        let idle = self.idle.lock().map(|mut idle| idle.pop()).unwrap_or(None);
        let instance = match idle {
            Some(instance) => instance,
            None => self.create().await.map_err(|e| self.start_failed(e))?,
        };
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let mut lease = Lease { pool: self, instance: Some(instance), _permit: permit };
        lease.arm();
        Ok(lease)
    }

    /// A fresh instance failed to start while serving a request. Whatever
    /// `init` answered, it is not the client's fault (the same configuration
    /// worked at load time), so it must not surface as `invalid`/`not-found`.
    fn start_failed(&self, e: CreateError) -> StoreError {
        let name = self.name();
        match e {
            CreateError::Store(e @ (StoreError::Unavailable(_) | StoreError::Internal(_))) => e,
            CreateError::Store(e) => {
                tracing::error!(plugin = name, "plugin instance refused to start: {e}");
                StoreError::Unavailable(format!("plugin {name} could not start an instance: {e}"))
            }
            CreateError::Plugin(e) => {
                tracing::error!(plugin = name, "cannot create plugin instance: {e}");
                StoreError::Unavailable(e.to_string())
            }
        }
    }

    fn put_back(&self, mut instance: Instance<W>) {
        instance.store.data_mut().deadline = None;
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(instance);
        }
    }

    /// Makes and initialises a fresh instance, under the call deadline.
    async fn create(&self) -> Result<Instance<W>, CreateError> {
        let loaded = &self.loaded;
        let state = HostState::new(
            &loaded.name,
            &loaded.grants,
            &loaded.limits,
            loaded.outbound.clone(),
            loaded.scratch.as_deref(),
        )
        .map_err(CreateError::Plugin)?;
        let mut store = Store::new(loaded.engine.engine(), state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(|mut ctx| {
            let data = ctx.data_mut();
            match data.deadline {
                Some(deadline) if Instant::now() >= deadline => {
                    data.timed_out = true;
                    Ok(UpdateDeadline::Interrupt)
                }
                // Still in time: let other tasks run, then keep going. Tokio's
                // `yield_now` (rather than a plain yield) defers the wake-up
                // until the scheduler has polled its timers and I/O, so even a
                // single-threaded runtime keeps serving while a plugin spins.
                _ => Ok(UpdateDeadline::YieldCustom(1, Box::pin(tokio::task::yield_now()))),
            }
        });
        arm(&mut store, loaded.limits.call_timeout);

        let started = tokio::time::timeout(self.backstop(), async {
            let world = W::instantiate(&loaded.pre, &mut store).await?;
            let answer = world.init(&mut store, &self.config).await?;
            Ok::<_, wasmtime::Error>((world, answer))
        })
        .await;
        let world = match started {
            Ok(Ok((world, Ok(())))) => world,
            Ok(Ok((_, Err(e)))) => return Err(CreateError::Store(map_wit_error(e))),
            Ok(Err(trap)) => {
                return Err(CreateError::Store(self.failed(&store, "start-up", Some(&trap))));
            }
            Err(_) => return Err(CreateError::Store(self.failed(&store, "start-up", None))),
        };
        self.stats.instances_created.fetch_add(1, Ordering::Relaxed);
        store.data_mut().deadline = None;
        Ok(Instance { store, world })
    }

    /// Counts and logs a trap or timeout (`trap = None`: the backstop fired)
    /// and turns it into the caller's error. The instance is not reused.
    fn failed(&self, store: &Store<HostState>, op: &str, trap: Option<&wasmtime::Error>) -> StoreError {
        let name = self.name();
        match trap {
            Some(trap) if !store.data().timed_out => {
                self.stats.traps.fetch_add(1, Ordering::Relaxed);
                // The log gets everything (including the wasm backtrace); the
                // caller's message, which may reach an API client, gets one line.
                tracing::error!(plugin = name, op, "plugin trapped; discarding the instance: {}", error_chain(trap));
                StoreError::Internal(format!("plugin {name} failed during {op}: {}", short_error(trap)))
            }
            _ => {
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    plugin = name,
                    op,
                    timeout = %humantime::format_duration(self.loaded.limits.call_timeout),
                    "plugin call timed out; discarding the instance"
                );
                StoreError::Unavailable(TIMEOUT_MESSAGE.into())
            }
        }
    }
}

/// One line saying what went wrong: the trap kind when there is one (e.g.
/// "wasm trap: wasm `unreachable` instruction executed"), else the innermost
/// cause's first line.
fn short_error(err: &wasmtime::Error) -> String {
    if let Some(trap) = err.downcast_ref::<wasmtime::Trap>() {
        return trap.to_string();
    }
    let root = err.root_cause().to_string();
    root.lines().next().unwrap_or_default().to_string()
}

enum CreateError {
    /// Could not even build the sandbox (e.g. a granted directory is gone).
    Plugin(PluginError),
    /// The instance trapped, timed out, or `init` said no.
    Store(StoreError),
}

fn arm(store: &mut Store<HostState>, timeout: Duration) {
    let data = store.data_mut();
    // A deadline too far to represent is no deadline; the manifest caps
    // timeouts far below that, so this only matters for programmatic specs.
    data.deadline = Instant::now().checked_add(timeout);
    data.timed_out = false;
    // Check at the next tick; the callback decides whether time is up.
    store.set_epoch_deadline(1);
}

/// Maps the plugin's own `error` answer one to one.
pub(crate) fn map_wit_error(e: WitError) -> StoreError {
    match e {
        WitError::NotFound => StoreError::NotFound,
        WitError::Exists => StoreError::Exists,
        WitError::Unavailable(m) => StoreError::Unavailable(m),
        WitError::Invalid(m) => StoreError::Invalid(m),
        WitError::Internal(m) => StoreError::Internal(m),
    }
}

/// One instance, lent out for one call. Dropping it without
/// [`finish`](Lease::finish) discards the instance.
pub(crate) struct Lease<'a, W: World> {
    pool: &'a Pool<W>,
    instance: Option<Instance<W>>,
    _permit: SemaphorePermit<'a>,
}

impl<W: World> Lease<'_, W> {
    fn arm(&mut self) {
        if let Some(instance) = &mut self.instance {
            arm(&mut instance.store, self.pool.loaded.limits.call_timeout);
        }
    }

    /// The store and bindings, to make the call with.
    pub(crate) fn parts(&mut self) -> Option<(&mut Store<HostState>, &W)> {
        self.instance.as_mut().map(|i| (&mut i.store, &i.world))
    }

    /// Classifies the call's outcome, returns a healthy instance to the pool
    /// and discards a broken one.
    pub(crate) fn finish<R>(mut self, op: &str, outcome: Outcome<R>) -> Result<R, StoreError> {
        let Some(instance) = self.instance.take() else {
            return Err(StoreError::Internal("plugin instance lease used twice".into()));
        };
        match outcome {
            Ok(Ok(answer)) => {
                self.pool.put_back(instance);
                answer.map_err(|e| {
                    self.pool.stats.errors.fetch_add(1, Ordering::Relaxed);
                    map_wit_error(e)
                })
            }
            Ok(Err(trap)) => Err(self.pool.failed(&instance.store, op, Some(&trap))),
            Err(_elapsed) => Err(self.pool.failed(&instance.store, op, None)),
        }
    }
}

/// Runs one call on a leased instance: `call` gets the store and bindings and
/// returns the generated binding's future; the backstop and the outcome rules
/// are applied here so each exported function is one line at its call site.
macro_rules! call_plugin {
    ($pool:expr, $op:literal, |$store:ident, $world:ident| $call:expr) => {{
        let pool = &$pool;
        let mut lease = pool.lease().await?;
        let outcome = match lease.parts() {
            Some(($store, $world)) => tokio::time::timeout(pool.backstop(), $call).await,
            None => return Err(StoreError::Internal("plugin instance missing from lease".into())),
        };
        lease.finish($op, outcome)
    }};
}
pub(crate) use call_plugin;
