//! The `airbag` binary: `check` for CI, `serve` start-up and signals.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_airbag");

const GOOD: &str = r#"
[[rule]]
id = "btc-flash-crash"
kind = "drawdown"
instruments = ["BTC-USDT"]
window = "3s"
threshold = "8%"
severity = "critical"
actions = ["halt"]
"#;

const BAD: &str = r#"[[rule]]
id = "broken"
kind = "drawdown"
window = "3s"
threshold = "eight percent"
"#;

fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    dir
}

#[test]
fn check_accepts_a_good_folder() {
    let dir = folder(&[("a.toml", GOOD), ("b.toml", &GOOD.replace("btc-flash-crash", "second"))]);
    let out = Command::new(BIN).arg("check").arg(dir.path()).output().expect("runs");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.trim(), "ok: 2 rules in 2 files");
}

#[test]
fn check_reports_every_error_with_its_position() {
    let dir = folder(&[("good.toml", GOOD), ("bad.toml", BAD), ("worse.toml", "[[rule]\n")]);
    let out = Command::new(BIN).arg("check").arg(dir.path()).output().expect("runs");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let bad = dir.path().join("bad.toml").display().to_string();
    let worse = dir.path().join("worse.toml").display().to_string();
    assert!(stderr.contains(&format!("{bad}:5:13: ")), "{stderr}");
    assert!(stderr.contains(&format!("{worse}:1:")), "{stderr}");
    assert!(out.stdout.is_empty(), "{out:?}");
}

#[test]
fn check_of_a_missing_folder_fails() {
    let out = Command::new(BIN)
        .args(["check", "/no/such/rules/folder"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read rules folder"));
}

#[test]
fn serve_refuses_a_config_with_unknown_keys() {
    let dir = folder(&[("airbag.toml", "listen = \"127.0.0.1:0\"\nlisen = 1\n")]);
    let out = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(dir.path().join("airbag.toml"))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("airbag.toml:2:1"), "{stderr}");
    assert!(stderr.contains("unknown field `lisen`"), "{stderr}");
}

#[test]
fn serve_runs_and_exits_cleanly_on_sigterm() {
    let rules = folder(&[("crash.toml", GOOD)]);
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--rules",
        ])
        .arg(rules.path())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut log = Vec::new();
    while !log.iter().any(|l: &String| l.contains("gRPC server listening")) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => log.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start: {log:#?}");
            }
        }
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("server did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}
