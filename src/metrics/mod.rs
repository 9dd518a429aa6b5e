//! Metrics: counters and latency histograms, and their Prometheus text
//! exposition on a separate HTTP port.
//!
//! - [`IngestMetrics`]: what the ingest path counts. Atomics, added once per
//!   batch, never per tick; the evaluation histograms are sharded so that
//!   streams rarely share a lock.
//! - [`latency`]: HdrHistogram with an explicit maximum, clamping values
//!   above it and counting them as outliers; exported as summaries.
//! - [`Exposition`]: writes the text format.
//! - [`http`]: the `/metrics` endpoint.
//! - [`refusals`]: requests and connections refused, by reason.
//!
//! No metric is labelled by instrument: the number of instruments is
//! unbounded, and a label per instrument would be a time series per
//! instrument.

pub mod http;
pub mod latency;
pub mod refusals;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ingest::{RejectCode, RejectCounts};

pub use latency::{Latency, ShardedLatency, QUANTILES};
pub use refusals::{Refusal, Refusals};

/// Largest evaluation time recorded exactly: 10 s for a batch.
pub const EVAL_MAX_NS: u64 = 10_000_000_000;
/// Largest tick-to-alert latency recorded exactly: 60 s.
pub const TICK_TO_ALERT_MAX_NS: u64 = 60_000_000_000;

/// Counters and histograms of the ingest path.
#[derive(Debug)]
pub struct IngestMetrics {
    pub ticks_received: AtomicU64,
    pub ticks_applied: AtomicU64,
    pub batches: AtomicU64,
    rejected: [AtomicU64; RejectCode::COUNT],
    /// Evaluation time of one batch, ns.
    pub batch_eval: ShardedLatency,
    /// Evaluation time per tick (a batch's time over its tick count), ns.
    pub tick_eval: ShardedLatency,
}

impl Default for IngestMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl IngestMetrics {
    /// Shards of each evaluation histogram; 2 significant figures keep each
    /// shard near 20 KiB.
    pub const SHARDS: usize = 8;

    pub fn new() -> Self {
        IngestMetrics {
            ticks_received: AtomicU64::new(0),
            ticks_applied: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            rejected: Default::default(),
            batch_eval: ShardedLatency::new(Self::SHARDS, EVAL_MAX_NS, 2),
            tick_eval: ShardedLatency::new(Self::SHARDS, EVAL_MAX_NS, 2),
        }
    }

    /// Adds one batch's counts.
    pub fn record_batch(&self, shard: usize, received: u64, applied: u64, rejected: &RejectCounts, eval_ns: u64) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.ticks_received.fetch_add(received, Ordering::Relaxed);
        if applied > 0 {
            self.ticks_applied.fetch_add(applied, Ordering::Relaxed);
        }
        for (counter, &n) in self.rejected.iter().zip(&rejected.0) {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
        if let Some(per_tick) = eval_ns.checked_div(received) {
            self.batch_eval.record(shard, eval_ns);
            self.tick_eval.record(shard, per_tick);
        }
    }

    /// Rejections so far, by code.
    pub fn rejected(&self) -> RejectCounts {
        RejectCounts(std::array::from_fn(|i| self.rejected[i].load(Ordering::Relaxed)))
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected().total()
    }
}

/// Prometheus text format (version 0.0.4) being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn new() -> Self {
        Self::default()
    }

    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    pub fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.header(name, help, "counter");
        let _ = writeln!(self.out, "{name} {value}");
    }

    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.header(name, help, "gauge");
        let _ = writeln!(self.out, "{name} {value}");
    }

    /// A counter family; each sample is `(labels, value)` with labels as
    /// `(name, value)` pairs, escaped here.
    pub fn counter_family<'a>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (&'a [(&'a str, &'a str)], u64)>,
    ) {
        self.header(name, help, "counter");
        for (labels, value) in samples {
            let _ = writeln!(self.out, "{name}{} {value}", label_set(labels));
        }
    }

    /// A gauge family, as [`Exposition::counter_family`].
    pub fn gauge_family<'a>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (&'a [(&'a str, &'a str)], f64)>,
    ) {
        self.header(name, help, "gauge");
        for (labels, value) in samples {
            let _ = writeln!(self.out, "{name}{} {value}", label_set(labels));
        }
    }

    /// A summary in seconds from a histogram in nanoseconds, with the
    /// count of clamped outliers as `<name>_outliers_total`.
    pub fn summary_seconds(&mut self, name: &str, help: &str, latency: &Latency) {
        self.header(name, help, "summary");
        for q in QUANTILES {
            let v = if latency.is_empty() {
                0.0
            } else {
                ns_to_s(latency.quantile_ns(q))
            };
            let _ = writeln!(self.out, "{name}{{quantile=\"{q}\"}} {v}");
        }
        let max = if latency.is_empty() {
            0.0
        } else {
            ns_to_s(latency.max_ns())
        };
        let _ = writeln!(self.out, "{name}{{quantile=\"1\"}} {max}");
        let _ = writeln!(self.out, "{name}_sum {}", latency.sum_ns() / 1e9);
        let _ = writeln!(self.out, "{name}_count {}", latency.len());
        self.counter(
            &format!("{name}_outliers_total"),
            "Values above the histogram's maximum, recorded as the maximum.",
            latency.outliers(),
        );
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn ns_to_s(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn label_set(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let mut s = String::from("{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(s, "{k}=\"");
        for c in v.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '"' => s.push_str("\\\""),
                '\n' => s.push_str("\\n"),
                c => s.push(c),
            }
        }
        s.push('"');
    }
    s.push('}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_text_format() {
        let m = IngestMetrics::new();
        let mut rejected = RejectCounts::default();
        rejected.add(RejectCode::Duplicate);
        rejected.add(RejectCode::Duplicate);
        m.record_batch(0, 10, 8, &rejected, 5_000);
        let mut e = Exposition::new();
        e.counter("airbag_ticks_received_total", "Ticks received.", 10);
        e.counter_family(
            "airbag_alerts_total",
            "Alerts.",
            [(&[("rule", "a\"b"), ("severity", "critical")][..], 3)],
        );
        e.summary_seconds("airbag_eval_seconds", "Eval.", &m.batch_eval.snapshot());
        let text = e.finish();
        assert!(text.contains("airbag_ticks_received_total 10\n"), "{text}");
        assert!(
            text.contains("airbag_alerts_total{rule=\"a\\\"b\",severity=\"critical\"} 3"),
            "{text}"
        );
        assert!(text.contains("airbag_eval_seconds_count 1"), "{text}");
        assert!(text.contains("airbag_eval_seconds_outliers_total 0"), "{text}");
        assert_eq!(m.rejected().get(RejectCode::Duplicate), 2);
    }
}
