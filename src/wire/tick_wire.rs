//! `TickBatch` read by hand, straight from the message bytes: each tick comes
//! out with its instrument borrowed from the message (checked UTF-8) and its
//! values converted to engine values, so reading a batch allocates nothing.
//!
//! It reads what prost's generated decoder reads, the same way: unknown
//! fields are skipped (groups too, to prost's recursion limit), the last
//! occurrence of a singular scalar or string field wins, occurrences of a
//! message field are merged, and a oneof member merges into the member
//! already set if it is the same one and replaces it otherwise. Bytes prost
//! refuses are refused with prost's message ([`WireError`]), so a client
//! sees the same status either way. [`super::convert::decode_batch`] is the
//! prost reference it is tested against.

use std::fmt;

use prost::encoding::{decode_varint, WireType};

use super::proto;
use crate::ingest::{required_scaled_field, TickError};
use crate::model::{Fixed, Side, TickValues};

/// How deep prost lets messages and groups nest before it refuses a message
/// (`prost::RECURSION_LIMIT`).
const RECURSION_LIMIT: u32 = 100;

/// One tick of a batch as read from the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireTick<'a> {
    /// The symbol as sent, borrowed from the message: valid UTF-8, its
    /// shape not yet checked.
    pub instrument: &'a str,
    pub event_time_ns: i64,
    pub seq: u64,
    /// Every decimal converted exactly, as [`super::convert::tick_values`]
    /// does; whether the values make sense together is not checked here.
    pub values: Result<TickValues, TickError>,
}

/// Reads a `TickBatch` message: calls `tick` for each tick in order and
/// returns the batch id. Ticks handed out before an error are to be
/// discarded: the message as a whole is refused.
///
/// # Errors
/// The bytes are not a `TickBatch` (what prost would refuse).
pub fn read_batch<'a>(message: &'a [u8], mut tick: impl FnMut(WireTick<'a>)) -> Result<u64, WireError> {
    let mut r = Reader { rest: message };
    let mut batch_id = 0;
    while !r.rest.is_empty() {
        let (tag, wire_type) = r.key()?;
        match tag {
            1 => batch_id = r.varint_field(wire_type).map_err(|e| e.at(At::BatchId))?,
            2 => {
                let mut raw = RawTick::default();
                r.message(wire_type, RECURSION_LIMIT, |r, tag, wire_type, depth| {
                    raw.merge_field(r, tag, wire_type, depth)
                })
                .map_err(|e| e.at(At::Ticks))?;
                tick(raw.finish());
            }
            _ => r.skip_field(wire_type, tag, RECURSION_LIMIT)?,
        }
    }
    Ok(batch_id)
}

/// Why a message is not a `TickBatch`. Displays as prost's `DecodeError`
/// does: the fields it was in, innermost first, then what was wrong.
/// (Boxed: it is rare, and the reader's results stay two words wide.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(Box<Failure>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure {
    kind: WireErrorKind,
    /// The fields it was in, innermost first: `stack[..depth]`.
    stack: [At; MAX_NESTING],
    depth: u8,
}

/// Messages nest at most this deep in a `TickBatch` (batch, tick, trade,
/// decimal).
const MAX_NESTING: usize = 4;

/// A field of a message in a `TickBatch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    BatchId,
    Ticks,
    Instrument,
    EventTime,
    Seq,
    Values,
    TradePrice,
    TradeSize,
    TradeSide,
    QuoteBid,
    QuoteAsk,
    QuoteBidSize,
    QuoteAskSize,
    Price,
    Mantissa,
    Scale,
}

impl At {
    /// The message and field names, as generated.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            At::BatchId => ("TickBatch", "batch_id"),
            At::Ticks => ("TickBatch", "ticks"),
            At::Instrument => ("Tick", "instrument"),
            At::EventTime => ("Tick", "event_time_ns"),
            At::Seq => ("Tick", "seq"),
            At::Values => ("Tick", "values"),
            At::TradePrice => ("Trade", "price"),
            At::TradeSize => ("Trade", "size"),
            At::TradeSide => ("Trade", "side"),
            At::QuoteBid => ("Quote", "bid"),
            At::QuoteAsk => ("Quote", "ask"),
            At::QuoteBidSize => ("Quote", "bid_size"),
            At::QuoteAskSize => ("Quote", "ask_size"),
            At::Price => ("Price", "price"),
            At::Mantissa => ("Decimal", "mantissa"),
            At::Scale => ("Decimal", "scale"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WireErrorKind {
    InvalidVarint,
    RecursionLimitReached,
    InvalidWireType { value: u64 },
    InvalidKey { key: u64 },
    InvalidTag,
    UnexpectedWireType { actual: WireType, expected: WireType },
    BufferUnderflow,
    DelimitedLengthExceeded,
    UnexpectedEndGroupTag,
    InvalidString,
}

impl WireError {
    #[cold]
    fn new(kind: WireErrorKind) -> Self {
        WireError(Box::new(Failure {
            kind,
            stack: [At::Ticks; MAX_NESTING],
            depth: 0,
        }))
    }

    /// Adds the field the error happened in, as the next outer level.
    #[cold]
    fn at(mut self, field: At) -> Self {
        let failure = &mut *self.0;
        if let Some(slot) = failure.stack.get_mut(usize::from(failure.depth)) {
            *slot = field;
            failure.depth += 1;
        }
        self
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failure = &*self.0;
        f.write_str("failed to decode Protobuf message: ")?;
        for at in &failure.stack[..usize::from(failure.depth)] {
            let (message, field) = at.names();
            write!(f, "{message}.{field}: ")?;
        }
        match failure.kind {
            WireErrorKind::InvalidVarint => f.write_str("invalid varint"),
            WireErrorKind::RecursionLimitReached => f.write_str("recursion limit reached"),
            WireErrorKind::InvalidWireType { value } => write!(f, "invalid wire type value: {value}"),
            WireErrorKind::InvalidKey { key } => write!(f, "invalid key value: {key}"),
            WireErrorKind::InvalidTag => f.write_str("invalid tag value: 0"),
            WireErrorKind::UnexpectedWireType { actual, expected } => {
                write!(f, "invalid wire type: {actual:?} (expected {expected:?})")
            }
            WireErrorKind::BufferUnderflow => f.write_str("buffer underflow"),
            WireErrorKind::DelimitedLengthExceeded => f.write_str("delimited length exceeded"),
            WireErrorKind::UnexpectedEndGroupTag => f.write_str("unexpected end group tag"),
            WireErrorKind::InvalidString => f.write_str("invalid string value: data is not UTF-8 encoded"),
        }
    }
}

impl std::error::Error for WireError {}

type Read<T> = Result<T, WireError>;

/// A cursor over a message. As in prost, reads are bounded by the end of
/// the whole message, not of the nested message being read: a field that
/// runs past its message's end is caught when that message ends
/// ("delimited length exceeded").
struct Reader<'a> {
    /// What is left of the message.
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    #[inline]
    fn varint(&mut self) -> Read<u64> {
        decode_varint(&mut self.rest).map_err(|_| WireError::new(WireErrorKind::InvalidVarint))
    }

    /// A field key: its tag and wire type.
    #[inline(always)]
    fn key(&mut self) -> Read<(u32, WireType)> {
        // Fields 1 to 15 with a valid wire type: one byte, the usual case.
        if let Some(&byte) = self.rest.first() {
            let wire_type = match byte & 0x87 {
                0 => Some(WireType::Varint),
                1 => Some(WireType::SixtyFourBit),
                2 => Some(WireType::LengthDelimited),
                5 => Some(WireType::ThirtyTwoBit),
                _ => None,
            };
            if let (Some(wire_type), 8..) = (wire_type, byte) {
                self.rest = &self.rest[1..];
                return Ok((u32::from(byte >> 3), wire_type));
            }
        }
        self.any_key()
    }

    /// A field key, in full.
    #[inline(never)]
    fn any_key(&mut self) -> Read<(u32, WireType)> {
        let key = self.varint()?;
        if key > u64::from(u32::MAX) {
            return Err(WireError::new(WireErrorKind::InvalidKey { key }));
        }
        let wire_type = WireType::try_from(key & 0x07)
            .map_err(|_| WireError::new(WireErrorKind::InvalidWireType { value: key & 0x07 }))?;
        let tag = key as u32 >> 3;
        if tag == 0 {
            return Err(WireError::new(WireErrorKind::InvalidTag));
        }
        Ok((tag, wire_type))
    }

    #[inline]
    fn expect(expected: WireType, actual: WireType) -> Read<()> {
        if expected == actual {
            Ok(())
        } else {
            Err(WireError::new(WireErrorKind::UnexpectedWireType { actual, expected }))
        }
    }

    /// A varint field's value (int64, uint64, uint32, int32 and enums are
    /// then truncated or reinterpreted as prost does).
    #[inline(always)]
    fn varint_field(&mut self, wire_type: WireType) -> Read<u64> {
        Self::expect(WireType::Varint, wire_type)?;
        self.varint()
    }

    /// A length-prefixed run of bytes.
    #[inline]
    fn bytes(&mut self) -> Read<&'a [u8]> {
        let len = self.varint()?;
        if len > self.rest.len() as u64 {
            return Err(WireError::new(WireErrorKind::BufferUnderflow));
        }
        let (bytes, rest) = self.rest.split_at(len as usize);
        self.rest = rest;
        Ok(bytes)
    }

    /// A string field.
    #[inline]
    fn string_field(&mut self, wire_type: WireType) -> Read<&'a str> {
        Self::expect(WireType::LengthDelimited, wire_type)?;
        let bytes = self.bytes()?;
        std::str::from_utf8(bytes).map_err(|_| WireError::new(WireErrorKind::InvalidString))
    }

    /// A message field: calls `field` for each of its fields, with the
    /// nesting budget `depth` of prost's `DecodeContext` one level down.
    #[inline]
    fn message(
        &mut self,
        wire_type: WireType,
        depth: u32,
        mut field: impl FnMut(&mut Self, u32, WireType, u32) -> Read<()>,
    ) -> Read<()> {
        Self::expect(WireType::LengthDelimited, wire_type)?;
        if depth == 0 {
            return Err(WireError::new(WireErrorKind::RecursionLimitReached));
        }
        let len = self.varint()?;
        if len > self.rest.len() as u64 {
            return Err(WireError::new(WireErrorKind::BufferUnderflow));
        }
        let end = self.rest.len() - len as usize;
        while self.rest.len() > end {
            let (tag, wire_type) = self.key()?;
            field(self, tag, wire_type, depth - 1)?;
        }
        if self.rest.len() != end {
            return Err(WireError::new(WireErrorKind::DelimitedLengthExceeded));
        }
        Ok(())
    }

    /// Skips a field this reader does not know, as prost's `skip_field`.
    fn skip_field(&mut self, wire_type: WireType, tag: u32, depth: u32) -> Read<()> {
        if depth == 0 {
            return Err(WireError::new(WireErrorKind::RecursionLimitReached));
        }
        let len = match wire_type {
            WireType::Varint => self.varint().map(|_| 0)?,
            WireType::ThirtyTwoBit => 4,
            WireType::SixtyFourBit => 8,
            WireType::LengthDelimited => self.varint()?,
            WireType::StartGroup => loop {
                let (inner_tag, inner_wire_type) = self.key()?;
                if inner_wire_type == WireType::EndGroup {
                    if inner_tag != tag {
                        return Err(WireError::new(WireErrorKind::UnexpectedEndGroupTag));
                    }
                    break 0;
                }
                self.skip_field(inner_wire_type, inner_tag, depth - 1)?;
            },
            WireType::EndGroup => return Err(WireError::new(WireErrorKind::UnexpectedEndGroupTag)),
        };
        if len > self.rest.len() as u64 {
            return Err(WireError::new(WireErrorKind::BufferUnderflow));
        }
        self.rest = &self.rest[len as usize..];
        Ok(())
    }

    /// A `Decimal` message field, merged into `into` (set to zero first if
    /// absent).
    #[inline]
    fn decimal(&mut self, wire_type: WireType, depth: u32, into: &mut Option<RawDecimal>) -> Read<()> {
        let decimal = into.get_or_insert_with(RawDecimal::default);
        self.message(wire_type, depth, |r, tag, wire_type, depth| match tag {
            1 => {
                let v = r.varint_field(wire_type).map_err(|e| e.at(At::Mantissa))?;
                // sint64: zigzag.
                decimal.mantissa = ((v >> 1) as i64) ^ -((v & 1) as i64);
                Ok(())
            }
            2 => {
                decimal.scale = r.varint_field(wire_type).map_err(|e| e.at(At::Scale))? as u32;
                Ok(())
            }
            _ => r.skip_field(wire_type, tag, depth),
        })
    }
}

/// A wire decimal: `mantissa × 10^-scale`.
#[derive(Debug, Clone, Copy, Default)]
struct RawDecimal {
    mantissa: i64,
    scale: u32,
}

/// Field numbers of the `values` oneof's members in `Tick`.
const TRADE: u32 = 4;
const QUOTE: u32 = 5;
const MARK: u32 = 6;
const INDEX: u32 = 7;

/// The `values` oneof of a tick as read so far: which member is set (its
/// field number, 0 for none) and that member's fields. A member's decimals
/// are its fields 1 to 4 (`Trade`: price, size; `Quote`: bid, ask,
/// bid_size, ask_size; `Price`: price).
#[derive(Debug, Clone, Copy, Default)]
struct RawValues {
    member: u32,
    decimals: [Option<RawDecimal>; 4],
    /// `Trade.side`.
    side: i32,
}

/// A tick as read so far: fields are merged until the message ends.
#[derive(Debug, Default)]
struct RawTick<'a> {
    instrument: &'a str,
    event_time_ns: i64,
    seq: u64,
    values: RawValues,
}

impl<'a> RawTick<'a> {
    #[inline]
    fn merge_field(&mut self, r: &mut Reader<'a>, tag: u32, wire_type: WireType, depth: u32) -> Read<()> {
        match tag {
            1 => {
                self.instrument = r.string_field(wire_type).map_err(|e| e.at(At::Instrument))?;
            }
            2 => self.event_time_ns = r.varint_field(wire_type).map_err(|e| e.at(At::EventTime))? as i64,
            3 => self.seq = r.varint_field(wire_type).map_err(|e| e.at(At::Seq))?,
            TRADE..=INDEX => self
                .merge_values(r, tag, wire_type, depth)
                .map_err(|e| e.at(At::Values))?,
            _ => r.skip_field(wire_type, tag, depth)?,
        }
        Ok(())
    }

    /// A member of the `values` oneof: merged into the member already set
    /// if it is the same one, else replacing it.
    #[inline]
    fn merge_values(&mut self, r: &mut Reader<'a>, member: u32, wire_type: WireType, depth: u32) -> Read<()> {
        let values = &mut self.values;
        if values.member != member {
            *values = RawValues {
                member,
                ..RawValues::default()
            };
        }
        let decimals: &[At] = match member {
            TRADE => &[At::TradePrice, At::TradeSize],
            QUOTE => &[At::QuoteBid, At::QuoteAsk, At::QuoteBidSize, At::QuoteAskSize],
            _ => &[At::Price],
        };
        r.message(wire_type, depth, |r, tag, wire_type, depth| {
            let slot = (tag - 1) as usize;
            match (decimals.get(slot), values.decimals.get_mut(slot)) {
                (Some(&field), Some(decimal)) => r.decimal(wire_type, depth, decimal).map_err(|e| e.at(field)),
                _ if member == TRADE && tag == 3 => {
                    values.side = r.varint_field(wire_type).map_err(|e| e.at(At::TradeSide))? as i32;
                    Ok(())
                }
                _ => r.skip_field(wire_type, tag, depth),
            }
        })
    }

    #[inline]
    fn finish(self) -> WireTick<'a> {
        WireTick {
            instrument: self.instrument,
            event_time_ns: self.event_time_ns,
            seq: self.seq,
            values: values(&self.values),
        }
    }
}

fn decimal(field: &'static str, value: Option<RawDecimal>) -> Result<Fixed, TickError> {
    required_scaled_field(field, value.map(|d| (d.mantissa, d.scale)))
}

/// A tick's values, every decimal converted exactly, field by field in
/// the order [`super::convert::tick_values`] converts them.
#[inline]
fn values(raw: &RawValues) -> Result<TickValues, TickError> {
    let [first, second, third, fourth] = raw.decimals;
    Ok(match raw.member {
        TRADE => TickValues::Trade {
            price: decimal("price", first)?,
            size: decimal("size", second)?,
            // An unknown side is treated as not reported.
            side: match proto::Side::try_from(raw.side) {
                Ok(proto::Side::Buy) => Some(Side::Buy),
                Ok(proto::Side::Sell) => Some(Side::Sell),
                _ => None,
            },
        },
        QUOTE => TickValues::Quote {
            bid: decimal("bid", first)?,
            ask: decimal("ask", second)?,
            bid_size: decimal("bid_size", third)?,
            ask_size: decimal("ask_size", fourth)?,
        },
        MARK => TickValues::Mark {
            price: decimal("mark", first)?,
        },
        INDEX => TickValues::Index {
            price: decimal("index", first)?,
        },
        _ => return Err(TickError::MissingValues),
    })
}
