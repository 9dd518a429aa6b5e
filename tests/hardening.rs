//! What a new user meets with a client generated from `proto/` alone,
//! against a real server on 127.0.0.1: a far-future tick that must not
//! blind an instrument, an emptied rules folder that must not switch off
//! every halt, both reflection versions, resume points in metadata, each
//! rejection code meaning what the proto says, `Validate` kept to the
//! rules folder, a flapping price that is one episode.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use airbag::wire::proto;
use common::*;
use tonic::Code;

const CRASH: &str = r#"
[[rule]]
id = "btc-flash-crash"
kind = "drawdown"
instruments = ["BTC-USDT"]
window = "3s"
threshold = "8%"
severity = "critical"
actions = ["halt"]
"#;

const NOTIFY_ONLY: &str = r#"
[[rule]]
id = "btc-notify"
kind = "drawdown"
instruments = ["BTC-USDT"]
window = "3s"
threshold = "5%"
severity = "warning"
actions = ["notify"]
"#;

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap()
}

/// A trade at an absolute event time.
fn trade_at(instrument: &str, event_time_ns: i64, seq: u64, price: &str) -> proto::Tick {
    proto::Tick {
        event_time_ns,
        ..trade(instrument, 0, seq, price)
    }
}

/// The BTC crash of the tour (65000 to 59800 in 2.5 s) from `t_ns`.
fn crash_from(t_ns: i64, first_seq: u64) -> Vec<proto::Tick> {
    [(0, "65000"), (1_000, "64000"), (2_000, "62000"), (2_500, "59800")]
        .iter()
        .enumerate()
        .map(|(i, &(ms, price))| trade_at("BTC-USDT", t_ns + ms * 1_000_000, first_seq + i as u64, price))
        .collect()
}

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start).and_then(|rest| rest.trim().parse().ok()))
}

// ---------------------------------------------------------------------------
// 1. A far-future event time does not blind an instrument.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_future_ticks_are_refused_and_a_real_crash_still_halts() {
    let server = TestServer::builder().rule_file("crash.toml", CRASH).start().await;
    let mut alerts = server.subscribe(proto::SubscribeRequest::default()).await;
    let mut ingest = server.ingest().await;

    let now = now_ns();
    let century_ns = 100 * 365 * 86_400 * 1_000_000_000i64;
    let future = vec![
        trade_at("BTC-USDT", i64::MAX, 1, "65000"),
        trade_at("BTC-USDT", now + century_ns, 2, "65000"),
        // Microseconds sent where nanoseconds belong, times a thousand:
        // the year 2262 and beyond saturate; a little over a minute is enough.
        trade_at("BTC-USDT", now + 61_000_000_000, 3, "65000"),
        trade_at("NEW-USDT", i64::MAX, 1, "1"),
    ];
    let ack = ingest.send(batch(1, future)).await;
    assert_eq!(ack.applied, 0, "{:?}", ack.rejected);
    assert_eq!(ack.rejected.len(), 4);
    for r in &ack.rejected {
        assert_eq!(r.code, "bad_time", "{r:?}");
        assert!(r.reason.contains("ms ahead of the server clock"), "{}", r.reason);
        assert!(r.reason.contains("max_future_skew_ms = 60000"), "{}", r.reason);
    }
    assert!(
        ack.rejected[0]
            .reason
            .starts_with("event_time: 9223372036854775807 is "),
        "{}",
        ack.rejected[0].reason
    );

    // The instrument is not blinded: the real crash, in the tour's own
    // (old) event times, still halts it.
    let ack = ingest.send(batch(2, crash_from(T0_NS, 1))).await;
    assert_eq!((ack.applied, ack.rejected.len()), (4, 0), "{:?}", ack.rejected);
    let halt = next_alert(&mut alerts).await;
    assert_eq!(
        (halt.rule_id.as_str(), halt.kind.as_str()),
        ("btc-flash-crash", "fired")
    );
    assert_eq!(halt.tick_seq, Some(4));

    let status = server
        .admin()
        .await
        .status(proto::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.instruments, 1, "the refused ticks added no instrument");
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains("airbag_ticks_rejected_total{reason=\"bad_time\"} 4"),
        "{metrics}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_resets_an_instrument_a_tick_inside_the_skew_left_ahead() {
    let server = TestServer::builder().rule_file("crash.toml", CRASH).start().await;
    let mut alerts = server.subscribe(proto::SubscribeRequest::default()).await;
    let mut ingest = server.ingest().await;
    let mut admin = server.admin().await;

    // 50 s ahead: within the default skew, so applied.
    let now = now_ns();
    let ahead = now + 50_000_000_000;
    let ack = ingest
        .send(batch(1, vec![trade_at("BTC-USDT", ahead, 1, "65000")]))
        .await;
    assert_eq!(ack.applied, 1, "{:?}", ack.rejected);
    // Now every real tick is late...
    let ack = ingest.send(batch(2, crash_from(now, 2))).await;
    assert_eq!(ack.applied, 0);
    assert!(ack.rejected.iter().all(|r| r.code == "late"), "{:?}", ack.rejected);

    // ... until an operator resets the instrument.
    let missing = admin
        .reset_instrument(proto::ResetInstrumentRequest {
            instrument: "NEVER-SEEN".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    let reset = admin
        .reset_instrument(proto::ResetInstrumentRequest {
            instrument: "BTC-USDT".into(),
        })
        .await
        .expect("reset")
        .into_inner();
    assert_eq!(reset.previous_event_time_ns, ahead);
    assert_eq!(reset.last_applied_seq, 1, "sequence numbers are kept");

    let ack = ingest.send(batch(3, crash_from(now, 2))).await;
    assert_eq!((ack.applied, ack.rejected.len()), (4, 0), "{:?}", ack.rejected);
    let halt = next_alert(&mut alerts).await;
    assert_eq!(
        (halt.rule_id.as_str(), halt.kind.as_str()),
        ("btc-flash-crash", "fired")
    );
    // Duplicates are still refused after the reset.
    let ack = ingest
        .send(batch(4, vec![trade_at("BTC-USDT", now + 3_000_000_000, 1, "1")]))
        .await;
    assert_eq!(ack.rejected[0].code, "duplicate");

    let metrics = server.metrics_text().await;
    assert_eq!(
        metric(&metrics, "airbag_instrument_resets_total "),
        Some(1.0),
        "{metrics}"
    );
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// 2. An emptied rules folder does not switch off every rule.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emptied_folder_keeps_the_rules_in_force_and_says_why() {
    let server = TestServer::builder().rule_file("crash.toml", CRASH).start().await;
    let mut admin = server.admin().await;
    std::fs::remove_file(server.rules_dir().join("crash.toml")).unwrap();

    let reload = admin.reload(proto::ReloadRequest {}).await.unwrap().into_inner();
    assert!(!reload.applied);
    assert_eq!(reload.ruleset_version, 1);
    assert_eq!(reload.errors.len(), 1, "{:?}", reload.errors);
    let why = &reload.errors[0].message;
    assert!(why.contains("holds no rule"), "{why}");
    assert!(why.contains("allow_empty_rules"), "{why}");
    let status = admin.status(proto::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!((status.rule_count, status.reload_failures), (1, 1));
    assert_eq!(status.last_reload_errors, reload.errors);
    // Validate says the same of an empty folder.
    let validate = admin
        .validate(proto::ValidateRequest {
            source: Some(proto::validate_request::Source::Directory(
                server.rules_dir().display().to_string(),
            )),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!validate.valid);
    assert!(
        validate.errors[0].message.contains("holds no rule"),
        "{:?}",
        validate.errors
    );

    // A folder that keeps rules but none that can halt is refused too.
    server.write_rule("notify.toml", NOTIFY_ONLY);
    let reload = admin.reload(proto::ReloadRequest {}).await.unwrap().into_inner();
    assert!(!reload.applied);
    let why = &reload.errors[0].message;
    assert!(why.contains("every rule able to halt"), "{why}");
    assert!(why.contains("btc-flash-crash"), "{why}");
    assert!(why.contains("allow_removing_halt_rules"), "{why}");

    // The halt still works.
    let mut alerts = server.subscribe(proto::SubscribeRequest::default()).await;
    let mut ingest = server.ingest().await;
    ingest.send(batch(1, crash_from(T0_NS, 1))).await;
    assert_eq!(next_alert(&mut alerts).await.rule_id, "btc-flash-crash");
    let metrics = server.metrics_text().await;
    assert!(metrics.contains("airbag_reload_failures_total 2"), "{metrics}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_may_allow_an_empty_ruleset() {
    let server = TestServer::builder()
        .rule_file("crash.toml", CRASH)
        .configure(|c| c.allow_empty_rules = true)
        .start()
        .await;
    std::fs::remove_file(server.rules_dir().join("crash.toml")).unwrap();
    let reload = server
        .admin()
        .await
        .reload(proto::ReloadRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(reload.applied, "{:?}", reload.errors);
    assert_eq!(reload.ruleset_version, 2);
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// 4. Reflection, both versions.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_reflection_versions_list_the_services() {
    use tokio_stream::StreamExt as _;
    let server = TestServer::builder().rule_file("crash.toml", CRASH).start().await;
    let expected = [
        "airbag.v1.Alerts",
        "airbag.v1.Ingest",
        "airbag.v1.RuleAdmin",
        "grpc.health.v1.Health",
    ];

    {
        use tonic_reflection::pb::v1alpha::{
            server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
            server_reflection_response::MessageResponse, ServerReflectionRequest,
        };
        let mut client = ServerReflectionClient::new(server.channel().await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("v1alpha answers")
            .into_inner();
        let response = within("v1alpha", responses.next())
            .await
            .expect("a response")
            .expect("ok");
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected {response:?}")
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for name in expected {
            assert!(names.iter().any(|n| n == name), "v1alpha lists {name}: {names:?}");
        }
    }
    {
        use tonic_reflection::pb::v1::{
            server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
            server_reflection_response::MessageResponse, ServerReflectionRequest,
        };
        let mut client = ServerReflectionClient::new(server.channel().await);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("v1 answers")
            .into_inner();
        let response = within("v1", responses.next()).await.expect("a response").expect("ok");
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected {response:?}")
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for name in expected {
            assert!(names.iter().any(|n| n == name), "v1 lists {name}: {names:?}");
        }
    }
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// 5. Where to resume, in metadata; when a subscription is live.

const FLIP: &str = r#"
[[rule]]
id = "flip"
kind = "drawdown"
instruments = ["FLIP"]
window = "3s"
threshold = "1%"
severity = "warning"
actions = ["notify"]
"#;

/// Ticks alternating 100 / 98: each one from the second on raises an alert.
fn flips(first_seq: u64, n: u64) -> Vec<proto::Tick> {
    (first_seq..first_seq + n)
        .map(|seq| trade("FLIP", seq as i64, seq, if seq % 2 == 1 { "100" } else { "98" }))
        .collect()
}

fn seq_metadata(metadata: &tonic::metadata::MetadataMap, key: &str) -> Option<u64> {
    metadata.get(key)?.to_str().ok()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_cut_off_finds_where_to_resume_in_trailing_metadata() {
    let server = TestServer::builder()
        .rule_file("flip.toml", FLIP)
        .subscriber_queue(8)
        .start()
        .await;
    let mut ingest = server.ingest().await;
    ingest.send(batch(1, flips(1, 3))).await; // alerts 1 and 2

    // The response headers say from which alert on the subscriber gets
    // everything: its barrier before sending ticks.
    let slow_channel = within(
        "connect",
        tonic::transport::Endpoint::from_shared(server.url())
            .expect("endpoint")
            .initial_stream_window_size(Some(65_535))
            .initial_connection_window_size(Some(65_535))
            .connect(),
    )
    .await
    .expect("connects");
    let response = within(
        "subscribe",
        proto::alerts_client::AlertsClient::new(slow_channel).subscribe(proto::SubscribeRequest::default()),
    )
    .await
    .expect("subscribe");
    assert_eq!(seq_metadata(response.metadata(), "airbag-next-seq"), Some(3));
    let mut slow = response.into_inner();

    // It stops reading while 4,000 alerts are published.
    for i in 0..40u64 {
        ingest.send(batch(2 + i, flips(4 + i * 100, 100))).await;
    }
    let mut got = Vec::new();
    let status = loop {
        match within("slow stream", slow.message()).await {
            Ok(Some(alert)) => got.push(alert.seq),
            Ok(None) => panic!("ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    let resume = seq_metadata(status.metadata(), "airbag-resume-seq").expect("airbag-resume-seq");
    assert_eq!(resume, got.last().unwrap() + 1);
    assert_eq!(got.first(), Some(&3));
    assert!(status.message().contains(&format!("resume from seq {resume}")));

    // A start past the next alert: OUT_OF_RANGE, with the next one.
    let ahead = server
        .try_subscribe(proto::SubscribeRequest {
            from_seq: 1_000_000,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(ahead.code(), Code::OutOfRange, "{ahead:?}");
    assert_eq!(seq_metadata(ahead.metadata(), "airbag-next-seq"), Some(4003));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_older_than_the_ring_is_out_of_range_with_the_oldest_kept() {
    let server = TestServer::builder()
        .rule_file("flip.toml", FLIP)
        .alert_ring(10)
        .start()
        .await;
    let mut ingest = server.ingest().await;
    ingest.send(batch(1, flips(1, 51))).await; // alerts 1..=50, ring holds 41..=50
    let old = server
        .try_subscribe(proto::SubscribeRequest {
            from_seq: 5,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(old.code(), Code::OutOfRange, "{old:?}");
    assert_eq!(seq_metadata(old.metadata(), "airbag-oldest-seq"), Some(41));
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// 6. Codes that mean what the proto says; Validate kept to the rules folder.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_documented_code() {
    let server = TestServer::builder().rule_file("crash.toml", CRASH).start().await;
    let mut ingest = server.ingest().await;
    let unset = |f: fn(&mut proto::Trade)| {
        let mut t = trade("BTC-USDT", 0, 1, "100");
        if let Some(proto::tick::Values::Trade(trade)) = &mut t.values {
            f(trade);
        }
        t
    };
    let mut no_values = trade("BTC-USDT", 0, 1, "100");
    no_values.values = None;
    let mut no_ask = quote("BTC-USDT", 0, 1, "1", "2");
    if let Some(proto::tick::Values::Quote(q)) = &mut no_ask.values {
        q.ask = None;
    }
    let mut no_index = trade("BTC-USDT", 0, 1, "1");
    no_index.values = Some(proto::tick::Values::Index(proto::Price { price: None }));
    let mut long_ago = trade("BTC-USDT", 0, 1, "100");
    long_ago.event_time_ns = 0;
    let ticks = vec![
        no_values,
        unset(|t| t.price = None),
        unset(|t| t.size = None),
        no_ask,
        no_index,
        trade("BTC-USDT", 0, 1, "0"),
        unset(|t| t.price = Some(proto::Decimal { mantissa: 1, scale: 9 })),
        quote("BTC-USDT", 0, 1, "2", "1"),
        long_ago,
        trade("BAD SYMBOL", 0, 1, "1"),
        trade("BTC-USDT", 10, 5, "100"),
        trade("BTC-USDT", 20, 5, "100"),
        trade("BTC-USDT", 5, 6, "100"),
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
                0,
                "missing_values",
                "tick has no values: set one of trade, quote, mark or index"
            ),
            (1, "missing_values", "price: is missing"),
            (2, "missing_values", "size: is missing"),
            (3, "missing_values", "ask: is missing"),
            (4, "missing_values", "index: is missing"),
            (5, "bad_value", "price: must be above zero, got 0"),
            (6, "bad_value", "price: has more than 8 decimal places"),
            (7, "crossed_quote", "quote is crossed: bid 2 is above ask 1"),
            (
                8,
                "bad_time",
                "event_time: 0 is not a time after the Unix epoch in nanoseconds"
            ),
            (9, "bad_symbol", got[9].2),
            (
                11,
                "duplicate",
                "duplicate: sequence 5 is at or below the last applied 5"
            ),
            (12, "late", got[11].2),
        ]
    );
    assert!(got[11].2.starts_with("late: event time"), "{}", got[11].2);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_refuses_a_path_outside_the_rules_folder() {
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::write(elsewhere.path().join("crash.toml"), CRASH).unwrap();
    let server = TestServer::builder().rule_file("crash.toml", CRASH).start().await;
    std::fs::create_dir(server.rules_dir().join("staging")).unwrap();
    std::fs::write(server.rules_dir().join("staging/crash.toml"), CRASH).unwrap();
    let mut admin = server.admin().await;
    let validate = |dir: String| proto::ValidateRequest {
        source: Some(proto::validate_request::Source::Directory(dir)),
    };
    for outside in [
        "/etc".to_string(),
        "/nonexistent/folder".to_string(),
        elsewhere.path().display().to_string(),
        "staging/../..".to_string(),
    ] {
        let refused = admin.validate(validate(outside.clone())).await.unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied, "{outside}: {refused:?}");
        assert!(
            refused.message().contains("Validate reads only the rules folder"),
            "{}",
            refused.message()
        );
    }
    // The rules folder and below are read as before.
    for inside in ["staging".to_string(), server.rules_dir().display().to_string()] {
        let ok = admin
            .validate(validate(inside.clone()))
            .await
            .expect(&inside)
            .into_inner();
        assert!(ok.valid, "{inside}: {:?}", ok.errors);
        assert_eq!(ok.rule_count, 1);
    }
    server.shutdown().await;

    // A folder the config lists may be read too.
    let allowed = elsewhere.path().to_path_buf();
    let server = TestServer::builder()
        .rule_file("crash.toml", CRASH)
        .configure(|c| c.validate_dirs = vec![allowed])
        .start()
        .await;
    let ok = server
        .admin()
        .await
        .validate(validate(elsewhere.path().display().to_string()))
        .await
        .expect("listed in validate_dirs")
        .into_inner();
    assert!(ok.valid);
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// 3. One rule for the time of a timer alert, live and in event time.

/// A breaker the tour's crash trips (exactly 8% below 65000) and a stale
/// feed rule, with short durations; each carries a rule test over the
/// tour's ticks, run in event time (as replays run) at every load.
const TIMERS: &str = r#"
[[rule]]
id = "tour-breaker"
kind = "circuit_breaker"
instruments = ["BTC-USDT"]
reference_price = "65000"
direction = "down"
tiers = [{ move = "8%", halt = "2s", severity = "critical" }]

[[rule.test]]
name = "the tour's crash halts for 2 s of event time"
ticks = [
  { at = "0s", price = "65000" },
  { at = "1s", price = "64000" },
  { at = "2s", price = "62000" },
  { at = "2500ms", price = "59800" },
  { at = "3s", price = "59000" },
  { at = "10s" },
]
expect = [
  { kind = "tripped", at = "2500ms" },
  { kind = "resumed", at = "4500ms" },
]

[[rule]]
id = "tour-stale"
kind = "stale_feed"
instruments = ["BTC-USDT"]
after = "1200ms"

[[rule.test]]
name = "silent 1.2 s after the tour's last tick"
ticks = [
  { at = "0s", price = "65000" },
  { at = "1s", price = "64000" },
  { at = "2s", price = "62000" },
  { at = "2500ms", price = "59800" },
  { at = "3s", price = "59000" },
  { at = "10s" },
]
expect = [{ kind = "fired", at = "4200ms" }]
"#;

/// The tour's file, `tests/data/btc_crash.csv`, as ticks.
fn tour_ticks() -> Vec<proto::Tick> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/btc_crash.csv")).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("instrument"))
        .enumerate()
        .map(|(i, line)| {
            let f: Vec<&str> = line.split(',').collect();
            let ms: i64 = f[1].parse().unwrap();
            proto::Tick {
                instrument: f[0].into(),
                event_time_ns: ms * 1_000_000,
                seq: i as u64 + 1,
                values: Some(proto::tick::Values::Trade(proto::Trade {
                    price: Some(dec(f[2])),
                    size: Some(dec(f[3])),
                    side: 0,
                })),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timer_alerts_of_the_tour_run_on_the_feeds_event_time() {
    const MS: i64 = 1_000_000;
    let t0 = 1_700_000_000_000 * MS;
    let server = TestServer::builder().rule_file("timers.toml", TIMERS).start().await;
    let mut alerts = server.subscribe(proto::SubscribeRequest::default()).await;
    let mut ingest = server.ingest().await;
    let ticks = tour_ticks();
    assert_eq!(ticks.len(), 5);
    let ack = ingest.send(batch(1, ticks)).await;
    assert_eq!(ack.applied, 5, "{:?}", ack.rejected);

    let got = take_alerts(&mut alerts, 3).await;
    let seen: Vec<(&str, &str, i64)> = got
        .iter()
        .map(|a| (a.rule_id.as_str(), a.kind.as_str(), (a.event_time_ns - t0) / MS))
        .collect();
    // The same stamps as the rule tests give in event time, in event-time
    // order: the halt does not end at once although the feed's times are
    // years old, and the silence is stamped on the feed's time axis.
    assert_eq!(
        seen,
        [
            ("tour-breaker", "tripped", 2_500),
            ("tour-stale", "fired", 4_200),
            ("tour-breaker", "resumed", 4_500),
        ]
    );
    assert_eq!(got[2].tick_seq, None, "raised by a timer");
    // Live, they fall due by the server's clock from when the ticks were
    // received: the halt 2 s after the tick that tripped it (1.5 s after the
    // last tick), the silence 1.2 s after the last tick.
    let received = got[0].received_time_ns;
    let stale_after = got[1].received_time_ns - received;
    let resumed_after = got[2].received_time_ns - received;
    assert!((1_200 * MS..3_200 * MS).contains(&stale_after), "{stale_after}");
    assert!((1_500 * MS..3_500 * MS).contains(&resumed_after), "{resumed_after}");
    assert_quiet(&mut alerts, std::time::Duration::from_millis(200)).await;
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// 7. Writer epochs: a newer connection of a writer fences off the older.

/// An `Ingest` stream of writer `name` with `epoch`.
async fn writer_stream(
    server: &TestServer,
    name: &str,
    epoch: u64,
) -> Result<
    (
        tokio::sync::mpsc::Sender<proto::TickBatch>,
        tonic::Streaming<proto::IngestAck>,
    ),
    tonic::Status,
> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    request.metadata_mut().insert("airbag-writer", name.parse().unwrap());
    request
        .metadata_mut()
        .insert("airbag-writer-epoch", epoch.to_string().parse().unwrap());
    let mut client = proto::ingest_client::IngestClient::new(server.channel().await);
    let acks = within("ingest", client.ingest(request)).await?.into_inner();
    Ok((tx, acks))
}

async fn last_applied(
    server: &TestServer,
    writer: &str,
    epoch: u64,
) -> Result<Vec<proto::InstrumentSeq>, tonic::Status> {
    let mut client = proto::ingest_client::IngestClient::new(server.channel().await);
    let response = client
        .last_applied(proto::LastAppliedRequest {
            instruments: vec!["BTC-USDT".into()],
            writer: writer.into(),
            writer_epoch: epoch,
        })
        .await?;
    Ok(response.into_inner().last_applied)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_writer_epoch_fences_off_a_connection_the_server_thinks_alive() {
    let server = TestServer::builder().rule_file("crash.toml", CRASH).start().await;
    // Epoch 1: its connection stays open, as one whose client vanished.
    let (old_tx, mut old_acks) = writer_stream(&server, "feed-a", 1).await.expect("epoch 1 opens");
    old_tx
        .send(batch(1, vec![trade("BTC-USDT", 0, 1, "100")]))
        .await
        .unwrap();
    let ack = within("ack", old_acks.message()).await.unwrap().unwrap();
    assert_eq!(ack.applied, 1);

    // The writer comes back as epoch 2 and asks where it stands: from this
    // answer on, nothing of epoch 1 is applied.
    let positions = last_applied(&server, "feed-a", 2).await.expect("last applied");
    assert_eq!(positions[0].seq, 1);
    old_tx
        .send(batch(2, vec![trade("BTC-USDT", 10, 2, "100")]))
        .await
        .unwrap();
    let status = within("old stream", old_acks.message()).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status
            .message()
            .contains("writer `feed-a` epoch 1 was superseded by epoch 2"),
        "{}",
        status.message()
    );
    assert_eq!(status.metadata().get("airbag-writer-epoch").unwrap(), "2");
    assert_eq!(
        last_applied(&server, "", 0).await.unwrap()[0].seq,
        1,
        "the stale batch was not applied"
    );

    // An older epoch cannot open again; the new one carries on.
    let refused = writer_stream(&server, "feed-a", 1).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let (tx, mut acks) = writer_stream(&server, "feed-a", 2).await.expect("epoch 2 opens");
    tx.send(batch(3, vec![trade("BTC-USDT", 10, 2, "100")])).await.unwrap();
    assert_eq!(within("ack", acks.message()).await.unwrap().unwrap().applied, 1);
    // A writer without an epoch is told what to send.
    let mut request = tonic::Request::new(tokio_stream::iter(Vec::<proto::TickBatch>::new()));
    request
        .metadata_mut()
        .insert("airbag-writer", "feed-b".parse().unwrap());
    let mut client = proto::ingest_client::IngestClient::new(server.channel().await);
    let missing = client.ingest(request).await.unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert!(
        missing.message().contains("airbag-writer-epoch"),
        "{}",
        missing.message()
    );
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// 7. Connections bounded; a plaintext client on the TLS port told why.

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Sends the HTTP/2 preface on a raw connection and reads what the server
/// answers until it closes.
async fn raw_answer(addr: std::net::SocketAddr, first: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(first).await.expect("write");
    let mut out = Vec::new();
    let _ = within("the server's answer", s.read_to_end(&mut out)).await;
    out
}

/// The debug text of the first `GOAWAY` frame in `bytes`, with its code.
fn goaway_of(bytes: &[u8]) -> Option<(u32, String)> {
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let len = u32::from_be_bytes([0, bytes[at], bytes[at + 1], bytes[at + 2]]) as usize;
        let kind = bytes[at + 3];
        let payload = bytes.get(at + 9..at + 9 + len)?;
        if kind == 0x7 {
            let code = u32::from_be_bytes(payload[4..8].try_into().ok()?);
            return Some((code, String::from_utf8_lossy(&payload[8..]).into_owned()));
        }
        at += 9 + len;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_max_connections_are_told_the_limit() {
    let server = TestServer::builder()
        .rule_file("crash.toml", CRASH)
        .configure(|c| c.limits.max_connections = 2)
        .start()
        .await;
    let mut first = server.admin().await;
    let mut second = server.admin().await;
    first.status(proto::StatusRequest {}).await.expect("first");
    second.status(proto::StatusRequest {}).await.expect("second");
    let answer = raw_answer(server.addr, PREFACE).await;
    let (code, text) = goaway_of(&answer).expect("a GOAWAY");
    assert_eq!(code, 0xb, "ENHANCE_YOUR_CALM");
    assert_eq!(
        text,
        "too many connections to this server: the limit is 2 (limits.max_connections)"
    );
    // The two in use carry on; a place given back is taken again.
    first.status(proto::StatusRequest {}).await.expect("still served");
    drop(second);
    let metrics = eventually_metrics(
        &server,
        "airbag_requests_refused_total{reason=\"too_many_connections\"} 1",
    )
    .await;
    assert!(metrics.contains("airbag_requests_refused_total{reason=\"too_many_connections\"} 1"));
    server.shutdown().await;
}

/// The metrics page once it contains `line` (the metrics endpoint is a
/// connection of its own, not counted against the gRPC port).
async fn eventually_metrics(server: &TestServer, line: &str) -> String {
    for _ in 0..100 {
        let text = server.metrics_text().await;
        if text.contains(line) {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    server.metrics_text().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let server = TestServer::builder()
        .rule_file("crash.toml", CRASH)
        .configure(|c| c.limits.idle_timeout_ms = 300)
        .start()
        .await;
    let started = std::time::Instant::now();
    // A connection that never makes a call is closed.
    let answer = raw_answer(server.addr, b"").await;
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(250),
        "closed too early"
    );
    assert!(answer.len() < 100, "{answer:?}");
    let metrics = eventually_metrics(&server, "reason=\"idle_timeout\"} 1").await;
    assert!(
        metrics.contains("airbag_requests_refused_total{reason=\"idle_timeout\"} 1"),
        "{metrics}"
    );
    // A subscription open longer than the timeout is not idle.
    let mut alerts = server.subscribe(proto::SubscribeRequest::default()).await;
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let mut ingest = server.ingest().await;
    ingest.send(batch(1, crash_from(T0_NS, 1))).await;
    assert_eq!(next_alert(&mut alerts).await.rule_id, "btc-flash-crash");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_client_on_the_tls_port_is_told_the_port_speaks_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = dir.path().join("server.pem");
    let key = dir.path().join("server.key");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let server = TestServer::builder()
        .rule_file("crash.toml", CRASH)
        .configure(|c| {
            c.tls.cert = Some(cert);
            c.tls.key = Some(key);
            c.auth.tokens = vec![airbag::config::auth::TokenEntry {
                name: "ops".into(),
                sha256: airbag::config::auth::token_sha256_hex(b"ops-secret"),
                roles: vec![airbag::config::auth::Role::Admin],
            }];
        })
        .start()
        .await;
    // HTTP/2 in plaintext (a gRPC client without TLS): a GOAWAY saying so.
    let answer = raw_answer(server.addr, PREFACE).await;
    let (code, text) = goaway_of(&answer).expect("a GOAWAY");
    assert_eq!(code, 0xc, "INADEQUATE_SECURITY");
    assert!(text.starts_with("this port speaks TLS"), "{text}");
    // HTTP/1 in plaintext (curl http://): a 400 saying so.
    let answer =
        String::from_utf8_lossy(&raw_answer(server.addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await).into_owned();
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request"), "{answer}");
    assert!(answer.contains("this port speaks TLS"), "{answer}");
    // A tonic client without TLS fails, and does not hang.
    let channel = tonic::transport::Endpoint::from_shared(server.url())
        .unwrap()
        .connect_lazy();
    let error = within(
        "plaintext call",
        proto::rule_admin_client::RuleAdminClient::new(channel).status(proto::StatusRequest {}),
    )
    .await
    .unwrap_err();
    // Whether tonic shows the GOAWAY (as PERMISSION_DENIED, with the debug
    // text in its source) or only the closed connection depends on which it
    // reads first; either way it fails at once.
    assert!(
        matches!(
            error.code(),
            Code::Unavailable | Code::Cancelled | Code::PermissionDenied
        ),
        "{error:?}"
    );
    let metrics = eventually_metrics(&server, "reason=\"plaintext_on_tls\"} 3").await;
    assert!(
        metrics.contains("airbag_requests_refused_total{reason=\"plaintext_on_tls\"} 3"),
        "{metrics}"
    );
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// 7. Numbering after a checkpoint ahead of the journal; tokens reloaded;
//    refusals counted.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn numbering_goes_on_after_a_checkpoint_ahead_of_the_journal() {
    let data = tempfile::tempdir().unwrap();
    let rules = tempfile::tempdir().unwrap();
    let start = || {
        let data = data.path().to_path_buf();
        TestServer::builder()
            .rules_folder(rules.path())
            .rule_file("flip.toml", FLIP)
            .configure(move |c| {
                c.data_dir = Some(data);
                c.journal.fsync = airbag::journal::FsyncPolicy::Never;
            })
            .start()
    };
    let server = start().await;
    let mut ingest = server.ingest().await;
    ingest.send(batch(1, flips(1, 101))).await; // alerts 1..=100
    ingest.close();
    server.shutdown().await; // a checkpoint at alert 100

    // A power loss took the journal's tail that was not synced: cut the
    // segment to half; the checkpoint, written later, survived.
    let segment = std::fs::read_dir(data.path().join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "journal"))
        .unwrap();
    let len = std::fs::metadata(&segment).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap()
        .set_len(len / 2)
        .unwrap();

    let server = start().await;
    let mut live = server.subscribe(proto::SubscribeRequest::default()).await;
    let mut ingest = server.ingest().await;
    ingest.send(batch(2, flips(102, 2))).await;
    let next = next_alert(&mut live).await;
    assert_eq!(
        next.seq, 101,
        "numbering goes on after the checkpoint's, never reusing a number"
    );

    // A replay across the lost alerts delivers what the journal kept, then
    // says which were lost and where to resume.
    let mut replay = server
        .subscribe(proto::SubscribeRequest {
            from_seq: 1,
            ..Default::default()
        })
        .await;
    let mut got = Vec::new();
    let status = loop {
        match within("replay", replay.message()).await {
            Ok(Some(alert)) => got.push(alert.seq),
            Ok(None) => panic!("ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::DataLoss, "{status:?}");
    let kept = got.len() as u64;
    assert!((1..100).contains(&kept), "{kept}");
    assert_eq!(got, (1..=kept).collect::<Vec<_>>());
    assert_eq!(seq_metadata(status.metadata(), "airbag-resume-seq"), Some(101));
    assert!(
        status
            .message()
            .contains(&format!("alerts {} to 100 were lost", kept + 1)),
        "{}",
        status.message()
    );
    let mut resumed = server
        .subscribe(proto::SubscribeRequest {
            from_seq: 101,
            ..Default::default()
        })
        .await;
    assert_eq!(next_alert(&mut resumed).await.seq, 101);
    ingest.close();
    server.shutdown().await;

    // The journal keeps the gap across another restart.
    let server = start().await;
    let mut live = server.subscribe(proto::SubscribeRequest::default()).await;
    let mut ingest = server.ingest().await;
    ingest.send(batch(3, flips(104, 1))).await;
    assert_eq!(next_alert(&mut live).await.seq, 103);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_read_again_with_the_rules_and_refusals_are_counted() {
    use airbag::config::auth::token_sha256_hex;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    let tokens = |name: &str, secret: &str| {
        format!(
            "[[tokens]]\nname = \"{name}\"\nsha256 = \"{}\"\nroles = [\"admin\", \"ingest\"]\n",
            token_sha256_hex(secret.as_bytes())
        )
    };
    std::fs::write(&file, tokens("old", "old-secret")).unwrap();
    let token_file = file.clone();
    let server = TestServer::builder()
        .rule_file("crash.toml", CRASH)
        .configure(move |c| c.auth.token_file = Some(token_file))
        .start()
        .await;
    let call = |token: &'static str| {
        let url = server.url();
        async move {
            let channel = tonic::transport::Endpoint::from_shared(url)
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut request = tonic::Request::new(proto::ReloadRequest {});
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            proto::rule_admin_client::RuleAdminClient::new(channel)
                .reload(request)
                .await
        }
    };
    call("old-secret").await.expect("the old token works");
    assert_eq!(call("new-secret").await.unwrap_err().code(), Code::Unauthenticated);

    // The token file changes; the next reload (here over the API) reads it.
    std::fs::write(&file, tokens("new", "new-secret")).unwrap();
    call("old-secret").await.expect("reload with the old token");
    assert_eq!(
        call("old-secret").await.unwrap_err().code(),
        Code::Unauthenticated,
        "revoked"
    );
    call("new-secret").await.expect("the new token works");
    // A broken token file keeps the tokens in force.
    std::fs::write(&file, "not toml [").unwrap();
    call("new-secret").await.expect("reload with a broken file");
    call("new-secret").await.expect("still in force");

    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains("airbag_requests_refused_total{reason=\"unauthenticated\"} 2"),
        "{metrics}"
    );
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// 8. Flapping: a price crossing a band's edge back and forth is one episode.

const FLAPPING_BAND: &str = r#"
[[rule]]
id = "band"
kind = "price_band"
instruments = ["BTC-USDT"]
reference_window = "5m"
band = "5%"
limit_for = "15s"
pause = "5m"
clear_for = "800ms"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_price_is_one_limit_and_one_resolved() {
    const MS: i64 = 1_000_000;
    let server = TestServer::builder()
        .rule_file("band.toml", FLAPPING_BAND)
        .start()
        .await;
    let mut alerts = server.subscribe(proto::SubscribeRequest::default()).await;
    let mut ingest = server.ingest().await;
    // Three calm ticks at 100, then 90 (outside) and 97 (inside) every
    // 100 ms for half a second: five crossings each way.
    let mut ticks: Vec<proto::Tick> = (0..3)
        .map(|i| trade("BTC-USDT", i * 1_000, i as u64 + 1, "100"))
        .collect();
    for k in 0..5 {
        let seq = ticks.len() as u64 + 1;
        ticks.push(trade("BTC-USDT", 3_000 + k * 100, seq, "90"));
        ticks.push(trade("BTC-USDT", 3_050 + k * 100, seq + 1, "97"));
    }
    let ack = ingest.send(batch(1, ticks)).await;
    assert_eq!(ack.applied, 13, "{:?}", ack.rejected);
    let got = take_alerts(&mut alerts, 2).await;
    let seen: Vec<(&str, i64)> = got
        .iter()
        .map(|a| (a.kind.as_str(), (a.event_time_ns - T0_NS) / MS))
        .collect();
    // Resolved by the timer, 800 ms of event time after the last price back
    // inside (3,450 ms), with no tick to raise it.
    assert_eq!(seen, [("limit", 3_000), ("resolved", 4_250)]);
    assert_eq!(got[1].tick_seq, None, "raised by a timer");
    assert_quiet(&mut alerts, std::time::Duration::from_millis(300)).await;
    server.shutdown().await;
}
