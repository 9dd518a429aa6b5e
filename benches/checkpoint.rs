//! Checkpoint cost on 10,000 instruments with the bundled rules: snapshot,
//! encoding, the durable write, reading back and restoring; the file size;
//! and whether checkpointing stalls ingest, measured as the latency of
//! 100-tick batches applied on one thread while another thread writes a
//! checkpoint every second (paced as the service paces them: after a slow
//! checkpoint, four times its duration passes before the next), against
//! the same without checkpoints.
//!
//! Two rule layouts: `default` (the bundled `rules/` on instruments named
//! like altcoins, so the catch-all applies) and `everywhere` (the same
//! rules with their scopes removed: every rule on every instrument, with
//! trades, quotes, mark and index prices). Each instrument ticks every
//! 500 ms of event time for six minutes before measuring, so the 5-minute
//! windows are full.
//!
//! Run: `cargo bench --bench checkpoint` (prints a table; no criterion).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use airbag::checkpoint::{format, Checkpoint, CheckpointStore, Checkpointer};
use airbag::ingest::ValidTick;
use airbag::model::{InstrumentId, Tick};
use airbag::rules::RuleSet;
use airbag::service::rulebook::compile_texts;
use airbag::{Engine, EngineConfig};
use hdrhistogram::Histogram;
use market::SteadyMarket;

#[path = "support/market.rs"]
mod market;

const T0: i64 = 1_700_000_000_000_000_000;
const INSTRUMENTS: usize = 10_000;
/// Event time between two ticks of one instrument.
const TICK_EVERY_NS: i64 = 500_000_000;
const WARM_UP_NS: i64 = 360_000_000_000;
const REPEAT: usize = 5;

fn rules(everywhere: bool) -> RuleSet {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let texts: Vec<(String, String)> = files
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).unwrap();
            let text = if everywhere {
                text.lines()
                    .filter(|l| !l.starts_with("instruments") && !l.starts_with("exclude"))
                    .map(|l| format!("{l}\n"))
                    .collect()
            } else {
                text
            };
            (p.display().to_string(), text)
        })
        .collect();
    compile_texts(&texts).unwrap()
}

/// Ticks round-robin over the instruments, `round` rounds from `from_ns`.
struct Market {
    ids: Vec<InstrumentId>,
    market: SteadyMarket,
    round: i64,
    seq: u64,
}

impl Market {
    fn new(engine: &Engine, mixed: bool) -> Self {
        let ids = (0..INSTRUMENTS)
            .map(|i| engine.resolve(&format!("ALT{i:05}-USDT"), T0).unwrap())
            .collect();
        Market {
            ids,
            market: SteadyMarket::new(mixed),
            round: 0,
            seq: 0,
        }
    }

    /// The next `n` ticks; prices jitter within 1%, so no rule fires.
    fn next(&mut self, n: usize, out: &mut Vec<ValidTick>) -> i64 {
        out.clear();
        let mut at = 0;
        for _ in 0..n {
            let i = (self.seq % INSTRUMENTS as u64) as usize;
            if i == 0 {
                self.round += 1;
            }
            self.seq += 1;
            let values = self.market.values(self.round as u64);
            at = T0 + self.round * TICK_EVERY_NS + i as i64 * (TICK_EVERY_NS / INSTRUMENTS as i64);
            out.push(
                ValidTick::new(Tick {
                    instrument: self.ids[i],
                    event_time_ns: at,
                    seq: self.round as u64,
                    values,
                })
                .expect("a valid tick"),
            );
        }
        at
    }

    fn feed(&mut self, engine: &Engine, n: usize, batch: &mut Vec<ValidTick>, alerts: &mut Vec<airbag::model::Alert>) {
        let at = self.next(n, batch);
        engine.apply_batch(batch, at, alerts, |_, r| r.unwrap());
        alerts.clear();
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn measure(name: &str, everywhere: bool, tmp: &Path) {
    let engine = Arc::new(Engine::new(EngineConfig::default(), rules(everywhere)));
    let mut market = Market::new(&engine, everywhere);
    let mut batch = Vec::new();
    let mut alerts = Vec::new();
    let rounds = (WARM_UP_NS / TICK_EVERY_NS) as usize;
    for _ in 0..rounds {
        market.feed(&engine, INSTRUMENTS, &mut batch, &mut alerts);
    }

    let snapshot_times: Vec<Duration> = (0..REPEAT)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(engine.snapshot());
            t.elapsed()
        })
        .collect();
    let checkpoint = Checkpoint {
        alert_seq: 0,
        written_at_ns: T0,
        engine: engine.snapshot(),
    };
    let encode_times: Vec<Duration> = (0..REPEAT)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(format::encode(&checkpoint).unwrap());
            t.elapsed()
        })
        .collect();
    let bytes = format::encode(&checkpoint).unwrap();
    let windows: usize = checkpoint.engine.instruments.iter().map(|i| i.windows.len()).sum();
    let rule_states: usize = checkpoint.engine.instruments.iter().map(|i| i.rules.len()).sum();

    let dir = tempfile::tempdir_in(tmp).unwrap();
    let checkpointer = Checkpointer::new(CheckpointStore::open(dir.path().join("checkpoints"), 3).unwrap());
    let write_times: Vec<Duration> = (0..REPEAT)
        .map(|i| {
            let t = Instant::now();
            checkpointer.write(&engine, i as u64, T0).unwrap();
            t.elapsed()
        })
        .collect();
    let restore_times: Vec<Duration> = (0..REPEAT)
        .map(|_| {
            let t = Instant::now();
            let loaded = checkpointer.store().load_newest().unwrap().loaded.unwrap();
            let fresh = Engine::new(EngineConfig::default(), rules(everywhere));
            let report = fresh.restore(loaded.checkpoint.engine, i64::MIN).unwrap();
            assert_eq!(report.instruments_restored, INSTRUMENTS);
            t.elapsed()
        })
        .collect();

    // One partition's share of six (a consumer group's hand-over): the
    // share's snapshot and encoding, and its restore into a running engine.
    let share_of = |symbol: &str| symbol.bytes().map(u32::from).sum::<u32>() % 6 == 0;
    let share_times: Vec<(Duration, usize, Duration)> = (0..REPEAT)
        .map(|_| {
            let t = Instant::now();
            let share = Checkpoint {
                alert_seq: 0,
                written_at_ns: T0,
                engine: engine.snapshot_where(share_of, false),
            };
            let bytes = format::encode(&share).unwrap();
            let written = t.elapsed();
            let receiver = Engine::new(EngineConfig::default(), rules(everywhere));
            let t = Instant::now();
            let back = format::decode(&bytes).unwrap();
            let report = receiver.restore_share(back.engine, i64::MIN).unwrap();
            assert!(report.instruments_restored > INSTRUMENTS / 10);
            (written, bytes.len(), t.elapsed())
        })
        .collect();
    let share_bytes = share_times[0].1;
    let share_instruments = checkpoint
        .engine
        .instruments
        .iter()
        .filter(|i| share_of(&i.symbol))
        .count();

    println!(
        "{name}: {INSTRUMENTS} instruments, {rule_states} rule states, {windows} windows; file {:.2} MB ({} bytes/instrument)",
        bytes.len() as f64 / 1e6,
        bytes.len() / INSTRUMENTS
    );
    println!(
        "  snapshot {} | encode {} | snapshot + encode + durable write {} | read + decode + restore {}   (median of {REPEAT})",
        ms(median(snapshot_times)),
        ms(median(encode_times)),
        ms(median(write_times)),
        ms(median(restore_times)),
    );

    println!(
        "  one partition of six ({share_instruments} instruments): state record {:.2} MB; snapshot + encode {} | decode + restore into a running engine {}   (median of {REPEAT})",
        share_bytes as f64 / 1e6,
        ms(median(share_times.iter().map(|t| t.0).collect())),
        ms(median(share_times.iter().map(|t| t.2).collect())),
    );

    // Ingest latency per 100-tick batch, without and with a checkpoint
    // every second on another thread.
    for with_checkpoints in [false, true] {
        let stop = Arc::new(AtomicBool::new(false));
        let writer = with_checkpoints.then(|| {
            let (engine, stop) = (engine.clone(), stop.clone());
            let store = CheckpointStore::open(dir.path().join("stall"), 3).unwrap();
            std::thread::spawn(move || {
                let checkpointer = Checkpointer::new(store);
                let mut written = 0;
                let every = Duration::from_secs(1);
                let mut wait = every;
                loop {
                    // Paced as the service paces them: at least four times
                    // a checkpoint's duration between two.
                    let until = Instant::now() + wait;
                    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let t = Instant::now();
                    checkpointer.write(&engine, 0, T0).unwrap();
                    written += 1;
                    let took = t.elapsed();
                    wait = every.saturating_sub(took).max(took * 4);
                }
                written
            })
        });
        let mut latency = Histogram::<u64>::new(3).unwrap();
        let started = Instant::now();
        let mut ticks = 0u64;
        while started.elapsed() < Duration::from_secs(12) {
            let at = market.next(100, &mut batch);
            let t = Instant::now();
            engine.apply_batch(&batch, at, &mut alerts, |_, r| r.unwrap());
            latency.record(t.elapsed().as_nanos() as u64).unwrap();
            alerts.clear();
            ticks += 100;
        }
        stop.store(true, Ordering::Relaxed);
        let written = writer.map_or(0, |w| w.join().unwrap());
        println!(
            "  ingest, 100-tick batches, {}: {:.0} ticks/s; batch p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs{}",
            if with_checkpoints {
                "checkpoint every 1 s"
            } else {
                "no checkpoints"
            },
            ticks as f64 / started.elapsed().as_secs_f64(),
            latency.value_at_quantile(0.5) as f64 / 1e3,
            latency.value_at_quantile(0.99) as f64 / 1e3,
            latency.value_at_quantile(0.999) as f64 / 1e3,
            latency.max() as f64 / 1e3,
            if with_checkpoints {
                format!(" ({written} checkpoints written)")
            } else {
                String::new()
            }
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter picks one layout.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    for (name, everywhere) in [("default", false), ("everywhere", true)] {
        if filter.as_deref().is_none_or(|f| name.contains(f)) {
            measure(name, everywhere, tmp);
        }
    }
}
