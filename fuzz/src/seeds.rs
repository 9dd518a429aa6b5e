//! Writes a starting corpus for each fuzz target into `fuzz/corpus/`:
//! the bundled rule files, expressions from the rule reference, and tick
//! batches of every kind (valid, and with hostile values). Run by
//! `scripts/fuzz.sh` before fuzzing.

use std::path::Path;

use airbag::wire::proto;
use airbag_fuzz::checks::bundled_rule_files;
use prost::Message;

const EXPRESSIONS: &[&str] = &[
    "drawdown(price, 3s) >= 8%",
    "drawdown(price, 3s) >= 8% and volume(1s) > 5 * mean(volume(1s), 5m)",
    "abs(change(mark, 1m)) > 5%",
    "spread / mid > 50bp",
    "rally(price, 3s) >= 8% or range(price, 3000ms) > 1%",
    "vwap(3s) > 0 and count(price, 1s) >= 3",
    "not (max(price, 1s) - min(price, 1s) < 0.5) and first(price, 2s) != price",
    "(mark - index) / index > 2% or sum(size, 1h) / 3 <= -1",
    "mean(sum(size, 1s), 1m) * 10 < volume(1s)",
];

const RULE_WITH_TESTS: &str = r#"
[[rule]]
id = "expr-velocity"
when = "change(price, 1s) <= -2%"
instruments = ["BTC-USDT"]
severity = "warning"
actions = ["reduce_only", "notify"]
cooldown = "5s"
for = "0s"

[[rule.test]]
name = "fall"
ticks = [
  { at = "0s", price = "100" },
  { at = "500ms", price = "97.5" },
  { at = "2s", bid = "97", ask = "98" },
  { at = "3s" },
]
expect = [{ kind = "fired", at = "500ms", values = { price = "97.5" } }]
"#;

fn dec(mantissa: i64, scale: u32) -> Option<proto::Decimal> {
    Some(proto::Decimal { mantissa, scale })
}

fn tick(instrument: &str, ms: i64, seq: u64, values: proto::tick::Values) -> proto::Tick {
    proto::Tick {
        instrument: instrument.into(),
        event_time_ns: 1_700_000_000_000_000_000 + ms * 1_000_000,
        seq,
        values: Some(values),
    }
}

fn trade(price: Option<proto::Decimal>, size: Option<proto::Decimal>) -> proto::tick::Values {
    proto::tick::Values::Trade(proto::Trade { price, size, side: 1 })
}

fn batches() -> Vec<proto::TickBatch> {
    use proto::tick::Values;
    let crash: Vec<proto::Tick> = [
        (0, 6_500_000),
        (1_000, 6_400_000),
        (2_000, 6_200_000),
        (2_500, 5_980_000),
    ]
    .iter()
    .enumerate()
    .map(|(i, &(ms, p))| tick("BTC-USDT", ms, i as u64 + 1, trade(dec(p, 2), dec(1, 0))))
    .collect();
    let kinds = vec![
        tick(
            "ETH-USDT",
            0,
            1,
            Values::Quote(proto::Quote {
                bid: dec(300_000, 2),
                ask: dec(300_100, 2),
                bid_size: dec(5, 1),
                ask_size: dec(7, 0),
            }),
        ),
        tick(
            "ETH-USDT-SWAP",
            1,
            1,
            Values::Mark(proto::Price { price: dec(3_001, 0) }),
        ),
        tick(
            "ETH-USDT-SWAP",
            2,
            2,
            Values::Index(proto::Price { price: dec(2_999, 0) }),
        ),
    ];
    let hostile = vec![
        tick("NEG-USDT", 0, 1, trade(dec(-5, 0), dec(1, 0))),
        tick("BIG-USDT", 0, 1, trade(dec(i64::MAX, 0), dec(i64::MIN, 0))),
        tick("FINE-USDT", 0, 1, trade(dec(1, 9), dec(0, u32::MAX))),
        tick(&"X".repeat(65), 0, 1, trade(dec(1, 0), dec(1, 0))),
        tick("TAB\tUSDT", 0, 1, trade(dec(1, 0), dec(1, 0))),
        proto::Tick {
            event_time_ns: -1,
            ..tick("OLD-USDT", 0, 1, trade(dec(1, 0), None))
        },
    ];
    vec![
        proto::TickBatch {
            batch_id: 1,
            ticks: crash,
        },
        proto::TickBatch {
            batch_id: 2,
            ticks: kinds,
        },
        proto::TickBatch {
            batch_id: 3,
            ticks: hostile,
        },
    ]
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), bytes)
}

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    for (name, text) in bundled_rule_files() {
        write(&root.join("rule_file"), &name, text.as_bytes())?;
    }
    write(
        &root.join("rule_file"),
        "expr-with-tests.toml",
        RULE_WITH_TESTS.as_bytes(),
    )?;
    for (i, text) in EXPRESSIONS.iter().enumerate() {
        let mut input = text.as_bytes().to_vec();
        input.push(0);
        for (kind, price) in [(0u8, 10_000_000_000i64), (0, 9_000_000_000), (1, 8_000_000_000), (2, 1)] {
            input.push(kind);
            input.extend_from_slice(&price.to_le_bytes());
        }
        write(&root.join("expression"), &format!("seed-{i}"), &input)?;
    }
    for batch in batches() {
        write(
            &root.join("tick_batch"),
            &format!("batch-{}", batch.batch_id),
            &batch.encode_to_vec(),
        )?;
    }
    println!("seed corpus written to {}", root.display());
    Ok(())
}
