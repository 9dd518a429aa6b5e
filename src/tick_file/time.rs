//! Timestamps of tick sources: epoch seconds, milliseconds, microseconds or
//! nanoseconds, and ISO-8601, all to integer nanoseconds since the Unix
//! epoch; and the ISO-8601 form of such a time for people.
//!
//! Epoch numbers are read by hand, allocation-free: this runs once per
//! row. ISO-8601 (RFC 3339 and the wider Temporal grammar: `T` or a space,
//! `.` or `,` before the fraction, `Z` or an offset such as `+05:30` or
//! `-0100`) is read by [`jiff`], which also does the calendar: month
//! lengths, leap days, offsets. Rows of one file mostly share their date
//! and offset, so the last day read on a thread is remembered (when it
//! began, by jiff), and a time on that day only has its time of day and
//! fraction read, fields at fixed places; what it gives is what jiff
//! gives (the tests hold it to that).
//!
//! Nothing is rounded: a time finer than a nanosecond, or outside what an
//! `i64` of nanoseconds holds (1677 to 2262), is refused. A leap second
//! (`23:59:60`) reads as `23:59:59`, as jiff reads it. A time without an
//! offset is UTC; a time zone name (`[Europe/Paris]`) is no offset and is
//! refused, unless an offset comes with it.

use std::cell::Cell;
use std::fmt;
use std::str::FromStr;

use jiff::fmt::temporal::{DateTimeParser, DateTimePrinter};
use jiff::tz::Offset;
use jiff::Timestamp;

/// How a time column is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeUnit {
    /// Epoch seconds, with up to 9 fractional digits.
    S,
    /// Epoch milliseconds, with up to 6 fractional digits.
    Ms,
    /// Epoch microseconds, with up to 3 fractional digits.
    Us,
    /// Integer epoch nanoseconds.
    Ns,
    /// ISO-8601, e.g. `2025-10-10T21:20:37.689043Z`; no offset means UTC.
    Iso,
    /// Decided per value: ISO-8601 if it is not a number, otherwise by the
    /// number of integer digits (up to 14: ms; 15 to 17: µs; more: ns).
    Auto,
}

impl TimeUnit {
    pub const NAMES: &'static str = "s, ms, us, ns, iso or auto";

    pub fn name(self) -> &'static str {
        match self {
            TimeUnit::S => "s",
            TimeUnit::Ms => "ms",
            TimeUnit::Us => "us",
            TimeUnit::Ns => "ns",
            TimeUnit::Iso => "iso",
            TimeUnit::Auto => "auto",
        }
    }

    /// Parses one value of a field in this unit.
    ///
    /// # Errors
    /// Why `text` is not a time in this unit.
    pub fn parse(self, text: &str) -> Result<i64, TimeError> {
        self.parse_bytes(text.as_bytes())
    }

    /// As [`TimeUnit::parse`], on the bytes of a field.
    ///
    /// # Errors
    /// Why `text` is not a time in this unit.
    #[inline]
    pub fn parse_bytes(self, text: &[u8]) -> Result<i64, TimeError> {
        let expected = |e: Option<TimeError>, what| e.unwrap_or(TimeError::Expected(what));
        match self {
            TimeUnit::S => parse_epoch(text, 9).map_err(|e| expected(e, "expected epoch seconds such as 1700000000.5")),
            TimeUnit::Ms => parse_epoch(text, 6).map_err(|e| {
                expected(
                    e,
                    "expected epoch milliseconds such as 1700000000000 or 1700000000000.25",
                )
            }),
            TimeUnit::Us => {
                parse_epoch(text, 3).map_err(|e| expected(e, "expected epoch microseconds such as 1700000000000000"))
            }
            TimeUnit::Ns => parse_epoch(text, 0).map_err(|e| expected(e, "expected integer epoch nanoseconds")),
            TimeUnit::Iso => iso(text),
            TimeUnit::Auto => parse_auto(text),
        }
    }
}

impl fmt::Display for TimeUnit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TimeUnit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "s" => Ok(TimeUnit::S),
            "ms" => Ok(TimeUnit::Ms),
            "us" | "µs" => Ok(TimeUnit::Us),
            "ns" => Ok(TimeUnit::Ns),
            "iso" => Ok(TimeUnit::Iso),
            "auto" => Ok(TimeUnit::Auto),
            other => Err(format!("`{other}` is not a time unit: use {}", TimeUnit::NAMES)),
        }
    }
}

/// Why a field is not a time: the reason in [`super::TickFileErrorKind::BadTime`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    /// Not written as the unit says; the text says what was expected.
    #[error("{0}")]
    Expected(&'static str),
    #[error("finer than a nanosecond")]
    FinerThanNanosecond,
    /// Outside what an `i64` of nanoseconds holds (1677 to 2262).
    #[error("out of range")]
    OutOfRange,
    /// Not an ISO-8601 time, or no such date, time or offset: jiff's words.
    #[error("not ISO-8601: {0}")]
    Iso(Box<str>),
    /// A time of unit `auto` that is not a number and not ISO-8601 either.
    #[error("neither an epoch number nor ISO-8601: {0}")]
    NotEpochOrIso(Box<str>),
}

/// A syntax problem (`None`: say what was expected) or a specific reason.
type EpochError = Option<TimeError>;

/// `int[.frac]` in units of `10^exp` ns, with at most `exp` significant
/// fractional digits.
#[inline]
fn parse_epoch(bytes: &[u8], exp: u32) -> Result<i64, EpochError> {
    let (int, frac) = match bytes.iter().position(|&b| b == b'.') {
        Some(dot) => (&bytes[..dot], &bytes[dot + 1..]),
        None => (bytes, &[][..]),
    };
    if int.is_empty() || int.len() > 19 || !frac.iter().all(u8::is_ascii_digit) {
        return Err(None);
    }
    let mut whole: i64 = 0;
    if int.len() <= 18 {
        // Cannot overflow.
        for &b in int {
            if !b.is_ascii_digit() {
                return Err(None);
            }
            whole = whole * 10 + i64::from(b - b'0');
        }
    } else {
        for &b in int {
            if !b.is_ascii_digit() {
                return Err(None);
            }
            whole = whole
                .checked_mul(10)
                .and_then(|v| v.checked_add(i64::from(b - b'0')))
                .ok_or(Some(TimeError::OutOfRange))?;
        }
    }
    let mut sub: i64 = 0;
    let mut place = 10i64.pow(exp);
    for &b in frac {
        place /= 10;
        let d = i64::from(b - b'0');
        if place == 0 {
            if d != 0 {
                return Err(Some(TimeError::FinerThanNanosecond));
            }
        } else {
            sub += d * place;
        }
    }
    whole
        .checked_mul(10i64.pow(exp))
        .and_then(|ns| ns.checked_add(sub))
        .ok_or(Some(TimeError::OutOfRange))
}

/// ISO-8601 when the text is not a plain number, else epoch by magnitude.
fn parse_auto(bytes: &[u8]) -> Result<i64, TimeError> {
    if bytes.is_empty() {
        return Err(TimeError::Expected("expected an epoch number or an ISO-8601 time"));
    }
    if !bytes.iter().all(|&b| b.is_ascii_digit() || b == b'.') {
        // A text that starts as a date is read as a date, and is wrong
        // as one.
        return iso(bytes).map_err(|e| match e {
            TimeError::Iso(why) if bytes.get(4) != Some(&b'-') => TimeError::NotEpochOrIso(why),
            e => e,
        });
    }
    let digits = bytes.iter().position(|&b| b == b'.').unwrap_or(bytes.len());
    let unit = match digits {
        0..=14 => TimeUnit::Ms,
        15..=17 => TimeUnit::Us,
        _ => TimeUnit::Ns,
    };
    unit.parse_bytes(bytes)
}

/// An ISO-8601 time such as `2025-10-10T21:20:37.689043Z`,
/// `2025-10-10 21:20:37.689043` (UTC) or `2025-10-10T23:20:37+02:00`.
///
/// # Errors
/// Why `text` is not such a time.
pub fn parse_iso(text: &str) -> Result<i64, TimeError> {
    iso(text.as_bytes())
}

static PARSER: DateTimeParser = DateTimeParser::new();

/// Length of the date and time to the second in extended format:
/// `YYYY-MM-DDTHH:MM:SS`.
const HEAD: usize = 19;

/// Length of the date and the separator before the time: `YYYY-MM-DDT`.
const DATE: usize = 11;

/// Longest offset (or other text after the fraction) the memo keeps:
/// `+05:30` and the like.
const TAIL: usize = 8;

thread_local! {
    /// The day of the last ISO-8601 time read on this thread.
    static MEMO: Cell<Memo> = const { Cell::new(Memo::EMPTY) };
}

/// The day of an ISO-8601 time that jiff read: its date and offset as
/// written, and when that day began. A time written with the same date
/// and offset is that beginning plus its time of day and fraction, which
/// is all that is left to read.
#[derive(Clone, Copy)]
struct Memo {
    /// `YYYY-MM-DDT` as written.
    date: [u8; DATE],
    /// What follows the fraction (an offset, `Z` or nothing) as written,
    /// in the first `tail_len` bytes.
    tail: [u8; TAIL],
    /// `u8::MAX` when nothing is remembered.
    tail_len: u8,
    /// The start of the day in that offset, nanoseconds since the epoch.
    day_ns: i64,
}

impl Memo {
    const EMPTY: Memo = Memo {
        date: [0; DATE],
        tail: [0; TAIL],
        tail_len: u8::MAX,
        day_ns: 0,
    };

    /// The time of `text` if it has the remembered date and offset and a
    /// time of day that jiff would take; `None` otherwise (then jiff
    /// decides).
    #[inline]
    fn recall(&self, text: &[u8]) -> Option<i64> {
        let parts = split(text)?;
        if *parts.date != self.date || parts.tail != self.tail.get(..usize::from(self.tail_len))? {
            return None;
        }
        self.day_ns
            .checked_add(parts.time_of_day_ns?)?
            .checked_add(parts.frac_ns?)
    }

    /// The memo for `text`, which jiff read as `ns`, if it has the shape
    /// the memo keeps.
    fn of(text: &[u8], ns: i64) -> Option<Memo> {
        let parts = split(text)?;
        let mut memo = Memo {
            date: *parts.date,
            tail: [0; TAIL],
            tail_len: u8::try_from(parts.tail.len())
                .ok()
                .filter(|&n| usize::from(n) <= TAIL)?,
            day_ns: ns.checked_sub(parts.time_of_day_ns?)?.checked_sub(parts.frac_ns?)?,
        };
        memo.tail[..parts.tail.len()].copy_from_slice(parts.tail);
        Some(memo)
    }
}

/// An ISO-8601 time in extended format, cut where the memo needs it.
struct Parts<'a> {
    /// `YYYY-MM-DD` and the separator, as written (jiff judges them).
    date: &'a [u8; DATE],
    /// `HH:MM:SS` as nanoseconds, if it is a time of day jiff takes
    /// (`23:59:60`, a leap second, reads as `23:59:59`, as jiff reads it).
    time_of_day_ns: Option<i64>,
    /// The fraction's nanoseconds; `None` if it has more than 9 digits.
    frac_ns: Option<i64>,
    /// The rest: an offset, `Z`, or nothing.
    tail: &'a [u8],
}

/// `text` cut into [`Parts`] if it has the separators of an extended
/// format time (`YYYY-MM-DD?HH:MM:SS`) and digits after a fraction's
/// separator; `None` otherwise.
#[inline]
fn split(text: &[u8]) -> Option<Parts<'_>> {
    let (head, rest) = text.split_first_chunk::<HEAD>()?;
    let (date, time) = head.split_first_chunk::<DATE>()?;
    if date[4] != b'-'
        || date[7] != b'-'
        || !matches!(date[10], b'T' | b't' | b' ')
        || time[2] != b':'
        || time[5] != b':'
    {
        return None;
    }
    let two = |i: usize| {
        let (a, b) = (time[i], time[i + 1]);
        (a.is_ascii_digit() && b.is_ascii_digit()).then(|| i64::from(a - b'0') * 10 + i64::from(b - b'0'))
    };
    let time_of_day_ns = match (two(0), two(3), two(6)) {
        (Some(h @ 0..=23), Some(m @ 0..=59), Some(s @ 0..=60)) => Some((h * 3600 + m * 60 + s.min(59)) * 1_000_000_000),
        _ => None,
    };
    let Some((b'.' | b',', digits)) = rest.split_first() else {
        return Some(Parts {
            date,
            time_of_day_ns,
            frac_ns: Some(0),
            tail: rest,
        });
    };
    let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 {
        return None;
    }
    let frac_ns = (n <= 9).then(|| {
        let value = digits[..n].iter().fold(0i64, |v, &d| v * 10 + i64::from(d - b'0'));
        value * 10i64.pow(9 - n as u32)
    });
    Some(Parts {
        date,
        time_of_day_ns,
        frac_ns,
        tail: &digits[n..],
    })
}

fn iso(text: &[u8]) -> Result<i64, TimeError> {
    let memo = MEMO.get();
    if let Some(ns) = memo.recall(text) {
        return Ok(ns);
    }
    let ns = iso_by_jiff(text)?;
    if let Some(memo) = Memo::of(text, ns) {
        MEMO.set(memo);
    }
    Ok(ns)
}

/// `text` read by jiff: a date, a time of day and an optional offset.
fn iso_by_jiff(text: &[u8]) -> Result<i64, TimeError> {
    let jiff = |e: jiff::Error| TimeError::Iso(e.to_string().into());
    let pieces = PARSER.parse_pieces(text).map_err(|e| match split(text) {
        // jiff reads at most 9 fractional digits; say why a 10th is refused.
        Some(Parts { frac_ns: None, .. }) => {
            let digits = text[HEAD + 1..].iter().take_while(|b| b.is_ascii_digit());
            if digits.skip(9).any(|&d| d != b'0') {
                TimeError::FinerThanNanosecond
            } else {
                TimeError::Iso("more than 9 fractional digits".into())
            }
        }
        _ => jiff(e),
    })?;
    let Some(time) = pieces.time() else {
        return Err(TimeError::Iso("a date without a time of day".into()));
    };
    let offset = match (pieces.to_numeric_offset(), pieces.time_zone_annotation()) {
        (Some(offset), _) => offset,
        (None, None) => Offset::UTC,
        (None, Some(_)) => {
            return Err(TimeError::Iso(
                "a time zone without an offset; give the offset, such as +01:00".into(),
            ))
        }
    };
    let timestamp = offset
        .to_timestamp(pieces.date().to_datetime(time))
        .map_err(|_| TimeError::OutOfRange)?;
    i64::try_from(timestamp.as_nanosecond()).map_err(|_| TimeError::OutOfRange)
}

/// Nanoseconds since the epoch as ISO-8601 UTC, with as many fractional
/// digits as needed in groups of three: `2025-10-10T21:20:37.689043Z`.
pub fn format_iso(ns: i64) -> String {
    let sub = ns.rem_euclid(1_000_000_000);
    let digits = match sub {
        0 => 0,
        _ if sub % 1_000_000 == 0 => 3,
        _ if sub % 1000 == 0 => 6,
        _ => 9,
    };
    match Timestamp::from_nanosecond(i128::from(ns)) {
        Ok(timestamp) => DateTimePrinter::new()
            .precision(Some(digits))
            .timestamp_to_string(&timestamp),
        // Every i64 of nanoseconds is a timestamp jiff holds.
        Err(_) => format!("{ns} ns after the Unix epoch"),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// `text` read by jiff alone, without the memo.
    fn fresh(text: &str) -> Result<i64, TimeError> {
        MEMO.set(Memo::EMPTY);
        parse_iso(text)
    }

    fn why(text: &str) -> String {
        fresh(text).unwrap_err().to_string()
    }

    #[test]
    fn epoch_units() {
        assert_eq!(TimeUnit::Ms.parse("1"), Ok(1_000_000));
        assert_eq!(TimeUnit::Ms.parse("1.000001"), Ok(1_000_001));
        assert_eq!(TimeUnit::Ms.parse("1.5000000"), Ok(1_500_000));
        assert_eq!(TimeUnit::Ms.parse("1.0000001"), Err(TimeError::FinerThanNanosecond));
        assert!(TimeUnit::Ms.parse("-1").is_err());
        assert_eq!(TimeUnit::Ms.parse("1."), Ok(1_000_000));
        assert!(TimeUnit::Ms.parse(".5").is_err());
        assert_eq!(TimeUnit::Ms.parse("99999999999999999"), Err(TimeError::OutOfRange));
        assert_eq!(TimeUnit::Us.parse("1700000000000000"), Ok(1_700_000_000_000_000_000));
        assert_eq!(TimeUnit::Us.parse("1.5"), Ok(1_500));
        assert_eq!(TimeUnit::Ns.parse("1723161254087896568"), Ok(1_723_161_254_087_896_568));
        assert!(TimeUnit::Ns.parse("1.5").is_err());
        assert!(TimeUnit::Ns.parse("12a").is_err());
        assert!(TimeUnit::Ns.parse("").is_err());
        assert_eq!(TimeUnit::S.parse("1700000000.25"), Ok(1_700_000_000_250_000_000));
        assert_eq!(
            TimeUnit::S.parse("soon").unwrap_err().to_string(),
            "expected epoch seconds such as 1700000000.5"
        );
    }

    #[test]
    fn auto_goes_by_magnitude_or_shape() {
        let t = 1_723_161_255_342_000_000;
        assert_eq!(TimeUnit::Auto.parse("1723161255342"), Ok(t));
        assert_eq!(TimeUnit::Auto.parse("1723161255342000"), Ok(t));
        assert_eq!(TimeUnit::Auto.parse("1723161255342000000"), Ok(t));
        assert_eq!(TimeUnit::Auto.parse("1723161255342.5"), Ok(t + 500_000));
        assert_eq!(TimeUnit::Auto.parse("2024-08-08T23:54:15.342Z"), Ok(t));
        let soon = TimeUnit::Auto.parse("soon").unwrap_err().to_string();
        assert!(soon.starts_with("neither an epoch number nor ISO-8601: "), "{soon}");
        let feb_30 = TimeUnit::Auto.parse("2024-02-30T00:00:00Z").unwrap_err().to_string();
        assert!(
            feb_30.starts_with("not ISO-8601: ") && feb_30.contains("day"),
            "{feb_30}"
        );
        assert_eq!(
            TimeUnit::Auto.parse("").unwrap_err().to_string(),
            "expected an epoch number or an ISO-8601 time"
        );
    }

    #[test]
    fn iso_8601() {
        let t = 1_760_131_237_689_043_000;
        assert_eq!(fresh("2025-10-10T21:20:37.689043Z"), Ok(t));
        assert_eq!(fresh("2025-10-10 21:20:37.689043"), Ok(t));
        assert_eq!(fresh("2025-10-10T23:20:37.689043+02:00"), Ok(t));
        assert_eq!(fresh("2025-10-10T20:20:37.689043-0100"), Ok(t));
        assert_eq!(fresh("2025-10-10T21:20:37,689043000Z"), Ok(t));
        assert_eq!(fresh("2025-10-10t21:20:37.689043z"), Ok(t));
        assert_eq!(fresh("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(fresh("1970-01-01T00:00:00.000000001Z"), Ok(1));
        assert_eq!(fresh("2000-02-29T00:00:00Z"), Ok(951_782_400_000_000_000));
        assert_eq!(fresh("1969-12-31T23:59:59Z"), Ok(-1_000_000_000));
        for bad_date in ["1900-02-29T00:00:00Z", "2023-02-29T00:00:00Z", "2024-04-31T00:00:00Z"] {
            let why = why(bad_date);
            assert!(
                why.starts_with("not ISO-8601: ") && why.contains("day"),
                "{bad_date}: {why}"
            );
        }
        assert!(why("2024-01-01T24:00:00Z").contains("hour"));
        assert_eq!(
            fresh("2024-01-01T00:00:00.0000000001Z"),
            Err(TimeError::FinerThanNanosecond)
        );
        assert_eq!(
            why("2024-01-01T00:00:00.1234567890Z"),
            "not ISO-8601: more than 9 fractional digits"
        );
        for bad in [
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00Zx",
            "2024-1-01T00:00:00Z",
            "2024-01-01",
            "",
            "soon",
        ] {
            assert!(matches!(fresh(bad), Err(TimeError::Iso(_))), "{bad:?}");
        }
        assert_eq!(fresh("2300-01-01T00:00:00Z"), Err(TimeError::OutOfRange));
        assert_eq!(fresh("1600-01-01T00:00:00Z"), Err(TimeError::OutOfRange));
        assert_eq!(fresh("1677-09-21T00:12:43.145224192Z"), Ok(i64::MIN));
        assert_eq!(fresh("1677-09-21T00:12:43.145224191Z"), Err(TimeError::OutOfRange));
        assert_eq!(fresh("2262-04-11T23:47:16.854775807Z"), Ok(i64::MAX));
        assert_eq!(fresh("2262-04-11T23:47:16.854775808Z"), Err(TimeError::OutOfRange));
    }

    #[test]
    fn iso_offsets_move_the_time_to_utc() {
        let utc = 1_704_067_200_000_000_000; // 2024-01-01T00:00:00Z
        let hour = 3_600_000_000_000;
        assert_eq!(fresh("2024-01-01T00:00:00Z"), Ok(utc));
        assert_eq!(fresh("2024-01-01T00:00:00+00:00"), Ok(utc));
        assert_eq!(fresh("2024-01-01T00:00:00-00:00"), Ok(utc));
        assert_eq!(fresh("2024-01-01T05:30:00+05:30"), Ok(utc));
        assert_eq!(fresh("2024-01-01T05:30:00+0530"), Ok(utc));
        assert_eq!(fresh("2024-01-01T00:00:00+05:30"), Ok(utc - 11 * hour / 2));
        assert_eq!(fresh("2023-12-31T19:00:00-05"), Ok(utc));
        // Across a date line and a year end.
        assert_eq!(fresh("2024-01-01T13:45:00+13:45"), Ok(utc));
        assert_eq!(
            fresh("2024-01-01T00:00:00[Europe/Paris]").unwrap_err().to_string(),
            "not ISO-8601: a time zone without an offset; give the offset, such as +01:00"
        );
        assert_eq!(fresh("2024-01-01T01:00:00+01:00[Europe/Paris]"), Ok(utc));
    }

    #[test]
    fn iso_fractions_are_exact_to_the_nanosecond() {
        let s = 1_704_067_200_000_000_000;
        for (fraction, ns) in [
            ("", 0),
            (".5", 500_000_000),
            (",5", 500_000_000),
            (".05", 50_000_000),
            (".123", 123_000_000),
            (".123456", 123_456_000),
            (".1234567", 123_456_700),
            (".123456789", 123_456_789),
            (".000000001", 1),
            (".999999999", 999_999_999),
        ] {
            for offset in ["Z", "+00:00", ""] {
                let text = format!("2024-01-01T00:00:00{fraction}{offset}");
                assert_eq!(fresh(&text), Ok(s + ns), "{text}");
                // The same again, from the memo.
                assert_eq!(parse_iso(&text), Ok(s + ns), "{text}");
            }
        }
    }

    #[test]
    fn leap_days_are_days_only_in_leap_years() {
        let day = 86_400_000_000_000i64;
        for (year, leap) in [
            (2024, true),
            (2000, true),
            (1904, true),
            (2100, false),
            (1900, false),
            (2023, false),
        ] {
            let feb_28 = fresh(&format!("{year}-02-28T12:00:00Z")).unwrap();
            let mar_1 = fresh(&format!("{year}-03-01T12:00:00Z")).unwrap();
            assert_eq!(mar_1 - feb_28, if leap { 2 * day } else { day }, "{year}");
            let feb_29 = fresh(&format!("{year}-02-29T12:00:00Z"));
            assert_eq!(feb_29.is_ok(), leap, "{year}: {feb_29:?}");
            if leap {
                assert_eq!(feb_29, Ok(feb_28 + day));
            }
        }
        assert_eq!(fresh("2024-02-29T00:00:00Z"), Ok(1_709_164_800_000_000_000));
        // No February 30th, in any year, nor from the memo of the 29th.
        assert_eq!(parse_iso("2024-02-29T00:00:00.5Z"), Ok(1_709_164_800_500_000_000));
        for text in [
            "2024-02-30T00:00:00Z",
            "2024-02-30T00:00:00.5Z",
            "2024-02-30",
            "2023-02-29T00:00:00.5Z",
        ] {
            let why = parse_iso(text).unwrap_err().to_string();
            assert!(why.starts_with("not ISO-8601: "), "{text}: {why}");
        }
    }

    #[test]
    fn a_leap_second_reads_as_the_last_second_of_its_minute() {
        assert_eq!(fresh("2016-12-31T23:59:60.5Z"), fresh("2016-12-31T23:59:59.5Z"));
    }

    #[test]
    fn iso_round_trips_every_day_of_four_centuries() {
        // Every day from 1800 to 2200 (leap years and centuries included).
        for days in -62_000..84_000i64 {
            let ns = days * 86_400_000_000_000 + 3_723_000_000_000;
            assert_eq!(parse_iso(&format_iso(ns)), Ok(ns), "{}", format_iso(ns));
        }
        for ns in [
            0,
            1,
            1_000,
            1_000_000,
            1_760_131_237_689_043_000,
            -1_500_000_000,
            951_782_400_123_456_789,
            i64::MIN,
            i64::MAX,
        ] {
            assert_eq!(parse_iso(&format_iso(ns)), Ok(ns), "{}", format_iso(ns));
        }
        assert_eq!(format_iso(1_760_131_237_689_043_000), "2025-10-10T21:20:37.689043Z");
        assert_eq!(format_iso(1_723_161_255_342_000_000), "2024-08-08T23:54:15.342Z");
        assert_eq!(format_iso(-1_500_000_000), "1969-12-31T23:59:58.500Z");
        assert_eq!(format_iso(1), "1970-01-01T00:00:00.000000001Z");
        assert_eq!(format_iso(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn the_memo_remembers_a_day_with_its_offset() {
        let t = fresh("2024-01-01T05:30:00.5+05:30").unwrap();
        let second = 1_000_000_000;
        let memo = MEMO.get();
        assert_eq!(memo.recall(b"2024-01-01T05:30:00.25+05:30"), Some(t - second / 4));
        assert_eq!(memo.recall(b"2024-01-01T05:30:00+05:30"), Some(t - second / 2));
        assert_eq!(memo.recall(b"2024-01-01T05:30:01.5+05:30"), Some(t + second));
        assert_eq!(
            memo.recall(b"2024-01-01T23:59:59.5+05:30"),
            Some(t + (18 * 3600 + 29 * 60 + 59) * second)
        );
        assert_eq!(
            memo.recall(b"2024-01-01T23:59:60.5+05:30"),
            memo.recall(b"2024-01-01T23:59:59.5+05:30")
        );
        // Another day or offset, or what jiff would refuse, is jiff's.
        for other in [
            &b"2024-01-02T05:30:00.5+05:30"[..],
            b"2024-01-01 05:30:00.5+05:30",
            b"2024-01-01T05:30:00.5Z",
            b"2024-01-01T24:00:00+05:30",
            b"2024-01-01T05:60:00+05:30",
            b"2024-01-01T05:30:61+05:30",
            b"2024-01-01T05:3a:00+05:30",
            b"2024-01-01T05:30:00.1234567891+05:30",
            b"2024-01-01T05:30:00.+05:30",
            b"2024-01-01T05:30:00.5+05:30x",
        ] {
            assert_eq!(memo.recall(other), None, "{}", String::from_utf8_lossy(other));
        }
        // Basic format and annotations are jiff's alone.
        assert_eq!(fresh("20240101T000000Z"), Ok(1_704_067_200_000_000_000));
        assert_eq!(MEMO.get().tail_len, u8::MAX);
    }

    proptest! {
        /// Whatever the memo holds, a time reads as jiff alone reads it.
        #[test]
        fn the_memo_reads_as_jiff_reads(
            before in "(19[0-9]{2}|20[0-9]{2}|2[1-3][0-9]{2})-[01][0-9]-[0-3][0-9][T ][0-2][0-9]:[0-5][0-9]:[0-6][0-9]([.,][0-9]{1,10})?(Z|[+-][0-2][0-9](:?[0-5][0-9])?)?",
            after in "[0-3][0-9]:[0-6][0-9]:[0-6][0-9]([.,]?[0-9]{0,11})(Z|[+-][0-2][0-9](:?[0-5][0-9])?|x)?",
        ) {
            let _ = parse_iso(&before);
            // The same date, with another time, fraction and offset.
            let text = format!("{}{after}", &before[..DATE]);
            let remembered = parse_iso(&text);
            prop_assert_eq!(remembered, fresh(&text), "{} after {}", text, before);
        }

        /// The same on the day's last and first instants that an `i64`
        /// holds, where adding the time of day may overflow.
        #[test]
        fn the_memo_reads_as_jiff_reads_at_the_ends_of_the_range(
            day in prop::sample::select(vec!["1677-09-21T", "2262-04-11T"]),
            first in "[0-2][0-9]:[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?Z",
            second in "[0-2][0-9]:[0-5][0-9]:[0-6][0-9](\\.[0-9]{1,9})?Z",
        ) {
            let _ = parse_iso(&format!("{day}{first}"));
            let text = format!("{day}{second}");
            prop_assert_eq!(parse_iso(&text), fresh(&text), "{}", text);
        }
    }
}
