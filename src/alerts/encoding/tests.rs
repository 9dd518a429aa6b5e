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
        trigger_instrument: None,
    }
}

/// `sample()` received at -5 and emitted at 1_700_000_002_600_000_000, as
/// the hand-written encoder of version 1 wrote it before the encoding
/// moved to postcard.
const WRITTEN_BY_THE_FORMER_ENCODER: &str = "01070f6274632d666c6173682d6372617368084254432d5553445402020102000509\
     706167652d6465736b02047065616b80a087e3acfa020a6368616e67655f70637481a0f8fa0580e4e7b2d9bfce972f0104012372756c65\
     2072656d6f766564206f72206368616e67656420627920612072656c6f61640980e89692dabfce972f";

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// The hand-written encoder of version 1, kept to show that postcard
/// writes the same bytes.
mod former {
    use super::*;

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

    fn action_code(action: &Action) -> u8 {
        match action {
            Action::Halt => 0,
            Action::Resume => 1,
            Action::ReduceOnly => 2,
            Action::RaiseMargin => 3,
            Action::Notify => 4,
            Action::Custom(_) => 5,
        }
    }

    pub fn encode_alert(alert: &Alert, received_ns: i64, emitted_ns: i64, out: &mut Vec<u8>) {
        out.clear();
        out.push(1);
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
}

#[test]
fn a_record_of_the_former_encoder_reads_back_and_is_written_the_same_then_the_trigger() {
    let old = hex(WRITTEN_BY_THE_FORMER_ENCODER);
    let emitted = 1_700_000_002_600_000_000;
    assert_eq!(decode_alert(&old).unwrap(), (sample(), -5, emitted));
    let mut bytes = Vec::new();
    encode_alert(&sample(), -5, emitted, &mut bytes).unwrap();
    // Version 2: the same fields, then "no trigger instrument".
    assert_eq!(bytes[0], 2);
    assert_eq!(bytes[1..bytes.len() - 1], old[1..]);
    assert_eq!(bytes.last(), Some(&0));
}

#[test]
fn the_trigger_instrument_round_trips() {
    let alert = Alert {
        instrument: Arc::from("BTC-USDT-SWAP"),
        trigger_instrument: Some(Arc::from("BTC-USDT")),
        ..sample()
    };
    let mut bytes = Vec::new();
    encode_alert(&alert, 1, 2, &mut bytes).unwrap();
    assert_eq!(decode_alert(&bytes).unwrap(), (alert, 1, 2));
}

#[test]
fn an_alert_round_trips_exactly() {
    let alert = sample();
    let mut bytes = Vec::new();
    encode_alert(&alert, -5, i64::MAX, &mut bytes).unwrap();
    assert_eq!(bytes[0], ENCODING_VERSION);
    assert_eq!(decode_alert(&bytes).unwrap(), (alert.clone(), -5, i64::MAX));
    let timer = Alert {
        tick_seq: None,
        reason: None,
        actions: Arc::from(Vec::new()),
        values: Vec::new(),
        ..alert
    };
    encode_alert(&timer, 0, 0, &mut bytes).unwrap();
    assert_eq!(decode_alert(&bytes).unwrap(), (timer, 0, 0));
    let published = decode_published(9, &bytes).unwrap();
    assert_eq!(published.seq, 9);
}

#[test]
fn another_version_is_refused_naming_it() {
    let mut bytes = Vec::new();
    encode_alert(&sample(), 1, 2, &mut bytes).unwrap();
    bytes[0] = 3;
    let err = decode_alert(&bytes).unwrap_err();
    assert_eq!(err, DecodeError::Version { found: 3 });
    assert_eq!(
        err.to_string(),
        "alert encoding version 3 is not supported by this build, which reads versions 1 to 2"
    );
    bytes[0] = 0;
    assert_eq!(decode_alert(&bytes).unwrap_err(), DecodeError::Version { found: 0 });
    assert_eq!(decode_alert(&[]).unwrap_err(), DecodeError::Empty);
}

#[test]
fn damaged_bytes_are_errors_never_panics() {
    let mut bytes = Vec::new();
    encode_alert(&sample(), 1, 2, &mut bytes).unwrap();
    for cut in 1..bytes.len() {
        assert!(
            matches!(decode_alert(&bytes[..cut]), Err(DecodeError::Postcard(_))),
            "cut {cut}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(
        decode_alert(&longer).unwrap_err().to_string(),
        "1 bytes after the alert"
    );
    // The kind is the byte after the version, the ruleset version and
    // the two strings.
    let kind_at = 1 + 1 + 1 + "btc-flash-crash".len() + 1 + "BTC-USDT".len();
    let mut bad_kind = bytes.clone();
    bad_kind[kind_at] = 9;
    assert_eq!(
        decode_alert(&bad_kind).unwrap_err(),
        DecodeError::Code { field: "kind", code: 9 }
    );
    // A count claiming far more items than there are bytes.
    let actions_at = kind_at + 3;
    let mut huge = bytes.clone();
    huge.splice(actions_at..=actions_at, [0xff, 0xff, 0xff, 0xff, 0x0f]);
    assert!(decode_alert(&huge).is_err());
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
    fn any_alert_round_trips_and_reads_the_former_encoders_bytes(
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
        trigger in prop::option::of("\\PC{1,20}"),
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
            trigger_instrument: None,
        };
        // Version 1 bytes, as the former encoder wrote them, read back.
        let mut old = Vec::new();
        former::encode_alert(&alert, received_ns, emitted_ns, &mut old);
        prop_assert_eq!(decode_alert(&old).unwrap(), (alert.clone(), received_ns, emitted_ns));
        // Version 2: the same fields, then the trigger instrument.
        let alert = Alert { trigger_instrument: trigger.map(Arc::from), ..alert };
        let mut bytes = Vec::new();
        encode_alert(&alert, received_ns, emitted_ns, &mut bytes).unwrap();
        prop_assert_eq!(&bytes[1..old.len()], &old[1..]);
        prop_assert_eq!(decode_alert(&bytes).unwrap(), (alert, received_ns, emitted_ns));
    }
}
