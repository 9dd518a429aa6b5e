//! End-to-end tests of the client tools' library functions (`send`,
//! `subscribe`, `load`) against the real `airbag serve` binary, started on a
//! free port with the rules in `tests/data/cli_rules/`.
//!
//! Every wait is bounded; the server is killed when its guard drops.

#[path = "support/load_summary.rs"]
mod load_summary;

use load_summary::assert_summary_line;
use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use airbag::cli::load::{run_load, LoadArgs};
use airbag::cli::send::{send_file, SendOptions};
use airbag::cli::subscribe::{self, SeverityArg, SubscribeArgs, TailError};
use airbag::cli::wire;
use airbag::tick_file::TickReader;
use airbag::wire::proto;

/// The longest any single wait may take.
const WAIT: Duration = Duration::from_secs(20);

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

/// `airbag serve` on a free port; killed on drop.
struct Server {
    child: Child,
    addr: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
            listener.local_addr().expect("local addr").port()
        };
        let log = dir.path().join("server.log");
        let child = Command::new(env!("CARGO_BIN_EXE_airbag"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", "127.0.0.1:0", "--rules"])
            .arg(data("cli_rules"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn airbag serve");
        let mut server = Server {
            child,
            addr: format!("127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + WAIT;
        loop {
            if TcpStream::connect(&server.addr).is_ok() {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("airbag serve exited with {status}:\n{}", server.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "airbag serve did not listen within {WAIT:?}:\n{}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn terminate(&self) {
        // SAFETY: kill(2) with a pid we spawned and still own; no memory involved.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

fn subscribe_args(addr: &str) -> SubscribeArgs {
    SubscribeArgs {
        addr: addr.to_owned(),
        min_severity: None,
        instruments: vec![],
        actions: vec![],
        rules: vec![],
        include_shadow: false,
        from_seq: 0,
        count: None,
        retry_for: 0.0,
        security: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sent_crash_file_raises_the_halt_alert_as_a_json_line() {
    let server = Server::start();
    let args = SubscribeArgs {
        min_severity: Some(SeverityArg::Critical),
        instruments: vec!["BTC-*".into()],
        ..subscribe_args(&server.addr)
    };
    let channel = within("connect", wire::connect(&server.addr)).await.expect("connect");
    let stream = within("subscribe", subscribe::open(channel, args.request()))
        .await
        .expect("subscription");
    let tail = tokio::spawn(async move {
        let mut out = Vec::new();
        let n = subscribe::tail(stream, Some(1), &mut out).await;
        (n.map_err(|e| e.to_string()), out)
    });

    let channel = within("connect", wire::connect(&server.addr)).await.expect("connect");
    let reader = TickReader::open(&data("btc_crash.csv")).expect("tick file");
    let summary = within("send", send_file(channel, reader, &SendOptions::default()))
        .await
        .expect("send");
    assert_eq!(
        (summary.ticks_sent, summary.applied, summary.rejected),
        (5, 5, 0),
        "{summary}"
    );
    assert_eq!(summary.batches_acked, 1);

    let (n, out) = within("the alert", tail).await.expect("tail task");
    assert_eq!(n, Ok(1));
    let text = String::from_utf8(out).expect("UTF-8");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.ends_with('\n'));
    let json: serde_json::Value = serde_json::from_str(text.trim_end()).expect("one JSON object");
    assert_eq!(json["seq"], 1);
    assert_eq!(json["rule_id"], "btc-flash-crash");
    assert_eq!(json["ruleset_version"], 1);
    assert_eq!(json["instrument"], "BTC-USDT");
    assert_eq!(json["kind"], "fired");
    assert_eq!(json["severity"], "critical");
    assert_eq!(json["actions"], serde_json::json!(["halt"]));
    assert_eq!(json["mode"], "active");
    assert_eq!(json["event_time_ns"], 1_700_000_002_500_000_000i64);
    assert_eq!(json["tick_seq"], 4);
    assert!(json["received_time_ns"].as_i64().unwrap() > 0, "{json}");
    assert!(
        json["emitted_time_ns"].as_i64().unwrap() >= json["received_time_ns"].as_i64().unwrap(),
        "{json}"
    );
    assert_eq!(json["values"]["peak"], "65000");
    assert_eq!(json["values"]["price"], "59800");
    assert_eq!(json["values"]["change_pct"], "-8");
    assert!(json.get("reason").is_none(), "no empty reason: {json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_reports_rejections_and_unreadable_rows_by_line() {
    let server = Server::start();
    let channel = within("connect", wire::connect(&server.addr)).await.expect("connect");
    let reader = TickReader::open(&data("bad_ticks.csv")).expect("tick file");
    let options = SendOptions {
        batch: 2,
        ..SendOptions::default()
    };
    let summary = within("send", send_file(channel, reader, &options))
        .await
        .expect("send");
    assert_eq!(summary.ticks_sent, 5, "{summary}");
    assert_eq!(summary.applied, 3, "{summary}");
    assert_eq!(summary.rejected, 2, "{summary}");
    assert_eq!(summary.rejected_by_code.get("bad_value"), Some(&1), "{summary}");
    assert_eq!(summary.rejected_by_code.get("duplicate"), Some(&1), "{summary}");
    let lines: Vec<(u64, &str)> = summary
        .rejection_examples
        .iter()
        .map(|r| (r.line, r.code.as_str()))
        .collect();
    assert_eq!(lines, [(3, "bad_value"), (6, "duplicate")], "{summary}");
    assert_eq!(summary.unreadable_rows, 1);
    assert_eq!(
        summary.unreadable_examples,
        ["line 4: price: not a finite decimal number"]
    );
    let text = summary.to_string();
    assert!(
        text.contains("applied 3, rejected 2 (bad_value 1, duplicate 1)"),
        "{text}"
    );
    assert!(text.contains("  line 3: bad_value: price: "), "{text}");
    assert!(
        text.contains("  line 6: duplicate: sequence 3 is at or below"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_send_stops_at_the_first_unreadable_row() {
    let server = Server::start();
    let channel = within("connect", wire::connect(&server.addr)).await.expect("connect");
    let reader = TickReader::open(&data("bad_ticks.csv")).expect("tick file");
    let options = SendOptions {
        batch: 1,
        strict: true,
        ..SendOptions::default()
    };
    let failure = within("send", send_file(channel, reader, &options))
        .await
        .expect_err("strict mode fails");
    assert_eq!(failure.to_string(), "line 4: price: not a finite decimal number");
    assert_eq!(failure.summary.ticks_sent, 2, "the rows before it were sent");
    assert_eq!(failure.summary.batches_acked, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_learns_why_the_server_ended_its_stream() {
    let server = Server::start();
    let channel = within("connect", wire::connect(&server.addr)).await.expect("connect");
    let stream = within(
        "subscribe",
        subscribe::open(channel, subscribe_args(&server.addr).request()),
    )
    .await
    .expect("subscription");
    server.terminate();
    let mut out = Vec::new();
    let err = within("the end of the stream", subscribe::tail(stream, Some(1), &mut out))
        .await
        .expect_err("the stream ends before an alert");
    assert!(out.is_empty());
    match &err {
        TailError::Ended { status, received: 0 } => {
            assert_eq!(status.code(), tonic::Code::Unavailable, "{err}");
            assert!(err
                .to_string()
                .starts_with("the server ended the alert stream after 0 alerts: Unavailable"));
        }
        other => panic!("expected a status, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_fail_fast_without_a_server() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let started = Instant::now();
    let err = wire::connect(&format!("127.0.0.1:{port}"))
        .await
        .expect_err("nobody listens");
    assert!(
        err.to_string().starts_with("cannot connect to http://127.0.0.1:"),
        "{err}"
    );
    assert!(started.elapsed() < WAIT);
    let err = run_load(&LoadArgs {
        addr: format!("127.0.0.1:{port}"),
        ..LoadArgs::default()
    })
    .await
    .expect_err("nobody listens");
    assert!(err.to_string().starts_with("cannot connect"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_refuses_a_server_without_the_expected_rule() {
    let server = Server::start();
    let err = within(
        "load",
        run_load(&LoadArgs {
            addr: server.addr.clone(),
            expect_rule: "no-such-rule".into(),
            ..LoadArgs::default()
        }),
    )
    .await
    .expect_err("the rule is missing");
    let text = err.to_string();
    assert!(
        text.starts_with("the server has no rule `no-such-rule` (it has: btc-flash-crash, drawdown-catch-all)"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_alerts_every_crash_once_and_summarises() {
    let server = Server::start();
    let args = LoadArgs {
        addr: server.addr.clone(),
        duration: 2.0,
        rate: 20_000.0,
        instruments: 50,
        connections: 2,
        batch: 100,
        crash_every: 0.5,
        ..LoadArgs::default()
    };
    let report = within("load", run_load(&args)).await.expect("load run");
    let line = report.summary_line();
    println!("{}{line}", report.table());
    assert!(report.stream_errors.is_empty(), "{:?}", report.stream_errors);
    assert_eq!(report.crashes, 3, "{line}");
    assert_eq!((report.alerts, report.missing, report.unexpected), (3, 0, 0), "{line}");
    assert_eq!(report.rejected, 0, "{:?}", report.rejection_examples);
    assert_eq!(report.applied, report.ticks_sent);
    assert_eq!(report.server_ticks_applied, Some(report.ticks_sent));
    assert!(report.ticks_sent >= 30_000, "{line}");
    assert_eq!(
        report.ack_rtt_us.len(),
        report.batches_sent,
        "every acknowledged batch has a round trip"
    );
    assert!(report.table().contains("ingest round trip (µs)"), "{}", report.table());
    assert!(
        report.latency_us.len() == 3 && report.latency_us.max() < 2_000_000,
        "{line}"
    );
    assert_summary_line(&line);
}

#[test]
fn the_bundled_test_data_reads_cleanly() {
    let rows: Vec<_> = TickReader::open(&data("btc_crash.csv"))
        .expect("tick file")
        .collect::<Result<_, _>>()
        .expect("every row reads");
    assert_eq!(rows.len(), 5);
    let wire_tick: proto::Tick = wire::tick(&rows[3]);
    assert_eq!(wire_tick.seq, 4);
    assert_eq!(wire_tick.event_time_ns, 1_700_000_002_500_000_000);
}
