//! The symbols one ingest stream has sent, and their instrument ids.
//!
//! An open-addressing table whose 32-byte slots hold a symbol of up to
//! [`INLINE`] bytes in place: a lookup reads one cache line and follows no
//! pointer, and the line can be prefetched ([`SymbolCache::prefetch`])
//! while the rest of the batch is read. Longer symbols go to a plain map.
//! Lookups by `&str` allocate nothing.
//!
//! Unsafe code is allowed here: the prefetch intrinsic.
#![allow(unsafe_code)]

use std::hash::Hasher;

use rustc_hash::{FxHashMap, FxHasher};

use crate::model::InstrumentId;

/// Symbols up to this long are held in their slot.
const INLINE: usize = 23;
/// Slots of a table's first allocation.
const FIRST_SLOTS: usize = 64;

/// A symbol's hash, computed once per tick for the prefetch and the
/// lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SymbolHash(u64);

impl SymbolHash {
    #[inline]
    pub(super) fn of(symbol: &str) -> Self {
        let mut hasher = FxHasher::default();
        hasher.write(symbol.as_bytes());
        SymbolHash(hasher.finish())
    }

    /// Marks a used slot: never zero.
    fn tag(self) -> u32 {
        (self.0 >> 32) as u32 | 1
    }

    fn home(self, mask: usize) -> usize {
        self.0 as usize & mask
    }
}

#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Slot {
    /// 0 for an empty slot.
    tag: u32,
    id: InstrumentId,
    len: u8,
    /// The symbol, then zeros.
    text: [u8; INLINE],
}

const EMPTY: Slot = Slot {
    tag: 0,
    id: InstrumentId(0),
    len: 0,
    text: [0; INLINE],
};

/// `symbol`'s bytes padded with zeros, if it fits a slot.
#[inline]
fn inline_text(symbol: &str) -> Option<[u8; INLINE]> {
    let bytes = symbol.as_bytes();
    let mut text = [0; INLINE];
    text.get_mut(..bytes.len())?.copy_from_slice(bytes);
    Some(text)
}

/// Symbol -> instrument id, for at most `limit` symbols.
pub(super) struct SymbolCache {
    /// A power of two long (or empty), at most half full.
    slots: Vec<Slot>,
    inline: usize,
    long: FxHashMap<Box<str>, InstrumentId>,
    limit: usize,
}

impl SymbolCache {
    pub(super) fn new(limit: usize) -> Self {
        SymbolCache {
            slots: Vec::new(),
            inline: 0,
            long: FxHashMap::default(),
            limit,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.inline + self.long.len()
    }

    /// Hints the CPU to fetch the slot a lookup of `hash` starts at.
    #[inline]
    pub(super) fn prefetch(&self, hash: SymbolHash) {
        #[cfg(target_arch = "x86_64")]
        if let Some(slot) = self.slots.get(hash.home(self.slots.len().wrapping_sub(1))) {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            // SAFETY: prefetching never faults, whatever the address.
            #[allow(unused_unsafe)]
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>((slot as *const Slot).cast::<i8>());
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = hash;
    }

    /// The id of `symbol` (whose hash is `hash`), if cached.
    #[inline]
    pub(super) fn get(&self, hash: SymbolHash, symbol: &str) -> Option<InstrumentId> {
        let Some(text) = inline_text(symbol) else {
            return self.long.get(symbol).copied();
        };
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let tag = hash.tag();
        let mut i = hash.home(mask);
        loop {
            let slot = &self.slots[i];
            if slot.tag == 0 {
                return None;
            }
            if slot.tag == tag && usize::from(slot.len) == symbol.len() && slot.text == text {
                return Some(slot.id);
            }
            i = (i + 1) & mask;
        }
    }

    /// Remembers `symbol`'s id, unless the cache is full.
    pub(super) fn insert(&mut self, hash: SymbolHash, symbol: &str, id: InstrumentId) {
        if self.len() >= self.limit {
            return;
        }
        let Some(text) = inline_text(symbol) else {
            self.long.insert(symbol.into(), id);
            return;
        };
        if (self.inline + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let slot = Slot {
            tag: hash.tag(),
            id,
            len: symbol.len() as u8,
            text,
        };
        if self.place(hash, slot) {
            self.inline += 1;
        }
    }

    /// Puts `slot` in the table (over the slot of the same symbol, if
    /// there is one); returns whether it took an empty slot.
    fn place(&mut self, hash: SymbolHash, slot: Slot) -> bool {
        let mask = self.slots.len() - 1;
        let mut i = hash.home(mask);
        loop {
            let current = &mut self.slots[i];
            if current.tag == 0 {
                *current = slot;
                return true;
            }
            if current.tag == slot.tag && current.len == slot.len && current.text == slot.text {
                *current = slot;
                return false;
            }
            i = (i + 1) & mask;
        }
    }

    fn grow(&mut self) {
        let size = (self.slots.len() * 2).max(FIRST_SLOTS);
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; size]);
        for slot in old.into_iter().filter(|s| s.tag != 0) {
            let symbol = &slot.text[..usize::from(slot.len)];
            let mut hasher = FxHasher::default();
            hasher.write(symbol);
            self.place(SymbolHash(hasher.finish()), slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> InstrumentId {
        InstrumentId(n)
    }

    #[test]
    fn finds_what_it_holds_short_and_long_through_growth() {
        let mut cache = SymbolCache::new(10_000);
        let symbols: Vec<String> = (0..3_000)
            .map(|i| match i % 3 {
                0 => format!("S{i}"),
                1 => format!("LONG-SYMBOL-OVER-23-BYTES-{i}"),
                _ => format!("{i:0>23}"),
            })
            .collect();
        for (n, s) in symbols.iter().enumerate() {
            assert_eq!(cache.get(SymbolHash::of(s), s), None, "{s}");
            cache.insert(SymbolHash::of(s), s, id(n as u32));
        }
        assert_eq!(cache.len(), symbols.len());
        for (n, s) in symbols.iter().enumerate() {
            assert_eq!(cache.get(SymbolHash::of(s), s), Some(id(n as u32)), "{s}");
        }
        // A prefix, a padded look-alike and an empty symbol are not there.
        for s in ["S", "S1\0", "", "0000000000000000000000"] {
            assert_eq!(cache.get(SymbolHash::of(s), s), None, "{s:?}");
        }
        // Inserting again replaces, and does not count twice.
        cache.insert(SymbolHash::of("S0"), "S0", id(77));
        assert_eq!(cache.get(SymbolHash::of("S0"), "S0"), Some(id(77)));
        assert_eq!(cache.len(), symbols.len());
    }

    #[test]
    fn stops_remembering_at_its_limit() {
        let mut cache = SymbolCache::new(3);
        for (n, s) in ["A", "B", "a-symbol-longer-than-23-bytes", "C"].iter().enumerate() {
            cache.insert(SymbolHash::of(s), s, id(n as u32));
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(SymbolHash::of("C"), "C"), None);
        assert_eq!(cache.get(SymbolHash::of("A"), "A"), Some(id(0)));
        // Prefetching any hash is harmless, empty or not.
        SymbolCache::new(1).prefetch(SymbolHash::of("A"));
        cache.prefetch(SymbolHash(u64::MAX));
    }
}
