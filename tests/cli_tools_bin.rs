//! The client commands as operators and scripts run them: `airbag send`,
//! `airbag subscribe` and `airbag load` as processes against `airbag serve`,
//! checking stdout, stderr and exit codes (the command-line contract).
//!
//! Every wait is bounded; every child process is killed when its guard
//! drops.

#[path = "support/load_summary.rs"]
mod load_summary;

use load_summary::{assert_summary_line, summary_field};
use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use airbag::cli::wire;
use airbag::wire::proto;
use airbag::wire::proto::rule_admin_client::RuleAdminClient;

/// The longest any single wait may take.
const WAIT: Duration = Duration::from_secs(20);

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn airbag() -> Command {
    Command::new(env!("CARGO_BIN_EXE_airbag"))
}

/// A child process, killed on drop unless [`Guard::finish`] took it.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Guard {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("a running child")
    }

    /// Waits at most [`WAIT`] for the process to exit; returns its status
    /// and everything it wrote.
    async fn finish(mut self, what: &str) -> Output {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.child().try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
                Ok(None) => panic!("{what} did not exit within {WAIT:?}"),
                Err(e) => panic!("waiting for {what}: {e}"),
            }
        }
        let child = self.0.take().expect("a running child");
        child.wait_with_output().expect("output")
    }
}

/// `airbag serve` on a free port.
struct Server {
    process: Guard,
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
        let child = airbag()
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", "127.0.0.1:0", "--rules"])
            .arg(data("cli_rules"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn airbag serve");
        let mut server = Server {
            process: Guard(Some(child)),
            addr: format!("127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + WAIT;
        while TcpStream::connect(&server.addr).is_err() {
            if let Ok(Some(status)) = server.process.child().try_wait() {
                panic!("airbag serve exited with {status}:\n{}", server.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "airbag serve did not listen:\n{}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the server counts `n` subscribers.
    async fn await_subscribers(&self, n: u32) {
        let channel = wire::connect(&self.addr).await.expect("connect");
        let mut admin = RuleAdminClient::new(channel);
        let deadline = Instant::now() + WAIT;
        loop {
            let status = admin
                .status(proto::StatusRequest {})
                .await
                .expect("status")
                .into_inner();
            if status.subscribers >= n {
                return;
            }
            assert!(Instant::now() < deadline, "no {n} subscribers within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn terminate(&self) {
        if let Some(child) = &self.process.0 {
            // SAFETY: kill(2) on a pid we spawned and have not reaped; no memory involved.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
        }
    }
}

fn spawn(cmd: &mut Command) -> Guard {
    Guard(Some(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn airbag"),
    ))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_success(status: ExitStatus, what: &str, output: &Output) {
    assert!(
        status.success(),
        "{what} failed with {status}\nstdout:\n{}\nstderr:\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_a_crash_file_and_subscribe_prints_the_halt_alert() {
    let server = Server::start();
    let subscriber = spawn(airbag().args([
        "subscribe",
        "--addr",
        &server.addr,
        "--min-severity",
        "critical",
        "--instrument",
        "BTC-*",
        "--action",
        "halt",
        "--count",
        "1",
    ]));
    server.await_subscribers(1).await;

    let sent = spawn(
        airbag()
            .args(["send", "--addr", &server.addr])
            .arg(data("btc_crash.csv")),
    )
    .finish("airbag send")
    .await;
    assert_success(sent.status, "airbag send", &sent);
    let report = text(&sent.stderr);
    assert!(report.contains("sent 5 ticks in 1 batches"), "{report}");
    assert!(report.contains("applied 5, rejected 0"), "{report}");

    let out = subscriber.finish("airbag subscribe --count 1").await;
    assert_success(out.status, "airbag subscribe", &out);
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    let json: serde_json::Value = serde_json::from_str(lines[0]).expect("a JSON object");
    for (key, want) in [
        ("seq", serde_json::json!(1)),
        ("rule_id", "btc-flash-crash".into()),
        ("ruleset_version", 1.into()),
        ("instrument", "BTC-USDT".into()),
        ("kind", "fired".into()),
        ("severity", "critical".into()),
        ("actions", serde_json::json!(["halt"])),
        ("mode", "active".into()),
        ("event_time_ns", 1_700_000_002_500_000_000i64.into()),
        ("tick_seq", 4.into()),
        (
            "values",
            serde_json::json!({"peak": "65000", "peak_age_ms": "2500", "price": "59800", "change_pct": "-8", "threshold_pct": "8"}),
        ),
    ] {
        assert_eq!(json[key], want, "{key} in {stdout}");
    }
    assert!(
        json["received_time_ns"].is_i64() && json["emitted_time_ns"].is_i64(),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_exits_non_zero_with_the_status_when_the_server_stops() {
    let server = Server::start();
    let subscriber = spawn(airbag().args(["subscribe", "--addr", &server.addr]));
    server.await_subscribers(1).await;
    server.terminate();
    let out = subscriber.finish("airbag subscribe").await;
    assert!(!out.status.success(), "stdout: {}", text(&out.stdout));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("the server ended the alert stream after 0 alerts: Unavailable"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_exits_non_zero_without_a_server() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let out = spawn(
        airbag()
            .args(["send", "--addr", &format!("127.0.0.1:{port}")])
            .arg(data("btc_crash.csv")),
    )
    .finish("airbag send")
    .await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("cannot connect to"), "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_ends_with_the_summary_line() {
    let server = Server::start();
    let out = spawn(airbag().args([
        "load",
        "--addr",
        &server.addr,
        "--duration",
        "2",
        "--rate",
        "20000",
        "--instruments",
        "50",
        "--crash-every",
        "0.5",
    ]))
    .finish("airbag load")
    .await;
    assert_success(out.status, "airbag load", &out);
    let stdout = text(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with("summary: "), "no summary line:\n{stdout}");
    assert_summary_line(last);
    let get = |key: &str| summary_field(last, key);
    assert_eq!(
        (get("alerts"), get("missing"), get("unexpected")),
        ("3", "0", "0"),
        "{stdout}"
    );
    assert!(get("ticks").parse::<u64>().expect("ticks") >= 30_000, "{last}");
    assert!(get("p99_us").parse::<u64>().is_ok(), "{last}");
    assert_eq!(get("server_cpu_ns_per_tick"), "n/a", "no --server-pid given");
    assert!(
        stdout.contains("tick-to-alert (µs)"),
        "the table comes first:\n{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_exits_0_while_serving_and_1_for_an_unknown_service_or_no_server() {
    let server = Server::start();
    let out = spawn(airbag().args(["health", "--addr", &server.addr]))
        .finish("airbag health")
        .await;
    assert_success(out.status, "airbag health", &out);
    assert_eq!(text(&out.stdout), "SERVING\n");

    let out = spawn(airbag().args(["health", "--addr", &server.addr, "--service", "airbag.v1.Ingest"]))
        .finish("airbag health --service airbag.v1.Ingest")
        .await;
    assert_success(out.status, "airbag health --service airbag.v1.Ingest", &out);

    let out = spawn(airbag().args(["health", "--addr", &server.addr, "--service", "no.such.Service"]))
        .finish("airbag health --service no.such.Service")
        .await;
    assert_eq!(out.status.code(), Some(1), "stderr: {}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("the health check failed: NotFound"),
        "{}",
        text(&out.stderr)
    );
    drop(server);

    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let out = spawn(airbag().args(["health", "--addr", &format!("127.0.0.1:{port}"), "--timeout", "2"]))
        .finish("airbag health without a server")
        .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot connect to"), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
}
