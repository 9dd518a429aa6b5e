//! A seeded synthetic tick file, for measuring replay throughput.
//!
//! `instrument,ts_ms,price,size` rows over `instruments` symbols
//! (`SYN0000-USDT`, ...: no default rule names them, so only the
//! catch-all applies), each a random walk of one cent per tick from a
//! price between 10 and 1,000, at 50 ticks per millisecond of event time
//! in all. The same seed gives the same bytes.

use std::io::{self, Write};

/// Event time of the first row, ms: 2024-01-01T00:00:00Z.
const T0_MS: u64 = 1_704_067_200_000;
/// Rows per millisecond of event time, over all instruments.
const ROWS_PER_MS: u64 = 50;

/// SplitMix64: small, fast, and good enough for synthetic prices.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; the tiny modulo bias does not matter).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Writes `ticks` rows over `instruments` instruments (at least one) to
/// `out`.
///
/// # Errors
/// Whatever writing to `out` returns.
pub fn generate(out: &mut impl Write, ticks: u64, instruments: u32, seed: u64) -> io::Result<()> {
    let instruments = instruments.max(1);
    let mut rng = SplitMix(seed);
    let names: Vec<String> = (0..instruments).map(|i| format!("SYN{i:04}-USDT")).collect();
    // Prices in cents.
    let mut prices: Vec<u64> = (0..instruments).map(|_| 1_000 + rng.below(99_000)).collect();
    out.write_all(b"instrument,ts_ms,price,size\n")?;
    let mut line = Vec::with_capacity(64);
    let mut digits = itoa_buf();
    for n in 0..ticks {
        let i = rng.below(u64::from(instruments)) as usize;
        let r = rng.next();
        let price = &mut prices[i];
        match r % 3 {
            0 if *price > 100 => *price -= 1,
            1 => *price += 1,
            _ => {}
        }
        let size_milli = 1 + (r >> 8) % 10_000;
        line.clear();
        line.extend_from_slice(names[i].as_bytes());
        line.push(b',');
        line.extend_from_slice(fmt_u64(&mut digits, T0_MS + n / ROWS_PER_MS));
        line.push(b',');
        line.extend_from_slice(fmt_u64(&mut digits, *price / 100));
        line.push(b'.');
        let cents = *price % 100;
        line.push(b'0' + (cents / 10) as u8);
        line.push(b'0' + (cents % 10) as u8);
        line.push(b',');
        line.extend_from_slice(fmt_u64(&mut digits, size_milli / 1000));
        line.push(b'.');
        let milli = size_milli % 1000;
        line.extend_from_slice(&[
            b'0' + (milli / 100) as u8,
            b'0' + (milli / 10 % 10) as u8,
            b'0' + (milli % 10) as u8,
        ]);
        line.push(b'\n');
        out.write_all(&line)?;
    }
    out.flush()
}

fn itoa_buf() -> [u8; 20] {
    [0; 20]
}

fn fmt_u64(buf: &mut [u8; 20], mut v: u64) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    &buf[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes() {
        let mut a = Vec::new();
        let mut b = Vec::new();
        let mut c = Vec::new();
        generate(&mut a, 1000, 10, 1).unwrap();
        generate(&mut b, 1000, 10, 1).unwrap();
        generate(&mut c, 1000, 10, 2).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let text = String::from_utf8(a).unwrap();
        assert_eq!(text.lines().count(), 1001);
        let reader = crate::tick_file::TickReader::new(std::io::Cursor::new(text.into_bytes())).unwrap();
        let rows: Vec<_> = reader.map(Result::unwrap).collect();
        assert_eq!(rows.len(), 1000);
        assert!(rows.windows(2).all(|w| w[0].event_time_ns <= w[1].event_time_ns));
        assert_eq!(rows[999].event_time_ns, (T0_MS + 999 / ROWS_PER_MS) as i64 * 1_000_000);
    }
}
