//! One line of a tick file, from bytes to a [`TickRow`]: the general path
//! that reads every layout and names every error (rows of the common
//! shape are read by [`super::fast`] first). Fields are byte slices of the
//! line; decimals go straight to [`Fixed`] by a fast path that accepts
//! exactly what [`Fixed::parse`] accepts (anything else is handed to
//! `Fixed::parse` for its verdict).

use super::columns::Layout;
use super::mapping::Role;
use super::symbols::Symbols;
use super::{TickFileErrorKind, TickRow};
use crate::model::{Fixed, Side, TickKind, TickValues, FIXED_DECIMALS, FIXED_SCALE};

/// The fields of one row by role; `None` when the header lacks the column.
struct Fields<'a>([Option<&'a [u8]>; Role::COUNT]);

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

/// Parses the row in `text`.
#[inline]
pub(super) fn parse_row(
    layout: &Layout,
    symbols: &mut Symbols,
    line: u64,
    text: &[u8],
) -> Result<TickRow, TickFileErrorKind> {
    let mut fields = Fields([None; Role::COUNT]);
    let mut found = 0;
    let mut start = 0;
    for end in memchr::memchr_iter(b',', text).chain(std::iter::once(text.len())) {
        if let Some(&Some(role)) = layout.roles.get(found) {
            fields.0[role as usize] = Some(text[start..end].trim_ascii());
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

    let name: &[u8] = match layout.symbol() {
        Some(_) => b"",
        None => match fields.get(Role::Instrument) {
            Some(name) if !name.is_empty() => name,
            _ => return Err(TickFileErrorKind::EmptyInstrument),
        },
    };
    let time = fields.get(Role::Time).unwrap_or_default();
    let event_time_ns = layout
        .time_unit()
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
        None | Some(b"") => layout.default_kind(),
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
    let instrument = match layout.symbol() {
        Some(_) => 0,
        None => symbols.intern(name)?,
    };
    // Only a row that parsed takes a sequence number.
    let seq = match seq {
        Some(seq) => seq,
        None => symbols.number(instrument),
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
