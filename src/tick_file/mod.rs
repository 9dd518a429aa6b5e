//! Streaming reader of CSV tick files: `airbag send` and `airbag replay`
//! read ticks through [`TickReader`].
//!
//! # Format
//!
//! A header row names the columns; their order is free and unknown columns
//! are ignored (a file may carry a venue's trade id alongside). Blank lines
//! and lines starting with `#` are skipped, before and after the header.
//! Fields are separated by commas and trimmed; quoting is not supported
//! (symbols, numbers and kinds never contain commas). `\r\n` line ends are
//! accepted.
//!
//! | column | required | meaning |
//! |---|---|---|
//! | `instrument` | yes, unless the mapping fixes a symbol | symbol, e.g. `BTC-USDT` |
//! | `ts_ms` or `ts_ns` | exactly one, unless the mapping names the time column | event time since the Unix epoch: milliseconds (integer, or with up to 6 fractional digits for sub-ms) or integer nanoseconds |
//! | `seq` | no | the source's per-instrument sequence number; without this column ticks are numbered 1, 2, 3, ... per instrument in file order |
//! | `kind` | no | `trade` (the default when the column is absent or the field empty), `quote`, `mark` or `index`; a file without `kind` and `price` but with `bid` and `ask` holds quotes |
//! | `price` | trade, mark, index | trade price, or the mark/index price |
//! | `size` | no | trade size; empty or absent means 0 |
//! | `side` | no | aggressor side of a trade: `buy`/`b`, `sell`/`s`, or empty |
//! | `bid`, `ask` | quote | best bid and ask |
//! | `bid_size`, `ask_size` | no | sizes at the best bid and ask; empty or absent means 0 |
//!
//! So the minimal file is
//!
//! ```text
//! instrument,ts_ms,price,size
//! BTC-USDT,1700000000000,65000.5,0.25
//! ```
//!
//! Other layouts are read through a [`FieldMapping`]: each [`Role`] can be
//! given another column name, the time its unit ([`TimeUnit`]: epoch s,
//! ms, µs, ns, ISO-8601, or auto), and files without an instrument column a
//! fixed symbol. A Binance trades file
//! (`local_ts_ns,event_time_ms,trade_time_ms,trade_id,price,qty,is_buyer_maker`)
//! reads with `symbol = "BTC-USDT"`, `time = "trade_time_ms"`,
//! `seq = "trade_id"`, `size = "qty"`, `buyer_maker = "is_buyer_maker"`.
//! The mapping knows nothing of CSV ([`mapping`]): it resolves against any
//! list of field names ([`FieldMapping::resolve`]), so a source of JSON
//! messages maps a venue's keys to roles with the same mapping file.
//!
//! Prices and sizes are exact decimals, read as [`crate::model::Fixed::parse`] reads them: `NaN`,
//! infinities, exponents and digits past the 8th decimal place are refused,
//! never rounded. The reader checks syntax only; whether a value makes
//! sense (a positive price, an uncrossed quote) is for
//! [`crate::ingest::validate_values`] or the server to judge, so that a file
//! of deliberately bad ticks can still be sent.
//!
//! # Cost
//!
//! Memory is constant in the file's length: one reused 1 MiB read block
//! plus one interned symbol (and counter) per distinct instrument. Rows
//! are parsed from bytes in place, without allocating or UTF-8 validation
//! (only a new instrument's symbol must be UTF-8). Rows of the common
//! shape (an instrument, an epoch time, price and size; see [`fast`]) are
//! read a word at a time straight from the block, the line end found on
//! the way; other rows go line by line through the general path
//! ([`row`]), which also names every error. [`TickReader::next_row`] gives
//! each row's instrument as a small per-file index ([`TickRow`], `Copy`),
//! which is what replay uses; the iterator gives [`TickRecord`]s sharing
//! their instrument's `Arc<str>`. Files whose first two bytes are the gzip
//! magic number are decompressed on the fly, whatever their name.

mod columns;
mod fast;
pub mod mapping;
mod row;
mod swar;
mod symbols;
pub mod time;

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use crate::model::{FixedError, TickKind, TickValues};
use columns::Layout;
use fast::{parse_fast, FastLayout, WINDOW};
use row::parse_row;
use symbols::Symbols;

pub use mapping::{ColumnMapping, FieldMapping, FieldRoles, MappingError, ResolveError, Role};
pub use time::{TimeError, TimeUnit};

/// Longest line accepted, in bytes; a longer one is an error (and skipped),
/// so a file without line ends cannot make the reader buffer it whole.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Read buffer size for files.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// Size of the block lines are split from in place; larger than
/// [`MAX_LINE_BYTES`] so that any acceptable line fits.
const READ_BLOCK_BYTES: usize = 1024 * 1024;

/// One tick read from a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TickRecord {
    /// 1-based line number in the (decompressed) file.
    pub line: u64,
    /// The symbol, shared by every record of the same instrument.
    pub instrument: Arc<str>,
    /// Event time, nanoseconds since the Unix epoch.
    pub event_time_ns: i64,
    /// From the `seq` column, or numbered per instrument in file order
    /// (0 after [`TickReader::skip_numbering`]).
    pub seq: u64,
    pub values: TickValues,
}

impl TickRecord {
    pub fn kind(&self) -> TickKind {
        self.values.kind()
    }
}

/// One tick read from a file, its instrument as an index into the reader's
/// symbols ([`TickReader::symbol`]): the allocation-free form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TickRow {
    /// 1-based line number in the (decompressed) file.
    pub line: u64,
    /// Index of the instrument in this reader, from 0 in order of first
    /// appearance.
    pub instrument: u32,
    /// Event time, nanoseconds since the Unix epoch.
    pub event_time_ns: i64,
    /// From the sequence column, or numbered per instrument in file order
    /// (0 after [`TickReader::skip_numbering`]).
    pub seq: u64,
    pub values: TickValues,
}

/// Why a file, its header or one row could not be read.
#[derive(Debug)]
pub struct TickFileError {
    /// 1-based line number; 0 when the file could not be opened at all.
    pub line: u64,
    pub kind: TickFileErrorKind,
}

impl TickFileError {
    fn at(line: u64, kind: TickFileErrorKind) -> Self {
        TickFileError { line, kind }
    }

    /// True when reading cannot go on past this error (I/O failures, a bad
    /// header or mapping); false when only this row is bad.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self.kind,
            TickFileErrorKind::Io(_)
                | TickFileErrorKind::NoHeader
                | TickFileErrorKind::DuplicateColumn(_)
                | TickFileErrorKind::MissingColumn(_)
                | TickFileErrorKind::TwoTimeColumns
                | TickFileErrorKind::Mapping(_)
        )
    }
}

impl fmt::Display for TickFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.kind)
        } else {
            write!(f, "line {}: {}", self.line, self.kind)
        }
    }
}

impl std::error::Error for TickFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.kind {
            TickFileErrorKind::Io(e) => Some(e),
            TickFileErrorKind::Value { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// What was wrong; see [`TickFileError`] for where.
#[derive(Debug, thiserror::Error)]
pub enum TickFileErrorKind {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("the file has no header row (expected columns such as `instrument,ts_ms,price,size`)")]
    NoHeader,
    #[error("column `{0}` appears twice in the header")]
    DuplicateColumn(String),
    #[error("the header has no `{0}` column")]
    MissingColumn(String),
    #[error("the header has both `ts_ms` and `ts_ns`; give one")]
    TwoTimeColumns,
    #[error("column mapping: {0}")]
    Mapping(String),
    #[error("the line is longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong,
    #[error("the header or instrument is not valid UTF-8")]
    NotUtf8,
    #[error("expected {expected} fields as in the header, found {found}")]
    FieldCount { expected: usize, found: usize },
    #[error("instrument is empty")]
    EmptyInstrument,
    #[error("{column}: `{text}` is not a time ({reason})")]
    BadTime {
        column: String,
        text: String,
        reason: TimeError,
    },
    #[error("{column}: `{text}` is not a whole number from 0 to 18446744073709551615")]
    BadSeq { column: String, text: String },
    #[error("kind: `{0}` is not one of trade, quote, mark, index")]
    BadKind(String),
    #[error("side: `{0}` is not one of buy, sell, b, s or empty")]
    BadSide(String),
    #[error("{column}: `{text}` is not a buyer-is-maker flag (1, 0, true, false or empty)")]
    BadBuyerMaker { column: String, text: String },
    #[error("a {kind} row needs a `{column}` value")]
    MissingValue { kind: &'static str, column: String },
    #[error("{column}: {reason}")]
    Value { column: String, reason: FixedError },
}

// === impl TickReader ===

/// Reads ticks from a CSV tick file, one row at a time.
///
/// An iterator of `Result<TickRecord, TickFileError>`: a bad row yields an
/// error carrying its line number and reading goes on with the next row;
/// after an I/O error the iterator ends. [`TickReader::next_row`] is the
/// same without the `Arc` per row.
pub struct TickReader<R> {
    lines: Lines<R>,
    layout: Layout,
    /// The fast path for rows of the common shape, if the layout has it.
    fast: Option<FastLayout>,
    symbols: Symbols,
    /// Set after an I/O error: nothing more will be read.
    done: bool,
    /// Rows the fast path read, for tests that must exercise it.
    #[cfg(test)]
    fast_rows: u64,
}

impl TickReader<Box<dyn BufRead + Send>> {
    /// Opens a tick file with the default column names, plain or gzip
    /// (detected by content), and reads its header.
    ///
    /// # Errors
    /// The file cannot be opened or read (line 0 for an open failure), or
    /// its header is missing or malformed.
    pub fn open(path: &Path) -> Result<Self, TickFileError> {
        Self::open_with(path, &FieldMapping::default())
    }

    /// As [`TickReader::open`], with the columns named by `mapping`.
    ///
    /// # Errors
    /// As [`TickReader::open`], or the mapping does not fit the header.
    pub fn open_with(path: &Path, mapping: &FieldMapping) -> Result<Self, TickFileError> {
        let file = File::open(path).map_err(|e| TickFileError::at(0, e.into()))?;
        Self::from_read(file, mapping)
    }

    /// Reads a tick file from any byte source, plain or gzip.
    ///
    /// # Errors
    /// As [`TickReader::open_with`].
    pub fn from_read(read: impl Read + Send + 'static, mapping: &FieldMapping) -> Result<Self, TickFileError> {
        let mut buffered = BufReader::with_capacity(READ_BUFFER_BYTES, read);
        let is_gzip = buffered
            .fill_buf()
            .map_err(|e| TickFileError::at(0, e.into()))?
            .starts_with(&[0x1f, 0x8b]);
        let reader: Box<dyn BufRead + Send> = if is_gzip {
            Box::new(BufReader::with_capacity(
                READ_BUFFER_BYTES,
                flate2::read::MultiGzDecoder::new(buffered),
            ))
        } else {
            Box::new(buffered)
        };
        TickReader::with_mapping(reader, mapping)
    }
}

impl<R: BufRead> TickReader<R> {
    /// Reads the header from `reader` with the default column names; rows
    /// follow through the iterator.
    ///
    /// # Errors
    /// The header is missing, names a column twice, lacks `instrument` or
    /// a time column, or cannot be read.
    pub fn new(reader: R) -> Result<Self, TickFileError> {
        Self::with_mapping(reader, &FieldMapping::default())
    }

    /// Reads the header from `reader`, naming columns by `mapping`.
    ///
    /// # Errors
    /// As [`TickReader::new`], or a column the mapping names is missing.
    pub fn with_mapping(reader: R, mapping: &FieldMapping) -> Result<Self, TickFileError> {
        let mut lines = Lines::new(reader);
        let (line, header) = match lines.next_line() {
            None => return Err(TickFileError::at(lines.line.max(1), TickFileErrorKind::NoHeader)),
            Some((line, Err(kind))) => return Err(TickFileError::at(line, kind)),
            Some((line, Ok(bytes))) => match std::str::from_utf8(bytes) {
                Ok(text) => (line, text),
                Err(_) => return Err(TickFileError::at(line, TickFileErrorKind::NotUtf8)),
            },
        };
        // A UTF-8 byte order mark some spreadsheet exports write.
        let header = header.strip_prefix('\u{feff}').unwrap_or(header);
        let layout = Layout::resolve(header, mapping).map_err(|kind| TickFileError::at(line, kind))?;
        let mut symbols = Symbols::default();
        if let Some(symbol) = layout.symbol() {
            symbols
                .intern(symbol.as_bytes())
                .map_err(|kind| TickFileError::at(line, kind))?;
        }
        Ok(TickReader {
            lines,
            fast: FastLayout::new(&layout),
            layout,
            symbols,
            done: false,
            #[cfg(test)]
            fast_rows: 0,
        })
    }

    /// The column names this reader understood, in header order (`None`
    /// for ignored columns).
    pub fn columns(&self) -> impl Iterator<Item = Option<&str>> + '_ {
        self.layout.roles.iter().map(|r| r.map(|role| self.layout.name(role)))
    }

    /// Whether rows carry their own sequence numbers (otherwise the reader
    /// numbers them per instrument in file order).
    pub fn has_seq(&self) -> bool {
        self.layout.has(Role::Seq)
    }

    /// Stops numbering the rows of a file without a sequence column: their
    /// `seq` is 0 from here on. For callers that number ticks themselves
    /// (replay numbers them in merged order, across files); it saves a
    /// lookup per row.
    pub fn skip_numbering(&mut self) {
        self.symbols.unnumbered = true;
    }

    /// Number of distinct instruments seen so far.
    pub fn instrument_count(&self) -> usize {
        self.symbols.names.len()
    }

    /// The symbol of instrument index `index` of a [`TickRow`].
    pub fn symbol(&self, index: u32) -> Option<&Arc<str>> {
        self.symbols.names.get(index as usize)
    }

    /// The next row: `None` at the end, an error for a bad row (reading
    /// goes on with the next one) or after an I/O error (reading ends).
    #[inline]
    pub fn next_row(&mut self) -> Option<Result<TickRow, TickFileError>> {
        match self.fast_row() {
            Some(row) => Some(Ok(row)),
            None => self.general_row(),
        }
    }

    /// Appends the next rows to `out` until it holds `max` rows, a row
    /// fails or the file ends, as [`TickReader::next_row`] would read
    /// them one by one. Returns the failing row's error (not pushed), if
    /// one stopped it; the file has ended when `out` is short without one.
    pub fn read_rows(&mut self, out: &mut Vec<TickRow>, max: usize) -> Option<TickFileError> {
        while out.len() < max {
            if let Some(row) = self.fast_row() {
                out.push(row);
                continue;
            }
            match self.general_row()? {
                Ok(row) => out.push(row),
                Err(e) => return Some(e),
            }
        }
        None
    }

    /// The next row if the fast path reads it from the block in place
    /// (see [`fast`]); `None`, having consumed nothing, if it does not.
    #[inline(always)]
    fn fast_row(&mut self) -> Option<TickRow> {
        let fast = self.fast.as_mut()?;
        if self.done {
            return None;
        }
        let window = self.lines.window()?;
        let (row, len) = parse_fast(fast, &mut self.symbols, self.lines.line + 1, window)?;
        self.lines.consume_line(len);
        #[cfg(test)]
        {
            self.fast_rows += 1;
        }
        Some(row)
    }

    /// The next row by the general path: the next line that is not blank
    /// or a comment, split and parsed.
    fn general_row(&mut self) -> Option<Result<TickRow, TickFileError>> {
        if self.done {
            return None;
        }
        let (line, text) = match self.lines.next_line()? {
            (line, Ok(bytes)) => (line, bytes),
            (line, Err(kind)) => {
                self.done = matches!(kind, TickFileErrorKind::Io(_));
                return Some(Err(TickFileError::at(line, kind)));
            }
        };
        Some(parse_row(&self.layout, &mut self.symbols, line, text).map_err(|kind| TickFileError::at(line, kind)))
    }
}

/// The lines of a tick file, split in place in one large reused block:
/// no copy per line.
struct Lines<R> {
    reader: R,
    /// Read buffer; `block[start..end]` is read but not yet consumed.
    block: Box<[u8]>,
    start: usize,
    end: usize,
    /// The reader returned 0 bytes: nothing more will be read.
    eof: bool,
    /// 1-based number of the last line returned.
    line: u64,
}

impl<R: Read> Lines<R> {
    fn new(reader: R) -> Self {
        Lines {
            reader,
            block: vec![0; READ_BLOCK_BYTES].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            line: 0,
        }
    }

    /// Moves the unconsumed bytes to the front of the block and reads more
    /// after them; sets `eof` when the reader has nothing more.
    fn refill(&mut self) -> io::Result<()> {
        if self.start > 0 {
            self.block.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        loop {
            match self.reader.read(&mut self.block[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The unread bytes from the start of the next line, when at least
    /// [`WINDOW`] of them are in the block (the fast path reads no
    /// further); `None` near the end of the block or file.
    #[inline(always)]
    fn window(&self) -> Option<&[u8; WINDOW]> {
        if self.end - self.start < WINDOW {
            return None;
        }
        self.block[self.start..self.start + WINDOW].try_into().ok()
    }

    /// Consumes one line of `len` bytes, its line end included, that the
    /// fast path read from [`Lines::window`].
    #[inline(always)]
    fn consume_line(&mut self, len: usize) {
        debug_assert!(len <= self.end - self.start);
        self.start += len;
        self.line += 1;
    }

    /// Discards input up to and including the next `\n`.
    fn skip_line(&mut self) -> io::Result<()> {
        loop {
            if let Some(pos) = memchr::memchr(b'\n', &self.block[self.start..self.end]) {
                self.start += pos + 1;
                return Ok(());
            }
            self.start = self.end;
            if self.eof {
                return Ok(());
            }
            self.refill()?;
        }
    }

    /// The number and bytes (without the line end) of the next line that
    /// is neither blank nor a comment; `None` at the end of the file.
    #[inline]
    fn next_line(&mut self) -> Option<(u64, Result<&[u8], TickFileErrorKind>)> {
        let (from, to) = loop {
            let (from, mut to) = match memchr::memchr(b'\n', &self.block[self.start..self.end]) {
                Some(pos) => {
                    let from = self.start;
                    self.start += pos + 1;
                    self.line += 1;
                    if pos > MAX_LINE_BYTES {
                        return Some((self.line, Err(TickFileErrorKind::LineTooLong)));
                    }
                    (from, from + pos)
                }
                None if self.end - self.start > MAX_LINE_BYTES => {
                    self.line += 1;
                    let error = match self.skip_line() {
                        Ok(()) => TickFileErrorKind::LineTooLong,
                        Err(e) => e.into(),
                    };
                    return Some((self.line, Err(error)));
                }
                None if self.eof => {
                    if self.start == self.end {
                        return None;
                    }
                    // The last line, without a line end.
                    let from = self.start;
                    self.start = self.end;
                    self.line += 1;
                    (from, self.end)
                }
                None => {
                    if let Err(e) = self.refill() {
                        return Some((self.line + 1, Err(e.into())));
                    }
                    continue;
                }
            };
            if to > from && self.block[to - 1] == b'\r' {
                to -= 1;
            }
            let content = self.block[from..to].trim_ascii();
            if content.is_empty() || content[0] == b'#' {
                continue;
            }
            break (from, to);
        };
        Some((self.line, Ok(&self.block[from..to])))
    }
}

impl<R: BufRead> Iterator for TickReader<R> {
    type Item = Result<TickRecord, TickFileError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.next_row()?.map(|row| TickRecord {
            line: row.line,
            instrument: self.symbols.names[row.instrument as usize].clone(),
            event_time_ns: row.event_time_ns,
            seq: row.seq,
            values: row.values,
        }))
    }
}

#[cfg(test)]
mod tests;
