//! Engine state rules: rejected ticks change nothing, the instrument cap
//! holds, ruleset swaps keep the state of unchanged rules, and the
//! drawdown rule fires exactly when a naive O(n²) scan says it should.

use airbag::ingest::TickError;
use airbag::model::{AlertKind, Fixed, TickValues};
use airbag::service::rulebook::compile_texts;
use airbag::state::SymbolError;
use airbag::{Engine, EngineConfig};
use proptest::prelude::*;

const S: i64 = 1_000_000_000;
const T0: i64 = 1_700_000_000 * S;

fn px(text: &str) -> Fixed {
    Fixed::parse(text).unwrap()
}

fn trade(price: &str) -> TickValues {
    TickValues::Trade {
        price: px(price),
        size: px("1"),
        side: None,
    }
}

fn engine(rules: &str) -> Engine {
    Engine::new(
        EngineConfig::default(),
        compile_texts(&[("t.toml".into(), rules.into())]).unwrap(),
    )
}

const DD: &str = "[[rule]]\nid = \"dd\"\nkind = \"drawdown\"\nwindow = \"3s\"\nthreshold = \"8%\"\n";

#[test]
fn rejected_ticks_change_nothing() {
    let e = engine(DD);
    let mut out = Vec::new();
    e.ingest("X", T0, 10, trade("100"), T0, &mut out).unwrap();
    let before = e
        .with_state("X", |s| (s.last_seq, s.last_event_ns, s.last, s.windows.held()))
        .unwrap();

    let crossed = TickValues::Quote {
        bid: px("101"),
        ask: px("100"),
        bid_size: px("1"),
        ask_size: px("1"),
    };
    let cases: Vec<(i64, u64, TickValues, &str)> = vec![
        (T0 + S, 11, trade("0"), "bad_value"),
        (T0 + S, 11, trade("-5"), "bad_value"),
        (
            T0 + S,
            11,
            TickValues::Trade {
                price: px("90"),
                size: px("-1"),
                side: None,
            },
            "bad_value",
        ),
        (T0 + S, 11, crossed, "crossed_quote"),
        (T0 + S, 10, trade("50"), "duplicate"),
        (T0 + S, 9, trade("50"), "duplicate"),
        (T0 - 1, 11, trade("50"), "late"),
        (0, 11, trade("50"), "bad_time"),
    ];
    for (t, seq, values, code) in cases {
        let err = e.ingest("X", t, seq, values, t, &mut out).unwrap_err();
        assert_eq!(err.code(), code, "{err}");
    }
    assert!(out.is_empty());
    let after = e
        .with_state("X", |s| (s.last_seq, s.last_event_ns, s.last, s.windows.held()))
        .unwrap();
    assert_eq!(before, after);
    // The next good tick is applied as if nothing happened: 100 -> 92 fires.
    e.ingest("X", T0 + S, 11, trade("92"), T0 + S, &mut out).unwrap();
    assert_eq!(out.len(), 1);
}

#[test]
fn equal_timestamps_are_applied_in_sequence_order() {
    let e = engine(DD);
    let mut out = Vec::new();
    e.ingest("X", T0, 1, trade("100"), T0, &mut out).unwrap();
    e.ingest("X", T0, 2, trade("91"), T0, &mut out).unwrap();
    assert_eq!(out.len(), 1);
}

#[test]
fn bad_symbols_and_the_instrument_cap() {
    let e = Engine::new(
        EngineConfig {
            max_instruments: 3,
            ..EngineConfig::default()
        },
        compile_texts(&[("t.toml".into(), DD.into())]).unwrap(),
    );
    let mut out = Vec::new();
    for (symbol, code) in [
        ("", "bad_symbol"),
        ("A B", "bad_symbol"),
        (&*"S".repeat(65), "bad_symbol"),
    ] {
        assert_eq!(
            e.ingest(symbol, T0, 1, trade("1"), T0, &mut out).unwrap_err().code(),
            code
        );
    }
    for symbol in ["A", "B", "C"] {
        e.ingest(symbol, T0, 1, trade("1"), T0, &mut out).unwrap();
    }
    let err = e.ingest("D", T0, 1, trade("1"), T0, &mut out).unwrap_err();
    assert_eq!(err, TickError::Symbol(SymbolError::TooManyInstruments { limit: 3 }));
    assert_eq!(
        err.to_string(),
        "instrument: instrument limit of 3 reached: a new symbol cannot be added"
    );
    assert_eq!(e.instrument_count(), 3);
    e.ingest("A", T0 + 1, 2, trade("1"), T0, &mut out).unwrap();
}

#[test]
fn a_crash_across_an_unchanged_reload_fires_once() {
    let other = "[[rule]]\nid = \"other\"\nkind = \"stale_feed\"\nafter = \"1h\"\n";
    let e = engine(DD);
    let mut out = Vec::new();
    e.ingest("X", T0, 1, trade("100"), T0, &mut out).unwrap();
    e.ingest("X", T0 + S, 2, trade("95"), T0 + S, &mut out).unwrap();
    // Same rule, a new rule next to it: the drawdown window survives.
    let set = compile_texts(&[("a.toml".into(), DD.into()), ("b.toml".into(), other.into())]).unwrap();
    let installed = e.install(set, T0 + S, &mut out);
    assert_eq!(installed.version, 2);
    e.ingest("X", T0 + 2 * S, 3, trade("92"), T0 + 2 * S, &mut out).unwrap();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!((out[0].kind, out[0].ruleset_version), (AlertKind::Fired, 2));
    // Still active after another unchanged reload: no second alert.
    let set = compile_texts(&[("a.toml".into(), DD.into())]).unwrap();
    e.install(set, T0 + 2 * S, &mut out);
    e.ingest("X", T0 + 2 * S + 1, 4, trade("91"), T0 + 2 * S, &mut out)
        .unwrap();
    assert_eq!(out.len(), 1, "{out:?}");
}

#[test]
fn a_changed_or_removed_rule_closes_what_it_had_open() {
    let e = engine(DD);
    let mut out = Vec::new();
    e.ingest("X", T0, 1, trade("100"), T0, &mut out).unwrap();
    e.ingest("X", T0 + S, 2, trade("90"), T0 + S, &mut out).unwrap();
    assert_eq!(out.len(), 1);
    let changed = DD.replace("8%", "9%");
    e.install(compile_texts(&[("t.toml".into(), changed)]).unwrap(), T0 + S, &mut out);
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[1].kind, AlertKind::Resolved);
    assert_eq!(out[1].reason.as_deref(), Some("rule removed or changed by a reload"));
    assert_eq!(out[1].ruleset_version, 2);
    // The changed rule starts with fresh rule state but reads the same
    // market window, so it sees the fall in progress at once.
    e.ingest("X", T0 + 2 * S, 3, trade("80"), T0 + 2 * S, &mut out).unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!((out[2].kind, out[2].ruleset_version), (AlertKind::Fired, 2));
    assert_eq!(out[2].value("peak"), Some(px("100")));
    // Removing it closes it too.
    let stale = "[[rule]]\nid = \"other\"\nkind = \"stale_feed\"\nafter = \"1h\"\n";
    e.install(
        compile_texts(&[("t.toml".into(), stale.into())]).unwrap(),
        T0 + 2 * S,
        &mut out,
    );
    assert_eq!(out.len(), 4);
    assert_eq!((&*out[3].rule_id, out[3].kind), ("dd", AlertKind::Resolved));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// The drawdown rule fires exactly on the ticks where a naive scan of
    /// the window finds a fall of at least the threshold while the rule was
    /// not already active, and resolves exactly when the fall clears.
    #[test]
    fn drawdown_agrees_with_a_naive_scan(
        steps in prop::collection::vec((0i64..1_500, 9_000i64..11_000), 1..150),
    ) {
        let e = engine("[[rule]]\nid = \"dd\"\nkind = \"drawdown\"\nwindow = \"3s\"\nthreshold = \"5%\"\n");
        let mut history: Vec<(i64, i64)> = Vec::new();
        let mut active = false;
        let mut t = T0;
        for (i, (dt_ms, cents)) in steps.into_iter().enumerate() {
            t += dt_ms * 1_000_000;
            let price = Fixed::from_raw(cents * 1_000_000);
            history.push((t, price.raw()));
            let peak = history.iter().filter(|(ht, _)| *ht >= t - 3 * S).map(|h| h.1).max().unwrap();
            // fall / peak >= 5%  <=>  20 × fall >= peak
            let holds = 20 * i128::from(peak - price.raw()) >= i128::from(peak);
            let mut out = Vec::new();
            e.ingest("X", t, i as u64 + 1, TickValues::Trade { price, size: Fixed::ONE, side: None }, t, &mut out).unwrap();
            let expected = match (active, holds) {
                (false, true) => vec![AlertKind::Fired],
                (true, false) => vec![AlertKind::Resolved],
                _ => vec![],
            };
            prop_assert_eq!(out.iter().map(|a| a.kind).collect::<Vec<_>>(), expected);
            active = holds;
        }
    }
}
