//! The gRPC service: a thin layer over the engine and the alert bus. The
//! only module that knows protobuf.
//!
//! - [`ingest`]: `Ingest`, evaluation on the receiving stream's task; its
//!   messages read and written by hand ([`crate::wire::tick_wire`],
//!   [`crate::wire::ack_wire`]).
//! - [`alerts`]: `Alerts.Subscribe`, each alert encoded once.
//! - [`admin`]: `RuleAdmin` (list, validate, reload, status).
//!
//! Security, in front of the services (which know nothing of it):
//!
//! - [`gate`]: the tower layer every request passes: [`auth`] (who may
//!   call what) and [`limits`] (stream counts, ingest rate).
//! - [`tls`]: TLS and mutual TLS on the port.
//! - [`connection`]: per-connection state carried with each request.
//!
//! [`serve`] adds the standard `grpc.health.v1` health service and server
//! reflection, both `grpc.reflection.v1` and `v1alpha` (all open to every
//! caller).

pub mod admin;
pub mod alerts;
pub mod auth;
pub mod connection;
pub mod gate;
pub mod ingest;
pub mod limits;
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

use crate::config::{ConfigProblem, ServiceConfig};
use crate::service::Core;
use crate::wire::proto;

use self::auth::{Authenticator, Credentials};
use self::connection::PortSettings;
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
    auth: Credentials,
}

/// Why the security settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The credentials (tokens, the token file, certificate subjects),
    /// every problem found.
    #[error("{}", list_problems(.0))]
    Credentials(Vec<ConfigProblem>),
}

fn list_problems(problems: &[ConfigProblem]) -> String {
    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl Security {
    /// Loads what `config` names.
    ///
    /// # Errors
    /// A TLS file or the token file cannot be read or used; the error
    /// names the key and the file.
    pub fn load(config: &ServiceConfig) -> Result<Self, SecurityError> {
        let tls = tls::server_tls_config(&config.tls)?;
        let credentials = config.auth.credentials().map_err(SecurityError::Credentials)?;
        // Fails closed: any credential configured (even a token file that
        // turned out empty) turns auth on.
        let auth = if config.auth.has_credentials() || !credentials.is_empty() {
            Authenticator::new(credentials, config.tls.mutual())
        } else {
            Authenticator::disabled()
        };
        let auth = Credentials::new(auth, config.auth.clone(), config.tls.mutual());
        Ok(Security { tls, auth })
    }

    /// The credentials in force, to reload them (see [`Credentials`]).
    pub fn credentials(&self) -> Credentials {
        self.auth.clone()
    }

    pub fn tls_enabled(&self) -> bool {
        self.tls.is_some()
    }

    pub fn auth_enabled(&self) -> bool {
        self.auth.current().enabled()
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
    // Both reflection versions: grpcurl and grpcio-reflection before their
    // v1 support speak v1alpha.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // The descriptor sets are compiled in; failing here is a build fault.
    let built = |e: tonic_reflection::server::Error| {
        tracing::error!(error = %e, "Reflection could not be built.");
        e
    };
    let reflection = reflection_builder().build_v1().map_err(built).ok();
    let reflection_v1alpha = reflection_builder().build_v1alpha().map_err(built).ok();

    let max_message = core.config().max_message_bytes;
    let ingest = ingest::IngestService::new(core.clone());
    let subscribe = alerts::AlertsService::new(core.clone());
    let admin = proto::rule_admin_server::RuleAdminServer::new(
        admin::AdminService::new(core.clone()).with_credentials(security.credentials()),
    )
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
    let limits = &core.config().limits;
    let tls_enabled = security.tls_enabled();
    let port = Arc::new(PortSettings {
        open: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        max_connections: usize::try_from(limits.max_connections).unwrap_or(usize::MAX),
        idle_timeout: Some(Duration::from_millis(limits.idle_timeout_ms)),
        ingest_rate_per_second: limits.max_ingest_rate_per_connection,
        tls: tls_enabled,
        refusals: core.refusals().clone(),
    });
    let incoming = TcpIncoming::from(listener).filter_map(move |accepted| match accepted {
        Ok(io) => port.accept(io).map(Ok),
        Err(e) => Some(Err(e)),
    });
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
        refusals: core.refusals().clone(),
    });
    let router = builder
        .layer(gate)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(health_service)
        .add_optional_service(reflection)
        .add_optional_service(reflection_v1alpha)
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
