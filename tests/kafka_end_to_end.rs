//! Kafka in and out with a real broker (tansu on loopback, started here):
//! ticks from a topic, as protobuf and as a venue's JSON, raise the bundled
//! BTC flash-crash halt, which arrives on the alert topic with the same
//! fields as on `Subscribe`; messages that do not decode are counted and
//! skipped, and the good ones around them applied.
#![cfg(feature = "kafka")]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use airbag::config::kafka::{InstrumentFrom, KafkaConfig, KafkaSinkConfig, KafkaSourceConfig, SourceFormat};
use airbag::tick_file::time::format_iso;
use airbag::tick_file::{FieldMapping, TimeUnit};
use airbag::wire::proto;
use common::kafka::{json_of, key_of, Broker};
use common::{take_alerts, trade, TestServer, T0_NS};
use prost::Message as _;

/// The BTC crash of `tests/data/btc_crash.csv`: (ms after T0, price).
const CRASH: [(i64, &str); 5] = [
    (0, "65000"),
    (1000, "64000"),
    (2000, "62000"),
    (2500, "59800"),
    (3000, "59000"),
];
/// What the bundled `btc-flash-crash` rule halts: the underlying's instruments.
const HALTED: [&str; 3] = ["BTC-USDT", "BTC-USDT-261225", "BTC-USDT-SWAP"];
const ALERT_WAIT: Duration = Duration::from_secs(20);

fn bundled_rules() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules")
}

fn source(broker: &Broker, topic: &str, group: &str, format: SourceFormat) -> KafkaSourceConfig {
    KafkaSourceConfig {
        brokers: vec![broker.bootstrap()],
        topics: vec![topic.into()],
        group_id: format!("{group}-{}", std::process::id()),
        format,
        ..KafkaSourceConfig::default()
    }
}

fn halt_sink(broker: &Broker, topic: &str) -> KafkaSinkConfig {
    KafkaSinkConfig {
        brokers: vec![broker.bootstrap()],
        topic: topic.into(),
        rules: vec!["btc-flash-crash".into()],
        ..KafkaSinkConfig::default()
    }
}

async fn server(kafka: KafkaConfig) -> TestServer {
    TestServer::builder()
        .rules_folder(bundled_rules())
        .configure(|c| c.kafka = kafka)
        .start()
        .await
}

/// Waits for the three halts on the alert topic and checks them against
/// the same alerts on `Subscribe`.
async fn assert_halts_match_subscribe(broker: &Broker, server: &TestServer, topic: &str) {
    let messages = broker.read(topic, 1, ALERT_WAIT, |m| m.len() >= 3).await;
    assert_eq!(messages.len(), 3, "the three halts on {topic}");
    let mut subscribe = server
        .subscribe(proto::SubscribeRequest {
            from_seq: 1,
            rule_ids: vec!["btc-flash-crash".into()],
            ..Default::default()
        })
        .await;
    let on_grpc = take_alerts(&mut subscribe, 3).await;
    let mut instruments = Vec::new();
    for (message, grpc) in messages.iter().zip(&on_grpc) {
        let alert = json_of(message);
        assert_eq!(alert["rule_id"], "btc-flash-crash");
        assert_eq!(alert["severity"], "critical");
        assert_eq!(alert["actions"], serde_json::json!(["halt"]));
        assert_eq!(alert["kind"], "fired");
        assert_eq!(alert["seq"], grpc.seq, "in sequence order, as on Subscribe");
        assert_eq!(alert["instrument"], grpc.instrument.as_str());
        assert_eq!(alert["event_time_ns"], grpc.event_time_ns);
        assert_eq!(
            alert["event_time_ns"],
            T0_NS + 2_500_000_000,
            "raised by the 59800 tick"
        );
        assert_eq!(alert["values"]["price"], "59800");
        assert_eq!(key_of(message), grpc.instrument, "keyed by instrument");
        instruments.push(grpc.instrument.clone());
    }
    instruments.sort();
    assert_eq!(instruments, HALTED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_ticks_from_a_topic_raise_the_halt_on_the_alert_topic() {
    let broker = Broker::start();
    broker.create_topic("ticks", 4).await;
    broker.create_topic("alerts", 1).await;
    let server = server(KafkaConfig {
        source: vec![source(&broker, "ticks", "proto", SourceFormat::ProtobufTick)],
        sink: vec![halt_sink(&broker, "alerts")],
    })
    .await;

    let messages: Vec<_> = CRASH
        .iter()
        .enumerate()
        .map(|(i, (ms, price))| {
            (
                Some("BTC-USDT"),
                trade("BTC-USDT", *ms, i as u64 + 1, price).encode_to_vec(),
            )
        })
        .collect();
    broker.produce("ticks", &messages).await;
    assert_halts_match_subscribe(&broker, &server, "alerts").await;

    let metrics = server.metrics_text().await;
    assert!(metrics.contains("airbag_kafka_messages_total 5"), "{metrics}");
    assert!(
        metrics.contains("airbag_kafka_sink_produced_total{sink=\"alerts\"} 3"),
        "{metrics}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_ticks_by_a_field_mapping_and_bad_messages_counted_and_skipped() {
    let broker = Broker::start();
    broker.create_topic("trades", 2).await;
    broker.create_topic("halts", 1).await;
    let mut json = source(&broker, "trades", "json", SourceFormat::Json);
    // A venue's trade message: {"s":..., "T":"<ISO-8601>", "p":"...", "q":"...", "t":...}
    json.json = Some(FieldMapping {
        instrument: Some("s".into()),
        time: Some("T".into()),
        time_unit: Some(TimeUnit::Iso),
        price: Some("p".into()),
        size: Some("q".into()),
        seq: Some("t".into()),
        ..FieldMapping::default()
    });
    let server = server(KafkaConfig {
        source: vec![json],
        sink: vec![halt_sink(&broker, "halts")],
    })
    .await;

    let iso = |ms: i64| format_iso(T0_NS + ms * 1_000_000);
    let mut messages: Vec<(Option<&str>, Vec<u8>)> = vec![
        (Some("BTC-USDT"), b"\x00\xffnot json at all".to_vec()),
        (
            Some("BTC-USDT"),
            format!(r#"{{"s":"BTC-USDT","T":"{}","q":"1","t":1}}"#, iso(0)).into_bytes(),
        ),
        (
            Some("BTC-USDT"),
            format!(r#"{{"s":"BTC-USDT","T":"{}","p":"-5","q":"1","t":1}}"#, iso(0)).into_bytes(),
        ),
        (
            Some("BTC-USDT"),
            br#"{"s":"BTC-USDT","T":"yesterday","p":"1","t":1}"#.to_vec(),
        ),
    ];
    for (i, (ms, price)) in CRASH.iter().enumerate() {
        let text = format!(
            r#"{{"e":"trade","s":"BTC-USDT","T":"{}","p":"{price}","q":"0.5","t":{},"m":true}}"#,
            iso(*ms),
            i + 1
        );
        messages.push((Some("BTC-USDT"), text.into_bytes()));
        if i == 1 {
            // Garbage between good messages changes nothing.
            messages.push((None, vec![0xde, 0xad, 0xbe, 0xef]));
        }
    }
    broker.produce("trades", &messages).await;
    assert_halts_match_subscribe(&broker, &server, "halts").await;

    let metrics = server.metrics_text().await;
    for line in [
        "airbag_kafka_messages_total 10",
        "airbag_kafka_rejected_total{reason=\"malformed\"} 2",
        "airbag_kafka_rejected_total{reason=\"missing_field\"} 1",
        "airbag_kafka_rejected_total{reason=\"bad_field\"} 1",
        "airbag_ticks_rejected_total{reason=\"bad_value\"} 1",
        "airbag_ticks_applied_total 5",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_instrument_may_come_from_the_key() {
    let broker = Broker::start();
    broker.create_topic("keyed", 1).await;
    broker.create_topic("keyed-alerts", 1).await;
    let mut keyed = source(&broker, "keyed", "key", SourceFormat::ProtobufBatch);
    keyed.instrument_from = InstrumentFrom::Key;
    let server = server(KafkaConfig {
        source: vec![keyed],
        sink: vec![halt_sink(&broker, "keyed-alerts")],
    })
    .await;
    // Ticks that name another instrument, and no seq: the key and the
    // offsets decide.
    let batch = |ms: i64, price: &str| {
        proto::TickBatch {
            batch_id: 0,
            ticks: vec![trade("ignored", ms, 0, price)],
        }
        .encode_to_vec()
    };
    let mut messages = vec![(None, batch(0, "1"))];
    messages.extend(CRASH.iter().map(|(ms, price)| (Some("BTC-USDT"), batch(*ms, price))));
    broker.produce("keyed", &messages).await;
    assert_halts_match_subscribe(&broker, &server, "keyed-alerts").await;
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains("airbag_kafka_rejected_total{reason=\"bad_key\"} 1"),
        "{metrics}"
    );
    server.shutdown().await;
}
