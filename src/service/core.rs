//! [`Core`]: the state every transport and task shares, and the
//! Prometheus page that reports it.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::alerts::{AlertBus, BusConfig, BusJournalStats, JournalHealth, PublishSink};
use crate::checkpoint::Checkpointer;
use crate::clock::Clock;
use crate::config::ServiceConfig;
use crate::engine::{Engine, EngineConfig};
use crate::ingest::RejectCode;
use crate::metrics::{Exposition, IngestMetrics, Refusals};
use crate::rules::RuleSet;

use super::reload::ReloadStatus;

/// What every transport and task shares.
pub struct Core {
    pub(super) engine: Engine,
    /// The service's time: receive times, timers, reload and checkpoint
    /// stamps.
    pub(super) clock: Arc<dyn Clock>,
    pub(super) bus: Arc<AlertBus>,
    pub(super) metrics: IngestMetrics,
    pub(super) config: ServiceConfig,
    pub(super) reload: Mutex<ReloadStatus>,
    /// Serialises reloads: two reloads never interleave load and install.
    pub(super) reload_serial: Mutex<()>,
    pub(super) started_ns: i64,
    /// Cancelled when shutdown begins.
    pub(super) shutdown: CancellationToken,
    /// Every ingest stream holds a receiver; shutdown waits for
    /// `closed()`, i.e. for all of them to be dropped.
    pub(super) in_flight: watch::Sender<()>,
    /// Numbers ingest streams, to spread them over histogram shards.
    pub(super) streams: AtomicUsize,
    /// Writes checkpoints; `None` without a `data_dir`.
    pub(super) checkpointer: Option<Checkpointer>,
    /// The alert sequence number of the checkpoint restored at start.
    pub(super) restored_alert_seq: Option<u64>,
    /// Instruments reset by an operator ([`Core::reset_instrument`]).
    pub(super) instrument_resets: AtomicU64,
    /// Requests and connections the transports refused, by reason.
    pub(super) refusals: Arc<Refusals>,
    /// The partitions shared with other instances, when a Kafka source
    /// shares them.
    pub(super) shared: std::sync::OnceLock<Arc<dyn super::shared::SharedPartitions>>,
}

/// What resetting an instrument did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstrumentReset {
    pub report: crate::engine::PartitionReset,
    /// The last alert the reset published (the `resolved` alerts of what
    /// the rules had open), 0 for none.
    pub last_alert_seq: u64,
}

/// Why an instrument could not be reset.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResetError {
    #[error("instrument `{0}` has never been seen by this server")]
    Unknown(String),
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
    /// A core running `ruleset` (as version 1) with the limits of `config`,
    /// on `clock`, and an alert bus without a journal.
    pub fn new(config: ServiceConfig, ruleset: RuleSet, clock: Arc<dyn Clock>) -> Self {
        let bus = AlertBus::new(Self::bus_config(&config), clock.clone());
        Self::with_bus(config, ruleset, Arc::new(bus), clock)
    }

    /// The bus sizes `config` asks for.
    pub fn bus_config(config: &ServiceConfig) -> BusConfig {
        BusConfig {
            subscriber_queue: config.subscriber_queue,
            ring_capacity: config.alert_ring,
        }
    }

    /// A core publishing to `bus` (built with [`Core::bus_config`] on the
    /// same clock, and a journal when `config.data_dir` is set).
    pub fn with_bus(config: ServiceConfig, ruleset: RuleSet, bus: Arc<AlertBus>, clock: Arc<dyn Clock>) -> Self {
        let engine = Engine::new(
            EngineConfig {
                max_instruments: config.max_instruments,
                allowed_lateness_ns: i64::try_from(config.allowed_lateness_ms)
                    .unwrap_or(i64::MAX / 1_000_000)
                    .saturating_mul(1_000_000),
            },
            ruleset,
        );
        let now = clock.now_ns();
        Core {
            engine,
            clock,
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
            checkpointer: None,
            restored_alert_seq: None,
            instrument_resets: AtomicU64::new(0),
            refusals: Arc::new(Refusals::default()),
            shared: std::sync::OnceLock::new(),
        }
    }

    /// Where the transports count what they refuse.
    pub fn refusals(&self) -> &Arc<Refusals> {
        &self.refusals
    }

    /// Resets the instrument `symbol` ([`crate::engine::Partition::reset`])
    /// at the service clock's time: its event time, windows and rule states
    /// start afresh, its sequence numbers are kept; what its rules had open
    /// is closed with `resolved` alerts. Logged and counted.
    ///
    /// # Errors
    /// The instrument was never seen.
    pub fn reset_instrument(&self, symbol: &str) -> Result<InstrumentReset, ResetError> {
        let now = self.clock.now_ns();
        let mut sink = PublishSink::new(&self.bus, now);
        let report = self
            .engine
            .reset_instrument(symbol, now, &mut sink)
            .ok_or_else(|| ResetError::Unknown(symbol.to_string()))?;
        self.instrument_resets.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            audit = "reset_instrument",
            instrument = symbol,
            previous_event_time_ns = report.previous_event_ns,
            server_time_ns = now,
            last_seq = report.last_seq,
            rules_closed = report.rules_closed,
            held_dropped = report.held_dropped,
            "Instrument reset: its event time, windows and rule states start afresh."
        );
        Ok(InstrumentReset {
            report,
            last_alert_seq: sink.last_seq(),
        })
    }

    /// Registers what reports the partitions shared with other instances
    /// (once; a second is ignored).
    pub fn set_shared(&self, shared: Arc<dyn super::shared::SharedPartitions>) {
        let _ = self.shared.set(shared);
    }

    /// The partitions shared with other instances, if a source shares them.
    pub fn shared_status(&self) -> Option<super::shared::SharedStatus> {
        self.shared.get().map(|s| s.status())
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The service's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
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

    /// Completes once every ingest session has let go of its guard (see
    /// [`Core::in_flight_guard`]): after shutdown began, no tick is
    /// evaluated any more.
    ///
    /// Cancellation-safe.
    pub async fn ingest_stopped(&self) {
        self.in_flight.closed().await;
    }

    /// A new ingest stream's number.
    pub fn next_stream_index(&self) -> usize {
        self.streams.fetch_add(1, Ordering::Relaxed)
    }

    pub fn reload_status(&self) -> ReloadStatus {
        self.reload.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Applies the ticks the engine holds for event-time order and
    /// publishes their alerts: when ingest has stopped.
    pub fn flush_held(&self) {
        let mut sink = PublishSink::new(&self.bus, self.clock.now_ns());
        self.engine.flush_held(&mut sink);
    }

    /// Runs the engine's timers due now by the service clock and publishes
    /// their alerts.
    pub fn run_timers(&self) {
        let now_ns = self.clock.now_ns();
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
        let labels: Vec<[(&str, &str); 1]> = RejectCode::ALL.iter().map(|c| [("reason", c.as_str())]).collect();
        e.counter_family(
            "airbag_ticks_rejected_total",
            "Ticks rejected, by reason.",
            labels.iter().zip(rejected.0).map(|(l, n)| (&l[..], n)),
        );
        let refused: Vec<([(&str, &str); 1], u64)> = self
            .refusals
            .all()
            .map(|(reason, n)| ([("reason", reason)], n))
            .collect();
        e.counter_family(
            "airbag_requests_refused_total",
            "Requests and connections refused (or streams ended) before a service took them, by reason.",
            refused.iter().map(|(l, n)| (&l[..], *n)),
        );
        e.counter(
            "airbag_instrument_resets_total",
            "Instruments reset by an operator (RuleAdmin.ResetInstrument).",
            self.instrument_resets.load(Ordering::Relaxed),
        );
        let sequence = self.engine.sequence_stats();
        e.counter(
            "airbag_ticks_sequence_gaps_total",
            "Applied ticks whose sequence number skipped past the next one.",
            sequence.gaps,
        );
        e.counter(
            "airbag_ticks_sequence_missing_total",
            "Sequence numbers skipped, over all gaps.",
            sequence.missing,
        );
        e.counter(
            "airbag_ticks_reordered_total",
            "Ticks that arrived behind their instrument's newest, within the allowed lateness, and were applied in their place.",
            sequence.reordered,
        );
        let p = self.engine.pattern_counts();
        let outcomes = [
            ("started", p.started),
            ("superseded", p.superseded),
            ("dropped", p.dropped),
            ("expired", p.expired),
            ("cancelled", p.cancelled),
            ("matched", p.matched),
            ("suppressed", p.suppressed),
        ];
        let outcome_labels: Vec<[(&str, &str); 1]> = outcomes.iter().map(|(o, _)| [("outcome", *o)]).collect();
        e.counter_family(
            "airbag_pattern_partials_total",
            "What pattern rules did with partial matches, summed over the instruments' states in force (a changed rule starts its own from zero): started, superseded (same future, kept one), dropped (max_partials reached), expired (within ran out), cancelled (absence ended by its event), matched, suppressed (cooldown).",
            outcome_labels.iter().zip(&outcomes).map(|(l, (_, n))| (&l[..], *n)),
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
        let (recognised, expected) = self.bus.replayed_counts();
        e.counter(
            "airbag_alerts_recognised_after_restart_total",
            "Alerts raised again by ticks resent after a restart, recognised as published before it and not published twice.",
            recognised,
        );
        e.gauge(
            "airbag_alerts_awaiting_recognition",
            "Alerts journaled after the restored checkpoint not raised again yet.",
            expected as f64,
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
        if let Some(journal) = self.bus.journal_stats() {
            render_journal(&mut e, &journal);
        }
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
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.render(&mut e);
        }
        if let Some(shared) = self.shared_status() {
            render_shared(&shared, &mut e);
        }
        e.finish()
    }
}

/// The alert journal's metrics.
fn render_journal(e: &mut Exposition, j: &BusJournalStats) {
    let s = &j.journal;
    e.gauge(
        "airbag_journal_bytes",
        "Bytes of the alert journal's segment files.",
        s.bytes as f64,
    );
    e.gauge(
        "airbag_journal_segments",
        "Segment files of the alert journal.",
        s.segments as f64,
    );
    e.gauge(
        "airbag_journal_first_seq",
        "Oldest alert kept in the journal (the next one when it holds none).",
        s.first_seq as f64,
    );
    e.counter(
        "airbag_journal_appends_total",
        "Alerts appended to the journal since start.",
        s.appends,
    );
    e.counter_family(
        "airbag_journal_errors_total",
        "Journal failures by operation: a write (the alert was still delivered, from memory) or an fdatasync.",
        [
            (&[("op", "write")][..], j.write_failures),
            (&[("op", "fsync")][..], s.sync_errors),
        ],
    );
    e.gauge(
        "airbag_journal_healthy",
        "1 while every published alert is journaled; 0 while writes fail or after the journal stopped.",
        if j.health == JournalHealth::Healthy { 1.0 } else { 0.0 },
    );
    e.gauge(
        "airbag_journal_unjournaled_alerts",
        "Alerts published but not in the journal.",
        j.unjournaled as f64,
    );
    e.gauge(
        "airbag_journal_pending_alerts",
        "Alerts published and on their way to the journal: not written (with fsync = always, not synced) yet, so not yet delivered.",
        j.pending as f64,
    );
    e.counter(
        "airbag_journal_publish_waits_total",
        "Publishes that waited for the journal writer because the alert ring was full of alerts not yet journaled.",
        j.publish_waits,
    );
    e.counter(
        "airbag_journal_repairs_total",
        "Torn or corrupt journal tails cut at start.",
        s.repairs,
    );
    e.counter(
        "airbag_journal_repaired_bytes_total",
        "Bytes cut from the journal at start.",
        s.repaired_bytes,
    );
    e.counter(
        "airbag_journal_segments_removed_total",
        "Journal segments removed by retention since start.",
        s.segments_removed,
    );
    e.summary_seconds(
        "airbag_journal_fsync_seconds",
        "fdatasync of the alert journal.",
        &s.fsync,
    );
}

/// The metrics of the partitions shared with other instances.
fn render_shared(shared: &super::shared::SharedStatus, e: &mut Exposition) {
    e.gauge(
        "airbag_kafka_owned_partitions",
        "Tick partitions this instance owns in its consumer group.",
        shared.partitions.len() as f64,
    );
    e.gauge(
        "airbag_kafka_owned_instruments",
        "Instruments of the owned partitions whose state this instance holds.",
        shared.partitions.iter().map(|p| p.instruments).sum::<u64>() as f64,
    );
    let names: Vec<(String, String)> = shared
        .partitions
        .iter()
        .map(|p| (p.topic.clone(), p.partition.to_string()))
        .collect();
    let labels: Vec<[(&str, &str); 2]> = names
        .iter()
        .map(|(t, p)| [("topic", t.as_str()), ("partition", p.as_str())])
        .collect();
    e.gauge_family(
        "airbag_kafka_partition_lag_messages",
        "Messages behind the end of each owned partition, by the client's latest fetch (-1: not known yet).",
        labels
            .iter()
            .zip(&shared.partitions)
            .map(|(l, p)| (&l[..], p.lag as f64)),
    );
    e.counter(
        "airbag_kafka_rebalances_total",
        "Rebalance callbacks run: partitions revoked (state written) or assigned (state restored).",
        shared.rebalances,
    );
    e.gauge(
        "airbag_kafka_last_rebalance_seconds",
        "How long the last rebalance callback took.",
        shared.last_rebalance_ns as f64 / 1e9,
    );
    e.counter(
        "airbag_kafka_state_records_written_total",
        "Partition state records written to the state topic.",
        shared.states_written,
    );
    e.counter(
        "airbag_kafka_state_record_failures_total",
        "Partition state records that could not be written (their offsets are not committed).",
        shared.state_write_failures,
    );
    e.gauge(
        "airbag_kafka_state_record_last_bytes",
        "Size of the last partition state record written.",
        shared.last_state_bytes as f64,
    );
    e.counter(
        "airbag_kafka_state_restores_total",
        "Assignments whose partitions' state was read and restored.",
        shared.restores,
    );
    e.gauge(
        "airbag_kafka_state_restore_last_seconds",
        "How long the last restore took (state topic read, state restored, alert topic read).",
        shared.last_restore_ns as f64 / 1e9,
    );
    e.gauge(
        "airbag_kafka_state_restore_last_bytes",
        "Size of the last partition state record restored.",
        shared.last_restore_bytes as f64,
    );
    e.counter(
        "airbag_kafka_handed_over_alerts_dropped_total",
        "Alerts raised again after a take-over and dropped: the previous owner had published them.",
        shared.handed_over_dropped,
    );
}
