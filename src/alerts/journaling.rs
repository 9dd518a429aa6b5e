//! The bus's journal, as the rest of the bus sees it: its health, its
//! extent for readers, retention, the tail read after a restart, and its
//! counts. The writing itself is the writer thread's ([`super::writer`]).
//!
//! A failed write does not stop delivery: the alerts are still released
//! to readers from memory (a halt that is not delivered is worse than a
//! halt that is not journaled). The failure is logged, counted, and the
//! journal is marked failing; every alert published afterwards makes the
//! writer retry, first writing the alerts it missed from the ring, so a
//! passing problem (a full disk that is cleared) heals without a gap. If
//! the missed alerts have left the ring before that, the journal stops
//! taking alerts until a restart and says so: numbering after that restart
//! starts again after the last alert journaled.

use std::sync::Arc;
use std::time::SystemTime;

use super::encoding::{decode_alert, DecodeError};
use super::writer;
use super::{AlertBus, BusConfig, Inner};
use crate::clock::Clock;
use crate::journal::{Journal, JournalError, JournalExtent, JournalReader, JournalStats, Retained};
use crate::model::Alert;

/// Whether published alerts are reaching the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JournalHealth {
    /// Every published alert is journaled (or on its way: see
    /// [`BusJournalStats::pending`]).
    Healthy,
    /// Writes fail: alerts from `since` are delivered from memory only.
    /// Each new alert makes the writer retry, writing the missed alerts
    /// from the ring first.
    Failing { since: u64 },
    /// The alerts from `since` left the ring before they could be written
    /// (or the writer could not run): the journal takes no more alerts
    /// until the service restarts.
    Stopped { since: u64 },
}

/// The journal as the bus reports it.
#[derive(Clone, Debug)]
pub struct BusJournalStats {
    pub journal: JournalStats,
    pub health: JournalHealth,
    /// Alerts published but not in the journal because it is failing or
    /// stopped.
    pub unjournaled: u64,
    /// Alerts published and not yet written by the writer while the
    /// journal is healthy: on their way, not yet released to readers.
    pub pending: u64,
    /// Attempts to write alerts that failed, retries included (an attempt
    /// is one alert or one group).
    pub write_failures: u64,
    /// Publishes that waited because the ring was full of alerts the
    /// writer had not written yet.
    pub publish_waits: u64,
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

/// The journal's state under the bus lock, shared with the writer.
pub(super) struct JournalSide {
    pub(super) health: JournalHealth,
    pub(super) write_failures: u64,
    pub(super) publish_waits: u64,
    /// What the journal held after the writer's last group (or the last
    /// retention pass): readers are made from it, without the journal.
    pub(super) extent: JournalExtent,
    /// While failing: the writer retries once an alert after this one is
    /// published.
    pub(super) retry_after: u64,
    /// Syncs asked for by `close` (a count), and the last one done.
    pub(super) sync_ticket: u64,
    pub(super) synced_ticket: u64,
    /// The bus is being dropped: the writer writes what is left and ends.
    pub(super) stop: bool,
    /// The writer has ended (or never started): nothing releases alerts
    /// but `publish` itself.
    pub(super) writer_gone: bool,
}

impl JournalSide {
    pub(super) fn new(extent: JournalExtent) -> Self {
        JournalSide {
            health: JournalHealth::Healthy,
            write_failures: 0,
            publish_waits: 0,
            extent,
            retry_after: 0,
            sync_ticket: 0,
            synced_ticket: 0,
            stop: false,
            writer_gone: false,
        }
    }

    /// The journal takes no more alerts: `publish` releases its alerts
    /// itself.
    pub(super) fn takes_nothing(&self) -> bool {
        self.writer_gone || matches!(self.health, JournalHealth::Stopped { .. })
    }

    /// Asks the writer for a sync of everything published so far; returns
    /// the ticket it marks done.
    pub(super) fn request_sync(&mut self) -> u64 {
        self.sync_ticket += 1;
        self.sync_ticket
    }

    /// A reader from `from_seq` when the journal holds it and can take a
    /// replay further than `from_seq`.
    fn reader(&self, from_seq: u64) -> Option<JournalReader> {
        if from_seq < self.extent.first_seq() || from_seq >= self.extent.next_seq() {
            return None;
        }
        self.extent.reader(from_seq).ok()
    }
}

impl Inner {
    /// The oldest alert a reader can start from: the journal's first when
    /// the journal reaches the ring, else the ring's.
    pub(super) fn oldest_available(&self) -> u64 {
        let ring = self.oldest_seq();
        match &self.journal {
            Some(j) if j.extent.next_seq() >= ring => j.extent.first_seq().min(ring),
            _ => ring,
        }
    }

    pub(super) fn journal_reader(&self, from_seq: u64) -> Option<JournalReader> {
        self.journal.as_ref()?.reader(from_seq)
    }
}

impl AlertBus {
    /// A bus that has every alert journaled to `journal`, by a writer
    /// thread of its own, and numbers on from the journal's last record.
    /// If the thread cannot be started, the journal is stopped (and says
    /// so): alerts are delivered, not journaled.
    pub fn with_journal(config: BusConfig, clock: Arc<dyn Clock>, journal: Journal) -> Self {
        let mut bus = AlertBus::build(config, clock, Some(journal));
        match writer::start(bus.shared.clone()) {
            Ok(thread) => bus.writer = Some(thread),
            Err(error) => {
                let mut inner = bus.lock();
                let since = inner.next_seq;
                if let Some(journal) = &mut inner.journal {
                    journal.writer_gone = true;
                    journal.health = JournalHealth::Stopped { since };
                }
                tracing::error!(
                    %error,
                    since,
                    "Journal stopped: its writer thread cannot start. Alerts are delivered but not journaled; \
                     restart the service to journal again."
                );
            }
        }
        bus
    }

    /// After a restart from a checkpoint taken at alert `seq`: numbering
    /// goes on after the larger of `seq` and the journal's last record.
    /// The journal can end before `seq` when a power loss took a tail that
    /// was not synced (`fsync = "never"` or an interval) while the
    /// checkpoint, written later, survived: without this the next alerts
    /// would reuse numbers subscribers had already seen. The journal skips
    /// the lost numbers ([`Journal::skip_to`]). Call before anything is
    /// published; returns the lost range when there was one.
    ///
    /// # Errors
    /// The journal could not skip; numbering is unchanged.
    pub fn continue_after(&self, seq: u64) -> Result<Option<(u64, u64)>, JournalError> {
        let next = seq.saturating_add(1);
        // Lock order: the journal before the bus.
        let mut journal = self.shared.journal.as_ref().map(|j| j.lock());
        let mut inner = self.lock();
        let lost_from = inner.next_seq;
        if next <= lost_from {
            return Ok(None);
        }
        if let Some(journal) = &mut journal {
            journal.skip_to(next)?;
            if let Some(side) = &mut inner.journal {
                side.extent = journal.extent();
            }
        }
        inner.next_seq = next;
        inner.sealed = next - 1;
        inner.released = next - 1;
        self.shared.sealed.store(next - 1, std::sync::atomic::Ordering::Release);
        self.shared
            .released
            .store(next - 1, std::sync::atomic::Ordering::Release);
        self.shared.released_tx.send_replace(next - 1);
        self.last_seq.store(next - 1, std::sync::atomic::Ordering::Release);
        Ok(Some((lost_from, next)))
    }

    /// Whether the bus has a journal.
    pub fn has_journal(&self) -> bool {
        self.shared.journal.is_some()
    }

    /// The journal's oldest record and the sequence number its next record
    /// will carry, as of the writer's last group; `None` without a
    /// journal.
    pub fn journal_range(&self) -> Option<(u64, u64)> {
        self.lock()
            .journal
            .as_ref()
            .map(|j| (j.extent.first_seq(), j.extent.next_seq()))
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
        let Some(extent) = self.lock().journal.as_ref().map(|j| j.extent.clone()) else {
            return Ok(Vec::new());
        };
        let mut reader = extent.reader(after_seq.saturating_add(1))?;
        let mut out = Vec::with_capacity(usize::try_from(reader.end_seq() - reader.next_seq()).unwrap_or(0));
        while let Some((seq, bytes)) = reader.next_record()? {
            let (alert, _, _) = decode_alert(bytes).map_err(|source| JournalReadError::Decode { seq, source })?;
            out.push((seq, alert));
        }
        Ok(out)
    }

    /// Removes journal segments past retention (also done whenever a
    /// segment fills). Reads and removes files, and waits for the writer's
    /// group in progress: call it off the async workers.
    ///
    /// # Errors
    /// A segment could not be removed.
    pub fn enforce_journal_retention(&self) -> Result<Retained, JournalError> {
        let Some(journal) = &self.shared.journal else {
            return Ok(Retained::default());
        };
        let mut journal = journal.lock();
        let retained = journal.enforce_retention(SystemTime::now());
        // Under the journal's lock, so the extent is never older than the
        // writer's.
        if let Some(side) = &mut self.lock().journal {
            side.extent = journal.extent();
        }
        retained
    }

    /// The journal's counts and health; `None` without a journal. Waits
    /// for the writer's group in progress (one `fdatasync` at most).
    pub fn journal_stats(&self) -> Option<BusJournalStats> {
        let journal = self.shared.journal.as_ref()?;
        let (health, published, write_failures, publish_waits) = {
            let inner = self.lock();
            let side = inner.journal.as_ref()?;
            (side.health, inner.next_seq, side.write_failures, side.publish_waits)
        };
        let stats = journal.lock().stats();
        let missing = published.saturating_sub(stats.next_seq);
        let (unjournaled, pending) = match health {
            JournalHealth::Healthy => (0, missing),
            JournalHealth::Failing { .. } | JournalHealth::Stopped { .. } => (missing, 0),
        };
        Some(BusJournalStats {
            journal: stats,
            health,
            unjournaled,
            pending,
            write_failures,
            publish_waits,
        })
    }
}

#[cfg(test)]
impl AlertBus {
    /// Holds the journal's lock, as the writer does while it writes: the
    /// writer waits before it takes its next group (tests only).
    pub(crate) fn hold_journal(&self) -> Option<parking_lot::MutexGuard<'_, Journal>> {
        self.shared.journal.as_ref().map(|journal| journal.lock())
    }
}
