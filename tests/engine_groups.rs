//! Reference data and group actions in the engine: rules that select
//! instruments by underlying, product and tier, and rules whose alerts act
//! on every instrument of the triggering instrument's underlying, a named
//! group or the market.

use std::sync::Arc;

use airbag::model::{Action, Alert, AlertKind, Fixed, TickValues};
use airbag::service::rulebook::compile_texts;
use airbag::{Engine, EngineConfig};

const S: i64 = 1_000_000_000;
const T0: i64 = 1_700_000_000 * S;

const INSTRUMENTS: &str = r#"
[[instrument]]
symbol = "BTC-USDT"
underlying = "BTC"
product = "spot"
quote = "USDT"
labels = { tier = "1" }

[[instrument]]
symbol = "BTC-USDT-SWAP"
underlying = "BTC"
product = "perpetual"
labels = { tier = "1" }

[[instrument]]
symbol = "BTC-USDT-250328"
underlying = "BTC"
product = "future"
expiry = "2025-03-28T08:00:00Z"

[[instrument]]
symbol = "ETH-USDT"
underlying = "ETH"
product = "spot"
labels = { tier = "2" }

[[group]]
name = "spot-majors"
instruments = ["BTC-USDT", "ETH-USDT"]
"#;

const CRASH: &str = r#"
[[rule]]
id = "flash-crash"
select = { product = ["spot", "perpetual"] }
kind = "drawdown"
window = "3s"
threshold = "8%"
severity = "critical"
actions = ["halt"]
targets = "underlying"
"#;

fn engine(files: &[(&str, &str)]) -> Engine {
    let texts: Vec<(String, String)> = files.iter().map(|(n, t)| (n.to_string(), t.to_string())).collect();
    Engine::new(EngineConfig::default(), compile_texts(&texts).expect("rules"))
}

fn trade(e: &Engine, symbol: &str, t: i64, seq: u64, price: &str) -> Vec<Alert> {
    let mut out = Vec::new();
    let values = TickValues::Trade {
        price: Fixed::parse(price).unwrap(),
        size: Fixed::ONE,
        side: None,
    };
    e.ingest(symbol, t, seq, values, t, &mut out).unwrap();
    out
}

fn summary(alerts: &[Alert]) -> Vec<(String, AlertKind, Option<String>)> {
    alerts
        .iter()
        .map(|a| {
            (
                a.instrument.to_string(),
                a.kind,
                a.trigger_instrument.as_deref().map(str::to_string),
            )
        })
        .collect()
}

#[test]
fn a_crash_on_spot_halts_every_instrument_of_its_underlying_in_one_evaluation() {
    let e = engine(&[("00-instruments.toml", INSTRUMENTS), ("10-crash.toml", CRASH)]);
    for symbol in ["BTC-USDT", "BTC-USDT-SWAP", "BTC-USDT-250328", "ETH-USDT"] {
        assert!(trade(&e, symbol, T0, 1, "100").is_empty());
    }
    let alerts = trade(&e, "BTC-USDT", T0 + S, 2, "91");
    assert_eq!(
        summary(&alerts),
        [
            ("BTC-USDT".into(), AlertKind::Fired, None),
            ("BTC-USDT-250328".into(), AlertKind::Fired, Some("BTC-USDT".into())),
            ("BTC-USDT-SWAP".into(), AlertKind::Fired, Some("BTC-USDT".into())),
        ]
    );
    for alert in &alerts {
        assert_eq!(&*alert.actions, &[Action::Halt]);
        assert_eq!(alert.tick_seq, Some(2), "each copy names the triggering tick");
        assert_eq!(alert.value("price"), Some(Fixed::parse("91").unwrap()));
    }

    // The current state lists the halt on all three, none on ETH.
    let now: Vec<_> = e
        .statuses(|_| true)
        .into_iter()
        .map(|s| (s.instrument.to_string(), s.trigger_instrument.map(|t| t.to_string())))
        .collect();
    assert_eq!(
        now,
        [
            ("BTC-USDT".into(), None),
            ("BTC-USDT-250328".into(), Some("BTC-USDT".into())),
            ("BTC-USDT-SWAP".into(), Some("BTC-USDT".into())),
        ]
    );
    assert!(e.statuses(|s| s.starts_with("ETH")).is_empty());

    // The recovery resolves it on all three.
    let resolved = trade(&e, "BTC-USDT", T0 + 2 * S, 3, "99");
    assert_eq!(resolved.len(), 3);
    assert!(resolved
        .iter()
        .all(|a| a.kind == AlertKind::Resolved && a.actions.is_empty()));
    assert!(e.statuses(|_| true).is_empty());
}

#[test]
fn the_future_is_not_watched_but_is_halted() {
    // `select` leaves the future out of evaluation: its own crash raises
    // nothing, while a crash on the perpetual halts it.
    let e = engine(&[("00-instruments.toml", INSTRUMENTS), ("10-crash.toml", CRASH)]);
    assert!(trade(&e, "BTC-USDT-250328", T0, 1, "100").is_empty());
    assert!(trade(&e, "BTC-USDT-250328", T0 + S, 2, "50").is_empty());
    trade(&e, "BTC-USDT-SWAP", T0, 1, "100");
    let alerts = trade(&e, "BTC-USDT-SWAP", T0 + S, 2, "90");
    let instruments: Vec<_> = alerts.iter().map(|a| a.instrument.to_string()).collect();
    assert_eq!(instruments, ["BTC-USDT-SWAP", "BTC-USDT", "BTC-USDT-250328"]);
}

#[test]
fn rules_select_by_tier_and_follow_a_reload_that_moves_an_instrument() {
    let tier1 = r#"
[[rule]]
id = "tier1-crash"
select = { labels = { tier = "1" } }
kind = "drawdown"
window = "3s"
threshold = "5%"
"#;
    let e = engine(&[("00-instruments.toml", INSTRUMENTS), ("10-tier1.toml", tier1)]);
    trade(&e, "ETH-USDT", T0, 1, "100");
    assert!(trade(&e, "ETH-USDT", T0 + S, 2, "90").is_empty(), "ETH is tier 2");
    trade(&e, "BTC-USDT", T0, 1, "100");
    assert_eq!(trade(&e, "BTC-USDT", T0 + S, 2, "90").len(), 1, "BTC is tier 1");

    // ETH moves to tier 1 and BTC to tier 2: the rule follows.
    let moved = INSTRUMENTS.replace("labels = { tier = \"2\" }", "labels = { tier = \"x\" }");
    let moved = moved
        .replacen("labels = { tier = \"1\" }", "labels = { tier = \"2\" }", 1)
        .replace("labels = { tier = \"x\" }", "labels = { tier = \"1\" }");
    let texts = vec![
        ("00-instruments.toml".to_string(), moved),
        ("10-tier1.toml".to_string(), tier1.to_string()),
    ];
    let mut removed = Vec::new();
    e.install(compile_texts(&texts).expect("rules"), T0 + 2 * S, &mut removed);
    assert_eq!(
        summary(&removed),
        [("BTC-USDT".into(), AlertKind::Resolved, None)],
        "BTC's open condition closes when the rule stops watching it"
    );
    // Newly watched, ETH's window starts with its next tick.
    assert!(trade(&e, "ETH-USDT", T0 + 3 * S, 3, "100").is_empty());
    assert_eq!(trade(&e, "ETH-USDT", T0 + 4 * S, 4, "80").len(), 1, "ETH is tier 1 now");
    trade(&e, "BTC-USDT", T0 + 3 * S, 3, "100");
    assert!(trade(&e, "BTC-USDT", T0 + 4 * S, 4, "50").is_empty());
}

#[test]
fn group_and_market_targets() {
    let rules = r#"
[[rule]]
id = "group-halt"
instruments = ["ETH-USDT"]
kind = "drawdown"
window = "3s"
threshold = "8%"
actions = ["halt"]
targets = "group:spot-majors"

[[rule]]
id = "market-halt"
instruments = ["INDEX"]
kind = "drawdown"
window = "3s"
threshold = "7%"
actions = ["halt"]
targets = "market"
"#;
    let e = engine(&[("00-instruments.toml", INSTRUMENTS), ("10-rules.toml", rules)]);
    trade(&e, "ETH-USDT", T0, 1, "100");
    let eth = trade(&e, "ETH-USDT", T0 + S, 2, "90");
    let names: Vec<_> = eth.iter().map(|a| a.instrument.to_string()).collect();
    assert_eq!(names, ["ETH-USDT", "BTC-USDT"]);

    // An instrument without reference data, seen before the trigger, is
    // part of the market too.
    trade(&e, "SOL-USDT", T0, 1, "10");
    trade(&e, "INDEX", T0, 1, "5000");
    let market = trade(&e, "INDEX", T0 + S, 2, "4600");
    let names: Vec<_> = market.iter().map(|a| Arc::clone(&a.instrument)).collect();
    assert_eq!(names.len(), 6, "{names:?}");
    assert_eq!(&*names[0], "INDEX");
    assert!(names.iter().any(|n| &**n == "SOL-USDT"));
    assert!(market[1..]
        .iter()
        .all(|a| a.trigger_instrument.as_deref() == Some("INDEX")));
}

#[test]
fn reference_data_errors_name_their_place_and_a_target_group_must_exist() {
    let bad = "[[instrument]]\nsymbol = \"BTC-USDT\"\nproduct = \"swap\"\n\n[[instrument]]\nsymbol = \"BTC-USDT\"\n";
    let errors = compile_texts(&[("ref.toml".into(), bad.into())]).unwrap_err();
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            "ref.toml:3:11: unknown product `swap`: use `spot`, `perpetual`, `future`, `option` or `index`",
            "ref.toml:6:10: instrument `BTC-USDT` is described twice: first at ref.toml:1",
        ],
        "{text:?}"
    );
    let rule =
        "[[rule]]\nid = \"r\"\nkind = \"drawdown\"\nwindow = \"3s\"\nthreshold = \"8%\"\ntargets = \"group:none\"\n";
    let errors = compile_texts(&[("r.toml".into(), rule.into())]).unwrap_err();
    assert_eq!(
        errors[0].to_string(),
        "r.toml:1:1: rule `r` targets group `none`, which no `[[group]]` table defines"
    );
    let errors = compile_texts(&[("r.toml".into(), rule.replace("group:none", "everywhere"))]).unwrap_err();
    assert_eq!(
        errors[0].to_string(),
        "r.toml:6:11: unknown targets `everywhere`: use `underlying`, `group:NAME` or `market`"
    );
}

const BASIS: &str = r#"
[[rule]]
id = "btc-basis"
select = { underlying = "BTC" }
group = "underlying"
when = "(price(perpetual) - price(spot)) / price(spot) > 1%"
severity = "warning"
actions = ["notify"]
"#;

#[test]
fn a_basis_rule_fires_when_spot_and_perpetual_part_and_resolves_when_they_meet() {
    let e = engine(&[("00-instruments.toml", INSTRUMENTS), ("20-basis.toml", BASIS)]);
    assert!(
        trade(&e, "BTC-USDT", T0, 1, "100").is_empty(),
        "one side alone is unknown"
    );
    assert!(trade(&e, "BTC-USDT-SWAP", T0 + S, 1, "100.9").is_empty(), "0.9% apart");
    let fired = trade(&e, "BTC-USDT-SWAP", T0 + 2 * S, 2, "101.1");
    assert_eq!(
        summary(&fired),
        [("BTC".into(), AlertKind::Fired, Some("BTC-USDT-SWAP".into()))]
    );
    assert_eq!(fired[0].tick_seq, Some(2));
    let values: Vec<_> = fired[0]
        .values
        .iter()
        .map(|v| (v.name.to_string(), v.value.to_string()))
        .collect();
    assert_eq!(
        values,
        [
            ("(price(perpetual) - price(spot)) / price(spot)".into(), "0.011".into()),
            ("1%".into(), "0.01".into())
        ]
    );
    assert_eq!(e.statuses(|_| true).len(), 1);
    // The other side moving re-evaluates the pair: spot catches up.
    let resolved = trade(&e, "BTC-USDT", T0 + 3 * S, 2, "100.2");
    assert_eq!(
        summary(&resolved),
        [("BTC".into(), AlertKind::Resolved, Some("BTC-USDT".into()))]
    );
    // An ETH tick feeds no BTC group.
    trade(&e, "ETH-USDT", T0, 1, "100");
    assert!(trade(&e, "ETH-USDT", T0 + S, 2, "150").is_empty());
    assert!(e.statuses(|_| true).is_empty());
}

const VENUES: &str = r#"
[[instrument]]
symbol = "BTC-USDT@A"
underlying = "BTC"
product = "spot"

[[instrument]]
symbol = "BTC-USDT@B"
underlying = "BTC"
product = "spot"

[[instrument]]
symbol = "BTC-USDT@C"
underlying = "BTC"
product = "spot"

[[instrument]]
symbol = "BTC-PERP"
underlying = "BTC"
product = "perpetual"
"#;

const INDEX_DEVIATION: &str = r#"
[[rule]]
id = "perp-off-index"
group = "underlying"
when = "abs(price(perpetual) - group_median(price, spot)) / group_median(price, spot) > 2%"
max_age = "10s"
outlier = "5%"
severity = "critical"
actions = ["reduce_only"]
"#;

#[test]
fn an_index_of_venues_drops_a_stale_and_an_outlying_price_and_the_deviation_fires_on_the_right_tick() {
    let e = engine(&[("00-venues.toml", VENUES), ("20-index.toml", INDEX_DEVIATION)]);
    // A's price is from t0: 11 s old at the end. C is 6% above the median
    // of all three. The index is B alone: 101.
    assert!(trade(&e, "BTC-USDT@A", T0, 1, "100").is_empty());
    assert!(trade(&e, "BTC-USDT@C", T0 + 10 * S, 1, "107").is_empty());
    assert!(trade(&e, "BTC-USDT@B", T0 + 11 * S, 1, "101").is_empty());
    // 102.6 is 1.6% from 101; counting A (median of A and B, 100.5) it
    // would be 2.09% and fire here.
    assert!(trade(&e, "BTC-PERP", T0 + 11 * S, 1, "102.6").is_empty());
    // 103 is 1.98% from 101; counting C (median of B and C, 104) nothing
    // would ever fire here.
    assert!(trade(&e, "BTC-PERP", T0 + 11 * S + 1, 2, "103").is_empty());
    let fired = trade(&e, "BTC-PERP", T0 + 11 * S + 2, 3, "103.1");
    assert_eq!(
        summary(&fired),
        [("BTC".into(), AlertKind::Fired, Some("BTC-PERP".into()))]
    );
    // 2.1 / 101, truncated to 8 decimals.
    assert_eq!(
        fired[0].value("abs(price(perpetual) - group_median(price, spot)) / group_median(price, spot)"),
        Some(Fixed::parse("0.02079207").unwrap())
    );
}

#[test]
fn a_member_going_stale_changes_the_index_on_the_timer_without_a_tick() {
    let e = engine(&[("00-venues.toml", VENUES), ("20-index.toml", INDEX_DEVIATION)]);
    trade(&e, "BTC-USDT@A", T0, 1, "100");
    trade(&e, "BTC-USDT@B", T0 + 5 * S, 1, "104");
    // Index: median(100, 104) = 102; the perpetual at 104 is 1.96% off.
    assert!(trade(&e, "BTC-PERP", T0 + 5 * S, 1, "104").is_empty());
    // When A goes stale (10 s after its tick), the index is B alone (104):
    // the perpetual is level with it. Still nothing.
    let mut alerts = Vec::new();
    e.check_timers(T0 + 10 * S + 1, &mut alerts);
    assert!(alerts.is_empty());
    // B moves away: 104 -> 106.5; index 106.5; perp 104 is 2.35% off.
    let fired = trade(&e, "BTC-USDT@B", T0 + 12 * S, 2, "106.5");
    assert_eq!(
        summary(&fired),
        [("BTC".into(), AlertKind::Fired, Some("BTC-USDT@B".into()))]
    );
    // When B too goes stale, the index is unknown: the condition no longer
    // holds, and it resolves on the timer.
    let mut alerts = Vec::new();
    e.check_timers(T0 + 22 * S + 1, &mut alerts);
    assert_eq!(summary(&alerts), [("BTC".into(), AlertKind::Resolved, None)]);
}

#[test]
fn group_rules_are_refused_where_they_do_not_apply() {
    let cases = [
        (
            "[[rule]]\nid = \"g\"\ngroup = \"underlying\"\nkind = \"drawdown\"\nwindow = \"3s\"\nthreshold = \"8%\"\n",
            "r.toml:4:8: a group rule (`group`) states its condition with `when`, over its members: `kind` does not apply",
        ),
        (
            "[[rule]]\nid = \"g\"\ngroup = \"underlying\"\nwhen = \"price > 100\"\n",
            "r.toml:4:9: in `when`: a group rule reads its members: name the member whose `price` is meant, as in `price(spot)`, or aggregate them, as in `group_median(price)`",
        ),
        (
            "[[rule]]\nid = \"g\"\ngroup = \"underlying\"\nwhen = \"drawdown(price(spot), 3s) > 1%\"\n",
            "r.toml:4:9: in `when`: `drawdown(...)` reads one instrument's windows, which a group rule does not keep: use members' newest values, as in `price(spot)`, and aggregates, as in `group_median(price)`",
        ),
        (
            "[[rule]]\nid = \"g\"\nwhen = \"price(spot) > 100\"\n",
            "r.toml:3:9: in `when`: `price(spot)` reads the members of a group: give the rule `group = \"underlying\"` (or `\"group:NAME\"`)",
        ),
        (
            "[[rule]]\nid = \"g\"\nkind = \"drawdown\"\nwindow = \"3s\"\nthreshold = \"8%\"\nmax_age = \"10s\"\n",
            "r.toml:6:11: `max_age` applies to group rules only (`group = \"underlying\"`)",
        ),
    ];
    for (text, expected) in cases {
        let errors = compile_texts(&[("r.toml".into(), text.into())]).unwrap_err();
        assert_eq!(errors[0].to_string(), expected, "{text}");
    }
}

#[test]
fn a_group_rule_state_survives_a_snapshot_and_restore() {
    let files = [("00-instruments.toml", INSTRUMENTS), ("20-basis.toml", BASIS)];
    let first = engine(&files);
    trade(&first, "BTC-USDT", T0, 1, "100");
    assert_eq!(trade(&first, "BTC-USDT-SWAP", T0 + S, 1, "101.5").len(), 1);
    let snapshot = first.snapshot();
    assert_eq!(snapshot.groups.len(), 1);
    assert_eq!(snapshot.groups[0].name, "BTC");
    assert_eq!(snapshot.groups[0].members.len(), 2);

    let second = engine(&files);
    let report = second.restore(snapshot, i64::MIN).unwrap();
    assert_eq!(report.instruments_restored, 2);
    let held: Vec<_> = second
        .statuses(|_| true)
        .into_iter()
        .map(|s| (s.instrument, s.rule_id))
        .collect();
    assert_eq!(held, [(Arc::from("BTC"), Arc::from("btc-basis"))]);
    // The restored members' values and the open state: one tick of spot
    // catching up resolves it (it would raise nothing had it not fired).
    let resolved = trade(&second, "BTC-USDT", T0 + 2 * S, 2, "101");
    assert_eq!(
        summary(&resolved),
        [("BTC".into(), AlertKind::Resolved, Some("BTC-USDT".into()))]
    );
}

#[test]
fn a_market_wide_breaker_on_the_index_against_its_prior_close_halts_the_market() {
    let refs =
        format!("{INSTRUMENTS}\n[[instrument]]\nsymbol = \"SPX\"\nproduct = \"index\"\nprior_close = \"5000\"\n");
    let rule = r#"
[[rule]]
id = "mwcb-level-1"
instruments = ["SPX"]
when = "(price - prior_close) / prior_close <= -7%"
severity = "critical"
actions = ["halt"]
targets = "market"
"#;
    let e = engine(&[("00-instruments.toml", &refs), ("10-mwcb.toml", rule)]);
    assert!(trade(&e, "SPX", T0, 1, "4700").is_empty(), "-6%");
    let halts = trade(&e, "SPX", T0 + S, 2, "4650");
    let names: Vec<_> = halts.iter().map(|a| a.instrument.to_string()).collect();
    assert_eq!(
        names,
        ["SPX", "BTC-USDT", "BTC-USDT-250328", "BTC-USDT-SWAP", "ETH-USDT"],
        "-7%: every instrument"
    );
}
