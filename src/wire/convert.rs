//! The only place protobuf types meet model types: ticks in, alerts,
//! filters and rule listings out.

use bytes::Bytes;
use prost::Message;

use super::proto;
use crate::alerts::{FilterSpec, PublishedAlert};
use crate::ingest::{required_scaled_field, validate_values, TickError};
use crate::model::{Alert, Fixed, Severity, Side, TickValues, FIXED_DECIMALS};
use crate::rules::ruleset::SourceFile;
use crate::rules::{CompiledRule, RuleError};
use crate::state::instruments::check_symbol;

fn decimal(field: &'static str, value: Option<&proto::Decimal>) -> Result<Fixed, TickError> {
    required_scaled_field(field, value.map(|d| (d.mantissa, d.scale)))
}

/// The values of a wire tick, every decimal converted exactly. Whether the
/// values make sense together is checked later
/// ([`crate::ingest::validate_values`]).
///
/// # Errors
/// No values, or a decimal missing or not representable.
#[inline]
pub fn tick_values(tick: &proto::Tick) -> Result<TickValues, TickError> {
    use proto::tick::Values;
    Ok(match tick.values.as_ref() {
        None => return Err(TickError::MissingValues),
        Some(Values::Trade(t)) => TickValues::Trade {
            price: decimal("price", t.price.as_ref())?,
            size: decimal("size", t.size.as_ref())?,
            // An unknown side is treated as not reported.
            side: match proto::Side::try_from(t.side) {
                Ok(proto::Side::Buy) => Some(Side::Buy),
                Ok(proto::Side::Sell) => Some(Side::Sell),
                _ => None,
            },
        },
        Some(Values::Quote(q)) => TickValues::Quote {
            bid: decimal("bid", q.bid.as_ref())?,
            ask: decimal("ask", q.ask.as_ref())?,
            bid_size: decimal("bid_size", q.bid_size.as_ref())?,
            ask_size: decimal("ask_size", q.ask_size.as_ref())?,
        },
        Some(Values::Mark(p)) => TickValues::Mark {
            price: decimal("mark", p.price.as_ref())?,
        },
        Some(Values::Index(p)) => TickValues::Index {
            price: decimal("index", p.price.as_ref())?,
        },
    })
}

/// A wire tick's values as ingest accepts them: every decimal converted
/// exactly ([`tick_values`]), then the tick checked as a whole
/// ([`validate_values`]). The instrument is resolved afterwards.
///
/// # Errors
/// The first problem found, naming the field.
#[inline]
pub fn checked_values(tick: &proto::Tick) -> Result<TickValues, TickError> {
    let values = tick_values(tick)?;
    validate_values(tick.event_time_ns, &values)?;
    Ok(values)
}

/// A `TickBatch` message decoded from its bytes, with each tick's values
/// or the reason ingest rejects it before the engine sees it.
#[derive(Debug)]
pub struct DecodedBatch {
    pub batch: proto::TickBatch,
    /// One entry per tick of `batch`, in order.
    pub ticks: Vec<Result<TickValues, TickError>>,
}

/// Decodes a `TickBatch` message with prost and checks each tick as
/// `Ingest` does: values ([`checked_values`]), then the symbol's shape.
/// What needs the engine (the instrument cap, sequence and time order) and
/// the stream (`max_batch_ticks`) is not checked here. For tools and
/// fuzzing, and the reference `Ingest`'s own reader
/// ([`super::tick_wire`]) is tested against.
///
/// # Errors
/// The bytes are not a `TickBatch`.
pub fn decode_batch(bytes: &[u8]) -> Result<DecodedBatch, prost::DecodeError> {
    let batch = proto::TickBatch::decode(bytes)?;
    let ticks = batch
        .ticks
        .iter()
        .map(|tick| {
            let values = checked_values(tick)?;
            check_symbol(&tick.instrument).map_err(TickError::Symbol)?;
            Ok(values)
        })
        .collect();
    Ok(DecodedBatch { batch, ticks })
}

/// A [`Fixed`] as the shortest exact wire decimal: `92` is `{92, 0}`,
/// `-8.5` is `{-85, 1}`.
pub fn decimal_of(value: Fixed) -> proto::Decimal {
    let mut mantissa = value.raw();
    let mut scale = FIXED_DECIMALS;
    while scale > 0 && mantissa % 10 == 0 {
        mantissa /= 10;
        scale -= 1;
    }
    proto::Decimal { mantissa, scale }
}

pub fn severity_of(severity: Severity) -> proto::Severity {
    match severity {
        Severity::Info => proto::Severity::Info,
        Severity::Warning => proto::Severity::Warning,
        Severity::Critical => proto::Severity::Critical,
    }
}

/// A published alert as its wire message.
pub fn alert_message(published: &PublishedAlert) -> proto::Alert {
    alert_to_proto(
        &published.alert,
        published.seq,
        published.received_ns,
        published.emitted_ns,
    )
}

/// An engine alert as the wire message, with the sequence number and times
/// the bus gave it.
pub fn alert_to_proto(a: &Alert, seq: u64, received_ns: i64, emitted_ns: i64) -> proto::Alert {
    proto::Alert {
        seq,
        rule_id: a.rule_id.to_string(),
        ruleset_version: a.ruleset_version,
        instrument: a.instrument.to_string(),
        kind: a.kind.name().to_string(),
        severity: severity_of(a.severity) as i32,
        actions: a.actions.iter().map(|x| x.name().to_string()).collect(),
        mode: a.mode.name().to_string(),
        values: a
            .values
            .iter()
            .map(|v| proto::AlertValue {
                name: v.name.to_string(),
                value: Some(decimal_of(v.value)),
            })
            .collect(),
        event_time_ns: a.event_time_ns,
        tick_seq: a.tick_seq,
        received_time_ns: received_ns,
        emitted_time_ns: emitted_ns,
        reason: a.reason.as_deref().unwrap_or_default().to_string(),
        trigger_instrument: a.trigger_instrument.as_deref().unwrap_or_default().to_string(),
    }
}

/// A published alert encoded as its wire message's bytes: done once per
/// alert and shared by every subscriber.
pub fn encode_alert(published: &PublishedAlert) -> Bytes {
    Bytes::from(alert_message(published).encode_to_vec())
}

/// A subscribe request's filter and starting sequence number.
///
/// # Errors
/// An unknown severity value.
pub fn subscribe_request(request: proto::SubscribeRequest) -> Result<(FilterSpec, u64), String> {
    let min_severity = match proto::Severity::try_from(request.min_severity) {
        Ok(proto::Severity::Unspecified) => None,
        Ok(proto::Severity::Info) => Some(Severity::Info),
        Ok(proto::Severity::Warning) => Some(Severity::Warning),
        Ok(proto::Severity::Critical) => Some(Severity::Critical),
        Err(_) => return Err(format!("min_severity: unknown value {}", request.min_severity)),
    };
    Ok((
        FilterSpec {
            instruments: request.instruments,
            min_severity,
            actions: request.actions,
            rule_ids: request.rule_ids,
            include_shadow: request.include_shadow,
        },
        request.from_seq,
    ))
}

/// One thing in force on one instrument, as `Alerts.State` reports it.
pub fn instrument_state(s: &crate::engine::InstrumentStatus) -> proto::InstrumentState {
    proto::InstrumentState {
        instrument: s.instrument.to_string(),
        trigger_instrument: s.trigger_instrument.as_deref().unwrap_or_default().to_string(),
        rule_id: s.rule_id.to_string(),
        ruleset_version: s.ruleset_version,
        kind: s.status.kind.name().to_string(),
        severity: severity_of(s.status.severity) as i32,
        actions: s.status.actions.iter().map(|a| a.name().to_string()).collect(),
        since_time_ns: s.status.since_ns,
        until_time_ns: s.status.until_ns,
    }
}

fn u32_saturating(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

pub fn rule_error(e: &RuleError) -> proto::RuleError {
    proto::RuleError {
        file: e.file.clone(),
        line: u32_saturating(e.line),
        column: u32_saturating(e.column),
        message: e.message.clone(),
    }
}

pub fn rule_errors(errors: &[RuleError]) -> Vec<proto::RuleError> {
    errors.iter().map(rule_error).collect()
}

// The deprecated `severity` string is still filled, for older clients.
#[allow(deprecated)]
pub fn rule_info(rule: &CompiledRule) -> proto::RuleInfo {
    proto::RuleInfo {
        id: rule.id.to_string(),
        kind: rule.kind_name.to_string(),
        severity: rule.severity.name().to_string(),
        severity_level: severity_of(rule.severity) as i32,
        actions: rule.actions.iter().map(|a| a.name().to_string()).collect(),
        mode: rule.mode.name().to_string(),
        instruments: rule.scope.patterns.clone(),
        exclude: rule.scope.exclude_patterns.clone(),
        file: rule.source.file.clone(),
        line: u32_saturating(rule.source.line),
        description: rule.description.clone().unwrap_or_default(),
        labels: rule.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

pub fn source_file(s: &SourceFile) -> proto::SourceFile {
    proto::SourceFile {
        name: s.name.clone(),
        sha256: s.sha256.clone(),
    }
}

pub fn count_u32(n: usize) -> u32 {
    u32_saturating(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(mantissa: i64, scale: u32) -> Option<proto::Decimal> {
        Some(proto::Decimal { mantissa, scale })
    }

    fn trade(price: Option<proto::Decimal>, size: Option<proto::Decimal>) -> proto::Tick {
        proto::Tick {
            instrument: "BTC-USDT".into(),
            event_time_ns: 1,
            seq: 1,
            values: Some(proto::tick::Values::Trade(proto::Trade { price, size, side: 1 })),
        }
    }

    #[test]
    fn decodes_exact_decimals() {
        let v = tick_values(&trade(d(6_500_012, 2), d(1, 0))).unwrap();
        assert_eq!(
            v,
            TickValues::Trade {
                price: Fixed::parse("65000.12").unwrap(),
                size: Fixed::ONE,
                side: Some(Side::Buy)
            }
        );
    }

    #[test]
    fn rejects_missing_and_unrepresentable() {
        let none = proto::Tick {
            values: None,
            ..trade(None, None)
        };
        assert_eq!(tick_values(&none).unwrap_err().code(), "missing_values");
        let e = tick_values(&trade(d(1, 0), None)).unwrap_err();
        assert_eq!(
            (e.code().as_str(), e.to_string().as_str()),
            ("missing_values", "size: is missing")
        );
        let e = tick_values(&trade(d(1, 9), d(1, 0))).unwrap_err();
        assert_eq!(e.to_string(), "price: has more than 8 decimal places");
    }

    #[test]
    fn encodes_the_shortest_decimal() {
        assert_eq!(
            decimal_of(Fixed::parse("92").unwrap()),
            proto::Decimal { mantissa: 92, scale: 0 }
        );
        assert_eq!(
            decimal_of(Fixed::parse("-8.5").unwrap()),
            proto::Decimal {
                mantissa: -85,
                scale: 1
            }
        );
        assert_eq!(decimal_of(Fixed::ZERO), proto::Decimal { mantissa: 0, scale: 0 });
        assert_eq!(decimal_of(Fixed::from_raw(1)), proto::Decimal { mantissa: 1, scale: 8 });
    }
}
