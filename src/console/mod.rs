//! The web console: a page for the risk desk and the SRE, served by
//! `airbag serve` on its own HTTP address (`[console] listen`, off unless
//! set; loopback only unless `allow_non_loopback`).
//!
//! - `/`, `/console.js`, `/console.css`: the page, embedded in the binary
//!   (`include_str!`: no build step, nothing fetched from elsewhere).
//! - [`api`]: JSON under `/api/`: service health, the instruments, what is
//!   in force (the halt board), the ruleset and the last reload.
//! - [`feed`]: `/api/alerts`, the live alert feed as Server-Sent Events,
//!   read from the alert log by an [`AlertReader`](crate::alerts::AlertReader)
//!   that catches up rather than being cut off; resumes from `from_seq` or
//!   the `Last-Event-ID` a reconnecting client sends.
//!
//! With credentials configured (`[auth]`), every `/api/` request needs
//! `Authorization: Bearer <token>` with role `subscribe`, checked by the
//! same [`Credentials`] as gRPC (reloaded with them); the page itself is
//! open and asks for the token. The console only reads: nothing here
//! changes the service.

pub mod api;
pub mod feed;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::auth::Role;
use crate::server::auth::Credentials;
use crate::service::Core;

/// What every handler shares.
#[derive(Clone)]
pub struct Console {
    core: Arc<Core>,
    credentials: Credentials,
}

/// A console that is serving.
#[derive(Debug)]
pub struct Serving {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Serving {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits (at most `grace`) for the server to finish once its stop
    /// token is cancelled; then aborts it.
    pub async fn stopped(mut self, grace: Duration) {
        if tokio::time::timeout(grace, &mut self.task).await.is_err() {
            warn!("Console connections still open at the end of the grace period; closing them.");
            self.task.abort();
        }
    }
}

/// Binds `[console] listen`, if set, and serves the console until `stop`
/// is cancelled. Alert feeds end when the bus closes (with an `end`
/// event), before `stop`.
///
/// # Errors
/// The address cannot be bound (with the address).
pub async fn start(
    core: &Arc<Core>,
    credentials: &Credentials,
    stop: &CancellationToken,
) -> Result<Option<Serving>, (SocketAddr, std::io::Error)> {
    let Some(at) = core.config().console.listen else {
        return Ok(None);
    };
    let listener = TcpListener::bind(at).await.map_err(|e| (at, e))?;
    let addr = listener.local_addr().map_err(|e| (at, e))?;
    let app = router(Console {
        core: core.clone(),
        credentials: credentials.clone(),
    });
    let stop = stop.clone();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
        if let Err(error) = served {
            warn!(%error, "The console server failed.");
        }
    });
    info!(%addr, "Console listening.");
    Ok(Some(Serving { addr, task }))
}

/// Every route of the console.
pub fn router(console: Console) -> Router {
    let api = Router::new()
        .route("/api/status", get(api::status))
        .route("/api/instruments", get(api::instruments))
        .route("/api/halts", get(api::halts))
        .route("/api/rules", get(api::rules))
        .route("/api/reload", get(api::reload))
        .route("/api/alerts", get(feed::alerts))
        .route_layer(middleware::from_fn_with_state(console.clone(), authorize));
    Router::new()
        .route("/", get(|| asset(INDEX_HTML, "text/html; charset=utf-8")))
        .route(
            "/console.js",
            get(|| asset(CONSOLE_JS, "text/javascript; charset=utf-8")),
        )
        .route("/console.css", get(|| asset(CONSOLE_CSS, "text/css; charset=utf-8")))
        .merge(api)
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(console)
}

const INDEX_HTML: &str = include_str!("assets/index.html");
const CONSOLE_JS: &str = include_str!("assets/console.js");
const CONSOLE_CSS: &str = include_str!("assets/console.css");

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

/// With auth on, an `/api/` request needs a bearer token with role
/// `subscribe`: 401 without a known one, 403 without the role.
async fn authorize(State(console): State<Console>, request: Request, next: Next) -> Response {
    let authenticator = console.credentials.current();
    if authenticator.enabled() {
        let path = request.uri().path().to_string();
        if let Err(status) = authenticator.authorize(request.headers(), None, Role::Subscribe, &path) {
            let code = if status.code() == tonic::Code::PermissionDenied {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::UNAUTHORIZED
            };
            return api::error(code, status.message());
        }
    }
    drop(authenticator);
    next.run(request).await
}
