//! The gate every gRPC request passes before it reaches a service: a
//! tower layer that authenticates the caller, checks its role for the
//! method ([`super::auth`]), takes a place in the stream counts for
//! ingest streams and subscriptions ([`super::limits`]), and hands an
//! ingest stream its connection's rate budget. The services themselves
//! know nothing of credentials. A refused request is answered here, with
//! its status, and never reaches a service; it is counted in
//! `airbag_requests_refused_total` by reason. Every call, open ones too,
//! is counted on its connection while it lasts, for the idle timeout
//! ([`connection`]).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body::Frame;
use tonic::body::Body;
use tonic::codegen::http::{self, header::AUTHORIZATION};
use tonic::codegen::{BoxFuture, Service};
use tonic::Status;
use tower_layer::Layer;
use tracing::debug;

use super::auth::{access_of, Access, Credentials};
use super::connection::{self, CallGuard};
use super::limits::{IngestRate, StreamGuard, StreamKind, StreamLimits};
use crate::config::auth::Role;
use crate::metrics::{Refusal, Refusals};

/// The rate budget of an ingest stream's connection, as a request
/// extension for the `Ingest` service.
#[derive(Clone, Debug)]
pub struct IngestBudget(pub Arc<IngestRate>);

/// What the gate checks against.
#[derive(Debug)]
pub struct Gate {
    /// The credentials in force (reloaded with the rules).
    pub auth: Credentials,
    pub limits: Arc<StreamLimits>,
    pub refusals: Arc<Refusals>,
}

/// The tower layer of the [`Gate`].
#[derive(Clone, Debug)]
pub struct GateLayer {
    gate: Arc<Gate>,
}

impl GateLayer {
    pub fn new(gate: Gate) -> Self {
        GateLayer { gate: Arc::new(gate) }
    }
}

impl<S> Layer<S> for GateLayer {
    type Service = GateService<S>;

    fn layer(&self, inner: S) -> GateService<S> {
        GateService {
            gate: self.gate.clone(),
            inner,
        }
    }
}

/// A service behind the [`Gate`].
#[derive(Clone, Debug)]
pub struct GateService<S> {
    gate: Arc<Gate>,
    inner: S,
}

impl<S> Service<http::Request<Body>> for GateService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The clone that was polled ready serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let call = connection::of_request(request.extensions()).map(|(c, _)| c.start_call());
        let guard = match access_of(request.uri().path()) {
            Access::Open => None,
            Access::Needs(role) => match self.gate.admit(role, &mut request) {
                Ok(guard) => guard,
                Err(status) => return Box::pin(async move { Ok(status.into_http()) }),
            },
        };
        let response = inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(if guard.is_none() && call.is_none() {
                response
            } else {
                response.map(|body| {
                    Body::new(GuardedBody {
                        body,
                        _guard: guard,
                        _call: call,
                    })
                })
            })
        })
    }
}

impl Gate {
    /// Authorizes a request that needs `role` and takes its stream place;
    /// removes the credentials from the request.
    fn admit(&self, role: Role, request: &mut http::Request<Body>) -> Result<Option<StreamGuard>, Status> {
        let path = request.uri().path();
        let connection = connection::of_request(request.extensions());
        let remote = connection.and_then(|(c, _)| c.remote);
        let subject = connection.and_then(|(c, tls)| c.subject(tls));
        let principal = self
            .auth
            .current()
            .authorize(request.headers(), subject.as_deref(), role, path)
            .inspect_err(|status| {
                self.refusals.count(match status.code() {
                    tonic::Code::PermissionDenied => Refusal::PermissionDenied,
                    _ => Refusal::Unauthenticated,
                });
                debug!(?remote, %path, code = ?status.code(), reason = status.message(), "Request refused.");
            })?;
        let kind = match role {
            Role::Ingest => Some(StreamKind::Ingest),
            Role::Subscribe => Some(StreamKind::Subscribe),
            Role::Admin => None,
        };
        let guard = match kind {
            Some(kind) => {
                let guard = self
                    .limits
                    .acquire(kind, connection.map(|(c, _)| c))
                    .inspect_err(|status| {
                        self.refusals.count(Refusal::TooManyStreams);
                        debug!(?remote, %path, %principal, reason = status.message(), "Stream refused.");
                    })?;
                Some(guard)
            }
            None => None,
        };
        let budget = match (role, connection) {
            (Role::Ingest, Some((conn, _))) => conn.ingest_rate.clone(),
            _ => None,
        };
        if let Some(budget) = budget {
            request.extensions_mut().insert(IngestBudget(budget));
        }
        request.headers_mut().remove(AUTHORIZATION);
        Ok(guard)
    }
}

/// A response body that holds its stream's place, and its call's count on
/// the connection, until the stream ends.
struct GuardedBody {
    body: Body,
    _guard: Option<StreamGuard>,
    _call: Option<CallGuard>,
}

impl http_body::Body for GuardedBody {
    type Data = tonic::codegen::Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Status>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
