//! Several instances, one job: the members of a consumer group share the
//! tick topic's partitions (`[[kafka.source]] partitions = "group"` with a
//! `state_topic`), and each partition's state moves with it. This module
//! owns what an instance knows of the partitions it owns, the state
//! records of the state topic, and the rebalance callbacks that hand
//! partitions over and take them over.
//!
//! - **Ownership.** The instruments of a partition are learned from its
//!   messages ([`Group::note_batch`]) and from the state taken over with it.
//! - **State record.** Every `state_interval_ms`, and when the group takes
//!   the partition away, its instruments' state (the checkpoint encoding of
//!   [`crate::checkpoint::format`], restricted to them) is produced to the
//!   state topic keyed `<tick topic>/<partition>`, with the tick offset it
//!   matches and, per partition of the alert topic, the newest offset this
//!   instance's sink had acknowledged before the snapshot. A record is
//!   written only once the sink has delivered every alert raised before its
//!   snapshot; then the offset is committed. The committed offset is never
//!   past the newest record's.
//! - **Take-over.** When the group assigns a partition (before it is
//!   fetched from), the newest record for it is read and its instruments
//!   restored in place ([`crate::engine::Engine::restore_share`]); the
//!   consumer resumes from the record's offset (a first message past it is
//!   counted as skipped offsets). The alert topic is read from the
//!   record's offsets: alerts there for the partition's instruments were
//!   published by the previous owner after its snapshot, and the same
//!   alerts raised again here are recognised by identity and dropped ([`crate::alerts::AlertBus::expect_handed_over`]).
//! - **Hand-over.** On revocation the state is written (as above), the
//!   instruments are forgotten here (no timer of theirs fires any more) and
//!   the partition's expected alerts dropped.
//!
//! The callbacks run inside the consumer's poll, on the source's task, so
//! no batch is half-applied when they run; they block (on a blocking
//! section of the runtime) until the records are written or read.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientContext;
use rustc_hash::FxHashSet;
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::metrics::KafkaMetrics;
use super::KafkaError;
use crate::alerts::replayed::AlertIdentity;
use crate::checkpoint::{format, Checkpoint};
use crate::config::kafka::{KafkaSinkConfig, KafkaSourceConfig, SinkFormat};
use crate::model::AlertKind;
use crate::service::shared::{OwnedPartition, SharedPartitions, SharedStatus};
use crate::service::{Core, Pipeline};

/// Magic bytes in front of a state record.
const RECORD_MAGIC: [u8; 8] = *b"AIRBAGPS";
/// The record layout this build writes and reads.
const RECORD_VERSION: u32 = 1;
/// Longest a state write waits for the sink to deliver the alerts raised
/// before its snapshot.
const SINK_WAIT: Duration = Duration::from_secs(10);
/// Longest a read of the state or alert topic may take.
const READ_LIMIT: Duration = Duration::from_secs(15);
/// A read of the state or alert topic that gets no message for this long
/// is over.
const READ_IDLE: Duration = Duration::from_secs(2);
/// Longest a state record's delivery may take.
const PRODUCE_LIMIT: Duration = Duration::from_secs(10);

/// The head of a state record; the checkpoint bytes follow.
#[derive(Debug, Serialize, Deserialize)]
struct RecordHead {
    tick_topic: String,
    partition: i32,
    /// The next offset to apply: the state holds every message before it.
    next_offset: i64,
    /// Per partition of the alert topic, the offset to read from for the
    /// alerts published after the snapshot.
    alert_from: Vec<(i32, i64)>,
    written_at_ns: i64,
}

/// What this instance knows of one partition it owns.
#[derive(Debug)]
struct Owned {
    instruments: FxHashSet<Arc<str>>,
    /// The newest offset applied.
    applied: Option<i64>,
    /// The newest offset a written state record holds.
    written: Option<i64>,
    /// Messages behind the partition's end, as of the consumer's last
    /// statistics (-1: not known).
    lag: i64,
    /// The offset a take-over fetches from, until the first message at or
    /// past it is applied: one past it means messages went undelivered.
    resume_at: Option<i64>,
}

impl Default for Owned {
    fn default() -> Self {
        Owned {
            instruments: FxHashSet::default(),
            applied: None,
            written: None,
            lag: -1,
            resume_at: None,
        }
    }
}

/// The alert topic read on take-over: the first sink's.
#[derive(Debug)]
struct AlertSide {
    topic: String,
    format: SinkFormat,
    /// Index of the sink in the Kafka metrics.
    sink: usize,
    client: ClientConfig,
}

/// Counters of the group side, for `/metrics` and `Status`.
#[derive(Debug, Default)]
pub struct GroupStats {
    pub rebalances: AtomicU64,
    pub last_rebalance_ns: AtomicU64,
    pub states_written: AtomicU64,
    pub state_write_failures: AtomicU64,
    pub last_state_bytes: AtomicU64,
    pub restores: AtomicU64,
    pub last_restore_ns: AtomicU64,
    pub last_restore_bytes: AtomicU64,
    pub handed_over_alerts: AtomicU64,
}

/// One source's share of the group's partitions.
pub struct Group {
    core: Arc<Core>,
    name: String,
    tick_topic: String,
    state_topic: String,
    producer: FutureProducer,
    reader: ClientConfig,
    alerts: Option<AlertSide>,
    metrics: Arc<KafkaMetrics>,
    parts: Mutex<BTreeMap<i32, Owned>>,
    /// Counts the revocations: a batch collected across one is sorted
    /// again ([`Group::revocations`]).
    revocations: AtomicU64,
    state_partitions: Mutex<Option<i32>>,
    pub stats: GroupStats,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("name", &self.name)
            .field("state_topic", &self.state_topic)
            .finish_non_exhaustive()
    }
}

impl Group {
    /// The group side of `source`, whose state topic is `state_topic`;
    /// alerts of the first of `sinks` are read on take-over.
    ///
    /// # Errors
    /// librdkafka refuses the producer's configuration.
    pub fn new(
        core: Arc<Core>,
        source: &KafkaSourceConfig,
        state_topic: &str,
        sinks: &[KafkaSinkConfig],
        metrics: Arc<KafkaMetrics>,
    ) -> Result<Self, KafkaError> {
        let name = source.display_name().to_string();
        let mut reader = ClientConfig::new();
        for (key, value) in &source.properties {
            if !key.starts_with("partition.assignment") && !key.contains("session") && !key.contains("heartbeat") {
                reader.set(key, value);
            }
        }
        reader
            .set("bootstrap.servers", source.brokers.join(","))
            .set("group.id", format!("{}-reader", source.group_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true");
        let mut producer = ClientConfig::new();
        producer
            .set("bootstrap.servers", source.brokers.join(","))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0");
        let producer = producer.create().map_err(|source| KafkaError::Client {
            what: format!("source `{name}`: state producer"),
            source,
        })?;
        let alerts = sinks.first().map(|sink| {
            let mut client = ClientConfig::new();
            for (key, value) in &sink.properties {
                if key.starts_with("security.") || key.starts_with("sasl.") || key.starts_with("ssl.") {
                    client.set(key, value);
                }
            }
            client
                .set("bootstrap.servers", sink.brokers.join(","))
                .set("group.id", format!("{}-alert-reader", source.group_id))
                .set("enable.auto.commit", "false")
                .set("enable.partition.eof", "true");
            AlertSide {
                topic: sink.topic.clone(),
                format: sink.format,
                sink: 0,
                client,
            }
        });
        Ok(Group {
            core,
            name,
            tick_topic: source.topics.first().cloned().unwrap_or_default(),
            state_topic: state_topic.to_string(),
            producer,
            reader,
            alerts,
            metrics,
            parts: Mutex::new(BTreeMap::new()),
            revocations: AtomicU64::new(0),
            state_partitions: Mutex::new(None),
            stats: GroupStats::default(),
        })
    }

    /// The partitions owned now.
    fn owned(&self) -> Vec<OwnedPartition> {
        self.parts
            .lock()
            .iter()
            .map(|(&partition, owned)| OwnedPartition {
                topic: self.tick_topic.clone(),
                partition,
                instruments: owned.instruments.len() as u64,
                applied_offset: owned.applied.unwrap_or(-1),
                written_offset: owned.written.unwrap_or(-1),
                lag: owned.lag,
            })
            .collect()
    }

    /// Notes the partition of each message of an applied batch and the
    /// instruments its ticks named (`starts[k]`: where message `k`'s
    /// ticks start in `pipeline`). One lock per batch; allocates only for
    /// an instrument seen for the first time.
    pub fn note_batch(&self, batch: &[BorrowedMessage<'_>], starts: &[usize], pipeline: &Pipeline) {
        let mut parts = self.parts.lock();
        for (k, message) in batch.iter().enumerate() {
            // The source applies messages of owned partitions only.
            let Some(owned) = parts.get_mut(&message.partition()) else {
                continue;
            };
            let offset = message.offset();
            if let Some(resume_at) = owned.resume_at.filter(|&r| offset >= r) {
                owned.resume_at = None;
                if offset > resume_at {
                    self.metrics
                        .skipped_offsets
                        .fetch_add((offset - resume_at) as u64, Ordering::Relaxed);
                    warn!(source = %self.name, partition = message.partition(), from = resume_at, to = offset, "The first message after the take-over is past the offset its state was restored at: the messages between were not delivered (retention, transaction markers, or a broker that fetched from the next batch).");
                }
            }
            owned.applied = Some(owned.applied.map_or(offset, |a| a.max(offset)));
            let end = starts.get(k + 1).copied().unwrap_or(pipeline.len());
            for index in starts[k]..end {
                if let Some(symbol) = pipeline.symbol_at(index) {
                    if !owned.instruments.contains(symbol) {
                        owned.instruments.insert(Arc::from(symbol));
                    }
                }
            }
        }
    }

    /// Notes each owned partition's lag (messages behind its end; -1: not
    /// known).
    fn note_lags(&self, lags: impl Iterator<Item = (i32, i64)>) {
        let mut parts = self.parts.lock();
        for (partition, lag) in lags {
            if let Some(owned) = parts.get_mut(&partition) {
                owned.lag = lag;
            }
        }
    }

    /// Whether partition `partition` of the tick topic is this instance's
    /// now. A message of a partition it does not hold (one fetched before
    /// a revocation) is not applied: its instruments are the next owner's.
    pub fn holds(&self, partition: i32) -> bool {
        self.parts.lock().contains_key(&partition)
    }

    /// How many revocations this instance has had: a batch collected while
    /// the count moved may hold messages of a partition it no longer owns.
    pub fn revocations(&self) -> u64 {
        self.revocations.load(Ordering::Acquire)
    }

    /// Writes the state of every owned partition that applied messages
    /// since its last record, and commits their offsets.
    pub fn write_due<C: ConsumerContext>(&self, consumer: &impl Consumer<C>) {
        let due: Vec<i32> = self
            .parts
            .lock()
            .iter()
            .filter(|(_, o)| o.applied.is_some() && o.applied > o.written)
            .map(|(&p, _)| p)
            .collect();
        for partition in due {
            self.write_one(consumer, partition);
        }
    }

    /// The state topic's partition for tick partition `partition`.
    fn state_partition(&self, partition: i32) -> i32 {
        let mut known = self.state_partitions.lock();
        if known.is_none() {
            let found = self
                .producer
                .client()
                .fetch_metadata(Some(&self.state_topic), Duration::from_secs(5))
                .ok()
                .and_then(|m| m.topics().first().map(|t| t.partitions().len() as i32))
                .filter(|&n| n > 0);
            match found {
                Some(n) => *known = Some(n),
                None => {
                    warn!(source = %self.name, topic = %self.state_topic, "The state topic's partitions are not known: writing to its partition 0.");
                    return 0;
                }
            }
        }
        partition.rem_euclid(known.unwrap_or(1))
    }

    fn key(&self, partition: i32) -> String {
        format!("{}/{partition}", self.tick_topic)
    }

    /// Writes partition `partition`'s state record, then commits its
    /// offset. Blocking.
    fn write_one<C: ConsumerContext>(&self, consumer: &impl Consumer<C>, partition: i32) {
        // Before the snapshot: every alert raised after it lands after these.
        let alert_from: Vec<(i32, i64)> = match &self.alerts {
            Some(side) => self.metrics.sinks.get(side.sink).map_or_else(Vec::new, |(_, m)| {
                m.acked_offsets.lock().iter().map(|(&p, &o)| (p, o + 1)).collect()
            }),
            None => Vec::new(),
        };
        let (instruments, applied) = {
            let parts = self.parts.lock();
            let Some(owned) = parts.get(&partition) else {
                return;
            };
            let Some(applied) = owned.applied.or(owned.written) else {
                return;
            };
            (owned.instruments.clone(), applied)
        };
        let engine = self.core.engine();
        let snapshot = engine.snapshot_where(|symbol| instruments.contains(symbol), false);
        let last_alert = self.core.bus().last_seq();
        if let Some(side) = &self.alerts {
            if let Some((_, m)) = self.metrics.sinks.get(side.sink) {
                let deadline = Instant::now() + SINK_WAIT;
                while m.delivered_seq.load(Ordering::Acquire) < last_alert {
                    if Instant::now() >= deadline {
                        warn!(source = %self.name, partition, alert_seq = last_alert, "The sink has not delivered the alerts raised before the state snapshot: the state of the partition is written without them.");
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
        let now_ns = self.core.clock().now_ns();
        let head = RecordHead {
            tick_topic: self.tick_topic.clone(),
            partition,
            next_offset: applied + 1,
            alert_from,
            written_at_ns: now_ns,
        };
        let checkpoint = Checkpoint {
            alert_seq: last_alert,
            written_at_ns: now_ns,
            engine: snapshot,
        };
        let record = match encode_record(&head, &checkpoint) {
            Ok(record) => record,
            Err(error) => {
                self.stats.state_write_failures.fetch_add(1, Ordering::Relaxed);
                warn!(source = %self.name, partition, %error, "Cannot encode the partition's state.");
                return;
            }
        };
        let key = self.key(partition);
        let target = self.state_partition(partition);
        let delivered = self
            .producer
            .send_result(
                FutureRecord::to(&self.state_topic)
                    .partition(target)
                    .key(&key)
                    .payload(&record),
            )
            .map_err(|(e, _)| e.to_string())
            .and_then(|future| {
                let _ = self.producer.flush(PRODUCE_LIMIT);
                match ready(future) {
                    Some(Ok(Ok(_))) => Ok(()),
                    Some(Ok(Err((error, _)))) => Err(error.to_string()),
                    Some(Err(_)) => Err("the producer went away".into()),
                    None => Err(format!("not delivered within {PRODUCE_LIMIT:?}")),
                }
            });
        if let Err(error) = delivered {
            self.stats.state_write_failures.fetch_add(1, Ordering::Relaxed);
            warn!(source = %self.name, partition, %error, "The partition's state record was not written; its offset is not committed.");
            return;
        }
        let mut offsets = TopicPartitionList::new();
        if offsets
            .add_partition_offset(&self.tick_topic, partition, Offset::Offset(applied + 1))
            .is_ok()
        {
            if let Err(error) = consumer.commit(&offsets, CommitMode::Sync) {
                debug!(source = %self.name, partition, %error, "Offset of a written state not committed.");
            }
        }
        if let Some(owned) = self.parts.lock().get_mut(&partition) {
            owned.written = Some(owned.written.map_or(applied, |w| w.max(applied)));
        }
        self.stats.states_written.fetch_add(1, Ordering::Relaxed);
        self.stats
            .last_state_bytes
            .store(record.len() as u64, Ordering::Relaxed);
        debug!(source = %self.name, partition, next_offset = applied + 1, bytes = record.len(), instruments = instruments.len(), "Partition state written.");
    }

    /// The group took `partitions` away: each one's state is written, its
    /// instruments forgotten here. When the assignment was `lost` (this
    /// member missed its session timeout, so another may own them and
    /// have written since) nothing is written: the next owner goes on
    /// from the last record. Blocking.
    fn hand_over<C: ConsumerContext>(&self, consumer: &impl Consumer<C>, partitions: &[i32], lost: bool) {
        self.revocations.fetch_add(1, Ordering::AcqRel);
        for &partition in partitions {
            let due = self
                .parts
                .lock()
                .get(&partition)
                .is_some_and(|o| o.applied.is_some() && o.applied > o.written);
            if due && lost {
                warn!(source = %self.name, partition, "Assignment lost: the partition's state since its last record is not written; its next owner applies those messages again.");
            } else if due {
                self.write_one(consumer, partition);
            }
            let owned = self.parts.lock().remove(&partition);
            if let Some(owned) = owned {
                let now_ns = self.core.clock().now_ns();
                let forgotten = self
                    .core
                    .engine()
                    .forget_instruments(owned.instruments.iter().map(|s| &**s), now_ns);
                info!(source = %self.name, partition, instruments = forgotten, "Partition handed over.");
            }
            self.core.bus().forget_handed_over(partition as u64);
        }
    }

    /// The group gave us `partitions`: each one's newest state record is
    /// restored, and the alerts the previous owner published after it are
    /// expected. The offset each restored partition is fetched from: the
    /// record's, not the committed one, which a member that has not yet
    /// seen its revocation may have moved past the record read here.
    /// Blocking.
    fn take_over(&self, partitions: &[i32]) -> BTreeMap<i32, i64> {
        let started = Instant::now();
        let records = self.read_records(partitions);
        let mut starts = BTreeMap::new();
        for &partition in partitions {
            let mut owned = Owned::default();
            let Some((head, checkpoint, bytes)) = records.get(&partition).and_then(|r| r.as_ref()) else {
                info!(source = %self.name, partition, "Partition taken over with no state record: it starts from its committed offset.");
                self.parts.lock().insert(partition, owned);
                continue;
            };
            let snapshot = checkpoint.engine.clone();
            for instrument in &snapshot.instruments {
                owned.instruments.insert(Arc::from(instrument.symbol.as_str()));
            }
            owned.written = Some(head.next_offset - 1);
            owned.resume_at = Some(head.next_offset);
            starts.insert(partition, head.next_offset);
            // The time the partition had no owner is not silence of its feed.
            match self.core.engine().restore_share(snapshot, self.core.clock().now_ns()) {
                Ok(report) => {
                    for skipped in &report.instruments_skipped {
                        warn!(symbol = %skipped.symbol, reason = %skipped.reason, "Instrument not restored.");
                    }
                    info!(
                        source = %self.name,
                        partition,
                        bytes,
                        next_offset = head.next_offset,
                        instruments = report.instruments_restored,
                        rule_states_restored = report.rule_states_restored,
                        "Partition state restored."
                    );
                }
                Err(error) => warn!(source = %self.name, partition, %error, "Partition state not restored."),
            }
            let expected = self.published_after(head, &owned.instruments);
            self.stats
                .handed_over_alerts
                .fetch_add(expected.len() as u64, Ordering::Relaxed);
            if !expected.is_empty() {
                info!(source = %self.name, partition, alerts = expected.len(), "Alerts the previous owner published after its state will be recognised, not published again.");
            }
            self.core.bus().expect_handed_over(partition as u64, expected);
            self.stats.last_restore_bytes.store(*bytes as u64, Ordering::Relaxed);
            self.parts.lock().insert(partition, owned);
        }
        self.stats.restores.fetch_add(1, Ordering::Relaxed);
        self.stats
            .last_restore_ns
            .store(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        starts
    }

    /// The newest state record of each of `partitions`, read from the state
    /// topic to its end.
    fn read_records(&self, partitions: &[i32]) -> BTreeMap<i32, Option<(RecordHead, Checkpoint, usize)>> {
        let mut found: BTreeMap<i32, Option<(RecordHead, Checkpoint, usize)>> =
            partitions.iter().map(|&p| (p, None)).collect();
        let mut wanted: BTreeMap<String, i32> = partitions.iter().map(|&p| (self.key(p), p)).collect();
        let targets: FxHashSet<i32> = partitions.iter().map(|&p| self.state_partition(p)).collect();
        let consumer: BaseConsumer = match self.reader.create() {
            Ok(consumer) => consumer,
            Err(error) => {
                warn!(source = %self.name, %error, "Cannot read the state topic.");
                return found;
            }
        };
        let from: Vec<(i32, Offset)> = targets.iter().map(|&t| (t, Offset::Beginning)).collect();
        let whole = read_to_end(&consumer, &self.state_topic, &from, |message| {
            let key = message.key().and_then(|k| std::str::from_utf8(k).ok());
            if let Some(&partition) = key.and_then(|k| wanted.get(k)) {
                let payload = message.payload().unwrap_or_default();
                match decode_record(payload) {
                    Ok((head, checkpoint)) => {
                        found.insert(partition, Some((head, checkpoint, payload.len())));
                    }
                    Err(error) => {
                        warn!(source = %self.name, partition, offset = message.offset(), %error, "A state record does not decode; passed over.")
                    }
                }
            }
        });
        if !whole {
            warn!(source = %self.name, "The state topic was not read to its end: the newest records found are used.");
        }
        wanted.clear();
        found
    }

    /// The identities of the alerts for `instruments` on the alert topic
    /// from the record's offsets on.
    fn published_after(&self, head: &RecordHead, instruments: &FxHashSet<Arc<str>>) -> Vec<AlertIdentity> {
        let Some(side) = &self.alerts else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let consumer: BaseConsumer = match side.client.create() {
            Ok(consumer) => consumer,
            Err(error) => {
                warn!(source = %self.name, %error, "Cannot read the alert topic.");
                return out;
            }
        };
        let partitions = consumer
            .fetch_metadata(Some(&side.topic), Duration::from_secs(5))
            .ok()
            .and_then(|m| m.topics().first().map(|t| t.partitions().len() as i32))
            .unwrap_or(0);
        let from: Vec<(i32, Offset)> = (0..partitions)
            .map(|p| {
                let from = head
                    .alert_from
                    .iter()
                    .find(|(q, _)| *q == p)
                    .map_or(Offset::Beginning, |&(_, o)| Offset::Offset(o));
                (p, from)
            })
            .collect();
        let whole = read_to_end(&consumer, &side.topic, &from, |message| {
            if let Some(identity) = identity_of(side.format, message.payload().unwrap_or_default()) {
                if instruments.contains(&*identity.instrument) {
                    out.push(identity);
                }
            }
        });
        if partitions == 0 || !whole {
            warn!(source = %self.name, topic = %side.topic, "The alert topic was not read to its end: alerts raised again may be published twice.");
        }
        out
    }
}

impl SharedPartitions for Group {
    fn status(&self) -> SharedStatus {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let s = &self.stats;
        SharedStatus {
            partitions: self.owned(),
            rebalances: load(&s.rebalances),
            last_rebalance_ns: load(&s.last_rebalance_ns),
            states_written: load(&s.states_written),
            state_write_failures: load(&s.state_write_failures),
            last_state_bytes: load(&s.last_state_bytes),
            restores: load(&s.restores),
            last_restore_ns: load(&s.last_restore_ns),
            last_restore_bytes: load(&s.last_restore_bytes),
            handed_over_dropped: self.core.bus().handed_over_counts().0,
        }
    }
}

/// Reads `topic`'s partitions from their offsets in `from` to their ends
/// (the end each had when the read began), giving each message to `each`.
/// A partition is done at its end offset or at the client's end-of-
/// partition event, whichever comes first; the read gives up after
/// [`READ_LIMIT`], or after [`READ_IDLE`] without a message. Whether every
/// partition reached its end.
fn read_to_end(
    consumer: &BaseConsumer,
    topic: &str,
    from: &[(i32, Offset)],
    mut each: impl FnMut(&BorrowedMessage<'_>),
) -> bool {
    let mut open: BTreeMap<i32, Option<i64>> = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for &(partition, start) in from {
        let end = consumer.fetch_watermarks(topic, partition, Duration::from_secs(2)).ok();
        let empty = match (end, start) {
            (Some((low, high)), Offset::Beginning) => high <= low,
            (Some((_, high)), Offset::Offset(o)) => high <= o,
            _ => false,
        };
        if empty {
            continue;
        }
        open.insert(partition, end.map(|(_, high)| high));
        if assignment.add_partition_offset(topic, partition, start).is_err() {
            return false;
        }
    }
    if open.is_empty() {
        return true;
    }
    if consumer.assign(&assignment).is_err() {
        return false;
    }
    let deadline = Instant::now() + READ_LIMIT;
    let mut last_seen = Instant::now();
    while !open.is_empty() && Instant::now() < deadline && last_seen.elapsed() < READ_IDLE {
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(message)) => {
                last_seen = Instant::now();
                each(&message);
                let partition = message.partition();
                if let Some(Some(end)) = open.get(&partition) {
                    if message.offset() + 1 >= *end {
                        open.remove(&partition);
                    }
                }
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => {
                open.remove(&partition);
            }
            Some(Err(error)) => debug!(topic, %error, "Reading to the end."),
            None => {}
        }
    }
    open.is_empty()
}

/// The identity of an alert as a sink wrote it.
fn identity_of(format: SinkFormat, payload: &[u8]) -> Option<AlertIdentity> {
    match format {
        SinkFormat::Json => {
            let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
            Some(AlertIdentity {
                rule_id: v.get("rule_id")?.as_str()?.into(),
                instrument: v.get("instrument")?.as_str()?.into(),
                kind: AlertKind::from_name(v.get("kind")?.as_str()?)?,
                event_time_ns: v.get("event_time_ns")?.as_i64()?,
                tick_seq: v.get("tick_seq").and_then(serde_json::Value::as_u64),
            })
        }
        SinkFormat::Protobuf => {
            let alert = <crate::wire::proto::Alert as prost::Message>::decode(payload).ok()?;
            let kind = AlertKind::from_name(&alert.kind)?;
            Some(AlertIdentity {
                rule_id: alert.rule_id.as_str().into(),
                instrument: alert.instrument.as_str().into(),
                kind,
                event_time_ns: alert.event_time_ns,
                tick_seq: alert.tick_seq,
            })
        }
    }
}

/// A future's output if it is ready now.
fn ready<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

/// Why a state record cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("not a state record (magic or version)")]
    Header,
    #[error("record head: {0}")]
    Head(#[source] postcard::Error),
    #[error(transparent)]
    Checkpoint(#[from] format::FormatError),
}

/// A state record: magic, version, the head in postcard, then the
/// checkpoint file bytes.
fn encode_record(head: &RecordHead, checkpoint: &Checkpoint) -> Result<Vec<u8>, RecordError> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&RECORD_MAGIC);
    out.extend_from_slice(&RECORD_VERSION.to_le_bytes());
    let head = postcard::to_stdvec(head).map_err(RecordError::Head)?;
    out.extend_from_slice(&(head.len() as u32).to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(&format::encode(checkpoint)?);
    Ok(out)
}

fn decode_record(bytes: &[u8]) -> Result<(RecordHead, Checkpoint), RecordError> {
    if bytes.len() < 16 || bytes[..8] != RECORD_MAGIC || bytes[8..12] != RECORD_VERSION.to_le_bytes() {
        return Err(RecordError::Header);
    }
    let len = u32::from_le_bytes(bytes[12..16].try_into().map_err(|_| RecordError::Header)?) as usize;
    let head_bytes = bytes.get(16..16 + len).ok_or(RecordError::Header)?;
    let head = postcard::from_bytes(head_bytes).map_err(RecordError::Head)?;
    let checkpoint = format::decode(&bytes[16 + len..])?;
    Ok((head, checkpoint))
}

/// Runs `f`, which blocks, without holding up the runtime's other tasks
/// when called on one of its workers.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// The source consumer's context: the rebalance callbacks of a group
/// source hand partitions over and take them over.
#[derive(Default)]
pub struct GroupContext {
    pub group: std::sync::OnceLock<Arc<Group>>,
}

impl ClientContext for GroupContext {
    /// librdkafka's statistics (every `statistics.interval.ms`): the lag of
    /// each owned partition, from the high watermarks its fetches returned,
    /// so knowing the lag costs the broker no request of its own.
    fn stats(&self, statistics: rdkafka::Statistics) {
        if let Some(group) = self.group.get() {
            if let Some(topic) = statistics.topics.get(&group.tick_topic) {
                group.note_lags(topic.partitions.iter().map(|(&p, s)| (p, s.consumer_lag)));
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    /// The rebalance itself (rdkafka's default, with the take-over's start
    /// offsets set on the assignment before it is applied).
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        let outcome = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                if let Some(group) = self.group.get() {
                    let assigned = group.partitions_of(tpl);
                    info!(source = %group.name, ?assigned, "Partitions assigned: taking their state over.");
                    let started = Instant::now();
                    let starts = blocking(|| group.take_over(&assigned));
                    for (partition, offset) in starts {
                        if let Err(error) =
                            tpl.set_partition_offset(&group.tick_topic, partition, Offset::Offset(offset))
                        {
                            warn!(source = %group.name, partition, %error, "The restored offset cannot be set: the partition is fetched from its committed offset.");
                        }
                    }
                    group.rebalanced(started);
                }
                if cooperative {
                    consumer.incremental_assign(tpl)
                } else {
                    consumer.assign(tpl)
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                if let Some(group) = self.group.get() {
                    let revoked = group.partitions_of(tpl);
                    let lost = consumer.assignment_lost();
                    info!(source = %group.name, ?revoked, lost, "Partitions revoked: handing their state over.");
                    let started = Instant::now();
                    blocking(|| group.hand_over(consumer, &revoked, lost));
                    group.rebalanced(started);
                }
                if cooperative {
                    consumer.incremental_unassign(tpl)
                } else {
                    consumer.unassign()
                }
            }
            other => {
                let code: rdkafka::error::RDKafkaErrorCode = other.into();
                if let Some(group) = self.group.get() {
                    warn!(source = %group.name, error = %code, "Rebalance error.");
                }
                Ok(())
            }
        };
        if let (Err(error), Some(group)) = (outcome, self.group.get()) {
            warn!(source = %group.name, %error, "The rebalance's assignment was not applied.");
        }
    }
}

impl Group {
    /// The tick topic's partitions in a rebalance's list.
    fn partitions_of(&self, list: &TopicPartitionList) -> Vec<i32> {
        list.elements()
            .iter()
            .filter(|e| e.topic() == self.tick_topic)
            .map(|e| e.partition())
            .collect()
    }

    fn rebalanced(&self, started: Instant) {
        self.stats.rebalances.fetch_add(1, Ordering::Relaxed);
        self.stats
            .last_rebalance_ns
            .store(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }
}

/// Writes the due state records from the source's task.
pub fn write_due_blocking<C: ConsumerContext>(group: &Group, consumer: &impl Consumer<C>) {
    blocking(|| group.write_due(consumer));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_and_damage_is_refused() {
        let head = RecordHead {
            tick_topic: "ticks".into(),
            partition: 3,
            next_offset: 42,
            alert_from: vec![(0, 7), (1, 9)],
            written_at_ns: 5,
        };
        let checkpoint = Checkpoint {
            alert_seq: 4,
            written_at_ns: 5,
            engine: crate::engine::EngineSnapshot {
                ruleset_version: 1,
                rules: Vec::new(),
                rules_in_force: 0,
                instruments: Vec::new(),
                groups: Vec::new(),
            },
        };
        let bytes = encode_record(&head, &checkpoint).unwrap();
        let (back, restored) = decode_record(&bytes).unwrap();
        assert_eq!(
            (back.partition, back.next_offset, back.alert_from),
            (3, 42, vec![(0, 7), (1, 9)])
        );
        assert_eq!(restored, checkpoint);
        let mut damaged = bytes.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 1;
        assert!(matches!(decode_record(&damaged), Err(RecordError::Checkpoint(_))));
        assert!(matches!(decode_record(&bytes[..10]), Err(RecordError::Header)));
    }

    #[test]
    fn identities_come_from_the_sinks_json() {
        let json = br#"{"seq":7,"rule_id":"fall","ruleset_version":1,"instrument":"A","kind":"tripped","severity":"critical","actions":[],"mode":"active","event_time_ns":100,"tick_seq":3,"received_time_ns":1,"emitted_time_ns":2,"values":{}}"#;
        let identity = identity_of(SinkFormat::Json, json).unwrap();
        assert_eq!(
            identity,
            AlertIdentity {
                rule_id: "fall".into(),
                instrument: "A".into(),
                kind: AlertKind::Tripped,
                event_time_ns: 100,
                tick_seq: Some(3),
            }
        );
        assert!(identity_of(SinkFormat::Json, b"{}").is_none());
    }
}
