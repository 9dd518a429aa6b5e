//! Engine throughput: nanoseconds per tick through `Engine::apply`, on one
//! core, with no I/O. Protects the per-tick budget of the hot path (targets:
//! drawdown alone ≤ 50 ns/tick; the default rule set ≤ 250 ns/tick on
//! 10,000 instruments; a gRPC decode of a tick costs ~100 ns, so the engine
//! must not be the bottleneck).
//!
//! - `drawdown/1` and `drawdown/10000`: one drawdown rule, trades
//!   round-robin over 1 and 10,000 instruments.
//! - `default_rules/10000`: the bundled `rules/` folder on 10,000
//!   instruments named like altcoins, so the catch-all applies.
//! - `default_rules_everywhere/10000`: the same rules with their instrument
//!   scopes removed, so all of them apply to every instrument (the worst
//!   case), with trades, quotes, and mark and index prices.
//! - `groups/5` and `groups/10000`: rules across an underlying's
//!   instruments, groups of five (spot, perpetual and three venues'
//!   spot prices) with reference data: a basis rule (perpetual against
//!   spot) and an index rule (the perpetual against the median of the
//!   venues, stale and outlying venues left out), one group and 2,000.
//!   A drawdown rule on every instrument beside them, so the figure
//!   compares with `drawdown/*`: the extra is the group work.
//! - `pattern_sequence/10000`: one pattern rule, a 3-step relaxed
//!   sequence (`price > 100.5 -> price < 100.4 -> price >= 100.98 within
//!   1s`) on 10,000 instruments: the first two steps match about every
//!   other tick, so each instrument always holds partial matches, and
//!   about one tick in a hundred completes one (and raises an alert).
//! - `pattern_absence/10000`: `price >= 100.97 -> not price < 100.5
//!   within 300ms` on 10,000 instruments: a wait starts on one tick in
//!   fifty, the next tick mostly cancels it, a few fire on a later tick.
//! - `drawdown_beside_idle_pattern/1` and `/10000`: `drawdown/*` plus a
//!   pattern over mark prices, which the trades never reach: compared with
//!   `drawdown/*` in the same run, what a tick that feeds no pattern costs.
//! - `drawdown_beside_alert_pattern/1` and `/10000`: the same with a
//!   pattern that reads the drawdown rule's alerts (`alert('dd') ->
//!   tick(mark > 0)`), so every tick takes the path that gives alerts to
//!   patterns, and none is raised.
//! - `decimal_baseline`: the same number of `rust_decimal` comparisons a
//!   drawdown check makes, as a same-run reference for the fixed-point
//!   choice.
//!
//! Ticks are generated before timing; each iteration replays them shifted
//! forward in time and sequence, so windows see a steady market (prices
//! jitter within 1%: no rule fires). Each instrument numbers its ticks
//! without gaps, as the ingest contract asks of a feed.
//!
//! Times are the benchmark thread's CPU time ([`cpu_time::ThreadCpuTime`]),
//! not wall time: on a shared machine, time the scheduler gives to other
//! processes does not count. Only `Engine::apply_batch` is timed: making
//! each batch (copying 10,000 ticks shifted in time) is left out.
//!
//! Run: `cargo bench --bench engine`.

use std::hint::black_box;
use std::path::Path;

use airbag::ingest::ValidTick;
use airbag::model::{InstrumentId, Tick};
use airbag::service::rulebook::{compile_texts, load_dir};
use airbag::{Engine, EngineConfig};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

#[path = "support/cpu_time.rs"]
mod cpu_time;
#[path = "support/market.rs"]
mod market;

use cpu_time::{thread_cpu_ns, ThreadCpuTime};
use market::SteadyMarket;

const T0: i64 = 1_700_000_000_000_000_000;
/// Ticks per timed iteration.
const BATCH: usize = 10_000;
/// One tick every 10 µs of event time.
const STEP_NS: i64 = 10_000;

struct Feed {
    engine: Engine,
    ticks: Vec<Tick>,
    /// Event time covered by one pass over `ticks`.
    span_ns: i64,
    /// Ticks each instrument has in one pass.
    ticks_per_instrument: u64,
    pass: i64,
    alerts: Vec<airbag::model::Alert>,
    batch: Vec<ValidTick>,
}

impl Feed {
    fn new(engine: Engine, instruments: usize, mixed: bool) -> Self {
        let symbols: Vec<String> = (0..instruments)
            .map(|i| {
                if mixed && i % 2 == 1 {
                    format!("ALT{i:05}-USDT-SWAP")
                } else {
                    format!("ALT{i:05}-USDT")
                }
            })
            .collect();
        Self::with_symbols(engine, &symbols, mixed)
    }

    /// A feed of trades over `symbols`, round-robin.
    fn with_symbols(engine: Engine, symbols: &[String], mixed: bool) -> Self {
        let instruments = symbols.len();
        let ids: Vec<InstrumentId> = symbols.iter().map(|s| engine.resolve(s, T0).unwrap()).collect();
        let count = BATCH.max(instruments) * 4;
        let mut market = SteadyMarket::new(mixed);
        // Each instrument numbers its own ticks 1, 2, 3, ..., as a feed
        // does: no tick is a sequence gap.
        let ticks: Vec<Tick> = (0..count)
            .map(|n| {
                let values = market.values(n as u64);
                Tick {
                    instrument: ids[n % instruments],
                    event_time_ns: T0 + n as i64 * STEP_NS,
                    seq: (n / instruments) as u64 + 1,
                    values,
                }
            })
            .collect();
        let span_ns = count as i64 * STEP_NS;
        Feed {
            engine,
            ticks,
            span_ns,
            ticks_per_instrument: (count / instruments) as u64,
            pass: 0,
            alerts: Vec::new(),
            batch: Vec::with_capacity(BATCH),
        }
    }

    /// Applies the next `BATCH` ticks; returns the CPU time the engine
    /// took, leaving out the making of the batch.
    fn run_batch(&mut self) -> u64 {
        let per_pass = self.ticks.len() / BATCH;
        let chunk = (self.pass as usize) % per_pass;
        let pass = self.pass / per_pass as i64;
        let shift_ns = pass * self.span_ns;
        let shift_seq = pass as u64 * self.ticks_per_instrument;
        self.batch.clear();
        self.batch
            .extend(self.ticks[chunk * BATCH..(chunk + 1) * BATCH].iter().map(|tick| {
                ValidTick::new(Tick {
                    event_time_ns: tick.event_time_ns + shift_ns,
                    seq: tick.seq + shift_seq,
                    ..*tick
                })
                .expect("a valid tick")
            }));
        let received = self.batch[BATCH - 1].event_time_ns;
        let started = thread_cpu_ns();
        // Errors cannot happen here; one would show as a panic.
        self.engine
            .apply_batch(black_box(&self.batch), received, &mut self.alerts, |_, r| r.unwrap());
        let spent = thread_cpu_ns().saturating_sub(started);
        self.alerts.clear();
        self.pass += 1;
        spent
    }

    /// `iters` batches, timed as [`Feed::run_batch`] times them.
    fn run_batches(&mut self, iters: u64) -> u64 {
        (0..iters).map(|_| self.run_batch()).sum()
    }
}

fn default_rules() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| (p.display().to_string(), std::fs::read_to_string(p).unwrap()))
        .collect()
}

fn engine_bench(c: &mut Criterion<ThreadCpuTime>) {
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(30);

    let drawdown = "[[rule]]\nid = \"dd\"\nkind = \"drawdown\"\nwindow = \"3s\"\nthreshold = \"8%\"\n";
    for instruments in [1usize, 10_000] {
        let set = compile_texts(&[("dd.toml".into(), drawdown.into())]).unwrap();
        let mut feed = Feed::new(Engine::new(EngineConfig::default(), set), instruments, false);
        group.bench_function(BenchmarkId::new("drawdown", instruments), |b| {
            b.iter_custom(|iters| feed.run_batches(iters))
        });
    }

    let pattern =
        |id: &str, pattern: &str| format!("[[rule]]\nid = \"{id}\"\nkind = \"pattern\"\npattern = \"{pattern}\"\n");
    for (name, text) in [
        (
            "pattern_sequence",
            pattern(
                "seq",
                "tick(price > 100.5) -> tick(price < 100.4) -> tick(price >= 100.98) within 1s",
            ),
        ),
        (
            "pattern_absence",
            pattern("gone", "tick(price >= 100.97) -> not tick(price < 100.5) within 300ms"),
        ),
    ] {
        let set = compile_texts(&[("p.toml".into(), text)]).unwrap();
        let mut feed = Feed::new(Engine::new(EngineConfig::default(), set), 10_000, false);
        group.bench_function(BenchmarkId::new(name, 10_000), |b| {
            b.iter_custom(|iters| feed.run_batches(iters))
        });
    }
    for (name, extra) in [
        (
            "drawdown_beside_idle_pattern",
            pattern("marks", "tick(mark > 200) -> tick(mark < 50) within 1s"),
        ),
        (
            "drawdown_beside_alert_pattern",
            pattern("after-dd", "alert('dd') -> tick(mark > 0) within 1s"),
        ),
    ] {
        for instruments in [1usize, 10_000] {
            let set = compile_texts(&[("dd.toml".into(), drawdown.into()), ("p.toml".into(), extra.clone())]).unwrap();
            let mut feed = Feed::new(Engine::new(EngineConfig::default(), set), instruments, false);
            group.bench_function(BenchmarkId::new(name, instruments), |b| {
                b.iter_custom(|iters| feed.run_batches(iters))
            });
        }
    }

    let set = load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")).unwrap();
    let mut feed = Feed::new(Engine::new(EngineConfig::default(), set), 10_000, false);
    group.bench_function(BenchmarkId::new("default_rules", 10_000), |b| {
        b.iter_custom(|iters| feed.run_batches(iters))
    });

    let everywhere: Vec<(String, String)> = default_rules()
        .into_iter()
        .map(|(name, text)| {
            let unscoped: String = text
                .lines()
                .filter(|l| !l.starts_with("instruments") && !l.starts_with("exclude"))
                .map(|l| format!("{l}\n"))
                .collect();
            (name, unscoped)
        })
        .collect();
    // Unscoped, the rules' own tests (written for their instruments) no
    // longer apply: compiled without them.
    let set = airbag::rules::compile(&everywhere, &airbag::rules::RuleLimits::default())
        .unwrap()
        .without_tests();
    let mut feed = Feed::new(Engine::new(EngineConfig::default(), set), 10_000, true);
    group.bench_function(BenchmarkId::new("default_rules_everywhere", 10_000), |b| {
        b.iter_custom(|iters| feed.run_batches(iters))
    });

    for groups in [1usize, 2_000] {
        let mut refs = String::new();
        let mut symbols = Vec::new();
        for g in 0..groups {
            for (suffix, product) in [
                ("SPOT", "spot"),
                ("PERP", "perpetual"),
                ("A", "spot"),
                ("B", "spot"),
                ("C", "spot"),
            ] {
                let symbol = format!("G{g:04}-{suffix}");
                refs.push_str(&format!(
                    "[[instrument]]\nsymbol = \"{symbol}\"\nunderlying = \"G{g:04}\"\nproduct = \"{product}\"\n\n"
                ));
                symbols.push(symbol);
            }
        }
        let rules = format!(
            "{drawdown}\n[[rule]]\nid = \"basis\"\ngroup = \"underlying\"\n\
             when = \"(price(perpetual) - price(spot)) / price(spot) > 5%\"\n\n\
             [[rule]]\nid = \"index\"\ngroup = \"underlying\"\n\
             when = \"abs(price(perpetual) - group_median(price, spot)) / group_median(price, spot) > 5%\"\n\
             max_age = \"10s\"\noutlier = \"5%\"\n"
        );
        let set = compile_texts(&[("00-refs.toml".into(), refs), ("10-rules.toml".into(), rules)]).unwrap();
        let mut feed = Feed::with_symbols(Engine::new(EngineConfig::default(), set), &symbols, false);
        group.bench_function(BenchmarkId::new("groups", groups * 5), |b| {
            b.iter_custom(|iters| feed.run_batches(iters))
        });
    }

    // Same-run reference: a drawdown check in rust_decimal (peak - price
    // >= threshold × peak) for BATCH ticks.
    let prices: Vec<rust_decimal::Decimal> = (0..BATCH)
        .map(|i| rust_decimal::Decimal::new(10_000_000 + (i as i64 * 7919) % 98_000, 5))
        .collect();
    let threshold = rust_decimal::Decimal::new(8, 2);
    group.bench_function("decimal_baseline", |b| {
        b.iter(|| {
            let mut peak = rust_decimal::Decimal::ZERO;
            let mut fired = 0u32;
            for p in &prices {
                peak = peak.max(*p);
                if peak - *p >= threshold * peak {
                    fired += 1;
                }
            }
            black_box(fired)
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = engine_bench
}
criterion_main!(benches);
