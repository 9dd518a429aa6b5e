//! The protobuf wire format of the gRPC API, apart from the services that
//! speak it: the generated types, the conversions between them and the
//! model, and the hand-written readers and writers of the two messages on
//! the ingest hot path.
//!
//! - [`proto`]: the code generated from `proto/airbag/v1/airbag.proto`.
//! - [`convert`]: the only place proto types meet model types: ticks in,
//!   alerts, filters and rule listings out.
//! - [`tick_wire`]: a `TickBatch` read in place, without allocating per
//!   tick; checked byte for byte against prost.
//! - [`ack_wire`]: an `IngestAck` written in place.

pub mod ack_wire;
pub mod convert;
pub mod proto;
pub mod tick_wire;
