//! The console in a real browser: `airbag serve` with the repository's
//! rules, Debian's chromium driven headless by playwright-core
//! (`tests/browser/console.spec.mjs`, installed by `npm ci` there; no
//! browser download). `tests/data/btc_crash.csv` is sent with `airbag
//! send`; the halt must appear in the live list and on the halt board
//! within a second and on the sparkline; a broken rule file must show its
//! error with file:line:column; where auth is on, a request without a
//! token is refused and the page asks for one. Screenshots are written to
//! `<target>/tmp/console-screenshots/`.
//!
//! Needs `node`, `/usr/bin/chromium` (or `CHROMIUM`) and
//! `tests/browser/node_modules` (`.ci/run` installs all three); fails with
//! what is missing otherwise. `AIRBAG_SKIP_BROWSER_TEST=1` skips it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use airbag::config::auth::{token_sha256_hex, Role, TokenEntry};
use airbag::service::ReloadTrigger;
use common::*;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};

const TOKEN: &str = "desk-91c2e7a05b3d4f68";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// What the browser test needs, or why it cannot run.
fn prerequisites() -> Result<PathBuf, String> {
    let chromium = std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    let mut missing = Vec::new();
    if std::process::Command::new("node").arg("--version").output().is_err() {
        missing.push("`node` is not on PATH (apt-get install nodejs npm)".to_string());
    }
    if !chromium.exists() {
        missing.push(format!(
            "{} does not exist (apt-get install chromium)",
            chromium.display()
        ));
    }
    if !repo().join("tests/browser/node_modules/playwright-core").exists() {
        missing.push("tests/browser/node_modules/playwright-core is missing (cd tests/browser && npm ci)".into());
    }
    if missing.is_empty() {
        Ok(chromium)
    } else {
        Err(missing.join("; "))
    }
}

/// The next line from the script, within `wait`.
async fn line(lines: &mut Lines<BufReader<ChildStdout>>, wait: Duration, what: &str) -> String {
    match tokio::time::timeout(wait, lines.next_line()).await {
        Ok(Ok(Some(line))) => line,
        Ok(Ok(None)) => panic!("the browser script ended while waiting for {what} (its messages are above)"),
        Ok(Err(e)) => panic!("reading the browser script: {e}"),
        Err(_) => panic!("the browser script said nothing for {wait:?} while waiting for {what}"),
    }
}

/// Reads lines until `word`; a `FAIL:` line fails the test with it.
async fn expect(lines: &mut Lines<BufReader<ChildStdout>>, word: &str, wait: Duration) -> Vec<String> {
    let mut said = Vec::new();
    loop {
        let got = line(lines, wait, word).await;
        if got.starts_with("FAIL:") {
            panic!("browser test: {got}");
        }
        if got == word {
            return said;
        }
        said.push(got);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_streamed_in_shows_on_the_console_in_a_browser() {
    if std::env::var_os("AIRBAG_SKIP_BROWSER_TEST").is_some() {
        eprintln!("AIRBAG_SKIP_BROWSER_TEST is set: browser test skipped");
        return;
    }
    let chromium = prerequisites().unwrap_or_else(|why| panic!("the console browser test cannot run: {why}"));

    // The repository's rules, in a folder of the test's own (a broken file
    // is added to it later).
    let rules = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(repo().join("rules")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&path, rules.path().join(path.file_name().unwrap())).unwrap();
        }
    }
    let console_on = |c: &mut airbag::config::ServiceConfig| c.console.listen = Some("127.0.0.1:0".parse().unwrap());
    let server = TestServer::builder()
        .rules_folder(rules.path())
        .configure(console_on)
        .start()
        .await;
    let guarded = TestServer::builder()
        .rules_folder(rules.path())
        .configure(|c| {
            console_on(c);
            c.auth.tokens = vec![TokenEntry {
                name: "desk".into(),
                sha256: token_sha256_hex(TOKEN.as_bytes()),
                roles: vec![Role::Subscribe],
            }];
        })
        .start()
        .await;
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    let mut child = Command::new("node")
        .arg(repo().join("tests/browser/console.spec.mjs"))
        .current_dir(repo().join("tests/browser"))
        .env(
            "CONSOLE_URL",
            format!("http://{}/", server.running().console_addr().unwrap()),
        )
        .env(
            "AUTH_CONSOLE_URL",
            format!("http://{}/", guarded.running().console_addr().unwrap()),
        )
        .env("AUTH_TOKEN", TOKEN)
        .env("SCREENSHOT_DIR", &shots)
        .env("CHROMIUM", &chromium)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("node starts");
    let mut to_script = child.stdin.take().unwrap();
    let mut from_script = BufReader::new(child.stdout.take().unwrap()).lines();

    expect(&mut from_script, "READY", Duration::from_secs(60)).await;
    let sent = Command::new(env!("CARGO_BIN_EXE_airbag"))
        .args(["send", "--addr", &server.url()])
        .arg(repo().join("tests/data/btc_crash.csv"))
        .output()
        .await
        .expect("airbag send runs");
    assert!(
        sent.status.success(),
        "airbag send: {}",
        String::from_utf8_lossy(&sent.stderr)
    );
    to_script.write_all(b"SENT\n").await.unwrap();
    let said = expect(&mut from_script, "CRASH_OK", Duration::from_secs(20)).await;
    for line in said {
        eprintln!("browser test: {line}");
    }

    std::fs::write(
        rules.path().join("99-broken.toml"),
        "[[rule]]\nid = \"broken\"\nkind = \"drawdown\"\nwindow = \"3 parsecs\"\nthreshold = \"8%\"\n",
    )
    .unwrap();
    let core = server.running().core().clone();
    let reloaded = tokio::task::spawn_blocking(move || core.reload(ReloadTrigger::Api))
        .await
        .unwrap();
    assert!(reloaded.is_err(), "the broken file fails the reload");
    to_script.write_all(b"BROKEN\n").await.unwrap();
    expect(&mut from_script, "RELOAD_OK", Duration::from_secs(20)).await;
    expect(&mut from_script, "AUTH_OK", Duration::from_secs(30)).await;

    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("the browser script exits")
        .unwrap();
    assert!(status.success(), "the browser script failed: {status}");
    eprintln!("screenshots in {}", shots.display());
    server.shutdown().await;
    guarded.shutdown().await;
}
