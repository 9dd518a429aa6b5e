//! The gate every gRPC request passes before it reaches a service: a
//! tower layer that authenticates the caller, checks its role for the
//! method ([`super::auth`]), takes a place in the stream counts for
//! ingest streams and subscriptions ([`super::limits`]), and hands an
//! ingest stream its connection's rate budget. The services themselves
//! know nothing of credentials. A refused request is answered here, with
//! its status, and never reaches a service.

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

use super::auth::{access_of, Access, Authenticator};
use super::connection;
use super::limits::{IngestRate, StreamGuard, StreamKind, StreamLimits};
use crate::config::auth::Role;

/// The rate budget of an ingest stream's connection, as a request
/// extension for the `Ingest` service.
#[derive(Clone, Debug)]
pub struct IngestBudget(pub Arc<IngestRate>);

/// What the gate checks against.
#[derive(Debug)]
pub struct Gate {
    pub auth: Authenticator,
    pub limits: Arc<StreamLimits>,
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
        let Access::Needs(role) = access_of(request.uri().path()) else {
            return Box::pin(inner.call(request));
        };
        let guard = match self.gate.admit(role, &mut request) {
            Ok(guard) => guard,
            Err(status) => return Box::pin(async move { Ok(status.into_http()) }),
        };
        let response = inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(match guard {
                Some(guard) => response.map(|body| Body::new(GuardedBody { body, _guard: guard })),
                None => response,
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
            .authorize(request.headers(), subject.as_deref(), role, path)
            .inspect_err(|status| {
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

/// A response body that holds its stream's place until the stream ends.
struct GuardedBody {
    body: Body,
    _guard: StreamGuard,
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
