//! `airbag health`: asks a server's standard `grpc.health.v1.Health/Check`
//! and exits 0 when it answers `SERVING`, 1 otherwise (not reachable, not
//! serving, shutting down, no answer in time). For container health checks
//! and exec probes where a gRPC-native probe cannot be used (Docker's
//! `HEALTHCHECK`, a Kubernetes probe against a TLS port).
//!
//! ```text
//! $ airbag health --addr 127.0.0.1:50051
//! SERVING
//! ```
//!
//! Health is open on the server (no token needed); TLS flags apply as for
//! every client command.

use std::time::Duration;

use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::cli::wire;
use crate::cli::DEFAULT_ADDR;

/// `airbag health`: is the server serving?
#[derive(clap::Args, Debug, Clone)]
pub struct HealthArgs {
    /// Server address, `http://host:port` or `host:port`.
    #[arg(long, env = "AIRBAG_ADDR", default_value = DEFAULT_ADDR, value_name = "URL")]
    pub addr: String,
    /// The service to ask about (`airbag.v1.Ingest`, ...); empty: the
    /// server as a whole.
    #[arg(long, default_value = "", value_name = "NAME")]
    pub service: String,
    /// Seconds to wait for the connection and the answer together.
    #[arg(long, default_value_t = 3.0, value_name = "SECONDS")]
    pub timeout: f64,
    #[command(flatten)]
    pub security: wire::ClientSecurity,
}

/// Why the server is not healthy.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error(transparent)]
    Connect(#[from] wire::ConnectError),
    #[error("the health check failed: {0}")]
    Call(String),
    #[error("the server answers {status} for service `{service}`")]
    NotServing { service: String, status: &'static str },
    #[error("no answer from {addr} within {seconds} s")]
    Timeout { addr: String, seconds: f64 },
    #[error("--timeout must be a positive number of seconds, got {0}")]
    BadTimeout(f64),
}

pub async fn run(args: HealthArgs) -> anyhow::Result<()> {
    check(&args).await?;
    println!("SERVING");
    Ok(())
}

/// Connects and asks; `Ok` only for `SERVING`.
///
/// Cancellation-safe: dropping the future abandons the connection.
///
/// # Errors
/// The server cannot be reached, refuses the call, or is not serving.
pub async fn check(args: &HealthArgs) -> Result<(), HealthError> {
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        return Err(HealthError::BadTimeout(args.timeout));
    }
    let limit = Duration::from_secs_f64(args.timeout.min(3600.0));
    let call = async {
        let channel = wire::connect_with(&args.addr, &args.security).await?;
        let mut client = HealthClient::new(channel);
        let answer = client
            .check(HealthCheckRequest {
                service: args.service.clone(),
            })
            .await
            .map_err(|status| HealthError::Call(wire::status_text(&status)))?;
        match answer.into_inner().status() {
            ServingStatus::Serving => Ok(()),
            other => Err(HealthError::NotServing {
                service: args.service.clone(),
                status: other.as_str_name(),
            }),
        }
    };
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(HealthError::Timeout {
            addr: args.addr.clone(),
            seconds: args.timeout,
        }),
    }
}
