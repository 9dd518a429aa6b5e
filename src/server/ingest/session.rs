//! One ingest stream's batches, from message bytes to acknowledgement
//! bytes: the message is read whole ([`tick_wire`]; a malformed one is
//! refused before any tick counts) into the stream's
//! [`IngestSession`](crate::service::IngestSession), which checks, resolves
//! and applies it; then the acknowledgement is written ([`ack_wire`]).
//!
//! The limits that belong to the gRPC contract are checked here: the batch
//! size (`max_batch_ticks`) and the connection's ingest rate. The ack's
//! buffers (the rejection reason as text, the acknowledgement's bytes)
//! live as long as the stream and are reused, as the pipeline's are, so
//! once they have grown a batch allocates nothing.

use std::fmt::Write as _;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tonic::Status;
use tracing::debug;

use crate::server::limits::IngestRate;
use crate::service::{Core, IngestSession};
use crate::wire::ack_wire::AckWriter;
use crate::wire::tick_wire::{self, WireTick};

/// The per-stream state that is reused across batches.
pub(super) struct Session {
    ingest: IngestSession,
    /// A rejection's reason as text, while it is written.
    reason: String,
    /// The acknowledgement being written; each one is split off.
    ack: BytesMut,
    /// The connection's ingest rate budget, if limited.
    budget: Option<Arc<IngestRate>>,
    /// The last alert the last batch published (0: none): its
    /// acknowledgement waits until that alert is durable.
    pub(super) last_alert_seq: u64,
}

impl Session {
    pub(super) fn new(core: Arc<Core>, budget: Option<Arc<IngestRate>>) -> Self {
        Session {
            ingest: IngestSession::new(core),
            reason: String::new(),
            ack: BytesMut::new(),
            budget,
            last_alert_seq: 0,
        }
    }

    pub(super) fn core(&self) -> &Arc<Core> {
        self.ingest.core()
    }

    /// Lets go of the stream's hold on shutdown.
    pub(super) fn release(&mut self) {
        self.ingest.release();
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
        let limit = self.core().config().max_batch_ticks;
        let count = self.ingest.pipeline().len();
        if count > limit {
            return Err(Status::invalid_argument(format!(
                "batch {batch_id} has {count} ticks; the limit is {limit} (max_batch_ticks)"
            )));
        }
        if let Some(budget) = &self.budget {
            budget.admit(batch_id, count)?;
        }
        let applied = self.ingest.apply();
        self.last_alert_seq = applied.last_alert_seq;
        Ok(self.acknowledge(batch_id, applied.applied))
    }

    /// Reads the whole message into the pipeline: each tick's values
    /// checked, and a good tick's symbol kept and its cache slot prefetched
    /// (nothing is looked up or added yet: the message may turn out
    /// malformed). Returns the batch id.
    fn read(&mut self, message: &[u8]) -> Result<u64, Status> {
        let pipeline = self.ingest.batch();
        tick_wire::read_batch(message, |tick: WireTick<'_>| {
            pipeline.push(tick.instrument, tick.event_time_ns, tick.seq, tick.values);
        })
        .map_err(|e| {
            debug!(error = %e, "Ingest stream sent a malformed message.");
            Status::invalid_argument(format!("malformed message: {e}"))
        })
    }

    /// Writes the batch's acknowledgement: rejections in batch order, then
    /// for each instrument the batch touched (in the order it first did)
    /// its last applied sequence number, if it has one.
    fn acknowledge(&mut self, batch_id: u64, applied: u32) -> Bytes {
        let engine = self.ingest.core().engine();
        let pipeline = self.ingest.pipeline();
        let rejected = pipeline.rejections();
        self.ack
            .reserve(16 + 32 * pipeline.touched_count() + 128 * rejected.len());
        let mut ack = AckWriter::new(&mut self.ack, batch_id, applied);
        for (index, why) in rejected {
            self.reason.clear();
            // Writing to a String cannot fail.
            let _ = write!(self.reason, "{why}");
            ack.rejection(*index, why.code().as_str(), &self.reason);
        }
        for touched in pipeline.touched() {
            let (Some(symbol), Some(seq)) = (touched.symbol, touched.applied.or_else(|| engine.last_seq(touched.id)))
            else {
                continue;
            };
            ack.last_applied(symbol.as_bytes(), seq);
        }
        self.ack.split().freeze()
    }
}
