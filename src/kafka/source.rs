//! One `[[kafka.source]]`: a consumer of its topics whose messages are
//! decoded ([`super::decode`]) straight into an [`IngestSession`] and
//! applied there, on the consuming task.
//!
//! The loop: wait for a message; take the messages already fetched, up to
//! `max_batch_messages` (and `max_batch_ticks` ticks), without waiting for
//! more; decode each (one that does not decode is counted, logged with its
//! topic, partition and offset, and skipped); apply the batch; wait until
//! the last alert it raised is durable (journaled with `data_dir`,
//! published without); only then store the batch's offsets, which the
//! consumer commits in the background (`auto.commit.interval.ms`) and once
//! more, synchronously, when the source stops. A crash replays at most
//! the messages after the last commit: at-least-once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use tracing::{debug, info, warn};

use super::decode::Decoder;
use super::metrics::KafkaMetrics;
use super::KafkaError;
use crate::config::kafka::KafkaSourceConfig;
use crate::service::{Core, IngestSession};

/// Pause after a consumer error before reading on (the client reconnects
/// by itself; this keeps a dead broker from spinning the task).
const ERROR_PAUSE: Duration = Duration::from_millis(200);

/// A source ready to run: its consumer subscribed.
pub struct Source {
    name: String,
    consumer: StreamConsumer,
    decoder: Decoder,
    max_messages: usize,
}

impl Source {
    /// Creates the consumer and subscribes it to the topics.
    ///
    /// # Errors
    /// librdkafka refuses the configuration (a bad passed-through
    /// property) or the subscription.
    pub fn new(config: &KafkaSourceConfig, max_batch_ticks: usize) -> Result<Self, KafkaError> {
        let name = config.display_name().to_string();
        let mut client = ClientConfig::new();
        client
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "true");
        for (key, value) in &config.properties {
            client.set(key, value);
        }
        client
            .set("bootstrap.servers", config.brokers.join(","))
            .set("group.id", &config.group_id)
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false");
        let consumer: StreamConsumer = client.create().map_err(|source| KafkaError::Client {
            what: format!("source `{name}`"),
            source,
        })?;
        let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(|source| KafkaError::Client {
            what: format!("source `{name}`: subscribing to {topics:?}"),
            source,
        })?;
        Ok(Source {
            name,
            consumer,
            decoder: Decoder::new(
                config.format,
                config.instrument_from,
                config.json.as_ref(),
                max_batch_ticks,
            ),
            max_messages: config.max_batch_messages,
        })
    }

    /// Consumes until shutdown, then commits what was applied and lets go
    /// of the service.
    ///
    /// Cancellation-safe only at shutdown: dropping it mid-batch loses
    /// nothing (offsets of an unapplied batch are never stored).
    pub async fn run(mut self, core: Arc<Core>, metrics: Arc<KafkaMetrics>) {
        let mut session = IngestSession::new(core.clone());
        let shutdown = core.shutdown_token().clone();
        let max_ticks = core.config().max_batch_ticks;
        let mut durable = core.bus().durable_wait();
        // Where each message's ticks start in the batch, for the log.
        let mut starts: Vec<usize> = Vec::with_capacity(self.max_messages);
        let mut batch: Vec<BorrowedMessage<'_>> = Vec::with_capacity(self.max_messages);
        info!(source = %self.name, "Kafka source consuming.");
        loop {
            let first = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                got = self.consumer.recv() => got,
            };
            let first = match first {
                Ok(message) => message,
                Err(error) => {
                    metrics.consumer_errors.fetch_add(1, Ordering::Relaxed);
                    warn!(source = %self.name, %error, "Kafka consumer error; reading on.");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(ERROR_PAUSE) => continue,
                    }
                }
            };
            starts.clear();
            let pipeline = session.batch();
            let mut next = Some(first);
            // What is already fetched joins the batch, up to its limits;
            // nothing waits for more.
            while let Some(message) = next.take() {
                starts.push(pipeline.len());
                let payload = message.payload().unwrap_or_default();
                if let Err(refusal) = self.decoder.push(payload, message.key(), message.offset(), pipeline) {
                    metrics.reject(refusal.reason);
                    warn!(
                        source = %self.name,
                        topic = message.topic(),
                        partition = message.partition(),
                        offset = message.offset(),
                        reason = refusal.reason.as_str(),
                        detail = %refusal.detail,
                        "Kafka message skipped: it does not decode."
                    );
                }
                batch.push(message);
                if batch.len() >= self.max_messages || pipeline.len() >= max_ticks {
                    break;
                }
                match tokio::time::timeout(Duration::ZERO, self.consumer.recv()).await {
                    Ok(Ok(message)) => next = Some(message),
                    Ok(Err(error)) => {
                        metrics.consumer_errors.fetch_add(1, Ordering::Relaxed);
                        warn!(source = %self.name, %error, "Kafka consumer error; reading on.");
                    }
                    Err(_) => {}
                }
            }
            metrics.messages.fetch_add(batch.len() as u64, Ordering::Relaxed);
            let applied = session.apply();
            for (index, why) in session.pipeline().rejections() {
                let at = starts
                    .partition_point(|&start| start <= *index as usize)
                    .saturating_sub(1);
                if let Some(message) = batch.get(at) {
                    debug!(
                        source = %self.name,
                        topic = message.topic(),
                        partition = message.partition(),
                        offset = message.offset(),
                        reason = why.code().as_str(),
                        error = %why,
                        "Kafka tick rejected."
                    );
                }
            }
            if applied.last_alert_seq > 0 {
                std::future::poll_fn(|cx| durable.poll_durable(applied.last_alert_seq, cx)).await;
            }
            for message in &batch {
                if let Err(error) = self.consumer.store_offset_from_message(message) {
                    // A partition revoked meanwhile: its next owner reads
                    // the message again.
                    debug!(source = %self.name, %error, "Kafka offset not stored.");
                }
            }
            metrics.batches_stored.fetch_add(1, Ordering::Relaxed);
            batch.clear();
        }
        drop(batch);
        session.release();
        if let Err(error) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last commit is also an error here.
            debug!(source = %self.name, %error, "Kafka final commit.");
        }
        self.consumer.unsubscribe();
        info!(source = %self.name, "Kafka source stopped; applied offsets committed.");
    }
}
