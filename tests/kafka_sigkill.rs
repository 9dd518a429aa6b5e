//! `airbag serve` killed with SIGKILL ten times while ticks stream through
//! Kafka (a real broker, tansu on loopback), restarted each time on its
//! `data_dir`: the alert topic, read from the start and deduplicated by
//! alert sequence number, holds exactly the alerts of an uninterrupted
//! run of the same configuration over the same topic (0 lost, none raised
//! twice under two numbers, every value the same). The test prints how many
//! duplicates the topic held before dedup.
//!
//! The uninterrupted run is a second server, alongside, in its own
//! consumer group with its own data_dir and alert topic.
#![cfg(feature = "kafka")]

mod common;
#[path = "support/airbag_process.rs"]
mod process;
#[path = "support/rng.rs"]
mod rng;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use airbag::wire::proto;
use common::kafka::{json_of, Broker};
use process::{free_port, last_applied, Serve};
use prost::Message as _;
use rdkafka::producer::FutureRecord;
use serde_json::Value;

const INSTRUMENTS: usize = 8;
/// Rounds of one tick per instrument, one round every `EVERY`.
const ROUNDS: u64 = 2_000;
const EVERY: Duration = Duration::from_millis(10);
const KILLS: usize = 10;
const TICK_PARTITIONS: i32 = 2;
const ALERT_PARTITIONS: i32 = 2;

/// Fires on a 10% fall within 3 s of event time and resolves after it: the
/// window makes a tick applied twice, or skipped, change what fires.
const RULES: &str = r#"
[[rule]]
id = "fall"
kind = "drawdown"
window = "3s"
threshold = "10%"
severity = "critical"
actions = ["halt"]

[[rule]]
id = "jump"
kind = "drawdown"
window = "2s"
threshold = "4%"
severity = "warning"
actions = ["notify"]
"#;

fn instrument(i: usize) -> String {
    format!("KILL-{i}")
}

/// Round `r`'s price for instrument `i`: a random walk (±0.4%) with a 12%
/// fall over ten rounds every 60 rounds, at an offset per instrument.
fn prices(seed: u64) -> Vec<Vec<String>> {
    let mut rng = rng::Rng(seed | 1);
    (0..INSTRUMENTS)
        .map(|i| {
            let mut price = 1_000.0_f64;
            (0..ROUNDS)
                .map(|r| {
                    let phase = (r + i as u64 * 7) % 60;
                    let step = if phase < 10 {
                        0.987
                    } else if phase < 20 {
                        1.013
                    } else {
                        1.0 + (rng.below(81) as f64 - 40.0) / 10_000.0
                    };
                    price *= step;
                    format!("{price:.2}")
                })
                .collect()
        })
        .collect()
}

/// A server reading every partition of the tick topic itself
/// (`partitions = "all"`): a restart resumes from the committed offsets
/// at once, with no group rebalance to wait for.
fn config(port: u16, broker: &str, group: &str, topic: &str, rules: &Path, data: &Path) -> String {
    format!(
        r#"listen = "127.0.0.1:{port}"
metrics_listen = "127.0.0.1:0"
rules = "{rules}"
data_dir = "{data}"

[checkpoint]
interval_ms = 200

[[kafka.source]]
brokers = ["{broker}"]
topics = ["kill-ticks"]
group_id = "{group}"
partitions = "all"
format = "protobuf_tick"
[kafka.source.properties]
"auto.commit.interval.ms" = "100"

[[kafka.sink]]
brokers = ["{broker}"]
topic = "{topic}"
"#,
        rules = rules.display(),
        data = data.display(),
    )
}

/// Waits (at most `limit`) until the server has applied every round of
/// every instrument.
async fn wait_applied_all(serve: &Serve, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(applied) = last_applied(serve.port).await {
            if (0..INSTRUMENTS).all(|i| applied.get(&instrument(i)) == Some(&ROUNDS)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not every tick applied within {limit:?}: {applied:?}\n{}",
                serve.log_text()
            );
        }
        assert!(Instant::now() < deadline, "server not answering:\n{}", serve.log_text());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An alert without what may differ between two runs: its number and the
/// wall-clock times.
fn comparable(alert: &Value) -> String {
    let mut alert = alert.clone();
    let object = alert.as_object_mut().expect("an alert object");
    for field in ["seq", "received_time_ns", "emitted_time_ns"] {
        object.remove(field);
    }
    alert.to_string()
}

/// The topic's alerts by sequence number, and how many repeats it held.
/// A sequence number carried by two different alerts fails the test.
fn deduplicated(messages: &[Value]) -> (BTreeMap<u64, String>, usize) {
    let mut by_seq = BTreeMap::new();
    let mut repeats = 0;
    for alert in messages {
        let seq = alert["seq"].as_u64().expect("seq");
        let body = comparable(alert);
        match by_seq.get(&seq) {
            Some(seen) => {
                assert_eq!(seen, &body, "seq {seq} carries two different alerts");
                repeats += 1;
            }
            None => {
                by_seq.insert(seq, body);
            }
        }
    }
    (by_seq, repeats)
}

/// Counts of each alert, whatever its number.
fn multiset<'a>(alerts: impl Iterator<Item = &'a String>) -> BTreeMap<&'a String, usize> {
    let mut counts = BTreeMap::new();
    for alert in alerts {
        *counts.entry(alert).or_default() += 1;
    }
    counts
}

async fn read_all(broker: &Broker, topic: &str, expected: usize) -> Vec<Value> {
    broker
        .read(topic, ALERT_PARTITIONS, Duration::from_secs(30), move |m| {
            m.len() >= expected
        })
        .await
        .iter()
        .map(json_of)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_sigkills_while_ticks_stream_lose_no_alert_and_raise_none_twice() {
    let started = Instant::now();
    let broker = Broker::start();
    broker.create_topic("kill-ticks", TICK_PARTITIONS).await;
    broker.create_topic("kill-alerts", ALERT_PARTITIONS).await;
    broker.create_topic("kill-alerts-ref", ALERT_PARTITIONS).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).expect("rules dir");
    std::fs::write(rules.join("falls.toml"), RULES).expect("rules");
    let pid = std::process::id();

    let (killed_port, reference_port) = (free_port(), free_port());
    let killed_config = dir.path().join("killed.toml");
    std::fs::write(
        &killed_config,
        config(
            killed_port,
            &broker.bootstrap(),
            &format!("kill-{pid}"),
            "kill-alerts",
            &rules,
            &dir.path().join("killed-data"),
        ),
    )
    .expect("config");
    let reference_config = dir.path().join("reference.toml");
    std::fs::write(
        &reference_config,
        config(
            reference_port,
            &broker.bootstrap(),
            &format!("kill-ref-{pid}"),
            "kill-alerts-ref",
            &rules,
            &dir.path().join("reference-data"),
        ),
    )
    .expect("config");
    let reference = Serve::start(&reference_config, reference_port, dir.path().join("reference.log"));
    let mut killed = Serve::start(&killed_config, killed_port, dir.path().join("killed-0.log"));

    // The ticks, streamed all along: a round every EVERY, keyed by instrument.
    let done = Arc::new(AtomicBool::new(false));
    let producer = {
        let (producer, done) = (broker.producer(), done.clone());
        let prices = prices(0x5151_2026);
        tokio::spawn(async move {
            let mut next = tokio::time::Instant::now();
            for round in 0..ROUNDS {
                next += EVERY;
                tokio::time::sleep_until(next).await;
                for (i, path) in prices.iter().enumerate() {
                    let name = instrument(i);
                    let tick = common::trade(&name, round as i64 * 100, round + 1, &path[round as usize]);
                    let payload = tick.encode_to_vec();
                    producer
                        .send(
                            FutureRecord::to("kill-ticks").key(&name).payload(&payload),
                            Duration::from_secs(5),
                        )
                        .await
                        .unwrap_or_else(|(e, _)| panic!("cannot produce round {round}: {e}"));
                }
            }
            done.store(true, Ordering::SeqCst);
        })
    };

    // SIGKILL at random moments, each time after 0.3–1.5 s of running.
    let mut rng = rng::Rng(u64::from(pid) | 1);
    for kill in 1..=KILLS {
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1_200))).await;
        killed.process.kill();
        let log = dir.path().join(format!("killed-{kill}.log"));
        killed = Serve::start(&killed_config, killed_port, log);
    }
    let produced_while_killing = !done.load(Ordering::SeqCst);
    producer.await.expect("producer");
    assert!(
        produced_while_killing,
        "the kills came after the last tick: nothing streamed meanwhile"
    );

    wait_applied_all(&reference, Duration::from_secs(60)).await;
    wait_applied_all(&killed, Duration::from_secs(90)).await;

    let reference_bus = reference_alerts(reference_port).await;
    let uninterrupted = read_all(&broker, "kill-alerts-ref", reference_bus).await;
    let (uninterrupted, reference_repeats) = deduplicated(&uninterrupted);
    assert_eq!(reference_repeats, 0, "the uninterrupted run's topic holds no repeat");
    assert_eq!(
        uninterrupted.len(),
        reference_bus,
        "every alert of the uninterrupted run on its topic"
    );
    assert!(
        uninterrupted.len() > 200,
        "the stream raises alerts: {}",
        uninterrupted.len()
    );

    // The killed run's topic: every alert at least once, then dedup by seq.
    let want = uninterrupted.len();
    let topic = broker
        .read("kill-alerts", ALERT_PARTITIONS, Duration::from_secs(60), move |m| {
            let mut seqs: Vec<u64> = m.iter().map(|m| json_of(m)["seq"].as_u64().unwrap_or(0)).collect();
            seqs.sort_unstable();
            seqs.dedup();
            seqs.len() >= want
        })
        .await;
    let topic: Vec<Value> = topic.iter().map(json_of).collect();
    let held = topic.len();
    let (after_kills, repeats) = deduplicated(&topic);

    let expected = multiset(uninterrupted.values());
    let got = multiset(after_kills.values());
    let missing: Vec<_> = expected
        .iter()
        .filter(|(alert, n)| got.get(*alert).copied().unwrap_or(0) < **n)
        .map(|(alert, _)| alert.as_str())
        .take(5)
        .collect();
    let extra: Vec<_> = got
        .iter()
        .filter(|(alert, n)| expected.get(*alert).copied().unwrap_or(0) < **n)
        .map(|(alert, _)| alert.as_str())
        .take(5)
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "after {KILLS} kills the topic differs from the uninterrupted run: {} alerts against {}\n\
         missing (first 5): {missing:#?}\nextra (first 5): {extra:#?}\nlast log:\n{}",
        after_kills.len(),
        uninterrupted.len(),
        killed.log_text()
    );
    // Numbers are gap-free: the first run numbers from 1, restarts go on.
    let seqs: Vec<u64> = after_kills.keys().copied().collect();
    assert_eq!(seqs.first(), Some(&1));
    assert_eq!(seqs.last(), Some(&(seqs.len() as u64)), "alert numbers have a gap");
    eprintln!(
        "{KILLS} SIGKILLs: {} alerts, as the uninterrupted run; the topic held {held} messages, {repeats} of them \
         repeats dropped by seq; {:.1} s",
        after_kills.len(),
        started.elapsed().as_secs_f64()
    );
}

/// How many alerts the uninterrupted server has published.
async fn reference_alerts(port: u16) -> usize {
    let mut client = proto::alerts_client::AlertsClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect");
    let mut stream = client
        .subscribe(proto::SubscribeRequest {
            from_seq: 1,
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner();
    let mut count = 0;
    // Idle for a second once the backlog is read: all of it.
    while let Ok(Ok(Some(_))) = tokio::time::timeout(Duration::from_secs(1), stream.message()).await {
        count += 1;
    }
    count
}
