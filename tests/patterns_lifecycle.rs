//! Patterns with everything else rules have: hot reload (an unchanged
//! pattern keeps its partial match, a changed one starts fresh),
//! checkpoints (partial matches and absence waits survive a restart, through
//! the real file format), shadow mode, `[[rule.test]]` with alert steps and
//! timer-fired absence, and the bundled pattern rules composing the
//! bundled rules' alerts.

#[path = "support/patterns.rs"]
mod support;

use airbag::checkpoint::{format, Checkpoint};
use airbag::model::{Action, Alert, Mode};
use airbag::service::rulebook::{compile_texts, load_dir};
use airbag::{Engine, EngineConfig};
use support::*;

const A_B: &str = "tick(price == 1) -> tick(price == 2) within 10s";
const OTHER: &str = "[[rule]]\nid = \"other\"\nwhen = \"price > 1000\"\n";

fn ruleset(texts: &str) -> airbag::rules::RuleSet {
    compile_texts(&[("p.toml".to_string(), texts.to_string())]).expect("rules")
}

// === Hot reload ===

#[test]
fn a_reload_keeps_an_unchanged_patterns_partial_match() {
    let e = engine(&format!("{}\n{OTHER}", rule(A_B, "")));
    let mut f = Feed::new(&e);
    f.at(0, "1");
    // Another rule changes; the pattern does not.
    let mut closed = Vec::new();
    e.install(
        ruleset(&format!("{}\n{}", rule(A_B, ""), OTHER.replace("1000", "2000"))),
        T0 + 500 * MS,
        &mut closed,
    );
    assert!(closed.is_empty(), "{closed:?}");
    f.at(1000, "2");
    assert_eq!(f.fired(), vec![(1000, 1000)], "the A before the reload completes");
}

#[test]
fn a_reload_starts_a_changed_pattern_fresh() {
    let e = engine(&rule(A_B, ""));
    let mut f = Feed::new(&e);
    f.at(0, "1");
    let changed = rule(&A_B.replace("10s", "20s"), "");
    let mut closed = Vec::new();
    e.install(ruleset(&changed), T0 + 500 * MS, &mut closed);
    assert!(closed.is_empty(), "a pattern has nothing open to resolve: {closed:?}");
    f.at(1000, "2");
    assert_eq!(f.fired(), vec![], "the A was seen by the old definition");
    f.at(2000, "1").at(3000, "2");
    assert_eq!(f.fired(), vec![(3000, 1000)]);
}

// === Checkpoints ===

fn through_a_file(e: &Engine) -> airbag::engine::EngineSnapshot {
    let checkpoint = Checkpoint {
        alert_seq: 0,
        written_at_ns: 0,
        engine: e.snapshot(),
    };
    format::decode(&format::encode(&checkpoint).unwrap()).unwrap().engine
}

#[test]
fn partial_matches_survive_a_restart() {
    let rules = rule(
        "a = tick(price > 0) -> tick(price == 2) -> tick(price == 3) within 10s",
        "",
    );
    let original = engine(&rules);
    let mut f = Feed::new(&original);
    f.at(0, "7").at(1000, "2");
    let saved = through_a_file(&original);
    let restored = engine(&rules);
    let report = restored.restore(saved, i64::MIN).unwrap();
    assert_eq!((report.rule_states_restored, report.inconsistent), (1, 0));
    assert_eq!(restored.snapshot(), original.snapshot());
    let mut g = Feed::new(&restored);
    g.seq = f.seq;
    f.at(2000, "3");
    g.at(2000, "3");
    assert_eq!(g.fired(), vec![(2000, 2000)]);
    assert_eq!(g.alerts, f.alerts[f.alerts.len() - 1..].to_vec());
    assert_eq!(value(g.of("p")[0], "a.price"), Some(7 * 100_000_000));
}

#[test]
fn an_absence_wait_survives_a_restart_and_fires_on_the_timer() {
    let rules = rule("tick(price == 1) -> not tick(price == 2) within 5s", "");
    let original = engine(&rules);
    let mut f = Feed::new(&original);
    f.at(0, "1").at(1000, "9");
    let restored = engine(&rules);
    restored.restore(through_a_file(&original), i64::MIN).unwrap();
    let mut g = Feed::new(&restored);
    g.timers(5000);
    assert_eq!(g.fired(), vec![]);
    g.timers(6000);
    assert_eq!(g.fired(), vec![(5000, 5000)]);
}

#[test]
fn a_changed_pattern_does_not_take_a_saved_state() {
    let original = engine(&rule(A_B, ""));
    let mut f = Feed::new(&original);
    f.at(0, "1");
    let restored = engine(&rule(&A_B.replace("10s", "20s"), ""));
    let report = restored.restore(through_a_file(&original), i64::MIN).unwrap();
    assert_eq!(report.rule_states_reset, 1);
    let mut g = Feed::new(&restored);
    g.seq = 1;
    g.at(1000, "2");
    assert_eq!(g.fired(), vec![]);
}

// === Shadow mode ===

const HOT: &str = "[[rule]]\nid = \"hot\"\nwhen = \"price >= 200\"\n";

#[test]
fn a_shadow_pattern_raises_shadow_alerts() {
    let e = engine(&rule(A_B, "mode = \"shadow\""));
    let mut f = Feed::new(&e);
    f.at(0, "1").at(1000, "2");
    assert_eq!(f.fired(), vec![(1000, 1000)]);
    assert_eq!(f.of("p")[0].mode, Mode::Shadow);
}

#[test]
fn an_active_pattern_does_not_read_a_shadow_rules_alerts() {
    let pattern = "alert('hot'){2} within 10s";
    let run = |hot_mode: &str, p_mode: &str| -> Vec<Alert> {
        let e = engine(&format!(
            "{HOT}mode = \"{hot_mode}\"\n\n{}",
            rule(pattern, &format!("mode = \"{p_mode}\""))
        ));
        let mut f = Feed::new(&e);
        f.at(0, "200").at(1000, "100").at(2000, "210");
        f.of("p").into_iter().cloned().collect()
    };
    assert_eq!(run("active", "active").len(), 1);
    assert_eq!(run("shadow", "active").len(), 0, "a rule on trial moves no active rule");
    let trial = run("shadow", "shadow");
    assert_eq!(trial.len(), 1, "a shadow pattern may read a shadow rule");
    assert_eq!(trial[0].mode, Mode::Shadow);
}

// === Rule tests ===

fn with_test(pattern: &str, test: &str) -> Result<airbag::rules::RuleSet, String> {
    compile_texts(&[("p.toml".to_string(), format!("{}\n{test}", rule(pattern, "")))])
        .map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
}

#[test]
fn rule_tests_feed_alert_steps_to_patterns() {
    let pattern = "alert('hot', severity >= critical) -> alert('hot', kind = resolved) within 1m";
    with_test(
        pattern,
        r#"[[rule.test]]
name = "critical then resolved"
ticks = [
  { at = "0s", alert = "hot", severity = "warning" },
  { at = "1s", alert = "hot", severity = "critical" },
  { at = "2s", price = "5" },
  { at = "30s", alert = "hot", kind = "resolved" },
]
expect = [{ kind = "fired", at = "30s", values = { match_ms = 29000, "step1.at_ms" = 0, "step2.at_ms" = 29000 } }]
"#,
    )
    .expect("the test passes");
    let err = with_test(
        pattern,
        r#"[[rule.test]]
name = "wrong"
ticks = [{ at = "0s", alert = "hot", severity = "critical" }, { at = "2m", alert = "hot", kind = "resolved" }]
expect = [{ kind = "fired" }]
"#,
    )
    .unwrap_err();
    assert!(
        err.contains("test `wrong`: expected alert 1 `fired`, but only 0 raised"),
        "{err}"
    );
}

#[test]
fn rule_tests_fire_absence_on_the_timer() {
    let pattern = "alert('cb', kind = tripped) -> not alert('cb', kind = resumed) within 15m";
    with_test(
        pattern,
        r#"[[rule.test]]
ticks = [{ at = "0s", alert = "cb", kind = "tripped" }, { at = "15m" }, { at = "15m1ns" }]
expect = [{ kind = "fired", at = "15m", values = { absent_ms = 900000 } }]
"#,
    )
    .expect("the test passes");
    let err = with_test(
        pattern,
        r#"[[rule.test]]
name = "resumed exactly at the deadline"
ticks = [{ at = "0s", alert = "cb", kind = "tripped" }, { at = "15m", alert = "cb", kind = "resumed" }, { at = "1h" }]
expect = [{ kind = "fired" }]
"#,
    )
    .unwrap_err();
    assert!(err.contains("but only 0 raised"), "{err}");
}

#[test]
fn a_malformed_alert_step_says_what_is_wrong() {
    let pattern = "alert('hot'){2} within 1m";
    let cases = [
        (
            r#"{ at = "0s", alert = "hot", kind = "burst" }"#,
            "`burst` is not an alert kind",
        ),
        (
            r#"{ at = "0s", alert = "hot", severity = "loud" }"#,
            "`loud` is not info, warning or critical",
        ),
        (
            r#"{ at = "0s", alert = "hot", price = "1" }"#,
            "a step is a tick or an alert",
        ),
        (r#"{ at = "0s", kind = "fired" }"#, "add `alert = \"rule-id\"`"),
    ];
    for (step, want) in cases {
        let err = with_test(pattern, &format!("[[rule.test]]\nticks = [{step}]\n")).unwrap_err();
        assert!(err.contains("p.toml:"), "{err}");
        assert!(err.contains(want), "{step}: {err}");
    }
}

// === The bundled pattern rules, over the bundled rules ===

fn bundled() -> Engine {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    Engine::new(EngineConfig::default(), load_dir(&dir).expect("bundled rules"))
}

#[test]
fn three_velocity_warnings_within_ten_minutes_halt_a_major() {
    let e = bundled();
    let mut f = Feed::new(&e);
    // 2.5% up within half a second, back down within a second a minute
    // later, up again: three warnings (resolved in between, past the
    // velocity rule's 10 s cooldown) within two minutes.
    f.at(0, "100").at(500, "102.5").at(60_000, "102.5").at(61_000, "100");
    f.at(120_000, "100").at(120_500, "102.5");
    let velocity: Vec<i64> = f
        .of("majors-velocity")
        .iter()
        .filter(|a| a.kind == airbag::model::AlertKind::Fired)
        .map(|a| (a.event_time_ns - T0) / MS)
        .collect();
    assert_eq!(velocity, vec![500, 61_000, 120_500], "{:?}", f.alerts);
    let halts = f.of("repeated-velocity-halt");
    assert_eq!(halts.len(), 1, "{:?}", f.alerts);
    let halt = halts[0];
    assert_eq!(halt.event_time_ns, T0 + 120_500 * MS);
    assert_eq!(&*halt.actions, &[Action::Halt]);
    assert_eq!(value(halt, "match_ms"), Some(120_000 * 100_000_000));
    assert_eq!(value(halt, "v.at_ms"), Some(120_000 * 100_000_000));
    // The halt comes right after the warning that completed it.
    let last_two: Vec<&str> = f.alerts[f.alerts.len() - 2..].iter().map(|a| &*a.rule_id).collect();
    assert_eq!(last_two, vec!["majors-velocity", "repeated-velocity-halt"]);
}

/// A pattern over other rules' alerts keeps reading them after a restart:
/// two warnings before the checkpoint, the third after it, one halt.
#[test]
fn a_pattern_reads_other_rules_alerts_after_a_restart() {
    let original = bundled();
    let mut f = Feed::new(&original);
    f.at(0, "100").at(500, "102.5").at(60_000, "102.5").at(61_000, "100");
    let restored = bundled();
    restored.restore(through_a_file(&original), i64::MIN).unwrap();
    let mut g = Feed::new(&restored);
    g.seq = f.seq;
    g.at(120_000, "100").at(120_500, "102.5");
    let warned = g.of("majors-velocity").len();
    assert!(warned > 0, "the third warning after the restart: {:?}", g.alerts);
    let halts = g.of("repeated-velocity-halt");
    assert_eq!(halts.len(), 1, "{:?}", g.alerts);
    assert_eq!(halts[0].event_time_ns, T0 + 120_500 * MS);
}

#[test]
fn a_tier_three_halt_pages_after_fifteen_minutes_without_ticks() {
    let e = bundled();
    let mut f = Feed::new(&e);
    f.symbol = "SOL-USDT";
    // A 5-minute mean of 100, then a 25% fall: tier 3, a 6 h halt.
    for i in 0..10 {
        f.at(i * 1000, "100");
    }
    f.at(10_000, "75");
    let tripped = f.of("majors-breaker");
    assert_eq!(tripped.len(), 1, "{:?}", f.alerts);
    f.timers(10_000 + 15 * 60_000);
    assert!(f.of("halt-without-resume").is_empty());
    f.timers(10_000 + 15 * 60_000 + 1);
    let page = f.of("halt-without-resume");
    assert_eq!(page.len(), 1, "{:?}", f.alerts);
    assert_eq!(page[0].event_time_ns, T0 + (10_000 + 15 * 60_000) * MS);
    assert_eq!(&*page[0].actions, &[Action::Custom("page".into())]);
}

// === Alerts raised outside the instrument's own evaluation ===

const REFDATA: &str = r#"
[[instrument]]
symbol = "BTC-USDT"
underlying = "BTC"
product = "spot"

[[instrument]]
symbol = "BTC-USDT-SWAP"
underlying = "BTC"
product = "perpetual"

[[group]]
name = "btc"
instruments = ["BTC-*"]
"#;

#[test]
fn a_pattern_reads_alerts_fanned_out_to_it_and_group_alerts() {
    let rules = format!(
        r#"{REFDATA}
[[rule]]
id = "crash"
instruments = ["BTC-USDT"]
when = "price <= 50"
targets = "underlying"

[[rule]]
id = "wide"
group = "group:btc"
when = "group_max(price) - group_min(price) > 100"
targets = "group:btc"

{}"#,
        rule(
            "alert('crash') -> alert('wide') within 10s",
            "instruments = [\"BTC-USDT-SWAP\"]"
        )
    );
    let e = engine(&rules);
    let mut f = Feed::new(&e);
    f.symbol = "BTC-USDT-SWAP";
    f.at(0, "100");
    f.symbol = "BTC-USDT";
    // The spot crash halts the perpetual too: its copy reaches the
    // perpetual's pattern, from the spot's tick.
    f.at(1000, "50");
    let copies: Vec<&str> = f.of("crash").iter().map(|a| &*a.instrument).collect();
    assert_eq!(copies, vec!["BTC-USDT", "BTC-USDT-SWAP"]);
    // Then the group's spread opens: with `targets`, an alert for every
    // member (without, it names the group, and no instrument's pattern
    // sees it).
    f.symbol = "BTC-USDT-SWAP";
    f.at(2000, "300");
    assert!(!f.of("wide").is_empty(), "{:?}", f.alerts);
    let fired = f.of("p");
    assert_eq!(fired.len(), 1, "{:?}", f.alerts);
    assert_eq!(&*fired[0].instrument, "BTC-USDT-SWAP");
    assert_eq!(value(fired[0], "match_ms"), Some(1000 * 100_000_000));
}
