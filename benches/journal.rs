//! The cost of the alert journal, per alert, with the journal under each
//! fsync policy and in memory only, in the same run (the ratios are what
//! matter; absolute numbers for `always` are the disk's `fdatasync`
//! latency).
//!
//! - `encoding/*`: one alert to journal bytes and back (postcard).
//! - `publish/*`: `AlertBus::publish` in a tight loop, for as long as
//!   criterion runs it. In memory: numbering, ring, fan-out to no reader.
//!   With a journal the writer thread does the I/O; once the ring is full
//!   of alerts it has not written, `publish` waits for it, so this is the
//!   sustained rate of the whole log (publish and writer together).
//! - `burst_caller/*`: a burst of alerts (1000; 50 with `always`): only the
//!   caller's time in `publish` is counted, then (untimed) the wait until
//!   the burst is durable. What an engine thread holding an instrument's
//!   lock pays per alert.
//! - `burst_to_durable/*`: the same burst, timed until its last alert is
//!   durable (`wait_durable`): what an Ingest acknowledgement waits for.
//!
//! The alert is a drawdown alert with five values, as the engine raises
//! it. The journal lives in a temporary folder (`TMPDIR`).
//!
//! Run: `cargo bench --bench journal`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use airbag::alerts::encoding::{decode_alert, encode_alert};
use airbag::alerts::{AlertBus, BusConfig};
use airbag::clock::SystemClock;
use airbag::journal::{FsyncPolicy, Journal, JournalConfig};
use airbag::model::{Action, Alert, AlertKind, AlertValue, Fixed, Mode, Severity};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn drawdown_alert() -> Alert {
    Alert {
        rule_id: Arc::from("btc-flash-crash"),
        ruleset_version: 1,
        instrument: Arc::from("BTC-USDT"),
        kind: AlertKind::Fired,
        severity: Severity::Critical,
        actions: Arc::from(vec![Action::Halt]),
        mode: Mode::Active,
        values: vec![
            AlertValue::new("peak", Fixed::from_raw(6_500_000_000_000)),
            AlertValue::new("peak_age_ms", Fixed::from_raw(250_000_000_000)),
            AlertValue::new("price", Fixed::from_raw(5_980_000_000_000)),
            AlertValue::new("change_pct", Fixed::from_raw(-800_000_000)),
            AlertValue::new("threshold_pct", Fixed::from_raw(800_000_000)),
        ],
        event_time_ns: 1_700_000_002_500_000_000,
        tick_seq: Some(4),
        reason: None,
        trigger_instrument: None,
    }
}

fn bus_config() -> BusConfig {
    BusConfig {
        subscriber_queue: 4096,
        ring_capacity: 100_000,
    }
}

const POLICIES: [(&str, FsyncPolicy); 3] = [
    ("journal_never", FsyncPolicy::Never),
    (
        "journal_interval_100ms",
        FsyncPolicy::Interval(Duration::from_millis(100)),
    ),
    ("journal_always", FsyncPolicy::Always),
];

fn journaled(fsync: FsyncPolicy) -> (tempfile::TempDir, AlertBus) {
    let dir = tempfile::tempdir().expect("temp dir");
    let journal = Journal::open(
        dir.path(),
        JournalConfig {
            fsync,
            retain_bytes: 256 << 20,
            ..JournalConfig::default()
        },
    )
    .expect("journal");
    let bus = AlertBus::with_journal(bus_config(), Arc::new(SystemClock), journal);
    (dir, bus)
}

fn burst_len(fsync: FsyncPolicy) -> u64 {
    if fsync == FsyncPolicy::Always {
        50
    } else {
        1000
    }
}

fn journal_bench(c: &mut Criterion) {
    let alert = drawdown_alert();
    let mut payload = Vec::new();
    encode_alert(&alert, 0, 0, &mut payload).expect("encodes");
    eprintln!(
        "journal record: {} bytes ({} of payload)",
        payload.len() + airbag::journal::record::RECORD_HEAD,
        payload.len()
    );

    let mut group = c.benchmark_group("encoding");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode", |b| {
        let mut out = Vec::with_capacity(256);
        b.iter(|| encode_alert(black_box(&alert), 1, 2, &mut out).expect("encodes"))
    });
    group.bench_function("decode", |b| {
        b.iter(|| black_box(decode_alert(black_box(&payload)).unwrap()))
    });
    group.finish();

    let mut group = c.benchmark_group("publish");
    group.throughput(Throughput::Elements(1));
    let memory = AlertBus::new(bus_config(), Arc::new(SystemClock));
    group.bench_function("memory", |b| b.iter(|| black_box(memory.publish(alert.clone(), 0))));
    for (name, fsync) in POLICIES {
        let (_dir, bus) = journaled(fsync);
        if fsync == FsyncPolicy::Always {
            group.sample_size(20);
        }
        group.bench_function(name, |b| b.iter(|| black_box(bus.publish(alert.clone(), 0))));
        bus.wait_durable_blocking(bus.last_seq());
        let stats = bus.journal_stats().expect("journaled");
        assert_eq!(stats.write_failures, 0, "{name}: journal writes failed");
        eprintln!(
            "{name}: {} alerts journaled, {} fdatasync, {} publishes waited for the writer",
            stats.journal.appends,
            stats.journal.fsync.len(),
            stats.publish_waits
        );
    }
    group.finish();

    // A burst of alerts: the caller's time in publish, then (untimed) the
    // wait until the burst is durable.
    for (label, timed_wait) in [("burst_caller", false), ("burst_to_durable", true)] {
        let mut group = c.benchmark_group(label);
        for (name, fsync) in POLICIES {
            let n = burst_len(fsync);
            group.throughput(Throughput::Elements(n));
            group.sample_size(10);
            let (_dir, bus) = journaled(fsync);
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let mut took = Duration::ZERO;
                    for _ in 0..iters {
                        let started = Instant::now();
                        let mut last = 0;
                        for _ in 0..n {
                            last = bus.publish(alert.clone(), 0);
                        }
                        if !timed_wait {
                            took += started.elapsed();
                        }
                        bus.wait_durable_blocking(black_box(last));
                        if timed_wait {
                            took += started.elapsed();
                        }
                    }
                    took
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, journal_bench);
criterion_main!(benches);
