//! The cost of the alert journal: nanoseconds per alert through
//! `AlertBus::publish`, in memory only and with the journal under each
//! fsync policy, in the same run (the ratio is what matters; absolute
//! numbers for `always` are the disk's `fdatasync` latency).
//!
//! - `memory`: no journal (numbering, ring, fan-out to no subscriber).
//! - `journal_never`: encode + one `write` per alert.
//! - `journal_interval_100ms`: the same, plus a background `fdatasync`.
//! - `journal_always`: the same, plus an `fdatasync` per alert.
//!
//! The alert is a drawdown alert with five values, as the engine raises
//! it. The journal lives in a temporary folder (`TMPDIR`).
//!
//! Run: `cargo bench --bench journal`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use airbag::alerts::encoding::encode_alert;
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
    }
}

fn bus_config() -> BusConfig {
    BusConfig {
        subscriber_queue: 4096,
        ring_capacity: 100_000,
    }
}

fn journal_bench(c: &mut Criterion) {
    let alert = drawdown_alert();
    let mut payload = Vec::new();
    encode_alert(&alert, 0, 0, &mut payload);
    eprintln!(
        "journal record: {} bytes ({} of payload)",
        payload.len() + airbag::journal::record::RECORD_HEAD,
        payload.len()
    );
    let mut group = c.benchmark_group("publish");
    group.throughput(Throughput::Elements(1));

    let memory = AlertBus::new(bus_config(), Arc::new(SystemClock));
    group.bench_function("memory", |b| b.iter(|| black_box(memory.publish(alert.clone(), 0))));

    for (name, fsync) in [
        ("journal_never", FsyncPolicy::Never),
        (
            "journal_interval_100ms",
            FsyncPolicy::Interval(Duration::from_millis(100)),
        ),
        ("journal_always", FsyncPolicy::Always),
    ] {
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
        if fsync == FsyncPolicy::Always {
            group.sample_size(20);
        }
        group.bench_function(name, |b| b.iter(|| black_box(bus.publish(alert.clone(), 0))));
        let stats = bus.journal_stats().expect("journaled");
        assert_eq!(stats.write_failures, 0, "{name}: journal writes failed");
        eprintln!("{name}: {} alerts journaled", stats.journal.appends);
    }
    group.finish();
}

criterion_group!(benches, journal_bench);
criterion_main!(benches);
