//! The exchange rule pack (`rules/exchanges/`): every pack loads and
//! passes its own `[[rule.test]]` scenarios, `airbag check
//! rules/exchanges/*` passes, bad inputs of the language extensions are
//! reported at their file:line:column, and each mechanism replays real
//! recordings from `tests/data` through `airbag replay`, with what fires
//! asserted (and stated in `rules/exchanges/README.md`).
//!
//! Everything is bounded: the largest input is ~87,000 rows (the
//! perpetual's trades and book ticker), replayed in a few seconds.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use airbag::service::rulebook::{compile_texts, load_dir};

const PACKS: [&str; 6] = ["binance", "okx", "cme-dcb", "cme-velocity", "mwcb", "luld"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn pack(name: &str) -> PathBuf {
    root().join("rules/exchanges").join(name)
}

fn data(name: &str) -> PathBuf {
    root().join("tests/data").join(name)
}

fn airbag(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_airbag"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run airbag")
}

#[test]
fn every_pack_loads_with_its_scenarios_and_none_is_loaded_by_default() {
    for name in PACKS {
        let set = load_dir(&pack(name)).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert!(!set.is_empty(), "{name} has rules");
    }
    let bundled = load_dir(&root().join("rules")).unwrap();
    assert!(
        bundled
            .rules
            .iter()
            .all(|r| !r.id.starts_with("luld") && !r.id.starts_with("mwcb")),
        "the bundled rules do not load the pack"
    );
}

#[test]
fn airbag_check_over_every_pack_passes() {
    let mut args = vec!["check".to_string()];
    let mut entries: Vec<_> = std::fs::read_dir(root().join("rules/exchanges"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    assert!(entries.iter().any(|p| p.ends_with("README.md")));
    args.extend(entries.iter().map(|p| p.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = airbag(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in PACKS {
        assert!(stdout.contains(&format!("rules/exchanges/{name}:")), "{stdout}");
    }
    assert!(stdout.contains("skipped") && stdout.contains("README.md"), "{stdout}");
    assert_eq!(stdout.matches("ok: ").count(), PACKS.len(), "{stdout}");
}

/// Errors of one file, as `line:column: message`.
fn errors(text: &str) -> Vec<String> {
    match compile_texts(&[("x.toml".into(), text.into())]) {
        Ok(_) => Vec::new(),
        Err(errs) => errs
            .into_iter()
            .map(|e| format!("{}:{}: {}", e.line, e.column, e.message))
            .collect(),
    }
}

#[test]
fn bad_sessions_lets_and_halts_are_reported_where_written() {
    let text = r#"[[rule]]
id = "a"
when = "price > upper and since_open() < 15m"
pause = "5m"
reopen = "again"
latch = "week"

[rule.session]
time_zone = "America/Nowhere"
open = "9:30"
close = "16:00"
days = ["mon", "funday"]
early_close = { "2026-11-27" = "17:00" }
"#;
    let got = errors(text);
    let want = [
        "5:10: unknown `reopen` `again`",
        "6:9: unknown `latch` `week`",
        "9:13: in `session`: unknown time zone `America/Nowhere`",
        "10:8: in `session`: `open`: `9:30` is not a local time",
        "12:16: in `session`: unknown day `funday`",
    ];
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for (g, w) in got.iter().zip(want) {
        assert!(g.starts_with(w), "{g} should start with {w}");
    }

    let text = r#"[[rule]]
id = "b"
when = "price > upper"
limit_for = "15s"

[rule.let]
upper = "index * (1 + y"
"#;
    let got = errors(text);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        got[0].starts_with("4:13: `limit_for` applies to an expression rule with a halt"),
        "{got:#?}"
    );
    assert!(got[1].starts_with("7:24: in `let.upper`: expected `)`"), "{got:#?}");

    let text = "[[rule]]\nid = \"c\"\nwhen = \"price > a\"\n[rule.let]\na = \"b + 1\"\nb = \"a * 2\"\n";
    let got = errors(text);
    assert!(got[0].contains("cycle"), "{got:#?}");

    let text = "[[rule]]\nid = \"d\"\nwhen = \"until_close() > 35m and price > 1\"\npause = \"session\"\n";
    let got = errors(text);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        got[0].starts_with("3:9: in `when`: `until_close()` reads the rule's trading session"),
        "{got:#?}"
    );
    assert!(got[1].starts_with("4:9: `pause = \"session\"`"), "{got:#?}");

    let text = "[[rule]]\nid = \"e\"\nkind = \"drawdown\"\nwindow = \"3s\"\nthreshold = \"5%\"\npause = \"1m\"\n";
    assert!(errors(text)[0].starts_with("6:9: `pause` does not apply to kind `drawdown`"));

    let text = "[[instrument]]\nsymbol = \"X\"\nparams = { Up = 5, down = \"x\" }\n";
    let got = errors(text);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(got[0].contains("parameter name `Up`"), "{got:#?}");
    assert!(got[1].contains("parameter `down` `x`"), "{got:#?}");

    let text = "[[rule]]\nid = \"f\"\ninstruments = [\"X\"]\nwhen = \"price > 1\"\n[[rule.test]]\nstart = \"2026-03-09 09:30\"\nticks = [{ at = \"0s\", price = \"2\" }]\n";
    assert!(
        errors(text)[0].starts_with("6:9: test `unnamed`: `start`:"),
        "{:?}",
        errors(text)
    );
}

#[test]
fn bad_lookbacks_are_reported_where_written() {
    let text = "[[rule]]\nid = \"a\"\nwhen = \"price > max(price, 1m)\"\npause = \"1m\"\nlookback = \"session\"\n";
    let got = errors(text);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(got[0].starts_with("5:12: unknown `lookback` `session`"), "{got:#?}");

    let text = "[[rule]]\nid = \"b\"\nwhen = \"price > max(price, 1m)\"\nlookback = \"resume\"\n";
    let got = errors(text);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].starts_with("4:12: `lookback` applies to an expression rule with a halt"),
        "{got:#?}"
    );

    // Only a window's high and low restart; a mean or a sum would not.
    let text = "[[rule]]\nid = \"c\"\nwhen = \"price > mean(price, 5m) and range(price, 1m) > 1%\"\npause = \"1m\"\nlookback = \"resume\"\n";
    let got = errors(text);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].starts_with("3:17: in `when`: `mean(...)` cannot restart its window after a resume"),
        "{got:#?}"
    );
    let text = "[[rule]]\nid = \"d\"\nwhen = \"rally(price, 60m) >= 7% or drawdown(price, 60m) >= 7%\"\npause = \"2m\"\nlookback = \"rolling\"\n";
    assert_eq!(errors(text), Vec::<String>::new());
    let text = text.replace("rolling", "resume");
    assert_eq!(errors(&text), Vec::<String>::new());
}

// === Replays of real recordings ===

/// A copy of a pack as shipped, with `extra` files (more reference data)
/// added.
fn pack_copy(name: &str, extra: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(pack(name)).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
    }
    for (file, text) in extra {
        std::fs::write(dir.path().join(file), text).unwrap();
    }
    dir
}

/// One row of a generated tick file. A quote's `price` is `BID ASK`, or
/// one price for both.
struct Row {
    symbol: &'static str,
    ts_ns: i64,
    kind: &'static str,
    price: String,
}

/// Writes rows as a CSV `airbag replay` reads by default, with sequence
/// numbers per instrument in row order.
fn write_ticks(dir: &Path, rows: &[Row]) -> PathBuf {
    let mut seqs = std::collections::HashMap::new();
    let mut text = String::from("instrument,ts_ns,seq,kind,price,size,bid,ask\n");
    for r in rows {
        let seq = seqs.entry(r.symbol).or_insert(0u64);
        *seq += 1;
        let (price, bid, ask) = match r.kind {
            "quote" => {
                let (bid, ask) = r.price.split_once(' ').unwrap_or((&r.price, &r.price));
                ("", bid, ask)
            }
            _ => (r.price.as_str(), "", ""),
        };
        let size = if r.kind == "trade" { "1" } else { "" };
        writeln!(
            text,
            "{},{},{seq},{},{price},{size},{bid},{ask}",
            r.symbol, r.ts_ns, r.kind
        )
        .unwrap();
    }
    let path = dir.join("ticks.csv");
    std::fs::write(&path, text).unwrap();
    path
}

/// (time ns, price) of the ATOMUSDT flash sell, in trade-id order.
fn flash_sell() -> Vec<(i64, String)> {
    let text = std::fs::read_to_string(data("flash_sell_sequence.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let cols: Vec<&str> = l.split(',').collect();
            let t: jiff::Timestamp = cols[5].parse().unwrap();
            (i64::try_from(t.as_nanosecond()).unwrap(), cols[1].to_string())
        })
        .collect()
}

/// (time ns, price) of a Binance trades file.
fn binance(name: &str) -> Vec<(i64, String)> {
    let text = std::fs::read_to_string(data(name)).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let cols: Vec<&str> = l.split(',').collect();
            (cols[2].parse::<i64>().unwrap() * 1_000_000, cols[4].to_string())
        })
        .collect()
}

/// `airbag replay --rules DIR FILE...`: each alert as `rule kind instrument`.
fn replay(rules: &Path, files: &[&Path], extra: &[&str]) -> Vec<String> {
    let mut args = vec!["replay", "--rules", rules.to_str().unwrap()];
    args.extend_from_slice(extra);
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let out = airbag(&args);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!(
                "{} {} {}",
                v["rule_id"].as_str().unwrap(),
                v["kind"].as_str().unwrap(),
                v["instrument"].as_str().unwrap()
            )
        })
        .collect()
}

fn binance_trades_args(symbol: &str) -> Vec<String> {
    [
        "--symbol",
        symbol,
        "--time-col",
        "trade_time_ms",
        "--seq-col",
        "trade_id",
        "--size-col",
        "qty",
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn binance_calm_btcusdt_passes_and_the_atomusdt_flash_sell_breaks_percent_price() {
    let rules = pack("binance");
    let args = binance_trades_args("BTCUSDT");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(
        replay(&rules, &[&data("spot_btcusdt_trades.csv")], &args),
        Vec::<String>::new()
    );

    // The recording itself, read with its own columns.
    let flags = [
        "--symbol",
        "ATOMUSDT",
        "--time-col",
        "time_utc",
        "--time-unit",
        "iso",
        "--seq-col",
        "aggregate_trade_id",
        "--size-col",
        "quantity_atom",
    ];
    assert_eq!(
        replay(&rules, &[&data("flash_sell_sequence.csv")], &flags),
        ["binance-percent-price fired ATOMUSDT"],
        "the fall below weightedAvgPrice × 0.2 is one episode"
    );
}

#[test]
fn okx_limits_hold_on_the_calm_btc_perpetual_against_spot_as_its_index() {
    // The USD-M perpetual's trades are the swap's trades and its mark;
    // the spot trades stand in for the index.
    let dir = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    for (ts_ns, price) in binance("usdm_btcusdt_trades.csv") {
        rows.push(Row {
            symbol: "BTC-USDT-SWAP",
            ts_ns,
            kind: "trade",
            price: price.clone(),
        });
        rows.push(Row {
            symbol: "BTC-USDT-SWAP",
            ts_ns,
            kind: "mark",
            price,
        });
    }
    for (ts_ns, price) in binance("spot_btcusdt_trades.csv") {
        rows.push(Row {
            symbol: "BTC-USDT-SWAP",
            ts_ns,
            kind: "index",
            price,
        });
    }
    rows.sort_by_key(|r| r.ts_ns);
    let ticks = write_ticks(dir.path(), &rows);
    assert_eq!(replay(&pack("okx"), &[&ticks], &[]), Vec::<String>::new());

    // The flash sell, as a tier-1 swap whose index stays at the last
    // price before it: the first trade more than 2% below trips the limit.
    let mut rows = vec![Row {
        symbol: "BTC-USDT-SWAP",
        ts_ns: flash_sell()[0].0 - 1_000_000_000,
        kind: "index",
        price: "1.688".into(),
    }];
    rows.push(Row {
        symbol: "BTC-USDT-SWAP",
        ts_ns: flash_sell()[0].0 - 1_000_000_000,
        kind: "mark",
        price: "1.688".into(),
    });
    rows.extend(flash_sell().into_iter().map(|(ts_ns, price)| Row {
        symbol: "BTC-USDT-SWAP",
        ts_ns,
        kind: "trade",
        price,
    }));
    let ticks = write_ticks(dir.path(), &rows);
    assert_eq!(
        replay(&pack("okx"), &[&ticks], &[]),
        ["okx-perpetual-price-limit fired BTC-USDT-SWAP"]
    );
}

/// A CME Bitcoin future (tick $5) for the CME packs, lead month.
const CME_BTC: &str = r#"
[[instrument]]
symbol = "BTCQ4"
underlying = "BTC"
product = "future"
tick_size = "5"
settlement = "61800"
labels = { lead = "true", velocity = "group" }
params = { dcb_pct = "0.07", nrr_ticks = 10, band_ticks = 8 }
"#;

fn btc_perp_as(symbol: &'static str, dir: &Path) -> PathBuf {
    let rows: Vec<Row> = binance("usdm_btcusdt_trades.csv")
        .into_iter()
        .map(|(ts_ns, price)| Row {
            symbol,
            ts_ns,
            kind: "trade",
            price,
        })
        .collect();
    write_ticks(dir, &rows)
}

#[test]
fn cme_dcb_and_velocity_on_the_btc_perpetual_as_a_cme_bitcoin_future() {
    // 2024-08-08 23:54 to 2024-08-09 00:05 UTC is 18:54 to 19:05 in
    // Chicago: inside the Globex session.
    let dir = tempfile::tempdir().unwrap();
    let ticks = btc_perp_as("BTCQ4", dir.path());
    let dcb = pack_copy("cme-dcb", &[("01-btc.toml", CME_BTC)]);
    assert_eq!(
        replay(dcb.path(), &[&ticks], &[]),
        Vec::<String>::new(),
        "a 0.45% range is far inside 7%"
    );

    // Velocity: 2 × max(10, 8) ticks × $5 = $100 within 1 s.
    let velocity = pack_copy("cme-velocity", &[("01-btc.toml", CME_BTC)]);
    let alerts = replay(velocity.path(), &[&ticks], &[]);
    assert!(alerts.is_empty(), "{alerts:?}");
    // A tighter velocity ($50 in 1 s) catches the recording's fastest second.
    let tight = CME_BTC.replace("nrr_ticks = 10, band_ticks = 8", "nrr_ticks = 5, band_ticks = 4");
    let velocity = pack_copy("cme-velocity", &[("01-btc.toml", &tight)]);
    let alerts = replay(velocity.path(), &[&ticks], &[]);
    let want: Vec<String> = (0..4)
        .flat_map(|_| ["tripped", "resumed"])
        .map(|k| format!("cme-velocity-group {k} BTCQ4"))
        .collect();
    assert_eq!(alerts, want, "four seconds of the recording move more than $50");
}

/// The ATOMUSDT flash sell's instrument as a lead-month CME future:
/// settlement 1.688 (its last price before the fall), tick 0.001, DCB 7%.
const CME_ATOM: &str = r#"
[[instrument]]
symbol = "ATOMZ5"
underlying = "ATOM"
product = "future"
tick_size = "0.001"
settlement = "1.688"
labels = { lead = "true" }
params = { dcb_pct = "0.07" }
"#;

#[test]
fn cme_dcb_on_the_flash_sell_as_a_future_in_and_out_of_the_session() {
    // 2025-10-10 21:20:37 UTC is 16:20 in Chicago: the daily maintenance
    // hour, outside the session.
    let dcb = pack_copy("cme-dcb", &[("01-atom.toml", CME_ATOM)]);
    let dir = tempfile::tempdir().unwrap();
    let ticks = flash_as("ATOMZ5", &["trade"], 0, 1.0, dir.path());
    assert_eq!(replay(dcb.path(), &[&ticks], &[]), Vec::<String>::new());

    // Seven hours earlier (9:20 in Chicago) the fall reaches the
    // 60-minute high minus the variant (floor(1.688 × 7%, 0.001) = 0.118):
    // the 2-minute pre-open. The recording ends within the microsecond,
    // before the resume.
    let ticks = flash_as("ATOMZ5", &["trade"], INTO_REGULAR_HOURS, 1.0, dir.path());
    assert_eq!(replay(dcb.path(), &[&ticks], &[]), ["cme-dcb tripped ATOMZ5"]);
}

/// The flash sell as one instrument's ticks of each of `kinds`, its times
/// moved by `shift_ns` and its prices multiplied by `scale` (rounded to
/// a cent).
fn flash_as(symbol: &'static str, kinds: &[&'static str], shift_ns: i64, scale: f64, dir: &Path) -> PathBuf {
    let mut rows = Vec::new();
    for (ts_ns, price) in flash_sell() {
        let price = if scale == 1.0 {
            price
        } else {
            format!("{:.2}", price.parse::<f64>().unwrap() * scale)
        };
        for kind in kinds {
            rows.push(Row {
                symbol,
                ts_ns: ts_ns + shift_ns,
                kind,
                price: price.clone(),
            });
        }
    }
    write_ticks(dir, &rows)
}

/// 2025-10-10 21:20:37 UTC is 17:20 in New York, after the close; seven
/// hours earlier it is 10:20 on the same Friday, inside regular hours and
/// outside the doubled-band periods.
const INTO_REGULAR_HOURS: i64 = -7 * 3_600_000_000_000;

#[test]
fn mwcb_on_the_flash_sell_as_the_index_outside_and_inside_regular_hours() {
    // The ATOMUSDT prices scaled so that its last price before the fall,
    // 1.688, is the pack's prior S&P 500 close of 7000.
    let scale = 7000.0 / 1.688;
    let dir = tempfile::tempdir().unwrap();
    let ticks = flash_as("SPX", &["index"], 0, scale, dir.path());
    assert_eq!(replay(&pack("mwcb"), &[&ticks], &[]), Vec::<String>::new());

    // At 10:20 levels 1, 2 and 3 trip in turn within the same
    // microsecond, each across the market (SPX, AAPL, MSFT).
    let ticks = flash_as("SPX", &["index"], INTO_REGULAR_HOURS, scale, dir.path());
    let alerts = replay(&pack("mwcb"), &[&ticks], &[]);
    let want: Vec<String> = ["mwcb-level-1", "mwcb-level-2", "mwcb-level-3"]
        .iter()
        .flat_map(|r| ["SPX", "AAPL", "MSFT"].map(|i| format!("{r} tripped {i}")))
        .collect();
    assert_eq!(alerts, want);
}

#[test]
fn luld_on_the_flash_sell_trades_as_quotes_outside_and_inside_regular_hours() {
    // Trade-only data: each print stands in for the quote too (bid = ask
    // = the trade price), on LOW (prior close $2: the 20% band). At 17:20
    // New York time there are no bands.
    let dir = tempfile::tempdir().unwrap();
    let ticks = flash_as("LOW", &["trade", "quote"], 0, 1.0, dir.path());
    assert_eq!(replay(&pack("luld"), &[&ticks], &[]), Vec::<String>::new());

    // At 10:20 the lower band of the 5-minute mean is reached: one Limit
    // State. The recording ends in the same microsecond, so the 15 s
    // never pass in it and no pause follows.
    let ticks = flash_as("LOW", &["trade", "quote"], INTO_REGULAR_HOURS, 1.0, dir.path());
    assert_eq!(replay(&pack("luld"), &[&ticks], &[]), ["luld limit LOW"]);
}

/// (time ns, "BID ASK") of the USD-M perpetual's book ticker, in update
/// order.
fn book_ticker() -> Vec<(i64, String)> {
    use std::io::Read as _;
    let file = std::fs::File::open(data("usdm_btcusdt_bookticker.csv.gz")).unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(file).read_to_string(&mut text).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let cols: Vec<&str> = l.split(',').collect();
            let ts_ns = cols[1].parse::<i64>().unwrap() * 1_000_000;
            (ts_ns, format!("{} {}", cols[4], cols[6]))
        })
        .collect()
}

#[test]
fn luld_on_the_btc_perpetual_trades_and_quotes_in_regular_hours() {
    // Real quotes on the quote path: the perpetual's 66,089 best bid and
    // offer updates and 21,313 trades of 2024-08-08 23:54 to 24:00 UTC,
    // nine hours earlier (10:54 to 11:00 in New York, a Thursday), as
    // AAPL (Tier 1, 5% bands). The largest move is about 0.45%: no Limit
    // State.
    const INTO_THE_MORNING: i64 = -9 * 3_600_000_000_000;
    let mut rows: Vec<Row> = binance("usdm_btcusdt_trades.csv")
        .into_iter()
        .map(|(ts_ns, price)| Row {
            symbol: "AAPL",
            ts_ns: ts_ns + INTO_THE_MORNING,
            kind: "trade",
            price,
        })
        .collect();
    let quotes = book_ticker();
    assert_eq!(quotes.len(), 66_089);
    rows.extend(quotes.into_iter().map(|(ts_ns, price)| Row {
        symbol: "AAPL",
        ts_ns: ts_ns + INTO_THE_MORNING,
        kind: "quote",
        price,
    }));
    rows.sort_by_key(|r| r.ts_ns);
    let dir = tempfile::tempdir().unwrap();
    let ticks = write_ticks(dir.path(), &rows);
    assert_eq!(replay(&pack("luld"), &[&ticks], &[]), Vec::<String>::new());

    // The same stream as SUB (prior close $0.10: the lesser of $0.15 and
    // 75%, so a $0.15 band around a $61,800 mean) walks the state machine
    // on real quotes: four Limit States that quotes leave within 15 s,
    // then one that lasts 15 s and pauses trading (14:55:03.586 UTC); the
    // recording ends before the 5 minutes are up.
    for row in &mut rows {
        row.symbol = "SUB";
    }
    let ticks = write_ticks(dir.path(), &rows);
    let mut want: Vec<&str> = [["limit", "resolved"]; 4].concat();
    want.extend(["limit", "paused"]);
    let want: Vec<String> = want.iter().map(|k| format!("luld {k} SUB")).collect();
    assert_eq!(replay(&pack("luld"), &[&ticks], &[]), want);
}
