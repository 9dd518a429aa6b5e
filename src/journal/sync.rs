//! `fdatasync`: timing and counting it, the watermark of what it covered
//! (the newest record known to be on stable storage), and the background
//! thread of the interval policy.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::JournalError;
use crate::metrics::Latency;

/// Largest `fdatasync` time recorded exactly: 10 s.
const FSYNC_MAX_NS: u64 = 10_000_000_000;

/// `fdatasync` latency and failures, and the synced watermark; shared with
/// the sync thread and with whoever watches the watermark
/// ([`super::SyncedSeq`]).
#[derive(Debug)]
pub(super) struct SyncMetrics {
    latency: Mutex<Latency>,
    pub(super) errors: AtomicU64,
    /// Every record up to this sequence number was written before an
    /// `fdatasync` that returned without error (0: none since open).
    synced_seq: AtomicU64,
    /// Tests: holds every sync in flight until let go.
    #[cfg(test)]
    pub(crate) gate: gate::Gate,
}

impl SyncMetrics {
    pub(super) fn new() -> Self {
        SyncMetrics {
            latency: Mutex::new(Latency::new(FSYNC_MAX_NS, 2)),
            errors: AtomicU64::new(0),
            synced_seq: AtomicU64::new(0),
            #[cfg(test)]
            gate: gate::Gate::default(),
        }
    }

    /// Records up to `seq` are on stable storage.
    pub(super) fn mark_synced(&self, seq: u64) {
        self.synced_seq.fetch_max(seq, Ordering::AcqRel);
    }

    pub(super) fn synced_seq(&self) -> u64 {
        self.synced_seq.load(Ordering::Acquire)
    }

    pub(super) fn record(&self, took: Duration) {
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.latency.lock().record(ns);
    }

    pub(super) fn latency(&self) -> Latency {
        self.latency.lock().clone()
    }

    /// `fdatasync` on `file`, timed; a failure is logged and counted (the
    /// data was written; whether it is on stable storage is unknown).
    /// Returns whether it succeeded.
    pub(super) fn sync(&self, file: &File, path: &Path) -> bool {
        let started = Instant::now();
        let synced = file.sync_data();
        #[cfg(test)]
        self.gate.pass();
        match synced {
            Ok(()) => {
                self.record(started.elapsed());
                true
            }
            Err(error) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    file = %path.display(),
                    %error,
                    "Journal: fdatasync failed; records written since the last sync may not survive a power loss."
                );
                false
            }
        }
    }
}

/// What the sync thread and the writer share.
struct Shared {
    /// The segment being written.
    active: Mutex<(Arc<File>, PathBuf)>,
    /// Something was appended since the last sync.
    dirty: AtomicBool,
    /// The newest record written (for the synced watermark).
    written_seq: AtomicU64,
    stop: Mutex<bool>,
    wake: Condvar,
    metrics: Arc<SyncMetrics>,
}

/// The background sync of [`super::FsyncPolicy::Interval`].
pub(super) struct Syncer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Syncer {
    pub(super) fn start(
        every: Duration,
        active: Arc<File>,
        path: PathBuf,
        metrics: Arc<SyncMetrics>,
    ) -> Result<Syncer, JournalError> {
        let shared = Arc::new(Shared {
            active: Mutex::new((active, path.clone())),
            dirty: AtomicBool::new(false),
            written_seq: AtomicU64::new(0),
            stop: Mutex::new(false),
            wake: Condvar::new(),
            metrics,
        });
        let run = shared.clone();
        let thread = std::thread::Builder::new()
            .name("airbag-journal-sync".into())
            .spawn(move || run_syncer(&run, every))
            .map_err(|source| JournalError::Io {
                path,
                op: "start the sync thread for",
                source,
            })?;
        Ok(Syncer {
            shared,
            thread: Some(thread),
        })
    }

    /// Records up to `last_seq` were written.
    pub(super) fn mark_dirty(&self, last_seq: u64) {
        self.shared.written_seq.fetch_max(last_seq, Ordering::AcqRel);
        self.shared.dirty.store(true, Ordering::Release);
    }

    /// The writer moved on to a new segment (the old one was synced).
    pub(super) fn switch(&self, file: Arc<File>, path: PathBuf) {
        *self.shared.active.lock() = (file, path);
    }

    /// Stops the thread and waits for it.
    pub(super) fn stop(mut self) {
        *self.shared.stop.lock() = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run_syncer(shared: &Shared, every: Duration) {
    let mut stop = shared.stop.lock();
    loop {
        if *stop {
            return;
        }
        shared.wake.wait_for(&mut stop, every);
        if *stop {
            return;
        }
        if shared.dirty.swap(false, Ordering::AcqRel) {
            // Read before the sync: every record up to it was written
            // before the sync began (to this file, or to one closed since
            // and synced as it closed).
            let written = shared.written_seq.load(Ordering::Acquire);
            let (file, path) = shared.active.lock().clone();
            // Not under the stop lock: `stop` must not wait for a slow sync
            // to take the lock, only to join.
            parking_lot::MutexGuard::unlocked(&mut stop, || {
                if shared.metrics.sync(&file, &path) {
                    shared.metrics.mark_synced(written);
                }
            });
        }
    }
}

/// Tests: a gate every `fdatasync` passes once it has returned, so a test
/// can hold a sync in flight and look at what readers see meanwhile.
#[cfg(test)]
pub(crate) mod gate {
    use parking_lot::{Condvar, Mutex};

    #[derive(Debug, Default)]
    pub(crate) struct Gate {
        /// (closed, syncs waiting at the gate)
        state: Mutex<(bool, usize)>,
        changed: Condvar,
    }

    impl Gate {
        pub(crate) fn close(&self) {
            self.state.lock().0 = true;
        }

        pub(crate) fn open(&self) {
            self.state.lock().0 = false;
            self.changed.notify_all();
        }

        /// Waits until a sync is held at the gate (at most `within`);
        /// returns whether one is.
        pub(crate) fn wait_for_held(&self, within: std::time::Duration) -> bool {
            let deadline = std::time::Instant::now() + within;
            let mut state = self.state.lock();
            while state.1 == 0 {
                if self.changed.wait_until(&mut state, deadline).timed_out() {
                    return state.1 > 0;
                }
            }
            true
        }

        pub(super) fn pass(&self) {
            let mut state = self.state.lock();
            if state.0 {
                state.1 += 1;
                self.changed.notify_all();
                while state.0 {
                    self.changed.wait(&mut state);
                }
                state.1 -= 1;
            }
        }
    }
}
