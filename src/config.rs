//! Service configuration: a TOML file (unknown keys are errors) for
//! everything the `airbag serve` flags set, with defaults that let
//! `airbag serve` alone run from the repository root.
//!
//! [`ServiceConfig::validate`] reports every problem at once, so an
//! operator fixes a file in one pass.
//!
//! ```toml
//! listen = "127.0.0.1:50051"
//! metrics_listen = "127.0.0.1:9090"
//! rules = "rules"
//! watch_rules = true
//! # data_dir = "/var/lib/airbag"
//! log_json = false
//! max_instruments = 100000
//! allowed_lateness_ms = 0
//! max_future_skew_ms = 60000
//! allow_empty_rules = false
//! allow_removing_halt_rules = false
//! validate_dirs = []
//! max_batch_ticks = 10000
//! max_message_bytes = 16777216
//! subscriber_queue = 4096
//! alert_ring = 100000
//! timer_interval_ms = 50
//! shutdown_grace_ms = 10000
//!
//! [checkpoint]
//! interval_ms = 5000
//! keep = 3

//! # The alert journal, in <data_dir>/journal (used when data_dir is set).
//! [journal]
//! fsync = "always"            # or "never", or milliseconds: 100
//! segment_bytes = 67108864
//! retain_bytes = 1073741824
//! retain_age = "7d"
//! ```
//!
//! Security settings are tables of their own: [`tls`] (`[tls]`: TLS,
//! mTLS, where plaintext may listen), [`auth`] (`[auth]`: tokens,
//! certificate subjects, roles) and [`limits`] (`[limits]`: streams,
//! ingest rate, rules folder size). Kafka sources and sinks are
//! `[[kafka.source]]` and `[[kafka.sink]]` tables ([`kafka`]).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::engine::MAX_INSTRUMENTS_LIMIT;
use crate::journal::{FsyncPolicy, JournalConfig};

pub mod auth;
pub mod checkpoint;
pub mod console;
pub mod kafka;
pub mod limits;
pub mod tls;

use self::auth::AuthConfig;
pub use self::checkpoint::CheckpointConfig;
pub use self::console::ConsoleConfig;
use self::kafka::KafkaConfig;
use self::limits::LimitsConfig;
use self::tls::TlsConfig;

/// Everything `airbag serve` needs to run.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// gRPC address.
    pub listen: SocketAddr,
    /// Prometheus `/metrics` address.
    pub metrics_listen: SocketAddr,
    /// The rules folder.
    pub rules: PathBuf,
    /// Reload the rules when files in the folder change (SIGHUP and the
    /// `Reload` call work either way).
    pub watch_rules: bool,
    /// Where durable state lives, created if missing: the alert journal
    /// in `journal/` and checkpoints in `checkpoints/`. Without it, nothing
    /// is kept across restarts.
    pub data_dir: Option<PathBuf>,
    /// Logs as JSON lines instead of text.
    pub log_json: bool,
    /// Most distinct instruments; ticks for more are rejected.
    pub max_instruments: u32,
    /// How far (event time, ms) a tick may arrive behind its instrument's
    /// newest and still be applied in its place; every tick then waits up
    /// to this long before it is evaluated. 0: apply at once, reject late
    /// ticks.
    pub allowed_lateness_ms: u64,
    /// How far (ms) a tick's event time may be ahead of the server's
    /// clock when it is received; a tick further ahead is rejected as
    /// `bad_time` (a clock or unit fault at the source would otherwise make
    /// every later tick of the instrument `late`).
    pub max_future_skew_ms: u64,
    /// Apply a reload that leaves no rule at all (an emptied folder).
    /// Off: such a reload is refused and the rules in force are kept.
    pub allow_empty_rules: bool,
    /// Apply a reload that removes every rule able to halt trading (a
    /// `critical` rule, or one with action `halt`: breakers and price
    /// bands included) while some are in force. Off: refused.
    pub allow_removing_halt_rules: bool,
    /// Folders besides the rules folder (and those below them) that
    /// `RuleAdmin.Validate` may read; any other path is refused.
    pub validate_dirs: Vec<PathBuf>,
    /// Most ticks in one `TickBatch`; a larger batch ends its stream.
    pub max_batch_ticks: usize,
    /// Largest gRPC message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Alerts one subscriber may have queued before it is disconnected.
    pub subscriber_queue: usize,
    /// Recent alerts kept in memory for subscribers resuming by sequence.
    pub alert_ring: usize,
    /// How often timers (halts ending, silent feeds, `for` periods) run.
    pub timer_interval_ms: u64,
    /// How long shutdown waits for in-flight batches and streams.
    pub shutdown_grace_ms: u64,
    /// Checkpoints of the engine's state (written when `data_dir` is set).
    pub checkpoint: CheckpointConfig,
    /// `[tls]`: TLS and mTLS on the gRPC port.
    pub tls: TlsConfig,
    /// `[auth]`: tokens, certificate subjects and their roles.
    pub auth: AuthConfig,
    /// `[limits]`: concurrent streams, ingest rate, rules folder size.
    pub limits: LimitsConfig,
    /// The `[journal]` table: the alert journal (used when `data_dir` is
    /// set).
    pub journal: JournalSettings,
    /// `[console]`: the web console's address (off by default).
    pub console: ConsoleConfig,
    /// `[kafka]`: Kafka sources of ticks and sinks of alerts.
    pub kafka: KafkaConfig,
}

/// The `[journal]` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JournalSettings {
    /// `"always"`, `"never"`, or the milliseconds between background
    /// syncs.
    #[serde(deserialize_with = "fsync_policy")]
    pub fsync: FsyncPolicy,
    pub segment_bytes: u64,
    pub retain_bytes: u64,
    /// A duration such as `"7d"` or `"12h"`.
    #[serde(deserialize_with = "duration_text")]
    pub retain_age: Duration,
}

impl Default for JournalSettings {
    fn default() -> Self {
        let JournalConfig {
            segment_bytes,
            fsync,
            retain_bytes,
            retain_age,
        } = JournalConfig::default();
        JournalSettings {
            fsync,
            segment_bytes,
            retain_bytes,
            retain_age,
        }
    }
}

impl JournalSettings {
    pub fn journal_config(&self) -> JournalConfig {
        JournalConfig {
            segment_bytes: self.segment_bytes,
            fsync: self.fsync,
            retain_bytes: self.retain_bytes,
            retain_age: self.retain_age,
        }
    }
}

/// `fsync = "always" | "never" | <milliseconds>`.
fn fsync_policy<'de, D: Deserializer<'de>>(d: D) -> Result<FsyncPolicy, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Name(String),
        Millis(i64),
    }
    let expected = "expected \"always\", \"never\" or a number of milliseconds such as 100";
    match Raw::deserialize(d).map_err(|_| serde::de::Error::custom(format!("fsync: {expected}")))? {
        Raw::Name(name) => match name.as_str() {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            other => Err(serde::de::Error::custom(format!("fsync: {expected}, got \"{other}\""))),
        },
        Raw::Millis(ms) => u64::try_from(ms)
            .map(|ms| FsyncPolicy::Interval(Duration::from_millis(ms)))
            .map_err(|_| serde::de::Error::custom(format!("fsync: {expected}, got {ms}"))),
    }
}

/// A duration written as text: `"7d"`, `"12h"`, `"30m"`.
fn duration_text<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    let ns = crate::rules::units::parse_duration(&text).map_err(serde::de::Error::custom)?;
    Ok(Duration::from_nanos(u64::try_from(ns).unwrap_or(0)))
}

/// Longest allowed lateness: every tick may wait this long.
pub const MAX_LATENESS_MS: u64 = 60_000;

/// Largest `max_future_skew_ms`: a day.
pub const MAX_FUTURE_SKEW_MS: u64 = 86_400_000;

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            metrics_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            rules: PathBuf::from("rules"),
            watch_rules: true,
            data_dir: None,
            log_json: false,
            max_instruments: 100_000,
            allowed_lateness_ms: 0,
            max_future_skew_ms: 60_000,
            allow_empty_rules: false,
            allow_removing_halt_rules: false,
            validate_dirs: Vec::new(),
            max_batch_ticks: 10_000,
            max_message_bytes: 16 << 20,
            subscriber_queue: 4096,
            alert_ring: 100_000,
            timer_interval_ms: 50,
            shutdown_grace_ms: 10_000,
            checkpoint: CheckpointConfig::default(),
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            journal: JournalSettings::default(),
            console: ConsoleConfig::default(),
            kafka: KafkaConfig::default(),
        }
    }
}

/// One problem with a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The key, as written in the file.
    pub key: &'static str,
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("invalid configuration: {}", list(.0))]
    Invalid(Vec<ConfigProblem>),
}

/// Why TOML text is not a configuration: not TOML, an unknown key, or a
/// value of the wrong type, at a 1-based line and column (0:0 when the
/// parser gives no place).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct TomlError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

fn list(problems: &[ConfigProblem]) -> String {
    problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// Limits checked by [`ServiceConfig::validate`].
const MAX_BATCH_TICKS: usize = 1_000_000;
const MIN_MESSAGE_BYTES: usize = 1 << 10;
const MAX_MESSAGE_BYTES: usize = 1 << 30;
const MAX_QUEUE: usize = 10_000_000;

impl ServiceConfig {
    /// Reads a TOML file; keys not given keep their defaults. Not
    /// validated: apply flags, then call [`ServiceConfig::validate`].
    ///
    /// # Errors
    /// The file cannot be read, is not TOML, or has an unknown key or a
    /// value of the wrong type (with line and column).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text).map_err(|TomlError { line, column, message }| ConfigError::Parse {
            path: path.to_path_buf(),
            line,
            column,
            message,
        })
    }

    /// Parses TOML text.
    ///
    /// # Errors
    /// Not TOML, an unknown key, or a value of the wrong type.
    pub fn from_toml(text: &str) -> Result<Self, TomlError> {
        toml::from_str(text).map_err(|e: toml::de::Error| {
            let (line, column) = e.span().map_or((0, 0), |s| crate::rules::load::line_col(text, s.start));
            TomlError {
                line,
                column,
                message: e.message().trim_end().to_string(),
            }
        })
    }

    /// Checks every value, reporting every problem found.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] with one entry per problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, key: &'static str, message: String| {
            if !ok {
                problems.push(ConfigProblem { key, message });
            }
        };
        check(self.max_instruments > 0, "max_instruments", "must be at least 1".into());
        check(
            self.max_instruments <= MAX_INSTRUMENTS_LIMIT,
            "max_instruments",
            format!("must be at most {MAX_INSTRUMENTS_LIMIT}"),
        );
        check(
            self.allowed_lateness_ms <= MAX_LATENESS_MS,
            "allowed_lateness_ms",
            format!(
                "must be at most {MAX_LATENESS_MS} (one minute), got {}",
                self.allowed_lateness_ms
            ),
        );
        check(
            (1..=MAX_FUTURE_SKEW_MS).contains(&self.max_future_skew_ms),
            "max_future_skew_ms",
            format!(
                "must be between 1 and {MAX_FUTURE_SKEW_MS} (one day), got {}",
                self.max_future_skew_ms
            ),
        );
        check(
            (1..=MAX_BATCH_TICKS).contains(&self.max_batch_ticks),
            "max_batch_ticks",
            format!("must be between 1 and {MAX_BATCH_TICKS}, got {}", self.max_batch_ticks),
        );
        check(
            (MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES).contains(&self.max_message_bytes),
            "max_message_bytes",
            format!(
                "must be between {MIN_MESSAGE_BYTES} and {MAX_MESSAGE_BYTES}, got {}",
                self.max_message_bytes
            ),
        );
        check(
            (1..=MAX_QUEUE).contains(&self.subscriber_queue),
            "subscriber_queue",
            format!("must be between 1 and {MAX_QUEUE}, got {}", self.subscriber_queue),
        );
        check(
            (1..=MAX_QUEUE).contains(&self.alert_ring),
            "alert_ring",
            format!("must be between 1 and {MAX_QUEUE}, got {}", self.alert_ring),
        );
        check(
            (1..=60_000).contains(&self.timer_interval_ms),
            "timer_interval_ms",
            format!("must be between 1 and 60000, got {}", self.timer_interval_ms),
        );
        check(
            self.shutdown_grace_ms <= 600_000,
            "shutdown_grace_ms",
            format!("must be at most 600000, got {}", self.shutdown_grace_ms),
        );
        check(!self.rules.as_os_str().is_empty(), "rules", "must name a folder".into());
        check(
            self.listen.port() == 0 || self.listen != self.metrics_listen,
            "metrics_listen",
            format!("must differ from listen ({})", self.listen),
        );
        if let Some(dir) = &self.data_dir {
            check(
                !dir.as_os_str().is_empty() && !dir.is_file(),
                "data_dir",
                format!("must name a folder, got {}", dir.display()),
            );
        }
        self.checkpoint.check(&mut problems);
        self.console.check(&mut problems);
        self.kafka.check(&mut problems);
        self.security_problems(self.listen, self.metrics_listen, &mut problems);
        for (key, message) in self.journal.journal_config().problems() {
            let key = match key {
                "fsync" => "journal.fsync",
                "segment_bytes" => "journal.segment_bytes",
                "retain_bytes" => "journal.retain_bytes",
                _ => "journal.retain_age",
            };
            problems.push(ConfigProblem { key, message });
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

impl ServiceConfig {
    /// Problems with `[tls]`, `[auth]` and `[limits]`, and with serving on
    /// `grpc` and `metrics` (the configured addresses, or the ones bound).
    pub fn security_problems(&self, grpc: SocketAddr, metrics: SocketAddr, out: &mut Vec<ConfigProblem>) {
        self.tls.problems(out);
        if let Err(problems) = self.auth.credentials() {
            out.extend(problems);
        }
        out.extend(auth::auth_problems(&self.auth, &self.tls, grpc.ip().is_loopback()));
        out.extend(tls::exposure_problems(
            grpc,
            metrics,
            &self.tls,
            self.auth.allow_metrics_non_loopback,
        ));
        self.limits.problems(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_in_deploy_is_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/airbag.toml");
        assert_eq!(ServiceConfig::from_file(&path).unwrap(), ServiceConfig::default());
    }

    #[test]
    fn defaults_are_valid() {
        ServiceConfig::default().validate().unwrap();
        let empty = ServiceConfig::from_toml("").unwrap();
        assert_eq!(empty, ServiceConfig::default());
    }

    #[test]
    fn reads_every_key() {
        let c = ServiceConfig::from_toml(
            r#"
listen = "0.0.0.0:6000"
metrics_listen = "0.0.0.0:6001"
rules = "/etc/airbag/rules"
watch_rules = false
data_dir = "/var/lib/airbag"
log_json = true
max_instruments = 10
max_batch_ticks = 20
max_message_bytes = 4096
subscriber_queue = 8
alert_ring = 16
timer_interval_ms = 10
shutdown_grace_ms = 100

[checkpoint]
interval_ms = 1000
keep = 5

[tls]
allow_plaintext_non_loopback = true

[auth]
allow_metrics_non_loopback = true
token_file = "/etc/airbag/tokens.toml"

[limits]
max_ingest_streams = 3

[journal]
fsync = 250
segment_bytes = 1048576
retain_bytes = 10485760
retain_age = "12h"
"#,
        )
        .unwrap();
        assert_eq!(c.listen.port(), 6000);
        assert_eq!(c.rules, PathBuf::from("/etc/airbag/rules"));
        assert!(c.log_json);
        assert!(!c.watch_rules);
        assert_eq!(c.subscriber_queue, 8);
        assert_eq!(
            c.checkpoint,
            CheckpointConfig {
                interval_ms: 1000,
                keep: 5
            }
        );
        assert_eq!(
            c.journal.journal_config(),
            JournalConfig {
                segment_bytes: 1 << 20,
                fsync: FsyncPolicy::Interval(Duration::from_millis(250)),
                retain_bytes: 10 << 20,
                retain_age: Duration::from_secs(12 * 3600),
            }
        );
        assert!(c.tls.allow_plaintext_non_loopback);
        assert_eq!(c.limits.max_ingest_streams, 3);
        let ConfigError::Invalid(problems) = c.validate().unwrap_err() else {
            panic!("expected Invalid")
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "auth.token_file");
        assert!(
            problems[0].message.contains("/etc/airbag/tokens.toml"),
            "{}",
            problems[0]
        );
        ServiceConfig {
            auth: AuthConfig {
                token_file: None,
                tokens: vec![auth::TokenEntry {
                    name: "ops".into(),
                    sha256: auth::token_sha256_hex(b"secret"),
                    roles: vec![auth::Role::Admin],
                }],
                ..c.auth
            },
            ..c
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn checkpoint_values_are_checked() {
        let c = ServiceConfig::from_toml("[checkpoint]\ninterval_ms = 0\nkeep = 0\n").unwrap();
        let ConfigError::Invalid(problems) = c.validate().unwrap_err() else {
            panic!("expected Invalid")
        };
        let keys: Vec<_> = problems.iter().map(|p| p.key).collect();
        assert_eq!(keys, ["checkpoint.interval_ms", "checkpoint.keep"]);
        let TomlError { line, message, .. } = ServiceConfig::from_toml("[checkpoint]\nevery_ms = 5\n").unwrap_err();
        assert_eq!(line, 2);
        assert!(message.contains("unknown field `every_ms`"), "{message}");
    }

    #[test]
    fn journal_fsync_takes_a_name_or_milliseconds() {
        for (text, policy) in [
            ("\"always\"", FsyncPolicy::Always),
            ("\"never\"", FsyncPolicy::Never),
            ("5", FsyncPolicy::Interval(Duration::from_millis(5))),
        ] {
            let c = ServiceConfig::from_toml(&format!("[journal]\nfsync = {text}\n")).unwrap();
            assert_eq!(c.journal.fsync, policy, "{text}");
        }
        for (text, column) in [("\"sometimes\"", 9), ("-1", 9), ("1.5", 9), ("true", 9)] {
            let TomlError {
                line,
                column: col,
                message,
            } = ServiceConfig::from_toml(&format!("[journal]\nfsync = {text}\n")).unwrap_err();
            assert_eq!((line, col), (2, column), "{text}: {message}");
            assert!(
                message.contains("expected \"always\", \"never\" or a number of milliseconds"),
                "{message}"
            );
        }
        let TomlError { message, .. } = ServiceConfig::from_toml("[journal]\nretain_age = \"7 days\"\n").unwrap_err();
        assert!(message.contains("7 days"), "{message}");
        let TomlError { line, message, .. } = ServiceConfig::from_toml("[journal]\nsegment_size = 5\n").unwrap_err();
        assert_eq!(line, 2);
        assert!(message.contains("unknown field `segment_size`"), "{message}");
    }

    #[test]
    fn journal_values_out_of_range_are_named() {
        let c = ServiceConfig::from_toml(
            "[journal]\nfsync = 0\nsegment_bytes = 10\nretain_bytes = 0\nretain_age = \"0s\"\n",
        )
        .unwrap();
        let ConfigError::Invalid(problems) = c.validate().unwrap_err() else {
            panic!("expected Invalid")
        };
        let keys: Vec<_> = problems.iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "journal.segment_bytes",
                "journal.fsync",
                "journal.retain_bytes",
                "journal.retain_age"
            ]
        );
        assert!(
            problems[1].message.contains("between 1 and 60000 ms, got 0 ms"),
            "{}",
            problems[1]
        );
    }

    #[test]
    fn unknown_keys_are_errors_with_a_position() {
        let TomlError { line, column, message } =
            ServiceConfig::from_toml("listen = \"127.0.0.1:1\"\nlisten_port = 5\n").unwrap_err();
        assert_eq!((line, column), (2, 1));
        assert!(message.contains("unknown field `listen_port`"), "{message}");
    }

    #[test]
    fn max_instruments_above_the_engine_limit_is_refused() {
        let c = ServiceConfig {
            max_instruments: MAX_INSTRUMENTS_LIMIT + 1,
            ..ServiceConfig::default()
        };
        let ConfigError::Invalid(problems) = c.validate().unwrap_err() else {
            panic!("expected Invalid")
        };
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "max_instruments");
        assert_eq!(problems[0].message, "must be at most 16777216");
        let at_limit = ServiceConfig {
            max_instruments: MAX_INSTRUMENTS_LIMIT,
            ..ServiceConfig::default()
        };
        at_limit.validate().unwrap();
    }

    #[test]
    fn validate_reports_every_problem() {
        let c = ServiceConfig {
            max_instruments: 0,
            max_batch_ticks: 0,
            subscriber_queue: 0,
            timer_interval_ms: 0,
            ..ServiceConfig::default()
        };
        let ConfigError::Invalid(problems) = c.validate().unwrap_err() else {
            panic!("expected Invalid")
        };
        let keys: Vec<_> = problems.iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "max_instruments",
                "max_batch_ticks",
                "subscriber_queue",
                "timer_interval_ms"
            ]
        );
    }
}
