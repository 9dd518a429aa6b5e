//! The Kafka client tools as operators run them, against `airbag serve`
//! and a real broker (tansu on loopback): `airbag kafka produce` of
//! `tests/data/btc_crash.csv` to a 4-partition tick topic, a server with a
//! Kafka source and two Kafka sinks (JSON and protobuf), and the critical
//! `halt` alerts read back by `airbag kafka tail` (and by an rdkafka
//! consumer) with the same fields as `airbag subscribe` prints. And
//! `airbag check-config` / `serve --check` on good and bad configurations.
#![cfg(feature = "kafka")]

mod common;
#[path = "support/airbag_process.rs"]
mod process;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::kafka::{json_of, key_of, Broker};
use process::{free_port, run, Serve};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);
const HALTED: [&str; 3] = ["BTC-USDT", "BTC-USDT-261225", "BTC-USDT-SWAP"];

fn manifest(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// JSON lines, sorted by `seq`.
fn alerts_of(stdout: &[u8]) -> Vec<Value> {
    let mut alerts: Vec<Value> = text(stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    alerts.sort_by_key(|a| a["seq"].as_u64());
    alerts
}

fn config(port: u16, broker: &Broker) -> String {
    format!(
        r#"listen = "127.0.0.1:{port}"
metrics_listen = "127.0.0.1:0"
rules = "{rules}"

[[kafka.source]]
brokers = ["{b}"]
topics = ["ticks"]
group_id = "kafka-cli-{pid}"
format = "protobuf_tick"

[[kafka.sink]]
name = "halts-json"
brokers = ["{b}"]
topic = "halts"
rules = ["btc-flash-crash"]

[[kafka.sink]]
name = "halts-protobuf"
brokers = ["{b}"]
topic = "halts-pb"
format = "protobuf"
actions = ["halt"]
"#,
        rules = manifest("rules").display(),
        b = broker.bootstrap(),
        pid = std::process::id(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produced_ticks_raise_the_halt_that_tail_prints_as_subscribe_does() {
    let broker = Broker::start();
    broker.create_topic("ticks", 4).await;
    broker.create_topic("halts", 2).await;
    broker.create_topic("halts-pb", 1).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config_path = dir.path().join("airbag.toml");
    std::fs::write(&config_path, config(port, &broker)).expect("config");

    let checked = run(&["check-config", config_path.to_str().unwrap()], WAIT);
    assert!(checked.status.success(), "check-config: {}", text(&checked.stderr));
    assert!(
        text(&checked.stdout).contains("1 Kafka sources, 2 Kafka sinks"),
        "{}",
        text(&checked.stdout)
    );

    let mut serve = Serve::start(&config_path, port, dir.path().join("serve.log"));
    let brokers = broker.bootstrap();
    let csv = manifest("tests/data/btc_crash.csv");
    let produced = run(
        &[
            "kafka",
            "produce",
            "--brokers",
            &brokers,
            "--topic",
            "ticks",
            "--format",
            "protobuf",
            csv.to_str().unwrap(),
        ],
        WAIT,
    );
    assert!(produced.status.success(), "produce: {}", text(&produced.stderr));
    assert!(
        text(&produced.stderr).contains("produced 5 ticks to ticks"),
        "{}",
        text(&produced.stderr)
    );

    let tail = |topic: &str| {
        let out = run(
            &[
                "kafka",
                "tail",
                "--brokers",
                &brokers,
                "--topic",
                topic,
                "--from-beginning",
                "--max",
                "3",
                "--timeout",
                "20",
            ],
            WAIT,
        );
        assert!(
            out.status.success(),
            "tail {topic}: {}\nserver log:\n{}",
            text(&out.stderr),
            serve.log_text()
        );
        alerts_of(&out.stdout)
    };
    let from_json = tail("halts");
    let from_protobuf = tail("halts-pb");
    let subscribed = run(
        &[
            "subscribe",
            "--addr",
            &serve.addr(),
            "--from-seq",
            "1",
            "--rule",
            "btc-flash-crash",
            "--count",
            "3",
        ],
        WAIT,
    );
    assert!(subscribed.status.success(), "subscribe: {}", text(&subscribed.stderr));
    let subscribed = alerts_of(&subscribed.stdout);

    assert_eq!(subscribed.len(), 3);
    assert_eq!(from_json, subscribed, "a JSON sink's alerts as `subscribe` prints them");
    assert_eq!(
        from_protobuf, subscribed,
        "a protobuf sink's alerts as `subscribe` prints them"
    );
    let mut instruments: Vec<&str> = subscribed
        .iter()
        .map(|a| {
            assert_eq!(a["rule_id"], "btc-flash-crash");
            assert_eq!(a["severity"], "critical");
            assert_eq!(a["actions"], serde_json::json!(["halt"]));
            assert_eq!(a["values"]["price"], "59800");
            a["instrument"].as_str().expect("instrument")
        })
        .collect();
    instruments.sort_unstable();
    assert_eq!(instruments, HALTED);

    // A plain rdkafka consumer sees the same, keyed by instrument.
    let messages = broker.read("halts", 2, WAIT, |m| m.len() >= 3).await;
    let mut read: Vec<Value> = messages
        .iter()
        .map(|m| {
            let alert = json_of(m);
            assert_eq!(key_of(m), alert["instrument"].as_str().expect("instrument"));
            alert
        })
        .collect();
    read.sort_by_key(|a| a["seq"].as_u64());
    assert_eq!(read, subscribed);

    assert!(
        serve.process.terminate(Duration::from_secs(20)),
        "clean stop:\n{}",
        serve.log_text()
    );
}

#[test]
fn check_config_reports_every_problem_under_its_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        r#"
[[kafka.source]]
brokers = []
topics = ["ticks"]
group_id = "g"
[kafka.source.properties]
"no.such.property" = "1"

[[kafka.sink]]
brokers = ["127.0.0.1:9092"]
topic = "bad topic"
min_severity = "loud"
"#,
    )
    .expect("config");
    for args in [
        vec!["check-config", bad.to_str().unwrap()],
        vec!["serve", "--check", "--config", bad.to_str().unwrap()],
    ] {
        let out = run(&args, WAIT);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stderr));
        let stderr = text(&out.stderr);
        for line in [
            "kafka: source[0].brokers: must name at least one broker",
            "kafka: source[0].properties.\"no.such.property\": librdkafka refuses it",
            "kafka: sink[0].topic: must be a Kafka topic name",
            "kafka: sink[0]: min_severity: expected",
        ] {
            assert!(stderr.contains(line), "{args:?}: `{line}` in\n{stderr}");
        }
    }

    let unparsable = dir.path().join("unparsable.toml");
    std::fs::write(&unparsable, "[[kafka.source]]\nbrokers = 7\n").expect("config");
    let out = run(&["check-config", unparsable.to_str().unwrap()], WAIT);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("unparsable.toml:2:"),
        "{}",
        text(&out.stderr)
    );

    let good = dir.path().join("good.toml");
    std::fs::write(&good, "listen = \"127.0.0.1:50051\"\n").expect("config");
    let out = run(&["check-config", good.to_str().unwrap()], WAIT);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("ok: "), "{}", text(&out.stdout));
}

/// `airbag kafka bench`, small: both phases run against the real broker
/// and report their figures (the figures themselves are not asserted: a
/// shared machine's speed is not the tool's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_bench_reports_the_throughput_ratio_and_tick_to_alert_percentiles() {
    let broker = Broker::start();
    let rules = manifest("rules");
    let out = run(
        &[
            "kafka",
            "bench",
            "--brokers",
            &broker.bootstrap(),
            "--rules",
            rules.to_str().unwrap(),
            "--ticks",
            "5000",
            "--instruments",
            "500",
            "--rounds",
            "1",
            "--rate",
            "2000",
            "--seconds",
            "2",
            "--crash-every-ms",
            "50",
        ],
        Duration::from_secs(120),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "bench: {}\n{stdout}", text(&out.stderr));
    assert!(stdout.contains("throughput medians: bare "), "{stdout}");
    let read: u64 = stdout
        .split(" alerts read")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no alert count in:\n{stdout}"));
    // 40 crashes, each on its own instrument: every one comes back.
    assert!(read >= 35, "{stdout}");
    assert!(stdout.contains("p99.9 "), "{stdout}");
}
