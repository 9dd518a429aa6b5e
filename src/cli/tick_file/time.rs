//! Timestamps of tick files: epoch seconds, milliseconds, microseconds or
//! nanoseconds, and ISO-8601, all to integer nanoseconds since the Unix
//! epoch; and the ISO-8601 form of such a time for people.
//!
//! Hand-written and allocation-free: this runs once per row. Nothing is
//! rounded: a time finer than a nanosecond, or outside what an `i64` of
//! nanoseconds holds (1677 to 2262), is refused.

use std::fmt;
use std::str::FromStr;

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

    /// Parses one value of a column in this unit.
    ///
    /// # Errors
    /// Why `text` is not a time in this unit.
    pub fn parse(self, text: &str) -> Result<i64, &'static str> {
        self.parse_bytes(text.as_bytes())
    }

    /// As [`TimeUnit::parse`], on the bytes of a field.
    ///
    /// # Errors
    /// Why `text` is not a time in this unit.
    #[inline]
    pub fn parse_bytes(self, text: &[u8]) -> Result<i64, &'static str> {
        match self {
            TimeUnit::S => parse_epoch(text, 9).map_err(|e| e.unwrap_or("expected epoch seconds such as 1700000000.5")),
            TimeUnit::Ms => parse_epoch(text, 6)
                .map_err(|e| e.unwrap_or("expected epoch milliseconds such as 1700000000000 or 1700000000000.25")),
            TimeUnit::Us => {
                parse_epoch(text, 3).map_err(|e| e.unwrap_or("expected epoch microseconds such as 1700000000000000"))
            }
            TimeUnit::Ns => parse_epoch(text, 0).map_err(|e| e.unwrap_or("expected integer epoch nanoseconds")),
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

/// A syntax problem (`None`: say what was expected) or a specific reason.
type EpochError = Option<&'static str>;

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
                .ok_or(Some("out of range"))?;
        }
    }
    let mut sub: i64 = 0;
    let mut place = 10i64.pow(exp);
    for &b in frac {
        place /= 10;
        let d = i64::from(b - b'0');
        if place == 0 {
            if d != 0 {
                return Err(Some("finer than a nanosecond"));
            }
        } else {
            sub += d * place;
        }
    }
    whole
        .checked_mul(10i64.pow(exp))
        .and_then(|ns| ns.checked_add(sub))
        .ok_or(Some("out of range"))
}

/// ISO-8601 when the text is not a plain number, else epoch by magnitude.
fn parse_auto(bytes: &[u8]) -> Result<i64, &'static str> {
    if bytes.is_empty() {
        return Err("expected an epoch number or an ISO-8601 time");
    }
    if !bytes.iter().all(|&b| b.is_ascii_digit() || b == b'.') {
        return iso(bytes);
    }
    let digits = bytes.iter().position(|&b| b == b'.').unwrap_or(bytes.len());
    let unit = match digits {
        0..=14 => TimeUnit::Ms,
        15..=17 => TimeUnit::Us,
        _ => TimeUnit::Ns,
    };
    unit.parse_bytes(bytes)
}

const ISO_EXPECTED: &str = "expected an ISO-8601 time such as 2025-10-10T21:20:37.689043Z";

/// `YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z|±HH[:MM]]`; without an offset the
/// time is UTC. Up to 9 significant fractional digits.
///
/// # Errors
/// Why `text` is not such a time.
pub fn parse_iso(text: &str) -> Result<i64, &'static str> {
    iso(text.as_bytes())
}

fn iso(b: &[u8]) -> Result<i64, &'static str> {
    if b.len() < 19 {
        return Err(ISO_EXPECTED);
    }
    let num = |range: std::ops::Range<usize>| -> Result<i64, &'static str> {
        let mut v = 0i64;
        for &c in &b[range] {
            if !c.is_ascii_digit() {
                return Err(ISO_EXPECTED);
            }
            v = v * 10 + i64::from(c - b'0');
        }
        Ok(v)
    };
    if b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') || b[13] != b':' || b[16] != b':' {
        return Err(ISO_EXPECTED);
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err("no such date");
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err("no such time of day");
    }
    let mut i = 19;
    let mut sub: i64 = 0;
    if i < b.len() && (b[i] == b'.' || b[i] == b',') {
        i += 1;
        let start = i;
        let mut place = 1_000_000_000i64;
        while i < b.len() && b[i].is_ascii_digit() {
            place /= 10;
            let d = i64::from(b[i] - b'0');
            if place == 0 {
                if d != 0 {
                    return Err("finer than a nanosecond");
                }
            } else {
                sub += d * place;
            }
            i += 1;
        }
        if i == start {
            return Err(ISO_EXPECTED);
        }
    }
    let offset_s = match &b[i..] {
        [] | [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (h, m) = match rest {
                [h1, h2] => (two(*h1, *h2)?, 0),
                [h1, h2, b':', m1, m2] | [h1, h2, m1, m2] => (two(*h1, *h2)?, two(*m1, *m2)?),
                _ => return Err(ISO_EXPECTED),
            };
            if h > 23 || m > 59 {
                return Err("no such offset");
            }
            let s = h * 3600 + m * 60;
            if *sign == b'+' {
                s
            } else {
                -s
            }
        }
        _ => return Err(ISO_EXPECTED),
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    seconds
        .checked_mul(1_000_000_000)
        .and_then(|ns| ns.checked_add(sub))
        .ok_or("out of range")
}

fn two(a: u8, b: u8) -> Result<i64, &'static str> {
    if a.is_ascii_digit() && b.is_ascii_digit() {
        Ok(i64::from(a - b'0') * 10 + i64::from(b - b'0'))
    } else {
        Err(ISO_EXPECTED)
    }
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Nanoseconds since the epoch as ISO-8601 UTC, with as many fractional
/// digits as needed in groups of three: `2025-10-10T21:20:37.689043Z`.
pub fn format_iso(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let sub = ns.rem_euclid(1_000_000_000);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let tod = secs.rem_euclid(86_400);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        tod / 3600,
        tod / 60 % 60,
        tod % 60
    );
    if sub != 0 {
        if sub % 1_000_000 == 0 {
            out.push_str(&format!(".{:03}", sub / 1_000_000));
        } else if sub % 1000 == 0 {
            out.push_str(&format!(".{:06}", sub / 1000));
        } else {
            out.push_str(&format!(".{sub:09}"));
        }
    }
    out.push('Z');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_units() {
        assert_eq!(TimeUnit::Ms.parse("1"), Ok(1_000_000));
        assert_eq!(TimeUnit::Ms.parse("1.000001"), Ok(1_000_001));
        assert_eq!(TimeUnit::Ms.parse("1.5000000"), Ok(1_500_000));
        assert_eq!(TimeUnit::Ms.parse("1.0000001"), Err("finer than a nanosecond"));
        assert!(TimeUnit::Ms.parse("-1").is_err());
        assert_eq!(TimeUnit::Ms.parse("1."), Ok(1_000_000));
        assert!(TimeUnit::Ms.parse(".5").is_err());
        assert_eq!(TimeUnit::Ms.parse("99999999999999999"), Err("out of range"));
        assert_eq!(TimeUnit::Us.parse("1700000000000000"), Ok(1_700_000_000_000_000_000));
        assert_eq!(TimeUnit::Us.parse("1.5"), Ok(1_500));
        assert_eq!(TimeUnit::Ns.parse("1723161254087896568"), Ok(1_723_161_254_087_896_568));
        assert!(TimeUnit::Ns.parse("1.5").is_err());
        assert!(TimeUnit::Ns.parse("12a").is_err());
        assert!(TimeUnit::Ns.parse("").is_err());
        assert_eq!(TimeUnit::S.parse("1700000000.25"), Ok(1_700_000_000_250_000_000));
    }

    #[test]
    fn auto_goes_by_magnitude_or_shape() {
        let t = 1_723_161_255_342_000_000;
        assert_eq!(TimeUnit::Auto.parse("1723161255342"), Ok(t));
        assert_eq!(TimeUnit::Auto.parse("1723161255342000"), Ok(t));
        assert_eq!(TimeUnit::Auto.parse("1723161255342000000"), Ok(t));
        assert_eq!(TimeUnit::Auto.parse("1723161255342.5"), Ok(t + 500_000));
        assert_eq!(TimeUnit::Auto.parse("2024-08-08T23:54:15.342Z"), Ok(t));
        assert!(TimeUnit::Auto.parse("soon").is_err());
    }

    #[test]
    fn iso_8601() {
        let t = 1_760_131_237_689_043_000;
        assert_eq!(parse_iso("2025-10-10T21:20:37.689043Z"), Ok(t));
        assert_eq!(parse_iso("2025-10-10 21:20:37.689043"), Ok(t));
        assert_eq!(parse_iso("2025-10-10T23:20:37.689043+02:00"), Ok(t));
        assert_eq!(parse_iso("2025-10-10T20:20:37.689043-0100"), Ok(t));
        assert_eq!(parse_iso("2025-10-10T21:20:37,689043000Z"), Ok(t));
        assert_eq!(parse_iso("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_iso("1970-01-01T00:00:00.000000001Z"), Ok(1));
        assert_eq!(parse_iso("2000-02-29T00:00:00Z"), Ok(951_782_400_000_000_000));
        assert_eq!(parse_iso("1969-12-31T23:59:59Z"), Ok(-1_000_000_000));
        assert_eq!(parse_iso("1900-02-29T00:00:00Z"), Err("no such date"));
        assert_eq!(parse_iso("2023-02-29T00:00:00Z"), Err("no such date"));
        assert_eq!(parse_iso("2024-04-31T00:00:00Z"), Err("no such date"));
        assert_eq!(parse_iso("2024-01-01T24:00:00Z"), Err("no such time of day"));
        assert_eq!(
            parse_iso("2024-01-01T00:00:00.0000000001Z"),
            Err("finer than a nanosecond")
        );
        assert_eq!(parse_iso("2024-01-01T00:00:00.Z"), Err(ISO_EXPECTED));
        assert_eq!(parse_iso("2024-01-01T00:00:00Zx"), Err(ISO_EXPECTED));
        assert_eq!(parse_iso("2024-1-01T00:00:00Z"), Err(ISO_EXPECTED));
        assert_eq!(parse_iso("2300-01-01T00:00:00Z"), Err("out of range"));
    }

    #[test]
    fn iso_round_trips_every_day_of_four_centuries() {
        // Every day from 1800 to 2200 (leap years and centuries included).
        for days in -62_000..84_000i64 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        for ns in [
            0,
            1,
            1_000,
            1_000_000,
            1_760_131_237_689_043_000,
            -1_500_000_000,
            951_782_400_123_456_789,
        ] {
            assert_eq!(parse_iso(&format_iso(ns)), Ok(ns), "{}", format_iso(ns));
        }
        assert_eq!(format_iso(1_760_131_237_689_043_000), "2025-10-10T21:20:37.689043Z");
        assert_eq!(format_iso(1_723_161_255_342_000_000), "2024-08-08T23:54:15.342Z");
        assert_eq!(format_iso(0), "1970-01-01T00:00:00Z");
    }
}
