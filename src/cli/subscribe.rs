//! `airbag subscribe`: tail the server's alerts as JSON lines.
//!
//! Each alert is one JSON object on one line of stdout, flushed as it
//! arrives, so `airbag subscribe | jq` or a script reading line by line sees
//! it at once:
//!
//! ```text
//! {"seq":1,"rule_id":"btc-flash-crash","ruleset_version":1,"instrument":"BTC-USDT","kind":"fired",
//!  "severity":"critical","actions":["halt"],"mode":"active","event_time_ns":1700000002000000000,
//!  "tick_seq":3,"received_time_ns":...,"emitted_time_ns":...,
//!  "values":{"peak":"65000","peak_age_ms":"2000","price":"59800","change_pct":"-8","threshold_pct":"8"}}
//! ```
//!
//! (one line in reality). `values` keeps the server's order and holds exact
//! decimal strings; `tick_seq` is `null` when a timer raised the alert;
//! `reason` is present only when the server gave one.
//!
//! The stream is meant to run forever: when the server ends it — with a
//! status such as `RESOURCE_EXHAUSTED` for a subscriber that fell behind,
//! or at shutdown — the command fails with the status message, unless
//! `--count` alerts have been printed. With `--retry-for`, it reconnects
//! instead and resumes from the alert after the last one printed (the
//! server replays from its journal), so across disconnects and server
//! restarts every alert is printed once, in sequence order.

use std::io::{self, Write};

use tonic::codec::Streaming;

use crate::alerts::json::AlertJson;
use crate::cli::resume::Backoff;
use crate::cli::wire;
use crate::cli::DEFAULT_ADDR;
use crate::wire::proto;
use crate::wire::proto::alerts_client::AlertsClient;

/// A minimum severity on the command line.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeverityArg {
    Info,
    Warning,
    Critical,
}

impl From<SeverityArg> for proto::Severity {
    fn from(s: SeverityArg) -> Self {
        match s {
            SeverityArg::Info => proto::Severity::Info,
            SeverityArg::Warning => proto::Severity::Warning,
            SeverityArg::Critical => proto::Severity::Critical,
        }
    }
}

/// `airbag subscribe`: print alerts as JSON lines.
#[derive(clap::Args, Debug, Clone)]
pub struct SubscribeArgs {
    /// Server address, `http://host:port` or `host:port`.
    #[arg(long, env = "AIRBAG_ADDR", default_value = DEFAULT_ADDR, value_name = "URL")]
    pub addr: String,
    /// Only alerts at or above this severity.
    #[arg(long, value_enum, value_name = "S")]
    pub min_severity: Option<SeverityArg>,
    /// Only alerts of instruments matching this symbol or glob (`BTC-*`);
    /// repeat for several.
    #[arg(long = "instrument", value_name = "GLOB")]
    pub instruments: Vec<String>,
    /// Only alerts carrying this action (`halt`, `reduce_only`, ...);
    /// repeat for several.
    #[arg(long = "action", value_name = "A")]
    pub actions: Vec<String>,
    /// Only alerts of this rule id; repeat for several.
    #[arg(long = "rule", value_name = "ID")]
    pub rules: Vec<String>,
    /// Also print alerts of rules in shadow mode.
    #[arg(long)]
    pub include_shadow: bool,
    /// Start from this alert sequence number (0: live alerts only).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub from_seq: u64,
    /// Exit successfully after printing this many alerts.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// When the stream ends or the server goes away, reconnect and resume
    /// after the last alert printed, for up to this long without an alert.
    #[arg(long, default_value_t = 0.0, value_name = "SECONDS")]
    pub retry_for: f64,
    #[command(flatten)]
    pub security: wire::ClientSecurity,
}

impl SubscribeArgs {
    /// The subscription these flags ask for.
    pub fn request(&self) -> proto::SubscribeRequest {
        proto::SubscribeRequest {
            instruments: self.instruments.clone(),
            min_severity: self
                .min_severity
                .map_or(proto::Severity::Unspecified, proto::Severity::from) as i32,
            actions: self.actions.clone(),
            rule_ids: self.rules.clone(),
            include_shadow: self.include_shadow,
            from_seq: self.from_seq,
        }
    }
}

/// Why [`tail`] stopped before `count` alerts.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("the server ended the alert stream after {received} alerts: {}", wire::status_text(.status))]
    Ended { received: u64, status: tonic::Status },
    #[error("the server closed the alert stream after {received} alerts")]
    Closed { received: u64 },
    #[error("cannot write alerts: {0}")]
    Output(#[source] io::Error),
    #[error("cannot print an alert from the server: {0}")]
    Unreadable(#[from] wire::WireAlertError),
}

/// Runs `airbag subscribe`.
///
/// # Errors
/// The server cannot be reached or refuses the subscription, or the stream
/// ends before `--count` alerts were printed.
pub async fn run(args: SubscribeArgs) -> anyhow::Result<()> {
    if !(args.retry_for.is_finite() && args.retry_for >= 0.0) {
        anyhow::bail!("--retry-for must be a number of seconds, got {}", args.retry_for);
    }
    if args.retry_for > 0.0 {
        let retry_for = std::time::Duration::from_secs_f64(args.retry_for);
        let (addr, security) = (args.addr.clone(), args.security.clone());
        follow(
            || wire::connect_with(&addr, &security),
            args.request(),
            args.count,
            retry_for,
            &mut io::stdout(),
        )
        .await?;
        return Ok(());
    }
    let channel = wire::connect_with(&args.addr, &args.security).await?;
    let stream = open(channel, args.request())
        .await
        .map_err(|status| anyhow::anyhow!("the server refused the subscription: {}", wire::status_text(&status)))?;
    tail(stream, args.count, &mut io::stdout()).await?;
    Ok(())
}

/// Subscribes. When this returns, the server has registered the
/// subscription: alerts raised from now on will arrive.
///
/// # Errors
/// The status the server answered with.
pub async fn open(
    channel: wire::Connection,
    request: proto::SubscribeRequest,
) -> Result<Streaming<proto::Alert>, tonic::Status> {
    let mut client = AlertsClient::new(channel);
    Ok(client.subscribe(request).await?.into_inner())
}

/// Writes each alert of `stream` to `out` as a JSON line, flushing per
/// line, until `count` alerts (if given) have been written. A closed pipe
/// on `out` (`airbag subscribe | head -1`) ends the tail quietly. Returns
/// the number of alerts written.
///
/// Cancellation-safe: dropping the future drops the subscription; every
/// alert received so far has been written whole.
///
/// # Errors
/// The stream ended (with or without a status) before `count` alerts, or
/// `out` failed.
pub async fn tail<W: Write>(
    mut stream: Streaming<proto::Alert>,
    count: Option<u64>,
    out: &mut W,
) -> Result<u64, TailError> {
    let mut written = 0u64;
    let mut line = Vec::with_capacity(512);
    while count.is_none_or(|c| written < c) {
        match stream.message().await {
            Ok(Some(alert)) => {
                if !write_line(out, &mut line, &alert)? {
                    return Ok(written);
                }
                written += 1;
            }
            Ok(None) => return Err(TailError::Closed { received: written }),
            Err(status) => {
                return Err(TailError::Ended {
                    received: written,
                    status,
                })
            }
        }
    }
    Ok(written)
}

/// Tails alerts like [`tail`], but when the stream ends or fails (or the
/// server cannot be reached), reconnects with `connect` and resumes from
/// the alert after the last one written, until `count` alerts are written
/// or `retry_for` passes without one. An alert at or below the last one
/// written (a resumed stream overlapping) is not written again. Returns
/// how many alerts were written.
///
/// # Errors
/// Writing failed, or the server stayed away for `retry_for`.
pub async fn follow<C, F, W>(
    connect: C,
    mut request: proto::SubscribeRequest,
    count: Option<u64>,
    retry_for: std::time::Duration,
    out: &mut W,
) -> anyhow::Result<u64>
where
    C: Fn() -> F,
    F: std::future::Future<Output = Result<wire::Connection, wire::ConnectError>>,
    W: Write,
{
    let mut written = 0u64;
    let mut last_seq: Option<u64> = None;
    let mut heard_at = std::time::Instant::now();
    let mut backoff = Backoff::default();
    let mut line = Vec::with_capacity(512);
    while count.is_none_or(|c| written < c) {
        if let Some(seq) = last_seq {
            request.from_seq = seq + 1;
        }
        let why = match connect().await {
            Err(e) => e.to_string(),
            Ok(channel) => match open(channel, request.clone()).await {
                Err(status) => wire::status_text(&status),
                Ok(mut stream) => loop {
                    if count.is_some_and(|c| written >= c) {
                        return Ok(written);
                    }
                    match stream.message().await {
                        Ok(Some(alert)) => {
                            heard_at = std::time::Instant::now();
                            backoff.reset();
                            if last_seq.is_some_and(|last| alert.seq <= last) {
                                continue;
                            }
                            last_seq = Some(alert.seq);
                            if !write_line(out, &mut line, &alert)? {
                                return Ok(written);
                            }
                            written += 1;
                        }
                        Ok(None) => break "the server closed the alert stream".to_string(),
                        Err(status) => break wire::status_text(&status),
                    }
                },
            },
        };
        if heard_at.elapsed() >= retry_for {
            anyhow::bail!("no alert for {retry_for:?} and the server is away ({why}); {written} alerts written");
        }
        eprintln!(
            "airbag subscribe: {why}; resuming from alert {} in {} ms",
            last_seq.map_or(request.from_seq, |s| s + 1),
            backoff.current().as_millis()
        );
        backoff.wait().await;
    }
    Ok(written)
}

/// Writes `alert` to `out` as one flushed JSON line (`line` is the
/// reused buffer). `false`: `out` is a closed pipe, stop quietly.
fn write_line<W: Write>(out: &mut W, line: &mut Vec<u8>, alert: &proto::Alert) -> Result<bool, TailError> {
    line.clear();
    write_alert_json(line, alert)?;
    line.push(b'\n');
    match out.write_all(line).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(TailError::Output(e)),
    }
}

/// Appends `alert` as one JSON object (no line end) to `out`: the same
/// object `airbag replay` prints ([`AlertJson`]).
///
/// # Errors
/// An alert this build cannot read ([`wire::alert_of`]); nothing is
/// written.
pub fn write_alert_json(out: &mut Vec<u8>, alert: &proto::Alert) -> Result<(), wire::WireAlertError> {
    let received = wire::alert_of(alert)?;
    AlertJson::from_engine(&received.alert, received.seq, received.received_ns, received.emitted_ns).write_json(out);
    Ok(())
}

/// One alert as JSON, for tests and tools; for an alert this build cannot
/// read, the reason instead (never valid JSON).
pub fn alert_json(alert: &proto::Alert) -> String {
    let mut out = Vec::new();
    match write_alert_json(&mut out, alert) {
        Ok(()) => String::from_utf8_lossy(&out).into_owned(),
        Err(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(name: &str, mantissa: i64, scale: u32) -> proto::AlertValue {
        proto::AlertValue {
            name: name.into(),
            value: Some(proto::Decimal { mantissa, scale }),
        }
    }

    #[test]
    fn alerts_print_as_one_json_object_with_exact_values() {
        let alert = proto::Alert {
            seq: 7,
            rule_id: "btc-flash-crash".into(),
            ruleset_version: 2,
            instrument: "BTC-USDT".into(),
            kind: "fired".into(),
            severity: proto::Severity::Critical as i32,
            actions: vec!["halt".into()],
            mode: "active".into(),
            values: vec![value("peak", 65_000, 0), value("change_pct", -800_000_000, 8)],
            event_time_ns: 1_700_000_002_000_000_000,
            tick_seq: Some(3),
            received_time_ns: 11,
            emitted_time_ns: 12,
            reason: String::new(),
            trigger_instrument: String::new(),
        };
        assert_eq!(
            alert_json(&alert),
            r#"{"seq":7,"rule_id":"btc-flash-crash","ruleset_version":2,"instrument":"BTC-USDT","kind":"fired","severity":"critical","actions":["halt"],"mode":"active","event_time_ns":1700000002000000000,"tick_seq":3,"received_time_ns":11,"emitted_time_ns":12,"values":{"peak":"65000","change_pct":"-8"}}"#
        );
        let timer = proto::Alert {
            tick_seq: None,
            reason: "no tick for 5s".into(),
            values: vec![],
            ..alert
        };
        let json: serde_json::Value = serde_json::from_str(&alert_json(&timer)).unwrap();
        assert_eq!(json["tick_seq"], serde_json::Value::Null);
        assert_eq!(json["reason"], "no tick for 5s");
        assert_eq!(json["values"], serde_json::json!({}));

        // An alert this build cannot read is refused, not guessed at.
        let newer = proto::Alert {
            kind: "melted".into(),
            ..timer
        };
        let mut out = Vec::new();
        assert_eq!(
            write_alert_json(&mut out, &newer).unwrap_err().to_string(),
            "alert 7 has kind `melted`, which this build does not know"
        );
        assert!(out.is_empty());
    }

    #[test]
    fn flags_become_the_request() {
        let args = SubscribeArgs {
            addr: DEFAULT_ADDR.into(),
            min_severity: Some(SeverityArg::Warning),
            instruments: vec!["BTC-*".into()],
            actions: vec!["halt".into()],
            rules: vec!["r1".into()],
            include_shadow: true,
            from_seq: 5,
            count: None,
            retry_for: 0.0,
            security: wire::ClientSecurity::default(),
        };
        let req = args.request();
        assert_eq!(req.min_severity, proto::Severity::Warning as i32);
        assert_eq!(req.instruments, ["BTC-*"]);
        assert_eq!(req.rule_ids, ["r1"]);
        assert!(req.include_shadow);
        assert_eq!(req.from_seq, 5);
    }
}
