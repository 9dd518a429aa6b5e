//! The real recordings the replay tests use (tests/data: Binance BTCUSDT
//! spot and perpetual trades, the ATOMUSDT flash sell), produced to a
//! 4-partition tick topic with `airbag kafka produce` and read by
//! `airbag serve` with the bundled rules (a real broker, tansu on
//! loopback), give on the alert topic exactly the alerts `airbag replay`
//! gives on the same files: every field but the sequence number and the
//! wall-clock times.
#![cfg(feature = "kafka")]

mod common;
#[path = "support/airbag_process.rs"]
mod process;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use airbag::wire::proto;
use common::kafka::{json_of, Broker};
use process::{free_port, run, Serve};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

fn manifest(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A recording: its file, the instrument it is, and its column flags (as
/// `airbag replay` and `airbag kafka produce` take them both).
struct Recording {
    file: &'static str,
    instrument: &'static str,
    columns: &'static [&'static str],
    last_seq: u64,
}

const BINANCE: &[&str] = &[
    "--time-col",
    "trade_time_ms",
    "--seq-col",
    "trade_id",
    "--size-col",
    "qty",
    "--buyer-maker-col",
    "is_buyer_maker",
];

const RECORDINGS: [Recording; 3] = [
    Recording {
        file: "tests/data/spot_btcusdt_trades.csv",
        instrument: "BTC-USDT",
        columns: BINANCE,
        last_seq: 3_735_703_162,
    },
    Recording {
        file: "tests/data/usdm_btcusdt_trades.csv",
        instrument: "BTC-USDT-SWAP",
        columns: BINANCE,
        last_seq: 5_266_605_247,
    },
    Recording {
        file: "tests/data/flash_sell_sequence.csv",
        instrument: "ATOM-USDT",
        columns: &[
            "--time-col",
            "time_utc",
            "--time-unit",
            "iso",
            "--seq-col",
            "aggregate_trade_id",
            "--size-col",
            "quantity_atom",
        ],
        last_seq: 176_299_407,
    },
];

impl Recording {
    fn args<'a>(&'a self, path: &'a str) -> Vec<&'a str> {
        let mut args = vec!["--symbol", self.instrument];
        args.extend_from_slice(self.columns);
        args.push(path);
        args
    }
}

/// An alert without what may differ between a replay and a server: its
/// number and the wall-clock times.
fn comparable(line: &Value) -> String {
    let mut alert = line.clone();
    let object = alert.as_object_mut().expect("an alert object");
    for field in ["seq", "received_time_ns", "emitted_time_ns"] {
        object.remove(field);
    }
    alert.to_string()
}

fn sorted(mut alerts: Vec<String>) -> Vec<String> {
    alerts.sort();
    alerts
}

async fn last_applied(port: u16) -> Option<HashMap<String, u64>> {
    let mut client = proto::ingest_client::IngestClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .ok()?;
    let response = client
        .last_applied(proto::LastAppliedRequest::default())
        .await
        .ok()?
        .into_inner();
    Some(
        response
            .last_applied
            .into_iter()
            .map(|p| (p.instrument, p.seq))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recordings_through_kafka_raise_exactly_the_alerts_replay_raises() {
    let rules = manifest("rules");
    // What `airbag replay` gives on each file.
    let mut replayed = Vec::new();
    for recording in &RECORDINGS {
        let path = manifest(recording.file);
        let path = path.to_str().expect("utf-8 path");
        let mut args = vec!["replay", "--rules", rules.to_str().unwrap()];
        args.extend(recording.args(path));
        let out = run(&args, WAIT);
        assert!(out.status.success(), "replay {}: {}", recording.file, text(&out.stderr));
        replayed.extend(
            text(&out.stdout)
                .lines()
                .map(|line| comparable(&serde_json::from_str(line).expect("a JSON alert"))),
        );
    }
    let replayed = sorted(replayed);
    assert!(
        replayed
            .iter()
            .any(|a| a.contains("\"instrument\":\"ATOM-USDT\"") && a.contains("\"halt\"")),
        "replay halts the flash sell: {replayed:#?}"
    );

    let broker = Broker::start();
    broker.create_topic("recorded-ticks", 4).await;
    broker.create_topic("recorded-alerts", 2).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = dir.path().join("airbag.toml");
    std::fs::write(
        &config,
        format!(
            r#"listen = "127.0.0.1:{port}"
metrics_listen = "127.0.0.1:0"
rules = "{rules}"

[[kafka.source]]
brokers = ["{b}"]
topics = ["recorded-ticks"]
group_id = "recorded-{pid}"
format = "protobuf_tick"

[[kafka.sink]]
brokers = ["{b}"]
topic = "recorded-alerts"
"#,
            rules = rules.display(),
            b = broker.bootstrap(),
            pid = std::process::id(),
        ),
    )
    .expect("config");
    let serve = Serve::start(&config, port, dir.path().join("serve.log"));
    let brokers = broker.bootstrap();
    for recording in &RECORDINGS {
        let path = manifest(recording.file);
        let path = path.to_str().expect("utf-8 path");
        let mut args = vec![
            "kafka",
            "produce",
            "--brokers",
            &brokers,
            "--topic",
            "recorded-ticks",
            "--strict",
        ];
        args.extend(recording.args(path));
        let out = run(&args, WAIT);
        assert!(
            out.status.success(),
            "produce {}: {}",
            recording.file,
            text(&out.stderr)
        );
    }

    // Every tick applied, then what reached the alert topic.
    let deadline = Instant::now() + WAIT;
    loop {
        let applied = last_applied(port).await.unwrap_or_default();
        if RECORDINGS
            .iter()
            .all(|r| applied.get(r.instrument) == Some(&r.last_seq))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every tick applied: {applied:?}\n{}",
            serve.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let want = replayed.len();
    // Waits 3 s past the replay's count: an extra alert would show.
    let messages = broker
        .read("recorded-alerts", 2, Duration::from_secs(3), move |m| m.len() > want)
        .await;
    let served = sorted(messages.iter().map(|m| comparable(&json_of(m))).collect());
    assert_eq!(
        served,
        replayed,
        "the alert topic against airbag replay\nserver log:\n{}",
        serve.log_text()
    );
    eprintln!(
        "{} alerts from {} recordings, the same through Kafka as in replay",
        served.len(),
        RECORDINGS.len()
    );
}
