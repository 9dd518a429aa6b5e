use super::*;
use crate::model::Fixed;

fn fixed(text: &str) -> Fixed {
    Fixed::parse(text).unwrap()
}

fn mapping(toml_text: &str) -> JsonMapping {
    JsonMapping::new(toml::from_str(toml_text).unwrap())
}

#[test]
fn reads_a_venue_trade_by_its_mapping() {
    let m = mapping("instrument = \"s\"\ntime = \"T\"\ntime_unit = \"iso\"\nprice = \"p\"\nsize = \"q\"\nseq = \"t\"\nside = \"S\"\n");
    let mut number = String::new();
    let msg = br#"{"e":"trade","s":"BTC-USDT","T":"2024-08-08T23:54:15.342Z","p":"65000.5","q":0.25,"t":42,"S":"sell","x":{"nested":[1,2]}}"#;
    let tick = m.read(msg, None, &mut number).unwrap();
    assert_eq!(tick.instrument, "BTC-USDT");
    assert_eq!(tick.event_time_ns, 1_723_161_255_342_000_000);
    assert_eq!(tick.seq, Some(42));
    assert_eq!(
        tick.values,
        TickValues::Trade {
            price: fixed("65000.5"),
            size: fixed("0.25"),
            side: Some(Side::Sell)
        }
    );
}

#[test]
fn default_names_and_units() {
    let m = mapping("");
    let mut number = String::new();
    let tick = m
        .read(
            br#"{"instrument":"ETH-USDT","ts_ms":1700000000000,"price":"2000"}"#,
            None,
            &mut number,
        )
        .unwrap();
    assert_eq!(tick.event_time_ns, 1_700_000_000_000_000_000);
    assert_eq!(tick.seq, None);
    let quote = m
        .read(
            br#"{"instrument":"ETH-USDT","ts_ns":5,"bid":"1","ask":"2"}"#,
            None,
            &mut number,
        )
        .unwrap();
    assert_eq!(quote.event_time_ns, 5);
    assert!(matches!(quote.values, TickValues::Quote { .. }));
    let keyed = m
        .read(br#"{"ts_ms":1,"price":3}"#, Some("SOL-USDT"), &mut number)
        .unwrap();
    assert_eq!(keyed.instrument, "SOL-USDT");
}

#[test]
fn refusals_say_why() {
    let m = mapping("");
    let mut number = String::new();
    let why = |msg: &[u8]| {
        m.read(msg, None, &mut String::new())
            .err()
            .map(|r| (r.reason, r.detail))
    };
    assert_eq!(why(b"\x00\x01garbage").unwrap().0, Reject::Malformed);
    assert_eq!(why(b"[1,2]").unwrap().0, Reject::Malformed);
    assert_eq!(why(br#"{"instrument":"A"} trailing"#).unwrap().0, Reject::Malformed);
    assert_eq!(
        why(br#"{"instrument":"A","ts_ms":1}"#).unwrap(),
        (Reject::MissingField, "there is no `price` field".to_string())
    );
    assert_eq!(
        why(br#"{"ts_ms":1,"price":"1"}"#).unwrap(),
        (Reject::MissingField, "there is no `instrument` field".to_string())
    );
    assert_eq!(
        why(br#"{"instrument":"A","ts_ms":"x","price":"1"}"#).unwrap().0,
        Reject::BadField
    );
    assert_eq!(
        why(br#"{"instrument":"A","ts_ms":1,"price":"abc"}"#).unwrap().0,
        Reject::BadField
    );
    assert_eq!(
        why(br#"{"instrument":7,"ts_ms":1,"price":"1"}"#).unwrap().0,
        Reject::BadField
    );
    assert_eq!(
        why(br#"{"instrument":"A","ts_ms":1,"price":"1","kind":"swap"}"#)
            .unwrap()
            .0,
        Reject::BadField
    );
    // A negative price decodes: validation refuses it in the pipeline.
    assert!(m
        .read(br#"{"instrument":"A","ts_ms":1,"price":"-1"}"#, None, &mut number)
        .is_ok());
}

#[test]
fn protobuf_messages_and_keys() {
    use prost::Message as _;
    let tick = crate::wire::proto::Tick {
        instrument: "BTC-USDT".into(),
        event_time_ns: 1_700_000_000_000_000_000,
        seq: 0,
        ..Default::default()
    };
    let mut decoder = Decoder::new(SourceFormat::ProtobufTick, InstrumentFrom::Message, None, 10);
    let mut pipeline = Pipeline::new();
    // A tick without values still decodes; validation refuses it later.
    assert_eq!(decoder.push(&tick.encode_to_vec(), None, 7, &mut pipeline), Ok(1));
    assert_eq!(pipeline.len(), 1);
    let refused = decoder.push(b"\xff\xff\xff", None, 8, &mut pipeline).unwrap_err();
    assert_eq!(refused.reason, Reject::Malformed);
    assert_eq!(pipeline.len(), 1, "a refused message pushes nothing");

    let batch = crate::wire::proto::TickBatch {
        batch_id: 1,
        ticks: vec![tick.clone(), tick.clone(), tick],
    };
    let mut batches = Decoder::new(SourceFormat::ProtobufBatch, InstrumentFrom::Key, None, 2);
    let refused = batches
        .push(&batch.encode_to_vec(), Some(b"X"), 1, &mut pipeline)
        .unwrap_err();
    assert_eq!(refused.reason, Reject::TooManyTicks);
    let refused = batches
        .push(&batch.encode_to_vec(), None, 1, &mut pipeline)
        .unwrap_err();
    assert_eq!(refused.reason, Reject::BadKey);
    assert_eq!(pipeline.len(), 1);
}

#[test]
fn offset_sequence_numbers_grow_along_the_partition() {
    assert!(offset_seq(0, 0) > 0);
    assert!(offset_seq(0, 65_535) < offset_seq(1, 0));
    assert!(offset_seq(41, 3) < offset_seq(42, 0));
}
