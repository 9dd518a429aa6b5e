//! One source's session with the service: a gRPC ingest stream, a Kafka
//! partition's consumer. It owns the source's [`Pipeline`], the shard of
//! the evaluation histograms it records into, and a hold on shutdown:
//! shutdown waits for every session to let go before it closes the alert
//! streams.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;

use crate::alerts::PublishSink;

use super::{Core, Pipeline};

/// A source's session: push a batch into [`IngestSession::batch`], then
/// [`IngestSession::apply`] it.
pub struct IngestSession {
    core: Arc<Core>,
    pipeline: Pipeline,
    /// Histogram shard of this source.
    shard: usize,
    /// Held while the session may still evaluate ticks (see
    /// [`Core::in_flight_guard`]).
    in_flight: Option<watch::Receiver<()>>,
}

impl std::fmt::Debug for IngestSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestSession")
            .field("shard", &self.shard)
            .field("pipeline", &self.pipeline)
            .finish_non_exhaustive()
    }
}

/// What applying one batch did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchApplied {
    /// Ticks applied to instrument state.
    pub applied: u32,
    /// When the batch was received, by the service clock (ns).
    pub received_ns: i64,
    /// The sequence number of the last alert the batch published, 0 for
    /// none: the batch may be acknowledged once it is durable
    /// ([`crate::alerts::AlertBus::wait_durable`]).
    pub last_alert_seq: u64,
}

impl IngestSession {
    pub fn new(core: Arc<Core>) -> Self {
        let shard = core.next_stream_index();
        let in_flight = Some(core.in_flight_guard());
        let pipeline = Pipeline::bounding_future(core.config().max_future_skew_ms);
        IngestSession {
            core,
            pipeline,
            shard,
            in_flight,
        }
    }

    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// The pipeline, cleared for a new batch: push its ticks.
    pub fn batch(&mut self) -> &mut Pipeline {
        self.pipeline.clear();
        &mut self.pipeline
    }

    /// The pipeline with the batch in hand (and, after
    /// [`IngestSession::apply`], its outcome).
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    /// Applies the batch pushed, received now by the service clock: alerts
    /// are published as the engine raises them, and the batch's counts
    /// and evaluation time are recorded.
    pub fn apply(&mut self) -> BatchApplied {
        let core = &self.core;
        let received_ns = core.clock().now_ns();
        let started = Instant::now();
        let mut sink = PublishSink::new(core.bus(), received_ns);
        let applied = self.pipeline.apply(core.engine(), received_ns, &mut sink);
        let eval_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        core.metrics().record_batch(
            self.shard,
            self.pipeline.len() as u64,
            u64::from(applied),
            self.pipeline.reject_counts(),
            eval_ns,
        );
        BatchApplied {
            applied,
            received_ns,
            last_alert_seq: sink.last_seq(),
        }
    }

    /// Lets go of the hold on shutdown: the session evaluates no more.
    pub fn release(&mut self) {
        self.in_flight = None;
    }
}
