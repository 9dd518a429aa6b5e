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
        trigger_instrument: None,
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
fn drain<R>(sub: &mut R) -> (Vec<u64>, Option<SubscriptionEnd>)
where
    R: tokio_stream::Stream<Item = Result<Arc<PublishedAlert>, SubscriptionEnd>> + Unpin,
{
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut seqs = Vec::new();
    loop {
        match std::pin::Pin::new(&mut *sub).poll_next(&mut cx) {
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
        bus_with(dir, 10_000, ring, journal_config(segment_bytes))
    }

    fn bus_with(dir: &Path, queue: usize, ring: usize, config: JournalConfig) -> Arc<AlertBus> {
        let journal = Journal::open(dir, config).unwrap();
        Arc::new(AlertBus::with_journal(
            BusConfig {
                subscriber_queue: queue,
                ring_capacity: ring,
            },
            Arc::new(ManualClock::new(1_000)),
            journal,
        ))
    }

    /// Waits until the writer has released every alert published.
    fn settle(bus: &AlertBus) {
        bus.wait_durable_blocking(bus.last_seq());
        assert_eq!(bus.durable_seq(), bus.last_seq());
    }

    /// `fdatasync` calls the journal made (each is timed once).
    fn syncs(bus: &AlertBus) -> u64 {
        bus.journal_stats().unwrap().journal.fsync.len()
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
        settle(&bus);
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
        settle(&bus);
        assert!(bus.journal_stats().unwrap().journal.segments > 1);
        let mut all = bus.subscribe(SubscriptionFilter::all(), 3).unwrap();
        let (seqs, end) = drain(&mut all);
        assert_eq!((seqs, end), ((3..=100).collect::<Vec<_>>(), None));
        bus.publish(nth(101), 0);
        settle(&bus);
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
        settle(&bus);
        // The first chunk (1..=20) is read when the subscription opens.
        let mut sub = bus.subscribe(SubscriptionFilter::all(), 1).unwrap();
        // Meanwhile the ring moves far past 21.
        for i in 21..=40 {
            bus.publish(nth(i), 0);
        }
        settle(&bus);
        let (seqs, end) = drain(&mut sub);
        assert_eq!((seqs, end), ((1..=40).collect::<Vec<_>>(), None));
        bus.publish(nth(41), 0);
        settle(&bus);
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
        settle(&bus);
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
        settle(&bus);
        // Every alert was delivered, though the first segment filled up.
        assert_eq!(drain(&mut live).0, (1..=100).collect::<Vec<_>>());
        let stats = bus.journal_stats().unwrap();
        let since = stats.journal.next_seq;
        assert!(since > 1 && since < 100, "{since}");
        assert_eq!(stats.health, JournalHealth::Failing { since });
        assert_eq!((stats.unjournaled, stats.pending), (101 - since, 0));
        // At least one attempt per group, at most one per alert.
        assert!(
            (1..=101 - since).contains(&stats.write_failures),
            "{}",
            stats.write_failures
        );

        unblock_segments(dir.path(), 2..=300);
        bus.publish(nth(101), 0);
        settle(&bus);
        let stats = bus.journal_stats().unwrap();
        assert_eq!(
            (stats.health, stats.unjournaled, stats.pending),
            (JournalHealth::Healthy, 0, 0)
        );
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
        settle(&bus);
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

    fn always(segment_bytes: u64) -> JournalConfig {
        JournalConfig {
            fsync: FsyncPolicy::Always,
            ..journal_config(segment_bytes)
        }
    }

    fn hold_journal(bus: &AlertBus) -> parking_lot::MutexGuard<'_, Journal> {
        bus.hold_journal().unwrap()
    }

    #[test]
    fn the_journal_holds_the_alerts_in_sequence_order_whoever_published_them() {
        let dir = tempfile::tempdir().unwrap();
        let bus = journaled_bus(dir.path(), 64, 1 << 16);
        let published: Vec<Vec<(u64, Alert)>> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..4u64)
                .map(|t| {
                    let bus = &bus;
                    s.spawn(move || {
                        (0..300u64)
                            .map(|i| {
                                let alert = nth(t * 1_000 + i);
                                (bus.publish(alert.clone(), 0), alert)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        settle(&bus);
        let mut expected: Vec<(u64, Alert)> = published.into_iter().flatten().collect();
        expected.sort_by_key(|(seq, _)| *seq);
        assert_eq!(expected.first().map(|e| e.0), Some(1));
        assert_eq!(bus.journal_tail(0).unwrap(), expected);
        assert!(bus.journal_stats().unwrap().journal.segments > 1);
    }

    #[test]
    fn alerts_published_together_cost_one_fdatasync() {
        let dir = tempfile::tempdir().unwrap();
        let bus = bus_with(dir.path(), 1_000, 1_000, always(1 << 20));
        let before = syncs(&bus);
        {
            let _writing = hold_journal(&bus);
            for i in 1..=50 {
                bus.publish(nth(i), 0);
            }
        }
        settle(&bus);
        let stats = bus.journal_stats().unwrap();
        assert_eq!(stats.journal.appends, 50);
        assert_eq!(syncs(&bus) - before, 1, "one group, one fdatasync");
        // One by one, each is a group of its own.
        for i in 51..=53 {
            bus.publish(nth(i), 0);
            settle(&bus);
        }
        assert_eq!(syncs(&bus) - before, 4);
    }

    #[test]
    fn no_alert_reaches_a_reader_before_it_is_synced() {
        let dir = tempfile::tempdir().unwrap();
        let bus = bus_with(dir.path(), 1_000, 1_000, always(1 << 20));
        let mut live = bus.subscribe(SubscriptionFilter::all(), 0).unwrap();
        {
            let _writing = hold_journal(&bus);
            for i in 1..=10 {
                bus.publish(nth(i), 0);
            }
            // Published, numbered, in the ring: not released.
            assert_eq!((bus.last_seq(), bus.durable_seq()), (10, 0));
            assert_eq!(drain(&mut live), (vec![], None));
            let mut replay = bus.subscribe(SubscriptionFilter::all(), 1).unwrap();
            assert_eq!(drain(&mut replay), (vec![], None));
        }
        // A reader on another thread checks each alert against the
        // watermark and the journal as it gets it.
        let checker = {
            let bus = bus.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
                runtime.block_on(async {
                    let mut got = Vec::new();
                    while got.len() < 30 {
                        let alert = live.next_alert().await.unwrap().unwrap();
                        assert!(bus.durable_seq() >= alert.seq, "seq {} before its sync", alert.seq);
                        got.push(alert.seq);
                    }
                    got
                })
            })
        };
        for i in 11..=30 {
            bus.publish(nth(i), 0);
        }
        assert_eq!(checker.join().unwrap(), (1..=30).collect::<Vec<_>>());
        let stats = bus.journal_stats().unwrap();
        assert!(
            (1..=21).contains(&stats.journal.fsync.len()),
            "one per group: {}",
            stats.journal.fsync.len()
        );
        assert_eq!(stats.journal.next_seq, 31);
    }

    /// The group-commit guarantee, with a sync held in flight: a batch's
    /// alerts (one sink) are one group and one `fdatasync`; while it runs
    /// nothing is released (live, replay, acknowledgement), batches sealed
    /// meanwhile wait for the next group; every alert a reader gets is at
    /// or below the journal's synced watermark when it gets it.
    #[test]
    fn a_batch_is_one_fdatasync_and_no_reader_gets_an_alert_before_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let bus = bus_with(dir.path(), 1_000, 1_000, always(1 << 20));
        let synced = bus.synced_watch().unwrap().clone();
        let mut live = bus.subscribe(SubscriptionFilter::all(), 0).unwrap();
        let before = syncs(&bus);
        let held = synced.hold_syncs();
        {
            let mut sink = PublishSink::new(&bus, 0);
            for i in 1..=40 {
                sink.emit(nth(i));
            }
            // Numbered, in the ring, not sealed: the writer leaves them.
            assert_eq!(bus.last_seq(), 40);
            assert!(
                !synced.wait_for_held_sync(Duration::from_millis(50)),
                "synced before the batch ended"
            );
        }
        assert!(synced.wait_for_held_sync(WAIT), "the batch is written and synced");
        // Its sync is in flight: written, but nothing is released.
        assert_eq!((synced.get(), bus.durable_seq()), (0, 0));
        assert_eq!(drain(&mut live), (vec![], None));
        let mut replay = bus.subscribe(SubscriptionFilter::all(), 1).unwrap();
        assert_eq!(drain(&mut replay), (vec![], None));
        let mut ack = bus.durable_wait();
        let waker = std::task::Waker::noop();
        assert!(ack
            .poll_durable(40, &mut std::task::Context::from_waker(waker))
            .is_pending());
        let segment = &std::fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
        assert!(std::fs::metadata(segment).unwrap().len() > 40 * record::RECORD_HEAD as u64);
        // Two more batches while the sync is in flight: the next group.
        for batch in [41..=60, 61..=70] {
            let mut sink = PublishSink::new(&bus, 0);
            for i in batch {
                sink.emit(nth(i));
            }
        }
        let checker = {
            let synced = synced.clone();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
                runtime.block_on(async {
                    let mut got = Vec::new();
                    while got.len() < 70 {
                        let alert = live.next_alert().await.unwrap().unwrap();
                        assert!(
                            synced.get() >= alert.seq,
                            "seq {} reached a reader before its sync",
                            alert.seq
                        );
                        got.push(alert.seq);
                    }
                    got
                })
            })
        };
        drop(held);
        assert_eq!(checker.join().unwrap(), (1..=70).collect::<Vec<_>>());
        assert_eq!(synced.get(), 70);
        assert_eq!(
            syncs(&bus) - before,
            2,
            "the batch, then the two sealed during its sync"
        );
        assert_eq!(drain(&mut replay).0, (1..=70).collect::<Vec<_>>());
    }

    #[test]
    fn wait_durable_completes_once_the_writer_has_synced() {
        let dir = tempfile::tempdir().unwrap();
        let bus = bus_with(dir.path(), 1_000, 1_000, always(1 << 20));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let writing = hold_journal(&bus);
        let seq = bus.publish(nth(1), 0);
        runtime.block_on(async {
            let waited = tokio::time::timeout(Duration::from_millis(50), bus.wait_durable(seq)).await;
            assert!(waited.is_err(), "not durable while the writer is held");
        });
        let mut wait = bus.durable_wait();
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(wait.poll_durable(seq, &mut cx).is_pending());
        drop(writing);
        runtime.block_on(async {
            tokio::time::timeout(WAIT, bus.wait_durable(seq))
                .await
                .expect("durable");
            tokio::time::timeout(WAIT, std::future::poll_fn(|cx| wait.poll_durable(seq, cx)))
                .await
                .expect("durable");
        });
        assert!(syncs(&bus) >= 1);
        // Without a journal, at once.
        let memory = super::bus(10, 10);
        let seq = memory.publish(nth(1), 0);
        runtime.block_on(memory.wait_durable(seq));
        assert!(memory.durable_wait().poll_durable(seq, &mut cx).is_ready());
    }

    #[test]
    fn a_full_ring_of_unwritten_alerts_makes_publish_wait_for_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let bus = journaled_bus(dir.path(), 4, 1 << 20);
        let writing = hold_journal(&bus);
        let publisher = {
            let bus = bus.clone();
            std::thread::spawn(move || (1..=10).map(|i| bus.publish(nth(i), 0)).collect::<Vec<_>>())
        };
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(bus.last_seq(), 4, "nothing left the ring unwritten");
        drop(writing);
        assert_eq!(publisher.join().unwrap(), (1..=10).collect::<Vec<_>>());
        settle(&bus);
        let stats = bus.journal_stats().unwrap();
        assert!(stats.publish_waits >= 1);
        assert_eq!((stats.journal.appends, stats.health), (10, JournalHealth::Healthy));
    }

    #[test]
    fn close_delivers_every_alert_published_before_it_and_syncs() {
        let dir = tempfile::tempdir().unwrap();
        let bus = journaled_bus(dir.path(), 1_000, 1 << 20);
        let mut live = bus.subscribe(SubscriptionFilter::all(), 0).unwrap();
        let before = syncs(&bus);
        for i in 1..=20 {
            bus.publish(nth(i), 0);
        }
        bus.close();
        assert_eq!(
            drain(&mut live),
            ((1..=20).collect::<Vec<_>>(), Some(SubscriptionEnd::Shutdown))
        );
        assert_eq!(bus.journal_stats().unwrap().journal.next_seq, 21);
        assert_eq!(syncs(&bus) - before, 1, "fsync = never still syncs at close");
        // Published after the close: journaled, delivered to nobody.
        assert_eq!(bus.publish(nth(21), 0), 21);
        settle(&bus);
        assert_eq!(bus.journal_tail(20).unwrap(), vec![(21, nth(21))]);
    }

    #[test]
    fn a_catch_up_reader_behind_the_ring_reads_the_journal_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let bus = bus_with(dir.path(), 2, 8, journal_config(4096));
        let mut sink = bus.reader(SubscriptionFilter::all(), 0, WhenBehind::CatchUp).unwrap();
        let mut subscriber = bus.subscribe(SubscriptionFilter::all(), 0).unwrap();
        for i in 1..=200 {
            bus.publish(nth(i), 0);
        }
        settle(&bus);
        let (seqs, end) = drain(&mut subscriber);
        assert_eq!(
            (seqs, end),
            (
                vec![1, 2],
                Some(SubscriptionEnd::Lagged {
                    resume_seq: 3,
                    queued: 2
                })
            )
        );
        let (seqs, end) = drain(&mut sink);
        assert_eq!((seqs, end), ((1..=200).collect::<Vec<_>>(), None));
        let stats = bus.stats();
        assert_eq!(stats.lagged, 1);
        assert!(stats.caught_up >= 1);
        // And back in the live stream.
        bus.publish(nth(201), 0);
        settle(&bus);
        assert_eq!(drain(&mut sink), (vec![201], None));
    }

    const WAIT: Duration = Duration::from_secs(10);
}

#[test]
fn a_catch_up_reader_falls_behind_and_catches_up_from_the_ring() {
    let memory = bus(3, 1_000);
    let mut sink = memory
        .reader(SubscriptionFilter::all(), 0, WhenBehind::CatchUp)
        .unwrap();
    let mut seen = Vec::new();
    for round in 0..5 {
        for _ in 0..50 {
            memory.publish(alert("r", "X"), 0);
        }
        let (seqs, end) = drain(&mut sink);
        assert_eq!(end, None, "round {round}");
        seen.extend(seqs);
    }
    assert_eq!(seen, (1..=250).collect::<Vec<_>>());
    assert_eq!(memory.stats().lagged, 0);
    assert!(memory.stats().caught_up >= 5);
    // Past the ring without a journal, it says so rather than skip.
    let small = bus(2, 4);
    let mut slow = small.reader(SubscriptionFilter::all(), 0, WhenBehind::CatchUp).unwrap();
    for _ in 0..10 {
        small.publish(alert("r", "X"), 0);
    }
    assert_eq!(
        drain(&mut slow),
        (
            vec![1, 2],
            Some(SubscriptionEnd::ReplayOverrun {
                resume_seq: 3,
                oldest: 7
            })
        )
    );
}

#[test]
fn alerts_another_instance_published_are_dropped_once_and_forgotten_with_their_share() {
    let bus = bus(16, 16);
    let a = alert("dd", "A");
    let b = alert("dd", "B");
    bus.expect_handed_over(3, [replayed::AlertIdentity::of(&a)]);
    bus.expect_handed_over(4, [replayed::AlertIdentity::of(&b)]);
    assert_eq!(bus.publish(a.clone(), 0), 0, "published before the hand-over");
    assert_eq!(bus.publish(a.clone(), 0), 1, "raised a second time here: new");
    bus.forget_handed_over(4);
    assert_eq!(bus.publish(b, 0), 2, "its share moved on: nothing expected");
    assert_eq!(bus.handed_over_counts(), (1, 0));
}
