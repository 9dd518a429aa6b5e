//! One alert as one JSON object, or as one CSV row: what `airbag subscribe`
//! prints for alerts from a server and `airbag replay` for alerts from its
//! own engine. Both go through [`AlertJson`], so the two commands print
//! the same object for the same alert, byte for byte.
//!
//! ```text
//! {"seq":7,"rule_id":"btc-flash-crash","ruleset_version":2,"instrument":"BTC-USDT","kind":"fired",
//!  "severity":"critical","actions":["halt"],"mode":"active","event_time_ns":1700000002000000000,
//!  "tick_seq":3,"received_time_ns":11,"emitted_time_ns":12,"values":{"peak":"65000","change_pct":"-8"}}
//! ```
//!
//! `values` keeps the rule's order and holds exact decimal strings;
//! `tick_seq` is `null` when a timer raised the alert; `reason` is present
//! only when there is one.

use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::Serialize;

use crate::cli::wire::{decimal_text, severity_name};
use crate::model::{Action, Alert, AlertValue};
use crate::server::proto;

/// The fields of one printed alert, borrowed from a wire or an engine
/// alert.
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
}

/// Action names, from either form.
pub enum Actions<'a> {
    Wire(&'a [String]),
    Engine(&'a [Action]),
}

/// Alert values as a JSON object of exact decimal strings, in order.
pub enum Values<'a> {
    Wire(&'a [proto::AlertValue]),
    Engine(&'a [AlertValue]),
}

impl<'a> AlertJson<'a> {
    /// An alert as a subscriber received it.
    pub fn from_wire(alert: &'a proto::Alert) -> Self {
        AlertJson {
            seq: alert.seq,
            rule_id: &alert.rule_id,
            ruleset_version: alert.ruleset_version,
            instrument: &alert.instrument,
            kind: &alert.kind,
            severity: severity_name(alert.severity),
            actions: Actions::Wire(&alert.actions),
            mode: &alert.mode,
            event_time_ns: alert.event_time_ns,
            tick_seq: alert.tick_seq,
            received_time_ns: alert.received_time_ns,
            emitted_time_ns: alert.emitted_time_ns,
            values: Values::Wire(&alert.values),
            reason: &alert.reason,
        }
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
            actions: Actions::Engine(&alert.actions),
            mode: alert.mode.name(),
            event_time_ns: alert.event_time_ns,
            tick_seq: alert.tick_seq,
            received_time_ns,
            emitted_time_ns,
            values: Values::Engine(&alert.values),
            reason: alert.reason.as_deref().unwrap_or_default(),
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
        event_time_ns,tick_seq,received_time_ns,emitted_time_ns,values,reason";

    /// Appends the alert as one CSV row (no line end): actions joined by
    /// `;`, values as `name=value` joined by `;`, an empty `tick_seq` for
    /// timer alerts; fields quoted only when they need it.
    pub fn write_csv(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let mut actions = String::new();
        self.actions.for_each(|name| {
            if !actions.is_empty() {
                actions.push(';');
            }
            actions.push_str(name);
        });
        let mut values = String::new();
        self.values.for_each(|name, value| {
            if !values.is_empty() {
                values.push(';');
            }
            values.push_str(name);
            values.push('=');
            values.push_str(value.as_deref().unwrap_or_default());
        });
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

impl Actions<'_> {
    fn for_each(&self, mut f: impl FnMut(&str)) {
        match self {
            Actions::Wire(names) => names.iter().for_each(|n| f(n)),
            Actions::Engine(actions) => actions.iter().for_each(|a| f(a.name())),
        }
    }

    fn len(&self) -> usize {
        match self {
            Actions::Wire(names) => names.len(),
            Actions::Engine(actions) => actions.len(),
        }
    }
}

impl Values<'_> {
    /// Each value's name and exact decimal text (`None` for a wire value
    /// without a number).
    fn for_each(&self, mut f: impl FnMut(&str, Option<String>)) {
        match self {
            Values::Wire(values) => values
                .iter()
                .for_each(|v| f(&v.name, v.value.as_ref().map(decimal_text))),
            // `Fixed`'s display is the shortest exact form, as
            // `decimal_text` prints its wire encoding.
            Values::Engine(values) => values.iter().for_each(|v| f(&v.name, Some(v.value.to_string()))),
        }
    }

    fn len(&self) -> usize {
        match self {
            Values::Wire(values) => values.len(),
            Values::Engine(values) => values.len(),
        }
    }
}

impl Serialize for Actions<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        let mut result = Ok(());
        self.for_each(|name| {
            if result.is_ok() {
                result = seq.serialize_element(name);
            }
        });
        result?;
        seq.end()
    }
}

impl Serialize for Values<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        let mut result = Ok(());
        self.for_each(|name, value| {
            if result.is_ok() {
                result = map.serialize_entry(name, &value);
            }
        });
        result?;
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
        }
    }

    /// The wire form of an engine alert, as the server builds it.
    fn wire_of(a: &Alert, seq: u64, received: i64, emitted: i64) -> proto::Alert {
        crate::server::convert::alert_to_proto(a, seq, received, emitted)
    }

    #[test]
    fn engine_and_wire_alerts_print_the_same_bytes() {
        let alert = engine_alert();
        let wire = wire_of(&alert, 9, 11, 12);
        for a in [
            alert.clone(),
            Alert {
                tick_seq: None,
                reason: None,
                values: vec![],
                ..alert
            },
        ] {
            let wire = wire_of(&a, 9, 11, 12);
            let (mut x, mut y) = (Vec::new(), Vec::new());
            AlertJson::from_engine(&a, 9, 11, 12).write_json(&mut x);
            AlertJson::from_wire(&wire).write_json(&mut y);
            assert_eq!(String::from_utf8(x).unwrap(), String::from_utf8(y).unwrap());
            let (mut x, mut y) = (Vec::new(), Vec::new());
            AlertJson::from_engine(&a, 9, 11, 12).write_csv(&mut x);
            AlertJson::from_wire(&wire).write_csv(&mut y);
            assert_eq!(x, y);
        }
        let mut out = Vec::new();
        AlertJson::from_wire(&wire).write_json(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"seq":9,"rule_id":"btc-flash-crash","ruleset_version":2,"instrument":"BTC-USDT","kind":"fired","severity":"critical","actions":["halt","page"],"mode":"shadow","event_time_ns":1700000002000000000,"tick_seq":3,"received_time_ns":11,"emitted_time_ns":12,"values":{"peak":"65000","change_pct":"-8.00000001","tiny":"0.005","zero":"0"},"reason":"a, \"quoted\" reason"}"#
        );
        let mut csv = Vec::new();
        AlertJson::from_wire(&wire).write_csv(&mut csv);
        assert_eq!(
            String::from_utf8(csv).unwrap(),
            "9,btc-flash-crash,2,BTC-USDT,fired,critical,halt;page,shadow,1700000002000000000,3,11,12,\
             peak=65000;change_pct=-8.00000001;tiny=0.005;zero=0,\"a, \"\"quoted\"\" reason\""
        );
    }
}
