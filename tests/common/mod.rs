//! Test harness: the real service on 127.0.0.1:0 with a temporary rules
//! folder written from strings, and tonic clients for it.
//!
//! ```ignore
//! let server = TestServer::builder().rule_file("crash.toml", CRASH).subscriber_queue(8).start().await;
//! let mut ingest = server.ingest().await;
//! let ack = ingest.send(batch(1, vec![trade("BTC-USDT", 0, 1, "100")])).await;
//! server.shutdown().await;
//! ```
#![allow(dead_code)]

pub mod flaky_proxy;
pub mod http;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod raw_codec;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use airbag::app::{self, Running};
use airbag::config::ServiceConfig;
use airbag::model::Fixed;
use airbag::wire::proto;
use proto::alerts_client::AlertsClient;
use proto::ingest_client::IngestClient;
use proto::rule_admin_client::RuleAdminClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Status, Streaming};

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// An event time well after the epoch: 2023-11-14T22:13:20Z.
pub const T0_NS: i64 = 1_700_000_000_000_000_000;

/// Awaits `f` for at most [`WAIT`], failing the test with `what`.
pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

pub struct Builder {
    files: Vec<(String, String)>,
    config: ServiceConfig,
    /// A rules folder the test built itself, instead of a temporary one.
    folder: Option<PathBuf>,
}

impl Builder {
    pub fn rule_file(mut self, name: &str, text: &str) -> Self {
        self.files.push((name.to_string(), text.to_string()));
        self
    }

    pub fn subscriber_queue(mut self, n: usize) -> Self {
        self.config.subscriber_queue = n;
        self
    }

    pub fn max_batch_ticks(mut self, n: usize) -> Self {
        self.config.max_batch_ticks = n;
        self
    }

    pub fn alert_ring(mut self, n: usize) -> Self {
        self.config.alert_ring = n;
        self
    }

    pub fn configure(mut self, f: impl FnOnce(&mut ServiceConfig)) -> Self {
        f(&mut self.config);
        self
    }

    /// Serves the rules in `dir`, a folder the test laid out itself (say,
    /// as a Kubernetes ConfigMap mount), instead of a temporary folder.
    /// Files given with [`Builder::rule_file`] are written into it too. The
    /// caller keeps `dir` alive while the server runs.
    pub fn rules_folder(mut self, dir: impl Into<PathBuf>) -> Self {
        self.folder = Some(dir.into());
        self
    }

    pub async fn start(self) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let rules_path = self.folder.unwrap_or_else(|| dir.path().to_path_buf());
        for (name, text) in &self.files {
            std::fs::write(rules_path.join(name), text).expect("write rule file");
        }
        let config = ServiceConfig {
            rules: rules_path.clone(),
            ..self.config
        };
        let running = app::start(config).await.expect("server starts");
        TestServer {
            addr: running.grpc_addr(),
            running: Some(running),
            rules_dir: dir,
            rules_path,
        }
    }
}

/// A running service and its rules folder.
pub struct TestServer {
    pub addr: SocketAddr,
    running: Option<Running>,
    rules_dir: tempfile::TempDir,
    /// The folder the server reads: `rules_dir`, or the test's own.
    rules_path: PathBuf,
}

impl TestServer {
    pub fn builder() -> Builder {
        Builder {
            files: Vec::new(),
            folder: None,
            config: ServiceConfig {
                listen: "127.0.0.1:0".parse().expect("addr"),
                metrics_listen: "127.0.0.1:0".parse().expect("addr"),
                timer_interval_ms: 20,
                // Tests reload explicitly; one turns watching on.
                watch_rules: false,
                shutdown_grace_ms: 5_000,
                ..ServiceConfig::default()
            },
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.running().metrics_addr()
    }

    pub fn rules_dir(&self) -> &Path {
        &self.rules_path
    }

    pub fn write_rule(&self, name: &str, text: &str) -> PathBuf {
        let path = self.rules_path.join(name);
        std::fs::write(&path, text).expect("write rule file");
        path
    }

    /// A new connection (each client gets its own, so that a stalled
    /// stream cannot hold up another's flow control).
    pub async fn channel(&self) -> Channel {
        within(
            "connect",
            Endpoint::from_shared(self.url()).expect("endpoint").connect(),
        )
        .await
        .expect("connects")
    }

    pub async fn ingest(&self) -> IngestStream {
        IngestStream::open(IngestClient::new(self.channel().await)).await
    }

    pub async fn subscribe(&self, request: proto::SubscribeRequest) -> Streaming<proto::Alert> {
        self.try_subscribe(request).await.expect("subscribe")
    }

    pub async fn try_subscribe(&self, request: proto::SubscribeRequest) -> Result<Streaming<proto::Alert>, Status> {
        let mut client = AlertsClient::new(self.channel().await);
        let stream = within("subscribe", client.subscribe(request)).await?.into_inner();
        // The subscription is registered before the response headers are
        // sent; nothing to wait for.
        Ok(stream)
    }

    pub async fn admin(&self) -> RuleAdminClient<Channel> {
        RuleAdminClient::new(self.channel().await)
    }

    /// GET /metrics.
    pub async fn metrics_text(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = within("metrics connect", tokio::net::TcpStream::connect(self.metrics_addr()))
            .await
            .expect("metrics connects");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut out = String::new();
        within("metrics read", s.read_to_string(&mut out)).await.expect("read");
        out
    }

    /// Shuts the service down gracefully, within [`WAIT`].
    pub async fn shutdown(mut self) {
        if let Some(running) = self.running.take() {
            within("shutdown", running.shutdown()).await.expect("clean shutdown");
        }
    }

    /// Starts shutting down in the background.
    pub fn begin_shutdown(&mut self) -> tokio::task::JoinHandle<()> {
        let running = self.running.take().expect("running");
        tokio::spawn(async move {
            within("shutdown", running.shutdown()).await.expect("clean shutdown");
        })
    }
}

/// A bidirectional ingest stream: send a batch, read its ack.
pub struct IngestStream {
    tx: Option<mpsc::Sender<proto::TickBatch>>,
    acks: Streaming<proto::IngestAck>,
}

impl IngestStream {
    /// Opens an `Ingest` stream on `client`.
    pub async fn open(mut client: IngestClient<Channel>) -> Self {
        let (tx, rx) = mpsc::channel(64);
        let acks = within("ingest", client.ingest(ReceiverStream::new(rx)))
            .await
            .expect("ingest opens")
            .into_inner();
        IngestStream { tx: Some(tx), acks }
    }

    /// Sends a batch without waiting for its ack.
    pub async fn send_only(&mut self, batch: proto::TickBatch) {
        let tx = self.tx.as_ref().expect("stream open");
        within("send", tx.send(batch)).await.expect("stream accepts");
    }

    /// The next ack, or the status that ended the stream (`Ok(None)`: ended
    /// cleanly).
    pub async fn next_ack(&mut self) -> Result<Option<proto::IngestAck>, Status> {
        within("ack", self.acks.message()).await
    }

    /// Sends a batch and returns its ack.
    pub async fn send(&mut self, batch: proto::TickBatch) -> proto::IngestAck {
        let id = batch.batch_id;
        self.send_only(batch).await;
        let ack = self.next_ack().await.expect("ack").expect("stream open");
        assert_eq!(ack.batch_id, id);
        ack
    }

    /// Ends the client side.
    pub fn close(&mut self) {
        self.tx = None;
    }
}

/// Writes `dir/name` the way careful editors and deploy tools do: the
/// text goes to a hidden temporary file first, which is then renamed over
/// `name`, so a reader sees the old file or the new one, never half of it.
pub fn write_rule_atomically(dir: &Path, name: &str, text: &str) -> PathBuf {
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    std::fs::write(&tmp, text).expect("write temporary rule file");
    std::fs::rename(&tmp, &path).expect("rename rule file into place");
    path
}

/// A wire decimal from text, exactly.
pub fn dec(text: &str) -> proto::Decimal {
    let v = Fixed::parse(text).expect("decimal");
    proto::Decimal {
        mantissa: v.raw(),
        scale: 8,
    }
}

/// A wire decimal as text.
pub fn text_of(d: &proto::Decimal) -> String {
    airbag::ingest::scaled_field("value", d.mantissa, d.scale)
        .expect("representable")
        .to_string()
}

/// A trade at `T0_NS + ms`.
pub fn trade(instrument: &str, ms: i64, seq: u64, price: &str) -> proto::Tick {
    proto::Tick {
        instrument: instrument.to_string(),
        event_time_ns: T0_NS + ms * 1_000_000,
        seq,
        values: Some(proto::tick::Values::Trade(proto::Trade {
            price: Some(dec(price)),
            size: Some(dec("1")),
            side: 0,
        })),
    }
}

pub fn quote(instrument: &str, ms: i64, seq: u64, bid: &str, ask: &str) -> proto::Tick {
    proto::Tick {
        instrument: instrument.to_string(),
        event_time_ns: T0_NS + ms * 1_000_000,
        seq,
        values: Some(proto::tick::Values::Quote(proto::Quote {
            bid: Some(dec(bid)),
            ask: Some(dec(ask)),
            bid_size: Some(dec("1")),
            ask_size: Some(dec("1")),
        })),
    }
}

pub fn batch(batch_id: u64, ticks: Vec<proto::Tick>) -> proto::TickBatch {
    proto::TickBatch { batch_id, ticks }
}

/// The next alert, or panic with the status the stream ended with.
pub async fn next_alert(stream: &mut Streaming<proto::Alert>) -> proto::Alert {
    match within("alert", stream.message()).await {
        Ok(Some(alert)) => alert,
        Ok(None) => panic!("alert stream ended"),
        Err(status) => panic!("alert stream failed: {status:?}"),
    }
}

/// Reads `n` alerts.
pub async fn take_alerts(stream: &mut Streaming<proto::Alert>, n: usize) -> Vec<proto::Alert> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        out.push(next_alert(stream).await);
    }
    out
}

/// Asserts that no alert arrives within `quiet`.
pub async fn assert_quiet(stream: &mut Streaming<proto::Alert>, quiet: Duration) {
    if let Ok(next) = tokio::time::timeout(quiet, stream.message()).await {
        panic!("expected no more alerts, got {next:?}");
    }
}

/// The value named `name` of an alert, as text.
pub fn value(alert: &proto::Alert, name: &str) -> Option<String> {
    alert
        .values
        .iter()
        .find(|v| v.name == name)
        .and_then(|v| v.value.as_ref())
        .map(text_of)
}

/// A drawdown rule.
pub fn drawdown_rule(id: &str, instruments: &str, threshold: &str, severity: &str, actions: &str) -> String {
    format!(
        r#"
[[rule]]
id = "{id}"
kind = "drawdown"
instruments = [{instruments}]
window = "3s"
threshold = "{threshold}"
severity = "{severity}"
actions = [{actions}]
"#
    )
}
