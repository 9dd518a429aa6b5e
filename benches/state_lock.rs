//! The per-instrument state lock: Airbag's own spin lock
//! (`state::lock::StateLock`) against `parking_lot`'s raw mutex, both
//! through `lock_api::Mutex`, on the engine's locking pattern.
//!
//! - `uncontended/<lock>`: one thread, 10,000 ticks round-robin over
//!   10,000 instruments, each state in its own 64-byte-aligned box (as
//!   `StateCell`s are), prefetched four ticks ahead as `apply_batch` does;
//!   per tick one lock, a short critical section (a drawdown-like update
//!   of last price, peak, count and sequence) and one unlock. Timed in the
//!   thread's CPU time, like `benches/engine.rs`.
//! - `contended/<lock>`: two threads, each 10,000 ticks over the same 4
//!   instruments (so they meet on every lock), wall time until both are
//!   done, per tick of either thread.
//!
//! The figures are in `src/state/lock.rs`'s module docs.
//!
//! Run: `cargo bench --bench state_lock`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use airbag::state::lock::StateLock;
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use parking_lot::lock_api::{Mutex, RawMutex};

#[path = "support/cpu_time.rs"]
mod cpu_time;

use cpu_time::{thread_cpu_ns, ThreadCpuTime};

/// Ticks per timed iteration, per thread.
const BATCH: usize = 10_000;
const INSTRUMENTS: usize = 10_000;
/// Instruments both threads of the contended case share.
const SHARED: usize = 4;
/// How many ticks ahead the state is prefetched, as in the engine.
const AHEAD: usize = 4;

/// A stand-in for an instrument's hot state: what a drawdown tick reads
/// and writes, padded to two cache lines with the lock.
#[derive(Default)]
struct State {
    last: i64,
    peak: i64,
    count: u64,
    seq: u64,
    fired: u64,
    _rest: [u64; 10],
}

/// One instrument's state behind its lock, on its own cache lines.
#[repr(C, align(64))]
struct Cell<R: RawMutex>(Mutex<R, State>);

/// The critical section: a drawdown-like update.
#[inline]
fn tick(state: &mut State, price: i64, seq: u64) {
    state.seq = seq;
    state.count += 1;
    state.last = price;
    if price > state.peak {
        state.peak = price;
    }
    if (state.peak - price) * 100 >= state.peak * 8 {
        state.fired += 1;
    }
}

#[inline(always)]
fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint: it never faults, whatever the address.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((value as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

fn cells<R: RawMutex>(n: usize) -> Vec<Box<Cell<R>>> {
    (0..n).map(|_| Box::new(Cell(Mutex::new(State::default())))).collect()
}

/// Prices that jitter within 1% of 100 (no drawdown fires).
fn prices() -> Vec<i64> {
    let mut lcg = 0x2545_f491_4f6c_dd1du64;
    (0..BATCH)
        .map(|_| {
            lcg = lcg
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            10_000 + ((lcg >> 33) % 99) as i64
        })
        .collect()
}

/// `BATCH` ticks round-robin from `first` over `cells`, each state locked
/// once, prefetched `AHEAD` ticks before.
fn run_batch<R: RawMutex>(cells: &[Box<Cell<R>>], prices: &[i64], first: usize, seq: u64) {
    let n = cells.len();
    for (i, price) in prices.iter().enumerate() {
        prefetch(&*cells[(first + i + AHEAD) % n]);
        let mut state = cells[(first + i) % n].0.lock();
        tick(&mut state, *price, seq);
    }
}

fn uncontended<R: RawMutex>(c: &mut Criterion<ThreadCpuTime>, name: &str) {
    let mut group = c.benchmark_group("uncontended");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(30);
    let cells = cells::<R>(INSTRUMENTS);
    let prices = prices();
    let mut pass = 0u64;
    group.bench_function(BenchmarkId::from_parameter(name), |b| {
        b.iter_custom(|iters| {
            let started = thread_cpu_ns();
            for _ in 0..iters {
                pass += 1;
                run_batch(black_box(&cells), &prices, (pass as usize * BATCH) % INSTRUMENTS, pass);
            }
            thread_cpu_ns().saturating_sub(started)
        })
    });
    group.finish();
}

fn contended<R: RawMutex + Sync>(c: &mut Criterion<WallTime>, name: &str) {
    let mut group = c.benchmark_group("contended");
    group.throughput(Throughput::Elements(2 * BATCH as u64));
    group.sample_size(30);
    let cells = cells::<R>(SHARED);
    let prices = prices();
    group.bench_function(BenchmarkId::from_parameter(name), |b| {
        b.iter_custom(|iters| {
            let started = Instant::now();
            std::thread::scope(|s| {
                for thread in 0..2 {
                    let (cells, prices) = (&cells, &prices);
                    s.spawn(move || {
                        for pass in 0..iters {
                            run_batch(black_box(cells), prices, thread, pass);
                        }
                    });
                }
            });
            started.elapsed()
        })
    });
    group.finish();
}

fn uncontended_bench(c: &mut Criterion<ThreadCpuTime>) {
    uncontended::<StateLock>(c, "spin");
    uncontended::<parking_lot::RawMutex>(c, "parking_lot");
}

fn contended_bench(c: &mut Criterion<WallTime>) {
    contended::<StateLock>(c, "spin");
    contended::<parking_lot::RawMutex>(c, "parking_lot");
}

criterion_group! {
    name = cpu;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = uncontended_bench
}
criterion_group! {
    name = wall;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = contended_bench
}
criterion_main!(cpu, wall);
