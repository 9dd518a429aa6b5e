//! Durations and percentages as rule authors write them: `3s`, `500ms`,
//! `1m30s`; `8%`, `0.5%`, `50bp`.

use crate::model::{Fixed, Fraction, FIXED_SCALE};

const UNITS: [(&str, i64); 7] = [
    ("ns", 1),
    ("us", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
];

/// Parses a duration such as `3s`, `250ms`, `1m30s` or `1h` into
/// nanoseconds. Every number needs a unit (`ns`, `us`, `ms`, `s`, `m`, `h`,
/// `d`); zero is allowed here and refused where it makes no sense.
///
/// # Errors
/// A message saying what is wrong with the text.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration: write e.g. `3s`, `500ms` or `5m`".into());
    }
    let bytes = s.as_bytes();
    let mut total: i64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(format!(
                "`{s}` is not a duration: expected a number at `{}`",
                &s[start..]
            ));
        }
        let number: i64 = s[start..i]
            .parse()
            .map_err(|_| format!("`{s}` is not a duration: number too large"))?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &s[unit_start..i];
        if unit.is_empty() && i < bytes.len() {
            let bad = s[i..].chars().next().unwrap_or(' ');
            return Err(format!(
                "`{s}` is not a duration: unexpected `{bad}` after `{number}` (write e.g. `3s`)"
            ));
        }
        let Some(&(_, factor)) = UNITS.iter().find(|(name, _)| *name == unit) else {
            return Err(if unit.is_empty() {
                format!("`{s}` has no unit: write e.g. `{number}s` or `{number}ms`")
            } else {
                format!("`{s}` has unknown unit `{unit}` (use ns, us, ms, s, m, h or d)")
            });
        };
        total = number
            .checked_mul(factor)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("`{s}` is too long a duration"))?;
    }
    Ok(total)
}

/// Parses a fraction written as a percentage (`8%`, `0.25%`) or in basis
/// points (`50bp`, `50bps`).
///
/// # Errors
/// A message saying what is wrong with the text.
pub fn parse_fraction(text: &str) -> Result<Fraction, String> {
    let s = text.trim();
    let (number, per) = if let Some(n) = s.strip_suffix('%') {
        (n, 100)
    } else if let Some(n) = s.strip_suffix("bps").or_else(|| s.strip_suffix("bp")) {
        (n, 10_000)
    } else {
        return Err(format!("`{s}` is not a percentage: write e.g. `8%`, `0.5%` or `50bp`"));
    };
    let value = Fixed::parse(number.trim()).map_err(|e| format!("`{s}`: the number {e}"))?;
    // value / per as parts of 10^8: exact when value has at most 8 - log10(per) decimals.
    let raw = value.raw();
    if raw % per != 0 {
        return Err(format!("`{s}` is more precise than 0.000001%"));
    }
    let _ = FIXED_SCALE;
    Ok(Fraction::from_raw(raw / per))
}

/// Formats nanoseconds as the shortest exact duration text (`3s`, `1500ms`).
pub fn format_duration(ns: i64) -> String {
    for &(name, factor) in UNITS.iter().rev() {
        if ns != 0 && ns % factor == 0 {
            return format!("{}{name}", ns / factor);
        }
    }
    format!("{ns}ns")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("3s"), Ok(3_000_000_000));
        assert_eq!(parse_duration("500ms"), Ok(500_000_000));
        assert_eq!(parse_duration("1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_duration("0s"), Ok(0));
        assert!(parse_duration("3").unwrap_err().contains("no unit"));
        assert!(parse_duration("3 parsecs").is_err());
        assert!(parse_duration("3y").unwrap_err().contains("unknown unit `y`"));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-3s").is_err());
        assert_eq!(format_duration(90_000_000_000), "90s");
        assert_eq!(format_duration(300_000_000_000), "5m");
    }

    #[test]
    fn fractions() {
        assert_eq!(parse_fraction("8%").unwrap().raw(), 8_000_000);
        assert_eq!(parse_fraction("7.99%").unwrap().raw(), 7_990_000);
        assert_eq!(parse_fraction("50bp").unwrap().raw(), 500_000);
        assert_eq!(parse_fraction("0.1%").unwrap().raw(), 100_000);
        assert!(parse_fraction("0.08").unwrap_err().contains("not a percentage"));
        assert!(parse_fraction("abc%").is_err());
        assert!(parse_fraction("0.0000001%").is_err());
    }
}
