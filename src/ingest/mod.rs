//! Tick validation: every check a tick passes before it may touch state.
//!
//! Decoders (gRPC, CSV) turn each field into a [`Fixed`] with
//! [`parse_field`], [`scaled_field`] or [`decimal_field`], which name the
//! field in their errors; [`validate_values`] then checks the tick as a
//! whole. The engine adds the checks that need state (sequence, time
//! order, the instrument cap). A rejected tick changes nothing.

use rust_decimal::Decimal;

use crate::model::{Fixed, FixedError, InstrumentId, Tick, TickValues};
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
    #[error("tick has no values: set one of trade, quote, mark or index")]
    MissingValues,
    #[error("quote is crossed: bid {bid} is above ask {ask}")]
    Crossed { bid: Fixed, ask: Fixed },
    #[error("event_time: {0} is not a time after the Unix epoch in nanoseconds")]
    BadTime(i64),
    /// Further ahead of the server's clock than `max_future_skew_ms`: a
    /// clock or unit fault at the source. Accepted, it would make every
    /// later real tick of the instrument `late`.
    #[error(
        "event_time: {event_time_ns} is {} ms ahead of the server clock ({now_ns}), beyond max_future_skew_ms = {max_skew_ms}; \
         check the source's clock and that event_time_ns is in nanoseconds",
        ahead_ms(*event_time_ns, *now_ns)
    )]
    Future {
        event_time_ns: i64,
        now_ns: i64,
        max_skew_ms: u64,
    },
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
    /// The stable code of this rejection, for metrics and acknowledgements.
    pub fn code(&self) -> RejectCode {
        match self {
            TickError::Symbol(SymbolError::TooManyInstruments { .. }) => RejectCode::TooManyInstruments,
            TickError::Symbol(_) => RejectCode::BadSymbol,
            // An unset field is a missing value, as an unset oneof is.
            TickError::Value {
                reason: ValueError::Missing,
                ..
            } => RejectCode::MissingValues,
            TickError::Value { .. } => RejectCode::BadValue,
            TickError::MissingValues => RejectCode::MissingValues,
            TickError::Crossed { .. } => RejectCode::CrossedQuote,
            TickError::BadTime(_) | TickError::Future { .. } => RejectCode::BadTime,
            TickError::Duplicate { .. } | TickError::DuplicateHeld { .. } => RejectCode::Duplicate,
            TickError::Late { .. } => RejectCode::Late,
        }
    }
}

/// How far `event_time_ns` is ahead of `now_ns`, in whole milliseconds.
fn ahead_ms(event_time_ns: i64, now_ns: i64) -> i128 {
    (i128::from(event_time_ns) - i128::from(now_ns)) / 1_000_000
}

/// Why a tick was refused, as a stable machine name: the `code` of a
/// `Rejection` in an acknowledgement, the `reason` label of
/// `airbag_ticks_rejected_total`, the keys of a replay's rejection counts.
/// Every transport and report uses this one list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectCode {
    TooManyInstruments,
    BadSymbol,
    BadValue,
    CrossedQuote,
    BadTime,
    Duplicate,
    Late,
    MissingValues,
}

impl RejectCode {
    /// How many codes there are: the length of per-code count arrays.
    pub const COUNT: usize = 8;

    /// Every code, in the order counts are kept and reported.
    pub const ALL: [RejectCode; RejectCode::COUNT] = [
        RejectCode::TooManyInstruments,
        RejectCode::BadSymbol,
        RejectCode::BadValue,
        RejectCode::CrossedQuote,
        RejectCode::BadTime,
        RejectCode::Duplicate,
        RejectCode::Late,
        RejectCode::MissingValues,
    ];

    /// The machine name sent to clients and used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::TooManyInstruments => "too_many_instruments",
            RejectCode::BadSymbol => "bad_symbol",
            RejectCode::BadValue => "bad_value",
            RejectCode::CrossedQuote => "crossed_quote",
            RejectCode::BadTime => "bad_time",
            RejectCode::Duplicate => "duplicate",
            RejectCode::Late => "late",
            RejectCode::MissingValues => "missing_values",
        }
    }

    /// The code's position in [`RejectCode::ALL`] (and in count arrays).
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }

    /// The code named `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

impl std::fmt::Display for RejectCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for RejectCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Rejections counted by code, indexed by [`RejectCode::index`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RejectCounts(pub [u64; RejectCode::COUNT]);

impl RejectCounts {
    #[inline]
    pub fn add(&mut self, code: RejectCode) {
        self.0[code.index()] += 1;
    }

    pub fn get(&self, code: RejectCode) -> u64 {
        self.0[code.index()]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// `(code, count)` for every code with a count, in [`RejectCode::ALL`]
    /// order.
    pub fn nonzero(&self) -> impl Iterator<Item = (RejectCode, u64)> + '_ {
        RejectCode::ALL.into_iter().zip(self.0).filter(|(_, n)| *n > 0)
    }
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

/// A tick's event time and values that passed [`validate_values`], before
/// its instrument is resolved: a source checks a tick as it reads it, so a
/// bad tick adds no instrument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckedValues {
    event_time_ns: i64,
    values: TickValues,
}

impl CheckedValues {
    /// # Errors
    /// As [`validate_values`].
    #[inline]
    pub fn new(event_time_ns: i64, values: TickValues) -> Result<Self, TickError> {
        validate_values(event_time_ns, &values)?;
        Ok(CheckedValues { event_time_ns, values })
    }

    pub fn event_time_ns(&self) -> i64 {
        self.event_time_ns
    }

    pub fn values(&self) -> TickValues {
        self.values
    }

    /// The tick of `instrument` with these values.
    #[inline]
    pub fn tick(self, instrument: InstrumentId, seq: u64) -> ValidTick {
        ValidTick(Tick {
            instrument,
            event_time_ns: self.event_time_ns,
            seq,
            values: self.values,
        })
    }
}

/// A tick that passed [`validate_values`]. The engine's batch entries take
/// only these: a tick is validated once, where its source read it, and
/// never again on its way to the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidTick(Tick);

impl ValidTick {
    /// # Errors
    /// As [`validate_values`].
    #[inline]
    pub fn new(tick: Tick) -> Result<Self, TickError> {
        validate_values(tick.event_time_ns, &tick.values)?;
        Ok(ValidTick(tick))
    }

    #[inline]
    pub fn tick(&self) -> &Tick {
        &self.0
    }
}

impl std::ops::Deref for ValidTick {
    type Target = Tick;

    #[inline]
    fn deref(&self) -> &Tick {
        &self.0
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
    fn reject_codes_are_listed_once_in_index_order() {
        for (i, code) in RejectCode::ALL.into_iter().enumerate() {
            assert_eq!(code.index(), i);
            assert_eq!(RejectCode::from_name(code.as_str()), Some(code));
        }
        let mut names: Vec<_> = RejectCode::ALL.iter().map(|c| c.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), RejectCode::COUNT);
        assert_eq!(TickError::MissingValues.code(), "missing_values");
        let unset = required_scaled_field("price", None).unwrap_err();
        assert_eq!(
            (unset.code(), unset.to_string().as_str()),
            (RejectCode::MissingValues, "price: is missing")
        );
        let future = TickError::Future {
            event_time_ns: i64::MAX,
            now_ns: 1_700_000_000_000_000_000,
            max_skew_ms: 60_000,
        };
        assert_eq!(future.code(), "bad_time");
        assert!(
            future
                .to_string()
                .starts_with("event_time: 9223372036854775807 is 7523372036854 ms ahead of the server clock"),
            "{future}"
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
