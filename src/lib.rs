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
//! Data flows one way: ingest → state → rules → alerts. The domain
//! (everything above `service`) knows no transport; `service` is the one
//! way in for every source; `wire` and `server` are gRPC.
//!
//! - [`model`]: the vocabulary: exact decimals ([`model::Fixed`]), ticks,
//!   alerts. No I/O.
//! - [`ingest`]: validation every tick passes once before it touches
//!   state, with one typed rejection code.
//! - [`state`]: the symbol table, per-instrument state, rolling windows.
//! - [`refdata`]: instrument reference data (underlying, product, tier,
//!   tick size, prior close) and named groups, loaded with the rules.
//! - [`rules`]: rule files → compiled rules; each kind's logic and state;
//!   the expression language.
//! - [`engine`]: partitions that own instruments and their rule state;
//!   applies ticks and timers; group rules; swaps rulesets.
//! - [`alerts`]: the alert log: numbering, the ring of recent alerts, the
//!   journal on its own writer thread, readers that resume from a sequence
//!   number, the JSON form. No gRPC.
//! - [`journal`]: an append-only log on disk of numbered records, in
//!   checksummed segment files: repaired on open, read from a sequence
//!   number, pruned by size and age. Knows nothing of alerts.
//! - [`checkpoint`]: the engine's state on disk (atomic, checksummed
//!   files), written periodically and at shutdown, restored on start.
//! - [`clock`]: time as an input (system or manual).
//! - [`service`]: the transport-neutral service: the one batch pipeline
//!   (resolve, validate, apply) every source calls, ingest sessions,
//!   [`service::Core`] (engine, alert bus, metrics, reloads, shutdown, the
//!   injected clock), rule self-tests.
//! - [`tick_file`]: the streaming CSV tick reader (plain or gzip, field
//!   mappings, epoch and ISO-8601 times) that `replay` and `send` read.
//! - [`replay`]: recorded ticks through the engine in event time, offline:
//!   backtests and ruleset comparisons. No gRPC.
//! - [`wire`]: the protobuf wire format: generated types, conversions to
//!   and from the model, the hand-written hot-path readers and writers.
//! - [`server`]: the gRPC services, a thin layer over [`service`]; TLS,
//!   auth and stream limits in front of them.
//! - [`console`]: the web console (HTTP, Server-Sent Events) and its JSON
//!   API, over the service.
//! - [`kafka`]: Kafka sources of ticks and sinks of alerts (librdkafka),
//!   over the service and the alert log.
//! - [`metrics`]: counters, latency histograms, the `/metrics` endpoint.
//! - [`config`]: the service's TOML configuration, one file per table.
//! - [`app`]: wiring only: builds the service on the system clock, starts
//!   and stops the servers and background tasks.
//! - [`cli`]: the client commands (`send`, `subscribe`, `state`, `load`,
//!   `replay`, `check`, `token`).
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
pub mod console;
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
