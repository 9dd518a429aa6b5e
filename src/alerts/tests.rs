use std::sync::Arc;

use super::*;
use crate::clock::ManualClock;
use crate::model::{Action, AlertKind, Mode};

fn alert(rule: &str, instrument: &str) -> Alert {
    Alert {
        rule_id: Arc::from(rule),
        ruleset_version: 1,
        instrument: Arc::from(instrument),
        kind: AlertKind::Fired,
        severity: Severity::Critical,
        actions: Arc::from(vec![Action::Halt]),
        mode: Mode::Active,
        values: Vec::new(),
        event_time_ns: 1,
        tick_seq: Some(1),
        reason: None,
    }
}

fn bus(queue: usize, ring: usize) -> Arc<AlertBus> {
    Arc::new(AlertBus::new(
        BusConfig {
            subscriber_queue: queue,
            ring_capacity: ring,
        },
        Arc::new(ManualClock::new(1_000)),
    ))
}

/// Everything a subscription has ready now, and its end if it ended.
fn drain(sub: &mut Subscription) -> (Vec<u64>, Option<SubscriptionEnd>) {
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut seqs = Vec::new();
    loop {
        match sub.poll_next_alert(&mut cx) {
            std::task::Poll::Ready(Some(Ok(a))) => seqs.push(a.seq),
            std::task::Poll::Ready(Some(Err(end))) => return (seqs, Some(end)),
            std::task::Poll::Ready(None) | std::task::Poll::Pending => return (seqs, None),
        }
    }
}

#[test]
fn numbers_gap_free_and_fans_out_one_arc() {
    let bus = bus(16, 100);
    let mut a = bus.subscribe(SubscriptionFilter::all(), 0).unwrap();
    let mut b = bus.subscribe(SubscriptionFilter::all(), 0).unwrap();
    for i in 0..5 {
        assert_eq!(bus.publish(alert("r", "BTC-USDT"), 500), i + 1);
    }
    assert_eq!(drain(&mut a).0, vec![1, 2, 3, 4, 5]);
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let std::task::Poll::Ready(Some(Ok(first))) = b.poll_next_alert(&mut cx) else {
        panic!("b has alerts")
    };
    // Two subscribers and the ring: the same allocation.
    assert!(Arc::strong_count(&first) >= 2);
    assert_eq!(first.received_ns, 500);
    assert_eq!(first.emitted_ns, 1_000);
    let stats = bus.stats();
    assert_eq!(stats.published, 5);
    assert_eq!(stats.subscribers, 2);
    assert_eq!(stats.tick_to_alert.len(), 5);
}

#[test]
fn full_queue_disconnects_with_resume_point() {
    let bus = bus(3, 100);
    let mut slow = bus.subscribe(SubscriptionFilter::all(), 0).unwrap();
    let mut fast = bus.subscribe(SubscriptionFilter::all(), 0).unwrap();
    let mut fast_seen = Vec::new();
    for _ in 0..10 {
        bus.publish(alert("r", "X"), 0);
        fast_seen.extend(drain(&mut fast).0);
    }
    assert_eq!(fast_seen, (1..=10).collect::<Vec<_>>());
    let (seqs, end) = drain(&mut slow);
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(
        end,
        Some(SubscriptionEnd::Lagged {
            resume_seq: 4,
            queued: 3
        })
    );
    assert_eq!(bus.stats().lagged, 1);
    // Resuming from there replays the rest.
    let mut again = bus.subscribe(SubscriptionFilter::all(), 4).unwrap();
    assert_eq!(drain(&mut again).0, (4..=10).collect::<Vec<_>>());
}

#[test]
fn replay_joins_live_without_gap_or_duplicate() {
    let bus = bus(1_000, 1_000);
    for _ in 0..(REPLAY_CHUNK as u64 * 2 + 10) {
        bus.publish(alert("r", "X"), 0);
    }
    let mut sub = bus.subscribe(SubscriptionFilter::all(), 5).unwrap();
    let (first, _) = drain(&mut sub);
    bus.publish(alert("r", "X"), 0);
    let (second, _) = drain(&mut sub);
    let all: Vec<u64> = first.into_iter().chain(second).collect();
    assert_eq!(all, (5..=REPLAY_CHUNK as u64 * 2 + 11).collect::<Vec<_>>());
}

#[test]
fn replay_respects_the_ring_and_the_filter() {
    let bus = bus(100, 4);
    for i in 0..10 {
        bus.publish(alert("r", if i % 2 == 0 { "BTC-USDT" } else { "ETH-USDT" }), 0);
    }
    assert_eq!(
        bus.subscribe(SubscriptionFilter::all(), 6).unwrap_err(),
        SubscribeError::TooOld { from_seq: 6, oldest: 7 }
    );
    assert_eq!(
        bus.subscribe(SubscriptionFilter::all(), 12).unwrap_err(),
        SubscribeError::Ahead { from_seq: 12, next: 11 }
    );
    let btc = SubscriptionFilter::new(FilterSpec {
        instruments: vec!["BTC-*".into()],
        ..Default::default()
    })
    .unwrap();
    let mut sub = bus.subscribe(btc, 7).unwrap();
    assert_eq!(drain(&mut sub).0, vec![7, 9]);
    // Resuming exactly at the next alert is valid and replays nothing.
    let mut at_head = bus.subscribe(SubscriptionFilter::all(), 11).unwrap();
    assert_eq!(drain(&mut at_head), (vec![], None));
}

#[test]
fn close_ends_subscriptions_after_their_queue() {
    let bus = bus(10, 10);
    let mut sub = bus.subscribe(SubscriptionFilter::all(), 0).unwrap();
    bus.publish(alert("r", "X"), 0);
    bus.close();
    assert_eq!(drain(&mut sub), (vec![1], Some(SubscriptionEnd::Shutdown)));
    assert_eq!(
        bus.subscribe(SubscriptionFilter::all(), 0).unwrap_err(),
        SubscribeError::Closed
    );
    drop(sub);
    assert_eq!(bus.subscriber_count(), 0);
}

#[test]
fn sink_publishes_in_emit_order() {
    let bus = bus(10, 10);
    let mut sub = bus.subscribe(SubscriptionFilter::all(), 0).unwrap();
    let mut sink = PublishSink::new(&bus, 7);
    sink.emit(alert("a", "X"));
    sink.emit(alert("b", "X"));
    assert_eq!(sink.published(), 2);
    assert_eq!(drain(&mut sub).0, vec![1, 2]);
}
