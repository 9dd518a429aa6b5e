//! `airbag kafka`: client tools for the Kafka side of the service.
//!
//! - `airbag kafka produce --brokers B --topic T FILE.csv`: a tick file (the
//!   reader `send` and `replay` use, [`crate::tick_file`]) to a topic, one
//!   tick per message, keyed by instrument, as a `Tick` or `TickBatch`
//!   protobuf or as a JSON object with the default field names
//!   (`{"instrument":..,"ts_ns":..,"seq":..,"kind":"trade","price":"..",..}`,
//!   which a `[[kafka.source]]` with `format = "json"` and no mapping
//!   reads). Keys go to partitions by `--partitioner` (default
//!   `murmur2_random`, the Java client's choice, so an instrument lands
//!   where other producers put it).
//! - `airbag kafka tail --brokers B --topic T`: alerts from a topic as JSON
//!   lines, the object `airbag subscribe` prints
//!   ([`crate::alerts::json`]); a `[[kafka.sink]]` with `format = "json"`
//!   writes that object already, and one with `format = "protobuf"`
//!   writes `Alert`s, which are converted to it.
//!
//! Both are thin: librdkafka does the work. Without the `kafka` cargo
//! feature they say so and fail.

use std::path::PathBuf;

/// `airbag kafka ...`.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum KafkaCommand {
    /// Produce a tick file (CSV, plain or gzip) to a topic, one tick per
    /// message, keyed by instrument.
    Produce(Box<ProduceArgs>),
    /// Print the alerts on a topic as JSON lines (the object `airbag
    /// subscribe` prints).
    Tail(TailArgs),
    /// Measure the Kafka path against a broker: the source's throughput
    /// as a ratio to a bare consumer's, and tick-to-alert latency through
    /// the source, the rules and the sink.
    #[cfg(feature = "kafka")]
    Bench(Box<crate::cli::kafka_bench::BenchArgs>),
}

/// How `produce` writes a tick.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TickFormat {
    /// One `Tick` protobuf per message (`format = "protobuf_tick"`).
    #[value(alias = "protobuf_tick", alias = "protobuf-tick")]
    Protobuf,
    /// One `TickBatch` of one tick per message (`format = "protobuf_batch"`).
    #[value(alias = "protobuf_batch")]
    ProtobufBatch,
    /// One JSON object per message with the default field names
    /// (`format = "json"`, no mapping).
    Json,
}

/// How `tail` reads an alert.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertFormat {
    /// JSON when the message starts with `{`, else an `Alert` protobuf.
    Auto,
    Json,
    Protobuf,
}

/// `airbag kafka produce`.
#[derive(clap::Args, Debug, Clone)]
pub struct ProduceArgs {
    /// Bootstrap brokers, `host:port[,host:port...]`.
    #[arg(long, value_name = "HOST:PORT,...")]
    pub brokers: String,
    /// The topic (it must exist).
    #[arg(long, value_name = "TOPIC")]
    pub topic: String,
    #[arg(long, value_enum, default_value_t = TickFormat::Protobuf)]
    pub format: TickFormat,
    /// librdkafka's partitioner; `murmur2_random` places keys as the Java
    /// client does.
    #[arg(long, default_value = "murmur2_random", value_name = "NAME")]
    pub partitioner: String,
    /// Ticks per second; 0 produces as fast as the broker takes them.
    #[arg(long, default_value_t = 0.0, value_name = "TICKS_PER_S")]
    pub rate: f64,
    /// A librdkafka property, `key=value` (`security.protocol=ssl`, ...);
    /// repeat for several.
    #[arg(long = "property", short = 'X', value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
    /// Stop at the first row that cannot be read instead of skipping it.
    #[arg(long)]
    pub strict: bool,
    /// The tick file (CSV with a header, plain or gzip): by default
    /// `instrument`, `ts_ms` (or `ts_ns`), `price`, `size` and optionally
    /// `seq`, `kind`, `side`, `bid`, `ask`, `bid_size`, `ask_size`; other
    /// layouts through the column flags, as `airbag replay` reads them.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub columns: crate::cli::columns::ColumnArgs,
}

/// `airbag kafka tail`.
#[derive(clap::Args, Debug, Clone)]
pub struct TailArgs {
    /// Bootstrap brokers, `host:port[,host:port...]`.
    #[arg(long, value_name = "HOST:PORT,...")]
    pub brokers: String,
    /// The alert topic.
    #[arg(long, value_name = "TOPIC")]
    pub topic: String,
    /// Read every partition from its first message (default: only alerts
    /// produced from now on).
    #[arg(long)]
    pub from_beginning: bool,
    /// Exit successfully after printing this many alerts.
    #[arg(long, value_name = "N")]
    pub max: Option<u64>,
    /// Stop after this many seconds without a new alert (0: never). With
    /// `--max` not reached, that is a failure.
    #[arg(long, default_value_t = 0.0, value_name = "SECONDS")]
    pub timeout: f64,
    /// Drop an alert whose sequence number was printed already (the sink
    /// delivers at least once).
    #[arg(long)]
    pub dedup: bool,
    #[arg(long, value_enum, default_value_t = AlertFormat::Auto)]
    pub format: AlertFormat,
    /// A librdkafka property, `key=value`; repeat for several.
    #[arg(long = "property", short = 'X', value_name = "KEY=VALUE")]
    pub properties: Vec<String>,
}

/// Runs one `airbag kafka` command.
///
/// # Errors
/// The command failed (see each command).
pub async fn run(command: KafkaCommand) -> anyhow::Result<()> {
    #[cfg(feature = "kafka")]
    {
        match command {
            KafkaCommand::Produce(args) => {
                let summary = imp::produce(&args).await?;
                eprintln!("{summary}");
                Ok(())
            }
            KafkaCommand::Tail(args) => imp::tail(&args).await,
            KafkaCommand::Bench(args) => crate::cli::kafka_bench::run(&args).await,
        }
    }
    #[cfg(not(feature = "kafka"))]
    {
        drop(command);
        anyhow::bail!("this build has no Kafka support (cargo feature `kafka`)")
    }
}

/// `key=value` pairs.
fn properties(pairs: &[String]) -> anyhow::Result<Vec<(&str, &str)>> {
    pairs
        .iter()
        .map(|pair| {
            pair.split_once('=')
                .filter(|(k, _)| !k.trim().is_empty())
                .map(|(k, v)| (k.trim(), v))
                .ok_or_else(|| anyhow::anyhow!("--property `{pair}`: expected KEY=VALUE"))
        })
        .collect()
}

/// One tick as the JSON object `produce --format json` writes: the
/// default field names of a JSON source, decimals as exact strings.
pub fn tick_json(record: &crate::tick_file::TickRecord, out: &mut Vec<u8>) {
    use crate::model::{Side, TickValues};
    use std::io::Write as _;
    out.clear();
    let mut instrument = Vec::new();
    let _ = serde_json::to_writer(&mut instrument, &*record.instrument);
    let _ = write!(
        out,
        r#"{{"instrument":{},"ts_ns":{},"seq":{},"kind":"{}""#,
        String::from_utf8_lossy(&instrument),
        record.event_time_ns,
        record.seq,
        record.kind().name()
    );
    let _ = match record.values {
        TickValues::Trade { price, size, side } => {
            let side = match side {
                Some(Side::Buy) => r#","side":"buy""#,
                Some(Side::Sell) => r#","side":"sell""#,
                None => "",
            };
            write!(out, r#","price":"{price}","size":"{size}"{side}}}"#)
        }
        TickValues::Quote {
            bid,
            ask,
            bid_size,
            ask_size,
        } => write!(
            out,
            r#","bid":"{bid}","ask":"{ask}","bid_size":"{bid_size}","ask_size":"{ask_size}"}}"#
        ),
        TickValues::Mark { price } | TickValues::Index { price } => write!(out, r#","price":"{price}"}}"#),
    };
}

#[cfg(feature = "kafka")]
mod imp {
    use std::collections::{HashSet, VecDeque};
    use std::fmt;
    use std::io::Write as _;
    use std::time::{Duration, Instant};

    use anyhow::Context as _;
    use prost::Message as _;
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use rdkafka::message::Message as _;
    use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
    use rdkafka::{Offset, TopicPartitionList};

    use super::{properties, tick_json, AlertFormat, ProduceArgs, TailArgs, TickFormat};
    use crate::alerts::json::AlertJson;
    use crate::cli::pace::Pacer;
    use crate::cli::wire::{self, thousands};
    use crate::tick_file::TickReader;
    use crate::wire::proto;

    /// Messages produced and not yet acknowledged, at most.
    const IN_FLIGHT: usize = 10_000;
    /// The longest `produce` waits for the last acknowledgements.
    const ACK_WAIT: Duration = Duration::from_secs(30);
    /// Rows unread that are quoted in the summary.
    const EXAMPLES: usize = 3;

    /// What `produce` did.
    #[derive(Debug, Default)]
    pub struct ProduceSummary {
        pub topic: String,
        pub ticks: u64,
        pub unreadable: u64,
        pub examples: Vec<String>,
        pub elapsed: Duration,
    }

    impl fmt::Display for ProduceSummary {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            let rate = self.ticks as f64 / self.elapsed.as_secs_f64().max(1e-9);
            write!(
                f,
                "produced {} ticks to {} in {:.2} s ({} ticks/s); {} rows unreadable",
                thousands(self.ticks),
                self.topic,
                self.elapsed.as_secs_f64(),
                thousands(rate as u64),
                thousands(self.unreadable)
            )?;
            for example in &self.examples {
                write!(f, "\n  {example}")?;
            }
            Ok(())
        }
    }

    fn client(brokers: &str, extra: &[String]) -> anyhow::Result<ClientConfig> {
        let mut client = ClientConfig::new();
        for (key, value) in properties(extra)? {
            client.set(key, value);
        }
        client.set("bootstrap.servers", brokers);
        Ok(client)
    }

    /// Produces every readable tick of the file, each acknowledged.
    ///
    /// # Errors
    /// The file cannot be read (or, with `--strict`, a row), librdkafka
    /// refuses the properties, or a message is not acknowledged.
    pub async fn produce(args: &ProduceArgs) -> anyhow::Result<ProduceSummary> {
        let mapping = args.columns.mapping()?;
        let mut reader =
            TickReader::open_with(&args.file, &mapping).map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
        let producer: FutureProducer = client(&args.brokers, &args.properties)?
            .set("partitioner", &args.partitioner)
            .set("linger.ms", "5")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "30000")
            .create()
            .context("cannot create the Kafka producer")?;
        let mut summary = ProduceSummary {
            topic: args.topic.clone(),
            ..ProduceSummary::default()
        };
        let start = Instant::now();
        let mut pacer = Pacer::new(args.rate, start);
        let mut in_flight: VecDeque<(u64, DeliveryFuture)> = VecDeque::new();
        let mut payload = Vec::new();
        for record in &mut reader {
            let record = match record {
                Ok(record) => record,
                Err(e) if e.is_fatal() || args.strict => {
                    anyhow::bail!("{}: {e}", args.file.display())
                }
                Err(e) => {
                    summary.unreadable += 1;
                    if summary.examples.len() < EXAMPLES {
                        summary.examples.push(e.to_string());
                    }
                    continue;
                }
            };
            pacer.wait(1).await;
            match args.format {
                TickFormat::Protobuf => {
                    payload.clear();
                    wire::tick(&record).encode(&mut payload)?;
                }
                TickFormat::ProtobufBatch => {
                    payload.clear();
                    proto::TickBatch {
                        batch_id: 0,
                        ticks: vec![wire::tick(&record)],
                    }
                    .encode(&mut payload)?;
                }
                TickFormat::Json => tick_json(&record, &mut payload),
            }
            loop {
                let message = FutureRecord::to(&args.topic).key(&*record.instrument).payload(&payload);
                match producer.send_result(message) {
                    Ok(delivery) => {
                        in_flight.push_back((record.line, delivery));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => match in_flight.pop_front()
                    {
                        Some((line, delivery)) => acknowledged(line, delivery.await, &args.topic)?,
                        None => tokio::time::sleep(Duration::from_millis(5)).await,
                    },
                    Err((e, _)) => {
                        return Err(e).with_context(|| format!("cannot produce line {} to {}", record.line, args.topic))
                    }
                }
            }
            summary.ticks += 1;
            while in_flight.len() >= IN_FLIGHT {
                let (line, delivery) = in_flight.pop_front().expect("non-empty");
                acknowledged(line, delivery.await, &args.topic)?;
            }
        }
        let deadline = tokio::time::Instant::now() + ACK_WAIT;
        for (line, delivery) in in_flight {
            let result = tokio::time::timeout_at(deadline, delivery)
                .await
                .map_err(|_| anyhow::anyhow!("the broker did not acknowledge line {line} within {ACK_WAIT:?}"))?;
            acknowledged(line, result, &args.topic)?;
        }
        let _ = producer.flush(Duration::from_secs(1));
        summary.elapsed = start.elapsed();
        Ok(summary)
    }

    fn acknowledged(
        line: u64,
        result: <DeliveryFuture as std::future::Future>::Output,
        topic: &str,
    ) -> anyhow::Result<()> {
        match result {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(e).with_context(|| format!("line {line} was not delivered to {topic}")),
            Err(_) => anyhow::bail!("line {line}: the producer went away before its delivery"),
        }
    }

    /// Prints the alerts of the topic until `--max` or `--timeout`.
    ///
    /// # Errors
    /// librdkafka refuses the properties, the topic has no partitions
    /// (it does not exist), a message is not an alert, or `--timeout`
    /// passed before `--max` alerts.
    pub async fn tail(args: &TailArgs) -> anyhow::Result<()> {
        let consumer: StreamConsumer = client(&args.brokers, &args.properties)?
            .set("group.id", format!("airbag-tail-{}", std::process::id()))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .create()
            .context("cannot create the Kafka consumer")?;
        let metadata =
            tokio::task::block_in_place(|| consumer.fetch_metadata(Some(&args.topic), Duration::from_secs(10)))
                .with_context(|| format!("cannot read the metadata of {}", args.topic))?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == args.topic)
            .map(|t| t.partitions().len())
            .unwrap_or(0);
        anyhow::ensure!(
            partitions > 0,
            "topic {} has no partitions (does it exist?)",
            args.topic
        );
        let mut assignment = TopicPartitionList::new();
        let offset = if args.from_beginning {
            Offset::Beginning
        } else {
            Offset::End
        };
        for p in 0..partitions {
            assignment.add_partition_offset(&args.topic, p as i32, offset)?;
        }
        consumer.assign(&assignment)?;

        let timeout = (args.timeout > 0.0).then(|| Duration::from_secs_f64(args.timeout));
        let mut printed = 0u64;
        let mut seen = HashSet::new();
        let mut line = Vec::new();
        let stdout = std::io::stdout();
        loop {
            if args.max.is_some_and(|max| printed >= max) {
                return Ok(());
            }
            let next = match timeout {
                Some(t) => match tokio::time::timeout(t, consumer.recv()).await {
                    Ok(next) => next,
                    Err(_) => match args.max {
                        Some(max) => anyhow::bail!("no alert for {:.1} s after {printed} of {max}", t.as_secs_f64()),
                        None => return Ok(()),
                    },
                },
                None => consumer.recv().await,
            };
            let message = next.context("Kafka consumer")?;
            let payload = message.payload().unwrap_or_default();
            let seq = alert_line(payload, args.format, &mut line).with_context(|| {
                format!(
                    "{} partition {} offset {} is not an alert",
                    message.topic(),
                    message.partition(),
                    message.offset()
                )
            })?;
            if args.dedup && !seen.insert(seq) {
                continue;
            }
            let mut out = stdout.lock();
            out.write_all(&line)
                .and_then(|()| out.write_all(b"\n"))
                .and_then(|()| out.flush())
                .context("cannot write alerts")?;
            printed += 1;
        }
    }

    /// An alert message as the JSON object of `subscribe`, in `out`;
    /// returns its sequence number.
    fn alert_line(payload: &[u8], format: AlertFormat, out: &mut Vec<u8>) -> anyhow::Result<u64> {
        let json = match format {
            AlertFormat::Json => true,
            AlertFormat::Protobuf => false,
            AlertFormat::Auto => payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{'),
        };
        out.clear();
        if json {
            let value: serde_json::Value = serde_json::from_slice(payload).context("not JSON")?;
            let seq = value
                .get("seq")
                .and_then(serde_json::Value::as_u64)
                .context("a JSON object without a `seq`")?;
            // The sink wrote the object `subscribe` prints: kept as written.
            out.extend_from_slice(payload.trim_ascii());
            Ok(seq)
        } else {
            let alert = proto::Alert::decode(payload).context("not an Alert protobuf")?;
            let received = wire::alert_of(&alert)?;
            AlertJson::from_engine(&received.alert, received.seq, received.received_ns, received.emitted_ns)
                .write_json(out);
            Ok(received.seq)
        }
    }
}
