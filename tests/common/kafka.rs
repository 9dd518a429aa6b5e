//! A real Kafka-protocol broker for the Kafka tests: tansu on a free
//! loopback port, started by the test and killed when dropped; and small
//! rdkafka clients to create topics, produce ticks and read alerts.
//!
//! The broker binary is `$AIRBAG_TANSU`, else
//! `~/.cache/airbag-tools/tansu-0.6.0-fetchfix/bin/tansu` (what
//! `scripts/setup.sh` builds: tansu 0.6.0 with the fixes in `scripts/tansu/`).
//! Without it the tests fail, saying how to build it.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// How to build the broker, for the failure message.
pub const BUILD_TANSU: &str = "scripts/setup.sh (tansu 0.6.0 with the fixes in scripts/tansu/)";

/// A tansu broker on 127.0.0.1, killed when dropped.
///
/// Its storage is in memory (tansu 0.6.0 built with `dynostore` offers
/// memory or S3): [`Broker::stop`] then [`Broker::start_again`] brings a
/// broker back on the same address *empty*, without topics, offsets or
/// producer ids; a test recreates its topics.
pub struct Broker {
    child: Option<Child>,
    pub addr: SocketAddr,
}

/// The broker binary; panics with how to build it when it is missing.
pub fn tansu_binary() -> PathBuf {
    let path = match std::env::var_os("AIRBAG_TANSU") {
        Some(path) => PathBuf::from(path),
        None => {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| "/root".into());
            home.join(".cache/airbag-tools/tansu-0.6.0-fetchfix/bin/tansu")
        }
    };
    assert!(
        path.is_file(),
        "the Kafka tests need the tansu broker at {} (or set AIRBAG_TANSU); build it with:\n    {BUILD_TANSU}\n\
         (.ci/run does this when it is missing)",
        path.display()
    );
    path
}

impl Broker {
    /// Starts tansu with in-memory storage on a free port and waits until
    /// it accepts connections.
    pub fn start() -> Broker {
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().expect("addr").port()
        };
        let mut broker = Broker {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        broker.start_again();
        broker
    }

    /// Kills the broker (SIGKILL): clients see it gone at once.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker on its address again (after [`Broker::stop`]),
    /// empty, and waits (at most 10 s, retrying while the port is not yet
    /// free) until it accepts connections.
    pub fn start_again(&mut self) {
        self.stop();
        let binary = tansu_binary();
        let addr = self.addr;
        let url = format!("tcp://{addr}");
        let deadline = Instant::now() + Duration::from_secs(10);
        'spawn: loop {
            let mut child = Command::new(&binary)
                .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
                .args(["--storage-engine", "memory://tansu/", "--silent"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                if let Ok(Some(status)) = child.try_wait() {
                    // The port was not free yet (or tansu failed): again.
                    assert!(
                        Instant::now() < deadline,
                        "tansu exited ({status}) and did not listen on {addr} within 10 s"
                    );
                    std::thread::sleep(Duration::from_millis(100));
                    continue 'spawn;
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("tansu did not accept connections on {addr} within 10 s");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            self.child = Some(child);
            return;
        }
    }

    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// A client configuration that names the broker.
    pub fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.bootstrap());
        c
    }

    /// Creates a topic.
    pub async fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self.client().create().expect("admin client");
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let results = super::within(
            "topic creation",
            admin.create_topics(
                &[topic],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(5))),
            ),
        )
        .await
        .expect("create topics");
        for result in results {
            result.unwrap_or_else(|(topic, code)| panic!("cannot create topic {topic}: {code}"));
        }
    }

    /// A producer that keys by instrument with Java's partitioner.
    pub fn producer(&self) -> FutureProducer {
        self.client()
            .set("partitioner", "murmur2_random")
            .set("message.timeout.ms", "10000")
            // A retry after a slow request neither reorders nor repeats:
            // each partition holds the ticks in the order they were sent.
            .set("enable.idempotence", "true")
            .create()
            .expect("producer")
    }

    /// Produces `(key, payload)` messages in order, each acknowledged.
    pub async fn produce(&self, topic: &str, messages: &[(Option<&str>, Vec<u8>)]) {
        let producer = self.producer();
        for (key, payload) in messages {
            let mut record = FutureRecord::to(topic).payload(payload);
            if let Some(key) = key {
                record = record.key(*key);
            }
            super::within(
                "a produced message's acknowledgement",
                producer.send(record, Duration::from_secs(5)),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("cannot produce to {topic}: {e}"));
        }
    }

    /// Reads partitions 0..`partitions` of `topic` from the start, on a
    /// blocking thread, until `want(messages so far)` holds or `wait`
    /// passes; returns what it read.
    pub async fn read(
        &self,
        topic: &str,
        partitions: i32,
        wait: Duration,
        want: impl Fn(&[OwnedMessage]) -> bool + Send + 'static,
    ) -> Vec<OwnedMessage> {
        let client = self.client();
        let from: Vec<(i32, Offset)> = (0..partitions).map(|p| (p, Offset::Beginning)).collect();
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || read_blocking(client, &topic, &from, wait, want))
            .await
            .expect("reader thread")
    }

    /// Reads partition `partition` of `topic` from `offset`, as
    /// [`Broker::read`] does.
    pub async fn read_from(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        wait: Duration,
        want: impl Fn(&[OwnedMessage]) -> bool + Send + 'static,
    ) -> Vec<OwnedMessage> {
        let client = self.client();
        let from = [(partition, Offset::Offset(offset))];
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || read_blocking(client, &topic, &from, wait, want))
            .await
            .expect("reader thread")
    }
}

fn read_blocking(
    mut client: ClientConfig,
    topic: &str,
    from: &[(i32, Offset)],
    wait: Duration,
    want: impl Fn(&[OwnedMessage]) -> bool,
) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = client
        .set("group.id", format!("reader-{}-{topic}", std::process::id()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for &(p, offset) in from {
        assignment.add_partition_offset(topic, p, offset).expect("partition");
    }
    consumer.assign(&assignment).expect("assign");
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    // `want` is asked once per drained fetch, not per message: asked per
    // message, a predicate that looks at every message read so far makes
    // the read quadratic and a long topic outlasts `wait`.
    while !want(&got) && Instant::now() < deadline {
        let mut next = consumer.poll(Duration::from_millis(100));
        while let Some(Ok(m)) = next {
            got.push(m.detach());
            next = consumer.poll(Duration::ZERO);
        }
    }
    got
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A message's payload as JSON.
pub fn json_of(message: &OwnedMessage) -> serde_json::Value {
    serde_json::from_slice(message.payload().unwrap_or_default()).expect("a JSON alert")
}

/// A message's key as text.
pub fn key_of(message: &OwnedMessage) -> String {
    String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned()
}
