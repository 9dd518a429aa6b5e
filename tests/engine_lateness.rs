//! Event time and sequence numbers: with an allowed lateness, ticks that
//! arrive out of order (within it) give exactly the alerts of the ordered
//! stream; duplicates change nothing; ticks beyond the lateness are
//! rejected with the reason; gaps are counted and can raise `feed_gap`.

#[path = "support/rng.rs"]
mod rng;

use airbag::ingest::TickError;
use airbag::model::{Alert, AlertKind, Fixed, TickValues};
use airbag::service::rulebook::compile_texts;
use airbag::{Engine, EngineConfig};
use proptest::prelude::*;
use rng::Rng;

const MS: i64 = 1_000_000;
const S: i64 = 1_000 * MS;
const T0: i64 = 1_700_000_000 * S;

const RULES: &str = r#"
[[rule]]
id = "dd"
kind = "drawdown"
window = "3s"
threshold = "4%"
severity = "critical"
actions = ["halt"]

[[rule]]
id = "vel"
kind = "velocity"
window = "1s"
threshold = "2%"
cooldown = "500ms"

[[rule]]
id = "vwap-gap"
when = "abs(price - vwap(5s)) > 3% * vwap(5s)"

[[rule]]
id = "gap"
kind = "feed_gap"
min_missing = 2
"#;

fn engine(lateness_ms: i64) -> Engine {
    Engine::new(
        EngineConfig {
            allowed_lateness_ns: lateness_ms * MS,
            ..EngineConfig::default()
        },
        compile_texts(&[("t.toml".into(), RULES.into())]).unwrap(),
    )
}

/// One source tick: symbol, event time, sequence number, price.
#[derive(Clone, Copy, Debug)]
struct Row {
    symbol: &'static str,
    t: i64,
    seq: u64,
    price: i64,
}

/// Three instruments over 20 s of event time, with sharp falls and
/// rebounds so every rule fires, and a few skipped sequence numbers.
fn ordered_rows(seed: u64) -> Vec<Row> {
    let mut rng = Rng(seed | 1);
    let mut rows = Vec::new();
    for (k, symbol) in ["BTC-USDT", "ETH-USDT", "SOL-USDT"].into_iter().enumerate() {
        let mut price: i64 = 10_000 * 100_000_000;
        let mut seq = 0;
        let mut t = T0 + k as i64 * 3 * MS;
        while t < T0 + 20 * S {
            seq += if rng.below(40) == 0 { 3 } else { 1 };
            let step = match rng.below(100) {
                0..=2 => -(price / 40),
                3..=5 => price / 40,
                n => (n as i64 - 52) * price / 20_000,
            };
            price = (price + step).max(100_000_000);
            rows.push(Row { symbol, t, seq, price });
            t += 5 * MS + rng.below(40) as i64 * MS;
        }
    }
    rows.sort_by_key(|r| (r.t, r.symbol));
    rows
}

fn values(price: i64) -> TickValues {
    TickValues::Trade {
        price: Fixed::from_raw(price),
        size: Fixed::ONE,
        side: None,
    }
}

/// Feeds `rows` (receive time = event time + a fixed delay), flushes what
/// is held, and returns the alerts and each tick's outcome code.
fn run(engine: &Engine, rows: &[Row]) -> (Vec<Alert>, Vec<&'static str>) {
    let mut alerts = Vec::new();
    let mut codes = Vec::new();
    let mut clock = 0;
    for row in rows {
        clock = clock.max(row.t);
        let result = engine.ingest(row.symbol, row.t, row.seq, values(row.price), clock, &mut alerts);
        codes.push(result.map_or_else(|e| e.code().as_str(), |_| "ok"));
    }
    engine.flush_held(&mut alerts);
    (alerts, codes)
}

/// Alerts per instrument, each in its order: instruments are independent,
/// so ticks held for order change how different instruments' alerts
/// interleave, never the alerts of one instrument.
fn by_instrument(mut alerts: Vec<Alert>) -> Vec<Alert> {
    alerts.sort_by(|a, b| a.instrument.cmp(&b.instrument));
    alerts
}

/// The first place two alert lists differ, for a readable failure.
fn first_difference(got: &[Alert], expected: &[Alert]) -> Option<String> {
    if let Some(i) = (0..got.len().min(expected.len())).find(|&i| got[i] != expected[i]) {
        return Some(format!("alert {i}:\n got      {}\n expected {}", got[i], expected[i]));
    }
    (got.len() != expected.len()).then(|| format!("{} alerts, expected {}", got.len(), expected.len()))
}

/// The ordered rows with each tick moved later by up to `lateness_ms`
/// (event times unchanged): every tick arrives at most that much behind
/// the newest of its instrument.
fn shuffled_within(rows: &[Row], lateness_ms: i64, seed: u64) -> Vec<Row> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut keyed: Vec<(i64, usize, Row)> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| (r.t + rng.below(lateness_ms as u64 * MS as u64 + 1) as i64, i, *r))
        .collect();
    keyed.sort_by_key(|&(arrival, i, _)| (arrival, i));
    keyed.into_iter().map(|(_, _, r)| r).collect()
}

#[test]
fn the_ordered_stream_fires_every_rule() {
    let (alerts, codes) = run(&engine(0), &ordered_rows(7));
    for rule in ["dd", "vel", "vwap-gap", "gap"] {
        assert!(alerts.iter().any(|a| &*a.rule_id == rule), "{rule} never fired");
    }
    assert!(codes.iter().all(|c| *c == "ok"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn shuffled_within_the_lateness_gives_exactly_the_ordered_alerts(seed in 1u64..u64::MAX, lateness in 1i64..400) {
        let rows = ordered_rows(seed);
        let (expected, _) = run(&engine(0), &rows);
        let shuffled = shuffled_within(&rows, lateness, seed);
        let late = engine(lateness);
        let (got, codes) = run(&late, &shuffled);
        prop_assert!(codes.iter().all(|c| *c == "ok"), "a tick within the lateness was refused");
        let (got, expected) = (by_instrument(got), by_instrument(expected));
        prop_assert!(first_difference(&got, &expected).is_none(), "{}", first_difference(&got, &expected).unwrap_or_default());
        // Ticks that arrived behind their instrument's newest were counted.
        let mut newest: std::collections::HashMap<&str, i64> = Default::default();
        let mut behind = 0;
        for row in &shuffled {
            let n = newest.entry(row.symbol).or_insert(i64::MIN);
            if row.t < *n {
                behind += 1;
            }
            *n = (*n).max(row.t);
        }
        prop_assert_eq!(late.sequence_stats().reordered, behind);
    }

    #[test]
    fn duplicates_at_ten_percent_change_nothing(seed in 1u64..u64::MAX) {
        let rows = ordered_rows(seed);
        let (expected, _) = run(&engine(0), &rows);
        let mut rng = Rng(seed ^ 0xD1B5_4A32_D192_ED03);
        let shuffled = shuffled_within(&rows, 200, seed);
        let mut with_dups = Vec::new();
        for (i, row) in shuffled.iter().enumerate() {
            with_dups.push(*row);
            if rng.below(10) == 0 {
                // A resend of a tick already sent (this one or an earlier one).
                with_dups.push(shuffled[rng.below(i as u64 + 1) as usize]);
            }
        }
        let (got, codes) = run(&engine(200), &with_dups);
        let (got, expected) = (by_instrument(got), by_instrument(expected));
        prop_assert!(first_difference(&got, &expected).is_none(), "{}", first_difference(&got, &expected).unwrap_or_default());
        let dups = codes.iter().filter(|c| **c == "duplicate").count();
        prop_assert_eq!(dups, with_dups.len() - shuffled.len());
    }
}

#[test]
fn a_tick_beyond_the_lateness_is_rejected_with_the_reason_and_changes_nothing() {
    let e = engine(100);
    let mut out = Vec::new();
    e.ingest("X", T0, 1, values(100_00000000), T0, &mut out).unwrap();
    e.ingest("X", T0 + 500 * MS, 2, values(101_00000000), T0, &mut out)
        .unwrap();
    // The first is released (500 ms > 100 ms behind); the second is held.
    assert_eq!(e.with_state("X", |s| s.last_seq), Some(Some(1)));
    let err = e
        .ingest("X", T0 + 399 * MS, 3, values(99_00000000), T0, &mut out)
        .unwrap_err();
    assert!(
        matches!(err, TickError::Late { allowed_ns, .. } if allowed_ns == 100 * MS),
        "{err}"
    );
    assert_eq!(err.code(), "late");
    assert!(err.to_string().contains("101000000 ns before"), "{err}");
    // Within the lateness: held, then applied in its place.
    e.ingest("X", T0 + 400 * MS, 3, values(99_00000000), T0, &mut out)
        .unwrap();
    let again = e
        .ingest("X", T0 + 400 * MS, 3, values(99_00000000), T0, &mut out)
        .unwrap_err();
    assert_eq!(again, TickError::DuplicateHeld { seq: 3 });
    e.flush_held(&mut out);
    assert_eq!(
        e.with_state("X", |s| (s.last_seq, s.last_event_ns)),
        Some((Some(3), Some(T0 + 500 * MS)))
    );
}

#[test]
fn without_lateness_a_late_tick_is_rejected() {
    let e = engine(0);
    let mut out = Vec::new();
    e.ingest("X", T0 + S, 1, values(100_00000000), T0, &mut out).unwrap();
    let err = e.ingest("X", T0, 2, values(100_00000000), T0, &mut out).unwrap_err();
    assert!(matches!(err, TickError::Late { allowed_ns: 0, .. }), "{err}");
    assert_eq!(e.with_state("X", |s| s.last_seq), Some(Some(1)));
}

#[test]
fn held_ticks_are_applied_once_they_have_waited_the_lateness_on_the_receive_clock() {
    let e = engine(50);
    let mut out = Vec::new();
    e.ingest("X", T0, 1, values(100_00000000), T0, &mut out).unwrap();
    e.ingest("X", T0 + 10 * MS, 2, values(90_00000000), T0 + MS, &mut out)
        .unwrap();
    assert_eq!(e.with_state("X", |s| s.last_seq), Some(None), "both held");
    e.check_timers(T0 + 49 * MS, &mut out);
    assert_eq!(e.with_state("X", |s| s.last_seq), Some(None), "not due yet");
    e.check_timers(T0 + 50 * MS, &mut out);
    assert_eq!(e.with_state("X", |s| s.last_seq), Some(Some(1)));
    e.check_timers(T0 + 51 * MS, &mut out);
    assert_eq!(e.with_state("X", |s| s.last_seq), Some(Some(2)));
    assert!(out.iter().any(|a| &*a.rule_id == "dd" && a.kind == AlertKind::Fired));
}

#[test]
fn gaps_are_counted_and_raise_feed_gap_with_where_and_how_many() {
    let e = engine(0);
    let mut out = Vec::new();
    for (seq, t) in [(1, 0), (2, 1), (4, 2), (8, 3), (9, 4)] {
        e.ingest("X", T0 + t * MS, seq, values(100_00000000), T0, &mut out)
            .unwrap();
    }
    let stats = e.sequence_stats();
    assert_eq!((stats.gaps, stats.missing), (2, 4));
    let gaps: Vec<_> = out.iter().filter(|a| &*a.rule_id == "gap").collect();
    assert_eq!(
        gaps.len(),
        1,
        "min_missing = 2: the one-number gap is counted, not alerted"
    );
    let int = |n| Fixed::from_int(n).unwrap();
    assert_eq!(gaps[0].value("missing"), Some(int(3)));
    assert_eq!(gaps[0].value("after_seq"), Some(int(4)));
    assert_eq!(gaps[0].value("seq"), Some(int(8)));
    assert_eq!(gaps[0].tick_seq, Some(8));
}

#[test]
fn feed_gap_rejects_a_bad_min_missing_at_its_place() {
    let text = "[[rule]]\nid = \"g\"\nkind = \"feed_gap\"\nmin_missing = 0\n";
    let errors = compile_texts(&[("g.toml".into(), text.into())]).unwrap_err();
    let shown = errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n");
    assert!(shown.contains("g.toml:4:15") && shown.contains("at least 1"), "{shown}");
}
