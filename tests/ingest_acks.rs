//! `Ingest` end to end against a reference: batches of every kind of tick
//! (good, bad values, bad symbols, duplicates, late, over the instrument
//! cap, missing values), some with unknown or repeated fields, go to the
//! server as raw bytes; each acknowledgement's bytes must be exactly what
//! prost encodes for the acknowledgement the reference computes. The
//! reference decodes with prost, converts with `convert::checked_values`
//! and applies to an engine of its own with the same rules and limits.

mod common;

#[path = "support/rng.rs"]
mod rng;

use airbag::ingest::{TickError, ValidTick};
use airbag::model::{Alert, InstrumentId, Tick};
use airbag::service::rulebook::compile_texts;
use airbag::wire::convert;
use airbag::wire::proto;
use airbag::{Engine, EngineConfig};
use bytes::Bytes;
use common::*;
use prost::Message;
use rng::Rng;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const RULES: &str = r#"
[[rule]]
id = "dd"
kind = "drawdown"
window = "3s"
threshold = "8%"
severity = "critical"
actions = ["halt"]
"#;

const MAX_INSTRUMENTS: u32 = 20;

/// The acknowledgement `Ingest` gives `batch`, computed the way it was
/// before batches were read by hand: prost's message, `checked_values`,
/// the engine's symbol table, one `apply_batch`.
fn reference_ack(engine: &Engine, batch: &proto::TickBatch) -> proto::IngestAck {
    let now = T0_NS;
    let rejection = |index: usize, why: &TickError| proto::Rejection {
        index: index as u32,
        code: why.code().to_string(),
        reason: why.to_string(),
    };
    let mut rejected = Vec::new();
    let mut ticks = Vec::new();
    let mut origin = Vec::new();
    let mut touched: Vec<(InstrumentId, String, Option<u64>)> = Vec::new();
    for (index, tick) in batch.ticks.iter().enumerate() {
        let values = match convert::checked_values(tick) {
            Ok(values) => values,
            Err(why) => {
                rejected.push(rejection(index, &why));
                continue;
            }
        };
        let id = match engine.resolve(&tick.instrument, now) {
            Ok(id) => id,
            Err(e) => {
                rejected.push(rejection(index, &e));
                continue;
            }
        };
        let slot = touched.iter().position(|t| t.0 == id).unwrap_or_else(|| {
            touched.push((id, tick.instrument.clone(), None));
            touched.len() - 1
        });
        ticks.push(
            ValidTick::new(Tick {
                instrument: id,
                event_time_ns: tick.event_time_ns,
                seq: tick.seq,
                values,
            })
            .expect("checked values"),
        );
        origin.push((index, slot));
    }
    let mut applied = 0;
    let mut alerts: Vec<Alert> = Vec::new();
    engine.apply_batch(&ticks, now, &mut alerts, |i, result| match result {
        Ok(()) => {
            applied += 1;
            touched[origin[i].1].2 = Some(ticks[i].seq);
        }
        Err(e) => rejected.push(rejection(origin[i].0, &e)),
    });
    rejected.sort_by_key(|r| r.index);
    let last_applied = touched
        .into_iter()
        .filter_map(|(id, instrument, applied)| {
            let seq = applied.or_else(|| engine.last_seq(id))?;
            Some(proto::InstrumentSeq { instrument, seq })
        })
        .collect();
    proto::IngestAck {
        batch_id: batch.batch_id,
        applied,
        rejected,
        last_applied,
    }
}

/// Random ticks over a few dozen symbols (some malformed, more than the
/// instrument cap), with per-symbol sequence numbers and times that mostly
/// go forward.
struct Feed {
    rng: Rng,
    next: Vec<(u64, i64)>,
}

impl Feed {
    const SYMBOLS: usize = 30;

    fn symbol(&mut self) -> (usize, String) {
        let i = self.rng.below(Self::SYMBOLS as u64 + 4) as usize;
        let symbol = match i {
            i if i < Self::SYMBOLS => format!("SYM-{i:02}"),
            30 => String::new(),
            31 => "SYM 31".into(),
            32 => "S".repeat(65),
            _ => "Ä-€".into(),
        };
        (i.min(Self::SYMBOLS), symbol)
    }

    fn decimal(&mut self) -> Option<proto::Decimal> {
        Some(match self.rng.below(40) {
            0 => return None,
            1 => proto::Decimal { mantissa: 0, scale: 0 },
            2 => proto::Decimal { mantissa: -5, scale: 1 },
            3 => proto::Decimal { mantissa: 1, scale: 9 },
            4 => proto::Decimal {
                mantissa: i64::MAX,
                scale: 0,
            },
            _ => proto::Decimal {
                mantissa: 9_000 + self.rng.below(2_000) as i64,
                scale: 2,
            },
        })
    }

    fn tick(&mut self) -> proto::Tick {
        let (i, instrument) = self.symbol();
        let (seq, time) = &mut self.next[i];
        match self.rng.below(20) {
            0 => {} // a duplicate of the last sequence number
            1 => *seq += 5,
            _ => *seq += 1,
        }
        match self.rng.below(20) {
            0 => *time -= 5_000_000, // late
            _ => *time += 1_000_000,
        }
        let event_time_ns = if self.rng.below(50) == 0 { 0 } else { *time };
        let seq = *seq;
        let values = match self.rng.below(12) {
            0 => None,
            1 => Some(proto::tick::Values::Quote(proto::Quote {
                bid: self.decimal(),
                ask: self.decimal(),
                bid_size: self.decimal(),
                ask_size: self.decimal(),
            })),
            2 => Some(proto::tick::Values::Mark(proto::Price { price: self.decimal() })),
            3 => Some(proto::tick::Values::Index(proto::Price { price: self.decimal() })),
            _ => Some(proto::tick::Values::Trade(proto::Trade {
                price: self.decimal(),
                size: self.decimal(),
                side: self.rng.below(4) as i32,
            })),
        };
        proto::Tick {
            instrument,
            event_time_ns,
            seq,
            values,
        }
    }

    /// A batch and its bytes: usually as prost writes it, sometimes with an
    /// unknown field or a second, overriding batch id after it.
    fn batch(&mut self, batch_id: u64) -> (proto::TickBatch, Bytes) {
        let n = self.rng.below(40) as usize;
        let mut batch = proto::TickBatch {
            batch_id,
            ticks: (0..n).map(|_| self.tick()).collect(),
        };
        let mut bytes = batch.encode_to_vec();
        match self.rng.below(8) {
            0 => bytes.extend_from_slice(&[0x48, 0x01, 0x52, 0x02, 0xff, 0xff]),
            1 => {
                bytes.extend_from_slice(&[0x08, 0x7f]);
                batch.batch_id = 0x7f;
            }
            _ => {}
        }
        // What the server reads is what prost reads from the same bytes.
        assert_eq!(proto::TickBatch::decode(bytes.as_slice()).expect("valid"), batch);
        (batch, Bytes::from(bytes))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledgements_are_byte_for_byte_the_reference() {
    let server = TestServer::builder()
        .rule_file("dd.toml", RULES)
        .configure(|c| c.max_instruments = MAX_INSTRUMENTS)
        .start()
        .await;
    let reference = Engine::new(
        EngineConfig {
            max_instruments: MAX_INSTRUMENTS,
            allowed_lateness_ns: 0,
        },
        compile_texts(&[("dd.toml".into(), RULES.into())]).expect("rules compile"),
    );

    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    within("ready", grpc.ready()).await.expect("ready");
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/airbag.v1.Ingest/Ingest");
    let mut acks = within(
        "ingest",
        grpc.streaming(
            tonic::Request::new(ReceiverStream::new(rx)),
            path,
            common::raw_codec::RawCodec,
        ),
    )
    .await
    .expect("ingest opens")
    .into_inner();

    let mut feed = Feed {
        rng: Rng(0x5eed_1234_abcd_0001),
        next: vec![(0, T0_NS); Feed::SYMBOLS + 1],
    };
    let mut seen_codes = std::collections::BTreeSet::new();
    for batch_id in 1..=200 {
        let (batch, bytes) = feed.batch(batch_id);
        within("send", tx.send(bytes)).await.expect("stream accepts");
        let got = within("ack", acks.message()).await.expect("ack").expect("stream open");
        let expected = reference_ack(&reference, &batch);
        seen_codes.extend(expected.rejected.iter().map(|r| r.code.clone()));
        assert_eq!(
            proto::IngestAck::decode(got.clone()).expect("an IngestAck"),
            expected,
            "batch {batch_id}"
        );
        assert_eq!(got.as_ref(), expected.encode_to_vec().as_slice(), "batch {batch_id}");
    }
    // The feed reached every kind of rejection.
    let all: Vec<&str> = seen_codes.iter().map(String::as_str).collect();
    assert_eq!(
        all,
        [
            "bad_symbol",
            "bad_time",
            "bad_value",
            "crossed_quote",
            "duplicate",
            "late",
            "missing_values",
            "too_many_instruments"
        ]
    );
    drop(tx);
    server.shutdown().await;
}
