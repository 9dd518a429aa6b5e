//! Checkpoints: an engine restored from a snapshot continues exactly as
//! the original would have; a changed ruleset keeps the state of the rules
//! that did not change; a real server restarted on the same data_dir
//! resumes its sequence numbers and rule states, and passes over a corrupt
//! newest checkpoint.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use airbag::checkpoint::{format, Checkpoint};
use airbag::clock::{Clock, SystemClock};
use airbag::engine::EngineSnapshot;
use airbag::model::{Alert, Fixed, TickValues};
use airbag::rules::kinds::breaker::Phase;
use airbag::rules::RuleState;
use airbag::service::rulebook::compile_texts;
use airbag::wire::proto;
use airbag::{Engine, EngineConfig};
use common::{batch, dec, next_alert, value, TestServer};

const S: i64 = 1_000_000_000;
const MS: i64 = 1_000_000;
const T0: i64 = 1_700_000_000 * S;

/// A rule of every stateful kind, with cooldowns, `for` holds and windows
/// longer than a minute (bucketed).
const RULES: &str = r#"
[[rule]]
id = "dd"
kind = "drawdown"
window = "3s"
threshold = "5%"
cooldown = "20s"

[[rule]]
id = "vel"
kind = "velocity"
window = "1s"
threshold = "2%"
cooldown = "5s"

[[rule]]
id = "cb"
kind = "circuit_breaker"
reference_window = "5m"
direction = "both"
latch = "day"
tiers = [{ move = "4%", halt = "30s" }, { move = "8%", halt = "60s" }]

[[rule]]
id = "band"
kind = "price_band"
reference_window = "90s"
band = "3%"
limit_for = "5s"
pause = "20s"

[[rule]]
id = "wide"
kind = "spread"
max_spread = "1%"
for = "2s"

[[rule]]
id = "vol"
kind = "volume_spike"
window = "1s"
baseline = "5m"
factor = "4"

[[rule]]
id = "quiet"
kind = "stale_feed"
after = "5s"

[[rule]]
id = "expr"
when = "drawdown(price, 2s) >= 3% and volume(1s) > 3 * mean(volume(1s), 2m)"
for = "500ms"
"#;

fn engine(rules: &str) -> Engine {
    let set = compile_texts(&[("r.toml".into(), rules.into())]).unwrap_or_else(|e| panic!("{e:?}"));
    Engine::new(EngineConfig::default(), set)
}

/// One step of the recorded market: a tick, or the timers running.
#[derive(Clone, Debug)]
enum Step {
    Tick {
        symbol: &'static str,
        at: i64,
        seq: u64,
        values: TickValues,
    },
    Timers(i64),
}

fn px(raw: i64) -> Fixed {
    Fixed::from_raw(raw)
}

/// Twelve minutes of a market in four instruments, ticking every 100 ms:
/// a random walk with crashes (drawdown, velocity, breaker tiers, bands),
/// bursts of volume, spells of wide spread and silent spells.
/// Deterministic.
fn market() -> Vec<Step> {
    const SYMBOLS: [&str; 4] = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT"];
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut prices = [
        65_000 * 100_000_000i64,
        3_000 * 100_000_000,
        150 * 100_000_000,
        60_000_000,
    ];
    let mut seqs = [0u64; 4];
    let mut steps = Vec::new();
    for step in 0..(12 * 60 * 10) {
        let at = T0 + step * 100 * MS;
        let second = step / 10;
        for (i, symbol) in SYMBOLS.iter().enumerate() {
            let phase = (second + 50 * i as i64) % 240;
            // Silent for 8 s every 4 minutes.
            if (200..208).contains(&phase) {
                continue;
            }
            let r = next();
            // Crash over 2 s, then a rebound.
            let drift_bp = match phase {
                100..=101 => -60,
                102..=103 => 20,
                _ => (r % 21) as i64 - 10,
            };
            prices[i] += prices[i] / 10_000 * drift_bp;
            seqs[i] += 1;
            let size = if (150..152).contains(&phase) || (100..102).contains(&phase) {
                40
            } else {
                1 + (r >> 32) % 3
            };
            let values = match r % 5 {
                0 => {
                    let half_spread_bp = if (60..64).contains(&phase) { 80 } else { 2 };
                    let half = prices[i] / 10_000 * half_spread_bp;
                    TickValues::Quote {
                        bid: px(prices[i] - half),
                        ask: px(prices[i] + half),
                        bid_size: Fixed::ONE,
                        ask_size: Fixed::ONE,
                    }
                }
                _ => TickValues::Trade {
                    price: px(prices[i]),
                    size: Fixed::from_int(size as i64).unwrap(),
                    side: None,
                },
            };
            steps.push(Step::Tick {
                symbol,
                at,
                seq: seqs[i],
                values,
            });
        }
        steps.push(Step::Timers(at + 50 * MS));
    }
    steps
}

fn run(e: &Engine, steps: &[Step]) -> Vec<Alert> {
    let mut out = Vec::new();
    for step in steps {
        match step {
            Step::Tick {
                symbol,
                at,
                seq,
                values,
            } => {
                e.ingest(symbol, *at, *seq, *values, *at, &mut out).unwrap();
            }
            Step::Timers(at) => e.check_timers(*at, &mut out),
        }
    }
    out
}

/// Through the real file format, as a restart reads it.
fn through_a_file(snapshot: EngineSnapshot) -> EngineSnapshot {
    let checkpoint = Checkpoint {
        alert_seq: 0,
        written_at_ns: 0,
        engine: snapshot,
    };
    format::decode(&format::encode(&checkpoint).unwrap()).unwrap().engine
}

fn kinds(alerts: &[Alert]) -> BTreeSet<(String, &'static str)> {
    alerts.iter().map(|a| (a.rule_id.to_string(), a.kind.name())).collect()
}

/// Where the tests cut the market in two: 1.5 s into BTC-USDT's first
/// crash.
const SPLIT: i64 = T0 + 101 * S + 500 * MS;

/// Index of the first step at or after `at`.
fn split_at(steps: &[Step], at: i64) -> usize {
    steps
        .iter()
        .position(|s| match s {
            Step::Tick { at: t, .. } | Step::Timers(t) => *t >= at,
        })
        .unwrap()
}

#[test]
fn a_restored_engine_raises_exactly_the_alerts_the_original_would() {
    let steps = market();
    // BTC-USDT crashes 100 s into the market: split 1.5 s into the
    // crash, with a breaker halted, a band in its limit state, and rules
    // cooling down.
    let split = split_at(&steps, SPLIT);
    let (before, after) = steps.split_at(split);

    let original = engine(RULES);
    let first_half = run(&original, before);
    let snapshot = original.snapshot();
    let states: Vec<&RuleState> = snapshot
        .instruments
        .iter()
        .flat_map(|i| i.rules.iter().map(|(_, s)| s))
        .collect();
    let has = |f: &dyn Fn(&RuleState) -> bool| states.iter().any(|s| f(s));
    assert!(has(
        &|s| matches!(s, RuleState::Breaker(b) if matches!(b.phase, Phase::Halted { .. }))
    ));
    assert!(has(&|s| matches!(s, RuleState::Breaker(b) if b.latched.is_some())));
    assert!(has(&|s| matches!(s, RuleState::Band(b) if !b.is_normal())));
    assert!(has(
        &|s| matches!(s, RuleState::Condition(c) if c.last_fired_ns.is_some())
    ));
    assert!(snapshot.instruments.iter().all(|i| i.windows.len() >= 5));
    assert!(!first_half.is_empty());

    let restored = engine(RULES);
    let report = restored.restore(through_a_file(snapshot.clone()), i64::MIN).unwrap();
    assert_eq!(report.instruments_restored, 4);
    assert_eq!(report.rule_states_restored, 4 * 8);
    assert_eq!(
        (report.rule_states_reset, report.rule_states_new, report.inconsistent),
        (0, 0, 0)
    );
    assert_eq!(restored.snapshot(), snapshot);

    let expected = run(&original, after);
    let got = run(&restored, after);
    let seen = kinds(&expected);
    for (rule, kind) in [
        ("dd", "fired"),
        ("vel", "fired"),
        ("cb", "tripped"),
        ("cb", "resumed"),
        ("cb", "rearmed"),
        ("band", "limit"),
        ("band", "paused"),
        ("wide", "fired"),
        ("vol", "fired"),
        ("quiet", "fired"),
        ("quiet", "resolved"),
        ("expr", "fired"),
    ] {
        assert!(
            seen.contains(&(rule.to_string(), kind)),
            "no {rule} {kind} after the split: {seen:?}"
        );
    }
    assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g, e, "alert #{i} after the split");
    }

    // The state made the difference: without it, the same ticks raise
    // other alerts.
    let empty = engine(RULES);
    assert_ne!(run(&empty, after), expected);
}

#[test]
fn a_changed_ruleset_keeps_the_state_of_the_rules_that_did_not_change() {
    let steps = market();
    let split = split_at(&steps, SPLIT);
    let (before, after) = steps.split_at(split);
    let original = engine(RULES);
    run(&original, before);
    let snapshot = original.snapshot();

    // "vel" changes its threshold, "quiet" goes, "rally" is new.
    let changed = RULES.replace("threshold = \"2%\"", "threshold = \"2.5%\"").replace(
        "[[rule]]\nid = \"quiet\"\nkind = \"stale_feed\"\nafter = \"5s\"\n",
        "[[rule]]\nid = \"rally\"\nkind = \"rally\"\nwindow = \"4s\"\nthreshold = \"3%\"\n",
    );
    assert_ne!(changed, RULES);
    let restored = engine(&changed);
    let report = restored.restore(through_a_file(snapshot), i64::MIN).unwrap();
    assert_eq!(report.instruments_restored, 4);
    assert_eq!(report.rule_states_restored, 4 * 6);
    assert_eq!(report.rule_states_reset, 4);
    assert_eq!(report.rule_states_new, 4);
    assert_eq!(report.rule_states_dropped, 4);

    let unchanged = ["dd", "cb", "band", "wide", "vol", "expr"];
    let keep = |alerts: Vec<Alert>| -> Vec<Alert> {
        alerts
            .into_iter()
            .filter(|a| unchanged.contains(&&*a.rule_id))
            .collect()
    };
    // The rules changed since the snapshot: the version moves on, so
    // versions in alerts never go back across a restart.
    assert_eq!(report.ruleset_version, 2);
    assert_eq!(restored.ruleset().version, 2);
    let expected: Vec<Alert> = keep(run(&original, after))
        .into_iter()
        .map(|a| Alert {
            ruleset_version: 2,
            ..a
        })
        .collect();
    let got = keep(run(&restored, after));
    assert!(kinds(&expected).contains(&("cb".to_string(), "resumed")));
    assert_eq!(got, expected);
    // The new rule is bound, fresh.
    assert!(restored
        .with_partition("BTC-USDT", |p| p.rules.iter().any(|b| &*b.rule.id == "rally"))
        .unwrap());
}

#[test]
fn restore_refuses_an_engine_that_has_instruments() {
    let original = engine(RULES);
    let steps = market();
    run(&original, &steps[..100]);
    let used = engine(RULES);
    run(&used, &steps[..1]);
    let error = used.restore(original.snapshot(), i64::MIN).unwrap_err().to_string();
    assert!(error.contains("already has 1 instrument"), "{error}");
    assert_eq!(used.instrument_count(), 1);
}

#[test]
fn a_saved_state_that_does_not_fit_its_rule_starts_fresh() {
    let steps = market();
    let original = engine(RULES);
    run(&original, &steps[..split_at(&steps, SPLIT)]);
    let mut snapshot = original.snapshot();
    let cb = snapshot.rules.iter().position(|r| r.id == "cb").unwrap() as u32;
    let (_, state) = snapshot.instruments[0]
        .rules
        .iter_mut()
        .find(|(i, _)| *i == cb)
        .unwrap();
    let RuleState::Breaker(breaker) = state else {
        panic!("cb is a breaker")
    };
    breaker.phase = Phase::Resumed { tier: 9 };
    let restored = engine(RULES);
    let report = restored.restore(snapshot, i64::MIN).unwrap();
    assert_eq!((report.inconsistent, report.rule_states_reset), (1, 1));
    assert_eq!(report.rule_states_restored, 4 * 8 - 1);
    let phase = restored.with_partition("BTC-USDT", |p| {
        p.rules.iter().find(|b| &*b.rule.id == "cb").map(|b| b.state.clone())
    });
    assert_eq!(phase, Some(Some(RuleState::Breaker(Default::default()))));
}

#[test]
fn the_time_the_service_was_down_is_not_silence_of_the_feed() {
    let rules = "[[rule]]\nid = \"quiet\"\nkind = \"stale_feed\"\nafter = \"5s\"\n";
    let original = engine(rules);
    let values = TickValues::Trade {
        price: Fixed::ONE,
        size: Fixed::ONE,
        side: None,
    };
    original.ingest("BTC-USDT", T0, 1, values, T0, &mut Vec::new()).unwrap();
    let snapshot = original.snapshot();

    // Down from T0 + 1 s to T0 + 100 s.
    let resumed = engine(rules);
    resumed.restore(snapshot.clone(), T0 + 100 * S).unwrap();
    let mut alerts = Vec::new();
    resumed.check_timers(T0 + 104 * S, &mut alerts);
    assert!(alerts.is_empty(), "{alerts:?}");
    resumed.check_timers(T0 + 105 * S, &mut alerts);
    assert_eq!(kinds(&alerts), BTreeSet::from([("quiet".to_string(), "fired")]));

    // Restored as saved, the silence counts from the last tick.
    let as_saved = engine(rules);
    as_saved.restore(snapshot, i64::MIN).unwrap();
    let mut alerts = Vec::new();
    as_saved.check_timers(T0 + 5 * S, &mut alerts);
    assert_eq!(alerts.len(), 1);
}

// ---------------------------------------------------------------------------
// A real server restarted on the same data_dir.
// ---------------------------------------------------------------------------

const BREAKER: &str = r#"
[[rule]]
id = "fixed-breaker"
kind = "circuit_breaker"
reference_price = 100
tiers = [{ move = "5%", halt = "10m" }, { move = "10%", halt = "20m" }]
"#;

fn server(data_dir: &std::path::Path, rules_dir: &std::path::Path, interval_ms: u64) -> common::Builder {
    let data_dir = data_dir.to_path_buf();
    TestServer::builder().rules_folder(rules_dir).configure(move |c| {
        c.data_dir = Some(data_dir);
        c.checkpoint.interval_ms = interval_ms;
    })
}

/// A trade at `at_ns` (wall clock: halts are timed in event time, and the
/// server's timers run on the wall clock).
fn trade_at(instrument: &str, at_ns: i64, seq: u64, price: &str) -> proto::Tick {
    proto::Tick {
        instrument: instrument.to_string(),
        event_time_ns: at_ns,
        seq,
        values: Some(proto::tick::Values::Trade(proto::Trade {
            price: Some(dec(price)),
            size: Some(dec("1")),
            side: 0,
        })),
    }
}

fn last_applied(ack: &proto::IngestAck, instrument: &str) -> Option<u64> {
    ack.last_applied
        .iter()
        .find(|s| s.instrument == instrument)
        .map(|s| s.seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_resumes_sequence_numbers_and_rule_states() {
    let data_dir = tempfile::tempdir().unwrap();
    let rules_dir = tempfile::tempdir().unwrap();
    std::fs::write(rules_dir.path().join("breaker.toml"), BREAKER).unwrap();
    let now = SystemClock.now_ns();

    // Before the restart: BTC trips tier 1; ETH takes three ticks.
    let first = server(data_dir.path(), rules_dir.path(), 100).start().await;
    assert_eq!(first.running().core().restored_alert_seq(), None);
    let mut alerts = first.subscribe(proto::SubscribeRequest::default()).await;
    let mut ingest = first.ingest().await;
    let ack = ingest
        .send(batch(
            1,
            vec![
                trade_at("BTC-USDT", now, 1, "100"),
                trade_at("BTC-USDT", now + MS, 2, "94"),
                trade_at("ETH-USDT", now, 1, "100"),
                trade_at("ETH-USDT", now + MS, 2, "100"),
                trade_at("ETH-USDT", now + 2 * MS, 3, "101"),
            ],
        ))
        .await;
    assert_eq!(ack.applied, 5);
    let tripped = next_alert(&mut alerts).await;
    assert_eq!((tripped.kind.as_str(), tripped.seq), ("tripped", 1));
    assert_eq!(value(&tripped, "tier").as_deref(), Some("1"));
    // The periodic checkpoint runs while the server serves.
    let written = async {
        loop {
            let page = first.metrics_text().await;
            if page
                .lines()
                .any(|l| l.starts_with("airbag_checkpoints_written_total ") && !l.ends_with(" 0"))
            {
                return page;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let page = common::within("a periodic checkpoint", written).await;
    assert!(page.contains("airbag_checkpoints_failed_total 0"), "{page}");
    assert!(page.contains("airbag_checkpoint_success_ratio 1"), "{page}");
    ingest.close();
    drop(alerts);
    first.shutdown().await;

    // After: the same data_dir.
    let second = server(data_dir.path(), rules_dir.path(), 100).start().await;
    let core = second.running().core();
    assert_eq!(core.restored_alert_seq(), Some(1));
    let engine = core.engine();
    let id = |s: &str| engine.instruments().get(s).unwrap();
    assert_eq!(engine.last_seq(id("BTC-USDT")), Some(2));
    assert_eq!(engine.last_seq(id("ETH-USDT")), Some(3));

    let mut alerts = second.subscribe(proto::SubscribeRequest::default()).await;
    let mut ingest = second.ingest().await;
    // A client resending what was applied is told so; the rest applies.
    let ack = ingest
        .send(batch(
            1,
            vec![
                trade_at("ETH-USDT", now + 2 * MS, 3, "101"),
                trade_at("ETH-USDT", now + 3 * MS, 4, "101"),
                trade_at("BTC-USDT", now + 2 * MS, 3, "93"),
            ],
        ))
        .await;
    assert_eq!(ack.applied, 2);
    assert_eq!(ack.rejected.len(), 1);
    assert_eq!((ack.rejected[0].index, ack.rejected[0].code.as_str()), (0, "duplicate"));
    assert_eq!(last_applied(&ack, "ETH-USDT"), Some(4));
    assert_eq!(last_applied(&ack, "BTC-USDT"), Some(3));
    // Still halted at tier 1: a further fall to tier 2 escalates from it.
    let ack = ingest
        .send(batch(2, vec![trade_at("BTC-USDT", now + 3 * MS, 4, "89")]))
        .await;
    assert_eq!(ack.applied, 1);
    let escalated = next_alert(&mut alerts).await;
    assert_eq!(escalated.kind, "tripped");
    assert_eq!(value(&escalated, "tier").as_deref(), Some("2"));
    assert_eq!(value(&escalated, "escalated_from_tier").as_deref(), Some("1"));
    ingest.close();
    drop(alerts);
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_newest_checkpoint_falls_back_to_the_previous_one() {
    let data_dir = tempfile::tempdir().unwrap();
    let rules_dir = tempfile::tempdir().unwrap();
    std::fs::write(rules_dir.path().join("breaker.toml"), BREAKER).unwrap();
    let now = SystemClock.now_ns();
    // Only the checkpoints written at shutdown, within this test's time.
    let hour = 3_600_000;

    let first = server(data_dir.path(), rules_dir.path(), hour).start().await;
    let mut ingest = first.ingest().await;
    let ticks = (1..=3)
        .map(|s| trade_at("BTC-USDT", now + s as i64 * MS, s, "100"))
        .collect();
    assert_eq!(ingest.send(batch(1, ticks)).await.applied, 3);
    ingest.close();
    first.shutdown().await;

    let second = server(data_dir.path(), rules_dir.path(), hour).start().await;
    assert_eq!(
        second.running().core().engine().with_state("BTC-USDT", |s| s.last_seq),
        Some(Some(3))
    );
    let mut ingest = second.ingest().await;
    let ticks = (4..=6)
        .map(|s| trade_at("BTC-USDT", now + s as i64 * MS, s, "100"))
        .collect();
    assert_eq!(ingest.send(batch(1, ticks)).await.applied, 3);
    ingest.close();
    second.shutdown().await;

    let dir = data_dir.path().join("checkpoints");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "ckpt"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    let newest = files.last().unwrap();
    let mut bytes = std::fs::read(newest).unwrap();
    let middle = bytes.len() / 2 + 26;
    bytes[middle] ^= 0x40;
    std::fs::write(newest, &bytes).unwrap();

    let third = server(data_dir.path(), rules_dir.path(), hour).start().await;
    let engine = third.running().core().engine();
    assert_eq!(engine.with_state("BTC-USDT", |s| s.last_seq), Some(Some(3)));
    // Ticks 4 to 6 apply again: the client resends from the acknowledged 3.
    let mut ingest = third.ingest().await;
    let ticks = (4..=6)
        .map(|s| trade_at("BTC-USDT", now + s as i64 * MS, s, "100"))
        .collect();
    let ack = ingest.send(batch(1, ticks)).await;
    assert_eq!((ack.applied, last_applied(&ack, "BTC-USDT")), (3, Some(6)));
    ingest.close();
    third.shutdown().await;
}

#[test]
fn a_restored_engine_goes_on_with_the_ruleset_version_it_was_saved_under() {
    let original = engine(RULES);
    let compiled = || compile_texts(&[("r.toml".into(), RULES.into())]).unwrap();
    original.install(compiled(), 0, &mut Vec::new());
    original.install(compiled(), 0, &mut Vec::new());
    assert_eq!(original.ruleset().version, 3);
    run(&original, &market()[..10]);

    let same = engine(RULES);
    let report = same.restore(through_a_file(original.snapshot()), i64::MIN).unwrap();
    assert_eq!((report.ruleset_version, same.ruleset().version), (3, 3));
    // A later reload numbers on from there.
    assert_eq!(same.install(compiled(), 0, &mut Vec::new()).version, 4);
}
