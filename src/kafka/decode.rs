//! One Kafka message to ticks in a [`Pipeline`]: a `TickBatch`, a `Tick`
//! or a JSON object read by a field mapping. A message is decoded whole
//! before any of its ticks is pushed, so a message that does not decode
//! adds nothing and is refused with a [`Reject`] reason.
//!
//! A tick's instrument comes from the message or from its key
//! ([`InstrumentFrom`]). A tick without a sequence number (0 in protobuf,
//! no seq field in JSON) takes one from its place in the partition:
//! `(offset + 1) << 16 | index in the message`, which grows along the
//! partition as the per-instrument sequence must.
//!
//! JSON numbers are read as serde_json reads them (integers exactly,
//! fractions as `f64`, written back in their shortest form); prices sent
//! as strings are read exactly.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::config::kafka::{InstrumentFrom, SourceFormat};
use crate::ingest::{parse_field, TickError};
use crate::model::{Fixed, Side, TickKind, TickValues};
use crate::service::Pipeline;
use crate::tick_file::{FieldMapping, Role, TimeUnit};
use crate::wire::tick_wire::{self, WireTick};

/// Why a message was skipped: the `reason` of
/// `airbag_kafka_rejected_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Not a message of the source's format (bytes that are not protobuf,
    /// text that is not a JSON object).
    Malformed,
    /// A field the tick needs is absent.
    MissingField,
    /// A field is there but cannot be read (a price that is not a number, a
    /// time in the wrong form, an unknown kind or side).
    BadField,
    /// `instrument_from = "key"`, and the message has no key or one that is
    /// not UTF-8.
    BadKey,
    /// More ticks in one message than `max_batch_ticks`.
    TooManyTicks,
}

impl Reject {
    pub const ALL: [Reject; 5] = [
        Reject::Malformed,
        Reject::MissingField,
        Reject::BadField,
        Reject::BadKey,
        Reject::TooManyTicks,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Malformed => "malformed",
            Reject::MissingField => "missing_field",
            Reject::BadField => "bad_field",
            Reject::BadKey => "bad_key",
            Reject::TooManyTicks => "too_many_ticks",
        }
    }
}

/// A refusal and what was wrong, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reject,
    pub detail: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.detail)
    }
}

fn refuse(reason: Reject, detail: impl Into<String>) -> Refusal {
    Refusal {
        reason,
        detail: detail.into(),
    }
}

/// The sequence number of the `index`th tick of the message at `offset`
/// when the tick carries none.
pub fn offset_seq(offset: i64, index: usize) -> u64 {
    (u64::try_from(offset).unwrap_or(0).saturating_add(1) << 16) | (index as u64 & 0xffff)
}

/// A source's decoder: its format, where instruments come from, and
/// buffers reused from message to message.
#[derive(Debug)]
pub struct Decoder {
    format: SourceFormat,
    instrument_from: InstrumentFrom,
    json: JsonMapping,
    max_ticks: usize,
    /// A `Tick` message framed as a one-tick `TickBatch`.
    framed: Vec<u8>,
    /// A number written as text, to be read as a decimal or a time.
    number: String,
}

impl Decoder {
    pub fn new(
        format: SourceFormat,
        instrument_from: InstrumentFrom,
        json: Option<&FieldMapping>,
        max_ticks: usize,
    ) -> Self {
        Decoder {
            format,
            instrument_from,
            json: JsonMapping::new(json.cloned().unwrap_or_default()),
            max_ticks,
            framed: Vec::new(),
            number: String::new(),
        }
    }

    /// Decodes one message and pushes its ticks; returns how many.
    ///
    /// # Errors
    /// The message does not decode: nothing was pushed.
    pub fn push(
        &mut self,
        payload: &[u8],
        key: Option<&[u8]>,
        offset: i64,
        pipeline: &mut Pipeline,
    ) -> Result<usize, Refusal> {
        let key_symbol = match self.instrument_from {
            InstrumentFrom::Message => None,
            InstrumentFrom::Key => Some(match key.map(std::str::from_utf8) {
                Some(Ok(symbol)) if !symbol.is_empty() => symbol,
                Some(Ok(_)) | None => return Err(refuse(Reject::BadKey, "the message has no key")),
                Some(Err(_)) => return Err(refuse(Reject::BadKey, "the key is not UTF-8")),
            }),
        };
        match self.format {
            SourceFormat::ProtobufBatch => {
                let mut count = 0usize;
                tick_wire::read_batch(payload, |_| count += 1)
                    .map_err(|e| refuse(Reject::Malformed, format!("not a TickBatch: {e}")))?;
                if count > self.max_ticks {
                    return Err(refuse(
                        Reject::TooManyTicks,
                        format!("{count} ticks; the limit is {} (max_batch_ticks)", self.max_ticks),
                    ));
                }
                let mut index = 0usize;
                // Read a second time: the first read found it whole.
                let _ = tick_wire::read_batch(payload, |tick| {
                    push_wire(pipeline, tick, key_symbol, offset, index);
                    index += 1;
                });
                Ok(count)
            }
            SourceFormat::ProtobufTick => {
                // A `Tick` is field 2 of a `TickBatch`: frame it as one.
                self.framed.clear();
                self.framed.push(0x12);
                prost::encoding::encode_varint(payload.len() as u64, &mut self.framed);
                self.framed.extend_from_slice(payload);
                let mut one = None;
                tick_wire::read_batch(&self.framed, |tick| one = Some(tick))
                    .map_err(|e| refuse(Reject::Malformed, format!("not a Tick: {e}")))?;
                let tick = one.ok_or_else(|| refuse(Reject::Malformed, "not a Tick"))?;
                push_wire(pipeline, tick, key_symbol, offset, 0);
                Ok(1)
            }
            SourceFormat::Json => {
                let tick = self.json.read(payload, key_symbol, &mut self.number)?;
                let seq = tick.seq.unwrap_or_else(|| offset_seq(offset, 0));
                pipeline.push(&tick.instrument, tick.event_time_ns, seq, Ok(tick.values));
                Ok(1)
            }
        }
    }
}

fn push_wire(pipeline: &mut Pipeline, tick: WireTick<'_>, key: Option<&str>, offset: i64, index: usize) {
    let seq = if tick.seq == 0 {
        offset_seq(offset, index)
    } else {
        tick.seq
    };
    let symbol = key.unwrap_or(tick.instrument);
    pipeline.push(symbol, tick.event_time_ns, seq, tick.values);
}

// === JSON ===

/// Where each role's value is found in a JSON object.
#[derive(Debug)]
struct JsonMapping {
    /// The field name of each role, by `Role as usize`.
    names: [Option<String>; Role::COUNT],
    /// A fixed instrument (the mapping's `symbol`).
    symbol: Option<String>,
    /// The time's unit when the time field is named (or both defaults are
    /// absent from the mapping).
    time_unit: Option<TimeUnit>,
}

/// One JSON tick, decoded.
struct JsonTick<'m> {
    instrument: Cow<'m, str>,
    event_time_ns: i64,
    seq: Option<u64>,
    values: TickValues,
}

/// A JSON value as read: scalars kept, anything else noted.
#[derive(Debug, Clone)]
enum Scalar<'m> {
    Text(Cow<'m, str>),
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Null,
    Nested,
}

impl JsonMapping {
    fn new(mapping: FieldMapping) -> Self {
        let mut names: [Option<String>; Role::COUNT] = Default::default();
        for role in Role::ALL {
            names[role as usize] = match (mapping.field(role), role) {
                (Some(name), _) => Some(name.to_string()),
                (None, Role::Time | Role::BuyerMaker) => None,
                (None, Role::Instrument) if mapping.symbol.is_some() => None,
                (None, role) => Some(role.key().to_string()),
            };
        }
        JsonMapping {
            names,
            symbol: mapping.symbol,
            time_unit: mapping.time_unit,
        }
    }

    fn name(&self, role: Role) -> &str {
        self.names[role as usize].as_deref().unwrap_or(role.key())
    }

    fn read<'m>(&self, payload: &'m [u8], key: Option<&'m str>, number: &mut String) -> Result<JsonTick<'m>, Refusal> {
        let mut fields: [Option<Scalar<'m>>; Role::COUNT] = Default::default();
        // The default time fields, when the mapping names none.
        let mut ts_ms = None;
        let mut ts_ns = None;
        let mut de = serde_json::Deserializer::from_slice(payload);
        de.deserialize_map(ObjectVisitor {
            mapping: self,
            fields: &mut fields,
            ts_ms: &mut ts_ms,
            ts_ns: &mut ts_ns,
        })
        .and_then(|()| de.end())
        .map_err(|e| refuse(Reject::Malformed, format!("not a JSON object: {e}")))?;

        let instrument = match (key, &self.symbol) {
            (Some(key), _) => Cow::Borrowed(key),
            (None, Some(symbol)) => Cow::Owned(symbol.clone()),
            (None, None) => match fields[Role::Instrument as usize].take() {
                Some(Scalar::Text(text)) if !text.is_empty() => text,
                Some(Scalar::Null) | None => return Err(missing(self.name(Role::Instrument))),
                Some(_) => {
                    return Err(refuse(
                        Reject::BadField,
                        format!("`{}`: the instrument must be a string", self.name(Role::Instrument)),
                    ))
                }
            },
        };
        let (time, time_name, unit) = match (&self.names[Role::Time as usize], ts_ms, ts_ns) {
            (Some(name), _, _) => (
                fields[Role::Time as usize].take(),
                name.as_str(),
                self.time_unit.unwrap_or(TimeUnit::Auto),
            ),
            (None, Some(ms), None) => (Some(ms), "ts_ms", self.time_unit.unwrap_or(TimeUnit::Ms)),
            (None, None, Some(ns)) => (Some(ns), "ts_ns", self.time_unit.unwrap_or(TimeUnit::Ns)),
            (None, Some(_), Some(_)) => {
                return Err(refuse(Reject::BadField, "both `ts_ms` and `ts_ns` are present"));
            }
            (None, None, None) => (None, "ts_ms", TimeUnit::Ms),
        };
        let time = time.ok_or_else(|| missing(time_name))?;
        let event_time_ns = unit
            .parse(text_of(&time, number).ok_or_else(|| bad(time_name, "a time"))?)
            .map_err(|e| refuse(Reject::BadField, format!("`{time_name}`: {e}")))?;
        let seq = match &fields[Role::Seq as usize] {
            None | Some(Scalar::Null) => None,
            Some(Scalar::U64(n)) => Some(*n),
            Some(Scalar::Text(text)) => Some(
                text.parse::<u64>()
                    .map_err(|_| bad(self.name(Role::Seq), "a sequence number"))?,
            ),
            Some(_) => return Err(bad(self.name(Role::Seq), "a sequence number")),
        };
        let get = |role: Role| match &fields[role as usize] {
            None | Some(Scalar::Null) => None,
            Some(value) => Some(value),
        };
        let kind = match get(Role::Kind) {
            Some(Scalar::Text(text)) => TickKind::from_name(text).ok_or_else(|| {
                refuse(
                    Reject::BadField,
                    format!(
                        "`{}`: expected trade, quote, mark or index, got `{text}`",
                        self.name(Role::Kind)
                    ),
                )
            })?,
            Some(_) => return Err(bad(self.name(Role::Kind), "trade, quote, mark or index")),
            None if get(Role::Price).is_none() && get(Role::Bid).is_some() && get(Role::Ask).is_some() => {
                TickKind::Quote
            }
            None => TickKind::Trade,
        };
        let mut decimal = |role: Role, required: bool| -> Result<Fixed, Refusal> {
            let name = self.name(role);
            match get(role) {
                None if required => Err(missing(name)),
                None => Ok(Fixed::ZERO),
                Some(value) => {
                    let text = text_of(value, number).ok_or_else(|| bad(name, "a decimal"))?;
                    parse_field(role.key(), text)
                        .map_err(|e: TickError| refuse(Reject::BadField, format!("`{name}`: {e}")))
                }
            }
        };
        let values = match kind {
            TickKind::Trade => TickValues::Trade {
                price: decimal(Role::Price, true)?,
                size: decimal(Role::Size, false)?,
                side: self.side(get(Role::Side), get(Role::BuyerMaker))?,
            },
            TickKind::Quote => TickValues::Quote {
                bid: decimal(Role::Bid, true)?,
                ask: decimal(Role::Ask, true)?,
                bid_size: decimal(Role::BidSize, false)?,
                ask_size: decimal(Role::AskSize, false)?,
            },
            TickKind::Mark => TickValues::Mark {
                price: decimal(Role::Price, true)?,
            },
            TickKind::Index => TickValues::Index {
                price: decimal(Role::Price, true)?,
            },
        };
        Ok(JsonTick {
            instrument,
            event_time_ns,
            seq,
            values,
        })
    }

    fn side(&self, side: Option<&Scalar<'_>>, buyer_maker: Option<&Scalar<'_>>) -> Result<Option<Side>, Refusal> {
        if let Some(flag) = buyer_maker {
            return match flag {
                Scalar::Bool(true) | Scalar::U64(1) => Ok(Some(Side::Sell)),
                Scalar::Bool(false) | Scalar::U64(0) => Ok(Some(Side::Buy)),
                Scalar::Text(t) if t.eq_ignore_ascii_case("true") || t.as_ref() == "1" => Ok(Some(Side::Sell)),
                Scalar::Text(t) if t.eq_ignore_ascii_case("false") || t.as_ref() == "0" => Ok(Some(Side::Buy)),
                _ => Err(bad(self.name(Role::BuyerMaker), "true or false")),
            };
        }
        match side {
            None => Ok(None),
            Some(Scalar::Text(s)) if s.is_empty() => Ok(None),
            Some(Scalar::Text(s)) if s.eq_ignore_ascii_case("buy") || s.eq_ignore_ascii_case("b") => {
                Ok(Some(Side::Buy))
            }
            Some(Scalar::Text(s)) if s.eq_ignore_ascii_case("sell") || s.eq_ignore_ascii_case("s") => {
                Ok(Some(Side::Sell))
            }
            Some(_) => Err(bad(self.name(Role::Side), "buy or sell")),
        }
    }
}

fn missing(name: &str) -> Refusal {
    refuse(Reject::MissingField, format!("there is no `{name}` field"))
}

fn bad(name: &str, expected: &str) -> Refusal {
    refuse(Reject::BadField, format!("`{name}`: expected {expected}"))
}

/// A scalar as text: strings as they are, numbers written out in `buf`.
fn text_of<'a>(value: &'a Scalar<'_>, buf: &'a mut String) -> Option<&'a str> {
    buf.clear();
    match value {
        Scalar::Text(text) => return Some(text),
        Scalar::U64(n) => write!(buf, "{n}"),
        Scalar::I64(n) => write!(buf, "{n}"),
        Scalar::F64(f) if f.is_finite() => write!(buf, "{f}"),
        _ => return None,
    }
    .ok()?;
    Some(buf)
}

/// Reads the top-level object: each key the mapping names keeps its
/// value; every other value is skipped unread.
struct ObjectVisitor<'a, 'm> {
    mapping: &'a JsonMapping,
    fields: &'a mut [Option<Scalar<'m>>; Role::COUNT],
    ts_ms: &'a mut Option<Scalar<'m>>,
    ts_ns: &'a mut Option<Scalar<'m>>,
}

impl<'de> Visitor<'de> for ObjectVisitor<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let timeless = self.mapping.names[Role::Time as usize].is_none();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let slot = if let Some(role) = Role::ALL
                .iter()
                .find(|&&r| self.mapping.names[r as usize].as_deref() == Some(key.as_ref()))
            {
                Some(&mut self.fields[*role as usize])
            } else if timeless && key == "ts_ms" {
                Some(&mut *self.ts_ms)
            } else if timeless && key == "ts_ns" {
                Some(&mut *self.ts_ns)
            } else {
                None
            };
            match slot {
                Some(slot) => *slot = Some(map.next_value_seed(ScalarSeed)?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// A key, borrowed from the message unless it has escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

struct ScalarSeed;

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = Scalar<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Text(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Text(Cow::Owned(v.to_owned())))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::U64(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::I64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::F64(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Nested)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Nested)
    }
}

#[cfg(test)]
mod tests;
