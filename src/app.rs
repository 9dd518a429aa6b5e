//! Wiring: loads the rules, builds the engine and the alert bus, starts
//! the gRPC server, the metrics endpoint and the timer task, and shuts
//! them down in order.
//!
//! - [`Core`]: what every request handler shares (engine, bus, metrics,
//!   reload state, the shutdown token).
//! - [`start`] / [`start_on`]: bind and spawn; a [`Running`] service.
//!   Rules are reloaded on SIGHUP, over gRPC, and (`watch_rules`) when
//!   the folder's files change.
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

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::alerts::{AlertBus, BusConfig, PublishSink};
use crate::clock::{Clock, SystemClock};
use crate::config::{ConfigError, ServiceConfig};
use crate::engine::{Engine, EngineConfig};
use crate::metrics::{self, Exposition, IngestMetrics, REJECT_CODES};
use crate::rules::watch::{fingerprint, RulesWatcher, WatchTiming};
use crate::rules::{load_dir, RuleError, RuleSet};

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
    #[error("cannot create data_dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC server failed: {0}")]
    Serve(#[source] tonic::transport::Error),
    #[error("a service task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

fn list_errors(errors: &[RuleError]) -> String {
    errors.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n")
}

/// What asked for a reload, for the audit trail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadTrigger {
    /// The rules folder changed.
    FileChange,
    /// SIGHUP.
    Signal,
    /// The `RuleAdmin.Reload` call.
    Api,
}

impl ReloadTrigger {
    pub fn name(self) -> &'static str {
        match self {
            ReloadTrigger::FileChange => "file_change",
            ReloadTrigger::Signal => "signal",
            ReloadTrigger::Api => "api",
        }
    }
}

/// Reloads by outcome.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReloadOutcomes {
    /// A new ruleset was installed.
    pub applied: u64,
    /// The folder held exactly the ruleset in force.
    pub unchanged: u64,
}

/// The outcome of reloads, for status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReloadStatus {
    /// Reloads that failed (the old ruleset kept running).
    pub failures: u64,
    pub outcomes: ReloadOutcomes,
    /// Errors of the last reload, if it failed; empty if it worked.
    pub last_errors: Vec<RuleError>,
    /// When a reload last succeeded (startup counts), ns.
    pub last_ok_ns: i64,
    /// When a reload last failed, ns; 0 if none has.
    pub last_failed_ns: i64,
}

/// `name@sha256-prefix` for every file, for audit records.
fn describe_sources(sources: &[crate::rules::ruleset::SourceFile]) -> String {
    sources
        .iter()
        .map(|s| format!("{}@{}", s.name, &s.sha256[..s.sha256.len().min(16)]))
        .collect::<Vec<_>>()
        .join(",")
}

/// What every handler shares.
pub struct Core {
    engine: Engine,
    bus: Arc<AlertBus>,
    metrics: IngestMetrics,
    config: ServiceConfig,
    reload: Mutex<ReloadStatus>,
    /// Serialises reloads: two reloads never interleave load and install.
    reload_serial: Mutex<()>,
    started_ns: i64,
    /// Cancelled when shutdown begins.
    shutdown: CancellationToken,
    /// Every ingest stream holds a receiver; shutdown waits for
    /// `closed()`, i.e. for all of them to be dropped.
    in_flight: watch::Sender<()>,
    /// Numbers ingest streams, to spread them over histogram shards.
    streams: AtomicUsize,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("config", &self.config)
            .field("bus", &self.bus)
            .finish_non_exhaustive()
    }
}

impl Core {
    /// A core running `ruleset` (as version 1) with the limits of `config`.
    pub fn new(config: ServiceConfig, ruleset: RuleSet) -> Self {
        let engine = Engine::new(
            EngineConfig {
                max_instruments: config.max_instruments,
            },
            ruleset,
        );
        let bus = Arc::new(AlertBus::new(
            BusConfig {
                subscriber_queue: config.subscriber_queue,
                ring_capacity: config.alert_ring,
            },
            Arc::new(SystemClock),
        ));
        let now = SystemClock.now_ns();
        Core {
            engine,
            bus,
            metrics: IngestMetrics::new(),
            config,
            reload: Mutex::new(ReloadStatus {
                last_ok_ns: now,
                ..ReloadStatus::default()
            }),
            reload_serial: Mutex::new(()),
            started_ns: now,
            shutdown: CancellationToken::new(),
            in_flight: watch::channel(()).0,
            streams: AtomicUsize::new(0),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn bus(&self) -> &Arc<AlertBus> {
        &self.bus
    }

    pub fn metrics(&self) -> &IngestMetrics {
        &self.metrics
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    pub fn started_ns(&self) -> i64 {
        self.started_ns
    }

    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Held by an ingest stream while it may evaluate ticks.
    pub fn in_flight_guard(&self) -> watch::Receiver<()> {
        self.in_flight.subscribe()
    }

    /// A new ingest stream's number.
    pub fn next_stream_index(&self) -> usize {
        self.streams.fetch_add(1, Ordering::Relaxed)
    }

    /// Reloads the rules folder: compiles it as a whole and installs it, or
    /// keeps the ruleset in force and returns every error. A folder whose
    /// files are byte for byte those of the ruleset in force is not
    /// installed again (no new version). Alerts that the swap raises
    /// (conditions of removed rules resolving) are published. Every
    /// outcome is logged as an audit record: trigger, version, and the
    /// name and SHA-256 of every file. Blocking: call from the blocking
    /// pool.
    ///
    /// # Errors
    /// Every problem in the folder; nothing changed.
    pub fn reload(&self, trigger: ReloadTrigger) -> Result<Arc<RuleSet>, Vec<RuleError>> {
        let _serial = self.reload_serial.lock().unwrap_or_else(PoisonError::into_inner);
        let dir = &self.config.rules;
        let now = SystemClock.now_ns();
        match load_dir(dir) {
            Ok(ruleset) => {
                let current = self.engine.ruleset();
                if current.sources == ruleset.sources {
                    let mut status = self.reload.lock().unwrap_or_else(PoisonError::into_inner);
                    status.last_errors.clear();
                    status.last_ok_ns = now;
                    status.outcomes.unchanged += 1;
                    info!(
                        audit = "reload",
                        outcome = "unchanged",
                        trigger = trigger.name(),
                        version = current.version,
                        files = %describe_sources(&current.sources),
                        "Rules reload found no change."
                    );
                    return Ok(current);
                }
                let mut sink = PublishSink::new(&self.bus, now);
                let installed = self.engine.install(ruleset, now, &mut sink);
                let mut status = self.reload.lock().unwrap_or_else(PoisonError::into_inner);
                status.last_errors.clear();
                status.last_ok_ns = now;
                status.outcomes.applied += 1;
                info!(
                    audit = "reload",
                    outcome = "applied",
                    trigger = trigger.name(),
                    version = installed.version,
                    previous_version = current.version,
                    rules = installed.len(),
                    files = %describe_sources(&installed.sources),
                    alerts = sink.published(),
                    "Rules reloaded."
                );
                Ok(installed)
            }
            Err(errors) => {
                let mut status = self.reload.lock().unwrap_or_else(PoisonError::into_inner);
                status.failures += 1;
                status.last_errors.clone_from(&errors);
                status.last_failed_ns = now;
                warn!(
                    audit = "reload",
                    outcome = "rejected",
                    trigger = trigger.name(),
                    dir = %dir.display(),
                    errors = errors.len(),
                    version = self.engine.ruleset().version,
                    files = %describe_sources(&crate::rules::load::source_files(dir)),
                    "Rules reload failed; the ruleset in force is kept."
                );
                for e in &errors {
                    warn!(error = %e, "Rule error.");
                }
                Err(errors)
            }
        }
    }

    pub fn reload_status(&self) -> ReloadStatus {
        self.reload.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Runs the engine's timers due at `now_ns` and publishes their alerts.
    pub fn run_timers(&self, now_ns: i64) {
        let mut sink = PublishSink::new(&self.bus, now_ns);
        self.engine.check_timers(now_ns, &mut sink);
    }

    /// The Prometheus exposition of everything the service counts.
    pub fn render_metrics(&self) -> String {
        let m = &self.metrics;
        let bus = self.bus.stats();
        let reload = self.reload_status();
        let mut e = Exposition::new();
        e.counter(
            "airbag_ticks_received_total",
            "Ticks received in batches that were evaluated.",
            m.ticks_received.load(Ordering::Relaxed),
        );
        e.counter(
            "airbag_ticks_applied_total",
            "Ticks applied to instrument state.",
            m.ticks_applied.load(Ordering::Relaxed),
        );
        let rejected = m.rejected();
        let labels: Vec<[(&str, &str); 1]> = REJECT_CODES.iter().map(|c| [("reason", *c)]).collect();
        e.counter_family(
            "airbag_ticks_rejected_total",
            "Ticks rejected, by reason.",
            labels.iter().zip(rejected).map(|(l, n)| (&l[..], n)),
        );
        e.counter(
            "airbag_batches_total",
            "Tick batches evaluated.",
            m.batches.load(Ordering::Relaxed),
        );
        let mut by_rule = bus.by_rule;
        by_rule.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        let rule_labels: Vec<[(&str, &str); 2]> = by_rule
            .iter()
            .map(|(rule, severity, _)| [("rule", &**rule), ("severity", severity.name())])
            .collect();
        e.counter_family(
            "airbag_alerts_total",
            "Alerts published, by rule and severity.",
            rule_labels.iter().zip(&by_rule).map(|(l, (_, _, n))| (&l[..], *n)),
        );
        e.counter(
            "airbag_alerts_published_total",
            "Alerts published (the last sequence number).",
            bus.published,
        );
        e.counter(
            "airbag_subscribers_lagged_total",
            "Subscribers disconnected because their queue was full.",
            bus.lagged,
        );
        e.gauge(
            "airbag_subscribers",
            "Open alert subscriptions.",
            bus.subscribers as f64,
        );
        e.gauge(
            "airbag_instruments",
            "Distinct instruments seen.",
            self.engine.instrument_count() as f64,
        );
        let ruleset = self.engine.ruleset();
        e.gauge(
            "airbag_ruleset_version",
            "Version of the ruleset in force.",
            ruleset.version as f64,
        );
        e.gauge("airbag_rules", "Rules in the ruleset in force.", ruleset.len() as f64);
        e.counter(
            "airbag_reload_failures_total",
            "Rule reloads that failed (the old ruleset was kept).",
            reload.failures,
        );
        e.gauge(
            "airbag_reload_last_failed",
            "1 if the last rule reload failed.",
            if reload.last_errors.is_empty() { 0.0 } else { 1.0 },
        );
        e.counter(
            "airbag_reloads_applied_total",
            "Rule reloads that installed a new ruleset.",
            reload.outcomes.applied,
        );
        e.counter(
            "airbag_reloads_unchanged_total",
            "Rule reloads that found the ruleset in force unchanged.",
            reload.outcomes.unchanged,
        );
        e.gauge(
            "airbag_reload_last_success_timestamp_seconds",
            "When a rule reload (or the start) last succeeded, Unix time.",
            reload.last_ok_ns as f64 / 1e9,
        );
        e.summary_seconds(
            "airbag_batch_evaluation_seconds",
            "Time to evaluate one batch of ticks.",
            &m.batch_eval.snapshot(),
        );
        e.summary_seconds(
            "airbag_tick_evaluation_seconds",
            "Evaluation time per tick (a batch's time over its ticks).",
            &m.tick_eval.snapshot(),
        );
        e.summary_seconds(
            "airbag_tick_to_alert_seconds",
            "From receiving the triggering tick to publishing its alert.",
            &bus.tick_to_alert,
        );
        e.finish()
    }
}

/// A service that is running.
pub struct Running {
    core: Arc<Core>,
    grpc_addr: SocketAddr,
    metrics_addr: SocketAddr,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    metrics: JoinHandle<()>,
    timers: JoinHandle<()>,
    /// Cancelled at the end of shutdown: stops the metrics endpoint.
    stopped: CancellationToken,
    /// Reloads on file changes while held; stopped when dropped.
    watcher: Option<RulesWatcher>,
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
/// `config.metrics_listen` are then ignored).
///
/// # Errors
/// Invalid configuration or rule errors.
pub async fn start_on(config: ServiceConfig, grpc: TcpListener, metrics: TcpListener) -> Result<Running, AppError> {
    config.validate()?;
    if let Some(dir) = &config.data_dir {
        std::fs::create_dir_all(dir).map_err(|source| AppError::DataDir {
            path: dir.clone(),
            source,
        })?;
    }
    let dir = config.rules.clone();
    let (baseline, loaded) = {
        let dir = dir.clone();
        // The fingerprint is taken before loading: a change made while the
        // rules load is then seen by the watcher and reloaded.
        tokio::task::spawn_blocking(move || (fingerprint(&dir), load_dir(&dir)))
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
    let core = Arc::new(Core::new(config, ruleset));

    let stopped = CancellationToken::new();
    let render_core = core.clone();
    let render: metrics::http::Render = Arc::new(move || render_core.render_metrics());
    let metrics = tokio::spawn(metrics::http::serve(metrics, render, stopped.clone()));
    info!(addr = %metrics_addr, "Metrics listening on /metrics.");

    let timers = tokio::spawn(run_timers(core.clone(), timer_every));
    #[cfg(unix)]
    tokio::spawn(reload_on_sighup(core.clone()));

    let watcher = if core.config().watch_rules {
        let watched = core.clone();
        let watcher = RulesWatcher::start(dir.clone(), WatchTiming::default(), baseline, move || {
            if !watched.is_shutting_down() {
                info!("Rules folder changed: reloading.");
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
    let grpc = tokio::spawn(crate::server::serve(core.clone(), grpc, shutdown));
    Ok(Running {
        core,
        grpc_addr,
        metrics_addr,
        grpc,
        metrics,
        timers,
        stopped,
        watcher,
    })
}

/// Runs timers every `every` until shutdown.
async fn run_timers(core: Arc<Core>, every: Duration) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let token = core.shutdown_token().clone();
    loop {
        tokio::select! {
            () = token.cancelled() => break,
            _ = ticker.tick() => core.run_timers(SystemClock.now_ns()),
        }
    }
}

/// Reloads the rules on SIGHUP, until shutdown.
#[cfg(unix)]
async fn reload_on_sighup(core: Arc<Core>) {
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
                info!("SIGHUP: reloading rules.");
                let core = core.clone();
                // The outcome is logged and kept for status.
                let _ = tokio::task::spawn_blocking(move || core.reload(ReloadTrigger::Signal)).await;
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
            timers,
            stopped,
            watcher,
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
        if timeout_at(deadline, core.in_flight.closed()).await.is_err() {
            warn!("Ingest streams still open at the end of the grace period.");
        }
        let _ = timers.await;

        // 2. Subscriber streams deliver what they have queued, then end.
        core.bus().close();
        info!(last_seq = core.bus().last_seq(), "Alert streams closing.");

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
        match &result {
            Ok(()) => info!("Stopped."),
            Err(e) => error!(error = %e, "Stopped with an error."),
        }
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
