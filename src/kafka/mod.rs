//! Kafka in and out, beside gRPC: ticks from topics (`[[kafka.source]]`)
//! through the same batch pipeline as `Ingest`, and alerts from the alert
//! log to topics (`[[kafka.sink]]`). This module owns the consumers and
//! producers, the decoding of messages into ticks, the sinks' stored
//! positions and the Kafka metrics; validation, dedup, lateness and
//! evaluation stay in [`crate::service`], numbering and the journal in
//! [`crate::alerts`].
//!
//! - [`decode`]: a message (`TickBatch`, `Tick` or JSON by a field
//!   mapping) to ticks in a [`crate::service::Pipeline`], or a refusal.
//! - `source`: a consumer whose messages are applied on its own task,
//!   offsets stored only once the batch's alerts are durable.
//! - `sink`: an alert-log reader producing to a topic with an idempotent
//!   producer, resuming from its stored position.
//! - [`metrics`]: `airbag_kafka_*` counters.
//!
//! # Delivery
//!
//! - **Ticks: each applied once, none skipped.** A source stores a
//!   message's offset for commit only after the batch holding it was
//!   applied and the last alert it raised is durable (journaled with
//!   `data_dir`, published without); with checkpoints (`data_dir`), only
//!   once a written checkpoint holds the state it made (`progress`). After
//!   a crash the group resumes from the committed offsets, at or before
//!   the restored state: messages read again whose ticks the state holds
//!   are refused as duplicates by their sequence number (a tick without
//!   one takes it from its offset, see [`decode`]), the rest are applied,
//!   and alerts they raise again are recognised and not published twice
//!   ([`crate::alerts::replayed`]).
//! - **Alerts, at-least-once, in order per key.** A sink sends the alerts
//!   of the log in sequence order and moves its position only over
//!   acknowledged ones; a restart, or a failed delivery, sends again from
//!   the position. Every alert carries its global `seq`: a consumer drops
//!   one it has seen.
//!
//! Built with the `kafka` cargo feature (on by default); without it, a
//! configuration with Kafka tables is refused at start.

pub mod decode;
#[cfg(feature = "kafka")]
pub mod group;
pub mod metrics;
#[cfg(feature = "kafka")]
mod progress;
#[cfg(feature = "kafka")]
mod sink;
#[cfg(feature = "kafka")]
mod source;

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio::time::{timeout_at, Instant};
use tracing::warn;

use self::metrics::KafkaMetrics;
use crate::service::Core;

/// Why Kafka could not start.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[cfg(feature = "kafka")]
    #[error("kafka {what}: {source}")]
    Client {
        what: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("kafka: {0}")]
    Config(String),
}

/// The running sources and sinks.
#[derive(Debug)]
pub struct Kafka {
    metrics: Arc<KafkaMetrics>,
    sources: Vec<JoinHandle<()>>,
    sinks: Vec<JoinHandle<()>>,
}

/// Starts every source and sink of the configuration: sources read until
/// shutdown begins, sinks until the alert bus closes.
///
/// # Errors
/// librdkafka refuses a client's configuration, or (without the `kafka`
/// feature) the configuration has Kafka tables.
pub fn start(core: &Arc<Core>) -> Result<Kafka, KafkaError> {
    let config = &core.config().kafka;
    let metrics = Arc::new(KafkaMetrics::with_sinks(
        config.sink.iter().map(|s| s.display_name().to_string()),
    ));
    let mut kafka = Kafka {
        metrics: metrics.clone(),
        sources: Vec::new(),
        sinks: Vec::new(),
    };
    if config.source.is_empty() && config.sink.is_empty() {
        return Ok(kafka);
    }
    #[cfg(feature = "kafka")]
    {
        let data_dir = core.config().data_dir.as_deref();
        for (index, sink) in config.sink.iter().enumerate() {
            let sink = sink::Sink::new(sink, data_dir, index)?;
            kafka.sinks.push(tokio::spawn(sink.run(core.clone(), metrics.clone())));
        }
        for source in &config.source {
            let source = source::Source::new(source, core, &config.sink, &metrics)?;
            kafka
                .sources
                .push(tokio::spawn(source.run(core.clone(), metrics.clone())));
        }
        Ok(kafka)
    }
    #[cfg(not(feature = "kafka"))]
    {
        drop(kafka);
        Err(KafkaError::Config(
            "this build has no Kafka support (cargo feature `kafka`); remove the [[kafka.*]] tables".into(),
        ))
    }
}

/// What librdkafka says of the properties the `[[kafka.*]]` tables pass
/// through (an unknown name, a value it does not take), each under the key
/// `kafka` with the table's path, as [`crate::config::ServiceConfig::validate`]
/// reports problems. Nothing connects. Empty without the `kafka` feature.
pub fn client_problems(config: &crate::config::kafka::KafkaConfig) -> Vec<crate::config::ConfigProblem> {
    #[allow(unused_mut)]
    let mut problems = Vec::new();
    #[cfg(feature = "kafka")]
    {
        let tables = config
            .source
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("source[{i}].properties"), &s.properties))
            .chain(
                config
                    .sink
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (format!("sink[{i}].properties"), &s.properties)),
            );
        for (at, properties) in tables {
            for (key, value) in properties {
                let mut client = rdkafka::config::ClientConfig::new();
                client.set(key, value);
                if let Err(error) = client.create_native_config() {
                    problems.push(crate::config::ConfigProblem {
                        key: "kafka",
                        message: format!("{at}.{key:?}: librdkafka refuses it: {error}"),
                    });
                }
            }
        }
    }
    #[cfg(not(feature = "kafka"))]
    let _ = config;
    problems
}

impl Kafka {
    pub fn metrics(&self) -> &Arc<KafkaMetrics> {
        &self.metrics
    }

    /// Appends the Kafka metrics to `out`.
    pub fn render(metrics: &KafkaMetrics, core: &Core, out: &mut String) {
        metrics.render(core.bus().last_seq(), out);
    }

    /// Waits, until `deadline`, for the sinks (stopped by the bus closing)
    /// to finish.
    pub async fn sinks_stopped(&mut self, deadline: Instant) {
        Self::finished(std::mem::take(&mut self.sinks), deadline).await;
    }

    /// Waits, until `deadline`, for the sources (stopped by shutdown) to
    /// make their final commit: with checkpoints, of what the checkpoint
    /// written at shutdown holds, so call this after writing it.
    pub async fn sources_stopped(mut self, deadline: Instant) {
        Self::finished(std::mem::take(&mut self.sources), deadline).await;
    }

    async fn finished(tasks: Vec<JoinHandle<()>>, deadline: Instant) {
        for task in tasks {
            if timeout_at(deadline, task).await.is_err() {
                warn!("A Kafka task was still running at the end of the grace period.");
            }
        }
    }
}
