//! The gRPC service: a thin layer over the engine. The only module that
//! knows protobuf.

pub mod proto;
