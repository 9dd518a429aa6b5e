//! Reading records from a sequence number on, with file handles of its
//! own, while the writer appends.
//!
//! A reader knows the segments and the end (the next sequence number) as
//! they were when it was made, and reads nothing past that end: a record
//! being appended meanwhile is never seen half-written. It finds the
//! segment holding its start by binary search on the segment names, then
//! scans that segment from its header.

use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::record::{self, Header, Next, HEADER_LEN};
use super::JournalError;

/// Records in sequence order, from a start up to a fixed end.
#[derive(Debug)]
pub struct JournalReader {
    dir: Arc<Path>,
    /// First sequence numbers of the segments, ascending.
    segments: Arc<[u64]>,
    /// The segment to open when the current one is done.
    next_segment: usize,
    file: Option<Open>,
    /// The next record to return.
    next: u64,
    /// Stop before this one.
    end: u64,
    payload: Vec<u8>,
}

#[derive(Debug)]
struct Open {
    path: PathBuf,
    r: BufReader<File>,
    offset: u64,
}

impl Open {
    fn corrupt(&self, reason: String) -> JournalError {
        JournalError::Corrupt {
            path: self.path.clone(),
            offset: self.offset,
            reason,
        }
    }
}

impl JournalReader {
    pub(super) fn new(dir: Arc<Path>, segments: Arc<[u64]>, from_seq: u64, end: u64) -> Self {
        // The last segment starting at or before `from_seq`.
        let next_segment = segments.partition_point(|&first| first <= from_seq).saturating_sub(1);
        JournalReader {
            dir,
            segments,
            next_segment,
            file: None,
            next: from_seq,
            end,
            payload: Vec::new(),
        }
    }

    /// The sequence number of the next record [`JournalReader::next_record`]
    /// returns.
    pub fn next_seq(&self) -> u64 {
        self.next
    }

    /// The end: the reader stops before this sequence number.
    pub fn end_seq(&self) -> u64 {
        self.end
    }

    /// Every record up to the end has been read.
    pub fn is_done(&self) -> bool {
        self.next >= self.end
    }

    /// The next record (its sequence number and payload), or `None` at the
    /// end.
    ///
    /// # Errors
    /// A segment was removed by retention before it was read
    /// ([`JournalError::Removed`]), a record is damaged or out of order, or
    /// an I/O error.
    pub fn next_record(&mut self) -> Result<Option<(u64, &[u8])>, JournalError> {
        if self.next >= self.end {
            return Ok(None);
        }
        loop {
            if self.file.is_none() {
                self.file = Some(self.open_next_segment()?);
            }
            let Some(open) = &mut self.file else {
                unreachable!("opened above")
            };
            let next = record::read_next(&mut open.r, &mut self.payload).map_err(|source| JournalError::Io {
                path: open.path.clone(),
                op: "read",
                source,
            })?;
            match next {
                Next::Record { seq, bytes } => {
                    if seq < self.next {
                        // Before the start, in the first segment read.
                        open.offset += bytes;
                        continue;
                    }
                    if seq != self.next {
                        return Err(open.corrupt(format!("expected seq {}, found seq {seq}", self.next)));
                    }
                    open.offset += bytes;
                    self.next += 1;
                    return Ok(Some((seq, &self.payload)));
                }
                Next::End => self.file = None,
                Next::Torn { bytes } => {
                    return Err(open.corrupt(format!(
                        "the file ends inside a record ({bytes} bytes of it) before seq {}",
                        self.next
                    )))
                }
                Next::Corrupt { reason } => return Err(open.corrupt(reason)),
            }
        }
    }

    fn open_next_segment(&mut self) -> Result<Open, JournalError> {
        let Some(&first) = self.segments.get(self.next_segment) else {
            return Err(JournalError::Corrupt {
                path: self.dir.to_path_buf(),
                offset: 0,
                reason: format!(
                    "no segment holds seq {} (the journal should reach {})",
                    self.next, self.end
                ),
            });
        };
        let path = record::segment_path(&self.dir, first);
        if first > self.next {
            // Segments are listed only once opening or `skip_to` accepted
            // them: a gap between two is one made on purpose.
            return Err(JournalError::Gap {
                from_seq: self.next,
                resume_seq: first,
            });
        }
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(JournalError::Removed { path, seq: self.next })
            }
            Err(source) => {
                return Err(JournalError::Io {
                    path,
                    op: "open",
                    source,
                })
            }
        };
        let mut r = BufReader::with_capacity(64 << 10, file);
        let mut head = [0u8; HEADER_LEN as usize];
        let got = record::read_full(&mut r, &mut head).map_err(|source| JournalError::Io {
            path: path.clone(),
            op: "read",
            source,
        })?;
        match record::check_header(&head[..got]) {
            Header::Valid => {}
            Header::OtherVersion(version) => return Err(JournalError::UnsupportedVersion { path, version }),
            Header::Invalid => {
                return Err(JournalError::Corrupt {
                    path,
                    offset: 0,
                    reason: "the segment header is damaged".into(),
                })
            }
        }
        self.next_segment += 1;
        Ok(Open {
            path,
            r,
            offset: HEADER_LEN,
        })
    }
}
