//! The console's JSON calls: what the page polls. Each reads the
//! [`Core`](crate::service::Core) as it is now, briefly (a partition lock
//! at a time); none is on the tick path.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::Console;
use crate::alerts::JournalHealth;
use crate::model::Fixed;
use crate::rules::RuleError;

/// Most rows one list call returns.
pub const MAX_ROWS: usize = 5_000;

/// A JSON error body: `{"error": message}`.
pub fn error(code: StatusCode, message: &str) -> Response {
    (code, Json(json!({ "error": message }))).into_response()
}

/// `?limit=N` of a list call.
#[derive(Debug, Default, Deserialize)]
pub struct Limit {
    limit: Option<usize>,
}

impl Limit {
    fn rows(&self, default: usize) -> usize {
        self.limit.unwrap_or(default).clamp(1, MAX_ROWS)
    }
}

/// `GET /api/status`: service health.
pub async fn status(State(console): State<Console>) -> Json<Value> {
    let core = &console.core;
    let m = core.metrics();
    let bus = core.bus().stats();
    let ruleset = core.engine().ruleset();
    let reload = core.reload_status();
    let journal = core.bus().journal_stats().map(|j| {
        json!({
            "healthy": j.health == JournalHealth::Healthy,
            "pending_alerts": j.pending,
            "unjournaled_alerts": j.unjournaled,
            "bytes": j.journal.bytes,
            "segments": j.journal.segments,
            "first_seq": j.journal.first_seq,
        })
    });
    let ms = |ns: u64| ns as f64 / 1e6;
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "now_ns": core.clock().now_ns(),
        "started_ns": core.started_ns(),
        "ticks_received": m.ticks_received.load(Ordering::Relaxed),
        "ticks_applied": m.ticks_applied.load(Ordering::Relaxed),
        "ticks_rejected": m.rejected_total(),
        "batches": m.batches.load(Ordering::Relaxed),
        "last_seq": core.bus().last_seq(),
        "subscribers": bus.subscribers,
        "subscribers_lagged": bus.lagged,
        "instruments": core.engine().instrument_count(),
        "ruleset_version": ruleset.version,
        "rules": ruleset.len(),
        "reload_failed": !reload.last_errors.is_empty(),
        "tick_to_alert_ms": {
            "count": bus.tick_to_alert.len(),
            "p50": ms(bus.tick_to_alert.quantile_ns(0.5)),
            "p99": ms(bus.tick_to_alert.quantile_ns(0.99)),
            "max": ms(bus.tick_to_alert.max_ns()),
        },
        "journal": journal,
    }))
}

fn text(value: Option<Fixed>) -> Value {
    value.map_or(Value::Null, |v| Value::String(v.to_string()))
}

/// `GET /api/instruments?limit=N`: every instrument's last values, in the
/// order they were first seen (at most `limit`, default 1000).
pub async fn instruments(State(console): State<Console>, Query(limit): Query<Limit>) -> Json<Value> {
    let engine = console.core.engine();
    let symbols = engine.instruments().symbols();
    let total = symbols.len();
    let rows: Vec<Value> = symbols
        .iter()
        .take(limit.rows(1_000))
        .filter_map(|symbol| {
            engine.with_state(symbol, |s| {
                json!({
                    "symbol": &**symbol,
                    "last_seq": s.last_seq,
                    "last_event_ns": s.last_event_ns,
                    "last_received_ns": s.last_received_ns,
                    "price": text(s.last.price),
                    "bid": text(s.last.bid),
                    "ask": text(s.last.ask),
                    "mark": text(s.last.mark),
                })
            })
        })
        .collect();
    Json(json!({ "total": total, "instruments": rows }))
}

/// `GET /api/halts?limit=N`: what every rule has in force now: halts,
/// pauses, limit states, conditions fired and not resolved.
pub async fn halts(State(console): State<Console>, Query(limit): Query<Limit>) -> Json<Value> {
    let statuses = console.core.engine().statuses(|_| true);
    let total = statuses.len();
    let rows: Vec<Value> = statuses
        .iter()
        .take(limit.rows(MAX_ROWS))
        .map(|s| {
            json!({
                "instrument": &*s.instrument,
                "trigger_instrument": s.trigger_instrument.as_deref(),
                "rule_id": &*s.rule_id,
                "ruleset_version": s.ruleset_version,
                "kind": s.status.kind.name(),
                "severity": s.status.severity.name(),
                "actions": s.status.actions.iter().map(|a| a.name()).collect::<Vec<_>>(),
                "since_ns": s.status.since_ns,
                "until_ns": s.status.until_ns,
            })
        })
        .collect();
    Json(json!({ "total": total, "in_force": rows }))
}

/// `GET /api/rules`: the ruleset in force, its files, and each rule's
/// alert count since start.
pub async fn rules(State(console): State<Console>) -> Json<Value> {
    let core = &console.core;
    let ruleset = core.engine().ruleset();
    let mut counts: HashMap<&str, u64> = HashMap::new();
    let stats = core.bus().stats();
    for (rule, _, n) in &stats.by_rule {
        *counts.entry(rule).or_default() += n;
    }
    let rules: Vec<Value> = ruleset
        .rules
        .iter()
        .map(|r| {
            json!({
                "id": &*r.id,
                "kind": r.kind_name,
                "severity": r.severity.name(),
                "mode": r.mode.name(),
                "actions": r.actions.iter().map(|a| a.name()).collect::<Vec<_>>(),
                "description": r.description,
                "alerts": counts.get(&*r.id).copied().unwrap_or(0),
            })
        })
        .collect();
    let sources: Vec<Value> = ruleset
        .sources
        .iter()
        .map(|s| json!({ "name": s.name, "sha256": s.sha256 }))
        .collect();
    Json(json!({
        "version": ruleset.version,
        "dir": core.config().rules.display().to_string(),
        "sources": sources,
        "rules": rules,
    }))
}

fn rule_error(e: &RuleError) -> Value {
    json!({
        "file": e.file,
        "line": e.line,
        "column": e.column,
        "message": e.message,
        "text": e.to_string(),
    })
}

/// `GET /api/reload`: the outcome of reloads, and the last one's errors
/// (`file:line:column: message`) if it failed.
pub async fn reload(State(console): State<Console>) -> Json<Value> {
    let r = console.core.reload_status();
    Json(json!({
        "ok": r.last_errors.is_empty(),
        "failures": r.failures,
        "applied": r.outcomes.applied,
        "unchanged": r.outcomes.unchanged,
        "last_ok_ns": r.last_ok_ns,
        "last_failed_ns": r.last_failed_ns,
        "errors": r.last_errors.iter().map(rule_error).collect::<Vec<_>>(),
    }))
}
