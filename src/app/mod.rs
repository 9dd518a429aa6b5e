//! Wiring: loads the rules, opens the alert journal (when `data_dir` is
//! set), builds the [service](crate::service) on the system clock, starts
//! the gRPC server, the metrics endpoint, the timer and checkpoint tasks,
//! and shuts them down in order. What runs lives in [`crate::service`] and
//! [`crate::server`]; this module only starts and stops it.
//!
//! - [`data_dir`]: the lock that keeps a second service off a data folder
//!   in use.
//! - [`start`] / [`start_on`]: bind and spawn; a [`Running`] service.
//!   Rules are reloaded on SIGHUP, over gRPC, and (`watch_rules`) when
//!   the folder's files change; the credentials (the token file) with
//!   them.
//! - [`Running::shutdown`]: the drain. Stop accepting and stop reading new
//!   batches (ingest streams finish the batch in hand and end with
//!   `UNAVAILABLE`), wait for every ingest stream to let go, close the bus
//!   (subscriber streams deliver what they have queued, then end with
//!   `UNAVAILABLE` "server shutting down"), wait for the gRPC server to
//!   finish. Each wait is bounded by `shutdown_grace_ms` overall.
//!
//! Starting in-process (as the integration tests do):
//!
//! ```no_run
//! # async fn demo() -> Result<(), airbag::app::AppError> {
//! use airbag::config::ServiceConfig;
//! let config = ServiceConfig {
//!     listen: "127.0.0.1:0".parse().unwrap(),
//!     metrics_listen: "127.0.0.1:0".parse().unwrap(),
//!     rules: "rules".into(),
//!     ..ServiceConfig::default()
//! };
//! let running = airbag::app::start(config).await?;
//! println!("gRPC on {}", running.grpc_addr());
//! running.shutdown().await?;
//! # Ok(()) }
//! ```

pub mod data_dir;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::alerts::AlertBus;
use crate::clock::{Clock, SystemClock};
use crate::config::{ConfigError, ServiceConfig};
use crate::journal::Journal;
use crate::metrics;
use crate::rules::watch::{fingerprint, RulesWatcher, WatchTiming};
use crate::rules::RuleError;
use crate::service::rulebook::load_dir_with;
use crate::service::{checkpoints, timers, Core, ReloadTrigger, ServiceError};

use self::data_dir::DataDirLock;

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("rules in {dir} have {} error(s):\n{}", .errors.len(), list_errors(.errors))]
    Rules { dir: PathBuf, errors: Vec<RuleError> },
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    DataDir(#[from] self::data_dir::DataDirError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("cannot set up security: {0}")]
    Security(#[from] crate::server::SecurityError),
    #[error("gRPC server failed: {0}")]
    Serve(#[source] tonic::transport::Error),
    #[error("a service task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
    #[error(transparent)]
    Kafka(#[from] crate::kafka::KafkaError),
}

fn list_errors(errors: &[RuleError]) -> String {
    errors.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n")
}

/// A service that is running.
pub struct Running {
    core: Arc<Core>,
    grpc_addr: SocketAddr,
    metrics_addr: SocketAddr,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    metrics: JoinHandle<()>,
    /// The web console, when `[console] listen` is set.
    console: Option<crate::console::Serving>,
    timers: JoinHandle<()>,
    checkpoints: JoinHandle<()>,
    /// Cancelled at the end of shutdown: stops the metrics endpoint.
    stopped: CancellationToken,
    /// Reloads on file changes while held; stopped when dropped.
    watcher: Option<RulesWatcher>,
    /// The data folder, this service's alone while it runs.
    data_dir_lock: Option<DataDirLock>,
    /// Kafka sources and sinks (`[kafka]`).
    kafka: crate::kafka::Kafka,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("grpc_addr", &self.grpc_addr)
            .field("metrics_addr", &self.metrics_addr)
            .finish_non_exhaustive()
    }
}

/// Validates `config`, loads the rules, binds both listeners and starts.
///
/// # Errors
/// Invalid configuration, rule errors, or an address that cannot be bound.
pub async fn start(config: ServiceConfig) -> Result<Running, AppError> {
    config.validate()?;
    let grpc = TcpListener::bind(config.listen)
        .await
        .map_err(|source| AppError::Bind {
            what: "gRPC",
            addr: config.listen,
            source,
        })?;
    let metrics = TcpListener::bind(config.metrics_listen)
        .await
        .map_err(|source| AppError::Bind {
            what: "metrics",
            addr: config.metrics_listen,
            source,
        })?;
    start_on(config, grpc, metrics).await
}

/// As [`start`], on listeners the caller bound (`config.listen` and
/// `config.metrics_listen` are then ignored; the bound addresses are
/// checked as they would be: plaintext off loopback needs the override).
///
/// # Errors
/// Invalid configuration, rule errors, or TLS files that cannot be used.
pub async fn start_on(config: ServiceConfig, grpc: TcpListener, metrics: TcpListener) -> Result<Running, AppError> {
    config.validate()?;
    if let (Ok(grpc_at), Ok(metrics_at)) = (grpc.local_addr(), metrics.local_addr()) {
        let mut problems = Vec::new();
        config.security_problems(grpc_at, metrics_at, &mut problems);
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems).into());
        }
    }
    let security = crate::server::Security::load(&config)?;
    // Tokens are read again with every rules reload (the token file).
    let credentials = security.credentials();
    // Taken before the journal and checkpoints are opened, held until the
    // service has stopped.
    let data_dir_lock = config.data_dir.as_deref().map(DataDirLock::acquire).transpose()?;
    let dir = config.rules.clone();
    let rule_limits = config.limits.rules();
    let (baseline, loaded) = {
        let dir = dir.clone();
        // The fingerprint is taken before loading: a change made while the
        // rules load is then seen by the watcher and reloaded.
        tokio::task::spawn_blocking(move || (fingerprint(&dir), load_dir_with(&dir, &rule_limits)))
            .await
            .map_err(AppError::Task)?
    };
    let ruleset = loaded.map_err(|errors| AppError::Rules {
        dir: dir.clone(),
        errors,
    })?;
    info!(
        dir = %dir.display(),
        rules = ruleset.len(),
        files = ruleset.sources.len(),
        "Rules loaded."
    );
    let grpc_addr = grpc.local_addr().map_err(|source| AppError::Bind {
        what: "gRPC",
        addr: config.listen,
        source,
    })?;
    let metrics_addr = metrics.local_addr().map_err(|source| AppError::Bind {
        what: "metrics",
        addr: config.metrics_listen,
        source,
    })?;
    let timer_every = Duration::from_millis(config.timer_interval_ms);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let bus = build_bus(&config, &clock).await?;
    let core = Arc::new(checkpoints::open_and_restore(Core::with_bus(config, ruleset, bus, clock)).await?);
    checkpoints::recognise_replayed(&core).await;

    let stopped = CancellationToken::new();
    let console = crate::console::start(&core, &credentials, &stopped)
        .await
        .map_err(|(addr, source)| AppError::Bind {
            what: "console",
            addr,
            source,
        })?;
    let kafka = crate::kafka::start(&core)?;
    let (render_core, kafka_metrics) = (core.clone(), kafka.metrics().clone());
    let render: metrics::http::Render = Arc::new(move || {
        let mut text = render_core.render_metrics();
        crate::kafka::Kafka::render(&kafka_metrics, &render_core, &mut text);
        text
    });
    let metrics = tokio::spawn(metrics::http::serve(metrics, render, stopped.clone()));
    info!(addr = %metrics_addr, "Metrics listening on /metrics.");

    let timers = tokio::spawn(timers::run(core.clone(), timer_every));
    let checkpoints = tokio::spawn(checkpoints::run_periodic(core.clone()));
    #[cfg(unix)]
    tokio::spawn(reload_on_sighup(core.clone(), credentials.clone()));

    let watcher = if core.config().watch_rules {
        let watched = core.clone();
        let watcher = RulesWatcher::start(dir.clone(), WatchTiming::default(), baseline, move || {
            if !watched.is_shutting_down() {
                info!("Rules folder changed: reloading.");
                credentials.reload_logged();
                // The outcome is logged and kept for status.
                let _ = watched.reload(ReloadTrigger::FileChange);
            }
        });
        match watcher {
            Ok(w) => Some(w),
            Err(error) => {
                warn!(%error, "Cannot watch the rules folder; reload with SIGHUP or over gRPC.");
                None
            }
        }
    } else {
        None
    };

    let shutdown = core.shutdown_token().clone().cancelled_owned();
    let grpc = tokio::spawn(crate::server::serve(core.clone(), grpc, security, shutdown));
    Ok(Running {
        core,
        grpc_addr,
        metrics_addr,
        grpc,
        metrics,
        console,
        timers,
        checkpoints,
        stopped,
        watcher,
        data_dir_lock,
        kafka,
    })
}

/// The alert bus: with a journal in `<data_dir>/journal` (opened and
/// repaired here) when `data_dir` is set.
async fn build_bus(config: &ServiceConfig, clock: &Arc<dyn Clock>) -> Result<Arc<AlertBus>, AppError> {
    let bus_config = Core::bus_config(config);
    let Some(data_dir) = &config.data_dir else {
        return Ok(Arc::new(AlertBus::new(bus_config, clock.clone())));
    };
    let dir = data_dir.join("journal");
    let journal_config = config.journal.journal_config();
    let journal = tokio::task::spawn_blocking(move || Journal::open(&dir, journal_config))
        .await
        .map_err(AppError::Task)?
        .map_err(ServiceError::Journal)?;
    let recovery = journal.recovery();
    info!(
        dir = %journal.dir().display(),
        first_seq = recovery.first_seq,
        next_seq = recovery.next_seq,
        segments = recovery.segments,
        repaired = recovery.cut.is_some(),
        fsync = %journal_config.fsync,
        "Alert journal opened; numbering goes on from next_seq."
    );
    Ok(Arc::new(AlertBus::with_journal(bus_config, clock.clone(), journal)))
}

/// Reloads the rules and the credentials (the token file) on SIGHUP,
/// until shutdown.
#[cfg(unix)]
async fn reload_on_sighup(core: Arc<Core>, credentials: crate::server::auth::Credentials) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        warn!("Cannot listen for SIGHUP; reload over gRPC instead.");
        return;
    };
    let token = core.shutdown_token().clone();
    loop {
        tokio::select! {
            () = token.cancelled() => break,
            got = hangup.recv() => {
                if got.is_none() {
                    break;
                }
                info!("SIGHUP: reloading rules and credentials.");
                let core = core.clone();
                let credentials = credentials.clone();
                // The outcome is logged and kept for status.
                let _ = tokio::task::spawn_blocking(move || {
                    credentials.reload_logged();
                    core.reload(ReloadTrigger::Signal)
                })
                .await;
            }
        }
    }
}

impl Running {
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// The web console's address, when it is on.
    pub fn console_addr(&self) -> Option<SocketAddr> {
        self.console.as_ref().map(crate::console::Serving::addr)
    }

    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// Runs until `signal` completes (or the gRPC server fails), then shuts
    /// down.
    ///
    /// # Errors
    /// The gRPC server failed.
    pub async fn run_until(mut self, signal: impl std::future::Future<Output = ()>) -> Result<(), AppError> {
        tokio::select! {
            () = signal => {}
            result = &mut self.grpc => {
                // The server ended without being asked to.
                self.core.shutdown_token().cancel();
                self.core.bus().close();
                self.stopped.cancel();
                return match result {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(AppError::Serve(e)),
                    Err(e) => Err(AppError::Task(e)),
                };
            }
        }
        self.shutdown().await
    }

    /// Shuts down gracefully; see the module docs for the order.
    ///
    /// # Errors
    /// The gRPC server failed while draining.
    pub async fn shutdown(self) -> Result<(), AppError> {
        let Running {
            core,
            mut grpc,
            metrics,
            console,
            timers,
            checkpoints,
            stopped,
            watcher,
            data_dir_lock,
            kafka,
            ..
        } = self;
        // Dropping joins the watcher's thread (it checks its stop flag
        // every 100 ms): off the runtime's workers.
        let _ = tokio::task::spawn_blocking(move || drop(watcher)).await;
        let grace = Duration::from_millis(core.config().shutdown_grace_ms);
        let deadline = Instant::now() + grace;
        info!(
            grace_ms = grace.as_millis() as u64,
            "Shutting down: no new streams or batches."
        );
        core.shutdown_token().cancel();

        // 1. Ingest streams finish the batch in hand; their alerts are
        //    published as they are evaluated.
        if timeout_at(deadline, core.ingest_stopped()).await.is_err() {
            warn!("Ingest streams still open at the end of the grace period.");
        }
        let _ = timers.await;
        let _ = checkpoints.await;
        // Ticks held for event-time order are applied now rather than lost
        // with the process (and so are in the final checkpoint).
        core.flush_held();

        // 2. Subscriber streams deliver what they have queued, then end;
        //    meanwhile the state ingest left is checkpointed.
        core.bus().close();
        info!(last_seq = core.bus().last_seq(), "Alert streams closing.");
        kafka.stopped(deadline).await;
        checkpoints::write_final(&core).await;

        // 3. The gRPC server finishes once every stream has ended.
        let result = match timeout_at(deadline, &mut grpc).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(AppError::Serve(e)),
            Ok(Err(e)) => Err(AppError::Task(e)),
            Err(_) => {
                warn!("gRPC connections still open at the end of the grace period; closing them.");
                grpc.abort();
                Ok(())
            }
        };
        stopped.cancel();
        let _ = metrics.await;
        if let Some(console) = console {
            console.stopped(Duration::from_secs(2)).await;
        }
        match &result {
            Ok(()) => info!("Stopped."),
            Err(e) => error!(error = %e, "Stopped with an error."),
        }
        // The journal and the last checkpoint are written: another service
        // may take the folder (this one's journal closes with its core).
        drop(core);
        drop(data_dir_lock);
        result
    }
}

/// Completes on SIGINT or SIGTERM.
///
/// Cancellation-safe.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => info!("SIGINT received."),
        () = term => info!("SIGTERM received."),
    }
}
