//! Replay and backtest: recorded ticks through the live engine, offline.
//!
//! Before a rule is deployed, a risk team asks how often it would have
//! fired last month and what an edit changes. Replay answers with the same
//! [`Engine`](crate::Engine) the service runs — one instance, no network,
//! no clock: everything runs in **event time**.
//!
//! # Layout
//!
//! - [`merge`]: tick files (CSV, plain or gzip, read by
//!   [`crate::tick_file`]) merged into one stream in event-time order
//!   with a k-way merge holding one pending row per file: memory is
//!   constant in the files' length. Bad rows stop the replay or are counted.
//! - [`runner`]: one engine driven by that stream: symbols interned once
//!   per file, sequence numbers assigned for files without them, rejected
//!   ticks counted by reason, alerts stamped with event time.
//! - [`drive`]: the loop both commands share: timers in event time,
//!   optional pacing, progress.
//! - [`threads`]: the same on several threads, instruments split across
//!   workers ([`partition`] keeps those that rules couple together), the
//!   alerts merged back into one thread's order.
//! - [`stats`]: per-rule counts, first and last alert, and the summary
//!   people read.
//! - [`compare`]: two rulesets over one pass of the data, and what differs.
//! - [`generate`]: a seeded synthetic tick file for throughput tests.
//!
//! # Determinism
//!
//! The same files and rules give byte-identical alerts: rows are merged by
//! (event time, file order, row order); alerts are numbered in emission
//! order; the times an alert carries besides its own are the event time of
//! the tick (or timer) that raised it; nothing iterates a hash map on the
//! way to the output. Wall-clock values appear only in the summary.
//!
//! # Timers
//!
//! Halts ending, `for` holds completing without a tick and silent feeds are
//! timers. Live, the service runs them on its clock; here
//! [`Engine::check_timers`](crate::Engine::check_timers) runs whenever the
//! event time crosses a whole multiple of the timer step (100 ms by
//! default), before the tick that crossed it, and once at the end at the
//! last tick's time. A timer alert carries its exact due time whatever the
//! step; the step only decides where among the ticks it is emitted.

pub mod compare;
pub mod drive;
pub mod generate;
pub mod merge;
pub mod partition;
pub mod runner;
pub mod stats;
pub mod threads;

use std::io;

use crate::tick_file::TickFileError;

pub use compare::{Diff, DiffSide, Matcher};
pub use drive::{drive, Hooks, NoHooks, Options, Progress, Totals};
pub use merge::{BadRows, Merge};
pub use partition::{Partitioner, Plan};
pub use runner::{Rejections, Runner, Sources};
pub use stats::RuleStats;
pub use threads::{drive_threads, Side};

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// A file could not be opened, or its header does not fit the mapping.
    #[error("{file}: {source}")]
    Open {
        file: String,
        #[source]
        source: TickFileError,
    },
    /// A row could not be read (and bad rows are not skipped), or reading
    /// failed part-way.
    /// The row's error is quoted in the message (under the file's name, not
    /// as a separate cause) so that it is printed once.
    #[error("{file}:{}: {}", .row.line, .row.kind)]
    Row { file: String, row: TickFileError },
    /// The alerts could not be written.
    #[error("cannot write alerts: {0}")]
    Output(#[source] io::Error),
}
