//! Connecting to a server (plaintext or TLS, with a bearer token or a
//! client certificate) and converting between the client's values and
//! their proto form.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use std::borrow::Cow;
use std::sync::Arc;

use crate::model::{Action, Alert, AlertKind, AlertValue, Fixed, FixedError, Mode, Severity, Side, TickValues};
use crate::tick_file::TickRecord;
use crate::wire::proto;

/// How long [`connect`] waits for the TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// HTTP/2 flow-control windows: large enough that a stream of tick batches
/// is not throttled by window updates on loopback.
const STREAM_WINDOW: u32 = 4 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 8 * 1024 * 1024;

/// How a client proves who it is and checks the server: the flags every
/// client command shares. TLS is on with `https://` addresses and
/// whenever a `--tls-*` flag is given.
#[derive(clap::Args, Clone, Default)]
pub struct ClientSecurity {
    /// Bearer token sent as `authorization` metadata. Prefer the
    /// environment variable: a flag shows in the process list.
    #[arg(long, env = "AIRBAG_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// CA certificate (PEM) to verify the server's certificate against;
    /// without it, TLS uses the system's trusted roots.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// The name the server's certificate must carry, when it is not the
    /// host in the address.
    #[arg(long, value_name = "NAME")]
    pub tls_domain: Option<String>,
}

impl std::fmt::Debug for ClientSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSecurity")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_domain", &self.tls_domain)
            .finish()
    }
}

impl ClientSecurity {
    /// With a bearer token only.
    pub fn token(token: impl Into<String>) -> Self {
        ClientSecurity {
            token: Some(token.into()),
            ..ClientSecurity::default()
        }
    }

    fn wants_tls(&self) -> bool {
        self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_key.is_some() || self.tls_domain.is_some()
    }
}

/// Adds the bearer token to every call.
#[derive(Clone, Default)]
pub struct Credentials {
    authorization: Option<MetadataValue<Ascii>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &self.authorization.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.authorization {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// A connection to a server: one HTTP/2 channel that sends the
/// credentials with every call.
pub type Connection = InterceptedService<Channel, Credentials>;

/// A server to connect to, with the TLS settings and credentials to use:
/// files are read once, connections made as often as needed.
#[derive(Clone, Debug)]
pub struct Target {
    url: String,
    endpoint: Endpoint,
    credentials: Credentials,
}

impl Target {
    /// Checks the address and reads the TLS files.
    ///
    /// # Errors
    /// The address does not parse, a file cannot be read, or the token
    /// cannot be sent as metadata.
    pub fn new(addr: &str, security: &ClientSecurity) -> Result<Self, ConnectError> {
        let tls = security.wants_tls() || addr.starts_with("https://");
        let mut url = normalize_addr(addr);
        if tls {
            if let Some(rest) = url.strip_prefix("http://") {
                url = format!("https://{rest}");
            }
        }
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|source| ConnectError::BadAddress {
                addr: addr.to_owned(),
                source,
            })?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW);
        if tls {
            endpoint = endpoint
                .tls_config(client_tls(security)?)
                .map_err(|source| ConnectError::Tls {
                    what: "the TLS settings".into(),
                    message: error_chain(&source),
                })?;
        }
        let authorization = match &security.token {
            Some(token) => {
                let mut value =
                    MetadataValue::try_from(format!("Bearer {}", token.trim())).map_err(|_| ConnectError::BadToken)?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(Target {
            url,
            endpoint,
            credentials: Credentials { authorization },
        })
    }

    /// The URL connected to (`https://` when TLS is on).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Opens one HTTP/2 connection, with TCP_NODELAY and large
    /// flow-control windows.
    ///
    /// Cancellation-safe: dropping the future abandons the attempt.
    ///
    /// # Errors
    /// The connection (or the TLS handshake) cannot be made within
    /// [`CONNECT_TIMEOUT`].
    pub async fn connect(&self) -> Result<Connection, ConnectError> {
        let channel = self
            .endpoint
            .connect()
            .await
            .map_err(|source| ConnectError::Unreachable {
                addr: self.url.clone(),
                source,
            })?;
        Ok(InterceptedService::new(channel, self.credentials.clone()))
    }
}

use crate::server::tls::error_chain;

fn client_tls(security: &ClientSecurity) -> Result<ClientTlsConfig, ConnectError> {
    let read = |what: &str, path: &Path| {
        std::fs::read(path).map_err(|e| ConnectError::Tls {
            what: format!("{what} {}", path.display()),
            message: e.to_string(),
        })
    };
    let mut tls = ClientTlsConfig::new();
    tls = match &security.tls_ca {
        Some(ca) => tls.ca_certificate(Certificate::from_pem(read("--tls-ca", ca)?)),
        None => tls.with_enabled_roots(),
    };
    if let (Some(cert), Some(key)) = (&security.tls_cert, &security.tls_key) {
        tls = tls.identity(Identity::from_pem(read("--tls-cert", cert)?, read("--tls-key", key)?));
    }
    if let Some(domain) = &security.tls_domain {
        tls = tls.domain_name(domain.clone());
    }
    Ok(tls)
}

/// Why [`connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("`{addr}` is not a valid server address: {source}")]
    BadAddress {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot use {what}: {message}")]
    Tls { what: String, message: String },
    #[error("the token cannot be sent as gRPC metadata: it must be printable ASCII")]
    BadToken,
    #[error("cannot connect to {addr}: {source}")]
    Unreachable {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// `host:port` becomes `http://host:port`; a URL is kept.
pub fn normalize_addr(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}

/// Opens one HTTP/2 connection to `addr` (`http://host:port` or
/// `host:port`) without credentials; see [`connect_with`].
///
/// # Errors
/// As [`connect_with`].
pub async fn connect(addr: &str) -> Result<Connection, ConnectError> {
    connect_with(addr, &ClientSecurity::default()).await
}

/// Opens one HTTP/2 connection to `addr` with `security`'s TLS settings
/// and token, TCP_NODELAY and large flow-control windows.
///
/// Cancellation-safe: dropping the future abandons the attempt.
///
/// # Errors
/// The address does not parse, a TLS file cannot be read, or the
/// connection cannot be made within [`CONNECT_TIMEOUT`].
pub async fn connect_with(addr: &str, security: &ClientSecurity) -> Result<Connection, ConnectError> {
    Target::new(addr, security)?.connect().await
}

/// The wire form of a [`crate::model::Fixed`] with the smallest scale that holds it
/// exactly, as the server writes it.
pub use crate::wire::convert::decimal_of as decimal;

/// The exact decimal text of a wire decimal, for any mantissa and scale:
/// `{-800000000, 8}` is `-8`, `{5, 3}` is `0.005`. Trailing fractional
/// zeros are dropped.
pub fn decimal_text(d: &proto::Decimal) -> String {
    let digits = d.mantissa.unsigned_abs().to_string();
    let scale = d.scale as usize;
    let mut out = String::with_capacity(digits.len() + scale + 3);
    if d.mantissa < 0 {
        out.push('-');
    }
    if scale == 0 {
        out.push_str(&digits);
        return out;
    }
    let (int, frac) = if digits.len() > scale {
        digits.split_at(digits.len() - scale)
    } else {
        ("", digits.as_str())
    };
    if int.is_empty() {
        out.push('0');
    } else {
        out.push_str(int);
    }
    let frac_zeros = scale - frac.len();
    let frac_digits = frac.trim_end_matches('0');
    if !frac_digits.is_empty() {
        out.push('.');
        for _ in 0..frac_zeros {
            out.push('0');
        }
        out.push_str(frac_digits);
    }
    if out == "-0" {
        out.remove(0);
    }
    out
}

/// The proto form of a tick read from a file.
pub fn tick(record: &TickRecord) -> proto::Tick {
    let values = match record.values {
        TickValues::Trade { price, size, side } => proto::tick::Values::Trade(proto::Trade {
            price: Some(decimal(price)),
            size: Some(decimal(size)),
            side: match side {
                None => proto::Side::Unspecified,
                Some(Side::Buy) => proto::Side::Buy,
                Some(Side::Sell) => proto::Side::Sell,
            } as i32,
        }),
        TickValues::Quote {
            bid,
            ask,
            bid_size,
            ask_size,
        } => proto::tick::Values::Quote(proto::Quote {
            bid: Some(decimal(bid)),
            ask: Some(decimal(ask)),
            bid_size: Some(decimal(bid_size)),
            ask_size: Some(decimal(ask_size)),
        }),
        TickValues::Mark { price } => proto::tick::Values::Mark(proto::Price {
            price: Some(decimal(price)),
        }),
        TickValues::Index { price } => proto::tick::Values::Index(proto::Price {
            price: Some(decimal(price)),
        }),
    };
    proto::Tick {
        instrument: record.instrument.to_string(),
        event_time_ns: record.event_time_ns,
        seq: record.seq,
        values: Some(values),
    }
}

/// An alert as a subscriber received it, in the model's terms: what
/// [`crate::alerts::json::AlertJson`] prints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedAlert {
    pub seq: u64,
    pub alert: Alert,
    pub received_ns: i64,
    pub emitted_ns: i64,
}

/// Why an alert received from a server cannot be read by this build (a
/// newer server's kind, or a value no server of ours sends).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireAlertError {
    #[error("alert {seq} has kind `{kind}`, which this build does not know")]
    Kind { seq: u64, kind: String },
    #[error("alert {seq} has mode `{mode}`, which this build does not know")]
    Mode { seq: u64, mode: String },
    #[error("alert {seq} has severity {severity}, which this build does not know")]
    Severity { seq: u64, severity: i32 },
    #[error("alert {seq}: value `{name}` has no number")]
    MissingValue { seq: u64, name: String },
    #[error("alert {seq}: value `{name}` {reason}")]
    Value {
        seq: u64,
        name: String,
        #[source]
        reason: FixedError,
    },
}

/// A wire alert as the model's alert, every value converted exactly.
///
/// # Errors
/// A kind, mode or severity this build does not know, or a value that is
/// missing or not representable.
pub fn alert_of(a: &proto::Alert) -> Result<ReceivedAlert, WireAlertError> {
    let seq = a.seq;
    let kind = AlertKind::from_name(&a.kind).ok_or_else(|| WireAlertError::Kind {
        seq,
        kind: a.kind.clone(),
    })?;
    let mode = Mode::from_name(&a.mode).ok_or_else(|| WireAlertError::Mode {
        seq,
        mode: a.mode.clone(),
    })?;
    let severity = match proto::Severity::try_from(a.severity) {
        Ok(proto::Severity::Info) => Severity::Info,
        Ok(proto::Severity::Warning) => Severity::Warning,
        Ok(proto::Severity::Critical) => Severity::Critical,
        _ => {
            return Err(WireAlertError::Severity {
                seq,
                severity: a.severity,
            })
        }
    };
    let values = a
        .values
        .iter()
        .map(|v| {
            let d = v.value.as_ref().ok_or_else(|| WireAlertError::MissingValue {
                seq,
                name: v.name.clone(),
            })?;
            let value = Fixed::from_scaled(d.mantissa, d.scale).map_err(|reason| WireAlertError::Value {
                seq,
                name: v.name.clone(),
                reason,
            })?;
            Ok(AlertValue {
                name: Cow::Owned(v.name.clone()),
                value,
            })
        })
        .collect::<Result<_, _>>()?;
    let alert = Alert {
        rule_id: Arc::from(a.rule_id.as_str()),
        ruleset_version: a.ruleset_version,
        instrument: Arc::from(a.instrument.as_str()),
        kind,
        severity,
        actions: a.actions.iter().map(|name| Action::from_name(name)).collect(),
        mode,
        values,
        event_time_ns: a.event_time_ns,
        tick_seq: a.tick_seq,
        reason: (!a.reason.is_empty()).then(|| Cow::Owned(a.reason.clone())),
        trigger_instrument: (!a.trigger_instrument.is_empty()).then(|| Arc::from(a.trigger_instrument.as_str())),
    };
    Ok(ReceivedAlert {
        seq,
        alert,
        received_ns: a.received_time_ns,
        emitted_ns: a.emitted_time_ns,
    })
}

/// The lower-case name of a wire severity (`critical`), or `unspecified`.
pub fn severity_name(severity: i32) -> &'static str {
    match proto::Severity::try_from(severity) {
        Ok(proto::Severity::Info) => "info",
        Ok(proto::Severity::Warning) => "warning",
        Ok(proto::Severity::Critical) => "critical",
        _ => "unspecified",
    }
}

/// `1234567` as `1,234,567`, for tables people read.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Formats a status for people: code and message.
pub fn status_text(status: &tonic::Status) -> String {
    let mut out = String::new();
    let _ = write!(out, "{:?}", status.code());
    if !status.message().is_empty() {
        let _ = write!(out, ": {}", status.message());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Fixed;

    fn d(mantissa: i64, scale: u32) -> proto::Decimal {
        proto::Decimal { mantissa, scale }
    }

    #[test]
    fn decimals_round_trip_with_minimal_scale() {
        for text in [
            "65000.5",
            "0.00000001",
            "-8",
            "0",
            "100",
            "-0.25",
            "92233720368.54775807",
        ] {
            let wire = decimal(Fixed::parse(text).unwrap());
            assert_eq!(decimal_text(&wire), text);
            assert_eq!(
                Fixed::from_scaled(wire.mantissa, wire.scale).unwrap(),
                Fixed::parse(text).unwrap()
            );
        }
        assert_eq!(decimal(Fixed::parse("65000.5").unwrap()), d(650_005, 1));
        assert_eq!(decimal(Fixed::parse("100").unwrap()), d(100, 0));
    }

    #[test]
    fn decimal_text_handles_any_scale() {
        assert_eq!(decimal_text(&d(-800_000_000, 8)), "-8");
        assert_eq!(decimal_text(&d(5, 3)), "0.005");
        assert_eq!(decimal_text(&d(-5, 3)), "-0.005");
        assert_eq!(decimal_text(&d(12345, 2)), "123.45");
        assert_eq!(decimal_text(&d(1, 20)), "0.00000000000000000001");
        assert_eq!(decimal_text(&d(0, 4)), "0");
        assert_eq!(decimal_text(&d(i64::MIN, 0)), "-9223372036854775808");
        assert_eq!(decimal_text(&d(1200, 2)), "12");
    }

    #[test]
    fn formats_for_people() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(normalize_addr("127.0.0.1:1"), "http://127.0.0.1:1");
        assert_eq!(normalize_addr("https://x:1"), "https://x:1");
        assert_eq!(severity_name(3), "critical");
        assert_eq!(severity_name(42), "unspecified");
    }
}
