//! Where instrument states live: a slab indexed by [`InstrumentId`],
//! generic over what each slot holds (the engine keeps a partition per
//! instrument: the instrument's state and the rules bound to it).
//!
//! Interned ids are dense (0, 1, 2, ...), so a state is found by index,
//! not by hashing: one array read, then the instrument's own lock. Each
//! instrument has its own mutex, so ticks for different instruments on
//! different threads never wait for each other, and a lock is held for one
//! tick at most (never across an await). The array of pointers is
//! allocated zeroed, so the operating system maps its pages as ids reach
//! them: an engine capped at millions of instruments costs nothing until
//! they appear. States are boxed and never move: a batch can prefetch the
//! states of the ticks it is about to apply.
//!
//! Unsafe code is allowed here: the slab owns its states through raw
//! pointers (`AtomicPtr`, leaked boxes), is allocated zeroed, and prefetches.
#![allow(unsafe_code)]

use std::alloc::{alloc_zeroed, handle_alloc_error, Layout};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use crate::model::InstrumentId;

use super::lock::{StateGuard, StateMutex};

/// What a slot of the store holds: the length of its front that a tick
/// reads, which a batch prefetches ahead.
pub trait HotPrefix {
    /// Bytes from the start of the value that a tick reads.
    const HOT_BYTES: usize;
}

/// One instrument's slot, on its own cache lines: its hot part spans a
/// known number of lines, and no two instruments share one.
#[repr(C, align(64))]
pub struct StateCell<T>(StateMutex<T>);

impl<T: HotPrefix> StateCell<T> {
    /// Cache lines from the start of a cell to the end of its value's hot
    /// part: the lock, then [`HotPrefix::HOT_BYTES`].
    const HOT_LINES: usize = (Self::VALUE_OFFSET + T::HOT_BYTES).div_ceil(LINE);

    /// Upper bound on how far a cell's value lies from its start: the lock.
    const VALUE_OFFSET: usize = std::mem::size_of::<StateMutex<T>>() - std::mem::size_of::<T>();

    /// Locks the value (see [`lock`]).
    #[inline]
    pub fn lock(&self) -> StateGuard<'_, T> {
        lock(&self.0)
    }

    /// Hints the CPU to fetch the part of this value a tick reads (the
    /// lock and [`HotPrefix::HOT_BYTES`], in whole lines).
    #[inline]
    pub fn prefetch(&self) {
        let start = (self as *const Self).cast::<u8>();
        for line in 0..Self::HOT_LINES {
            prefetch_line(start.wrapping_add(line * LINE));
        }
    }
}

#[inline(always)]
fn prefetch_line(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it never faults and reads nothing the
    // program sees, whatever the address.
    #[allow(unused_unsafe)]
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(address.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

const LINE: usize = 64;

/// Per-instrument values, by id.
pub struct StateStore<T> {
    /// One pointer per id below the capacity; null until the id's state
    /// is created. Each non-null pointer owns its cell (a leaked `Box`).
    cells: Box<[AtomicPtr<StateCell<T>>]>,
    /// The store owns its cells as boxes: it is `Send` and `Sync` exactly
    /// when a `Box<StateCell<T>>` is (when `T` is `Send`), which the raw
    /// pointers alone would not check.
    owns: PhantomData<Box<StateCell<T>>>,
    /// One past the highest id with a state.
    end: AtomicUsize,
}

impl<T: HotPrefix> StateStore<T> {
    /// A store for ids below `capacity`.
    pub fn new(capacity: u32) -> Self {
        let capacity = capacity as usize;
        let cells = if capacity == 0 {
            Box::default()
        } else {
            let layout = Layout::array::<AtomicPtr<StateCell<T>>>(capacity).expect("a u32 count of pointers fits");
            // SAFETY: `layout` has a non-zero size. An all-zero
            // `AtomicPtr` is a null pointer, so the zeroed memory holds
            // `capacity` valid values, and the box frees it with the same
            // layout it was allocated with.
            unsafe {
                let first = alloc_zeroed(layout).cast::<AtomicPtr<StateCell<T>>>();
                if first.is_null() {
                    handle_alloc_error(layout);
                }
                Box::from_raw(std::ptr::slice_from_raw_parts_mut(first, capacity))
            }
        };
        StateStore {
            cells,
            owns: PhantomData,
            end: AtomicUsize::new(0),
        }
    }

    /// The state of `id`, if it has one.
    #[inline]
    pub fn get(&self, id: InstrumentId) -> Option<&StateCell<T>> {
        let cell = self.cells.get(id.0 as usize)?.load(Ordering::Acquire);
        // SAFETY: a non-null pointer came from `Box::into_raw` in
        // `get_or_insert` and is freed only when the store drops.
        unsafe { cell.as_ref() }
    }

    /// The state of `id`, created by `init` if it has none. `None` when
    /// `id` is beyond the capacity.
    pub fn get_or_insert(&self, id: InstrumentId, init: impl FnOnce() -> T) -> Option<&StateCell<T>> {
        let slot = self.cells.get(id.0 as usize)?;
        // SAFETY: as in `get`.
        if let Some(cell) = unsafe { slot.load(Ordering::Acquire).as_ref() } {
            return Some(cell);
        }
        let fresh = Box::into_raw(Box::new(StateCell(StateMutex::new(init()))));
        let cell = match slot.compare_exchange(std::ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => fresh,
            Err(existing) => {
                // SAFETY: `fresh` was never shared: another thread's cell won.
                drop(unsafe { Box::from_raw(fresh) });
                existing
            }
        };
        self.end.fetch_max(id.0 as usize + 1, Ordering::AcqRel);
        // SAFETY: as in `get`.
        Some(unsafe { &*cell })
    }

    /// Locks every state in id order, one at a time, and calls `f`.
    pub fn for_each(&self, mut f: impl FnMut(&mut T)) {
        let end = self.end.load(Ordering::Acquire).min(self.cells.len());
        for slot in &self.cells[..end] {
            // SAFETY: as in `get`.
            if let Some(cell) = unsafe { slot.load(Ordering::Acquire).as_ref() } {
                f(&mut cell.lock());
            }
        }
    }
}

impl<T> Drop for StateStore<T> {
    fn drop(&mut self) {
        let end = (*self.end.get_mut()).min(self.cells.len());
        for slot in self.cells[..end].iter_mut() {
            let cell = *slot.get_mut();
            if !cell.is_null() {
                // SAFETY: the store owns every cell it points to, and
                // nothing borrows the store while it drops.
                drop(unsafe { Box::from_raw(cell) });
            }
        }
    }
}

/// Locks a state. The lock does not poison: the engine is written not to
/// panic while it holds one (every check that can fail comes before the
/// first update), and should a bug make it panic anyway, the instrument
/// stays usable rather than failing every later tick.
#[inline]
pub fn lock<T>(state: &StateMutex<T>) -> StateGuard<'_, T> {
    state.lock()
}
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::state::InstrumentState;

    impl HotPrefix for InstrumentState {
        const HOT_BYTES: usize = 64;
    }

    fn state(id: u32, symbol: &str) -> InstrumentState {
        InstrumentState::new(InstrumentId(id), Arc::from(symbol), 0)
    }

    #[test]
    fn a_state_is_created_once_and_found_by_id() {
        let store = StateStore::<InstrumentState>::new(10);
        assert!(store.get(InstrumentId(3)).is_none());
        let first =
            store.get_or_insert(InstrumentId(3), || state(3, "A")).unwrap() as *const StateCell<InstrumentState>;
        let again =
            store.get_or_insert(InstrumentId(3), || state(3, "B")).unwrap() as *const StateCell<InstrumentState>;
        assert_eq!(first, again, "the second init is not used");
        assert_eq!(&*store.get(InstrumentId(3)).unwrap().lock().symbol, "A");
        assert!(store.get(InstrumentId(2)).is_none());
    }

    #[test]
    fn ids_beyond_the_capacity_have_no_state() {
        let store = StateStore::<InstrumentState>::new(4);
        assert!(store.get_or_insert(InstrumentId(4), || state(4, "X")).is_none());
        assert!(store.get(InstrumentId(4)).is_none());
        let empty = StateStore::<InstrumentState>::new(0);
        assert!(empty.get_or_insert(InstrumentId(0), || state(0, "X")).is_none());
        empty.for_each(|_| panic!("an empty store has no state"));
    }

    #[test]
    fn for_each_visits_the_states_in_id_order() {
        let store = StateStore::<InstrumentState>::new(100);
        for id in [40, 7, 99, 8] {
            store.get_or_insert(InstrumentId(id), || state(id, &id.to_string()));
        }
        let mut seen = Vec::new();
        store.for_each(|s| seen.push(s.id.0));
        assert_eq!(seen, [7, 8, 40, 99]);
    }

    #[test]
    fn racing_creators_end_with_one_state_per_id() {
        const IDS: u32 = 2_000;
        let store = StateStore::<InstrumentState>::new(IDS);
        let cells: Vec<Vec<usize>> = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..2)
                .map(|racer| {
                    let store = &store;
                    scope.spawn(move || {
                        (0..IDS)
                            .map(|id| {
                                let cell = store.get_or_insert(InstrumentId(id), || state(id, &format!("{racer}")));
                                cell.unwrap() as *const StateCell<InstrumentState> as usize
                            })
                            .collect()
                    })
                })
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        assert_eq!(cells[0], cells[1], "both racers got the same state for every id");
        let mut count = 0;
        store.for_each(|_| count += 1);
        assert_eq!(count, IDS);
    }
}
