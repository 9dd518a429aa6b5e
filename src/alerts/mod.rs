//! The alert log: numbers every alert, keeps the recent ones, has them
//! journaled by a writer of its own, and hands them to readers that resume
//! by sequence number. Knows nothing of gRPC.
//!
//! - Sequencing: [`AlertBus::publish`] gives each alert the next global,
//!   gap-free sequence number (from 1) and its emit time, keeps it in the
//!   ring of recent alerts and counts it, under one short lock that does
//!   memory work only. The engine emits an instrument's alerts while it
//!   holds that instrument's lock, and [`PublishSink`] publishes them right
//!   there, so the order of one instrument's alerts is the engine's order
//!   whichever stream or timer raised them.
//! - Journal ([`writer`], optional): a thread of its own follows the log
//!   and appends every alert to the on-disk journal in sequence order, as
//!   many as are waiting in one go, then syncs by the policy: with
//!   `fsync = "always"` one `fdatasync` for the whole group (group commit).
//!   A group is what is sealed: the alerts one [`PublishSink`] publishes
//!   (an ingest batch, a timer run, a reload) are sealed together when it
//!   is dropped, so a batch's alerts are never split over two syncs, and
//!   every batch sealed while a sync is in flight joins the next group.
//!   [`AlertBus::publish`] alone seals its alert at once.
//!   Numbering goes on from the journal's last record after a restart
//!   ([`encoding`]: the bytes of a journaled alert; [`journaling`]: health,
//!   failures, retention).
//! - Release: with a journal, an alert reaches readers only once the writer
//!   has written it (synced it, with `always`): a reader never sees an
//!   alert the OS has not been handed, nor, with `always`, one that is not
//!   on stable storage. The release watermark is [`AlertBus::durable_seq`];
//!   [`AlertBus::wait_durable`] and [`DurableWait`] wait for it (an ingest
//!   stream acknowledges a batch only once its alerts are released). While
//!   the journal fails, or after it stopped, alerts are released from
//!   memory as soon as the writer has tried (a halt that is not delivered
//!   is worse than a halt that is not journaled). Without a journal,
//!   release is immediate.
//! - Readers ([`reader`]): a reader starts at a sequence number, reads the
//!   journal while it is older than the ring, then the ring, then joins the
//!   live stream without a gap or a duplicate. Each released alert is
//!   wrapped once in an `Arc<PublishedAlert>` and the same `Arc` goes to
//!   every matching reader's bounded queue (the transport caches its
//!   encoding inside, see [`PublishedAlert::encoded`]). Releasing never
//!   blocks on a reader; what happens to one whose queue is full is its
//!   [`WhenBehind`]: a [`Subscription`] (gRPC Subscribe) is disconnected
//!   and told where to resume ([`SubscriptionEnd::Lagged`]); a sink goes
//!   back to the ring and the journal from its position and catches up.
//! - Backpressure: the ring never drops an alert that is not released yet.
//!   When it is full of alerts the writer has not written (a storm faster
//!   than the disk), `publish` waits for the writer: the engine slows down
//!   instead of memory growing without bound or an alert being lost.
//! - Restart: [`replayed`] recognises alerts raised again by ticks resent
//!   after a restart, which were published before it.
//! - [`json`]: the JSON (and CSV) form of an alert, for clients and feeds.
//!
//! Lock order: an instrument's lock (in the engine) may be held while the
//! bus lock is taken; the bus never calls into the engine. The journal's
//! lock (held by the writer while it writes and syncs, and by retention)
//! may be held while the bus lock is taken, never the other way round; the
//! writer thread never holds the bus lock while it does I/O, and takes no
//! engine lock at all.

pub mod encoding;
pub mod filter;
pub mod journaling;
pub mod json;
pub mod reader;
pub mod replayed;
pub mod subscription;
pub mod writer;

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, MutexGuard};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tokio_stream::Stream;

use crate::clock::Clock;
use crate::journal::Journal;
use crate::metrics::{Latency, TICK_TO_ALERT_MAX_NS};
use crate::model::{Alert, AlertSink, Severity};

pub use filter::{FilterError, FilterSpec, SubscriptionFilter};
pub use journaling::{BusJournalStats, JournalHealth, JournalReadError};
pub use reader::{AlertReader, SubscriptionEnd, WhenBehind};
pub use subscription::{SubscribeError, Subscription};

/// Sizes of the bus's queues.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusConfig {
    /// Alerts one reader may have queued before its [`WhenBehind`] applies.
    pub subscriber_queue: usize,
    /// Recent alerts kept for readers that start from a sequence number;
    /// also the most alerts the journal writer may fall behind.
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
/// times. Shared by every reader that receives it.
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
    /// Open readers (subscriptions and sinks).
    pub subscribers: usize,
    /// Readers disconnected because their queue was full
    /// ([`WhenBehind::Disconnect`]).
    pub lagged: u64,
    /// Times a reader whose queue was full went back to the ring and the
    /// journal to catch up ([`WhenBehind::CatchUp`]).
    pub caught_up: u64,
    /// Alerts by rule id and severity.
    pub by_rule: Vec<(Arc<str>, Severity, u64)>,
    /// Receive of the triggering tick to publish, ns.
    pub tick_to_alert: Latency,
}

/// Why the bus let go of a live reader; read by the reader once its queue
/// is drained.
#[derive(Clone, Debug)]
enum LetGo {
    /// The reader's stream ends with this.
    End(SubscriptionEnd),
    /// Its queue was full: it reads on from `resume_seq` in the ring or
    /// the journal ([`WhenBehind::CatchUp`]).
    Behind { resume_seq: u64 },
}

/// One live reader, as the bus sees it.
struct Slot {
    id: u64,
    filter: Arc<SubscriptionFilter>,
    /// Alerts before this one are not for it (it replayed them, or started
    /// live after them).
    from_seq: u64,
    when_behind: WhenBehind,
    tx: mpsc::Sender<Arc<PublishedAlert>>,
    end: Arc<OnceLock<LetGo>>,
}

/// Everything under the bus lock.
struct Inner {
    next_seq: u64,
    /// Alerts up to this one are sealed: complete groups the journal writer
    /// may take (see [`PublishSink`]).
    sealed: u64,
    /// Every alert up to this one has been handed to the live readers (0:
    /// none yet). With a journal it follows the writer; without, it is the
    /// last published.
    released: u64,
    /// Recent alerts: `ring[i].seq == oldest + i`. Holds every alert not
    /// released yet.
    ring: VecDeque<Arc<PublishedAlert>>,
    live: Vec<Slot>,
    next_id: u64,
    closed: bool,
    by_rule: HashMap<(Arc<str>, Severity), u64>,
    lagged: u64,
    caught_up: u64,
    tick_to_alert: Latency,
    journal: Option<journaling::JournalSide>,
    /// After a restart: alerts published before it that resent ticks will
    /// raise again, to be recognised and dropped.
    replayed: Option<replayed::ReplayedAlerts>,
    /// Alerts recognised as raised again and dropped.
    replayed_dropped: u64,
    /// Alerts another instance published for instruments handed over to
    /// this one ([`AlertBus::expect_handed_over`]): identity to (how many
    /// times, the share it came with).
    handed_over: HashMap<replayed::AlertIdentity, (u32, u64)>,
    handed_over_dropped: u64,
}

impl Inner {
    fn oldest_seq(&self) -> u64 {
        self.ring.front().map_or(self.next_seq, |a| a.seq)
    }

    /// Whether `publish` releases its alert itself: without a journal, or
    /// once the journal takes no more alerts.
    fn releases_inline(&self) -> bool {
        self.journal.as_ref().is_none_or(journaling::JournalSide::takes_nothing)
    }
}

/// What the bus shares with its journal writer.
struct Shared {
    config: BusConfig,
    inner: Mutex<Inner>,
    /// The writer waits on it for alerts to write (and to be closed).
    work: Condvar,
    /// Notified whenever alerts are released: `publish` waiting for room
    /// in the ring, and blocking waiters, wait on it.
    released_cv: Condvar,
    /// The journal, written by the writer thread. Lock order: this before
    /// `inner`, never the other way round.
    journal: Option<Mutex<Journal>>,
    /// `Inner::released`, readable without the lock.
    released: AtomicU64,
    /// `Inner::released` for async waiters (with a journal only).
    released_tx: watch::Sender<u64>,
    /// `Inner::sealed`, readable without the lock.
    sealed: AtomicU64,
    /// The journal's synced watermark (with a journal).
    synced: Option<crate::journal::SyncedSeq>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock()
    }

    /// Seals the alerts published up to `through` (see [`PublishSink`]):
    /// the writer may take them. Wakes it when that is news.
    fn seal(&self, through: u64) {
        if self.journal.is_none() || self.sealed.load(Ordering::Acquire) >= through {
            return;
        }
        let mut inner = self.lock();
        if seal_in(self, &mut inner, through) {
            drop(inner);
            self.work.notify_one();
        }
    }

    /// Hands the alerts after `inner.released` up to `through` to the live
    /// readers, each matching one getting the same `Arc`. Never blocks: a
    /// reader whose queue is full is let go by its [`WhenBehind`].
    fn release(&self, inner: &mut Inner, through: u64) {
        if through <= inner.released {
            return;
        }
        let first = inner.released + 1;
        inner.released = through;
        self.released.store(through, Ordering::Release);
        if inner.live.is_empty() {
            return;
        }
        let oldest = inner.oldest_seq();
        // Every alert not released is in the ring.
        let start = usize::try_from(first.saturating_sub(oldest)).unwrap_or(usize::MAX);
        let stop = usize::try_from(through + 1 - oldest)
            .unwrap_or(usize::MAX)
            .min(inner.ring.len());
        let queue = self.config.subscriber_queue;
        let (mut lagged, mut behind) = (0u64, 0u64);
        let Inner { ring, live, .. } = inner;
        for published in ring.range(start..stop) {
            let seq = published.seq;
            live.retain(|slot| {
                if seq < slot.from_seq || !slot.filter.matches(&published.alert) {
                    return !slot.tx.is_closed();
                }
                match slot.tx.try_send(published.clone()) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_)) => {
                        let why = match slot.when_behind {
                            WhenBehind::Disconnect => {
                                lagged += 1;
                                LetGo::End(SubscriptionEnd::Lagged {
                                    resume_seq: seq,
                                    queued: queue,
                                })
                            }
                            WhenBehind::CatchUp => {
                                behind += 1;
                                LetGo::Behind { resume_seq: seq }
                            }
                        };
                        let _ = slot.end.set(why);
                        false
                    }
                    // The reader went away.
                    Err(TrySendError::Closed(_)) => false,
                }
            });
            if live.is_empty() {
                break;
            }
        }
        inner.lagged += lagged;
        inner.caught_up += behind;
        if lagged > 0 {
            tracing::warn!(
                lagged,
                queue,
                "Disconnected subscribers that fell behind; each was told the sequence number to resume from."
            );
        }
        if behind > 0 {
            tracing::debug!(
                readers = behind,
                queue,
                "Readers that fell behind read on from the ring and the journal."
            );
        }
    }

    /// Tells async waiters how far alerts are released (with a journal;
    /// without one nobody waits).
    fn announce(&self) {
        let through = self.released.load(Ordering::Acquire);
        self.released_tx.send_if_modified(|seen| {
            let newer = through > *seen;
            if newer {
                *seen = through;
            }
            newer
        });
    }
}

/// Seals up to `through` (at most the last published) with the lock held;
/// returns whether the seal moved (the caller wakes the writer).
fn seal_in(shared: &Shared, inner: &mut Inner, through: u64) -> bool {
    let through = through.min(inner.next_seq - 1);
    if through <= inner.sealed {
        return false;
    }
    inner.sealed = through;
    shared.sealed.store(through, Ordering::Release);
    true
}

/// Sequences alerts, has them journaled and hands them to readers. Share
/// it as `Arc<AlertBus>`.
pub struct AlertBus {
    config: BusConfig,
    clock: Arc<dyn Clock>,
    shared: Arc<Shared>,
    /// Open readers, replaying or live.
    subscribers: AtomicUsize,
    /// Highest sequence number published (0: none yet).
    last_seq: AtomicU64,
    /// The journal writer, joined when the bus is dropped.
    writer: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for AlertBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertBus")
            .field("config", &self.config)
            .field("last_seq", &self.last_seq())
            .field("durable_seq", &self.durable_seq())
            .field("subscribers", &self.subscriber_count())
            .finish_non_exhaustive()
    }
}

impl AlertBus {
    /// A bus whose emit times come from `clock`, without a journal. Sizes
    /// of zero are taken as one.
    pub fn new(config: BusConfig, clock: Arc<dyn Clock>) -> Self {
        Self::build(config, clock, None)
    }

    /// A bus numbering from the journal's next record, if there is one
    /// (its writer is started by the caller).
    fn build(config: BusConfig, clock: Arc<dyn Clock>, journal: Option<Journal>) -> Self {
        let config = BusConfig {
            subscriber_queue: config.subscriber_queue.max(1),
            ring_capacity: config.ring_capacity.max(1),
        };
        let next_seq = journal.as_ref().map_or(1, Journal::next_seq);
        let side = journal.as_ref().map(|j| journaling::JournalSide::new(j.extent()));
        let synced = journal.as_ref().map(Journal::synced_watch);
        let shared = Shared {
            config,
            inner: Mutex::new(Inner {
                next_seq,
                sealed: next_seq - 1,
                released: next_seq - 1,
                ring: VecDeque::with_capacity(config.ring_capacity.min(4096)),
                live: Vec::new(),
                next_id: 0,
                closed: false,
                by_rule: HashMap::new(),
                lagged: 0,
                caught_up: 0,
                tick_to_alert: Latency::new(TICK_TO_ALERT_MAX_NS, 3),
                journal: side,
                replayed: None,
                replayed_dropped: 0,
                handed_over: HashMap::new(),
                handed_over_dropped: 0,
            }),
            work: Condvar::new(),
            released_cv: Condvar::new(),
            journal: journal.map(Mutex::new),
            released: AtomicU64::new(next_seq - 1),
            released_tx: watch::Sender::new(next_seq - 1),
            sealed: AtomicU64::new(next_seq - 1),
            synced,
        };
        AlertBus {
            config,
            clock,
            shared: Arc::new(shared),
            subscribers: AtomicUsize::new(0),
            last_seq: AtomicU64::new(next_seq - 1),
            writer: None,
        }
    }

    pub fn config(&self) -> BusConfig {
        self.config
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.shared.lock()
    }

    /// Numbers `alert`, keeps it in the ring, and hands it to the journal
    /// writer (with a journal) or to every matching live reader (without);
    /// returns its sequence number, or 0 for an alert recognised as
    /// published before a restart ([`AlertBus::recognise_replayed`]).
    ///
    /// Memory work only, under the bus lock: never any I/O, never blocks on
    /// a reader. It waits only when the ring is full of alerts the journal
    /// writer has not written yet, until the writer has written the oldest.
    ///
    /// The alert is sealed at once: a group of its own unless others are
    /// waiting. Alerts raised together go through a [`PublishSink`]
    /// instead, which seals them together.
    pub fn publish(&self, alert: Alert, received_ns: i64) -> u64 {
        self.publish_as(alert, received_ns, true)
    }

    /// [`AlertBus::publish`]; `seal`: whether the alert is sealed at once
    /// (else its [`PublishSink`] seals it).
    fn publish_as(&self, alert: Alert, received_ns: i64, seal: bool) -> u64 {
        let shared = &*self.shared;
        let mut inner = shared.lock();
        if let Some(replayed) = &mut inner.replayed {
            if replayed.take(&alert) {
                // Published before the restart, with its sequence number;
                // readers resuming get it from the journal.
                if replayed.remaining() == 0 {
                    inner.replayed = None;
                    tracing::info!("Every alert journaled after the checkpoint was raised again and recognised.");
                }
                inner.replayed_dropped += 1;
                return 0;
            }
        }
        if !inner.handed_over.is_empty() && take_handed_over(&mut inner.handed_over, &alert) {
            // Published by the instance that owned the instrument before.
            inner.handed_over_dropped += 1;
            return 0;
        }
        let capacity = self.config.ring_capacity;
        let mut waited = false;
        while inner.ring.len() >= capacity && inner.ring.front().is_some_and(|a| a.seq > inner.released) {
            // The writer is a whole ring behind: an alert may leave the
            // ring only once it is released. What is published is sealed,
            // or a sink filling the ring by itself would wait for ever.
            let through = inner.next_seq - 1;
            if seal_in(shared, &mut inner, through) {
                shared.work.notify_one();
            }
            waited = true;
            shared.released_cv.wait(&mut inner);
        }
        if waited {
            if let Some(journal) = &mut inner.journal {
                journal.publish_waits += 1;
            }
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        // Read under the lock so emit times never go backwards along seq.
        let emitted_ns = self.clock.now_ns();
        let published = Arc::new(PublishedAlert::new(seq, alert, received_ns, emitted_ns));
        inner
            .tick_to_alert
            .record(u64::try_from(emitted_ns.saturating_sub(received_ns)).unwrap_or(0));
        let key = (published.alert.rule_id.clone(), published.alert.severity);
        *inner.by_rule.entry(key).or_insert(0) += 1;
        if inner.ring.len() >= capacity {
            inner.ring.pop_front();
        }
        inner.ring.push_back(published);
        self.last_seq.store(seq, Ordering::Release);
        if inner.releases_inline() {
            shared.release(&mut inner, seq);
            let journaled = inner.journal.is_some();
            drop(inner);
            if journaled {
                shared.announce();
            }
        } else if seal {
            seal_in(shared, &mut inner, seq);
            drop(inner);
            shared.work.notify_one();
        }
        seq
    }

    /// Seals the alerts published up to `through`: the journal writer may
    /// take them as a group ([`PublishSink`] does this when dropped).
    pub fn seal(&self, through: u64) {
        self.shared.seal(through);
    }

    /// The journal's synced watermark: every alert up to it is on stable
    /// storage (0: none synced since the journal was opened); `None`
    /// without a journal. Lock-free: never waits for the writer.
    pub fn synced_seq(&self) -> Option<u64> {
        self.shared.synced.as_ref().map(crate::journal::SyncedSeq::get)
    }

    /// Tests: the journal's synced watermark, whose syncs a test may hold.
    #[cfg(test)]
    pub(crate) fn synced_watch(&self) -> Option<&crate::journal::SyncedSeq> {
        self.shared.synced.as_ref()
    }

    /// Opens a subscription: live alerts matching `filter` from now on, or,
    /// with `from_seq` above 0, every matching alert from that sequence
    /// number on (replayed from the journal when older than the ring, then
    /// from the ring, then live). A subscriber that falls a whole queue
    /// behind is disconnected ([`WhenBehind::Disconnect`]).
    ///
    /// # Errors
    /// The bus is closed, or `from_seq` is older than both the journal and
    /// the ring, or beyond the next alert.
    pub fn subscribe(
        self: &Arc<Self>,
        filter: SubscriptionFilter,
        from_seq: u64,
    ) -> Result<Subscription, SubscribeError> {
        self.reader(filter, from_seq, WhenBehind::Disconnect)
            .map(Subscription::new)
    }

    /// Opens a reader of the alerts matching `filter`, from now on
    /// (`from_seq` 0) or from `from_seq`, that does `when_behind` when its
    /// queue is full (see [`reader`]).
    ///
    /// # Errors
    /// As [`AlertBus::subscribe`].
    pub fn reader(
        self: &Arc<Self>,
        filter: SubscriptionFilter,
        from_seq: u64,
        when_behind: WhenBehind,
    ) -> Result<AlertReader, SubscribeError> {
        let filter = Arc::new(filter);
        let mut inner = self.lock();
        if inner.closed {
            return Err(SubscribeError::Closed);
        }
        if from_seq == 0 {
            let from = inner.next_seq;
            let live = self.register(&mut inner, &filter, from, when_behind);
            drop(inner);
            return Ok(AlertReader::live(self.clone(), filter, when_behind, live));
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
            return Ok(AlertReader::from_journal(self.clone(), filter, when_behind, reader));
        }
        drop(inner);
        Ok(AlertReader::replaying(self.clone(), filter, when_behind, from_seq))
    }

    /// Adds a live slot for the alerts from `from_seq`; the caller holds
    /// the lock.
    fn register(
        &self,
        inner: &mut Inner,
        filter: &Arc<SubscriptionFilter>,
        from_seq: u64,
        when_behind: WhenBehind,
    ) -> LiveHandle {
        let (tx, rx) = mpsc::channel(self.config.subscriber_queue);
        let end = Arc::new(OnceLock::new());
        let id = inner.next_id;
        inner.next_id += 1;
        inner.live.push(Slot {
            id,
            filter: filter.clone(),
            from_seq,
            when_behind,
            tx,
            end: end.clone(),
        });
        LiveHandle { id, rx, end }
    }

    /// One step of a replay: appends to `out` the matching alerts of up to
    /// [`REPLAY_CHUNK`] released sequence numbers from `next`, or, when
    /// `next` is past the last released alert, registers the reader as live
    /// from `next` in the same critical section, so nothing is missed or
    /// doubled. When the ring has moved past `next`, the replay goes back
    /// to the journal.
    fn catch_up(
        &self,
        next: u64,
        filter: &Arc<SubscriptionFilter>,
        when_behind: WhenBehind,
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
        if next > inner.released {
            return CatchUp::Live(self.register(&mut inner, filter, next, when_behind));
        }
        let start = usize::try_from(next - oldest).unwrap_or(usize::MAX);
        let released = usize::try_from(inner.released + 1 - oldest).unwrap_or(usize::MAX);
        let stop = start.saturating_add(REPLAY_CHUNK).min(released).min(inner.ring.len());
        out.extend(
            inner
                .ring
                .range(start..stop)
                .filter(|a| filter.matches(&a.alert))
                .cloned(),
        );
        CatchUp::More(oldest + stop as u64)
    }

    /// Removes a live slot (its reader was dropped).
    fn unregister(&self, id: u64) {
        self.lock().live.retain(|slot| slot.id != id);
    }

    /// Closes the bus: no new readers, and every open one ends with
    /// [`SubscriptionEnd::Shutdown`] once it has delivered what it has
    /// queued. With a journal, first waits for the writer to write (and
    /// release) every alert published so far and to sync the journal, so
    /// readers get every alert published before the close. Alerts published
    /// afterwards are numbered, journaled and kept in the ring but reach no
    /// reader.
    pub fn close(&self) {
        let shared = &*self.shared;
        let mut inner = shared.lock();
        inner.closed = true;
        let through = inner.next_seq - 1;
        seal_in(shared, &mut inner, through);
        let ticket = match &mut inner.journal {
            Some(journal) if !journal.writer_gone => Some(journal.request_sync()),
            _ => None,
        };
        if let Some(ticket) = ticket {
            shared.work.notify_one();
            while inner
                .journal
                .as_ref()
                .is_some_and(|j| !j.writer_gone && (j.synced_ticket < ticket || inner.released < through))
            {
                shared.released_cv.wait(&mut inner);
            }
        }
        for slot in inner.live.drain(..) {
            let _ = slot.end.set(LetGo::End(SubscriptionEnd::Shutdown));
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

    /// Alerts another instance already published for instruments handed
    /// over to this one, as share `share` (a Kafka partition): the first
    /// alert raised here with each identity (as many times as listed) is
    /// dropped instead of published. Replaces what share `share` expected
    /// before.
    pub fn expect_handed_over(&self, share: u64, alerts: impl IntoIterator<Item = replayed::AlertIdentity>) {
        let mut inner = self.lock();
        inner.handed_over.retain(|_, (_, s)| *s != share);
        for identity in alerts {
            inner.handed_over.entry(identity).or_insert((0, share)).0 += 1;
        }
    }

    /// Forgets the alerts share `share` still expected (it moved on).
    pub fn forget_handed_over(&self, share: u64) {
        self.lock().handed_over.retain(|_, (_, s)| *s != share);
    }

    /// Alerts dropped as already published by another instance, and those
    /// still expected.
    pub fn handed_over_counts(&self) -> (u64, usize) {
        let inner = self.lock();
        (inner.handed_over_dropped, inner.handed_over.len())
    }

    /// The alert sequence number a checkpoint taken now must record: the
    /// last published, or, while alerts published before a restart are
    /// still expected again, the one before the oldest of them (the
    /// engine's state has not reached it yet).
    ///
    /// The checkpoint must not reach the disk before the alerts its state
    /// raised are journaled: wait with [`AlertBus::wait_durable_blocking`]
    /// for [`AlertBus::last_seq`] read after the snapshot.
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

    /// Every alert up to this sequence number may be acknowledged, and has
    /// been handed to the live readers: the journal holds it by its policy
    /// (written; with `always`, synced), or the journal failed for it and
    /// it was delivered from memory. Without a journal, the last published.
    pub fn durable_seq(&self) -> u64 {
        self.shared.released.load(Ordering::Acquire)
    }

    /// Completes once alert `seq` may be acknowledged ([`AlertBus::durable_seq`]
    /// has reached it); at once without a journal. Cancellation-safe: it
    /// holds no lock and takes nothing.
    pub async fn wait_durable(&self, seq: u64) {
        if self.durable_seq() >= seq || self.shared.journal.is_none() {
            return;
        }
        // Waiting for it: it is complete.
        self.shared.seal(seq);
        let mut released = self.shared.released_tx.subscribe();
        // An error means the bus is gone: nothing more will be released.
        let _ = released.wait_for(|&through| through >= seq).await;
    }

    /// [`AlertBus::wait_durable`] for threads that may block (the blocking
    /// pool, tests): returns once alert `seq` may be acknowledged, or when
    /// nothing more will be released (the writer is gone).
    pub fn wait_durable_blocking(&self, seq: u64) {
        let shared = &*self.shared;
        if self.durable_seq() >= seq || shared.journal.is_none() {
            return;
        }
        let mut inner = shared.lock();
        let seq = seq.min(inner.next_seq - 1);
        if seal_in(shared, &mut inner, seq) {
            shared.work.notify_one();
        }
        while inner.released < seq && !inner.journal.as_ref().is_some_and(|j| j.writer_gone) {
            shared.released_cv.wait(&mut inner);
        }
    }

    /// A reusable wait for [`AlertBus::durable_seq`] to reach a sequence
    /// number, for a stream's own `poll` (see [`DurableWait`]).
    pub fn durable_wait(&self) -> DurableWait {
        DurableWait {
            shared: self.shared.clone(),
            changes: WatchStream::from_changes(self.shared.released_tx.subscribe()),
        }
    }

    /// Open readers.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    pub fn stats(&self) -> BusStats {
        let inner = self.lock();
        BusStats {
            published: inner.next_seq - 1,
            subscribers: self.subscriber_count(),
            lagged: inner.lagged,
            caught_up: inner.caught_up,
            by_rule: inner.by_rule.iter().map(|((r, s), n)| (r.clone(), *s, *n)).collect(),
            tick_to_alert: inner.tick_to_alert.clone(),
        }
    }
}

impl Drop for AlertBus {
    /// Stops the journal writer once it has written every alert, and waits
    /// for it; the journal syncs as it closes.
    fn drop(&mut self) {
        let Some(writer) = self.writer.take() else {
            return;
        };
        {
            let mut inner = self.shared.lock();
            let through = inner.next_seq - 1;
            seal_in(&self.shared, &mut inner, through);
            if let Some(journal) = &mut inner.journal {
                journal.stop = true;
            }
        }
        self.shared.work.notify_one();
        if writer.join().is_err() {
            tracing::error!("The alert journal writer failed; its last alerts may not be journaled.");
        }
    }
}

/// Waits for [`AlertBus::durable_seq`] to reach a sequence number from a
/// hand-written `poll` (an ingest stream holding back an acknowledgement).
/// Made once per stream and reused: waiting allocates nothing. Holds no
/// lock; dropping it mid-wait is harmless.
pub struct DurableWait {
    shared: Arc<Shared>,
    changes: WatchStream<u64>,
}

impl std::fmt::Debug for DurableWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableWait")
            .field("durable_seq", &self.shared.released.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}

impl DurableWait {
    /// Ready once alert `seq` may be acknowledged (at once without a
    /// journal); otherwise registers `cx`'s waker for the next release.
    pub fn poll_durable(&mut self, seq: u64, cx: &mut Context<'_>) -> Poll<()> {
        if self.shared.journal.is_none() {
            return Poll::Ready(());
        }
        // Waiting for it: it is complete (a no-op once its sink sealed it).
        self.shared.seal(seq);
        loop {
            if self.shared.released.load(Ordering::Acquire) >= seq {
                return Poll::Ready(());
            }
            match Pin::new(&mut self.changes).poll_next(cx) {
                Poll::Ready(Some(through)) if through >= seq => return Poll::Ready(()),
                Poll::Ready(Some(_)) => {}
                // The bus is gone: nothing more will be released.
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Sequence numbers copied per lock during a replay: bounds how long a
/// replaying reader holds the bus lock.
pub const REPLAY_CHUNK: usize = 256;

/// A live reader's end of its queue.
struct LiveHandle {
    id: u64,
    rx: mpsc::Receiver<Arc<PublishedAlert>>,
    end: Arc<OnceLock<LetGo>>,
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

/// An [`AlertSink`] that publishes each alert as the engine raises it, and
/// remembers the last sequence number it published (what an
/// acknowledgement of the batch must wait for, see
/// [`AlertBus::wait_durable`]).
///
/// Its alerts are one group for the journal: numbered and in the ring as
/// they are raised, but sealed (handed to the journal writer) only when
/// the sink is dropped, so with `fsync = "always"` a batch's alerts share
/// one `fdatasync` and none is released before it. Keep a sink for one
/// batch, timer run or reload: its alerts reach no reader until it is
/// dropped (or something waits for them, which seals them).
pub struct PublishSink<'a> {
    bus: &'a AlertBus,
    received_ns: i64,
    published: usize,
    last_seq: u64,
}

impl<'a> PublishSink<'a> {
    /// Publishes with `received_ns` as the receive time of every alert.
    pub fn new(bus: &'a AlertBus, received_ns: i64) -> Self {
        PublishSink {
            bus,
            received_ns,
            published: 0,
            last_seq: 0,
        }
    }

    /// Alerts published through this sink.
    pub fn published(&self) -> usize {
        self.published
    }

    /// The highest sequence number published through this sink (0: none;
    /// alerts recognised as published before a restart have none).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }
}

impl AlertSink for PublishSink<'_> {
    fn emit(&mut self, alert: Alert) {
        let seq = self.bus.publish_as(alert, self.received_ns, false);
        self.last_seq = self.last_seq.max(seq);
        self.published += 1;
    }
}

impl Drop for PublishSink<'_> {
    /// Seals the sink's alerts: the journal writer takes them as a group.
    fn drop(&mut self) {
        if self.last_seq > 0 {
            self.bus.seal(self.last_seq);
        }
    }
}

#[cfg(test)]
mod tests;

/// Counts `alert` off the handed-over identities: whether it was there.
fn take_handed_over(expected: &mut HashMap<replayed::AlertIdentity, (u32, u64)>, alert: &Alert) -> bool {
    let identity = replayed::AlertIdentity::of(alert);
    let Some((count, _)) = expected.get_mut(&identity) else {
        return false;
    };
    *count -= 1;
    if *count == 0 {
        expected.remove(&identity);
    }
    true
}
