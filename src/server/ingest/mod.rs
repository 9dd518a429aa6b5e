//! `Ingest`: batches of ticks in, one acknowledgement per batch out.
//!
//! Each stream's response is an [`IngestStream`] that reads the next batch
//! and evaluates it inside its own `poll_next`, on the task that received
//! it: no queue hop, no task per batch, no lock held across an await. The
//! engine publishes alerts to the bus as it raises them. A batch's
//! acknowledgement is held back until the last alert it published is
//! durable ([`crate::alerts::AlertBus::durable_seq`]: journaled by the
//! policy, with `fsync = "always"` synced), so an ack still means its
//! alerts are journaled; the stream waits in its own poll, holding no
//! lock, and reads no further batch meanwhile.
//!
//! A batch is evaluated only while its connection is open: once the
//! transport has closed ([`Connection::is_closed`]), batches still buffered
//! from it are dropped unevaluated and the stream ends. Their client can
//! no longer get their acks; it reconnects, asks `LastApplied` and resends
//! from there, and must not find those positions moved after it asked.
//!
//! A writer that names itself and an epoch in the call's metadata is
//! fenced ([`fence`]): once a newer epoch of it took over, its older
//! streams apply nothing more, even while their connections look alive.
//!
//! Wired by hand (instead of the generated `IngestServer`) so that
//! `Ingest.Ingest` has its own codec ([`IngestCodec`]): a batch arrives as
//! its message bytes and is read in place, and an acknowledgement leaves as
//! bytes written in place ([`session`]), so a tick allocates nothing. The
//! wire format is exactly the generated `TickBatch` and `IngestAck`, so
//! generated clients and reflection see no difference. `LastApplied` is
//! served with prost.

pub mod fence;
mod session;
#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use tokio_stream::Stream;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{http, Body, BoxFuture, Service, StdError};
use tonic::server::{NamedService, StreamingService, UnaryService};
use tonic::{Request, Response, Status, Streaming};
use tracing::debug;

use self::fence::{StreamFence, WriterFences};
use self::session::Session;
use super::connection::{self, Connection};
use super::gate::IngestBudget;
use super::limits::IngestRate;
use crate::alerts::DurableWait;
use crate::service::Core;
use crate::wire::proto;

const INGEST_PATH: &str = "/airbag.v1.Ingest/Ingest";
const LAST_APPLIED_PATH: &str = "/airbag.v1.Ingest/LastApplied";
/// Batches a stream still evaluates after shutdown began, if they are
/// already received; then it ends.
const DRAIN_BATCH_LIMIT: usize = 64;

/// The `Ingest` service.
#[derive(Clone)]
pub struct IngestService {
    core: Arc<Core>,
    max_decoding_message_size: usize,
    /// Every named writer's newest epoch.
    fences: Arc<WriterFences>,
}

impl IngestService {
    pub fn new(core: Arc<Core>) -> Self {
        let max_decoding_message_size = core.config().max_message_bytes;
        IngestService {
            core,
            max_decoding_message_size,
            fences: Arc::new(WriterFences::default()),
        }
    }

    /// Opens an ingest stream.
    ///
    /// # Errors
    /// `UNAVAILABLE` during shutdown; for a writer's stream (see [`fence`]),
    /// `FAILED_PRECONDITION` when a newer epoch of the writer took over and
    /// `INVALID_ARGUMENT` for a writer without a valid epoch.
    pub fn open(&self, request: Request<Streaming<Bytes>>) -> Result<IngestStream, Status> {
        if self.core.is_shutting_down() {
            return Err(Status::unavailable("server shutting down"));
        }
        let fence = self.fences.for_call(request.metadata())?;
        // The connection's rate budget, when `[limits]` sets one (see `gate`).
        let budget = request.extensions().get::<IngestBudget>().map(|b| b.0.clone());
        let connection = connection::of_request(request.extensions()).map(|(c, _)| c.clone());
        let mut stream = IngestStream::new(self.core.clone(), request.into_inner(), budget, connection);
        stream.fence = fence;
        Ok(stream)
    }

    /// Where each instrument asked for (or every instrument) stands; with
    /// a writer and epoch, after that epoch took over (see [`fence`]).
    ///
    /// # Errors
    /// As [`WriterFences::take_over`].
    pub fn last_applied(&self, request: proto::LastAppliedRequest) -> Result<proto::LastAppliedResponse, Status> {
        if !request.writer.is_empty() {
            self.fences.take_over(&request.writer, request.writer_epoch)?;
        }
        let engine = self.core.engine();
        let wanted = request.instruments;
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
        Ok(proto::LastAppliedResponse { last_applied })
    }
}

impl NamedService for IngestService {
    const NAME: &'static str = proto::ingest_server::SERVICE_NAME;
}

impl<B> Service<http::Request<B>> for IngestService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let max = Some(self.max_decoding_message_size);
        match request.uri().path() {
            INGEST_PATH => {
                let method = IngestMethod(self.clone());
                Box::pin(async move {
                    let mut grpc = tonic::server::Grpc::new(IngestCodec).apply_max_message_size_config(max, None);
                    Ok(grpc.streaming(method, request).await)
                })
            }
            LAST_APPLIED_PATH => {
                let method = LastAppliedMethod(self.clone());
                Box::pin(async move {
                    let codec = tonic_prost::ProstCodec::default();
                    let mut grpc = tonic::server::Grpc::new(codec).apply_max_message_size_config(max, None);
                    Ok(grpc.unary(method, request).await)
                })
            }
            _ => Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

struct IngestMethod(IngestService);

impl StreamingService<Bytes> for IngestMethod {
    type Response = Bytes;
    type ResponseStream = IngestStream;
    type Future = BoxFuture<Response<IngestStream>, Status>;

    fn call(&mut self, request: Request<Streaming<Bytes>>) -> Self::Future {
        let result = self.0.open(request).map(Response::new);
        Box::pin(async move { result })
    }
}

struct LastAppliedMethod(IngestService);

impl UnaryService<proto::LastAppliedRequest> for LastAppliedMethod {
    type Response = proto::LastAppliedResponse;
    type Future = BoxFuture<Response<proto::LastAppliedResponse>, Status>;

    fn call(&mut self, request: Request<proto::LastAppliedRequest>) -> Self::Future {
        let response = self.0.last_applied(request.into_inner()).map(Response::new);
        Box::pin(async move { response })
    }
}

/// The codec of `Ingest.Ingest`: a `TickBatch` message is handed over as
/// its bytes, unread (the session reads it); an `IngestAck` arrives
/// already written and is copied out.
#[derive(Clone, Copy, Default)]
pub struct IngestCodec;

impl Codec for IngestCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = AckEncoder;
    type Decoder = BatchDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        AckEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        BatchDecoder
    }
}

/// Hands over a `TickBatch` message's bytes: no copy (they are split off
/// tonic's receive buffer) and no parsing.
pub struct BatchDecoder;

impl Decoder for BatchDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Writes an acknowledgement's bytes.
pub struct AckEncoder;

/// The buffer tonic encodes acknowledgements into (its default size).
const ACK_BUFFER_BYTES: usize = 8 * 1024;

impl Encoder for AckEncoder {
    type Item = Bytes;
    type Error = Status;

    /// Each acknowledgement is handed on as soon as it is written (a
    /// yield threshold of one byte): tonic does not poll the stream for
    /// the next batch within the same call, so [`IngestStream`] decides
    /// when its task evaluates the next one.
    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(ACK_BUFFER_BYTES, 1)
    }

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put_slice(&item);
        Ok(())
    }
}

/// One ingest stream: reads, evaluates and acknowledges batches as tonic
/// polls it for the next acknowledgement.
pub struct IngestStream {
    inbound: Streaming<Bytes>,
    session: Session,
    /// The connection the stream came on, when served over one of ours.
    connection: Option<Arc<Connection>>,
    /// The writer's fence, for a stream that named its writer.
    fence: Option<StreamFence>,
    /// Completes when shutdown begins.
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    /// A batch received while the task was still in the poll that
    /// evaluated the one before: it is evaluated on the task's next poll.
    /// So a stream evaluates at most one batch per poll of its task, and
    /// between two batches the connection's own task gets to run: a close
    /// it reads stops the stream before the next batch, even when batches
    /// have queued up and the runtime is busy.
    waiting: Option<Bytes>,
    /// An acknowledgement held back until the alert with this sequence
    /// number, the last its batch published, is durable.
    held: Option<(Bytes, u64)>,
    /// Waits for that alert (made once, reused).
    durable: DurableWait,
    /// The last poll returned an acknowledgement.
    acked: bool,
    draining: bool,
    drained: usize,
    done: bool,
}

impl IngestStream {
    fn new(
        core: Arc<Core>,
        inbound: Streaming<Bytes>,
        budget: Option<Arc<IngestRate>>,
        connection: Option<Arc<Connection>>,
    ) -> Self {
        let shutdown = Box::pin(core.shutdown_token().clone().cancelled_owned());
        let durable = core.bus().durable_wait();
        IngestStream {
            inbound,
            session: Session::new(core, budget),
            connection,
            fence: None,
            waiting: None,
            held: None,
            durable,
            acked: false,
            shutdown,
            draining: false,
            drained: 0,
            done: false,
        }
    }

    fn finish(&mut self, status: Option<Status>) -> Poll<Option<Result<Bytes, Status>>> {
        finish(&mut self.done, &mut self.session, status)
    }
}

impl Stream for IngestStream {
    type Item = Result<Bytes, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Some((_, seq)) = &this.held {
            if this.durable.poll_durable(*seq, cx).is_pending() {
                return Poll::Pending;
            }
            if let Some((ack, _)) = this.held.take() {
                this.acked = true;
                return Poll::Ready(Some(Ok(ack)));
            }
        }
        if !this.draining && this.shutdown.as_mut().poll(cx).is_ready() {
            this.draining = true;
        }
        if this.draining && this.drained >= DRAIN_BATCH_LIMIT {
            return this.finish(Some(Status::unavailable("server shutting down")));
        }
        let batch = match this.waiting.take() {
            Some(batch) => batch,
            None => match Pin::new(&mut this.inbound).poll_next(cx) {
                Poll::Ready(Some(Ok(batch))) if this.acked => {
                    // A batch right behind the one just acknowledged: the
                    // task yields before evaluating it (see `waiting`).
                    this.acked = false;
                    this.waiting = Some(batch);
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Ready(Some(Ok(batch))) => batch,
                Poll::Ready(Some(Err(status))) => {
                    let status = inbound_error(status, this.session.core().config().max_message_bytes);
                    return this.finish(Some(status));
                }
                // The client finished sending: the stream ends with OK.
                Poll::Ready(None) => return this.finish(None),
                Poll::Pending if this.draining => {
                    return this.finish(Some(Status::unavailable("server shutting down")));
                }
                Poll::Pending => {
                    this.acked = false;
                    return Poll::Pending;
                }
            },
        };
        if this.connection.as_ref().is_some_and(|c| c.is_closed()) {
            debug!(
                bytes = batch.len(),
                "Ingest stream's connection closed: a batch received before the close is dropped."
            );
            return this.finish(Some(Status::unavailable(
                "connection closed; batches received before the close are not evaluated",
            )));
        }
        if this.draining {
            this.drained += 1;
        }
        // A stream whose writer moved on applies nothing more; the check and
        // the apply are one step under the writer's lock.
        let admitted = match &this.fence {
            Some(fence) => match fence.admit() {
                Ok(guard) => Some(guard),
                Err(status) => {
                    debug!(
                        reason = status.message(),
                        "Ingest stream of a superseded writer epoch ended."
                    );
                    return finish(&mut this.done, &mut this.session, Some(status));
                }
            },
            None => None,
        };
        let processed = this.session.process(&batch);
        drop(admitted);
        match processed {
            Ok(ack) => {
                let last = this.session.last_alert_seq;
                if last > 0 && this.durable.poll_durable(last, cx).is_pending() {
                    this.held = Some((ack, last));
                    return Poll::Pending;
                }
                this.acked = true;
                Poll::Ready(Some(Ok(ack)))
            }
            Err(status) => this.finish(Some(status)),
        }
    }
}

/// Ends a stream (see [`IngestStream::finish`]); by fields, for callers
/// that hold a borrow of another.
fn finish(done: &mut bool, session: &mut Session, status: Option<Status>) -> Poll<Option<Result<Bytes, Status>>> {
    *done = true;
    // Shutdown waits for every stream to let go before it closes the
    // subscriber streams.
    session.release();
    Poll::Ready(status.map(Err))
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
