use std::sync::Arc;

use proptest::prelude::*;

use super::ratio::{cmp_products, gcd, Ratio};
use super::*;
use crate::model::{Fixed, TickKind, TickValues};
use crate::state::{Field, LastValues, WindowKey, WindowNeeds, WindowSet};

const MS: i64 = 1_000_000;

fn fx(s: &str) -> Fixed {
    Fixed::parse(s).unwrap()
}

/// One instrument's market data, fed tick by tick, with the windows a
/// registry asked for.
struct Market {
    last: LastValues,
    windows: WindowSet,
    now_ns: i64,
    symbol: Arc<str>,
}

impl Market {
    fn new(registry: WindowRegistry) -> Self {
        let table = registry.into_table();
        let mut windows = WindowSet::with_slots(table.len());
        for (i, (key, needs)) in table.into_iter().enumerate() {
            windows.insert(WindowSlot(i as u16), key, needs, None);
        }
        Market {
            last: LastValues::default(),
            windows,
            now_ns: 0,
            symbol: Arc::from("BTC-USD"),
        }
    }

    fn tick(&mut self, at_ms: i64, values: TickValues) {
        self.now_ns = at_ms * MS;
        self.windows.observe(self.now_ns, &values);
        self.last.update(&values);
    }

    fn trade(&mut self, at_ms: i64, price: &str, size: &str) {
        self.tick(
            at_ms,
            TickValues::Trade {
                price: fx(price),
                size: fx(size),
                side: None,
            },
        );
    }

    fn quote(&mut self, at_ms: i64, bid: &str, ask: &str) {
        self.tick(
            at_ms,
            TickValues::Quote {
                bid: fx(bid),
                ask: fx(ask),
                bid_size: Fixed::ONE,
                ask_size: Fixed::ONE,
            },
        );
    }

    fn ctx(&self) -> EvalCtx<'_> {
        EvalCtx {
            now_ns: self.now_ns,
            tick: None,
            last: &self.last,
            windows: &self.windows,
            symbol: &self.symbol,
            ruleset_version: 1,
            last_tick_ns: self.now_ns,
            reference: None,
            group: None,
            lookback_from_ns: None,
            bound: None,
        }
    }
}

/// Compiles one expression and builds a market for it.
fn setup(text: &str) -> (CompiledExpr, Market) {
    let mut registry = WindowRegistry::default();
    let expr = compile(text, &mut registry).unwrap_or_else(|e| panic!("{text}: {e}"));
    (expr, Market::new(registry))
}

fn error(text: &str) -> ExprError {
    let mut registry = WindowRegistry::default();
    let e = compile(text, &mut registry).expect_err(text);
    assert!(
        registry.is_empty(),
        "a failed expression must request no window: {text}"
    );
    e
}

/// Asserts that `text` fails at `column` with a message containing `part`.
fn fails(text: &str, column: usize, part: &str) {
    let e = error(text);
    assert_eq!(e.column, column, "{text}: {e}");
    assert!(
        e.message.contains(part),
        "{text}: `{}` does not contain `{part}`",
        e.message
    );
}

/// The exact value of a numeric expression in `market` after `feed`.
fn values_of(texts: &[&str], feed: impl FnOnce(&mut Market)) -> Vec<Option<Ratio>> {
    let mut registry = WindowRegistry::default();
    let exprs: Vec<CompiledExpr> = texts
        .iter()
        .map(|t| compile(&format!("{t} == 0 or price > 0"), &mut registry).unwrap_or_else(|e| panic!("{t}: {e}")))
        .collect();
    let mut market = Market::new(registry);
    feed(&mut market);
    let ctx = market.ctx();
    exprs
        .iter()
        .zip(texts)
        .map(|(e, t)| {
            let (name, num) = &e.explain[0];
            assert_eq!(name, t);
            num.eval(&ctx)
        })
        .collect()
}

fn ratio(num: i128, den: i128) -> Ratio {
    Ratio::new(num, den).unwrap()
}

fn dec(s: &str) -> Ratio {
    Ratio::fixed(fx(s))
}

fn assert_values(cases: &[(&str, Option<Ratio>)], feed: impl FnOnce(&mut Market)) {
    let texts: Vec<&str> = cases.iter().map(|c| c.0).collect();
    let got = values_of(&texts, feed);
    for ((text, want), got) in cases.iter().zip(got) {
        match (want, got) {
            (Some(w), Some(g)) => assert!(w.compare(g).is_eq(), "{text}: want {w:?}, got {g:?}"),
            (None, None) => {}
            _ => panic!("{text}: want {want:?}, got {got:?}"),
        }
    }
}

// ---------------------------------------------------------------- lexing

#[test]
fn lexer_errors_point_at_the_character() {
    fails("price > $3", 9, "unexpected character `$`");
    fails("price = 3", 7, "use `==`");
    fails("price => 3", 7, "did you mean `>=`");
    fails("price > 3 && bid > 1", 11, "use `and`");
    fails("price > 3 || bid > 1", 11, "use `or`");
    fails("!(price > 3)", 1, "use `not`");
    fails("price > 8 %", 11, "must directly follow its number");
    fails("price > 1.2.3", 9, "`1.2.3` is not a number");
    fails("price > 0.000000001", 9, "more than 8 decimal places");
    fails("price > 99999999999", 9, "too large");
    fails("max(price, 3y) > 1", 12, "unknown unit `y`");
    fails("max(price, 1.5s) > 1", 12, "whole numbers");
    fails("price > 1e5", 9, "exponents are not supported");
    fails("price > 0.0000001%", 9, "more precise");
    // Columns count characters, not bytes.
    fails("bïd > 1 and price > €", 21, "unexpected character `€`");
}

#[test]
fn literals() {
    assert_values(
        &[
            ("5", Some(Ratio::int(5))),
            ("2.5", Some(ratio(5, 2))),
            (".5", Some(ratio(1, 2))),
            ("8%", Some(ratio(8, 100))),
            ("0.25%", Some(ratio(25, 10_000))),
            ("50bp", Some(ratio(5, 1000))),
            ("50bps", Some(ratio(5, 1000))),
            ("0.00000001", Some(ratio(1, 100_000_000))),
        ],
        |_| {},
    );
    let e = error("price > 3s");
    assert_eq!(e.column, 9);
    assert!(e.message.contains("durations can only be window arguments"), "{e}");
}

// --------------------------------------------------------------- parsing

#[test]
fn parse_errors_point_at_the_token() {
    fails(
        "(price > 3",
        11,
        "expected `)` to close the `(` at column 1, found the end of the expression",
    );
    fails("price > 3)", 10, "unmatched `)`");
    fails("1 < price < 3", 11, "comparisons do not chain");
    fails("price > 1 == bid > 2", 11, "comparisons do not chain");
    fails("price >", 8, "found the end of the expression");
    fails(
        "price > 3 4",
        11,
        "expected an operator or the end of the expression, found `4`",
    );
    fails("max(price 3s) > 1", 11, "expected `,` or `)`");
    fails(
        "price > * 3",
        9,
        "expected a number, a field, a function call or `(`, found `*`",
    );
    fails("", 1, "found the end of the expression");
    fails("price > 1 and", 14, "found the end of the expression");
    fails("max(price,) > 1", 11, "found `)`");
}

#[test]
fn precedence() {
    assert_values(
        &[
            ("price + 2 * 3", Some(Ratio::int(107))),
            ("(price + 2) * 3", Some(Ratio::int(309))),
            ("-2 * 3 + price", Some(Ratio::int(95))),
            ("price - 1 - 1", Some(Ratio::int(99))),
            ("price / 2 / 2", Some(ratio(101, 4))),
            ("- -price", Some(Ratio::int(101))),
            ("2 * -price", Some(Ratio::int(-202))),
            ("price / 3", Some(ratio(101, 3))),
        ],
        |m| m.trade(0, "101", "1"),
    );
    // not < comparison, and < or: `not a > b or c and d`.
    let (expr, mut m) = setup("not price > 100 or price > 50 and price < 60");
    m.trade(0, "55", "1");
    assert!(expr.eval(&m.ctx()), "(not (55 > 100)) or (...)");
    m.trade(1, "101", "1");
    assert!(!expr.eval(&m.ctx()));
    let (expr, mut m) = setup("not (price > 100 or price > 50) and price > 10");
    m.trade(0, "55", "1");
    assert!(!expr.eval(&m.ctx()));
    m.trade(1, "20", "1");
    assert!(expr.eval(&m.ctx()));
}

#[test]
fn size_and_depth_limits() {
    let deep = format!("{}price{} > 1", "(".repeat(40), ")".repeat(40));
    fails(&deep, 33, "nested too deeply");
    let negs = format!("{}price > 1", "-".repeat(40));
    fails(&negs, 33, "nested too deeply");
    let nots = format!("{}price > 1", "not ".repeat(40));
    assert!(error(&nots).message.contains("nested too deeply"));
    // A long flat chain is a deep tree.
    let chain = vec!["price > 1"; 40].join(" and ");
    assert!(error(&chain).message.contains("nested too deeply"));
    // A balanced tree of 128 comparisons is shallow but too large.
    fn balanced(levels: u32) -> String {
        if levels == 0 {
            "price > 1".into()
        } else {
            format!("({} and {})", balanced(levels - 1), balanced(levels - 1))
        }
    }
    assert!(error(&balanced(7)).message.contains("too long"));
    // Within the limits: 16 comparisons, 31 levels of parentheses.
    setup(&balanced(4));
    setup(&format!("{}price{} > 1", "(".repeat(31), ")".repeat(31)));
    // Deeply nested calls.
    let calls = format!("{}price{} > 1", "abs(".repeat(40), ")".repeat(40));
    assert!(error(&calls).message.contains("nested too deeply"));
}

// ---------------------------------------------------------------- types

#[test]
fn type_errors_say_what_was_expected() {
    fails(
        "maxx(price, 3s) > 1",
        1,
        "unknown function `maxx` (known: max, min, sum, count, mean, first, vwap, volume, drawdown, rally, change, range, abs, group_median, group_mean, group_min, group_max, group_wmean, least, greatest, if, floor_to, ceil_to, round_to, param, since_listing, in_session, since_open, until_close, time_of_day)",
    );
    fails(
        "prise > 1",
        1,
        "unknown field `prise` (known: price, size, notional, bid, ask, mid, spread, mark, index)",
    );
    fails("PRICE > 1", 1, "names are lowercase");
    fails("price + 1", 1, "must be a condition");
    fails("price", 1, "must be a condition");
    fails(
        "price > 1 + (price > 2)",
        13,
        "expected a number on the right of `+`, found the condition `(price > 2)`",
    );
    fails(
        "price and price > 1",
        1,
        "expected a condition on the left of `and`, found the field `price`",
    );
    fails(
        "price > 1 or 2",
        14,
        "expected a condition on the right of `or`, found the number `2`",
    );
    fails("not price", 5, "expected a condition after `not`");
    fails("(price > 1) > 0", 1, "expected a number on the left of `>`");
    fails("price > 3s", 9, "found the duration `3s`");
    fails("abs(3s) > price", 5, "found the duration `3s`");
    fails(
        "max(price, price) > 1",
        12,
        "expected a duration such as `3s` as the window of `max`, found the field `price`",
    );
    fails("max(price, 3) > 1", 12, "a duration needs a unit");
    fails("max(price, 0s) > 1", 12, "must be longer than zero");
    fails("max(price, -3s) > 1", 12, "must be a positive duration");
    fails("max(price, 3s + 1s) > 1", 12, "arithmetic on durations");
    fails(
        "max(3s, price) > 1",
        5,
        "the first argument of `max` must be a field name",
    );
    fails(
        "max(price * 2, 3s) > 1",
        5,
        "the first argument of `max` must be a field name",
    );
    fails("max(pryce, 3s) > 1", 5, "unknown field `pryce`");
    fails(
        "max(price) > 1",
        1,
        "`max` takes 2 arguments (a field and a window), as in `max(price, 3s)`, but was given 1",
    );
    fails("drawdown(price, 3s, 1s) > 1%", 1, "`drawdown` takes 2 arguments");
    fails("vwap(price, 1s) > 1", 1, "`vwap` takes 1 argument (a window)");
    fails("volume() > 1", 1, "`volume` takes 1 argument");
    fails("abs(price, 1) > 1", 1, "`abs` takes 1 argument (a number)");
    fails("mean(max(price, 1s), 5m) > 1", 6, "`mean` cannot take `max(...)`");
    fails("mean(abs(price), 5m) > 1", 6, "`mean` cannot take `abs(...)`");
    fails("mean(summ(size, 1s), 5m) > 1", 6, "unknown function `summ`");
    fails(
        "mean(sum(size, 10m), 5m) > 1",
        6,
        "the period of `sum` (10m) is longer than the window of `mean` (5m)",
    );
    fails("mean(sum(size), 5m) > 1", 6, "`sum` takes 2 arguments");
    fails(
        "mean(volume(1s), price) > 1",
        18,
        "as the window of `mean`, found the field `price`",
    );
    fails(
        "mean(sum(3, 1s), 5m) > 1",
        10,
        "the first argument of `sum` must be a field name",
    );
    fails("price(3s) > 1", 1, "`price` is a field, not a function");
    fails("max > 1", 1, "`max` is a function");
    fails("1 < 2", 1, "the condition reads no market data");
    fails("1 < 2 and not 3 > 4", 1, "reads no market data");
    fails("price / 0 > 1", 7, "division by zero");
    fails("price / (1 - 1) > 1", 7, "division by zero");
}

// ------------------------------------------------------------- functions

#[test]
fn fields_are_the_newest_values() {
    let feed = |m: &mut Market| {
        m.trade(0, "101", "4");
        m.quote(1, "99.5", "100.5");
        m.tick(2, TickValues::Mark { price: fx("100.2") });
        m.tick(3, TickValues::Index { price: fx("100.1") });
        m.trade(4, "101.5", "2");
    };
    assert_values(
        &[
            ("price", Some(dec("101.5"))),
            ("size", Some(Ratio::int(2))),
            ("notional", Some(Ratio::int(203))),
            ("bid", Some(dec("99.5"))),
            ("ask", Some(dec("100.5"))),
            ("mid", Some(Ratio::int(100))),
            ("spread", Some(Ratio::int(1))),
            ("mark", Some(dec("100.2"))),
            ("index", Some(dec("100.1"))),
        ],
        feed,
    );
    assert_values(&[("price", None), ("bid", None), ("mid", None), ("index", None)], |m| {
        m.tick(0, TickValues::Mark { price: fx("1") })
    });
}

/// Trades at 0 ms (100 × 1), 1000 ms (104 × 2), 2000 ms (98 × 1) and
/// 2500 ms (101 × 4); now is 2500 ms.
fn four_trades(m: &mut Market) {
    m.trade(0, "100", "1");
    m.trade(1000, "104", "2");
    m.trade(2000, "98", "1");
    m.trade(2500, "101", "4");
}

#[test]
fn window_functions_against_hand_computed_values() {
    assert_values(
        &[
            ("max(price, 3s)", Some(Ratio::int(104))),
            ("min(price, 3s)", Some(Ratio::int(98))),
            ("sum(price, 3s)", Some(Ratio::int(403))),
            ("count(price, 3s)", Some(Ratio::int(4))),
            ("mean(price, 3s)", Some(ratio(40300, 400))),
            ("first(price, 3s)", Some(Ratio::int(100))),
            // (100×1 + 104×2 + 98×1 + 101×4) / 8 = 810 / 8
            ("vwap(3s)", Some(ratio(810, 8))),
            ("volume(3s)", Some(Ratio::int(8))),
            ("sum(size, 3s)", Some(Ratio::int(8))),
            ("sum(notional, 3s)", Some(Ratio::int(810))),
            // (104 - 101) / 104
            ("drawdown(price, 3s)", Some(ratio(3, 104))),
            // (101 - 98) / 98
            ("rally(price, 3s)", Some(ratio(3, 98))),
            // (101 - 100) / 100
            ("change(price, 3s)", Some(ratio(1, 100))),
            // (104 - 98) / 98
            ("range(price, 3s)", Some(ratio(6, 98))),
            // The span is inclusive: [0, 2500] holds all four, [1, 2500] three.
            ("count(price, 2500ms)", Some(Ratio::int(4))),
            ("count(price, 2499ms)", Some(Ratio::int(3))),
            // [500, 2500]: 104, 98, 101.
            ("max(price, 2s)", Some(Ratio::int(104))),
            ("first(price, 2s)", Some(Ratio::int(104))),
            ("mean(price, 2s)", Some(Ratio::int(101))),
            ("change(price, 2s)", Some(ratio(-3, 104))),
            // [2000, 2500]: 98, 101.
            ("min(price, 500ms)", Some(Ratio::int(98))),
            ("sum(price, 500ms)", Some(Ratio::int(199))),
            // Per-period means: sum(f, L) × W / L.
            ("mean(volume(1s), 2s)", Some(ratio(7, 2))),
            ("mean(sum(size, 1s), 2s)", Some(ratio(7, 2))),
            ("mean(sum(price, 500ms), 2s)", Some(ratio(303, 4))),
            ("mean(volume(3s), 3s)", Some(Ratio::int(8))),
            ("abs(change(price, 2s))", Some(ratio(3, 104))),
            ("abs(0 - price)", Some(Ratio::int(101))),
            ("5 * mean(volume(1s), 2s)", Some(ratio(35, 2))),
        ],
        four_trades,
    );
}

#[test]
fn quote_mark_and_index_windows() {
    assert_values(
        &[
            ("max(bid, 1s)", Some(Ratio::int(100))),
            ("min(ask, 1s)", Some(Ratio::int(101))),
            ("mean(mid, 1s)", Some(dec("100.5"))),
            ("max(spread, 1s)", Some(Ratio::int(2))),
            ("drawdown(mark, 1s)", Some(ratio(1, 10))),
            ("rally(index, 1s)", Some(ratio(1, 4))),
            // Only trades feed price windows.
            ("max(price, 1s)", None),
            ("vwap(1s)", None),
        ],
        |m| {
            m.quote(0, "99", "101");
            m.quote(100, "100", "102");
            m.tick(200, TickValues::Mark { price: fx("10") });
            m.tick(300, TickValues::Mark { price: fx("9") });
            m.tick(400, TickValues::Index { price: fx("4") });
            m.tick(500, TickValues::Index { price: fx("5") });
        },
    );
}

#[test]
fn long_windows_use_the_window_buckets() {
    // A 5-minute window (bucketed) and a 1-second one over the same trades.
    assert_values(
        &[
            ("mean(volume(1s), 5m)", Some(ratio(10, 300))),
            ("volume(5m)", Some(Ratio::int(10))),
        ],
        |m| {
            for i in 0..10 {
                m.trade(i * 10_000, "100", "1");
            }
        },
    );
}

#[test]
fn mean_is_exact_not_truncated() {
    let (expr, mut m) = setup("mean(price, 3s) > 100");
    m.trade(0, "100", "1");
    m.trade(1, "100", "1");
    m.trade(2, "100.00000001", "1");
    // Window::mean truncates to 100; the exact mean is 100.0000000033...
    assert!(expr.eval(&m.ctx()));
    assert_eq!(expr.values(&m.ctx())[0].value, fx("100"));
}

// ------------------------------------------------------------- exactness

#[test]
fn drawdown_threshold_is_exact_at_eight_percent() {
    for (low, ge, gt) in [
        ("92", true, false),
        ("92.01", false, false),
        ("91.9999999", true, true),
        ("91.99999999", true, true),
        ("92.00000001", false, false),
    ] {
        let (expr_ge, mut m) = setup("drawdown(price, 3s) >= 8%");
        m.trade(0, "100", "1");
        m.trade(1000, low, "1");
        assert_eq!(expr_ge.eval(&m.ctx()), ge, ">= at {low}");
        let (expr_gt, mut m) = setup("drawdown(price, 3s) > 8%");
        m.trade(0, "100", "1");
        m.trade(1000, low, "1");
        assert_eq!(expr_gt.eval(&m.ctx()), gt, "> at {low}");
    }
}

#[test]
fn thresholds_are_exact_below_any_fixed_scale() {
    // max 100000, price 91999.99999999: the drawdown is 8% + 10^-13, which a
    // 10^-12 fixed-point value would truncate to exactly 8%.
    let (gt, mut m) = setup("drawdown(price, 3s) > 8%");
    m.trade(0, "100000", "1");
    m.trade(1, "91999.99999999", "1");
    assert!(gt.eval(&m.ctx()));
    let (le, mut m) = setup("drawdown(price, 3s) <= 8%");
    m.trade(0, "100000", "1");
    m.trade(1, "91999.99999999", "1");
    assert!(!le.eval(&m.ctx()));
    // A drawdown that is not a terminating decimal: 0.24000001 / 3.
    let (gt, mut m) = setup("drawdown(price, 3s) > 8%");
    m.trade(0, "3", "1");
    m.trade(1, "2.75999999", "1");
    assert!(gt.eval(&m.ctx()));
    m.trade(2, "2.76", "1");
    assert!(!gt.eval(&m.ctx()));
    // The same ratio written out by hand is just as exact.
    let (hand, mut m) = setup("(max(price, 3s) - price) / max(price, 3s) >= 8%");
    m.trade(0, "100", "1");
    m.trade(1, "92", "1");
    assert!(hand.eval(&m.ctx()));
    m.trade(2, "92.00000001", "1");
    assert!(!hand.eval(&m.ctx()));
}

#[test]
fn other_relative_moves_are_exact_at_their_thresholds() {
    let cases = [
        ("rally(price, 3s) >= 50bp", "100", "100.5", true),
        ("rally(price, 3s) > 50bp", "100", "100.5", false),
        ("rally(price, 3s) >= 50bp", "100", "100.49999999", false),
        ("change(price, 3s) <= -8%", "100", "92", true),
        ("change(price, 3s) < -8%", "100", "92", false),
        ("change(price, 3s) < -8%", "100", "91.99999999", true),
        ("range(price, 3s) >= 10%", "100", "110", true),
        ("range(price, 3s) > 10%", "100", "110", false),
        ("range(price, 3s) == 10%", "110", "100", true),
        ("abs(change(price, 3s)) >= 8%", "100", "108", true),
        ("abs(change(price, 3s)) >= 8%", "100", "92", true),
        ("abs(change(price, 3s)) >= 8%", "100", "107.99999999", false),
    ];
    for (text, first, second, want) in cases {
        let (expr, mut m) = setup(text);
        m.trade(0, first, "1");
        m.trade(1, second, "1");
        assert_eq!(expr.eval(&m.ctx()), want, "{text} with {first} then {second}");
    }
}

#[test]
fn arithmetic_is_exact() {
    let (expr, mut m) = setup("price / 3 * 3 == price and price / 7 + price / 7 * 6 == price");
    m.trade(0, "100.00000001", "1");
    assert!(expr.eval(&m.ctx()));
    let (expr, mut m) = setup("volume(1s) > 5 * mean(volume(1s), 3s)");
    m.trade(0, "100", "1");
    m.trade(1000, "100", "1");
    m.trade(2500, "100", "3");
    // volume(1s) = 3 (only 2500 ms is in [1500, 2500]); the mean per second
    // over [0, 2500] is 5 / 3; 5 × 5/3 = 8.33 > 3.
    assert!(!expr.eval(&m.ctx()));
    m.trade(2600, "100", "7");
    // volume(1s) = 10, mean = 12 / 3 = 4, 5 × 4 = 20.
    assert!(!expr.eval(&m.ctx()));
    m.trade(2700, "100", "100");
    // volume(1s) = 110, mean = 112 / 3, × 5 = 186.67.
    assert!(!expr.eval(&m.ctx()));
    let (expr, mut m) = setup("volume(1s) > 2 * mean(volume(1s), 3s)");
    m.trade(0, "100", "1");
    m.trade(2500, "100", "5");
    // 5 > 2 × 6/3 = 4.
    assert!(expr.eval(&m.ctx()));
    let (expr, mut m) = setup("volume(1s) > 2 * mean(volume(1s), 3s)");
    m.trade(0, "100", "5");
    m.trade(2500, "100", "5");
    // 5 > 2 × 10/3 = 6.67 is false.
    assert!(!expr.eval(&m.ctx()));
}

// --------------------------------------------------------- missing data

#[test]
fn missing_data_is_unknown_and_never_fires() {
    let (expr, m) = setup("price > 1");
    assert_eq!(expr.eval_tri(&m.ctx()), None);
    assert!(!expr.eval(&m.ctx()));
    assert!(expr.values(&m.ctx()).iter().all(|v| v.name != "price"));

    // `not` of unknown is unknown.
    let (expr, m) = setup("not (price > 1)");
    assert_eq!(expr.eval_tri(&m.ctx()), None);
    assert!(!expr.eval(&m.ctx()));
    let (expr, m) = setup("not price > 1");
    assert!(!expr.eval(&m.ctx()));

    // Three-valued `and` / `or` with trades but no quotes.
    let cases = [
        ("price > 1 and bid > 1", None),
        ("price < 1 and bid > 1", Some(false)),
        ("bid > 1 and price < 1", Some(false)),
        ("not (price < 1 and bid > 1)", Some(true)),
        ("price > 1 or bid > 1", Some(true)),
        ("bid > 1 or price > 1", Some(true)),
        ("price < 1 or bid > 1", None),
        ("not (price < 1 or bid > 1)", None),
        ("bid != 1", None),
        ("bid == bid", None),
    ];
    for (text, want) in cases {
        let (expr, mut m) = setup(text);
        m.trade(0, "100", "1");
        assert_eq!(expr.eval_tri(&m.ctx()), want, "{text}");
        assert_eq!(expr.eval(&m.ctx()), want == Some(true), "{text}");
    }
}

#[test]
fn empty_windows_division_by_zero_and_overflow_are_unknown() {
    let texts = [
        "max(price, 1s) > 0",
        "count(price, 1s) >= 0",
        "sum(price, 1s) >= 0",
        "volume(1s) >= 0",
        "mean(price, 1s) > 0",
        "first(price, 1s) > 0",
        "vwap(1s) > 0",
        "drawdown(price, 1s) >= 0",
        "mean(volume(1s), 1s) >= 0",
    ];
    for text in texts {
        let (expr, mut m) = setup(&format!("{text} or bid < 0"));
        m.trade(0, "100", "1");
        assert_eq!(expr.eval_tri(&m.ctx()), Some(true), "{text} with a trade in the window");
        // A quote 5 s later: every 1 s trade window is empty.
        m.quote(5000, "99", "101");
        assert_eq!(expr.eval_tri(&m.ctx()), None, "{text} with an empty window");
    }
    // Trades of zero size: vwap has no weight.
    let (expr, mut m) = setup("vwap(1s) > 0");
    m.trade(0, "100", "0");
    assert_eq!(expr.eval_tri(&m.ctx()), None);

    let (expr, mut m) = setup("price / (price - 100) > 1");
    m.trade(0, "100", "1");
    assert_eq!(expr.eval_tri(&m.ctx()), None);
    m.trade(1, "101", "1");
    assert_eq!(expr.eval_tri(&m.ctx()), Some(true));

    // Powers of a price with 8 significant decimals overflow i128.
    let (small, mut m) = setup("price * price * price > 0");
    m.trade(0, "101.12345679", "1");
    assert_eq!(small.eval_tri(&m.ctx()), Some(true));
    let (huge, mut m) = setup("price * price * price * price * price * price > 0");
    m.trade(0, "101.12345679", "1");
    assert_eq!(huge.eval_tri(&m.ctx()), None);
    let (huge, mut m) = setup("not (price * price * price * price * price * price > 0)");
    m.trade(0, "101.12345679", "1");
    assert!(!huge.eval(&m.ctx()));
}

#[test]
fn a_missing_window_is_unknown() {
    // The expression's window is not in this instrument's set.
    let mut registry = WindowRegistry::default();
    let expr = compile("max(price, 1s) > 0", &mut registry).unwrap();
    let mut m = Market::new(WindowRegistry::default());
    m.windows = WindowSet::with_slots(0);
    m.trade(0, "100", "1");
    assert_eq!(expr.eval_tri(&m.ctx()), None);
}

// ------------------------------------------------ windows, triggers, values

#[test]
fn identical_windows_share_one_slot() {
    let mut registry = WindowRegistry::default();
    let a = compile("max(price, 3s) > 1 and drawdown(price, 3s) > 1%", &mut registry).unwrap();
    assert_eq!(a.slots().len(), 1);
    let b = compile("min(price, 3s) > 1 or range(price, 3000ms) > 1%", &mut registry).unwrap();
    assert_eq!(b.slots(), a.slots(), "3000ms is 3s");
    let c = compile("volume(1s) > 5 * mean(volume(1s), 5m) and vwap(3s) > 0", &mut registry).unwrap();
    assert_eq!(c.slots().len(), 3);
    let table = registry.into_table();
    let s = |f, ns| WindowKey { field: f, span_ns: ns };
    assert_eq!(
        table,
        vec![
            (
                s(Field::Price, 3_000_000_000),
                WindowNeeds {
                    max: true,
                    min: true,
                    slots: true
                }
            ),
            (s(Field::Size, 1_000_000_000), WindowNeeds::SLOTS),
            (s(Field::Size, 300_000_000_000), WindowNeeds::SLOTS),
        ]
    );
    assert_eq!(c.slots()[2], a.slots()[0]);
}

#[test]
fn windows_ask_only_for_what_they_read() {
    let needs = |text: &str| {
        let mut registry = WindowRegistry::default();
        compile(text, &mut registry).unwrap();
        registry
            .into_table()
            .into_iter()
            .map(|(k, n)| (k.field, n))
            .collect::<Vec<_>>()
    };
    use WindowNeeds as N;
    assert_eq!(needs("max(price, 1s) > 0"), [(Field::Price, N::MAX)]);
    assert_eq!(needs("min(bid, 1s) > 0"), [(Field::Bid, N::MIN)]);
    assert_eq!(needs("drawdown(mark, 1s) > 0"), [(Field::Mark, N::MAX)]);
    assert_eq!(needs("rally(mid, 1s) > 0"), [(Field::Mid, N::MIN)]);
    assert_eq!(needs("range(price, 1s) > 0"), [(Field::Price, N::MAX.union(N::MIN))]);
    for f in ["sum", "count", "mean", "first", "change"] {
        assert_eq!(needs(&format!("{f}(ask, 1s) > 0")), [(Field::Ask, N::SLOTS)], "{f}");
    }
    assert_eq!(needs("vwap(1s) > 0"), [(Field::Price, N::SLOTS)]);
    assert_eq!(needs("volume(1s) > 0"), [(Field::Size, N::SLOTS)]);
    // The inner sum's own window is not read.
    assert_eq!(needs("mean(sum(notional, 1s), 1m) > 0"), [(Field::Notional, N::SLOTS)]);
    assert!(needs("price > 0").is_empty());
}

#[test]
fn triggers_are_the_kinds_of_the_fields_read() {
    let triggers = |text: &str| setup(text).0.triggers();
    assert_eq!(triggers("price > 1"), KindMask::of(TickKind::Trade));
    assert_eq!(triggers("volume(1s) > 1"), KindMask::of(TickKind::Trade));
    assert_eq!(triggers("vwap(1s) > 1"), KindMask::of(TickKind::Trade));
    assert_eq!(triggers("spread > 1"), KindMask::of(TickKind::Quote));
    assert_eq!(
        triggers("max(bid, 1s) > 1 or mark > index"),
        KindMask::of(TickKind::Quote).with(TickKind::Mark).with(TickKind::Index)
    );
    assert_eq!(
        triggers("1 > 0 and drawdown(index, 1s) > 1%"),
        KindMask::of(TickKind::Index)
    );
}

#[test]
fn values_explain_each_comparison() {
    let text = "drawdown(price, 3s) >= 8% and volume(1s) > 5 * mean(volume(1s), 5m)";
    let (expr, mut m) = setup(text);
    assert_eq!(expr.text(), text);
    m.trade(0, "100", "1");
    m.trade(9_000, "100", "1");
    m.trade(11_000, "92", "40");
    let ctx = m.ctx();
    assert!(expr.eval(&ctx));
    let values = expr.values(&ctx);
    let got: Vec<(&str, String)> = values.iter().map(|v| (&*v.name, v.value.to_string())).collect();
    assert_eq!(
        got,
        [
            ("drawdown(price, 3s)", "0.08".to_string()),
            ("8%", "0.08".to_string()),
            ("volume(1s)", "40".to_string()),
            // 42 traded over 5 m (bucketed), per second: 42 / 300 = 0.14 × 5.
            ("5 * mean(volume(1s), 5m)", "0.7".to_string()),
        ]
    );
    assert!(matches!(values[0].name, std::borrow::Cow::Owned(_)));

    // Whitespace is collapsed, repeated sides appear once, values are
    // truncated to 8 decimals, unknown sides are left out.
    let (expr, mut m) = setup("price  /\n 3 > 1 and price / 3 < 100 and bid > 0");
    m.trade(0, "100", "1");
    let got: Vec<(String, String)> = expr
        .values(&m.ctx())
        .iter()
        .map(|v| (v.name.to_string(), v.value.to_string()))
        .collect();
    assert_eq!(
        got,
        [
            ("price / 3".to_string(), "33.33333333".to_string()),
            ("1".to_string(), "1".to_string()),
            ("100".to_string(), "100".to_string()),
            ("0".to_string(), "0".to_string()),
        ]
    );
    let (expr, mut m) = setup("0 - price / 3 < 0");
    m.trade(0, "100", "1");
    assert_eq!(
        expr.values(&m.ctx())[0].value,
        fx("-33.33333333"),
        "truncated toward zero"
    );
}

#[test]
fn compiled_expressions_are_shareable() {
    fn assert_traits<T: std::fmt::Debug + Clone + Send + Sync>() {}
    assert_traits::<CompiledExpr>();
    let (expr, mut m) = setup("max(price, 1s) > 1");
    let copy = expr.clone();
    m.trade(0, "2", "1");
    assert!(copy.eval(&m.ctx()));
    assert!(format!("{expr:?}").contains("Max"));
    assert_eq!(
        error("price >").to_string(),
        "column 8: expected a number, a field, a function call or `(`, found the end of the expression"
    );
}

#[test]
fn the_authors_guide_is_accurate() {
    let guide = include_str!("../../../rules/EXPRESSIONS.md");
    let errors = guide.split("## Errors").nth(1).unwrap().split("\n## ").next().unwrap();
    let mut checked = 0;
    for row in errors.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.trim_matches('|').split(" | ").map(str::trim).collect();
        let text = cells[0].trim_matches('`');
        assert_eq!(error(text).to_string(), cells[1], "the guide's error for `{text}`");
        checked += 1;
    }
    assert!(checked >= 10, "{checked} error rows");
    let examples = guide.split("## Examples").nth(1).unwrap();
    let mut compiled = 0;
    for line in examples.lines().filter(|l| l.starts_with("when = ")) {
        let text = line.trim_start_matches("when = ").trim_matches('"');
        setup(text);
        compiled += 1;
    }
    assert!(compiled >= 5, "{compiled} examples");
    let top = guide.lines().find(|l| l.starts_with("when = ")).unwrap();
    setup(top.trim_start_matches("when = ").trim_matches('"'));
}

// ---------------------------------------------------------------- ratios

#[test]
fn ratio_arithmetic() {
    assert_eq!(gcd(0, 0), 0);
    assert_eq!(gcd(0, 7), 7);
    assert_eq!(gcd(12, 18), 6);
    assert_eq!(gcd(1 << 100, 3 << 90), 1 << 90);
    assert_eq!(ratio(6, -4).reduced().parts(), (-3, 2));
    assert_eq!(Ratio::new(1, 0), None);
    assert_eq!(Ratio::new(i128::MIN, -1), None);
    let big = ratio(i128::MAX / 3, 1);
    // Sums that do not fit are unknown.
    assert_eq!(big.add(big), Some(ratio(i128::MAX / 3 * 2, 1)));
    assert_eq!(big.add(big).and_then(|x| x.add(big)).and_then(|x| x.add(big)), None);
    // Cross products overflow but the reduced sum fits.
    let a = ratio(1, 1 << 100);
    let b = ratio(1, 3 << 100);
    assert!(a.add(b).unwrap().compare(ratio(4, 3 << 100)).is_eq());
    assert!(a.mul(ratio(1 << 100, 1)).unwrap().compare(Ratio::int(1)).is_eq());
    assert!(a.div(ratio(1, 1 << 100)).unwrap().compare(Ratio::int(1)).is_eq());
    assert_eq!(Ratio::int(3).div(Ratio::ZERO), None);
    assert!(ratio(1, 3).div(ratio(-2, 3)).unwrap().compare(ratio(-1, 2)).is_eq());
    assert_eq!(ratio(i128::MIN, 1).neg(), None);
    assert_eq!(ratio(i128::MIN, 1).abs(), None);
}

#[test]
fn comparison_never_overflows() {
    use std::cmp::Ordering::*;
    let m = i128::MAX;
    assert_eq!(cmp_products(m, m, m, m), Equal);
    assert_eq!(cmp_products(m, m, m, m - 1), Greater);
    assert_eq!(cmp_products(-m, m, m, -(m - 1)), Less);
    assert_eq!(cmp_products(0, m, 0, -m), Equal);
    assert_eq!(cmp_products(-1, m, 0, 5), Less);
    assert_eq!(cmp_products(i128::MIN, i128::MIN, m, m), Greater);
    // (MAX / (MAX - 1)) vs (MAX - 1) / (MAX - 2): the first is smaller.
    assert_eq!(ratio(m, m - 1).compare(ratio(m - 1, m - 2)), Less);
    assert_eq!(ratio(-m, m - 1).compare(ratio(-(m - 1), m - 2)), Greater);
    assert_eq!(ratio(m, 3).compare(ratio(m, 3)), Equal);
}

#[test]
fn ratio_to_fixed_truncates_toward_zero() {
    assert_eq!(ratio(1, 3).to_fixed(), Some(fx("0.33333333")));
    assert_eq!(ratio(-1, 3).to_fixed(), Some(fx("-0.33333333")));
    assert_eq!(ratio(2, 3).to_fixed(), Some(fx("0.66666666")));
    assert_eq!(Ratio::int(i128::from(i64::MAX)).to_fixed(), None);
    // Denominators too large for `rest × 10^8`: long division.
    // (2^127 - 1 is prime, so these do not reduce.)
    let m = i128::MAX;
    assert_eq!(ratio(m / 3, m).to_fixed(), Some(fx("0.33333333")));
    assert_eq!(ratio(-(m / 7 * 3), m).to_fixed(), Some(fx("-0.42857142")));
    assert_eq!(ratio(m - 5, m / 2).to_fixed(), Some(fx("1.99999999")));
    assert_eq!(
        ratio(m, 1 << 100).to_fixed(),
        Some(Fixed::from_raw(13_421_772_799_999_999))
    );
}

#[test]
fn relative_moves_against_constants_are_fused() {
    let root = |text: &str| setup(text).0.root;
    assert!(matches!(root("drawdown(price, 3s) >= 8%"), eval::Cond::RelLit { .. }));
    assert!(matches!(
        root("8% <= rally(price, 3s)"),
        eval::Cond::RelLit {
            op: eval::CmpOp::Ge,
            ..
        }
    ));
    assert!(matches!(root("range(price, 3s) == 1 / 3"), eval::Cond::RelLit { .. }));
    assert!(matches!(root("drawdown(price, 3s) * 1 >= 8%"), eval::Cond::CmpLit(..)));
    assert!(matches!(root("price > 8"), eval::Cond::CmpLit(..)));
    assert!(matches!(root("price > bid"), eval::Cond::Cmp(..)));
    // A zero denominator is unknown on the fused path too.
    let (expr, mut m) = setup("range(spread, 1s) >= 0%");
    m.quote(0, "100", "100");
    assert_eq!(expr.eval_tri(&m.ctx()), None);
    m.quote(1, "100", "100.5");
    assert_eq!(expr.eval_tri(&m.ctx()), None, "the min spread is still 0");
    m.quote(2000, "100", "100.5");
    assert_eq!(expr.eval_tri(&m.ctx()), Some(true));
}

// ------------------------------------------------------------ properties

/// A random arithmetic expression over small integers and `price`.
#[derive(Clone, Debug)]
enum Arith {
    Lit(i64),
    Price,
    Neg(Box<Arith>),
    Abs(Box<Arith>),
    Bin(char, Box<Arith>, Box<Arith>),
}

fn arith() -> impl Strategy<Value = Arith> {
    let leaf = prop_oneof![(-20i64..=20).prop_map(Arith::Lit), Just(Arith::Price)];
    leaf.prop_recursive(4, 24, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|a| Arith::Neg(Box::new(a))),
            inner.clone().prop_map(|a| Arith::Abs(Box::new(a))),
            (prop::sample::select(vec!['+', '-', '*', '/']), inner.clone(), inner).prop_map(|(op, a, b)| Arith::Bin(
                op,
                Box::new(a),
                Box::new(b)
            )),
        ]
    })
}

impl Arith {
    /// Source text; `minimal` leaves out the parentheses that precedence
    /// makes unnecessary.
    fn text(&self, minimal: bool) -> String {
        match self {
            Arith::Lit(v) if *v < 0 => format!("({v})"),
            Arith::Lit(v) => v.to_string(),
            Arith::Price => "price".into(),
            Arith::Neg(a) => format!("-{}", a.operand(minimal, 3, false)),
            Arith::Abs(a) => format!("abs({})", a.text(minimal)),
            Arith::Bin(op, a, b) => {
                let level = if matches!(op, '+' | '-') { 1 } else { 2 };
                format!(
                    "{} {op} {}",
                    a.operand(minimal, level, false),
                    b.operand(minimal, level, true)
                )
            }
        }
    }

    fn operand(&self, minimal: bool, level: u8, right: bool) -> String {
        let own = match self {
            Arith::Bin('+' | '-', ..) => 1,
            Arith::Bin(..) => 2,
            _ => 3,
        };
        let needs = !minimal || own < level || (right && own == level);
        if needs && own < 3 {
            format!("({})", self.text(minimal))
        } else {
            self.text(minimal)
        }
    }

    /// Naive exact reference: reduced (num, den) in i128.
    fn reference(&self, price: i64) -> Option<(i128, i128)> {
        fn norm(n: i128, d: i128) -> Option<(i128, i128)> {
            if d == 0 {
                return None;
            }
            let g = gcd(n.unsigned_abs(), d.unsigned_abs()) as i128;
            let s = if d < 0 { -1 } else { 1 };
            Some((s * n / g, s * d / g))
        }
        Some(match self {
            Arith::Lit(v) => (i128::from(*v), 1),
            Arith::Price => (i128::from(price), 1),
            Arith::Neg(a) => {
                let (n, d) = a.reference(price)?;
                (-n, d)
            }
            Arith::Abs(a) => {
                let (n, d) = a.reference(price)?;
                (n.abs(), d)
            }
            Arith::Bin(op, a, b) => {
                let (an, ad) = a.reference(price)?;
                let (bn, bd) = b.reference(price)?;
                match op {
                    '+' => norm(an * bd + bn * ad, ad * bd)?,
                    '-' => norm(an * bd - bn * ad, ad * bd)?,
                    '*' => norm(an * bn, ad * bd)?,
                    _ => norm(an * bd, ad * bn)?,
                }
            }
        })
    }
}

fn flip(op: &str) -> &'static str {
    match op {
        "<" => ">",
        "<=" => ">=",
        ">" => "<",
        ">=" => "<=",
        "==" => "==",
        _ => "!=",
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn arithmetic_matches_a_naive_reference(e in arith(), price in 1i64..=50, minimal in any::<bool>()) {
        let body = e.text(minimal);
        let text = format!("{body} == 0 and price > 0");
        let mut registry = WindowRegistry::default();
        let want = e.reference(price);
        let expr = match compile(&text, &mut registry) {
            Ok(expr) => expr,
            Err(err) => {
                // Only a constant zero divisor is refused.
                prop_assert!(err.message.contains("division by zero"), "{text}: {err}");
                prop_assert!(want.is_none(), "{text}: {err}");
                return Ok(());
            }
        };
        let mut m = Market::new(registry);
        m.trade(0, &price.to_string(), "1");
        let got = expr.explain.iter().find(|(n, _)| *n == body).unwrap().1.eval(&m.ctx());
        match (want, got) {
            (None, None) => {}
            (Some((n, d)), Some(g)) => prop_assert!(ratio(n, d).compare(g).is_eq(), "{text}: want {n}/{d}, got {g:?}"),
            _ => prop_assert!(false, "{text}: want {want:?}, got {got:?}"),
        }
        // Comparisons agree with the reference ordering.
        if let Some((n, d)) = want {
            let check = format!("({body}) * {d} == {n} and ({body}) * {d} > {} and price > 0", n - 1);
            let (cexpr, mut m) = setup(&check);
            m.trade(0, &price.to_string(), "1");
            prop_assert!(cexpr.eval(&m.ctx()), "{check}");
        }
    }

    #[test]
    fn fused_and_generic_relative_comparisons_agree(
        marks in prop::collection::vec((0i64..700, -50i64..50), 1..25),
        rel in prop::sample::select(vec!["drawdown", "rally", "change", "range"]),
        op in prop::sample::select(vec!["<", "<=", ">", ">=", "==", "!="]),
        threshold in -300i64..300,
    ) {
        let lit = format!("{}%", threshold);
        let texts = [
            format!("{rel}(mark, 1s) {op} {lit}"),
            format!("{lit} {} {rel}(mark, 1s)", flip(op)),
            format!("{rel}(mark, 1s) * 1 {op} {lit}"),
        ];
        let mut registry = WindowRegistry::default();
        let exprs: Vec<CompiledExpr> = texts.iter().map(|t| compile(t, &mut registry).unwrap()).collect();
        prop_assert!(matches!(exprs[0].root, eval::Cond::RelLit { .. }), "fused");
        prop_assert!(matches!(exprs[1].root, eval::Cond::RelLit { .. }), "fused");
        prop_assert!(matches!(exprs[2].root, eval::Cond::CmpLit(..)));
        let mut m = Market::new(registry);
        let mut now = 0;
        for (dt, mark) in marks {
            now += dt;
            m.tick(now, TickValues::Mark { price: Fixed::from_int(mark).unwrap() });
            let ctx = m.ctx();
            let generic = exprs[2].eval_tri(&ctx);
            prop_assert_eq!(exprs[0].eval_tri(&ctx), generic, "{} at {}", texts[0], now);
            prop_assert_eq!(exprs[1].eval_tri(&ctx), generic, "{} at {}", texts[1], now);
        }
    }

    #[test]
    fn drawdown_matches_a_naive_scan(
        ticks in prop::collection::vec((0i64..1500, 9_000i64..11_000), 1..40),
        percent in 0i64..=15,
        bp in 0i64..100,
    ) {
        let threshold = format!("{}.{:02}%", percent, bp);
        let (ge, mut m) = setup(&format!("drawdown(price, 3s) >= {threshold}"));
        let (gt, mut m2) = setup(&format!("drawdown(price, 3s) > {threshold}"));
        // The threshold in hundredths of a percent: X / 10^4.
        let x = i128::from(percent * 100 + bp);
        let mut seen: Vec<(i64, i64)> = Vec::new();
        let mut now = 0;
        for (dt, cents) in ticks {
            now += dt;
            let price = format!("{}.{:02}", cents / 100, cents % 100);
            m.trade(now, &price, "1");
            m2.trade(now, &price, "1");
            seen.push((now, cents));
            let max = seen.iter().filter(|(t, _)| *t >= now - 3000).map(|(_, c)| *c).max().unwrap();
            // (max - p) / max >= x / 10^4  <=>  (max - p) × 10^4 >= x × max.
            let lhs = i128::from(max - cents) * 10_000;
            let rhs = x * i128::from(max);
            prop_assert_eq!(ge.eval(&m.ctx()), lhs >= rhs, "at {} price {} max {}", now, price, max);
            prop_assert_eq!(gt.eval(&m2.ctx()), lhs > rhs, "at {} price {} max {}", now, price, max);
        }
    }
}
