//! Alerts out: filters, slow subscribers, resuming by sequence number.

mod common;

use std::time::Duration;

use airbag::wire::proto;
use common::*;
use tonic::Code;

const FILTER_RULES: &str = r#"
[[rule]]
id = "btc-crash"
kind = "drawdown"
instruments = ["BTC-*"]
window = "3s"
threshold = "8%"
severity = "critical"
actions = ["halt"]

[[rule]]
id = "eth-warn"
kind = "drawdown"
instruments = ["ETH-*"]
window = "3s"
threshold = "5%"
severity = "warning"
actions = ["notify"]

[[rule]]
id = "all-shadow"
kind = "drawdown"
window = "3s"
threshold = "5%"
severity = "info"
actions = ["notify"]
mode = "shadow"
"#;

fn request(f: impl FnOnce(&mut proto::SubscribeRequest)) -> proto::SubscribeRequest {
    let mut r = proto::SubscribeRequest::default();
    f(&mut r);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_deliver_only_what_they_match() {
    let server = TestServer::builder().rule_file("r.toml", FILTER_RULES).start().await;
    // (filter, expected (rule, instrument) in order)
    let cases: Vec<(proto::SubscribeRequest, Vec<(&str, &str)>)> = vec![
        (
            request(|_| {}),
            vec![("btc-crash", "BTC-USDT"), ("eth-warn", "ETH-USDT")],
        ),
        (
            request(|r| r.include_shadow = true),
            vec![
                ("btc-crash", "BTC-USDT"),
                ("all-shadow", "BTC-USDT"),
                ("eth-warn", "ETH-USDT"),
                ("all-shadow", "ETH-USDT"),
                ("all-shadow", "SOL-USDT"),
            ],
        ),
        (
            request(|r| r.instruments = vec!["BTC-*".into()]),
            vec![("btc-crash", "BTC-USDT")],
        ),
        (
            request(|r| r.min_severity = proto::Severity::Critical as i32),
            vec![("btc-crash", "BTC-USDT")],
        ),
        (
            request(|r| r.actions = vec!["notify".into()]),
            vec![("eth-warn", "ETH-USDT")],
        ),
        (
            request(|r| r.rule_ids = vec!["eth-warn".into()]),
            vec![("eth-warn", "ETH-USDT")],
        ),
        (
            request(|r| {
                r.rule_ids = vec!["all-shadow".into()];
                r.include_shadow = true;
                r.instruments = vec!["*-USDT".into()];
            }),
            vec![
                ("all-shadow", "BTC-USDT"),
                ("all-shadow", "ETH-USDT"),
                ("all-shadow", "SOL-USDT"),
            ],
        ),
    ];
    let mut streams = Vec::new();
    for (req, expected) in cases {
        let label = format!("{req:?}");
        streams.push((server.subscribe(req).await, expected, label));
    }

    let mut ingest = server.ingest().await;
    let ack = ingest
        .send(batch(
            1,
            vec![
                trade("BTC-USDT", 0, 1, "100"),
                trade("BTC-USDT", 500, 2, "91"),
                trade("ETH-USDT", 0, 1, "100"),
                trade("ETH-USDT", 500, 2, "94"),
                trade("SOL-USDT", 0, 1, "100"),
                trade("SOL-USDT", 500, 2, "94"),
            ],
        ))
        .await;
    assert_eq!(ack.applied, 6);

    for (mut stream, expected, label) in streams {
        let got = take_alerts(&mut stream, expected.len()).await;
        let got: Vec<(&str, &str)> = got
            .iter()
            .map(|a| (a.rule_id.as_str(), a.instrument.as_str()))
            .collect();
        assert_eq!(got, expected, "filter {label}");
        assert_quiet(&mut stream, Duration::from_millis(200)).await;
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_filters_and_starts_are_refused() {
    let server = TestServer::builder().rule_file("r.toml", FILTER_RULES).start().await;
    let status = server
        .try_subscribe(request(|r| r.instruments = vec!["BTC-[".into()]))
        .await
        .expect_err("bad glob");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("BTC-["), "{}", status.message());
    let status = server
        .try_subscribe(request(|r| r.min_severity = 42))
        .await
        .expect_err("bad severity");
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = server
        .try_subscribe(request(|r| r.from_seq = 5))
        .await
        .expect_err("nothing published yet");
    assert_eq!(status.code(), Code::OutOfRange);
    server.shutdown().await;
}

const FLIP: &str = r#"
[[rule]]
id = "flip"
kind = "drawdown"
instruments = ["FLIP"]
window = "3s"
threshold = "1%"
severity = "warning"
actions = ["notify"]
"#;

/// Ticks alternating 100 / 98: from the second on, each one fires or
/// resolves, so `n` ticks raise `n - 1` alerts.
fn flips(first_seq: u64, n: u64) -> Vec<proto::Tick> {
    (first_seq..first_seq + n)
        .map(|seq| {
            let price = if seq % 2 == 1 { "100" } else { "98" };
            trade("FLIP", seq as i64, seq, price)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_is_disconnected_and_others_carry_on() {
    const TICKS: u64 = 10_000;
    const BATCH: u64 = 50;
    let expected = TICKS - 1;
    let server = TestServer::builder()
        .rule_file("flip.toml", FLIP)
        .subscriber_queue(256)
        .start()
        .await;

    // A subscriber that never reads, on a connection with small windows so
    // that little is buffered in flight.
    let slow_channel = within(
        "connect",
        tonic::transport::Endpoint::from_shared(server.url())
            .expect("endpoint")
            .initial_stream_window_size(Some(65_535))
            .initial_connection_window_size(Some(65_535))
            .connect(),
    )
    .await
    .expect("connects");
    let mut slow = within(
        "subscribe",
        proto::alerts_client::AlertsClient::new(slow_channel).subscribe(proto::SubscribeRequest::default()),
    )
    .await
    .expect("subscribe")
    .into_inner();

    // A subscriber that reads everything, reporting how far it got.
    let mut fast = server.subscribe(proto::SubscribeRequest::default()).await;
    let (seen_tx, mut seen_rx) = tokio::sync::watch::channel(0u64);
    let reader = tokio::spawn(async move {
        let mut seqs = Vec::new();
        while (seqs.len() as u64) < expected {
            let alert = next_alert(&mut fast).await;
            seqs.push(alert.seq);
            let _ = seen_tx.send(alert.seq);
        }
        seqs
    });

    let mut ingest = server.ingest().await;
    let mut published = 0u64;
    for (i, first) in (1..=TICKS).step_by(BATCH as usize).enumerate() {
        let ack = ingest.send(batch(i as u64, flips(first, BATCH))).await;
        assert_eq!(ack.applied as u64, BATCH, "{:?}", ack.rejected);
        published += if first == 1 { BATCH - 1 } else { BATCH };
        // Keep the reading subscriber within its queue: this paces the test
        // on the reader, never on the one that stopped reading.
        if published - *seen_rx.borrow() > 128 {
            within("reader to catch up", seen_rx.wait_for(|seen| published - *seen <= 16))
                .await
                .expect("reader alive");
        }
    }
    let seqs = within("reader", reader).await.expect("reader");
    assert_eq!(seqs, (1..=expected).collect::<Vec<_>>(), "the reader got everything");

    // The one that stopped reading gets what was queued, then the reason.
    let mut got = Vec::new();
    let status = loop {
        match within("slow stream", slow.message()).await {
            Ok(Some(alert)) => got.push(alert.seq),
            Ok(None) => panic!("slow stream ended without a status after {} alerts", got.len()),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("fell behind"), "{}", status.message());
    assert!(status.message().contains("256"), "{}", status.message());
    let resume = got.len() as u64 + 1;
    assert!(resume < expected, "it was disconnected early ({resume})");
    assert_eq!(got, (1..resume).collect::<Vec<_>>(), "no gap before the disconnect");
    assert!(
        status.message().contains(&format!("resume from seq {resume}")),
        "{}",
        status.message()
    );

    // Resuming from there delivers the rest, from the ring.
    let mut again = server.subscribe(request(|r| r.from_seq = resume)).await;
    let rest = take_alerts(&mut again, (expected - resume + 1) as usize).await;
    assert_eq!(
        rest.iter().map(|a| a.seq).collect::<Vec<_>>(),
        (resume..=expected).collect::<Vec<_>>()
    );
    let metrics = server.metrics_text().await;
    assert!(metrics.contains("airbag_subscribers_lagged_total 1"), "{metrics}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_joins_the_live_stream_without_gap_or_duplicate() {
    let server = TestServer::builder()
        .rule_file("flip.toml", FLIP)
        .alert_ring(100)
        .start()
        .await;
    let mut ingest = server.ingest().await;
    ingest.send(batch(1, flips(1, 101))).await; // alerts 1..=100
    let mut resumed = server.subscribe(request(|r| r.from_seq = 60)).await;
    ingest.send(batch(2, flips(102, 20))).await; // alerts 101..=120
    let got = take_alerts(&mut resumed, 61).await;
    assert_eq!(
        got.iter().map(|a| a.seq).collect::<Vec<_>>(),
        (60..=120).collect::<Vec<_>>()
    );
    assert_quiet(&mut resumed, Duration::from_millis(200)).await;

    let status = server
        .try_subscribe(request(|r| r.from_seq = 10))
        .await
        .expect_err("older than the ring");
    assert_eq!(status.code(), Code::OutOfRange);
    assert!(
        status.message().contains("oldest available is 21"),
        "{}",
        status.message()
    );
    server.shutdown().await;
}
