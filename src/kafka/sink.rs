//! One `[[kafka.sink]]`: a reader of the alert log that produces each
//! matching alert to a topic, in sequence order, and remembers how far it
//! got.
//!
//! The sink is an [`AlertReader`] that never gets cut off
//! ([`WhenBehind::CatchUp`]): when it falls behind, it reads on from the
//! ring and the journal. Up to `max_in_flight` alerts are sent and not yet
//! acknowledged; the oldest is awaited first, so the delivered position
//! (the last sequence number delivered with every matching one before it)
//! only moves forward in order. The producer is idempotent
//! (`enable.idempotence`, `acks = all`) and retries without end
//! (`message.timeout.ms = 0`): while the broker is down, up to
//! `max_in_flight` alerts wait in librdkafka and the rest in the journal,
//! not in memory; when it returns they are delivered in order per key.
//! A delivery that fails for good (the broker refused it) is counted,
//! logged, and the sink starts again from its position after a pause:
//! alerts after it may then reach the topic twice, with the same `seq`.
//!
//! A producer that stops making progress — deliveries in flight and none
//! acknowledged for [`STALL_AFTER`] — is replaced by a new one (a new
//! producer id), and the sink starts again from its position. That covers a
//! broker that lost its producer state (a restarted broker without it, as
//! tansu's memory storage is): librdkafka would otherwise bump the epoch
//! of a producer id the broker no longer knows, and be refused, forever.
//! During an outage it only recreates the (idle) producer every
//! [`STALL_AFTER`]; alerts sent again reach the topic at most twice, with
//! the same `seq`.
//!
//! With `data_dir`, the position is written to
//! `<data_dir>/kafka/sink-<name>.seq` (atomically, by rename) at most every
//! [`PERSIST_EVERY`] and at stop; a restart resumes after it, so an alert
//! delivered after the last write is delivered again (same `seq`):
//! at-least-once, none lost while the journal holds it. Without
//! `data_dir` a sink starts with the alerts raised after it starts.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError as ClientError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use tokio::time::Instant;
use tracing::{info, warn};

use super::metrics::KafkaMetrics;
use super::KafkaError;
use crate::alerts::json::AlertJson;
use crate::alerts::{PublishedAlert, SubscribeError, SubscriptionEnd, SubscriptionFilter, WhenBehind};
use crate::config::kafka::{KafkaSinkConfig, SinkFormat, SinkKey};
use crate::service::Core;
use crate::wire::convert::encode_alert;

/// Longest time between writes of the position while it moves.
pub const PERSIST_EVERY: Duration = Duration::from_millis(200);
/// A producer with deliveries in flight and none acknowledged for this
/// long is replaced.
pub const STALL_AFTER: Duration = Duration::from_secs(5);
/// Pause before starting again after a failed delivery.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// A sink ready to run.
pub struct Sink {
    name: String,
    topic: String,
    key: SinkKey,
    format: SinkFormat,
    filter: SubscriptionFilter,
    max_in_flight: usize,
    producer: FutureProducer,
    /// The producer's configuration, to replace a stalled one.
    client: ClientConfig,
    /// Where the position is kept, with `data_dir`.
    position_file: Option<PathBuf>,
    /// This sink's counters in the Kafka metrics.
    index: usize,
}

impl Sink {
    /// Creates the producer.
    ///
    /// # Errors
    /// librdkafka refuses the configuration, or the filter is bad.
    pub fn new(config: &KafkaSinkConfig, data_dir: Option<&Path>, index: usize) -> Result<Self, KafkaError> {
        let name = config.display_name().to_string();
        let mut client = ClientConfig::new();
        client.set("linger.ms", "1");
        // Back soon after a broker returns (librdkafka's default waits up
        // to 10 s between attempts).
        client.set("reconnect.backoff.max.ms", "1000");
        for (key, value) in &config.properties {
            client.set(key, value);
        }
        client
            .set("bootstrap.servers", config.brokers.join(","))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("message.timeout.ms", "0");
        let producer: FutureProducer = client.create().map_err(|source| KafkaError::Client {
            what: format!("sink `{name}`"),
            source,
        })?;
        let filter = config
            .filter()
            .map_err(|why| KafkaError::Config(format!("sink `{name}`: {why}")))?;
        Ok(Sink {
            position_file: data_dir.map(|dir| dir.join("kafka").join(format!("sink-{name}.seq"))),
            name,
            topic: config.topic.clone(),
            key: config.key,
            format: config.format,
            filter,
            max_in_flight: config.max_in_flight,
            producer,
            client,
            index,
        })
    }

    /// Delivers alerts until the bus closes (shutdown) and every alert
    /// read is delivered or the grace period is over; writes the position.
    pub async fn run(mut self, core: Arc<Core>, metrics: Arc<KafkaMetrics>) {
        let m = &metrics.sinks[self.index].1;
        let mut delivered = match &self.position_file {
            Some(path) => read_position(path),
            None => core.bus().last_seq(),
        };
        m.delivered_seq.store(delivered, Ordering::Relaxed);
        info!(sink = %self.name, topic = %self.topic, from_seq = delivered + 1, "Kafka sink starting.");
        let mut written = delivered;
        let mut from = delivered + 1;
        let mut buf = Vec::new();
        'open: loop {
            let mut reader = match core.bus().reader(self.filter.clone(), from, WhenBehind::CatchUp) {
                Ok(reader) => reader,
                Err(SubscribeError::TooOld { oldest, .. }) => {
                    warn!(sink = %self.name, from_seq = from, oldest, "Alerts the sink had not delivered are no longer kept; it goes on from the oldest kept.");
                    from = oldest.max(1);
                    continue;
                }
                Err(SubscribeError::Ahead { next, .. }) => {
                    warn!(sink = %self.name, from_seq = from, next, "The sink's stored position is past the alert log (a new data folder?); it goes on from the next alert.");
                    from = next;
                    delivered = next - 1;
                    continue;
                }
                Err(_) => break 'open,
            };
            let mut in_flight: VecDeque<(u64, DeliveryFuture)> = VecDeque::new();
            let mut persist = tokio::time::interval(PERSIST_EVERY);
            let mut ended = false;
            // When a delivery was last acknowledged (or the first sent).
            let mut progress = Instant::now();
            loop {
                if in_flight.is_empty() {
                    progress = Instant::now();
                }
                let room = in_flight.len() < self.max_in_flight && !ended;
                tokio::select! {
                    next = std::future::poll_fn(|cx| reader.poll_next_alert(cx)), if room => match next {
                        Some(Ok(alert)) => {
                            let mut future = None;
                            while future.is_none() {
                                match self.send(&core, &alert, &mut buf) {
                                    Ok(f) => future = Some(f),
                                    Err(ClientError::MessageProduction(RDKafkaErrorCode::QueueFull)) => {
                                        // Wait for the oldest delivery.
                                        if let Some(front) = in_flight.front_mut() {
                                            let (seq, f) = front;
                                            let seq = *seq;
                                            let result = f.await;
                                            in_flight.pop_front();
                                            if !self.delivered(result, seq, &mut delivered, m) {
                                                break;
                                            }
                                        } else {
                                            tokio::time::sleep(Duration::from_millis(10)).await;
                                        }
                                    }
                                    Err(error) => {
                                        m.failed.fetch_add(1, Ordering::Relaxed);
                                        warn!(sink = %self.name, seq = alert.seq, %error, "Kafka sink cannot send an alert; starting again from its position.");
                                        break;
                                    }
                                }
                            }
                            match future {
                                Some(f) => in_flight.push_back((alert.seq, f)),
                                None => {
                                    from = delivered + 1;
                                    tokio::time::sleep(RETRY_PAUSE).await;
                                    continue 'open;
                                }
                            }
                        }
                        Some(Err(SubscriptionEnd::Shutdown)) | None => ended = true,
                        Some(Err(end)) => {
                            warn!(sink = %self.name, %end, "Kafka sink's reader ended; opening it again.");
                            from = match end {
                                SubscriptionEnd::ReplayOverrun { oldest, .. } => oldest,
                                SubscriptionEnd::Lost { resume_seq, .. } => resume_seq,
                                _ => delivered + 1,
                            };
                            self.drain(&mut in_flight, &mut delivered, m, Instant::now() + RETRY_PAUSE).await;
                            tokio::time::sleep(RETRY_PAUSE).await;
                            continue 'open;
                        }
                    },
                    () = tokio::time::sleep_until(progress + STALL_AFTER), if !in_flight.is_empty() => {
                        warn!(sink = %self.name, in_flight = in_flight.len(), delivered_seq = delivered, "Kafka sink made no progress for {STALL_AFTER:?}; a new producer sends again from its position.");
                        m.failed.fetch_add(1, Ordering::Relaxed);
                        drop(in_flight);
                        self.replace_producer();
                        from = delivered + 1;
                        continue 'open;
                    }
                    result = oldest(&mut in_flight), if !in_flight.is_empty() => {
                        progress = Instant::now();
                        let (seq, _) = in_flight.pop_front().expect("guarded");
                        if !self.delivered(result, seq, &mut delivered, m) {
                            // Everything after it goes again.
                            from = delivered + 1;
                            drop(in_flight);
                            tokio::time::sleep(RETRY_PAUSE).await;
                            continue 'open;
                        }
                    }
                    _ = persist.tick() => {
                        if delivered != written {
                            self.persist(delivered);
                            written = delivered;
                        }
                    }
                }
                if ended {
                    // The bus closed: what was read is delivered, within
                    // the grace period.
                    let grace = Duration::from_millis(core.config().shutdown_grace_ms);
                    self.drain(&mut in_flight, &mut delivered, m, Instant::now() + grace)
                        .await;
                    if !in_flight.is_empty() {
                        warn!(sink = %self.name, undelivered = in_flight.len(), delivered_seq = delivered, "Kafka sink stopping with alerts unacknowledged; they are sent again after a restart.");
                    }
                    break 'open;
                }
            }
        }
        if delivered != written {
            self.persist(delivered);
        }
        let _ = self.producer.flush(Duration::from_millis(100));
        info!(sink = %self.name, delivered_seq = delivered, "Kafka sink stopped.");
    }

    /// A new producer in place of the current one, which is purged and
    /// dropped on a blocking thread (its drop waits for librdkafka).
    fn replace_producer(&mut self) {
        match self.client.create::<FutureProducer>() {
            Ok(producer) => {
                let old = std::mem::replace(&mut self.producer, producer);
                old.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
                tokio::task::spawn_blocking(move || drop(old));
            }
            Err(error) => {
                warn!(sink = %self.name, %error, "Cannot create a new Kafka producer; keeping the old one.");
            }
        }
    }

    /// Sends one alert; the delivery is awaited by the caller.
    fn send(&self, core: &Core, published: &PublishedAlert, buf: &mut Vec<u8>) -> Result<DeliveryFuture, ClientError> {
        let alert = &published.alert;
        let underlying;
        let key: &str = match self.key {
            SinkKey::Instrument => &alert.instrument,
            SinkKey::Underlying => {
                underlying = core
                    .engine()
                    .ruleset()
                    .refdata
                    .instrument(&alert.instrument)
                    .and_then(|r| r.underlying.clone());
                underlying.as_deref().unwrap_or(&alert.instrument)
            }
        };
        let payload: &[u8] = match self.format {
            SinkFormat::Json => {
                buf.clear();
                AlertJson::of(published).write_json(buf);
                buf
            }
            SinkFormat::Protobuf => published.encoded(encode_alert),
        };
        let record = FutureRecord::to(&self.topic).key(key).payload(payload);
        self.producer.send_result(record).map_err(|(e, _)| e)
    }

    /// Takes one delivery's outcome: whether it was delivered.
    fn delivered(&self, result: Delivered, seq: u64, delivered: &mut u64, m: &super::metrics::SinkMetrics) -> bool {
        match result {
            Ok(Ok(delivery)) => {
                let mut acked = m.acked_offsets.lock();
                let newest = acked.entry(delivery.partition).or_insert(delivery.offset);
                *newest = (*newest).max(delivery.offset);
                drop(acked);
                *delivered = (*delivered).max(seq);
                m.delivered_seq.store(*delivered, Ordering::Relaxed);
                m.produced.fetch_add(1, Ordering::Relaxed);
                true
            }
            Ok(Err((error, _))) => {
                m.failed.fetch_add(1, Ordering::Relaxed);
                warn!(sink = %self.name, seq, %error, "Kafka sink delivery failed; sending again from its position.");
                false
            }
            Err(_) => false,
        }
    }

    /// Awaits the deliveries in flight, in order, until `deadline`.
    async fn drain(
        &self,
        in_flight: &mut VecDeque<(u64, DeliveryFuture)>,
        delivered: &mut u64,
        m: &super::metrics::SinkMetrics,
        deadline: Instant,
    ) {
        while let Some((seq, future)) = in_flight.front_mut() {
            let seq = *seq;
            match tokio::time::timeout_at(deadline, future).await {
                Ok(result) => {
                    in_flight.pop_front();
                    if !self.delivered(result, seq, delivered, m) {
                        in_flight.clear();
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }

    fn persist(&self, seq: u64) {
        let Some(path) = &self.position_file else {
            return;
        };
        if let Err(error) = write_position(path, seq) {
            warn!(sink = %self.name, path = %path.display(), %error, "Cannot write the Kafka sink's position; a restart sends more again.");
        }
    }
}

/// A delivery's outcome; `Err` when the producer went away first.
type Delivered = <DeliveryFuture as std::future::Future>::Output;

/// The outcome of the oldest delivery in flight (pending while none).
async fn oldest(in_flight: &mut VecDeque<(u64, DeliveryFuture)>) -> Delivered {
    match in_flight.front_mut() {
        Some((_, delivery)) => delivery.await,
        None => std::future::pending().await,
    }
}

/// The position in `path`, 0 when there is none (or it cannot be read:
/// then every alert the journal holds is sent again).
fn read_position(path: &Path) -> u64 {
    match std::fs::read_to_string(path) {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| {
            warn!(path = %path.display(), "The Kafka sink's position file is damaged; sending from the first alert kept.");
            0
        }),
        Err(_) => 0,
    }
}

/// Writes `seq` to `path` by rename, so a crash leaves the old or the new.
fn write_position(path: &Path, seq: u64) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("seq.tmp");
    std::fs::write(&tmp, format!("{seq}\n"))?;
    std::fs::rename(&tmp, path)
}
