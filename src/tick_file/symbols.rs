//! The instruments of one file, interned in order of first appearance:
//! each symbol is validated as UTF-8 and allocated once, and every later
//! row finds its index by its bytes.
//!
//! Symbols of up to 15 bytes (nearly all) are keyed by a `u128` of their
//! bytes and length, looked up in a small open-addressing table: a
//! multiply to hash, two words to compare, no `memcmp`. Longer ones go
//! through a hash map of their bytes.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::TickFileErrorKind;

/// The longest symbol keyed by a `u128`: its bytes, then its length in
/// the last byte.
pub(super) const SHORT_SYMBOL: usize = 15;

/// The instruments of one file.
#[derive(Default)]
pub(super) struct Symbols {
    /// Symbols by index.
    pub names: Vec<Arc<str>>,
    short: ShortKeys,
    long: FxHashMap<Box<[u8]>, u32>,
    /// Without a sequence column: each instrument's last assigned number.
    last_seq: Vec<u64>,
    /// Rows without a sequence column are not numbered: see
    /// [`super::TickReader::skip_numbering`].
    pub unnumbered: bool,
}

impl Symbols {
    /// The key of a symbol of at most [`SHORT_SYMBOL`] bytes.
    #[inline]
    pub fn short_key(name: &[u8]) -> Option<u128> {
        if name.len() > SHORT_SYMBOL {
            return None;
        }
        // The bytes, then the length in the last byte.
        let mut bytes = [0u8; 16];
        bytes[..name.len()].copy_from_slice(name);
        bytes[15] = name.len() as u8;
        Some(u128::from_le_bytes(bytes))
    }

    /// The key of a symbol of `len` (at most [`SHORT_SYMBOL`]) bytes from
    /// its first eight bytes and the rest, each word zero past the symbol:
    /// as [`Symbols::short_key`] gives it, without a copy.
    #[inline(always)]
    pub fn key_of_words(low: u64, high: u64, len: usize) -> u128 {
        debug_assert!(len <= SHORT_SYMBOL);
        (u128::from(high | (len as u64) << 56) << 64) | u128::from(low)
    }

    /// The index of the short symbol with `key`, if it has been seen.
    #[inline(always)]
    pub fn find_short(&self, key: u128) -> Option<u32> {
        self.short.get(key)
    }

    /// The next number of instrument `index`, for a row of a file without
    /// a sequence column: 1, 2, 3, ... in file order, or 0 when rows are
    /// not numbered.
    #[inline(always)]
    pub fn number(&mut self, index: u32) -> u64 {
        if self.unnumbered {
            return 0;
        }
        let last = &mut self.last_seq[index as usize];
        *last = last.saturating_add(1);
        *last
    }

    /// The index of the symbol `name`, interning it on first sight.
    ///
    /// # Errors
    /// [`TickFileErrorKind::NotUtf8`] for a new symbol that is not UTF-8;
    /// nothing is interned then.
    #[inline]
    pub fn intern(&mut self, name: &[u8]) -> Result<u32, TickFileErrorKind> {
        let key = Self::short_key(name);
        let found = match key {
            Some(key) => self.short.get(key),
            None => self.long.get(name).copied(),
        };
        if let Some(id) = found {
            return Ok(id);
        }
        let text = std::str::from_utf8(name).map_err(|_| TickFileErrorKind::NotUtf8)?;
        let id = self.names.len() as u32;
        self.names.push(Arc::from(text));
        match key {
            Some(key) => self.short.insert(key, id),
            None => {
                self.long.insert(name.into(), id);
            }
        }
        self.last_seq.push(0);
        Ok(id)
    }
}

/// A key that no symbol has (its length byte is above 15): marks a free
/// slot.
const FREE: u128 = u128::MAX;

/// `u128` keys to indexes: linear probing in a power-of-two table kept at
/// most half full. Keys and indexes are kept apart so that the keys
/// probed are 16 bytes each.
struct ShortKeys {
    keys: Box<[u128]>,
    ids: Box<[u32]>,
    /// `64 - log2(keys.len())`: a hash's top bits pick the slot.
    shift: u32,
    len: usize,
}

impl Default for ShortKeys {
    fn default() -> Self {
        ShortKeys::with_slots(64)
    }
}

impl ShortKeys {
    fn with_slots(slots: usize) -> Self {
        debug_assert!(slots.is_power_of_two());
        ShortKeys {
            keys: vec![FREE; slots].into_boxed_slice(),
            ids: vec![0; slots].into_boxed_slice(),
            shift: 64 - slots.trailing_zeros(),
            len: 0,
        }
    }

    /// The first slot to probe for `key`: the top bits of a multiplicative
    /// hash, which depend on every bit of the key.
    #[inline(always)]
    fn home(&self, key: u128) -> usize {
        let folded = (key as u64) ^ ((key >> 64) as u64).rotate_left(29);
        (folded.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> self.shift) as usize
    }

    #[inline(always)]
    fn get(&self, key: u128) -> Option<u32> {
        debug_assert!(key != FREE);
        let mask = self.keys.len() - 1;
        let mut i = self.home(key);
        loop {
            let k = self.keys[i];
            if k == key {
                return Some(self.ids[i]);
            }
            if k == FREE {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds `key`, which must not be present.
    fn insert(&mut self, key: u128, id: u32) {
        if 2 * (self.len + 1) > self.keys.len() {
            let old = std::mem::replace(self, ShortKeys::with_slots(2 * self.keys.len()));
            for (&k, &v) in old.keys.iter().zip(old.ids.iter()).filter(|(k, _)| **k != FREE) {
                self.put(k, v);
            }
        }
        self.put(key, id);
    }

    fn put(&mut self, key: u128, id: u32) {
        let mask = self.keys.len() - 1;
        let mut i = self.home(key);
        while self.keys[i] != FREE {
            i = (i + 1) & mask;
        }
        self.keys[i] = key;
        self.ids[i] = id;
        self.len += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_symbols_intern_apart() {
        let mut symbols = Symbols::default();
        let long = b"A-VERY-LONG-INSTRUMENT-NAME-SWAP";
        let ids: Vec<u32> = [
            &b"AB"[..],
            b"AB\0",
            b"AB",
            long,
            b"123456789012345",
            b"1234567890123456",
            long,
            b"",
            b"\0",
            b"",
        ]
        .iter()
        .map(|n| symbols.intern(n).unwrap())
        .collect();
        assert_eq!(ids, [0, 1, 0, 2, 3, 4, 2, 5, 6, 5]);
        assert_eq!(&*symbols.names[2], "A-VERY-LONG-INSTRUMENT-NAME-SWAP");
        assert!(symbols.intern(b"\xff").is_err());
        assert_eq!(symbols.names.len(), 7, "a refused symbol is not interned");
    }

    #[test]
    fn each_instrument_is_numbered_on_its_own_unless_numbering_is_off() {
        let mut symbols = Symbols::default();
        let (a, b) = (symbols.intern(b"A").unwrap(), symbols.intern(b"B").unwrap());
        let numbers: Vec<u64> = [a, a, b, a, b].iter().map(|&i| symbols.number(i)).collect();
        assert_eq!(numbers, [1, 2, 1, 3, 2]);
        symbols.unnumbered = true;
        assert_eq!((symbols.number(a), symbols.number(b)), (0, 0));
    }

    #[test]
    fn many_similar_symbols_keep_their_indexes_as_the_table_grows() {
        let mut symbols = Symbols::default();
        let name = |i: usize| format!("SYN{i:04}-USDT");
        for i in 0..5_000 {
            assert_eq!(symbols.intern(name(i).as_bytes()).unwrap(), i as u32);
        }
        for i in (0..5_000).rev() {
            let key = Symbols::short_key(name(i).as_bytes()).unwrap();
            assert_eq!(symbols.find_short(key), Some(i as u32));
        }
        assert_eq!(symbols.find_short(Symbols::short_key(b"SYN5000-USDT").unwrap()), None);
        assert!(symbols.short.keys.len() >= 2 * 5_000);
    }

    #[test]
    fn keys_from_words_match_keys_from_the_name() {
        let word = |s: &[u8]| {
            let mut b = [0u8; 8];
            b[..s.len()].copy_from_slice(s);
            u64::from_le_bytes(b)
        };
        for name in [&b"B"[..], b"BTC-USDT", b"SYN0166-USDT", b"FIFTEEN-BYTES-X"] {
            let (low, high) = name.split_at(name.len().min(8));
            assert_eq!(
                Symbols::key_of_words(word(low), word(high), name.len()),
                Symbols::short_key(name).unwrap()
            );
        }
    }
}
