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

mod journaled {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::journal::{record, FsyncPolicy, Journal, JournalConfig, JournalError};

    fn journal_config(segment_bytes: u64) -> JournalConfig {
        JournalConfig {
            segment_bytes,
            fsync: FsyncPolicy::Never,
            retain_bytes: 1 << 30,
            retain_age: Duration::from_secs(3600),
        }
    }

    fn journaled_bus(dir: &Path, ring: usize, segment_bytes: u64) -> Arc<AlertBus> {
        let journal = Journal::open(dir, journal_config(segment_bytes)).unwrap();
        Arc::new(AlertBus::with_journal(
            BusConfig {
                subscriber_queue: 10_000,
                ring_capacity: ring,
            },
            Arc::new(ManualClock::new(1_000)),
            journal,
        ))
    }

    /// The i-th alert of a test: distinct fields, so a mix-up shows.
    fn nth(i: u64) -> Alert {
        let mut a = alert(
            &format!("rule-{}", i % 3),
            if i.is_multiple_of(2) { "BTC-USDT" } else { "ETH-USDT" },
        );
        a.event_time_ns = i as i64;
        a.tick_seq = (!i.is_multiple_of(5)).then_some(i);
        if i.is_multiple_of(4) {
            a.reason = Some("rule removed or changed by a reload".into());
        }
        a
    }

    #[test]
    fn numbering_goes_on_after_a_restart_and_the_tail_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let bus = journaled_bus(dir.path(), 100, 1 << 20);
        for i in 1..=5 {
            assert_eq!(bus.publish(nth(i), i as i64 * 10), i);
        }
        drop(bus);
        let bus = journaled_bus(dir.path(), 100, 1 << 20);
        assert_eq!(bus.last_seq(), 5);
        assert_eq!(bus.journal_range(), Some((1, 6)));
        assert_eq!(bus.publish(nth(6), 60), 6);
        let tail = bus.journal_tail(2).unwrap();
        assert_eq!(tail, (3..=6).map(|i| (i, nth(i))).collect::<Vec<_>>());
        assert_eq!(bus.journal_tail(6).unwrap(), vec![]);
        let err = bus.journal_tail(7).unwrap_err();
        assert!(
            matches!(
                err,
                JournalReadError::Journal(JournalError::Ahead {
                    from_seq: 8,
                    next_seq: 7
                })
            ),
            "{err:?}"
        );
        // Replayed alerts carry their original times.
        let mut sub = bus.subscribe(SubscriptionFilter::all(), 1).unwrap();
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let std::task::Poll::Ready(Some(Ok(first))) = sub.poll_next_alert(&mut cx) else {
            panic!("a replayed alert")
        };
        assert_eq!((first.seq, first.received_ns, first.emitted_ns), (1, 10, 1_000));
        assert_eq!(first.alert, nth(1));
        // Without a journal, the tail is empty.
        assert_eq!(super::bus(10, 10).journal_tail(0).unwrap(), vec![]);
    }

    #[test]
    fn a_start_older_than_the_ring_replays_the_journal_then_the_ring_then_live() {
        let dir = tempfile::tempdir().unwrap();
        let bus = journaled_bus(dir.path(), 4, 4096);
        for i in 1..=100 {
            bus.publish(nth(i), 0);
        }
        assert!(bus.journal_stats().unwrap().journal.segments > 1);
        let mut all = bus.subscribe(SubscriptionFilter::all(), 3).unwrap();
        let (seqs, end) = drain(&mut all);
        assert_eq!((seqs, end), ((3..=100).collect::<Vec<_>>(), None));
        bus.publish(nth(101), 0);
        assert_eq!(drain(&mut all), (vec![101], None));

        let btc = SubscriptionFilter::new(FilterSpec {
            instruments: vec!["BTC-*".into()],
            ..Default::default()
        })
        .unwrap();
        let mut even = bus.subscribe(btc, 1).unwrap();
        assert_eq!(drain(&mut even).0, (2..=100).step_by(2).collect::<Vec<_>>());
    }

    #[test]
    fn a_replay_the_ring_outran_goes_back_to_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let bus = journaled_bus(dir.path(), 4, 4096);
        for i in 1..=20 {
            bus.publish(nth(i), 0);
        }
        // The first chunk (1..=20) is read when the subscription opens.
        let mut sub = bus.subscribe(SubscriptionFilter::all(), 1).unwrap();
        // Meanwhile the ring moves far past 21.
        for i in 21..=40 {
            bus.publish(nth(i), 0);
        }
        let (seqs, end) = drain(&mut sub);
        assert_eq!((seqs, end), ((1..=40).collect::<Vec<_>>(), None));
        bus.publish(nth(41), 0);
        assert_eq!(drain(&mut sub), (vec![41], None));
    }

    #[test]
    fn too_old_means_older_than_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(
            dir.path(),
            JournalConfig {
                retain_bytes: 8192,
                ..journal_config(4096)
            },
        )
        .unwrap();
        let bus = Arc::new(AlertBus::with_journal(
            BusConfig {
                subscriber_queue: 100,
                ring_capacity: 4,
            },
            Arc::new(ManualClock::new(0)),
            journal,
        ));
        for i in 1..=400 {
            bus.publish(nth(i), 0);
        }
        let (first, next) = bus.journal_range().unwrap();
        assert!(first > 1 && next == 401, "{first} {next}");
        assert_eq!(
            bus.subscribe(SubscriptionFilter::all(), first - 1).unwrap_err(),
            SubscribeError::TooOld {
                from_seq: first - 1,
                oldest: first
            }
        );
        let mut sub = bus.subscribe(SubscriptionFilter::all(), first).unwrap();
        assert_eq!(drain(&mut sub).0, (first..=400).collect::<Vec<_>>());
    }

    /// Directories named like the segments `seqs` would start: creating
    /// the segment fails while they are there.
    fn block_segments(dir: &Path, seqs: std::ops::RangeInclusive<u64>) {
        for seq in seqs {
            std::fs::create_dir(record::segment_path(dir, seq)).unwrap();
        }
    }

    fn unblock_segments(dir: &Path, seqs: std::ops::RangeInclusive<u64>) {
        for seq in seqs {
            let _ = std::fs::remove_dir(record::segment_path(dir, seq));
        }
    }

    #[test]
    fn failed_writes_keep_publishing_and_heal_from_the_ring() {
        let dir = tempfile::tempdir().unwrap();
        let bus = journaled_bus(dir.path(), 1_000, 4096);
        let mut live = bus.subscribe(SubscriptionFilter::all(), 0).unwrap();
        block_segments(dir.path(), 2..=300);
        for i in 1..=100 {
            bus.publish(nth(i), 0);
        }
        // Every alert was delivered, though the first segment filled up.
        assert_eq!(drain(&mut live).0, (1..=100).collect::<Vec<_>>());
        let stats = bus.journal_stats().unwrap();
        let since = stats.journal.next_seq;
        assert!(since > 1 && since < 100, "{since}");
        assert_eq!(stats.health, JournalHealth::Failing { since });
        assert_eq!(stats.unjournaled, 101 - since);
        assert_eq!(stats.write_failures, 101 - since);

        unblock_segments(dir.path(), 2..=300);
        bus.publish(nth(101), 0);
        let stats = bus.journal_stats().unwrap();
        assert_eq!((stats.health, stats.unjournaled), (JournalHealth::Healthy, 0));
        drop((bus, live));
        let bus = journaled_bus(dir.path(), 1_000, 4096);
        assert_eq!(
            bus.journal_tail(0).unwrap(),
            (1..=101).map(|i| (i, nth(i))).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_journal_that_missed_alerts_gone_from_the_ring_stops() {
        let dir = tempfile::tempdir().unwrap();
        let bus = journaled_bus(dir.path(), 8, 4096);
        block_segments(dir.path(), 2..=300);
        for i in 1..=100 {
            bus.publish(nth(i), 0);
        }
        unblock_segments(dir.path(), 2..=300);
        let stats = bus.journal_stats().unwrap();
        let since = stats.journal.next_seq;
        assert_eq!(stats.health, JournalHealth::Stopped { since });
        // Publishing goes on; the journal takes nothing more.
        assert_eq!(bus.publish(nth(101), 0), 101);
        let stats = bus.journal_stats().unwrap();
        assert_eq!((stats.journal.next_seq, stats.unjournaled), (since, 102 - since));
        // A start in the gap is refused with the oldest still available.
        assert_eq!(
            bus.subscribe(SubscriptionFilter::all(), since).unwrap_err(),
            SubscribeError::TooOld {
                from_seq: since,
                oldest: 94
            }
        );
        // A start in the journal replays up to the gap, then says so.
        let mut sub = bus.subscribe(SubscriptionFilter::all(), 1).unwrap();
        assert_eq!(
            drain(&mut sub),
            (
                (1..since).collect::<Vec<_>>(),
                Some(SubscriptionEnd::ReplayOverrun {
                    resume_seq: since,
                    oldest: 94
                })
            )
        );
    }
}
