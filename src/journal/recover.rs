//! Opening a journal folder: every segment is verified in order; the first
//! damage (a torn or corrupt record, a bad header, a segment that does not
//! continue the numbering without a gap marker saying it skips on purpose)
//! cuts the journal there: that file is truncated
//! at its last good record and every later segment is deleted, so what
//! remains is exactly the valid prefix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};

use super::record::{self, Header, Next, HEADER_LEN};
use super::{io_error, JournalError, Segment};

/// What opening a journal found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// The oldest record kept, after retention (equal to `next_seq` when
    /// there is none).
    pub first_seq: u64,
    /// The sequence number the next record will carry.
    pub next_seq: u64,
    /// Segments kept, after retention.
    pub segments: usize,
    /// The damaged tail that was cut, if any.
    pub cut: Option<TailCut>,
    /// Segments removed by retention at open.
    pub removed_by_retention: usize,
    /// Gaps kept on purpose ([`super::Journal::skip_to`]): each the first
    /// sequence number missing and the first one after the gap.
    pub gaps: Vec<(u64, u64)>,
}

/// A torn or corrupt tail cut at open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailCut {
    /// The segment where the damage starts.
    pub file: PathBuf,
    /// Offset in that file of the first byte removed.
    pub offset: u64,
    /// Bytes removed: the rest of that file and every later segment.
    pub bytes_cut: u64,
    /// Later segments deleted.
    pub segments_deleted: usize,
    pub reason: String,
}

/// One segment's verification.
struct Scan {
    /// Bytes of header and good records.
    good_len: u64,
    file_len: u64,
    /// After the last good record.
    next_seq: u64,
    /// The first damage: its reason (at `good_len`).
    damage: Option<String>,
}

/// Verifies and repairs the segments in `dir` (created if missing);
/// returns them, oldest first. An empty folder gets a first segment for
/// seq 1.
pub(super) fn recover(dir: &Path, durable: bool) -> Result<(Vec<Segment>, Recovery), JournalError> {
    fs::create_dir_all(dir).map_err(io_error(dir, "create the journal folder"))?;
    let listed = list_segments(dir)?;
    let mut segments: Vec<Segment> = Vec::with_capacity(listed.len());
    // After the last good record so far.
    let mut next_seq: Option<u64> = None;
    let mut cut: Option<TailCut> = None;
    let mut gaps = Vec::new();
    let mut payload = Vec::new();
    for (i, (first_seq, path)) in listed.iter().enumerate() {
        let mut scan = scan_segment(path, *first_seq, &mut payload)?;
        let mut keep_file = true;
        let marked_gap = next_seq.is_some_and(|e| e < *first_seq) && record::gap_path(dir, *first_seq).exists();
        if let (true, Some(expected)) = (marked_gap, next_seq) {
            // A gap made on purpose (`Journal::skip_to`): kept.
            gaps.push((expected, *first_seq));
        } else if let Some(expected) = next_seq.filter(|e| e != first_seq) {
            // The name breaks the numbering: the whole file goes.
            scan.damage = Some(format!(
                "segment starts at seq {first_seq} but the one before it ends at seq {}",
                expected - 1
            ));
            scan.good_len = 0;
            keep_file = false;
        }
        let Some(reason) = scan.damage else {
            segments.push(segment_of(path, *first_seq, scan.good_len)?);
            next_seq = Some(scan.next_seq);
            continue;
        };
        let later = &listed[i + 1..];
        let mut bytes_cut = scan.file_len - scan.good_len;
        for (later_first, later_path) in later {
            bytes_cut += fs::metadata(later_path).map_or(0, |m| m.len());
            remove(later_path)?;
            remove(&record::gap_path(dir, *later_first))?;
        }
        if keep_file {
            let good_len = repair(path, scan.good_len)?;
            segments.push(segment_of(path, *first_seq, good_len)?);
            next_seq = Some(scan.next_seq);
        } else {
            remove(path)?;
        }
        let segments_deleted = later.len() + usize::from(!keep_file);
        tracing::warn!(
            file = %path.display(),
            offset = scan.good_len,
            bytes_cut,
            segments_deleted,
            %reason,
            "Journal: cut a torn or corrupt tail; every record before it is kept."
        );
        cut = Some(TailCut {
            file: path.clone(),
            offset: scan.good_len,
            bytes_cut,
            segments_deleted,
            reason,
        });
        break;
    }
    if segments.is_empty() {
        let path = record::segment_path(dir, 1);
        create_segment(&path, durable)?;
        segments.push(Segment {
            first_seq: 1,
            path,
            bytes: HEADER_LEN,
            closed_at: None,
        });
        next_seq = Some(1);
    }
    if durable && (cut.is_some() || listed.is_empty()) {
        sync_dir(dir)?;
    }
    let last = segments.last_mut().expect("one segment at least");
    last.closed_at = None;
    let recovery = Recovery {
        first_seq: segments[0].first_seq,
        next_seq: next_seq.unwrap_or(1),
        segments: segments.len(),
        cut,
        removed_by_retention: 0,
        gaps,
    };
    Ok((segments, recovery))
}

fn segment_of(path: &Path, first_seq: u64, bytes: u64) -> Result<Segment, JournalError> {
    let modified = fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(io_error(path, "read the modification time of"))?;
    Ok(Segment {
        first_seq,
        path: path.to_path_buf(),
        bytes,
        closed_at: Some(modified),
    })
}

/// The segment files in `dir`, by first sequence number. Other files are
/// left alone.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir, "list the journal folder"))? {
        let entry = entry.map_err(io_error(dir, "list the journal folder"))?;
        let name = entry.file_name();
        if let Some(first_seq) = name.to_str().and_then(record::parse_segment_name) {
            out.push((first_seq, entry.path()));
        }
    }
    out.sort_unstable_by_key(|(first_seq, _)| *first_seq);
    Ok(out)
}

/// Reads a segment through, checking the header, every checksum and that
/// records are numbered from `first_seq` without a gap.
fn scan_segment(path: &Path, first_seq: u64, payload: &mut Vec<u8>) -> Result<Scan, JournalError> {
    let file = File::open(path).map_err(io_error(path, "open"))?;
    let file_len = file.metadata().map_err(io_error(path, "read the size of"))?.len();
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut head = [0u8; HEADER_LEN as usize];
    let got = record::read_full(&mut r, &mut head).map_err(io_error(path, "read"))?;
    let mut scan = Scan {
        good_len: 0,
        file_len,
        next_seq: first_seq,
        damage: None,
    };
    match record::check_header(&head[..got]) {
        Header::Valid => scan.good_len = HEADER_LEN,
        Header::OtherVersion(version) => {
            return Err(JournalError::UnsupportedVersion {
                path: path.to_path_buf(),
                version,
            })
        }
        Header::Invalid => {
            scan.damage = Some(if got < head.len() {
                format!("the segment header is torn ({got} of {HEADER_LEN} bytes)")
            } else {
                "the segment header is not a journal header".into()
            });
            return Ok(scan);
        }
    }
    loop {
        match record::read_next(&mut r, payload).map_err(io_error(path, "read"))? {
            Next::Record { seq, bytes } => {
                if seq != scan.next_seq {
                    scan.damage = Some(format!("expected seq {}, found seq {seq}", scan.next_seq));
                    return Ok(scan);
                }
                scan.next_seq += 1;
                scan.good_len += bytes;
            }
            Next::End => return Ok(scan),
            Next::Torn { bytes } => {
                scan.damage = Some(format!("the last record is torn ({bytes} bytes of it)"));
                return Ok(scan);
            }
            Next::Corrupt { reason } => {
                scan.damage = Some(reason);
                return Ok(scan);
            }
        }
    }
}

/// Truncates a damaged segment to its good length (a segment whose
/// header is damaged gets a fresh one: its name still says where the
/// numbering goes on); returns the new length.
fn repair(path: &Path, good_len: u64) -> Result<u64, JournalError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error(path, "open for repair"))?;
    if good_len >= HEADER_LEN {
        file.set_len(good_len).map_err(io_error(path, "truncate"))?;
        file.sync_all().map_err(io_error(path, "fsync"))?;
        return Ok(good_len);
    }
    file.set_len(0).map_err(io_error(path, "truncate"))?;
    (&file)
        .write_all(&record::header())
        .map_err(io_error(path, "write a segment header to"))?;
    file.sync_all().map_err(io_error(path, "fsync"))?;
    Ok(HEADER_LEN)
}

fn remove(path: &Path) -> Result<(), JournalError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error(path, "delete")(e)),
        _ => Ok(()),
    }
}

/// Creates a new segment holding only its header.
pub(super) fn create_segment(path: &Path, durable: bool) -> Result<File, JournalError> {
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(path)
        .map_err(io_error(path, "create segment"))?;
    file.write_all(&record::header())
        .map_err(io_error(path, "write a segment header to"))?;
    if durable {
        file.sync_data().map_err(io_error(path, "fdatasync"))?;
    }
    Ok(file)
}

/// Makes the folder's entries (created or deleted files) durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir, "fsync the folder"))
}
