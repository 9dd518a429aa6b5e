//! Restarts with Kafka on both sides (a real broker, tansu on loopback):
//! the source resumes from the offsets it committed, on the state the
//! checkpoint restored; the sink resumes from its stored position, so the
//! alerts raised while no sink ran reach the topic after a restart, once.
#![cfg(feature = "kafka")]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use airbag::config::kafka::{KafkaConfig, KafkaSinkConfig, KafkaSourceConfig, SourceFormat};
use common::kafka::{json_of, Broker};
use common::{trade, TestServer};
use prost::Message as _;

const CRASH: [(i64, &str); 5] = [
    (0, "65000"),
    (1000, "64000"),
    (2000, "62000"),
    (2500, "59800"),
    (3000, "59000"),
];

fn ticks(range: std::ops::Range<usize>) -> Vec<(Option<&'static str>, Vec<u8>)> {
    range
        .map(|i| {
            let (ms, price) = CRASH[i];
            (
                Some("BTC-USDT"),
                trade("BTC-USDT", ms, i as u64 + 1, price).encode_to_vec(),
            )
        })
        .collect()
}

async fn server(broker: &Broker, data_dir: &Path, with_sink: bool) -> TestServer {
    let source = KafkaSourceConfig {
        brokers: vec![broker.bootstrap()],
        topics: vec!["ticks".into()],
        group_id: format!("restart-{}", std::process::id()),
        format: SourceFormat::ProtobufTick,
        ..KafkaSourceConfig::default()
    };
    let sink = KafkaSinkConfig {
        brokers: vec![broker.bootstrap()],
        topic: "alerts".into(),
        rules: vec!["btc-flash-crash".into()],
        ..KafkaSinkConfig::default()
    };
    let kafka = KafkaConfig {
        source: vec![source],
        sink: if with_sink { vec![sink] } else { Vec::new() },
    };
    let dir = data_dir.to_path_buf();
    TestServer::builder()
        .rules_folder(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules"))
        .configure(move |c| {
            c.kafka = kafka;
            c.data_dir = Some(dir);
        })
        .start()
        .await
}

/// Waits (at most 20 s) until `/metrics` has `line`.
async fn wait_for_metric(server: &TestServer, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = server.metrics_text().await;
        if text.contains(line) {
            return;
        }
        assert!(Instant::now() < deadline, "no `{line}` within 20 s in\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_resume_the_source_from_its_offsets_and_the_sink_from_its_position() {
    let broker = Broker::start();
    broker.create_topic("ticks", 1).await;
    broker.create_topic("alerts", 1).await;
    let data = tempfile::tempdir().expect("data dir");

    // 1. The peak and the first of the fall; nothing fires yet.
    let first = server(&broker, data.path(), true).await;
    broker.produce("ticks", &ticks(0..3)).await;
    wait_for_metric(&first, "airbag_ticks_applied_total 3").await;
    first.shutdown().await;

    // 2. No sink runs: the fall completes, and the halts wait in the
    //    journal. The source reads only the two new messages, and the
    //    checkpoint gave it the peak.
    let second = server(&broker, data.path(), false).await;
    broker.produce("ticks", &ticks(3..5)).await;
    wait_for_metric(&second, "airbag_ticks_applied_total 2").await;
    wait_for_metric(&second, "airbag_kafka_messages_total 2").await;
    wait_for_metric(
        &second,
        "airbag_alerts_total{rule=\"btc-flash-crash\",severity=\"critical\"} 3",
    )
    .await;
    second.shutdown().await;
    assert!(
        broker
            .read("alerts", 1, Duration::from_millis(500), |m| !m.is_empty())
            .await
            .is_empty(),
        "no sink ran yet"
    );

    // 3. The sink runs again: it delivers the halts from the journal.
    let third = server(&broker, data.path(), true).await;
    let alerts = broker
        .read("alerts", 1, Duration::from_secs(20), |m| m.len() >= 3)
        .await;
    assert_eq!(alerts.len(), 3);
    let seqs: Vec<u64> = alerts
        .iter()
        .map(|m| json_of(m)["seq"].as_u64().expect("seq"))
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in sequence order: {seqs:?}");
    for alert in &alerts {
        assert_eq!(json_of(alert)["rule_id"], "btc-flash-crash");
    }
    wait_for_metric(&third, "airbag_kafka_sink_produced_total{sink=\"alerts\"} 3").await;
    third.shutdown().await;

    // 4. Once more: the stored position says they were delivered.
    let fourth = server(&broker, data.path(), true).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    wait_for_metric(&fourth, "airbag_kafka_sink_produced_total{sink=\"alerts\"} 0").await;
    fourth.shutdown().await;
    let again = broker.read("alerts", 1, Duration::from_secs(2), |m| m.len() > 3).await;
    assert_eq!(again.len(), 3, "no alert delivered twice");
}

/// A restart or a take-over resumes from an offset that a producer's batch
/// may straddle: a fetch from inside a batch must start at that offset (the
/// client drops the batch's records before it), not at the next batch.
/// This holds the broker of the tests to Kafka's behaviour
/// (scripts/tansu/fetch-from-containing-batch.patch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_from_inside_a_batch_starts_at_the_offset_asked_for() {
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let broker = Broker::start();
    broker.create_topic("batched", 1).await;
    // Sent together and lingering: one batch of ten on the broker.
    let producer: FutureProducer = broker
        .client()
        .set("linger.ms", "500")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let payloads: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    let sends: Vec<_> = payloads
        .iter()
        .map(|p| {
            producer
                .send_result(FutureRecord::to("batched").key("k").payload(p))
                .expect("queued")
        })
        .collect();
    for send in sends {
        let offset = send.await.expect("delivery").expect("acknowledged").offset;
        assert!(offset < 10, "one producer, one partition: offsets 0..10, got {offset}");
    }
    for from in [0, 4, 9] {
        let read = broker
            .read_from("batched", 0, from, Duration::from_secs(10), |m| {
                m.iter().any(|m| rdkafka::Message::offset(m) == 9)
            })
            .await;
        let offsets: Vec<i64> = read.iter().map(rdkafka::Message::offset).collect();
        assert_eq!(
            offsets,
            (from..10).collect::<Vec<_>>(),
            "a fetch from offset {from} of a batch of ten"
        );
    }
}
