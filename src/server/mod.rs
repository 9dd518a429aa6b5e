//! The gRPC service: a thin layer over the engine and the alert bus. The
//! only module that knows protobuf.
//!
//! - [`ingest`]: `Ingest`, evaluation on the receiving stream's task; its
//!   messages read and written by hand ([`tick_wire`], [`ack_wire`]).
//! - [`alerts`]: `Alerts.Subscribe`, each alert encoded once.
//! - [`admin`]: `RuleAdmin` (list, validate, reload, status).
//! - [`convert`]: the only place proto types meet model types.
//! - [`proto`]: the generated code.
//!
//! Security, in front of the services (which know nothing of it):
//!
//! - [`gate`]: the tower layer every request passes: [`auth`] (who may
//!   call what) and [`limits`] (stream counts, ingest rate).
//! - [`tls`]: TLS and mutual TLS on the port.
//! - [`connection`]: per-connection state carried with each request.
//!
//! [`serve`] adds the standard `grpc.health.v1` health service and server
//! reflection (both open to every caller).

pub mod ack_wire;
pub mod admin;
pub mod alerts;
pub mod auth;
pub mod connection;
pub mod convert;
pub mod gate;
pub mod ingest;
pub mod limits;
pub mod proto;
pub mod tick_wire;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Server, ServerTlsConfig};
use tonic_health::ServingStatus;
use tracing::{info, warn};

use crate::app::Core;
use crate::config::ServiceConfig;

use self::auth::Authenticator;
use self::connection::TrackedStream;
use self::gate::{Gate, GateLayer};
use self::limits::StreamLimits;

/// HTTP/2 flow-control windows: large enough that a busy ingest stream is
/// not throttled by round trips on loopback or in a data centre.
const STREAM_WINDOW: u32 = 4 << 20;
const CONNECTION_WINDOW: u32 = 16 << 20;

/// Names of the services this server runs, for health and logs.
pub const SERVICE_NAMES: [&str; 3] = [
    proto::ingest_server::SERVICE_NAME,
    proto::alerts_server::SERVICE_NAME,
    proto::rule_admin_server::SERVICE_NAME,
];

/// The security settings of a server, read and checked before it starts:
/// TLS files loaded, the token file read, hashes parsed.
#[derive(Debug)]
pub struct Security {
    tls: Option<ServerTlsConfig>,
    auth: Authenticator,
}

impl Security {
    /// Loads what `config` names.
    ///
    /// # Errors
    /// A TLS file or the token file cannot be read or used; the message
    /// names the key and the file.
    pub fn load(config: &ServiceConfig) -> Result<Self, String> {
        let tls = tls::server_tls_config(&config.tls)?;
        let credentials = config
            .auth
            .credentials()
            .map_err(|problems| problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))?;
        // Fails closed: any credential configured (even a token file that
        // turned out empty) turns auth on.
        let auth = if config.auth.has_credentials() || !credentials.is_empty() {
            Authenticator::new(credentials, config.tls.mutual())
        } else {
            Authenticator::disabled()
        };
        Ok(Security { tls, auth })
    }

    pub fn tls_enabled(&self) -> bool {
        self.tls.is_some()
    }

    pub fn auth_enabled(&self) -> bool {
        self.auth.enabled()
    }
}

/// Serves every service on `listener` until `shutdown` completes, then
/// stops accepting and waits for open streams to end (ingest streams end
/// after their current batch; subscriber streams when the bus closes).
/// Health turns `NOT_SERVING` as shutdown begins.
///
/// # Errors
/// The transport failed.
pub async fn serve(
    core: Arc<Core>,
    listener: TcpListener,
    security: Security,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in SERVICE_NAMES {
        health.set_service_status(name, ServingStatus::Serving).await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| {
            // The descriptor sets are compiled in; failing here is a build fault.
            tracing::error!(error = %e, "Reflection could not be built.");
            e
        })
        .ok();

    let max_message = core.config().max_message_bytes;
    let ingest = ingest::IngestService::new(core.clone());
    let subscribe = alerts::AlertsService::new(core.clone());
    let admin = proto::rule_admin_server::RuleAdminServer::new(admin::AdminService::new(core.clone()))
        .max_decoding_message_size(max_message);

    let token = core.shutdown_token().clone();
    let reporter = health.clone();
    tokio::spawn(async move {
        token.cancelled().await;
        reporter.set_service_status("", ServingStatus::NotServing).await;
        for name in SERVICE_NAMES {
            reporter.set_service_status(name, ServingStatus::NotServing).await;
        }
    });

    let local = listener.local_addr().ok();
    let addr = local.map(|a| a.to_string()).unwrap_or_default();
    let rate = core.config().limits.max_ingest_rate_per_connection;
    let incoming = TcpIncoming::from(listener).map(move |accepted| accepted.map(|io| TrackedStream::new(io, rate)));
    let tls_enabled = security.tls_enabled();
    let auth_enabled = security.auth_enabled();
    if !tls_enabled && local.is_some_and(|a| !a.ip().is_loopback()) {
        warn!(%addr, "Serving plaintext gRPC on a non-loopback address (tls.allow_plaintext_non_loopback).");
    }
    let mut builder = Server::builder();
    if let Some(tls) = security.tls {
        builder = builder.tls_config(tls)?;
    }
    let gate = GateLayer::new(Gate {
        auth: security.auth,
        limits: StreamLimits::new(core.config().limits.clone()),
    });
    let router = builder
        .layer(gate)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(health_service)
        .add_optional_service(reflection)
        .add_service(ingest)
        .add_service(subscribe)
        .add_service(admin);
    info!(
        %addr,
        tls = tls_enabled,
        auth = auth_enabled,
        services = ?SERVICE_NAMES,
        "gRPC server listening."
    );
    let result = router.serve_with_incoming_shutdown(incoming, shutdown).await;
    info!("gRPC server stopped.");
    result
}
