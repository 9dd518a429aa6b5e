//! The bundled default rules over real Binance recordings (tests/data/):
//! a calm BTCUSDT market raises no drawdown, breaker or halt; the ATOMUSDT
//! flash sell raises the catch-all drawdown halt on the first trade that
//! crosses 10%, ordered by trade id although every trade shares one
//! timestamp.

use std::path::Path;

use airbag::model::{Action, Alert, AlertKind, Fixed, TickValues};
use airbag::service::rulebook::load_dir;
use airbag::{Engine, EngineConfig};

fn data(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)).unwrap()
}

fn default_engine() -> Engine {
    let set = load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")).unwrap();
    Engine::new(EngineConfig::default(), set)
}

/// (time ns, trade id, price, size) from a Binance trades CSV.
fn binance_trades(text: &str) -> Vec<(i64, u64, Fixed, Fixed)> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (time, id, price, qty) = (col("trade_time_ms"), col("trade_id"), col("price"), col("qty"));
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[time].parse::<i64>().unwrap() * 1_000_000,
                f[id].parse().unwrap(),
                Fixed::parse(f[price]).unwrap(),
                Fixed::parse(f[qty]).unwrap(),
            )
        })
        .collect()
}

#[test]
fn calm_btcusdt_spot_and_perpetual_raise_no_drawdown_breaker_or_halt() {
    let engine = default_engine();
    let mut ticks: Vec<(i64, u64, &str, Fixed, Fixed)> = Vec::new();
    let spot = binance_trades(&data("spot_btcusdt_trades.csv"));
    let perp = binance_trades(&data("usdm_btcusdt_trades.csv"));
    assert_eq!((spot.len(), perp.len()), (19_904, 21_313));
    ticks.extend(spot.iter().map(|&(t, id, p, q)| (t, id, "BTC-USDT", p, q)));
    ticks.extend(perp.iter().map(|&(t, id, p, q)| (t, id, "BTC-USDT-SWAP", p, q)));
    ticks.sort_by_key(|&(t, id, symbol, _, _)| (t, symbol, id));

    let mut alerts: Vec<Alert> = Vec::new();
    let mut next_timer = ticks[0].0;
    for (t, id, symbol, price, size) in ticks {
        // Timers on event time, once a second, as a replay runs them.
        while next_timer <= t {
            engine.check_timers(next_timer, &mut alerts);
            next_timer += 1_000_000_000;
        }
        engine
            .ingest(
                symbol,
                t,
                id,
                TickValues::Trade {
                    price,
                    size,
                    side: None,
                },
                t,
                &mut alerts,
            )
            .unwrap();
    }
    let bad: Vec<String> = alerts
        .iter()
        .filter(|a| {
            [
                "btc-flash-crash",
                "majors-breaker",
                "majors-price-band",
                "majors-velocity",
                "majors-squeeze",
            ]
            .contains(&&*a.rule_id)
                || a.actions.contains(&Action::Halt)
        })
        .map(|a| a.to_string())
        .collect();
    assert!(bad.is_empty(), "false alerts on a calm market:\n{}", bad.join("\n"));
    assert_eq!(engine.instrument_count(), 2);
    engine
        .with_state("BTC-USDT", |s| assert_eq!(s.last_seq, Some(spot.last().unwrap().1)))
        .unwrap();
}

#[test]
fn atomusdt_flash_sell_halts_on_the_first_trade_past_10_percent() {
    let engine = default_engine();
    let text = data("flash_sell_sequence.csv");
    let mut lines = text.lines();
    assert_eq!(lines.next().unwrap().split(',').next(), Some("aggregate_trade_id"));
    // 2025-10-10T21:20:37.689043Z, shared by every row.
    let t = 1_760_131_237_689_043_000i64;
    let mut rows: Vec<(u64, Fixed, Fixed)> = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f[5], "2025-10-10T21:20:37.689043Z");
            (
                f[0].parse().unwrap(),
                Fixed::parse(f[1]).unwrap(),
                Fixed::parse(f[2]).unwrap(),
            )
        })
        .collect();
    rows.sort_by_key(|r| r.0);

    // Naive: the first trade at least 10% below the highest price before it.
    let mut peak = Fixed::ZERO;
    let mut expected = None;
    for &(id, price, _) in &rows {
        peak = peak.max(price);
        if i128::from(price.raw()) * 10 <= i128::from(peak.raw()) * 9 {
            expected = Some((id, peak, price));
            break;
        }
    }
    let (expected_id, expected_peak, expected_price) = expected.unwrap();
    assert_eq!(expected_id, 176_299_353);

    let mut alerts = Vec::new();
    for &(id, price, size) in &rows {
        engine
            .ingest(
                "ATOM-USDT",
                t,
                id,
                TickValues::Trade {
                    price,
                    size,
                    side: None,
                },
                t,
                &mut alerts,
            )
            .unwrap();
    }
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let a = &alerts[0];
    assert_eq!((&*a.rule_id, a.kind), ("drawdown-catch-all", AlertKind::Fired));
    assert_eq!(a.tick_seq, Some(expected_id));
    assert_eq!(a.value("peak"), Some(expected_peak));
    assert_eq!(a.value("price"), Some(expected_price));
    assert_eq!(a.value("peak_age_ms"), Some(Fixed::ZERO));
    assert!(a.actions.contains(&Action::Halt));
}
