//! The service, apart from any transport: what gRPC ingest, the Kafka
//! source, replays and rule tests all call, and what every handler shares.
//!
//! - [`pipeline`]: the one batch pipeline: ticks as a source read them →
//!   resolve → validate once → apply, with typed outcomes for the source to
//!   acknowledge in its own format.
//! - [`session`]: one source's [`IngestSession`]: its pipeline, its
//!   metrics shard, its hold on shutdown; a batch applied at the service
//!   clock's time, its alerts published.
//! - [`core`]: [`Core`], the shared state: engine, alert bus, metrics,
//!   reload status, the shutdown token and the injected [`Clock`].
//! - [`reload`]: reloading the rules folder, all or nothing, with an audit
//!   record per attempt.
//! - [`rulebook`]: loading rules for use: compiled, then checked by their
//!   own `[[rule.test]]` tables ([`selftest`], through the pipeline).
//! - [`checkpoints`]: with `data_dir` set, the newest valid checkpoint is
//!   restored before the service starts; one is written periodically and
//!   one at shutdown.
//! - [`timers`]: the timer task (halts ending, `for` holds, silent feeds)
//!   on the service clock.
//! - [`symbols`]: a source's cache of symbol → instrument id.
//!
//! Time comes from the [`Clock`] the core was built with: the service runs
//! on [`SystemClock`](crate::clock::SystemClock), tests on a
//! [`ManualClock`](crate::clock::ManualClock), so timer behaviour is tested
//! at the service level without waiting.

pub mod checkpoints;
pub mod core;
pub mod pipeline;
pub mod reload;
pub mod rulebook;
pub mod selftest;
pub mod session;
pub mod shared;
pub mod symbols;
pub mod timers;

pub use self::core::{Core, InstrumentReset, ResetError};
pub use self::pipeline::{Pipeline, TouchedInstrument};
pub use self::reload::{ReloadOutcomes, ReloadStatus, ReloadTrigger};
pub use self::session::{BatchApplied, IngestSession};

pub use crate::clock::Clock;

/// Why the service could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("checkpoints: {0}")]
    Checkpoint(#[from] crate::checkpoint::StoreError),
    #[error("cannot restore the checkpoint: {0}")]
    Restore(#[from] crate::engine::RestoreError),
    #[error("cannot open the alert journal: {0}")]
    Journal(#[source] crate::journal::JournalError),
    #[error("a service task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}
