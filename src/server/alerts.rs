//! `Alerts.Subscribe`: a server stream of alerts from the bus; and
//! `Alerts.State`: what every rule has in force right now
//! ([`crate::engine::Engine::statuses`]).
//!
//! Encoded once: the service is wired by hand (instead of the generated
//! `AlertsServer`) so that its codec can write each alert's cached bytes
//! ([`PublishedAlert::encoded`]) rather than encoding a message per
//! subscriber. The wire format is exactly the generated `Alert`, so
//! generated clients and reflection see no difference.
//!
//! The subscription is registered before the response headers are sent;
//! they carry [`NEXT_SEQ_KEY`], the next alert to be published: a client
//! holding them receives every matching alert from that one on.
//!
//! A subscription ends with a status: `RESOURCE_EXHAUSTED` when the
//! subscriber fell behind, `OUT_OF_RANGE` when a replay start is no longer
//! kept, `DATA_LOSS` when the alert journal cannot be read, `UNAVAILABLE`
//! when the server shuts down. Each names the sequence number to resume
//! from where there is one, in the message for people and in trailing
//! metadata for programs ([`RESUME_SEQ_KEY`], [`OLDEST_SEQ_KEY`]).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BufMut;
use tokio_stream::Stream;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::codegen::{http, Body, BoxFuture, Service, StdError};
use tonic::server::{NamedService, ServerStreamingService};
use tonic::{Request, Response, Status};

use crate::alerts::{
    FilterError, FilterSpec, PublishedAlert, SubscribeError, Subscription, SubscriptionEnd, SubscriptionFilter,
};
use crate::service::Core;
use crate::wire::{convert, proto};

const SUBSCRIBE_PATH: &str = "/airbag.v1.Alerts/Subscribe";
const STATE_PATH: &str = "/airbag.v1.Alerts/State";

/// Trailing metadata of a subscription that ended where it can be resumed:
/// the `from_seq` to subscribe with.
pub const RESUME_SEQ_KEY: &str = "airbag-resume-seq";
/// Metadata of an `OUT_OF_RANGE` status: the oldest alert kept.
pub const OLDEST_SEQ_KEY: &str = "airbag-oldest-seq";
/// Metadata: the next alert to be published (the response headers of a
/// subscription; an `OUT_OF_RANGE` for a start past it).
pub const NEXT_SEQ_KEY: &str = "airbag-next-seq";

/// Adds `key: seq` to a status's metadata.
fn with_seq(mut status: Status, key: &'static str, seq: u64) -> Status {
    if let Ok(value) = seq.to_string().parse() {
        status.metadata_mut().insert(key, value);
    }
    status
}

/// The `Alerts` service.
#[derive(Clone)]
pub struct AlertsService {
    core: Arc<Core>,
    max_decoding_message_size: usize,
}

impl AlertsService {
    pub fn new(core: Arc<Core>) -> Self {
        let max_decoding_message_size = core.config().max_message_bytes;
        AlertsService {
            core,
            max_decoding_message_size,
        }
    }

    /// Opens a subscription for a request.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` for a bad filter, `OUT_OF_RANGE` for a start that
    /// is not kept, `UNAVAILABLE` during shutdown.
    pub fn open(&self, request: proto::SubscribeRequest) -> Result<AlertStream, Status> {
        let (spec, from_seq) = convert::subscribe_request(request).map_err(Status::invalid_argument)?;
        let filter = SubscriptionFilter::new(spec).map_err(|e: FilterError| Status::invalid_argument(e.to_string()))?;
        let subscription = self.core.bus().subscribe(filter, from_seq).map_err(|e| match e {
            SubscribeError::TooOld { oldest, .. } => {
                with_seq(Status::out_of_range(e.to_string()), OLDEST_SEQ_KEY, oldest)
            }
            SubscribeError::Ahead { next, .. } => with_seq(Status::out_of_range(e.to_string()), NEXT_SEQ_KEY, next),
            SubscribeError::Closed => Status::unavailable(e.to_string()),
        })?;
        Ok(AlertStream { subscription })
    }
}

impl NamedService for AlertsService {
    const NAME: &'static str = proto::alerts_server::SERVICE_NAME;
}

impl<B> Service<http::Request<B>> for AlertsService
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
        if request.uri().path() == STATE_PATH {
            let method = StateMethod(self.clone());
            let max = self.max_decoding_message_size;
            return Box::pin(async move {
                let codec = tonic_prost::ProstCodec::default();
                let mut grpc = tonic::server::Grpc::new(codec).apply_max_message_size_config(Some(max), None);
                Ok(grpc.unary(method, request).await)
            });
        }
        if request.uri().path() != SUBSCRIBE_PATH {
            return Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) });
        }
        let method = SubscribeMethod(self.clone());
        let max = self.max_decoding_message_size;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(AlertCodec).apply_max_message_size_config(Some(max), None);
            Ok(grpc.server_streaming(method, request).await)
        })
    }
}

struct StateMethod(AlertsService);

impl tonic::server::UnaryService<proto::StateRequest> for StateMethod {
    type Response = proto::StateResponse;
    type Future = BoxFuture<Response<proto::StateResponse>, Status>;

    fn call(&mut self, request: Request<proto::StateRequest>) -> Self::Future {
        let core = self.0.core.clone();
        let request = request.into_inner();
        Box::pin(async move {
            let select = SubscriptionFilter::new(FilterSpec {
                instruments: request.instruments,
                ..FilterSpec::default()
            })
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
            // Locks each instrument in turn: off the async workers.
            let response = tokio::task::spawn_blocking(move || {
                let last_alert_seq = core.bus().last_seq();
                let states = core.engine().statuses(|symbol| select.matches_instrument(symbol));
                proto::StateResponse {
                    states: states.iter().map(convert::instrument_state).collect(),
                    last_alert_seq,
                    as_of_time_ns: core.clock().now_ns(),
                }
            })
            .await
            .map_err(|e| Status::internal(format!("the state could not be read: {e}")))?;
            Ok(Response::new(response))
        })
    }
}

struct SubscribeMethod(AlertsService);

impl ServerStreamingService<proto::SubscribeRequest> for SubscribeMethod {
    type Response = Arc<PublishedAlert>;
    type ResponseStream = AlertStream;
    type Future = BoxFuture<Response<AlertStream>, Status>;

    fn call(&mut self, request: Request<proto::SubscribeRequest>) -> Self::Future {
        let result = self.0.open(request.into_inner()).map(|stream| {
            // Read after registering: every alert from this one on is the
            // subscriber's (it may already have some before it).
            let next = self.0.core.bus().last_seq() + 1;
            let mut response = Response::new(stream);
            if let Ok(value) = next.to_string().parse() {
                response.metadata_mut().insert(NEXT_SEQ_KEY, value);
            }
            response
        });
        Box::pin(async move { result })
    }
}

/// A subscription as a gRPC response stream.
pub struct AlertStream {
    subscription: Subscription,
}

impl Stream for AlertStream {
    type Item = Result<Arc<PublishedAlert>, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut()
            .subscription
            .poll_next_alert(cx)
            .map(|next| next.map(|item| item.map_err(|end| end_status(&end))))
    }
}

/// The status a subscription ends with.
pub fn end_status(end: &SubscriptionEnd) -> Status {
    match *end {
        SubscriptionEnd::Lagged { resume_seq, .. } => {
            with_seq(Status::resource_exhausted(end.to_string()), RESUME_SEQ_KEY, resume_seq)
        }
        SubscriptionEnd::ReplayOverrun { resume_seq, oldest } => with_seq(
            with_seq(Status::out_of_range(end.to_string()), RESUME_SEQ_KEY, resume_seq),
            OLDEST_SEQ_KEY,
            oldest,
        ),
        SubscriptionEnd::JournalUnreadable { resume_seq, .. } | SubscriptionEnd::Lost { resume_seq, .. } => {
            with_seq(Status::data_loss(end.to_string()), RESUME_SEQ_KEY, resume_seq)
        }
        SubscriptionEnd::Shutdown => Status::unavailable(end.to_string()),
    }
}

/// Decodes `SubscribeRequest` with prost; encodes a published alert by
/// copying its cached wire bytes.
#[derive(Clone, Copy, Default)]
struct AlertCodec;

impl Codec for AlertCodec {
    type Encode = Arc<PublishedAlert>;
    type Decode = proto::SubscribeRequest;
    type Encoder = AlertEncoder;
    type Decoder = tonic_prost::ProstDecoder<proto::SubscribeRequest>;

    fn encoder(&mut self) -> Self::Encoder {
        AlertEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstDecoder::default()
    }
}

struct AlertEncoder;

impl Encoder for AlertEncoder {
    type Item = Arc<PublishedAlert>;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put_slice(item.encoded(convert::encode_alert));
        Ok(())
    }
}
