//! Code generated from `proto/airbag/v1/airbag.proto`.
#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("airbag.v1");

/// The encoded file descriptor set, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("airbag_descriptor");
