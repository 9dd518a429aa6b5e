//! "Halt spot and futures" against a real server: reference data in the
//! rules folder, a crash on BTC-USDT alone halting every BTC instrument in
//! the same batch's alerts, and `Alerts.State` (what `airbag state` prints)
//! after the halt, after a restart from a checkpoint, and after the halt's
//! end.

mod common;

use std::time::Duration;

use airbag::cli::state;
use airbag::clock::{Clock, SystemClock};
use airbag::wire::proto;
use common::*;

const INSTRUMENTS: &str = r#"
[[instrument]]
symbol = "BTC-USDT"
underlying = "BTC"
product = "spot"

[[instrument]]
symbol = "BTC-USDT-SWAP"
underlying = "BTC"
product = "perpetual"

[[instrument]]
symbol = "BTC-USDT-250328"
underlying = "BTC"
product = "future"
expiry = "2025-03-28T08:00:00Z"

[[instrument]]
symbol = "ETH-USDT"
underlying = "ETH"
product = "spot"

[[instrument]]
symbol = "ETH-USDT-SWAP"
underlying = "ETH"
product = "perpetual"
"#;

/// A breaker on spot whose halt acts on the whole underlying, for 2 s of
/// event time.
const BREAKER: &str = r#"
[[rule]]
id = "spot-breaker"
select = { product = "spot" }
kind = "circuit_breaker"
reference_price = 100
tiers = [{ move = "8%", halt = "2s", severity = "critical", actions = ["halt"] }]
targets = "underlying"
"#;

fn trade_at(instrument: &str, at_ns: i64, seq: u64, price: &str) -> proto::Tick {
    proto::Tick {
        instrument: instrument.to_string(),
        event_time_ns: at_ns,
        seq,
        values: Some(proto::tick::Values::Trade(proto::Trade {
            price: Some(dec(price)),
            size: Some(dec("1")),
            side: 0,
        })),
    }
}

fn rows(state: &proto::StateResponse) -> Vec<(String, String, String, String)> {
    state
        .states
        .iter()
        .map(|s| {
            (
                s.instrument.clone(),
                s.rule_id.clone(),
                s.kind.clone(),
                s.trigger_instrument.clone(),
            )
        })
        .collect()
}

fn halted_btc() -> Vec<(String, String, String, String)> {
    [
        ("BTC-USDT", ""),
        ("BTC-USDT-250328", "BTC-USDT"),
        ("BTC-USDT-SWAP", "BTC-USDT"),
    ]
    .into_iter()
    .map(|(i, t)| (i.into(), "spot-breaker".into(), "tripped".into(), t.into()))
    .collect()
}

fn server(data_dir: &std::path::Path, rules_dir: &std::path::Path) -> common::Builder {
    let data_dir = data_dir.to_path_buf();
    TestServer::builder().rules_folder(rules_dir).configure(move |c| {
        c.data_dir = Some(data_dir);
        c.checkpoint.interval_ms = 100;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_on_btc_spot_halts_spot_perpetual_and_future_in_one_batch_and_the_state_says_so() {
    let data_dir = tempfile::tempdir().unwrap();
    let rules_dir = tempfile::tempdir().unwrap();
    std::fs::write(rules_dir.path().join("00-instruments.toml"), INSTRUMENTS).unwrap();
    std::fs::write(rules_dir.path().join("10-breaker.toml"), BREAKER).unwrap();

    let first = server(data_dir.path(), rules_dir.path()).start().await;
    let mut alerts = first.subscribe(proto::SubscribeRequest::default()).await;
    let mut ingest = first.ingest().await;
    // Event time is the wall clock: halts end on the server's timer.
    let now = SystemClock.now_ns();
    let ack = ingest
        .send(batch(
            1,
            vec![
                trade_at("ETH-USDT", now, 1, "100"),
                trade_at("ETH-USDT-SWAP", now, 1, "100"),
                trade_at("BTC-USDT-SWAP", now, 1, "100"),
                trade_at("BTC-USDT", now, 1, "100"),
                // BTC spot alone falls 10%; the perpetual does not move.
                trade_at("BTC-USDT", now + 1_000_000, 2, "90"),
            ],
        ))
        .await;
    assert_eq!(ack.applied, 5, "{:?}", ack.rejected);
    let halts = take_alerts(&mut alerts, 3).await;
    let got: Vec<_> = halts
        .iter()
        .map(|a| (a.instrument.as_str(), a.trigger_instrument.as_str(), a.kind.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("BTC-USDT", "", "tripped"),
            ("BTC-USDT-250328", "BTC-USDT", "tripped"),
            ("BTC-USDT-SWAP", "BTC-USDT", "tripped"),
        ]
    );
    for halt in &halts {
        assert_eq!(halt.actions, ["halt"]);
        assert_eq!(halt.tick_seq, Some(2), "from the one tick");
        assert_eq!(halt.received_time_ns, halts[0].received_time_ns, "in one batch");
        assert_eq!(value(halt, "price").as_deref(), Some("90"));
    }
    assert_eq!(halts.iter().map(|a| a.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert_quiet(&mut alerts, Duration::from_millis(200)).await;

    let state_now = state::fetch(first.channel().await, Vec::new()).await.expect("state");
    assert_eq!(rows(&state_now), halted_btc());
    assert_eq!(state_now.last_alert_seq, 3);
    let since = state_now.states[0].since_time_ns;
    assert_eq!(since, now + 1_000_000, "since the crash tick");
    assert_eq!(state_now.states[0].until_time_ns, Some(since + 2_000_000_000));
    let eth = state::fetch(first.channel().await, vec!["ETH-*".into()])
        .await
        .expect("state");
    assert!(eth.states.is_empty(), "ETH untouched: {:?}", eth.states);

    // `airbag state` prints it as a table.
    let mut table = Vec::new();
    state::write_table(&state_now, &mut table).unwrap();
    let table = String::from_utf8(table).unwrap();
    assert!(table.starts_with("INSTRUMENT"), "{table}");
    assert!(table.contains("BTC-USDT-SWAP    spot-breaker  tripped"), "{table}");

    // A restart from the checkpoint keeps the halt in force, on all three.
    first.shutdown().await;
    let second = server(data_dir.path(), rules_dir.path()).start().await;
    let restored = state::fetch(second.channel().await, Vec::new()).await.expect("state");
    assert_eq!(rows(&restored), halted_btc());
    assert_eq!(restored.states[0].since_time_ns, since);

    // When the halt's time is over, the resume goes to all three and the
    // state is empty.
    let mut alerts = second.subscribe(proto::SubscribeRequest::default()).await;
    let resumed = take_alerts(&mut alerts, 3).await;
    assert!(
        resumed.iter().all(|a| a.kind == "resumed" && a.actions == ["resume"]),
        "{resumed:?}"
    );
    let after = state::fetch(second.channel().await, Vec::new()).await.expect("state");
    assert!(after.states.is_empty(), "{:?}", after.states);
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_reference_file_is_refused_with_its_place_and_the_old_data_stays() {
    let server = TestServer::builder()
        .rule_file("00-instruments.toml", INSTRUMENTS)
        .rule_file("10-breaker.toml", BREAKER)
        .start()
        .await;
    server.write_rule(
        "00-instruments.toml",
        &format!("{INSTRUMENTS}\n[[instrument]]\nsymbol = \"SOL-USDT\"\nproduct = \"spot\"\nexpiry = \"soon\"\n"),
    );
    let mut admin = server.admin().await;
    let reload = admin
        .reload(proto::ReloadRequest {})
        .await
        .expect("reload")
        .into_inner();
    assert!(!reload.applied);
    assert_eq!(reload.ruleset_version, 1, "the old ruleset stays");
    let errors: Vec<String> = reload
        .errors
        .iter()
        .map(|e| format!("{}:{}:{}: {}", e.file, e.line, e.column, e.message))
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].starts_with("00-instruments.toml:31:10: `expiry` `soon` is not an ISO-8601 time"),
        "{errors:?}"
    );
    assert_eq!(
        errors[1],
        "00-instruments.toml:31:10: `expiry` applies to futures and options, not to a spot"
    );

    // The old reference data is in force: a BTC spot crash still halts the
    // underlying.
    let mut alerts = server.subscribe(proto::SubscribeRequest::default()).await;
    let mut ingest = server.ingest().await;
    let now = SystemClock.now_ns();
    ingest
        .send(batch(
            1,
            vec![
                trade_at("BTC-USDT", now, 1, "100"),
                trade_at("BTC-USDT", now + 1, 2, "91"),
            ],
        ))
        .await;
    let halts = take_alerts(&mut alerts, 3).await;
    assert_eq!(halts[2].instrument, "BTC-USDT-SWAP");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_data_updated_over_grpc_is_checked_written_and_followed() {
    let server = TestServer::builder()
        .rule_file("00-instruments.toml", INSTRUMENTS)
        .rule_file("10-breaker.toml", BREAKER)
        .start()
        .await;
    let mut admin = server.admin().await;

    // A rule table, a bad name and a bad value are refused; nothing is written.
    for (file, text, expect) in [
        (
            "00-instruments.toml",
            BREAKER,
            "reference data holds `[[instrument]]` and `[[group]]` tables only",
        ),
        (
            "../etc.toml",
            INSTRUMENTS,
            "the file must be a plain name in the rules folder",
        ),
        (
            "00-instruments.toml",
            "[[instrument]]\nsymbol = \"BTC-USDT\"\nproduct = \"stock\"\n",
            "00-instruments.toml:3:11: unknown product `stock`",
        ),
    ] {
        let response = admin
            .update_reference_data(proto::UpdateReferenceDataRequest {
                file: file.into(),
                text: text.into(),
            })
            .await
            .expect("call")
            .into_inner();
        assert!(!response.applied, "{file}");
        let first = &response.errors[0];
        let shown = if first.line == 0 {
            format!("{}: {}", first.file, first.message)
        } else {
            format!("{}:{}:{}: {}", first.file, first.line, first.column, first.message)
        };
        assert!(shown.contains(expect), "{shown}");
    }
    assert_eq!(
        std::fs::read_to_string(server.rules_dir().join("00-instruments.toml")).unwrap(),
        INSTRUMENTS
    );

    // A new BTC future listed: the next crash halts it too.
    let listed = format!(
        "{INSTRUMENTS}\n[[instrument]]\nsymbol = \"BTC-USDT-250627\"\nunderlying = \"BTC\"\nproduct = \"future\"\n"
    );
    let response = admin
        .update_reference_data(proto::UpdateReferenceDataRequest {
            file: "00-instruments.toml".into(),
            text: listed.clone(),
        })
        .await
        .expect("call")
        .into_inner();
    assert!(response.applied, "{:?}", response.errors);
    assert_eq!(response.ruleset_version, 2);
    assert_eq!(
        std::fs::read_to_string(server.rules_dir().join("00-instruments.toml")).unwrap(),
        listed
    );
    let mut alerts = server.subscribe(proto::SubscribeRequest::default()).await;
    let mut ingest = server.ingest().await;
    let now = SystemClock.now_ns();
    ingest
        .send(batch(
            1,
            vec![
                trade_at("BTC-USDT", now, 1, "100"),
                trade_at("BTC-USDT", now + 1, 2, "90"),
            ],
        ))
        .await;
    let halts = take_alerts(&mut alerts, 4).await;
    let instruments: Vec<_> = halts.iter().map(|a| a.instrument.as_str()).collect();
    assert_eq!(
        instruments,
        ["BTC-USDT", "BTC-USDT-250328", "BTC-USDT-250627", "BTC-USDT-SWAP"]
    );
    server.shutdown().await;
}
