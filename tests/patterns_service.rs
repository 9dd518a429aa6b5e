//! Patterns in the running service and in `airbag replay`: an absence
//! fires on the real server's timer while the feed is idle (no tick after
//! the one that started the wait), a replay fires it at its deadline in
//! event time while other instruments' ticks move the clock, and
//! `--compare` shows what a changed pattern changes.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use airbag::cli::alert_json::AlertJson;
use airbag::replay::{drive, BadRows, Merge, NoHooks, Options, Runner};
use airbag::service::rulebook::load_dir;
use airbag::tick_file::ColumnMapping;
use airbag::wire::proto;
use common::*;

fn pattern_rule(id: &str, pattern: &str) -> String {
    format!("[[rule]]\nid = \"{id}\"\nkind = \"pattern\"\npattern = \"{pattern}\"\nseverity = \"critical\"\nactions = [\"page\"]\n")
}

/// The rule on X only.
fn on_x(id: &str, pattern: &str) -> String {
    format!("{}instruments = [\"X\"]\n", pattern_rule(id, pattern))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absence_fires_on_the_servers_timer_with_an_idle_feed() {
    let rules = pattern_rule("no-recovery", "tick(price < 90) -> not tick(price >= 95) within 400ms");
    let server = TestServer::builder().rule_file("p.toml", &rules).start().await;
    let mut alerts = server.subscribe(proto::SubscribeRequest::default()).await;
    let mut ingest = server.ingest().await;
    let sent = Instant::now();
    let ack = ingest
        .send(batch(
            1,
            vec![trade("BTC-USDT", 0, 1, "100"), trade("BTC-USDT", 10, 2, "85")],
        ))
        .await;
    assert_eq!(ack.applied, 2, "{ack:?}");
    // Nothing more is sent: only the service's timer can fire it.
    let page = next_alert(&mut alerts).await;
    let waited = sent.elapsed();
    assert_eq!((page.rule_id.as_str(), page.kind.as_str()), ("no-recovery", "fired"));
    assert_eq!(page.event_time_ns, T0_NS + 410 * 1_000_000, "stamped with its deadline");
    assert_eq!(page.tick_seq, None, "raised by the timer");
    assert_eq!(page.actions, vec!["page".to_string()]);
    assert_eq!(value(&page, "absent_ms").as_deref(), Some("400"));
    assert!(
        waited >= Duration::from_millis(400),
        "not before the deadline: {waited:?}"
    );
    assert_quiet(&mut alerts, Duration::from_millis(300)).await;
    let metrics = server.metrics_text().await;
    for line in [
        r#"airbag_pattern_partials_total{outcome="started"} 1"#,
        r#"airbag_pattern_partials_total{outcome="matched"} 1"#,
        r#"airbag_pattern_partials_total{outcome="dropped"} 0"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "no `{line}` in:\n{metrics}");
    }
    ingest.close();
    server.shutdown().await;
}

fn rules_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

const T0_MS: i64 = 1_700_000_000_000;

/// X falls under 90 at 0 s and never recovers; Y ticks every second.
fn market(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("t.csv");
    let mut text = format!("instrument,ts_ms,price\nX,{T0_MS},100\nX,{},85\n", T0_MS + 1);
    for i in 1..=12 {
        text.push_str(&format!("Y,{},5\n", T0_MS + i * 1000));
    }
    text.push_str(&format!("X,{},99\n", T0_MS + 12_500));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn replay_fires_an_absence_at_its_deadline_in_event_time() {
    let rules = rules_dir(&[(
        "p.toml",
        &on_x("no-recovery", "tick(price < 90) -> not tick(price >= 95) within 5s"),
    )]);
    let data = tempfile::tempdir().unwrap();
    let file = market(data.path());
    let mut merge = Merge::open(&[file], &ColumnMapping::default(), BadRows::Stop).unwrap();
    let mut runners = vec![Runner::new(load_dir(rules.path()).unwrap(), &merge)];
    let mut seen = Vec::new();
    drive(
        &mut merge,
        &mut runners,
        &Options::default(),
        &mut NoHooks,
        &mut |_, _, a, rx| {
            seen.push((a.clone(), rx));
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (alert, received) = &seen[0];
    let due = (T0_MS + 1 + 5000) * 1_000_000;
    assert_eq!(
        (&*alert.instrument, alert.event_time_ns, alert.tick_seq),
        ("X", due, None)
    );
    // Replay runs timers on a 100 ms grid of event time as the rows move
    // it: emitted once Y's ticks carry the clock past the deadline.
    assert!(
        due < *received && *received <= due + 1_000_000_000,
        "emitted by the timer after its deadline: {received}"
    );
    let mut json = Vec::new();
    AlertJson::from_engine(alert, 1, *received, *received).write_json(&mut json);
    assert!(String::from_utf8(json).unwrap().contains(r#""absent_ms":"5000""#));
}

#[test]
fn compare_shows_what_a_longer_absence_window_removes() {
    let a = rules_dir(&[(
        "p.toml",
        &on_x("no-recovery", "tick(price < 90) -> not tick(price >= 95) within 5s"),
    )]);
    let b = rules_dir(&[(
        "p.toml",
        &on_x("no-recovery", "tick(price < 90) -> not tick(price >= 95) within 15s"),
    )]);
    let data = tempfile::tempdir().unwrap();
    let file = market(data.path());
    let out = Command::new(env!("CARGO_BIN_EXE_airbag"))
        .args(["replay", "--compare"])
        .arg(a.path())
        .arg(b.path())
        .arg(&file)
        .output()
        .expect("run airbag replay");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    // With 15 s, the recovery at 12.5 s comes in time: B does not page.
    assert_eq!(lines.len(), 1, "{stdout}");
    assert_eq!(lines[0]["side"], "only_a");
    assert_eq!(lines[0]["a"]["rule_id"], "no-recovery");
    assert_eq!(lines[0]["a"]["event_time_ns"], (T0_MS + 5001) * 1_000_000);
}
