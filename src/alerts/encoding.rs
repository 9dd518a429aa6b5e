//! A published alert as journal bytes: a version byte, then every field of
//! the [`Alert`] and its receive and emit times in postcard encoding, in a
//! fixed order. The sequence number is the journal record's own and is not
//! repeated.
//!
//! Postcard writes integers as LEB128 varints (signed ones zigzag-encoded),
//! strings as a varint length and UTF-8 bytes, an `Option` as a 0 or 1 byte
//! and then the value, a sequence as a varint count and its items, and an
//! enum as a varint variant index. Kinds, severities and modes are one
//! byte each with the codes below, which never change meaning; an action
//! is a variant index (the same codes) and, for a custom one, its name.
//!
//! Version 1:
//!
//! ```text
//! version=1 ruleset_version rule_id instrument kind severity mode
//! n_actions (code [name if custom])* n_values (name raw_value)*
//! event_time_ns has_tick_seq [tick_seq] has_reason [reason]
//! received_ns emitted_ns
//! ```
//!
//! Version 2 (written now) is version 1 followed by the instrument that
//! triggered an alert acting on another one (`targets`):
//!
//! ```text
//! version=2 <the fields of version 1> has_trigger [trigger_instrument]
//! ```
//!
//! Both versions are read. Journals written before the encoding moved to
//! postcard are read as they are: version 1 was a hand-written encoding of
//! exactly that layout, and postcard writes it byte for byte (the tests
//! hold a record written by the former encoder). A new field or a changed
//! layout takes a new version byte; a version this build does not know is
//! refused with an error naming it ([`DecodeError::Version`]), never
//! guessed at.
//!
//! Cost (`cargo bench --bench journal`, `encoding/*`): encoding takes about
//! 50 ns more than the hand-written encoder did (some 110 ns for a
//! drawdown alert), decoding no more (about 0.4 µs, allocations included).
//! Encoding runs on the journal writer's thread, off the publisher's path,
//! next to a `write` per group; that is no reason to keep a second encoder.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use crate::model::{Action, Alert, AlertKind, AlertValue, Fixed, Mode, Severity};

use super::PublishedAlert;

/// The encoding written.
pub const ENCODING_VERSION: u8 = 2;

/// The oldest encoding read.
pub const OLDEST_VERSION: u8 = 1;

/// Items preallocated for a decoded list, whatever count the bytes claim:
/// a damaged count cannot make a large allocation before the bytes run out.
const MAX_PREALLOC: usize = 16;

/// Why journal bytes are not an alert.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("no bytes: the version byte is missing")]
    Empty,
    #[error(
        "alert encoding version {found} is not supported by this build, which reads versions {OLDEST_VERSION} to {ENCODING_VERSION}"
    )]
    Version { found: u8 },
    #[error("the alert cannot be decoded: {0}")]
    Postcard(#[source] postcard::Error),
    #[error("unknown {field} code {code}")]
    Code { field: &'static str, code: u8 },
    #[error("{0} bytes after the alert")]
    Trailing(usize),
}

/// Why an alert could not be encoded (no alert the engine raises fails).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the alert cannot be encoded: {0}")]
pub struct EncodeError(#[source] postcard::Error);

/// Replaces `out` with the encoding of `alert` and its times. Reuses
/// `out`'s capacity: allocates nothing once it has grown.
///
/// # Errors
/// A value postcard cannot represent (not one an alert holds).
pub fn encode_alert(alert: &Alert, received_ns: i64, emitted_ns: i64, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    out.clear();
    out.push(ENCODING_VERSION);
    let record = AlertOut {
        ruleset_version: alert.ruleset_version,
        rule_id: &alert.rule_id,
        instrument: &alert.instrument,
        kind: kind_code(alert.kind),
        severity: severity_code(alert.severity),
        mode: mode_code(alert.mode),
        actions: ActionsOut(&alert.actions),
        values: ValuesOut(&alert.values),
        event_time_ns: alert.event_time_ns,
        tick_seq: alert.tick_seq,
        reason: alert.reason.as_deref(),
        received_ns,
        emitted_ns,
    };
    postcard::serialize_with_flavor(&record, Append(&mut *out)).map_err(EncodeError)?;
    postcard::serialize_with_flavor(&alert.trigger_instrument.as_deref(), Append(out)).map_err(EncodeError)
}

/// Replaces `out` with the encoding of a published alert.
///
/// # Errors
/// As [`encode_alert`].
pub fn encode_published(published: &PublishedAlert, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    encode_alert(&published.alert, published.received_ns, published.emitted_ns, out)
}

/// An alert and its receive and emit times from their encoding.
///
/// # Errors
/// No bytes, an unknown version, a bad code, a truncated field, text that
/// is not UTF-8, or bytes left over.
pub fn decode_alert(bytes: &[u8]) -> Result<(Alert, i64, i64), DecodeError> {
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if !(OLDEST_VERSION..=ENCODING_VERSION).contains(&version) {
        return Err(DecodeError::Version { found: version });
    }
    let (record, mut rest) = postcard::take_from_bytes::<AlertIn<'_>>(body).map_err(DecodeError::Postcard)?;
    let mut trigger_instrument = None;
    if version >= 2 {
        let (trigger, after) = postcard::take_from_bytes::<Option<&str>>(rest).map_err(DecodeError::Postcard)?;
        trigger_instrument = trigger.map(Arc::from);
        rest = after;
    }
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(rest.len()));
    }
    let alert = Alert {
        rule_id: Arc::from(record.rule_id),
        ruleset_version: record.ruleset_version,
        instrument: Arc::from(record.instrument),
        kind: code("kind", record.kind, kind_of)?,
        severity: code("severity", record.severity, severity_of)?,
        actions: Arc::from(record.actions.0),
        mode: code("mode", record.mode, mode_of)?,
        values: record.values.0,
        event_time_ns: record.event_time_ns,
        tick_seq: record.tick_seq,
        reason: record.reason.map(|r| Cow::Owned(r.to_owned())),
        trigger_instrument,
    };
    Ok((alert, record.received_ns, record.emitted_ns))
}

/// A published alert from the journal record `seq`.
///
/// # Errors
/// As [`decode_alert`].
pub fn decode_published(seq: u64, bytes: &[u8]) -> Result<PublishedAlert, DecodeError> {
    let (alert, received_ns, emitted_ns) = decode_alert(bytes)?;
    Ok(PublishedAlert::new(seq, alert, received_ns, emitted_ns))
}

/// The value of a one-byte `code` for `field`, or why there is none.
fn code<T>(field: &'static str, code: u8, of: fn(u8) -> Option<T>) -> Result<T, DecodeError> {
    of(code).ok_or(DecodeError::Code { field, code })
}

/// Postcard output appended to a `Vec`, slices copied whole.
struct Append<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// The fields in their encoded order, borrowed from the alert.
#[derive(Serialize)]
struct AlertOut<'a> {
    ruleset_version: u64,
    rule_id: &'a str,
    instrument: &'a str,
    kind: u8,
    severity: u8,
    mode: u8,
    actions: ActionsOut<'a>,
    values: ValuesOut<'a>,
    event_time_ns: i64,
    tick_seq: Option<u64>,
    reason: Option<&'a str>,
    received_ns: i64,
    emitted_ns: i64,
}

/// The same fields decoded, text borrowed from the bytes.
#[derive(Deserialize)]
struct AlertIn<'a> {
    ruleset_version: u64,
    rule_id: &'a str,
    instrument: &'a str,
    kind: u8,
    severity: u8,
    mode: u8,
    actions: ActionsIn,
    values: ValuesIn,
    event_time_ns: i64,
    tick_seq: Option<u64>,
    reason: Option<&'a str>,
    received_ns: i64,
    emitted_ns: i64,
}

/// An action as encoded: the variant index is the action's code.
#[derive(Serialize, Deserialize)]
enum ActionCode<'a> {
    Halt,
    Resume,
    ReduceOnly,
    RaiseMargin,
    Notify,
    Custom(&'a str),
}

impl<'a> ActionCode<'a> {
    fn of(action: &'a Action) -> Self {
        match action {
            Action::Halt => ActionCode::Halt,
            Action::Resume => ActionCode::Resume,
            Action::ReduceOnly => ActionCode::ReduceOnly,
            Action::RaiseMargin => ActionCode::RaiseMargin,
            Action::Notify => ActionCode::Notify,
            Action::Custom(name) => ActionCode::Custom(name),
        }
    }

    fn action(self) -> Action {
        match self {
            ActionCode::Halt => Action::Halt,
            ActionCode::Resume => Action::Resume,
            ActionCode::ReduceOnly => Action::ReduceOnly,
            ActionCode::RaiseMargin => Action::RaiseMargin,
            ActionCode::Notify => Action::Notify,
            ActionCode::Custom(name) => Action::Custom(Arc::from(name)),
        }
    }
}

struct ActionsOut<'a>(&'a [Action]);

impl Serialize for ActionsOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for action in self.0 {
            seq.serialize_element(&ActionCode::of(action))?;
        }
        seq.end()
    }
}

struct ValuesOut<'a>(&'a [AlertValue]);

impl Serialize for ValuesOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for v in self.0 {
            seq.serialize_element(&(&*v.name, v.value.raw()))?;
        }
        seq.end()
    }
}

/// The actions, decoded straight into the alert's list.
struct ActionsIn(Vec<Action>);

impl<'de> Deserialize<'de> for ActionsIn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Actions;
        impl<'de> Visitor<'de> for Actions {
            type Value = ActionsIn;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of actions")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ActionsIn, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_PREALLOC));
                while let Some(code) = seq.next_element::<ActionCode<'de>>()? {
                    out.push(code.action());
                }
                Ok(ActionsIn(out))
            }
        }
        deserializer.deserialize_seq(Actions)
    }
}

/// The values, decoded straight into the alert's list.
struct ValuesIn(Vec<AlertValue>);

impl<'de> Deserialize<'de> for ValuesIn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Values;
        impl<'de> Visitor<'de> for Values {
            type Value = ValuesIn;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of named values")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ValuesIn, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_PREALLOC));
                while let Some((name, raw)) = seq.next_element::<(&'de str, i64)>()? {
                    out.push(AlertValue {
                        name: Cow::Owned(name.to_owned()),
                        value: Fixed::from_raw(raw),
                    });
                }
                Ok(ValuesIn(out))
            }
        }
        deserializer.deserialize_seq(Values)
    }
}

fn kind_code(kind: AlertKind) -> u8 {
    match kind {
        AlertKind::Fired => 0,
        AlertKind::Resolved => 1,
        AlertKind::Tripped => 2,
        AlertKind::Resumed => 3,
        AlertKind::Rearmed => 4,
        AlertKind::Limit => 5,
        AlertKind::Paused => 6,
    }
}

fn kind_of(code: u8) -> Option<AlertKind> {
    Some(match code {
        0 => AlertKind::Fired,
        1 => AlertKind::Resolved,
        2 => AlertKind::Tripped,
        3 => AlertKind::Resumed,
        4 => AlertKind::Rearmed,
        5 => AlertKind::Limit,
        6 => AlertKind::Paused,
        _ => return None,
    })
}

fn severity_code(severity: Severity) -> u8 {
    match severity {
        Severity::Info => 0,
        Severity::Warning => 1,
        Severity::Critical => 2,
    }
}

fn severity_of(code: u8) -> Option<Severity> {
    Some(match code {
        0 => Severity::Info,
        1 => Severity::Warning,
        2 => Severity::Critical,
        _ => return None,
    })
}

fn mode_code(mode: Mode) -> u8 {
    match mode {
        Mode::Active => 0,
        Mode::Shadow => 1,
    }
}

fn mode_of(code: u8) -> Option<Mode> {
    Some(match code {
        0 => Mode::Active,
        1 => Mode::Shadow,
        _ => return None,
    })
}

#[cfg(test)]
mod tests;
