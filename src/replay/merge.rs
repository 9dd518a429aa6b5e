//! Tick files merged into one stream in event-time order.
//!
//! A k-way merge: a min-heap holds at most one pending row per file, keyed
//! by (event time, file index), and each file is read one row at a time,
//! so memory does not grow with the files' length. Rows go out in runs:
//! a file's rows that come before every other file's pending row leave
//! together, with one heap operation per run (and a single file needs no
//! heap at all). Equal times come out in
//! file order, and a file's own rows in their order. A file that is not
//! sorted by time is merged as it is (its rows are not reordered); such
//! rows are counted, and the engine rejects those that are late for their
//! instrument.
//!
//! The readers do not number rows ([`TickReader::skip_numbering`]): for
//! files without a sequence column the [`super::Runner`] numbers ticks
//! per instrument in merged order.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::ReplayError;
use crate::tick_file::{FieldMapping, TickReader, TickRow};

/// How many bad rows are quoted in the summary.
pub const BAD_ROW_EXAMPLES: usize = 5;

/// Rows read at a time from a single file.
const BATCH_ROWS: usize = 1024;

/// What to do with a row that cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadRows {
    /// Stop the replay with the row's file, line and reason.
    Stop,
    /// Count it, quote the first few, and go on.
    Skip,
}

/// One input file.
struct Source {
    name: String,
    reader: TickReader<Box<dyn BufRead + Send>>,
    /// The last row's event time, to count rows out of time order.
    last_time_ns: i64,
}

/// The merged stream of several tick files.
pub struct Merge {
    sources: Vec<Source>,
    /// Pending rows, at most one per source, by (time, source).
    heap: BinaryHeap<Reverse<(i64, u32)>>,
    pending: Vec<Option<TickRow>>,
    /// Whether each source has been read from yet.
    primed: bool,
    bad_rows: BadRows,
    /// Rows skipped as unreadable.
    pub skipped_rows: u64,
    /// `file:line: reason` of the first skipped rows.
    pub skipped_examples: Vec<String>,
    /// Rows whose time is before the previous row's of the same file.
    pub unsorted_rows: u64,
    /// Compressed bytes read so far, over all files.
    bytes_read: Arc<AtomicU64>,
    bytes_total: u64,
    /// The rows of the last [`Merge::next_batch`].
    batch: Vec<TickRow>,
    /// The error that ended the last batch early, returned by the next.
    pending_error: Option<ReplayError>,
}

/// Counts the bytes read through it.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl Merge {
    /// Opens every file (each with `mapping`) and reads its header.
    ///
    /// # Errors
    /// [`ReplayError::Open`] for the first file that cannot be opened or
    /// whose header does not fit the mapping.
    pub fn open(files: &[PathBuf], mapping: &FieldMapping, bad_rows: BadRows) -> Result<Merge, ReplayError> {
        let bytes_read = Arc::new(AtomicU64::new(0));
        let mut bytes_total = 0;
        let mut sources = Vec::with_capacity(files.len());
        for path in files {
            let name = path.display().to_string();
            let mut open = |path: &Path| -> Result<_, crate::tick_file::TickFileError> {
                let file = File::open(path).map_err(|e| crate::tick_file::TickFileError {
                    line: 0,
                    kind: e.into(),
                })?;
                bytes_total += file.metadata().map(|m| m.len()).unwrap_or(0);
                let counting = Counting {
                    inner: file,
                    count: bytes_read.clone(),
                };
                TickReader::from_read(counting, mapping)
            };
            let mut reader = open(path).map_err(|source| ReplayError::Open {
                file: name.clone(),
                source,
            })?;
            reader.skip_numbering();
            sources.push(Source {
                name,
                reader,
                last_time_ns: i64::MIN,
            });
        }
        Ok(Merge {
            pending: vec![None; sources.len()],
            heap: BinaryHeap::with_capacity(sources.len()),
            sources,
            primed: false,
            bad_rows,
            skipped_rows: 0,
            skipped_examples: Vec::new(),
            unsorted_rows: 0,
            bytes_read,
            bytes_total,
            batch: Vec::with_capacity(BATCH_ROWS),
            pending_error: None,
        })
    }

    /// Merges already opened readers (named for messages), for tests and
    /// other byte sources.
    pub fn from_readers(readers: Vec<(String, TickReader<Box<dyn BufRead + Send>>)>, bad_rows: BadRows) -> Merge {
        let sources: Vec<Source> = readers
            .into_iter()
            .map(|(name, mut reader)| {
                reader.skip_numbering();
                Source {
                    name,
                    reader,
                    last_time_ns: i64::MIN,
                }
            })
            .collect();
        Merge {
            pending: vec![None; sources.len()],
            heap: BinaryHeap::with_capacity(sources.len()),
            sources,
            primed: false,
            bad_rows,
            skipped_rows: 0,
            skipped_examples: Vec::new(),
            unsorted_rows: 0,
            bytes_read: Arc::new(AtomicU64::new(0)),
            bytes_total: 0,
            batch: Vec::with_capacity(BATCH_ROWS),
            pending_error: None,
        }
    }

    /// Number of files.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The name of file `source`.
    pub fn name(&self, source: u32) -> &str {
        &self.sources[source as usize].name
    }

    /// The symbol of instrument `index` in file `source`.
    pub fn symbol(&self, source: u32, index: u32) -> &str {
        self.sources[source as usize].reader.symbol(index).map_or("", |s| s)
    }

    /// Whether file `source` numbers its own ticks.
    pub fn has_seq(&self, source: u32) -> bool {
        self.sources[source as usize].reader.has_seq()
    }

    /// Compressed bytes read so far and the files' total size.
    pub fn bytes(&self) -> (u64, u64) {
        (self.bytes_read.load(Ordering::Relaxed), self.bytes_total)
    }

    /// Reads the next rows of the merged stream into [`Merge::batch`] and
    /// returns the index of their file; `None` when every file is
    /// exhausted. A single file is read [`BATCH_ROWS`] rows at a time;
    /// of several, the run of rows of one file that come before any other
    /// file's next row (up to [`BATCH_ROWS`]), one heap operation a run.
    /// The same rows, errors and counts as [`Merge::next_row`], which it
    /// must not be mixed with; an error comes after the rows before it.
    ///
    /// # Errors
    /// As [`Merge::next_row`].
    pub fn next_batch(&mut self) -> Result<Option<u32>, ReplayError> {
        self.batch.clear();
        if let Some(error) = self.pending_error.take() {
            return Err(error);
        }
        if self.sources.len() != 1 {
            return self.fill_run();
        }
        self.fill_batch();
        if self.batch.is_empty() {
            return match self.pending_error.take() {
                Some(error) => Err(error),
                None => Ok(None),
            };
        }
        Ok(Some(0))
    }

    /// Fills the batch with the next run of rows of one of several files,
    /// as [`Merge::next_row`] would give them one by one: the file with the
    /// smallest pending (time, file), and its rows after that while they
    /// stay below every other file's pending row.
    fn fill_run(&mut self) -> Result<Option<u32>, ReplayError> {
        self.prime()?;
        let Some(Reverse((_, source))) = self.heap.pop() else {
            return Ok(None);
        };
        let Some(row) = self.pending[source as usize].take() else {
            return Ok(None);
        };
        self.batch.push(row);
        // The smallest (time, file) of the other files' pending rows.
        let bound = self.heap.peek().map(|Reverse(key)| *key);
        loop {
            match self.read(source) {
                Ok(None) => break,
                Ok(Some(row)) => {
                    let key = (row.event_time_ns, source);
                    if self.batch.len() < BATCH_ROWS && bound.is_none_or(|bound| key < bound) {
                        self.batch.push(row);
                        continue;
                    }
                    self.heap.push(Reverse(key));
                    self.pending[source as usize] = Some(row);
                    break;
                }
                Err(error) => {
                    // The rows before it go first, as row by row.
                    self.pending_error = Some(error);
                    break;
                }
            }
        }
        Ok(Some(source))
    }

    /// Reads each file's first row into the heap, once.
    fn prime(&mut self) -> Result<(), ReplayError> {
        if !self.primed {
            self.primed = true;
            for i in 0..self.sources.len() as u32 {
                self.refill(i)?;
            }
        }
        Ok(())
    }

    /// The rows of the last [`Merge::next_batch`], in order.
    pub fn batch(&self) -> &[TickRow] {
        &self.batch
    }

    /// Fills the batch from the only file, as [`Merge::read`] would row by
    /// row; an error that stops the replay is kept for the next batch.
    fn fill_batch(&mut self) {
        let src = &mut self.sources[0];
        while let Some(source) = src.reader.read_rows(&mut self.batch, BATCH_ROWS) {
            if source.is_fatal() || self.bad_rows == BadRows::Stop {
                self.pending_error = Some(ReplayError::Row {
                    file: src.name.clone(),
                    row: source,
                });
                break;
            }
            self.skipped_rows += 1;
            if self.skipped_examples.len() < BAD_ROW_EXAMPLES {
                self.skipped_examples
                    .push(format!("{}:{}: {}", src.name, source.line, source.kind));
            }
        }
        for row in &self.batch {
            if row.event_time_ns < src.last_time_ns {
                self.unsorted_rows += 1;
            }
            src.last_time_ns = row.event_time_ns;
        }
    }

    /// The next row of the merged stream and the index of its file; `None`
    /// when every file is exhausted.
    ///
    /// # Errors
    /// An unreadable row when bad rows stop the replay; a failed read or a
    /// line that cannot be recovered from always.
    #[inline]
    pub fn next_row(&mut self) -> Result<Option<(u32, TickRow)>, ReplayError> {
        if self.sources.len() == 1 {
            // One file: no heap.
            return Ok(self.read(0)?.map(|row| (0, row)));
        }
        if let Some(error) = self.pending_error.take() {
            return Err(error);
        }
        self.prime()?;
        let Some(Reverse((_, source))) = self.heap.pop() else {
            return Ok(None);
        };
        let row = self.pending[source as usize].take();
        // The row read before an error that stops the replay still counts;
        // the error comes next.
        if let Err(error) = self.refill(source) {
            self.pending_error = Some(error);
        }
        Ok(row.map(|row| (source, row)))
    }

    fn refill(&mut self, source: u32) -> Result<(), ReplayError> {
        if let Some(row) = self.read(source)? {
            self.heap.push(Reverse((row.event_time_ns, source)));
            self.pending[source as usize] = Some(row);
        }
        Ok(())
    }

    /// The next good row of one file, skipping (or stopping at) bad ones.
    #[inline]
    fn read(&mut self, source: u32) -> Result<Option<TickRow>, ReplayError> {
        let src = &mut self.sources[source as usize];
        loop {
            match src.reader.next_row() {
                None => return Ok(None),
                Some(Ok(row)) => {
                    if row.event_time_ns < src.last_time_ns {
                        self.unsorted_rows += 1;
                    }
                    src.last_time_ns = row.event_time_ns;
                    return Ok(Some(row));
                }
                Some(Err(source)) => {
                    if source.is_fatal() || self.bad_rows == BadRows::Stop {
                        return Err(ReplayError::Row {
                            file: src.name.clone(),
                            row: source,
                        });
                    }
                    self.skipped_rows += 1;
                    if self.skipped_examples.len() < BAD_ROW_EXAMPLES {
                        self.skipped_examples
                            .push(format!("{}:{}: {}", src.name, source.line, source.kind));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn reader(text: &str) -> TickReader<Box<dyn BufRead + Send>> {
        let boxed: Box<dyn BufRead + Send> = Box::new(Cursor::new(text.as_bytes().to_vec()));
        TickReader::new(boxed).unwrap()
    }

    /// A merge of `files`, named `f0`, `f1`, ...
    fn merge_of(files: &[impl AsRef<str>], bad: BadRows) -> Merge {
        let readers = files
            .iter()
            .enumerate()
            .map(|(i, text)| (format!("f{i}"), reader(text.as_ref())))
            .collect();
        Merge::from_readers(readers, bad)
    }

    fn merged(files: &[&str], bad: BadRows) -> (Vec<(u32, u64, i64)>, Merge) {
        let mut merge = merge_of(files, bad);
        let mut out = Vec::new();
        while let Some((source, row)) = merge.next_row().unwrap() {
            out.push((source, row.line, row.event_time_ns / 1_000_000));
        }
        (out, merge)
    }

    #[test]
    fn merges_by_time_then_file_then_row() {
        let a = "instrument,ts_ms,price\nX,1,1\nX,3,1\nX,3,1\nX,7,1\n";
        let b = "instrument,ts_ms,price\nY,0,1\nY,3,1\nY,8,1\n";
        let c = "instrument,ts_ms,price\n";
        let (rows, _) = merged(&[a, b, c], BadRows::Stop);
        assert_eq!(
            rows,
            [
                (1, 2, 0),
                (0, 2, 1),
                (0, 3, 3),
                (0, 4, 3),
                (1, 3, 3),
                (0, 5, 7),
                (1, 4, 8)
            ]
        );
    }

    #[test]
    fn bad_rows_stop_or_are_counted() {
        let a = "instrument,ts_ms,price\nX,1,1\nX,2,oops\nX,3,1\n";
        let readers = vec![("a.csv".to_string(), reader(a))];
        let mut merge = Merge::from_readers(readers, BadRows::Stop);
        assert!(merge.next_row().unwrap().is_some());
        let err = merge.next_row().unwrap_err().to_string();
        assert_eq!(err, "a.csv:3: price: not a finite decimal number");

        let (rows, merge) = merged(&[a, "instrument,ts_ms,price\nY,0,1\nY,,1\n"], BadRows::Skip);
        assert_eq!(rows.len(), 3);
        assert_eq!(merge.skipped_rows, 2);
        assert_eq!(
            merge.skipped_examples[0],
            "f1:3: ts_ms: `` is not a time (expected epoch milliseconds such as 1700000000000 or 1700000000000.25)"
        );
    }

    /// Every row of `files` (with its file and line), and the error that
    /// ended them, by `next_row` or by `next_batch`.
    fn all(files: &[String], bad: BadRows, batched: bool) -> (Vec<(u32, u64)>, Option<String>, u64, u64) {
        let mut merge = merge_of(files, bad);
        let mut rows = Vec::new();
        let error = loop {
            if batched {
                match merge.next_batch() {
                    Ok(Some(source)) => rows.extend(merge.batch().iter().map(|r| (source, r.line))),
                    Ok(None) => break None,
                    Err(e) => break Some(e.to_string()),
                }
            } else {
                match merge.next_row() {
                    Ok(Some((source, row))) => rows.push((source, row.line)),
                    Ok(None) => break None,
                    Err(e) => break Some(e.to_string()),
                }
            }
        };
        (rows, error, merge.skipped_rows, merge.unsorted_rows)
    }

    #[test]
    fn runs_of_one_file_come_out_as_row_by_row() {
        // Seeded files with ties, unsorted rows, bad rows and runs longer
        // than a batch.
        let mut state = 7u64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        let mut stopped = 0;
        for round in 0..20 {
            let files: Vec<String> = (0..1 + next(4))
                .map(|_| {
                    let mut text = String::from("instrument,ts_ms,price\n");
                    let mut t = next(5);
                    for _ in 0..next(3_000) {
                        t += [0, 0, 1, 2, 50, 3_000][next(6) as usize];
                        if next(500) == 0 {
                            text.push_str("X,late,1\n");
                        }
                        let t = if next(300) == 0 { t.saturating_sub(10) } else { t };
                        text.push_str(&format!("X{},{t},1\n", next(3)));
                    }
                    text
                })
                .collect();
            for bad in [BadRows::Skip, BadRows::Stop] {
                let one = all(&files, bad, false);
                let runs = all(&files, bad, true);
                assert_eq!(runs, one, "round {round}, {bad:?}");
                stopped += usize::from(one.1.is_some());
            }
        }
        assert!(stopped > 5, "{stopped}");
    }

    #[test]
    fn a_stopping_error_comes_after_every_row_before_it_merged_or_alone() {
        let bad = "instrument,ts_ms,price\nX,1,1\nX,2,1\nX,oops,1\nX,3,1\n".to_owned();
        let other = "instrument,ts_ms,price\nY,10,1\n".to_owned();
        let error = Some(
            "f0:4: ts_ms: `oops` is not a time (expected epoch milliseconds such as 1700000000000 or 1700000000000.25)"
                .to_owned(),
        );
        let alone = all(std::slice::from_ref(&bad), BadRows::Stop, false);
        assert_eq!((alone.0.as_slice(), &alone.1), (&[(0, 2), (0, 3)][..], &error));
        for batched in [false, true] {
            let (rows, stopped, _, _) = all(&[bad.clone(), other.clone()], BadRows::Stop, batched);
            assert_eq!(rows, [(0, 2), (0, 3)], "batched: {batched}");
            assert_eq!(stopped, error, "batched: {batched}");
        }
    }

    #[test]
    fn unsorted_rows_are_counted_not_reordered() {
        let (rows, merge) = merged(&["instrument,ts_ms,price\nX,5,1\nX,4,1\n"], BadRows::Stop);
        assert_eq!(rows.iter().map(|r| r.2).collect::<Vec<_>>(), [5, 4]);
        assert_eq!(merge.unsorted_rows, 1);
    }
}
