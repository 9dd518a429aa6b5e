//! Rule expressions: any text through the expression compiler; what
//! compiles is loaded as a rule's `when` and evaluated on ticks.
//!
//! Input layout: the expression's UTF-8 text, then optionally a NUL byte
//! followed by ticks of 9 bytes each (a kind byte, then a little-endian
//! `i64` price in 10^-8 units).
#![no_main]

use airbag_fuzz::checks;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (text, rest) = match data.iter().position(|&b| b == 0) {
        Some(nul) => (&data[..nul], &data[nul + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let ticks: Vec<(u8, i64)> = rest
        .chunks_exact(9)
        .take(64)
        .map(|c| (c[0], i64::from_le_bytes(c[1..9].try_into().unwrap_or_default())))
        .collect();
    let _ = checks::expression(text, &ticks);
});
