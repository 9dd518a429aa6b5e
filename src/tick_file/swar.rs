//! Eight bytes at a time in a `u64` ("SIMD within a register"): finding
//! delimiters and reading runs of decimal digits without a branch per
//! byte. Portable and safe; the reader's fast path ([`super::fast`]) is
//! built on these.
//!
//! Words are little-endian loads, so byte `i` of the text is bits
//! `8 * i .. 8 * i + 8` and the first byte that matches is found with
//! `trailing_zeros() / 8`. Every flag function is exact for every byte
//! value: no carry crosses from one byte into the next.

/// `0x01` in every byte.
const ONES: u64 = 0x0101_0101_0101_0101;
/// The high bit of every byte.
const HIGH: u64 = 0x8080_8080_8080_8080;
/// The low seven bits of every byte.
const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// The eight bytes of `bytes` at `at`, as a little-endian word.
#[inline(always)]
pub(super) fn load(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// The high bit of each byte of `word` set where that byte is ASCII and
/// below `limit` (`limit <= 0x80`); bytes from `0x80` up are never below.
#[inline(always)]
pub(super) fn below(word: u64, limit: u8) -> u64 {
    debug_assert!(limit <= 0x80);
    !(((word & LOW7) + ONES * u64::from(0x80 - limit)) | word) & HIGH
}

/// The high bit of each byte of `word` set where that byte is `byte`.
#[inline(always)]
pub(super) fn equal(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * u64::from(byte));
    !(((x & LOW7) + LOW7) | x) & HIGH
}

/// The high bit of each byte of `word` set where that byte is not an
/// ASCII digit.
#[inline(always)]
pub(super) fn non_digits(word: u64) -> u64 {
    // Digits become 0..=9; everything else is 10 or more.
    let x = word ^ (ONES * u64::from(b'0'));
    (((x & LOW7) + ONES * (0x80 - 10)) | x) & HIGH
}

/// Index of the first byte flagged in `flags` (8 when none is).
#[inline(always)]
pub(super) fn first(flags: u64) -> usize {
    (flags.trailing_zeros() / 8) as usize
}

/// The bytes of a word before the first one flagged in `flags` set (all
/// of them when none is).
#[inline(always)]
pub(super) fn before_first(flags: u64) -> u64 {
    ((flags & flags.wrapping_neg()) >> 7).wrapping_sub(1)
}

/// The low `n` bytes of a word set (`n <= 8`).
#[inline(always)]
pub(super) fn low_bytes(n: usize) -> u64 {
    debug_assert!(n <= 8);
    // Two shifts: `1 << 64` would overflow.
    ((1u64 << (4 * n)) << (4 * n)).wrapping_sub(1)
}

/// The number written by the first `n` bytes of `word` (`n <= 8`), which
/// must be ASCII digits; the bytes after them are ignored.
#[inline(always)]
pub(super) fn digits_value(word: u64, n: usize) -> u64 {
    debug_assert!(n <= 8);
    // Digit values, the first digit in the low byte; shifted up so that
    // the `8 - n` bytes below the first digit are zeros (leading zeros)
    // and the bytes after the last are gone.
    let shift = 32 - 4 * n as u32;
    let v = ((word ^ (ONES * u64::from(b'0'))) << shift) << shift;
    // Pairs, then quadruples, then all eight: each step multiplies the
    // higher-order half by its power of ten and adds the lower.
    let v = (v.wrapping_mul((10 << 8) + 1) >> 8) & 0x00ff_00ff_00ff_00ff;
    let v = (v.wrapping_mul((100 << 16) + 1) >> 16) & 0x0000_ffff_0000_ffff;
    v.wrapping_mul((10_000 << 32) + 1) >> 32
}

/// Powers of ten that fit a `u64`.
pub(super) const POW10: [u64; 20] = {
    let mut table = [1u64; 20];
    let mut i = 1;
    while i < 20 {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

/// The run of ASCII digits starting at `bytes[at]`: its value and length,
/// for runs of up to 19 digits. `None` for a longer run; `bytes` must hold
/// 24 bytes from `at`.
#[inline(always)]
pub(super) fn digit_run(bytes: &[u8], at: usize) -> Option<(u64, usize)> {
    let w0 = load(bytes, at);
    let n0 = first(non_digits(w0));
    if n0 < 8 {
        return Some((digits_value(w0, n0), n0));
    }
    digit_run_after_eight(bytes, at, digits_value(w0, 8))
}

/// The first eight bytes of a run of at least eight digits and their
/// value: a run that starts with the same bytes (times in a file share
/// their leading digits for minutes on end) skips reading them again.
#[derive(Clone, Copy, Debug)]
pub(super) struct Leading {
    word: u64,
    value: u64,
}

impl Default for Leading {
    fn default() -> Self {
        // Eight real digits with their true value, so that a match is
        // right whatever bytes it matches (no word is "impossible").
        Leading {
            word: u64::from_le_bytes(*b"00000000"),
            value: 0,
        }
    }
}

/// As [`digit_run`], reusing `leading` when the run starts with its
/// eight digits and remembering them otherwise.
#[inline(always)]
pub(super) fn digit_run_with(bytes: &[u8], at: usize, leading: &mut Leading) -> Option<(u64, usize)> {
    let w0 = load(bytes, at);
    if w0 == leading.word {
        return digit_run_after_eight(bytes, at, leading.value);
    }
    let n0 = first(non_digits(w0));
    if n0 < 8 {
        return Some((digits_value(w0, n0), n0));
    }
    let value = digits_value(w0, 8);
    *leading = Leading { word: w0, value };
    digit_run_after_eight(bytes, at, value)
}

/// The rest of a digit run whose first eight digits, at `at`, are worth
/// `high`.
#[inline(always)]
fn digit_run_after_eight(bytes: &[u8], at: usize, high: u64) -> Option<(u64, usize)> {
    let w1 = load(bytes, at + 8);
    let n1 = first(non_digits(w1));
    if n1 < 8 {
        return Some((high * POW10[n1] + digits_value(w1, n1), 8 + n1));
    }
    let w2 = load(bytes, at + 16);
    let n2 = first(non_digits(w2));
    if n2 > 3 {
        return None;
    }
    // At most 19 digits: below 10^19 < 2^64, so no overflow.
    let high = high * POW10[8] + digits_value(w1, 8);
    Some((high * POW10[n2] + digits_value(w2, n2), 16 + n2))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn flags(bytes: [u8; 8], test: impl Fn(u8) -> bool) -> u64 {
        bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| test(**b))
            .fold(0, |m, (i, _)| m | 0x80 << (8 * i))
    }

    #[test]
    fn flags_are_exact_for_every_byte_in_every_position() {
        // Each byte value at each position, next to neighbours that could
        // carry or borrow into it.
        for b in 0..=255u8 {
            for pos in 0..8 {
                for fill in [0x00, 0x2c, 0x30, 0x39, 0x7f, 0x80, 0xff] {
                    let mut bytes = [fill; 8];
                    bytes[pos] = b;
                    let w = u64::from_le_bytes(bytes);
                    assert_eq!(non_digits(w), flags(bytes, |c| !c.is_ascii_digit()), "{bytes:?}");
                    assert_eq!(equal(w, b','), flags(bytes, |c| c == b','), "{bytes:?}");
                    assert_eq!(equal(w, b'\n'), flags(bytes, |c| c == b'\n'), "{bytes:?}");
                    for limit in [b'-', b'0', 0x80] {
                        assert_eq!(below(w, limit), flags(bytes, |c| c < limit), "{bytes:?} {limit}");
                    }
                }
            }
        }
    }

    #[test]
    fn digit_values_and_runs() {
        let word = |s: &str| {
            let mut b = [b'x'; 8];
            b[..s.len()].copy_from_slice(s.as_bytes());
            u64::from_le_bytes(b)
        };
        assert_eq!(digits_value(word("12345678"), 8), 12_345_678);
        assert_eq!(digits_value(word("00012"), 5), 12);
        assert_eq!(digits_value(word("9"), 1), 9);
        assert_eq!(digits_value(word(""), 0), 0);
        assert_eq!(low_bytes(0), 0);
        assert_eq!(low_bytes(3), 0xff_ffff);
        assert_eq!(low_bytes(8), u64::MAX);
        for n in 0..=8 {
            let mut bytes = [b'x'; 8];
            if n < 8 {
                bytes[n] = b',';
                bytes[7] = b',';
            }
            let flags = equal(u64::from_le_bytes(bytes), b',');
            assert_eq!(before_first(flags), low_bytes(n), "{n}");
        }

        let run = |s: &str| {
            let mut b = s.as_bytes().to_vec();
            b.resize(s.len() + 24, b',');
            digit_run(&b, 0)
        };
        assert_eq!(run(",1"), Some((0, 0)));
        assert_eq!(run("1700000000000,5"), Some((1_700_000_000_000, 13)));
        assert_eq!(run("1234567812345678"), Some((1_234_567_812_345_678, 16)));
        assert_eq!(run("9999999999999999999"), Some((9_999_999_999_999_999_999, 19)));
        assert_eq!(run("12345678901234567890"), None);
    }

    #[test]
    fn runs_with_remembered_leading_digits_read_as_without() {
        let mut leading = Leading::default();
        let texts = [
            "1700000000000,",
            "1700000000001,",
            "17000000,",
            "1700000099999999999,",
            "17000000999999999999,",
            "1,",
            "1700000100000,",
            ",",
            "1700000100001.5",
            "00000000000,",
        ];
        for round in 0..2 {
            for text in texts {
                let mut bytes = text.as_bytes().to_vec();
                bytes.resize(text.len() + 24, b'x');
                assert_eq!(
                    digit_run_with(&bytes, 0, &mut leading),
                    digit_run(&bytes, 0),
                    "{text} in round {round}"
                );
            }
        }
        // Bytes that are no digits at all, before any run was remembered.
        let mut bytes = vec![0xff; 8];
        bytes.resize(32, b',');
        assert_eq!(digit_run_with(&bytes, 0, &mut Leading::default()), digit_run(&bytes, 0));
    }

    proptest! {
        #[test]
        fn digit_runs_read_as_str_parse_does(digits in "[0-9]{0,19}", after in "[^0-9]") {
            let mut bytes = format!("{digits}{after}").into_bytes();
            bytes.resize(bytes.len() + 24, b'7');
            let want = if digits.is_empty() { 0 } else { digits.parse::<u64>().unwrap() };
            prop_assert_eq!(digit_run(&bytes, 0), Some((want, digits.len())));
            let mut leading = Leading::default();
            prop_assert_eq!(digit_run_with(&bytes, 0, &mut leading), Some((want, digits.len())));
            prop_assert_eq!(digit_run_with(&bytes, 0, &mut leading), Some((want, digits.len())));
        }

        #[test]
        fn non_digit_flags_match_a_byte_loop(bytes in proptest::array::uniform8(any::<u8>())) {
            let w = u64::from_le_bytes(bytes);
            prop_assert_eq!(non_digits(w), flags(bytes, |c| !c.is_ascii_digit()));
            prop_assert_eq!(below(w, b'-'), flags(bytes, |c| c < b'-'));
            prop_assert_eq!(equal(w, b','), flags(bytes, |c| c == b','));
        }
    }
}
