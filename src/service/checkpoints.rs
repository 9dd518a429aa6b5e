//! Checkpoints in the service: with `data_dir` set, the newest valid
//! checkpoint in `<data_dir>/checkpoints/` is restored before the service
//! accepts anything; one is written every `checkpoint.interval_ms` and one
//! at shutdown, once ingest has drained. Snapshot, encoding and the write
//! run on the blocking pool, never on an ingest task.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::checkpoint::{CheckpointRounds, CheckpointStore, Checkpointer, StoreError, Written};

use super::{Core, ServiceError};

impl Core {
    /// The alert sequence number of the checkpoint restored at start, if
    /// one was: every alert up to it came from state that was restored.
    pub fn restored_alert_seq(&self) -> Option<u64> {
        self.restored_alert_seq
    }

    /// The checkpoint rounds, if checkpoints are on: a Kafka source commits
    /// its offsets only once a written checkpoint holds what it applied.
    pub fn checkpoint_rounds(&self) -> Option<&Arc<CheckpointRounds>> {
        self.checkpointer.as_ref().map(Checkpointer::rounds)
    }

    /// Writes a checkpoint now, if checkpoints are on (`data_dir` set).
    /// The alert sequence number is read before the snapshot begins
    /// ([`AlertBus::checkpoint_seq`](crate::alerts::AlertBus::checkpoint_seq));
    /// the file is written once every alert published by then is journaled.
    /// Blocking: call from the blocking pool.
    pub fn write_checkpoint(&self) -> Option<Result<Written, StoreError>> {
        let checkpointer = self.checkpointer.as_ref()?;
        let alert_seq = self.bus.checkpoint_seq();
        let bus = &self.bus;
        let result = checkpointer.write_settled(&self.engine, alert_seq, self.clock.now_ns(), || {
            bus.wait_durable_blocking(bus.last_seq());
        });
        match &result {
            Ok(written) => tracing::debug!(
                path = %written.path.display(),
                bytes = written.bytes,
                alert_seq,
                "Checkpoint written."
            ),
            Err(error) => warn!(%error, "Checkpoint failed; the previous ones are kept."),
        }
        Some(result)
    }
}

/// Opens the checkpoint folder of `data_dir` and restores the newest valid
/// checkpoint into `core`'s engine (which nothing has used yet). Without a
/// `data_dir`, returns `core` as it is.
///
/// # Errors
/// The checkpoint folder cannot be created or listed.
pub async fn open_and_restore(mut core: Core) -> Result<Core, ServiceError> {
    let Some(data_dir) = core.config.data_dir.clone() else {
        return Ok(core);
    };
    if core.config.kafka.source.iter().any(|s| s.state_topic.is_some()) {
        // The state of a shared source's partitions lives in its state
        // topic, written and read as they move ([`crate::kafka::group`]).
        info!("A Kafka source shares its partitions through a state topic: no local checkpoints.");
        return Ok(core);
    }
    let keep = core.config.checkpoint.keep;
    tokio::task::spawn_blocking(move || {
        let store = CheckpointStore::open(data_dir.join("checkpoints"), keep)?;
        let outcome = store.load_newest()?;
        match outcome.loaded {
            Some(loaded) => {
                let checkpoint = loaded.checkpoint;
                let alert_seq = checkpoint.alert_seq;
                let now_ns = core.clock.now_ns();
                let age_s = (now_ns - checkpoint.written_at_ns) as f64 / 1e9;
                let report = core.engine.restore(checkpoint.engine, now_ns)?;
                for skipped in &report.instruments_skipped {
                    warn!(symbol = %skipped.symbol, reason = %skipped.reason, "Instrument not restored.");
                }
                info!(
                    path = %loaded.path.display(),
                    bytes = loaded.bytes,
                    age_s,
                    alert_seq,
                    passed_over = outcome.rejected.len(),
                    instruments = report.instruments_restored,
                    instruments_skipped = report.instruments_skipped.len(),
                    ruleset_version = report.ruleset_version,
                    rule_states_restored = report.rule_states_restored,
                    rule_states_reset = report.rule_states_reset,
                    rule_states_new = report.rule_states_new,
                    rule_states_dropped = report.rule_states_dropped,
                    windows_restored = report.windows_restored,
                    windows_new = report.windows_new,
                    inconsistent = report.inconsistent,
                    "Checkpoint restored."
                );
                core.restored_alert_seq = Some(alert_seq);
                // A power loss may have taken journal records the
                // checkpoint counted: number on after both.
                match core.bus.continue_after(alert_seq) {
                    Ok(Some((lost_from, next))) => warn!(
                        lost_from,
                        lost_to = next - 1,
                        next_seq = next,
                        "The journal ends before the checkpoint's last alert (a tail lost before it was synced): \
                         numbering goes on after the checkpoint's, the lost alerts are reported to subscribers \
                         that replay across them."
                    ),
                    Ok(None) => {}
                    Err(error) => return Err(ServiceError::Journal(error)),
                }
            }
            None if outcome.rejected.is_empty() => {
                info!(dir = %store.dir().display(), "No checkpoint to restore: starting empty.");
            }
            None => warn!(
                dir = %store.dir().display(),
                unusable = outcome.rejected.len(),
                "No checkpoint could be restored: starting empty."
            ),
        }
        core.checkpointer = Some(Checkpointer::new(store));
        Ok(core)
    })
    .await
    .map_err(ServiceError::Task)?
}

/// Most journaled alerts recognised after a restart: beyond this many
/// alerts between the checkpoint and the crash, none are (and resent ticks
/// publish them again, under new numbers).
pub const MAX_RECOGNISED_ALERTS: u64 = 1_000_000;

/// After a restart: the alerts journaled after the restored checkpoint
/// (or, with no checkpoint, every journaled alert) are recognised when the
/// ticks resent since raise them again, and not published twice.
pub async fn recognise_replayed(core: &Arc<Core>) {
    if core.config.kafka.source.iter().any(|s| s.state_topic.is_some()) {
        // Alerts raised again after a take-over are recognised from the
        // alert topic instead ([`crate::kafka::group`]).
        return;
    }
    let bus = core.bus().clone();
    let Some((first, next)) = bus.journal_range() else {
        return;
    };
    let after = core.restored_alert_seq().unwrap_or(first.saturating_sub(1));
    let count = next.saturating_sub(after.saturating_add(1));
    if count == 0 {
        return;
    }
    if count > MAX_RECOGNISED_ALERTS {
        warn!(
            after_seq = after,
            count,
            limit = MAX_RECOGNISED_ALERTS,
            "Too many alerts journaled after the checkpoint to recognise: ticks resent since may publish them again."
        );
        return;
    }
    let reader = bus.clone();
    match tokio::task::spawn_blocking(move || reader.journal_tail(after)).await {
        Ok(Ok(tail)) => {
            let replayed = crate::alerts::replayed::ReplayedAlerts::new(tail.iter().map(|(seq, alert)| (*seq, alert)));
            info!(
                after_seq = after,
                alerts = replayed.remaining(),
                "Alerts journaled after the checkpoint will be recognised, not published again, when resent ticks raise them."
            );
            bus.recognise_replayed(replayed);
        }
        Ok(Err(error)) => warn!(
            after_seq = after,
            %error,
            "Cannot read the alerts journaled after the checkpoint: ticks resent since may publish them again."
        ),
        Err(error) => warn!(%error, "Reading the journal tail failed."),
    }
}

/// Writes a checkpoint every `checkpoint.interval_ms` until shutdown. A
/// checkpoint that takes long spaces the next one out: the pause after one
/// is at least four times as long as it took, so checkpoints never take
/// more than a fifth of a core from ingest, whatever the interval.
pub async fn run_periodic(core: Arc<Core>) {
    if core.checkpointer.is_none() {
        return;
    }
    let every = Duration::from_millis(core.config.checkpoint.interval_ms);
    let token = core.shutdown_token().clone();
    let mut wait = every;
    loop {
        tokio::select! {
            () = token.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
        let started = Instant::now();
        let writer = core.clone();
        let _ = tokio::task::spawn_blocking(move || writer.write_checkpoint()).await;
        let took = started.elapsed();
        wait = every.saturating_sub(took).max(took * 4);
    }
}

/// The checkpoint written at shutdown, after ingest and timers stopped.
pub async fn write_final(core: &Arc<Core>) {
    let core = core.clone();
    let written = tokio::task::spawn_blocking(move || core.write_checkpoint()).await;
    if let Ok(Some(Ok(written))) = written {
        info!(
            path = %written.path.display(),
            bytes = written.bytes,
            "Checkpoint written at shutdown."
        );
    }
}
