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
use crate::server::proto;
use crate::server::proto::rule_admin_client::RuleAdminClient;

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

    fn crashes_enabled(&self) -> bool {
        self.crash_every > 0.0
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

// === Report ===

/// The outcome of a load run.
#[derive(Debug)]
pub struct LoadReport {
    pub connections: u32,
    pub instruments: u32,
    pub batch: u32,
    /// The target rate; 0 for flat out.
    pub target_rate: f64,
    pub ticks_sent: u64,
    pub batches_sent: u64,
    pub applied: u64,
    pub rejected: u64,
    pub rejected_by_code: BTreeMap<String, u64>,
    pub rejection_examples: Vec<String>,
    /// From the first batch to the last acknowledgement.
    pub seconds: f64,
    pub crashes: u64,
    /// Seconds between crashes.
    pub crash_every: f64,
    /// `fired` alerts of the expected rule that matched a crash.
    pub alerts: u64,
    pub missing: u64,
    pub unexpected: u64,
    pub unexpected_examples: Vec<String>,
    /// Other alerts of the expected rule, e.g. `resolved` once a crash
    /// leaves the window.
    pub other_alerts: u64,
    /// Tick-to-alert latency of matched alerts, µs.
    pub latency_us: Histogram<u64>,
    /// Ingest round trip: from handing a batch to its stream to reading
    /// its acknowledgement, µs. The part of tick-to-alert spent getting a
    /// batch to the server and evaluated, without the alert's way back.
    pub ack_rtt_us: Histogram<u64>,
    pub client_cpu_ns: Option<u64>,
    pub server_cpu_ns: Option<u64>,
    /// `ticks_applied` growth reported by the server's `Status`, if it
    /// answered.
    pub server_ticks_applied: Option<u64>,
    /// Streams that failed, with their status.
    pub stream_errors: Vec<String>,
    /// With `--reload-storm`: write-to-active latency of the reloads.
    pub reloads: Option<ReloadStats>,
}

impl LoadReport {
    /// Achieved ticks per second.
    pub fn ticks_per_s(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ticks_sent as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// Ticks the server answered for: CPU per tick is over these.
    fn ticks_processed(&self) -> u64 {
        let acked = self.applied + self.rejected;
        if acked > 0 {
            acked
        } else {
            self.ticks_sent
        }
    }

    fn per_tick(&self, ns: Option<u64>) -> Option<u64> {
        let ticks = self.ticks_processed();
        ns.filter(|_| ticks > 0).map(|ns| ns / ticks)
    }

    /// Latency at quantile `q`, µs; `None` without samples.
    pub fn latency_at(&self, q: f64) -> Option<u64> {
        (!self.latency_us.is_empty()).then(|| self.latency_us.value_at_quantile(q))
    }

    /// The one-line summary scripts parse:
    /// `summary: ticks=N seconds=S ticks_per_s=R p50_us=.. p90_us=.. p99_us=.. p999_us=.. max_us=.. alerts=A missing=M unexpected=U server_cpu_ns_per_tick=..`,
    /// and with `--reload-storm` then ` reload_p50_ms=.. reload_max_ms=.. reloads=N`.
    /// Values without data are `n/a`.
    pub fn summary_line(&self) -> String {
        let opt = |v: Option<u64>| v.map_or_else(|| "n/a".to_owned(), |v| v.to_string());
        let max = (!self.latency_us.is_empty()).then(|| self.latency_us.max());
        let mut line = format!(
            "summary: ticks={} seconds={:.3} ticks_per_s={:.0} p50_us={} p90_us={} p99_us={} p999_us={} max_us={} \
             alerts={} missing={} unexpected={} server_cpu_ns_per_tick={}",
            self.ticks_sent,
            self.seconds,
            self.ticks_per_s(),
            opt(self.latency_at(0.5)),
            opt(self.latency_at(0.9)),
            opt(self.latency_at(0.99)),
            opt(self.latency_at(0.999)),
            opt(max),
            self.alerts,
            self.missing,
            self.unexpected,
            opt(self.per_tick(self.server_cpu_ns)),
        );
        if let Some(r) = &self.reloads {
            let _ = write!(
                line,
                " reload_p50_ms={} reload_max_ms={} reloads={}",
                ms(r.at(0.5)),
                ms(r.max()),
                r.latency_us.len()
            );
        }
        line
    }

    /// The table for people.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let target = if self.target_rate > 0.0 {
            format!("target {} ticks/s", thousands(self.target_rate as u64))
        } else {
            "flat out".to_owned()
        };
        let _ = writeln!(
            t,
            "airbag load: {} connections, {} instruments, batches of {}, {target}",
            self.connections,
            thousands(u64::from(self.instruments)),
            self.batch
        );
        let mut row = |label: &str, value: String| {
            let _ = writeln!(t, "  {label:<22} {value}");
        };
        let below = if self.target_rate > 0.0 && self.ticks_per_s() < 0.95 * self.target_rate {
            "  BELOW TARGET"
        } else {
            ""
        };
        row(
            "ticks sent",
            format!(
                "{} in {} batches over {:.3} s = {} ticks/s{below}",
                thousands(self.ticks_sent),
                thousands(self.batches_sent),
                self.seconds,
                thousands(self.ticks_per_s() as u64)
            ),
        );
        let mut acked = format!(
            "{} applied, {} rejected",
            thousands(self.applied),
            thousands(self.rejected)
        );
        for (code, n) in &self.rejected_by_code {
            let _ = write!(acked, "; {code} {}", thousands(*n));
        }
        row("acknowledged", acked);
        for e in &self.rejection_examples {
            row("", e.clone());
        }
        if let Some(n) = self.server_ticks_applied {
            row("server ticks applied", thousands(n));
        }
        row(
            "crashes",
            format!(
                "{} injected, {} alerted, {} missing, {} unexpected, {} other alerts",
                self.crashes, self.alerts, self.missing, self.unexpected, self.other_alerts
            ),
        );
        if self.crashes > u64::from(self.instruments) {
            row(
                "",
                format!(
                    "instruments crashed again after {:.1} s: more than the rule's window and cooldown?",
                    f64::from(self.instruments) * self.crash_every
                ),
            );
        }
        for e in &self.unexpected_examples {
            row("", format!("unexpected: {e}"));
        }
        let lat = |q: f64| self.latency_at(q).map_or_else(|| "n/a".to_owned(), thousands);
        row(
            "tick-to-alert (µs)",
            format!(
                "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (n={})",
                lat(0.5),
                lat(0.9),
                lat(0.99),
                lat(0.999),
                if self.latency_us.is_empty() {
                    "n/a".to_owned()
                } else {
                    thousands(self.latency_us.max())
                },
                self.latency_us.len()
            ),
        );
        let rtt = |q: f64| {
            if self.ack_rtt_us.is_empty() {
                "n/a".to_owned()
            } else {
                thousands(self.ack_rtt_us.value_at_quantile(q))
            }
        };
        row(
            "ingest round trip (µs)",
            format!(
                "p50 {}  p90 {}  p99 {}  p99.9 {}  (n={})",
                rtt(0.5),
                rtt(0.9),
                rtt(0.99),
                rtt(0.999),
                self.ack_rtt_us.len()
            ),
        );
        let cpu = |total: Option<u64>, per: Option<u64>, missing: &str| match (total, per) {
            (Some(total), Some(per)) => format!("{} ns/tick ({:.3} s)", thousands(per), total as f64 / 1e9),
            _ => missing.to_owned(),
        };
        row(
            "client CPU",
            cpu(self.client_cpu_ns, self.per_tick(self.client_cpu_ns), "n/a"),
        );
        row(
            "server CPU",
            cpu(
                self.server_cpu_ns,
                self.per_tick(self.server_cpu_ns),
                "n/a (pass --server-pid PID)",
            ),
        );
        if let Some(r) = &self.reloads {
            row(
                "reload write→active",
                format!(
                    "p50 {} ms  p90 {} ms  max {} ms  (n={}, every {} s, {} timed out)",
                    ms(r.at(0.5)),
                    ms(r.at(0.9)),
                    ms(r.max()),
                    r.latency_us.len(),
                    r.every,
                    r.timeouts
                ),
            );
            for e in &r.errors {
                row("reload storm error", e.clone());
            }
        }
        for e in &self.stream_errors {
            row("stream error", e.clone());
        }
        t
    }
}

/// Microseconds as milliseconds with one decimal; `n/a` for none.
fn ms(us: Option<u64>) -> String {
    us.map_or_else(|| "n/a".to_owned(), |us| format!("{:.1}", us as f64 / 1_000.0))
}

/// Runs `airbag load`: the table, then the summary line, on stdout.
///
/// # Errors
/// Bad flags, the server cannot be reached, lacks the expected rule, or
/// refuses the subscription.
pub async fn run(args: LoadArgs) -> anyhow::Result<()> {
    let report = run_load(&args).await?;
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

    if args.crashes_enabled() {
        check_rule(&mut admin, &args.expect_rule, args.crash_depth).await?;
    }
    let status_before = server_ticks_applied(&mut admin).await;

    // Subscribe before the first tick, so no alert can be missed.
    let book = Arc::new(Mutex::new(CrashBook::default()));
    let stop = CancellationToken::new();
    let subscriber = if args.crashes_enabled() {
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

// === Reload storm ===

/// Write-to-active latency of `--reload-storm`'s writes.
#[derive(Debug)]
pub struct ReloadStats {
    /// Seconds between writes.
    pub every: f64,
    /// From each write to the server's ruleset version changing, µs.
    pub latency_us: Histogram<u64>,
    /// Writes whose reload did not show within [`STORM_TIMEOUT`].
    pub timeouts: u64,
    /// Files that could not be written or removed, calls that failed.
    pub errors: Vec<String>,
}

impl ReloadStats {
    fn new(every: f64) -> Self {
        ReloadStats {
            every,
            latency_us: latency_histogram(),
            timeouts: 0,
            errors: Vec::new(),
        }
    }

    /// Latency at quantile `q`, µs; `None` without samples.
    pub fn at(&self, q: f64) -> Option<u64> {
        (!self.latency_us.is_empty()).then(|| self.latency_us.value_at_quantile(q))
    }

    pub fn max(&self) -> Option<u64> {
        (!self.latency_us.is_empty()).then(|| self.latency_us.max())
    }

    fn error(&mut self, e: String) {
        if self.errors.len() < EXAMPLES {
            self.errors.push(e);
        }
    }
}

/// The storm file's `n`th contents: one rule that never fires (a stale
/// feed on an instrument no one sends) and changes with `n`.
pub fn storm_rule(n: u64) -> String {
    format!(
        "# Written by `airbag load --reload-storm`; removed when the run ends.\n\
         [[rule]]\n\
         id = \"zz-load-reload-storm\"\n\
         description = \"reload storm write {n}\"\n\
         kind = \"stale_feed\"\n\
         instruments = [\"ZZ-LOAD-RELOAD-STORM\"]\n\
         after = \"1h\"\n"
    )
}

/// Warns when the server's rules folder is not `dir`: the storm's writes
/// would then never become active.
async fn warn_if_not_served(admin: &mut RuleAdminClient<Connection>, dir: &Path) {
    let Ok(Ok(status)) = tokio::time::timeout(ADMIN_TIMEOUT, admin.status(proto::StatusRequest {})).await else {
        return;
    };
    let served = PathBuf::from(status.into_inner().rules_dir);
    let same = match (served.canonicalize(), dir.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => served == dir,
    };
    if !same {
        eprintln!(
            "warning: the server reads its rules from {}, not {}; the reload storm's writes may never become active",
            served.display(),
            dir.display()
        );
    }
}

/// The server's ruleset version, if it answers in time.
async fn ruleset_version(admin: &mut RuleAdminClient<Connection>) -> Result<u64, String> {
    match tokio::time::timeout(ADMIN_TIMEOUT, admin.list_rules(proto::ListRulesRequest {})).await {
        Ok(Ok(response)) => Ok(response.into_inner().ruleset_version),
        Ok(Err(status)) => Err(format!("ListRules failed: {}", wire::status_text(&status))),
        Err(_) => Err(format!("ListRules did not answer within {ADMIN_TIMEOUT:?}")),
    }
}

/// Polls until the ruleset version differs from `before`; the moment it
/// was seen, or `None` after [`STORM_TIMEOUT`] from `since`.
async fn version_change(
    admin: &mut RuleAdminClient<Connection>,
    before: u64,
    since: Instant,
) -> Result<Option<Instant>, String> {
    let deadline = since + STORM_TIMEOUT;
    loop {
        let version = ruleset_version(admin).await?;
        let now = Instant::now();
        if version != before {
            return Ok(Some(now));
        }
        if now >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(STORM_POLL).await;
    }
}

/// Rewrites `dir/STORM_FILE` every `every` until `stop`, timing each write
/// until it is active; then removes the file and waits for that reload.
async fn run_storm(dir: PathBuf, every: Duration, channel: Connection, stop: CancellationToken) -> ReloadStats {
    let mut stats = ReloadStats::new(every.as_secs_f64());
    let mut admin = RuleAdminClient::new(channel);
    let path = dir.join(STORM_FILE);
    let tmp = dir.join(format!(".{STORM_FILE}.tmp"));
    let mut written = false;
    let mut next = tokio::time::Instant::now() + every;
    for n in 1.. {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep_until(next) => {}
        }
        let before = match ruleset_version(&mut admin).await {
            Ok(v) => v,
            Err(e) => {
                stats.error(e);
                continue;
            }
        };
        // Whole or not at all: a temporary file renamed into place.
        let start = Instant::now();
        if let Err(e) = std::fs::write(&tmp, storm_rule(n)).and_then(|()| std::fs::rename(&tmp, &path)) {
            stats.error(format!("cannot write {}: {e}", path.display()));
            break;
        }
        written = true;
        match version_change(&mut admin, before, start).await {
            Ok(Some(active)) => {
                let us = u64::try_from(active.duration_since(start).as_micros()).unwrap_or(u64::MAX);
                let _ = stats.latency_us.record(us.clamp(1, LATENCY_MAX_US));
            }
            Ok(None) => stats.timeouts += 1,
            Err(e) => stats.error(e),
        }
        // The next write is due `every` after this one; a reload slower
        // than that delays it rather than bunching writes up.
        next = (next + every).max(tokio::time::Instant::now());
    }
    if written {
        let before = ruleset_version(&mut admin).await;
        match std::fs::remove_file(&path) {
            Ok(()) => {
                if let Ok(before) = before {
                    match version_change(&mut admin, before, Instant::now()).await {
                        Ok(Some(_)) => {}
                        Ok(None) => stats.error(format!(
                            "the server did not reload within {STORM_TIMEOUT:?} after {} was removed",
                            path.display()
                        )),
                        Err(e) => stats.error(e),
                    }
                }
            }
            Err(e) => stats.error(format!("cannot remove {}: {e}", path.display())),
        }
    }
    stats
}

// === Crashes and alerts ===

/// One injected crash.
#[derive(Debug)]
struct CrashRecord {
    /// 0-based instrument index (`LOAD-000001` is 0).
    instrument: u32,
    /// Sequence numbers of the crash's ticks.
    first_seq: u64,
    last_seq: u64,
    /// When the batch holding the crash was handed to the stream.
    sent: Instant,
    matched: bool,
}

/// Crashes injected so far, shared by the connections (which add) and the
/// alert collector (which matches). Locked briefly, never across an await.
#[derive(Debug, Default)]
struct CrashBook {
    records: Vec<CrashRecord>,
    matched: u64,
    /// The alert stream has ended: waiting longer is pointless.
    closed: bool,
}

/// What the alert collector saw.
struct AlertStats {
    matched: u64,
    unexpected: u64,
    unexpected_examples: Vec<String>,
    other: u64,
    latency_us: Histogram<u64>,
    error: Option<String>,
}

impl AlertStats {
    fn new() -> Self {
        AlertStats {
            matched: 0,
            unexpected: 0,
            unexpected_examples: Vec::new(),
            other: 0,
            // 3 significant figures up to 60 s: about 200 KiB.
            latency_us: latency_histogram(),
            error: None,
        }
    }

    /// Matches a `fired` alert of the expected rule, received at
    /// `received`, to its crash.
    fn on_fired(&mut self, alert: &proto::Alert, received: Instant, book: &Mutex<CrashBook>) {
        let crash_sent = match (parse_symbol(&alert.instrument), alert.tick_seq, book.lock()) {
            (Some(instrument), Some(seq), Ok(mut book)) => {
                let found =
                    book.records.iter_mut().rev().find(|c| {
                        c.instrument == instrument && (c.first_seq..=c.last_seq).contains(&seq) && !c.matched
                    });
                let sent = found.map(|c| {
                    c.matched = true;
                    c.sent
                });
                if sent.is_some() {
                    book.matched += 1;
                }
                sent
            }
            _ => None,
        };
        match crash_sent {
            Some(sent) => {
                self.matched += 1;
                let us = received.saturating_duration_since(sent).as_micros();
                let us = u64::try_from(us).unwrap_or(u64::MAX).clamp(1, LATENCY_MAX_US);
                let _ = self.latency_us.record(us);
            }
            None => {
                self.unexpected += 1;
                if self.unexpected_examples.len() < EXAMPLES {
                    self.unexpected_examples.push(format!(
                        "seq {} {} on {} tick_seq {:?}",
                        alert.seq, alert.kind, alert.instrument, alert.tick_seq
                    ));
                }
            }
        }
    }
}

/// Receives the expected rule's alerts until `stop`, matching each
/// `fired` alert to its crash.
async fn collect_alerts(
    mut stream: Streaming<proto::Alert>,
    book: Arc<Mutex<CrashBook>>,
    rule: String,
    stop: CancellationToken,
) -> AlertStats {
    let mut stats = AlertStats::new();
    loop {
        let message = tokio::select! {
            biased;
            message = stream.message() => message,
            () = stop.cancelled() => break,
        };
        // Read the clock first: this is the moment the alert arrived.
        let received = Instant::now();
        match message {
            Ok(Some(alert)) => {
                if alert.rule_id == rule && alert.kind == "fired" {
                    stats.on_fired(&alert, received, &book);
                } else {
                    stats.other += 1;
                }
            }
            Ok(None) => {
                stats.error = Some("the server closed the alert stream".into());
                break;
            }
            Err(status) => {
                stats.error = Some(wire::status_text(&status));
                break;
            }
        }
    }
    if stats.error.is_some() {
        if let Ok(mut b) = book.lock() {
            b.closed = true;
        }
    }
    stats
}

/// `LOAD-000001` → instrument index 0.
fn parse_symbol(symbol: &str) -> Option<u32> {
    let n: u32 = symbol.strip_prefix("LOAD-")?.parse().ok()?;
    n.checked_sub(1)
}

/// Instrument index 0 → `LOAD-000001`.
pub fn symbol(index: u32) -> String {
    format!("LOAD-{:06}", index + 1)
}

// === Generating ticks ===

/// What every connection's generator shares.
#[derive(Debug)]
struct Plan {
    instruments: u32,
    connections: u32,
    batch: usize,
    duration: Duration,
    crash_every: f64,
    crash_count: u64,
    /// Each crash tick multiplies the price by this.
    step_factor: f64,
    /// Wall-clock time at the start, ns since the epoch.
    epoch_ns: i64,
    /// First sequence number minus one, for every instrument.
    seq_base: u64,
    /// The instrument crash 0 hits: the wall-clock crash slot of the run's
    /// first crash, modulo the instrument count.
    crash_offset: u64,
}

impl Plan {
    /// When crash `j` is due, from the start.
    fn crash_at(&self, j: u64) -> Duration {
        Duration::from_secs_f64(self.crash_every * (j + 1) as f64)
    }

    /// The instrument crash `j` hits.
    fn crash_instrument(&self, j: u64) -> u32 {
        ((self.crash_offset + j) % u64::from(self.instruments)) as u32
    }

    fn owner(&self, instrument: u32) -> u32 {
        instrument % self.connections
    }

    /// The first crash at or after `from` that connection `conn` injects.
    fn next_crash(&self, conn: u32, from: u64) -> Option<u64> {
        let end = self.crash_count.min(from.saturating_add(u64::from(self.instruments)));
        (from..end).find(|&j| self.owner(self.crash_instrument(j)) == conn)
    }
}

/// SplitMix64: a small, fast, seedable generator; plenty for a random walk.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// One instrument's random walk, in raw [`Fixed`] units.
#[derive(Debug)]
struct Walker {
    symbol: String,
    /// Where the price started: a crash never takes it below a quarter.
    initial: i64,
    /// The walk's centre.
    base: i64,
    /// One basis point of `base`.
    step: i64,
    /// Steps away from `base`, within ±[`WALK_BAND_BP`].
    offset: i32,
    /// The last sequence number sent.
    seq: u64,
}

impl Walker {
    fn new(index: u32, seq_base: u64) -> Self {
        // Prices from 100 to 999 so instruments differ.
        let initial = (100 + i64::from(index % 900)) * Fixed::ONE.raw();
        let mut w = Walker {
            symbol: symbol(index),
            initial,
            base: initial,
            step: 0,
            offset: 0,
            seq: seq_base,
        };
        w.rebase(initial);
        w
    }

    fn price(&self) -> i64 {
        self.base + i64::from(self.offset) * self.step
    }

    fn rebase(&mut self, price: i64) {
        self.base = price;
        self.step = (price / 10_000).max(1);
        self.offset = 0;
    }

    /// One step of the walk: -1, 0 or +1 basis point, turned back at the
    /// edge of the band.
    fn advance(&mut self, random: u64) -> i64 {
        let dir = (random % 3) as i32 - 1;
        let next = self.offset + dir;
        self.offset = if next.abs() > WALK_BAND_BP {
            self.offset - dir
        } else {
            next
        };
        self.price()
    }
}

/// Builds one connection's batches.
struct Generator {
    plan: Arc<Plan>,
    conn: u32,
    /// This connection's instruments: global index `conn + i × K` is
    /// `walkers[i]`.
    walkers: Vec<Walker>,
    cursor: usize,
    rng: Rng,
    next_crash: Option<u64>,
    /// The one `Tick` message every tick is encoded from.
    tick: proto::Tick,
    buf: BytesMut,
    batch_id: u64,
}

/// A crash just generated, before it is sent.
struct NewCrash {
    instrument: u32,
    first_seq: u64,
    last_seq: u64,
}

impl Generator {
    fn new(plan: Arc<Plan>, conn: u32, seed: u64) -> Self {
        let walkers: Vec<Walker> = (conn..plan.instruments)
            .step_by(plan.connections as usize)
            .map(|i| Walker::new(i, plan.seq_base))
            .collect();
        let next_crash = plan.next_crash(conn, 0);
        let tick = proto::Tick {
            instrument: String::with_capacity(16),
            event_time_ns: 0,
            seq: 0,
            values: Some(proto::tick::Values::Trade(proto::Trade::default())),
        };
        Generator {
            buf: BytesMut::with_capacity(plan.batch * 48 + 64),
            plan,
            conn,
            walkers,
            cursor: 0,
            rng: Rng(seed ^ u64::from(conn).wrapping_mul(0xA076_1D64_78BD_642F)),
            next_crash,
            tick,
            batch_id: 0,
        }
    }

    /// After a failed stream: each instrument goes on from the server's
    /// last applied sequence number (ticks lost in flight are numbered
    /// again, so the server sees no gap and no duplicate).
    fn resume_from(&mut self, last_applied: &std::collections::HashMap<String, u64>) {
        for walker in &mut self.walkers {
            walker.seq = last_applied.get(&walker.symbol).copied().unwrap_or(self.plan.seq_base);
        }
    }

    /// Encodes the next batch: any crashes due by `elapsed`, then `batch`
    /// walk ticks, all at event time `time_ns`. Returns the encoded
    /// `TickBatch` and its tick count; new crashes go to `crashes`.
    fn build_batch(&mut self, elapsed: Duration, time_ns: i64, crashes: &mut Vec<NewCrash>) -> (Bytes, usize) {
        self.batch_id += 1;
        self.buf.clear();
        prost::encoding::uint64::encode(1, &self.batch_id, &mut self.buf);
        let mut count = 0;
        while let Some(j) = self.next_crash {
            if self.plan.crash_at(j) > elapsed {
                break;
            }
            count += self.crash(self.plan.crash_instrument(j), time_ns, crashes);
            self.next_crash = self.plan.next_crash(self.conn, j + 1);
        }
        for _ in 0..self.plan.batch {
            let i = self.cursor;
            self.cursor = if i + 1 == self.walkers.len() { 0 } else { i + 1 };
            let random = self.rng.next_u64();
            let price = self.walkers[i].advance(random);
            let size = ((random >> 20) % 1_000 + 1) * 100_000; // 0.001 to 1
            self.push_tick(i, price, size as i64, time_ns);
            count += 1;
        }
        (self.buf.split().freeze(), count)
    }

    /// Appends a crash of `instrument` (owned by this connection); returns
    /// the number of ticks added.
    fn crash(&mut self, instrument: u32, time_ns: i64, crashes: &mut Vec<NewCrash>) -> usize {
        let i = (instrument / self.plan.connections) as usize;
        let mut added = 0;
        let mut price = self.walkers[i].price();
        let initial = self.walkers[i].initial;
        if price < initial / 4 {
            price = initial;
            self.push_tick(i, price, Fixed::ONE.raw(), time_ns);
            added += 1;
        }
        let first_seq = self.walkers[i].seq + 1;
        for _ in 0..CRASH_STEPS {
            price = ((price as f64) * self.plan.step_factor) as i64;
            self.push_tick(i, price.max(1), Fixed::ONE.raw(), time_ns);
            added += 1;
        }
        self.walkers[i].rebase(price.max(1));
        crashes.push(NewCrash {
            instrument,
            first_seq,
            last_seq: self.walkers[i].seq,
        });
        added
    }

    /// Encodes one trade of walker `i` as field 2 of the batch.
    fn push_tick(&mut self, i: usize, price: i64, size: i64, time_ns: i64) {
        let w = &mut self.walkers[i];
        w.seq += 1;
        self.tick.instrument.clear();
        self.tick.instrument.push_str(&w.symbol);
        self.tick.event_time_ns = time_ns;
        self.tick.seq = w.seq;
        if let Some(proto::tick::Values::Trade(trade)) = &mut self.tick.values {
            trade.price = Some(wire::decimal(Fixed::from_raw(price)));
            trade.size = Some(wire::decimal(Fixed::from_raw(size)));
        }
        prost::encoding::message::encode(2, &self.tick, &mut self.buf);
    }
}

// === One connection ===

/// What one connection did.
#[derive(Debug)]
struct ConnStats {
    ticks_sent: u64,
    batches_sent: u64,
    applied: u64,
    rejected: u64,
    rejected_by_code: BTreeMap<String, u64>,
    rejection_examples: Vec<String>,
    last_ack: Option<Instant>,
    /// Ingest round trips, µs (see [`LoadReport::ack_rtt_us`]).
    ack_rtt_us: Histogram<u64>,
    error: Option<String>,
    /// Failures the connection resumed from.
    resumed: Vec<String>,
}

impl Default for ConnStats {
    fn default() -> Self {
        ConnStats {
            ticks_sent: 0,
            batches_sent: 0,
            applied: 0,
            rejected: 0,
            rejected_by_code: BTreeMap::new(),
            rejection_examples: Vec::new(),
            last_ack: None,
            ack_rtt_us: latency_histogram(),
            error: None,
            resumed: Vec::new(),
        }
    }
}

impl ConnStats {
    /// Adds the counts of a stream that ended, keeping the first error.
    fn absorb(&mut self, other: ConnStats) {
        self.ticks_sent += other.ticks_sent;
        self.batches_sent += other.batches_sent;
        self.applied += other.applied;
        self.rejected += other.rejected;
        for (code, n) in other.rejected_by_code {
            *self.rejected_by_code.entry(code).or_default() += n;
        }
        let room = EXAMPLES.saturating_sub(self.rejection_examples.len());
        self.rejection_examples
            .extend(other.rejection_examples.into_iter().take(room));
        self.last_ack = self.last_ack.max(other.last_ack);
        let _ = self.ack_rtt_us.add(&other.ack_rtt_us);
        self.error = other.error;
        self.resumed.extend(other.resumed);
    }
}

/// How a connection gets back after its stream failed.
struct Resume {
    target: wire::Target,
    /// How long to keep trying without a stream that works; zero: never.
    retry_for: Duration,
}

/// Runs [`run_stream`] until the plan's duration is up; after a failed
/// stream, with `resume.retry_for` above zero, reconnects, asks the server
/// where this connection's instruments stand and goes on from there (so
/// nothing it applied is sent again and nothing it lost leaves a gap).
async fn run_connection(
    mut generator: Generator,
    channel: Connection,
    start: Instant,
    rate: f64,
    book: Arc<Mutex<CrashBook>>,
    resume: Resume,
) -> ConnStats {
    let end = start + generator.plan.duration;
    let mut total = ConnStats::default();
    let mut pacer = Pacer::new(rate, start);
    let mut channel = channel;
    loop {
        let stats = run_stream(&mut generator, channel.clone(), end, &mut pacer, &book).await;
        let failed = stats.error.clone();
        total.absorb(stats);
        let Some(why) = failed else { return total };
        if resume.retry_for.is_zero() || Instant::now() >= end {
            return total;
        }
        let give_up = Instant::now() + resume.retry_for;
        let mut backoff = crate::cli::resume::Backoff::default();
        loop {
            backoff.wait().await;
            let Ok(conn) = resume.target.connect().await else {
                if Instant::now() >= give_up {
                    return total;
                }
                continue;
            };
            match crate::cli::resume::last_applied(conn.clone()).await {
                Ok(positions) => {
                    generator.resume_from(&positions);
                    total.resumed.push(why.clone());
                    total.error = None;
                    channel = conn;
                    break;
                }
                Err(_) if Instant::now() < give_up => continue,
                Err(_) => return total,
            }
        }
    }
}

/// Sends paced batches over one `Ingest` stream until `end`, then waits
/// (at most [`ACK_TIMEOUT`]) for the last ack.
async fn run_stream(
    generator: &mut Generator,
    channel: Connection,
    end: Instant,
    pacer: &mut Pacer,
    book: &Mutex<CrashBook>,
) -> ConnStats {
    let mut stats = ConnStats::default();
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let mut grpc = tonic::client::Grpc::new(channel);
    if let Err(e) = grpc.ready().await {
        stats.error = Some(format!("connection not ready: {e}"));
        return stats;
    }
    let acks = match grpc
        .streaming(
            tonic::Request::new(ReceiverStream::new(rx)),
            PathAndQuery::from_static(INGEST_PATH),
            BatchCodec,
        )
        .await
    {
        Ok(response) => response.into_inner(),
        Err(status) => {
            stats.error = Some(format!(
                "the server refused the ingest stream: {}",
                wire::status_text(&status)
            ));
            return stats;
        }
    };
    // When each batch in flight was handed to the stream, by batch id, for
    // the ack reader's round trips. Acks come in batch order.
    let in_flight: Arc<Mutex<VecDeque<(u64, Instant)>>> = Arc::default();
    let ack_task = tokio::spawn(read_acks(acks, in_flight.clone()));

    let plan = generator.plan.clone();
    let start = end - plan.duration;
    let mut crashes = Vec::new();
    loop {
        pacer.wait(plan.batch).await;
        let now = Instant::now();
        if now >= end {
            break;
        }
        let elapsed = now - start;
        let time_ns = plan.epoch_ns + i64::try_from(elapsed.as_nanos()).unwrap_or(i64::MAX);
        let (bytes, count) = generator.build_batch(elapsed, time_ns, &mut crashes);
        let sent = Instant::now();
        if !crashes.is_empty() {
            if let Ok(mut b) = book.lock() {
                b.records.extend(crashes.drain(..).map(|c| CrashRecord {
                    instrument: c.instrument,
                    first_seq: c.first_seq,
                    last_seq: c.last_seq,
                    sent,
                    matched: false,
                }));
            }
        }
        if let Ok(mut in_flight) = in_flight.lock() {
            in_flight.push_back((generator.batch_id, sent));
        }
        if tx.send(bytes).await.is_err() {
            break; // The stream ended; the ack reader has the status.
        }
        stats.ticks_sent += count as u64;
        stats.batches_sent += 1;
    }
    drop(tx);
    match tokio::time::timeout(ACK_TIMEOUT, ack_task).await {
        Ok(Ok((acks, rtt_us))) => {
            stats.ack_rtt_us = rtt_us;
            stats.applied = acks.applied;
            stats.rejected = acks.rejected;
            stats.rejected_by_code = acks.by_code;
            stats.rejection_examples = acks.examples;
            stats.last_ack = acks.last_ack;
            stats.error = acks.error;
            if stats.error.is_none() && acks.acked < stats.batches_sent {
                stats.error = Some(format!(
                    "{} of {} batches were not acknowledged",
                    stats.batches_sent - acks.acked,
                    stats.batches_sent
                ));
            }
        }
        Ok(Err(e)) => stats.error = Some(format!("ack reader failed: {e}")),
        Err(_) => stats.error = Some(format!("no end of the ack stream within {ACK_TIMEOUT:?}")),
    }
    stats
}

/// An `IngestAck` without its `last_applied` list, which `load` does not
/// need: prost skips the unknown field instead of allocating a string per
/// instrument.
#[derive(Clone, PartialEq, prost::Message)]
struct LeanAck {
    #[prost(uint64, tag = "1")]
    batch_id: u64,
    #[prost(uint32, tag = "2")]
    applied: u32,
    #[prost(message, repeated, tag = "3")]
    rejected: Vec<proto::Rejection>,
}

#[derive(Debug, Default)]
struct AckTally {
    acked: u64,
    applied: u64,
    rejected: u64,
    by_code: BTreeMap<String, u64>,
    examples: Vec<String>,
    last_ack: Option<Instant>,
    error: Option<String>,
}

/// Reads acknowledgements until the stream ends: their tally, and the
/// round trip of each batch found in `in_flight`.
async fn read_acks(
    mut acks: Streaming<LeanAck>,
    in_flight: Arc<Mutex<VecDeque<(u64, Instant)>>>,
) -> (AckTally, Histogram<u64>) {
    let mut tally = AckTally::default();
    let mut rtt_us = latency_histogram();
    loop {
        match acks.message().await {
            Ok(Some(ack)) => {
                let now = Instant::now();
                tally.last_ack = Some(now);
                if let Ok(mut in_flight) = in_flight.lock() {
                    while let Some((id, sent)) = in_flight.pop_front() {
                        if id == ack.batch_id {
                            let us = now.saturating_duration_since(sent).as_micros();
                            let _ = rtt_us.record(u64::try_from(us).unwrap_or(u64::MAX).clamp(1, LATENCY_MAX_US));
                            break;
                        }
                    }
                }
                tally.acked += 1;
                tally.applied += u64::from(ack.applied);
                tally.rejected += ack.rejected.len() as u64;
                for r in ack.rejected {
                    if tally.examples.len() < EXAMPLES {
                        tally.examples.push(format!(
                            "batch {} tick {}: {}: {}",
                            ack.batch_id, r.index, r.code, r.reason
                        ));
                    }
                    *tally.by_code.entry(r.code).or_default() += 1;
                }
            }
            Ok(None) => return (tally, rtt_us),
            Err(status) => {
                tally.error = Some(format!(
                    "the server ended the ingest stream: {}",
                    wire::status_text(&status)
                ));
                return (tally, rtt_us);
            }
        }
    }
}

/// Sends pre-encoded `TickBatch` bytes; decodes [`LeanAck`]s.
#[derive(Clone, Copy, Debug, Default)]
struct BatchCodec;

impl Codec for BatchCodec {
    type Encode = Bytes;
    type Decode = LeanAck;
    type Encoder = BytesEncoder;
    type Decoder = LeanAckDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        LeanAckDecoder(tonic_prost::ProstDecoder::default())
    }
}

#[derive(Debug)]
struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put(item);
        Ok(())
    }
}

#[derive(Debug)]
struct LeanAckDecoder(tonic_prost::ProstDecoder<LeanAck>);

impl Decoder for LeanAckDecoder {
    type Item = LeanAck;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<LeanAck>, Self::Error> {
        self.0.decode(src)
    }
}

#[cfg(test)]
mod tests {
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
            let set = crate::rules::compile_texts(std::slice::from_ref(t)).unwrap();
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
}
