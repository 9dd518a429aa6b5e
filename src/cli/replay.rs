//! `airbag replay`: recorded ticks through the engine, offline, in event
//! time. The work is in [`crate::replay`]; this is flags, files and
//! printing.
//!
//! ```text
//! airbag replay --rules rules/ ticks.csv.gz                 # alerts as JSON lines on stdout
//! airbag replay --rules rules/ --symbol BTC-USDT --time-col trade_time_ms \
//!     --seq-col trade_id --size-col qty spot_btcusdt_trades.csv
//! airbag replay --compare rules/ rules-edited/ a.csv b.csv   # what the edit changes
//! airbag replay --generate ticks.csv --ticks 10000000 --instruments 1000 --seed 1
//! airbag replay --parse-only ticks.csv                       # read+parse baseline
//! airbag replay --rules rules/ --threads 1 ticks.csv          # one engine thread
//! ```
//!
//! With `--threads N` (default: every core) instruments are split over N
//! workers, each with its own engines ([`crate::replay::threads`]); the
//! alerts are byte for byte those of one thread. Rules that reach every
//! instrument seen (`targets = "market"`, `"group:NAME"`) and `--speed`
//! run on one thread; the summary says so.
//!
//! Alerts go to stdout (or `--out`), one per line: the object `airbag
//! subscribe` prints, numbered 1, 2, 3... in emission order, with receive
//! and emit times equal to the event time of the tick (or timer) that
//! raised them. The summary goes to stderr and ends with
//! `summary: ticks=N seconds=S ticks_per_s=R alerts=A` (for `--compare`,
//! `alerts` counts the differences written). Exit 0 on success, 1 when a
//! file, row, rule or output fails, 2 for bad flags.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _};
use serde::Serialize;

use crate::alerts::json::AlertJson;
use crate::cli::columns::ColumnArgs;
use crate::cli::wire::thousands;
use crate::model::{Alert, Mode};
use crate::replay::compare::Seen;
use crate::replay::{
    drive, drive_threads, generate, BadRows, DiffSide, Hooks, Matcher, Merge, Options, Plan, Progress, Rejections,
    ReplayError, Runner, Side, Totals,
};
use crate::rules::RuleSet;
use crate::service::rulebook::load_dir;
use crate::tick_file::time::format_iso;

/// Output format of the alerts.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// One JSON object per line, as `airbag subscribe` prints.
    Jsonl,
    /// A header row, then one row per alert.
    Csv,
}

/// `airbag replay` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ReplayArgs {
    /// Tick files (CSV with a header, plain or gzip), merged in event-time
    /// order.
    #[arg(value_name = "FILE", required_unless_present = "generate")]
    pub files: Vec<PathBuf>,
    /// The rules folder to run.
    #[arg(long, value_name = "DIR", required_unless_present_any = ["compare", "generate", "parse_only"])]
    pub rules: Option<PathBuf>,
    /// Run two rules folders over the same ticks and report what differs.
    #[arg(long, num_args = 2, value_names = ["DIR_A", "DIR_B"], conflicts_with = "rules")]
    pub compare: Option<Vec<PathBuf>>,
    /// Write alerts here instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Alert output format.
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: OutputFormat,
    /// Pace the replay: 1 is real time, 10 ten times faster [default: as
    /// fast as possible].
    #[arg(long, value_name = "X")]
    pub speed: Option<f64>,
    /// Count unreadable rows (quoting the first few) instead of stopping.
    #[arg(long)]
    pub skip_bad_rows: bool,
    /// Run timers whenever event time crosses a multiple of this.
    #[arg(long, value_name = "DURATION", default_value = "100ms")]
    pub timer_step: String,
    /// Only read and parse the files (a baseline for throughput).
    #[arg(long, conflicts_with_all = ["rules", "compare"])]
    pub parse_only: bool,
    /// Engine threads: instruments are split over this many workers, the
    /// output is the same [default: every core].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    #[command(flatten)]
    pub columns: ColumnArgs,

    /// Write a seeded synthetic tick file (`instrument,ts_ms,price,size`;
    /// gzip if the name ends in `.gz`) and exit.
    #[arg(long, value_name = "FILE", help_heading = "Generator", conflicts_with_all = ["rules", "compare", "parse_only"])]
    pub generate: Option<PathBuf>,
    /// Rows to generate.
    #[arg(long, default_value_t = 10_000_000, help_heading = "Generator")]
    pub ticks: u64,
    /// Instruments to generate.
    #[arg(long, default_value_t = 1_000, help_heading = "Generator")]
    pub instruments: u32,
    /// Generator seed.
    #[arg(long, default_value_t = 1, help_heading = "Generator")]
    pub seed: u64,
}

impl ReplayArgs {
    fn options(&self) -> anyhow::Result<Options> {
        let timer_step_ns =
            crate::rules::units::parse_duration(&self.timer_step).map_err(|e| anyhow::anyhow!("--timer-step: {e}"))?;
        if timer_step_ns <= 0 {
            bail!("--timer-step must be above zero");
        }
        if let Some(speed) = self.speed {
            if !(speed.is_finite() && speed > 0.0) {
                bail!("--speed must be a number above zero");
            }
        }
        Ok(Options {
            timer_step_ns,
            speed: self.speed,
        })
    }
}

/// Runs `airbag replay`: exit 0, or the error on stderr and exit 1.
pub fn run(args: ReplayArgs) -> ExitCode {
    match run_replay(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("airbag replay: {}", super::error_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// `airbag replay` as a function: the summary to stderr, alerts to
/// `--out` or stdout.
///
/// # Errors
/// A rules folder, file, row or the output failed.
pub fn run_replay(args: &ReplayArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.generate {
        return generate_file(path, args);
    }
    let options = args.options()?;
    let mapping = args.columns.mapping()?;
    let rulesets = match (&args.compare, &args.rules) {
        (Some(dirs), _) => dirs.iter().map(|d| load_rules(d)).collect::<anyhow::Result<Vec<_>>>()?,
        (None, Some(dir)) => vec![load_rules(dir)?],
        (None, None) => Vec::new(),
    };
    if args.compare.is_some() && args.format == OutputFormat::Csv {
        bail!("--compare writes JSON lines; --format csv applies to alerts");
    }
    let bad_rows = if args.skip_bad_rows {
        BadRows::Skip
    } else {
        BadRows::Stop
    };
    let mut merge = Merge::open(&args.files, &mapping, bad_rows)?;
    let rulesets: Vec<Arc<RuleSet>> = rulesets.into_iter().map(Arc::new).collect();
    let threads = args.threads.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        usize::from,
    );
    let mut out = output(args.out.as_deref())?;
    let mut hooks = ProgressLine::new(io::stderr().is_terminal());
    let start = Instant::now();

    let mut report = String::new();
    let written = if args.compare.is_some() {
        let mut matcher = Matcher::new();
        let (totals, sides, note) = run_engines(
            &mut merge,
            &rulesets,
            threads,
            &options,
            &mut hooks,
            &mut |side, seq, alert, rx| {
                matcher.push(
                    side,
                    Seen {
                        seq,
                        received_ns: rx,
                        alert: alert.clone(),
                    },
                );
                Ok(())
            },
        )?;
        let elapsed = start.elapsed().as_secs_f64();
        let (same, raised) = (matcher.same, matcher.raised);
        let diffs = matcher.finish();
        let mut line = Vec::with_capacity(1024);
        for diff in &diffs {
            line.clear();
            write_diff(&mut line, diff);
            line.push(b'\n');
            out.write_all(&line).context("cannot write the differences")?;
        }
        out.flush().context("cannot write the differences")?;
        hooks.clear();
        let dirs = args.compare.as_deref().unwrap_or_default();
        describe_input(&mut report, &merge, &totals);
        report.push_str(&note);
        compare_report(&mut report, dirs, &sides, &diffs, same, raised);
        (diffs.len() as u64, totals, elapsed)
    } else {
        let format = args.format;
        let mut line = Vec::with_capacity(1024);
        if format == OutputFormat::Csv && !rulesets.is_empty() {
            out.write_all(AlertJson::CSV_HEADER.as_bytes())
                .and_then(|()| out.write_all(b"\n"))
                .context("cannot write alerts")?;
        }
        let (totals, sides, note) = run_engines(
            &mut merge,
            &rulesets,
            threads,
            &options,
            &mut hooks,
            &mut |_, seq, alert, rx| {
                line.clear();
                write_alert(&mut line, format, alert, seq, rx);
                line.push(b'\n');
                out.write_all(&line)
            },
        )?;
        out.flush().context("cannot write alerts")?;
        let elapsed = start.elapsed().as_secs_f64();
        hooks.clear();
        describe_input(&mut report, &merge, &totals);
        report.push_str(&note);
        if let Some(side) = sides.first() {
            replay_report(&mut report, side);
        }
        (sides.first().map_or(0, |s| s.emitted), totals, elapsed)
    };
    let (alerts, totals, seconds) = written;
    let rate = if seconds > 0.0 {
        totals.ticks as f64 / seconds
    } else {
        0.0
    };
    let _ = writeln!(
        report,
        "summary: ticks={} seconds={seconds:.3} ticks_per_s={rate:.0} alerts={alerts}",
        totals.ticks
    );
    eprint!("{report}");
    Ok(())
}

/// Runs the rulesets over `merge` on `threads` threads when the rules and
/// options allow it, else on one; the line saying which (empty when only
/// reading).
fn run_engines(
    merge: &mut Merge,
    rulesets: &[Arc<RuleSet>],
    threads: usize,
    options: &Options,
    hooks: &mut ProgressLine,
    deliver: &mut impl FnMut(usize, u64, &Alert, i64) -> io::Result<()>,
) -> Result<(Totals, Vec<Side>, String), ReplayError> {
    let single = |merge: &mut Merge, hooks: &mut ProgressLine, deliver: &mut _, note: String| {
        let mut runners: Vec<Runner> = rulesets
            .iter()
            .map(|set| Runner::new(RuleSet::clone(set), merge))
            .collect();
        let totals = drive(merge, &mut runners, options, hooks, deliver)?;
        let sides = runners
            .into_iter()
            .map(|r| Side {
                emitted: r.emitted,
                rejections: r.rejections,
                stats: r.stats,
            })
            .collect();
        Ok((totals, sides, note))
    };
    if rulesets.is_empty() {
        return single(merge, hooks, deliver, String::new());
    }
    if threads <= 1 {
        return single(merge, hooks, deliver, "threads: 1\n".into());
    }
    if options.speed.is_some() {
        return single(merge, hooks, deliver, "threads: 1 (paced by --speed)\n".into());
    }
    match Plan::new(rulesets, threads) {
        Plan::Single(why) => single(merge, hooks, deliver, format!("threads: 1 ({why})\n")),
        Plan::Partitioned(partitioner) => {
            let (totals, sides) = drive_threads(merge, rulesets, partitioner, threads, options, hooks, deliver)?;
            Ok((totals, sides, format!("threads: {threads}\n")))
        }
    }
}

fn load_rules(dir: &Path) -> anyhow::Result<RuleSet> {
    load_dir(dir).map_err(|errors| {
        let mut text = format!("rules folder {} has errors:", dir.display());
        for mut e in errors {
            let path = dir.join(&e.file);
            if path.is_file() {
                e.file = path.display().to_string();
            }
            let _ = write!(text, "\n  {e}");
        }
        anyhow::anyhow!(text)
    })
}

fn output(path: Option<&Path>) -> anyhow::Result<Box<dyn Write>> {
    Ok(match path {
        Some(path) => Box::new(BufWriter::with_capacity(
            1 << 16,
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(BufWriter::with_capacity(1 << 16, io::stdout().lock())),
    })
}

/// One alert in the chosen format; receive and emit times are the replay's
/// event time.
fn write_alert(out: &mut Vec<u8>, format: OutputFormat, alert: &Alert, seq: u64, received_ns: i64) {
    let json = AlertJson::from_engine(alert, seq, received_ns, received_ns);
    match format {
        OutputFormat::Jsonl => json.write_json(out),
        OutputFormat::Csv => json.write_csv(out),
    }
}

/// One difference of `--compare` as a JSON object.
fn write_diff(out: &mut Vec<u8>, diff: &crate::replay::Diff) {
    #[derive(Serialize)]
    struct DiffJson<'a> {
        side: &'static str,
        rule_id: &'a str,
        instrument: &'a str,
        kind: &'static str,
        occurrence: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        a_event_time_ns: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        b_event_time_ns: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        delta_ns: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        a: Option<AlertJson<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        b: Option<AlertJson<'a>>,
    }
    let alert = diff.alert();
    fn side(s: &Seen) -> AlertJson<'_> {
        AlertJson::from_engine(&s.alert, s.seq, s.received_ns, s.received_ns)
    }
    let (ta, tb) = (
        diff.a.as_ref().map(|s| s.alert.event_time_ns),
        diff.b.as_ref().map(|s| s.alert.event_time_ns),
    );
    let json = DiffJson {
        side: diff.side.name(),
        rule_id: &alert.rule_id,
        instrument: &alert.instrument,
        kind: alert.kind.name(),
        occurrence: diff.occurrence,
        a_event_time_ns: ta,
        b_event_time_ns: tb,
        delta_ns: ta.zip(tb).map(|(a, b)| b - a),
        a: diff.a.as_ref().map(side),
        b: diff.b.as_ref().map(side),
    };
    if let Err(e) = serde_json::to_writer(&mut *out, &json) {
        debug_assert!(false, "diff JSON: {e}");
    }
}

// === Reports ===

fn describe_input(report: &mut String, merge: &Merge, totals: &Totals) {
    let files = merge.len();
    let _ = write!(
        report,
        "replay: {files} file{}, {} ticks",
        if files == 1 { "" } else { "s" },
        thousands(totals.ticks)
    );
    if let (Some(first), Some(last)) = (totals.first_ns, totals.last_ns) {
        let _ = write!(report, " from {} to {}", format_iso(first), format_iso(last));
    }
    report.push('\n');
    if merge.skipped_rows > 0 {
        let _ = writeln!(report, "unreadable rows skipped: {}", thousands(merge.skipped_rows));
        for example in &merge.skipped_examples {
            let _ = writeln!(report, "  {example}");
        }
    }
    if merge.unsorted_rows > 0 {
        let _ = writeln!(
            report,
            "rows before their file's previous row in time: {} (merged as they are)",
            thousands(merge.unsorted_rows)
        );
    }
}

fn rejections(report: &mut String, label: &str, r: &Rejections) {
    if r.total() == 0 {
        let _ = writeln!(report, "{label}ticks rejected by the engine: 0");
        return;
    }
    let counts: Vec<String> = r.counts().map(|(code, n)| format!("{code}={n}")).collect();
    let _ = writeln!(
        report,
        "{label}ticks rejected by the engine: {} ({})",
        thousands(r.total()),
        counts.join(" ")
    );
    for example in &r.examples {
        let _ = writeln!(report, "  {example}");
    }
}

fn replay_report(report: &mut String, side: &Side) {
    rejections(report, "", &side.rejections);
    let stats = &side.stats;
    let (active, shadow) = (stats.total(Mode::Active), stats.total(Mode::Shadow));
    let _ = writeln!(
        report,
        "alerts: {} from {} rules",
        thousands(active + shadow),
        stats.iter().count()
    );
    if active > 0 {
        let _ = write!(
            report,
            "active rules ({} alerts):\n{}",
            thousands(active),
            stats.table(Mode::Active)
        );
    }
    if shadow > 0 {
        let _ = write!(
            report,
            "shadow rules ({} alerts, mode = \"shadow\"):\n{}",
            thousands(shadow),
            stats.table(Mode::Shadow)
        );
    }
}

fn compare_report(
    report: &mut String,
    dirs: &[PathBuf],
    sides: &[Side],
    diffs: &[crate::replay::Diff],
    same: u64,
    raised: [u64; 2],
) {
    for (i, side) in sides.iter().enumerate() {
        let name = if i == 0 { "A" } else { "B" };
        let dir = dirs.get(i).map(|d| d.display().to_string()).unwrap_or_default();
        let _ = writeln!(report, "{name} = {dir}: {} alerts", thousands(raised[i]));
        rejections(report, &format!("  {name}: "), &side.rejections);
    }
    let count = |side: DiffSide| diffs.iter().filter(|d| d.side == side).count();
    let _ = writeln!(
        report,
        "identical: {}  moved: {}  only A: {}  only B: {}",
        thousands(same),
        count(DiffSide::Moved),
        count(DiffSide::OnlyA),
        count(DiffSide::OnlyB)
    );
    // Per rule, in rule id order.
    let mut rules: std::collections::BTreeMap<(&str, &str), [u64; 3]> = Default::default();
    for d in diffs {
        let a = d.alert();
        let slot = match d.side {
            DiffSide::OnlyA => 0,
            DiffSide::OnlyB => 1,
            DiffSide::Moved => 2,
        };
        rules.entry((&a.rule_id, a.kind.name())).or_default()[slot] += 1;
    }
    if !rules.is_empty() {
        let width = rules.keys().map(|(r, _)| r.len()).max().unwrap_or(4).max(4);
        let _ = writeln!(
            report,
            "  {:width$}  {:<9} {:>8} {:>8} {:>8}",
            "rule", "kind", "only_a", "only_b", "moved"
        );
        for ((rule, kind), [a, b, m]) in rules {
            let _ = writeln!(report, "  {rule:width$}  {kind:<9} {a:>8} {b:>8} {m:>8}");
        }
    }
}

// === Progress ===

/// A one-line progress display on a terminal's stderr.
struct ProgressLine {
    enabled: bool,
    start: Instant,
    last: Option<Instant>,
}

impl ProgressLine {
    fn new(enabled: bool) -> Self {
        ProgressLine {
            enabled,
            start: Instant::now(),
            last: None,
        }
    }

    fn clear(&mut self) {
        if self.enabled && self.last.is_some() {
            eprint!("\r\x1b[K");
        }
    }
}

impl Hooks for ProgressLine {
    fn progress(&mut self, p: &Progress) {
        if !self.enabled || self.last.is_some_and(|t| t.elapsed().as_millis() < 200) {
            return;
        }
        self.last = Some(Instant::now());
        let seconds = self.start.elapsed().as_secs_f64().max(1e-9);
        let pct = if p.bytes_total > 0 {
            format!("{:5.1}%", 100.0 * p.bytes_read as f64 / p.bytes_total as f64)
        } else {
            String::new()
        };
        eprint!(
            "\r\x1b[K{pct} {} ticks, {} ticks/s, at {}",
            thousands(p.ticks),
            thousands((p.ticks as f64 / seconds) as u64),
            format_iso(p.event_time_ns)
        );
    }
}

// === Generator ===

fn generate_file(path: &Path, args: &ReplayArgs) -> anyhow::Result<()> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let gzip = path.extension().is_some_and(|e| e == "gz");
    let start = Instant::now();
    let result = if gzip {
        let mut enc = flate2::write::GzEncoder::new(BufWriter::new(file), flate2::Compression::fast());
        generate::generate(&mut enc, args.ticks, args.instruments, args.seed).and_then(|()| enc.finish().map(drop))
    } else {
        generate::generate(
            &mut BufWriter::with_capacity(1 << 20, file),
            args.ticks,
            args.instruments,
            args.seed,
        )
    };
    result.with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "generated {} ticks over {} instruments (seed {}) in {:.1}s: {}",
        thousands(args.ticks),
        args.instruments,
        args.seed,
        start.elapsed().as_secs_f64(),
        path.display()
    );
    Ok(())
}
