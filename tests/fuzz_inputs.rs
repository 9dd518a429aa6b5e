//! Hostile input on the stable toolchain: proptest drives the three entry
//! points the cargo-fuzz targets drive (rule files, expressions, tick
//! batches) with arbitrary text and bytes and with structure-aware inputs
//! (mutated real rule files, generated expressions, protobuf batches full
//! of extreme values). The properties are those of `fuzz/src/checks.rs`,
//! shared with the fuzz targets: no panic, every error located, accepted
//! input consistent.
//!
//! Case counts are small so the run takes seconds; `PROPTEST_CASES=N`
//! raises them all (`scripts/fuzz.sh` does when no nightly toolchain is
//! available). Inputs that once broke a property are kept as plain tests
//! at the end.

#[path = "../fuzz/src/checks.rs"]
mod checks;

use airbag::state::MAX_SYMBOL_LEN;
use airbag::wire::proto;
use proptest::prelude::*;
use proptest::sample::select;
use prost::Message;

/// `default` cases, or `PROPTEST_CASES` when set.
fn config(default: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn one_file(name: &str, text: &str) -> Vec<(String, String)> {
    vec![(name.to_string(), text.to_string())]
}

// ---------------------------------------------------------------------
// Rule files

/// Text that breaks TOML, rule keys or values in interesting ways.
const RULE_TOKENS: &[&str] = &[
    "\"",
    "'",
    "[",
    "]]",
    "[[rule]]",
    "[[rule.test]]",
    "[[rule.tiers]]",
    "=",
    "\n",
    "\r\n",
    "\t",
    "\u{0}",
    "\u{7f}",
    "\u{feff}",
    "é",
    "🚨",
    "#",
    "{",
    "}",
    ",",
    "\\u0000",
    "\\",
    "nan",
    "-inf",
    "1e308",
    "-0",
    "9223372036854775807",
    "-9223372036854775808",
    "92233720368.54775807",
    "0.000000001",
    "100000d",
    "106751d",
    "9223372036854775807ns",
    "0s",
    "-1s",
    "1m30s",
    "0%",
    "-5%",
    "100000000000%",
    "0.0000001%",
    "50bp",
    "BTC-*",
    "[!",
    "{a,",
    "**",
    "drawdown",
    "circuit_breaker",
    "price_band",
    "when = \"price > 1\"",
    "window = \"3s\"",
    "id = \"x\"",
];

#[derive(Clone, Debug)]
enum Mutation {
    Delete { at: f64, len: usize },
    Insert { at: f64, token: &'static str },
    DuplicateLine { at: f64 },
    SwapLines { a: f64, b: f64 },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0.0..1.0, 1usize..40).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (0.0..1.0, select(RULE_TOKENS)).prop_map(|(at, token)| Mutation::Insert { at, token }),
        (0.0..1.0).prop_map(|at| Mutation::DuplicateLine { at }),
        (0.0..1.0, 0.0..1.0).prop_map(|(a, b)| Mutation::SwapLines { a, b }),
    ]
}

/// The char boundary nearest below `fraction` of the text.
fn boundary(text: &str, fraction: f64) -> usize {
    let mut at = ((text.len() as f64) * fraction) as usize;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn apply(text: &mut String, m: &Mutation) {
    match *m {
        Mutation::Delete { at, len } => {
            let start = boundary(text, at);
            let end = boundary(text, ((start + len) as f64 / text.len().max(1) as f64).min(1.0));
            if end > start {
                text.replace_range(start..end, "");
            }
        }
        Mutation::Insert { at, token } => {
            let at = boundary(text, at);
            text.insert_str(at, token);
        }
        Mutation::DuplicateLine { at } => {
            let lines: Vec<&str> = text.split('\n').collect();
            let i = ((lines.len() as f64) * at) as usize % lines.len();
            let mut out: Vec<&str> = lines.clone();
            out.insert(i, lines[i]);
            *text = out.join("\n");
        }
        Mutation::SwapLines { a, b } => {
            let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
            let n = lines.len();
            lines.swap(((n as f64) * a) as usize % n, ((n as f64) * b) as usize % n);
            *text = lines.join("\n");
        }
    }
}

/// A bundled rule file with a few mutations.
fn mutated_rule_file() -> impl Strategy<Value = (String, String)> {
    let files = checks::bundled_rule_files();
    (select(files), prop::collection::vec(mutation(), 1..6)).prop_map(|((name, mut text), mutations)| {
        for m in &mutations {
            apply(&mut text, m);
        }
        (name, text)
    })
}

/// Every value a rule file may hold in quotes, hostile ones included.
fn any_quoted_value() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        select(DURATIONS),
        select(FRACTIONS),
        select(RULE_TOKENS),
        select(FIELDS),
        select(KINDS)
    ]
}

/// Replaces the content of the `index`-th (modulo their count) quoted
/// string of `text` with `value`.
fn swap_value(text: &mut String, index: usize, value: &str) {
    let quotes: Vec<usize> = text.match_indices('"').map(|(i, _)| i).collect();
    let pairs = quotes.len() / 2;
    if pairs == 0 {
        return;
    }
    let k = index % pairs;
    let (open, close) = (quotes[2 * k], quotes[2 * k + 1]);
    if !text[open + 1..close].contains('\n') {
        text.replace_range(open + 1..close, value);
    }
}

/// A bundled rule file, still well formed, with a few quoted values
/// swapped for others (durations, fractions, symbols, hostile text) and
/// perhaps a generated `[[rule.test]]` for its last rule: mostly rules
/// that compile, with values at the edges.
fn rule_file_with_swapped_values() -> impl Strategy<Value = (String, String)> {
    let files = checks::bundled_rule_files();
    (
        select(files),
        prop::collection::vec((any::<usize>(), any_quoted_value()), 0..4),
        prop::option::of(rule_test()),
    )
        .prop_map(|((name, mut text), swaps, test)| {
            for (index, value) in swaps {
                swap_value(&mut text, index, value);
            }
            if let Some(test) = test {
                text.push('\n');
                text.push_str(&test);
            }
            (name, text)
        })
}

const DURATIONS: &[&str] = &[
    "3s",
    "500ms",
    "1m30s",
    "0s",
    "1ns",
    "1d",
    "2d",
    "100000d",
    "106751d",
    "9223372036854775807ns",
    "99999999999999999999s",
    "-1s",
    "3",
    "3 s",
    "",
    "1.5s",
    "s",
    "3ſ",
];
const FRACTIONS: &[&str] = &[
    "8%",
    "0%",
    "100%",
    "1000%",
    "-5%",
    "50bp",
    "0.000001%",
    "0.0000001%",
    "92233720368%",
    "99999999999999999999%",
    "NaN%",
    "inf%",
    "8",
    "%",
];
const NUMBERS: &[&str] = &[
    "1",
    "0.5",
    "\"0.01\"",
    "0",
    "-1",
    "1e308",
    "-1e-308",
    "nan",
    "inf",
    "9223372036854775807",
    "\"92233720368.54775807\"",
    "\"92233720368.54775808\"",
    "\"0.000000001\"",
    "\"1e3\"",
    "\"\"",
];
const SYMBOLS: &[&str] = &[
    "\"BTC-USDT\"",
    "\"*\"",
    "\"BTC-*\"",
    "\"\"",
    "\"[\"",
    "\"{a,b\"",
    "\"a\\tb\"",
    "\"\\u0000\"",
    "\"🚨\"",
];
const KINDS: &[&str] = &[
    "drawdown",
    "rally",
    "velocity",
    "spread",
    "mark_index_deviation",
    "volume_spike",
    "stale_feed",
    "circuit_breaker",
    "price_band",
    "no_such_kind",
    "",
];
const FIELDS: &[&str] = &["price", "mid", "mark", "index", "bid", "size", "nope"];

/// One `key = value` line of a generated rule.
fn rule_line() -> impl Strategy<Value = String> {
    let quoted = |pool: &'static [&'static str]| select(pool).prop_map(|v| format!("\"{v}\""));
    prop_oneof![
        quoted(DURATIONS).prop_map(|v| format!("window = {v}")),
        quoted(DURATIONS).prop_map(|v| format!("cooldown = {v}")),
        quoted(DURATIONS).prop_map(|v| format!("for = {v}")),
        quoted(DURATIONS).prop_map(|v| format!("after = {v}")),
        quoted(DURATIONS).prop_map(|v| format!("baseline = {v}")),
        quoted(DURATIONS).prop_map(|v| format!("reference_window = {v}")),
        quoted(DURATIONS).prop_map(|v| format!("limit_for = {v}")),
        quoted(DURATIONS).prop_map(|v| format!("pause = {v}")),
        quoted(FRACTIONS).prop_map(|v| format!("threshold = {v}")),
        quoted(FRACTIONS).prop_map(|v| format!("max_spread = {v}")),
        quoted(FRACTIONS).prop_map(|v| format!("band = {v}")),
        select(NUMBERS).prop_map(|v| format!("tick_size = {v}")),
        select(NUMBERS).prop_map(|v| format!("factor = {v}")),
        select(NUMBERS).prop_map(|v| format!("reference_price = {v}")),
        any::<i64>().prop_map(|v| format!("ticks = {v}")),
        quoted(FIELDS).prop_map(|v| format!("field = {v}")),
        select(SYMBOLS).prop_map(|v| format!("instruments = [{v}]")),
        select(SYMBOLS).prop_map(|v| format!("exclude = [{v}]")),
        select(&["info", "warning", "critical", "fatal", ""][..]).prop_map(|v| format!("severity = \"{v}\"")),
        select(&["halt", "resume", "notify", "\"\"", "halt\", \"halt"][..])
            .prop_map(|v| format!("actions = [\"{v}\"]")),
        select(&["shadow", "active", "off"][..]).prop_map(|v| format!("mode = \"{v}\"")),
        select(&["down", "up", "both", "sideways"][..]).prop_map(|v| format!("direction = \"{v}\"")),
        select(&["day", "never", ""][..]).prop_map(|v| format!("latch = \"{v}\"")),
    ]
}

/// A `[[rule.test]]` table with steps at extreme times and prices.
fn rule_test() -> impl Strategy<Value = String> {
    let step = (select(DURATIONS), select(NUMBERS), 0u8..5).prop_map(|(at, n, shape)| match shape {
        0 => format!("{{ at = \"{at}\", price = {n} }}"),
        1 => format!("{{ at = \"{at}\", bid = {n}, ask = {n} }}"),
        2 => format!("{{ at = \"{at}\", mark = {n} }}"),
        3 => format!("{{ at = \"{at}\", price = {n}, size = {n} }}"),
        _ => format!("{{ at = \"{at}\" }}"),
    });
    (
        prop::collection::vec(step, 0..6),
        select(&["fired", "resolved", "tripped", "nope"][..]),
        select(DURATIONS),
    )
        .prop_map(|(steps, kind, at)| {
            format!(
                "[[rule.test]]\nticks = [{}]\nexpect = [{{ kind = \"{kind}\", at = \"{at}\" }}]\n",
                steps.join(", ")
            )
        })
}

/// A file of one to three generated rules.
fn generated_rule_file() -> impl Strategy<Value = String> {
    let tier = (select(FRACTIONS), select(DURATIONS))
        .prop_map(|(m, h)| format!("[[rule.tiers]]\nmove = \"{m}\"\nhalt = \"{h}\"\n"));
    let rule = (
        0u8..4,
        select(KINDS),
        prop::collection::vec(rule_line(), 0..8),
        prop::collection::vec(tier, 0..3),
        prop::option::of(rule_test()),
    )
        .prop_map(|(id, kind, lines, tiers, test)| {
            format!(
                "[[rule]]\nid = \"r{id}\"\nkind = \"{kind}\"\n{}\n{}{}",
                lines.join("\n"),
                tiers.concat(),
                test.unwrap_or_default()
            )
        });
    prop::collection::vec(rule, 1..4).prop_map(|rules| rules.join("\n"))
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn rule_loader_takes_any_text(text in "(?s).{0,400}") {
        let _ = checks::rule_texts(&one_file("any.toml", &text));
    }

    #[test]
    fn rule_loader_takes_any_bytes_that_are_utf8(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = checks::rule_texts(&one_file("bytes.toml", &text));
    }
}

proptest! {
    #![proptest_config(config(96))]

    #[test]
    fn rule_loader_takes_mutated_rule_files((name, text) in mutated_rule_file()) {
        let _ = checks::rule_texts(&one_file(&name, &text));
    }

    #[test]
    fn rule_loader_takes_rule_files_with_values_at_the_edges((name, text) in rule_file_with_swapped_values()) {
        let _ = checks::rule_texts(&one_file(&name, &text));
    }

    #[test]
    fn rule_loader_takes_generated_rules(text in generated_rule_file()) {
        let _ = checks::rule_texts(&one_file("generated.toml", &text));
    }

    #[test]
    fn a_mutated_file_next_to_good_ones_is_located_in_that_file((name, text) in mutated_rule_file()) {
        let mut files = checks::bundled_rule_files();
        let index = files.iter().position(|(n, _)| *n == name).expect("a bundled file");
        files[index].1 = text;
        // Rules' self-tests run against the reference data, so a changed
        // instrument table may fail a test in a rule file, located at that
        // test; any other error belongs to the mutated file.
        let reference_data = files[index].1.contains("[[instrument]]") || name.starts_with("00-instruments");
        if let Err(errors) = checks::rule_texts(&files) {
            for e in &errors {
                let own = e.file == name || e.file == "(ruleset)";
                let failed_self_test = reference_data && e.message.starts_with("test `");
                prop_assert!(own || failed_self_test, "{e} blames an untouched file");
            }
        }
    }
}

// ---------------------------------------------------------------------
// Expressions

const NUMBER_LEAVES: &[&str] = &[
    "0",
    "1",
    "2.5",
    "8%",
    "50bp",
    "0.00000001",
    "0.000000001",
    "99999999999999999999999999999999999999999",
    "92233720368.54775807",
    "1e5",
    "price",
    "size",
    "notional",
    "bid",
    "ask",
    "mid",
    "spread",
    "mark",
    "index",
];
const WINDOW_FUNCTIONS: &[&str] = &[
    "max", "min", "sum", "count", "mean", "first", "drawdown", "rally", "change", "range",
];
const COMPARISONS: &[&str] = &["<", "<=", ">", ">=", "==", "!="];
const ARITHMETIC: &[&str] = &["+", "-", "*", "/"];

/// A numeric expression, mostly well typed.
fn number_expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        4 => select(NUMBER_LEAVES).prop_map(str::to_string),
        2 => (select(WINDOW_FUNCTIONS), select(FIELDS), select(DURATIONS))
            .prop_map(|(f, field, w)| format!("{f}({field}, {w})")),
        1 => select(DURATIONS).prop_map(|w| format!("vwap({w})")),
        1 => (select(DURATIONS), select(DURATIONS)).prop_map(|(w, l)| format!("mean(volume({w}), {l})")),
        1 => (select(FIELDS), select(DURATIONS), select(DURATIONS))
            .prop_map(|(f, w, l)| format!("mean(sum({f}, {w}), {l})")),
    ];
    leaf.prop_recursive(5, 48, 2, |inner| {
        prop_oneof![
            (inner.clone(), select(ARITHMETIC), inner.clone()).prop_map(|(a, op, b)| format!("{a} {op} {b}")),
            inner.clone().prop_map(|a| format!("-{a}")),
            inner.clone().prop_map(|a| format!("abs({a})")),
            inner.prop_map(|a| format!("({a})")),
        ]
    })
}

/// A condition, mostly well typed.
fn condition_expr() -> impl Strategy<Value = String> {
    let comparison = (number_expr(), select(COMPARISONS), number_expr()).prop_map(|(a, op, b)| format!("{a} {op} {b}"));
    comparison.prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (inner.clone(), select(&["and", "or"][..]), inner.clone()).prop_map(|(a, op, b)| format!("{a} {op} {b}")),
            inner.clone().prop_map(|a| format!("not {a}")),
            inner.prop_map(|a| format!("({a})")),
        ]
    })
}

/// Ticks for evaluating a compiled expression: extreme prices included.
fn eval_ticks() -> impl Strategy<Value = Vec<(u8, i64)>> {
    let price = prop_oneof![
        1_000_000_000i64..20_000_000_000,
        Just(1),
        Just(i64::MAX),
        Just(i64::MIN),
        any::<i64>(),
    ];
    prop::collection::vec((any::<u8>(), price), 0..24)
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn expressions_take_any_text(text in "(?s).{0,120}") {
        let _ = checks::expression(&text, &[]);
    }

    #[test]
    fn expressions_take_token_soup(tokens in prop::collection::vec(
        select(&["price", "(", ")", ",", "3s", "8%", "and", "or", "not", "<", ">=", "-", "*", "/", "max", "vwap",
                 "mean", "volume", "abs", "1", "0", "9999999999999999999999", "\u{0}", "é", " ", "="][..]),
        0..30,
    )) {
        let _ = checks::expression(&tokens.concat(), &[]);
    }
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn generated_conditions_compile_and_evaluate(text in condition_expr(), ticks in eval_ticks()) {
        let _ = checks::expression(&text, &ticks);
    }

    #[test]
    fn mutated_conditions_are_located(text in condition_expr(), m in mutation()) {
        let mut text = text;
        apply(&mut text, &m);
        let _ = checks::expression(&text, &[]);
    }
}

// ---------------------------------------------------------------------
// Tick batches

/// Symbols a hostile client might send.
fn symbol() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(&["BTC-USDT", "ETH-USDT-SWAP", "SOL-USDT", "X"][..]).prop_map(str::to_string),
        1 => Just(String::new()),
        1 => Just("S".repeat(MAX_SYMBOL_LEN)),
        1 => Just("S".repeat(MAX_SYMBOL_LEN + 1)),
        1 => Just("é".repeat(MAX_SYMBOL_LEN / 2 + 1)),
        1 => Just("L".repeat(100_000)),
        1 => select(&["BTC\nUSDT", "BTC USDT", "\u{0}", "BTC\u{a0}USDT", "\u{202e}BTC", "🚨"][..])
            .prop_map(str::to_string),
        1 => "\\PC{1,70}",
    ]
}

/// Wire decimals, extreme ones included (the wire has no NaN or infinity:
/// these are its hostile shapes).
fn decimal() -> impl Strategy<Value = Option<proto::Decimal>> {
    let mantissa = prop_oneof![
        3 => 1i64..100_000_000_000,
        1 => Just(0i64),
        1 => Just(-1i64),
        1 => Just(i64::MAX),
        1 => Just(i64::MIN),
        2 => any::<i64>(),
    ];
    let scale = prop_oneof![
        3 => 0u32..=8,
        1 => 9u32..=30,
        1 => Just(u32::MAX),
        1 => any::<u32>(),
    ];
    prop_oneof![
        8 => (mantissa, scale).prop_map(|(mantissa, scale)| Some(proto::Decimal { mantissa, scale })),
        1 => Just(None),
    ]
}

fn values() -> impl Strategy<Value = Option<proto::tick::Values>> {
    use proto::tick::Values;
    prop_oneof![
        4 => (decimal(), decimal(), any::<i32>())
            .prop_map(|(price, size, side)| Some(Values::Trade(proto::Trade { price, size, side }))),
        2 => (decimal(), decimal(), decimal(), decimal()).prop_map(|(bid, ask, bid_size, ask_size)| {
            Some(Values::Quote(proto::Quote { bid, ask, bid_size, ask_size }))
        }),
        1 => decimal().prop_map(|price| Some(Values::Mark(proto::Price { price }))),
        1 => decimal().prop_map(|price| Some(Values::Index(proto::Price { price }))),
        1 => Just(None),
    ]
}

fn wire_tick() -> impl Strategy<Value = proto::Tick> {
    let time = prop_oneof![
        4 => 1_600_000_000_000_000_000i64..1_800_000_000_000_000_000,
        1 => Just(0i64),
        1 => Just(-1i64),
        1 => Just(1i64),
        1 => Just(i64::MIN),
        1 => Just(i64::MAX),
    ];
    let seq = prop_oneof![3 => 1u64..1_000, 1 => Just(0u64), 1 => Just(u64::MAX)];
    (symbol(), time, seq, values()).prop_map(|(instrument, event_time_ns, seq, values)| proto::Tick {
        instrument,
        event_time_ns,
        seq,
        values,
    })
}

fn wire_batch() -> impl Strategy<Value = proto::TickBatch> {
    (any::<u64>(), prop::collection::vec(wire_tick(), 0..24))
        .prop_map(|(batch_id, ticks)| proto::TickBatch { batch_id, ticks })
}

#[derive(Clone, Debug)]
enum ByteMutation {
    Flip { at: f64, bits: u8 },
    Insert { at: f64, byte: u8 },
    Truncate { at: f64 },
}

fn byte_mutation() -> impl Strategy<Value = ByteMutation> {
    prop_oneof![
        (0.0..1.0, 1u8..=255).prop_map(|(at, bits)| ByteMutation::Flip { at, bits }),
        (0.0..1.0, any::<u8>()).prop_map(|(at, byte)| ByteMutation::Insert { at, byte }),
        (0.0..1.0).prop_map(|at| ByteMutation::Truncate { at }),
    ]
}

fn mutate_bytes(bytes: &mut Vec<u8>, m: &ByteMutation) {
    let at = |f: f64, len: usize| ((len as f64) * f) as usize;
    match *m {
        ByteMutation::Flip { at: f, bits } if !bytes.is_empty() => {
            let i = at(f, bytes.len()).min(bytes.len() - 1);
            bytes[i] ^= bits;
        }
        ByteMutation::Flip { .. } => {}
        ByteMutation::Insert { at: f, byte } => {
            let i = at(f, bytes.len());
            bytes.insert(i, byte);
        }
        ByteMutation::Truncate { at: f } => bytes.truncate(at(f, bytes.len())),
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn tick_decoder_takes_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let engine = checks::bundled_engine();
        let _ = checks::tick_batch(&bytes, &engine);
    }

    #[test]
    fn tick_decoder_judges_every_generated_tick(batch in wire_batch()) {
        let engine = checks::bundled_engine();
        let decoded = checks::tick_batch(&batch.encode_to_vec(), &engine);
        prop_assert!(decoded.is_some(), "a well-formed batch failed to decode");
    }

    #[test]
    fn tick_decoder_takes_mutated_encodings(batch in wire_batch(), mutations in prop::collection::vec(byte_mutation(), 1..5)) {
        let mut bytes = batch.encode_to_vec();
        for m in &mutations {
            mutate_bytes(&mut bytes, m);
        }
        let engine = checks::bundled_engine();
        let _ = checks::tick_batch(&bytes, &engine);
    }
}

// ---------------------------------------------------------------------
// Inputs that once broke a property

fn trade_tick(price: proto::Decimal, size: proto::Decimal) -> proto::Tick {
    proto::Tick {
        instrument: "BTC-USDT".into(),
        event_time_ns: 1_700_000_000_000_000_000,
        seq: 1,
        values: Some(proto::tick::Values::Trade(proto::Trade {
            price: Some(price),
            size: Some(size),
            side: 1,
        })),
    }
}

fn verdicts(ticks: Vec<proto::Tick>) -> Vec<Result<(), String>> {
    let bytes = proto::TickBatch { batch_id: 1, ticks }.encode_to_vec();
    let decoded = airbag::wire::convert::decode_batch(&bytes).expect("decodes");
    decoded
        .ticks
        .into_iter()
        .map(|t| t.map(|_| ()).map_err(|e| e.to_string()))
        .collect()
}

/// Found by `tick_decoder_judges_every_generated_tick`: `{0, 4294967295}`
/// was refused as having "more than 8 decimal places", though it is
/// exactly zero.
#[test]
fn zero_at_any_scale_is_zero() {
    let d = |mantissa, scale| proto::Decimal { mantissa, scale };
    assert_eq!(
        verdicts(vec![
            trade_tick(d(0, u32::MAX), d(1, 0)),
            trade_tick(d(1, 0), d(0, u32::MAX)),
            trade_tick(d(1, 0), d(0, 40)),
            trade_tick(d(1, 40), d(0, 0)),
        ]),
        vec![
            Err("price: must be above zero, got 0".to_string()),
            Ok(()),
            Ok(()),
            Err("price: has more than 8 decimal places".to_string()),
        ]
    );
}

/// Found by `rule_loader_takes_rule_files_with_values_at_the_edges`: a
/// rule test step at `100000d` overflowed the test clock (a panic in debug
/// builds, a wrapped negative time in release).
#[test]
fn a_rule_test_step_past_the_end_of_the_clock_is_a_located_error() {
    let text = r#"[[rule]]
id = "far"
kind = "drawdown"
instruments = ["BTC-USDT"]
window = "3s"
threshold = "8%"
severity = "critical"

[[rule.test]]
name = "far future"
ticks = [{ at = "0s", price = "100" }, { at = "100000d", price = "90" }]
expect = [{ kind = "fired", at = "100000d" }]
"#;
    let errors = checks::rule_texts(&one_file("far.toml", text)).expect_err("refused");
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        vec![
            "far.toml:11:47: test `far future`: `at`: `100000d` is too far after the test's start: \
             the clock ends in the year 2262"
                .to_string()
        ]
    );
}

/// Found by `mutated_conditions_are_located`: "the condition reads no
/// market data" pointed at column 1 even when the condition started later.
#[test]
fn a_condition_without_market_data_points_at_where_it_starts() {
    let mut registry = airbag::rules::WindowRegistry::default();
    let e = airbag::rules::expr::compile("   (1 < 2) and not 3 > 4", &mut registry).expect_err("refused");
    assert_eq!(e.column, 4);
    assert!(e.message.contains("reads no market data"), "{}", e.message);
}

/// The oracle and the decoder agree on an extreme value that fits and one
/// that does not, and the engine takes the accepted tick.
#[test]
fn extreme_values_are_told_apart() {
    let engine = checks::bundled_engine();
    let d = |mantissa, scale| proto::Decimal { mantissa, scale };
    let fits = trade_tick(d(i64::MAX, 8), d(i64::MAX, 8));
    let too_big = proto::Tick {
        seq: 2,
        event_time_ns: 1_700_000_000_000_000_001,
        values: Some(proto::tick::Values::Mark(proto::Price {
            price: Some(d(i64::MAX, 0)),
        })),
        ..fits.clone()
    };
    let batch = proto::TickBatch {
        batch_id: 1,
        ticks: vec![fits, too_big.clone()],
    };
    assert_eq!(checks::tick_batch(&batch.encode_to_vec(), &engine), Some(1));
    assert_eq!(
        checks::expected_verdict(&too_big),
        Err(("bad_value", "mark: is outside the supported range".to_string()))
    );
}

/// Found by `a_mutated_file_next_to_good_ones_is_located_in_that_file`:
/// renaming an instrument in the reference data fails the flash-crash
/// rule's self-test, which is reported where that test is written.
#[test]
fn a_renamed_instrument_fails_the_self_test_that_uses_it() {
    let mut files = checks::bundled_rule_files();
    let index = files
        .iter()
        .position(|(n, _)| n.starts_with("00-instruments"))
        .expect("reference data");
    files[index].1 = files[index].1.replace("\"BTC-USDT-SWAP\"", "\"BTC-USDT-SnanWAP\"");
    let errors = checks::rule_texts(&files).expect_err("the self-test fails");
    assert!(!errors.is_empty());
    for e in &errors {
        assert!(e.file.starts_with("10-flash-crash"), "{e}");
        assert!(e.message.starts_with("test `"), "{e}");
        assert!(e.line > 0, "{e}");
    }
}
