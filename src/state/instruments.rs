//! The symbol table: each symbol gets a small [`InstrumentId`] the first
//! time it is seen. A cap on distinct symbols keeps a client that invents
//! symbols from exhausting memory.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};

use dashmap::DashMap;
use rustc_hash::FxBuildHasher;

use crate::model::InstrumentId;

/// Longest symbol accepted, in bytes.
pub const MAX_SYMBOL_LEN: usize = 64;

/// Why a symbol was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SymbolError {
    #[error("symbol is empty")]
    Empty,
    #[error("symbol is {len} bytes long; the limit is {MAX_SYMBOL_LEN}")]
    TooLong { len: usize },
    #[error("symbol contains a control or whitespace character at byte {position}")]
    BadCharacter { position: usize },
    #[error("instrument limit of {limit} reached: a new symbol cannot be added")]
    TooManyInstruments { limit: u32 },
    #[error("no instrument has id {0}")]
    Unknown(u32),
}

/// Checks a symbol's shape (not whether it is known).
///
/// # Errors
/// The first problem found.
pub fn check_symbol(symbol: &str) -> Result<(), SymbolError> {
    if symbol.is_empty() {
        return Err(SymbolError::Empty);
    }
    if symbol.len() > MAX_SYMBOL_LEN {
        return Err(SymbolError::TooLong { len: symbol.len() });
    }
    if let Some((position, _)) = symbol.char_indices().find(|(_, c)| c.is_control() || c.is_whitespace()) {
        return Err(SymbolError::BadCharacter { position });
    }
    Ok(())
}

/// Interned symbols.
#[derive(Debug)]
pub struct Instruments {
    ids: DashMap<Arc<str>, InstrumentId, FxBuildHasher>,
    /// Id -> symbol; appended under the lock, read rarely (alerts, lists).
    symbols: RwLock<Vec<Arc<str>>>,
    next: AtomicU32,
    limit: u32,
}

impl Instruments {
    pub fn new(limit: u32) -> Self {
        Instruments {
            ids: DashMap::with_hasher(FxBuildHasher),
            symbols: RwLock::new(Vec::new()),
            next: AtomicU32::new(0),
            limit,
        }
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    pub fn len(&self) -> usize {
        self.next.load(Ordering::Relaxed).min(self.limit) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The id of a known symbol.
    #[inline]
    pub fn get(&self, symbol: &str) -> Option<InstrumentId> {
        self.ids.get(symbol).map(|r| *r)
    }

    /// The id of `symbol`, interning it if new. The second value is true
    /// when the symbol was new.
    ///
    /// # Errors
    /// A malformed symbol, or the cap reached.
    pub fn intern(&self, symbol: &str) -> Result<(InstrumentId, Arc<str>, bool), SymbolError> {
        if let Some(entry) = self.ids.get(symbol) {
            return Ok((*entry.value(), entry.key().clone(), false));
        }
        check_symbol(symbol)?;
        let key: Arc<str> = Arc::from(symbol);
        match self.ids.entry(key.clone()) {
            dashmap::Entry::Occupied(e) => Ok((*e.get(), e.key().clone(), false)),
            dashmap::Entry::Vacant(e) => {
                // Claimed under the shard lock: two racing new symbols get distinct ids.
                let id = self.next.fetch_add(1, Ordering::Relaxed);
                if id >= self.limit {
                    self.next.fetch_sub(1, Ordering::Relaxed);
                    return Err(SymbolError::TooManyInstruments { limit: self.limit });
                }
                let id = InstrumentId(id);
                e.insert(id);
                let mut symbols = self.symbols.write().unwrap_or_else(|p| p.into_inner());
                if symbols.len() <= id.0 as usize {
                    symbols.resize(id.0 as usize + 1, Arc::from(""));
                }
                symbols[id.0 as usize] = key.clone();
                Ok((id, key, true))
            }
        }
    }

    /// Every symbol interned so far, in id order.
    pub fn symbols(&self) -> Vec<Arc<str>> {
        let symbols = self.symbols.read().unwrap_or_else(|p| p.into_inner());
        symbols.iter().filter(|s| !s.is_empty()).cloned().collect()
    }

    /// The symbol of an id.
    pub fn symbol(&self, id: InstrumentId) -> Option<Arc<str>> {
        let symbols = self.symbols.read().unwrap_or_else(|p| p.into_inner());
        symbols.get(id.0 as usize).filter(|s| !s.is_empty()).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interns_and_caps() {
        let table = Instruments::new(2);
        let (a, _, new) = table.intern("BTC-USDT").unwrap();
        assert!(new);
        assert_eq!(table.intern("BTC-USDT").unwrap().0, a);
        let (b, _, _) = table.intern("ETH-USDT").unwrap();
        assert_ne!(a, b);
        assert_eq!(
            table.intern("SOL-USDT"),
            Err(SymbolError::TooManyInstruments { limit: 2 })
        );
        assert_eq!(table.len(), 2);
        assert_eq!(table.symbol(b).as_deref(), Some("ETH-USDT"));
        assert_eq!(table.get("BTC-USDT"), Some(a));
    }

    #[test]
    fn refuses_malformed_symbols() {
        let table = Instruments::new(10);
        assert_eq!(table.intern("").unwrap_err(), SymbolError::Empty);
        assert_eq!(
            table.intern(&"X".repeat(65)).unwrap_err(),
            SymbolError::TooLong { len: 65 }
        );
        assert!(table.intern(&"X".repeat(64)).is_ok());
        assert_eq!(
            table.intern("BTC\nUSDT").unwrap_err(),
            SymbolError::BadCharacter { position: 3 }
        );
        assert_eq!(
            table.intern("BTC USDT").unwrap_err(),
            SymbolError::BadCharacter { position: 3 }
        );
        assert_eq!(table.len(), 1);
    }
}
