//! Airbag: real-time risk alerting for trading venues.
//!
//! Market data streams in; Airbag keeps rolling state per instrument,
//! evaluates declarative risk rules on every tick, and raises alerts that
//! margin engines, matching engines and people act on: BTC falls 8% in
//! 3 seconds, and the tick that completes the fall raises a `critical`
//! alert with action `halt`.
//!
//! # Layout
//!
//! Data flows one way: ingest → state → rules → alerts.
//!
//! - [`model`]: the vocabulary: exact decimals ([`model::Fixed`]), ticks,
//!   alerts. No I/O.
//! - [`ingest`]: validation every tick passes before it touches state.
//! - [`state`]: the symbol table, per-instrument state, rolling windows.
//! - [`rules`]: rule files → compiled rules; each kind's logic and state;
//!   the expression language.
//! - [`engine`]: applies ticks and timers to state and rules; swaps
//!   rulesets.
//! - [`clock`]: time as an input.
//! - [`tick_file`]: the streaming CSV tick reader (plain or gzip, field
//!   mappings, epoch and ISO-8601 times) that `replay` and `send` read.
//! - [`replay`]: recorded ticks through the engine in event time, offline:
//!   backtests and ruleset comparisons. No gRPC.
//! - [`checkpoint`]: the engine's state on disk (atomic, checksummed
//!   files), written periodically and at shutdown, restored on start.
//! - [`alerts`]: the alert bus: sequence numbers, fan-out to subscribers
//!   with bounded queues, the alert journal on disk, replay from a
//!   sequence number. No gRPC.
//! - [`journal`]: an append-only log on disk of numbered records, in
//!   checksummed segment files: repaired on open, read from a sequence
//!   number, pruned by size and age. Knows nothing of alerts.
//! - [`kafka`]: Kafka sources of ticks (through the same pipeline as
//!   gRPC) and Kafka sinks of alerts (readers of the alert log).
//! - [`server`]: the gRPC services; the only module that knows protobuf;
//!   TLS, auth and stream limits in front of them.
//! - [`metrics`]: counters, latency histograms, the `/metrics` endpoint.
//! - [`config`]: the service's TOML configuration, with its `[tls]`,
//!   `[auth]` and `[limits]` tables.
//! - [`app`]: wiring, startup, rule reloads and graceful shutdown.
//! - [`cli`]: the client commands (`send`, `subscribe`, `load`, `replay`).
//!
//! Read in this order: `model` → `engine` → `rules::kinds` → `state::window`.

// No unsafe code, except in the few modules that allow it and say why at
// their top (the state slab, the window ring, the state lock, the symbol
// cache's prefetch, the CPU-time calls); there every unsafe block says
// why it is sound.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod alerts;
pub mod app;
pub mod checkpoint;
pub mod cli;
pub mod clock;
pub mod config;
pub mod engine;
pub mod ingest;
pub mod journal;
pub mod kafka;
pub mod metrics;
pub mod model;
pub mod refdata;
pub mod replay;
pub mod rules;
pub mod server;
pub mod service;
pub mod state;
pub mod tick_file;
pub mod wire;

pub use engine::{Engine, EngineConfig};
