//! `[limits]`: how much one client, and all of them together, may ask of
//! the server: concurrent streams (in total and per connection), an
//! optional ingest rate per connection, and the size of the rules folder.
//!
//! The older limits keep their top-level keys (`max_message_bytes`,
//! `max_batch_ticks`, `max_instruments`). Every limit that is hit is
//! answered with a status whose message names the key and its value.
//!
//! ```toml
//! [limits]
//! max_ingest_streams = 1024
//! max_ingest_streams_per_connection = 64
//! max_subscribers = 1024
//! max_subscribers_per_connection = 64
//! # max_ingest_rate_per_connection = 1000000   # ticks per second; unset: no limit
//! max_rule_file_bytes = 1048576
//! max_rules = 10000
//! max_connections = 10000
//! idle_timeout_ms = 300000
//! ```

use serde::Deserialize;

use super::ConfigProblem;
use crate::rules::RuleLimits;

/// The `[limits]` table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Open `Ingest` streams, over all connections.
    pub max_ingest_streams: u32,
    /// Open `Ingest` streams on one connection.
    pub max_ingest_streams_per_connection: u32,
    /// Open `Alerts.Subscribe` streams, over all connections.
    pub max_subscribers: u32,
    /// Open `Alerts.Subscribe` streams on one connection.
    pub max_subscribers_per_connection: u32,
    /// Ticks per second one connection may send (over all its ingest
    /// streams, with a burst of one second's worth); unset for no limit.
    pub max_ingest_rate_per_connection: Option<u32>,
    /// Largest rule file, in bytes.
    pub max_rule_file_bytes: usize,
    /// Most rules in the rules folder.
    pub max_rules: usize,
    /// Open connections to the gRPC port; one past it is closed at accept
    /// (told why with a `GOAWAY` on a plaintext port).
    pub max_connections: u32,
    /// A connection with no call open for this long (ms) is closed.
    pub idle_timeout_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let rules = RuleLimits::default();
        LimitsConfig {
            max_ingest_streams: 1024,
            max_ingest_streams_per_connection: 64,
            max_subscribers: 1024,
            max_subscribers_per_connection: 64,
            max_ingest_rate_per_connection: None,
            max_rule_file_bytes: rules.max_file_bytes,
            max_rules: rules.max_rules,
            max_connections: 10_000,
            idle_timeout_ms: 300_000,
        }
    }
}

/// Upper bounds of the settings, to catch typos.
const MAX_STREAMS: u32 = 1_000_000;
const MAX_RULE_FILE_BYTES: usize = 1 << 30;
const MAX_RULES: usize = 1_000_000;
/// A day.
const MAX_IDLE_TIMEOUT_MS: u64 = 86_400_000;

impl LimitsConfig {
    /// The limits the rules loader applies.
    pub fn rules(&self) -> RuleLimits {
        RuleLimits {
            max_file_bytes: self.max_rule_file_bytes,
            max_rules: self.max_rules,
        }
    }

    pub(super) fn problems(&self, out: &mut Vec<ConfigProblem>) {
        let mut range = |key: &'static str, value: u64, max: u64| {
            if !(1..=max).contains(&value) {
                out.push(ConfigProblem {
                    key,
                    message: format!("must be between 1 and {max}, got {value}"),
                });
            }
        };
        let streams = u64::from(MAX_STREAMS);
        range("limits.max_ingest_streams", self.max_ingest_streams.into(), streams);
        range(
            "limits.max_ingest_streams_per_connection",
            self.max_ingest_streams_per_connection.into(),
            streams,
        );
        range("limits.max_subscribers", self.max_subscribers.into(), streams);
        range(
            "limits.max_subscribers_per_connection",
            self.max_subscribers_per_connection.into(),
            streams,
        );
        if let Some(rate) = self.max_ingest_rate_per_connection {
            range(
                "limits.max_ingest_rate_per_connection",
                rate.into(),
                u64::from(u32::MAX),
            );
        }
        range(
            "limits.max_rule_file_bytes",
            self.max_rule_file_bytes as u64,
            MAX_RULE_FILE_BYTES as u64,
        );
        range("limits.max_rules", self.max_rules as u64, MAX_RULES as u64);
        range(
            "limits.max_connections",
            self.max_connections.into(),
            u64::from(MAX_STREAMS),
        );
        range("limits.idle_timeout_ms", self.idle_timeout_ms, MAX_IDLE_TIMEOUT_MS);
    }
}
