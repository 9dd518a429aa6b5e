//! The web console against a real server on 127.0.0.1: the page and its
//! assets, the JSON API (health, instruments, halt board, rules, reload
//! errors with file:line:column), the Server-Sent Event feed (resumes from
//! `from_seq` and `Last-Event-ID`, filters, ends on shutdown), bearer
//! tokens when auth is on, and the loopback rule.

mod common;

use std::net::SocketAddr;

use airbag::config::auth::{token_sha256_hex, Role, TokenEntry};
use airbag::service::ReloadTrigger;
use common::http::{get, get_with, EventStream};
use common::*;
use hyper::StatusCode;

const CRASH: &str = r#"
[[rule]]
id = "crash"
kind = "drawdown"
description = "any instrument falls 8% within 3 s"
window = "3s"
threshold = "8%"
severity = "critical"
actions = ["halt"]
"#;

async fn console_server() -> (TestServer, SocketAddr) {
    let server = TestServer::builder()
        .rule_file("crash.toml", CRASH)
        .configure(|c| c.console.listen = Some("127.0.0.1:0".parse().unwrap()))
        .start()
        .await;
    let addr = server.running().console_addr().expect("console on");
    (server, addr)
}

/// `symbol` falls 10% within 2 s: one `crash` alert.
async fn crash(ingest: &mut IngestStream, id: u64, symbol: &str) {
    let ack = ingest
        .send(batch(
            id,
            vec![
                trade(symbol, 0, 1, "100"),
                trade(symbol, 1_000, 2, "95"),
                trade(symbol, 2_000, 3, "90"),
            ],
        ))
        .await;
    assert_eq!(ack.applied, 3, "{ack:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_api_show_the_service() {
    let (server, addr) = console_server().await;

    let page = get(addr, "/").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.content_type.starts_with("text/html"), "{}", page.content_type);
    assert!(page.body.contains("/console.js") && page.body.contains("Halt board"));
    for (path, kind) in [("/console.js", "text/javascript"), ("/console.css", "text/css")] {
        let asset = get(addr, path).await;
        assert_eq!(asset.status, StatusCode::OK, "{path}");
        assert!(asset.content_type.starts_with(kind), "{path}: {}", asset.content_type);
        assert!(
            !asset.body.contains("http://") && !asset.body.contains("https://"),
            "{path} loads nothing from elsewhere"
        );
    }
    assert_eq!(get(addr, "/nothing-here").await.status, StatusCode::NOT_FOUND);

    let mut ingest = server.ingest().await;
    crash(&mut ingest, 1, "BTC-USDT").await;

    let status = get(addr, "/api/status").await.json();
    assert_eq!(status["last_seq"], 1, "{status}");
    assert_eq!(status["ticks_applied"], 3);
    assert_eq!(status["ruleset_version"], 1);
    assert_eq!(status["tick_to_alert_ms"]["count"], 1);
    assert!(status["journal"].is_null(), "no data_dir: no journal");

    let instruments = get(addr, "/api/instruments").await.json();
    assert_eq!(instruments["total"], 1);
    assert_eq!(instruments["instruments"][0]["symbol"], "BTC-USDT");
    assert_eq!(instruments["instruments"][0]["price"], "90");
    assert_eq!(instruments["instruments"][0]["last_seq"], 3);

    let halts = get(addr, "/api/halts").await.json();
    assert_eq!(halts["total"], 1, "{halts}");
    let halt = &halts["in_force"][0];
    assert_eq!(halt["instrument"], "BTC-USDT");
    assert_eq!(halt["rule_id"], "crash");
    assert_eq!(halt["kind"], "fired");
    assert_eq!(halt["actions"][0], "halt");
    assert_eq!(halt["since_ns"], T0_NS + 2_000_000_000);

    let rules = get(addr, "/api/rules").await.json();
    assert_eq!(rules["version"], 1);
    assert_eq!(rules["sources"][0]["name"], "crash.toml");
    assert_eq!(rules["sources"][0]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(rules["rules"][0]["id"], "crash");
    assert_eq!(rules["rules"][0]["alerts"], 1);

    let reload = get(addr, "/api/reload").await.json();
    assert_eq!(reload["ok"], true, "{reload}");

    // A broken rule file: the reload fails, the console says where.
    server.write_rule(
        "broken.toml",
        "[[rule]]\nid = \"b\"\nkind = \"drawdown\"\nwindow = \"3 parsecs\"\nthreshold = \"8%\"\n",
    );
    let core = server.running().core().clone();
    let reloaded = tokio::task::spawn_blocking(move || core.reload(ReloadTrigger::Api))
        .await
        .unwrap();
    assert!(reloaded.is_err());
    let reload = get(addr, "/api/reload").await.json();
    assert_eq!(reload["ok"], false, "{reload}");
    assert_eq!(reload["failures"], 1);
    let error = &reload["errors"][0];
    assert_eq!(error["file"], "broken.toml", "{reload}");
    assert_eq!(error["line"], 4, "{reload}");
    assert_eq!(error["column"], 10, "{reload}");
    assert!(
        error["text"]
            .as_str()
            .unwrap()
            .starts_with("broken.toml:4:10: `window`"),
        "{reload}"
    );
    assert_eq!(reload["errors"].as_array().unwrap().len(), 1, "{reload}");
    assert_eq!(get(addr, "/api/status").await.json()["reload_failed"], true);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_streams_alerts_and_resumes_from_a_sequence_number() {
    let (server, addr) = console_server().await;
    let mut live = EventStream::open(addr, "/api/alerts", &[]).await;
    assert_eq!(live.status, StatusCode::OK);
    let mut ingest = server.ingest().await;
    for (i, symbol) in ["BTC-USDT", "ETH-USDT", "SOL-USDT"].into_iter().enumerate() {
        crash(&mut ingest, i as u64 + 1, symbol).await;
    }
    let events = live.take(3).await;
    let seen: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.event.as_str(),
                e.id.clone().unwrap(),
                e.json()["instrument"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("alert", "1".to_string(), "BTC-USDT".to_string()),
            ("alert", "2".to_string(), "ETH-USDT".to_string()),
            ("alert", "3".to_string(), "SOL-USDT".to_string()),
        ]
    );
    let first = events[0].json();
    assert_eq!(first["rule_id"], "crash");
    assert_eq!(first["severity"], "critical");
    assert_eq!(first["values"]["change_pct"], "-10");

    // A reconnecting client sends the last id it saw: the feed goes on
    // after it.
    let mut resumed = EventStream::open(addr, "/api/alerts", &[("last-event-id", "1")]).await;
    let ids: Vec<_> = resumed.take(2).await.into_iter().map(|e| e.id.unwrap()).collect();
    assert_eq!(ids, ["2", "3"]);
    // from_seq starts at that alert; filters are Subscribe's.
    let mut from = EventStream::open(addr, "/api/alerts?from_seq=1&instruments=SOL-*,ETH-*", &[]).await;
    let ids: Vec<_> = from.take(2).await.into_iter().map(|e| e.id.unwrap()).collect();
    assert_eq!(ids, ["2", "3"]);
    crash(&mut ingest, 4, "ADA-USDT").await;
    let next = live.next().await.unwrap();
    assert_eq!(next.id.as_deref(), Some("4"));
    assert_eq!(resumed.next().await.unwrap().id.as_deref(), Some("4"));

    // Bad requests say what is wrong.
    for (path, headers, expected) in [
        ("/api/alerts", vec![("last-event-id", "seven")], "Last-Event-ID"),
        ("/api/alerts?min_severity=loud", vec![], "min_severity"),
        ("/api/alerts?from_seq=99", vec![], "beyond the next alert"),
        ("/api/alerts?instruments=BTC-[", vec![], "not a valid glob"),
    ] {
        let reply = get_with(addr, path, &headers).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(
            reply.json()["error"].as_str().unwrap().contains(expected),
            "{path}: {}",
            reply.body
        );
    }

    // Shutdown: every feed ends with an `end` event, and the server stops.
    let stopping = {
        let mut server = server;
        let handle = server.begin_shutdown();
        drop(ingest);
        handle
    };
    for stream in [&mut live, &mut resumed, &mut from] {
        let end = stream.next().await.expect("an end event");
        assert_eq!(end.event, "end", "{end:?}");
        assert_eq!(end.json()["reason"], "server shutting down");
        assert!(stream.next().await.is_none(), "the stream finishes after `end`");
    }
    within("shutdown", stopping).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auth_on_the_api_needs_a_token_with_role_subscribe() {
    const DESK: &str = "desk-3f9c0e1d7b2a4856";
    const FEED: &str = "feed-6a1d8e0c3b7f2945";
    let tokens = vec![
        TokenEntry {
            name: "desk".into(),
            sha256: token_sha256_hex(DESK.as_bytes()),
            roles: vec![Role::Subscribe],
        },
        TokenEntry {
            name: "feed".into(),
            sha256: token_sha256_hex(FEED.as_bytes()),
            roles: vec![Role::Ingest],
        },
    ];
    let server = TestServer::builder()
        .rule_file("crash.toml", CRASH)
        .configure(|c| {
            c.console.listen = Some("127.0.0.1:0".parse().unwrap());
            c.auth.tokens = tokens;
        })
        .start()
        .await;
    let addr = server.running().console_addr().unwrap();
    // The page is open: it asks for the token.
    assert_eq!(get(addr, "/").await.status, StatusCode::OK);
    let desk = format!("Bearer {DESK}");
    let feed = format!("Bearer {FEED}");
    for path in ["/api/status", "/api/halts", "/api/rules", "/api/alerts"] {
        let none = get(addr, path).await;
        assert_eq!(none.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(
            none.json()["error"].as_str().unwrap().contains("no credentials"),
            "{}",
            none.body
        );
        let wrong = get_with(addr, path, &[("authorization", "Bearer not-a-token")]).await;
        assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(!wrong.body.contains("not-a-token"), "tokens are never echoed");
        let no_role = get_with(addr, path, &[("authorization", &feed)]).await;
        assert_eq!(no_role.status, StatusCode::FORBIDDEN, "{path}: {}", no_role.body);
    }
    assert_eq!(
        get_with(addr, "/api/status", &[("authorization", &desk)]).await.status,
        StatusCode::OK
    );
    let stream = EventStream::open(addr, "/api/alerts", &[("authorization", &desk)]).await;
    assert_eq!(stream.status, StatusCode::OK);
    drop(stream);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_off_by_default_and_loopback_unless_allowed() {
    let server = TestServer::builder().rule_file("crash.toml", CRASH).start().await;
    assert_eq!(server.running().console_addr(), None);
    server.shutdown().await;

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("crash.toml"), CRASH).unwrap();
    let config = airbag::config::ServiceConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        rules: dir.path().to_path_buf(),
        console: airbag::config::ConsoleConfig {
            listen: Some("0.0.0.0:0".parse().unwrap()),
            allow_non_loopback: false,
        },
        ..airbag::config::ServiceConfig::default()
    };
    let error = airbag::app::start(config).await.unwrap_err().to_string();
    assert!(error.contains("console.listen"), "{error}");
}
