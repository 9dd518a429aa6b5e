//! Fuzzing Airbag's hostile inputs: rule files, rule expressions and tick
//! batches as they arrive over gRPC.
//!
//! [`checks`] holds the properties each input must keep; the cargo-fuzz
//! targets in `fuzz_targets/` feed it libFuzzer's inputs, and
//! `tests/fuzz_inputs.rs` in the main crate includes the same file to feed
//! it proptest's on the stable toolchain.

pub mod checks;
