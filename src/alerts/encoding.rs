//! A published alert as journal bytes: a version byte, then every field of
//! the [`Alert`] and its receive and emit times, in a fixed order. The
//! sequence number is the journal record's own and is not repeated.
//!
//! Integers are LEB128 varints (signed ones zigzag-encoded), strings a
//! varint length and UTF-8 bytes, enums one byte each with the codes
//! below, which never change meaning. An alert written by a build reads
//! back in every later build: a new field means a new version byte.
//!
//! Version 1:
//!
//! ```text
//! version=1 ruleset_version rule_id instrument kind severity mode
//! n_actions (code [name if custom])* n_values (name raw_value)*
//! event_time_ns has_tick_seq [tick_seq] has_reason [reason]
//! received_ns emitted_ns
//! ```

use std::borrow::Cow;
use std::sync::Arc;

use crate::model::{Action, Alert, AlertKind, AlertValue, Fixed, Mode, Severity};

use super::PublishedAlert;

/// The encoding written.
pub const ENCODING_VERSION: u8 = 1;

/// Why journal bytes are not an alert.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("byte {offset}: {what}")]
pub struct DecodeError {
    pub offset: usize,
    pub what: String,
}

/// Replaces `out` with the encoding of `alert` and its times.
pub fn encode_alert(alert: &Alert, received_ns: i64, emitted_ns: i64, out: &mut Vec<u8>) {
    out.clear();
    out.push(ENCODING_VERSION);
    put_u64(out, alert.ruleset_version);
    put_str(out, &alert.rule_id);
    put_str(out, &alert.instrument);
    out.push(kind_code(alert.kind));
    out.push(severity_code(alert.severity));
    out.push(mode_code(alert.mode));
    put_u64(out, alert.actions.len() as u64);
    for action in alert.actions.iter() {
        out.push(action_code(action));
        if let Action::Custom(name) = action {
            put_str(out, name);
        }
    }
    put_u64(out, alert.values.len() as u64);
    for v in &alert.values {
        put_str(out, &v.name);
        put_i64(out, v.value.raw());
    }
    put_i64(out, alert.event_time_ns);
    match alert.tick_seq {
        Some(seq) => {
            out.push(1);
            put_u64(out, seq);
        }
        None => out.push(0),
    }
    match &alert.reason {
        Some(reason) => {
            out.push(1);
            put_str(out, reason);
        }
        None => out.push(0),
    }
    put_i64(out, received_ns);
    put_i64(out, emitted_ns);
}

/// Replaces `out` with the encoding of a published alert.
pub fn encode_published(published: &PublishedAlert, out: &mut Vec<u8>) {
    encode_alert(&published.alert, published.received_ns, published.emitted_ns, out);
}

/// An alert and its receive and emit times from their encoding.
///
/// # Errors
/// An unknown version, a bad code, a truncated field, text that is not
/// UTF-8, or bytes left over.
pub fn decode_alert(bytes: &[u8]) -> Result<(Alert, i64, i64), DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    let version = r.byte("the version")?;
    if version != ENCODING_VERSION {
        return Err(r.error_before(
            1,
            format!("unknown alert encoding version {version} (this build reads {ENCODING_VERSION})"),
        ));
    }
    let ruleset_version = r.u64("ruleset_version")?;
    let rule_id = Arc::from(r.str("rule_id")?);
    let instrument = Arc::from(r.str("instrument")?);
    let kind = r.code("kind", kind_of)?;
    let severity = r.code("severity", severity_of)?;
    let mode = r.code("mode", mode_of)?;
    let n = r.count("actions")?;
    let mut actions = Vec::with_capacity(n);
    for _ in 0..n {
        let code = r.byte("an action")?;
        actions.push(match code {
            ACTION_CUSTOM => Action::Custom(Arc::from(r.str("a custom action")?)),
            code => action_of(code).ok_or_else(|| r.error_before(1, format!("unknown action code {code}")))?,
        });
    }
    let n = r.count("values")?;
    let mut values = Vec::with_capacity(n);
    for _ in 0..n {
        let name = Cow::Owned(r.str("a value's name")?.to_owned());
        let value = Fixed::from_raw(r.i64("a value")?);
        values.push(AlertValue { name, value });
    }
    let event_time_ns = r.i64("event_time_ns")?;
    let tick_seq = match r.flag("tick_seq")? {
        true => Some(r.u64("tick_seq")?),
        false => None,
    };
    let reason = match r.flag("reason")? {
        true => Some(Cow::Owned(r.str("reason")?.to_owned())),
        false => None,
    };
    let received_ns = r.i64("received_ns")?;
    let emitted_ns = r.i64("emitted_ns")?;
    if r.at != bytes.len() {
        return Err(r.error_before(0, format!("{} bytes after the alert", bytes.len() - r.at)));
    }
    let alert = Alert {
        rule_id,
        ruleset_version,
        instrument,
        kind,
        severity,
        actions: Arc::from(actions),
        mode,
        values,
        event_time_ns,
        tick_seq,
        reason,
    };
    Ok((alert, received_ns, emitted_ns))
}

/// A published alert from the journal record `seq`.
///
/// # Errors
/// As [`decode_alert`].
pub fn decode_published(seq: u64, bytes: &[u8]) -> Result<PublishedAlert, DecodeError> {
    let (alert, received_ns, emitted_ns) = decode_alert(bytes)?;
    Ok(PublishedAlert::new(seq, alert, received_ns, emitted_ns))
}

fn put_u64(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    put_u64(out, ((v << 1) ^ (v >> 63)) as u64);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u64(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    /// An error about the field that ended `back` bytes ago.
    fn error_before(&self, back: usize, what: String) -> DecodeError {
        DecodeError {
            offset: self.at.saturating_sub(back),
            what,
        }
    }

    fn byte(&mut self, field: &str) -> Result<u8, DecodeError> {
        let b = *self
            .bytes
            .get(self.at)
            .ok_or_else(|| self.error_before(0, format!("truncated: {field} is missing")))?;
        self.at += 1;
        Ok(b)
    }

    fn u64(&mut self, field: &str) -> Result<u64, DecodeError> {
        let start = self.at;
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte(field)?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                break;
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError {
            offset: start,
            what: format!("{field} is not a valid varint"),
        })
    }

    fn i64(&mut self, field: &str) -> Result<i64, DecodeError> {
        let z = self.u64(field)?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    fn flag(&mut self, field: &str) -> Result<bool, DecodeError> {
        match self.byte(field)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(self.error_before(1, format!("{field}: presence flag {other} is neither 0 nor 1"))),
        }
    }

    /// A count of items that each take at least one byte.
    fn count(&mut self, field: &str) -> Result<usize, DecodeError> {
        let n = self.u64(field)?;
        let left = (self.bytes.len() - self.at) as u64;
        if n > left {
            return Err(self.error_before(0, format!("{field}: {n} items cannot fit in {left} bytes")));
        }
        Ok(n as usize)
    }

    fn str(&mut self, field: &str) -> Result<&'a str, DecodeError> {
        let len = self.count(field)?;
        let bytes = &self.bytes[self.at..self.at + len];
        let text =
            std::str::from_utf8(bytes).map_err(|e| self.error_before(0, format!("{field} is not UTF-8: {e}")))?;
        self.at += len;
        Ok(text)
    }

    fn code<T>(&mut self, field: &str, of: fn(u8) -> Option<T>) -> Result<T, DecodeError> {
        let code = self.byte(field)?;
        of(code).ok_or_else(|| self.error_before(1, format!("unknown {field} code {code}")))
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

const ACTION_CUSTOM: u8 = 5;

fn action_code(action: &Action) -> u8 {
    match action {
        Action::Halt => 0,
        Action::Resume => 1,
        Action::ReduceOnly => 2,
        Action::RaiseMargin => 3,
        Action::Notify => 4,
        Action::Custom(_) => ACTION_CUSTOM,
    }
}

fn action_of(code: u8) -> Option<Action> {
    Some(match code {
        0 => Action::Halt,
        1 => Action::Resume,
        2 => Action::ReduceOnly,
        3 => Action::RaiseMargin,
        4 => Action::Notify,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample() -> Alert {
        Alert {
            rule_id: Arc::from("btc-flash-crash"),
            ruleset_version: 7,
            instrument: Arc::from("BTC-USDT"),
            kind: AlertKind::Tripped,
            severity: Severity::Critical,
            actions: Arc::from(vec![Action::Halt, Action::Custom(Arc::from("page-desk"))]),
            mode: Mode::Shadow,
            values: vec![
                AlertValue::new("peak", Fixed::from_raw(6_500_000_000_000)),
                AlertValue::new("change_pct", Fixed::from_raw(-800_000_001)),
            ],
            event_time_ns: 1_700_000_002_500_000_000,
            tick_seq: Some(4),
            reason: Some(Cow::Borrowed("rule removed or changed by a reload")),
        }
    }

    #[test]
    fn an_alert_round_trips_exactly() {
        let alert = sample();
        let mut bytes = Vec::new();
        encode_alert(&alert, -5, i64::MAX, &mut bytes);
        assert_eq!(bytes[0], ENCODING_VERSION);
        assert_eq!(decode_alert(&bytes).unwrap(), (alert.clone(), -5, i64::MAX));
        let timer = Alert {
            tick_seq: None,
            reason: None,
            actions: Arc::from(Vec::new()),
            values: Vec::new(),
            ..alert
        };
        encode_alert(&timer, 0, 0, &mut bytes);
        assert_eq!(decode_alert(&bytes).unwrap(), (timer, 0, 0));
        let published = decode_published(9, &bytes).unwrap();
        assert_eq!(published.seq, 9);
    }

    #[test]
    fn damaged_bytes_are_errors_never_panics() {
        let mut bytes = Vec::new();
        encode_alert(&sample(), 1, 2, &mut bytes);
        for cut in 0..bytes.len() {
            let err = decode_alert(&bytes[..cut]).unwrap_err();
            assert!(
                err.what.contains("truncated") || err.what.contains("cannot fit"),
                "cut {cut}: {err}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            decode_alert(&longer).unwrap_err().to_string(),
            format!("byte {}: 1 bytes after the alert", bytes.len())
        );
        let mut v2 = bytes.clone();
        v2[0] = 2;
        assert_eq!(
            decode_alert(&v2).unwrap_err().to_string(),
            "byte 0: unknown alert encoding version 2 (this build reads 1)"
        );
        // Every single-byte change decodes to something or fails cleanly.
        for i in 0..bytes.len() {
            for v in [0u8, 0x7f, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] = v;
                let _ = decode_alert(&b);
            }
        }
    }

    fn arb_action() -> impl Strategy<Value = Action> {
        prop_oneof![
            Just(Action::Halt),
            Just(Action::Resume),
            Just(Action::ReduceOnly),
            Just(Action::RaiseMargin),
            Just(Action::Notify),
            "\\PC{1,12}".prop_map(|s| Action::Custom(Arc::from(s))),
        ]
    }

    proptest! {
        #[test]
        fn any_alert_round_trips(
            rule_id in "\\PC{0,20}",
            instrument in "\\PC{0,20}",
            ruleset_version in any::<u64>(),
            kind in 0u8..7,
            severity in 0u8..3,
            shadow in any::<bool>(),
            actions in prop::collection::vec(arb_action(), 0..4),
            values in prop::collection::vec(("\\PC{0,10}", any::<i64>()), 0..6),
            event_time_ns in any::<i64>(),
            tick_seq in any::<Option<u64>>(),
            reason in prop::option::of("\\PC{0,30}"),
            received_ns in any::<i64>(),
            emitted_ns in any::<i64>(),
        ) {
            let alert = Alert {
                rule_id: Arc::from(rule_id),
                ruleset_version,
                instrument: Arc::from(instrument),
                kind: kind_of(kind).unwrap(),
                severity: severity_of(severity).unwrap(),
                actions: Arc::from(actions),
                mode: if shadow { Mode::Shadow } else { Mode::Active },
                values: values
                    .into_iter()
                    .map(|(name, raw)| AlertValue { name: Cow::Owned(name), value: Fixed::from_raw(raw) })
                    .collect(),
                event_time_ns,
                tick_seq,
                reason: reason.map(Cow::Owned),
            };
            let mut bytes = Vec::new();
            encode_alert(&alert, received_ns, emitted_ns, &mut bytes);
            prop_assert_eq!(decode_alert(&bytes).unwrap(), (alert, received_ns, emitted_ns));
        }
    }
}
