//! Checkpoints: the engine's state on disk, so a restart resumes where the
//! service stopped.
//!
//! A [`Checkpoint`] is an [`EngineSnapshot`] (every instrument's windows,
//! sequence numbers and rule states; the ruleset's version and rule
//! hashes) with the alert sequence number read just before the snapshot
//! began. [`Checkpointer::write`] takes one and writes it atomically;
//! on start, [`CheckpointStore::load_newest`] finds the newest file that
//! reads back whole, passing over (and reporting) corrupt ones.
//!
//! - [`format`]: the file layout: header (magic, format version, body
//!   length, SHA-256), postcard body.
//! - [`store`]: the folder: atomic writes, the newest `keep` kept, loading.
//!
//! The snapshot holds each instrument's lock only while it clones that
//! instrument; encoding and I/O happen after, off the ingest path.

pub mod format;
pub mod store;

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::engine::{Engine, EngineSnapshot};
use crate::metrics::Exposition;

pub use format::{FormatError, FORMAT_VERSION};
pub use store::{CheckpointStore, LoadOutcome, Loaded, ReadError, Rejected, StoreError, Written};

/// Everything a restart resumes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The alert bus's last sequence number, read before the snapshot
    /// began: every alert up to it came from state the snapshot includes.
    pub alert_seq: u64,
    /// When it was taken, Unix time in ns.
    pub written_at_ns: i64,
    pub engine: EngineSnapshot,
}

/// Checkpoint rounds: which have begun their snapshot and which are on
/// disk. A reader of an outside log (a Kafka source) uses them to commit
/// its position only once a checkpoint holds the state it applied: work
/// finished before [`CheckpointRounds::begun`] returned `n` is in round
/// `n + 1` and every later one.
#[derive(Debug)]
pub struct CheckpointRounds {
    begun: AtomicU64,
    written: tokio::sync::watch::Sender<u64>,
}

impl CheckpointRounds {
    fn new() -> Self {
        CheckpointRounds {
            begun: AtomicU64::new(0),
            written: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Rounds begun so far (the snapshot of the last one may be under way).
    pub fn begun(&self) -> u64 {
        self.begun.load(Ordering::SeqCst)
    }

    /// The newest round written, as it changes.
    pub fn written(&self) -> tokio::sync::watch::Receiver<u64> {
        self.written.subscribe()
    }

    /// Called before a snapshot starts: the round it is.
    fn begin(&self) -> u64 {
        self.begun.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn finished(&self, round: u64) {
        self.written.send_if_modified(|newest| {
            let newer = round > *newest;
            if newer {
                *newest = round;
            }
            newer
        });
    }
}

/// Takes checkpoints of an engine into a store and counts how that goes.
#[derive(Debug)]
pub struct Checkpointer {
    store: CheckpointStore,
    rounds: Arc<CheckpointRounds>,
    written: AtomicU64,
    failed: AtomicU64,
    last_duration_ns: AtomicU64,
    last_snapshot_ns: AtomicU64,
    last_bytes: AtomicU64,
    last_ok_ns: AtomicI64,
}

impl Checkpointer {
    pub fn new(store: CheckpointStore) -> Self {
        Checkpointer {
            store,
            rounds: Arc::new(CheckpointRounds::new()),
            written: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            last_duration_ns: AtomicU64::new(0),
            last_snapshot_ns: AtomicU64::new(0),
            last_bytes: AtomicU64::new(0),
            last_ok_ns: AtomicI64::new(0),
        }
    }

    pub fn store(&self) -> &CheckpointStore {
        &self.store
    }

    /// The rounds of this checkpointer, for readers of outside logs.
    pub fn rounds(&self) -> &Arc<CheckpointRounds> {
        &self.rounds
    }

    /// Snapshots `engine` and writes it with `alert_seq` (read by the
    /// caller before this call) as taken at `now_ns`. Blocking: call from
    /// the blocking pool.
    ///
    /// # Errors
    /// The write failed; earlier checkpoints are untouched.
    pub fn write(&self, engine: &Engine, alert_seq: u64, now_ns: i64) -> Result<Written, StoreError> {
        self.write_settled(engine, alert_seq, now_ns, || {})
    }

    /// As [`Checkpointer::write`], running `settle` between the snapshot
    /// and the write: the alert bus waits there until every alert the
    /// snapshot's state raised is journaled, so a checkpoint on disk never
    /// holds state whose alerts a crash could lose.
    ///
    /// # Errors
    /// As [`Checkpointer::write`].
    pub fn write_settled(
        &self,
        engine: &Engine,
        alert_seq: u64,
        now_ns: i64,
        settle: impl FnOnce(),
    ) -> Result<Written, StoreError> {
        let started = Instant::now();
        let round = self.rounds.begin();
        let snapshot = engine.snapshot();
        self.last_snapshot_ns
            .store(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        settle();
        let checkpoint = Checkpoint {
            alert_seq,
            written_at_ns: now_ns,
            engine: snapshot,
        };
        let result = self.store.write(&checkpoint);
        self.last_duration_ns
            .store(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        match &result {
            Ok(written) => {
                self.rounds.finished(round);
                self.written.fetch_add(1, Ordering::Relaxed);
                self.last_bytes.store(written.bytes as u64, Ordering::Relaxed);
                self.last_ok_ns.store(now_ns, Ordering::Relaxed);
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    /// Checkpoints written and failed so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.written.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    /// Adds the checkpoint metrics to a Prometheus page.
    pub fn render(&self, e: &mut Exposition) {
        let (written, failed) = self.counts();
        e.counter("airbag_checkpoints_written_total", "Checkpoints written.", written);
        e.counter(
            "airbag_checkpoints_failed_total",
            "Checkpoints that could not be written.",
            failed,
        );
        let ratio = if written + failed == 0 {
            1.0
        } else {
            written as f64 / (written + failed) as f64
        };
        e.gauge(
            "airbag_checkpoint_success_ratio",
            "Checkpoints written over checkpoints attempted (1 before the first).",
            ratio,
        );
        e.gauge(
            "airbag_checkpoint_last_duration_seconds",
            "Time the last checkpoint took: snapshot, encoding and durable write.",
            self.last_duration_ns.load(Ordering::Relaxed) as f64 / 1e9,
        );
        e.gauge(
            "airbag_checkpoint_last_snapshot_seconds",
            "Time the last checkpoint spent copying instrument states (each locked only for its own copy).",
            self.last_snapshot_ns.load(Ordering::Relaxed) as f64 / 1e9,
        );
        e.gauge(
            "airbag_checkpoint_last_bytes",
            "Size of the last checkpoint written, in bytes.",
            self.last_bytes.load(Ordering::Relaxed) as f64,
        );
        e.gauge(
            "airbag_checkpoint_last_success_timestamp_seconds",
            "When the last checkpoint was written, Unix time; 0 before the first.",
            self.last_ok_ns.load(Ordering::Relaxed) as f64 / 1e9,
        );
    }
}

#[cfg(test)]
mod tests;
