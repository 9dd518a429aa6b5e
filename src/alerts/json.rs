//! One alert as one JSON object, or as one CSV row: what `airbag subscribe`
//! prints for alerts from a server, `airbag replay` for alerts from its own
//! engine, and what a console feed would send. All go through
//! [`AlertJson`], made from the model's alert ([`PublishedAlert`] or an
//! [`Alert`] with its sequence number and times), so they print the same
//! object for the same alert, byte for byte. A client converts what it
//! received to the model first; nothing here knows the wire.
//!
//! ```text
//! {"seq":7,"rule_id":"btc-flash-crash","ruleset_version":2,"instrument":"BTC-USDT","kind":"fired",
//!  "severity":"critical","actions":["halt"],"mode":"active","event_time_ns":1700000002000000000,
//!  "tick_seq":3,"received_time_ns":11,"emitted_time_ns":12,"values":{"peak":"65000","change_pct":"-8"}}
//! ```
//!
//! `values` keeps the rule's order and holds exact decimal strings (the
//! shortest exact form of each value); `tick_seq` is `null` when a timer
//! raised the alert; `reason` is present only when there is one, and so is
//! `trigger_instrument` (an alert of a rule with `targets`, acting on
//! another instrument than the one that raised it).

use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::Serialize;

use super::PublishedAlert;
use crate::model::{Action, Alert, AlertValue};

/// The fields of one printed alert, borrowed from the alert.
#[derive(Serialize)]
pub struct AlertJson<'a> {
    pub seq: u64,
    pub rule_id: &'a str,
    pub ruleset_version: u64,
    pub instrument: &'a str,
    pub kind: &'a str,
    pub severity: &'a str,
    pub actions: Actions<'a>,
    pub mode: &'a str,
    pub event_time_ns: i64,
    pub tick_seq: Option<u64>,
    pub received_time_ns: i64,
    pub emitted_time_ns: i64,
    pub values: Values<'a>,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub reason: &'a str,
    /// The instrument whose tick raised an alert that acts on another.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub trigger_instrument: &'a str,
}

/// Action names, as a JSON list.
pub struct Actions<'a>(&'a [Action]);

/// Alert values as a JSON object of exact decimal strings, in order.
pub struct Values<'a>(&'a [AlertValue]);

impl<'a> AlertJson<'a> {
    /// A published alert.
    pub fn of(published: &'a PublishedAlert) -> Self {
        Self::from_engine(
            &published.alert,
            published.seq,
            published.received_ns,
            published.emitted_ns,
        )
    }

    /// An alert as an engine raised it, with the sequence number and the
    /// receive and emit times the alert bus (or replay) gives it.
    pub fn from_engine(alert: &'a Alert, seq: u64, received_time_ns: i64, emitted_time_ns: i64) -> Self {
        AlertJson {
            seq,
            rule_id: &alert.rule_id,
            ruleset_version: alert.ruleset_version,
            instrument: &alert.instrument,
            kind: alert.kind.name(),
            severity: alert.severity.name(),
            actions: Actions(&alert.actions),
            mode: alert.mode.name(),
            event_time_ns: alert.event_time_ns,
            tick_seq: alert.tick_seq,
            received_time_ns,
            emitted_time_ns,
            values: Values(&alert.values),
            reason: alert.reason.as_deref().unwrap_or_default(),
            trigger_instrument: alert.trigger_instrument.as_deref().unwrap_or_default(),
        }
    }

    /// Appends the alert as one JSON object (no line end) to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        // Writing into a Vec cannot fail, and every field serializes.
        if let Err(e) = serde_json::to_writer(&mut *out, self) {
            debug_assert!(false, "alert JSON: {e}");
        }
    }

    /// The header of [`AlertJson::write_csv`]'s rows.
    pub const CSV_HEADER: &'static str = "seq,rule_id,ruleset_version,instrument,kind,severity,actions,mode,\
        event_time_ns,tick_seq,received_time_ns,emitted_time_ns,values,reason,trigger_instrument";

    /// Appends the alert as one CSV row (no line end): actions joined by
    /// `;`, values as `name=value` joined by `;`, an empty `tick_seq` for
    /// timer alerts; fields quoted only when they need it.
    pub fn write_csv(&self, out: &mut Vec<u8>) {
        use std::fmt::Write as _;
        use std::io::Write as _;
        let mut actions = String::new();
        for action in self.actions.0 {
            if !actions.is_empty() {
                actions.push(';');
            }
            actions.push_str(action.name());
        }
        let mut values = String::new();
        for v in self.values.0 {
            if !values.is_empty() {
                values.push(';');
            }
            // Writing to a String cannot fail.
            let _ = write!(values, "{}={}", v.name, v.value);
        }
        let tick_seq = self.tick_seq.map(|s| s.to_string()).unwrap_or_default();
        let _ = write!(out, "{},", self.seq);
        csv_field(out, self.rule_id);
        let _ = write!(out, ",{},", self.ruleset_version);
        for text in [self.instrument, self.kind, self.severity, &actions, self.mode] {
            csv_field(out, text);
            out.push(b',');
        }
        let _ = write!(
            out,
            "{},{},{},{},",
            self.event_time_ns, tick_seq, self.received_time_ns, self.emitted_time_ns
        );
        csv_field(out, &values);
        out.push(b',');
        csv_field(out, self.reason);
        out.push(b',');
        csv_field(out, self.trigger_instrument);
    }
}

/// A CSV field, quoted (with doubled quotes) when it holds a comma, quote
/// or line end.
fn csv_field(out: &mut Vec<u8>, text: &str) {
    if text.contains([',', '"', '\n', '\r']) {
        out.push(b'"');
        out.extend_from_slice(text.replace('"', "\"\"").as_bytes());
        out.push(b'"');
    } else {
        out.extend_from_slice(text.as_bytes());
    }
}

impl Serialize for Actions<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for action in self.0 {
            seq.serialize_element(action.name())?;
        }
        seq.end()
    }
}

impl Serialize for Values<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for v in self.0 {
            // `Fixed`'s display is the shortest exact form.
            map.serialize_entry(&*v.name, &v.value.to_string())?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::{AlertKind, Fixed, Mode, Severity};

    fn engine_alert() -> Alert {
        let fx = |s: &str| Fixed::parse(s).unwrap();
        Alert {
            rule_id: Arc::from("btc-flash-crash"),
            ruleset_version: 2,
            instrument: Arc::from("BTC-USDT"),
            kind: AlertKind::Fired,
            severity: Severity::Critical,
            actions: Arc::from(vec![Action::Halt, Action::Custom(Arc::from("page"))]),
            mode: Mode::Shadow,
            values: vec![
                AlertValue::new("peak", fx("65000")),
                AlertValue::new("change_pct", fx("-8.00000001")),
                AlertValue::new("tiny", fx("0.005")),
                AlertValue::new("zero", fx("0")),
            ],
            event_time_ns: 1_700_000_002_000_000_000,
            tick_seq: Some(3),
            reason: Some("a, \"quoted\" reason".into()),
            trigger_instrument: None,
        }
    }

    #[test]
    fn an_alert_prints_as_one_json_object_and_one_csv_row() {
        let alert = engine_alert();
        let published = PublishedAlert::new(9, alert.clone(), 11, 12);
        let mut out = Vec::new();
        AlertJson::of(&published).write_json(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"seq":9,"rule_id":"btc-flash-crash","ruleset_version":2,"instrument":"BTC-USDT","kind":"fired","severity":"critical","actions":["halt","page"],"mode":"shadow","event_time_ns":1700000002000000000,"tick_seq":3,"received_time_ns":11,"emitted_time_ns":12,"values":{"peak":"65000","change_pct":"-8.00000001","tiny":"0.005","zero":"0"},"reason":"a, \"quoted\" reason"}"#
        );
        let mut csv = Vec::new();
        AlertJson::from_engine(&alert, 9, 11, 12).write_csv(&mut csv);
        assert_eq!(
            String::from_utf8(csv).unwrap(),
            "9,btc-flash-crash,2,BTC-USDT,fired,critical,halt;page,shadow,1700000002000000000,3,11,12,\
             peak=65000;change_pct=-8.00000001;tiny=0.005;zero=0,\"a, \"\"quoted\"\" reason\","
        );
        let timer = Alert {
            tick_seq: None,
            reason: None,
            values: vec![],
            ..alert
        };
        let mut out = Vec::new();
        AlertJson::from_engine(&timer, 9, 11, 12).write_json(&mut out);
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["tick_seq"], serde_json::Value::Null);
        assert!(json.get("reason").is_none());
        assert_eq!(json["values"], serde_json::json!({}));
    }
}
