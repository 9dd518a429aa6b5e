//! `airbag kafka bench`: what the Kafka path costs, against a broker, in
//! one run so that the figures are ratios on the same machine.
//!
//! 1. **Throughput.** `--ticks` synthetic ticks (calm random walks over
//!    `--instruments`) are produced once to a fresh tick topic. Then, for
//!    `--rounds` rounds: a bare rdkafka consumer reads the whole topic
//!    (every message's payload touched, nothing decoded), and an Airbag
//!    service in this process (the rules folder, a `[[kafka.source]]` with
//!    `partitions = "all"` and a fresh group) reads and applies it. The
//!    report gives both rates' medians and the median of the per-round
//!    ratio Airbag / bare.
//! 2. **Tick-to-alert.** A service with a source and a `[[kafka.sink]]`;
//!    ticks produced at `--rate` for `--seconds`, every `--crash-every-ms`
//!    one instrument (a new one each time) falling 15% in one tick; an
//!    alert-topic consumer matches each `fired` alert to its crash tick.
//!    Latency is from handing the crash tick to the producer to reading
//!    its alert from the alert topic: p50/p99/p99.9/max.
//!
//! 3. **Instances in a group** (with `--instances 1,2,3`): the throughput
//!    topic read by that many services sharing it in one consumer group
//!    ([`group`]).
//!
//! Topics are created with the run's own names (`airbag-bench-PID-...`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use prost::Message as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
use rdkafka::{Offset, TopicPartitionList};

use crate::clock::{Clock as _, SystemClock};
use crate::config::kafka::{KafkaConfig, KafkaSinkConfig, KafkaSourceConfig, SourceFormat, SourcePartitions};
use crate::config::ServiceConfig;
use crate::wire::proto;

mod group;

/// `airbag kafka bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Bootstrap brokers, `host:port[,host:port...]`.
    #[arg(long, value_name = "HOST:PORT,...")]
    pub brokers: String,
    /// The rules folder the service runs.
    #[arg(long, value_name = "DIR", default_value = "rules")]
    pub rules: PathBuf,
    /// Ticks in the throughput topic.
    #[arg(long, default_value_t = 500_000)]
    pub ticks: u64,
    /// Instruments the ticks are spread over (the tick-to-alert phase
    /// crashes each at most once: keep above `--seconds` × 1000 /
    /// `--crash-every-ms`).
    #[arg(long, default_value_t = 10_000)]
    pub instruments: u32,
    /// Partitions of the tick topics.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Throughput rounds (bare consumer, then Airbag, each round).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Tick rate of the tick-to-alert phase, ticks/s.
    #[arg(long, default_value_t = 50_000.0)]
    pub rate: f64,
    /// Length of the tick-to-alert phase.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
    /// A crash tick every this many ms in the tick-to-alert phase.
    #[arg(long, default_value_t = 10)]
    pub crash_every_ms: u64,
    /// `fetch.wait.max.ms` of the service's source and of the alert reader
    /// in the tick-to-alert phase (librdkafka's default is 500).
    #[arg(long, default_value_t = 5)]
    pub fetch_wait_ms: u64,
    /// Skip a phase: `throughput` or `latency`.
    #[arg(long, value_name = "PHASE")]
    pub skip: Vec<String>,
    /// Also read the throughput topic with this many services in one
    /// consumer group, each count in turn (e.g. `1,2,3`).
    #[arg(long, value_name = "N,...", value_delimiter = ',')]
    pub instances: Vec<usize>,
}

const BASE_PRICE: f64 = 100.0;

fn client(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

fn instrument(i: u32) -> String {
    format!("KB-{i:05}")
}

fn tick(instrument: &str, seq: u64, price: f64) -> Vec<u8> {
    let now_ns = SystemClock.now_ns();
    proto::Tick {
        instrument: instrument.to_string(),
        event_time_ns: now_ns,
        seq,
        values: Some(proto::tick::Values::Trade(proto::Trade {
            price: Some(proto::Decimal {
                mantissa: (price * 100.0).round() as i64,
                scale: 2,
            }),
            size: Some(proto::Decimal { mantissa: 1, scale: 0 }),
            side: 0,
        })),
    }
    .encode_to_vec()
}

async fn create_topics(brokers: &str, names: &[(&str, i32)]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = client(brokers).create().context("admin client")?;
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin
        .create_topics(&topics, &options)
        .await
        .context("creating topics")?
    {
        result.map_err(|(topic, code)| anyhow::anyhow!("cannot create topic {topic}: {code}"))?;
    }
    Ok(())
}

/// Sends one message, waiting for queue room.
fn send(producer: &BaseProducer, topic: &str, key: &str, payload: &[u8]) -> anyhow::Result<()> {
    let mut record = BaseRecord::to(topic).key(key).payload(payload);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(1));
            }
            Err((error, _)) => anyhow::bail!("producing to {topic}: {error}"),
        }
    }
}

/// The calm throughput topic: `ticks` ticks, instrument by instrument in
/// turn, each a small random step.
fn produce_calm(brokers: &str, topic: &str, ticks: u64, instruments: u32) -> anyhow::Result<Duration> {
    let producer: BaseProducer = client(brokers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "200000")
        .create()
        .context("producer")?;
    let names: Vec<String> = (0..instruments).map(instrument).collect();
    let start = Instant::now();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for n in 0..ticks {
        let i = (n % u64::from(instruments)) as usize;
        let seq = n / u64::from(instruments) + 1;
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let price = BASE_PRICE * (1.0 + ((state % 201) as f64 - 100.0) / 100_000.0);
        send(&producer, topic, &names[i], &tick(&names[i], seq, price))?;
        if n.is_multiple_of(10_000) {
            producer.poll(Duration::ZERO);
        }
    }
    producer
        .flush(Duration::from_secs(60))
        .context("flushing the tick topic")?;
    Ok(start.elapsed())
}

/// A bare consumer (the `StreamConsumer` the source uses, with its
/// defaults) reads `ticks` messages of every partition from the start,
/// touching each payload: how long it took.
async fn bare_read(brokers: &str, topic: &str, partitions: i32, ticks: u64, round: u32) -> anyhow::Result<Duration> {
    let consumer: StreamConsumer = client(brokers)
        .set("group.id", format!("airbag-bench-bare-{}-{round}", std::process::id()))
        .set("enable.auto.commit", "false")
        .create()
        .context("consumer")?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    let start = Instant::now();
    consumer.assign(&assignment)?;
    let (mut read, mut bytes) = (0u64, 0usize);
    while read < ticks {
        let message = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .map_err(|_| anyhow::anyhow!("bare consumer: {read} of {ticks}, then nothing for 30 s"))??;
        bytes += message.payload().map_or(0, <[u8]>::len);
        read += 1;
    }
    std::hint::black_box(bytes);
    Ok(start.elapsed())
}

fn service_config(args: &BenchArgs, kafka: KafkaConfig) -> ServiceConfig {
    ServiceConfig {
        rules: args.rules.clone(),
        max_instruments: args.instruments.max(1_000) * 2,
        kafka,
        ..ServiceConfig::default()
    }
}

fn source(args: &BenchArgs, topic: &str, group: String) -> KafkaSourceConfig {
    KafkaSourceConfig {
        brokers: vec![args.brokers.clone()],
        topics: vec![topic.to_string()],
        group_id: group,
        partitions: SourcePartitions::All,
        format: SourceFormat::ProtobufTick,
        ..KafkaSourceConfig::default()
    }
}

async fn start_service(config: ServiceConfig) -> anyhow::Result<crate::app::Running> {
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    crate::app::start_on(config, grpc, metrics)
        .await
        .context("starting the service")
}

/// The service reads and applies the whole topic: how long it took.
async fn airbag_read(args: &BenchArgs, topic: &str, round: u32) -> anyhow::Result<Duration> {
    let group = format!("airbag-bench-{}-{round}", std::process::id());
    let kafka = KafkaConfig {
        source: vec![source(args, topic, group)],
        sink: Vec::new(),
    };
    let start = Instant::now();
    let running = start_service(service_config(args, kafka)).await?;
    let core = running.core().clone();
    while core.metrics().ticks_received.load(Ordering::Relaxed) < args.ticks {
        if start.elapsed() > Duration::from_secs(300) {
            anyhow::bail!("the service read too few ticks in 300 s");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let took = start.elapsed();
    running.shutdown().await.context("stopping the service")?;
    Ok(took)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Runs the benchmark and prints its report.
///
/// # Errors
/// The broker, a topic, the rules or the service failed.
pub async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let pid = std::process::id();
    let ticks_topic = format!("airbag-bench-{pid}-ticks");
    let live_topic = format!("airbag-bench-{pid}-live");
    let alerts_topic = format!("airbag-bench-{pid}-alerts");
    create_topics(
        &args.brokers,
        &[
            (&ticks_topic, args.partitions),
            (&live_topic, args.partitions),
            (&alerts_topic, 1),
        ],
    )
    .await?;
    let skipped = |phase: &str| args.skip.iter().any(|s| s == phase);
    if !skipped("throughput") || !args.instances.is_empty() {
        let (brokers, t, ticks, instruments) =
            (args.brokers.clone(), ticks_topic.clone(), args.ticks, args.instruments);
        let produced = tokio::task::spawn_blocking(move || produce_calm(&brokers, &t, ticks, instruments)).await??;
        println!(
            "throughput: {} ticks over {} instruments, {} partitions, produced in {:.2} s",
            args.ticks,
            args.instruments,
            args.partitions,
            produced.as_secs_f64()
        );
    }
    if !skipped("throughput") {
        throughput(args, &ticks_topic).await?;
    }
    if !args.instances.is_empty() {
        group::instances(args, &ticks_topic).await?;
    }
    if !skipped("latency") {
        latency(args, &live_topic, &alerts_topic).await?;
    }
    Ok(())
}

async fn throughput(args: &BenchArgs, topic: &str) -> anyhow::Result<()> {
    let ticks = args.ticks;
    let (mut bare_rates, mut airbag_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..args.rounds {
        let bare = bare_read(&args.brokers, topic, args.partitions, ticks, round).await?;
        let airbag = airbag_read(args, topic, round).await?;
        let (bare_rate, airbag_rate) = (
            args.ticks as f64 / bare.as_secs_f64(),
            args.ticks as f64 / airbag.as_secs_f64(),
        );
        println!(
            "  round {round}: bare consumer {:.0} ticks/s, Airbag source + rules {:.0} ticks/s, ratio {:.2}",
            bare_rate,
            airbag_rate,
            airbag_rate / bare_rate
        );
        bare_rates.push(bare_rate);
        airbag_rates.push(airbag_rate);
        ratios.push(airbag_rate / bare_rate);
    }
    println!(
        "throughput medians: bare {:.0} ticks/s, Airbag {:.0} ticks/s, ratio {:.2}",
        median(bare_rates),
        median(airbag_rates),
        median(ratios)
    );
    Ok(())
}

/// Tick-to-alert, in ns: in total, and split at the alert bus (the tick
/// made to its alert published; the alert published to its read from the
/// alert topic; both by the wall clock).
struct Latencies {
    total: Histogram<u64>,
    to_bus: Histogram<u64>,
    to_reader: Histogram<u64>,
}

/// Crash ticks handed to the producer, by (instrument, seq).
type Sent = Arc<Mutex<HashMap<(String, u64), Instant>>>;

async fn latency(args: &BenchArgs, topic: &str, alerts_topic: &str) -> anyhow::Result<()> {
    let crashes = args.seconds * 1_000 / args.crash_every_ms.max(1);
    anyhow::ensure!(
        crashes < u64::from(args.instruments),
        "--instruments must exceed the {crashes} crashes of the run (each instrument crashes once)"
    );
    let mut live = source(args, topic, format!("airbag-bench-live-{}", std::process::id()));
    live.properties
        .insert("fetch.wait.max.ms".into(), args.fetch_wait_ms.to_string());
    let kafka = KafkaConfig {
        source: vec![live],
        sink: vec![KafkaSinkConfig {
            brokers: vec![args.brokers.clone()],
            topic: alerts_topic.to_string(),
            ..KafkaSinkConfig::default()
        }],
    };
    let running = start_service(service_config(args, kafka)).await?;
    let sent: Sent = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (brokers, topic, sent, stop) = (
            args.brokers.clone(),
            alerts_topic.to_string(),
            sent.clone(),
            stop.clone(),
        );
        let wait = args.fetch_wait_ms;
        std::thread::spawn(move || read_alerts(&brokers, &topic, wait, &sent, &stop))
    };
    // The baseline: a bare consumer of the tick topic, in the same run,
    // timing the crash ticks themselves.
    let baseline = {
        let (brokers, topic, sent, stop) = (args.brokers.clone(), topic.to_string(), sent.clone(), stop.clone());
        let (wait, partitions) = (args.fetch_wait_ms, args.partitions);
        std::thread::spawn(move || read_ticks(&brokers, &topic, partitions, wait, &sent, &stop))
    };
    // Give the service's consumer and the readers time to be assigned.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let producing = {
        let (args, topic, sent) = (args.clone(), topic.to_string(), sent.clone());
        tokio::task::spawn_blocking(move || produce_live(&args, &topic, &sent))
    };
    let produced = producing.await??;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    let histogram = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the alert reader panicked"))??;
    let baseline = baseline
        .join()
        .map_err(|_| anyhow::anyhow!("the tick reader panicked"))??;
    running.shutdown().await.context("stopping the service")?;
    let line = |h: &Histogram<u64>| {
        let ms = |ns: u64| ns as f64 / 1e6;
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.max())
        )
    };
    println!(
        "tick-to-alert at {:.0} ticks/s for {} s ({} ticks, {} crashes, {} alerts read): {}",
        produced.0,
        args.seconds,
        produced.1,
        crashes,
        histogram.total.len(),
        line(&histogram.total)
    );
    println!("  tick made -> alert published: {}", line(&histogram.to_bus));
    println!(
        "  alert published -> read from the alert topic: {}",
        line(&histogram.to_reader)
    );
    println!(
        "  baseline, crash tick produced -> read by a bare consumer of the tick topic ({} read): {}",
        baseline.len(),
        line(&baseline)
    );
    anyhow::ensure!(!histogram.total.is_empty(), "no alert came back from the alert topic");
    Ok(())
}

/// Ticks at `--rate` for `--seconds`, a crash (and the next tick, a
/// recovery) every `--crash-every-ms`: the rate reached and the ticks sent.
fn produce_live(args: &BenchArgs, topic: &str, sent: &Sent) -> anyhow::Result<(f64, u64)> {
    let producer: BaseProducer = client(&args.brokers)
        .set("linger.ms", "1")
        .set("queue.buffering.max.messages", "200000")
        .create()
        .context("producer")?;
    let names: Vec<String> = (0..args.instruments).map(instrument).collect();
    let mut seqs = vec![0u64; names.len()];
    let start = Instant::now();
    let end = start + Duration::from_secs(args.seconds);
    let crash_every = Duration::from_millis(args.crash_every_ms.max(1));
    let mut next_crash = start + crash_every;
    let mut crashed = 0usize;
    let mut recover: Option<usize> = None;
    let mut n = 0u64;
    let mut calm = 0usize;
    while Instant::now() < end {
        // Pace: tick n is due at n / rate.
        let due = start + Duration::from_secs_f64(n as f64 / args.rate);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let (i, price) = if let Some(i) = recover.take() {
            (i, BASE_PRICE)
        } else if Instant::now() >= next_crash && crashed < names.len() {
            next_crash += crash_every;
            let i = names.len() - 1 - crashed;
            crashed += 1;
            recover = Some(i);
            seqs[i] += 1;
            let payload = tick(&names[i], seqs[i], BASE_PRICE * 0.85);
            sent.lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .insert((names[i].clone(), seqs[i]), Instant::now());
            send(&producer, topic, &names[i], &payload)?;
            n += 1;
            producer.poll(Duration::ZERO);
            continue;
        } else {
            calm = (calm + 1) % (names.len() - crashed).max(1);
            (calm, BASE_PRICE)
        };
        seqs[i] += 1;
        send(&producer, topic, &names[i], &tick(&names[i], seqs[i], price))?;
        n += 1;
        if n.is_multiple_of(100) {
            producer.poll(Duration::ZERO);
        }
    }
    producer
        .flush(Duration::from_secs(30))
        .context("flushing the live topic")?;
    Ok((n as f64 / start.elapsed().as_secs_f64(), n))
}

/// Reads alerts (JSON) until told to stop; the latency of each `fired`
/// alert whose crash tick was sent, in ns.
fn read_alerts(
    brokers: &str,
    topic: &str,
    fetch_wait_ms: u64,
    sent: &Sent,
    stop: &AtomicBool,
) -> anyhow::Result<Latencies> {
    let consumer = reader(brokers, "reader", topic, 1, fetch_wait_ms).context("alert consumer")?;
    let mut histogram = Latencies {
        total: Histogram::new_with_bounds(1_000, 60_000_000_000, 3)?,
        to_bus: Histogram::new_with_bounds(1_000, 60_000_000_000, 3)?,
        to_reader: Histogram::new_with_bounds(1_000, 60_000_000_000, 3)?,
    };
    while !stop.load(Ordering::SeqCst) {
        let Some(message) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let read_at = Instant::now();
        let message = message?;
        let alert: serde_json::Value = serde_json::from_slice(message.payload().unwrap_or_default())?;
        if alert["kind"] != "fired" {
            continue;
        }
        let key = (
            alert["instrument"].as_str().unwrap_or_default().to_string(),
            alert["tick_seq"].as_u64().unwrap_or(0),
        );
        let sent_at = sent.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.get(&key).copied();
        if let Some(sent_at) = sent_at {
            histogram.total.saturating_record((read_at - sent_at).as_nanos() as u64);
            // The tick's event time is when it was made, the alert's
            // emitted time when the service published it.
            let now_ns = SystemClock.now_ns();
            let made_ns = alert["event_time_ns"].as_i64().unwrap_or(now_ns);
            let emitted_ns = alert["emitted_time_ns"].as_i64().unwrap_or(now_ns);
            histogram.to_bus.saturating_record((emitted_ns - made_ns).max(0) as u64);
            histogram
                .to_reader
                .saturating_record((now_ns - emitted_ns).max(0) as u64);
        }
    }
    Ok(histogram)
}

/// A consumer of partitions 0..`partitions` of `topic`, from the start,
/// committing nothing.
fn reader(brokers: &str, name: &str, topic: &str, partitions: i32, fetch_wait_ms: u64) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = client(brokers)
        .set("group.id", format!("airbag-bench-{name}-{}", std::process::id()))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", fetch_wait_ms.to_string())
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}

/// The baseline: a bare consumer of the tick topic (every partition, from
/// the start) times each crash tick from its hand-over to the producer.
fn read_ticks(
    brokers: &str,
    topic: &str,
    partitions: i32,
    fetch_wait_ms: u64,
    sent: &Sent,
    stop: &AtomicBool,
) -> anyhow::Result<Histogram<u64>> {
    let consumer = reader(brokers, "ticks", topic, partitions, fetch_wait_ms).context("tick consumer")?;
    let mut histogram = Histogram::<u64>::new_with_bounds(1_000, 60_000_000_000, 3)?;
    while !stop.load(Ordering::SeqCst) {
        let Some(message) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let read_at = Instant::now();
        let message = message?;
        let Ok(tick) = proto::Tick::decode(message.payload().unwrap_or_default()) else {
            continue;
        };
        let sent_at = sent
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .get(&(tick.instrument, tick.seq))
            .copied();
        if let Some(sent_at) = sent_at {
            histogram.saturating_record((read_at - sent_at).as_nanos() as u64);
        }
    }
    Ok(histogram)
}
