//! One subscriber's view of the bus: its alerts in sequence order, then an
//! end saying why it stopped.
//!
//! A subscription that starts at a sequence number first replays from the
//! ring in chunks (each under a short lock), and registers as live in the
//! same critical section as its last replay step: the live queue starts
//! exactly where the replay stopped. A start older than the ring is read
//! from the journal first, in chunks on a blocking thread, up to where the
//! journal ended when the chunk began; then the ring takes over (and hands
//! back to the journal if it has moved on meanwhile).

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tokio::sync::mpsc;

use super::journaling::{fetch, Fetch, JournalChunk, JournalReadError};
use super::{AlertBus, CatchUp, LiveHandle, PublishedAlert, SubscriptionFilter};
use crate::journal::{JournalError, JournalReader};

/// Why a subscription ended.
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
            SubscriptionEnd::Shutdown => f.write_str("server shutting down"),
        }
    }
}

/// Why a subscription could not be opened.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error("from_seq {from_seq} is no longer kept; the oldest available is {oldest}")]
    TooOld { from_seq: u64, oldest: u64 },
    #[error("from_seq {from_seq} is beyond the next alert, which will be {next}")]
    Ahead { from_seq: u64, next: u64 },
    #[error("server shutting down")]
    Closed,
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
        end: Arc<OnceLock<SubscriptionEnd>>,
    },
    /// Ends with this once the alerts pending are delivered.
    Ending(SubscriptionEnd),
    Done,
}

/// A stream of matching alerts in sequence order, ending with one
/// `Err(SubscriptionEnd)`. Dropping it unsubscribes.
pub struct Subscription {
    bus: Arc<AlertBus>,
    filter: Arc<SubscriptionFilter>,
    /// Replayed alerts not yet handed out.
    pending: VecDeque<Arc<PublishedAlert>>,
    phase: Phase,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("filter", &self.filter)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Subscription {
    fn new(bus: Arc<AlertBus>, filter: Arc<SubscriptionFilter>, phase: Phase) -> Self {
        bus.subscribers.fetch_add(1, Ordering::Relaxed);
        Subscription {
            bus,
            filter,
            pending: VecDeque::new(),
            phase,
        }
    }

    pub(super) fn live(bus: Arc<AlertBus>, filter: Arc<SubscriptionFilter>, live: LiveHandle) -> Self {
        let LiveHandle { id, rx, end } = live;
        Self::new(bus, filter, Phase::Live { id, rx, end })
    }

    pub(super) fn replaying(bus: Arc<AlertBus>, filter: Arc<SubscriptionFilter>, from_seq: u64) -> Self {
        Self::new(bus, filter, Phase::Replay { next: from_seq })
    }

    pub(super) fn from_journal(bus: Arc<AlertBus>, filter: Arc<SubscriptionFilter>, reader: JournalReader) -> Self {
        let next = reader.next_seq();
        let phase = Phase::Journal {
            next,
            fetch: fetch(reader, filter.clone()),
        };
        Self::new(bus, filter, phase)
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

    pub fn filter(&self) -> &SubscriptionFilter {
        &self.filter
    }

    /// The next alert, or why the subscription ended (once), then `None`.
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
                Phase::Replay { next } => match self.bus.catch_up(*next, &self.filter, &mut self.pending) {
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
                },
                Phase::Live { rx, end, .. } => {
                    return match rx.poll_recv(cx) {
                        Poll::Ready(Some(alert)) => Poll::Ready(Some(Ok(alert))),
                        Poll::Ready(None) => {
                            // The bus let go of us and the queue is drained.
                            let why = end.get().cloned().unwrap_or(SubscriptionEnd::Shutdown);
                            self.phase = Phase::Done;
                            Poll::Ready(Some(Err(why)))
                        }
                        Poll::Pending => Poll::Pending,
                    };
                }
                Phase::Ending(end) => {
                    let end = end.clone();
                    self.phase = Phase::Done;
                    return Poll::Ready(Some(Err(end)));
                }
                Phase::Done => return Poll::Ready(None),
            }
        }
    }

    /// The next alert, or why the subscription ended (once), then `None`.
    ///
    /// Cancellation-safe: an alert is taken from the queue only when the
    /// future completes.
    pub async fn next_alert(&mut self) -> Option<Result<Arc<PublishedAlert>, SubscriptionEnd>> {
        std::future::poll_fn(|cx| self.poll_next_alert(cx)).await
    }
}

impl tokio_stream::Stream for Subscription {
    type Item = Result<Arc<PublishedAlert>, SubscriptionEnd>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_next_alert(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.bus.subscribers.fetch_sub(1, Ordering::Relaxed);
        if let Phase::Live { id, .. } = self.phase {
            self.bus.unregister(id);
        }
    }
}
