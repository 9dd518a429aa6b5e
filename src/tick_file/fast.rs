//! The reader's fast path: a row of the common shape parsed straight from
//! the read block, a word at a time ([`super::swar`]), in one pass that
//! also finds the line's end.
//!
//! It reads trades with an instrument column and an epoch time (the shape
//! of generated and most recorded files) when every field is plain:
//! no surrounding whitespace, symbols without bytes below `-` (so no
//! comma, space, quote or `#`), numbers without exponents or excess
//! digits, `\n` or `\r\n` line ends. For anything else it gives up,
//! having changed nothing, and the general path ([`super::row`]) reads
//! the line and gives its verdict, so every error is the general path's.
//! What it accepts it reads exactly as the general path would; the tests
//! hold it to that.

use super::columns::Layout;
use super::mapping::Role;
use super::swar::{
    before_first, below, digit_run, digit_run_with, digits_value, equal, first, load, low_bytes, non_digits, Leading,
    POW10,
};
use super::symbols::Symbols;
use super::time::TimeUnit;
use super::TickRow;
use crate::model::{Fixed, TickKind, TickValues, FIXED_DECIMALS, FIXED_SCALE};

/// Bytes the fast path needs buffered from a row's start; rows longer
/// than about this take the general path.
pub(super) const WINDOW: usize = 256;

/// The last offset in the window a field may start at: each field parser
/// reads at most 32 bytes from there.
const LAST_FIELD_START: usize = WINDOW - 32;

/// What a column holds, for [`parse_fast`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FastColumn {
    Instrument,
    Time,
    Price,
    Size,
    Ignored,
}

/// The plan of [`parse_fast`] for a layout of trades with an instrument
/// column, an epoch time and no other roles than price and size.
pub(super) struct FastLayout {
    columns: Box<[FastColumn]>,
    /// Fractional digits of the time column: its unit is `10^exp` ns.
    time_exp: usize,
    /// The leading digits of the last time read.
    time_leading: Leading,
}

impl FastLayout {
    /// The plan for `layout`, if it has the shape [`parse_fast`] reads.
    pub(super) fn new(layout: &Layout) -> Option<FastLayout> {
        let time_exp = match layout.time_unit() {
            TimeUnit::S => 9,
            TimeUnit::Ms => 6,
            TimeUnit::Us => 3,
            TimeUnit::Ns => 0,
            TimeUnit::Iso | TimeUnit::Auto => return None,
        };
        if layout.symbol().is_some()
            || layout.default_kind() != TickKind::Trade
            || !layout.has(Role::Instrument)
            || !layout.has(Role::Time)
            || !layout.has(Role::Price)
        {
            return None;
        }
        let columns = layout
            .roles
            .iter()
            .map(|role| match role {
                Some(Role::Instrument) => Some(FastColumn::Instrument),
                Some(Role::Time) => Some(FastColumn::Time),
                Some(Role::Price) => Some(FastColumn::Price),
                Some(Role::Size) => Some(FastColumn::Size),
                None => Some(FastColumn::Ignored),
                Some(_) => None,
            })
            .collect::<Option<Box<[_]>>>()?;
        Some(FastLayout {
            columns,
            time_exp,
            time_leading: Leading::default(),
        })
    }
}

/// Parses the row at the start of `window` (the unread bytes of the
/// block) as line `line`: the row and its length with the line end.
/// `None` when the row is not of the shape described in the module docs;
/// then nothing that rows depend on has changed (the symbols and their
/// numbers are as before).
#[inline]
pub(super) fn parse_fast(
    fast: &mut FastLayout,
    symbols: &mut Symbols,
    line: u64,
    window: &[u8; WINDOW],
) -> Option<(TickRow, usize)> {
    use FastColumn::{Instrument, Price, Size, Time};
    // Blank lines, comments and leading whitespace are the general path's.
    if window[0] <= b' ' || window[0] == b'#' {
        return None;
    }
    let mut row = Fields {
        time_exp: fast.time_exp,
        time_leading: &mut fast.time_leading,
        symbols: &*symbols,
        name: (0, 0),
        known: None,
        event_time_ns: 0,
        price: Fixed::ZERO,
        size: Fixed::ZERO,
    };
    // The minimal layouts, spelled out so that each field's parser is
    // inlined in sequence; any other goes column by column.
    let end = match *fast.columns {
        [Instrument, Time, Price, Size] => {
            let at = row.field(Instrument, false, 0, window)?;
            let at = row.field(Time, false, at, window)?;
            let at = row.field(Price, false, at, window)?;
            row.field(Size, true, at, window)?
        }
        [Instrument, Time, Price] => {
            let at = row.field(Instrument, false, 0, window)?;
            let at = row.field(Time, false, at, window)?;
            row.field(Price, true, at, window)?
        }
        ref columns => {
            let last = columns.len() - 1;
            let mut at = 0;
            for (i, &column) in columns.iter().enumerate() {
                at = row.field(column, i == last, at, window)?;
            }
            at
        }
    };
    let Fields {
        name,
        known,
        event_time_ns,
        price,
        size,
        ..
    } = row;
    // A symbol seen before was found as its field was read; a new one is
    // interned only now that the whole row has been read.
    let instrument = match known {
        Some(index) => index,
        None => symbols.intern(&window[name.0..name.1]).ok()?,
    };
    let row = TickRow {
        line,
        instrument,
        event_time_ns,
        seq: symbols.number(instrument),
        values: TickValues::Trade {
            price,
            size,
            side: None,
        },
    };
    Some((row, end))
}

/// The fields of a row read so far, and how to read its time.
struct Fields<'a> {
    time_exp: usize,
    time_leading: &'a mut Leading,
    symbols: &'a Symbols,
    /// Where the symbol is in the window.
    name: (usize, usize),
    /// Its index, if it is short and has been seen before.
    known: Option<u32>,
    event_time_ns: i64,
    price: Fixed,
    size: Fixed,
}

impl Fields<'_> {
    /// Reads the field `column` at `at`, the row's `last` or not, with its
    /// delimiter: where the next field (or line) starts.
    #[inline(always)]
    fn field(&mut self, column: FastColumn, last: bool, at: usize, window: &[u8; WINDOW]) -> Option<usize> {
        if at > LAST_FIELD_START {
            return None;
        }
        let end = match column {
            FastColumn::Instrument => {
                let (end, key) = symbol(window, at)?;
                self.name = (at, end);
                self.known = key.and_then(|key| self.symbols.find_short(key));
                end
            }
            FastColumn::Time => {
                let (time, end) = epoch(window, at, self.time_exp, self.time_leading)?;
                self.event_time_ns = time;
                end
            }
            FastColumn::Price => {
                let (value, end) = decimal(window, at)?;
                self.price = value;
                end
            }
            FastColumn::Size => {
                if matches!(window[at], b',' | b'\n' | b'\r') {
                    at
                } else {
                    let (value, end) = decimal(window, at)?;
                    self.size = value;
                    end
                }
            }
            FastColumn::Ignored => field_end(window, at)?,
        };
        if last {
            match window[end] {
                b'\n' => Some(end + 1),
                b'\r' if window[end + 1] == b'\n' => Some(end + 2),
                _ => None,
            }
        } else {
            (window[end] == b',').then_some(end + 1)
        }
    }
}

/// The end of a non-empty symbol starting at `at`, all of whose bytes
/// are `-` or above: its first byte below `-` (which the caller checks is
/// its delimiter), and its key if it is short.
#[inline(always)]
fn symbol(window: &[u8; WINDOW], at: usize) -> Option<(usize, Option<u128>)> {
    let low = load(window, at);
    let stops = below(low, b'-');
    let (len, key) = if stops != 0 {
        let len = first(stops);
        (len, Some(Symbols::key_of_words(low & before_first(stops), 0, len)))
    } else {
        let high = load(window, at + 8);
        let stops = below(high, b'-');
        if stops != 0 {
            let len = 8 + first(stops);
            (len, Some(Symbols::key_of_words(low, high & before_first(stops), len)))
        } else {
            (first_below_dash(window, at + 16)? - at, None)
        }
    };
    (len > 0).then_some((at + len, key))
}

/// The first byte below `-` from `from` on, within the window.
#[inline(always)]
fn first_below_dash(window: &[u8; WINDOW], from: usize) -> Option<usize> {
    first_stop(window, from, |word| below(word, b'-'))
}

/// The end of a field of any content starting at `at`: its first comma or
/// line feed.
#[inline(always)]
fn field_end(window: &[u8; WINDOW], at: usize) -> Option<usize> {
    first_stop(window, at, |word| equal(word, b',') | equal(word, b'\n'))
}

/// The first byte from `from` on, within the window, that `stops` flags
/// in its eight-byte word.
#[inline(always)]
fn first_stop(window: &[u8; WINDOW], mut from: usize, stops: impl Fn(u64) -> u64) -> Option<usize> {
    loop {
        let flagged = stops(load(window, from));
        if flagged != 0 {
            return Some(from + first(flagged));
        }
        from += 8;
        if from > LAST_FIELD_START {
            return None;
        }
    }
}

/// `digits[.digits]` at `at`, an epoch time in units of `10^exp` ns with
/// 1 to 19 integer digits and at most `exp` (and at most 7) fractional
/// ones: nanoseconds and the end. `None` for anything else, including
/// every error.
#[inline(always)]
fn epoch(window: &[u8; WINDOW], at: usize, exp: usize, leading: &mut Leading) -> Option<(i64, usize)> {
    let (whole, digits) = digit_run_with(window, at, leading)?;
    if digits == 0 {
        return None;
    }
    let mut end = at + digits;
    let mut sub = 0;
    if window[end] == b'.' {
        let word = load(window, end + 1);
        let n = first(non_digits(word));
        if n > exp || n == 8 {
            return None;
        }
        sub = digits_value(word, n) * POW10[exp - n];
        end += 1 + n;
    }
    let ns = i64::try_from(whole)
        .ok()?
        .checked_mul(POW10[exp] as i64)?
        .checked_add(sub as i64)?;
    Some((ns, end))
}

/// `[+-]digits[.digits]` at `at` with at most 19 integer and 8 fractional
/// digits, at least one digit, and a value [`Fixed`] holds: the value
/// (exactly as [`Fixed::parse`] reads it) and the end. `None` for
/// anything else, including every error.
#[inline(always)]
fn decimal(window: &[u8; WINDOW], at: usize) -> Option<(Fixed, usize)> {
    // Digits and the dot are above the signs.
    if window[at] < b'.' {
        return signed_decimal(window, at);
    }
    let (raw, end) = unsigned_decimal(window, at)?;
    Some((Fixed::from_raw(raw), end))
}

/// [`decimal`] for a field that starts with a byte below `.`: a sign, or
/// not a number.
#[inline(never)]
fn signed_decimal(window: &[u8; WINDOW], at: usize) -> Option<(Fixed, usize)> {
    let negative = match window[at] {
        b'-' => true,
        b'+' => false,
        _ => return None,
    };
    let (raw, end) = unsigned_decimal(window, at + 1)?;
    Some((Fixed::from_raw(if negative { -raw } else { raw }), end))
}

/// [`decimal`] without a sign: the raw value of the [`Fixed`] and the end.
#[inline(always)]
fn unsigned_decimal(window: &[u8; WINDOW], at: usize) -> Option<(i64, usize)> {
    // The common cases, within one word: `digits` or `digits.digits`
    // with at most 6 digits, followed by a byte that is not a digit.
    let word = load(window, at);
    let stops = non_digits(word);
    let int = first(stops);
    if int < 8 && (word >> (8 * int)) as u8 != b'.' {
        if int == 0 {
            return None;
        }
        // At most 7 digits: no overflow.
        return Some((digits_value(word, int) as i64 * FIXED_SCALE, at + int));
    }
    if int < 7 {
        let rest = stops >> (8 * (int + 1));
        if rest != 0 {
            let frac = first(rest);
            if int + frac == 0 {
                return None;
            }
            // The digits without the dot, as one number of at most 6
            // digits: int * 10^frac + fraction.
            let joined = (word & low_bytes(int)) | ((word >> 8) & !low_bytes(int));
            let raw = digits_value(joined, int + frac) * POW10[FIXED_DECIMALS as usize - frac];
            return Some((raw as i64, at + int + 1 + frac));
        }
    }
    long_decimal(window, at)
}

/// [`unsigned_decimal`] for numbers longer than a word.
#[inline(never)]
fn long_decimal(window: &[u8; WINDOW], at: usize) -> Option<(i64, usize)> {
    let (int_value, int) = digit_run(window, at)?;
    let mut end = at + int;
    let (mut frac_value, mut frac) = (0, 0);
    if window[end] == b'.' {
        let word = load(window, end + 1);
        frac = first(non_digits(word));
        if frac == 8 && window[end + 9].is_ascii_digit() {
            // More than 8 decimals: refused unless they are zeros.
            return None;
        }
        frac_value = digits_value(word, frac) * POW10[FIXED_DECIMALS as usize - frac];
        end += 1 + frac;
    }
    if int + frac == 0 {
        return None;
    }
    let raw = i64::try_from(int_value)
        .ok()?
        .checked_mul(FIXED_SCALE)?
        .checked_add(frac_value as i64)?;
    Some((raw, end))
}

#[cfg(test)]
mod tests;
