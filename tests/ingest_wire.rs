//! The hand-written `TickBatch` reader (`server::tick_wire`) against prost:
//! for random messages, valid and not (missing values, bad decimals, bad
//! symbols, unknown fields and groups, repeated fields and oneof members,
//! wrong wire types, truncated or corrupted bytes), it reads exactly the
//! ticks prost reads, with the same values or rejection, and refuses what
//! prost refuses with the same message. And the hand-written `IngestAck`
//! (`server::ack_wire`) is byte for byte what prost writes.

use airbag::ingest::{validate_values, TickError};
use airbag::model::TickValues;
use airbag::wire::ack_wire::AckWriter;
use airbag::wire::convert;
use airbag::wire::proto;
use airbag::wire::tick_wire::{read_batch, WireTick};
use bytes::BytesMut;
use proptest::prelude::*;
use prost::encoding::{encode_key, encode_varint, WireType};
use prost::Message;

// ---------------------------------------------------------------------
// Messages as field lists, so fields can repeat, come in any order and
// carry the wrong wire type.

#[derive(Debug, Clone)]
enum Field {
    Varint(u32, u64),
    Fixed32(u32, u32),
    Fixed64(u32, u64),
    Bytes(u32, Vec<u8>),
    Message(u32, Vec<Field>),
    Group(u32, Vec<Field>),
}

fn encode(fields: &[Field], buf: &mut Vec<u8>) {
    for field in fields {
        match field {
            Field::Varint(tag, v) => {
                encode_key(*tag, WireType::Varint, buf);
                encode_varint(*v, buf);
            }
            Field::Fixed32(tag, v) => {
                encode_key(*tag, WireType::ThirtyTwoBit, buf);
                buf.extend_from_slice(&v.to_le_bytes());
            }
            Field::Fixed64(tag, v) => {
                encode_key(*tag, WireType::SixtyFourBit, buf);
                buf.extend_from_slice(&v.to_le_bytes());
            }
            Field::Bytes(tag, bytes) => {
                encode_key(*tag, WireType::LengthDelimited, buf);
                encode_varint(bytes.len() as u64, buf);
                buf.extend_from_slice(bytes);
            }
            Field::Message(tag, fields) => {
                let mut inner = Vec::new();
                encode(fields, &mut inner);
                encode_key(*tag, WireType::LengthDelimited, buf);
                encode_varint(inner.len() as u64, buf);
                buf.extend_from_slice(&inner);
            }
            Field::Group(tag, fields) => {
                encode_key(*tag, WireType::StartGroup, buf);
                encode(fields, buf);
                encode_key(*tag, WireType::EndGroup, buf);
            }
        }
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn any_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..1_000,
        1 => Just(u64::MAX),
        1 => Just(u64::from(u32::MAX) + 1),
        2 => any::<u64>(),
    ]
}

/// A field of a kind the schema does not have at this number, or a known
/// number with a wrong wire type.
fn stray(tags: impl Strategy<Value = u32> + Clone + 'static) -> impl Strategy<Value = Field> {
    let leaf = prop_oneof![
        (tags.clone(), any_u64()).prop_map(|(t, v)| Field::Varint(t, v)),
        (tags.clone(), any::<u32>()).prop_map(|(t, v)| Field::Fixed32(t, v)),
        (tags.clone(), any::<u64>()).prop_map(|(t, v)| Field::Fixed64(t, v)),
        (tags.clone(), prop::collection::vec(any::<u8>(), 0..6)).prop_map(|(t, b)| Field::Bytes(t, b)),
    ];
    leaf.prop_recursive(2, 6, 3, move |inner| {
        (tags.clone(), prop::collection::vec(inner, 0..3)).prop_map(|(t, f)| Field::Group(t, f))
    })
}

fn unknown() -> impl Strategy<Value = Field> {
    stray(prop_oneof![8u32..20, Just(536_870_911u32)])
}

/// Fields in a random order.
fn shuffled(parts: Vec<Vec<Field>>) -> impl Strategy<Value = Vec<Field>> {
    Just(parts.into_iter().flatten().collect::<Vec<_>>()).prop_shuffle()
}

fn decimal() -> impl Strategy<Value = Vec<Field>> {
    let mantissa = prop_oneof![
        4 => 1i64..10_000_000,
        1 => Just(0i64),
        1 => -1_000i64..0,
        1 => Just(i64::MAX),
        1 => Just(i64::MIN),
        1 => any::<i64>(),
    ]
    .prop_map(|m| Field::Varint(1, zigzag(m)));
    let scale = prop_oneof![
        6 => 0u64..=8,
        2 => 9u64..=20,
        1 => any_u64(),
    ]
    .prop_map(|s| Field::Varint(2, s));
    (
        prop::collection::vec(mantissa, 0..=2),
        prop::collection::vec(scale, 0..=2),
        prop::collection::vec(prop_oneof![9 => unknown(), 1 => stray(1u32..=2)], 0..=1),
    )
        .prop_flat_map(|(m, s, u)| shuffled(vec![m, s, u]))
}

/// A member message with decimal fields numbered `1..=decimals` (and a
/// side at 3 for a trade).
fn member(decimals: u32, with_side: bool) -> impl Strategy<Value = Vec<Field>> {
    let decimal_fields = prop::collection::vec(
        (1..=decimals, decimal()).prop_map(|(tag, fields)| Field::Message(tag, fields)),
        0..=(decimals as usize + 2),
    );
    let side = prop::collection::vec(
        prop_oneof![Just(0u64), Just(1), Just(2), Just(3), any_u64()].prop_map(|s| Field::Varint(3, s)),
        0..=usize::from(with_side) * 2,
    );
    let strays = prop::collection::vec(prop_oneof![9 => unknown(), 1 => stray(1u32..=4)], 0..=1);
    (decimal_fields, side, strays).prop_flat_map(|(d, s, u)| shuffled(vec![d, s, u]))
}

fn values() -> impl Strategy<Value = Field> {
    prop_oneof![
        (member(2, true)).prop_map(|f| Field::Message(4, f)),
        (member(4, false)).prop_map(|f| Field::Message(5, f)),
        (member(1, false)).prop_map(|f| Field::Message(6, f)),
        (member(1, false)).prop_map(|f| Field::Message(7, f)),
    ]
}

fn symbol() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => prop::sample::select(vec!["BTC-USDT", "ETH-USD", "LOAD-000001", "X"]).prop_map(|s| s.as_bytes().to_vec()),
        1 => Just(Vec::new()),
        1 => Just(vec![b'S'; 65]),
        1 => Just(b"BTC USDT".to_vec()),
        1 => Just(b"BTC\tUSDT".to_vec()),
        1 => Just("Ä-€".as_bytes().to_vec()),
        1 => Just(vec![b'A', 0xff, b'B']),
        1 => prop::collection::vec(any::<u8>(), 0..8),
    ]
}

fn tick() -> impl Strategy<Value = Vec<Field>> {
    const T0: u64 = 1_700_000_000_000_000_000;
    let instrument = prop::collection::vec(symbol().prop_map(|s| Field::Bytes(1, s)), 0..=2);
    let time = prop_oneof![
        6 => (T0..T0 + 1_000_000_000).prop_map(|t| Field::Varint(2, t)),
        1 => Just(Field::Varint(2, 0)),
        1 => Just(Field::Varint(2, u64::MAX)),
        1 => any_u64().prop_map(|t| Field::Varint(2, t)),
    ];
    let times = prop::collection::vec(time, 0..=2);
    let seqs = prop::collection::vec(any_u64().prop_map(|s| Field::Varint(3, s)), 0..=2);
    let values = prop::collection::vec(values(), 0..=3);
    let strays = prop::collection::vec(prop_oneof![9 => unknown(), 1 => stray(1u32..=7)], 0..=2);
    (instrument, times, seqs, values, strays).prop_flat_map(|(i, t, s, v, u)| shuffled(vec![i, t, s, v, u]))
}

fn batch() -> impl Strategy<Value = Vec<Field>> {
    let ids = prop::collection::vec(any_u64().prop_map(|id| Field::Varint(1, id)), 0..=2);
    let ticks = prop::collection::vec(tick().prop_map(|t| Field::Message(2, t)), 0..6);
    let strays = prop::collection::vec(prop_oneof![9 => unknown(), 1 => stray(1u32..=2)], 0..=2);
    (ids, ticks, strays).prop_flat_map(|(i, t, u)| shuffled(vec![i, t, u]))
}

#[derive(Debug, Clone)]
enum Damage {
    None,
    Truncate(prop::sample::Index),
    Overwrite(prop::sample::Index, u8),
    Insert(prop::sample::Index, Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        6 => Just(Damage::None),
        2 => any::<prop::sample::Index>().prop_map(Damage::Truncate),
        2 => (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Damage::Overwrite(i, b)),
        1 => (any::<prop::sample::Index>(), prop::collection::vec(any::<u8>(), 1..4))
            .prop_map(|(i, b)| Damage::Insert(i, b)),
    ]
}

fn damaged(mut bytes: Vec<u8>, damage: &Damage) -> Vec<u8> {
    match damage {
        Damage::None => {}
        Damage::Truncate(at) => bytes.truncate(at.index(bytes.len() + 1)),
        Damage::Overwrite(at, b) if !bytes.is_empty() => {
            let at = at.index(bytes.len());
            bytes[at] = *b;
        }
        Damage::Overwrite(..) => {}
        Damage::Insert(at, extra) => {
            let at = at.index(bytes.len() + 1);
            bytes.splice(at..at, extra.iter().copied());
        }
    }
    bytes
}

// ---------------------------------------------------------------------
// Both readers, reduced to what ingest uses.

#[derive(Debug, PartialEq, Eq)]
struct Read {
    instrument: String,
    event_time_ns: i64,
    seq: u64,
    values: Result<TickValues, TickError>,
    checked: Result<TickValues, TickError>,
}

fn by_prost(bytes: &[u8]) -> Result<(u64, Vec<Read>), String> {
    let batch = proto::TickBatch::decode(bytes).map_err(|e| e.to_string())?;
    let ticks = batch
        .ticks
        .iter()
        .map(|t| Read {
            instrument: t.instrument.clone(),
            event_time_ns: t.event_time_ns,
            seq: t.seq,
            values: convert::tick_values(t),
            checked: convert::checked_values(t),
        })
        .collect();
    Ok((batch.batch_id, ticks))
}

fn by_hand(bytes: &[u8]) -> Result<(u64, Vec<Read>), String> {
    let mut ticks = Vec::new();
    let batch_id = read_batch(bytes, |t: WireTick<'_>| {
        // The instrument is borrowed from the message.
        assert!(bytes.as_ptr_range().contains(&t.instrument.as_ptr()) || t.instrument.is_empty());
        let checked = t
            .values
            .clone()
            .and_then(|v| validate_values(t.event_time_ns, &v).map(|()| v));
        ticks.push(Read {
            instrument: t.instrument.to_string(),
            event_time_ns: t.event_time_ns,
            seq: t.seq,
            values: t.values,
            checked,
        });
    })
    .map_err(|e| e.to_string())?;
    Ok((batch_id, ticks))
}

fn same_as_prost(bytes: &[u8]) -> Result<(), TestCaseError> {
    let expected = by_prost(bytes);
    let got = by_hand(bytes);
    prop_assert_eq!(&got, &expected, "bytes: {:02x?}", bytes);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4_000, ..ProptestConfig::default() })]

    #[test]
    fn reads_what_prost_reads(fields in batch(), damage in damage()) {
        let mut bytes = Vec::new();
        encode(&fields, &mut bytes);
        same_as_prost(&damaged(bytes, &damage))?;
    }

    #[test]
    fn reads_prost_encoded_batches(ticks in prop::collection::vec(tick(), 0..8), batch_id in any_u64()) {
        // Through prost and back: canonical encodings of whatever prost kept.
        let mut bytes = Vec::new();
        encode(&[Field::Varint(1, batch_id)], &mut bytes);
        for t in &ticks {
            encode(&[Field::Message(2, t.clone())], &mut bytes);
        }
        if let Ok(batch) = proto::TickBatch::decode(bytes.as_slice()) {
            same_as_prost(&batch.encode_to_vec())?;
        }
    }

    #[test]
    fn refuses_arbitrary_bytes_as_prost_does(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        same_as_prost(&bytes)?;
    }
}

// ---------------------------------------------------------------------
// Cases random messages rarely reach.

#[test]
fn groups_nest_to_prost_recursion_limit() {
    fn nested(depth: usize, tag: u32) -> Field {
        let mut field = Field::Group(tag, Vec::new());
        for _ in 1..depth {
            field = Field::Group(tag, vec![field]);
        }
        field
    }
    for depth in 94..=102 {
        // At the top, and inside a decimal four messages down.
        let mut top = Vec::new();
        encode(&[nested(depth, 9)], &mut top);
        same_as_prost(&top).unwrap();
        let decimal = vec![Field::Varint(1, 2), nested(depth, 9)];
        let tick = vec![
            Field::Bytes(1, b"BTC-USDT".to_vec()),
            Field::Message(6, vec![Field::Message(1, decimal)]),
        ];
        let mut deep = Vec::new();
        encode(&[Field::Message(2, tick)], &mut deep);
        same_as_prost(&deep).unwrap();
    }
}

#[test]
fn every_refusal_reads_as_prost_says_it() {
    let tick = |fields: Vec<Field>| {
        let mut bytes = Vec::new();
        encode(&[Field::Varint(1, 7), Field::Message(2, fields)], &mut bytes);
        bytes
    };
    let cases: Vec<Vec<u8>> = vec![
        // Varints that never end, or end past ten bytes.
        vec![0x08, 0xff, 0xff, 0xff],
        vec![0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
        // Keys: too large, a bad wire type, tag zero, a stray end group.
        vec![0x80, 0x80, 0x80, 0x80, 0x10],
        vec![0x0e],
        vec![0x00],
        vec![0x0c],
        vec![0x4b, 0x54],
        // Lengths past the end, and a field running past its message.
        vec![0x12, 0x05, 0x0a],
        vec![0x12, 0x02, 0x18, 0x80, 0x01],
        vec![0x12, 0x03, 0x0a, 0x05, b'A', b'B', b'C', b'D', b'E'],
        vec![0x4a, 0x09],
        vec![0x4d, 0x00],
        vec![0x49, 0x00, 0x00],
        // A string that is not UTF-8, wrong wire types at every level.
        tick(vec![Field::Bytes(1, vec![0xc3, 0x28])]),
        tick(vec![Field::Varint(1, 3)]),
        tick(vec![Field::Bytes(3, vec![1])]),
        tick(vec![Field::Varint(4, 1)]),
        tick(vec![Field::Message(4, vec![Field::Varint(1, 1)])]),
        tick(vec![Field::Message(
            5,
            vec![Field::Message(4, vec![Field::Bytes(2, vec![])])],
        )]),
        tick(vec![Field::Message(4, vec![Field::Bytes(3, vec![])])]),
        tick(vec![Field::Message(
            7,
            vec![Field::Message(1, vec![Field::Fixed64(1, 1)])],
        )]),
        vec![0x09, 0, 0, 0, 0, 0, 0, 0, 0],
        vec![0x11, 0, 0, 0, 0, 0, 0, 0, 0],
    ];
    for bytes in cases {
        let expected = by_prost(&bytes);
        assert!(expected.is_err(), "{bytes:02x?} is a valid batch: {expected:?}");
        assert_eq!(by_hand(&bytes), expected, "{bytes:02x?}");
    }
}

#[test]
fn oneof_members_merge_or_replace_as_prost_does() {
    let decimal = |m: i64, s: u64| vec![Field::Varint(1, zigzag(m)), Field::Varint(2, s)];
    let trade_price = Field::Message(4, vec![Field::Message(1, decimal(6_500_012, 2))]);
    let trade_size = Field::Message(4, vec![Field::Message(2, decimal(3, 0)), Field::Varint(3, 2)]);
    let mark = Field::Message(6, vec![Field::Message(1, decimal(100, 0))]);
    let orders = [
        vec![trade_price.clone(), trade_size.clone()],
        vec![trade_price.clone(), mark.clone(), trade_size.clone()],
        vec![mark.clone(), trade_price.clone(), trade_size.clone()],
        vec![trade_price.clone(), trade_size.clone(), mark.clone()],
    ];
    for values in orders {
        let mut fields = vec![Field::Bytes(1, b"BTC-USDT".to_vec()), Field::Varint(2, 1)];
        fields.extend(values);
        let mut bytes = Vec::new();
        encode(&[Field::Message(2, fields)], &mut bytes);
        let (_, ticks) = by_prost(&bytes).unwrap();
        assert_eq!(by_hand(&bytes).unwrap().1, ticks);
    }
}

// ---------------------------------------------------------------------
// Acknowledgements.

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("bad_value".to_string()),
        Just("price: has more than 8 decimal places".to_string()),
        Just("Ä-€".to_string()),
        "[a-z_ ]{0,12}",
        Just("x".repeat(200)),
    ]
}

fn ack() -> impl Strategy<Value = proto::IngestAck> {
    let small = prop_oneof![Just(0u32), 1u32..300, any::<u32>()];
    let rejection =
        (small.clone(), text(), text()).prop_map(|(index, code, reason)| proto::Rejection { index, code, reason });
    let seq = (text(), any_u64()).prop_map(|(instrument, seq)| proto::InstrumentSeq { instrument, seq });
    (
        any_u64(),
        small,
        prop::collection::vec(rejection, 0..4),
        prop::collection::vec(seq, 0..6),
    )
        .prop_map(|(batch_id, applied, rejected, last_applied)| proto::IngestAck {
            batch_id,
            applied,
            rejected,
            last_applied,
        })
}

fn write_ack(buf: &mut BytesMut, ack: &proto::IngestAck) -> Vec<u8> {
    let mut writer = AckWriter::new(buf, ack.batch_id, ack.applied);
    for r in &ack.rejected {
        writer.rejection(r.index, &r.code, &r.reason);
    }
    for l in &ack.last_applied {
        writer.last_applied(l.instrument.as_bytes(), l.seq);
    }
    buf.split().freeze().to_vec()
}

proptest! {
    #[test]
    fn writes_acks_as_prost_does(acks in prop::collection::vec(ack(), 1..4)) {
        // One buffer for every acknowledgement, as a stream uses it.
        let mut buf = BytesMut::new();
        for ack in &acks {
            prop_assert_eq!(write_ack(&mut buf, ack), ack.encode_to_vec());
        }
    }
}
