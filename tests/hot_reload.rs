//! Hot reload of the rules folder, end to end: the real server on
//! 127.0.0.1:0 watching a real folder, changed the ways editors and deploy
//! tools change it, while ticks stream.
//!
//! - Every editor pattern (in place, temp-then-rename, delete-then-create,
//!   a file added, a file removed, a ConfigMap symlink swap) takes effect
//!   while a client streams ticks flat out, and the stream loses, rejects or
//!   repeats nothing.
//! - A broken file of every kind the loader knows is rejected with its
//!   location; the old rules keep firing; fixing the file recovers.
//! - A crash that spans a reload fires once when its rule is unchanged; a
//!   changed or removed rule closes what it had open.
//! - `RuleAdmin.Reload` answers with the new version or every error.
//! - `airbag load --reload-storm` rewrites its file, sees every write
//!   become active, and leaves the folder as it found it.
//!
//! SIGHUP takes the same path as the API (`Core::reload`), but the server
//! here runs inside the test process, so a signal would hit the test
//! runner: it is not sent.
//!
//! Every wait is bounded by [`within`]; nothing asserts on speed.

mod common;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::os::unix::fs::symlink;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use airbag::wire::proto;
use common::*;
use proto::rule_admin_client::RuleAdminClient;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::Streaming;

/// The reason of a `resolved` alert raised because a reload removed or
/// changed the rule.
const REMOVED_REASON: &str = "rule removed or changed by a reload";

/// A drawdown rule on `<prefix>-*`: 5% within 3 s of event time.
fn dd(id: &str, prefix: &str) -> String {
    format!(
        "[[rule]]\nid = \"{id}\"\nkind = \"drawdown\"\ninstruments = [\"{prefix}-*\"]\nwindow = \"3s\"\nthreshold = \"5%\"\n"
    )
}

/// A drawdown rule on the streamed instruments that their ±0.5% wiggle
/// never trips: it makes every reload re-bind them mid-stream.
const FLOW_GUARD: &str = r#"
[[rule]]
id = "flow-guard"
kind = "drawdown"
instruments = ["FLOW-*"]
window = "1s"
threshold = "50%"
"#;

async fn list(admin: &mut RuleAdminClient<Channel>) -> proto::ListRulesResponse {
    within("ListRules", admin.list_rules(proto::ListRulesRequest {}))
        .await
        .expect("ListRules")
        .into_inner()
}

async fn status(admin: &mut RuleAdminClient<Channel>) -> proto::StatusResponse {
    within("Status", admin.status(proto::StatusRequest {}))
        .await
        .expect("Status")
        .into_inner()
}

async fn reload(admin: &mut RuleAdminClient<Channel>) -> proto::ReloadResponse {
    within("Reload", admin.reload(proto::ReloadRequest {}))
        .await
        .expect("Reload")
        .into_inner()
}

fn ids(list: &proto::ListRulesResponse) -> BTreeSet<String> {
    list.rules.iter().map(|r| r.id.clone()).collect()
}

/// Polls `ListRules` until the ruleset in force has exactly the rules
/// `want`; returns its version.
async fn wait_for_rules(admin: &mut RuleAdminClient<Channel>, want: &[&str]) -> u64 {
    let want: BTreeSet<String> = want.iter().map(|s| (*s).to_string()).collect();
    within(&format!("the rules {want:?} to be in force"), async {
        loop {
            let l = list(admin).await;
            if ids(&l) == want {
                return l.ruleset_version;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// Polls `Status` until `done` holds; returns that status.
async fn wait_for_status(
    admin: &mut RuleAdminClient<Channel>,
    what: &str,
    done: impl Fn(&proto::StatusResponse) -> bool,
) -> proto::StatusResponse {
    within(what, async {
        loop {
            let s = status(admin).await;
            if done(&s) {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// Injects crashes on fresh instruments and reads what they raise.
///
/// Alerts come from one subscription to everything. A `resolved` alert
/// whose reason is a reload is set aside in `removed` (it may arrive before
/// or after the alerts around it); any other alert must be the one a probe
/// expects, so a rule that should be gone, or the streamed instruments
/// firing, fails the test.
struct Prober {
    ingest: IngestStream,
    alerts: Streaming<proto::Alert>,
    batch_id: u64,
    ticks: u64,
    /// `(rule, instrument, ruleset version)` of reload-resolved alerts.
    removed: Vec<(String, String, u64)>,
}

impl Prober {
    async fn new(server: &TestServer) -> Prober {
        let alerts = server.subscribe(proto::SubscribeRequest::default()).await;
        Prober {
            ingest: server.ingest().await,
            alerts,
            batch_id: 0,
            ticks: 0,
            removed: Vec::new(),
        }
    }

    /// Sends `prices` for `instrument`, 100 ms of event time apart, from
    /// `from_ms`, with sequence numbers from `first_seq`; all applied.
    async fn send(&mut self, instrument: &str, from_ms: i64, first_seq: u64, prices: &[&str]) {
        self.batch_id += 1;
        let ticks: Vec<_> = prices
            .iter()
            .zip(0..)
            .map(|(p, i)| trade(instrument, from_ms + 100 * i, first_seq + i as u64, p))
            .collect();
        let ack = self.ingest.send(batch(self.batch_id, ticks)).await;
        assert_eq!(ack.applied as usize, prices.len(), "{ack:?}");
        assert!(ack.rejected.is_empty(), "{ack:?}");
        self.ticks += prices.len() as u64;
    }

    /// A 10% crash of a fresh instrument: 100, then 90.
    async fn crash(&mut self, instrument: &str) {
        self.send(instrument, 0, 1, &["100", "90"]).await;
    }

    /// The next alert; a reload's `resolved` is set aside and `None`.
    async fn next_any(&mut self) -> Option<proto::Alert> {
        let alert = next_alert(&mut self.alerts).await;
        if alert.kind == "resolved" && alert.reason == REMOVED_REASON {
            self.removed
                .push((alert.rule_id, alert.instrument, alert.ruleset_version));
            None
        } else {
            Some(alert)
        }
    }

    /// The next alert that is not a reload's `resolved`.
    async fn next(&mut self) -> proto::Alert {
        loop {
            if let Some(alert) = self.next_any().await {
                return alert;
            }
        }
    }

    /// The next alert must be `rule` firing on `instrument` under `version`.
    async fn expect_fired(&mut self, rule: &str, instrument: &str, version: u64) -> proto::Alert {
        let alert = self.next().await;
        assert_eq!(
            (alert.kind.as_str(), alert.rule_id.as_str(), alert.instrument.as_str()),
            ("fired", rule, instrument),
            "{alert:?}"
        );
        assert_eq!(alert.ruleset_version, version, "{alert:?}");
        alert
    }

    /// Waits until reload-resolved alerts have been seen for every
    /// `(rule, instrument)` in `want`, and no others.
    async fn expect_removed(&mut self, want: &[(&str, &str)]) {
        let want: BTreeSet<(String, String)> = want.iter().map(|(r, i)| ((*r).into(), (*i).into())).collect();
        within("the reload-resolved alerts", async {
            while self.removed.len() < want.len() {
                if let Some(alert) = self.next_any().await {
                    panic!("unexpected alert {alert:?}");
                }
            }
        })
        .await;
        let got: BTreeSet<(String, String)> = self.removed.iter().map(|(r, i, _)| (r.clone(), i.clone())).collect();
        assert_eq!(got, want, "{:?}", self.removed);
        assert_eq!(self.removed.len(), want.len(), "{:?}", self.removed);
    }
}

// === 1. Editor patterns while ticks stream ===

const FLOW_INSTRUMENTS: usize = 8;
const FLOW_BATCH: usize = 200;
/// Batches in flight on the stream at once.
const FLOW_WINDOW: usize = 4;

/// What the streaming client saw.
#[derive(Debug, Default)]
struct FlowReport {
    batches: u64,
    acked: u64,
    sent: u64,
    applied: u64,
    rejected: Vec<proto::Rejection>,
    /// Per instrument: the last sequence number sent...
    last_sent: HashMap<String, u64>,
    /// ...and the last applied, by the acks' `last_applied`.
    last_applied: HashMap<String, u64>,
    errors: Vec<String>,
}

/// Streams batches of [`FLOW_BATCH`] ticks over [`FLOW_INSTRUMENTS`]
/// instruments as fast as acks come back, until `stop`; then closes the
/// stream and reads it to its end. `acked` counts acknowledged batches.
async fn stream_flow(mut ingest: IngestStream, stop: CancellationToken, acked: Arc<AtomicU64>) -> FlowReport {
    let names: Vec<String> = (0..FLOW_INSTRUMENTS).map(|i| format!("FLOW-{i}")).collect();
    let mut seq = vec![0u64; FLOW_INSTRUMENTS];
    let mut report = FlowReport::default();
    let mut in_flight = VecDeque::new();
    loop {
        while in_flight.len() < FLOW_WINDOW && !stop.is_cancelled() {
            report.batches += 1;
            let id = report.batches;
            // Event time advances 1 ms a batch; prices wiggle within 0.5%.
            let ticks = (0..FLOW_BATCH)
                .map(|k| {
                    let i = k % FLOW_INSTRUMENTS;
                    seq[i] += 1;
                    let price = format!("100.{}", seq[i] % 50);
                    trade(&names[i], id as i64, seq[i], &price)
                })
                .collect();
            ingest.send_only(batch(id, ticks)).await;
            in_flight.push_back(id);
            report.sent += FLOW_BATCH as u64;
        }
        let Some(expected) = in_flight.pop_front() else {
            break;
        };
        match ingest.next_ack().await {
            Ok(Some(ack)) => {
                if ack.batch_id != expected {
                    report
                        .errors
                        .push(format!("ack for batch {} where {expected} was due", ack.batch_id));
                }
                report.acked += 1;
                acked.fetch_add(1, Ordering::Relaxed);
                report.applied += u64::from(ack.applied);
                report.rejected.extend(ack.rejected);
                for s in ack.last_applied {
                    let last = report.last_applied.entry(s.instrument).or_default();
                    *last = (*last).max(s.seq);
                }
            }
            Ok(None) => {
                report
                    .errors
                    .push(format!("stream ended with batch {expected} unacked"));
                break;
            }
            Err(status) => {
                report.errors.push(format!("stream failed: {status:?}"));
                break;
            }
        }
    }
    ingest.close();
    match ingest.next_ack().await {
        Ok(None) => {}
        other => report.errors.push(format!("after the last ack: {other:?}")),
    }
    report.last_sent = names.into_iter().zip(seq).collect();
    report
}

/// Waits until the streaming client has had more batches acknowledged
/// than `since`.
async fn flowing(acked: &AtomicU64, since: u64) -> u64 {
    within("ticks to keep flowing", async {
        loop {
            let n = acked.load(Ordering::Relaxed);
            if n > since {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
}

/// One way of changing the rules folder, and what must follow.
struct Step<'a> {
    pattern: &'static str,
    change: &'a dyn Fn(),
    /// The rule ids in force afterwards.
    rules: &'static [&'static str],
    /// A rule that must fire on a fresh instrument `<prefix>-...`.
    live: (&'static str, &'static str),
    /// An instrument prefix that only a dropped rule watched: must not fire.
    dead: Option<&'static str>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_editor_pattern_takes_effect_while_ticks_stream() {
    // The rules folder is laid out like a Kubernetes ConfigMap mount:
    // `base.toml -> ..data/base.toml`, `..data -> ..2026_v1`, next to
    // plain files that "editors" change.
    let root = tempfile::tempdir().expect("temp dir");
    let mount = root.path().join("rules");
    let v1 = mount.join("..2026_v1");
    std::fs::create_dir_all(&v1).expect("mkdir");
    std::fs::write(v1.join("base.toml"), format!("{FLOW_GUARD}\n{}", dd("cm-v1", "CMA"))).expect("write");
    symlink("..2026_v1", mount.join("..data")).expect("symlink");
    symlink("..data/base.toml", mount.join("base.toml")).expect("symlink");
    std::fs::write(mount.join("edit.toml"), dd("edit-0", "EDIT0")).expect("write");

    let server = TestServer::builder()
        .rules_folder(&mount)
        .configure(|c| c.watch_rules = true)
        .start()
        .await;
    let mut admin = server.admin().await;
    let mut probe = Prober::new(&server).await;
    let mut version = wait_for_rules(&mut admin, &["flow-guard", "cm-v1", "edit-0"]).await;
    assert_eq!(version, 1);

    let stop = CancellationToken::new();
    let acked = Arc::new(AtomicU64::new(0));
    let flow = tokio::spawn(stream_flow(server.ingest().await, stop.clone(), acked.clone()));
    flowing(&acked, 0).await;
    // The rule the ConfigMap swap will drop has something open.
    probe.crash("CMA-start").await;
    probe.expect_fired("cm-v1", "CMA-start", 1).await;

    // After each change: the new ruleset is in force under a new version,
    // an instrument only the new rule watches fires under that version,
    // one only a dropped rule watched does not, and ticks kept flowing.
    let dir = mount.as_path();
    let steps = [
        Step {
            pattern: "in-place write",
            change: &|| std::fs::write(dir.join("edit.toml"), dd("edit-1", "EDIT1")).expect("write"),
            rules: &["flow-guard", "cm-v1", "edit-1"],
            live: ("edit-1", "EDIT1"),
            dead: Some("EDIT0"),
        },
        Step {
            pattern: "write a temporary file, rename it over",
            change: &|| {
                std::fs::write(dir.join(".edit.toml.swp"), dd("edit-2", "EDIT2")).expect("write");
                std::fs::rename(dir.join(".edit.toml.swp"), dir.join("edit.toml")).expect("rename");
            },
            rules: &["flow-guard", "cm-v1", "edit-2"],
            live: ("edit-2", "EDIT2"),
            dead: Some("EDIT1"),
        },
        Step {
            pattern: "delete, then create",
            change: &|| {
                std::fs::remove_file(dir.join("edit.toml")).expect("remove");
                std::fs::write(dir.join("edit.toml"), dd("edit-3", "EDIT3")).expect("write");
            },
            rules: &["flow-guard", "cm-v1", "edit-3"],
            live: ("edit-3", "EDIT3"),
            dead: Some("EDIT2"),
        },
        Step {
            pattern: "add a file",
            change: &|| std::fs::write(dir.join("extra.toml"), dd("extra-1", "EXTRA")).expect("write"),
            rules: &["flow-guard", "cm-v1", "edit-3", "extra-1"],
            live: ("extra-1", "EXTRA"),
            dead: None,
        },
        Step {
            pattern: "remove a file",
            change: &|| std::fs::remove_file(dir.join("extra.toml")).expect("remove"),
            rules: &["flow-guard", "cm-v1", "edit-3"],
            live: ("edit-3", "EDIT3"),
            dead: Some("EXTRA"),
        },
        Step {
            pattern: "ConfigMap symlink swap",
            change: &|| {
                let v2 = dir.join("..2026_v2");
                std::fs::create_dir(&v2).expect("mkdir");
                std::fs::write(v2.join("base.toml"), format!("{FLOW_GUARD}\n{}", dd("cm-v2", "CMB"))).expect("write");
                symlink("..2026_v2", dir.join("..data_tmp")).expect("symlink");
                std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).expect("rename");
            },
            rules: &["flow-guard", "cm-v2", "edit-3"],
            live: ("cm-v2", "CMB"),
            dead: Some("CMA"),
        },
    ];
    for (n, step) in steps.iter().enumerate() {
        let before = acked.load(Ordering::Relaxed);
        (step.change)();
        let now = wait_for_rules(&mut admin, step.rules).await;
        assert!(now > version, "{}: version {now} after {version}", step.pattern);
        version = now;
        if let Some(prefix) = step.dead {
            probe.crash(&format!("{prefix}-dead{n}")).await;
        }
        let (rule, prefix) = step.live;
        let instrument = format!("{prefix}-live{n}");
        probe.crash(&instrument).await;
        probe.expect_fired(rule, &instrument, version).await;
        // Ticks kept flowing through the change.
        flowing(&acked, before + 10).await;
    }

    stop.cancel();
    let report = within("the stream to finish", flow).await.expect("stream task");
    // Rules that fired and were then dropped closed their conditions.
    probe
        .expect_removed(&[
            ("edit-1", "EDIT1-live0"),
            ("edit-2", "EDIT2-live1"),
            ("extra-1", "EXTRA-live3"),
            ("cm-v1", "CMA-start"),
        ])
        .await;

    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.acked, report.batches, "every batch acknowledged");
    assert_eq!(report.applied, report.sent, "every tick applied");
    assert!(
        report.rejected.is_empty(),
        "{:?}",
        &report.rejected[..report.rejected.len().min(5)]
    );
    assert_eq!(
        report.last_applied, report.last_sent,
        "the last tick of every instrument applied"
    );
    // Nothing applied twice or lost on the server's side either.
    let s = status(&mut admin).await;
    assert_eq!(s.ticks_applied, report.sent + probe.ticks);
    assert_eq!(s.ticks_rejected, 0);
    assert_eq!(s.ruleset_version, version);
    eprintln!(
        "streamed {} ticks in {} batches across 6 reloads; {} reload failures",
        report.sent, report.batches, s.reload_failures
    );
    server.shutdown().await;
}

// === 2. Broken files ===

/// What the rules folder starts with: the rule that must keep firing.
const OLD_GUARD: &str = r#"[[rule]]
id = "old-guard"
kind = "drawdown"
instruments = ["OLD-*"]
window = "3s"
threshold = "5%"
"#;

/// A broken file and its fix.
struct Broken {
    name: &'static str,
    file: &'static str,
    text: &'static str,
    /// Where the error is: line, column (1-based).
    at: (u32, u32),
    message: &'static str,
    fixed: &'static str,
    fixed_id: &'static str,
}

const BROKEN: &[Broken] = &[
    Broken {
        name: "TOML syntax",
        file: "k1-syntax.toml",
        text: "[[rule]]\nid = \"fixed-syntax\"\nkind = \"drawdown\"\ninstruments = [\"FIX-SYNTAX\"]\nwindow = \"3s\"\nthreshold = = \"5%\"\n",
        at: (6, 13),
        message: "extra `=`",
        fixed: "[[rule]]\nid = \"fixed-syntax\"\nkind = \"drawdown\"\ninstruments = [\"FIX-SYNTAX\"]\nwindow = \"3s\"\nthreshold = \"5%\"\n",
        fixed_id: "fixed-syntax",
    },
    Broken {
        name: "unknown key",
        file: "k2-unknown.toml",
        text: "[[rule]]\nid = \"fixed-unknown\"\nkind = \"drawdown\"\ninstruments = [\"FIX-UNKNOWN\"]\nwindow = \"3s\"\nthreshold = \"5%\"\ncolour = \"red\"\n",
        at: (7, 1),
        message: "unknown field `colour`",
        fixed: "[[rule]]\nid = \"fixed-unknown\"\nkind = \"drawdown\"\ninstruments = [\"FIX-UNKNOWN\"]\nwindow = \"3s\"\nthreshold = \"5%\"\n",
        fixed_id: "fixed-unknown",
    },
    Broken {
        name: "bad duration",
        file: "k3-duration.toml",
        text: "[[rule]]\nid = \"fixed-duration\"\nkind = \"drawdown\"\ninstruments = [\"FIX-DURATION\"]\nwindow = \"3 parsecs\"\nthreshold = \"5%\"\n",
        at: (5, 10),
        message: "is not a duration",
        fixed: "[[rule]]\nid = \"fixed-duration\"\nkind = \"drawdown\"\ninstruments = [\"FIX-DURATION\"]\nwindow = \"3s\"\nthreshold = \"5%\"\n",
        fixed_id: "fixed-duration",
    },
    Broken {
        name: "duplicate id across files",
        file: "k4-duplicate.toml",
        text: "[[rule]]\nid = \"old-guard\"\nkind = \"stale_feed\"\nafter = \"1h\"\n",
        at: (2, 6),
        message: "duplicate rule id `old-guard`: first defined at base.toml:1",
        fixed: "[[rule]]\nid = \"fixed-duplicate\"\nkind = \"stale_feed\"\nafter = \"1h\"\n",
        fixed_id: "fixed-duplicate",
    },
    Broken {
        name: "invalid glob",
        file: "k5-glob.toml",
        text: "[[rule]]\nid = \"fixed-glob\"\nkind = \"drawdown\"\ninstruments = [\"FIX-[GLOB\"]\nwindow = \"3s\"\nthreshold = \"5%\"\n",
        at: (4, 16),
        message: "is not a valid glob",
        fixed: "[[rule]]\nid = \"fixed-glob\"\nkind = \"drawdown\"\ninstruments = [\"FIX-GLOB\"]\nwindow = \"3s\"\nthreshold = \"5%\"\n",
        fixed_id: "fixed-glob",
    },
    Broken {
        name: "failing rule test",
        file: "k6-test.toml",
        text: r#"[[rule]]
id = "fixed-test"
kind = "drawdown"
instruments = ["FIX-TEST"]
window = "3s"
threshold = "5%"

[[rule.test]]
name = "a 10% fall fires"
ticks = [{ at = "0s", price = "100" }, { at = "1s", price = "90" }]
expect = [
  { kind = "fired", at = "2s" },
]
"#,
        at: (12, 3),
        message: "expected at 2s",
        fixed: r#"[[rule]]
id = "fixed-test"
kind = "drawdown"
instruments = ["FIX-TEST"]
window = "3s"
threshold = "5%"

[[rule.test]]
name = "a 10% fall fires"
ticks = [{ at = "0s", price = "100" }, { at = "1s", price = "90" }]
expect = [
  { kind = "fired", at = "1s" },
]
"#,
        fixed_id: "fixed-test",
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_of_every_kind_is_rejected_and_the_old_rules_keep_firing() {
    let server = TestServer::builder()
        .rule_file("base.toml", OLD_GUARD)
        .configure(|c| c.watch_rules = true)
        .start()
        .await;
    let mut admin = server.admin().await;
    let mut probe = Prober::new(&server).await;
    let mut rules = vec!["old-guard"];

    for (n, broken) in BROKEN.iter().enumerate() {
        let what = broken.name;
        let before = status(&mut admin).await;
        // Written whole (temp, then rename), so the reload sees exactly this.
        write_rule_atomically(server.rules_dir(), broken.file, broken.text);
        let failed = wait_for_status(&mut admin, &format!("{what}: the reload to fail"), |s| {
            s.reload_failures > before.reload_failures
        })
        .await;
        assert_eq!(failed.reload_failures, before.reload_failures + 1, "{what}");
        assert_eq!(
            failed.last_reload_errors.len(),
            1,
            "{what}: {:?}",
            failed.last_reload_errors
        );
        let e = &failed.last_reload_errors[0];
        assert_eq!(
            (e.file.as_str(), e.line, e.column),
            (broken.file, broken.at.0, broken.at.1),
            "{what}: {e:?}"
        );
        assert!(e.message.contains(broken.message), "{what}: {e:?}");
        // Nothing changed: same version, same rules, and they still fire.
        assert_eq!(failed.ruleset_version, before.ruleset_version, "{what}");
        let l = list(&mut admin).await;
        assert_eq!(l.ruleset_version, before.ruleset_version, "{what}");
        assert_eq!(ids(&l), rules.iter().map(|s| (*s).to_string()).collect(), "{what}");
        let instrument = format!("OLD-{n}");
        probe.crash(&instrument).await;
        probe
            .expect_fired("old-guard", &instrument, before.ruleset_version)
            .await;

        // Fixed: the next reload applies, with the fixed file's rule.
        write_rule_atomically(server.rules_dir(), broken.file, broken.fixed);
        rules.push(broken.fixed_id);
        let version = wait_for_rules(&mut admin, &rules).await;
        assert_eq!(version, before.ruleset_version + 1, "{what}");
        let recovered = status(&mut admin).await;
        assert!(recovered.last_reload_errors.is_empty(), "{what}: {recovered:?}");
        assert_eq!(recovered.reload_failures, before.reload_failures + 1, "{what}");
    }
    // The fixed glob rule is live.
    probe.crash("FIX-GLOB").await;
    probe
        .expect_fired("fixed-glob", "FIX-GLOB", 1 + BROKEN.len() as u64)
        .await;
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains(&format!("airbag_reload_failures_total {}", BROKEN.len())),
        "{metrics}"
    );
    assert!(metrics.contains("airbag_reload_last_failed 0"), "{metrics}");
    probe.expect_removed(&[]).await;
    server.shutdown().await;
}

// === 3. State continuity ===

const CONT_DD: &str = r#"[[rule]]
id = "cont-dd"
kind = "drawdown"
instruments = ["CONT-*"]
window = "3s"
threshold = "8%"
"#;

fn other_rule(after: &str) -> String {
    format!("[[rule]]\nid = \"other\"\nkind = \"stale_feed\"\ninstruments = [\"NOBODY\"]\nafter = \"{after}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_across_a_reload_fires_once_and_changed_rules_close_what_they_had_open() {
    let server = TestServer::builder()
        .rule_file("a.toml", CONT_DD)
        .rule_file("b.toml", &other_rule("1h"))
        .configure(|c| c.watch_rules = true)
        .start()
        .await;
    let dir = server.rules_dir().to_path_buf();
    let mut admin = server.admin().await;
    let mut probe = Prober::new(&server).await;

    // The crash starts: 100, then 95 (5%, below the 8% threshold).
    probe.send("CONT-1", 0, 1, &["100", "95"]).await;
    // Another file changes; the drawdown rule does not.
    write_rule_atomically(&dir, "b.toml", &other_rule("2h"));
    let l = wait_for_status(&mut admin, "the reload of b.toml", |s| s.ruleset_version == 2).await;
    assert!(l.last_reload_errors.is_empty());
    // ...and completes: 92 is 8% below the peak seen before the reload.
    probe.send("CONT-1", 2_000, 3, &["92"]).await;
    let fired = probe.expect_fired("cont-dd", "CONT-1", 2).await;
    assert_eq!(fired.tick_seq, Some(3));
    assert_eq!(value(&fired, "peak").as_deref(), Some("100"));
    // Still active across another unchanged-rule reload: no second alert.
    write_rule_atomically(&dir, "b.toml", &other_rule("3h"));
    wait_for_status(&mut admin, "the second reload", |s| s.ruleset_version == 3).await;
    probe.send("CONT-1", 2_100, 4, &["91"]).await;
    // The next alert is the marker crash's, not a repeat of CONT-1's.
    probe.send("CONT-2", 2_200, 1, &["100", "90"]).await;
    probe.expect_fired("cont-dd", "CONT-2", 3).await;
    probe.expect_removed(&[]).await;

    // The rule itself changes (8% -> 9%): both open conditions close.
    write_rule_atomically(&dir, "a.toml", &CONT_DD.replace("8%", "9%"));
    wait_for_status(&mut admin, "the changed rule", |s| s.ruleset_version == 4).await;
    probe
        .expect_removed(&[("cont-dd", "CONT-1"), ("cont-dd", "CONT-2")])
        .await;
    assert!(
        probe.removed.iter().all(|(_, _, v)| *v == 4),
        "resolved under the new version: {:?}",
        probe.removed
    );
    // The changed rule starts afresh but reads the same market window: the
    // fall in progress (100 -> 89, 11%) fires it under the new version.
    probe.send("CONT-2", 2_400, 3, &["89"]).await;
    let refired = probe.expect_fired("cont-dd", "CONT-2", 4).await;
    assert_eq!(value(&refired, "peak").as_deref(), Some("100"));

    // The rule is removed: what it had open closes.
    probe.removed.clear();
    std::fs::remove_file(dir.join("a.toml")).expect("remove");
    wait_for_status(&mut admin, "the removal", |s| s.ruleset_version == 5).await;
    probe.expect_removed(&[("cont-dd", "CONT-2")]).await;
    assert_eq!(probe.removed[0].2, 5);
    server.shutdown().await;
}

// === 4. Reload triggers ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reload_call_returns_the_new_version_or_every_error() {
    let server = TestServer::builder()
        .rule_file("base.toml", OLD_GUARD)
        .configure(|c| c.watch_rules = true)
        .start()
        .await;
    let dir = server.rules_dir().to_path_buf();
    let mut admin = server.admin().await;

    // Nothing changed: the version stays.
    let reply = reload(&mut admin).await;
    assert!(reply.applied && reply.errors.is_empty(), "{reply:?}");
    assert_eq!(reply.ruleset_version, 1);

    // A new file. The watcher may get there first; either way the call
    // answers with the version that holds it.
    write_rule_atomically(&dir, "new.toml", &dd("new-rule", "NEW"));
    let reply = reload(&mut admin).await;
    assert!(reply.applied && reply.errors.is_empty(), "{reply:?}");
    assert_eq!(reply.ruleset_version, 2);
    let l = list(&mut admin).await;
    assert_eq!(l.ruleset_version, 2);
    assert!(ids(&l).contains("new-rule"), "{l:?}");

    // Two broken files: every error comes back, nothing changes.
    write_rule_atomically(&dir, "x1.toml", BROKEN[0].text);
    write_rule_atomically(&dir, "x2.toml", BROKEN[2].text);
    let reply = reload(&mut admin).await;
    assert!(!reply.applied, "{reply:?}");
    assert_eq!(reply.ruleset_version, 2);
    let at: Vec<(&str, u32, u32)> = reply
        .errors
        .iter()
        .map(|e| (e.file.as_str(), e.line, e.column))
        .collect();
    let (a, b) = (BROKEN[0].at, BROKEN[2].at);
    assert_eq!(at, vec![("x1.toml", a.0, a.1), ("x2.toml", b.0, b.1)], "{reply:?}");
    assert_eq!(list(&mut admin).await.ruleset_version, 2);

    // Removed again: the folder is the ruleset in force, so the version
    // stays, and the errors are cleared.
    std::fs::remove_file(dir.join("x1.toml")).expect("remove");
    std::fs::remove_file(dir.join("x2.toml")).expect("remove");
    let reply = reload(&mut admin).await;
    assert!(reply.applied && reply.errors.is_empty(), "{reply:?}");
    assert_eq!(reply.ruleset_version, 2);
    let reply = reload(&mut admin).await;
    assert_eq!((reply.applied, reply.ruleset_version), (true, 2));
    let s = status(&mut admin).await;
    assert!(s.last_reload_errors.is_empty(), "{s:?}");
    assert_eq!(s.ruleset_version, 2);
    server.shutdown().await;
}

// === 5. The load generator's reload storm ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_generators_reload_storm_sees_every_write_applied_and_cleans_up() {
    use airbag::cli::load::{run_load, LoadArgs, STORM_FILE};

    let server = TestServer::builder()
        .rule_file("base.toml", OLD_GUARD)
        .configure(|c| c.watch_rules = true)
        .start()
        .await;
    let dir = server.rules_dir().to_path_buf();
    let args = LoadArgs {
        addr: server.url(),
        rate: 5_000.0,
        duration: 1.0,
        instruments: 20,
        connections: 1,
        batch: 50,
        crash_every: 0.0,
        grace: 0.0,
        reload_storm: Some(dir.clone()),
        reload_every: 0.1,
        ..LoadArgs::default()
    };
    let report = tokio::time::timeout(Duration::from_secs(30), run_load(&args))
        .await
        .expect("the load run ends")
        .expect("the load run works");
    assert!(report.stream_errors.is_empty(), "{:?}", report.stream_errors);
    assert_eq!((report.applied, report.rejected), (report.ticks_sent, 0));
    let reloads = report.reloads.as_ref().expect("reload stats");
    assert!(reloads.errors.is_empty(), "{:?}", reloads.errors);
    assert_eq!(reloads.timeouts, 0);
    let n = reloads.latency_us.len();
    assert!(n >= 2, "{n} reloads measured");
    let line = report.summary_line();
    assert!(line.contains(&format!(" reloads={n}")), "{line}");
    // Every write was a new version, and so was removing the file at the
    // end: the folder is as it was.
    assert!(!dir.join(STORM_FILE).exists());
    let mut admin = server.admin().await;
    let s = status(&mut admin).await;
    assert_eq!(s.ruleset_version, 1 + n + 1, "{s:?}");
    assert_eq!(s.reload_failures, 0);
    assert_eq!(ids(&list(&mut admin).await), BTreeSet::from(["old-guard".to_string()]));
    server.shutdown().await;
}
