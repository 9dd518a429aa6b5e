//! The broker goes away for 10 s while alerts are raised (a real broker,
//! tansu on loopback, killed and started again on the same port): gRPC
//! ingest and `Subscribe` go on meanwhile, the sink's alerts wait (in
//! librdkafka, up to `max_in_flight`, the rest in the journal), and when
//! the broker is back every alert raised from the outage on reaches the
//! alert topic, in sequence order per key.
//!
//! tansu 0.6.0 keeps its data in memory (its `dynostore` build offers
//! memory or S3), so the broker comes back empty: the test recreates the
//! alert topic, and the alerts delivered *before* the outage are gone with
//! the old broker's memory. That is the broker's storage, not Airbag's; the
//! test checks every alert raised after the broker went away.
#![cfg(feature = "kafka")]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use airbag::config::kafka::{KafkaConfig, KafkaSinkConfig};
use airbag::wire::proto;
use common::kafka::{json_of, key_of, Broker};
use common::{batch, trade, TestServer};
use rdkafka::message::Message as _;
use tokio::sync::Mutex;

/// Every tick after an instrument's first raises an alert: the price
/// swings 100 → 80 → 100 ..., so the drawdown fires, resolves, fires.
const RULE: &str = r#"
[[rule]]
id = "swing"
kind = "drawdown"
window = "3s"
threshold = "10%"
severity = "critical"
actions = ["halt"]
"#;
const INSTRUMENTS: [&str; 4] = ["OUT-A", "OUT-B", "OUT-C", "OUT-D"];
const TOPIC: &str = "outage-alerts";
const PARTITIONS: i32 = 3;
/// A batch (one tick per instrument) every this often.
const EVERY: Duration = Duration::from_millis(50);
const OUTAGE: Duration = Duration::from_secs(10);

/// What the sender saw: acks per phase.
#[derive(Default)]
struct Sent {
    batches: u64,
    slowest_ack: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_raised_while_the_broker_is_down_reach_the_topic_when_it_returns() {
    let started = Instant::now();
    let mut broker = Broker::start();
    broker.create_topic(TOPIC, PARTITIONS).await;
    let data = tempfile::tempdir().expect("data dir");
    let sink = KafkaSinkConfig {
        brokers: vec![broker.bootstrap()],
        topic: TOPIC.into(),
        // Fewer than the outage raises: the rest wait in the journal.
        max_in_flight: 64,
        ..KafkaSinkConfig::default()
    };
    let dir = data.path().to_path_buf();
    let server = Arc::new(
        TestServer::builder()
            .rule_file("swing.toml", RULE)
            .configure(move |c| {
                c.kafka = KafkaConfig {
                    source: Vec::new(),
                    sink: vec![sink],
                };
                c.data_dir = Some(dir);
            })
            .start()
            .await,
    );

    // A subscriber from the first alert, timing every arrival.
    let mut subscription = server
        .subscribe(proto::SubscribeRequest {
            from_seq: 1,
            ..Default::default()
        })
        .await;
    let subscribed: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let subscriber = {
        let subscribed = subscribed.clone();
        tokio::spawn(async move {
            while let Ok(Some(alert)) = subscription.message().await {
                subscribed.lock().await.push((alert.seq, Instant::now()));
            }
        })
    };

    // The sender: one tick per instrument every EVERY, until told to stop.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent: Arc<Mutex<Sent>> = Arc::default();
    let sender = {
        let (server, stop, sent) = (server.clone(), stop.clone(), sent.clone());
        tokio::spawn(async move {
            let mut ingest = server.ingest().await;
            let mut n = 0u64;
            let mut next = tokio::time::Instant::now();
            // Bounded: at most 60 s of batches.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 1200 {
                next += EVERY;
                tokio::time::sleep_until(next).await;
                let price = if n.is_multiple_of(2) { "100" } else { "80" };
                let ticks = INSTRUMENTS
                    .iter()
                    .map(|i| trade(i, n as i64 * 100, n + 1, price))
                    .collect();
                let sent_at = Instant::now();
                let ack = ingest.send(batch(n + 1, ticks)).await;
                assert_eq!(ack.applied, INSTRUMENTS.len() as u32, "batch {n}: {ack:?}");
                let mut s = sent.lock().await;
                s.batches += 1;
                s.slowest_ack = s.slowest_ack.max(sent_at.elapsed());
                n += 1;
            }
            ingest.close();
        })
    };

    // 1. The broker up: alerts flow to the topic.
    let first = broker
        .read(TOPIC, PARTITIONS, Duration::from_secs(20), |m| m.len() >= 8)
        .await;
    assert!(first.len() >= 8, "alerts reach the topic before the outage");

    // 2. The broker down for OUTAGE, alerts raised all along.
    broker.stop();
    let down_at = Instant::now();
    let batches_before = sent.lock().await.batches;
    let seen_before = subscribed.lock().await.len();
    let last_before = server.running().core().bus().last_seq();
    tokio::time::sleep(OUTAGE).await;
    let batches_during = sent.lock().await.batches - batches_before;
    let raised_during = server.running().core().bus().last_seq() - last_before;
    let seen_during = subscribed.lock().await.len() - seen_before;
    // 3. Back, empty: the topic again, then more alerts, then the end.
    broker.start_again();
    let up_at = Instant::now();
    broker.create_topic(TOPIC, PARTITIONS).await;
    // The sink catches up: its lag falls to at most a batch's alerts.
    let caught_up = loop {
        let metrics = server.metrics_text().await;
        let lag: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("airbag_kafka_sink_lag_alerts{{sink=\"{TOPIC}\"}} ")))
            .and_then(|v| v.parse().ok())
            .expect("the sink's lag");
        if lag <= INSTRUMENTS.len() as u64 {
            break up_at.elapsed();
        }
        assert!(
            up_at.elapsed() < Duration::from_secs(30),
            "the sink did not catch up within 30 s:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sender.await.expect("sender");
    let last_seq = server.running().core().bus().last_seq();
    let sent = sent.lock().await;

    // Ingest and Subscribe went on while the broker was down.
    let expected_batches = (OUTAGE.as_millis() / EVERY.as_millis()) as u64;
    assert!(
        batches_during * 10 >= expected_batches * 9,
        "ingest went on: {batches_during} batches acknowledged in the outage, {expected_batches} due"
    );
    assert!(
        raised_during >= batches_during * 3,
        "alerts raised in the outage: {raised_during}"
    );
    assert!(
        seen_during as u64 + 8 >= raised_during,
        "Subscribe went on: {seen_during} of {raised_during} alerts arrived in the outage"
    );
    assert!(
        sent.slowest_ack < Duration::from_secs(1),
        "slowest ack {:?}",
        sent.slowest_ack
    );

    // Every alert from the outage on is on the topic, in order per key.
    let from = last_before + 1;
    let want: HashSet<u64> = (from..=last_seq).collect();
    let messages = broker
        .read(TOPIC, PARTITIONS, Duration::from_secs(30), {
            // Only the messages new since the last look are parsed.
            let got = std::sync::Mutex::new((0usize, HashSet::new()));
            move |m| {
                let mut got = got.lock().expect("lock");
                let (looked, seqs) = &mut *got;
                seqs.extend(m[*looked..].iter().filter_map(|m| json_of(m)["seq"].as_u64()));
                *looked = m.len();
                want.is_subset(seqs)
            }
        })
        .await;
    let mut by_key: BTreeMap<(i32, String), Vec<u64>> = BTreeMap::new();
    for m in &messages {
        let alert = json_of(m);
        assert_eq!(key_of(m), alert["instrument"].as_str().expect("instrument"));
        by_key
            .entry((m.partition(), key_of(m)))
            .or_default()
            .push(alert["seq"].as_u64().expect("seq"));
    }
    let mut seen = HashSet::new();
    let mut duplicates = 0;
    for (key, seqs) in &by_key {
        let mut last = 0;
        for &seq in seqs {
            if !seen.insert(seq) {
                duplicates += 1;
                continue;
            }
            assert!(seq > last, "{key:?}: {seq} after {last}: not in order in {seqs:?}");
            last = seq;
        }
    }
    let missing: Vec<u64> = (from..=last_seq).filter(|s| !seen.contains(s)).collect();
    assert!(missing.is_empty(), "alerts missing from the topic: {missing:?}");

    // Subscribe saw every alert once, in order.
    subscriber.abort();
    let subscribed: Vec<u64> = subscribed.lock().await.iter().map(|(s, _)| *s).collect();
    assert_eq!(subscribed, (1..=last_seq).collect::<Vec<_>>());
    let metrics = server.metrics_text().await;
    println!(
        "outage {:?}: {raised_during} alerts raised, {seen_during} on Subscribe meanwhile; \
         the sink caught up {caught_up:?} after the broker returned; {} alerts from seq {from} \
         to {last_seq} on the topic ({duplicates} duplicates); slowest ingest ack {:?}; test {:?}",
        up_at - down_at,
        last_seq - from + 1,
        sent.slowest_ack,
        started.elapsed(),
    );
    for line in metrics.lines().filter(|l| l.starts_with("airbag_kafka_sink")) {
        println!("  {line}");
    }
    Arc::try_unwrap(server).ok().expect("the only handle").shutdown().await;
}
