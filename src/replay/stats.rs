//! What each rule did during a replay, and the table people read.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use crate::model::{Alert, AlertKind, Mode};
use crate::tick_file::time::format_iso;

/// Every alert kind, in the order of the counts in [`RuleEntry`].
pub const KINDS: [AlertKind; 7] = [
    AlertKind::Fired,
    AlertKind::Resolved,
    AlertKind::Tripped,
    AlertKind::Resumed,
    AlertKind::Rearmed,
    AlertKind::Limit,
    AlertKind::Paused,
];

/// One rule's alerts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleEntry {
    pub mode: Mode,
    /// By kind, in the order of [`KINDS`].
    pub counts: [u64; KINDS.len()],
    /// Event time of the first and last alert.
    pub first_ns: i64,
    pub last_ns: i64,
}

impl RuleEntry {
    pub fn count(&self, kind: AlertKind) -> u64 {
        KINDS.iter().position(|k| *k == kind).map_or(0, |i| self.counts[i])
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Alerts by rule, in rule id order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleStats {
    rules: BTreeMap<Arc<str>, RuleEntry>,
}

impl RuleStats {
    pub fn record(&mut self, alert: &Alert) {
        let entry = self.rules.entry(alert.rule_id.clone()).or_insert(RuleEntry {
            mode: alert.mode,
            counts: [0; KINDS.len()],
            first_ns: alert.event_time_ns,
            last_ns: alert.event_time_ns,
        });
        if let Some(i) = KINDS.iter().position(|k| *k == alert.kind) {
            entry.counts[i] += 1;
        }
        entry.first_ns = entry.first_ns.min(alert.event_time_ns);
        entry.last_ns = entry.last_ns.max(alert.event_time_ns);
    }

    pub fn get(&self, rule_id: &str) -> Option<&RuleEntry> {
        self.rules.get(rule_id)
    }

    /// Rules that raised alerts, by id.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &RuleEntry)> {
        self.rules.iter().map(|(id, e)| (&**id, e))
    }

    /// Alerts of rules in `mode`.
    pub fn total(&self, mode: Mode) -> u64 {
        self.rules
            .values()
            .filter(|e| e.mode == mode)
            .map(RuleEntry::total)
            .sum()
    }

    /// A table of the rules in `mode`: id, count per kind, first and last
    /// alert. Empty when they raised nothing.
    pub fn table(&self, mode: Mode) -> String {
        let rows: Vec<(&str, &RuleEntry)> = self.iter().filter(|(_, e)| e.mode == mode).collect();
        let mut out = String::new();
        if rows.is_empty() {
            return out;
        }
        let width = rows.iter().map(|(id, _)| id.len()).max().unwrap_or(0).max(4);
        let _ = writeln!(out, "  {:width$}  {:<40}  {:<27}  last", "rule", "alerts", "first");
        for (id, e) in rows {
            let kinds: Vec<String> = KINDS
                .iter()
                .zip(e.counts)
                .filter(|(_, n)| *n > 0)
                .map(|(k, n)| format!("{}={n}", k.name()))
                .collect();
            let _ = writeln!(
                out,
                "  {id:width$}  {:<40}  {:<27}  {}",
                kinds.join(" "),
                format_iso(e.first_ns),
                format_iso(e.last_ns)
            );
        }
        out
    }
}
