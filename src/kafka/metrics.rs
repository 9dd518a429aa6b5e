//! What the Kafka sources and sinks count, rendered beside the service's
//! own metrics on `/metrics`. Labels are a reason or a sink's configured
//! name: bounded by the code and the configuration, never by the data.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::decode::Reject;

/// Counters of every source, and one [`SinkMetrics`] per sink.
#[derive(Debug, Default)]
pub struct KafkaMetrics {
    /// Messages read by the sources.
    pub messages: AtomicU64,
    /// Messages skipped because they did not decode, by [`Reject`].
    rejected: [AtomicU64; Reject::ALL.len()],
    /// Errors the consumers reported (broker down, partition errors).
    pub consumer_errors: AtomicU64,
    /// Messages not applied: their partition was handed over after they
    /// were fetched (several instances sharing a group).
    pub not_owned: AtomicU64,
    /// Offsets of a taken-over partition between its restored state and
    /// the first message fetched after it: ticks never applied.
    pub skipped_offsets: AtomicU64,
    /// Batches whose offsets were stored for commit.
    pub batches_stored: AtomicU64,
    pub sinks: Vec<(String, SinkMetrics)>,
}

/// One sink's counters.
#[derive(Debug, Default)]
pub struct SinkMetrics {
    /// Alerts the broker acknowledged.
    pub produced: AtomicU64,
    /// Deliveries that failed (and were sent again).
    pub failed: AtomicU64,
    /// The last alert sequence number delivered with every one before it.
    pub delivered_seq: AtomicU64,
    /// The newest offset acknowledged in each partition of the topic: an
    /// alert delivered later lands after it.
    pub acked_offsets: parking_lot::Mutex<std::collections::BTreeMap<i32, i64>>,
}

impl KafkaMetrics {
    pub fn with_sinks(names: impl IntoIterator<Item = String>) -> Self {
        KafkaMetrics {
            sinks: names.into_iter().map(|n| (n, SinkMetrics::default())).collect(),
            ..KafkaMetrics::default()
        }
    }

    pub fn reject(&self, why: Reject) {
        self.rejected[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn rejected(&self, why: Reject) -> u64 {
        self.rejected[why as usize].load(Ordering::Relaxed)
    }

    /// Appends the Prometheus text; `last_seq` is the bus's newest alert.
    pub fn render(&self, last_seq: u64, out: &mut String) {
        let mut counter = |name: &str, help: &str, samples: &mut dyn Iterator<Item = (String, u64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            "airbag_kafka_messages_total",
            "Messages the Kafka sources read.",
            &mut std::iter::once((String::new(), load(&self.messages))),
        );
        counter(
            "airbag_kafka_rejected_total",
            "Kafka messages skipped because they did not decode, by reason.",
            &mut Reject::ALL
                .iter()
                .map(|r| (format!("{{reason=\"{}\"}}", r.as_str()), self.rejected(*r))),
        );
        counter(
            "airbag_kafka_consumer_errors_total",
            "Errors the Kafka consumers reported.",
            &mut std::iter::once((String::new(), load(&self.consumer_errors))),
        );
        counter(
            "airbag_kafka_not_owned_total",
            "Kafka messages fetched but not applied: their partition was handed over to another member first.",
            &mut std::iter::once((String::new(), load(&self.not_owned))),
        );
        counter(
            "airbag_kafka_skipped_offsets_total",
            "Offsets of a taken-over partition between its restored state and the first message fetched after it.",
            &mut std::iter::once((String::new(), load(&self.skipped_offsets))),
        );
        counter(
            "airbag_kafka_batches_stored_total",
            "Batches of Kafka messages applied whose offsets were stored for commit.",
            &mut std::iter::once((String::new(), load(&self.batches_stored))),
        );
        let sink_label = |name: &str| format!("{{sink=\"{}\"}}", name.replace('\\', "\\\\").replace('"', "\\\""));
        counter(
            "airbag_kafka_sink_produced_total",
            "Alerts a Kafka sink delivered (acknowledged by the broker).",
            &mut self.sinks.iter().map(|(n, m)| (sink_label(n), load(&m.produced))),
        );
        counter(
            "airbag_kafka_sink_failed_total",
            "Alert deliveries a Kafka sink saw fail; each is sent again.",
            &mut self.sinks.iter().map(|(n, m)| (sink_label(n), load(&m.failed))),
        );
        let _ = writeln!(
            out,
            "# HELP airbag_kafka_sink_lag_alerts Alerts on the bus after the last one a Kafka sink delivered.\n\
             # TYPE airbag_kafka_sink_lag_alerts gauge"
        );
        for (name, m) in &self.sinks {
            let lag = last_seq.saturating_sub(load(&m.delivered_seq));
            let _ = writeln!(out, "airbag_kafka_sink_lag_alerts{} {lag}", sink_label(name));
        }
    }
}
