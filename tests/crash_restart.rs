//! Crash and restart: `airbag serve` is killed with SIGKILL at random
//! moments, again and again, while `airbag send` streams a tick file and
//! `airbag subscribe` follows the alerts; each time the server restarts
//! from its data folder (checkpoint and alert journal) and both clients
//! resume. The alerts the subscriber saw must equal, one for one and with
//! the same sequence numbers, those of an uninterrupted run over the same
//! file: nothing lost, nothing doubled, no gap.
//!
//! Every process is killed when its guard drops; every wait is bounded.

#[path = "support/rng.rs"]
mod rng;

use std::fmt::Write as _;
use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use airbag::wire::proto;
use airbag::wire::proto::rule_admin_client::RuleAdminClient;
use rng::Rng;

/// Kills of the server during the crash run, at least.
const KILLS: usize = 20;
/// The longest the whole crash run may take.
const RUN_LIMIT: Duration = Duration::from_secs(240);

/// Rules whose alerts depend only on the ticks (no timers on the server's
/// clock), so two runs over one file must agree exactly.
const RULES: &str = r#"
[[rule]]
id = "crash"
kind = "drawdown"
window = "3s"
threshold = "3%"
severity = "critical"
actions = ["halt"]

[[rule]]
id = "spike"
kind = "rally"
window = "3s"
threshold = "3%"
cooldown = "2s"

[[rule]]
id = "fast"
kind = "velocity"
window = "500ms"
threshold = "1.5%"

[[rule]]
id = "gap"
kind = "feed_gap"
"#;

fn airbag() -> Command {
    Command::new(env!("CARGO_BIN_EXE_airbag"))
}

/// A child process, killed on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Guard {
    /// Whether it has exited (and with what success).
    fn exited(&mut self) -> Option<bool> {
        self.0.try_wait().expect("try_wait").map(|s| s.success())
    }

    /// Waits up to `limit` for the process to exit on its own.
    fn wait_exit(&mut self, limit: Duration, what: &str) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(ok) = self.exited() {
                return ok;
            }
            assert!(Instant::now() < deadline, "{what} did not finish within {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A tick file for `airbag send`: four instruments, a random walk with a
/// sharp fall or jump now and then, and a few skipped sequence numbers.
fn write_ticks(path: &Path, ticks: usize, seed: u64) {
    let mut rng = Rng(seed | 1);
    let symbols = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT"];
    let mut price = [6_500_000_i64, 350_000, 15_000, 60]; // in cents
    let mut seq = [0u64; 4];
    let mut out = String::from("instrument,ts_ms,price,size,seq\n");
    let t0_ms: i64 = 1_700_000_000_000;
    for i in 0..ticks {
        let k = rng.below(4) as usize;
        seq[k] += if rng.below(500) == 0 { 2 } else { 1 };
        let p = price[k];
        let step = match rng.below(4000) {
            0 => -(p / 12),
            1 => p / 12,
            n => (n as i64 % 21 - 10) * p / 20_000,
        };
        price[k] = (p + step).max(10);
        let ms = t0_ms + (i as i64) / 4;
        let _ = writeln!(
            out,
            "{},{ms},{}.{:02},1,{}",
            symbols[k],
            price[k] / 100,
            price[k] % 100,
            seq[k]
        );
    }
    std::fs::write(path, out).expect("write ticks");
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// One service: its folders, config and port; started and killed at will.
struct Service {
    root: PathBuf,
    port: u16,
    config: PathBuf,
    starts: usize,
}

impl Service {
    fn new(root: &Path) -> Service {
        let rules = root.join("rules");
        std::fs::create_dir_all(&rules).expect("rules dir");
        std::fs::write(rules.join("crash.toml"), RULES).expect("rules");
        let port = free_port();
        let config = root.join("airbag.toml");
        let text = format!(
            "listen = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:0\"\nrules = \"{}\"\n\
             data_dir = \"{}\"\nwatch_rules = false\n\n[checkpoint]\ninterval_ms = 250\n",
            rules.display(),
            root.join("data").display()
        );
        std::fs::write(&config, text).expect("config");
        Service {
            root: root.to_path_buf(),
            port,
            config,
            starts: 0,
        }
    }

    fn addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the server and waits until it accepts connections.
    fn start(&mut self) -> Guard {
        self.starts += 1;
        let log = File::create(self.root.join(format!("server-{}.log", self.starts))).expect("log");
        let child = airbag()
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn airbag serve");
        let mut guard = Guard(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(ok) = guard.exited() {
                panic!(
                    "airbag serve exited ({ok}) at start {}: {}",
                    self.starts,
                    self.log(self.starts)
                );
            }
            assert!(Instant::now() < deadline, "airbag serve did not listen within 20 s");
            std::thread::sleep(Duration::from_millis(10));
        }
        guard
    }

    fn log(&self, start: usize) -> String {
        std::fs::read_to_string(self.root.join(format!("server-{start}.log"))).unwrap_or_default()
    }

    fn send(&self, file: &Path, rate: u32) -> Guard {
        let child = airbag()
            .args(["send", "--addr", &self.addr(), "--batch", "100", "--retry-for", "30"])
            .args(["--rate", &rate.to_string()])
            .arg(file)
            .stdout(Stdio::null())
            .stderr(File::create(self.root.join("send.log")).expect("send log"))
            .spawn()
            .expect("spawn airbag send");
        Guard(child)
    }

    fn subscribe(&self, count: usize, out: &Path) -> Guard {
        let child = airbag()
            .args([
                "subscribe",
                "--addr",
                &self.addr(),
                "--from-seq",
                "1",
                "--retry-for",
                "30",
            ])
            .args(["--count", &count.to_string()])
            .stdout(File::create(out).expect("alerts file"))
            .stderr(File::create(self.root.join("subscribe.log")).expect("subscribe log"))
            .spawn()
            .expect("spawn airbag subscribe");
        Guard(child)
    }
}

/// The alerts of a subscriber's output without the server's clock
/// readings (receive and emit times differ between runs by nature).
fn alerts(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("alerts file")
        .lines()
        .map(|line| {
            let mut alert: serde_json::Value = serde_json::from_str(line).expect("a JSON alert");
            let object = alert.as_object_mut().expect("an object");
            object.remove("received_time_ns");
            object.remove("emitted_time_ns");
            alert.to_string()
        })
        .collect()
}

/// The uninterrupted run: every alert of the file, in order.
fn uninterrupted(root: &Path, ticks: &Path) -> Vec<String> {
    let mut service = Service::new(root);
    let _server = service.start();
    let mut send = service.send(ticks, 0);
    assert!(send.wait_exit(Duration::from_secs(120), "airbag send"), "send failed");
    // Every alert is published before its batch is acknowledged.
    let out = root.join("alerts.jsonl");
    let published = published_alerts(&service);
    let mut subscriber = service.subscribe(published, &out);
    assert!(
        subscriber.wait_exit(Duration::from_secs(60), "airbag subscribe"),
        "subscribe failed"
    );
    alerts(&out)
}

/// How many alerts the server has published (`RuleAdmin.Status`).
fn published_alerts(service: &Service) -> usize {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let channel = tokio::time::timeout(Duration::from_secs(10), airbag::cli::wire::connect(&service.addr()))
            .await
            .expect("connect in time")
            .expect("connect");
        let status = RuleAdminClient::new(channel)
            .status(proto::StatusRequest {})
            .await
            .expect("status")
            .into_inner();
        status.alerts_published as usize
    })
}

#[test]
fn sigkill_at_random_moments_loses_and_doubles_no_alert() {
    let temp = tempfile::tempdir().expect("temp dir");
    // AIRBAG_CRASH_TEST_DIR (an empty folder) keeps the data folders, logs
    // and outputs for a look afterwards.
    let dir = std::env::var_os("AIRBAG_CRASH_TEST_DIR").map_or_else(|| temp.path().to_path_buf(), PathBuf::from);
    let ticks = dir.join("ticks.csv");
    write_ticks(&ticks, 300_000, 42);

    let expected = uninterrupted(&dir.join("clean"), &ticks);
    assert!(
        expected.len() >= 50,
        "only {} alerts: the file is too calm",
        expected.len()
    );

    let root = dir.join("crashing");
    let mut service = Service::new(&root);
    let mut server = service.start();
    let out = root.join("alerts.jsonl");
    let mut subscriber = service.subscribe(expected.len(), &out);
    let mut send = service.send(&ticks, 20_000);
    let mut rng = Rng(7);
    let started = Instant::now();
    let mut kills = 0;
    while kills < KILLS {
        std::thread::sleep(Duration::from_millis(150 + rng.below(300)));
        assert!(
            send.exited().is_none(),
            "the sender finished after only {kills} kills: send a longer file or slower"
        );
        drop(server); // SIGKILL, then reaped
        kills += 1;
        server = service.start();
        assert!(started.elapsed() < RUN_LIMIT, "the crash run took too long");
    }
    assert!(
        send.wait_exit(Duration::from_secs(120), "airbag send"),
        "send failed: {}",
        std::fs::read_to_string(root.join("send.log")).unwrap_or_default()
    );
    assert!(
        subscriber.wait_exit(Duration::from_secs(60), "airbag subscribe"),
        "subscribe failed: {}",
        std::fs::read_to_string(root.join("subscribe.log")).unwrap_or_default()
    );
    drop(server);

    let got = alerts(&out);
    for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(g, e, "alert {} differs (after {kills} kills)", i + 1);
    }
    assert_eq!(got.len(), expected.len());
    let restored = (2..=service.starts)
        .filter(|&n| service.log(n).contains("Checkpoint restored"))
        .count();
    eprintln!(
        "{kills} kills; {restored} of {} restarts restored a checkpoint; {} alerts identical",
        service.starts - 1,
        got.len()
    );
}
