//! Tick batches: any bytes as a `TickBatch` message, decoded and checked as
//! `Ingest` does; accepted ticks go through an engine running the bundled
//! rules.
#![no_main]

use airbag_fuzz::checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let engine = checks::bundled_engine();
    let _ = checks::tick_batch(data, &engine);
});
