//! The rules-folder watcher on a real file system: every way editors and
//! deploy tools write files is noticed, each change is reported exactly
//! once, and only real changes are reported.
//!
//! Nothing here waits on time. The slow poll is turned off (an hour), so a
//! change can only be noticed through the file system's events. Each write
//! is made under [`RulesWatcher::hold`], so the watcher cannot read it half
//! done. The watcher reports every read of the folder ([`FolderRead`]);
//! the tests wait for those reports, bounded by count and by [`WAIT`], and
//! settle after each step with a barrier: a non-rule file written into the
//! folder, whose event comes after every event of what was written before
//! it, and the read that event leads to. A second, spurious report of a
//! change would come before the barrier's read, and is counted.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use airbag::rules::watch::{fingerprint, FolderRead, ReadCause, RulesWatcher, WatchTiming};

const RULE_A: &str = "[[rule]]\nid = \"a\"\nkind = \"stale_feed\"\nafter = \"5s\"\n";
const RULE_B: &str = "[[rule]]\nid = \"b\"\nkind = \"stale_feed\"\nafter = \"9s\"\n";

/// The longest any one wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);
/// The most reads one wait may see before the test fails: a step leads to
/// a handful (its events, the barrier's), never this many.
const MAX_READS: usize = 50;

/// A watcher on `dir`, its reports, and how often it called `on_change`.
struct Watched {
    watcher: RulesWatcher,
    reports: mpsc::Receiver<FolderRead>,
    changes: Arc<AtomicU64>,
    dir: PathBuf,
    barriers: u32,
}

impl Watched {
    /// Starts watching `dir` (baseline: what is there now) and waits for
    /// the read at start, made once the watches are armed.
    fn start(dir: &Path) -> Watched {
        let (tx, reports) = mpsc::channel();
        let changes = Arc::new(AtomicU64::new(0));
        let counted = changes.clone();
        let timing = WatchTiming {
            poll: Duration::from_secs(3_600),
            ..WatchTiming::default()
        };
        let watcher = RulesWatcher::start_reporting(
            dir.to_path_buf(),
            timing,
            fingerprint(dir),
            move || {
                counted.fetch_add(1, Ordering::SeqCst);
            },
            tx,
        )
        .unwrap();
        let mut watched = Watched {
            watcher,
            reports,
            changes,
            dir: dir.to_path_buf(),
            barriers: 0,
        };
        let first = watched.until("the read at start", |_| true);
        assert_eq!(
            first,
            [FolderRead {
                cause: ReadCause::Start,
                changed: false
            }],
            "nothing changed before the watch began"
        );
        watched
    }

    /// Waits for a read that `done` accepts; returns every read reported
    /// up to and including it. Fails after [`MAX_READS`] reads or
    /// [`WAIT`], showing the reads seen.
    fn until(&mut self, what: &str, done: impl Fn(&FolderRead) -> bool) -> Vec<FolderRead> {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        loop {
            assert!(
                seen.len() < MAX_READS,
                "{what}: not after {MAX_READS} reads of the folder: {seen:#?}"
            );
            let left = deadline.saturating_duration_since(Instant::now());
            match self.reports.recv_timeout(left) {
                Ok(read) => {
                    let found = done(&read);
                    seen.push(read);
                    if found {
                        return seen;
                    }
                }
                Err(_) => panic!("{what}: not within {WAIT:?}; reads of the folder meanwhile: {seen:#?}"),
            }
        }
    }

    /// Writes under [`RulesWatcher::hold`], waits for the change to be
    /// reported, settles, and checks it was reported exactly once (and
    /// `on_change` called once more), as noticed through events.
    fn expect_one_change(&mut self, step: &str, write: impl FnOnce()) {
        let before = self.changes.load(Ordering::SeqCst);
        self.watcher.hold(write);
        let mut reads = self.until(&format!("{step}: a change"), |r| r.changed);
        reads.extend(self.settle(step));
        let reported = reads.iter().filter(|r| r.changed).count();
        assert_eq!(
            reported, 1,
            "{step}: the change was reported {reported} times: {reads:#?}"
        );
        let change = reads.iter().find(|r| r.changed).expect("one change");
        assert!(
            matches!(&change.cause, ReadCause::Events(paths) if !paths.is_empty()),
            "{step}: the change was not noticed through an event: {reads:#?}"
        );
        assert_eq!(
            self.changes.load(Ordering::SeqCst),
            before + 1,
            "{step}: on_change calls; reads: {reads:#?}"
        );
    }

    /// Writes under [`RulesWatcher::hold`], settles, and checks nothing
    /// was reported.
    fn expect_no_change(&mut self, step: &str, write: impl FnOnce()) {
        let before = self.changes.load(Ordering::SeqCst);
        self.watcher.hold(write);
        let reads = self.settle(step);
        assert!(
            reads.iter().all(|r| !r.changed),
            "{step}: a change was reported with no rule changed: {reads:#?}"
        );
        assert_eq!(self.changes.load(Ordering::SeqCst), before, "{step}: {reads:#?}");
    }

    /// The barrier: writes a non-rule file into the folder and waits for
    /// the read its event leads to. Events of one watch arrive in the
    /// order the file system made them, so that read comes after every
    /// read that what was written before could lead to. Returns the reads
    /// up to and including it.
    fn settle(&mut self, step: &str) -> Vec<FolderRead> {
        self.barriers += 1;
        let barrier = self.dir.join(format!("settle-{}.md", self.barriers));
        std::fs::write(&barrier, "not a rule file").unwrap();
        self.until(
            &format!("{step}: the read after writing {}", barrier.display()),
            |r| matches!(&r.cause, ReadCause::Events(paths) if paths.contains(&barrier)),
        )
    }
}

#[test]
fn every_way_of_writing_is_noticed_once() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(rules.join("a.toml"), RULE_A).unwrap();
    let mut w = Watched::start(&rules);
    let a = rules.join("a.toml");

    w.expect_one_change("in place", || std::fs::write(&a, RULE_B).unwrap());
    w.expect_one_change("a temporary file renamed over the old one", || {
        std::fs::write(rules.join(".a.toml.swp"), RULE_A).unwrap();
        std::fs::rename(rules.join(".a.toml.swp"), &a).unwrap();
    });
    w.expect_one_change("delete, then create", || {
        std::fs::remove_file(&a).unwrap();
        std::fs::write(&a, RULE_B).unwrap();
    });
    w.expect_one_change("a new file", || {
        std::fs::write(rules.join("b.toml"), RULE_A.replace("\"a\"", "\"c\"")).unwrap()
    });
    w.expect_one_change("a removed file", || std::fs::remove_file(rules.join("b.toml")).unwrap());
    w.expect_no_change("the same contents written again, and a non-rule file", || {
        std::fs::write(&a, RULE_B).unwrap();
        std::fs::write(rules.join("notes.md"), "hello").unwrap();
    });
}

#[test]
fn a_configmap_style_symlink_swap_is_noticed() {
    // Kubernetes mounts: files are links into `..data`, itself a link to a
    // timestamped folder that is replaced atomically by a rename.
    let dir = tempfile::tempdir().unwrap();
    let mount = dir.path().join("rules");
    std::fs::create_dir(&mount).unwrap();
    let v1 = mount.join("..2026_11_25_v1");
    std::fs::create_dir(&v1).unwrap();
    std::fs::write(v1.join("a.toml"), RULE_A).unwrap();
    symlink("..2026_11_25_v1", mount.join("..data")).unwrap();
    symlink("..data/a.toml", mount.join("a.toml")).unwrap();
    let before = fingerprint(&mount).unwrap();
    let mut w = Watched::start(&mount);

    // The new version is laid out beside the old: that is no change yet.
    w.expect_no_change("the next version laid out", || {
        let v2 = mount.join("..2026_11_25_v2");
        std::fs::create_dir(&v2).unwrap();
        std::fs::write(v2.join("a.toml"), RULE_B).unwrap();
        symlink("..2026_11_25_v2", mount.join("..data_tmp")).unwrap();
    });
    w.expect_one_change("..data swapped", || {
        std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap()
    });
    assert_ne!(fingerprint(&mount).unwrap(), before);
}

#[test]
fn a_re_pointed_folder_symlink_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    for (name, rule) in [("v1", RULE_A), ("v2", RULE_B)] {
        std::fs::create_dir(dir.path().join(name)).unwrap();
        std::fs::write(dir.path().join(name).join("a.toml"), rule).unwrap();
    }
    let link = dir.path().join("rules");
    symlink("v1", &link).unwrap();
    let mut w = Watched::start(&link);
    symlink("v2", dir.path().join("rules.tmp")).unwrap();
    // The barrier after it is written through the link, into v2: watched
    // only if the watch was re-armed on the folder the link now names.
    w.expect_one_change("the folder link re-pointed", || {
        std::fs::rename(dir.path().join("rules.tmp"), &link).unwrap()
    });
}

#[test]
fn a_quiet_folder_is_not_read_for_reads_of_it_or_writes_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(rules.join("a.toml"), RULE_A).unwrap();
    let mut w = Watched::start(&rules);
    let reads_at_start = w.watcher.folder_reads();
    // Reading the rules (as a reload does) and writing next to the folder
    // change nothing, so neither may start a read.
    for i in 0..20 {
        std::fs::read(rules.join("a.toml")).unwrap();
        std::fs::write(dir.path().join(format!("neighbour-{i}.txt")), "x").unwrap();
    }
    // Their events came before the barrier's: had any counted, it would
    // have led to a read of its own or be named in the barrier's.
    let reads = w.settle("reads and neighbours");
    let barrier = rules.join("settle-1.md");
    assert_eq!(reads.len(), 1, "reads besides the barrier's: {reads:#?}");
    assert!(
        matches!(&reads[0].cause, ReadCause::Events(paths) if paths.iter().all(|p| *p == barrier)),
        "the barrier's read was led to by other events too: {reads:#?}"
    );
    assert!(!reads[0].changed, "{reads:#?}");
    assert_eq!(w.watcher.folder_reads(), reads_at_start + 1);
}
