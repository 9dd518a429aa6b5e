//! The gRPC service: a thin layer over the engine and the alert bus. The
//! only module that knows protobuf.
//!
//! - [`ingest`]: `Ingest`, evaluation on the receiving stream's task.
//! - [`alerts`]: `Alerts.Subscribe`, each alert encoded once.
//! - [`admin`]: `RuleAdmin` (list, validate, reload, status).
//! - [`convert`]: the only place proto types meet model types.
//! - [`proto`]: the generated code.
//!
//! [`serve`] adds the standard `grpc.health.v1` health service and server
//! reflection.

pub mod admin;
pub mod alerts;
pub mod convert;
pub mod ingest;
pub mod proto;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tonic_health::ServingStatus;
use tracing::info;

use crate::app::Core;

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
    let ingest = proto::ingest_server::IngestServer::new(ingest::IngestService::new(core.clone()))
        .max_decoding_message_size(max_message);
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

    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let router = Server::builder()
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(health_service)
        .add_optional_service(reflection)
        .add_service(ingest)
        .add_service(subscribe)
        .add_service(admin);
    info!(%addr, services = ?SERVICE_NAMES, "gRPC server listening.");
    let result = router.serve_with_incoming_shutdown(incoming, shutdown).await;
    info!("gRPC server stopped.");
    result
}
