//! `airbag kafka bench --instances 1,2,3`: the throughput topic read by N
//! services sharing it in one consumer group (`partitions = "group"`, a
//! state topic of their own, a state record per partition every second),
//! each N in turn, `--rounds` times.
//!
//! The group needs a while to form (joins, the assignment, rebalances as
//! members arrive) while the topic is already full, so the rate is taken
//! over the *settled* part of the read: from the first moment every member
//! owns a share and the shares cover every partition, to the last moment
//! before the topic is read to its end. Over that window the report gives
//! ticks per second and this process's CPU per tick (every member, their
//! librdkafka threads included; the broker is another process), and the
//! rebalances that still happened in it. The services run in this process,
//! each with its own consumer, state and engine, as separate processes
//! would; the figures are ratios against one instance in the same run.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::{create_topics, median, service_config, source, start_service, BenchArgs};
use crate::cli::cpu::self_cpu_ns;
use crate::config::kafka::{KafkaConfig, SourcePartitions};

/// Longest one read of the topic may take.
const READ_LIMIT: Duration = Duration::from_secs(300);
/// How often the members are looked at.
const SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// The settled window must hold at least this share of the topic.
const MIN_WINDOW_SHARE: f64 = 0.25;

/// One look at the members.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    received: u64,
    cpu_ns: u64,
    settled: bool,
    rebalances: u64,
}

/// One read's figures over its settled window.
#[derive(Clone, Copy, Debug)]
struct Read {
    rate: f64,
    cpu_ns_per_tick: f64,
    window_ticks: u64,
    rebalances: u64,
    settled_after: Duration,
}

/// Runs the phase and prints its report.
pub(super) async fn instances(args: &BenchArgs, topic: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.instances.iter().all(|&n| n > 0),
        "--instances: every count must be at least 1, got {:?}",
        args.instances
    );
    println!(
        "instances in one group (services in this process, each its own consumer, engine and state; rate over \
         the settled window):"
    );
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); args.instances.len()];
    let mut cpus: Vec<Vec<f64>> = vec![Vec::new(); args.instances.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); args.instances.len()];
    for round in 0..args.rounds {
        let mut first = None;
        for (k, &n) in args.instances.iter().enumerate() {
            let read = read_in_group(args, topic, n, round).await?;
            println!(
                "  round {round}, {n} instance(s): {:.0} ticks/s, {:.2} µs CPU per tick, over {} ticks (settled \
                 {:.1} s after start; {} rebalance callback(s) in the window)",
                read.rate,
                read.cpu_ns_per_tick / 1_000.0,
                read.window_ticks,
                read.settled_after.as_secs_f64(),
                read.rebalances,
            );
            let base = *first.get_or_insert(read.rate);
            rates[k].push(read.rate);
            cpus[k].push(read.cpu_ns_per_tick);
            ratios[k].push(read.rate / base);
        }
    }
    for (k, &n) in args.instances.iter().enumerate() {
        println!(
            "instances {n}: median {:.0} ticks/s, {:.2} µs CPU per tick, {:.2}× the first count's rate",
            median(rates[k].clone()),
            median(cpus[k].clone()) / 1_000.0,
            median(ratios[k].clone()),
        );
    }
    Ok(())
}

/// `n` services in a fresh group read the whole topic.
async fn read_in_group(args: &BenchArgs, topic: &str, n: usize, round: u32) -> anyhow::Result<Read> {
    let pid = std::process::id();
    let group = format!("airbag-bench-{pid}-group-{n}-{round}");
    // A state topic per read: records of an earlier group would resume
    // this one from where that one stopped.
    let state_topic = format!("{group}-state");
    create_topics(&args.brokers, &[(&state_topic, 1)]).await?;
    let mut members = Vec::with_capacity(n);
    for _ in 0..n {
        let mut source = source(args, topic, group.clone());
        source.partitions = SourcePartitions::Group;
        source.state_topic = Some(state_topic.clone());
        source.state_interval_ms = 1_000;
        let kafka = KafkaConfig {
            source: vec![source],
            sink: Vec::new(),
        };
        members.push(start_service(service_config(args, kafka)).await?);
    }
    let started = Instant::now();
    let partitions = usize::try_from(args.partitions).unwrap_or(0);
    let mut samples = Vec::new();
    loop {
        let mut sample = Sample {
            at: Instant::now(),
            received: 0,
            cpu_ns: self_cpu_ns().context("CPU time")?,
            settled: true,
            rebalances: 0,
        };
        let mut owned = 0;
        for member in &members {
            let core = member.core();
            sample.received += core.metrics().ticks_received.load(Ordering::Relaxed);
            let status = core.shared_status().unwrap_or_default();
            owned += status.partitions.len();
            sample.rebalances += status.rebalances;
            sample.settled &= !status.partitions.is_empty() || n > partitions;
        }
        sample.settled &= owned == partitions;
        samples.push(sample);
        if sample.received >= args.ticks {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < READ_LIMIT,
            "{n} instance(s): {} of {} ticks read in {READ_LIMIT:?}",
            sample.received,
            args.ticks
        );
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    for member in members {
        member.shutdown().await.context("stopping a member")?;
    }
    settled_window(&samples, args.ticks).map_err(|why| anyhow::anyhow!("{n} instance(s): {why}"))
}

/// The figures between the first settled sample and the last one before
/// the topic was read to its end.
fn settled_window(samples: &[Sample], ticks: u64) -> Result<Read, String> {
    let first = samples
        .iter()
        .position(|s| s.settled)
        .ok_or("the group never settled (every member owning a share of every partition)")?;
    let last = samples
        .iter()
        .rposition(|s| s.received < ticks)
        .filter(|&last| last > first)
        .ok_or("the group settled only once the topic was read: raise --ticks")?;
    let (a, b) = (samples[first], samples[last]);
    let window_ticks = b.received - a.received;
    if (window_ticks as f64) < ticks as f64 * MIN_WINDOW_SHARE {
        return Err(format!(
            "the settled window held {window_ticks} of {ticks} ticks (under {:.0}%): raise --ticks",
            MIN_WINDOW_SHARE * 100.0
        ));
    }
    let seconds = b.at.duration_since(a.at).as_secs_f64();
    Ok(Read {
        rate: window_ticks as f64 / seconds,
        cpu_ns_per_tick: b.cpu_ns.saturating_sub(a.cpu_ns) as f64 / window_ticks as f64,
        window_ticks,
        rebalances: b.rebalances - a.rebalances,
        settled_after: a.at.duration_since(samples[0].at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(points: &[(u64, u64, bool)]) -> Vec<Sample> {
        let t0 = Instant::now();
        points
            .iter()
            .enumerate()
            .map(|(k, &(received, cpu_ns, settled))| Sample {
                at: t0 + Duration::from_secs(k as u64),
                received,
                cpu_ns,
                settled,
                rebalances: k as u64 / 2,
            })
            .collect()
    }

    #[test]
    fn the_window_runs_from_settling_to_the_last_sample_before_the_end() {
        // Settles at t=1 (received 100), last short of 1000 at t=3 (700).
        let read = settled_window(
            &samples(&[
                (0, 0, false),
                (100, 1_000, true),
                (400, 4_000, true),
                (700, 7_000, true),
                (1_000, 9_000, true),
            ]),
            1_000,
        )
        .unwrap();
        assert_eq!(read.window_ticks, 600);
        assert!((read.rate - 300.0).abs() < 1e-9);
        assert!((read.cpu_ns_per_tick - 10.0).abs() < 1e-9);
        assert_eq!(read.settled_after, Duration::from_secs(1));
        assert_eq!(read.rebalances, 1);
    }

    #[test]
    fn a_group_that_settles_late_or_never_is_refused() {
        let never = samples(&[(0, 0, false), (500, 1, false), (1_000, 2, false)]);
        assert!(settled_window(&never, 1_000).unwrap_err().contains("never settled"));
        let late = samples(&[(0, 0, false), (900, 1, false), (950, 2, true), (1_000, 3, true)]);
        assert!(settled_window(&late, 1_000).unwrap_err().contains("raise --ticks"));
        let at_end = samples(&[(0, 0, false), (1_000, 3, true)]);
        assert!(settled_window(&at_end, 1_000).unwrap_err().contains("raise --ticks"));
    }
}
