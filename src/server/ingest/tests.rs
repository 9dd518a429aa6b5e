//! An [`IngestStream`] driven by hand, poll by poll: at most one batch per
//! poll of its task, and nothing evaluated once its connection has closed.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use tokio_stream::Stream;
use tonic::{Code, Streaming};

use super::{BatchDecoder, IngestService, IngestStream};
use crate::alerts::AlertBus;
use crate::clock::SystemClock;
use crate::config::ServiceConfig;
use crate::journal::{FsyncPolicy, Journal, JournalConfig};
use crate::rules::RuleSet;
use crate::server::connection::Connection;
use crate::service::Core;
use crate::wire::proto;

/// A waker that counts its wakes.
#[derive(Default)]
struct Wakes(AtomicUsize);

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// A one-trade batch of `symbol` at sequence number `seq`, framed as gRPC
/// sends it.
fn framed_batch(batch_id: u64, symbol: &str, seq: u64) -> Bytes {
    let decimal = |mantissa| proto::Decimal { mantissa, scale: 0 };
    let message = proto::TickBatch {
        batch_id,
        ticks: vec![proto::Tick {
            instrument: symbol.into(),
            event_time_ns: 1_700_000_000_000_000_000 + seq as i64,
            seq,
            values: Some(proto::tick::Values::Trade(proto::Trade {
                price: Some(decimal(100)),
                size: Some(decimal(1)),
                side: 0,
            })),
        }],
    }
    .encode_to_vec();
    let mut frame = BytesMut::new();
    frame.put_u8(0);
    frame.put_u32(message.len() as u32);
    frame.put_slice(&message);
    frame.freeze()
}

/// A stream whose client has already sent `batches` (all of them in the
/// server's buffers), on `connection`.
fn stream_of(core: &Arc<Core>, batches: &[Bytes], connection: &Arc<Connection>) -> IngestStream {
    let body = http_body_util::Full::new(Bytes::from(batches.concat()));
    let inbound = Streaming::new_request(BatchDecoder, body, None, None);
    IngestStream::new(core.clone(), inbound, None, Some(connection.clone()))
}

fn positions(core: &Arc<Core>) -> Vec<(String, u64)> {
    IngestService::new(core.clone())
        .last_applied(proto::LastAppliedRequest::default())
        .expect("no writer to fence")
        .last_applied
        .into_iter()
        .map(|p| (p.instrument, p.seq))
        .collect()
}

fn applied_of(polled: Poll<Option<Result<Bytes, tonic::Status>>>) -> u32 {
    match polled {
        Poll::Ready(Some(Ok(ack))) => proto::IngestAck::decode(ack).expect("an IngestAck").applied,
        other => panic!("expected an ack, got {other:?}"),
    }
}

#[tokio::test]
async fn a_batch_queued_behind_an_ack_waits_for_the_next_poll_of_the_task() {
    let core = Arc::new(Core::new(
        ServiceConfig::default(),
        RuleSet::default(),
        Arc::new(crate::clock::SystemClock),
    ));
    let connection = Arc::new(Connection::new(None, None));
    let batches = [framed_batch(1, "A", 1), framed_batch(2, "B", 1)];
    let mut stream = stream_of(&core, &batches, &connection);
    let wakes = Arc::new(Wakes::default());
    let waker = Waker::from(wakes.clone());
    let mut cx = Context::from_waker(&waker);

    assert_eq!(applied_of(Pin::new(&mut stream).poll_next(&mut cx)), 1);
    // Batch 2 is there, but the task yields first, asking to be polled again.
    assert!(Pin::new(&mut stream).poll_next(&mut cx).is_pending());
    assert_eq!(wakes.0.load(Ordering::Relaxed), 1);
    assert_eq!(positions(&core), [("A".to_string(), 1)]);
    assert_eq!(applied_of(Pin::new(&mut stream).poll_next(&mut cx)), 1);
    assert_eq!(positions(&core), [("A".to_string(), 1), ("B".to_string(), 1)]);
    assert!(matches!(Pin::new(&mut stream).poll_next(&mut cx), Poll::Ready(None)));
}

#[tokio::test]
async fn batches_received_before_the_connection_closed_are_not_evaluated_after_it() {
    let core = Arc::new(Core::new(
        ServiceConfig::default(),
        RuleSet::default(),
        Arc::new(crate::clock::SystemClock),
    ));
    let connection = Arc::new(Connection::new(None, None));
    let batches = [
        framed_batch(1, "A", 1),
        framed_batch(2, "A", 2),
        framed_batch(3, "B", 1),
    ];
    let mut stream = stream_of(&core, &batches, &connection);
    let waker = Waker::from(Arc::new(Wakes::default()));
    let mut cx = Context::from_waker(&waker);

    assert_eq!(applied_of(Pin::new(&mut stream).poll_next(&mut cx)), 1);
    // The client's connection is cut with batches 2 and 3 still buffered:
    // its client will ask where A and B stand and resend from there, so
    // the answer must not change behind its back.
    connection.mark_closed();
    let before = positions(&core);
    let mut end = None;
    for _ in 0..4 {
        if let Poll::Ready(polled) = Pin::new(&mut stream).poll_next(&mut cx) {
            end = Some(polled);
            break;
        }
    }
    match end {
        Some(Some(Err(status))) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        other => panic!("expected the stream to end with UNAVAILABLE, got {other:?}"),
    }
    assert!(matches!(Pin::new(&mut stream).poll_next(&mut cx), Poll::Ready(None)));
    assert_eq!(positions(&core), before);
    assert_eq!(before, [("A".to_string(), 1)]);
}

#[tokio::test]
async fn a_stream_opened_on_a_closed_connection_evaluates_nothing() {
    let core = Arc::new(Core::new(
        ServiceConfig::default(),
        RuleSet::default(),
        Arc::new(crate::clock::SystemClock),
    ));
    let connection = Arc::new(Connection::new(None, None));
    connection.mark_closed();
    let mut stream = stream_of(&core, &[framed_batch(1, "A", 1)], &connection);
    let waker = Waker::from(Arc::new(Wakes::default()));
    let mut cx = Context::from_waker(&waker);
    match Pin::new(&mut stream).poll_next(&mut cx) {
        Poll::Ready(Some(Err(status))) => assert_eq!(status.code(), Code::Unavailable),
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
    assert!(positions(&core).is_empty());
    assert_eq!(core.engine().instrument_count(), 0, "no instrument was added");
}

/// Trades of `symbol` at `(seq, price)`, in one batch framed as gRPC sends
/// it.
fn framed_trades(batch_id: u64, symbol: &str, trades: &[(u64, i64)]) -> Bytes {
    let decimal = |mantissa| proto::Decimal { mantissa, scale: 0 };
    let message = proto::TickBatch {
        batch_id,
        ticks: trades
            .iter()
            .map(|&(seq, price)| proto::Tick {
                instrument: symbol.into(),
                event_time_ns: 1_700_000_000_000_000_000 + seq as i64,
                seq,
                values: Some(proto::tick::Values::Trade(proto::Trade {
                    price: Some(decimal(price)),
                    size: Some(decimal(1)),
                    side: 0,
                })),
            })
            .collect(),
    }
    .encode_to_vec();
    let mut frame = BytesMut::new();
    frame.put_u8(0);
    frame.put_u32(message.len() as u32);
    frame.put_slice(&message);
    frame.freeze()
}

#[tokio::test]
async fn an_ack_waits_until_the_alerts_of_its_batch_are_synced() {
    const FLIP: &str = "[[rule]]\nid = \"flip\"\nkind = \"drawdown\"\nwindow = \"3s\"\nthreshold = \"1%\"\n";
    let ruleset = crate::service::rulebook::compile_texts(&[("flip.toml".into(), FLIP.into())]).expect("rules");
    let dir = tempfile::tempdir().expect("temp dir");
    let journal = Journal::open(
        dir.path(),
        JournalConfig {
            fsync: FsyncPolicy::Always,
            ..JournalConfig::default()
        },
    )
    .expect("journal");
    let config = ServiceConfig::default();
    let bus = Arc::new(AlertBus::with_journal(
        Core::bus_config(&config),
        Arc::new(SystemClock),
        journal,
    ));
    let core = Arc::new(Core::with_bus(config, ruleset, bus.clone(), Arc::new(SystemClock)));
    let connection = Arc::new(Connection::new(None, None));
    let batches = [framed_trades(1, "A", &[(1, 100), (2, 98)]), framed_batch(2, "B", 1)];
    let mut stream = stream_of(&core, &batches, &connection);
    let wakes = Arc::new(Wakes::default());
    let waker = Waker::from(wakes.clone());
    let mut cx = Context::from_waker(&waker);

    let writing = bus.hold_journal();
    // The batch is evaluated and its alert published, but not synced: no ack.
    assert!(Pin::new(&mut stream).poll_next(&mut cx).is_pending());
    assert_eq!((bus.last_seq(), bus.durable_seq()), (1, 0));
    assert_eq!(positions(&core), [("A".to_string(), 2)]);
    assert!(
        Pin::new(&mut stream).poll_next(&mut cx).is_pending(),
        "still held, batch 2 unread"
    );
    assert_eq!(positions(&core), [("A".to_string(), 2)]);
    drop(writing);

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let applied = loop {
        if let Poll::Ready(polled) = Pin::new(&mut stream).poll_next(&mut cx) {
            break applied_of(Poll::Ready(polled));
        }
        assert!(std::time::Instant::now() < deadline, "no ack once the writer went on");
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    };
    assert_eq!(applied, 2);
    assert!(bus.durable_seq() >= 1);
    assert!(wakes.0.load(Ordering::Relaxed) >= 1, "the release woke the stream");
    let stats = bus.journal_stats().expect("journaled");
    assert_eq!(stats.journal.next_seq, 2);
    assert!(!stats.journal.fsync.is_empty());
}
