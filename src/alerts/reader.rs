//! Readers of the alert log: one reader's alerts in sequence order, from a
//! sequence number on, then an end saying why it stopped.
//!
//! Every consumer of alerts is a reader: the gRPC Subscribe stream
//! ([`super::Subscription`]), and the coming Kafka sink and console feed.
//! A reader yields `Arc<PublishedAlert>`s; it encodes them for its own
//! format itself (the gRPC stream through [`PublishedAlert::encoded`], a
//! console through [`super::json`]).
//!
//! A reader that starts at a sequence number first replays from the ring
//! in chunks (each under a short lock), and registers as live in the same
//! critical section as its last replay step: the live queue starts exactly
//! where the replay stopped. A start older than the ring is read from the
//! journal first, in chunks on a blocking thread, up to where the journal
//! ended when the chunk began; then the ring takes over (and hands back to
//! the journal if it has moved on meanwhile). Only released alerts are read
//! from the ring ([`super::AlertBus::durable_seq`]), so a replaying reader
//! sees nothing the live ones would not.
//!
//! When a live reader's bounded queue is full, it does what its
//! [`WhenBehind`] says: [`WhenBehind::Disconnect`] ends it with
//! [`SubscriptionEnd::Lagged`] naming where to resume (a client
//! reconnects itself); [`WhenBehind::CatchUp`] leaves the live stream,
//! delivers what it had queued, reads on from the ring and the journal from
//! the first alert it missed, and rejoins the live stream: it is never cut
//! off for being slow and loses no alert the ring or the journal still
//! holds (if retention or the ring has moved past its position it ends
//! with [`SubscriptionEnd::ReplayOverrun`], never skipping silently).

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::encoding::decode_published;
use super::journaling::JournalReadError;
use super::{AlertBus, CatchUp, LetGo, LiveHandle, PublishedAlert, SubscriptionFilter};
use crate::journal::{JournalError, JournalReader};

/// Records read from the journal per chunk of a replay.
pub const JOURNAL_CHUNK: usize = 1024;

/// What a reader does when its live queue is full: the lag policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenBehind {
    /// Ends with [`SubscriptionEnd::Lagged`], naming the sequence number
    /// to resume from: the remote client reconnects (gRPC Subscribe).
    Disconnect,
    /// Reads on from the ring and the journal from the first alert it
    /// missed, then rejoins the live stream: never cut off for being slow,
    /// never loses an alert (sinks, the console feed).
    CatchUp,
}

/// Why a reader ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscriptionEnd {
    /// Its queue was full: it was disconnected. Every matching alert before
    /// `resume_seq` was delivered; subscribe again from `resume_seq`.
    Lagged { resume_seq: u64, queued: usize },
    /// A replay fell behind what is kept (the ring moved on, or journal
    /// retention removed a segment): the alerts from `resume_seq` are no
    /// longer kept; the oldest kept is `oldest`.
    ReplayOverrun { resume_seq: u64, oldest: u64 },
    /// The journal could not be read from `resume_seq` on (damaged or
    /// unreadable); every matching alert before it was delivered.
    JournalUnreadable { resume_seq: u64, reason: String },
    /// The alerts from `from_seq` to before `resume_seq` were lost before
    /// they reached the disk (a power loss without `fsync = "always"`);
    /// every matching alert before them was delivered: resume from
    /// `resume_seq`.
    Lost { from_seq: u64, resume_seq: u64 },
    /// The server is shutting down.
    Shutdown,
}

impl fmt::Display for SubscriptionEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubscriptionEnd::Lagged { resume_seq, queued } => write!(
                f,
                "subscriber fell behind: {queued} alerts were queued (the limit); \
                 disconnected, resume from seq {resume_seq}"
            ),
            SubscriptionEnd::ReplayOverrun { resume_seq, oldest } => write!(
                f,
                "replay fell behind: seq {resume_seq} is no longer kept; the oldest available is {oldest}"
            ),
            SubscriptionEnd::JournalUnreadable { resume_seq, reason } => {
                write!(f, "cannot read the alert journal at seq {resume_seq}: {reason}")
            }
            SubscriptionEnd::Lost { from_seq, resume_seq } => write!(
                f,
                "alerts {from_seq} to {} were lost before they reached the journal's disk (a power loss); \
                 resume from seq {resume_seq}",
                resume_seq - 1
            ),
            SubscriptionEnd::Shutdown => f.write_str("server shutting down"),
        }
    }
}

enum Phase {
    /// Replaying from the journal: a chunk from `next` is being read.
    Journal {
        next: u64,
        fetch: Fetch,
    },
    /// Replaying from the ring; `next` is the first sequence number not yet
    /// looked at.
    Replay {
        next: u64,
    },
    Live {
        id: u64,
        rx: mpsc::Receiver<Arc<PublishedAlert>>,
        end: Arc<OnceLock<LetGo>>,
    },
    /// Ends with this once the alerts pending are delivered.
    Ending(SubscriptionEnd),
    Done,
}

/// A stream of matching alerts in sequence order, ending with one
/// `Err(SubscriptionEnd)`. Dropping it lets go of its place on the bus.
pub struct AlertReader {
    bus: Arc<AlertBus>,
    filter: Arc<SubscriptionFilter>,
    when_behind: WhenBehind,
    /// Replayed alerts not yet handed out.
    pending: VecDeque<Arc<PublishedAlert>>,
    phase: Phase,
}

impl fmt::Debug for AlertReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlertReader")
            .field("filter", &self.filter)
            .field("when_behind", &self.when_behind)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl AlertReader {
    fn new(bus: Arc<AlertBus>, filter: Arc<SubscriptionFilter>, when_behind: WhenBehind, phase: Phase) -> Self {
        bus.subscribers.fetch_add(1, Ordering::Relaxed);
        AlertReader {
            bus,
            filter,
            when_behind,
            pending: VecDeque::new(),
            phase,
        }
    }

    pub(super) fn live(
        bus: Arc<AlertBus>,
        filter: Arc<SubscriptionFilter>,
        when_behind: WhenBehind,
        live: LiveHandle,
    ) -> Self {
        let LiveHandle { id, rx, end } = live;
        Self::new(bus, filter, when_behind, Phase::Live { id, rx, end })
    }

    pub(super) fn replaying(
        bus: Arc<AlertBus>,
        filter: Arc<SubscriptionFilter>,
        when_behind: WhenBehind,
        from_seq: u64,
    ) -> Self {
        Self::new(bus, filter, when_behind, Phase::Replay { next: from_seq })
    }

    pub(super) fn from_journal(
        bus: Arc<AlertBus>,
        filter: Arc<SubscriptionFilter>,
        when_behind: WhenBehind,
        reader: JournalReader,
    ) -> Self {
        let next = reader.next_seq();
        let phase = Phase::Journal {
            next,
            fetch: fetch(reader, filter.clone()),
        };
        Self::new(bus, filter, when_behind, phase)
    }

    pub fn filter(&self) -> &SubscriptionFilter {
        &self.filter
    }

    pub fn when_behind(&self) -> WhenBehind {
        self.when_behind
    }

    /// Takes a chunk read from the journal: its alerts are pending, and
    /// the next phase reads on, moves to the ring, or ends.
    fn take_chunk(&mut self, chunk: JournalChunk) {
        let JournalChunk { reader, alerts, error } = chunk;
        self.pending.extend(alerts);
        self.phase = match error {
            Some((resume_seq, error)) => Phase::Ending(self.journal_end(resume_seq, &error)),
            None if reader.is_done() => Phase::Replay {
                next: reader.next_seq(),
            },
            None => Phase::Journal {
                next: reader.next_seq(),
                fetch: fetch(reader, self.filter.clone()),
            },
        };
    }

    fn journal_end(&self, resume_seq: u64, error: &JournalReadError) -> SubscriptionEnd {
        match error {
            &JournalReadError::Journal(JournalError::Gap { from_seq, resume_seq }) => {
                SubscriptionEnd::Lost { from_seq, resume_seq }
            }
            JournalReadError::Journal(JournalError::Removed { .. } | JournalError::TooOld { .. }) => {
                SubscriptionEnd::ReplayOverrun {
                    resume_seq,
                    oldest: self.bus.lock().oldest_available(),
                }
            }
            error => {
                tracing::error!(resume_seq, %error, "A replay from the journal failed.");
                SubscriptionEnd::JournalUnreadable {
                    resume_seq,
                    reason: error.to_string(),
                }
            }
        }
    }

    /// The next alert, or why the reader ended (once), then `None`.
    pub fn poll_next_alert(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Arc<PublishedAlert>, SubscriptionEnd>>> {
        loop {
            if let Some(alert) = self.pending.pop_front() {
                return Poll::Ready(Some(Ok(alert)));
            }
            match &mut self.phase {
                Phase::Journal { next, fetch } => match fetch.poll_chunk(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Ok(chunk)) => self.take_chunk(chunk),
                    Poll::Ready(Err(reason)) => {
                        let resume_seq = *next;
                        self.phase = Phase::Ending(SubscriptionEnd::JournalUnreadable { resume_seq, reason });
                    }
                },
                Phase::Replay { next } => {
                    match self
                        .bus
                        .catch_up(*next, &self.filter, self.when_behind, &mut self.pending)
                    {
                        CatchUp::More(to) => *next = to,
                        CatchUp::Live(LiveHandle { id, rx, end }) => self.phase = Phase::Live { id, rx, end },
                        CatchUp::Journal(reader) => {
                            self.phase = Phase::Journal {
                                next: reader.next_seq(),
                                fetch: fetch(reader, self.filter.clone()),
                            };
                        }
                        CatchUp::Overrun { oldest } => {
                            let resume_seq = *next;
                            self.phase = Phase::Done;
                            return Poll::Ready(Some(Err(SubscriptionEnd::ReplayOverrun { resume_seq, oldest })));
                        }
                        CatchUp::Closed => {
                            self.phase = Phase::Done;
                            return Poll::Ready(Some(Err(SubscriptionEnd::Shutdown)));
                        }
                    }
                }
                Phase::Live { rx, end, .. } => match rx.poll_recv(cx) {
                    Poll::Ready(Some(alert)) => return Poll::Ready(Some(Ok(alert))),
                    // The bus let go of us and the queue is drained.
                    Poll::Ready(None) => match end.get().cloned() {
                        Some(LetGo::Behind { resume_seq }) => self.phase = Phase::Replay { next: resume_seq },
                        Some(LetGo::End(why)) => {
                            self.phase = Phase::Done;
                            return Poll::Ready(Some(Err(why)));
                        }
                        None => {
                            self.phase = Phase::Done;
                            return Poll::Ready(Some(Err(SubscriptionEnd::Shutdown)));
                        }
                    },
                    Poll::Pending => return Poll::Pending,
                },
                Phase::Ending(end) => {
                    let end = end.clone();
                    self.phase = Phase::Done;
                    return Poll::Ready(Some(Err(end)));
                }
                Phase::Done => return Poll::Ready(None),
            }
        }
    }

    /// The next alert, or why the reader ended (once), then `None`.
    ///
    /// Cancellation-safe: an alert is taken from the queue only when the
    /// future completes.
    pub async fn next_alert(&mut self) -> Option<Result<Arc<PublishedAlert>, SubscriptionEnd>> {
        std::future::poll_fn(|cx| self.poll_next_alert(cx)).await
    }
}

impl tokio_stream::Stream for AlertReader {
    type Item = Result<Arc<PublishedAlert>, SubscriptionEnd>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_next_alert(cx)
    }
}

impl Drop for AlertReader {
    fn drop(&mut self) {
        self.bus.subscribers.fetch_sub(1, Ordering::Relaxed);
        if let Phase::Live { id, .. } = self.phase {
            self.bus.unregister(id);
        }
    }
}

/// One chunk of a replay read from the journal.
struct JournalChunk {
    reader: JournalReader,
    /// The matching alerts read.
    alerts: Vec<Arc<PublishedAlert>>,
    /// Why reading stopped early, and the sequence number to resume from.
    error: Option<(u64, JournalReadError)>,
}

/// A chunk being read.
enum Fetch {
    Running(JoinHandle<JournalChunk>),
    /// Read in place: there was no runtime to read on.
    Ready(Option<Box<JournalChunk>>),
}

impl Fetch {
    /// The chunk once read, or why it could not be.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Result<JournalChunk, String>> {
        match self {
            Fetch::Running(task) => Pin::new(task)
                .poll(cx)
                .map_err(|e| format!("the journal read stopped: {e}")),
            Fetch::Ready(chunk) => Poll::Ready(
                chunk
                    .take()
                    .map(|c| *c)
                    .ok_or_else(|| "the journal chunk was already taken".to_string()),
            ),
        }
    }
}

/// Starts reading the next chunk from `reader`, on a blocking thread.
fn fetch(reader: JournalReader, filter: Arc<SubscriptionFilter>) -> Fetch {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => Fetch::Running(runtime.spawn_blocking(move || read_chunk(reader, &filter))),
        Err(_) => Fetch::Ready(Some(Box::new(read_chunk(reader, &filter)))),
    }
}

fn read_chunk(mut reader: JournalReader, filter: &SubscriptionFilter) -> JournalChunk {
    let mut alerts = Vec::new();
    let mut error = None;
    for _ in 0..JOURNAL_CHUNK {
        let at = reader.next_seq();
        match reader.next_record() {
            Ok(Some((seq, bytes))) => match decode_published(seq, bytes) {
                Ok(published) => {
                    if filter.matches(&published.alert) {
                        alerts.push(Arc::new(published));
                    }
                }
                Err(source) => {
                    error = Some((seq, JournalReadError::Decode { seq, source }));
                    break;
                }
            },
            Ok(None) => break,
            Err(e) => {
                error = Some((at, e.into()));
                break;
            }
        }
    }
    JournalChunk { reader, alerts, error }
}
