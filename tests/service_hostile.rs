//! Hostile clients against a real server on 127.0.0.1, each next to a good
//! client whose every tick must be applied and every alert delivered in
//! gap-free sequence: oversized messages and batches, a cardinality attack
//! past the instrument cap, unrepresentable decimals, garbage and HTTP/1 on
//! the gRPC port, thousands of subscribers that never read, and an ingest
//! client that never reads its acknowledgements.
//!
//! Tests that watch the server's memory run `airbag serve` as its own
//! process (see [`Served`]) and read its resident set from
//! `/proc/PID/status`; the others use the in-process harness.

mod common;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use airbag::wire::proto;
use common::*;
use proto::alerts_client::AlertsClient;
use proto::ingest_client::IngestClient;
use proto::rule_admin_client::RuleAdminClient;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Streaming};

/// Fires when a price reaches 100 and resolves when it drops below: a
/// tick path alternating 100 and 99 raises exactly one alert per tick.
const EVERY_TICK: &str = r#"
[[rule]]
id = "at-100"
when = "price >= 100"
instruments = ["GOOD-*"]
severity = "warning"
actions = ["notify"]
"#;

const BTC_CRASH: &str = r#"
[[rule]]
id = "btc-flash-crash"
kind = "drawdown"
instruments = ["BTC-USDT"]
window = "3s"
threshold = "8%"
severity = "critical"
actions = ["halt"]
"#;

/// A good client's trade on `symbol` that alternates 100 and 99 with its
/// sequence number, so each one raises an alert under [`EVERY_TICK`].
fn alternating(symbol: &str, seq: u64) -> proto::Tick {
    let price = if seq % 2 == 1 { "100" } else { "99" };
    trade(symbol, seq as i64, seq, price)
}

/// A subscriber that reads everything, checks the sequence is gap-free
/// from 1, and publishes how many alerts it has seen.
struct GoodSubscriber {
    seen: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<Vec<proto::Alert>>,
}

impl GoodSubscriber {
    fn start(mut stream: Streaming<proto::Alert>) -> Self {
        let (tx, seen) = watch::channel(0u64);
        let task = tokio::spawn(async move {
            let mut all = Vec::new();
            loop {
                match stream.message().await {
                    Ok(Some(alert)) => {
                        assert_eq!(alert.seq, all.len() as u64 + 1, "the good subscriber saw a gap");
                        all.push(alert);
                        tx.send_replace(all.len() as u64);
                    }
                    Ok(None) => return all,
                    Err(status) if status.code() == Code::Unavailable => return all,
                    Err(status) => panic!("the good subscriber was cut off: {status:?}"),
                }
            }
        });
        GoodSubscriber { seen, task }
    }

    /// Waits until it has seen `n` alerts.
    async fn wait_for(&mut self, n: u64) {
        within(
            &format!("{n} alerts at the good subscriber"),
            self.seen.wait_for(|&s| s >= n),
        )
        .await
        .expect("subscriber running");
    }

    fn seen(&self) -> u64 {
        *self.seen.borrow()
    }
}

/// A good ingest client: sends alternating ticks on `GOOD-n` and checks
/// that every one is applied.
struct GoodClient {
    ingest: IngestStream,
    symbol: String,
    seq: u64,
    batch_id: u64,
}

impl GoodClient {
    fn new(ingest: IngestStream, symbol: &str) -> Self {
        GoodClient {
            ingest,
            symbol: symbol.to_string(),
            seq: 0,
            batch_id: 0,
        }
    }

    /// Sends `n` ticks in one batch; every one must be applied.
    async fn send(&mut self, n: u64) {
        let ticks = (0..n)
            .map(|_| {
                self.seq += 1;
                alternating(&self.symbol, self.seq)
            })
            .collect();
        self.batch_id += 1;
        let ack = self.ingest.send(batch(self.batch_id, ticks)).await;
        assert_eq!(ack.applied as u64, n, "a good tick was refused: {:?}", ack.rejected);
        assert!(ack.rejected.is_empty());
    }
}

// ---------------------------------------------------------------------
// Oversized messages and batches

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_and_batches_end_only_their_own_stream() {
    const LIMIT: usize = 64 << 10;
    let server = TestServer::builder()
        .rule_file("every.toml", EVERY_TICK)
        .max_batch_ticks(1_000)
        .configure(|c| c.max_message_bytes = LIMIT)
        .start()
        .await;
    let mut good_alerts = GoodSubscriber::start(server.subscribe(proto::SubscribeRequest::default()).await);
    let mut good = GoodClient::new(server.ingest().await, "GOOD-1");
    good.send(10).await;

    // One message over max_message_bytes, with fewer ticks than the batch limit.
    let mut big = server.ingest().await;
    let long_symbol = "S".repeat(60);
    let ticks: Vec<proto::Tick> = (0..900).map(|i| trade(&long_symbol, i, i as u64 + 1, "1")).collect();
    let oversized = batch(1, ticks);
    let size = prost::Message::encoded_len(&oversized);
    assert!(size > LIMIT, "the batch must be over the limit: {size} bytes");
    big.send_only(oversized).await;
    let status = big.next_ack().await.expect_err("an oversized message ends the stream");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("too large") && status.message().contains(&format!("{size} bytes")),
        "{}",
        status.message()
    );
    assert!(status.message().contains(&LIMIT.to_string()), "{}", status.message());

    // A batch over max_batch_ticks, under the byte limit.
    let mut many = server.ingest().await;
    let ticks: Vec<proto::Tick> = (0..1_001).map(|i| trade("X", i, i as u64 + 1, "1")).collect();
    many.send_only(batch(9, ticks)).await;
    let status = many.next_ack().await.expect_err("an oversized batch ends the stream");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("1001 ticks"), "{}", status.message());
    assert!(status.message().contains("max_batch_ticks"), "{}", status.message());

    // A subscribe request over the limit: its own status, nothing else.
    let huge_filter = proto::SubscribeRequest {
        instruments: (0..20_000).map(|i| format!("SYM-{i}-*")).collect(),
        ..Default::default()
    };
    let status = server.try_subscribe(huge_filter).await.expect_err("refused");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("too large"), "{}", status.message());

    // Neither the oversized message nor the batch left a trace, and the
    // good client went on.
    good.send(10).await;
    good_alerts.wait_for(20).await;
    let status = server
        .admin()
        .await
        .status(proto::StatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.instruments, 1, "only the good client's instrument");
    assert_eq!((status.ticks_applied, status.ticks_rejected), (20, 0));
    server.shutdown().await;
    let alerts = within("subscriber end", good_alerts.task).await.expect("subscriber");
    assert_eq!(alerts.len(), 20);
}

// ---------------------------------------------------------------------
// Decimals the engine cannot hold exactly

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrepresentable_and_invalid_decimals_are_refused_per_tick() {
    let server = TestServer::builder().rule_file("crash.toml", BTC_CRASH).start().await;
    let mut alerts = server.subscribe(proto::SubscribeRequest::default()).await;
    let mut ingest = server.ingest().await;
    let d = |mantissa: i64, scale: u32| Some(proto::Decimal { mantissa, scale });
    let with_price = |seq: u64, price: Option<proto::Decimal>| proto::Tick {
        values: Some(proto::tick::Values::Trade(proto::Trade {
            price,
            size: d(1, 0),
            side: 0,
        })),
        ..trade("BTC-USDT", seq as i64, seq, "1")
    };
    let with_size = |seq: u64, size: Option<proto::Decimal>| proto::Tick {
        values: Some(proto::tick::Values::Trade(proto::Trade {
            price: d(100, 0),
            size,
            side: 0,
        })),
        ..trade("BTC-USDT", seq as i64, seq, "1")
    };
    // The wire decimal (sint64 mantissa, uint32 scale) has no NaN or
    // infinity; its hostile shapes are these.
    let ticks = vec![
        trade("BTC-USDT", 0, 1, "100"),
        with_price(2, d(i64::MAX, 0)),        // beyond the range
        with_price(2, d(i64::MIN, 0)),        // beyond the range, negative
        with_price(2, d(-1, 0)),              // negative
        with_price(2, d(0, 0)),               // zero
        with_price(2, d(100_000_000_001, 9)), // a digit below 10^-8
        with_price(2, d(1, u32::MAX)),        // a scale no decimal has
        with_price(2, None),                  // missing
        with_size(2, d(-5, 1)),               // negative size
        with_size(2, d(i64::MAX, 8)),         // the largest size there is
        trade("BTC-USDT", 2_500, 3, "92"),
    ];
    let ack = ingest.send(batch(1, ticks)).await;
    let got: Vec<(u32, &str, &str)> = ack
        .rejected
        .iter()
        .map(|r| (r.index, r.code.as_str(), r.reason.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                1,
                "bad_value",
                "price: is outside the supported range of ±92233720368.54775807"
            ),
            (
                2,
                "bad_value",
                "price: is outside the supported range of ±92233720368.54775807"
            ),
            (3, "bad_value", "price: must be above zero, got -1"),
            (4, "bad_value", "price: must be above zero, got 0"),
            (5, "bad_value", "price: has more than 8 decimal places"),
            (6, "bad_value", "price: has more than 8 decimal places"),
            (7, "missing_values", "price: is missing"),
            (8, "bad_value", "size: must not be negative, got -0.5"),
        ]
    );
    assert_eq!(ack.applied, 3, "the good ticks around them were applied");
    let alert = next_alert(&mut alerts).await;
    assert_eq!(
        (alert.seq, alert.rule_id.as_str(), alert.tick_seq),
        (1, "btc-flash-crash", Some(3))
    );
    server.shutdown().await;
}

// ---------------------------------------------------------------------
// Garbage and HTTP/1 on the gRPC port

/// Writes `bytes` on a raw TCP connection to `addr` and reads until the
/// server closes it; returns what the server sent.
fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut socket = std::net::TcpStream::connect(addr).expect("connect");
    socket.set_read_timeout(Some(WAIT)).expect("timeout");
    socket.set_write_timeout(Some(WAIT)).expect("timeout");
    // The server may close before it has read everything: a failed write
    // is an answer too.
    let _ = socket.write_all(bytes);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match socket.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("the server neither answered nor closed: {e} (read {} bytes)", out.len()),
        }
    }
}

/// HTTP/2 frames in `bytes` (after any preface), as (type, payload).
fn h2_frames(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 9 {
        let len = (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
        if rest.len() < 9 + len {
            break;
        }
        frames.push((rest[3], rest[9..9 + len].to_vec()));
        rest = &rest[9 + len..];
    }
    frames
}

/// The error code of the first GOAWAY frame the server sent.
fn goaway_code(bytes: &[u8]) -> Option<u32> {
    h2_frames(bytes)
        .into_iter()
        .find(|(kind, payload)| *kind == 0x7 && payload.len() >= 8)
        .map(|(_, p)| u32::from_be_bytes([p[4], p[5], p[6], p[7]]))
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const NO_ERROR: u32 = 0x0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_http1_on_the_grpc_port_do_not_disturb_other_clients() {
    let server = TestServer::builder().rule_file("every.toml", EVERY_TICK).start().await;
    let mut good_alerts = GoodSubscriber::start(server.subscribe(proto::SubscribeRequest::default()).await);
    let mut good = GoodClient::new(server.ingest().await, "GOOD-1");
    good.send(10).await;

    let addr = server.addr;
    let attackers = tokio::task::spawn_blocking(move || {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut noise = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect()
        };
        let mut answers = Vec::new();
        for round in 0..8 {
            answers.push(("noise", raw_exchange(addr, &noise(64 << 10))));
            answers.push((
                "http1",
                raw_exchange(addr, b"GET / HTTP/1.1\r\nHost: airbag\r\nConnection: close\r\n\r\n"),
            ));
            answers.push((
                "http1-post",
                raw_exchange(
                    addr,
                    b"POST /airbag.v1.Ingest/Ingest HTTP/1.1\r\nHost: airbag\r\nContent-Type: application/grpc\r\nContent-Length: 5\r\n\r\n\0\0\0\0\0",
                ),
            ));
            // A valid preface, then frames that make no sense.
            let mut framed = H2_PREFACE.to_vec();
            framed.extend_from_slice(&noise(1024 + round));
            answers.push(("preface+noise", raw_exchange(addr, &framed)));
        }
        answers
    });
    // The good client keeps going while the attack runs.
    for _ in 0..20 {
        good.send(5).await;
    }
    let answers = within("attackers", attackers).await.expect("attackers");
    for (what, answer) in &answers {
        if *what == "preface+noise" {
            // PROTOCOL_ERROR, FRAME_SIZE_ERROR, ...: whichever the noise broke first.
            let code = goaway_code(answer);
            assert!(
                code.is_some_and(|c| c != NO_ERROR),
                "{what}: expected GOAWAY with an error code, got {answer:?}"
            );
        }
        // Everything else was closed (the read above returned); an
        // HTTP/1 client gets no HTTP/1 answer from a gRPC port.
        assert!(!answer.starts_with(b"HTTP/1.1 200"), "{what}: {answer:?}");
    }
    good.send(10).await;
    good_alerts.wait_for(120).await;
    assert_eq!(good_alerts.seen(), 120);
    server.shutdown().await;
}

// ---------------------------------------------------------------------
// `airbag serve` as its own process, for its memory

/// `airbag serve` in a child process with a config and rules of the
/// test's, on a free port; killed when dropped.
struct Served {
    child: Child,
    addr: std::net::SocketAddr,
    dir: tempfile::TempDir,
}

impl Served {
    fn start(rules: &str, config: &str) -> Served {
        let dir = tempfile::tempdir().expect("temp dir");
        let rules_dir = dir.path().join("rules");
        std::fs::create_dir(&rules_dir).expect("rules dir");
        std::fs::write(rules_dir.join("rules.toml"), rules).expect("write rules");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let config_path = dir.path().join("airbag.toml");
        std::fs::write(
            &config_path,
            format!(
                "listen = \"{addr}\"\nmetrics_listen = \"127.0.0.1:0\"\nrules = {:?}\nwatch_rules = false\n{config}",
                rules_dir.display().to_string()
            ),
        )
        .expect("write config");
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_airbag"))
            .args(["serve", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn airbag serve");
        let mut served = Served { child, addr, dir };
        let deadline = std::time::Instant::now() + WAIT;
        while std::net::TcpStream::connect(addr).is_err() {
            if let Ok(Some(status)) = served.child.try_wait() {
                panic!("airbag serve exited with {status}:\n{}", served.log());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "airbag serve did not listen:\n{}",
                served.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        served
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn channel(&self) -> Channel {
        self.channel_with(Endpoint::from_shared(self.url()).expect("endpoint"))
            .await
    }

    async fn channel_with(&self, endpoint: Endpoint) -> Channel {
        within("connect", endpoint.connect()).await.expect("connects")
    }

    async fn ingest(&self) -> IngestStream {
        IngestStream::open(IngestClient::new(self.channel().await)).await
    }

    async fn subscribe(&self) -> Streaming<proto::Alert> {
        let mut client = AlertsClient::new(self.channel().await);
        within("subscribe", client.subscribe(proto::SubscribeRequest::default()))
            .await
            .expect("subscribe")
            .into_inner()
    }

    async fn status(&self) -> proto::StatusResponse {
        let mut admin = RuleAdminClient::new(self.channel().await);
        within("status", admin.status(proto::StatusRequest {}))
            .await
            .expect("status")
            .into_inner()
    }

    /// The server's resident set, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const MIB: u64 = 1024;

// ---------------------------------------------------------------------
// Cardinality

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_new_symbols_are_refused_per_tick_while_memory_stays_flat() {
    const CAP: u32 = 1_000;
    const BATCH: usize = 10_000;
    const ATTACK_BATCHES: usize = 100;
    let served = Served::start(EVERY_TICK, &format!("max_instruments = {CAP}\nalert_ring = 1000\n"));
    let mut good_alerts = GoodSubscriber::start(served.subscribe().await);
    let mut good = GoodClient::new(served.ingest().await, "GOOD-1");
    good.send(4).await;

    let mut attacker = served.ingest().await;
    let mut symbols_sent = 0usize;
    let mut refused = 0usize;
    let mut rss_after_warm_up = 0;
    for b in 0..ATTACK_BATCHES {
        let ticks: Vec<proto::Tick> = (0..BATCH)
            .map(|_| {
                symbols_sent += 1;
                trade(&format!("ATTACK-{symbols_sent:07}"), 0, 1, "1")
            })
            .collect();
        let ack = attacker.send(batch(b as u64, ticks)).await;
        assert_eq!(ack.applied as usize + ack.rejected.len(), BATCH);
        for r in &ack.rejected {
            assert_eq!(r.code, "too_many_instruments", "{r:?}");
            assert_eq!(
                r.reason,
                format!("instrument: instrument limit of {CAP} reached: a new symbol cannot be added")
            );
        }
        refused += ack.rejected.len();
        // The good client's ticks flow between the attacker's batches.
        if b % 10 == 0 {
            good.send(4).await;
        }
        if b == 9 {
            rss_after_warm_up = served.rss_kib();
        }
    }
    let rss_end = served.rss_kib();
    eprintln!("cardinality: server RSS after 100,000 symbols {rss_after_warm_up} KiB, after 1,000,000 {rss_end} KiB");
    // The good instrument took one slot; the attacker got the rest.
    assert_eq!(refused, ATTACK_BATCHES * BATCH - (CAP as usize - 1));
    let status = served.status().await;
    assert_eq!(status.instruments, u64::from(CAP));
    assert_eq!(status.ticks_rejected, refused as u64);

    // A refused symbol leaves nothing behind: 900,000 of them after the
    // warm-up would take tens of MiB if each kept even a few dozen bytes.
    let growth = rss_end.saturating_sub(rss_after_warm_up);
    assert!(
        growth < 16 * MIB,
        "server memory grew by {growth} KiB over 900,000 refused symbols ({rss_after_warm_up} -> {rss_end} KiB)"
    );

    // The good client's ticks, all applied (checked per batch), raised all
    // their alerts, in order.
    good.send(4).await;
    good_alerts.wait_for(good.seq).await;
    assert_eq!(good_alerts.seen(), good.seq);
    // The existing instruments still take ticks at the cap; new ones do not.
    let crash = vec![trade("BTC-USDT", 0, 1, "100"), trade("BTC-USDT", 1_000, 2, "92")];
    let ack = attacker.send(batch(1_000, crash)).await;
    assert_eq!(
        ack.rejected[0].code, "too_many_instruments",
        "BTC-USDT is a new symbol at the cap"
    );
    good_alerts.task.abort();
}

// ---------------------------------------------------------------------
// Subscribers that never read

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_subscribers_that_never_read_neither_hold_up_nor_grow_the_server() {
    const STALLED: usize = 2_000;
    const CONNECTIONS: usize = 20;
    const QUEUE: usize = 256;
    let served = Served::start(
        EVERY_TICK,
        // Stream limits raised so that all of them get in: what is tested
        // here is the memory they hold, not the limits.
        &format!(
            "subscriber_queue = {QUEUE}\nalert_ring = 1000\nmax_batch_ticks = 1000\n\n[limits]\n\
             max_subscribers = {}\nmax_subscribers_per_connection = {}\n",
            STALLED + 16,
            STALLED / CONNECTIONS
        ),
    );
    let mut good_alerts = GoodSubscriber::start(served.subscribe().await);

    // Clients that read nothing: their streams' flow-control windows are
    // tiny and never opened again, so the server can send them a few
    // hundred bytes and then nothing.
    let stalled_endpoint = Endpoint::from_shared(served.url())
        .expect("endpoint")
        .initial_stream_window_size(Some(512))
        .initial_connection_window_size(Some(64 << 10));
    let mut stalled = Vec::with_capacity(STALLED);
    for c in 0..CONNECTIONS {
        let mut client = AlertsClient::new(served.channel_with(stalled_endpoint.clone()).await);
        for _ in 0..STALLED / CONNECTIONS {
            let stream = within(
                "stalled subscribe",
                client.subscribe(proto::SubscribeRequest::default()),
            )
            .await
            .unwrap_or_else(|s| panic!("connection {c}: {s:?}"))
            .into_inner();
            stalled.push(stream);
        }
    }
    let status = served.status().await;
    assert_eq!(status.subscribers as usize, STALLED + 1);
    let rss_subscribed = served.rss_kib();

    // The good client sends in batches of 100, one alert per tick, and
    // the good subscriber keeps up.
    let mut good = GoodClient::new(served.ingest().await, "GOOD-1");
    let mut rss_lagged = 0;
    for round in 0..200 {
        good.send(100).await;
        good_alerts.wait_for(good.seq).await;
        if round == 19 {
            // 2,000 alerts: far past each stalled queue of 256.
            rss_lagged = served.rss_kib();
        }
    }
    let rss_end = served.rss_kib();
    eprintln!(
        "stalled subscribers: server RSS {rss_subscribed} KiB with {STALLED} subscribed, \
         {rss_lagged} KiB after 2,000 alerts, {rss_end} KiB after 20,000"
    );
    assert_eq!(good_alerts.seen(), 20_000);
    let status = served.status().await;
    assert_eq!(status.ticks_applied, 20_000);
    assert_eq!(status.alerts_published, 20_000);

    // Each stalled subscriber costs at most its queue and one buffered
    // chunk; once disconnected it costs nothing more as alerts go on.
    let per_subscriber = rss_lagged.saturating_sub(rss_subscribed) / STALLED as u64;
    assert!(
        per_subscriber < 64,
        "{per_subscriber} KiB per stalled subscriber ({rss_subscribed} -> {rss_lagged} KiB)"
    );
    let growth = rss_end.saturating_sub(rss_lagged);
    assert!(
        growth < 16 * MIB,
        "memory grew by {growth} KiB over 18,000 more alerts ({rss_lagged} -> {rss_end} KiB)"
    );

    // A stalled subscriber that finally reads gets what was queued for it,
    // gap-free from 1, then a clear status naming where to resume.
    for stream in stalled.iter_mut().step_by(STALLED / 5) {
        let mut last = 0;
        let status = loop {
            match within("stalled reads", stream.message()).await {
                Ok(Some(alert)) => {
                    assert_eq!(alert.seq, last + 1);
                    last = alert.seq;
                }
                Ok(None) => panic!("ended without a status after seq {last}"),
                Err(status) => break status,
            }
        };
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(
            status.message().contains(&format!("resume from seq {}", last + 1)),
            "after seq {last}: {}",
            status.message()
        );
        assert!(last >= QUEUE as u64, "it was sent its whole queue: {last}");
    }
    good_alerts.task.abort();
}

// ---------------------------------------------------------------------
// An ingest client that never reads its acknowledgements

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_client_that_never_reads_acks_is_held_back_by_flow_control() {
    /// Instruments per batch of the stalled client: one tick each, so each
    /// ack lists 100 instruments (about 1.5 KiB).
    const WIDTH: u64 = 100;
    const BATCHES: u64 = 3_000;
    let served = Served::start(EVERY_TICK, "max_batch_ticks = 1000\n");
    let mut good_alerts = GoodSubscriber::start(served.subscribe().await);
    let mut good = GoodClient::new(served.ingest().await, "GOOD-1");

    // The stalled client: its ack stream's window is tiny and never
    // reopened; it sends as fast as its request stream is taken.
    let endpoint = Endpoint::from_shared(served.url())
        .expect("endpoint")
        .initial_stream_window_size(Some(256))
        .initial_connection_window_size(Some(64 << 10));
    let mut client = IngestClient::new(served.channel_with(endpoint).await);
    let (tx, rx) = mpsc::channel::<proto::TickBatch>(1);
    let mut acks = within("stalled ingest", client.ingest(ReceiverStream::new(rx)))
        .await
        .expect("ingest opens")
        .into_inner();
    let taken = Arc::new(AtomicU64::new(0));
    // Sees whether the client's next send must wait: the request channel
    // (room for one batch) is full while the transport takes no more.
    let probe = tx.clone();
    let sender = {
        let taken = taken.clone();
        tokio::spawn(async move {
            // About 14 MiB in all: far more than the server's 4 MiB stream
            // window and what its acks' window lets it evaluate.
            for b in 0..BATCHES {
                let ticks = (0..WIDTH)
                    .map(|i| trade(&format!("STALL-{i:03}"), b as i64, b + 1, "50"))
                    .collect();
                if tx.send(batch(b, ticks)).await.is_err() {
                    return;
                }
                taken.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    // Wait until the stalled client is held back, judged by counts, not
    // by time: its next send is pending, and neither the batches it has
    // handed over nor the ticks the server has evaluated move, across
    // HELD_CHECKS consecutive status calls (each a round trip through the
    // server). Once held, nothing can move again, so this ends; a client
    // that sends everything ends it too, and fails below.
    const HELD_CHECKS: u32 = 20;
    const MAX_CHECKS: u32 = 100_000;
    let mut admin = RuleAdminClient::new(served.channel().await);
    let (held_at, applied_while_held) = within("the stalled client to be held back", async {
        let mut last = None;
        let mut unmoved = 0;
        for check in 1..=MAX_CHECKS {
            let applied = within("status", admin.status(proto::StatusRequest {}))
                .await
                .expect("status")
                .into_inner()
                .ticks_applied;
            let sent = taken.load(Ordering::Relaxed);
            if sent == BATCHES {
                return (sent, applied);
            }
            let pending = probe.capacity() == 0;
            unmoved = if pending && last == Some((sent, applied)) {
                unmoved + 1
            } else {
                0
            };
            last = Some((sent, applied));
            if unmoved == HELD_CHECKS {
                eprintln!("stalled acks: held after {check} status checks");
                return (sent, applied);
            }
        }
        panic!("after {MAX_CHECKS} status checks the client was neither held nor done: last (sent, applied) {last:?}");
    })
    .await;
    drop(probe);
    eprintln!("stalled acks: the client was held after {held_at} of {BATCHES} batches");
    assert!(
        held_at < BATCHES,
        "flow control never pushed back: all {held_at} batches taken"
    );
    assert!(
        applied_while_held < held_at * WIDTH,
        "the server evaluated all {applied_while_held} ticks the client sent instead of pushing back"
    );
    assert_eq!(
        served.status().await.ticks_applied,
        applied_while_held,
        "the server went on evaluating the held client's batches"
    );
    let rss_held = served.rss_kib();
    eprintln!("stalled acks: {applied_while_held} ticks evaluated while held; server RSS {rss_held} KiB");

    // Meanwhile the good client's ticks and alerts flow.
    for _ in 0..20 {
        good.send(50).await;
    }
    good_alerts.wait_for(good.seq).await;
    let growth = served.rss_kib().saturating_sub(rss_held);
    assert!(
        growth < 16 * MIB,
        "the server's memory grew by {growth} KiB while the client was held"
    );

    // The stalled client reads at last: every batch it sent is acked in
    // order, each tick applied once.
    for b in 0..BATCHES {
        let ack = within("acks", acks.message()).await.expect("ack").expect("stream open");
        assert_eq!(ack.batch_id, b);
        assert_eq!(ack.applied as u64, WIDTH, "{:?}", ack.rejected);
        assert_eq!(ack.last_applied.len() as u64, WIDTH);
    }
    within("sender", sender).await.expect("sender");
    let status = served.status().await;
    assert_eq!(status.ticks_applied, BATCHES * WIDTH + good.seq);
    assert_eq!(
        good_alerts.seen(),
        good.seq,
        "the stalled client's ticks raise no alerts"
    );
    good_alerts.task.abort();
}
