//! `Fixed`: the exact decimal the engine computes with.
//!
//! Prices and sizes arrive as exact decimals (strings, `rust_decimal`, or a
//! scaled integer on the wire) and are held inside the engine as an `i64`
//! count of 10^-8 units. Comparisons and window arithmetic are then plain
//! integer operations: exact (no float rounding can flip a threshold) and
//! several times faster than `Decimal`.
//!
//! Range: ±92,233,720,368.54775807 with 8 decimal places. A value with more
//! decimal places or outside that range is rejected, never rounded.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;

/// Decimal places held by [`Fixed`].
pub const FIXED_DECIMALS: u32 = 8;
/// `10^FIXED_DECIMALS`: the raw value of `Fixed::ONE`.
pub const FIXED_SCALE: i64 = 100_000_000;

/// An exact decimal with 8 fractional digits, stored as a scaled `i64`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct Fixed(i64);

/// Why a decimal could not be turned into a [`Fixed`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FixedError {
    #[error("not a finite decimal number")]
    NotANumber,
    #[error("has more than {FIXED_DECIMALS} decimal places")]
    TooPrecise,
    #[error("is outside the supported range of ±92233720368.54775807")]
    OutOfRange,
}

impl Fixed {
    pub const ZERO: Fixed = Fixed(0);
    pub const ONE: Fixed = Fixed(FIXED_SCALE);
    pub const MAX: Fixed = Fixed(i64::MAX);

    /// Wraps a raw count of 10^-8 units.
    pub const fn from_raw(raw: i64) -> Self {
        Fixed(raw)
    }

    /// The raw count of 10^-8 units.
    pub const fn raw(self) -> i64 {
        self.0
    }

    /// A whole number.
    pub const fn from_int(value: i64) -> Option<Self> {
        match value.checked_mul(FIXED_SCALE) {
            Some(raw) => Some(Fixed(raw)),
            None => None,
        }
    }

    /// `mantissa × 10^-scale`, the wire encoding of a decimal.
    ///
    /// # Errors
    /// [`FixedError::TooPrecise`] when digits below 10^-8 are not zero,
    /// [`FixedError::OutOfRange`] when the value does not fit.
    pub fn from_scaled(mantissa: i64, scale: u32) -> Result<Self, FixedError> {
        if mantissa == 0 {
            // Zero at any scale is exactly zero.
            return Ok(Fixed::ZERO);
        }
        if scale <= FIXED_DECIMALS {
            let factor = 10i64.pow(FIXED_DECIMALS - scale);
            mantissa.checked_mul(factor).map(Fixed).ok_or(FixedError::OutOfRange)
        } else {
            let divisor = 10i128
                .checked_pow(scale - FIXED_DECIMALS)
                .ok_or(FixedError::TooPrecise)?;
            let m = mantissa as i128;
            if m % divisor != 0 {
                return Err(FixedError::TooPrecise);
            }
            i64::try_from(m / divisor)
                .map(Fixed)
                .map_err(|_| FixedError::OutOfRange)
        }
    }

    /// Converts an exact `Decimal`.
    ///
    /// # Errors
    /// As [`Fixed::from_scaled`].
    pub fn from_decimal(value: Decimal) -> Result<Self, FixedError> {
        let normalized = value.normalize();
        let mantissa = normalized.mantissa();
        let scale = normalized.scale();
        if scale > FIXED_DECIMALS {
            return Err(FixedError::TooPrecise);
        }
        let raw = mantissa
            .checked_mul(10i128.pow(FIXED_DECIMALS - scale))
            .ok_or(FixedError::OutOfRange)?;
        i64::try_from(raw).map(Fixed).map_err(|_| FixedError::OutOfRange)
    }

    /// The same value as a `Decimal` (always exact).
    pub fn to_decimal(self) -> Decimal {
        Decimal::new(self.0, FIXED_DECIMALS)
    }

    /// Parses a plain decimal string such as `-123.45`, `0.00000001` or `7`.
    ///
    /// Exponents, `NaN` and infinities are rejected. This is the CSV and
    /// rule-file path, so it is hand-written to be allocation-free.
    ///
    /// # Errors
    /// [`FixedError::NotANumber`] for anything that is not a finite plain
    /// decimal, otherwise as [`Fixed::from_scaled`].
    pub fn parse(text: &str) -> Result<Self, FixedError> {
        let bytes = text.trim().as_bytes();
        let (negative, digits) = match bytes.first() {
            Some(b'-') => (true, &bytes[1..]),
            Some(b'+') => (false, &bytes[1..]),
            _ => (false, bytes),
        };
        if digits.is_empty() {
            return Err(FixedError::NotANumber);
        }
        let mut int_part: i64 = 0;
        let mut frac_part: i64 = 0;
        let mut frac_digits: u32 = 0;
        let mut seen_dot = false;
        let mut seen_digit = false;
        for &b in digits {
            match b {
                b'0'..=b'9' => {
                    seen_digit = true;
                    let d = i64::from(b - b'0');
                    if seen_dot {
                        if frac_digits == FIXED_DECIMALS {
                            if d != 0 {
                                return Err(FixedError::TooPrecise);
                            }
                            continue;
                        }
                        frac_part = frac_part * 10 + d;
                        frac_digits += 1;
                    } else {
                        int_part = int_part
                            .checked_mul(10)
                            .and_then(|v| v.checked_add(d))
                            .ok_or(FixedError::OutOfRange)?;
                    }
                }
                b'.' if !seen_dot => seen_dot = true,
                _ => return Err(FixedError::NotANumber),
            }
        }
        if !seen_digit {
            return Err(FixedError::NotANumber);
        }
        let frac = frac_part * 10i64.pow(FIXED_DECIMALS - frac_digits);
        let magnitude = int_part
            .checked_mul(FIXED_SCALE)
            .and_then(|v| v.checked_add(frac))
            .ok_or(FixedError::OutOfRange)?;
        Ok(Fixed(if negative { -magnitude } else { magnitude }))
    }

    pub const fn is_positive(self) -> bool {
        self.0 > 0
    }

    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    pub fn checked_add(self, other: Fixed) -> Option<Fixed> {
        self.0.checked_add(other.0).map(Fixed)
    }

    pub fn checked_sub(self, other: Fixed) -> Option<Fixed> {
        self.0.checked_sub(other.0).map(Fixed)
    }

    /// `self × other`, truncated toward zero to 8 decimals.
    pub fn checked_mul(self, other: Fixed) -> Option<Fixed> {
        let wide = i128::from(self.0) * i128::from(other.0) / i128::from(FIXED_SCALE);
        i64::try_from(wide).ok().map(Fixed)
    }

    /// The value as `f64`, for display and statistics only (never for
    /// decisions).
    pub fn to_f64(self) -> f64 {
        self.0 as f64 / FIXED_SCALE as f64
    }
}

impl FromStr for Fixed {
    type Err = FixedError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fixed::parse(s)
    }
}

impl fmt::Display for Fixed {
    /// Shortest exact decimal form: `65000`, `0.5`, `-0.00000001`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let magnitude = self.0.unsigned_abs();
        let scale = FIXED_SCALE as u64;
        let int = magnitude / scale;
        let mut frac = magnitude % scale;
        if frac == 0 {
            return write!(f, "{sign}{int}");
        }
        let mut width = FIXED_DECIMALS as usize;
        while frac.is_multiple_of(10) {
            frac /= 10;
            width -= 1;
        }
        write!(f, "{sign}{int}.{frac:0width$}")
    }
}

impl fmt::Debug for Fixed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A fraction such as a percentage threshold, held exactly as parts per
/// 10^8 (`8%` is `8_000_000`). Comparisons against a ratio of two
/// [`Fixed`] values are done by cross-multiplication in `i128`, so
/// "exactly 8.00%" is decided exactly.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug)]
pub struct Fraction(i64);

impl Fraction {
    /// Parts per 10^8.
    pub const fn from_raw(parts: i64) -> Self {
        Fraction(parts)
    }

    pub const fn raw(self) -> i64 {
        self.0
    }

    /// True when `numerator / denominator >= self`; `denominator` must be
    /// positive.
    #[inline]
    pub fn le_ratio(self, numerator: i64, denominator: i64) -> bool {
        debug_assert!(denominator > 0);
        i128::from(numerator) * i128::from(FIXED_SCALE) >= i128::from(self.0) * i128::from(denominator)
    }

    /// True when `numerator / denominator > self`; `denominator` must be
    /// positive.
    #[inline]
    pub fn lt_ratio(self, numerator: i64, denominator: i64) -> bool {
        debug_assert!(denominator > 0);
        i128::from(numerator) * i128::from(FIXED_SCALE) > i128::from(self.0) * i128::from(denominator)
    }

    /// The value as a percentage, for display (`8%` gives `8`).
    pub fn percent(self) -> Fixed {
        Fixed(self.0 * 100)
    }
}

impl fmt::Display for Fraction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.percent())
    }
}

/// `numerator / denominator` as a percentage with 8 decimals, truncated:
/// the "change %" reported in alert values. `None` when the denominator is
/// zero.
pub fn percent_of(numerator: i64, denominator: i64) -> Option<Fixed> {
    if denominator == 0 {
        return None;
    }
    let wide = i128::from(numerator) * 100 * i128::from(FIXED_SCALE) / i128::from(denominator);
    i64::try_from(wide).ok().map(Fixed::from_raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_exactly() {
        for (text, raw, shown) in [
            ("65000", 6_500_000_000_000, "65000"),
            ("0.00000001", 1, "0.00000001"),
            ("-1.5", -150_000_000, "-1.5"),
            ("+2.10", 210_000_000, "2.1"),
            ("1.234567890", 123_456_789, "1.23456789"),
            (".5", 50_000_000, "0.5"),
        ] {
            let v = Fixed::parse(text).unwrap();
            assert_eq!(v.raw(), raw, "{text}");
            assert_eq!(v.to_string(), shown, "{text}");
        }
    }

    #[test]
    fn rejects_what_it_cannot_hold_exactly() {
        assert_eq!(Fixed::parse("NaN"), Err(FixedError::NotANumber));
        assert_eq!(Fixed::parse("inf"), Err(FixedError::NotANumber));
        assert_eq!(Fixed::parse("1e5"), Err(FixedError::NotANumber));
        assert_eq!(Fixed::parse(""), Err(FixedError::NotANumber));
        assert_eq!(Fixed::parse("-"), Err(FixedError::NotANumber));
        assert_eq!(Fixed::parse("."), Err(FixedError::NotANumber));
        assert_eq!(Fixed::parse("1.2.3"), Err(FixedError::NotANumber));
        assert_eq!(Fixed::parse("0.000000001"), Err(FixedError::TooPrecise));
        assert_eq!(
            Fixed::parse("92233720369"),
            Err(FixedError::OutOfRange),
            "just past the range"
        );
        assert!(Fixed::parse("92233720368.54775807").is_ok());
    }

    #[test]
    fn scaled_and_decimal_inputs_agree_with_strings() {
        assert_eq!(
            Fixed::from_scaled(6_500_012, 2).unwrap(),
            Fixed::parse("65000.12").unwrap()
        );
        assert_eq!(
            Fixed::from_scaled(1_000, 11).unwrap(),
            Fixed::parse("0.00000001").unwrap()
        );
        assert_eq!(Fixed::from_scaled(1_001, 11), Err(FixedError::TooPrecise));
        assert_eq!(Fixed::from_scaled(i64::MAX, 0), Err(FixedError::OutOfRange));
        let d: Decimal = "123.45600".parse().unwrap();
        assert_eq!(Fixed::from_decimal(d).unwrap(), Fixed::parse("123.456").unwrap());
        assert_eq!(Fixed::parse("123.456").unwrap().to_decimal(), d.normalize());
    }

    #[test]
    fn fraction_comparison_is_exact_at_the_threshold() {
        let eight = Fraction::from_raw(8_000_000);
        // 100 -> 92 is exactly 8%.
        assert!(eight.le_ratio(800_000_000, 10_000_000_000));
        assert!(!eight.lt_ratio(800_000_000, 10_000_000_000));
        // 100 -> 92.01 is 7.99%.
        assert!(!eight.le_ratio(799_000_000, 10_000_000_000));
        assert_eq!(percent_of(8, 100).unwrap().to_string(), "8");
    }
}
