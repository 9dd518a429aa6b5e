//! Graceful shutdown: alerts of ticks in flight reach subscribers before
//! their streams end with UNAVAILABLE.

mod common;

use airbag::server::proto;
use common::*;
use tonic::Code;

const CRASH: &str = r#"
[[rule]]
id = "crash"
kind = "drawdown"
window = "3s"
threshold = "8%"
severity = "critical"
actions = ["halt"]
"#;

fn crash(instrument: &str) -> Vec<proto::Tick> {
    vec![
        trade(instrument, 0, 1, "100"),
        trade(instrument, 1_000, 2, "95"),
        trade(instrument, 2_000, 3, "91"),
    ]
}

/// Reads alerts until the stream ends; returns them and the final status.
async fn read_to_end(stream: &mut tonic::Streaming<proto::Alert>) -> (Vec<proto::Alert>, Option<tonic::Status>) {
    let mut alerts = Vec::new();
    loop {
        match within("alert stream to end", stream.message()).await {
            Ok(Some(a)) => alerts.push(a),
            Ok(None) => return (alerts, None),
            Err(status) => return (alerts, Some(status)),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delivers_alerts_then_ends_streams() {
    let mut server = TestServer::builder().rule_file("crash.toml", CRASH).start().await;
    let mut alerts = server.subscribe(proto::SubscribeRequest::default()).await;
    let mut ingest = server.ingest().await;
    let ack = ingest.send(batch(1, crash("BTC-USDT"))).await;
    assert_eq!(ack.applied, 3);

    let done = server.begin_shutdown();
    let (got, status) = read_to_end(&mut alerts).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].rule_id, "crash");
    let status = status.expect("ends with a status");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "server shutting down");

    // The ingest stream ends too, rather than keeping the server up.
    match ingest.next_ack().await {
        Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        Ok(None) => {}
        Ok(Some(ack)) => panic!("no batch was sent, got {ack:?}"),
    }
    within("shutdown", done).await.expect("shutdown task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_in_flight_at_shutdown_are_acknowledged_and_delivered_or_neither() {
    let mut server = TestServer::builder().rule_file("crash.toml", CRASH).start().await;
    let mut alerts = server.subscribe(proto::SubscribeRequest::default()).await;
    let mut ingest = server.ingest().await;
    // Make sure the stream is being served before racing shutdown.
    ingest.send(batch(0, vec![trade("WARM-UP", 0, 1, "1")])).await;

    ingest.send_only(batch(1, crash("BTC-USDT"))).await;
    let done = server.begin_shutdown();
    let acked = match ingest.next_ack().await {
        Ok(Some(ack)) => {
            assert_eq!(ack.batch_id, 1);
            assert_eq!(ack.applied, 3);
            true
        }
        Ok(None) => false,
        Err(status) => {
            assert_eq!(status.code(), Code::Unavailable, "{status:?}");
            false
        }
    };
    let (got, status) = read_to_end(&mut alerts).await;
    assert_eq!(status.map(|s| s.code()), Some(Code::Unavailable));
    if acked {
        assert_eq!(got.len(), 1, "an acknowledged crash is delivered: {got:?}");
    } else {
        assert!(got.len() <= 1, "{got:?}");
    }
    within("shutdown", done).await.expect("shutdown task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_idle_clients_is_prompt() {
    let server = TestServer::builder().rule_file("crash.toml", CRASH).start().await;
    let _alerts = server.subscribe(proto::SubscribeRequest::default()).await;
    let _ingest = server.ingest().await;
    let _admin = server.admin().await;
    let started = std::time::Instant::now();
    server.shutdown().await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
