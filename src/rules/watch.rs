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
//!
//! What the watcher did can be followed ([`RulesWatcher::start_reporting`]:
//! one [`FolderRead`] per read of the folder, saying why and whether it
//! found a change), and a change made in several steps can be kept from
//! being read half done ([`RulesWatcher::hold`]); the tests wait on both
//! rather than on time.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
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

/// One read of the folder for its fingerprint, as reported to the channel
/// given to [`RulesWatcher::start_reporting`]: sent once the read, and the
/// `on_change` it led to if any, are done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderRead {
    pub cause: ReadCause,
    /// The rule files differed from the last seen, so `on_change` was
    /// called.
    pub changed: bool,
}

/// What led to a [`FolderRead`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadCause {
    /// The check right after the watches were armed.
    Start,
    /// The slow poll: no event came for [`WatchTiming::poll`].
    Poll,
    /// Events that may change the rules, debounced into one read: the
    /// paths they named, in the order they came (an event that said
    /// events were lost, or a watch error, may name none).
    Events(Vec<PathBuf>),
}

/// A running watcher; stops when dropped.
pub struct RulesWatcher {
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
    /// Held around each read of the folder; [`RulesWatcher::hold`] takes it.
    gate: Arc<Mutex<()>>,
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
        Self::spawn(dir, timing, baseline, on_change, None)
    }

    /// As [`RulesWatcher::start`], and sends a [`FolderRead`] to `reports`
    /// after every read of the folder (while the receiver lives).
    ///
    /// # Errors
    /// The watcher thread could not be started.
    pub fn start_reporting(
        dir: PathBuf,
        timing: WatchTiming,
        baseline: Option<[u8; 32]>,
        on_change: impl FnMut() + Send + 'static,
        reports: mpsc::Sender<FolderRead>,
    ) -> std::io::Result<RulesWatcher> {
        Self::spawn(dir, timing, baseline, on_change, Some(reports))
    }

    fn spawn(
        dir: PathBuf,
        timing: WatchTiming,
        baseline: Option<[u8; 32]>,
        on_change: impl FnMut() + Send + 'static,
        reports: Option<mpsc::Sender<FolderRead>>,
    ) -> std::io::Result<RulesWatcher> {
        // Absolute, so that its parent is watched and event paths (which
        // start with the watched path) compare with it however it was
        // spelled; not canonical, so a symlinked folder stays the link.
        let dir = std::path::absolute(&dir)?;
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicU64::new(0));
        let gate = Arc::new(Mutex::new(()));
        let shared = Shared {
            stop: stop.clone(),
            reads: reads.clone(),
            gate: gate.clone(),
            reports,
        };
        let thread = std::thread::Builder::new()
            .name("rules-watch".into())
            .spawn(move || run(&dir, timing, baseline, &shared, on_change))?;
        Ok(RulesWatcher {
            stop,
            reads,
            gate,
            thread: Some(thread),
        })
    }

    /// How many times the folder has been read for its fingerprint: once
    /// at start, once per poll, once per burst of relevant events.
    pub fn folder_reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Runs `f` with the folder's reads held off: a change `f` makes in
    /// several steps (even one `write`, which truncates first) is read
    /// only once it is whole. Events keep coming meanwhile; the read they
    /// lead to waits for `f` to return (and `f` waits for a read, and its
    /// `on_change`, in progress).
    pub fn hold<R>(&self, f: impl FnOnce() -> R) -> R {
        let _held = self.gate.lock().unwrap_or_else(PoisonError::into_inner);
        f()
    }
}

/// What the watcher thread shares with its [`RulesWatcher`].
struct Shared {
    stop: Arc<AtomicBool>,
    reads: Arc<AtomicU64>,
    gate: Arc<Mutex<()>>,
    reports: Option<mpsc::Sender<FolderRead>>,
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
/// replaced or re-pointed); sends the paths of each event that may change
/// the rules.
fn arm(tx: &mpsc::Sender<Vec<PathBuf>>, dir: &Path) -> Option<RecommendedWatcher> {
    let tx = tx.clone();
    let watched = dir.to_path_buf();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
        match event {
            Ok(event) if may_change_rules(&event, &watched) => {
                let _ = tx.send(event.paths);
            }
            Ok(_) => {}
            // An error may hide a change.
            Err(error) => {
                let _ = tx.send(error.paths);
            }
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

fn run(dir: &Path, timing: WatchTiming, baseline: Option<[u8; 32]>, shared: &Shared, mut on_change: impl FnMut()) {
    let (tx, rx) = mpsc::channel::<Vec<PathBuf>>();
    let mut watcher = arm(&tx, dir);
    let mut last = baseline;
    // A change between the baseline and the watch being armed is caught
    // by checking once right away.
    let mut next_poll = Instant::now();
    let mut started = false;
    let tick = Duration::from_millis(100).min(timing.poll);
    // Event paths are kept only for reports.
    let reporting = shared.reports.is_some();
    while !shared.stop.load(Ordering::Relaxed) {
        let event = match rx.recv_timeout(tick) {
            Ok(paths) => Some(paths),
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                watcher = arm(&tx, dir);
                None
            }
        };
        if event.is_none() && Instant::now() < next_poll {
            continue;
        }
        let cause = match event {
            Some(mut paths) => {
                // Debounce: wait for quiet, but not longer than `max_delay`.
                let deadline = Instant::now() + timing.max_delay;
                loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    match rx.recv_timeout(timing.debounce.min(left)) {
                        Ok(more) if reporting => paths.extend(more),
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                ReadCause::Events(paths)
            }
            None if !started => ReadCause::Start,
            None => ReadCause::Poll,
        };
        started = true;
        next_poll = Instant::now() + timing.poll;
        let changed = {
            let _held = shared.gate.lock().unwrap_or_else(PoisonError::into_inner);
            shared.reads.fetch_add(1, Ordering::Relaxed);
            let now = fingerprint(dir);
            let changed = now.is_some() && now != last;
            if changed {
                last = now;
                // Files or the folder may be new inodes: watch them afresh,
                // the new watches armed before the old are dropped so that
                // no event falls between them, and before `on_change` so
                // that whatever is written after it is seen. Events already
                // queued stay: one more read, rather than a change missed.
                let fresh = arm(&tx, dir);
                drop(std::mem::replace(&mut watcher, fresh));
                on_change();
            }
            changed
        };
        if let Some(reports) = &shared.reports {
            let _ = reports.send(FolderRead { cause, changed });
        }
    }
}
