//! Tick validation: every check a tick passes before it may touch state.
//!
//! Decoders (gRPC, CSV) turn each field into a [`Fixed`] with
//! [`parse_field`], [`scaled_field`] or [`decimal_field`], which name the
//! field in their errors; [`validate_values`] then checks the tick as a
//! whole. The engine adds the checks that need state (sequence, time
//! order, the instrument cap). A rejected tick changes nothing.

use rust_decimal::Decimal;

use crate::model::{Fixed, FixedError, TickValues};
use crate::state::SymbolError;

/// Why one value of a tick was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("{0}")]
    Number(#[from] FixedError),
    #[error("must be above zero, got {0}")]
    NotPositive(Fixed),
    #[error("must not be negative, got {0}")]
    Negative(Fixed),
    #[error("is missing")]
    Missing,
}

/// Why a tick was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TickError {
    #[error("instrument: {0}")]
    Symbol(#[from] SymbolError),
    #[error("{field}: {reason}")]
    Value { field: &'static str, reason: ValueError },
    #[error("quote is crossed: bid {bid} is above ask {ask}")]
    Crossed { bid: Fixed, ask: Fixed },
    #[error("event_time: {0} is not a time after the Unix epoch in nanoseconds")]
    BadTime(i64),
    #[error("duplicate: sequence {seq} is at or below the last applied {last}")]
    Duplicate { seq: u64, last: u64 },
    #[error("duplicate: sequence {seq} is already held, waiting to be applied in event-time order")]
    DuplicateHeld { seq: u64 },
    #[error(
        "late: event time {event_time_ns} is {} ns before the instrument's newest {newest_ns}, beyond the allowed lateness of {allowed_ns} ns",
        newest_ns.saturating_sub(*event_time_ns)
    )]
    Late {
        event_time_ns: i64,
        newest_ns: i64,
        allowed_ns: i64,
    },
}

impl TickError {
    /// A short stable name for metrics and acknowledgements.
    pub fn code(&self) -> &'static str {
        match self {
            TickError::Symbol(SymbolError::TooManyInstruments { .. }) => "too_many_instruments",
            TickError::Symbol(_) => "bad_symbol",
            TickError::Value { .. } => "bad_value",
            TickError::Crossed { .. } => "crossed_quote",
            TickError::BadTime(_) => "bad_time",
            TickError::Duplicate { .. } | TickError::DuplicateHeld { .. } => "duplicate",
            TickError::Late { .. } => "late",
        }
    }

    /// Every code [`TickError::code`] can return.
    pub const CODES: [&'static str; 7] = [
        "too_many_instruments",
        "bad_symbol",
        "bad_value",
        "crossed_quote",
        "bad_time",
        "duplicate",
        "late",
    ];
}

/// Parses a decimal string for `field`.
///
/// # Errors
/// [`TickError::Value`] naming the field.
pub fn parse_field(field: &'static str, text: &str) -> Result<Fixed, TickError> {
    Fixed::parse(text).map_err(|e| TickError::Value {
        field,
        reason: e.into(),
    })
}

/// Converts a wire decimal `mantissa × 10^-scale` for `field`.
///
/// # Errors
/// [`TickError::Value`] naming the field.
pub fn scaled_field(field: &'static str, mantissa: i64, scale: u32) -> Result<Fixed, TickError> {
    Fixed::from_scaled(mantissa, scale).map_err(|e| TickError::Value {
        field,
        reason: e.into(),
    })
}

/// A decimal `field` that must be present, as its mantissa and scale:
/// `ValueError::Missing` when it is absent.
pub fn required_scaled_field(field: &'static str, parts: Option<(i64, u32)>) -> Result<Fixed, TickError> {
    match parts {
        Some((mantissa, scale)) => scaled_field(field, mantissa, scale),
        None => Err(TickError::Value {
            field,
            reason: ValueError::Missing,
        }),
    }
}

/// Converts a `Decimal` for `field`.
///
/// # Errors
/// [`TickError::Value`] naming the field.
pub fn decimal_field(field: &'static str, value: Decimal) -> Result<Fixed, TickError> {
    Fixed::from_decimal(value).map_err(|e| TickError::Value {
        field,
        reason: e.into(),
    })
}

fn positive(field: &'static str, v: Fixed) -> Result<(), TickError> {
    if v.is_positive() {
        Ok(())
    } else {
        Err(TickError::Value {
            field,
            reason: ValueError::NotPositive(v),
        })
    }
}

fn not_negative(field: &'static str, v: Fixed) -> Result<(), TickError> {
    if v.is_negative() {
        Err(TickError::Value {
            field,
            reason: ValueError::Negative(v),
        })
    } else {
        Ok(())
    }
}

/// Checks a tick's time and values: prices above zero, sizes not
/// negative, bid not above ask.
///
/// # Errors
/// The first problem found.
#[inline]
pub fn validate_values(event_time_ns: i64, values: &TickValues) -> Result<(), TickError> {
    if event_time_ns <= 0 {
        return Err(TickError::BadTime(event_time_ns));
    }
    match *values {
        TickValues::Trade { price, size, .. } => {
            positive("price", price)?;
            not_negative("size", size)
        }
        TickValues::Quote {
            bid,
            ask,
            bid_size,
            ask_size,
        } => {
            positive("bid", bid)?;
            positive("ask", ask)?;
            not_negative("bid_size", bid_size)?;
            not_negative("ask_size", ask_size)?;
            if bid > ask {
                return Err(TickError::Crossed { bid, ask });
            }
            Ok(())
        }
        TickValues::Mark { price } => positive("mark", price),
        TickValues::Index { price } => positive("index", price),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn px(s: &str) -> Fixed {
        Fixed::parse(s).unwrap()
    }

    #[test]
    fn refuses_bad_values_naming_the_field() {
        let trade = |p: &str, s: &str| TickValues::Trade {
            price: px(p),
            size: px(s),
            side: None,
        };
        assert!(validate_values(1, &trade("1", "0")).is_ok());
        assert_eq!(
            validate_values(1, &trade("0", "1")).unwrap_err().to_string(),
            "price: must be above zero, got 0"
        );
        assert_eq!(validate_values(1, &trade("-1", "1")).unwrap_err().code(), "bad_value");
        assert_eq!(
            validate_values(1, &trade("1", "-2")).unwrap_err().to_string(),
            "size: must not be negative, got -2"
        );
        assert_eq!(validate_values(0, &trade("1", "1")).unwrap_err().code(), "bad_time");
        let quote = TickValues::Quote {
            bid: px("101"),
            ask: px("100"),
            bid_size: px("1"),
            ask_size: px("1"),
        };
        assert_eq!(
            validate_values(1, &quote).unwrap_err().to_string(),
            "quote is crossed: bid 101 is above ask 100"
        );
        let locked = TickValues::Quote {
            bid: px("100"),
            ask: px("100"),
            bid_size: px("1"),
            ask_size: px("1"),
        };
        assert!(validate_values(1, &locked).is_ok());
        assert_eq!(
            validate_values(1, &TickValues::Mark { price: px("0") })
                .unwrap_err()
                .to_string(),
            "mark: must be above zero, got 0"
        );
    }

    #[test]
    fn decoders_name_the_field() {
        assert_eq!(
            parse_field("bid", "NaN").unwrap_err().to_string(),
            "bid: not a finite decimal number"
        );
        assert_eq!(
            parse_field("price", "1e3").unwrap_err().to_string(),
            "price: not a finite decimal number"
        );
        assert_eq!(
            scaled_field("size", 1, 9).unwrap_err().to_string(),
            "size: has more than 8 decimal places"
        );
        assert_eq!(scaled_field("price", 650_001, 1).unwrap(), px("65000.1"));
    }
}
