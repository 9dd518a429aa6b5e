//! Streaming reader of CSV tick files: `airbag send` and replay read ticks
//! through [`TickReader`].
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
//! | `instrument` | yes | symbol, e.g. `BTC-USDT` |
//! | `ts_ms` or `ts_ns` | exactly one | event time since the Unix epoch: milliseconds (integer, or with up to 6 fractional digits for sub-ms) or integer nanoseconds |
//! | `seq` | no | the source's per-instrument sequence number; without this column ticks are numbered 1, 2, 3, ... per instrument in file order |
//! | `kind` | no | `trade` (the default when the column is absent or the field empty), `quote`, `mark` or `index` |
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
//! Prices and sizes are exact decimals read with
//! [`crate::ingest::parse_field`]: `NaN`, infinities, exponents and digits
//! past the 8th decimal place are refused, never rounded. The reader checks
//! syntax only; whether a value makes sense (a positive price, an uncrossed
//! quote) is for [`crate::ingest::validate_values`] or the server to judge,
//! so that a file of deliberately bad ticks can still be sent.
//!
//! # Cost
//!
//! Memory is constant in the file's length: one reused line buffer plus one
//! interned symbol (and counter) per distinct instrument. Rows are split in
//! place, without allocating; each record shares its instrument's
//! `Arc<str>`. Files whose first two bytes are the gzip magic number are
//! decompressed on the fly, whatever their name.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::ingest::{parse_field, TickError};
use crate::model::{Fixed, Side, TickKind, TickValues};

/// Longest line accepted, in bytes; a longer one is an error (and skipped),
/// so a file without line ends cannot make the reader buffer it whole.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// Read buffer size for files.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// One tick read from a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TickRecord {
    /// 1-based line number in the (decompressed) file.
    pub line: u64,
    /// The symbol, shared by every record of the same instrument.
    pub instrument: Arc<str>,
    /// Event time, nanoseconds since the Unix epoch.
    pub event_time_ns: i64,
    /// From the `seq` column, or numbered per instrument in file order.
    pub seq: u64,
    pub values: TickValues,
}

impl TickRecord {
    pub fn kind(&self) -> TickKind {
        self.values.kind()
    }
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
    /// header); false when only this row is bad.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self.kind,
            TickFileErrorKind::Io(_)
                | TickFileErrorKind::NoHeader
                | TickFileErrorKind::DuplicateColumn(_)
                | TickFileErrorKind::MissingColumn(_)
                | TickFileErrorKind::TwoTimeColumns
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
            TickFileErrorKind::Value(e) => Some(e),
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
    MissingColumn(&'static str),
    #[error("the header has both `ts_ms` and `ts_ns`; give one")]
    TwoTimeColumns,
    #[error("the line is longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong,
    #[error("the line is not valid UTF-8")]
    NotUtf8,
    #[error("expected {expected} fields as in the header, found {found}")]
    FieldCount { expected: usize, found: usize },
    #[error("instrument is empty")]
    EmptyInstrument,
    #[error("{column}: `{text}` is not a time ({reason})")]
    BadTime {
        column: &'static str,
        text: String,
        reason: &'static str,
    },
    #[error("seq: `{0}` is not a whole number from 0 to 18446744073709551615")]
    BadSeq(String),
    #[error("kind: `{0}` is not one of trade, quote, mark, index")]
    BadKind(String),
    #[error("side: `{0}` is not one of buy, sell, b, s or empty")]
    BadSide(String),
    #[error("a {kind} row needs a `{column}` value")]
    MissingValue { kind: &'static str, column: &'static str },
    #[error("{0}")]
    Value(#[from] TickError),
}

// === Columns ===

/// What a header column means. `Ignored` columns are skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Instrument,
    TsMs,
    TsNs,
    Seq,
    Kind,
    Price,
    Size,
    Side,
    Bid,
    Ask,
    BidSize,
    AskSize,
    Ignored,
}

const ROLE_COUNT: usize = Role::Ignored as usize;

impl Role {
    fn from_header(name: &str) -> Role {
        match name {
            "instrument" => Role::Instrument,
            "ts_ms" => Role::TsMs,
            "ts_ns" => Role::TsNs,
            "seq" => Role::Seq,
            "kind" => Role::Kind,
            "price" => Role::Price,
            "size" => Role::Size,
            "side" => Role::Side,
            "bid" => Role::Bid,
            "ask" => Role::Ask,
            "bid_size" => Role::BidSize,
            "ask_size" => Role::AskSize,
            _ => Role::Ignored,
        }
    }

    fn column(self) -> &'static str {
        match self {
            Role::Instrument => "instrument",
            Role::TsMs => "ts_ms",
            Role::TsNs => "ts_ns",
            Role::Seq => "seq",
            Role::Kind => "kind",
            Role::Price => "price",
            Role::Size => "size",
            Role::Side => "side",
            Role::Bid => "bid",
            Role::Ask => "ask",
            Role::BidSize => "bid_size",
            Role::AskSize => "ask_size",
            Role::Ignored => "",
        }
    }
}

/// The fields of one row by role; `None` when the header lacks the column.
struct Fields<'a>([Option<&'a str>; ROLE_COUNT]);

impl<'a> Fields<'a> {
    fn get(&self, role: Role) -> Option<&'a str> {
        self.0[role as usize]
    }

    /// A value the row's kind needs: present and not empty.
    fn required(&self, role: Role, kind: TickKind) -> Result<&'a str, TickFileErrorKind> {
        match self.get(role) {
            Some(text) if !text.is_empty() => Ok(text),
            _ => Err(TickFileErrorKind::MissingValue {
                kind: kind.name(),
                column: role.column(),
            }),
        }
    }

    /// A decimal that defaults to zero when empty or absent.
    fn decimal_or_zero(&self, role: Role) -> Result<Fixed, TickFileErrorKind> {
        match self.get(role) {
            Some(text) if !text.is_empty() => Ok(parse_field(role.column(), text)?),
            _ => Ok(Fixed::ZERO),
        }
    }

    fn decimal(&self, role: Role, kind: TickKind) -> Result<Fixed, TickFileErrorKind> {
        Ok(parse_field(role.column(), self.required(role, kind)?)?)
    }
}

// === impl TickReader ===

/// Reads [`TickRecord`]s from a CSV tick file, one row at a time.
///
/// An iterator of `Result<TickRecord, TickFileError>`: a bad row yields an
/// error carrying its line number and reading goes on with the next row;
/// after an I/O error the iterator ends.
pub struct TickReader<R> {
    lines: Lines<R>,
    /// The role of each column, in header order.
    roles: Vec<Role>,
    /// Whether the file numbers its own ticks.
    has_seq: bool,
    /// Interned symbols and, without a `seq` column, each instrument's last
    /// assigned sequence number.
    instruments: FxHashMap<Arc<str>, u64>,
    /// Set after an I/O error: nothing more will be read.
    done: bool,
}

impl TickReader<Box<dyn BufRead + Send>> {
    /// Opens a tick file, plain or gzip (detected by content), and reads its
    /// header.
    ///
    /// # Errors
    /// The file cannot be opened or read (line 0 for an open failure), or
    /// its header is missing or malformed.
    pub fn open(path: &Path) -> Result<Self, TickFileError> {
        let file = File::open(path).map_err(|e| TickFileError::at(0, e.into()))?;
        let mut buffered = BufReader::with_capacity(READ_BUFFER_BYTES, file);
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
        TickReader::new(reader)
    }
}

impl<R: BufRead> TickReader<R> {
    /// Reads the header from `reader`; rows follow through the iterator.
    ///
    /// # Errors
    /// The header is missing, names a column twice, lacks `instrument` or
    /// a time column, or cannot be read.
    pub fn new(reader: R) -> Result<Self, TickFileError> {
        let mut this = TickReader {
            lines: Lines {
                reader,
                buf: Vec::with_capacity(256),
                line: 0,
            },
            roles: Vec::new(),
            has_seq: false,
            instruments: FxHashMap::default(),
            done: false,
        };
        this.read_header()?;
        Ok(this)
    }

    /// The column names this reader understood, in header order (`None`
    /// for ignored columns).
    pub fn columns(&self) -> impl Iterator<Item = Option<&'static str>> + '_ {
        self.roles
            .iter()
            .map(|r| if *r == Role::Ignored { None } else { Some(r.column()) })
    }

    /// Number of distinct instruments seen so far.
    pub fn instrument_count(&self) -> usize {
        self.instruments.len()
    }

    fn read_header(&mut self) -> Result<(), TickFileError> {
        let (line, header) = match self.lines.next_line() {
            None => return Err(TickFileError::at(self.lines.line.max(1), TickFileErrorKind::NoHeader)),
            Some((line, Err(kind))) => return Err(TickFileError::at(line, kind)),
            Some((line, Ok(text))) => (line, text),
        };
        // A UTF-8 byte order mark some spreadsheet exports write.
        let header = header.strip_prefix('\u{feff}').unwrap_or(header);
        let mut roles = Vec::new();
        let mut seen = [false; ROLE_COUNT];
        for name in header.split(',') {
            let name = name.trim();
            let role = Role::from_header(name);
            if role != Role::Ignored {
                if seen[role as usize] {
                    return Err(TickFileError::at(
                        line,
                        TickFileErrorKind::DuplicateColumn(name.to_owned()),
                    ));
                }
                seen[role as usize] = true;
            }
            roles.push(role);
        }
        let missing = |role: Role| TickFileError::at(line, TickFileErrorKind::MissingColumn(role.column()));
        if !seen[Role::Instrument as usize] {
            return Err(missing(Role::Instrument));
        }
        match (seen[Role::TsMs as usize], seen[Role::TsNs as usize]) {
            (false, false) => return Err(missing(Role::TsMs)),
            (true, true) => return Err(TickFileError::at(line, TickFileErrorKind::TwoTimeColumns)),
            _ => {}
        }
        // Without a kind column every row is a trade, which needs a price.
        if !seen[Role::Kind as usize] && !seen[Role::Price as usize] {
            return Err(missing(Role::Price));
        }
        self.has_seq = seen[Role::Seq as usize];
        self.roles = roles;
        Ok(())
    }

    /// Parses the row in `text`.
    fn parse_row(
        roles: &[Role],
        has_seq: bool,
        instruments: &mut FxHashMap<Arc<str>, u64>,
        line: u64,
        text: &str,
    ) -> Result<TickRecord, TickFileErrorKind> {
        let mut fields = Fields([None; ROLE_COUNT]);
        let mut found = 0;
        for (i, field) in text.split(',').enumerate() {
            if let Some(&role) = roles.get(i) {
                if role != Role::Ignored {
                    fields.0[role as usize] = Some(field.trim());
                }
            }
            found = i + 1;
        }
        if found != roles.len() {
            return Err(TickFileErrorKind::FieldCount {
                expected: roles.len(),
                found,
            });
        }

        let instrument = fields.get(Role::Instrument).unwrap_or_default();
        if instrument.is_empty() {
            return Err(TickFileErrorKind::EmptyInstrument);
        }
        let event_time_ns = match (fields.get(Role::TsMs), fields.get(Role::TsNs)) {
            (Some(ms), _) => parse_ms(ms).map_err(|reason| TickFileErrorKind::BadTime {
                column: "ts_ms",
                text: ms.to_owned(),
                reason,
            })?,
            (None, Some(ns)) => parse_ns(ns).map_err(|reason| TickFileErrorKind::BadTime {
                column: "ts_ns",
                text: ns.to_owned(),
                reason,
            })?,
            (None, None) => unreachable!("the header has a time column"),
        };
        let seq = match fields.get(Role::Seq) {
            Some(text) => Some(
                text.parse::<u64>()
                    .map_err(|_| TickFileErrorKind::BadSeq(text.to_owned()))?,
            ),
            None => None,
        };
        let kind = match fields.get(Role::Kind) {
            None | Some("") => TickKind::Trade,
            Some(text) => TickKind::from_name(text).ok_or_else(|| TickFileErrorKind::BadKind(text.to_owned()))?,
        };
        let values = match kind {
            TickKind::Trade => TickValues::Trade {
                price: fields.decimal(Role::Price, kind)?,
                size: fields.decimal_or_zero(Role::Size)?,
                side: match fields.get(Role::Side) {
                    None | Some("") => None,
                    Some(s) if s.eq_ignore_ascii_case("buy") || s.eq_ignore_ascii_case("b") => Some(Side::Buy),
                    Some(s) if s.eq_ignore_ascii_case("sell") || s.eq_ignore_ascii_case("s") => Some(Side::Sell),
                    Some(s) => return Err(TickFileErrorKind::BadSide(s.to_owned())),
                },
            },
            TickKind::Quote => TickValues::Quote {
                bid: fields.decimal(Role::Bid, kind)?,
                ask: fields.decimal(Role::Ask, kind)?,
                bid_size: fields.decimal_or_zero(Role::BidSize)?,
                ask_size: fields.decimal_or_zero(Role::AskSize)?,
            },
            TickKind::Mark => TickValues::Mark {
                price: fields.decimal(Role::Price, kind)?,
            },
            TickKind::Index => TickValues::Index {
                price: fields.decimal(Role::Price, kind)?,
            },
        };

        // Only a row that parsed takes a sequence number.
        let (symbol, last_seq) = match instruments.get_key_value(instrument) {
            Some((symbol, last)) => (symbol.clone(), *last),
            None => {
                let symbol: Arc<str> = Arc::from(instrument);
                instruments.insert(symbol.clone(), 0);
                (symbol, 0)
            }
        };
        let seq = match seq {
            Some(seq) => seq,
            None => {
                debug_assert!(!has_seq);
                let next = last_seq.saturating_add(1);
                if let Some(last) = instruments.get_mut(instrument) {
                    *last = next;
                }
                next
            }
        };
        Ok(TickRecord {
            line,
            instrument: symbol,
            event_time_ns,
            seq,
            values,
        })
    }
}

/// The lines of a tick file, read into one reused buffer.
struct Lines<R> {
    reader: R,
    /// The current line, reused for every row.
    buf: Vec<u8>,
    /// 1-based number of the line in `buf`.
    line: u64,
}

impl<R: BufRead> Lines<R> {
    /// The number and text (without its line end) of the next line that is
    /// neither blank nor a comment; `None` at the end of the file.
    fn next_line(&mut self) -> Option<(u64, Result<&str, TickFileErrorKind>)> {
        loop {
            self.buf.clear();
            let limit = MAX_LINE_BYTES as u64 + 1;
            let read = match (&mut self.reader).take(limit).read_until(b'\n', &mut self.buf) {
                Ok(n) => n,
                Err(e) => return Some((self.line + 1, Err(e.into()))),
            };
            if read == 0 {
                return None;
            }
            self.line += 1;
            if self.buf.last() == Some(&b'\n') {
                self.buf.pop();
            } else if self.buf.len() > MAX_LINE_BYTES {
                let error = match skip_line(&mut self.reader) {
                    Ok(()) => TickFileErrorKind::LineTooLong,
                    Err(e) => e.into(),
                };
                return Some((self.line, Err(error)));
            }
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
            let content = self.buf.trim_ascii();
            if content.is_empty() || content[0] == b'#' {
                continue;
            }
            return Some((
                self.line,
                std::str::from_utf8(&self.buf).map_err(|_| TickFileErrorKind::NotUtf8),
            ));
        }
    }
}

impl<R: BufRead> Iterator for TickReader<R> {
    type Item = Result<TickRecord, TickFileError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let (line, text) = match self.lines.next_line()? {
            (line, Ok(text)) => (line, text),
            (line, Err(kind)) => {
                self.done = matches!(kind, TickFileErrorKind::Io(_));
                return Some(Err(TickFileError::at(line, kind)));
            }
        };
        Some(
            Self::parse_row(&self.roles, self.has_seq, &mut self.instruments, line, text)
                .map_err(|kind| TickFileError::at(line, kind)),
        )
    }
}

/// Consumes input up to and including the next `\n`.
fn skip_line(reader: &mut impl BufRead) -> io::Result<()> {
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(());
        }
        match chunk.iter().position(|&b| b == b'\n') {
            Some(pos) => {
                reader.consume(pos + 1);
                return Ok(());
            }
            None => {
                let len = chunk.len();
                reader.consume(len);
            }
        }
    }
}

/// Epoch milliseconds, optionally with up to 6 fractional digits, as
/// nanoseconds.
fn parse_ms(text: &str) -> Result<i64, &'static str> {
    let (int, frac) = match text.split_once('.') {
        Some((int, frac)) => (int, frac),
        None => (text, ""),
    };
    if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected epoch milliseconds such as 1700000000000 or 1700000000000.25");
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected epoch milliseconds such as 1700000000000 or 1700000000000.25");
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > 6 {
        return Err("finer than a nanosecond");
    }
    let ms: i64 = int.parse().map_err(|_| "out of range")?;
    let mut sub_ns: i64 = 0;
    for (i, b) in frac.bytes().enumerate() {
        sub_ns += i64::from(b - b'0') * 10i64.pow(5 - i as u32);
    }
    ms.checked_mul(1_000_000)
        .and_then(|ns| ns.checked_add(sub_ns))
        .ok_or("out of range")
}

/// Epoch nanoseconds, an integer.
fn parse_ns(text: &str) -> Result<i64, &'static str> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected integer epoch nanoseconds");
    }
    text.parse().map_err(|_| "out of range")
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, Write};

    use super::*;

    fn read(text: &str) -> Vec<Result<TickRecord, String>> {
        TickReader::new(Cursor::new(text.as_bytes().to_vec()))
            .expect("header")
            .map(|r| r.map_err(|e| e.to_string()))
            .collect()
    }

    fn px(s: &str) -> Fixed {
        Fixed::parse(s).unwrap()
    }

    fn trade(price: &str, size: &str) -> TickValues {
        TickValues::Trade {
            price: px(price),
            size: px(size),
            side: None,
        }
    }

    #[test]
    fn reads_the_minimal_format_numbering_each_instrument() {
        let rows = read(
            "instrument,ts_ms,price,size\n\
             BTC-USDT,1700000000000,65000.5,0.25\n\
             ETH-USDT,1700000000001,3000,1\n\
             BTC-USDT,1700000000002.5,64999,0\n",
        );
        let rows: Vec<TickRecord> = rows.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(&*rows[0].instrument, "BTC-USDT");
        assert_eq!(rows[0].line, 2);
        assert_eq!(rows[0].event_time_ns, 1_700_000_000_000_000_000);
        assert_eq!(rows[0].values, trade("65000.5", "0.25"));
        assert_eq!((rows[0].seq, rows[1].seq, rows[2].seq), (1, 1, 2));
        assert_eq!(rows[2].event_time_ns, 1_700_000_000_002_500_000);
        assert!(
            Arc::ptr_eq(&rows[0].instrument, &rows[2].instrument),
            "symbols are interned"
        );
    }

    #[test]
    fn maps_columns_by_header_name_in_any_order() {
        let rows = read(
            "# exported by a venue\n\
             \n\
             size, price ,trade_id,seq,instrument,ts_ns\r\n\
             2,100.1,abc,41,X,5\r\n\
             3,100.2,abd,45,X,6\r\n",
        );
        let rows: Vec<TickRecord> = rows.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(rows[0].seq, 41);
        assert_eq!(rows[1].seq, 45);
        assert_eq!(rows[0].event_time_ns, 5);
        assert_eq!(rows[1].values, trade("100.2", "3"));
        assert_eq!(rows[1].line, 5);
    }

    #[test]
    fn reads_quotes_marks_and_sides() {
        let rows = read(
            "kind,instrument,ts_ms,price,size,side,bid,ask,bid_size,ask_size\n\
             quote,X,1,,,,99.5,100.5,3,4\n\
             mark,X,2,100,,,,,,\n\
             ,X,3,100,1,sell,,,,\n\
             index,X,4,101,,,,,,\n",
        );
        let rows: Vec<TickRecord> = rows.into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(
            rows[0].values,
            TickValues::Quote {
                bid: px("99.5"),
                ask: px("100.5"),
                bid_size: px("3"),
                ask_size: px("4"),
            }
        );
        assert_eq!(rows[1].values, TickValues::Mark { price: px("100") });
        assert_eq!(
            rows[2].values,
            TickValues::Trade {
                price: px("100"),
                size: px("1"),
                side: Some(Side::Sell)
            }
        );
        assert_eq!(rows[3].kind(), TickKind::Index);
        assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
    }

    #[test]
    fn bad_rows_name_their_line_and_reading_goes_on() {
        let rows = read(
            "instrument,ts_ms,price,size\n\
             X,1,NaN,1\n\
             X,2,inf,1\n\
             X,3,1e5,1\n\
             X,4,100\n\
             ,5,100,1\n\
             X,soon,100,1\n\
             X,6,0.000000001,1\n\
             X,7,100,1\n",
        );
        let errors: Vec<&str> = rows
            .iter()
            .filter_map(|r| r.as_ref().err().map(String::as_str))
            .collect();
        assert_eq!(
            errors,
            [
                "line 2: price: not a finite decimal number",
                "line 3: price: not a finite decimal number",
                "line 4: price: not a finite decimal number",
                "line 5: expected 4 fields as in the header, found 3",
                "line 6: instrument is empty",
                "line 7: ts_ms: `soon` is not a time (expected epoch milliseconds such as 1700000000000 or 1700000000000.25)",
                "line 8: price: has more than 8 decimal places",
            ]
        );
        let good = rows.last().unwrap().as_ref().unwrap();
        assert_eq!((good.line, good.seq), (9, 1), "bad rows take no sequence number");
    }

    #[test]
    fn rows_missing_what_their_kind_needs_are_refused() {
        let rows = read(
            "instrument,ts_ms,kind,price,bid\n\
             X,1,quote,,100\n\
             X,2,trade,,\n\
             X,3,candle,1,\n\
             X,4,trade,-5,\n",
        );
        let errors: Vec<String> = rows
            .into_iter()
            .map(|r| r.map(|t| t.seq.to_string()).unwrap_or_else(|e| e))
            .collect();
        assert_eq!(
            errors,
            [
                "line 2: a quote row needs a `ask` value",
                "line 3: a trade row needs a `price` value",
                "line 4: kind: `candle` is not one of trade, quote, mark, index",
                // Syntax only: a negative price is the server's to refuse.
                "1",
            ]
        );
    }

    #[test]
    fn bad_headers_are_fatal() {
        let err = |text: &str| {
            TickReader::new(Cursor::new(text.as_bytes().to_vec()))
                .err()
                .map(|e| (e.is_fatal(), e.to_string()))
        };
        assert_eq!(
            err("# only a comment\n"),
            Some((
                true,
                "line 1: the file has no header row (expected columns such as `instrument,ts_ms,price,size`)".into()
            ))
        );
        assert_eq!(
            err("instrument,price\n"),
            Some((true, "line 1: the header has no `ts_ms` column".into()))
        );
        assert_eq!(
            err("instrument,ts_ms,size\n"),
            Some((true, "line 1: the header has no `price` column".into()))
        );
        assert_eq!(
            err("\ninstrument,ts_ms,price,price\n"),
            Some((true, "line 2: column `price` appears twice in the header".into()))
        );
        assert_eq!(
            err("instrument,ts_ms,ts_ns,price\n"),
            Some((true, "line 1: the header has both `ts_ms` and `ts_ns`; give one".into()))
        );
    }

    #[test]
    fn time_in_ms_with_fractions() {
        assert_eq!(parse_ms("1"), Ok(1_000_000));
        assert_eq!(parse_ms("1.000001"), Ok(1_000_001));
        assert_eq!(parse_ms("1.5000000"), Ok(1_500_000));
        assert!(parse_ms("1.0000001").is_err());
        assert!(parse_ms("-1").is_err());
        assert!(parse_ms("1.").is_ok());
        assert!(parse_ms(".5").is_err());
        assert!(parse_ms("99999999999999999").is_err());
        assert!(parse_ns("12a").is_err());
    }

    #[test]
    fn over_long_lines_are_skipped() {
        let mut text = String::from("instrument,ts_ms,price\n");
        text.push_str(&"X".repeat(MAX_LINE_BYTES + 10));
        text.push_str("\nY,1,2\n");
        let rows = read(&text);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows[0].as_ref().unwrap_err(),
            "line 2: the line is longer than 65536 bytes"
        );
        assert_eq!(rows[1].as_ref().unwrap().line, 3);
    }

    #[test]
    fn opens_plain_and_gzip_files() {
        let dir = tempfile::tempdir().unwrap();
        let text = "instrument,ts_ms,price,size\nBTC-USDT,1700000000000,65000,1\nBTC-USDT,1700000000001,64000,1\n";
        let plain = dir.path().join("ticks.csv");
        std::fs::write(&plain, text).unwrap();
        let gz = dir.path().join("ticks.csv.gz");
        let mut enc = flate2::write::GzEncoder::new(File::create(&gz).unwrap(), flate2::Compression::fast());
        enc.write_all(text.as_bytes()).unwrap();
        enc.finish().unwrap();

        let a: Vec<TickRecord> = TickReader::open(&plain).unwrap().map(Result::unwrap).collect();
        let b: Vec<TickRecord> = TickReader::open(&gz).unwrap().map(Result::unwrap).collect();
        assert_eq!(a.len(), 2);
        assert_eq!(a, b);
        assert_eq!(b[1].seq, 2);

        let missing = TickReader::open(&dir.path().join("nope.csv")).err().unwrap();
        assert_eq!(missing.line, 0);
        assert!(missing.is_fatal());
    }
}
