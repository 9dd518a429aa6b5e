//! One ingest stream's batches, from message bytes to acknowledgement
//! bytes: the message is read whole ([`tick_wire`]; a malformed one is
//! refused before any tick counts), each tick's values are checked and its
//! instrument resolved, what passes goes to the engine in one call, and the
//! acknowledgement is written ([`ack_wire`]).
//!
//! Symbols are looked up in the stream's cache ([`SymbolCache`]) once the
//! whole message has been read, each cache slot prefetched as its tick is
//! read. Every buffer (the cache, the ticks read and their symbols, the
//! touched instruments, the rejections, the acknowledgement's bytes) lives
//! as long as the stream and is reused, so once they have grown a batch
//! allocates nothing: not per tick, not per rejection. Only alerts, and
//! a symbol the stream has not sent before, allocate.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rustc_hash::FxHashMap;
use tonic::Status;
use tracing::debug;

use crate::alerts::PublishSink;
use crate::app::Core;
use crate::clock::{Clock, SystemClock};
use crate::ingest::validate_values;
use crate::metrics::{reject_index, REJECT_CODES};
use crate::model::{InstrumentId, Tick, TickValues};
use crate::server::ack_wire::AckWriter;
use crate::server::convert::{self, Rejected};
use crate::server::limits::IngestRate;
use crate::server::tick_wire::{self, WireTick};

use super::symbols::{SymbolCache, SymbolHash};

/// Symbols one stream remembers; past this, lookups go to the engine's
/// symbol table (still correct, a little slower).
const SYMBOL_CACHE_LIMIT: usize = 65_536;

/// The per-stream state that is reused across batches.
pub(super) struct Session {
    pub(super) core: Arc<Core>,
    /// Symbol -> id for symbols this stream has sent: saves a lookup in the
    /// shared symbol table per tick.
    symbols: SymbolCache,
    /// The batch's ticks as read, in order.
    read: Vec<ReadTick>,
    /// The symbols of the good ticks of `read`, one after the other.
    text: String,
    /// Instrument -> index in `touched` for the current batch.
    touched_at: FxHashMap<InstrumentId, usize>,
    touched: Vec<Touched>,
    /// The batch's good ticks, handed to the engine in one call.
    ticks: Vec<Tick>,
    /// For each of `ticks`: its index in the batch and its `touched` slot.
    origin: Vec<(u32, usize)>,
    /// The batch's rejected ticks: index in the batch, and why.
    rejected: Vec<(u32, Rejected)>,
    /// A rejection's reason as text, while it is written.
    reason: String,
    /// The acknowledgement being written; each one is split off.
    ack: BytesMut,
    /// Histogram shard of this stream.
    shard: usize,
    /// The connection's ingest rate budget, if limited.
    budget: Option<Arc<IngestRate>>,
}

/// A symbol's place in `Session::text`.
#[derive(Debug, Clone, Copy)]
struct Span {
    at: usize,
    len: usize,
}

impl Span {
    fn range(self) -> std::ops::Range<usize> {
        self.at..self.at + self.len
    }
}

/// A tick of the batch as read.
struct ReadTick {
    event_time_ns: i64,
    seq: u64,
    /// The checked values and the symbol, or why the tick is rejected
    /// before its symbol is looked at.
    checked: Result<(TickValues, Symbol), Rejected>,
}

/// A good tick's symbol: where it is in `Session::text`, and its hash.
#[derive(Debug, Clone, Copy)]
struct Symbol {
    span: Span,
    hash: SymbolHash,
}

/// An instrument the current batch touched.
struct Touched {
    id: InstrumentId,
    /// Its symbol in `Session::text`.
    symbol: Span,
    /// The last sequence number this batch applied, if any.
    applied: Option<u64>,
}

impl Session {
    pub(super) fn new(core: Arc<Core>, budget: Option<Arc<IngestRate>>) -> Self {
        let shard = core.next_stream_index();
        Session {
            core,
            symbols: SymbolCache::new(SYMBOL_CACHE_LIMIT),
            read: Vec::new(),
            text: String::new(),
            touched_at: FxHashMap::default(),
            touched: Vec::new(),
            ticks: Vec::new(),
            origin: Vec::new(),
            rejected: Vec::new(),
            reason: String::new(),
            ack: BytesMut::new(),
            shard,
            budget,
        }
    }

    /// Evaluates one `TickBatch` message and returns its `IngestAck`
    /// message.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` for a malformed message or a batch over the size
    /// limit, `RESOURCE_EXHAUSTED` for one over the connection's rate
    /// budget: the stream ends.
    pub(super) fn process(&mut self, message: &[u8]) -> Result<Bytes, Status> {
        let batch_id = self.read(message)?;
        let limit = self.core.config().max_batch_ticks;
        let count = self.read.len();
        if count > limit {
            return Err(Status::invalid_argument(format!(
                "batch {batch_id} has {count} ticks; the limit is {limit} (max_batch_ticks)"
            )));
        }
        if let Some(budget) = &self.budget {
            budget.admit(batch_id, count)?;
        }
        let received_ns = SystemClock.now_ns();
        let started = Instant::now();
        self.touched_at.clear();
        self.touched.clear();
        self.ticks.clear();
        self.origin.clear();
        self.rejected.clear();
        let mut reject_counts = [0u32; REJECT_CODES.len()];
        let mut applied = 0u32;

        // Resolve every good tick; they go to the engine in one call
        // (which prefetches instrument state ahead).
        for index in 0..count {
            let position = convert::count_u32(index);
            match self.resolve(index, received_ns) {
                Ok((tick, slot)) => {
                    self.ticks.push(tick);
                    self.origin.push((position, slot));
                }
                Err(why) => {
                    reject_counts[reject_index(why.code())] += 1;
                    self.rejected.push((position, why));
                }
            }
        }
        let read_rejections = self.rejected.len();
        {
            let core = &self.core;
            let origin = &self.origin;
            let ticks = &self.ticks;
            let touched = &mut self.touched;
            let rejected = &mut self.rejected;
            let mut sink = PublishSink::new(core.bus(), received_ns);
            core.engine().apply_batch(ticks, received_ns, &mut sink, |i, result| {
                let (index, slot) = origin[i];
                match result {
                    Ok(()) => {
                        applied += 1;
                        touched[slot].applied = Some(ticks[i].seq);
                    }
                    Err(e) => {
                        let why = Rejected::from(e);
                        reject_counts[reject_index(why.code())] += 1;
                        rejected.push((index, why));
                    }
                }
            });
        }
        if read_rejections > 0 && self.rejected.len() > read_rejections {
            // Each index once: an unstable sort gives the one order.
            self.rejected.sort_unstable_by_key(|&(index, _)| index);
        }
        let eval_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.core
            .metrics()
            .record_batch(self.shard, count as u64, u64::from(applied), &reject_counts, eval_ns);
        Ok(self.acknowledge(batch_id, applied))
    }

    /// Reads the whole message into `read`: each tick's values checked,
    /// and a good tick's symbol copied to `text` and its cache slot
    /// prefetched (nothing is looked up or added yet: the message may turn
    /// out malformed). Returns the batch id.
    fn read(&mut self, message: &[u8]) -> Result<u64, Status> {
        self.read.clear();
        self.text.clear();
        let read = &mut self.read;
        let text = &mut self.text;
        let symbols = &self.symbols;
        tick_wire::read_batch(message, |tick: WireTick<'_>| {
            let checked = tick.values.and_then(|values| {
                // Before the symbol is interned: a bad tick adds no instrument.
                validate_values(tick.event_time_ns, &values)?;
                let hash = SymbolHash::of(tick.instrument);
                symbols.prefetch(hash);
                let span = Span {
                    at: text.len(),
                    len: tick.instrument.len(),
                };
                text.push_str(tick.instrument);
                Ok((values, Symbol { span, hash }))
            });
            read.push(ReadTick {
                event_time_ns: tick.event_time_ns,
                seq: tick.seq,
                checked,
            });
        })
        .map_err(|e| {
            debug!(error = %e, "Ingest stream sent a malformed message.");
            Status::invalid_argument(format!("malformed message: {e}"))
        })
    }

    /// Resolves the instrument of the `index`th tick read; returns the
    /// tick and the instrument's `touched` slot.
    #[inline]
    fn resolve(&mut self, index: usize, received_ns: i64) -> Result<(Tick, usize), Rejected> {
        let read = &self.read[index];
        let (values, symbol) = match &read.checked {
            Ok(checked) => *checked,
            Err(why) => return Err(why.clone()),
        };
        let text = &self.text[symbol.span.range()];
        let id = match self.symbols.get(symbol.hash, text) {
            Some(id) => id,
            None => {
                let id = self.core.engine().resolve(text, received_ns)?;
                self.symbols.insert(symbol.hash, text, id);
                id
            }
        };
        let slot = match self.touched_at.get(&id) {
            Some(&slot) => slot,
            None => {
                let slot = self.touched.len();
                self.touched_at.insert(id, slot);
                self.touched.push(Touched {
                    id,
                    symbol: symbol.span,
                    applied: None,
                });
                slot
            }
        };
        Ok((
            Tick {
                instrument: id,
                event_time_ns: read.event_time_ns,
                seq: read.seq,
                values,
            },
            slot,
        ))
    }

    /// Writes the batch's acknowledgement: rejections in batch order, then
    /// for each instrument the batch touched (in the order it first did)
    /// its last applied sequence number, if it has one.
    fn acknowledge(&mut self, batch_id: u64, applied: u32) -> Bytes {
        let engine = self.core.engine();
        self.ack
            .reserve(16 + 32 * self.touched.len() + 128 * self.rejected.len());
        let mut ack = AckWriter::new(&mut self.ack, batch_id, applied);
        for (index, why) in &self.rejected {
            self.reason.clear();
            // Writing to a String cannot fail.
            let _ = write!(self.reason, "{why}");
            ack.rejection(*index, why.code(), &self.reason);
        }
        for touched in &self.touched {
            if let Some(seq) = touched.applied.or_else(|| engine.last_seq(touched.id)) {
                ack.last_applied(self.text[touched.symbol.range()].as_bytes(), seq);
            }
        }
        self.ack.split().freeze()
    }
}
