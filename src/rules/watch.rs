//! Watching the rules folder: tells when its `*.toml` files changed, however
//! they were written.
//!
//! Editors and deploy tools change files in many ways: writing in place,
//! writing a temporary file and renaming it over the old one, deleting and
//! re-creating, or (a Kubernetes ConfigMap) swapping a `..data` symlink so
//! every file changes at once; the folder itself may be a symlink that is
//! re-pointed. So events are only a hint. After the first event the watcher
//! waits until the folder has been quiet for the debounce time (bounded, so
//! a steady stream of writes cannot starve a reload), then compares a
//! fingerprint of the rule files' names and contents with the last one and
//! reports a change only if it differs. It also checks the fingerprint on a
//! slow poll and re-arms its watches after every change, in case an inode
//! swap left a watch on a file that no longer exists.
//!
//! Only events that can change the rules count: reading the files (as the
//! watcher and a reload do) raises access events, and the parent folder
//! sees everything written next to the rules folder; neither starts a read,
//! so a quiet folder is read once per poll.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use sha2::{Digest, Sha256};
use tracing::{debug, warn};

/// How the watcher waits.
#[derive(Debug, Clone, Copy)]
pub struct WatchTiming {
    /// Quiet time after the last event before the folder is read.
    pub debounce: Duration,
    /// The longest the watcher waits for quiet once a change is seen.
    pub max_delay: Duration,
    /// How often the folder is checked without any event.
    pub poll: Duration,
}

impl Default for WatchTiming {
    fn default() -> Self {
        WatchTiming {
            debounce: Duration::from_millis(20),
            max_delay: Duration::from_millis(60),
            poll: Duration::from_secs(1),
        }
    }
}

/// A fingerprint of the rule files in `dir`: the same files with the same
/// contents give the same value. `None` when the folder cannot be read (for
/// example in the middle of a swap).
pub fn fingerprint(dir: &Path) -> Option<[u8; 32]> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && n.ends_with(".toml"))
        .collect();
    names.sort();
    let mut hasher = Sha256::new();
    for name in names {
        let path = dir.join(&name);
        if !path.is_file() {
            continue;
        }
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(std::fs::read(&path).ok()?);
        hasher.update([0]);
    }
    Some(hasher.finalize().into())
}

/// A running watcher; stops when dropped.
pub struct RulesWatcher {
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl RulesWatcher {
    /// Watches `dir` and calls `on_change` (on the watcher's own thread)
    /// each time its rule files' contents differ from the last seen, the
    /// first time from `baseline` (the [`fingerprint`] of what the caller
    /// loaded, taken before loading).
    ///
    /// # Errors
    /// The watcher thread could not be started.
    pub fn start(
        dir: PathBuf,
        timing: WatchTiming,
        baseline: Option<[u8; 32]>,
        on_change: impl FnMut() + Send + 'static,
    ) -> std::io::Result<RulesWatcher> {
        // Absolute, so that its parent is watched and event paths (which
        // start with the watched path) compare with it however it was
        // spelled; not canonical, so a symlinked folder stays the link.
        let dir = std::path::absolute(&dir)?;
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let (thread_stop, thread_reads) = (stop.clone(), reads.clone());
        let thread = std::thread::Builder::new()
            .name("rules-watch".into())
            .spawn(move || run(&dir, timing, baseline, &thread_stop, &thread_reads, on_change))?;
        Ok(RulesWatcher {
            stop,
            reads,
            thread: Some(thread),
        })
    }

    /// How many times the folder has been read for its fingerprint: once
    /// at start, once per poll, once per burst of relevant events.
    pub fn folder_reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }
}

/// Whether `event` can change the rule files of `dir`: not a mere read,
/// and about the folder or something in it (the parent's watch also sees
/// its other entries). An event that says events were lost (an overflowed
/// queue: a rescan, without paths) may hide a change, so it counts.
fn may_change_rules(event: &Event, dir: &Path) -> bool {
    if event.need_rescan() {
        return true;
    }
    !matches!(event.kind, EventKind::Access(_))
        && (event.paths.is_empty() || event.paths.iter().any(|p| p.starts_with(dir)))
}

impl Drop for RulesWatcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Watches `dir` and its parent (which sees the folder itself being
/// replaced or re-pointed).
fn arm(tx: &mpsc::Sender<()>, dir: &Path) -> Option<RecommendedWatcher> {
    let tx = tx.clone();
    let watched = dir.to_path_buf();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
        // An error may hide a change.
        if event.map_or(true, |e| may_change_rules(&e, &watched)) {
            let _ = tx.send(());
        }
    })
    .map_err(|e| warn!(error = %e, "Cannot watch the rules folder; polling it instead."))
    .ok()?;
    if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
        debug!(error = %e, dir = %dir.display(), "Cannot watch the rules folder now.");
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        let _ = watcher.watch(parent, RecursiveMode::NonRecursive);
    }
    Some(watcher)
}

fn run(
    dir: &Path,
    timing: WatchTiming,
    baseline: Option<[u8; 32]>,
    stop: &AtomicBool,
    reads: &AtomicU64,
    mut on_change: impl FnMut(),
) {
    let (tx, rx) = mpsc::channel::<()>();
    let mut watcher = arm(&tx, dir);
    let mut last = baseline;
    // A change between the baseline and the watch being armed is caught
    // by checking once right away.
    let mut next_poll = Instant::now();
    let tick = Duration::from_millis(100).min(timing.poll);
    while !stop.load(Ordering::Relaxed) {
        let event = match rx.recv_timeout(tick) {
            Ok(()) => true,
            Err(mpsc::RecvTimeoutError::Timeout) => false,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                watcher = arm(&tx, dir);
                false
            }
        };
        if !event && Instant::now() < next_poll {
            continue;
        }
        if event {
            // Debounce: wait for quiet, but not longer than `max_delay`.
            let deadline = Instant::now() + timing.max_delay;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || rx.recv_timeout(timing.debounce.min(left)).is_err() {
                    break;
                }
            }
        }
        next_poll = Instant::now() + timing.poll;
        reads.fetch_add(1, Ordering::Relaxed);
        let now = fingerprint(dir);
        if now.is_some() && now != last {
            last = now;
            on_change();
            // Files or the folder may be new inodes: watch them afresh.
            drop(watcher.take());
            watcher = arm(&tx, dir);
            while rx.try_recv().is_ok() {}
        }
    }
}
