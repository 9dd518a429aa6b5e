//! Where instrument states live: a slab indexed by [`InstrumentId`].
//!
//! Interned ids are dense (0, 1, 2, ...), so a state is found by index,
//! not by hashing: two array reads, then the instrument's own lock. Each
//! instrument has its own mutex, so ticks for different instruments on
//! different threads never wait for each other, and a lock is held for one
//! tick at most (never across an await). Slots are allocated in chunks of
//! 1,024 on first use, so an engine capped at millions of instruments costs
//! nothing until they appear. States are boxed and never move: a batch can
//! prefetch the states of the ticks it is about to apply.

use std::sync::OnceLock;

use crate::model::InstrumentId;

use super::instrument::HOT_BYTES;
use super::lock::{StateGuard, StateMutex};
use super::InstrumentState;

const CHUNK: usize = 1024;

/// A state on its own cache lines: its hot part spans a known number of
/// lines, and no two instruments share one.
#[repr(C, align(64))]
struct Aligned(StateMutex<InstrumentState>);

const LINE: usize = 64;

/// Cache lines from the start of a state to the end of its hot part.
const HOT_LINES: usize = (LOCK_BYTES + HOT_BYTES).div_ceil(LINE);

/// Upper bound on how far a mutex's data lies from its start.
const LOCK_BYTES: usize = std::mem::size_of::<StateMutex<InstrumentState>>() - std::mem::size_of::<InstrumentState>();

type Slot = OnceLock<Box<Aligned>>;

/// Per-instrument states, by id.
pub struct StateStore {
    chunks: Box<[OnceLock<Box<[Slot]>>]>,
}

impl StateStore {
    /// A store for ids below `capacity`.
    pub fn new(capacity: u32) -> Self {
        let chunks = (capacity as usize).div_ceil(CHUNK);
        StateStore {
            chunks: (0..chunks).map(|_| OnceLock::new()).collect(),
        }
    }

    #[inline]
    fn slot(&self, id: InstrumentId) -> Option<&Slot> {
        let i = id.0 as usize;
        self.chunks.get(i / CHUNK)?.get().map(|chunk| &chunk[i % CHUNK])
    }

    /// The state of `id`, if it has one.
    #[inline]
    pub fn get(&self, id: InstrumentId) -> Option<&StateMutex<InstrumentState>> {
        self.slot(id)?.get().map(|b| &b.0)
    }

    /// The state of `id`, created by `init` if it has none. `None` when
    /// `id` is beyond the capacity.
    pub fn get_or_insert(
        &self,
        id: InstrumentId,
        init: impl FnOnce() -> InstrumentState,
    ) -> Option<&StateMutex<InstrumentState>> {
        let i = id.0 as usize;
        let chunk = self
            .chunks
            .get(i / CHUNK)?
            .get_or_init(|| (0..CHUNK).map(|_| OnceLock::new()).collect());
        Some(
            &chunk[i % CHUNK]
                .get_or_init(|| Box::new(Aligned(StateMutex::new(init()))))
                .0,
        )
    }

    /// Hints the CPU to fetch the part of `id`'s state a tick reads (its
    /// lock and [`HOT_BYTES`]: [`HOT_LINES`] whole lines) into cache.
    #[inline]
    pub fn prefetch(&self, id: InstrumentId) {
        #[cfg(target_arch = "x86_64")]
        if let Some(state) = self.get(id) {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let start = (state as *const StateMutex<InstrumentState>).cast::<i8>();
            for line in 0..HOT_LINES {
                // Prefetching never faults, whatever the address.
                #[allow(unused_unsafe)]
                unsafe {
                    _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(line * LINE));
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = id;
    }

    /// Locks every state in id order, one at a time, and calls `f`.
    pub fn for_each(&self, mut f: impl FnMut(&mut InstrumentState)) {
        for chunk in self.chunks.iter().filter_map(OnceLock::get) {
            for state in chunk.iter().filter_map(OnceLock::get) {
                f(&mut lock(&state.0));
            }
        }
    }
}

/// Locks a state. The lock does not poison: the engine is written not to
/// panic while it holds one (every check that can fail comes before the
/// first update), and should a bug make it panic anyway, the instrument
/// stays usable rather than failing every later tick.
#[inline]
pub fn lock(state: &StateMutex<InstrumentState>) -> StateGuard<'_, InstrumentState> {
    state.lock()
}
