//! One row of a tick file, from bytes to a [`TickRow`]: the reader's hot
//! path. Fields are byte slices of the line; decimals go straight to
//! [`Fixed`] by a fast path that accepts exactly what [`Fixed::parse`]
//! accepts (anything else is handed to `Fixed::parse` for its verdict).

use super::columns::{Layout, Role, ROLE_COUNT};
use super::time::TimeUnit;
use super::{Symbols, TickFileErrorKind, TickRow};
use crate::model::{Fixed, Side, TickKind, TickValues, FIXED_DECIMALS, FIXED_SCALE};

/// The fields of one row by role; `None` when the header lacks the column.
struct Fields<'a>([Option<&'a [u8]>; ROLE_COUNT]);

impl<'a> Fields<'a> {
    #[inline]
    fn get(&self, role: Role) -> Option<&'a [u8]> {
        self.0[role as usize]
    }

    /// A value the row's kind needs: present and not empty.
    #[inline]
    fn required(&self, layout: &Layout, role: Role, kind: TickKind) -> Result<&'a [u8], TickFileErrorKind> {
        match self.get(role) {
            Some(text) if !text.is_empty() => Ok(text),
            _ => Err(TickFileErrorKind::MissingValue {
                kind: kind.name(),
                column: if layout.has(role) {
                    layout.name(role).to_owned()
                } else {
                    default_name(role).to_owned()
                },
            }),
        }
    }

    /// A decimal that defaults to zero when empty or absent.
    #[inline]
    fn decimal_or_zero(&self, layout: &Layout, role: Role) -> Result<Fixed, TickFileErrorKind> {
        match self.get(role) {
            Some(text) if !text.is_empty() => decimal(layout, role, text),
            _ => Ok(Fixed::ZERO),
        }
    }

    #[inline]
    fn decimal(&self, layout: &Layout, role: Role, kind: TickKind) -> Result<Fixed, TickFileErrorKind> {
        decimal(layout, role, self.required(layout, role, kind)?)
    }
}

/// The text of a field for an error message.
fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[inline]
fn decimal(layout: &Layout, role: Role, text: &[u8]) -> Result<Fixed, TickFileErrorKind> {
    match fast_decimal(text) {
        Some(value) => Ok(value),
        None => std::str::from_utf8(text)
            .map_err(|_| crate::model::FixedError::NotANumber)
            .and_then(Fixed::parse)
            .map_err(|reason| TickFileErrorKind::Value {
                column: layout.name(role).to_owned(),
                reason,
            }),
    }
}

/// `[+-]digits[.digits]` with at most 18 characters after the sign and 8
/// fractional digits: the common case, without overflow checks per digit.
/// `None` for anything else, including every error.
#[inline]
pub(super) fn fast_decimal(text: &[u8]) -> Option<Fixed> {
    const POW10: [i64; 9] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000];
    let (negative, digits) = match text.first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let mut int: i64 = 0;
    let mut i = 0;
    while i < digits.len() && digits[i].is_ascii_digit() {
        int = int * 10 + i64::from(digits[i] - b'0');
        i += 1;
    }
    let int_digits = i;
    let mut frac: i64 = 0;
    let mut frac_digits = 0usize;
    if i < digits.len() {
        if digits[i] != b'.' {
            return None;
        }
        i += 1;
        while i < digits.len() {
            let b = digits[i];
            if !b.is_ascii_digit() || frac_digits == FIXED_DECIMALS as usize {
                return None;
            }
            frac = frac * 10 + i64::from(b - b'0');
            frac_digits += 1;
            i += 1;
        }
    }
    if int_digits == 0 && frac_digits == 0 {
        return None;
    }
    let magnitude = int
        .checked_mul(FIXED_SCALE)?
        .checked_add(frac * POW10[FIXED_DECIMALS as usize - frac_digits])?;
    Some(Fixed::from_raw(if negative { -magnitude } else { magnitude }))
}

/// The name a role is reported under when the file has no column for it.
fn default_name(role: Role) -> &'static str {
    match role {
        Role::Price => "price",
        Role::Bid => "bid",
        Role::Ask => "ask",
        _ => "?",
    }
}

/// Parses an unsigned integer without the overhead of `str::parse`.
#[inline]
fn parse_u64(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in text {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

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
/// column, an epoch time and no other roles than price and size: the
/// shape of nearly every recorded file.
pub(super) struct FastLayout {
    columns: Box<[FastColumn]>,
    /// Fractional digits of the time column: the unit is `10^exp` ns.
    time_exp: u32,
}

impl FastLayout {
    /// The plan for `layout`, if it has the shape [`parse_fast`] reads.
    pub(super) fn new(layout: &Layout) -> Option<FastLayout> {
        let time_exp = match layout.time_unit {
            TimeUnit::S => 9,
            TimeUnit::Ms => 6,
            TimeUnit::Us => 3,
            TimeUnit::Ns => 0,
            TimeUnit::Iso | TimeUnit::Auto => return None,
        };
        if layout.symbol.is_some()
            || layout.default_kind != TickKind::Trade
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
                Role::Instrument => Some(FastColumn::Instrument),
                Role::Time => Some(FastColumn::Time),
                Role::Price => Some(FastColumn::Price),
                Role::Size => Some(FastColumn::Size),
                Role::Ignored => Some(FastColumn::Ignored),
                _ => None,
            })
            .collect::<Option<Box<[_]>>>()?;
        Some(FastLayout { columns, time_exp })
    }
}

/// `digits[.digits]` epoch time in units of `10^exp` ns, with at most 18
/// integer digits and `exp` fractional ones; `None` for anything else.
#[inline]
fn fast_epoch(text: &[u8], exp: u32) -> Option<i64> {
    const POW10: [i64; 10] = [
        1,
        10,
        100,
        1_000,
        10_000,
        100_000,
        1_000_000,
        10_000_000,
        100_000_000,
        1_000_000_000,
    ];
    let mut whole: i64 = 0;
    let mut i = 0;
    while i < text.len() && text[i].is_ascii_digit() {
        whole = whole * 10 + i64::from(text[i] - b'0');
        i += 1;
        if i > 18 {
            return None;
        }
    }
    if i == 0 {
        return None;
    }
    let mut sub: i64 = 0;
    let mut sub_digits = 0u32;
    if i < text.len() {
        if text[i] != b'.' {
            return None;
        }
        i += 1;
        while i < text.len() {
            let b = text[i];
            if !b.is_ascii_digit() || sub_digits == exp {
                return None;
            }
            sub = sub * 10 + i64::from(b - b'0');
            sub_digits += 1;
            i += 1;
        }
    }
    whole
        .checked_mul(POW10[exp as usize])?
        .checked_add(sub * POW10[(exp - sub_digits) as usize])
}

/// Bit `i` set when `text[i]` is a comma, for the first 64 bytes: eight
/// bytes at a time, without a branch per byte.
#[inline]
fn comma_mask(text: &[u8]) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const COMMAS: u64 = 0x2c2c_2c2c_2c2c_2c2c;
    let mut mask = 0u64;
    for (i, chunk) in text.chunks(8).take(8).enumerate() {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        let v = u64::from_le_bytes(word) ^ COMMAS;
        // High bit of each byte set exactly where `v` has a zero byte; the
        // padding of a short chunk is 0, not a comma.
        let zero = !(((v & LOW7) + LOW7) | v | LOW7);
        let mut bits = zero >> 7;
        // Gather the eight flags (bits 0, 8, ..., 56) into a byte.
        bits = (bits | (bits >> 7)) & 0x0003_0003_0003_0003;
        bits = (bits | (bits >> 14)) & 0x0000_000f_0000_000f;
        bits = (bits | (bits >> 28)) & 0xff;
        let valid = if chunk.len() == 8 {
            0xff
        } else {
            (1u64 << chunk.len()) - 1
        };
        mask |= (bits & valid) << (8 * i);
    }
    mask
}

/// Parses the row in `text` if it has the common shape of `fast`: fields
/// without surrounding whitespace, numbers that [`fast_decimal`] and
/// [`fast_epoch`] read. `None` when the row is anything else, having
/// changed nothing: [`parse_row`] then gives the verdict, which for a
/// row read here is the same row.
#[inline]
pub(super) fn parse_fast(fast: &FastLayout, symbols: &mut Symbols, line: u64, text: &[u8]) -> Option<TickRow> {
    let mut name = (0, 0);
    let mut event_time_ns = 0;
    let mut price = Fixed::ZERO;
    let mut size = Fixed::ZERO;
    let mut pos = 0;
    let last = fast.columns.len() - 1;
    let mut commas = comma_mask(text);
    for (i, column) in fast.columns.iter().enumerate() {
        let end = if commas != 0 {
            let end = commas.trailing_zeros() as usize;
            commas &= commas - 1;
            end
        } else {
            // No comma in the first 64 bytes from here on.
            let mut end = pos.max(64).min(text.len());
            while end < text.len() && text[end] != b',' {
                end += 1;
            }
            end
        };
        // The last field runs to the end of the line; every other one
        // ends at a comma.
        if (i == last) != (end == text.len()) {
            return None;
        }
        let field = &text[pos..end];
        match column {
            FastColumn::Instrument => {
                match (field.first(), field.last()) {
                    (Some(first), Some(last)) if !first.is_ascii_whitespace() && !last.is_ascii_whitespace() => {}
                    _ => return None,
                }
                name = (pos, end);
            }
            FastColumn::Time => event_time_ns = fast_epoch(field, fast.time_exp)?,
            FastColumn::Price => price = fast_decimal(field)?,
            FastColumn::Size => {
                if !field.is_empty() {
                    size = fast_decimal(field)?;
                }
            }
            FastColumn::Ignored => {}
        }
        pos = end + 1;
    }
    let instrument = symbols.intern_in(text, name.0, name.1).ok()?;
    let last_seq = &mut symbols.last_seq[instrument as usize];
    *last_seq = last_seq.saturating_add(1);
    Some(TickRow {
        line,
        instrument,
        event_time_ns,
        seq: *last_seq,
        values: TickValues::Trade {
            price,
            size,
            side: None,
        },
    })
}

/// Parses the row in `text`.
#[inline]
pub(super) fn parse_row(
    layout: &Layout,
    symbols: &mut Symbols,
    line: u64,
    text: &[u8],
) -> Result<TickRow, TickFileErrorKind> {
    let mut fields = Fields([None; ROLE_COUNT]);
    let mut found = 0;
    let mut start = 0;
    for end in memchr::memchr_iter(b',', text).chain(std::iter::once(text.len())) {
        if let Some(&role) = layout.roles.get(found) {
            if role != Role::Ignored {
                fields.0[role as usize] = Some(text[start..end].trim_ascii());
            }
        }
        found += 1;
        start = end + 1;
    }
    if found != layout.roles.len() {
        return Err(TickFileErrorKind::FieldCount {
            expected: layout.roles.len(),
            found,
        });
    }

    let name: &[u8] = match layout.symbol {
        Some(_) => b"",
        None => match fields.get(Role::Instrument) {
            Some(name) if !name.is_empty() => name,
            _ => return Err(TickFileErrorKind::EmptyInstrument),
        },
    };
    let time = fields.get(Role::Time).unwrap_or_default();
    let event_time_ns = layout
        .time_unit
        .parse_bytes(time)
        .map_err(|reason| TickFileErrorKind::BadTime {
            column: layout.name(Role::Time).to_owned(),
            text: shown(time),
            reason,
        })?;
    let seq = match fields.get(Role::Seq) {
        Some(text) => Some(parse_u64(text).ok_or_else(|| TickFileErrorKind::BadSeq {
            column: layout.name(Role::Seq).to_owned(),
            text: shown(text),
        })?),
        None => None,
    };
    let kind = match fields.get(Role::Kind) {
        None | Some(b"") => layout.default_kind,
        Some(text) => std::str::from_utf8(text)
            .ok()
            .and_then(TickKind::from_name)
            .ok_or_else(|| TickFileErrorKind::BadKind(shown(text)))?,
    };
    let values = match kind {
        TickKind::Trade => TickValues::Trade {
            price: fields.decimal(layout, Role::Price, kind)?,
            size: fields.decimal_or_zero(layout, Role::Size)?,
            side: side(layout, &fields)?,
        },
        TickKind::Quote => TickValues::Quote {
            bid: fields.decimal(layout, Role::Bid, kind)?,
            ask: fields.decimal(layout, Role::Ask, kind)?,
            bid_size: fields.decimal_or_zero(layout, Role::BidSize)?,
            ask_size: fields.decimal_or_zero(layout, Role::AskSize)?,
        },
        TickKind::Mark => TickValues::Mark {
            price: fields.decimal(layout, Role::Price, kind)?,
        },
        TickKind::Index => TickValues::Index {
            price: fields.decimal(layout, Role::Price, kind)?,
        },
    };
    let instrument = match layout.symbol {
        Some(_) => 0,
        None => symbols.intern(name)?,
    };
    // Only a row that parsed takes a sequence number.
    let seq = match seq {
        Some(seq) => seq,
        None => {
            let last = &mut symbols.last_seq[instrument as usize];
            *last = last.saturating_add(1);
            *last
        }
    };
    Ok(TickRow {
        line,
        instrument,
        event_time_ns,
        seq,
        values,
    })
}

/// A trade's side from the side or buyer-maker column.
#[inline]
fn side(layout: &Layout, fields: &Fields<'_>) -> Result<Option<Side>, TickFileErrorKind> {
    if let Some(flag) = fields.get(Role::BuyerMaker) {
        return match flag {
            b"" => Ok(None),
            b"1" | b"true" | b"True" | b"TRUE" => Ok(Some(Side::Sell)),
            b"0" | b"false" | b"False" | b"FALSE" => Ok(Some(Side::Buy)),
            text => Err(TickFileErrorKind::BadBuyerMaker {
                column: layout.name(Role::BuyerMaker).to_owned(),
                text: shown(text),
            }),
        };
    }
    match fields.get(Role::Side) {
        None | Some(b"") => Ok(None),
        Some(s) if s.eq_ignore_ascii_case(b"buy") || s.eq_ignore_ascii_case(b"b") => Ok(Some(Side::Buy)),
        Some(s) if s.eq_ignore_ascii_case(b"sell") || s.eq_ignore_ascii_case(b"s") => Ok(Some(Side::Sell)),
        Some(s) => Err(TickFileErrorKind::BadSide(shown(s))),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_fast_path_agrees_with_fixed_parse_on_edge_cases() {
        for text in [
            "0",
            "-0",
            "+7",
            "7.",
            ".5",
            "-.5",
            "1.23456789",
            "1.234567890",
            "1.234567891",
            "92233720368.54775807",
            "92233720368.54775808",
            "-92233720368.54775807",
            "999999999999999999",
            "9999999999999999999",
            "",
            "-",
            "+",
            ".",
            "1..2",
            "1.2.3",
            "1e5",
            "NaN",
            "inf",
            " 1",
            "1 ",
            "0x10",
            "00012.50",
            "12345678901.12345678",
        ] {
            let fast = fast_decimal(text.as_bytes());
            let slow = Fixed::parse(text);
            if let Some(v) = fast {
                assert_eq!(Ok(v), slow, "{text:?}");
            }
        }
    }

    #[test]
    fn the_fast_row_path_agrees_with_parse_row() {
        let mapping = super::super::ColumnMapping::default();
        let layout = Layout::resolve("instrument,ts_ms,price,size,note", &mapping).unwrap();
        let fast = FastLayout::new(&layout).unwrap();
        for text in [
            "BTC-USDT,1700000000000,65000.5,0.25,x",
            "BTC-USDT,1700000000000.123456,65000.5,,",
            "BTC,1.5,1,,x",
            "BTC,1.,1,,x",
            "BTC,1.1234567,1,1,x",
            "BTC,123456789012345678,1,1,x",
            "BTC,12345678901234567890,1,1,x",
            "A-VERY-LONG-SYMBOL-NAME,1,2,3,x",
            "FIFTEEN-BYTES-X,1,2,3,x",
            "SIXTEEN-BYTES-XY,1,2,3,x",
            " BTC,1,1,1,x",
            "BTC ,1,1,1,x",
            "BTC,1,1,1",
            "BTC,1,1,1,x,y",
            ",1,1,1,x",
            "BTC,,1,1,x",
            "BTC,1,,1,x",
            "BTC,-1,1,1,x",
            "BTC,1 ,1,1,x",
            "BTC,1,1e3,1,x",
            "BTC,1,1, 2,x",
            "BTC,1,NaN,1,x",
            "B\u{e9}C,1,1,1,x",
            "LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG,1,2,3,x",
            "LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG,1,2,3,x,y",
            "BTC,1,2,3,LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG",
            "BTC,1,2,3,LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG-LONG,",
        ] {
            let (mut a, mut b) = (Symbols::default(), Symbols::default());
            let slow = parse_row(&layout, &mut b, 7, text.as_bytes());
            match parse_fast(&fast, &mut a, 7, text.as_bytes()) {
                Some(row) => {
                    assert_eq!(Some(&row), slow.as_ref().ok(), "{text}");
                    assert_eq!(a.names, b.names, "{text}");
                    // Again: the symbol is found, the next number given.
                    let again = parse_fast(&fast, &mut a, 8, text.as_bytes()).unwrap();
                    assert_eq!((again.instrument, again.seq), (0, 2), "{text}");
                }
                None => assert!(a.names.is_empty(), "{text}"),
            }
        }
    }

    #[test]
    fn comma_masks() {
        for text in [
            "",
            ",",
            "a,b",
            ",,,,,,,,,",
            "BTC-USDT,1700000000000,65000.5,0.25",
            &"x,".repeat(40),
        ] {
            let want = text
                .bytes()
                .take(64)
                .enumerate()
                .filter(|(_, b)| *b == b',')
                .fold(0u64, |m, (i, _)| m | 1 << i);
            assert_eq!(comma_mask(text.as_bytes()), want, "{text}");
        }
        let mut bytes: Vec<u8> = (0..=255).collect();
        bytes.extend((0..=255).rev());
        for window in bytes.windows(64) {
            let want = window
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b',')
                .fold(0u64, |m, (i, _)| m | 1 << i);
            assert_eq!(comma_mask(window), want);
        }
    }

    #[test]
    fn only_plain_trade_layouts_take_the_fast_path() {
        let plain = super::super::ColumnMapping::default();
        for (header, fast) in [
            ("instrument,ts_ms,price", true),
            ("ts_ns,price,instrument,size,venue", true),
            ("instrument,ts_ms,price,seq", false),
            ("instrument,ts_ms,price,side", false),
            ("instrument,ts_ms,kind,price", false),
            ("instrument,ts_ms,bid,ask", false),
        ] {
            let layout = Layout::resolve(header, &plain).unwrap();
            assert_eq!(FastLayout::new(&layout).is_some(), fast, "{header}");
        }
    }

    proptest! {
        #[test]
        fn the_fast_path_never_disagrees(text in "[-+]?[0-9]{0,12}(\\.[0-9]{0,10})?") {
            if let Some(v) = fast_decimal(text.as_bytes()) {
                prop_assert_eq!(Ok(v), Fixed::parse(&text));
            } else {
                // Then the slow path decides; every common, valid shape
                // must be fast.
                let plain = text.trim_start_matches(['-', '+']);
                let frac = plain.split_once('.').map_or(0, |(_, f)| f.len());
                prop_assert!(
                    plain.is_empty() || plain == "." || frac > 8 || plain.len() > 18 || Fixed::parse(&text).is_err(),
                    "{}",
                    text
                );
            }
        }
    }
}
