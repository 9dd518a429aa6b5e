//! `airbag replay --threads N`: the same bytes as one thread, through the
//! real binary, on real recordings and on a generated market with crashes,
//! group rules, halts of whole underlyings and patterns reading alerts.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn airbag(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_airbag"))
        .arg("replay")
        .args(args)
        .output()
        .expect("run airbag")
}

/// The summary without the lines that differ by thread count and speed.
fn report(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| !l.starts_with("summary:") && !l.starts_with("threads:"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `args` with 1, 2 and 4 threads; asserts the same exit, alerts and
/// report; returns the one-thread run.
fn same_on_every_thread_count(args: &[&str]) -> Output {
    let one = airbag(&[&["--threads", "1"], args].concat());
    assert_eq!(one.status.code(), Some(0), "{}", String::from_utf8_lossy(&one.stderr));
    for n in ["2", "4"] {
        let many = airbag(&[&["--threads", n], args].concat());
        assert_eq!(many.status.code(), Some(0), "{}", String::from_utf8_lossy(&many.stderr));
        assert!(
            many.stdout == one.stdout,
            "--threads {n} differs from --threads 1 for {args:?}"
        );
        assert_eq!(report(&many.stderr), report(&one.stderr), "--threads {n}");
        let stderr = String::from_utf8_lossy(&many.stderr);
        assert!(stderr.contains(&format!("threads: {n}\n")), "{stderr}");
    }
    one
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Instruments of the bundled reference data (underlyings BTC, ETH, SOL)
/// and some it does not know.
const SYMBOLS: [&str; 14] = [
    "BTC-USDT",
    "BTC-USDT-SWAP",
    "BTC-USDT-261225",
    "ETH-USDT",
    "ETH-USDT-SWAP",
    "ETH-USDT-261225",
    "SOL-USDT",
    "SOL-USDT-SWAP",
    "XRP-USDT",
    "ADA-USDT",
    "DOGE-USDT",
    "DOT-USDT",
    "LINK-USDT",
    "AVAX-USDT",
];

/// Two files of a market over about a minute: random walks, a crash of
/// 15% over a second on some instruments, and ticks the engine refuses
/// (late, bad prices, bad symbols). One instrument is in both files.
fn write_market(dir: &Path) -> (PathBuf, PathBuf) {
    let mut rng = Rng(7);
    let mut prices: Vec<f64> = SYMBOLS.iter().map(|_| 50.0 + (rng.next() % 1000) as f64).collect();
    let t0: u64 = 1_767_225_600_000;
    let crash_at = |i: usize| 10_000 + 4_000 * i as u64;
    let mut files = [
        String::from("instrument,ts_ms,price,size\n"),
        String::from("instrument,ts_ms,price,size\n"),
    ];
    for n in 0..60_000u64 {
        let t = t0 + n;
        let i = (rng.next() % SYMBOLS.len() as u64) as usize;
        let r = rng.next();
        let since = (n as i64) - crash_at(i) as i64;
        let crashes = i % 3 != 2;
        let p = &mut prices[i];
        if crashes && (0..1_000).contains(&since) {
            *p *= 0.997;
        } else {
            *p *= 1.0 + ((r % 21) as f64 - 10.0) / 20_000.0;
        }
        let file = if i.is_multiple_of(2) || (i == 1 && n.is_multiple_of(2)) {
            0
        } else {
            1
        };
        let out = &mut files[file];
        match n % 7_919 {
            13 => out.push_str(&format!("{},{},{:.4},1\n", SYMBOLS[i], t - 5_000, *p)),
            29 => out.push_str(&format!("{},{},-1,1\n", SYMBOLS[i], t)),
            71 => out.push_str(&format!("bad symbol,{t},1,1\n")),
            _ => {}
        }
        out.push_str(&format!(
            "{},{t},{:.4},{}.{:03}\n",
            SYMBOLS[i],
            *p,
            r % 7,
            (r >> 8) % 1000
        ));
    }
    let a = dir.join("market-a.csv");
    let b = dir.join("market-b.csv");
    std::fs::write(&a, &files[0]).unwrap();
    std::fs::write(&b, &files[1]).unwrap();
    (a, b)
}

/// The bundled rules (reference data, halts of underlyings, patterns that
/// read alerts) with group rules over underlyings and a named group.
fn market_rules(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let rules = dir.join(name);
    std::fs::create_dir_all(&rules).unwrap();
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    for entry in std::fs::read_dir(bundled).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&path, rules.join(path.file_name().unwrap())).unwrap();
        }
    }
    let groups = r#"
[[group]]
name = "perps"
instruments = ["*-SWAP"]

[[rule]]
id = "basis"
group = "underlying"
when = "abs(price(perpetual) - price(spot)) / price(spot) > 2%"
severity = "warning"
actions = ["notify"]

[[rule]]
id = "perps-median"
group = "group:perps"
when = "group_median(price) > 1"
severity = "warning"
actions = ["notify"]

[[rule]]
id = "tight"
kind = "drawdown"
window = "2s"
threshold = "1%"
severity = "critical"
actions = ["halt"]
targets = "underlying"

[[rule]]
id = "breaker"
kind = "circuit_breaker"
reference_window = "10s"
direction = "both"
severity = "warning"
tiers = [{ move = "2%", halt = "2s" }, { move = "4%", halt = "5s" }]
"#;
    std::fs::write(rules.join("60-groups.toml"), format!("{groups}{extra}")).unwrap();
    rules
}

#[test]
fn a_generated_market_with_crashes_and_group_rules_replays_the_same_on_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = write_market(dir.path());
    let rules = market_rules(dir.path(), "rules", "");
    let (a, b, rules) = (a.to_str().unwrap(), b.to_str().unwrap(), rules.to_str().unwrap());
    let one = same_on_every_thread_count(&["--rules", rules, a, b]);
    let alerts = String::from_utf8(one.stdout).unwrap();
    // The run exercises what couples instruments, and timers.
    for needle in [
        "\"rule_id\":\"basis\"",
        "\"rule_id\":\"perps-median\"",
        "\"kind\":\"resumed\"",
        "\"trigger_instrument\":\"BTC-USDT",
    ] {
        assert!(alerts.contains(needle), "no {needle} in the alerts");
    }
    assert!(alerts.lines().count() > 100, "{} alerts", alerts.lines().count());
    let stderr = report(&one.stderr);
    assert!(stderr.contains("late=") && stderr.contains("symbol="), "{stderr}");

    same_on_every_thread_count(&["--rules", rules, "--format", "csv", a, b]);

    // A comparison: the same ruleset with one more rule.
    let more = market_rules(
        dir.path(),
        "more",
        "\n[[rule]]\nid = \"looser\"\nkind = \"drawdown\"\nwindow = \"1s\"\nthreshold = \"0.5%\"\n",
    );
    let diff = same_on_every_thread_count(&["--compare", rules, more.to_str().unwrap(), a, b]);
    assert!(!diff.stdout.is_empty());

    // Targets over every instrument seen: one thread, said so, same bytes.
    let market = market_rules(
        dir.path(),
        "market",
        "\n[[rule]]\nid = \"all\"\nkind = \"drawdown\"\nwindow = \"1s\"\nthreshold = \"3%\"\ntargets = \"market\"\n",
    );
    let m = market.to_str().unwrap();
    let one = airbag(&["--threads", "1", "--rules", m, a, b]);
    let two = airbag(&["--threads", "2", "--rules", m, a, b]);
    assert_eq!(two.status.code(), Some(0));
    assert!(one.stdout == two.stdout);
    let stderr = String::from_utf8_lossy(&two.stderr);
    assert!(
        stderr.contains("threads: 1 (rule `all` has `targets = \"market\"`"),
        "{stderr}"
    );
}

#[test]
fn real_recordings_replay_the_same_on_any_thread_count() {
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(
        rules.path().join("dd.toml"),
        "[[rule]]\nid = \"dd\"\nkind = \"drawdown\"\nwindow = \"3s\"\nthreshold = \"0.05%\"\ncooldown = \"1s\"\n",
    )
    .unwrap();
    let r = rules.path().to_str().unwrap();
    let spot = data("spot_btcusdt_trades.csv");
    let perp = data("usdm_btcusdt_trades.csv");
    let binance = [
        "--time-col",
        "trade_time_ms",
        "--seq-col",
        "trade_id",
        "--size-col",
        "qty",
    ];
    // One symbol in two files (spot ticks after perpetual ones are
    // duplicates, counted).
    let mut args = vec!["--rules", r, "--symbol", "BTC-USDT"];
    args.extend(binance);
    args.extend([spot.to_str().unwrap(), perp.to_str().unwrap()]);
    let one = same_on_every_thread_count(&args);
    assert!(!one.stdout.is_empty());
    args[3] = "BTCUSDT";
    same_on_every_thread_count(&args);
    // The bundled rules over the flash sell, and the gzip quotes.
    let flash = data("flash_sell_sequence.csv");
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let flash_args = [
        "--rules",
        bundled.to_str().unwrap(),
        "--symbol",
        "ATOM-USDT",
        "--time-col",
        "time_utc",
        "--seq-col",
        "aggregate_trade_id",
        "--size-col",
        "quantity_atom",
        flash.to_str().unwrap(),
    ];
    let out = same_on_every_thread_count(&flash_args);
    assert!(!out.stdout.is_empty());
    let quotes = data("usdm_btcusdt_bookticker.csv.gz");
    same_on_every_thread_count(&[
        "--rules",
        r,
        "--symbol",
        "BTC-USDT-SWAP",
        "--time-col",
        "event_time_ms",
        "--seq-col",
        "update_id",
        "--bid-col",
        "bid_px",
        "--ask-col",
        "ask_px",
        quotes.to_str().unwrap(),
    ]);
}

#[test]
fn bad_thread_counts_are_refused_with_the_flag_named() {
    let flash = data("flash_sell_sequence.csv");
    for bad in ["0", "two", "-1", "5000"] {
        let flag = format!("--threads={bad}");
        let out = airbag(&["--rules", "rules", &flag, flash.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "--threads {bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--threads"), "--threads {bad}: {stderr}");
        assert!(out.stdout.is_empty());
    }
}
