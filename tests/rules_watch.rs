//! The rules-folder watcher on a real file system: every way editors and
//! deploy tools write files is noticed, quickly, and only real changes are
//! reported.

use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use airbag::rules::watch::{fingerprint, RulesWatcher, WatchTiming};

const RULE_A: &str = "[[rule]]\nid = \"a\"\nkind = \"stale_feed\"\nafter = \"5s\"\n";
const RULE_B: &str = "[[rule]]\nid = \"b\"\nkind = \"stale_feed\"\nafter = \"9s\"\n";

fn watch(dir: &Path) -> (RulesWatcher, mpsc::Receiver<Instant>) {
    let (tx, rx) = mpsc::channel();
    let watcher = RulesWatcher::start(dir.to_path_buf(), WatchTiming::default(), fingerprint(dir), move || {
        let _ = tx.send(Instant::now());
    })
    .unwrap();
    // Let the watches settle before the test writes.
    std::thread::sleep(Duration::from_millis(100));
    (watcher, rx)
}

/// Waits for one change report; returns how long after `since` it came.
fn changed(rx: &mpsc::Receiver<Instant>, since: Instant) -> Duration {
    let at = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("no change reported within 5 s");
    at.duration_since(since)
}

fn quiet(rx: &mpsc::Receiver<Instant>) {
    assert!(
        rx.recv_timeout(Duration::from_millis(1_300)).is_err(),
        "a change was reported with nothing changed"
    );
}

#[test]
fn every_way_of_writing_is_noticed_once() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(rules.join("a.toml"), RULE_A).unwrap();
    let (_watcher, rx) = watch(&rules);

    // In place.
    let t = Instant::now();
    std::fs::write(rules.join("a.toml"), RULE_B).unwrap();
    let first = changed(&rx, t);

    // Write a temporary file, rename it over the old one.
    let t = Instant::now();
    std::fs::write(rules.join(".a.toml.swp"), RULE_A).unwrap();
    std::fs::rename(rules.join(".a.toml.swp"), rules.join("a.toml")).unwrap();
    changed(&rx, t);

    // Delete, then create.
    let t = Instant::now();
    std::fs::remove_file(rules.join("a.toml")).unwrap();
    std::fs::write(rules.join("a.toml"), RULE_B).unwrap();
    changed(&rx, t);

    // A new file, then a removed one.
    let t = Instant::now();
    std::fs::write(rules.join("b.toml"), RULE_A.replace("\"a\"", "\"c\"")).unwrap();
    changed(&rx, t);
    let t = Instant::now();
    std::fs::remove_file(rules.join("b.toml")).unwrap();
    changed(&rx, t);

    // Touching a file or writing a non-rule file changes nothing.
    std::fs::write(rules.join("a.toml"), RULE_B).unwrap();
    std::fs::write(rules.join("notes.md"), "hello").unwrap();
    quiet(&rx);
    assert!(first < Duration::from_millis(1_000), "first change took {first:?}");
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
    let (_watcher, rx) = watch(&mount);

    let v2 = mount.join("..2026_11_25_v2");
    std::fs::create_dir(&v2).unwrap();
    std::fs::write(v2.join("a.toml"), RULE_B).unwrap();
    symlink("..2026_11_25_v2", mount.join("..data_tmp")).unwrap();
    let t = Instant::now();
    std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
    changed(&rx, t);
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
    let (_watcher, rx) = watch(&link);
    symlink("v2", dir.path().join("rules.tmp")).unwrap();
    let t = Instant::now();
    std::fs::rename(dir.path().join("rules.tmp"), &link).unwrap();
    changed(&rx, t);
}

#[test]
fn a_quiet_folder_is_read_once_per_poll_whatever_happens_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(rules.join("a.toml"), RULE_A).unwrap();
    let (watcher, rx) = watch(&rules);
    // The read at start.
    let started = Instant::now();
    while watcher.folder_reads() == 0 {
        assert!(started.elapsed() < Duration::from_secs(5), "no read at start");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Reading the rules (as a reload does) and writing next to the folder
    // change nothing, so neither may start a read.
    let reads_before = watcher.folder_reads();
    let began = Instant::now();
    for i in 0..20 {
        std::fs::read(rules.join("a.toml")).unwrap();
        std::fs::write(dir.path().join(format!("neighbour-{i}.txt")), "x").unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let reads = watcher.folder_reads() - reads_before;
    // Only the polls (one a second) may read: the loop takes about 0.4 s,
    // longer on a slow machine.
    let polls = began.elapsed().as_secs() + 1;
    assert!(
        reads <= polls,
        "the folder was read {reads} times in {:?} with nothing changed",
        began.elapsed()
    );
    quiet(&rx);
}
