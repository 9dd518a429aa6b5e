//! `airbag load`: the load generator and tick-to-alert latency benchmark.
//!
//! # What it sends
//!
//! `--instruments N` synthetic instruments `LOAD-000001` ... `LOAD-N`, each
//! a seeded random walk of trades: every tick moves the price by -1, 0 or
//! +1 basis point, and the walk stays within ±1% of its base, so no
//! instrument ever falls more than about 2% within any window. Ticks go
//! round-robin over the instruments of a connection, `--batch` ticks per
//! batch, all stamped with the batch's wall-clock time as event time.
//!
//! Every `--crash-every` seconds one instrument crashes: five consecutive
//! ticks in one batch take it down by `--crash-depth` percent (12% by
//! default), and its walk goes on from the new level. Crashes go
//! round-robin by wall-clock time: the crash in time slot
//! `t / crash-every` (`t` in seconds since the Unix epoch) hits instrument
//! `slot mod N`. So, within a run and across back-to-back runs with the
//! same flags against one server, an instrument crashes again only after
//! `N × crash-every` seconds, and a second run does not trip over the
//! first run's cooldowns. An instrument's price that has fallen below a
//! quarter of where it started first jumps back up (a rise, which a
//! drawdown rule ignores) before its next crash.
//!
//! # What it expects
//!
//! A drawdown rule on every instrument — by default the rule with id
//! `drawdown-catch-all` in the bundled `rules/` (10% within 60 s, 60 s
//! cooldown); name another with `--expect-rule` — that fires for a fall of
//! `--crash-depth` and not for the walk's swings. The default depth, 12%,
//! clears a 10% threshold with room to spare. Each crash must then
//! raise exactly one `fired` alert of that rule, triggered by one of the
//! crash's ticks (matched by instrument and the alert's `tick_seq`).
//! Before it starts, `load` checks with `RuleAdmin.ListRules` that the
//! server has that rule. The same instrument crashes again only every
//! `N × crash-every` seconds; keep that longer than the rule's window and
//! its cooldown (over 60 s for the bundled rule), or a repeat crash is
//! (rightly) not alerted and counts as missing. For a latency histogram
//! with enough samples, crash often over many instruments, e.g.
//! `--instruments 2000 --crash-every 0.05 --duration 60` (1,200 crashes,
//! none repeated).
//!
//! # What it measures
//!
//! - Achieved ticks/s: ticks sent over the time from the first batch to the
//!   last acknowledgement, so a server that cannot keep up shows.
//! - Tick-to-alert latency, in an HdrHistogram (µs, 3 significant
//!   figures): from the moment the client handed the batch holding the
//!   triggering tick to its gRPC stream to the moment the subscriber
//!   received the alert. Client and subscriber share one clock.
//! - Alerts matched, missing (a crash with no alert `--grace` seconds after
//!   the end) and unexpected (an alert of the rule that matches no crash,
//!   or a second one for the same crash).
//! - CPU: this process's (`getrusage`) and, with `--server-pid`, the
//!   server's (`/proc/PID/stat`), both per tick over the sending phase.
//!
//! # Sending
//!
//! `--connections K` TCP connections with one `Ingest` stream each;
//! instrument `i` belongs to connection `i mod K`, so each instrument's
//! ticks stay in order. Each connection paces itself to `rate / K` with a
//! [`Pacer`] (`--rate 0`: as fast as the server takes them). Batches are
//! protobuf-encoded straight into a reused buffer from one reused `Tick`
//! message (no allocation per tick) and handed to tonic as bytes;
//! acknowledgements are decoded into a lean message that skips their
//! per-instrument `last_applied` list. Sequence numbers start at the run's
//! start time in microseconds, so runs against the same server never
//! collide with an earlier run's numbers.
//!
//! # Alert storm
//!
//! `--storm N` is a market-wide crash: a 2 s run over `N` instruments, all
//! of which crash at 1 s, so `N` alerts are raised together (the case the
//! journal's group commit is for). Beside tick-to-alert it reports, per
//! alert, the server's receive of the batch to the subscriber's receipt
//! (`received_time_ns` against this machine's wall clock: same machine
//! only), which includes the journal's sync; `scripts/storm.sh` runs it
//! with each `fsync` policy and counts the server's `fdatasync` calls.
//!
//! # Reload storm
//!
//! `--reload-storm DIR --reload-every S` measures hot reload under load.
//! `DIR` must be the server's rules folder (watched by the server). Every
//! `S` seconds during the sending phase, `load` rewrites
//! `DIR/zz-load-reload-storm.toml` (written to a hidden temporary file,
//! then renamed into place) with one harmless rule, a `stale_feed` rule on
//! an instrument no one sends, whose `description` changes each time, and
//! then polls `RuleAdmin.ListRules` every 2 ms until the server's ruleset
//! version changes: the write-to-active latency, debounce included. Writes
//! whose reload does not show within 5 s count as timeouts. At the end the
//! file is removed, and `load` waits for that reload too, so the folder is
//! left as it was found.
//!
//! # Layout
//!
//! This module holds the flags, the run and its admin calls;
//! [`generator`] makes the ticks, [`connection`] sends them over one
//! stream, [`crashes`] matches alerts to crashes, [`storm`] drives
//! `--reload-storm` and [`report`] prints the outcome.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder, Streaming};
use tonic::codegen::http::uri::PathAndQuery;

use crate::cli::pace::Pacer;
use crate::cli::wire::{self, thousands, ConnectError, Connection};
use crate::cli::{cpu, subscribe, DEFAULT_ADDR};
use crate::model::Fixed;
use crate::wire::proto;
use crate::wire::proto::rule_admin_client::RuleAdminClient;

mod connection;
mod crashes;
mod generator;
mod report;
mod storm;
#[cfg(test)]
mod tests;

use self::connection::*;
pub use self::crashes::symbol;
use self::crashes::*;
use self::generator::*;
pub use self::report::LoadReport;
use self::storm::*;
pub use self::storm::{storm_rule, ReloadStats};

/// The rule `load` expects crashes to fire unless told otherwise.
pub const DEFAULT_EXPECT_RULE: &str = "drawdown-catch-all";
/// Ticks per crash.
pub const CRASH_STEPS: u32 = 5;
/// How far the random walk may stray from its base, in basis points.
pub const WALK_BAND_BP: i32 = 100;
/// Largest latency the histogram holds: 60 s, in µs. Larger values are
/// clamped to it.
const LATENCY_MAX_US: u64 = 60_000_000;

/// An empty histogram of latencies from 1 µs to [`LATENCY_MAX_US`].
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).unwrap_or_else(|_| unreachable!("valid histogram bounds"))
}
/// How long to wait for a connection's last acknowledgements.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long admin calls (rule check, status) may take.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Examples kept of rejections and unexpected alerts.
const EXAMPLES: usize = 5;
const INGEST_PATH: &str = "/airbag.v1.Ingest/Ingest";
/// The file `--reload-storm` rewrites in the rules folder.
pub const STORM_FILE: &str = "zz-load-reload-storm.toml";
/// How often the storm polls the server's ruleset version.
const STORM_POLL: Duration = Duration::from_millis(2);
/// How long one storm write may take to become active.
const STORM_TIMEOUT: Duration = Duration::from_secs(5);

/// `airbag load`: synthetic ticks with injected crashes; throughput,
/// tick-to-alert latency and CPU per tick.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadArgs {
    /// Server address, `http://host:port` or `host:port`.
    #[arg(long, env = "AIRBAG_ADDR", default_value = DEFAULT_ADDR, value_name = "URL")]
    pub addr: String,
    /// Target ticks per second over all connections; 0 sends as fast as the
    /// server takes them.
    #[arg(long, default_value_t = 100_000.0, value_name = "TICKS_PER_S")]
    pub rate: f64,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub duration: f64,
    /// Number of synthetic instruments (`LOAD-000001`, ...), at most 999999.
    #[arg(long, default_value_t = 1_000, value_name = "N")]
    pub instruments: u32,
    /// Concurrent ingest connections; instruments are split among them.
    #[arg(long, default_value_t = 2, value_name = "K")]
    pub connections: u32,
    /// Ticks per batch.
    #[arg(long, default_value_t = 100, value_name = "B")]
    pub batch: u32,
    /// Seconds between crashes (one instrument each, round-robin); 0 for
    /// none.
    #[arg(long, default_value_t = 1.0, value_name = "SECONDS")]
    pub crash_every: f64,
    /// Seconds into the run when every instrument crashes at once (a
    /// market-wide crash: each connection sends its instruments' crashes in
    /// its next batches, all at the same event time). Use with
    /// `--crash-every 0`.
    #[arg(long, value_name = "SECONDS")]
    pub market_crash_at: Option<f64>,
    /// A market-wide storm: a 2 s run over N instruments, every one of
    /// which crashes at 1 s (as `--instruments N --crash-every 0
    /// --market-crash-at 1 --duration 2`): N alerts raised together.
    #[arg(long, value_name = "N", conflicts_with_all = ["instruments", "crash_every", "market_crash_at", "duration"])]
    pub storm: Option<u32>,
    /// How far a crash takes the price down, in percent.
    #[arg(long, default_value_t = 12.0, value_name = "PCT")]
    pub crash_depth: f64,
    /// Seed of the random walks.
    #[arg(long, default_value_t = 1, value_name = "S")]
    pub seed: u64,
    /// The rule whose `fired` alerts the crashes should raise.
    #[arg(long, default_value = DEFAULT_EXPECT_RULE, value_name = "ID")]
    pub expect_rule: String,
    /// The server's process id, to report its CPU time per tick (Linux,
    /// same machine).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Seconds to wait after sending for the alerts of the last crashes.
    #[arg(long, default_value_t = 2.0, value_name = "SECONDS")]
    pub grace: f64,
    /// The server's (watched) rules folder: while the load runs, rewrite a
    /// harmless rule file in it every `--reload-every` seconds and measure
    /// how long each write takes to become the ruleset in force.
    #[arg(long, value_name = "DIR")]
    pub reload_storm: Option<PathBuf>,
    /// Seconds between rewrites with `--reload-storm`.
    #[arg(long, default_value_t = 0.1, value_name = "SECONDS")]
    pub reload_every: f64,
    /// When an ingest stream fails (a lost connection, a server restart),
    /// reconnect and go on from the server's last applied sequence numbers
    /// (`Ingest.LastApplied`) for up to this long; 0 ends that connection
    /// at its first failure.
    #[arg(long, default_value_t = 0.0, value_name = "SECONDS")]
    pub retry_for: f64,
    #[command(flatten)]
    pub security: wire::ClientSecurity,
}

impl Default for LoadArgs {
    fn default() -> Self {
        LoadArgs {
            addr: DEFAULT_ADDR.into(),
            rate: 100_000.0,
            duration: 10.0,
            instruments: 1_000,
            connections: 2,
            batch: 100,
            crash_every: 1.0,
            market_crash_at: None,
            storm: None,
            crash_depth: 12.0,
            seed: 1,
            expect_rule: DEFAULT_EXPECT_RULE.into(),
            server_pid: None,
            grace: 2.0,
            reload_storm: None,
            reload_every: 0.1,
            retry_for: 0.0,
            security: wire::ClientSecurity::default(),
        }
    }
}

impl LoadArgs {
    /// Checks the flags, naming every one that is wrong.
    ///
    /// # Errors
    /// [`LoadError::Args`] listing the problems.
    pub fn validate(&self) -> Result<(), LoadError> {
        let mut problems = Vec::new();
        let seconds = |v: f64| v.is_finite() && v >= 0.0;
        if !(self.rate.is_finite() && self.rate >= 0.0) {
            problems.push(format!("--rate must be 0 or more ticks per second, got {}", self.rate));
        }
        if !(seconds(self.duration) && self.duration > 0.0 && self.duration <= 86_400.0) {
            problems.push(format!(
                "--duration must be above 0 and at most 86400 seconds, got {}",
                self.duration
            ));
        }
        if !(1..=999_999).contains(&self.instruments) {
            problems.push(format!("--instruments must be 1 to 999999, got {}", self.instruments));
        }
        if self.connections == 0 || self.connections > self.instruments.max(1) || self.connections > 1_024 {
            problems.push(format!(
                "--connections must be 1 to min(--instruments, 1024), got {}",
                self.connections
            ));
        }
        if !(1..=100_000).contains(&self.batch) {
            problems.push(format!("--batch must be 1 to 100000, got {}", self.batch));
        }
        if !seconds(self.crash_every) || (self.crash_every > 0.0 && self.crash_every < 0.000_1) {
            problems.push(format!(
                "--crash-every must be 0 (no crashes) or at least 0.0001 seconds, got {}",
                self.crash_every
            ));
        }
        if let Some(at) = self.market_crash_at {
            if !(at.is_finite() && at > 0.0 && at < self.duration) {
                problems.push(format!(
                    "--market-crash-at must be above 0 and below --duration ({}) seconds, got {at}",
                    self.duration
                ));
            }
            if self.crashes_enabled() {
                problems.push(
                    "--market-crash-at needs --crash-every 0: an instrument that crashed shortly before would be \
                     (rightly) in its rule's cooldown and count as missing"
                        .to_string(),
                );
            }
        }
        if !(self.crash_depth.is_finite() && self.crash_depth > 0.0 && self.crash_depth < 90.0) {
            problems.push(format!(
                "--crash-depth must be above 0 and below 90 percent, got {}",
                self.crash_depth
            ));
        }
        if !seconds(self.retry_for) || self.retry_for > 3_600.0 {
            problems.push(format!("--retry-for must be 0 to 3600 seconds, got {}", self.retry_for));
        }
        if !seconds(self.grace) || self.grace > 600.0 {
            problems.push(format!("--grace must be 0 to 600 seconds, got {}", self.grace));
        }
        if !(seconds(self.reload_every) && (0.001..=3_600.0).contains(&self.reload_every)) {
            problems.push(format!(
                "--reload-every must be 0.001 to 3600 seconds, got {}",
                self.reload_every
            ));
        }
        if let Some(dir) = &self.reload_storm {
            if !dir.is_dir() {
                problems.push(format!("--reload-storm {} is not a folder", dir.display()));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(LoadError::Args(problems.join("; ")))
        }
    }

    /// The flags `--storm N` stands for, in place of it.
    pub fn with_storm(&self) -> LoadArgs {
        let mut args = self.clone();
        if let Some(n) = args.storm.take() {
            args.instruments = n;
            args.crash_every = 0.0;
            args.market_crash_at = Some(1.0);
            args.duration = 2.0;
        }
        args
    }

    fn crashes_enabled(&self) -> bool {
        self.crash_every > 0.0
    }

    /// Whether the run injects any crash (planned or a market crash), so
    /// it needs the rule and an alert subscription.
    fn expects_alerts(&self) -> bool {
        self.crashes_enabled() || self.market_crash_at.is_some()
    }

    /// How many crashes a run injects: one at every multiple of
    /// `crash_every` strictly before `duration`.
    pub fn crash_count(&self) -> u64 {
        if !self.crashes_enabled() {
            return 0;
        }
        let mut n = 0u64;
        while ((n + 1) as f64) * self.crash_every < self.duration && n < 10_000_000 {
            n += 1;
        }
        n
    }
}

/// Why a load run could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Args(String),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(
        "the server has no rule `{rule}` (it has: {available}); `airbag load` needs a drawdown rule on every \
         instrument that fires for a {depth}% fall (see --expect-rule, or --crash-every 0 for none)"
    )]
    NoSuchRule {
        rule: String,
        available: String,
        depth: f64,
    },
    #[error("{what}: {}", wire::status_text(.status))]
    Rpc { what: &'static str, status: tonic::Status },
}

/// Runs `airbag load`: the table, then the summary line, on stdout.
///
/// # Errors
/// Bad flags, the server cannot be reached, lacks the expected rule, or
/// refuses the subscription.
pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let report = run_load(&args.with_storm()).await?;
    print!("{}", report.table());
    println!("{}", report.summary_line());
    Ok(())
}

/// Runs a load test against the server at `args.addr`.
///
/// Bounded in time: about `duration + grace` seconds, plus at most
/// 30 s waiting for acknowledgements from a stuck server.
///
/// # Errors
/// See [`run`]. A stream that fails mid-run does not fail the run: it is
/// reported in [`LoadReport::stream_errors`] (and shows as missing alerts
/// or a low rate).
pub async fn run_load(args: &LoadArgs) -> Result<LoadReport, LoadError> {
    args.validate()?;
    let target = wire::Target::new(&args.addr, &args.security)?;
    let admin_channel = target.connect().await?;
    let mut admin = RuleAdminClient::new(admin_channel.clone());

    if args.expects_alerts() {
        check_rule(&mut admin, &args.expect_rule, args.crash_depth).await?;
    }
    let status_before = server_ticks_applied(&mut admin).await;

    // Subscribe before the first tick, so no alert can be missed.
    let book = Arc::new(Mutex::new(CrashBook::default()));
    let stop = CancellationToken::new();
    let subscriber = if args.expects_alerts() {
        let request = proto::SubscribeRequest {
            instruments: vec!["LOAD-*".into()],
            rule_ids: vec![args.expect_rule.clone()],
            include_shadow: true,
            ..Default::default()
        };
        let stream = subscribe::open(admin_channel.clone(), request)
            .await
            .map_err(|status| LoadError::Rpc {
                what: "the server refused the alert subscription",
                status,
            })?;
        Some(tokio::spawn(collect_alerts(
            stream,
            book.clone(),
            args.expect_rule.clone(),
            stop.clone(),
        )))
    } else {
        None
    };

    let storm_channel = match &args.reload_storm {
        Some(dir) => {
            warn_if_not_served(&mut admin, dir).await;
            Some(target.connect().await?)
        }
        None => None,
    };

    // One TCP connection per ingest stream.
    let mut channels = Vec::with_capacity(args.connections as usize);
    for _ in 0..args.connections {
        channels.push(target.connect().await?);
    }

    let epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let plan = Arc::new(Plan {
        instruments: args.instruments,
        connections: args.connections,
        batch: args.batch as usize,
        duration: Duration::from_secs_f64(args.duration),
        crash_every: args.crash_every,
        crash_count: args.crash_count(),
        step_factor: (1.0 - args.crash_depth / 100.0).powf(1.0 / f64::from(CRASH_STEPS)),
        epoch_ns: i64::try_from(epoch.as_nanos()).unwrap_or(i64::MAX),
        seq_base: u64::try_from(epoch.as_micros()).unwrap_or(0),
        crash_offset: if args.crashes_enabled() {
            // Slot of the first crash, at start + crash_every.
            ((epoch.as_secs_f64() / args.crash_every) as u64 + 1) % u64::from(args.instruments)
        } else {
            0
        },
        market_crash_at: args.market_crash_at.map(Duration::from_secs_f64),
    });
    let rate_per_connection = args.rate / f64::from(args.connections);

    let client_cpu_before = cpu::self_cpu_ns().ok();
    let server_cpu_before = args.server_pid.and_then(|pid| cpu::process_cpu_ns(pid).ok());
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(channels.len());
    for (conn, channel) in channels.into_iter().enumerate() {
        let generator = Generator::new(plan.clone(), conn as u32, args.seed);
        tasks.push(tokio::spawn(run_connection(
            generator,
            channel,
            start,
            rate_per_connection,
            book.clone(),
            Resume {
                target: target.clone(),
                retry_for: Duration::from_secs_f64(args.retry_for),
            },
        )));
    }
    let storm_stop = CancellationToken::new();
    let storm = args.reload_storm.clone().zip(storm_channel).map(|(dir, channel)| {
        tokio::spawn(run_storm(
            dir,
            Duration::from_secs_f64(args.reload_every),
            channel,
            storm_stop.clone(),
        ))
    });
    let mut conns = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await {
            Ok(stats) => conns.push(stats),
            Err(e) => conns.push(ConnStats {
                error: Some(format!("connection task failed: {e}")),
                ..ConnStats::default()
            }),
        }
    }
    let client_cpu_ns = client_cpu_before
        .zip(cpu::self_cpu_ns().ok())
        .map(|(a, b)| b.saturating_sub(a));
    let server_cpu_ns = args.server_pid.and_then(|pid| {
        server_cpu_before
            .zip(cpu::process_cpu_ns(pid).ok())
            .map(|(a, b)| b.saturating_sub(a))
    });
    let sent_end = conns
        .iter()
        .filter_map(|c| c.last_ack)
        .max()
        .unwrap_or_else(Instant::now);
    // The storm stops with the sending, removes its file and waits for
    // that reload (bounded by its own timeout).
    storm_stop.cancel();
    let reloads = match storm {
        Some(task) => Some(task.await.unwrap_or_else(|e| {
            let mut stats = ReloadStats::new(args.reload_every);
            stats.errors.push(format!("the reload storm task failed: {e}"));
            stats
        })),
        None => None,
    };

    // Wait for the last crashes' alerts, at most `grace`.
    let crashes = book.lock().map(|b| b.records.len() as u64).unwrap_or(0);
    let grace_end = Instant::now().max(sent_end) + Duration::from_secs_f64(args.grace);
    while Instant::now() < grace_end {
        let (matched, done) = match book.lock() {
            Ok(b) => (b.matched, b.closed),
            Err(_) => break,
        };
        if matched >= crashes || done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    let alerts = match subscriber {
        Some(task) => match tokio::time::timeout(ADMIN_TIMEOUT, task).await {
            Ok(Ok(stats)) => stats,
            _ => AlertStats {
                error: Some("the alert collector did not stop".into()),
                ..AlertStats::new()
            },
        },
        None => AlertStats::new(),
    };
    let status_after = server_ticks_applied(&mut admin).await;

    let mut report = LoadReport {
        connections: args.connections,
        instruments: args.instruments,
        batch: args.batch,
        target_rate: args.rate,
        ticks_sent: 0,
        batches_sent: 0,
        applied: 0,
        rejected: 0,
        rejected_by_code: BTreeMap::new(),
        rejection_examples: Vec::new(),
        seconds: sent_end.saturating_duration_since(start).as_secs_f64(),
        crashes,
        crash_every: args.crash_every,
        alerts: alerts.matched,
        missing: crashes.saturating_sub(alerts.matched),
        unexpected: alerts.unexpected,
        unexpected_examples: alerts.unexpected_examples,
        other_alerts: alerts.other,
        latency_us: alerts.latency_us,
        server_latency_us: alerts.server_us,
        delivered_latency_us: alerts.delivered_us,
        ack_rtt_us: latency_histogram(),
        client_cpu_ns,
        server_cpu_ns,
        server_ticks_applied: status_before.zip(status_after).map(|(a, b)| b.saturating_sub(a)),
        stream_errors: Vec::new(),
        reloads,
    };
    for (i, c) in conns.into_iter().enumerate() {
        let _ = report.ack_rtt_us.add(&c.ack_rtt_us);
        report.ticks_sent += c.ticks_sent;
        report.batches_sent += c.batches_sent;
        report.applied += c.applied;
        report.rejected += c.rejected;
        for (code, n) in c.rejected_by_code {
            *report.rejected_by_code.entry(code).or_default() += n;
        }
        for e in c.rejection_examples {
            if report.rejection_examples.len() < EXAMPLES {
                report.rejection_examples.push(e);
            }
        }
        for e in c.resumed {
            report.stream_errors.push(format!("connection {i}: resumed after: {e}"));
        }
        if let Some(e) = c.error {
            report.stream_errors.push(format!("connection {i}: {e}"));
        }
    }
    if let Some(e) = alerts.error {
        report.stream_errors.push(format!("alerts: {e}"));
    }
    Ok(report)
}

/// Fails when the server answers `ListRules` and has no rule `rule`. A
/// server without the admin service is let through with a warning.
async fn check_rule(admin: &mut RuleAdminClient<Connection>, rule: &str, depth: f64) -> Result<(), LoadError> {
    match tokio::time::timeout(ADMIN_TIMEOUT, admin.list_rules(proto::ListRulesRequest {})).await {
        Ok(Ok(response)) => {
            let rules = response.into_inner().rules;
            if rules.iter().any(|r| r.id == rule) {
                return Ok(());
            }
            let mut available: Vec<&str> = rules.iter().map(|r| r.id.as_str()).collect();
            available.sort_unstable();
            Err(LoadError::NoSuchRule {
                rule: rule.to_owned(),
                available: if available.is_empty() {
                    "no rules".to_owned()
                } else {
                    available.join(", ")
                },
                depth,
            })
        }
        Ok(Err(status)) => {
            eprintln!(
                "warning: cannot list the server's rules ({}); assuming it has `{rule}`",
                wire::status_text(&status)
            );
            Ok(())
        }
        Err(_) => {
            eprintln!("warning: the server did not list its rules within {ADMIN_TIMEOUT:?}; assuming it has `{rule}`");
            Ok(())
        }
    }
}

/// The server's `ticks_applied`, if it answers `Status` in time.
async fn server_ticks_applied(admin: &mut RuleAdminClient<Connection>) -> Option<u64> {
    match tokio::time::timeout(ADMIN_TIMEOUT, admin.status(proto::StatusRequest {})).await {
        Ok(Ok(response)) => Some(response.into_inner().ticks_applied),
        _ => None,
    }
}
