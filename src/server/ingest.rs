//! `Ingest`: batches of ticks in, one acknowledgement per batch out.
//!
//! Each stream's response is an [`IngestStream`] that reads the next batch
//! and evaluates it inside its own `poll_next`, on the task that received
//! it: no queue hop, no task per batch, no lock held across an await. The
//! engine publishes alerts to the bus as it raises them. Per-stream buffers
//! (the symbol cache, the decoded ticks, the touched-instrument map) are
//! reused across batches, so a tick allocates nothing beyond what prost
//! decodes unless it is rejected or raises an alert.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use rustc_hash::FxHashMap;
use tokio::sync::watch;
use tokio_stream::Stream;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use super::convert::{self, Rejected};
use super::gate::IngestBudget;
use super::limits::IngestRate;
use super::proto;
use crate::alerts::PublishSink;
use crate::app::Core;
use crate::clock::{Clock, SystemClock};
use crate::metrics::{reject_index, REJECT_CODES};
use crate::model::{InstrumentId, Tick};

/// Symbols one stream remembers; past this, lookups go to the engine's
/// symbol table (still correct, a little slower).
const SYMBOL_CACHE_LIMIT: usize = 65_536;
/// Batches a stream still evaluates after shutdown began, if they are
/// already received; then it ends.
const DRAIN_BATCH_LIMIT: usize = 64;

/// The `Ingest` service.
#[derive(Clone)]
pub struct IngestService {
    core: Arc<Core>,
}

impl IngestService {
    pub fn new(core: Arc<Core>) -> Self {
        IngestService { core }
    }
}

#[tonic::async_trait]
impl proto::ingest_server::Ingest for IngestService {
    type IngestStream = IngestStream;

    async fn ingest(&self, request: Request<Streaming<proto::TickBatch>>) -> Result<Response<IngestStream>, Status> {
        if self.core.is_shutting_down() {
            return Err(Status::unavailable("server shutting down"));
        }
        // The connection's rate budget, when `[limits]` sets one (see `gate`).
        let budget = request.extensions().get::<IngestBudget>().map(|b| b.0.clone());
        let stream = IngestStream::new(self.core.clone(), request.into_inner(), budget);
        Ok(Response::new(stream))
    }

    async fn last_applied(
        &self,
        request: Request<proto::LastAppliedRequest>,
    ) -> Result<Response<proto::LastAppliedResponse>, Status> {
        let engine = self.core.engine();
        let wanted = request.into_inner().instruments;
        let last_applied = if wanted.is_empty() {
            engine
                .last_applied_all()
                .into_iter()
                .map(|(symbol, seq)| proto::InstrumentSeq {
                    instrument: symbol.to_string(),
                    seq,
                })
                .collect()
        } else {
            wanted
                .into_iter()
                .filter_map(|symbol| {
                    let id = engine.instruments().get(&symbol)?;
                    let seq = engine.last_seq(id)?;
                    Some(proto::InstrumentSeq {
                        instrument: symbol,
                        seq,
                    })
                })
                .collect()
        };
        Ok(Response::new(proto::LastAppliedResponse { last_applied }))
    }
}

/// One ingest stream: reads, evaluates and acknowledges batches as tonic
/// polls it for the next acknowledgement.
pub struct IngestStream {
    inbound: Streaming<proto::TickBatch>,
    session: Session,
    /// Completes when shutdown begins.
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    /// Held while the stream may still evaluate ticks: shutdown waits for
    /// every one to be dropped before it closes subscriber streams.
    in_flight: Option<watch::Receiver<()>>,
    draining: bool,
    drained: usize,
    done: bool,
}

impl IngestStream {
    fn new(core: Arc<Core>, inbound: Streaming<proto::TickBatch>, budget: Option<Arc<IngestRate>>) -> Self {
        let shutdown = Box::pin(core.shutdown_token().clone().cancelled_owned());
        let in_flight = Some(core.in_flight_guard());
        IngestStream {
            inbound,
            session: Session::new(core, budget),
            shutdown,
            in_flight,
            draining: false,
            drained: 0,
            done: false,
        }
    }

    fn finish(&mut self, status: Option<Status>) -> Poll<Option<Result<proto::IngestAck, Status>>> {
        self.done = true;
        self.in_flight = None;
        Poll::Ready(status.map(Err))
    }
}

impl Stream for IngestStream {
    type Item = Result<proto::IngestAck, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if !this.draining && this.shutdown.as_mut().poll(cx).is_ready() {
            this.draining = true;
        }
        if this.draining && this.drained >= DRAIN_BATCH_LIMIT {
            return this.finish(Some(Status::unavailable("server shutting down")));
        }
        match Pin::new(&mut this.inbound).poll_next(cx) {
            Poll::Ready(Some(Ok(batch))) => {
                if this.draining {
                    this.drained += 1;
                }
                match this.session.process(batch) {
                    Ok(ack) => Poll::Ready(Some(Ok(ack))),
                    Err(status) => this.finish(Some(status)),
                }
            }
            Poll::Ready(Some(Err(status))) => {
                let status = inbound_error(status, this.session.core.config().max_message_bytes);
                this.finish(Some(status))
            }
            // The client finished sending: the stream ends with OK.
            Poll::Ready(None) => this.finish(None),
            Poll::Pending if this.draining => this.finish(Some(Status::unavailable("server shutting down"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// What to answer when reading the request stream failed: a message that
/// could not be decoded or was too large is the client's error
/// (`INVALID_ARGUMENT`, naming `max_message_bytes` for a message too
/// large); a broken connection is answered as it is (nobody is listening).
fn inbound_error(status: Status, max_message_bytes: usize) -> Status {
    use tonic::Code;
    match status.code() {
        Code::OutOfRange => {
            debug!(error = %status.message(), "Ingest stream sent a message over the size limit.");
            Status::invalid_argument(format!(
                "message too large (max_message_bytes = {max_message_bytes}): {}",
                status.message()
            ))
        }
        Code::Internal | Code::ResourceExhausted | Code::InvalidArgument => {
            debug!(error = %status.message(), "Ingest stream sent a malformed message.");
            Status::invalid_argument(format!("malformed message: {}", status.message()))
        }
        _ => {
            debug!(code = ?status.code(), error = %status.message(), "Ingest stream broke.");
            status
        }
    }
}

/// The per-stream state that is reused across batches.
struct Session {
    core: Arc<Core>,
    /// Symbol -> id for symbols this stream has sent: saves a lookup in the
    /// shared symbol table per tick.
    symbols: FxHashMap<Box<str>, InstrumentId>,
    /// Instrument -> index in `touched` for the current batch.
    touched_at: FxHashMap<InstrumentId, usize>,
    touched: Vec<Touched>,
    /// The batch's decoded ticks, handed to the engine in one call.
    ticks: Vec<Tick>,
    /// For each of `ticks`: its index in the batch and its `touched` slot.
    origin: Vec<(u32, usize)>,
    /// Histogram shard of this stream.
    shard: usize,
    /// The connection's ingest rate budget, if limited.
    budget: Option<Arc<IngestRate>>,
}

/// An instrument the current batch touched.
struct Touched {
    id: InstrumentId,
    symbol: String,
    /// The last sequence number this batch applied, if any.
    applied: Option<u64>,
}

fn rejection(index: u32, why: &Rejected) -> proto::Rejection {
    proto::Rejection {
        index,
        code: why.code().to_string(),
        reason: why.to_string(),
    }
}

impl Session {
    fn new(core: Arc<Core>, budget: Option<Arc<IngestRate>>) -> Self {
        let shard = core.next_stream_index();
        Session {
            core,
            symbols: FxHashMap::default(),
            touched_at: FxHashMap::default(),
            touched: Vec::new(),
            ticks: Vec::new(),
            origin: Vec::new(),
            shard,
            budget,
        }
    }

    /// Evaluates one batch and builds its acknowledgement.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` for a batch over the size limit,
    /// `RESOURCE_EXHAUSTED` for one over the connection's rate budget: the
    /// stream ends.
    fn process(&mut self, mut batch: proto::TickBatch) -> Result<proto::IngestAck, Status> {
        let limit = self.core.config().max_batch_ticks;
        let count = batch.ticks.len();
        if count > limit {
            return Err(Status::invalid_argument(format!(
                "batch {} has {count} ticks; the limit is {limit} (max_batch_ticks)",
                batch.batch_id
            )));
        }
        if let Some(budget) = &self.budget {
            budget.admit(batch.batch_id, count)?;
        }
        let received_ns = SystemClock.now_ns();
        let started = Instant::now();
        self.touched_at.clear();
        self.touched.clear();
        self.ticks.clear();
        self.origin.clear();
        let mut rejected = Vec::new();
        let mut reject_counts = [0u32; REJECT_CODES.len()];
        let mut applied = 0u32;

        // Decode, validate and resolve every tick; what passes goes to the
        // engine in one call (which prefetches instrument state ahead).
        for (index, tick) in batch.ticks.iter_mut().enumerate() {
            let index = convert::count_u32(index);
            match self.decode(tick, received_ns) {
                Ok((decoded, slot)) => {
                    self.ticks.push(decoded);
                    self.origin.push((index, slot));
                }
                Err(why) => {
                    reject_counts[reject_index(why.code())] += 1;
                    rejected.push(rejection(index, &why));
                }
            }
        }
        let decode_rejections = rejected.len();
        {
            let core = &self.core;
            let origin = &self.origin;
            let touched = &mut self.touched;
            let mut sink = PublishSink::new(core.bus(), received_ns);
            core.engine()
                .apply_batch(&self.ticks, received_ns, &mut sink, |i, result| {
                    let (index, slot) = origin[i];
                    match result {
                        Ok(()) => {
                            applied += 1;
                            touched[slot].applied = Some(self.ticks[i].seq);
                        }
                        Err(e) => {
                            let why = Rejected::from(e);
                            reject_counts[reject_index(why.code())] += 1;
                            rejected.push(rejection(index, &why));
                        }
                    }
                });
        }
        if decode_rejections > 0 && rejected.len() > decode_rejections {
            rejected.sort_by_key(|r| r.index);
        }
        let eval_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.core
            .metrics()
            .record_batch(self.shard, count as u64, u64::from(applied), &reject_counts, eval_ns);

        let engine = self.core.engine();
        let last_applied = self
            .touched
            .drain(..)
            .filter_map(|t| {
                let seq = t.applied.or_else(|| engine.last_seq(t.id))?;
                Some(proto::InstrumentSeq {
                    instrument: t.symbol,
                    seq,
                })
            })
            .collect();
        Ok(proto::IngestAck {
            batch_id: batch.batch_id,
            applied,
            rejected,
            last_applied,
        })
    }

    /// Decodes and validates one tick and resolves its instrument; returns
    /// the tick and the instrument's `touched` slot.
    #[inline]
    fn decode(&mut self, tick: &mut proto::Tick, received_ns: i64) -> Result<(Tick, usize), Rejected> {
        // Before the symbol is interned: a bad tick adds no instrument.
        let values = convert::checked_values(tick)?;
        let id = match self.symbols.get(tick.instrument.as_str()) {
            Some(&id) => id,
            None => {
                let id = self.core.engine().resolve(&tick.instrument, received_ns)?;
                if self.symbols.len() < SYMBOL_CACHE_LIMIT {
                    self.symbols.insert(tick.instrument.as_str().into(), id);
                }
                id
            }
        };
        let slot = match self.touched_at.get(&id) {
            Some(&slot) => slot,
            None => {
                let slot = self.touched.len();
                self.touched_at.insert(id, slot);
                // The batch is ours: take the symbol rather than copy it.
                self.touched.push(Touched {
                    id,
                    symbol: std::mem::take(&mut tick.instrument),
                    applied: None,
                });
                slot
            }
        };
        Ok((
            Tick {
                instrument: id,
                event_time_ns: tick.event_time_ns,
                seq: tick.seq,
                values,
            },
            slot,
        ))
    }
}
