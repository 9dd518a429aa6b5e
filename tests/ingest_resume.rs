//! Resuming ingest: the real BTCUSDT trades sent through a connection that
//! is cut again and again give exactly the alerts of sending them in one
//! go, and `LastApplied` tells a client where to resume.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use airbag::cli::resume::{last_applied, send_resuming_to};
use airbag::cli::send::{send_file, SendOptions};
use airbag::cli::wire;
use airbag::tick_file::TickReader;
use airbag::wire::proto;
use common::flaky_proxy::FlakyProxy;
use common::{within, TestServer};

/// Sensitive rules, so the calm recording raises a few dozen alerts.
const RULES: &str = r#"
[[rule]]
id = "dip"
kind = "drawdown"
window = "10s"
threshold = "0.03%"
cooldown = "1s"

[[rule]]
id = "pop"
kind = "rally"
window = "10s"
threshold = "0.03%"
cooldown = "1s"

[[rule]]
id = "fast"
kind = "velocity"
window = "2s"
threshold = "0.02%"
"#;

/// The spot BTCUSDT trades (`tests/data/spot_btcusdt_trades.csv`, see
/// its README) in the layout `airbag send` reads, with the trade id as the
/// sequence number.
fn btc_ticks(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/spot_btcusdt_trades.csv");
    let text = std::fs::read_to_string(source).expect("recording");
    let mut out = String::from("instrument,ts_ms,price,size,seq\n");
    for line in text.lines().skip(1) {
        let cols: Vec<&str> = line.split(',').collect();
        let (trade_time_ms, trade_id, price, qty) = (cols[2], cols[3], cols[4], cols[5]);
        out.push_str(&format!("BTC-USDT,{trade_time_ms},{price},{qty},{trade_id}\n"));
    }
    let path = dir.join("btc.csv");
    std::fs::write(&path, out).expect("write ticks");
    path
}

/// Every alert the server has published, from sequence 1, as JSON lines
/// without the server's clock readings.
async fn all_alerts(server: &TestServer) -> Vec<String> {
    let published = within("status", server.admin().await.status(proto::StatusRequest {}))
        .await
        .expect("status")
        .into_inner()
        .alerts_published;
    let mut stream = server
        .subscribe(proto::SubscribeRequest {
            from_seq: 1,
            ..Default::default()
        })
        .await;
    let mut alerts = Vec::new();
    while (alerts.len() as u64) < published {
        let mut alert = within("alert", stream.message()).await.expect("stream").expect("alert");
        alert.received_time_ns = 0;
        alert.emitted_time_ns = 0;
        alerts.push(airbag::cli::subscribe::alert_json(&alert));
    }
    alerts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_trades_sent_through_a_cut_connection_give_the_alerts_of_one_clean_send() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ticks = btc_ticks(dir.path());
    let options = SendOptions {
        batch: 200,
        ..SendOptions::default()
    };

    let clean = TestServer::builder().rule_file("r.toml", RULES).start().await;
    let reader = TickReader::open(&ticks).expect("tick file");
    let summary = within(
        "clean send",
        send_file(wire::connect(&clean.url()).await.expect("connect"), reader, &options),
    )
    .await
    .expect("send");
    assert_eq!(summary.rejected, 0, "{summary}");
    let expected = all_alerts(&clean).await;
    assert!(
        expected.len() >= 10,
        "only {} alerts: the rules are too quiet",
        expected.len()
    );
    clean.shutdown().await;

    let server = TestServer::builder().rule_file("r.toml", RULES).start().await;
    let proxy = FlakyProxy::start(server.addr, Duration::from_millis(100), Duration::from_millis(300), 11).await;
    // Slow enough that the proxy cuts the stream many times mid-file.
    let paced = SendOptions {
        rate: 20_000.0,
        ..options.clone()
    };
    let summary = tokio::time::timeout(
        Duration::from_secs(60),
        send_resuming_to(
            &proxy.url(),
            &Default::default(),
            &ticks,
            &paced,
            Duration::from_secs(10),
        ),
    )
    .await
    .expect("resuming send finishes")
    .expect("send");
    assert!(proxy.cuts() >= 3, "the connection was cut only {} times", proxy.cuts());
    assert!(summary.attempts >= 3, "{summary}");
    assert!(summary.skipped_applied > 0, "{summary}");
    let got = all_alerts(&server).await;
    assert_eq!(got.len(), expected.len());
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g, e, "alert {i} differs");
    }
    let channel = wire::connect(&server.url()).await.expect("connect");
    let positions = last_applied(channel).await.expect("last applied");
    assert_eq!(
        positions.get("BTC-USDT"),
        Some(&3735703162),
        "the last trade id of the file"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_applied_reports_what_was_asked_for_and_skips_unknown_instruments() {
    let server = TestServer::builder().rule_file("r.toml", RULES).start().await;
    let mut ingest = server.ingest().await;
    let ack = ingest
        .send(common::batch(
            1,
            vec![
                common::trade("A", 0, 5, "100"),
                common::trade("B", 0, 9, "100"),
                common::trade("A", 1, 7, "100"),
            ],
        ))
        .await;
    assert_eq!(ack.applied, 3);
    let mut client = proto::ingest_client::IngestClient::new(server.channel().await);
    let asked = within(
        "last applied",
        client.last_applied(proto::LastAppliedRequest {
            instruments: vec!["A".into(), "NEVER-SEEN".into()],
            ..Default::default()
        }),
    )
    .await
    .expect("call")
    .into_inner();
    assert_eq!(
        asked.last_applied,
        vec![proto::InstrumentSeq {
            instrument: "A".into(),
            seq: 7
        }]
    );
    let all = last_applied(wire::connect(&server.url()).await.expect("connect"))
        .await
        .expect("all");
    assert_eq!(all.len(), 2);
    assert_eq!((all["A"], all["B"]), (7, 9));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_resumes_through_a_cut_connection_with_no_duplicate_and_no_gap() {
    let server = TestServer::builder().rule_file("r.toml", RULES).start().await;
    let proxy = FlakyProxy::start(server.addr, Duration::from_millis(200), Duration::from_millis(400), 5).await;
    let args = airbag::cli::load::LoadArgs {
        addr: proxy.url(),
        duration: 2.0,
        rate: 20_000.0,
        instruments: 40,
        connections: 2,
        batch: 50,
        crash_every: 0.0,
        expect_rule: "dip".into(),
        retry_for: 5.0,
        grace: 0.0,
        ..Default::default()
    };
    let report = tokio::time::timeout(Duration::from_secs(30), airbag::cli::load::run_load(&args))
        .await
        .expect("load finishes")
        .expect("load run");
    let resumed = report
        .stream_errors
        .iter()
        .filter(|e| e.contains("resumed after"))
        .count();
    assert!(resumed >= 2, "{:?}", report.stream_errors);
    assert!(
        report
            .stream_errors
            .iter()
            .all(|e| e.contains("resumed after") || e.starts_with("alerts:")),
        "an ingest connection gave up: {:?}",
        report.stream_errors
    );
    assert_eq!(report.rejected, 0, "{:?}", report.rejection_examples);
    assert!(report.applied > 10_000, "applied {}", report.applied);
    let metrics = server.metrics_text().await;
    let metric = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok()))
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    assert_eq!(
        metric("airbag_ticks_sequence_gaps_total "),
        0.0,
        "ticks lost in flight were numbered again"
    );
    // Batches whose ack was lost with a cut were applied all the same.
    let applied = metric("airbag_ticks_applied_total ");
    assert!(
        applied >= report.applied as f64 && applied <= report.ticks_sent as f64,
        "server applied {applied}, acknowledged {}, sent {}",
        report.applied,
        report.ticks_sent
    );
    server.shutdown().await;
}
