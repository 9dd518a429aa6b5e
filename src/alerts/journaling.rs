//! The bus's journal: every published alert is appended, under the bus
//! lock and before fan-out, so the journal's order is the sequence order
//! and a subscriber never sees an alert the OS has not been handed.
//!
//! A failed write does not stop publishing: the alert still reaches its
//! subscribers and the ring (a halt that is not delivered is worse than a
//! halt that is not journaled). The failure is logged, counted, and the
//! journal is marked failing; every later publish retries, first writing
//! the alerts it missed from the ring, so a passing problem (a full disk
//! that is cleared) heals without a gap. If the missed alerts have left
//! the ring before that, the journal stops taking alerts until a restart
//! and says so: numbering after that restart starts again after the last
//! alert journaled.
//!
//! Replays older than the ring read the journal in chunks on tokio's
//! blocking threads ([`fetch`]).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use tokio::task::JoinHandle;

use super::encoding::{decode_alert, decode_published, encode_published, DecodeError};
use super::{AlertBus, BusConfig, Inner, PublishedAlert, SubscriptionFilter};
use crate::clock::Clock;
use crate::journal::{Journal, JournalError, JournalReader, JournalStats, Retained};
use crate::model::Alert;

/// Records read from the journal per chunk of a replay.
pub const JOURNAL_CHUNK: usize = 1024;

/// Whether published alerts are reaching the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JournalHealth {
    /// Every published alert is journaled.
    Healthy,
    /// Writes fail: alerts from `since` are delivered from memory only.
    /// Each publish retries, writing the missed alerts from the ring first.
    Failing { since: u64 },
    /// The alerts from `since` left the ring before they could be written:
    /// the journal takes no more alerts until the service restarts.
    Stopped { since: u64 },
}

/// The journal as the bus reports it.
#[derive(Clone, Debug)]
pub struct BusJournalStats {
    pub journal: JournalStats,
    pub health: JournalHealth,
    /// Alerts published but not in the journal (failing or stopped).
    pub unjournaled: u64,
    /// Appends that failed, retries included.
    pub write_failures: u64,
}

/// Why alerts could not be read back from the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalReadError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("journal record {seq} is not an alert: {source}")]
    Decode {
        seq: u64,
        #[source]
        source: DecodeError,
    },
}

/// The journal inside the bus lock.
pub(super) struct BusJournal {
    journal: Journal,
    /// One encoded alert.
    scratch: Vec<u8>,
    health: JournalHealth,
    write_failures: u64,
}

impl BusJournal {
    /// Journals `published`, first writing any alert a failed write
    /// missed (from `ring`, which holds the alerts before it).
    pub(super) fn write(&mut self, published: &PublishedAlert, ring: &VecDeque<Arc<PublishedAlert>>) {
        if let JournalHealth::Stopped { .. } = self.health {
            return;
        }
        while self.journal.next_seq() < published.seq {
            let missing = self.journal.next_seq();
            let oldest = ring.front().map_or(published.seq, |a| a.seq);
            let in_ring = missing
                .checked_sub(oldest)
                .and_then(|i| ring.get(usize::try_from(i).ok()?));
            let Some(missed) = in_ring else {
                tracing::error!(
                    since = missing,
                    oldest_in_memory = oldest,
                    "Journal stopped: alerts left memory before they could be journaled. Alerts are still \
                     delivered; restart the service to journal again (numbering then continues after seq {}).",
                    missing - 1
                );
                self.health = JournalHealth::Stopped { since: missing };
                return;
            };
            if !self.append(missed) {
                return;
            }
        }
        if self.append(published) {
            if let JournalHealth::Failing { since } = self.health {
                tracing::warn!(
                    since,
                    through = published.seq,
                    "Journal writes work again: the alerts missed were journaled from memory."
                );
                self.health = JournalHealth::Healthy;
            }
        }
    }

    fn append(&mut self, alert: &PublishedAlert) -> bool {
        encode_published(alert, &mut self.scratch);
        match self.journal.append(alert.seq, &self.scratch) {
            Ok(()) => true,
            Err(error) => {
                self.write_failures += 1;
                if self.health == JournalHealth::Healthy {
                    tracing::error!(
                        seq = alert.seq,
                        %error,
                        "Journal write failed: alerts are delivered from memory but not journaled; \
                         every new alert retries."
                    );
                    self.health = JournalHealth::Failing { since: alert.seq };
                }
                false
            }
        }
    }

    /// A reader from `from_seq` when the journal holds it and can take a
    /// replay further than `from_seq`.
    pub(super) fn reader(&self, from_seq: u64) -> Option<JournalReader> {
        if from_seq < self.journal.first_seq() || from_seq >= self.journal.next_seq() {
            return None;
        }
        self.journal.reader(from_seq).ok()
    }

    pub(super) fn first_seq(&self) -> u64 {
        self.journal.first_seq()
    }

    pub(super) fn next_seq(&self) -> u64 {
        self.journal.next_seq()
    }

    pub(super) fn sync(&mut self) {
        if let Err(error) = self.journal.sync() {
            tracing::error!(%error, "Journal: sync at close failed.");
        }
    }
}

impl Inner {
    /// The oldest alert a subscriber can start from: the journal's first
    /// when the journal reaches the ring, else the ring's.
    pub(super) fn oldest_available(&self) -> u64 {
        let ring = self.oldest_seq();
        match &self.journal {
            Some(j) if j.next_seq() >= ring => j.first_seq().min(ring),
            _ => ring,
        }
    }

    pub(super) fn journal_reader(&self, from_seq: u64) -> Option<JournalReader> {
        self.journal.as_ref()?.reader(from_seq)
    }
}

impl AlertBus {
    /// A bus that journals every alert to `journal` and numbers on from
    /// the journal's last record.
    pub fn with_journal(config: BusConfig, clock: Arc<dyn Clock>, journal: Journal) -> Self {
        let bus = AlertBus::new(config, clock);
        {
            let mut inner = bus.lock();
            inner.next_seq = journal.next_seq();
            bus.last_seq
                .store(journal.next_seq() - 1, std::sync::atomic::Ordering::Release);
            inner.journal = Some(BusJournal {
                journal,
                scratch: Vec::with_capacity(512),
                health: JournalHealth::Healthy,
                write_failures: 0,
            });
        }
        bus
    }

    /// Whether the bus has a journal.
    pub fn has_journal(&self) -> bool {
        self.lock().journal.is_some()
    }

    /// The journal's oldest record and the sequence number its next
    /// record will carry; `None` without a journal.
    pub fn journal_range(&self) -> Option<(u64, u64)> {
        self.lock().journal.as_ref().map(|j| (j.first_seq(), j.next_seq()))
    }

    /// The journaled alerts after `after_seq`, in sequence order: after a
    /// restart, the alerts already published past a checkpoint taken at
    /// `after_seq`. Empty without a journal. Reads files: call it off the
    /// async workers.
    ///
    /// # Errors
    /// The journal no longer holds `after_seq + 1` (retention,
    /// [`JournalError::TooOld`]), ends before `after_seq`
    /// ([`JournalError::Ahead`]), or a record cannot be read or decoded.
    pub fn journal_tail(&self, after_seq: u64) -> Result<Vec<(u64, Alert)>, JournalReadError> {
        let mut reader = {
            let inner = self.lock();
            let Some(j) = &inner.journal else {
                return Ok(Vec::new());
            };
            j.journal.reader(after_seq.saturating_add(1))?
        };
        let mut out = Vec::with_capacity(usize::try_from(reader.end_seq() - reader.next_seq()).unwrap_or(0));
        while let Some((seq, bytes)) = reader.next_record()? {
            let (alert, _, _) = decode_alert(bytes).map_err(|source| JournalReadError::Decode { seq, source })?;
            out.push((seq, alert));
        }
        Ok(out)
    }

    /// Removes journal segments past retention (also done whenever a
    /// segment fills). Reads and removes files: call it off the async
    /// workers.
    ///
    /// # Errors
    /// A segment could not be removed.
    pub fn enforce_journal_retention(&self) -> Result<Retained, JournalError> {
        match &mut self.lock().journal {
            Some(j) => j.journal.enforce_retention(SystemTime::now()),
            None => Ok(Retained::default()),
        }
    }

    /// The journal's counts and health; `None` without a journal.
    pub fn journal_stats(&self) -> Option<BusJournalStats> {
        let inner = self.lock();
        let j = inner.journal.as_ref()?;
        Some(BusJournalStats {
            journal: j.journal.stats(),
            health: j.health,
            unjournaled: inner.next_seq - j.journal.next_seq(),
            write_failures: j.write_failures,
        })
    }
}

/// One chunk of a replay read from the journal.
pub(super) struct JournalChunk {
    pub(super) reader: JournalReader,
    /// The matching alerts read.
    pub(super) alerts: Vec<Arc<PublishedAlert>>,
    /// Why reading stopped early, and the sequence number to resume from.
    pub(super) error: Option<(u64, JournalReadError)>,
}

/// A chunk being read.
pub(super) enum Fetch {
    Running(JoinHandle<JournalChunk>),
    /// Read in place: there was no runtime to read on.
    Ready(Option<Box<JournalChunk>>),
}

impl Fetch {
    /// The chunk once read, or why it could not be.
    pub(super) fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Result<JournalChunk, String>> {
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
pub(super) fn fetch(reader: JournalReader, filter: Arc<SubscriptionFilter>) -> Fetch {
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
