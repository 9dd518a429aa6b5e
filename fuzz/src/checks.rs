//! The properties every hostile input must keep, written once for both
//! runners: the cargo-fuzz targets (`fuzz/fuzz_targets/`, nightly) and the
//! proptest runs (`tests/fuzz_inputs.rs`, stable, in CI).
//!
//! Each check takes one input, runs it through Airbag's real entry point
//! and panics (so either runner reports the input) when a property fails:
//! every error names where it is (rule files: file, line and column inside
//! the text; expressions: a column inside the text; ticks: the field), and
//! what is accepted is consistent (compiles the same twice, converts back
//! to the same value, evaluates without overflow).

use std::sync::OnceLock;

use airbag::ingest::TickError;
use airbag::model::{Alert, Fixed, TickValues};
use airbag::rules::{expr, RuleError, RuleSet, WindowRegistry};
use airbag::service::rulebook::compile_texts;
use airbag::wire::convert::{self, decode_batch, DecodedBatch};
use airbag::wire::{proto, tick_wire};
use airbag::{Engine, EngineConfig};

/// The bundled rule files (`rules/*.toml`), as named texts.
pub fn bundled_rule_files() -> Vec<(String, String)> {
    [
        ("00-instruments.toml", include_str!("../../rules/00-instruments.toml")),
        ("10-flash-crash.toml", include_str!("../../rules/10-flash-crash.toml")),
        (
            "20-circuit-breakers.toml",
            include_str!("../../rules/20-circuit-breakers.toml"),
        ),
        ("30-price-bands.toml", include_str!("../../rules/30-price-bands.toml")),
        (
            "40-market-quality.toml",
            include_str!("../../rules/40-market-quality.toml"),
        ),
        ("90-catch-all.toml", include_str!("../../rules/90-catch-all.toml")),
    ]
    .into_iter()
    .map(|(name, text)| (name.to_string(), text.to_string()))
    .collect()
}

/// The bundled rules, compiled once.
fn bundled_rules() -> &'static RuleSet {
    static RULES: OnceLock<RuleSet> = OnceLock::new();
    RULES.get_or_init(|| compile_texts(&bundled_rule_files()).unwrap_or_else(|e| panic!("bundled rules: {e:?}")))
}

/// A fresh engine running the bundled rules.
pub fn bundled_engine() -> Engine {
    let set = bundled_rules();
    Engine::new(
        EngineConfig {
            max_instruments: 64,
            ..EngineConfig::default()
        },
        RuleSet {
            version: 0,
            rules: set.rules.clone(),
            windows: set.windows.clone(),
            sources: set.sources.clone(),
            refdata: set.refdata.clone(),
        },
    )
}

/// Lines of `text` as the rule loader counts them (1-based), with each
/// line's length in characters.
fn line_lengths(text: &str) -> Vec<usize> {
    text.split('\n').map(|l| l.chars().count()).collect()
}

/// Compiles named rule texts and checks the result: every error is located
/// inside the text it names (or names the whole ruleset), errors of one
/// file come in reading order, and an accepted ruleset compiles the same a
/// second time.
pub fn rule_texts(files: &[(String, String)]) -> Result<RuleSet, Vec<RuleError>> {
    let result = compile_texts(files);
    match &result {
        Err(errors) => {
            assert!(!errors.is_empty(), "rejected without an error");
            for e in errors {
                check_rule_error(files, e);
            }
            for (name, _) in files {
                let positions: Vec<(usize, usize)> = errors
                    .iter()
                    .filter(|e| &e.file == name)
                    .map(|e| (e.line, e.column))
                    .collect();
                assert!(positions.is_sorted(), "{name}: errors out of reading order: {errors:?}");
            }
        }
        Ok(set) => {
            let again =
                compile_texts(files).unwrap_or_else(|e| panic!("accepted once, rejected the second time: {e:?}"));
            let describe = |s: &RuleSet| -> Vec<(String, String, String, usize)> {
                s.rules
                    .iter()
                    .map(|r| {
                        (
                            r.id.to_string(),
                            r.kind_name.to_string(),
                            r.source.file.clone(),
                            r.source.line,
                        )
                    })
                    .collect()
            };
            assert_eq!(describe(set), describe(&again), "the same texts compiled differently");
            assert_eq!(set.windows, again.windows);
            assert_eq!(set.sources.len(), files.len(), "one source per file");
            let mut ids: Vec<&str> = set.rules.iter().map(|r| &*r.id).collect();
            ids.sort_unstable();
            let count = ids.len();
            ids.dedup();
            assert_eq!(ids.len(), count, "duplicate rule ids accepted");
            for rule in &set.rules {
                let text = files
                    .iter()
                    .find(|(name, _)| *name == rule.source.file)
                    .map(|(_, text)| text)
                    .unwrap_or_else(|| panic!("rule {} from unknown file {}", rule.id, rule.source.file));
                let lines = line_lengths(text).len();
                assert!(
                    (1..=lines).contains(&rule.source.line),
                    "rule {} at line {} of a {lines}-line file",
                    rule.id,
                    rule.source.line
                );
            }
        }
    }
    result
}

fn check_rule_error(files: &[(String, String)], e: &RuleError) {
    assert!(!e.message.trim().is_empty(), "error without a message: {e:?}");
    assert_eq!(e.line == 0, e.column == 0, "half a position: {e:?}");
    let Some((_, text)) = files.iter().find(|(name, _)| *name == e.file) else {
        assert_eq!(e.file, "(ruleset)", "error names no given file: {e:?}");
        assert_eq!(e.line, 0, "a ruleset-wide error has no position: {e:?}");
        return;
    };
    if e.line == 0 {
        return;
    }
    let lines = line_lengths(text);
    assert!(e.line <= lines.len(), "{e}: line past the end ({} lines)", lines.len());
    let width = lines[e.line - 1];
    assert!(
        e.column <= width + 1,
        "{e}: column past the end of its line ({width} characters)"
    );
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("{}:{}:{}: ", e.file, e.line, e.column)),
        "not shown as file:line:col: {shown}"
    );
}

/// Compiles an expression and checks it: an error's column is inside the
/// text (or just past its end) and moves with the text when the text is
/// indented; an accepted expression compiles the same when indented; and
/// a rule with it as its condition loads and evaluates `ticks` (as
/// `(kind, price)` steps) without a panic.
pub fn expression(text: &str, ticks: &[(u8, i64)]) -> Result<(), expr::ExprError> {
    let mut registry = WindowRegistry::default();
    let result = expr::compile(text, &mut registry);
    let chars = text.chars().count();
    let mut indented_registry = WindowRegistry::default();
    let indented = expr::compile(&format!("  {text}"), &mut indented_registry);
    match &result {
        Err(e) => {
            assert!(!e.message.trim().is_empty(), "`{text}`: error without a message");
            assert!(
                (1..=chars + 1).contains(&e.column),
                "`{text}`: column {} outside 1..={}: {}",
                e.column,
                chars + 1,
                e.message
            );
            if !text.trim().is_empty() {
                let moved = indented.as_ref().err().map(|i| i.column);
                assert_eq!(
                    moved,
                    Some(e.column + 2),
                    "`{text}`: indenting moved the error elsewhere: {indented:?}"
                );
            }
        }
        Ok(compiled) => {
            let again = indented.unwrap_or_else(|e| panic!("`{text}` compiles, indented it does not: {e}"));
            assert_eq!(
                compiled.slots().len(),
                again.slots().len(),
                "`{text}`: windows differ when indented"
            );
            assert_eq!(registry.len(), indented_registry.len());
            assert_eq!(compiled.triggers(), again.triggers());
            evaluate_rule(text, ticks);
        }
    }
    result.map(|_| ())
}

/// A rule whose condition is `condition`, loaded and fed `(kind, price)`
/// steps a quarter of a second apart on one instrument.
fn evaluate_rule(condition: &str, steps: &[(u8, i64)]) {
    let mut rule = toml::Table::new();
    rule.insert("id".into(), "fuzzed".into());
    rule.insert("when".into(), condition.into());
    rule.insert("severity".into(), "warning".into());
    let mut file = toml::Table::new();
    file.insert("rule".into(), toml::Value::Array(vec![toml::Value::Table(rule)]));
    let text = toml::to_string(&file).expect("a TOML table serializes");
    let files = [("fuzzed.toml".to_string(), text)];
    let Ok(set) = rule_texts(&files) else {
        return;
    };
    let engine = Engine::new(
        EngineConfig {
            max_instruments: 4,
            ..EngineConfig::default()
        },
        set,
    );
    let mut alerts: Vec<Alert> = Vec::new();
    let start = 1_700_000_000_000_000_000i64;
    for (i, &(kind, raw)) in steps.iter().enumerate() {
        let now = start + i as i64 * 250_000_000;
        let price = Fixed::from_raw(raw.checked_abs().unwrap_or(i64::MAX).max(1));
        let size = Fixed::from_raw((raw % 1_000_000_000_000).abs());
        let values = match kind % 4 {
            0 => TickValues::Trade {
                price,
                size,
                side: None,
            },
            1 => TickValues::Quote {
                bid: price,
                ask: Fixed::from_raw(price.raw().saturating_add(size.raw())),
                bid_size: size,
                ask_size: size,
            },
            2 => TickValues::Mark { price },
            _ => TickValues::Index { price },
        };
        engine.check_timers(now, &mut alerts);
        engine
            .ingest("FUZZ-USDT", now, i as u64 + 1, values, now, &mut alerts)
            .unwrap_or_else(|e| panic!("a valid tick in time order was rejected: {e}"));
    }
    engine.check_timers(
        start + steps.len() as i64 * 250_000_000 + 86_400_000_000_000,
        &mut alerts,
    );
    for alert in &alerts {
        assert_eq!(&*alert.rule_id, "fuzzed");
        assert_eq!(&*alert.instrument, "FUZZ-USDT");
    }
}

/// The exact value of a wire decimal in units of 10^-8, worked out
/// independently of the server's conversion; `Err` with the reason's text.
pub fn expected_raw(d: &proto::Decimal) -> Result<i64, &'static str> {
    let m = i128::from(d.mantissa);
    let raw = if d.scale <= 8 {
        m * 10i128.pow(8 - d.scale)
    } else if m == 0 {
        0
    } else {
        // |m| < 10^19, so no larger power of ten divides it.
        let k = d.scale - 8;
        if k > 19 || m % 10i128.pow(k) != 0 {
            return Err("has more than 8 decimal places");
        }
        m / 10i128.pow(k)
    };
    i64::try_from(raw).map_err(|_| "is outside the supported range")
}

/// The fields of a wire tick in the order ingest converts them, with
/// their names as rejections give them.
fn wire_fields(values: &proto::tick::Values) -> Vec<(&'static str, Option<&proto::Decimal>)> {
    use proto::tick::Values;
    match values {
        Values::Trade(t) => vec![("price", t.price.as_ref()), ("size", t.size.as_ref())],
        Values::Quote(q) => vec![
            ("bid", q.bid.as_ref()),
            ("ask", q.ask.as_ref()),
            ("bid_size", q.bid_size.as_ref()),
            ("ask_size", q.ask_size.as_ref()),
        ],
        Values::Mark(p) => vec![("mark", p.price.as_ref())],
        Values::Index(p) => vec![("index", p.price.as_ref())],
    }
}

/// What ingest must say about one wire tick, worked out independently:
/// `Ok` when every check passes, else the rejection's code and the start
/// of its reason.
pub fn expected_verdict(tick: &proto::Tick) -> Result<(), (&'static str, String)> {
    let Some(values) = &tick.values else {
        return Err(("missing_values", "tick has no values".into()));
    };
    let mut raws = Vec::new();
    for (field, d) in wire_fields(values) {
        let Some(d) = d else {
            return Err(("missing_values", format!("{field}: is missing")));
        };
        match expected_raw(d) {
            Ok(raw) => raws.push((field, raw)),
            Err(why) => return Err(("bad_value", format!("{field}: {why}"))),
        }
    }
    if tick.event_time_ns <= 0 {
        return Err(("bad_time", "event_time:".into()));
    }
    for &(field, raw) in &raws {
        let is_size = field.ends_with("size");
        if (is_size && raw < 0) || (!is_size && raw <= 0) {
            return Err(("bad_value", format!("{field}: must")));
        }
    }
    if let [("bid", bid), ("ask", ask), ..] = raws[..] {
        if bid > ask {
            return Err(("crossed_quote", "quote is crossed".into()));
        }
    }
    let symbol = &tick.instrument;
    if symbol.is_empty() || symbol.len() > 64 || symbol.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(("bad_symbol", "instrument: symbol".into()));
    }
    Ok(())
}

/// Decodes `bytes` as a `TickBatch` with prost and checks that `Ingest`'s
/// own reader ([`tick_wire`]) reads the same; checks every tick's verdict
/// against [`expected_verdict`]; accepted values convert back to the same
/// wire value. Then feeds the accepted ticks to `engine` (the engine may
/// refuse only for order, duplicates or its instrument cap) and runs its
/// timers a day later. Returns how many ticks the engine applied, or
/// `None` when the bytes are not a `TickBatch`.
pub fn tick_batch(bytes: &[u8], engine: &Engine) -> Option<usize> {
    let decoded = decode_batch(bytes);
    check_wire_reader(bytes, decoded.as_ref());
    let decoded = decoded.ok()?;
    assert_eq!(decoded.ticks.len(), decoded.batch.ticks.len());
    let mut applied = 0;
    let mut alerts: Vec<Alert> = Vec::new();
    let mut latest = 0i64;
    for (tick, verdict) in decoded.batch.ticks.iter().zip(&decoded.ticks) {
        let expected = expected_verdict(tick);
        match (verdict, &expected) {
            (Ok(values), Ok(())) => {
                check_round_trip(tick, values);
                latest = latest.max(tick.event_time_ns);
                match engine.ingest(
                    &tick.instrument,
                    tick.event_time_ns,
                    tick.seq,
                    *values,
                    tick.event_time_ns,
                    &mut alerts,
                ) {
                    Ok(_) => applied += 1,
                    Err(e) => assert!(
                        ["duplicate", "late", "too_many_instruments"].contains(&e.code().as_str()),
                        "the engine refused a valid tick: {e} ({tick:?})"
                    ),
                }
            }
            (Err(why), Err((code, start))) => {
                check_rejection(why);
                assert_eq!(why.code().as_str(), *code, "{tick:?}: {why}");
                assert!(
                    why.to_string().starts_with(start.as_str()),
                    "{tick:?}: `{why}`, expected `{start}…`"
                );
            }
            (got, _) => panic!("{tick:?}: ingest says {got:?}, expected {expected:?}"),
        }
    }
    engine.check_timers(latest.saturating_add(86_400_000_000_000), &mut alerts);
    for alert in &alerts {
        assert!(!alert.instrument.is_empty());
    }
    Some(applied)
}

/// `Ingest` reads batches by hand ([`tick_wire`]): it must read the ticks
/// prost reads, with the same values or rejection, and refuse what prost
/// refuses with prost's message.
fn check_wire_reader(bytes: &[u8], by_prost: Result<&DecodedBatch, &prost::DecodeError>) {
    let mut ticks = Vec::new();
    let by_hand = tick_wire::read_batch(bytes, |t| {
        ticks.push((t.instrument.to_string(), t.event_time_ns, t.seq, t.values));
    });
    match (by_prost, by_hand) {
        (Ok(decoded), Ok(batch_id)) => {
            assert_eq!(batch_id, decoded.batch.batch_id);
            let expected: Vec<_> = decoded
                .batch
                .ticks
                .iter()
                .map(|t| (t.instrument.clone(), t.event_time_ns, t.seq, convert::tick_values(t)))
                .collect();
            assert_eq!(ticks, expected);
        }
        (Err(e), Err(ours)) => assert_eq!(ours.to_string(), e.to_string()),
        (prost, ours) => panic!("prost read {prost:?}, tick_wire read {ours:?}"),
    }
}

/// A rejection is one line that says what was wrong.
fn check_rejection(why: &TickError) {
    let reason = why.to_string();
    assert!(
        !reason.is_empty() && !reason.contains('\n'),
        "unclear reason: {reason:?}"
    );
    assert!(
        airbag::ingest::RejectCode::from_name(why.code().as_str()) == Some(why.code()),
        "unknown code {}",
        why.code()
    );
}

/// Every decimal of an accepted tick is exactly its wire value, and the
/// shortest encoding of that value decodes to it again.
fn check_round_trip(tick: &proto::Tick, values: &TickValues) {
    let got: Vec<Fixed> = match *values {
        TickValues::Trade { price, size, .. } => vec![price, size],
        TickValues::Quote {
            bid,
            ask,
            bid_size,
            ask_size,
        } => vec![bid, ask, bid_size, ask_size],
        TickValues::Mark { price } | TickValues::Index { price } => vec![price],
    };
    let wire = wire_fields(tick.values.as_ref().expect("accepted tick has values"));
    assert_eq!(got.len(), wire.len());
    for (value, (field, d)) in got.iter().zip(wire) {
        let d = d.expect("accepted field is present");
        assert_eq!(Ok(value.raw()), expected_raw(d), "{field}: {d:?} became {value}");
        let shortest = convert::decimal_of(*value);
        let back = airbag::ingest::scaled_field(field, shortest.mantissa, shortest.scale);
        assert_eq!(
            back,
            Ok(*value),
            "{field}: {value} does not survive its own encoding {shortest:?}"
        );
    }
}
