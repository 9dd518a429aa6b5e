//! One `[[kafka.source]]`: a consumer of its topics whose messages are
//! decoded ([`super::decode`]) straight into an [`IngestSession`] and
//! applied there, on the consuming task.
//!
//! The loop: wait for a message; take the messages already fetched, up to
//! `max_batch_messages` (and `max_batch_ticks` ticks), without waiting for
//! more; decode each (one that does not decode is counted, logged with its
//! topic, partition and offset, and skipped); apply the batch; wait until
//! the last alert it raised is durable (journaled with `data_dir`,
//! published without); then store the batch's offsets (with checkpoints,
//! once a written checkpoint holds the batch: [`super::progress`]), which
//! the consumer commits in the background (`auto.commit.interval.ms`) and
//! once more, synchronously, when the source stops (after the checkpoint
//! written at shutdown). A crash reads again at most the messages after
//! the last commit, and the restored state refuses the ticks it holds.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use super::decode::Decoder;
use super::group::{Group, GroupContext};
use super::metrics::KafkaMetrics;
use super::progress::Progress;
use super::KafkaError;
use crate::config::kafka::{KafkaSinkConfig, KafkaSourceConfig, SourcePartitions};
use crate::service::{Core, IngestSession, Pipeline};

/// Pause after a consumer error before reading on (the client reconnects
/// by itself; this keeps a dead broker from spinning the task).
const ERROR_PAUSE: Duration = Duration::from_millis(200);

/// The next checkpoint round written, or never without checkpoints.
async fn checkpoint_written(written: &mut Option<tokio::sync::watch::Receiver<u64>>) -> Option<u64> {
    match written {
        Some(written) => match written.changed().await {
            Ok(()) => Some(*written.borrow_and_update()),
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// How long one metadata request may take when the source assigns itself
/// every partition.
const METADATA_TIMEOUT: Duration = Duration::from_secs(2);

/// A source ready to run: its consumer subscribed (or, with
/// `partitions = "all"`, to be assigned every partition when it runs).
pub struct Source {
    name: String,
    consumer: Arc<StreamConsumer<GroupContext>>,
    /// With a state topic: the partitions shared with other instances.
    group: Option<Arc<Group>>,
    state_every: Duration,
    /// `partitions = "all"`: the topics to assign in full.
    assign_all: Option<Vec<String>>,
    assigned_itself: bool,
    decoder: Decoder,
    max_messages: usize,
}

impl Source {
    /// Creates the consumer and subscribes it to the topics.
    ///
    /// # Errors
    /// librdkafka refuses the configuration (a bad passed-through
    /// property) or the subscription.
    pub fn new(
        config: &KafkaSourceConfig,
        core: &Arc<Core>,
        sinks: &[KafkaSinkConfig],
        metrics: &Arc<KafkaMetrics>,
    ) -> Result<Self, KafkaError> {
        let max_batch_ticks = core.config().max_batch_ticks;
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
        let group = match &config.state_topic {
            Some(state_topic) => {
                // Offsets are committed with the state records only.
                client.set("enable.auto.commit", "false");
                // Incremental rebalances: only the partitions that move are
                // handed over. (tansu 0.6.0 also needs it: with an eager
                // assignor it leaves a killed member's partitions
                // unassigned: README "Running several instances".)
                if !config.properties.contains_key("partition.assignment.strategy") {
                    client.set("partition.assignment.strategy", "cooperative-sticky");
                }
                // Each owned partition's lag comes from the statistics.
                if !config.properties.contains_key("statistics.interval.ms") {
                    client.set("statistics.interval.ms", "1000");
                }
                Some(Arc::new(Group::new(
                    core.clone(),
                    config,
                    state_topic,
                    sinks,
                    metrics.clone(),
                )?))
            }
            None => None,
        };
        let context = GroupContext::default();
        if let Some(group) = &group {
            let _ = context.group.set(group.clone());
            core.set_shared(group.clone());
        }
        let consumer: StreamConsumer<GroupContext> =
            client
                .create_with_context(context)
                .map_err(|source| KafkaError::Client {
                    what: format!("source `{name}`"),
                    source,
                })?;
        let assign_all = match config.partitions {
            SourcePartitions::Group => {
                let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
                consumer.subscribe(&topics).map_err(|source| KafkaError::Client {
                    what: format!("source `{name}`: subscribing to {topics:?}"),
                    source,
                })?;
                None
            }
            SourcePartitions::All => Some(config.topics.clone()),
        };
        Ok(Source {
            name,
            consumer: Arc::new(consumer),
            group,
            state_every: Duration::from_millis(config.state_interval_ms.max(1)),
            assigned_itself: assign_all.is_some(),
            assign_all,
            decoder: Decoder::new(
                config.format,
                config.instrument_from,
                config.json.as_ref(),
                max_batch_ticks,
            ),
            max_messages: config.max_batch_messages,
        })
    }

    /// Assigns every partition of `topics` from the committed offsets (or
    /// `auto.offset.reset`), asking the brokers for the partitions until
    /// they answer or shutdown begins. Whether it did.
    async fn assign_every_partition(&self, topics: &[String], shutdown: &tokio_util::sync::CancellationToken) -> bool {
        loop {
            let consumer = self.consumer.clone();
            let wanted = topics.to_vec();
            let asked = tokio::task::spawn_blocking(move || {
                let mut assignment = TopicPartitionList::new();
                for topic in &wanted {
                    let metadata = consumer.fetch_metadata(Some(topic), METADATA_TIMEOUT)?;
                    for found in metadata.topics() {
                        if let Some(error) = found.error() {
                            return Err(rdkafka::error::KafkaError::MetadataFetch(error.into()));
                        }
                        for partition in found.partitions() {
                            assignment.add_partition_offset(found.name(), partition.id(), Offset::Stored)?;
                        }
                    }
                }
                consumer.assign(&assignment)?;
                Ok(assignment.count())
            })
            .await;
            match asked {
                Ok(Ok(partitions)) => {
                    info!(source = %self.name, partitions, ?topics, "Kafka source assigned every partition.");
                    return true;
                }
                Ok(Err(error)) => warn!(source = %self.name, %error, "Kafka partitions not known yet; asking again."),
                Err(error) => warn!(source = %self.name, %error, "Kafka metadata request failed; asking again."),
            }
            tokio::select! {
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep(ERROR_PAUSE) => {}
            }
        }
    }

    /// Stores for commit the offsets that checkpoint round `round` holds.
    fn store_covered(&self, progress: &mut Progress, round: u64) {
        progress.covered(round, |topic, partition, offset| {
            if let Err(error) = self.consumer.store_offset(topic, partition, offset) {
                // A partition revoked meanwhile: its next owner reads on
                // from the last commit.
                debug!(source = %self.name, %error, "Kafka offset not stored.");
            }
        });
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
        // With checkpoints: offsets wait for the checkpoint that holds them.
        let rounds = core.checkpoint_rounds().cloned();
        let mut written = rounds.as_ref().map(|r| r.written());
        let mut progress = Progress::default();
        // Where each message's ticks start in the batch, for the log.
        let mut starts: Vec<usize> = Vec::with_capacity(self.max_messages);
        let mut batch: Vec<BorrowedMessage<'_>> = Vec::with_capacity(self.max_messages);
        if let Some(topics) = self.assign_all.take() {
            if !self.assign_every_partition(&topics, &shutdown).await {
                session.release();
                return;
            }
        }
        info!(source = %self.name, "Kafka source consuming.");
        let mut state_timer = tokio::time::interval(self.state_every);
        state_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let first = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                _ = state_timer.tick(), if self.group.is_some() => {
                    if let Some(group) = &self.group {
                        super::group::write_due_blocking(group, &*self.consumer);
                    }
                    continue;
                }
                Some(round) = checkpoint_written(&mut written) => {
                    self.store_covered(&mut progress, round);
                    continue;
                }
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
            // A rebalance runs inside `recv`: one during the collection may
            // take away a partition whose messages are already in the batch.
            let revocations = self.group.as_ref().map(|g| g.revocations());
            let mut next = Some(first);
            // What is already fetched joins the batch, up to its limits;
            // nothing waits for more.
            while let Some(message) = next.take() {
                if self.group.as_ref().is_some_and(|g| !g.holds(message.partition())) {
                    metrics.not_owned.fetch_add(1, Ordering::Relaxed);
                } else {
                    starts.push(pipeline.len());
                    decode(&self.name, &mut self.decoder, &message, pipeline, &metrics, true);
                    batch.push(message);
                }
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
            if let (Some(group), Some(before)) = (&self.group, revocations) {
                if group.revocations() != before {
                    // The batch again, without the partitions handed over.
                    let held = batch.len();
                    batch.retain(|m| group.holds(m.partition()));
                    metrics
                        .not_owned
                        .fetch_add((held - batch.len()) as u64, Ordering::Relaxed);
                    starts.clear();
                    let pipeline = session.batch();
                    for message in &batch {
                        starts.push(pipeline.len());
                        decode(&self.name, &mut self.decoder, message, pipeline, &metrics, false);
                    }
                }
            }
            if batch.is_empty() {
                continue;
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
            match &rounds {
                // The state records hold the offsets.
                _ if self.group.is_some() => {
                    if let Some(group) = &self.group {
                        group.note_batch(&batch, &starts, session.pipeline());
                    }
                }
                // Applied before this read: held by the next round to begin.
                Some(rounds) => {
                    let round = rounds.begun() + 1;
                    for message in &batch {
                        progress.applied(message.topic(), message.partition(), message.offset(), round);
                    }
                }
                None => {
                    for message in &batch {
                        if let Err(error) = self.consumer.store_offset_from_message(message) {
                            // A partition revoked meanwhile: its next owner
                            // reads the message again.
                            debug!(source = %self.name, %error, "Kafka offset not stored.");
                        }
                    }
                }
            }
            metrics.batches_stored.fetch_add(1, Ordering::Relaxed);
            batch.clear();
        }
        drop(batch);
        session.release();
        if let Some(group) = self.group.take() {
            // The last state of every partition, once the sink delivered
            // the alerts it raised; the group hands them over on close.
            super::group::write_due_blocking(&group, &*self.consumer);
            self.consumer.unsubscribe();
            info!(source = %self.name, "Kafka source stopped; the state of its partitions written and their offsets committed.");
            return;
        }
        // The checkpoint written at shutdown holds everything applied: its
        // offsets are committed with the final commit (bounded by the grace).
        if let Some(written) = &mut written {
            let last = progress.last_round();
            let grace = Duration::from_millis(core.config().shutdown_grace_ms);
            if last > 0 {
                match tokio::time::timeout(grace, written.wait_for(|w| *w >= last)).await {
                    Ok(Ok(round)) => {
                        let round = *round;
                        self.store_covered(&mut progress, round);
                    }
                    _ => warn!(
                        source = %self.name,
                        partitions = progress.partitions_waiting(),
                        "No checkpoint holds the last ticks applied: their offsets stay uncommitted and are read again after a restart."
                    ),
                }
            }
        }
        if let Err(error) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last commit is also an error here.
            debug!(source = %self.name, %error, "Kafka final commit.");
        }
        if self.assigned_itself {
            let _ = self.consumer.unassign();
        } else {
            self.consumer.unsubscribe();
        }
        info!(source = %self.name, "Kafka source stopped; applied offsets committed.");
    }
}

/// Decodes `message`'s ticks into `pipeline`; a message that does not
/// decode is skipped (counted and logged when `first_time`).
fn decode(
    name: &str,
    decoder: &mut Decoder,
    message: &BorrowedMessage<'_>,
    pipeline: &mut Pipeline,
    metrics: &KafkaMetrics,
    first_time: bool,
) {
    let payload = message.payload().unwrap_or_default();
    if let Err(refusal) = decoder.push(payload, message.key(), message.offset(), pipeline) {
        if first_time {
            metrics.reject(refusal.reason);
            warn!(
                source = %name,
                topic = message.topic(),
                partition = message.partition(),
                offset = message.offset(),
                reason = refusal.reason.as_str(),
                detail = %refusal.detail,
                "Kafka message skipped: it does not decode."
            );
        }
    }
}
