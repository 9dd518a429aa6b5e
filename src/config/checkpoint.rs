//! The `[checkpoint]` table: how often checkpoints are written and how
//! many are kept (see [`crate::checkpoint`]).

use serde::Deserialize;

use super::ConfigProblem;

/// The `[checkpoint]` table of the service configuration. Checkpoints are
/// written when `data_dir` is set, to `<data_dir>/checkpoints/`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointConfig {
    /// How often a checkpoint is written while the service runs (one more
    /// is written at shutdown). A checkpoint that takes long spaces the
    /// next one out by four times its duration.
    pub interval_ms: u64,
    /// How many checkpoint files to keep, newest first.
    pub keep: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            interval_ms: 5_000,
            keep: 3,
        }
    }
}

const MIN_INTERVAL_MS: u64 = 100;
const MAX_INTERVAL_MS: u64 = 86_400_000;
const MAX_KEEP: usize = 1_000;

impl CheckpointConfig {
    /// Adds a problem for every value out of range.
    pub fn check(&self, problems: &mut Vec<ConfigProblem>) {
        if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&self.interval_ms) {
            problems.push(ConfigProblem {
                key: "checkpoint.interval_ms",
                message: format!(
                    "must be between {MIN_INTERVAL_MS} and {MAX_INTERVAL_MS}, got {}",
                    self.interval_ms
                ),
            });
        }
        if !(1..=MAX_KEEP).contains(&self.keep) {
            problems.push(ConfigProblem {
                key: "checkpoint.keep",
                message: format!("must be between 1 and {MAX_KEEP}, got {}", self.keep),
            });
        }
    }
}
