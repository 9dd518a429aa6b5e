//! Graceful shutdown: alerts of ticks in flight reach subscribers before
//! their streams end with UNAVAILABLE.

mod common;

use airbag::wire::proto;
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

/// Waits (bounded by [`WAIT`]) until `ready` holds; `what` names it.
async fn until(what: &str, mut ready: impl FnMut() -> bool) {
    within(what, async {
        while !ready() {
            tokio::task::yield_now().await;
        }
    })
    .await
}

/// `Running::shutdown` promises that an ingest stream finishes the batch
/// in hand: it is acknowledged, its alerts reach subscribers, and only
/// then does the stream end with `UNAVAILABLE` and the bus close. The
/// barrier makes "in hand" certain rather than a race: the test holds the
/// lock of BTC-USDT's state, so the server, having read the batch and
/// resolved its instruments (seen as the new instrument appearing),
/// waits inside the batch for the lock while shutdown begins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_in_hand_at_shutdown_is_acknowledged_and_its_alerts_delivered() {
    let mut server = TestServer::builder().rule_file("crash.toml", CRASH).start().await;
    let core = server.running().core().clone();
    let mut alerts = server.subscribe(proto::SubscribeRequest::default()).await;
    let mut ingest = server.ingest().await;
    // BTC-USDT gets its state, long before the crash's window.
    ingest.send(batch(0, vec![trade("BTC-USDT", -60_000, 1, "100")])).await;
    assert_eq!(core.engine().instrument_count(), 1);

    // Hold BTC-USDT's state, on a thread of its own.
    let (locked_tx, locked_rx) = std::sync::mpsc::channel::<()>();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = {
        let core = core.clone();
        std::thread::spawn(move || {
            core.engine().with_state("BTC-USDT", |_| {
                locked_tx.send(()).expect("test waiting");
                release_rx.recv_timeout(WAIT).expect("released in time");
            })
        })
    };
    locked_rx.recv_timeout(WAIT).expect("the state is held");

    // A new instrument first: it is resolved, before any tick is
    // applied, once the server has the batch in hand.
    let mut ticks = vec![trade("ETH-USDT", 0, 1, "50")];
    ticks.extend([
        trade("BTC-USDT", 0, 2, "100"),
        trade("BTC-USDT", 1_000, 3, "95"),
        trade("BTC-USDT", 2_000, 4, "91"),
    ]);
    ingest.send_only(batch(1, ticks)).await;
    until("the server to have batch 1 in hand", || {
        core.engine().instrument_count() == 2
    })
    .await;

    let done = server.begin_shutdown();
    until("shutdown to begin", || core.is_shutting_down()).await;
    release_tx.send(()).expect("holder waiting");
    holder.join().expect("holder").expect("BTC-USDT has a state");

    let ack = ingest
        .next_ack()
        .await
        .expect("acknowledged")
        .expect("before the stream ends");
    assert_eq!((ack.batch_id, ack.applied), (1, 4), "{ack:?}");
    match ingest.next_ack().await {
        Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        other => panic!("the stream ends with UNAVAILABLE after the batch in hand, got {other:?}"),
    }
    let (got, status) = read_to_end(&mut alerts).await;
    assert_eq!(got.len(), 1, "the crash in the batch in hand is delivered: {got:?}");
    assert_eq!((got[0].rule_id.as_str(), got[0].tick_seq), ("crash", Some(4)));
    let status = status.expect("ends with a status");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "server shutting down");
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
