//! `airbag state`: what is halted, reduce-only, in limit state or otherwise
//! in force right now, since when and by which rule (`Alerts.State`).
//!
//! ```text
//! INSTRUMENT        RULE              KIND     SINCE                           UNTIL                           ACTIONS  TRIGGER
//! BTC-USDT          btc-flash-crash   fired    2024-05-19T13:32:05.123000000Z  -                               halt     -
//! BTC-USDT-SWAP     btc-flash-crash   fired    2024-05-19T13:32:05.123000000Z  -                               halt     BTC-USDT
//! ```
//!
//! With `--json`, one JSON object per line instead.

use std::io::{self, Write};

use serde::Serialize;

use crate::cli::wire;
use crate::cli::DEFAULT_ADDR;
use crate::tick_file::time::format_iso;
use crate::wire::proto;
use crate::wire::proto::alerts_client::AlertsClient;

/// `airbag state`: what rules have in force now.
#[derive(clap::Args, Debug, Clone)]
pub struct StateArgs {
    /// Server address, `http://host:port` or `host:port`.
    #[arg(long, env = "AIRBAG_ADDR", default_value = DEFAULT_ADDR, value_name = "URL")]
    pub addr: String,
    /// Only instruments matching this symbol or glob (`BTC-*`); repeat for
    /// several.
    #[arg(long = "instrument", value_name = "GLOB")]
    pub instruments: Vec<String>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub security: wire::ClientSecurity,
}

/// One row as JSON.
#[derive(Serialize)]
struct Row<'a> {
    instrument: &'a str,
    rule_id: &'a str,
    ruleset_version: u64,
    kind: &'a str,
    severity: &'a str,
    actions: &'a [String],
    since_time_ns: i64,
    until_time_ns: Option<i64>,
    #[serde(skip_serializing_if = "str::is_empty")]
    trigger_instrument: &'a str,
}

pub async fn run(args: StateArgs) -> anyhow::Result<()> {
    let channel = wire::connect_with(&args.addr, &args.security).await?;
    let state = fetch(channel, args.instruments.clone())
        .await
        .map_err(|status| anyhow::anyhow!("the server refused the state call: {}", wire::status_text(&status)))?;
    let mut out = io::stdout().lock();
    if args.json {
        write_json(&state, &mut out)?;
    } else {
        write_table(&state, &mut out)?;
    }
    Ok(())
}

/// Asks the server what is in force on `instruments` (all when empty).
///
/// # Errors
/// The status the server answered with.
pub async fn fetch<T>(channel: T, instruments: Vec<String>) -> Result<proto::StateResponse, tonic::Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let mut client = AlertsClient::new(channel);
    Ok(client.state(proto::StateRequest { instruments }).await?.into_inner())
}

fn severity_name(code: i32) -> &'static str {
    match proto::Severity::try_from(code) {
        Ok(proto::Severity::Info) => "info",
        Ok(proto::Severity::Warning) => "warning",
        Ok(proto::Severity::Critical) => "critical",
        _ => "unspecified",
    }
}

/// The state as JSON lines.
///
/// # Errors
/// Writing to `out` failed.
pub fn write_json(state: &proto::StateResponse, out: &mut impl Write) -> io::Result<()> {
    for s in &state.states {
        let row = Row {
            instrument: &s.instrument,
            rule_id: &s.rule_id,
            ruleset_version: s.ruleset_version,
            kind: &s.kind,
            severity: severity_name(s.severity),
            actions: &s.actions,
            since_time_ns: s.since_time_ns,
            until_time_ns: s.until_time_ns,
            trigger_instrument: &s.trigger_instrument,
        };
        serde_json::to_writer(&mut *out, &row)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// The state as an aligned table, or a line saying nothing is in force.
///
/// # Errors
/// Writing to `out` failed.
pub fn write_table(state: &proto::StateResponse, out: &mut impl Write) -> io::Result<()> {
    if state.states.is_empty() {
        return writeln!(out, "Nothing in force (as of alert {}).", state.last_alert_seq);
    }
    let rows: Vec<[String; 7]> = state
        .states
        .iter()
        .map(|s| {
            [
                s.instrument.clone(),
                s.rule_id.clone(),
                s.kind.clone(),
                format_iso(s.since_time_ns),
                s.until_time_ns.map_or_else(|| "-".to_string(), format_iso),
                if s.actions.is_empty() {
                    "-".to_string()
                } else {
                    s.actions.join(",")
                },
                if s.trigger_instrument.is_empty() {
                    "-".to_string()
                } else {
                    s.trigger_instrument.clone()
                },
            ]
        })
        .collect();
    let header = ["INSTRUMENT", "RULE", "KIND", "SINCE", "UNTIL", "ACTIONS", "TRIGGER"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[&str], out: &mut dyn Write| -> io::Result<()> {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}  "));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(&header, out)?;
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cells, out)?;
    }
    out.flush()
}
