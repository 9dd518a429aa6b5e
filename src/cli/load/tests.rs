use prost::Message;

use super::*;

fn plan(instruments: u32, connections: u32, crash_every: f64, duration: f64) -> Plan {
    let args = LoadArgs {
        instruments,
        connections,
        crash_every,
        duration,
        ..LoadArgs::default()
    };
    Plan {
        instruments,
        connections,
        batch: 10,
        duration: Duration::from_secs_f64(duration),
        crash_every,
        crash_count: args.crash_count(),
        step_factor: 0.9f64.powf(1.0 / f64::from(CRASH_STEPS)),
        epoch_ns: 1_700_000_000_000_000_000,
        seq_base: 1_000,
        crash_offset: 0,
        market_crash_at: None,
    }
}

#[test]
fn crashes_are_scheduled_round_robin_before_the_end() {
    let p = plan(3, 2, 0.5, 2.0);
    assert_eq!(p.crash_count, 3, "at 0.5, 1.0 and 1.5 s");
    // Crash j hits instrument j mod 3; instrument i is on connection i mod 2.
    assert_eq!(p.next_crash(0, 0), Some(0));
    assert_eq!(p.next_crash(1, 0), Some(1));
    assert_eq!(p.next_crash(0, 1), Some(2));
    assert_eq!(p.next_crash(1, 2), None);
    assert_eq!(p.crash_at(1), Duration::from_secs(1));
    assert_eq!(plan(3, 1, 0.0, 2.0).crash_count, 0);
    // A later run starts at its own wall-clock slot.
    let later = Plan { crash_offset: 2, ..p };
    assert_eq!((later.crash_instrument(0), later.crash_instrument(1)), (2, 0));
    assert_eq!((later.next_crash(0, 0), later.next_crash(1, 0)), (Some(0), Some(2)));
}

#[test]
fn the_walk_never_falls_near_a_crash() {
    let mut w = Walker::new(7, 0);
    let mut rng = Rng(42);
    let start = w.price();
    let (mut peak, mut worst) = (start, 0.0f64);
    for _ in 0..1_000_000 {
        let p = w.advance(rng.next_u64());
        peak = peak.max(p);
        worst = worst.max((peak - p) as f64 / peak as f64);
    }
    assert!(worst <= 0.021, "deepest fall {worst}");
}

#[test]
fn batches_decode_as_tick_batches_with_crashes_in_order() {
    let p = Arc::new(plan(4, 2, 0.5, 2.0));
    let mut g = Generator::new(p.clone(), 0, 1);
    let mut crashes = Vec::new();
    let (bytes, count) = g.build_batch(Duration::from_millis(600), 5, &mut crashes);
    let batch = proto::TickBatch::decode(bytes).unwrap();
    assert_eq!(batch.batch_id, 1);
    assert_eq!(count, 10 + CRASH_STEPS as usize);
    assert_eq!(batch.ticks.len(), count);
    // Crash 0 hits instrument 0 (on connection 0): its five ticks lead.
    assert_eq!(crashes.len(), 1);
    assert_eq!(
        (crashes[0].instrument, crashes[0].first_seq, crashes[0].last_seq),
        (0, 1_001, 1_005)
    );
    let price = |t: &proto::Tick| match &t.values {
        Some(proto::tick::Values::Trade(tr)) => {
            let d = tr.price.unwrap();
            Fixed::from_scaled(d.mantissa, d.scale).unwrap()
        }
        _ => panic!("not a trade"),
    };
    assert!(batch.ticks[..5].iter().all(|t| t.instrument == "LOAD-000001"));
    let fall = 1.0 - price(&batch.ticks[4]).to_f64() / 100.0;
    assert!((0.099..0.101).contains(&fall), "fell {fall}");
    // Then the walk, round-robin over instruments 0 and 2.
    assert_eq!(batch.ticks[5].instrument, "LOAD-000001");
    assert_eq!(batch.ticks[5].seq, 1_006);
    assert_eq!(batch.ticks[6].instrument, "LOAD-000003");
    assert_eq!(batch.ticks[6].seq, 1_001);
    assert!(batch.ticks.iter().all(|t| t.event_time_ns == 5));
    // The next batch has no crash until 1.5 s (crash 2 is instrument 2).
    let (bytes, count) = g.build_batch(Duration::from_millis(700), 6, &mut crashes);
    assert_eq!(count, 10);
    assert_eq!(proto::TickBatch::decode(bytes).unwrap().batch_id, 2);
}

#[test]
fn a_market_crash_crashes_every_instrument_of_the_connection_once_in_chunks() {
    // 4,000 instruments over 2 connections: connection 1 owns 2,000, and a
    // batch carries at most `market_crash_chunk(10)` of their crashes.
    let p = Arc::new(Plan {
        market_crash_at: Some(Duration::from_secs(1)),
        ..plan(4_000, 2, 0.0, 5.0)
    });
    let chunk = market_crash_chunk(p.batch);
    assert_eq!(chunk, (10_000 - 10) / 6);
    let mut g = Generator::new(p, 1, 1);
    let mut crashes = Vec::new();
    let (_, count) = g.build_batch(Duration::from_millis(900), 1, &mut crashes);
    assert_eq!((count, crashes.len()), (10, 0), "nothing before the market crash");
    let mut batches = Vec::new();
    for k in 0..4 {
        let (bytes, count) = g.build_batch(Duration::from_millis(1_000 + k), 2, &mut crashes);
        batches.push(proto::TickBatch::decode(bytes).unwrap());
        assert!(count <= 10_000, "within the default max_batch_ticks: {count}");
    }
    assert_eq!(crashes.len(), 2_000);
    assert_eq!(batches[0].ticks.len(), 10 + chunk * CRASH_STEPS as usize);
    assert_eq!(batches[2].ticks.len(), 10, "all crashed within two batches");
    // Each instrument of connection 1 (odd indices) crashed exactly once.
    let mut seen: Vec<u32> = crashes.iter().map(|c| c.instrument).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 2_000);
    assert!(seen.iter().all(|i| i % 2 == 1));
}

#[test]
fn a_market_crash_needs_no_planned_crashes_and_a_time_within_the_run() {
    let args = |at: f64, every: f64| LoadArgs {
        market_crash_at: Some(at),
        crash_every: every,
        duration: 5.0,
        ..LoadArgs::default()
    };
    assert!(args(1.0, 0.0).validate().is_ok());
    let e = args(1.0, 0.5).validate().unwrap_err().to_string();
    assert!(e.contains("--market-crash-at needs --crash-every 0"), "{e}");
    let e = args(5.0, 0.0).validate().unwrap_err().to_string();
    assert!(
        e.contains("--market-crash-at must be above 0 and below --duration (5)"),
        "{e}"
    );
}

#[test]
fn a_crashed_out_instrument_is_reset_first() {
    let p = Arc::new(plan(1, 1, 0.1, 100.0));
    let mut g = Generator::new(p, 0, 1);
    let mut crashes = Vec::new();
    // 14 crashes at 10% each take 100 below 25: the 15th resets first.
    for k in 1..=15u64 {
        g.build_batch(Duration::from_millis(100 * k), 1, &mut crashes);
    }
    assert_eq!(crashes.len(), 15);
    assert!(g.walkers[0].price() > 40 * Fixed::ONE.raw());
}

#[test]
fn alerts_match_crashes_once() {
    let book = Mutex::new(CrashBook::default());
    let sent = Instant::now();
    book.lock().unwrap().records.push(CrashRecord {
        instrument: 4,
        first_seq: 10,
        last_seq: 14,
        sent,
        matched: false,
    });
    let alert = |instrument: &str, seq| proto::Alert {
        instrument: instrument.into(),
        tick_seq: Some(seq),
        kind: "fired".into(),
        ..Default::default()
    };
    let mut stats = AlertStats::new();
    stats.on_fired(&alert("LOAD-000005", 13), sent + Duration::from_micros(250), &book);
    stats.on_fired(&alert("LOAD-000005", 13), sent, &book);
    stats.on_fired(&alert("LOAD-000001", 13), sent, &book);
    stats.on_fired(&alert("BTC-USDT", 13), sent, &book);
    assert_eq!((stats.matched, stats.unexpected), (1, 3));
    assert_eq!(stats.latency_us.max(), 250);
    assert_eq!(book.lock().unwrap().matched, 1);
}

#[test]
fn lean_acks_skip_last_applied() {
    let ack = proto::IngestAck {
        batch_id: 3,
        applied: 2,
        rejected: vec![proto::Rejection {
            index: 1,
            code: "duplicate".into(),
            reason: "r".into(),
        }],
        last_applied: vec![proto::InstrumentSeq {
            instrument: "X".into(),
            seq: 9,
        }],
    };
    let lean = LeanAck::decode(ack.encode_to_vec().as_slice()).unwrap();
    assert_eq!((lean.batch_id, lean.applied, lean.rejected.len()), (3, 2, 1));
}

#[test]
fn the_summary_line_has_every_field() {
    let mut report = LoadReport {
        connections: 2,
        instruments: 50,
        batch: 100,
        target_rate: 20_000.0,
        ticks_sent: 40_000,
        batches_sent: 400,
        applied: 40_000,
        rejected: 0,
        rejected_by_code: BTreeMap::new(),
        rejection_examples: vec![],
        seconds: 2.0,
        crashes: 3,
        crash_every: 0.5,
        alerts: 3,
        missing: 0,
        unexpected: 0,
        unexpected_examples: vec![],
        other_alerts: 0,
        latency_us: AlertStats::new().latency_us,
        server_latency_us: AlertStats::new().server_us,
        delivered_latency_us: AlertStats::new().delivered_us,
        ack_rtt_us: latency_histogram(),
        client_cpu_ns: Some(400_000_000),
        server_cpu_ns: None,
        server_ticks_applied: None,
        stream_errors: vec![],
        reloads: None,
    };
    assert_eq!(
        report.summary_line(),
        "summary: ticks=40000 seconds=2.000 ticks_per_s=20000 p50_us=n/a p90_us=n/a p99_us=n/a p999_us=n/a \
         max_us=n/a alerts=3 missing=0 unexpected=0 server_cpu_ns_per_tick=n/a"
    );
    for v in [100, 200, 300] {
        report.latency_us.record(v).unwrap();
    }
    report.server_cpu_ns = Some(80_000_000);
    let line = report.summary_line();
    assert!(line.contains("p50_us=200 "), "{line}");
    assert!(line.contains("max_us=300 "), "{line}");
    assert!(line.ends_with("server_cpu_ns_per_tick=2000"), "{line}");
    assert!(report.table().contains("10,000 ns/tick"), "{}", report.table());
    assert!(!line.contains("reload"), "{line}");

    let mut reloads = ReloadStats::new(0.1);
    for us in [20_000, 30_000, 95_000] {
        reloads.latency_us.record(us).unwrap();
    }
    report.reloads = Some(reloads);
    let line = report.summary_line();
    assert!(
        line.ends_with("server_cpu_ns_per_tick=2000 reload_p50_ms=30.0 reload_max_ms=95.0 reloads=3"),
        "{line}"
    );
    assert!(report.table().contains("reload write→active"), "{}", report.table());
}

#[test]
fn storm_rules_compile_and_differ() {
    let texts: Vec<(String, String)> = (1..=2).map(|n| (STORM_FILE.to_owned(), storm_rule(n))).collect();
    assert_ne!(texts[0].1, texts[1].1);
    for t in &texts {
        let set = crate::service::rulebook::compile_texts(std::slice::from_ref(t)).unwrap();
        assert_eq!(set.len(), 1);
    }
    let args = LoadArgs {
        reload_storm: Some("/no/such/folder".into()),
        reload_every: 0.0,
        ..LoadArgs::default()
    };
    let err = args.validate().unwrap_err().to_string();
    assert!(
        err.contains("--reload-every") && err.contains("--reload-storm"),
        "{err}"
    );
}

#[test]
fn bad_flags_are_all_named() {
    let args = LoadArgs {
        rate: -1.0,
        instruments: 0,
        batch: 0,
        ..LoadArgs::default()
    };
    let err = args.validate().unwrap_err().to_string();
    assert!(err.contains("--rate"), "{err}");
    assert!(err.contains("--instruments"), "{err}");
    assert!(err.contains("--batch"), "{err}");
    assert!(err.contains("--connections"), "{err}");
    assert!(LoadArgs::default().validate().is_ok());
    assert_eq!(parse_symbol(&symbol(0)), Some(0));
    assert_eq!(symbol(41), "LOAD-000042");
    assert_eq!(parse_symbol("LOAD-000000"), None);
}
