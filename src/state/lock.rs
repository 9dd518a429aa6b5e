//! The lock around each instrument's state.
//!
//! A tick holds its instrument's lock for well under a microsecond, and two
//! ticks for the same instrument rarely meet (streams mostly carry different
//! instruments), so the lock is built for the uncontended case: taking it is
//! one atomic compare-and-swap and releasing it is a plain store. A general
//! mutex that can park waiters (parking_lot, std) needs a second atomic
//! read-modify-write to release, which costs a measurable part of a tick's
//! budget. A waiter spins briefly, then yields its thread to the scheduler
//! until the lock is free, so a holder that was preempted is not starved
//! by spinning waiters.
//!
//! It earns its place over `parking_lot::RawMutex` behind the same
//! `lock_api::Mutex` (`cargo bench --bench state_lock`; medians of 3 runs,
//! same session, 2 shared cores):
//!
//! | per tick                                            | spin lock | parking_lot |
//! |-----------------------------------------------------|----------:|------------:|
//! | uncontended, 10,000 instruments (CPU ns)            |      4.56 |        7.21 |
//! | contended, 2 threads on the same 4 instruments (ns) |      5.08 |        6.70 |
//!
//! Through the engine (`cargo bench --bench engine`, the state's lock type
//! swapped, medians of 3 alternating runs): `drawdown/10000` 34.9 against
//! 35.8 ns per tick, `default_rules/10000` 34.5 against 36.0. Contended,
//! the runs scatter widely and the spin lock's mean is the worse (a
//! preempted holder makes waiters yield until it runs again), but ticks
//! for one instrument from two streams at once are the rare case.
//!
//! Unsafe code is allowed here: implementing `lock_api::RawMutex` is an
//! `unsafe impl` (the lock promises mutual exclusion).
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, Ordering};

/// Spins this many times before yielding the thread.
const SPINS_BEFORE_YIELD: u32 = 100;

/// The raw lock: `true` while held.
pub struct StateLock(AtomicBool);

// SAFETY: `lock` returns only once this thread has swapped `false` to
// `true` with Acquire ordering, and `unlock` stores `false` with Release:
// one holder at a time, and each holder sees every write of the previous.
unsafe impl parking_lot::lock_api::RawMutex for StateLock {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: StateLock = StateLock(AtomicBool::new(false));

    type GuardMarker = parking_lot::lock_api::GuardSend;

    #[inline]
    fn lock(&self) {
        if !self.try_lock() {
            self.lock_contended();
        }
    }

    #[inline]
    fn try_lock(&self) -> bool {
        self.0
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    #[inline]
    unsafe fn unlock(&self) {
        self.0.store(false, Ordering::Release);
    }

    #[inline]
    fn is_locked(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl StateLock {
    #[cold]
    fn lock_contended(&self) {
        let mut spins = 0;
        loop {
            // Wait with plain reads, so waiters do not keep stealing the
            // cache line from the holder.
            while self.0.load(Ordering::Relaxed) {
                if spins < SPINS_BEFORE_YIELD {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            if parking_lot::lock_api::RawMutex::try_lock(self) {
                return;
            }
        }
    }
}

/// A value behind a [`StateLock`].
pub type StateMutex<T> = parking_lot::lock_api::Mutex<StateLock, T>;
/// Access to a value behind a [`StateLock`], released when dropped.
pub type StateGuard<'a, T> = parking_lot::lock_api::MutexGuard<'a, StateLock, T>;

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::StateMutex;

    /// Threads that hammer one counter through the lock lose no update;
    /// a lock that let two holders in at once would lose some.
    #[test]
    fn excludes_concurrent_holders() {
        const THREADS: u64 = 4;
        const ROUNDS: u64 = 200_000;
        let counter = Arc::new(StateMutex::new((0u64, 0u64)));
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || {
                    for _ in 0..ROUNDS {
                        let mut guard = counter.lock();
                        // A read-modify-write split in two, so an overlap
                        // between holders shows as a lost update.
                        let seen = guard.0;
                        std::hint::black_box(&mut *guard);
                        guard.0 = seen + 1;
                        guard.1 += 1;
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        assert_eq!(*counter.lock(), (THREADS * ROUNDS, THREADS * ROUNDS));
    }

    #[test]
    fn try_lock_fails_while_held() {
        let mutex = StateMutex::new(1);
        let guard = mutex.lock();
        assert!(mutex.try_lock().is_none());
        drop(guard);
        assert_eq!(*mutex.try_lock().unwrap(), 1);
    }
}
