//! The journal: an append-only log of records numbered by a gap-free
//! sequence number, in segment files in one folder. Knows nothing of
//! alerts or gRPC: a record is a sequence number and opaque bytes.
//!
//! - Layout ([`record`]): segments named by their first sequence number,
//!   records framed by a length and a CRC-32.
//! - Writing ([`Journal::append`], [`Journal::append_batch`]): every record
//!   reaches the OS (one `write` per record, or per segment a batch
//!   touches) before the call returns, so a killed process loses nothing
//!   that was appended. Durability against power loss follows the
//!   [`FsyncPolicy`]: `fdatasync` after every append (after a whole batch
//!   with [`Journal::commit`]: group commit), at an interval from a
//!   background thread, or when the OS decides. A segment is closed once
//!   the next record would take it past `segment_bytes`. The newest record
//!   an `fdatasync` is known to cover is the synced watermark
//!   ([`Journal::synced_seq`], [`SyncedSeq`] to watch it without the
//!   journal).
//! - Opening ([`Journal::open`], [`recover`]): every segment is verified;
//!   a torn or corrupt tail is cut (the file truncated at the last good
//!   record, later segments deleted) with a warning naming the file, the
//!   offset and the bytes cut. Numbering continues after the last good
//!   record.
//! - Reading ([`JournalReader`]): records from a sequence number on, up to
//!   the end as it was when the reader was made, while appends go on. A
//!   [`JournalExtent`] (the segments and the end at one moment) makes
//!   readers without access to the writer.
//! - Retention: whole segments, oldest first, by total size and age; the
//!   segment being written is never removed.

pub mod reader;
pub mod record;
mod recover;
mod sync;

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::metrics::Latency;

pub use reader::JournalReader;
pub use record::MAX_PAYLOAD;
pub use recover::{Recovery, TailCut};

use self::sync::{SyncMetrics, Syncer};

/// When appended records are forced to stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `fdatasync` after every append, before `append` returns.
    Always,
    /// `fdatasync` from a background thread at this interval, when
    /// something was appended since the last one.
    Interval(Duration),
    /// Never forced; the OS writes back in its own time.
    Never,
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Interval(every) => write!(f, "every {} ms", every.as_millis()),
            FsyncPolicy::Never => f.write_str("never"),
        }
    }
}

/// Smallest and largest segment size accepted.
pub const MIN_SEGMENT_BYTES: u64 = 4096;
pub const MAX_SEGMENT_BYTES: u64 = 1 << 30;
/// Longest interval between background syncs.
pub const MAX_SYNC_INTERVAL: Duration = Duration::from_secs(60);

/// How a journal writes, syncs and prunes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalConfig {
    /// A segment is closed when the next record would take it past this
    /// size (a segment always holds at least one record).
    pub segment_bytes: u64,
    pub fsync: FsyncPolicy,
    /// Oldest segments are removed while all segments together are larger.
    pub retain_bytes: u64,
    /// Segments last written longer ago than this are removed.
    pub retain_age: Duration,
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig {
            segment_bytes: 64 << 20,
            fsync: FsyncPolicy::Always,
            retain_bytes: 1 << 30,
            retain_age: Duration::from_secs(7 * 86_400),
        }
    }
}

impl JournalConfig {
    /// Every problem with the values, as `(key, message)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            problems.push((
                "segment_bytes",
                format!(
                    "must be between {MIN_SEGMENT_BYTES} and {MAX_SEGMENT_BYTES}, got {}",
                    self.segment_bytes
                ),
            ));
        }
        if let FsyncPolicy::Interval(every) = self.fsync {
            if every.is_zero() || every > MAX_SYNC_INTERVAL {
                problems.push((
                    "fsync",
                    format!(
                        "an interval must be between 1 and {} ms, got {} ms",
                        MAX_SYNC_INTERVAL.as_millis(),
                        every.as_millis()
                    ),
                ));
            }
        }
        if self.retain_bytes == 0 {
            problems.push(("retain_bytes", "must be at least 1".into()));
        }
        if self.retain_age.is_zero() {
            problems.push(("retain_age", "must be longer than zero".into()));
        }
        problems
    }
}

/// Why a journal operation failed. An append that fails leaves the journal
/// as it was.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {}: cannot {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "journal segment {} has format version {version}; this build reads version {}",
        path.display(),
        record::FORMAT_VERSION
    )]
    UnsupportedVersion { path: PathBuf, version: u8 },
    #[error("journal append out of order: the next record must be seq {expected}, got seq {got}")]
    OutOfOrder { expected: u64, got: u64 },
    #[error("journal record for seq {seq} has {len} payload bytes; the limit is {MAX_PAYLOAD}")]
    TooLarge { seq: u64, len: usize },
    #[error("journal {} at offset {offset}: {reason}", path.display())]
    Corrupt { path: PathBuf, offset: u64, reason: String },
    #[error("seq {from_seq} is no longer in the journal; the oldest kept is {first_seq}")]
    TooOld { from_seq: u64, first_seq: u64 },
    #[error("seq {from_seq} is beyond the end of the journal; the next will be {next_seq}")]
    Ahead { from_seq: u64, next_seq: u64 },
    #[error("journal segment {} was removed by retention before seq {seq} was read", path.display())]
    Removed { path: PathBuf, seq: u64 },
    /// The journal skips `from_seq..resume_seq` on purpose (see
    /// [`Journal::skip_to`]): those records were lost.
    #[error(
        "seq {from_seq} to {} are not in the journal: they were lost before they reached the disk (a power loss \
         with fsync = \"never\" or an interval), and numbering went on after them; read on from seq {resume_seq}",
        resume_seq - 1
    )]
    Gap { from_seq: u64, resume_seq: u64 },
    #[error("invalid journal configuration: {}", .0.iter().map(|(k, m)| format!("{k}: {m}")).collect::<Vec<_>>().join("; "))]
    Config(Vec<(&'static str, String)>),
}

/// Why [`Journal::append_batch`] stopped: the records before the one that
/// failed were appended.
#[derive(Debug, thiserror::Error)]
#[error("{error} ({appended} records of the batch were appended before it)")]
pub struct BatchError {
    /// Records of the batch appended, from its first.
    pub appended: usize,
    #[source]
    pub error: JournalError,
}

fn io_error<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> JournalError + 'a {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// One segment file.
#[derive(Clone, Debug)]
struct Segment {
    first_seq: u64,
    path: PathBuf,
    bytes: u64,
    /// When it was last written (closed segments only: its mtime).
    closed_at: Option<SystemTime>,
}

/// A segment as listed by [`Journal::segments`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    pub first_seq: u64,
    pub path: PathBuf,
    pub bytes: u64,
}

/// Counts of a journal, for metrics.
#[derive(Clone, Debug)]
pub struct JournalStats {
    /// Oldest record kept (equal to `next_seq` when there is none).
    pub first_seq: u64,
    pub next_seq: u64,
    pub segments: usize,
    /// Bytes of every segment file.
    pub bytes: u64,
    /// Records appended since open.
    pub appends: u64,
    /// Appends that failed to write (the record was not appended).
    pub write_errors: u64,
    /// `fdatasync` calls that failed.
    pub sync_errors: u64,
    /// `fdatasync` latency, ns (its count is the number of syncs).
    pub fsync: Latency,
    /// Every record up to this one is on stable storage: written before
    /// an `fdatasync` that returned (0: none synced since open).
    pub synced_seq: u64,
    /// Torn or corrupt tails cut when the journal was opened.
    pub repairs: u64,
    pub repaired_bytes: u64,
    /// Segments removed by retention since open.
    pub segments_removed: u64,
}

/// Segments removed by one retention pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retained {
    pub removed: usize,
    pub bytes: u64,
}

/// The journal's segments and end at one moment: makes readers of what
/// was appended up to then, without the [`Journal`] itself (so without
/// waiting for its writer). Cheap to clone.
#[derive(Clone, Debug)]
pub struct JournalExtent {
    dir: Arc<Path>,
    /// First sequence numbers of the segments, ascending; never empty.
    segments: Arc<[u64]>,
    next_seq: u64,
}

impl JournalExtent {
    /// The oldest record kept then; equal to [`JournalExtent::next_seq`]
    /// when there was none.
    pub fn first_seq(&self) -> u64 {
        self.segments.first().copied().unwrap_or(self.next_seq)
    }

    /// The sequence number the next record would carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// A reader of the records from `from_seq` up to this extent's end.
    /// Retention may have removed a segment since: the reader then says
    /// so ([`JournalError::Removed`]) when it gets there.
    ///
    /// # Errors
    /// `from_seq` is older than the oldest record kept, or beyond
    /// [`JournalExtent::next_seq`].
    pub fn reader(&self, from_seq: u64) -> Result<JournalReader, JournalError> {
        let first_seq = self.first_seq();
        if from_seq < first_seq {
            return Err(JournalError::TooOld { from_seq, first_seq });
        }
        if from_seq > self.next_seq {
            return Err(JournalError::Ahead {
                from_seq,
                next_seq: self.next_seq,
            });
        }
        Ok(JournalReader::new(
            self.dir.clone(),
            self.segments.clone(),
            from_seq,
            self.next_seq,
        ))
    }
}

/// The journal's synced watermark, readable without the journal (and so
/// without waiting for its writer): every record up to
/// [`SyncedSeq::get`] was written before an `fdatasync` that returned.
#[derive(Clone, Debug)]
pub struct SyncedSeq(Arc<SyncMetrics>);

impl SyncedSeq {
    /// The newest record known to be on stable storage (0: none since the
    /// journal was opened).
    pub fn get(&self) -> u64 {
        self.0.synced_seq()
    }

    /// Tests: from now on every `fdatasync` is held once it has returned
    /// (before it counts as done), until the hold is dropped.
    #[cfg(test)]
    pub(crate) fn hold_syncs(&self) -> SyncHold {
        self.0.gate.close();
        SyncHold(self.0.clone())
    }

    /// Tests: waits (at most `within`) until a sync is held; whether one is.
    #[cfg(test)]
    pub(crate) fn wait_for_held_sync(&self, within: Duration) -> bool {
        self.0.gate.wait_for_held(within)
    }
}

/// Tests: syncs are held while this lives ([`SyncedSeq::hold_syncs`]), also
/// when a test fails (so the writer is not left waiting).
#[cfg(test)]
pub(crate) struct SyncHold(Arc<SyncMetrics>);

#[cfg(test)]
impl Drop for SyncHold {
    fn drop(&mut self) {
        self.0.gate.open();
    }
}

/// An open journal: the writer. Readers are made with
/// [`Journal::reader`] (or from a [`JournalExtent`]) and work on their own
/// file handles.
pub struct Journal {
    dir: PathBuf,
    /// `dir`, shared with extents and readers.
    shared_dir: Arc<Path>,
    config: JournalConfig,
    /// Oldest first; the last one is being written.
    segments: Vec<Segment>,
    /// The first sequence numbers of `segments`, shared with extents;
    /// rebuilt when a segment is added or removed.
    firsts: Arc<[u64]>,
    /// The last segment, open for appending.
    active: Arc<File>,
    next_seq: u64,
    /// Framed records not yet written: one record, or a batch's records
    /// for the active segment.
    frame: Vec<u8>,
    /// With [`FsyncPolicy::Always`]: records were written since the last
    /// `fdatasync`.
    unsynced: bool,
    /// Set when a failed write may have left part of a record behind:
    /// the active segment's good length, restored before the next append.
    torn_at: Option<u64>,
    recovery: Recovery,
    appends: u64,
    write_errors: u64,
    segments_removed: u64,
    sync_metrics: Arc<SyncMetrics>,
    syncer: Option<Syncer>,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("dir", &self.dir)
            .field("config", &self.config)
            .field("first_seq", &self.first_seq())
            .field("next_seq", &self.next_seq)
            .field("segments", &self.segments.len())
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// Opens (or creates) the journal in `dir`: verifies every segment,
    /// cuts a torn or corrupt tail, applies retention and, with an
    /// interval policy, starts the background sync.
    ///
    /// # Errors
    /// An invalid `config`, a segment of another format version, or an I/O
    /// error (the folder or a segment cannot be read, repaired or created).
    pub fn open(dir: &Path, config: JournalConfig) -> Result<Journal, JournalError> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(JournalError::Config(problems));
        }
        let (segments, recovery) = recover::recover(dir, config.fsync != FsyncPolicy::Never)?;
        let active_path = &segments.last().expect("recovery leaves a segment").path;
        let active = OpenOptions::new()
            .append(true)
            .open(active_path)
            .map_err(io_error(active_path, "open for appending"))?;
        let active = Arc::new(active);
        let sync_metrics = Arc::new(SyncMetrics::new());
        let syncer = match config.fsync {
            FsyncPolicy::Interval(every) => Some(Syncer::start(
                every,
                active.clone(),
                active_path.clone(),
                sync_metrics.clone(),
            )?),
            FsyncPolicy::Always | FsyncPolicy::Never => None,
        };
        let firsts = segments.iter().map(|s| s.first_seq).collect();
        let mut journal = Journal {
            dir: dir.to_path_buf(),
            shared_dir: Arc::from(dir),
            config,
            next_seq: recovery.next_seq,
            segments,
            firsts,
            active,
            frame: Vec::with_capacity(512),
            unsynced: false,
            torn_at: None,
            recovery,
            appends: 0,
            write_errors: 0,
            segments_removed: 0,
            sync_metrics,
            syncer,
        };
        let retained = journal.enforce_retention(SystemTime::now())?;
        journal.recovery.removed_by_retention = retained.removed;
        journal.recovery.first_seq = journal.first_seq();
        journal.recovery.segments = journal.segments.len();
        Ok(journal)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &JournalConfig {
        &self.config
    }

    /// What opening found and repaired.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// The oldest record kept; equal to [`Journal::next_seq`] when the
    /// journal holds no record.
    pub fn first_seq(&self) -> u64 {
        self.segments[0].first_seq
    }

    /// The sequence number the next append must carry.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The newest record's sequence number; `None` when there is none.
    pub fn last_seq(&self) -> Option<u64> {
        (self.next_seq > self.first_seq()).then(|| self.next_seq - 1)
    }

    pub fn segments(&self) -> Vec<SegmentInfo> {
        self.segments
            .iter()
            .map(|s| SegmentInfo {
                first_seq: s.first_seq,
                path: s.path.clone(),
                bytes: s.bytes,
            })
            .collect()
    }

    /// Bytes of every segment file.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Appends the record `seq` with `payload`. On return it has reached
    /// the OS; with [`FsyncPolicy::Always`] it is also on stable storage (a
    /// failed `fdatasync` is logged and counted, not returned: the record
    /// is appended either way).
    ///
    /// # Errors
    /// `seq` is not [`Journal::next_seq`], the payload is larger than
    /// [`MAX_PAYLOAD`], or the record could not be written; the journal is
    /// then as it was.
    pub fn append(&mut self, seq: u64, payload: &[u8]) -> Result<(), JournalError> {
        self.append_batch(seq, [payload]).map_err(|e| e.error)?;
        self.commit();
        Ok(())
    }

    /// Appends the records `first_seq`, `first_seq + 1`, … with
    /// `payloads`, in one `write` per segment the batch touches. On return
    /// every record appended has reached the OS, but the `always` policy's
    /// `fdatasync` is left to [`Journal::commit`], once for the whole batch
    /// (a segment closed on the way is synced as it closes). Returns the
    /// records appended.
    ///
    /// # Errors
    /// `first_seq` is not [`Journal::next_seq`], a payload is larger than
    /// [`MAX_PAYLOAD`], or a write failed: the records before the one that
    /// could not be appended were ([`BatchError::appended`]), and the
    /// journal ends after them.
    pub fn append_batch<'p>(
        &mut self,
        first_seq: u64,
        payloads: impl IntoIterator<Item = &'p [u8]>,
    ) -> Result<usize, BatchError> {
        if first_seq != self.next_seq {
            return Err(BatchError {
                appended: 0,
                error: JournalError::OutOfOrder {
                    expected: self.next_seq,
                    got: first_seq,
                },
            });
        }
        self.restore_torn_tail()
            .map_err(|error| BatchError { appended: 0, error })?;
        self.frame.clear();
        let mut appended = 0;
        let mut staged = 0;
        for (seq, payload) in (first_seq..).zip(payloads) {
            if payload.len() > MAX_PAYLOAD {
                let error = JournalError::TooLarge {
                    seq,
                    len: payload.len(),
                };
                return match self.write_staged(staged) {
                    Ok(()) => Err(BatchError {
                        appended: appended + staged,
                        error,
                    }),
                    Err(error) => Err(BatchError { appended, error }),
                };
            }
            let size = (record::RECORD_HEAD + payload.len()) as u64;
            let active = self.segments.last().expect("a segment is active").bytes + self.frame.len() as u64;
            if active > record::HEADER_LEN && active + size > self.config.segment_bytes {
                self.write_staged(staged)
                    .map_err(|error| BatchError { appended, error })?;
                appended += staged;
                staged = 0;
                if let Err(error) = self.roll(seq) {
                    self.write_errors += 1;
                    return Err(BatchError { appended, error });
                }
            }
            record::encode_after(seq, payload, &mut self.frame);
            staged += 1;
        }
        self.write_staged(staged)
            .map_err(|error| BatchError { appended, error })?;
        Ok(appended + staged)
    }

    /// Writes the `records` framed in `frame` to the active segment in one
    /// `write`. On error none of them is appended.
    fn write_staged(&mut self, records: usize) -> Result<(), JournalError> {
        if records == 0 {
            return Ok(());
        }
        let active = self.segments.last_mut().expect("a segment is active");
        if let Err(source) = (&*self.active).write_all(&self.frame) {
            self.write_errors += 1;
            self.frame.clear();
            // Take back whatever part of the records was written.
            if self.active.set_len(active.bytes).is_err() {
                self.torn_at = Some(active.bytes);
            }
            return Err(JournalError::Io {
                path: active.path.clone(),
                op: "append a record",
                source,
            });
        }
        active.bytes += self.frame.len() as u64;
        self.frame.clear();
        self.next_seq += records as u64;
        self.appends += records as u64;
        match &self.syncer {
            Some(syncer) => syncer.mark_dirty(self.next_seq - 1),
            None => self.unsynced = self.config.fsync == FsyncPolicy::Always,
        }
        Ok(())
    }

    /// With [`FsyncPolicy::Always`], one `fdatasync` for everything written
    /// since the last (a failure is logged and counted: the records are
    /// appended either way); returns whether one ran. Nothing with the
    /// other policies: the background sync or the OS sees to them.
    pub fn commit(&mut self) -> bool {
        if !self.unsynced {
            return false;
        }
        self.unsynced = false;
        let path = &self.segments.last().expect("a segment is active").path;
        if self.sync_metrics.sync(&self.active, path) {
            self.sync_metrics.mark_synced(self.next_seq - 1);
        }
        true
    }

    /// The newest record known to be on stable storage (0: none synced
    /// since open); see [`SyncedSeq`].
    pub fn synced_seq(&self) -> u64 {
        self.sync_metrics.synced_seq()
    }

    /// A handle on the synced watermark that does not need the journal.
    pub fn synced_watch(&self) -> SyncedSeq {
        SyncedSeq(self.sync_metrics.clone())
    }

    /// Forces what was appended to stable storage now, whatever the
    /// policy.
    ///
    /// # Errors
    /// `fdatasync` failed.
    pub fn sync(&mut self) -> Result<(), JournalError> {
        let path = &self.segments.last().expect("a segment is active").path;
        let started = Instant::now();
        self.active.sync_data().map_err(|source| {
            self.sync_metrics.errors.fetch_add(1, Ordering::Relaxed);
            JournalError::Io {
                path: path.clone(),
                op: "fdatasync",
                source,
            }
        })?;
        self.sync_metrics.record(started.elapsed());
        self.sync_metrics.mark_synced(self.next_seq - 1);
        self.unsynced = false;
        Ok(())
    }

    /// Makes `next_seq` the sequence number of the next record, when it is
    /// past the journal's end: the records in between are lost (a
    /// checkpoint counted them, the disk did not keep them), and numbering
    /// must not reuse their numbers. A new segment starts at `next_seq`,
    /// with a gap marker ([`record::gap_path`], written and synced first)
    /// so that opening the journal keeps it; readers that reach the gap
    /// say so ([`JournalError::Gap`]). A journal with no record simply
    /// starts at `next_seq`. Returns whether it moved.
    ///
    /// # Errors
    /// The marker or the segment could not be written; the journal is as
    /// it was.
    pub fn skip_to(&mut self, next_seq: u64) -> Result<bool, JournalError> {
        if next_seq <= self.next_seq {
            return Ok(false);
        }
        let empty = self.segments.len() == 1 && self.segments[0].bytes == record::HEADER_LEN;
        if !empty {
            let marker = record::gap_path(&self.dir, next_seq);
            let text = format!(
                "seq {} to {} were lost before they reached the disk; numbering goes on from {next_seq}\n",
                self.next_seq,
                next_seq - 1
            );
            let mut file = File::create(&marker).map_err(io_error(&marker, "create a gap marker"))?;
            file.write_all(text.as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(io_error(&marker, "write a gap marker"))?;
        }
        self.roll(next_seq)?;
        if empty {
            let gone = self.segments.remove(0);
            remove_file_if_there(&gone.path)?;
            self.firsts = self.segments.iter().map(|s| s.first_seq).collect();
        }
        recover::sync_dir(&self.dir)?;
        tracing::warn!(
            lost_from = self.next_seq,
            lost_to = next_seq - 1,
            next_seq,
            "Journal: numbering goes on after records it does not hold (lost before they reached the disk)."
        );
        self.next_seq = next_seq;
        Ok(true)
    }

    /// A reader of the records from `from_seq` up to the current end.
    ///
    /// # Errors
    /// `from_seq` is older than the oldest record kept, or beyond
    /// [`Journal::next_seq`].
    pub fn reader(&self, from_seq: u64) -> Result<JournalReader, JournalError> {
        self.extent().reader(from_seq)
    }

    /// The segments and the end as they are now. Allocates nothing.
    pub fn extent(&self) -> JournalExtent {
        JournalExtent {
            dir: self.shared_dir.clone(),
            segments: self.firsts.clone(),
            next_seq: self.next_seq,
        }
    }

    /// Removes the oldest segments while the journal is larger than
    /// `retain_bytes` or the oldest was last written more than
    /// `retain_age` before `now`. Never the segment being written.
    ///
    /// # Errors
    /// A segment could not be removed (those before it were).
    pub fn enforce_retention(&mut self, now: SystemTime) -> Result<Retained, JournalError> {
        let mut retained = Retained::default();
        while self.segments.len() > 1 {
            let oldest = &self.segments[0];
            let too_big = self.bytes() > self.config.retain_bytes;
            let too_old = oldest
                .closed_at
                .and_then(|at| now.duration_since(at).ok())
                .is_some_and(|age| age > self.config.retain_age);
            if !too_big && !too_old {
                break;
            }
            match fs::remove_file(&oldest.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(JournalError::Io {
                        path: oldest.path.clone(),
                        op: "remove a segment past retention",
                        source,
                    })
                }
            }
            let gone = self.segments.remove(0);
            // A gap marker goes with its segment.
            let _ = remove_file_if_there(&record::gap_path(&self.dir, gone.first_seq));
            tracing::info!(
                file = %gone.path.display(),
                bytes = gone.bytes,
                first_seq = gone.first_seq,
                oldest_kept = self.first_seq(),
                reason = if too_big { "size" } else { "age" },
                "Journal segment removed by retention."
            );
            retained.removed += 1;
            retained.bytes += gone.bytes;
            self.segments_removed += 1;
            self.firsts = self.segments.iter().map(|s| s.first_seq).collect();
        }
        Ok(retained)
    }

    pub fn stats(&self) -> JournalStats {
        JournalStats {
            first_seq: self.first_seq(),
            next_seq: self.next_seq,
            segments: self.segments.len(),
            bytes: self.bytes(),
            appends: self.appends,
            write_errors: self.write_errors,
            sync_errors: self.sync_metrics.errors.load(Ordering::Relaxed),
            fsync: self.sync_metrics.latency(),
            synced_seq: self.sync_metrics.synced_seq(),
            repairs: u64::from(self.recovery.cut.is_some()),
            repaired_bytes: self.recovery.cut.as_ref().map_or(0, |c| c.bytes_cut),
            segments_removed: self.segments_removed,
        }
    }

    /// Truncates the active segment back to its last good record after a
    /// write that failed and could not be taken back at once.
    fn restore_torn_tail(&mut self) -> Result<(), JournalError> {
        if let Some(len) = self.torn_at {
            let path = &self.segments.last().expect("a segment is active").path;
            self.active
                .set_len(len)
                .map_err(io_error(path, "truncate a partly written record"))?;
            self.torn_at = None;
        }
        Ok(())
    }

    /// Closes the active segment and starts `seq`'s. On error the active
    /// segment stays as it was.
    fn roll(&mut self, seq: u64) -> Result<(), JournalError> {
        let durable = self.config.fsync != FsyncPolicy::Never;
        if durable {
            let path = &self.segments.last().expect("a segment is active").path;
            if self.sync_metrics.sync(&self.active, path) {
                self.sync_metrics.mark_synced(self.next_seq - 1);
            }
            self.unsynced = false;
        }
        let path = record::segment_path(&self.dir, seq);
        let file = recover::create_segment(&path, durable)?;
        if durable {
            recover::sync_dir(&self.dir)?;
        }
        let file = Arc::new(file);
        if let Some(syncer) = &self.syncer {
            syncer.switch(file.clone(), path.clone());
        }
        self.active = file;
        let closed = self.segments.last_mut().expect("a segment is active");
        closed.closed_at = Some(SystemTime::now());
        self.segments.push(Segment {
            first_seq: seq,
            path,
            bytes: record::HEADER_LEN,
            closed_at: None,
        });
        self.firsts = self.segments.iter().map(|s| s.first_seq).collect();
        if let Err(error) = self.enforce_retention(SystemTime::now()) {
            tracing::warn!(%error, "Journal retention failed; will try again at the next segment.");
        }
        Ok(())
    }
}

/// Removes a file; one already gone is fine.
fn remove_file_if_there(path: &Path) -> Result<(), JournalError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error(path, "delete")(e)),
        _ => Ok(()),
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        if let Some(syncer) = self.syncer.take() {
            syncer.stop();
        }
        if self.config.fsync != FsyncPolicy::Never {
            if let Err(error) = self.sync() {
                tracing::error!(%error, "Journal: final sync failed.");
            }
        }
    }
}

#[cfg(test)]
mod tests;
