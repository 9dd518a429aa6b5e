//! `fdatasync`: timing and counting it, and the background thread of the
//! interval policy.

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

/// `fdatasync` latency and failures, shared with the sync thread.
#[derive(Debug)]
pub(super) struct SyncMetrics {
    latency: Mutex<Latency>,
    pub(super) errors: AtomicU64,
}

impl SyncMetrics {
    pub(super) fn new() -> Self {
        SyncMetrics {
            latency: Mutex::new(Latency::new(FSYNC_MAX_NS, 2)),
            errors: AtomicU64::new(0),
        }
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
    pub(super) fn sync(&self, file: &File, path: &Path) {
        let started = Instant::now();
        match file.sync_data() {
            Ok(()) => self.record(started.elapsed()),
            Err(error) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    file = %path.display(),
                    %error,
                    "Journal: fdatasync failed; records written since the last sync may not survive a power loss."
                );
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

    pub(super) fn mark_dirty(&self) {
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
            let (file, path) = shared.active.lock().clone();
            // Not under the stop lock: `stop` must not wait for a slow sync
            // to take the lock, only to join.
            parking_lot::MutexGuard::unlocked(&mut stop, || shared.metrics.sync(&file, &path));
        }
    }
}
