//! The journal writer: a thread of its own (not a tokio worker) that
//! follows the alert log from the journal's end and appends every alert,
//! in sequence order, then releases them to readers.
//!
//! One round, a group: every alert sealed and not yet written (a sealed
//! alert is one whose [`super::PublishSink`] is done: a batch's alerts are
//! sealed together; every batch sealed while the writer was busy joins).
//!
//! 1. Under the journal's lock, then briefly the bus lock: take (`Arc`
//!    clones of) the group's alerts from the ring, [`GROUP_MAX`] at a time.
//! 2. With the journal's lock only: encode them, append them in one
//!    `write` per segment (and per [`GROUP_MAX`] alerts), back to 1 until
//!    the whole group is written; then sync by the policy — with `always`
//!    one `fdatasync` for the whole group (group commit), with `interval`
//!    the journal's background thread syncs, with `never` nothing.
//! 3. Under the bus lock again: record the outcome and release the group
//!    to the live readers, only now that its sync has returned; then wake
//!    whoever waits for the release (async waiters, `publish` waiting for
//!    room, `close`).
//!
//! So a storm of alerts costs one `fdatasync` per group rather than per
//! alert (per batch at most), and no disk I/O ever happens under the bus
//! lock or a caller's lock. The journal's extent that readers replay from
//! moves only at 3, so no replay reads a record before its sync either.
//! The writer takes the journal's lock before the bus lock, never the
//! other way round, and never an engine lock.
//!
//! Failures keep the bus's semantics ([`super::journaling`]): a group that
//! cannot be written is released anyway (delivery from memory) and the
//! journal marked failing; the next alert published makes the writer retry
//! from the first missed alert, healing from the ring; when that alert has
//! left the ring, the journal stops. If the writer ends unexpectedly, the
//! journal is stopped and every alert released, so nothing waits for it.

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::encoding::encode_published;
use super::journaling::JournalHealth;
use super::{PublishedAlert, Shared};

/// Most alerts encoded and written in one `write`: bounds the memory of a
/// group in flight (a larger group is written in several, synced once).
pub const GROUP_MAX: usize = 4096;

/// Starts the writer of `shared`'s journal.
///
/// # Errors
/// The thread could not be spawned.
pub(super) fn start(shared: Arc<Shared>) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("airbag-alert-journal".into())
        .spawn(move || Writer::new(shared).run())
}

/// What the writer does next.
enum Task {
    /// Write what is waiting, and sync if `close` asked for it.
    Write,
    /// The bus is gone and everything is written.
    Exit,
}

/// The outcome of one group's I/O.
struct Outcome {
    /// The group's alerts appended (from the first).
    appended: usize,
    /// Why the rest were not, with the first alert that was not.
    failure: Option<(u64, String)>,
}

struct Writer {
    shared: Arc<Shared>,
    /// The group being written.
    group: Vec<Arc<PublishedAlert>>,
    /// The group's encoded alerts, back to back, and where each one is.
    encoded: Vec<u8>,
    ranges: Vec<Range<usize>>,
    /// One encoded alert.
    scratch: Vec<u8>,
}

impl Writer {
    fn new(shared: Arc<Shared>) -> Self {
        Writer {
            shared,
            group: Vec::with_capacity(64),
            encoded: Vec::with_capacity(16 << 10),
            ranges: Vec::with_capacity(64),
            scratch: Vec::with_capacity(512),
        }
    }

    fn run(mut self) {
        let _gone = Gone(self.shared.clone());
        loop {
            match self.next_task() {
                Task::Write => self.write_group(),
                Task::Exit => return,
            }
        }
    }

    /// Waits until there is something to write (or a sync to do), or the
    /// bus is gone.
    fn next_task(&self) -> Task {
        let mut inner = self.shared.lock();
        loop {
            let sealed = inner.sealed;
            let Some(journal) = &inner.journal else {
                return Task::Exit;
            };
            let written = journal.extent.next_seq();
            let writable = match journal.health {
                JournalHealth::Healthy => sealed >= written,
                // Only once a new alert has come since the failure.
                JournalHealth::Failing { .. } => sealed >= written && sealed > journal.retry_after,
                JournalHealth::Stopped { .. } => false,
            };
            if writable || journal.synced_ticket < journal.sync_ticket {
                return Task::Write;
            }
            if journal.stop {
                return Task::Exit;
            }
            self.shared.work.wait(&mut inner);
        }
    }

    /// One round: collect, write and sync, release.
    fn write_group(&mut self) {
        let shared = self.shared.clone();
        let Some(journal) = &shared.journal else {
            return;
        };
        let mut journal = journal.lock();

        // 1. What is waiting, and whether `close` asked for a sync.
        let (published, sealed, sync_ticket) = {
            let mut inner = shared.lock();
            let published = inner.next_seq - 1;
            let sealed = inner.sealed;
            let oldest = inner.oldest_seq();
            let Some(side) = &mut inner.journal else {
                return;
            };
            let sync_ticket = (side.synced_ticket < side.sync_ticket).then_some(side.sync_ticket);
            let missing = journal.next_seq();
            if side.takes_nothing() || missing > sealed {
                // Nothing to write: a sync only.
            } else if missing < oldest {
                tracing::error!(
                    since = missing,
                    oldest_in_memory = oldest,
                    "Journal stopped: alerts left memory before they could be journaled. Alerts are still \
                     delivered; restart the service to journal again (numbering then continues after seq {}).",
                    missing - 1
                );
                side.health = JournalHealth::Stopped { since: missing };
                shared.release(&mut inner, published);
            } else {
                self.take(&inner, missing, sealed);
            }
            (published, sealed, sync_ticket)
        };
        let wrote_nothing = self.group.is_empty();

        // 2. The I/O, under the journal's lock only: the whole group, then
        // its one sync.
        let mut outcome = self.append(&mut journal);
        while outcome.failure.is_none() && !self.group.is_empty() && journal.next_seq() <= sealed {
            // More of the group than one write takes.
            self.group.clear();
            self.take(&shared.lock(), journal.next_seq(), sealed);
            let more = self.append(&mut journal);
            outcome = Outcome {
                appended: outcome.appended + more.appended,
                failure: more.failure,
            };
        }
        journal.commit();
        // The sync `close` asked for, once every alert published before it
        // asked is written (or cannot be).
        let synced =
            sync_ticket.filter(|_| outcome.failure.is_some() || journal.next_seq() > published || wrote_nothing);
        if synced.is_some() {
            if let Err(error) = journal.sync() {
                tracing::error!(%error, "Journal: sync at close failed.");
            }
        }

        // 3. The outcome, and the release.
        {
            let mut inner = shared.lock();
            let extent = journal.extent();
            let written = extent.next_seq();
            let Some(side) = &mut inner.journal else {
                return;
            };
            side.extent = extent;
            if let Some(ticket) = synced {
                side.synced_ticket = side.synced_ticket.max(ticket);
            }
            let through = match outcome.failure {
                None => {
                    side.retry_after = 0;
                    if let JournalHealth::Failing { since } = side.health {
                        if outcome.appended > 0 && written > published {
                            tracing::warn!(
                                since,
                                through = written - 1,
                                "Journal writes work again: the alerts missed were journaled from memory."
                            );
                            side.health = JournalHealth::Healthy;
                        }
                    }
                    written - 1
                }
                Some((seq, error)) => {
                    side.write_failures += 1;
                    if side.health == JournalHealth::Healthy {
                        tracing::error!(
                            seq,
                            %error,
                            "Journal write failed: alerts are delivered from memory but not journaled; \
                             every new alert retries."
                        );
                        side.health = JournalHealth::Failing { since: seq };
                    }
                    side.retry_after = published;
                    // Delivery goes on from memory.
                    published
                }
            };
            shared.release(&mut inner, through);
        }
        drop(journal);
        self.group.clear();
        shared.announce();
        shared.released_cv.notify_all();
    }

    /// Takes from the ring the sealed alerts from `missing` on (up to
    /// `sealed`, at most [`GROUP_MAX`]). Every alert not released is in
    /// the ring, so they are all there.
    fn take(&mut self, inner: &super::Inner, missing: u64, sealed: u64) {
        let oldest = inner.oldest_seq();
        if missing < oldest || missing > sealed {
            return;
        }
        let start = usize::try_from(missing - oldest).unwrap_or(usize::MAX);
        let count = usize::try_from(sealed - missing + 1)
            .unwrap_or(usize::MAX)
            .min(GROUP_MAX);
        self.group.extend(inner.ring.range(start..).take(count).cloned());
    }

    /// Encodes and appends the alerts taken (not synced: the caller syncs
    /// the whole group once).
    fn append(&mut self, journal: &mut crate::journal::Journal) -> Outcome {
        let Some(first) = self.group.first().map(|a| a.seq) else {
            return Outcome {
                appended: 0,
                failure: None,
            };
        };
        self.encoded.clear();
        self.ranges.clear();
        let mut failure = None;
        for published in &self.group {
            if let Err(error) = encode_published(published, &mut self.scratch) {
                failure = Some((published.seq, error.to_string()));
                break;
            }
            let at = self.encoded.len();
            self.encoded.extend_from_slice(&self.scratch);
            self.ranges.push(at..self.encoded.len());
        }
        let encoded = &self.encoded;
        let payloads = self.ranges.iter().map(|r| &encoded[r.clone()]);
        let appended = match journal.append_batch(first, payloads) {
            Ok(appended) => appended,
            Err(e) => {
                failure = Some((first + e.appended as u64, e.error.to_string()));
                e.appended
            }
        };
        Outcome { appended, failure }
    }
}

/// Dropped when the writer ends, however it ends: from then on `publish`
/// releases its alerts itself, and everything published is released now,
/// so nothing waits for a writer that is gone.
struct Gone(Arc<Shared>);

impl Drop for Gone {
    fn drop(&mut self) {
        let shared = &self.0;
        let mut inner = shared.lock();
        let published = inner.next_seq - 1;
        if let Some(side) = &mut inner.journal {
            side.writer_gone = true;
            if std::thread::panicking() {
                let since = side.extent.next_seq();
                side.health = JournalHealth::Stopped { since };
                tracing::error!(
                    since,
                    "Journal stopped: its writer failed. Alerts are still delivered; restart the service to \
                     journal again."
                );
            }
        }
        shared.release(&mut inner, published);
        drop(inner);
        shared.announce();
        shared.released_cv.notify_all();
    }
}
