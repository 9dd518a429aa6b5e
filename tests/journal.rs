//! The alert journal, end to end: a real server on 127.0.0.1 with a real
//! `data_dir`. Alerts are journaled; after a restart a subscriber from
//! seq 1 gets every alert ever published, gap-free, then live ones; a
//! damaged tail is repaired on start and numbering goes on; retention
//! removes old segments; every fsync policy works; a killed server loses
//! no alert a subscriber saw.

mod common;

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use airbag::config::JournalSettings;
use airbag::journal::FsyncPolicy;
use airbag::wire::proto;
use common::*;
use tonic::Code;

const FLIP: &str = r#"
[[rule]]
id = "flip"
kind = "drawdown"
instruments = ["FLIP", "FLOP"]
window = "3s"
threshold = "1%"
severity = "warning"
actions = ["notify"]
"#;

/// Ticks alternating 100 / 98: on a fresh engine, `n` ticks raise `n - 1`
/// alerts; continuing a sequence, one alert per tick.
fn flips(first_seq: u64, n: u64) -> Vec<proto::Tick> {
    flips_of("FLIP", first_seq, n)
}

/// As [`flips`], for another instrument: after a restart the engine has
/// its checkpointed state back, so FLIP's old sequence numbers are
/// duplicates there.
fn flips_of(instrument: &str, first_seq: u64, n: u64) -> Vec<proto::Tick> {
    (first_seq..first_seq + n)
        .map(|seq| {
            let price = if seq % 2 == 1 { "100" } else { "98" };
            trade(instrument, seq as i64, seq, price)
        })
        .collect()
}

fn from_seq(seq: u64) -> proto::SubscribeRequest {
    proto::SubscribeRequest {
        from_seq: seq,
        ..Default::default()
    }
}

/// A server journaling to `data_dir`, with a ring of 8 so that older
/// starts come from the journal.
fn journaled(data_dir: &Path, journal: impl FnOnce(&mut JournalSettings)) -> Builder {
    let data_dir = data_dir.to_path_buf();
    TestServer::builder()
        .rule_file("flip.toml", FLIP)
        .alert_ring(8)
        .configure(move |c| {
            c.data_dir = Some(data_dir);
            journal(&mut c.journal);
        })
}

fn seqs(alerts: &[proto::Alert]) -> Vec<u64> {
    alerts.iter().map(|a| a.seq).collect()
}

/// The segment files, oldest first.
fn segments(data_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data_dir.join("journal"))
        .expect("journal folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "journal"))
        .collect();
    files.sort();
    files
}

/// The value of an unlabelled metric.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
        .parse()
        .expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alert_survives_a_restart_and_a_subscriber_from_seq_1_gets_them_then_live_ones() {
    let data = tempfile::tempdir().expect("temp dir");
    let server = journaled(data.path(), |_| {}).start().await;
    let mut live = server.subscribe(proto::SubscribeRequest::default()).await;
    let mut ingest = server.ingest().await;
    assert_eq!(ingest.send(batch(1, flips(1, 51))).await.applied, 51);
    let mut first_run = take_alerts(&mut live, 50).await;
    assert_eq!(seqs(&first_run), (1..=50).collect::<Vec<_>>());

    // From seq 1, far older than the ring: the journal, then the ring,
    // then live, while alerts keep coming.
    let mut late = server.subscribe(from_seq(1)).await;
    ingest.send(batch(2, flips(52, 10))).await;
    first_run.extend(take_alerts(&mut live, 10).await);
    let got = take_alerts(&mut late, 60).await;
    assert_eq!(got, first_run, "replayed alerts are the alerts sent live");
    assert_quiet(&mut late, Duration::from_millis(200)).await;

    let text = server.metrics_text().await;
    assert_eq!(metric(&text, "airbag_journal_appends_total"), 60.0);
    assert_eq!(metric(&text, "airbag_journal_healthy"), 1.0);
    assert_eq!(metric(&text, "airbag_journal_first_seq"), 1.0);
    assert!(metric(&text, "airbag_journal_bytes") > 60.0 * 16.0, "{text}");
    assert_eq!(
        segments(data.path()),
        vec![data.path().join("journal/00000000000000000001.journal")]
    );
    server.shutdown().await;

    let server = journaled(data.path(), |_| {}).start().await;
    let mut resumed = server.subscribe(from_seq(1)).await;
    let replayed = take_alerts(&mut resumed, 60).await;
    assert_eq!(replayed, first_run, "every alert ever published, as sent");
    let mut ingest = server.ingest().await;
    // A new instrument: six ticks, five alerts, numbered on.
    ingest.send(batch(1, flips_of("FLOP", 1, 6))).await;
    let next = take_alerts(&mut resumed, 5).await;
    assert_eq!(seqs(&next), (61..=65).collect::<Vec<_>>());
    assert_quiet(&mut resumed, Duration::from_millis(200)).await;
    let mut middle = server.subscribe(from_seq(58)).await;
    assert_eq!(seqs(&take_alerts(&mut middle, 8).await), (58..=65).collect::<Vec<_>>());
    let text = server.metrics_text().await;
    assert_eq!(metric(&text, "airbag_journal_appends_total"), 5.0);
    assert_eq!(metric(&text, "airbag_journal_repairs_total"), 0.0);
    server.shutdown().await;
}

/// Publishes 20 alerts, damages the journal's last record with `damage`,
/// restarts: the 19 before it are kept and the next alert is seq 20.
async fn damaged_last_record_is_repaired(damage: fn(&Path)) {
    let data = tempfile::tempdir().expect("temp dir");
    let server = journaled(data.path(), |_| {}).start().await;
    let mut live = server.subscribe(proto::SubscribeRequest::default()).await;
    server.ingest().await.send(batch(1, flips(1, 21))).await;
    let first_run = take_alerts(&mut live, 20).await;
    server.shutdown().await;

    let last = segments(data.path()).pop().expect("a segment");
    let before = std::fs::metadata(&last).expect("segment").len();
    damage(&last);

    let server = journaled(data.path(), |_| {}).start().await;
    let mut resumed = server.subscribe(from_seq(1)).await;
    let kept = take_alerts(&mut resumed, 19).await;
    assert_eq!(kept, first_run[..19], "every record before the damage");
    // Alert 20 was lost with the damage, but the checkpoint written at
    // shutdown counted it: the replay says so, and numbering goes on after
    // the checkpoint's last alert (never reusing 20, which subscribers saw).
    let lost = within("replay end", resumed.message())
        .await
        .expect_err("the lost alert is reported");
    assert_eq!(lost.code(), tonic::Code::DataLoss, "{lost:?}");
    assert_eq!(lost.metadata().get("airbag-resume-seq").expect("resume seq"), "21");
    let mut resumed = server.subscribe(from_seq(21)).await;
    server.ingest().await.send(batch(1, flips_of("FLOP", 1, 2))).await;
    let next = next_alert(&mut resumed).await;
    assert_eq!(next.seq, 21, "numbering goes on after the checkpoint's last alert");
    assert_quiet(&mut resumed, Duration::from_millis(200)).await;

    let text = server.metrics_text().await;
    assert_eq!(metric(&text, "airbag_journal_repairs_total"), 1.0);
    let cut = metric(&text, "airbag_journal_repaired_bytes_total");
    assert!(cut > 0.0 && (cut as u64) < before, "{cut} of {before}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_truncated_mid_record_is_repaired_on_start() {
    damaged_last_record_is_repaired(|path| {
        let len = std::fs::metadata(path).expect("segment").len();
        let file = std::fs::OpenOptions::new().write(true).open(path).expect("open");
        file.set_len(len - 3).expect("truncate");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bit_flip_in_the_last_record_is_repaired_on_start() {
    damaged_last_record_is_repaired(|path| {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("open");
        let at = file.seek(SeekFrom::End(-2)).expect("seek");
        let mut byte = [0u8];
        file.read_exact(&mut byte).expect("read");
        byte[0] ^= 0x10;
        file.seek(SeekFrom::Start(at)).expect("seek");
        file.write_all(&byte).expect("write");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_old_segments() {
    let data = tempfile::tempdir().expect("temp dir");
    let server = journaled(data.path(), |j| {
        j.segment_bytes = 4096;
        j.retain_bytes = 8192;
    })
    .start()
    .await;
    let mut live = server.subscribe(proto::SubscribeRequest::default()).await;
    server.ingest().await.send(batch(1, flips(1, 301))).await;
    take_alerts(&mut live, 300).await;

    let files = segments(data.path());
    let first: u64 = files[0]
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("a segment name");
    assert!(first > 1, "old segments removed: {files:?}");
    // Closed segments within 8192 bytes (each about 4096), and the active one.
    assert!(files.len() <= 3, "{files:?}");
    let text = server.metrics_text().await;
    assert!(metric(&text, "airbag_journal_segments_removed_total") >= 1.0, "{text}");
    assert_eq!(metric(&text, "airbag_journal_first_seq"), first as f64);
    assert_eq!(metric(&text, "airbag_journal_segments"), files.len() as f64);

    let status = server.try_subscribe(from_seq(1)).await.expect_err("removed");
    assert_eq!(status.code(), Code::OutOfRange);
    assert!(
        status.message().contains(&format!("oldest available is {first}")),
        "{}",
        status.message()
    );
    let mut kept = server.subscribe(from_seq(first)).await;
    let got = take_alerts(&mut kept, (300 - first + 1) as usize).await;
    assert_eq!(seqs(&got), (first..=300).collect::<Vec<_>>());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fsync_policy_journals_and_replays() {
    for policy in [
        FsyncPolicy::Always,
        FsyncPolicy::Interval(Duration::from_millis(10)),
        FsyncPolicy::Never,
    ] {
        let data = tempfile::tempdir().expect("temp dir");
        let server = journaled(data.path(), |j| j.fsync = policy).start().await;
        let mut live = server.subscribe(proto::SubscribeRequest::default()).await;
        server.ingest().await.send(batch(1, flips(1, 11))).await;
        let sent = take_alerts(&mut live, 10).await;
        let syncs = || async { metric(&server.metrics_text().await, "airbag_journal_fsync_seconds_count") };
        match policy {
            // Group commit: at least one fdatasync, at most one per alert.
            FsyncPolicy::Always => {
                let n = syncs().await;
                assert!((1.0..=10.0).contains(&n), "{policy}: {n}");
            }
            FsyncPolicy::Interval(_) => {
                let deadline = Instant::now() + WAIT;
                while syncs().await < 1.0 {
                    assert!(Instant::now() < deadline, "no background sync within {WAIT:?}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            FsyncPolicy::Never => assert_eq!(syncs().await, 0.0, "{policy}"),
        }
        server.shutdown().await;

        let server = journaled(data.path(), |j| j.fsync = policy).start().await;
        let mut resumed = server.subscribe(from_seq(1)).await;
        assert_eq!(take_alerts(&mut resumed, 10).await, sent, "{policy}");
        server.shutdown().await;
    }
}

const BIN: &str = env!("CARGO_BIN_EXE_airbag");

/// `airbag serve` as a child process, and the lines it logged up to
/// "gRPC server listening".
struct Served {
    child: Child,
    url: String,
    log: Vec<String>,
}

impl Served {
    fn start(config: &Path) -> Served {
        let mut child = Command::new(BIN)
            .args(["serve", "--log-json", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + WAIT;
        let mut log = Vec::new();
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    let listening = line.contains("gRPC server listening");
                    log.push(line);
                    if listening {
                        break;
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!("server did not start: {log:#?}");
                }
            }
        }
        let line: serde_json::Value = serde_json::from_str(log.last().expect("a line")).expect("JSON log");
        let addr = line["addr"].as_str().expect("addr field").to_string();
        Served {
            child,
            url: format!("http://{addr}"),
            log,
        }
    }

    /// SIGKILL: no shutdown, no final sync.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    async fn subscribe(&self, request: proto::SubscribeRequest) -> tonic::Streaming<proto::Alert> {
        let mut client = within("connect", proto::alerts_client::AlertsClient::connect(self.url.clone()))
            .await
            .expect("connects");
        within("subscribe", client.subscribe(request))
            .await
            .expect("subscribes")
            .into_inner()
    }

    async fn send(&self, batch: proto::TickBatch) {
        let mut client = within("connect", proto::ingest_client::IngestClient::connect(self.url.clone()))
            .await
            .expect("connects");
        let mut acks = within("ingest", client.ingest(tokio_stream::iter(vec![batch])))
            .await
            .expect("ingest opens")
            .into_inner();
        within("ack", acks.message()).await.expect("ack").expect("an ack");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_loses_no_alert_a_subscriber_saw_even_without_fsync() {
    let rules = tempfile::tempdir().expect("temp dir");
    std::fs::write(rules.path().join("flip.toml"), FLIP).expect("rules");
    let data = tempfile::tempdir().expect("temp dir");
    let etc = tempfile::tempdir().expect("temp dir");
    let config = etc.path().join("airbag.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\nwatch_rules = false\n\
             rules = {:?}\ndata_dir = {:?}\n\n[journal]\nfsync = \"never\"\n",
            rules.path().display().to_string(),
            data.path().display().to_string()
        ),
    )
    .expect("config");

    let server = Served::start(&config);
    let mut live = server.subscribe(proto::SubscribeRequest::default()).await;
    server.send(batch(1, flips(1, 31))).await;
    let seen = take_alerts(&mut live, 30).await;
    server.kill();

    let server = Served::start(&config);
    assert!(
        !server.log.iter().any(|l| l.contains("cut a torn or corrupt tail")),
        "{:#?}",
        server.log
    );
    let mut resumed = server.subscribe(from_seq(1)).await;
    assert_eq!(take_alerts(&mut resumed, 30).await, seen);
    server.kill();

    // A record torn by a crash: cut on start, with a log line naming the
    // file, the offset and the bytes cut.
    let last = segments(data.path()).pop().expect("a segment");
    let len = std::fs::metadata(&last).expect("segment").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .expect("open")
        .set_len(len - 5)
        .expect("truncate");
    let server = Served::start(&config);
    let cut = server
        .log
        .iter()
        .find(|l| l.contains("cut a torn or corrupt tail"))
        .unwrap_or_else(|| panic!("no repair logged: {:#?}", server.log));
    let cut: serde_json::Value = serde_json::from_str(cut).expect("JSON log");
    assert_eq!(cut["level"], "WARN");
    assert_eq!(cut["file"], last.display().to_string());
    assert!(cut["offset"].as_u64().expect("offset") < len - 5, "{cut}");
    assert!(cut["bytes_cut"].as_u64().expect("bytes_cut") > 0, "{cut}");
    let mut resumed = server.subscribe(from_seq(1)).await;
    assert_eq!(take_alerts(&mut resumed, 29).await, seen[..29]);
    server.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_service_on_a_data_dir_in_use_is_refused_and_the_first_keeps_journaling() {
    let data = tempfile::tempdir().expect("data dir");
    let server = journaled(data.path(), |_| {}).start().await;
    let rules = tempfile::tempdir().expect("rules dir");
    std::fs::write(rules.path().join("flip.toml"), FLIP).expect("rule file");
    let second = airbag::config::ServiceConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        metrics_listen: "127.0.0.1:0".parse().expect("addr"),
        rules: rules.path().to_path_buf(),
        data_dir: Some(data.path().to_path_buf()),
        watch_rules: false,
        ..airbag::config::ServiceConfig::default()
    };
    let refused = within("second start", airbag::app::start(second.clone()))
        .await
        .expect_err("a second service on the same data_dir");
    let message = refused.to_string();
    assert!(
        message.contains(&format!(
            "data_dir {} is in use by another airbag service",
            data.path().display()
        )),
        "{message}"
    );

    // The first service goes on journaling: its alerts are there after it
    // stops, and then the folder is free.
    let mut ingest = server.ingest().await;
    assert_eq!(ingest.send(batch(1, flips(1, 4))).await.applied, 4);
    server.shutdown().await;
    let running = within("start after the first stopped", airbag::app::start(second))
        .await
        .expect("the folder is free once the first service has stopped");
    let mut alerts =
        airbag::wire::proto::alerts_client::AlertsClient::connect(format!("http://{}", running.grpc_addr()))
            .await
            .expect("connect")
            .subscribe(from_seq(1))
            .await
            .expect("subscribe")
            .into_inner();
    let first = within("journaled alert", alerts.message())
        .await
        .expect("stream")
        .expect("an alert");
    assert_eq!(first.seq, 1);
    drop(alerts);
    running.shutdown().await.expect("shutdown");
}
