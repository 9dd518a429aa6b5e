//! The `[kafka]` table: Kafka sources of ticks (`[[kafka.source]]`) and
//! Kafka sinks of alerts (`[[kafka.sink]]`), run by [`crate::kafka`].
//!
//! ```toml
//! [[kafka.source]]
//! name = "venue-trades"                # in logs and metrics; default: the first topic
//! brokers = ["10.0.0.1:9092", "10.0.0.2:9092"]
//! topics = ["trades"]
//! group_id = "airbag"                 # offsets are committed for it
//! partitions = "group"                 # or "all": every partition, no group membership
//! format = "json"                      # "protobuf_batch" (a TickBatch per message),
//!                                      # "protobuf_tick" (a Tick per message) or "json"
//! instrument_from = "message"          # or "key": the message key names the instrument
//! max_batch_messages = 1000            # messages applied together, at most
//! state_topic = "airbag.state"         # partitions = "group" only: several instances share
//!                                      # the partitions and hand their state over through
//!                                      # this (compacted) topic; see crate::kafka::group
//! state_interval_ms = 1000             # how often each owned partition's state is written
//! [kafka.source.json]                  # json only: which field plays which role
//! instrument = "s"
//! time = "T"
//! time_unit = "ms"                     # s, ms, us, ns, iso (ISO-8601) or auto
//! price = "p"
//! size = "q"
//! seq = "t"
//! [kafka.source.properties]            # passed to librdkafka as they are
//! "security.protocol" = "sasl_ssl"
//! "sasl.mechanism" = "SCRAM-SHA-512"
//!
//! [[kafka.sink]]
//! name = "risk-alerts"                 # names its stored position; default: the topic
//! brokers = ["10.0.0.1:9092"]
//! topic = "airbag.alerts"
//! key = "instrument"                   # or "underlying" (the instrument when it has none)
//! format = "json"                      # the object `airbag subscribe` prints; or "protobuf" (Alert)
//! min_severity = "warning"             # filters as Subscribe has them; default: every alert
//! actions = ["halt"]
//! rules = []
//! instruments = ["BTC-*"]
//! include_shadow = false
//! [kafka.sink.properties]
//! "linger.ms" = "1"
//! ```
//!
//! Problems are reported under the table's key (`kafka`) with the path of
//! the value: `kafka: source[0].brokers: must name at least one broker`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::ConfigProblem;
use crate::alerts::{FilterSpec, SubscriptionFilter};
use crate::model::Severity;
use crate::tick_file::FieldMapping;

/// The `[kafka]` table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// `[[kafka.source]]`: topics of ticks.
    pub source: Vec<KafkaSourceConfig>,
    /// `[[kafka.sink]]`: topics alerts are produced to.
    pub sink: Vec<KafkaSinkConfig>,
}

/// How a source's messages are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    /// One `TickBatch` (the gRPC ingest message) per message.
    #[default]
    ProtobufBatch,
    /// One `Tick` per message.
    ProtobufTick,
    /// One JSON object per message, one tick, read by a field mapping.
    Json,
}

impl SourceFormat {
    pub fn name(self) -> &'static str {
        match self {
            SourceFormat::ProtobufBatch => "protobuf_batch",
            SourceFormat::ProtobufTick => "protobuf_tick",
            SourceFormat::Json => "json",
        }
    }
}

/// Where a source's ticks get their instrument.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstrumentFrom {
    /// From the message itself (the tick's `instrument`, the JSON field).
    #[default]
    Message,
    /// From the message key (UTF-8), for every tick of the message.
    Key,
}

/// Which partitions a source reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourcePartitions {
    /// Those the consumer group gives it: the group shares the topics'
    /// partitions among its members and moves them when one leaves.
    #[default]
    Group,
    /// Every partition of the topics (as they are at start), assigned by
    /// the source itself: no group membership, so a restart never waits
    /// for a rebalance; offsets are still committed for `group_id`. For a
    /// single instance that reads the whole topic.
    All,
}

/// One `[[kafka.source]]` table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Names the source in logs and metrics; default: its first topic.
    pub name: Option<String>,
    /// `host:port` of the bootstrap brokers.
    pub brokers: Vec<String>,
    pub topics: Vec<String>,
    /// The consumer group; offsets are committed for it.
    pub group_id: String,
    pub partitions: SourcePartitions,
    pub format: SourceFormat,
    pub instrument_from: InstrumentFrom,
    /// `format = "json"`: which field plays which role (the mapping of
    /// tick files).
    pub json: Option<FieldMapping>,
    /// Most messages applied as one batch (those already fetched; a source
    /// never waits to fill a batch).
    pub max_batch_messages: usize,
    /// With `partitions = "group"`: the compacted topic each partition's
    /// state is written to (keyed `<tick topic>/<partition>`), every
    /// `state_interval_ms` and when the partition is revoked, and read by
    /// its next owner ([`crate::kafka`], "Several instances").
    pub state_topic: Option<String>,
    /// How often each owned partition's state is written, ms.
    pub state_interval_ms: u64,
    /// librdkafka properties, passed as they are (`security.protocol`,
    /// `sasl.*`, `ssl.*`, ...). The ones the source sets itself
    /// ([`SOURCE_OWNED_PROPERTIES`]) may not be given.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaSourceConfig {
    fn default() -> Self {
        KafkaSourceConfig {
            name: None,
            brokers: Vec::new(),
            topics: Vec::new(),
            group_id: String::new(),
            partitions: SourcePartitions::default(),
            format: SourceFormat::default(),
            instrument_from: InstrumentFrom::default(),
            json: None,
            max_batch_messages: 1000,
            state_topic: None,
            state_interval_ms: 1000,
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaSourceConfig {
    /// The source's name: `name`, else its first topic.
    pub fn display_name(&self) -> &str {
        self.name
            .as_deref()
            .or_else(|| self.topics.first().map(String::as_str))
            .unwrap_or("kafka")
    }
}

/// Properties a source sets itself: offsets are stored only for applied
/// ticks (see [`crate::kafka`]).
pub const SOURCE_OWNED_PROPERTIES: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "enable.auto.offset.store",
    "enable.partition.eof",
];

/// Properties a sink sets itself: idempotent delivery, retried without end.
pub const SINK_OWNED_PROPERTIES: &[&str] = &["bootstrap.servers", "enable.idempotence", "acks", "message.timeout.ms"];

/// What a sink's messages are keyed by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKey {
    /// The alert's instrument.
    #[default]
    Instrument,
    /// The instrument's underlying in the reference data; the instrument
    /// itself when it has none.
    Underlying,
}

/// How a sink writes an alert.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkFormat {
    /// The JSON object `airbag subscribe` prints ([`crate::alerts::json`]).
    #[default]
    Json,
    /// The `Alert` protobuf message of `Subscribe`.
    Protobuf,
}

/// One `[[kafka.sink]]` table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Names the sink's stored position (`<data_dir>/kafka/sink-<name>.seq`)
    /// and its metrics; default: the topic.
    pub name: Option<String>,
    pub brokers: Vec<String>,
    pub topic: String,
    pub key: SinkKey,
    pub format: SinkFormat,
    /// `info`, `warning` or `critical`: alerts below it are not produced.
    pub min_severity: Option<String>,
    /// Only alerts with one of these actions; empty: any.
    pub actions: Vec<String>,
    /// Only alerts of these rules; empty: any.
    pub rules: Vec<String>,
    /// Only alerts of these instruments (symbols or globs); empty: any.
    pub instruments: Vec<String>,
    /// Also alerts of rules in shadow mode.
    pub include_shadow: bool,
    /// Alerts sent and not yet acknowledged by the broker, at most.
    pub max_in_flight: usize,
    /// librdkafka properties, passed as they are; not the ones the sink
    /// sets itself ([`SINK_OWNED_PROPERTIES`]).
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaSinkConfig {
    fn default() -> Self {
        KafkaSinkConfig {
            name: None,
            brokers: Vec::new(),
            topic: String::new(),
            key: SinkKey::default(),
            format: SinkFormat::default(),
            min_severity: None,
            actions: Vec::new(),
            rules: Vec::new(),
            instruments: Vec::new(),
            include_shadow: false,
            max_in_flight: 10_000,
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaSinkConfig {
    /// The sink's name: `name`, else its topic.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.topic)
    }

    /// The filter as `Subscribe` would have it.
    ///
    /// # Errors
    /// A bad severity or instrument glob, or a list too long.
    pub fn filter(&self) -> Result<SubscriptionFilter, String> {
        let min_severity = match self.min_severity.as_deref() {
            None => None,
            Some(name) => Some(
                Severity::from_name(name)
                    .ok_or_else(|| format!("min_severity: expected {}, got `{name}`", Severity::NAMES))?,
            ),
        };
        SubscriptionFilter::new(FilterSpec {
            instruments: self.instruments.clone(),
            min_severity,
            actions: self.actions.clone(),
            rule_ids: self.rules.clone(),
            include_shadow: self.include_shadow,
        })
        .map_err(|e| e.to_string())
    }
}

/// Most messages in one source batch.
const MAX_BATCH_MESSAGES: usize = 100_000;
/// Most alerts in flight per sink.
const MAX_IN_FLIGHT: usize = 1_000_000;

impl KafkaConfig {
    /// Adds a problem for every bad value, each under the key `kafka` with
    /// the value's path in the message.
    pub fn check(&self, out: &mut Vec<ConfigProblem>) {
        let mut problem = |path: String, message: String| {
            out.push(ConfigProblem {
                key: "kafka",
                message: format!("{path}: {message}"),
            });
        };
        let mut names = Vec::new();
        for (i, source) in self.source.iter().enumerate() {
            let at = |field: &str| format!("source[{i}].{field}");
            brokers_problems(&source.brokers, &at("brokers"), &mut problem);
            if source.topics.is_empty() {
                problem(at("topics"), "must name at least one topic".into());
            }
            for (j, topic) in source.topics.iter().enumerate() {
                if let Err(why) = topic_problem(topic) {
                    problem(format!("source[{i}].topics[{j}]"), why);
                }
            }
            if source.group_id.trim().is_empty() {
                problem(at("group_id"), "must name the consumer group".into());
            }
            match (source.format, &source.json) {
                (SourceFormat::Json, Some(mapping)) => {
                    if let Err(why) = mapping.validate() {
                        problem(at("json"), why.to_string());
                    }
                    if source.instrument_from == InstrumentFrom::Key
                        && (mapping.instrument.is_some() || mapping.symbol.is_some())
                    {
                        problem(
                            at("json.instrument"),
                            "instrument_from = \"key\": the key names the instrument, so the mapping may not".into(),
                        );
                    }
                }
                (SourceFormat::Json, None) => {}
                (format, Some(_)) => problem(
                    at("json"),
                    format!(
                        "only for format = \"json\" (this source's format is \"{}\")",
                        format.name()
                    ),
                ),
                (_, None) => {}
            }
            if !(1..=MAX_BATCH_MESSAGES).contains(&source.max_batch_messages) {
                problem(
                    at("max_batch_messages"),
                    format!(
                        "must be between 1 and {MAX_BATCH_MESSAGES}, got {}",
                        source.max_batch_messages
                    ),
                );
            }
            if let Some(topic) = &source.state_topic {
                if let Err(why) = topic_problem(topic) {
                    problem(at("state_topic"), why);
                }
                if source.partitions != SourcePartitions::Group {
                    problem(
                        at("state_topic"),
                        "only with partitions = \"group\": state is handed over between the members of a group".into(),
                    );
                }
                if i > 0 {
                    problem(
                        at("state_topic"),
                        "only the first source may share its partitions with other instances".into(),
                    );
                }
                if source.topics.len() > 1 {
                    problem(
                        at("state_topic"),
                        "a source that shares its partitions reads one topic".into(),
                    );
                }
            }
            if !(50..=3_600_000).contains(&source.state_interval_ms) {
                problem(
                    at("state_interval_ms"),
                    format!("must be between 50 and 3600000, got {}", source.state_interval_ms),
                );
            }
            owned_problems(
                &source.properties,
                SOURCE_OWNED_PROPERTIES,
                &at("properties"),
                &mut problem,
            );
            names.push(("source", i, source.display_name().to_string()));
        }
        for (i, sink) in self.sink.iter().enumerate() {
            let at = |field: &str| format!("sink[{i}].{field}");
            brokers_problems(&sink.brokers, &at("brokers"), &mut problem);
            if let Err(why) = topic_problem(&sink.topic) {
                problem(at("topic"), why);
            }
            if let Some(name) = &sink.name {
                if name.is_empty()
                    || name.len() > 100
                    || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                {
                    problem(
                        at("name"),
                        format!("must be 1 to 100 of A-Z a-z 0-9 . _ - (it names a file), got `{name}`"),
                    );
                }
            }
            if let Err(why) = sink.filter() {
                problem(format!("sink[{i}]"), why);
            }
            if !(1..=MAX_IN_FLIGHT).contains(&sink.max_in_flight) {
                problem(
                    at("max_in_flight"),
                    format!("must be between 1 and {MAX_IN_FLIGHT}, got {}", sink.max_in_flight),
                );
            }
            owned_problems(&sink.properties, SINK_OWNED_PROPERTIES, &at("properties"), &mut problem);
            if names
                .iter()
                .any(|(kind, _, n)| *kind == "sink" && n == sink.display_name())
            {
                problem(
                    at("name"),
                    format!(
                        "two sinks are named `{}`: give each its own name (it names the stored position)",
                        sink.display_name()
                    ),
                );
            }
            names.push(("sink", i, sink.display_name().to_string()));
        }
    }
}

fn brokers_problems(brokers: &[String], path: &str, problem: &mut impl FnMut(String, String)) {
    if brokers.is_empty() {
        problem(path.to_string(), "must name at least one broker (host:port)".into());
    }
    for (j, broker) in brokers.iter().enumerate() {
        let ok = broker
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            problem(format!("{path}[{j}]"), format!("expected host:port, got `{broker}`"));
        }
    }
}

/// Kafka's rule for topic names.
fn topic_problem(topic: &str) -> Result<(), String> {
    let ok = !topic.is_empty()
        && topic.len() <= 249
        && topic != "."
        && topic != ".."
        && topic.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "must be a Kafka topic name (1 to 249 of A-Z a-z 0-9 . _ -), got `{topic}`"
        ))
    }
}

fn owned_problems(
    properties: &BTreeMap<String, String>,
    owned: &[&str],
    path: &str,
    problem: &mut impl FnMut(String, String),
) {
    for key in properties.keys() {
        if owned.contains(&key.as_str()) {
            problem(
                format!("{path}.\"{key}\""),
                "is set by Airbag itself (from the table's own keys and its delivery guarantees); remove it".into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigError, ServiceConfig, TomlError};
    use crate::tick_file::TimeUnit;

    fn problems(text: &str) -> Vec<String> {
        let config = ServiceConfig::from_toml(text).unwrap();
        match config.validate() {
            Ok(()) => Vec::new(),
            Err(ConfigError::Invalid(problems)) => problems.iter().map(ToString::to_string).collect(),
            Err(other) => panic!("{other}"),
        }
    }

    #[test]
    fn a_state_topic_is_for_one_group_topic_of_the_first_source() {
        let base = "[[kafka.source]]\nbrokers = [\"b:1\"]\ngroup_id = \"g\"\n";
        assert!(problems(&format!("{base}topics = [\"t\"]\nstate_topic = \"s\"\n")).is_empty());
        let found = problems(&format!(
            "{base}topics = [\"t\", \"u\"]\nstate_topic = \"s s\"\npartitions = \"all\"\nstate_interval_ms = 1\n"
        ));
        let joined = found.join("\n");
        for expected in [
            "source[0].state_topic: must be a Kafka topic name",
            "source[0].state_topic: only with partitions = \"group\"",
            "source[0].state_topic: a source that shares its partitions reads one topic",
            "source[0].state_interval_ms: must be between 50 and 3600000, got 1",
        ] {
            assert!(joined.contains(expected), "{expected} not in:\n{joined}");
        }
    }

    #[test]
    fn reads_sources_and_sinks() {
        let c = ServiceConfig::from_toml(
            r#"
[[kafka.source]]
brokers = ["127.0.0.1:9092"]
topics = ["trades", "quotes"]
group_id = "airbag"
format = "json"
instrument_from = "message"
[kafka.source.json]
instrument = "s"
time = "T"
time_unit = "iso"
price = "p"
[kafka.source.properties]
"security.protocol" = "ssl"

[[kafka.source]]
brokers = ["127.0.0.1:9092"]
topics = ["ticks"]
group_id = "airbag"
format = "protobuf_tick"
instrument_from = "key"

[[kafka.sink]]
brokers = ["127.0.0.1:9092"]
topic = "alerts"
key = "underlying"
min_severity = "critical"
actions = ["halt"]
"#,
        )
        .unwrap();
        c.validate().unwrap();
        let [json, tick] = &c.kafka.source[..] else {
            panic!("two sources")
        };
        assert_eq!(json.format, SourceFormat::Json);
        assert_eq!(json.display_name(), "trades");
        let mapping = json.json.as_ref().unwrap();
        assert_eq!(mapping.time_unit, Some(TimeUnit::Iso));
        assert_eq!(mapping.price.as_deref(), Some("p"));
        assert_eq!(json.properties["security.protocol"], "ssl");
        assert_eq!(tick.instrument_from, InstrumentFrom::Key);
        assert_eq!(c.kafka.sink[0].key, SinkKey::Underlying);
        assert_eq!(c.kafka.sink[0].display_name(), "alerts");
        assert!(c.kafka.sink[0].filter().is_ok());
    }

    #[test]
    fn every_bad_value_is_named_by_its_path() {
        let found = problems(
            r#"
[[kafka.source]]
brokers = ["nohost", "h:0"]
topics = ["ok", "bad topic"]
format = "protobuf_tick"
max_batch_messages = 0
[kafka.source.json]
price = "p"
[kafka.source.properties]
"group.id" = "sneaky"

[[kafka.sink]]
topic = ""
min_severity = "loud"
max_in_flight = 0
"#,
        );
        assert_eq!(
            found,
            [
                "kafka: source[0].brokers[0]: expected host:port, got `nohost`",
                "kafka: source[0].brokers[1]: expected host:port, got `h:0`",
                "kafka: source[0].topics[1]: must be a Kafka topic name (1 to 249 of A-Z a-z 0-9 . _ -), got `bad topic`",
                "kafka: source[0].group_id: must name the consumer group",
                "kafka: source[0].json: only for format = \"json\" (this source's format is \"protobuf_tick\")",
                "kafka: source[0].max_batch_messages: must be between 1 and 100000, got 0",
                "kafka: source[0].properties.\"group.id\": is set by Airbag itself (from the table's own keys and its \
                 delivery guarantees); remove it",
                "kafka: sink[0].brokers: must name at least one broker (host:port)",
                "kafka: sink[0].topic: must be a Kafka topic name (1 to 249 of A-Z a-z 0-9 . _ -), got ``",
                "kafka: sink[0]: min_severity: expected `info`, `warning` or `critical`, got `loud`",
                "kafka: sink[0].max_in_flight: must be between 1 and 1000000, got 0",
            ]
        );
    }

    #[test]
    fn a_bad_mapping_and_duplicate_sink_names_are_named() {
        let found = problems(
            r#"
[[kafka.source]]
brokers = ["b:1"]
topics = ["t"]
group_id = "g"
format = "json"
instrument_from = "key"
[kafka.source.json]
instrument = "s"
price = "s"

[[kafka.sink]]
brokers = ["b:1"]
topic = "alerts"
[[kafka.sink]]
brokers = ["b:1"]
topic = "alerts"
"#,
        );
        assert_eq!(
            found,
            [
                "kafka: source[0].json: field `s` is mapped twice (instrument and price)",
                "kafka: source[0].json.instrument: instrument_from = \"key\": the key names the instrument, so the \
                 mapping may not",
                "kafka: sink[1].name: two sinks are named `alerts`: give each its own name (it names the stored \
                 position)",
            ]
        );
    }

    #[test]
    fn unknown_keys_and_formats_are_errors_with_a_position() {
        let TomlError { line, message, .. } =
            ServiceConfig::from_toml("[[kafka.source]]\nbrokers = [\"b:1\"]\ngroup = \"g\"\n").unwrap_err();
        assert_eq!(line, 3);
        assert!(message.contains("unknown field `group`"), "{message}");
        let TomlError { line, message, .. } =
            ServiceConfig::from_toml("[[kafka.source]]\nformat = \"avro\"\n").unwrap_err();
        assert_eq!(line, 2);
        assert!(message.contains("unknown variant `avro`"), "{message}");
        let TomlError { line, message, .. } =
            ServiceConfig::from_toml("[[kafka.source]]\n[kafka.source.json]\ntime_unit = \"days\"\n").unwrap_err();
        assert_eq!(line, 3);
        assert!(message.contains("days"), "{message}");
        let TomlError { line, message, .. } = ServiceConfig::from_toml("[[kafka.sink]]\nkey = \"rule\"\n").unwrap_err();
        assert_eq!(line, 2);
        assert!(message.contains("unknown variant `rule`"), "{message}");
    }
}
