//! Every rule kind through the real engine, at its boundaries: exact
//! thresholds, window edges, edge triggering, cooldown, `for`, timers and
//! every circuit-breaker and price-band transition.

use airbag::model::{Alert, AlertKind, Fixed, Severity, TickValues};
use airbag::service::rulebook::compile_texts;
use airbag::{Engine, EngineConfig};

const S: i64 = 1_000_000_000;
const MS: i64 = 1_000_000;
/// A start time well after the epoch.
const T0: i64 = 1_700_000_000 * S;

struct Harness {
    engine: Engine,
    seq: u64,
}

fn px(text: &str) -> Fixed {
    Fixed::parse(text).unwrap()
}

impl Harness {
    fn new(rules: &str) -> Self {
        let set = compile_texts(&[("test.toml".into(), rules.into())]).unwrap_or_else(|e| panic!("{e:?}"));
        Harness {
            engine: Engine::new(EngineConfig::default(), set),
            seq: 0,
        }
    }

    fn tick(&mut self, symbol: &str, at_ns: i64, values: TickValues) -> Vec<Alert> {
        self.seq += 1;
        let mut out = Vec::new();
        self.engine
            .ingest(symbol, T0 + at_ns, self.seq, values, T0 + at_ns, &mut out)
            .unwrap();
        out
    }

    fn trade(&mut self, symbol: &str, at_ns: i64, price: &str) -> Vec<Alert> {
        self.tick(
            symbol,
            at_ns,
            TickValues::Trade {
                price: px(price),
                size: px("1"),
                side: None,
            },
        )
    }

    fn trade_sized(&mut self, symbol: &str, at_ns: i64, price: &str, size: &str) -> Vec<Alert> {
        self.tick(
            symbol,
            at_ns,
            TickValues::Trade {
                price: px(price),
                size: px(size),
                side: None,
            },
        )
    }

    fn quote(&mut self, symbol: &str, at_ns: i64, bid: &str, ask: &str) -> Vec<Alert> {
        self.tick(
            symbol,
            at_ns,
            TickValues::Quote {
                bid: px(bid),
                ask: px(ask),
                bid_size: px("1"),
                ask_size: px("1"),
            },
        )
    }

    fn timers(&mut self, at_ns: i64) -> Vec<Alert> {
        let mut out = Vec::new();
        self.engine.check_timers(T0 + at_ns, &mut out);
        out
    }
}

fn kinds(alerts: &[Alert]) -> Vec<(&str, AlertKind)> {
    alerts.iter().map(|a| (&*a.rule_id, a.kind)).collect()
}

const DRAWDOWN: &str = r#"
[[rule]]
id = "dd"
kind = "drawdown"
instruments = ["BTC-USDT"]
window = "3s"
threshold = "8%"
severity = "critical"
actions = ["halt"]
cooldown = "30s"
"#;

#[test]
fn drawdown_fires_at_exactly_the_threshold() {
    let mut h = Harness::new(DRAWDOWN);
    assert!(h.trade("BTC-USDT", 0, "100").is_empty());
    assert!(h.trade("BTC-USDT", S, "95").is_empty());
    let alerts = h.trade("BTC-USDT", 2 * S, "92");
    assert_eq!(kinds(&alerts), [("dd", AlertKind::Fired)]);
    let a = &alerts[0];
    assert_eq!(a.severity, Severity::Critical);
    assert_eq!(a.actions.iter().map(|x| x.name()).collect::<Vec<_>>(), ["halt"]);
    assert_eq!(a.value("peak"), Some(px("100")));
    assert_eq!(a.value("price"), Some(px("92")));
    assert_eq!(a.value("change_pct"), Some(px("-8")));
    assert_eq!(a.value("peak_age_ms"), Some(px("2000")));
    assert_eq!(a.tick_seq, Some(3));
    assert_eq!(a.event_time_ns, T0 + 2 * S);
    assert_eq!(&*a.instrument, "BTC-USDT");
    assert_eq!(a.ruleset_version, 1);
}

#[test]
fn drawdown_of_7_99_percent_does_not_fire() {
    let mut h = Harness::new(DRAWDOWN);
    h.trade("BTC-USDT", 0, "100");
    assert!(h.trade("BTC-USDT", 2 * S, "92.01").is_empty());
    // A price that is 8% down to the last unit of 10^-8 still does not.
    let mut h = Harness::new(DRAWDOWN);
    h.trade("BTC-USDT", 0, "65000");
    assert!(h.trade("BTC-USDT", S, "59800.00000001").is_empty());
    assert_eq!(kinds(&h.trade("BTC-USDT", 2 * S, "59800")), [("dd", AlertKind::Fired)]);
}

#[test]
fn drawdown_window_edge_is_inclusive_at_exactly_w() {
    let mut h = Harness::new(DRAWDOWN);
    h.trade("BTC-USDT", 0, "100");
    assert_eq!(
        kinds(&h.trade("BTC-USDT", 3 * S, "92")),
        [("dd", AlertKind::Fired)],
        "peak exactly 3 s old counts"
    );

    let mut h = Harness::new(DRAWDOWN);
    h.trade("BTC-USDT", 0, "100");
    assert!(
        h.trade("BTC-USDT", 3 * S + 1, "92").is_empty(),
        "one ns later the peak has left the window"
    );
}

#[test]
fn drawdown_is_edge_triggered_resolves_and_respects_cooldown() {
    let mut h = Harness::new(DRAWDOWN);
    h.trade("BTC-USDT", 0, "100");
    assert_eq!(kinds(&h.trade("BTC-USDT", S, "90")), [("dd", AlertKind::Fired)]);
    assert!(
        h.trade("BTC-USDT", S + MS, "85").is_empty(),
        "still true: no second alert"
    );
    assert!(h.trade("BTC-USDT", S + 2 * MS, "80").is_empty());
    // The peak of 100 leaves the window at 3 s; the new peak is 90 and the
    // price 89 is 1.1% below it.
    let resolved = h.trade("BTC-USDT", 3 * S + 1, "89");
    assert_eq!(kinds(&resolved), [("dd", AlertKind::Resolved)]);
    assert!(resolved[0].actions.is_empty(), "a resolution does not act");
    // A new fall inside the 30 s cooldown does not fire ...
    h.trade("BTC-USDT", 10 * S, "100");
    assert!(h.trade("BTC-USDT", 11 * S, "90").is_empty());
    // ... but one after the cooldown does.
    h.trade("BTC-USDT", 40 * S, "100");
    assert_eq!(kinds(&h.trade("BTC-USDT", 41 * S, "90")), [("dd", AlertKind::Fired)]);
}

#[test]
fn rules_watch_only_their_instruments() {
    let mut h = Harness::new(DRAWDOWN);
    h.trade("ETH-USDT", 0, "100");
    assert!(h.trade("ETH-USDT", S, "50").is_empty());
}

#[test]
fn rally_mirrors_drawdown() {
    let mut h = Harness::new(
        r#"[[rule]]
id = "up"
kind = "rally"
window = "3s"
threshold = "8%"
"#,
    );
    h.trade("X", 0, "100");
    assert!(h.trade("X", S, "107.99").is_empty());
    let a = h.trade("X", 2 * S, "108");
    assert_eq!(kinds(&a), [("up", AlertKind::Fired)]);
    assert_eq!(a[0].value("trough"), Some(px("100")));
    assert_eq!(a[0].value("change_pct"), Some(px("8")));
}

#[test]
fn velocity_by_percent_and_by_ticks() {
    let mut h = Harness::new(
        r#"[[rule]]
id = "pct"
kind = "velocity"
window = "1s"
threshold = "2%"

[[rule]]
id = "ticks"
kind = "velocity"
window = "1s"
ticks = 3
tick_size = "0.5"
"#,
    );
    h.trade("X", 0, "100");
    assert!(h.trade("X", 50 * MS, "101.49").is_empty(), "2.98 ticks, 1.49%");
    assert_eq!(
        kinds(&h.trade("X", 100 * MS, "101.5")),
        [("ticks", AlertKind::Fired)],
        "3 ticks but only 1.5%"
    );
    assert_eq!(kinds(&h.trade("X", 200 * MS, "102")), [("pct", AlertKind::Fired)], "2%");
    let mut h2 = Harness::new("[[rule]]\nid = \"pct\"\nkind = \"velocity\"\nwindow = \"1s\"\nthreshold = \"2%\"\n");
    h2.trade("X", 0, "100");
    assert!(h2.trade("X", 500 * MS, "101.99").is_empty());
    assert_eq!(
        kinds(&h2.trade("X", 900 * MS, "102")),
        [("pct", AlertKind::Fired)],
        "up 2% from the low"
    );
    let mut h3 = Harness::new("[[rule]]\nid = \"pct\"\nkind = \"velocity\"\nwindow = \"1s\"\nthreshold = \"2%\"\n");
    h3.trade("X", 0, "100");
    assert!(h3.trade("X", 1001 * MS, "98").is_empty(), "the 100 left the window");
}

const SPREAD: &str = r#"
[[rule]]
id = "wide"
kind = "spread"
max_spread = "50bp"
for = "10s"
"#;

#[test]
fn spread_must_stay_wide_for_the_hold_time() {
    let mut h = Harness::new(SPREAD);
    // 100 / 100.5: spread 0.5 over mid 100.25 is 49.9 bp: not above 50 bp.
    assert!(h.quote("X", 0, "100", "100.5").is_empty());
    // 100 / 101: 99.5 bp.
    assert!(h.quote("X", S, "100", "101").is_empty());
    assert!(h.quote("X", 5 * S, "100", "101").is_empty(), "wide for 4 s only");
    let a = h.quote("X", 11 * S, "100", "101");
    assert_eq!(kinds(&a), [("wide", AlertKind::Fired)]);
    assert_eq!(a[0].event_time_ns, T0 + 11 * S, "fired by the timer at since + 10 s");
    assert_eq!(a[0].tick_seq, None, "raised by the timer, not the tick");
    assert_eq!(
        kinds(&h.quote("X", 12 * S, "100", "100.1")),
        [("wide", AlertKind::Resolved)]
    );
}

#[test]
fn spread_hold_is_cancelled_by_a_narrow_quote_and_completed_by_the_timer() {
    let mut h = Harness::new(SPREAD);
    h.quote("X", 0, "100", "101");
    h.quote("X", 5 * S, "100", "100.1");
    assert!(h.timers(11 * S).is_empty(), "the narrow quote reset the hold");
    h.quote("X", 20 * S, "100", "101");
    assert!(h.timers(29 * S).is_empty());
    let a = h.timers(31 * S);
    assert_eq!(kinds(&a), [("wide", AlertKind::Fired)]);
    assert_eq!(a[0].event_time_ns, T0 + 30 * S);
    assert!(h.timers(40 * S).is_empty(), "fires once");
}

#[test]
fn mark_index_deviation_is_strictly_above() {
    let mut h = Harness::new(
        r#"[[rule]]
id = "dev"
kind = "mark_index_deviation"
threshold = "3%"
"#,
    );
    h.tick("X-SWAP", 0, TickValues::Index { price: px("100") });
    assert!(
        h.tick("X-SWAP", S, TickValues::Mark { price: px("103") }).is_empty(),
        "exactly 3% is not above"
    );
    let a = h.tick("X-SWAP", 2 * S, TickValues::Mark { price: px("96.99") });
    assert_eq!(kinds(&a), [("dev", AlertKind::Fired)]);
    assert_eq!(a[0].value("deviation_pct"), Some(px("-3.01")));
    assert_eq!(
        kinds(&h.tick("X-SWAP", 3 * S, TickValues::Index { price: px("97") })),
        [("dev", AlertKind::Resolved)]
    );
}

#[test]
fn volume_spike_waits_for_a_full_baseline() {
    let mut h = Harness::new(
        r#"[[rule]]
id = "vol"
kind = "volume_spike"
window = "1s"
baseline = "10s"
factor = 5
"#,
    );
    // A big first trade is no spike: there is no baseline yet.
    assert!(h.trade_sized("X", 0, "100", "50").is_empty());
    for i in 1..=10 {
        assert!(h.trade_sized("X", i * S, "100", "1").is_empty(), "at {i}s");
    }
    // At 11 s both windows include their old edge: the last second holds the
    // trades at 10 s and 11 s (1 + 20), the last 10 s those from 1 s to 11 s
    // (10 + 20), a mean of 3 per second: 21 > 5 × 3.
    let a = h.trade_sized("X", 11 * S, "100", "20");
    assert_eq!(kinds(&a), [("vol", AlertKind::Fired)]);
    assert_eq!(a[0].value("volume"), Some(px("21")));
    assert_eq!(a[0].value("baseline"), Some(px("3")));
}

#[test]
fn stale_feed_fires_from_the_clock_and_resolves_on_the_next_tick() {
    use airbag::clock::{Clock, ManualClock};
    let mut h = Harness::new(
        r#"[[rule]]
id = "stale"
kind = "stale_feed"
after = "10s"
"#,
    );
    // The engine reads no clock: the timer loop passes it the time, here a
    // clock moved by hand.
    let clock = ManualClock::new(T0);
    let timers = |h: &mut Harness, to_ns: i64| {
        clock.set(T0 + to_ns);
        let mut out = Vec::new();
        h.engine.check_timers(clock.now_ns(), &mut out);
        out
    };
    h.trade("X", 0, "100");
    assert!(timers(&mut h, 9 * S).is_empty());
    let a = timers(&mut h, 10 * S + 500 * MS);
    assert_eq!(kinds(&a), [("stale", AlertKind::Fired)]);
    assert_eq!(a[0].event_time_ns, T0 + 10 * S, "stamped when the silence reached 10 s");
    assert_eq!(a[0].value("silent_ms"), Some(px("10500")));
    assert!(timers(&mut h, 60 * S).is_empty(), "once");
    assert_eq!(kinds(&h.trade("X", 61 * S, "100")), [("stale", AlertKind::Resolved)]);
    assert!(timers(&mut h, 70 * S).is_empty());
    assert_eq!(kinds(&timers(&mut h, 71 * S)), [("stale", AlertKind::Fired)]);
}

const BREAKER: &str = r#"
[[rule]]
id = "cb"
kind = "circuit_breaker"
reference_price = "100"
tiers = [
  { move = "5%", halt = "5m", severity = "warning" },
  { move = "10%", halt = "15m", severity = "critical" },
]
"#;

#[test]
fn breaker_trips_escalates_resumes_and_rearms() {
    let mut h = Harness::new(BREAKER);
    assert!(h.trade("X", 0, "95.01").is_empty());
    let a = h.trade("X", S, "95");
    assert_eq!(kinds(&a), [("cb", AlertKind::Tripped)]);
    assert_eq!(a[0].severity, Severity::Warning);
    assert_eq!(a[0].actions.iter().map(|x| x.name()).collect::<Vec<_>>(), ["halt"]);
    assert_eq!(a[0].value("tier"), Some(px("1")));
    assert!(h.trade("X", 2 * S, "94").is_empty(), "same tier: no repeat");
    let a = h.trade("X", 3 * S, "90");
    assert_eq!(kinds(&a), [("cb", AlertKind::Tripped)], "escalation");
    assert_eq!(a[0].severity, Severity::Critical);
    assert_eq!(a[0].value("tier"), Some(px("2")));
    assert_eq!(a[0].value("escalated_from_tier"), Some(px("1")));
    // The tier-2 halt lasts 15 minutes from 3 s; no tick arrives: the timer resumes.
    assert!(h.timers(3 * S + 15 * 60 * S - 1).is_empty());
    let a = h.timers(3 * S + 15 * 60 * S);
    assert_eq!(kinds(&a), [("cb", AlertKind::Resumed)]);
    assert_eq!(a[0].actions.iter().map(|x| x.name()).collect::<Vec<_>>(), ["resume"]);
    assert_eq!(a[0].event_time_ns, T0 + 3 * S + 15 * 60 * S);
    // Still 6% away: resumed but not re-armed; tier 1 does not re-trip.
    assert!(h.trade("X", 1000 * S, "94").is_empty());
    let a = h.trade("X", 1001 * S, "96");
    assert_eq!(kinds(&a), [("cb", AlertKind::Rearmed)]);
    assert_eq!(a[0].severity, Severity::Info);
    assert_eq!(
        kinds(&h.trade("X", 1002 * S, "105")),
        [("cb", AlertKind::Tripped)],
        "up moves count too"
    );
}

#[test]
fn breaker_resumes_on_a_late_tick_before_evaluating_it() {
    let mut h = Harness::new(BREAKER);
    h.trade("X", 0, "95");
    let a = h.trade("X", 400 * S, "89");
    assert_eq!(kinds(&a), [("cb", AlertKind::Resumed), ("cb", AlertKind::Tripped)]);
    assert_eq!(a[0].event_time_ns, T0 + 300 * S);
    assert_eq!(a[0].tick_seq, None);
    assert_eq!(a[1].value("tier"), Some(px("2")));
}

#[test]
fn breaker_with_daily_latch_does_not_trip_a_tier_twice_a_day() {
    let rules = BREAKER.replace(
        "reference_price = \"100\"",
        "reference_price = \"100\"\nlatch = \"day\"",
    );
    let mut h = Harness::new(&rules);
    let day = 86_400 * S;
    // Start at a UTC day boundary.
    let start = day - T0.rem_euclid(day);
    assert_eq!(kinds(&h.trade("X", start, "95")), [("cb", AlertKind::Tripped)]);
    h.timers(start + 300 * S);
    assert_eq!(
        kinds(&h.trade("X", start + 301 * S, "100")),
        [("cb", AlertKind::Rearmed)]
    );
    assert!(
        h.trade("X", start + 302 * S, "95").is_empty(),
        "tier 1 latched for the day"
    );
    assert_eq!(
        kinds(&h.trade("X", start + 303 * S, "90")),
        [("cb", AlertKind::Tripped)],
        "tier 2 still can"
    );
    h.timers(start + 303 * S + 900 * S);
    h.trade("X", start + 2000 * S, "100");
    assert_eq!(
        kinds(&h.trade("X", start + day, "95")),
        [("cb", AlertKind::Tripped)],
        "a new day"
    );
}

#[test]
fn breaker_measures_from_a_trailing_mean() {
    let mut h = Harness::new(
        r#"[[rule]]
id = "cb"
kind = "circuit_breaker"
reference_window = "10s"
direction = "down"
tiers = [{ move = "5%", halt = "1m" }]
"#,
    );
    for i in 0..10 {
        h.trade("X", i * S, "100");
    }
    // Mean of ten 100s and one 94.4 is 99.49; 94.4 is 5.12% below it.
    let a = h.trade("X", 10 * S, "94.4");
    assert_eq!(kinds(&a), [("cb", AlertKind::Tripped)]);
    assert_eq!(a[0].value("reference"), Some(px("99.49090909")));
}

const BAND: &str = r#"
[[rule]]
id = "band"
kind = "price_band"
reference_window = "5m"
band = "5%"
limit_for = "15s"
pause = "5m"
actions = ["notify"]
"#;

#[test]
fn price_band_limit_then_back_inside() {
    let mut h = Harness::new(BAND);
    for i in 0..100 {
        h.trade("X", i * S, "100");
    }
    // Mean with 106 is 100.0594; 106 is 5.9% above.
    let a = h.trade("X", 100 * S, "106");
    assert_eq!(kinds(&a), [("band", AlertKind::Limit)]);
    assert_eq!(a[0].actions.iter().map(|x| x.name()).collect::<Vec<_>>(), ["notify"]);
    assert_eq!(kinds(&h.trade("X", 105 * S, "101")), [("band", AlertKind::Resolved)]);
    assert!(h.timers(200 * S).is_empty());
}

#[test]
fn price_band_pauses_after_the_limit_time_and_resumes() {
    let mut h = Harness::new(BAND);
    for i in 0..100 {
        h.trade("X", i * S, "100");
    }
    assert_eq!(kinds(&h.trade("X", 100 * S, "90")), [("band", AlertKind::Limit)]);
    assert!(h.timers(114 * S).is_empty());
    let a = h.timers(116 * S);
    assert_eq!(kinds(&a), [("band", AlertKind::Paused)]);
    assert_eq!(a[0].event_time_ns, T0 + 115 * S);
    assert_eq!(a[0].actions.iter().map(|x| x.name()).collect::<Vec<_>>(), ["halt"]);
    let a = h.timers(415 * S);
    assert_eq!(kinds(&a), [("band", AlertKind::Resumed)]);
    assert_eq!(a[0].actions.iter().map(|x| x.name()).collect::<Vec<_>>(), ["resume"]);
}

#[test]
fn a_hold_completed_by_the_timer_fires_at_since_plus_hold() {
    let mut h = Harness::new(
        r#"[[rule]]
id = "dd"
kind = "drawdown"
window = "1m"
threshold = "5%"
for = "2s"
"#,
    );
    h.trade("X", 0, "100");
    assert!(h.trade("X", S, "94").is_empty());
    assert!(h.trade("X", 2 * S, "93").is_empty());
    let a = h.trade("X", 3 * S + 500 * MS, "92");
    assert_eq!(kinds(&a), [("dd", AlertKind::Fired)]);
    assert_eq!(a[0].event_time_ns, T0 + 3 * S, "at since + for");
}

#[test]
fn alerts_of_one_tick_come_in_rule_order() {
    let mut h = Harness::new(
        r#"[[rule]]
id = "b-second"
kind = "drawdown"
window = "3s"
threshold = "5%"

[[rule]]
id = "a-first"
kind = "drawdown"
window = "3s"
threshold = "1%"
"#,
    );
    h.trade("X", 0, "100");
    assert_eq!(
        kinds(&h.trade("X", S, "90")),
        [("b-second", AlertKind::Fired), ("a-first", AlertKind::Fired)],
        "file order, not id order"
    );
}

#[test]
fn shadow_rules_are_marked() {
    let mut h = Harness::new(&DRAWDOWN.replace("cooldown = \"30s\"", "mode = \"shadow\""));
    h.trade("BTC-USDT", 0, "100");
    let a = h.trade("BTC-USDT", S, "90");
    assert_eq!(a[0].mode, airbag::model::Mode::Shadow);
}
