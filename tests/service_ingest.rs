//! Ticks in over gRPC: the crash alert, rejections, batch limits, parallel
//! streams, metrics.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use airbag::wire::proto;
use common::*;
use tonic::Code;

const BTC_CRASH: &str = r#"
[[rule]]
id = "btc-flash-crash"
kind = "drawdown"
instruments = ["BTC-USDT"]
window = "3s"
threshold = "8%"
severity = "critical"
actions = ["halt"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn btc_crash_raises_one_critical_halt() {
    let server = TestServer::builder().rule_file("crash.toml", BTC_CRASH).start().await;
    let mut alerts = server.subscribe(proto::SubscribeRequest::default()).await;
    let mut ingest = server.ingest().await;

    let ack = ingest
        .send(batch(
            1,
            vec![
                trade("BTC-USDT", 0, 1, "100"),
                trade("BTC-USDT", 1_000, 2, "97"),
                trade("BTC-USDT", 2_000, 3, "94"),
                trade("BTC-USDT", 2_500, 4, "92"),
            ],
        ))
        .await;
    assert_eq!(ack.applied, 4);
    assert!(ack.rejected.is_empty(), "{:?}", ack.rejected);
    assert_eq!(
        ack.last_applied,
        vec![proto::InstrumentSeq {
            instrument: "BTC-USDT".into(),
            seq: 4
        }]
    );

    let alert = next_alert(&mut alerts).await;
    assert_eq!(alert.seq, 1);
    assert_eq!(alert.rule_id, "btc-flash-crash");
    assert_eq!(alert.ruleset_version, 1);
    assert_eq!(alert.instrument, "BTC-USDT");
    assert_eq!(alert.kind, "fired");
    assert_eq!(alert.severity, proto::Severity::Critical as i32);
    assert_eq!(alert.actions, vec!["halt".to_string()]);
    assert_eq!(alert.mode, "active");
    assert_eq!(value(&alert, "peak").as_deref(), Some("100"));
    assert_eq!(value(&alert, "price").as_deref(), Some("92"));
    assert_eq!(value(&alert, "change_pct").as_deref(), Some("-8"));
    assert_eq!(alert.tick_seq, Some(4));
    assert_eq!(alert.event_time_ns, T0_NS + 2_500_000_000);
    assert!(alert.received_time_ns > 0);
    assert!(alert.emitted_time_ns >= alert.received_time_ns);
    assert_quiet(&mut alerts, Duration::from_millis(300)).await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ticks_are_rejected_and_change_nothing() {
    let server = TestServer::builder().rule_file("crash.toml", BTC_CRASH).start().await;
    let mut ingest = server.ingest().await;

    let mut no_values = trade("BTC-USDT", 10, 2, "100");
    no_values.values = None;
    let mut no_size = trade("BTC-USDT", 10, 2, "100");
    if let Some(proto::tick::Values::Trade(t)) = &mut no_size.values {
        t.size = None;
    }
    let ticks = vec![
        trade("BTC-USDT", 0, 1, "100"),
        trade("BTC-USDT", 10, 2, "0"),
        trade("NEW-USDT", 10, 1, "-5"),
        quote("BTC-USDT", 10, 2, "101", "100"),
        trade(&"X".repeat(65), 10, 1, "100"),
        trade("BTC-USDT", 10, 1, "100"),
        no_values,
        no_size,
        trade("BTC-USDT", 20, 2, "99"),
    ];
    let ack = ingest.send(batch(7, ticks)).await;
    assert_eq!(ack.applied, 2);
    let got: Vec<(u32, &str)> = ack.rejected.iter().map(|r| (r.index, r.code.as_str())).collect();
    assert_eq!(
        got,
        vec![
            (1, "bad_value"),
            (2, "bad_value"),
            (3, "crossed_quote"),
            (4, "bad_symbol"),
            (5, "duplicate"),
            (6, "missing_values"),
            (7, "missing_values"),
        ]
    );
    let reasons: Vec<&str> = ack.rejected.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(reasons[0], "price: must be above zero, got 0");
    assert_eq!(reasons[1], "price: must be above zero, got -5");
    assert!(reasons[2].contains("crossed"), "{}", reasons[2]);
    assert!(reasons[3].contains("65 bytes"), "{}", reasons[3]);
    assert!(reasons[4].contains("duplicate"), "{}", reasons[4]);
    assert!(reasons[5].contains("no values"), "{}", reasons[5]);
    assert_eq!(reasons[6], "size: is missing");
    assert_eq!(
        ack.last_applied,
        vec![proto::InstrumentSeq {
            instrument: "BTC-USDT".into(),
            seq: 2
        }]
    );

    // The stream goes on, and the rejected ticks left no trace.
    let ack = ingest.send(batch(8, vec![trade("BTC-USDT", 30, 3, "98")])).await;
    assert_eq!((ack.applied, ack.rejected.len()), (1, 0));
    let ack = ingest.send(batch(9, vec![trade("BTC-USDT", 40, 3, "98")])).await;
    assert_eq!(ack.rejected[0].code, "duplicate");
    assert_eq!(ack.last_applied[0].seq, 3, "a duplicate reports the last applied");

    let status = server
        .admin()
        .await
        .status(proto::StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.instruments, 1, "rejected ticks added no instrument");
    assert_eq!(status.ticks_applied, 3);
    assert_eq!(status.ticks_rejected, 8);

    let metrics = server.metrics_text().await;
    assert!(metrics.contains("airbag_ticks_received_total 11"), "{metrics}");
    assert!(
        metrics.contains("airbag_ticks_rejected_total{reason=\"bad_value\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("airbag_ticks_rejected_total{reason=\"missing_values\"} 2"),
        "{metrics}"
    );
    assert!(metrics.contains("airbag_instruments 1"), "{metrics}");
    assert!(metrics.contains("airbag_ruleset_version 1"), "{metrics}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_over_the_limit_ends_the_stream() {
    let server = TestServer::builder()
        .rule_file("crash.toml", BTC_CRASH)
        .max_batch_ticks(10)
        .start()
        .await;
    let mut ingest = server.ingest().await;
    let ok: Vec<_> = (1..=10).map(|i| trade("BTC-USDT", i, i as u64, "100")).collect();
    assert_eq!(ingest.send(batch(1, ok)).await.applied, 10);
    let too_many: Vec<_> = (11..=21).map(|i| trade("BTC-USDT", i, i as u64, "100")).collect();
    ingest.send_only(batch(2, too_many)).await;
    let status = ingest.next_ack().await.expect_err("stream ends");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("11 ticks"), "{}", status.message());
    assert!(status.message().contains("limit is 10"), "{}", status.message());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_message_ends_the_stream_with_invalid_argument() {
    let server = TestServer::builder().rule_file("crash.toml", BTC_CRASH).start().await;
    let channel = server.channel().await;
    let mut grpc = tonic::client::Grpc::new(channel);
    within("ready", grpc.ready()).await.expect("ready");
    // Field 1 (batch_id) as a varint whose continuation never ends.
    let garbage = bytes::Bytes::from_static(&[0x08, 0xff, 0xff, 0xff]);
    let request = tonic::Request::new(tokio_stream::iter(vec![garbage]));
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/airbag.v1.Ingest/Ingest");
    let result = within("ingest", grpc.streaming(request, path, common::raw_codec::RawCodec)).await;
    let status = match result {
        Err(status) => status,
        Ok(response) => {
            let mut stream = response.into_inner();
            match within("reply", stream.message()).await {
                Err(status) => status,
                Ok(other) => panic!("expected an error, got {other:?}"),
            }
        }
    };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("malformed"), "{}", status.message());
    server.shutdown().await;
}

/// A price path with dips deep enough to fire and recoveries to resolve.
fn path(instrument_index: u64, len: u64) -> Vec<String> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ (instrument_index + 1).wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut price: i64 = 10_000; // hundredths
    (0..len)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let step = (state % 401) as i64 - 200; // -2% ..= +2%
            price += price * step / 10_000;
            if i % 37 == 36 {
                price = price * 92 / 100;
            }
            price = price.clamp(1_000, 1_000_000);
            format!("{}.{:02}", price / 100, price % 100)
        })
        .collect()
}

fn ticks_for(instrument: usize, len: u64) -> Vec<proto::Tick> {
    let symbol = format!("SYM-{instrument}");
    path(instrument as u64, len)
        .iter()
        .enumerate()
        .map(|(i, p)| trade(&symbol, i as i64 * 100, i as u64 + 1, p))
        .collect()
}

/// Alerts by instrument, in order, without their global sequence numbers.
type PerInstrument = BTreeMap<String, Vec<(String, String, Option<u64>, Vec<(String, String)>)>>;

async fn collect(server: &TestServer, alerts: &mut tonic::Streaming<proto::Alert>) -> PerInstrument {
    let published = server
        .admin()
        .await
        .status(proto::StatusRequest {})
        .await
        .expect("status")
        .into_inner()
        .alerts_published;
    let all = take_alerts(alerts, published as usize).await;
    let seqs: Vec<u64> = all.iter().map(|a| a.seq).collect();
    assert_eq!(seqs, (1..=published).collect::<Vec<_>>(), "gap-free");
    let mut out = PerInstrument::new();
    for a in all {
        let values = a
            .values
            .iter()
            .map(|v| (v.name.clone(), v.value.as_ref().map(text_of).unwrap_or_default()))
            .collect();
        out.entry(a.instrument.clone())
            .or_default()
            .push((a.rule_id, a.kind, a.tick_seq, values));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_streams_raise_the_same_alerts_as_one() {
    const INSTRUMENTS: usize = 4;
    const TICKS: u64 = 400;
    let rules = r#"
[[rule]]
id = "dip"
kind = "drawdown"
window = "3s"
threshold = "5%"
severity = "warning"
actions = ["notify"]

[[rule]]
id = "pop"
kind = "rally"
window = "2s"
threshold = "4%"
severity = "info"
"#;
    let per_instrument: Vec<Vec<proto::Tick>> = (0..INSTRUMENTS).map(|i| ticks_for(i, TICKS)).collect();

    // One stream, instruments interleaved.
    let one = TestServer::builder().rule_file("r.toml", rules).start().await;
    let mut one_alerts = one.subscribe(proto::SubscribeRequest::default()).await;
    let mut ingest = one.ingest().await;
    let mut interleaved = Vec::new();
    for t in 0..TICKS as usize {
        for ticks in &per_instrument {
            interleaved.push(ticks[t].clone());
        }
    }
    for (i, chunk) in interleaved.chunks(50).enumerate() {
        let ack = ingest.send(batch(i as u64, chunk.to_vec())).await;
        assert_eq!(ack.applied as usize, chunk.len(), "{:?}", ack.rejected);
    }
    let expected = collect(&one, &mut one_alerts).await;
    one.shutdown().await;
    assert_eq!(
        expected.len(),
        INSTRUMENTS,
        "every instrument raised alerts: {expected:?}"
    );
    let total: usize = expected.values().map(Vec::len).sum();
    assert!(total >= 40, "enough alerts to compare: {total}");

    // One stream per instrument, concurrently.
    let many = TestServer::builder().rule_file("r.toml", rules).start().await;
    let mut many_alerts = many.subscribe(proto::SubscribeRequest::default()).await;
    let mut tasks = Vec::new();
    for ticks in per_instrument {
        let mut ingest = many.ingest().await;
        tasks.push(tokio::spawn(async move {
            for (i, chunk) in ticks.chunks(20).enumerate() {
                let ack = ingest.send(batch(i as u64, chunk.to_vec())).await;
                assert_eq!(ack.applied as usize, chunk.len(), "{:?}", ack.rejected);
            }
        }));
    }
    for task in tasks {
        within("ingest task", task).await.expect("ingest task");
    }
    let got = collect(&many, &mut many_alerts).await;
    many.shutdown().await;
    assert_eq!(got, expected);
}
