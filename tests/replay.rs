//! `airbag replay` over the real recordings in tests/data/: the bundled
//! rules on calm and crashing markets, a tight drawdown rule against a
//! naive computation, `--compare`, merging, bad rows, gzip, determinism,
//! and the binary's contract (summary line, exit codes).
//!
//! Everything is bounded: the largest input is ~41,000 rows.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use airbag::cli::alert_json::AlertJson;
use airbag::model::{Alert, AlertKind, Fixed, Mode};
use airbag::replay::compare::Seen;
use airbag::replay::{drive, BadRows, DiffSide, Matcher, Merge, NoHooks, Options, Runner};
use airbag::service::rulebook::load_dir;
use airbag::tick_file::{ColumnMapping, TimeUnit};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn bundled_rules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")
}

/// Binance trades: `local_ts_ns,event_time_ms,trade_time_ms,trade_id,price,qty,is_buyer_maker`.
fn binance_trades(symbol: &str) -> ColumnMapping {
    ColumnMapping {
        symbol: Some(symbol.into()),
        time: Some("trade_time_ms".into()),
        seq: Some("trade_id".into()),
        size: Some("qty".into()),
        buyer_maker: Some("is_buyer_maker".into()),
        ..Default::default()
    }
}

/// The ATOMUSDT flash sell: ISO-8601 times, aggregate trade ids.
fn flash_sell() -> ColumnMapping {
    ColumnMapping {
        symbol: Some("ATOM-USDT".into()),
        time: Some("time_utc".into()),
        time_unit: Some(TimeUnit::Iso),
        seq: Some("aggregate_trade_id".into()),
        size: Some("quantity_atom".into()),
        ..Default::default()
    }
}

fn rules_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

fn drawdown_rule(id: &str, threshold: &str, extra: &str) -> String {
    format!("[[rule]]\nid = \"{id}\"\nkind = \"drawdown\"\nwindow = \"3s\"\nthreshold = \"{threshold}\"\n{extra}\n")
}

/// What a library replay produced.
struct Replayed {
    alerts: Vec<Alert>,
    /// The JSON lines, as `airbag replay` writes them.
    json: String,
    runner: Runner,
    merge: Merge,
    ticks: u64,
}

fn replay(rules: &Path, files: &[PathBuf], mapping: &ColumnMapping, bad: BadRows) -> Result<Replayed, String> {
    let set = load_dir(rules).map_err(|e| format!("{e:?}"))?;
    let mut merge = Merge::open(files, mapping, bad).map_err(|e| e.to_string())?;
    let mut runners = vec![Runner::new(set, &merge)];
    let mut alerts = Vec::new();
    let mut json = Vec::new();
    let totals = drive(
        &mut merge,
        &mut runners,
        &Options::default(),
        &mut NoHooks,
        &mut |_, seq, a, rx| {
            AlertJson::from_engine(a, seq, rx, rx).write_json(&mut json);
            json.push(b'\n');
            alerts.push(a.clone());
            Ok(())
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(Replayed {
        alerts,
        json: String::from_utf8(json).unwrap(),
        runner: runners.pop().unwrap(),
        merge,
        ticks: totals.ticks,
    })
}

fn airbag(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_airbag"))
        .arg("replay")
        .args(args)
        .output()
        .expect("run airbag replay")
}

/// (time ns, trade id, price) of a Binance trades file, naively.
fn naive_trades(name: &str) -> Vec<(i64, u64, Fixed)> {
    let text = std::fs::read_to_string(data(name)).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (time, id, price) = (col("trade_time_ms"), col("trade_id"), col("price"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[time].parse::<i64>().unwrap() * 1_000_000,
                f[id].parse().unwrap(),
                Fixed::parse(f[price]).unwrap(),
            )
        })
        .collect()
}

/// Where an edge-triggered drawdown of `num/den` over `window_ns` fires
/// and resolves, by brute force: (trade id, fired?).
fn naive_drawdown(ticks: &[(i64, u64, Fixed)], window_ns: i64, num: i128, den: i128) -> Vec<(u64, AlertKind)> {
    let mut out = Vec::new();
    let mut active = false;
    for (i, &(t, id, price)) in ticks.iter().enumerate() {
        let peak = ticks[..=i]
            .iter()
            .rev()
            .take_while(|(u, _, _)| *u >= t - window_ns)
            .map(|(_, _, p)| *p)
            .max()
            .unwrap();
        // (peak - price) / peak >= num / den, exactly.
        let holds = (i128::from(peak.raw()) - i128::from(price.raw())) * den >= i128::from(peak.raw()) * num;
        if holds && !active {
            out.push((id, AlertKind::Fired));
        } else if !holds && active {
            out.push((id, AlertKind::Resolved));
        }
        active = holds;
    }
    out
}

// === The bundled rules on real markets ===

#[test]
fn calm_btcusdt_spot_raises_no_drawdown_breaker_or_halt() {
    let r = replay(
        &bundled_rules(),
        &[data("spot_btcusdt_trades.csv")],
        &binance_trades("BTC-USDT"),
        BadRows::Stop,
    )
    .unwrap();
    assert_eq!(r.ticks, 19_904);
    assert_eq!(r.runner.rejections.total(), 0, "{:?}", r.runner.rejections);
    let bad: Vec<String> = r
        .alerts
        .iter()
        .filter(|a| {
            a.rule_id.contains("crash")
                || a.rule_id.contains("breaker")
                || a.rule_id.contains("drawdown")
                || a.rule_id.contains("band")
                || a.actions.iter().any(|x| x.name() == "halt")
        })
        .map(|a| a.to_string())
        .collect();
    assert!(bad.is_empty(), "false alerts on a calm market:\n{}", bad.join("\n"));
}

#[test]
fn atomusdt_flash_sell_halts_at_trade_176299353() {
    let r = replay(
        &bundled_rules(),
        &[data("flash_sell_sequence.csv")],
        &flash_sell(),
        BadRows::Stop,
    )
    .unwrap();
    assert_eq!(r.ticks, 71);
    assert_eq!(r.alerts.len(), 1, "{:?}", r.alerts);
    let a = &r.alerts[0];
    assert_eq!((&*a.rule_id, a.kind), ("drawdown-catch-all", AlertKind::Fired));
    assert_eq!(a.tick_seq, Some(176_299_353));
    assert_eq!(a.event_time_ns, 1_760_131_237_689_043_000);
    assert_eq!(a.value("peak"), Some(Fixed::parse("1.688").unwrap()));
    assert_eq!(a.value("price"), Some(Fixed::parse("1.512").unwrap()));
    assert!(r.json.starts_with(
        r#"{"seq":1,"rule_id":"drawdown-catch-all","ruleset_version":1,"instrument":"ATOM-USDT","kind":"fired","severity":"critical","actions":["halt"],"mode":"active","event_time_ns":1760131237689043000,"tick_seq":176299353,"received_time_ns":1760131237689043000,"emitted_time_ns":1760131237689043000,"values":{"peak":"1.688","#
    ));
}

#[test]
fn a_tight_drawdown_fires_exactly_where_a_naive_computation_does() {
    let dir = rules_dir(&[("dd.toml", &drawdown_rule("dd", "0.1%", ""))]);
    let r = replay(
        dir.path(),
        &[data("spot_btcusdt_trades.csv")],
        &binance_trades("BTC-USDT"),
        BadRows::Stop,
    )
    .unwrap();
    let expected = naive_drawdown(&naive_trades("spot_btcusdt_trades.csv"), 3_000_000_000, 1, 1000);
    let got: Vec<(u64, AlertKind)> = r.alerts.iter().map(|a| (a.tick_seq.unwrap(), a.kind)).collect();
    assert!(!expected.is_empty(), "the data should cross 0.1% somewhere");
    assert_eq!(got, expected);
}

// === Compare ===

#[test]
fn compare_shows_exactly_what_a_loosened_threshold_adds() {
    let other = drawdown_rule("other", "0.05%", "window = \"1s\"").replace("window = \"3s\"\n", "");
    let a = rules_dir(&[("dd.toml", &drawdown_rule("dd", "0.1%", "")), ("other.toml", &other)]);
    let b = rules_dir(&[("dd.toml", &drawdown_rule("dd", "0.08%", "")), ("other.toml", &other)]);
    let files = [data("spot_btcusdt_trades.csv")];
    let mapping = binance_trades("BTC-USDT");

    // One pass, two engines.
    let mut merge = Merge::open(&files, &mapping, BadRows::Stop).unwrap();
    let mut runners = vec![
        Runner::new(load_dir(a.path()).unwrap(), &merge),
        Runner::new(load_dir(b.path()).unwrap(), &merge),
    ];
    let mut matcher = Matcher::new();
    drive(
        &mut merge,
        &mut runners,
        &Options::default(),
        &mut NoHooks,
        &mut |side, seq, alert, rx| {
            matcher.push(
                side,
                Seen {
                    seq,
                    received_ns: rx,
                    alert: alert.clone(),
                },
            );
            Ok(())
        },
    )
    .unwrap();
    let diffs = matcher.finish();

    // Separately, each side on its own.
    let ra = replay(a.path(), &files, &mapping, BadRows::Stop).unwrap();
    let rb = replay(b.path(), &files, &mapping, BadRows::Stop).unwrap();
    let of = |alerts: &[Alert], kind: AlertKind| -> Vec<i64> {
        alerts
            .iter()
            .filter(|x| &*x.rule_id == "dd" && x.kind == kind)
            .map(|x| x.event_time_ns)
            .collect()
    };
    assert!(
        diffs.iter().all(|d| &*d.alert().rule_id == "dd"),
        "the untouched rule shows no difference"
    );
    assert!(
        diffs.iter().all(|d| d.side != DiffSide::OnlyA),
        "loosening removes nothing"
    );
    for kind in [AlertKind::Fired, AlertKind::Resolved] {
        let (ta, tb) = (of(&ra.alerts, kind), of(&rb.alerts, kind));
        assert!(tb.len() > ta.len(), "0.08% fires more often than 0.1% ({kind:?})");
        // The added occurrences, exactly.
        let only_b: Vec<i64> = diffs
            .iter()
            .filter(|d| d.side == DiffSide::OnlyB && d.alert().kind == kind)
            .map(|d| d.b.as_ref().unwrap().alert.event_time_ns)
            .collect();
        let mut added = tb[ta.len()..].to_vec();
        added.sort_unstable();
        let mut only_b_sorted = only_b.clone();
        only_b_sorted.sort_unstable();
        assert_eq!(only_b_sorted, added);
        // Pairs: moved exactly where the n-th occurrences differ in time.
        let moved = diffs
            .iter()
            .filter(|d| d.side == DiffSide::Moved && d.alert().kind == kind)
            .count();
        assert_eq!(moved, ta.iter().zip(&tb).filter(|(x, y)| x != y).count());
    }
}

#[test]
fn compare_through_the_binary_writes_sides_as_json_lines() {
    let a = rules_dir(&[("dd.toml", &drawdown_rule("dd", "0.1%", ""))]);
    let b = rules_dir(&[("dd.toml", &drawdown_rule("dd", "0.08%", ""))]);
    let spot = data("spot_btcusdt_trades.csv");
    let args = [
        "--compare",
        a.path().to_str().unwrap(),
        b.path().to_str().unwrap(),
        "--symbol",
        "BTC-USDT",
        "--time-col",
        "trade_time_ms",
        "--seq-col",
        "trade_id",
        "--size-col",
        "qty",
        spot.to_str().unwrap(),
    ];
    let out = airbag(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!lines.is_empty());
    assert!(lines.iter().all(|l| l["side"] == "only_b" || l["side"] == "moved"));
    let moved = lines.iter().find(|l| l["side"] == "moved");
    if let Some(m) = moved {
        assert!(m["a_event_time_ns"].is_i64() && m["b_event_time_ns"].is_i64());
        assert_eq!(m["a"]["rule_id"], "dd");
    }
    let only_b = lines.iter().find(|l| l["side"] == "only_b").unwrap();
    assert_eq!(only_b["b"]["mode"], "active");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("only A: 0"), "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(last.starts_with("summary: ticks=19904 "), "{last}");
    assert!(last.ends_with(&format!("alerts={}", lines.len())), "{last}");
    // Same bytes again.
    assert_eq!(airbag(&args).stdout, stdout.as_bytes());
}

// === Merging ===

/// Writes `rows` as a simple-format file.
fn write_simple(path: &Path, rows: &[(&str, i64, u64, Fixed)]) {
    let mut f = std::fs::File::create(path).unwrap();
    writeln!(f, "instrument,ts_ns,seq,price,size").unwrap();
    for (sym, t, seq, price) in rows {
        writeln!(f, "{sym},{t},{seq},{price},1").unwrap();
    }
}

#[test]
fn merging_two_files_equals_replaying_them_pre_merged() {
    let dir = tempfile::tempdir().unwrap();
    let spot: Vec<_> = naive_trades("spot_btcusdt_trades.csv")
        .into_iter()
        .map(|(t, id, p)| ("BTC-USDT", t, id, p))
        .collect();
    let perp: Vec<_> = naive_trades("usdm_btcusdt_trades.csv")
        .into_iter()
        .map(|(t, id, p)| ("BTC-USDT-SWAP", t, id, p))
        .collect();
    let (a, b, both) = (
        dir.path().join("a.csv"),
        dir.path().join("b.csv"),
        dir.path().join("ab.csv"),
    );
    write_simple(&a, &spot);
    write_simple(&b, &perp);
    // Stable sort by time: ties keep file order, then row order.
    let mut merged: Vec<_> = spot.iter().chain(&perp).copied().collect();
    merged.sort_by_key(|r| r.1);
    write_simple(&both, &merged);

    let rules = rules_dir(&[("dd.toml", &drawdown_rule("dd", "0.05%", "")), (
        "breaker.toml",
        "[[rule]]\nid = \"cb\"\nkind = \"circuit_breaker\"\nreference_window = \"1m\"\ntiers = [{ move = \"0.1%\", halt = \"2s\" }]\n",
    )]);
    let two = replay(rules.path(), &[a, b], &ColumnMapping::default(), BadRows::Stop).unwrap();
    let one = replay(rules.path(), &[both], &ColumnMapping::default(), BadRows::Stop).unwrap();
    assert_eq!(two.ticks, 19_904 + 21_313);
    assert_eq!(two.runner.rejections.total(), 0, "{:?}", two.runner.rejections);
    assert!(
        two.alerts.iter().any(|a| a.kind == AlertKind::Resumed),
        "timers ran in event time"
    );
    assert!(two.alerts.iter().any(|a| &*a.instrument == "BTC-USDT-SWAP"));
    assert!(two.alerts.len() > 10);
    assert_eq!(two.json, one.json);
}

#[test]
fn timers_fire_at_their_due_time_between_other_instruments_ticks() {
    let rules = rules_dir(&[(
        "hold.toml",
        "[[rule]]\nid = \"hold\"\nkind = \"drawdown\"\ninstruments = [\"X\"]\nwindow = \"10s\"\nthreshold = \"1%\"\nfor = \"2s\"\n",
    )]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.csv");
    const T0: i64 = 1_700_000_000_000;
    let mut text = format!("instrument,ts_ms,price\nX,{T0},100\nX,{},98\n", T0 + 1000);
    for i in 0..10 {
        text.push_str(&format!("Y,{},5\n", T0 + 1000 + i * 500));
    }
    std::fs::write(&path, text).unwrap();
    let r = replay(rules.path(), &[path], &ColumnMapping::default(), BadRows::Stop).unwrap();
    assert_eq!(r.alerts.len(), 1, "{:?}", r.alerts);
    let a = &r.alerts[0];
    let due = (T0 + 3000) * 1_000_000;
    assert_eq!((a.kind, a.event_time_ns, a.tick_seq), (AlertKind::Fired, due, None));
    // Emitted by the timer at the 3 s boundary, before the tick at 3 s.
    assert!(r.json.contains(&format!(r#""received_time_ns":{due}"#)), "{}", r.json);
}

// === Bad rows, gzip, shadow ===

#[test]
fn a_bad_row_stops_the_replay_with_its_line_unless_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.csv");
    std::fs::write(
        &path,
        "instrument,ts_ms,price,size\nX,1,100,1\nX,2,100,1\nX,3,1e5,1\nX,4,100,1\nX,oops,100,1\nX,3,100,1\n",
    )
    .unwrap();
    let rules = rules_dir(&[("dd.toml", &drawdown_rule("dd", "1%", ""))]);
    let err = replay(
        rules.path(),
        std::slice::from_ref(&path),
        &ColumnMapping::default(),
        BadRows::Stop,
    )
    .err()
    .unwrap();
    assert_eq!(err, format!("{}:4: price: not a finite decimal number", path.display()));
    // The command says it once, on one line.
    let out = airbag(&["--rules", rules.path().to_str().unwrap(), path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        format!(
            "airbag replay: {}:4: price: not a finite decimal number\n",
            path.display()
        )
    );

    let r = replay(
        rules.path(),
        std::slice::from_ref(&path),
        &ColumnMapping::default(),
        BadRows::Skip,
    )
    .unwrap();
    assert_eq!(r.ticks, 4);
    assert_eq!(r.merge.skipped_rows, 2);
    assert_eq!(r.merge.skipped_examples.len(), 2);
    // The late tick at 3 ms after 4 ms is counted by the engine, not dropped.
    assert_eq!(r.runner.rejections.counts().collect::<Vec<_>>(), [("late", 1)]);

    let out = airbag(&["--rules", rules.path().to_str().unwrap(), path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains(&format!("{}:4: price:", path.display())), "{stderr}");

    let out = airbag(&[
        "--rules",
        rules.path().to_str().unwrap(),
        "--skip-bad-rows",
        path.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("unreadable rows skipped: 2"), "{stderr}");
    assert!(stderr.contains("ticks rejected by the engine: 1 (late=1)"), "{stderr}");
    assert!(
        stderr.lines().last().unwrap().starts_with("summary: ticks=4 "),
        "{stderr}"
    );
}

#[test]
fn iso_times_with_offsets_replay_in_utc_and_an_impossible_date_names_its_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("iso.csv");
    std::fs::write(
        &path,
        "instrument,time,price,size\n\
         X,2024-02-29T05:30:00.000000001+05:30,100,1\n\
         X,2024-02-29T00:00:00.5Z,100,1\n\
         X,2024-02-30T00:00:01Z,100,1\n",
    )
    .unwrap();
    let mapping = ColumnMapping {
        time: Some("time".into()),
        time_unit: Some(TimeUnit::Iso),
        ..Default::default()
    };
    let rules = rules_dir(&[("dd.toml", &drawdown_rule("dd", "1%", ""))]);
    let err = replay(rules.path(), std::slice::from_ref(&path), &mapping, BadRows::Stop)
        .err()
        .unwrap();
    assert!(
        err.starts_with(&format!(
            "{}:4: time: `2024-02-30T00:00:01Z` is not a time (not ISO-8601: ",
            path.display()
        )),
        "{err}"
    );
    let r = replay(rules.path(), std::slice::from_ref(&path), &mapping, BadRows::Skip).unwrap();
    assert_eq!((r.ticks, r.merge.skipped_rows), (2, 1));
    // The same through the binary, whose report shows the times in UTC.
    let out = airbag(&[
        "--parse-only",
        "--time-col",
        "time",
        "--time-unit",
        "iso",
        "--skip-bad-rows",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("from 2024-02-29T00:00:00.000000001Z to 2024-02-29T00:00:00.500Z"),
        "{stderr}"
    );
}

#[test]
fn gzip_files_replay_like_plain_ones() {
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("flash.csv.gz");
    let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::fast());
    enc.write_all(&std::fs::read(data("flash_sell_sequence.csv")).unwrap())
        .unwrap();
    enc.finish().unwrap();
    let plain = replay(
        &bundled_rules(),
        &[data("flash_sell_sequence.csv")],
        &flash_sell(),
        BadRows::Stop,
    )
    .unwrap();
    let zipped = replay(&bundled_rules(), &[gz], &flash_sell(), BadRows::Stop).unwrap();
    assert_eq!(plain.json, zipped.json);
    assert_eq!(zipped.alerts.len(), 1);
}

#[test]
fn shadow_rules_are_marked_and_counted_apart() {
    let rules = rules_dir(&[
        (
            "a.toml",
            &drawdown_rule("live", "10%", "window = \"60s\"").replace("window = \"3s\"\n", ""),
        ),
        (
            "b.toml",
            &drawdown_rule("trial", "5%", "window = \"60s\"\nmode = \"shadow\"").replace("window = \"3s\"\n", ""),
        ),
    ]);
    let r = replay(
        rules.path(),
        &[data("flash_sell_sequence.csv")],
        &flash_sell(),
        BadRows::Stop,
    )
    .unwrap();
    let modes: Vec<(&str, Mode)> = r.alerts.iter().map(|a| (&*a.rule_id, a.mode)).collect();
    assert_eq!(modes, [("trial", Mode::Shadow), ("live", Mode::Active)]);
    assert!(r.json.lines().next().unwrap().contains(r#""mode":"shadow""#));
    assert_eq!(
        (r.runner.stats.total(Mode::Active), r.runner.stats.total(Mode::Shadow)),
        (1, 1)
    );
}

// === The binary ===

#[test]
fn the_binary_prints_alerts_deterministically_and_ends_with_the_summary_line() {
    let spot = data("spot_btcusdt_trades.csv");
    let perp = data("usdm_btcusdt_trades.csv");
    let rules = rules_dir(&[("dd.toml", &drawdown_rule("dd", "0.1%", ""))]);
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("alerts.jsonl");
    let args = [
        "--rules",
        rules.path().to_str().unwrap(),
        "--symbol",
        "BTC-USDT",
        "--time-col",
        "trade_time_ms",
        "--seq-col",
        "trade_id",
        "--size-col",
        "qty",
        spot.to_str().unwrap(),
        perp.to_str().unwrap(),
    ];
    // Two files of one symbol with separate trade ids: the perpetual's
    // ids are far above the spot's, so ticks interleave by time and
    // spot ticks after a perpetual one are duplicates, counted.
    let first = airbag(&args);
    assert_eq!(
        first.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let second = airbag(&args);
    assert_eq!(first.stdout, second.stdout, "two runs, identical bytes");
    let stderr = String::from_utf8(first.stderr).unwrap();
    assert!(stderr.contains("duplicate="), "{stderr}");

    // The flash sell through the binary, to a file, with the summary line.
    let flash = data("flash_sell_sequence.csv");
    let out = airbag(&[
        "--rules",
        bundled_rules().to_str().unwrap(),
        "--symbol",
        "ATOM-USDT",
        "--time-col",
        "time_utc",
        "--seq-col",
        "aggregate_trade_id",
        "--size-col",
        "quantity_atom",
        "--out",
        out_file.to_str().unwrap(),
        flash.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    let written = std::fs::read_to_string(&out_file).unwrap();
    let lib = replay(
        &bundled_rules(),
        std::slice::from_ref(&flash),
        &flash_sell(),
        BadRows::Stop,
    )
    .unwrap();
    assert_eq!(written, lib.json, "the binary prints what the library replays");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let last = stderr.lines().last().unwrap();
    let fields: Vec<&str> = last.split(' ').collect();
    assert_eq!(fields.len(), 5, "{last}");
    assert_eq!(fields[0], "summary:");
    assert_eq!(fields[1], "ticks=71");
    assert!(
        fields[2].strip_prefix("seconds=").unwrap().parse::<f64>().is_ok(),
        "{last}"
    );
    assert!(
        fields[3].strip_prefix("ticks_per_s=").unwrap().parse::<u64>().is_ok(),
        "{last}"
    );
    assert_eq!(fields[4], "alerts=1");
    assert!(stderr.contains("drawdown-catch-all"), "{stderr}");

    // CSV output.
    let out = airbag(&[
        "--rules",
        bundled_rules().to_str().unwrap(),
        "--mapping",
        write_mapping(dir.path()).to_str().unwrap(),
        "--format",
        "csv",
        flash.to_str().unwrap(),
    ]);
    let csv = String::from_utf8(out.stdout).unwrap();
    assert_eq!(csv.lines().count(), 2, "{csv}");
    assert!(csv
        .lines()
        .nth(1)
        .unwrap()
        .starts_with("1,drawdown-catch-all,1,ATOM-USDT,fired,critical,halt,active,"));

    // Exit codes: a missing file and bad rules are 1, bad flags 2.
    assert_eq!(airbag(&["--rules", "rules", "/nonexistent.csv"]).status.code(), Some(1));
    let broken = rules_dir(&[("x.toml", "[[rule]]\nid = \"x\"\nkind = \"nope\"\n")]);
    let out = airbag(&["--rules", broken.path().to_str().unwrap(), flash.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("x.toml:"));
    assert_eq!(
        airbag(&["--rules", "rules", "--no-such-flag", "x.csv"]).status.code(),
        Some(2)
    );
    assert_eq!(
        airbag(&["--rules", "rules", "--time-unit", "weeks", "x.csv"])
            .status
            .code(),
        Some(2)
    );
}

fn write_mapping(dir: &Path) -> PathBuf {
    let path = dir.join("atom.toml");
    std::fs::write(
        &path,
        "symbol = \"ATOM-USDT\"\ntime = \"time_utc\"\ntime_unit = \"iso\"\nseq = \"aggregate_trade_id\"\nsize = \"quantity_atom\"\n",
    )
    .unwrap();
    path
}

#[test]
fn the_generator_and_parse_only_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gen.csv.gz");
    let out = Command::new(env!("CARGO_BIN_EXE_airbag"))
        .args([
            "replay",
            "--generate",
            path.to_str().unwrap(),
            "--ticks",
            "20000",
            "--instruments",
            "50",
            "--seed",
            "7",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = airbag(&["--parse-only", path.to_str().unwrap()]);
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.lines().last().unwrap().starts_with("summary: ticks=20000 "),
        "{stderr}"
    );
    assert!(stderr.lines().last().unwrap().ends_with(" alerts=0"), "{stderr}");
}
