//! The alert bus: numbers every alert and fans it out to subscribers.
//! Knows nothing of gRPC.
//!
//! - Sequencing: [`AlertBus::publish`] gives each alert the next global,
//!   gap-free sequence number (from 1) and its emit time, under one short
//!   lock. The engine emits an instrument's alerts while it holds that
//!   instrument's lock, and [`PublishSink`] publishes them right there, so
//!   the order of one instrument's alerts is the engine's order whichever
//!   stream or timer raised them.
//! - Fan-out: each alert is wrapped once in an `Arc<PublishedAlert>` and the
//!   same `Arc` goes to every matching subscriber (the transport caches its
//!   encoding inside, see [`PublishedAlert::encoded`]). Each subscriber has
//!   its own bounded queue. Backpressure policy: **disconnect**. Publishing
//!   never blocks; a subscriber whose queue is full is dropped from the bus,
//!   receives what it had queued, then an end
//!   ([`SubscriptionEnd::Lagged`]) naming the sequence number to resume
//!   from.
//! - Replay: a ring of recent alerts lets a subscriber start at a sequence
//!   number and join the live stream without a gap or a duplicate
//!   ([`subscription`]); older alerts come from the journal.
//! - Journal ([`journaling`], optional): each alert is appended to the
//!   on-disk journal under the bus lock, before fan-out; numbering goes on
//!   from the journal's last record after a restart ([`encoding`]: the
//!   bytes of a journaled alert).
//! - Restart: [`replayed`] recognises alerts raised again by ticks
//!   resent after a restart, which were published before it.
//!
//! Lock order: an instrument's lock (in the engine) may be held while the
//! bus lock is taken; the bus never calls into the engine.

pub mod encoding;
pub mod filter;
pub mod journaling;
pub mod replayed;
pub mod subscription;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::clock::Clock;
use crate::metrics::{Latency, TICK_TO_ALERT_MAX_NS};
use crate::model::{Alert, AlertSink, Severity};

pub use filter::{FilterError, FilterSpec, SubscriptionFilter};
pub use journaling::{BusJournalStats, JournalHealth, JournalReadError};
pub use subscription::{SubscribeError, Subscription, SubscriptionEnd};

/// Sizes of the bus's queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusConfig {
    /// Alerts one subscriber may have queued before it is disconnected.
    pub subscriber_queue: usize,
    /// Recent alerts kept for subscribers that start from a sequence number.
    pub ring_capacity: usize,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            subscriber_queue: 4096,
            ring_capacity: 100_000,
        }
    }
}

/// An alert as published: the engine's alert, its sequence number and its
/// times. Shared by every subscriber that receives it.
#[derive(Debug)]
pub struct PublishedAlert {
    /// Global, gap-free, from 1.
    pub seq: u64,
    pub alert: Alert,
    /// When the server received the triggering tick (or ran the timer), ns.
    pub received_ns: i64,
    /// When the alert was published, ns.
    pub emitted_ns: i64,
    /// The transport's encoding of this alert, made once on first send.
    encoded: OnceLock<Bytes>,
}

impl PublishedAlert {
    fn new(seq: u64, alert: Alert, received_ns: i64, emitted_ns: i64) -> Self {
        PublishedAlert {
            seq,
            alert,
            received_ns,
            emitted_ns,
            encoded: OnceLock::new(),
        }
    }

    /// The alert encoded by `encode`, which runs at most once per alert
    /// however many subscribers send it.
    pub fn encoded(&self, encode: impl FnOnce(&PublishedAlert) -> Bytes) -> &Bytes {
        self.encoded.get_or_init(|| encode(self))
    }
}

/// Counts and latencies of the bus, for metrics and status.
#[derive(Clone, Debug)]
pub struct BusStats {
    pub published: u64,
    pub subscribers: usize,
    /// Subscribers disconnected because their queue was full.
    pub lagged: u64,
    /// Alerts by rule id and severity.
    pub by_rule: Vec<(Arc<str>, Severity, u64)>,
    /// Receive of the triggering tick to publish, ns.
    pub tick_to_alert: Latency,
}

/// One live subscriber, as the bus sees it.
struct Slot {
    id: u64,
    filter: Arc<SubscriptionFilter>,
    tx: mpsc::Sender<Arc<PublishedAlert>>,
    /// Why the bus let go of this subscriber; read by its [`Subscription`]
    /// once the queue is drained.
    end: Arc<OnceLock<SubscriptionEnd>>,
}

/// Everything under the bus lock.
struct Inner {
    next_seq: u64,
    /// Recent alerts: `ring[i].seq == oldest + i`.
    ring: VecDeque<Arc<PublishedAlert>>,
    live: Vec<Slot>,
    next_id: u64,
    closed: bool,
    by_rule: HashMap<(Arc<str>, Severity), u64>,
    lagged: u64,
    tick_to_alert: Latency,
    journal: Option<journaling::BusJournal>,
    /// After a restart: alerts published before it that resent ticks will
    /// raise again, to be recognised and dropped.
    replayed: Option<replayed::ReplayedAlerts>,
    /// Alerts recognised as raised again and dropped.
    replayed_dropped: u64,
}

impl Inner {
    fn oldest_seq(&self) -> u64 {
        self.ring.front().map_or(self.next_seq, |a| a.seq)
    }
}

/// Sequences alerts and fans them out. Share it as `Arc<AlertBus>`.
pub struct AlertBus {
    config: BusConfig,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
    /// Open [`Subscription`]s, replaying or live.
    subscribers: AtomicUsize,
    /// Highest sequence number published (0: none yet).
    last_seq: AtomicU64,
}

impl std::fmt::Debug for AlertBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertBus")
            .field("config", &self.config)
            .field("last_seq", &self.last_seq())
            .field("subscribers", &self.subscriber_count())
            .finish_non_exhaustive()
    }
}

impl AlertBus {
    /// A bus whose emit times come from `clock`. Sizes of zero are taken as
    /// one.
    pub fn new(config: BusConfig, clock: Arc<dyn Clock>) -> Self {
        let config = BusConfig {
            subscriber_queue: config.subscriber_queue.max(1),
            ring_capacity: config.ring_capacity.max(1),
        };
        AlertBus {
            config,
            clock,
            inner: Mutex::new(Inner {
                next_seq: 1,
                ring: VecDeque::with_capacity(config.ring_capacity.min(4096)),
                live: Vec::new(),
                next_id: 0,
                closed: false,
                by_rule: HashMap::new(),
                lagged: 0,
                tick_to_alert: Latency::new(TICK_TO_ALERT_MAX_NS, 3),
                journal: None,
                replayed: None,
                replayed_dropped: 0,
            }),
            subscribers: AtomicUsize::new(0),
            last_seq: AtomicU64::new(0),
        }
    }

    pub fn config(&self) -> BusConfig {
        self.config
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Numbers `alert`, journals it (with a journal), keeps it in the ring
    /// and queues it for every matching subscriber; returns its sequence
    /// number. Never blocks on a subscriber; with the `always` fsync
    /// policy it waits for the journal's `fdatasync`.
    pub fn publish(&self, alert: Alert, received_ns: i64) -> u64 {
        let mut inner = self.lock();
        if let Some(replayed) = &mut inner.replayed {
            if replayed.take(&alert) {
                // Published before the restart, with its sequence number;
                // subscribers resuming get it from the journal.
                if replayed.remaining() == 0 {
                    inner.replayed = None;
                    tracing::info!("Every alert journaled after the checkpoint was raised again and recognised.");
                }
                inner.replayed_dropped += 1;
                return 0;
            }
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        // Read under the lock so emit times never go backwards along seq.
        let emitted_ns = self.clock.now_ns();
        let published = Arc::new(PublishedAlert::new(seq, alert, received_ns, emitted_ns));
        let inner = &mut *inner;
        if let Some(journal) = &mut inner.journal {
            journal.write(&published, &inner.ring);
        }
        inner
            .tick_to_alert
            .record(u64::try_from(emitted_ns.saturating_sub(received_ns)).unwrap_or(0));
        let key = (published.alert.rule_id.clone(), published.alert.severity);
        *inner.by_rule.entry(key).or_insert(0) += 1;
        if inner.ring.len() >= self.config.ring_capacity {
            inner.ring.pop_front();
        }
        inner.ring.push_back(published.clone());

        let mut lagged = 0;
        inner.live.retain(|slot| {
            if !slot.filter.matches(&published.alert) {
                return !slot.tx.is_closed();
            }
            match slot.tx.try_send(published.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    let _ = slot.end.set(SubscriptionEnd::Lagged {
                        resume_seq: seq,
                        queued: self.config.subscriber_queue,
                    });
                    lagged += 1;
                    false
                }
                // The subscriber went away.
                Err(TrySendError::Closed(_)) => false,
            }
        });
        inner.lagged += lagged;
        self.last_seq.store(seq, Ordering::Release);
        drop(published);
        if lagged > 0 {
            tracing::warn!(
                lagged,
                resume_seq = seq,
                queue = self.config.subscriber_queue,
                "Disconnected subscribers that fell behind."
            );
        }
        seq
    }

    /// Opens a subscription: live alerts matching `filter` from now on, or,
    /// with `from_seq` above 0, every matching alert from that sequence
    /// number on (replayed from the journal when older than the ring, then
    /// from the ring, then live).
    ///
    /// # Errors
    /// The bus is closed, or `from_seq` is older than both the journal and
    /// the ring, or beyond the next alert.
    pub fn subscribe(
        self: &Arc<Self>,
        filter: SubscriptionFilter,
        from_seq: u64,
    ) -> Result<Subscription, SubscribeError> {
        let filter = Arc::new(filter);
        let mut inner = self.lock();
        if inner.closed {
            return Err(SubscribeError::Closed);
        }
        if from_seq == 0 {
            let live = self.register(&mut inner, &filter);
            drop(inner);
            return Ok(Subscription::live(self.clone(), filter, live));
        }
        if from_seq > inner.next_seq {
            return Err(SubscribeError::Ahead {
                from_seq,
                next: inner.next_seq,
            });
        }
        if from_seq < inner.oldest_seq() {
            let Some(reader) = inner.journal_reader(from_seq) else {
                let oldest = inner.oldest_available();
                return Err(SubscribeError::TooOld { from_seq, oldest });
            };
            drop(inner);
            return Ok(Subscription::from_journal(self.clone(), filter, reader));
        }
        drop(inner);
        Ok(Subscription::replaying(self.clone(), filter, from_seq))
    }

    /// Adds a live slot; the caller holds the lock.
    fn register(&self, inner: &mut Inner, filter: &Arc<SubscriptionFilter>) -> LiveHandle {
        let (tx, rx) = mpsc::channel(self.config.subscriber_queue);
        let end = Arc::new(OnceLock::new());
        let id = inner.next_id;
        inner.next_id += 1;
        inner.live.push(Slot {
            id,
            filter: filter.clone(),
            tx,
            end: end.clone(),
        });
        LiveHandle { id, rx, end }
    }

    /// One step of a replay: appends to `out` the matching alerts of up to
    /// [`REPLAY_CHUNK`] sequence numbers from `next`, or, when `next` has
    /// reached the newest alert, registers the subscriber as live in the
    /// same critical section, so nothing is missed or doubled. When the
    /// ring has moved past `next`, the replay goes back to the journal.
    fn catch_up(
        &self,
        next: u64,
        filter: &Arc<SubscriptionFilter>,
        out: &mut VecDeque<Arc<PublishedAlert>>,
    ) -> CatchUp {
        let mut inner = self.lock();
        if inner.closed {
            return CatchUp::Closed;
        }
        let oldest = inner.oldest_seq();
        if next < oldest {
            return match inner.journal_reader(next) {
                Some(reader) => CatchUp::Journal(reader),
                None => CatchUp::Overrun {
                    oldest: inner.oldest_available(),
                },
            };
        }
        let start = usize::try_from(next - oldest).unwrap_or(usize::MAX);
        if start >= inner.ring.len() {
            return CatchUp::Live(self.register(&mut inner, filter));
        }
        let stop = start.saturating_add(REPLAY_CHUNK).min(inner.ring.len());
        out.extend(
            inner
                .ring
                .range(start..stop)
                .filter(|a| filter.matches(&a.alert))
                .cloned(),
        );
        CatchUp::More(oldest + stop as u64)
    }

    /// Removes a live slot (its subscription was dropped).
    fn unregister(&self, id: u64) {
        self.lock().live.retain(|slot| slot.id != id);
    }

    /// Closes the bus: no new subscriptions, and every open one ends with
    /// [`SubscriptionEnd::Shutdown`] once it has delivered what it has
    /// queued; the journal is synced. Alerts published afterwards are
    /// numbered, journaled and kept in the ring but reach no subscriber.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        if let Some(journal) = &mut inner.journal {
            journal.sync();
        }
        for slot in inner.live.drain(..) {
            let _ = slot.end.set(SubscriptionEnd::Shutdown);
        }
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// After a restart: recognise these alerts, published before it, when
    /// the ticks resent since the checkpoint raise them again, and drop
    /// them instead of publishing them twice (see [`replayed`]).
    pub fn recognise_replayed(&self, replayed: replayed::ReplayedAlerts) {
        let mut inner = self.lock();
        inner.replayed = (replayed.remaining() > 0).then_some(replayed);
    }

    /// The alert sequence number a checkpoint taken now must record: the
    /// last published, or, while alerts published before a restart are
    /// still expected again, the one before the oldest of them (the
    /// engine's state has not reached it yet).
    pub fn checkpoint_seq(&self) -> u64 {
        let inner = self.lock();
        let last = inner.next_seq - 1;
        inner
            .replayed
            .as_ref()
            .and_then(replayed::ReplayedAlerts::floor)
            .map_or(last, |floor| floor.min(last))
    }

    /// Alerts recognised as raised again after a restart and dropped, and
    /// those still expected.
    pub fn replayed_counts(&self) -> (u64, usize) {
        let inner = self.lock();
        (
            inner.replayed_dropped,
            inner.replayed.as_ref().map_or(0, replayed::ReplayedAlerts::remaining),
        )
    }

    /// Highest sequence number published so far (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.last_seq.load(Ordering::Acquire)
    }

    /// Open subscriptions.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> BusStats {
        let inner = self.lock();
        BusStats {
            published: inner.next_seq - 1,
            subscribers: self.subscriber_count(),
            lagged: inner.lagged,
            by_rule: inner.by_rule.iter().map(|((r, s), n)| (r.clone(), *s, *n)).collect(),
            tick_to_alert: inner.tick_to_alert.clone(),
        }
    }
}

/// Sequence numbers copied per lock during a replay: bounds how long a
/// replaying subscriber holds the bus lock.
pub const REPLAY_CHUNK: usize = 256;

/// A live subscriber's end of its queue.
struct LiveHandle {
    id: u64,
    rx: mpsc::Receiver<Arc<PublishedAlert>>,
    end: Arc<OnceLock<SubscriptionEnd>>,
}

/// The outcome of one replay step.
enum CatchUp {
    /// Replayed up to (not including) this sequence number.
    More(u64),
    /// Caught up: live from here.
    Live(LiveHandle),
    /// The ring moved past the replay's position; the journal has it.
    Journal(crate::journal::JournalReader),
    /// The ring moved past the replay's position, and the journal does not
    /// have it either.
    Overrun {
        oldest: u64,
    },
    Closed,
}

/// An [`AlertSink`] that publishes each alert as the engine raises it.
pub struct PublishSink<'a> {
    bus: &'a AlertBus,
    received_ns: i64,
    published: usize,
}

impl<'a> PublishSink<'a> {
    /// Publishes with `received_ns` as the receive time of every alert.
    pub fn new(bus: &'a AlertBus, received_ns: i64) -> Self {
        PublishSink {
            bus,
            received_ns,
            published: 0,
        }
    }

    /// Alerts published through this sink.
    pub fn published(&self) -> usize {
        self.published
    }
}

impl AlertSink for PublishSink<'_> {
    fn emit(&mut self, alert: Alert) {
        self.bus.publish(alert, self.received_ns);
        self.published += 1;
    }
}

#[cfg(test)]
mod tests;
