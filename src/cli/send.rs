//! `airbag send`: stream a tick file to a server's `Ingest` and report what
//! it applied and rejected.
//!
//! Three tasks cooperate:
//!
//! - a blocking reader thread parses the file into batches of proto ticks
//!   (with the file line of each tick) and hands them over through a small
//!   bounded channel, so parsing overlaps the network;
//! - the sender paces batches to `--rate`, records each batch's lines in
//!   order, and writes it to the gRPC stream;
//! - the ack reader matches each acknowledgement to its batch (the server
//!   answers in batch order) and maps every rejection back to its file
//!   line.
//!
//! At most [`MAX_IN_FLIGHT`] batches are sent and not yet acknowledged; a
//! semaphore permit travels with each batch's record and is released when
//! its ack arrives. That bounds the client's memory whatever the file size.
//!
//! A row the reader cannot parse is counted and reported with its line, and
//! sending goes on (`--strict` stops instead). Rejections by the server do
//! not fail the command; a connection or stream failure does.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;

use crate::cli::pace::Pacer;
use crate::cli::wire::{self, thousands};
use crate::cli::DEFAULT_ADDR;
use crate::tick_file::{TickFileError, TickReader};
use crate::wire::proto;
use crate::wire::proto::ingest_client::IngestClient;

/// Batches sent and not yet acknowledged, at most.
pub const MAX_IN_FLIGHT: usize = 64;
/// Examples kept per rejection code (and of unreadable rows) for the
/// summary.
pub const EXAMPLES_PER_CODE: usize = 3;

/// `airbag send`: stream a CSV tick file to a server.
#[derive(clap::Args, Debug, Clone)]
pub struct SendArgs {
    /// Server address, `http://host:port` or `host:port`.
    #[arg(long, env = "AIRBAG_ADDR", default_value = DEFAULT_ADDR, value_name = "URL")]
    pub addr: String,
    /// CSV tick file, plain or gzip: a header row with `instrument`,
    /// `ts_ms` (or `ts_ns`), `price`, `size` and optionally `seq`, `kind`,
    /// `side`, `bid`, `ask`, `bid_size`, `ask_size`.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Ticks per batch.
    #[arg(long, default_value_t = 500, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch: u32,
    /// Ticks per second; 0 sends as fast as the server takes them.
    #[arg(long, default_value_t = 0.0, value_name = "TICKS_PER_S")]
    pub rate: f64,
    /// Stop at the first row that cannot be read instead of skipping it.
    #[arg(long)]
    pub strict: bool,
    /// Seconds to wait for the last acknowledgements after the file is
    /// sent.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    pub ack_timeout: f64,
    /// Send only the ticks above the server's last applied sequence number
    /// of each instrument (from `Ingest.LastApplied`).
    #[arg(long)]
    pub resume: bool,
    /// On a lost connection or a server restart, reconnect and resume
    /// (as `--resume`) for up to this long without progress.
    #[arg(long, default_value_t = 0.0, value_name = "SECONDS")]
    pub retry_for: f64,
    #[command(flatten)]
    pub security: wire::ClientSecurity,
}

/// How [`send_file`] sends.
#[derive(Clone, Debug)]
pub struct SendOptions {
    pub batch: usize,
    /// Ticks per second; 0 for as fast as possible.
    pub rate: f64,
    pub strict: bool,
    pub ack_timeout: Duration,
    /// Ticks at or below these sequence numbers (by instrument) are not
    /// sent: the server has applied them already.
    pub skip_through: Option<Arc<HashMap<String, u64>>>,
}

impl Default for SendOptions {
    fn default() -> Self {
        SendOptions {
            batch: 500,
            rate: 0.0,
            strict: false,
            ack_timeout: Duration::from_secs(30),
            skip_through: None,
        }
    }
}

/// A tick the server refused, located in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedTick {
    pub line: u64,
    pub code: String,
    pub reason: String,
}

/// What happened to a file's ticks.
#[derive(Clone, Debug, Default)]
pub struct SendSummary {
    pub ticks_sent: u64,
    pub batches_sent: u64,
    pub batches_acked: u64,
    pub applied: u64,
    pub rejected: u64,
    /// Rejections by code, e.g. `duplicate` → 3.
    pub rejected_by_code: BTreeMap<String, u64>,
    /// The first [`EXAMPLES_PER_CODE`] rejections of each code, in file
    /// order.
    pub rejection_examples: Vec<RejectedTick>,
    /// Rows of the file that could not be read (and were not sent).
    pub unreadable_rows: u64,
    /// The first few of them.
    pub unreadable_examples: Vec<String>,
    /// From the first batch sent to the last ack received.
    pub elapsed: Duration,
    /// Ticks not sent because the server had applied them already.
    pub skipped_applied: u64,
    /// Connections made; more than one when the send resumed.
    pub attempts: u64,
}

impl SendSummary {
    /// Adds the counts of a later attempt at the same file.
    pub fn absorb(&mut self, later: SendSummary) {
        self.ticks_sent += later.ticks_sent;
        self.batches_sent += later.batches_sent;
        self.batches_acked += later.batches_acked;
        self.applied += later.applied;
        self.rejected += later.rejected;
        for (code, n) in later.rejected_by_code {
            *self.rejected_by_code.entry(code).or_default() += n;
        }
        let room = EXAMPLES_PER_CODE.saturating_sub(self.rejection_examples.len());
        self.rejection_examples
            .extend(later.rejection_examples.into_iter().take(room));
        self.unreadable_rows = self.unreadable_rows.max(later.unreadable_rows);
        if self.unreadable_examples.is_empty() {
            self.unreadable_examples = later.unreadable_examples;
        }
        self.elapsed += later.elapsed;
        self.skipped_applied += later.skipped_applied;
        self.attempts += later.attempts;
    }
}

impl fmt::Display for SendSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 { self.ticks_sent as f64 / secs } else { 0.0 };
        writeln!(
            f,
            "sent {} ticks in {} batches in {:.3} s ({} ticks/s)",
            thousands(self.ticks_sent),
            thousands(self.batches_sent),
            secs,
            thousands(rate as u64)
        )?;
        write!(
            f,
            "applied {}, rejected {}",
            thousands(self.applied),
            thousands(self.rejected)
        )?;
        if !self.rejected_by_code.is_empty() {
            let codes: Vec<String> = self
                .rejected_by_code
                .iter()
                .map(|(code, n)| format!("{code} {}", thousands(*n)))
                .collect();
            write!(f, " ({})", codes.join(", "))?;
        }
        writeln!(f)?;
        for r in &self.rejection_examples {
            // Reasons often start with their code already ("duplicate: ...").
            if r.reason.starts_with(r.code.as_str()) {
                writeln!(f, "  line {}: {}", r.line, r.reason)?;
            } else {
                writeln!(f, "  line {}: {}: {}", r.line, r.code, r.reason)?;
            }
        }
        if self.unreadable_rows > 0 {
            writeln!(
                f,
                "{} rows could not be read and were not sent",
                thousands(self.unreadable_rows)
            )?;
            for e in &self.unreadable_examples {
                writeln!(f, "  {e}")?;
            }
        }
        if self.attempts > 1 || self.skipped_applied > 0 {
            writeln!(
                f,
                "resumed: {} connections; {} ticks skipped as already applied by the server",
                self.attempts,
                thousands(self.skipped_applied)
            )?;
        }
        if self.batches_acked < self.batches_sent {
            writeln!(
                f,
                "{} batches were not acknowledged",
                thousands(self.batches_sent - self.batches_acked)
            )?;
        }
        Ok(())
    }
}

/// Why [`send_file`] could not finish; it carries what was done so far.
#[derive(Debug)]
pub struct SendFailure {
    pub summary: SendSummary,
    pub error: SendError,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the server refused the ingest stream: {}", wire::status_text(.0))]
    Open(tonic::Status),
    #[error("the server ended the ingest stream: {}", wire::status_text(.0))]
    Stream(tonic::Status),
    #[error("the server closed the ingest stream before acknowledging every batch")]
    Closed,
    #[error("no acknowledgement of the last batches within {0:?}")]
    AckTimeout(Duration),
    #[error("{0}")]
    File(TickFileError),
    #[error("{0}")]
    Connect(String),
}

impl fmt::Display for SendFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error)
    }
}

impl std::error::Error for SendFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Runs `airbag send`: prints the summary to stderr.
///
/// # Errors
/// The file cannot be opened, the server cannot be reached, or the stream
/// fails.
pub async fn run(args: SendArgs) -> anyhow::Result<()> {
    let seconds = |value: f64, flag: &str| {
        if value.is_finite() && value >= 0.0 {
            Ok(Duration::from_secs_f64(value))
        } else {
            Err(anyhow::anyhow!("{flag} must be a number of seconds, got {value}"))
        }
    };
    let ack_timeout = seconds(args.ack_timeout, "--ack-timeout")?;
    let retry_for = seconds(args.retry_for, "--retry-for")?;
    let options = SendOptions {
        batch: args.batch as usize,
        rate: args.rate,
        strict: args.strict,
        ack_timeout,
        skip_through: None,
    };
    let outcome = if args.resume || !retry_for.is_zero() {
        crate::cli::resume::send_resuming_to(&args.addr, &args.security, &args.file, &options, retry_for).await
    } else {
        let reader = TickReader::open(&args.file).map_err(|e| anyhow::anyhow!("{}: {e}", args.file.display()))?;
        let channel = wire::connect_with(&args.addr, &args.security).await?;
        send_file(channel, reader, &options).await
    };
    match outcome {
        Ok(summary) => {
            eprint!("{summary}");
            Ok(())
        }
        Err(failure) => {
            eprint!("{}", failure.summary);
            match failure.error {
                SendError::File(e) => Err(anyhow::anyhow!("{}: {e}", args.file.display())),
                e => Err(e.into()),
            }
        }
    }
}

/// What the reader thread hands the sender.
enum Item {
    Batch { ticks: Vec<proto::Tick>, lines: Vec<u64> },
    Unreadable(TickFileError),
}

/// A batch sent and awaiting its ack.
struct Pending {
    batch_id: u64,
    lines: Vec<u64>,
    /// Released when the ack arrives.
    _permit: OwnedSemaphorePermit,
}

/// What the ack reader found.
#[derive(Default)]
struct AckTally {
    acked: u64,
    applied: u64,
    rejected: u64,
    by_code: BTreeMap<String, u64>,
    examples: Vec<RejectedTick>,
    last_ack: Option<Instant>,
}

/// Streams every tick `reader` yields to the server over one `Ingest`
/// stream and waits for every acknowledgement.
///
/// Cancellation: dropping the future cancels the stream; the reader
/// thread stops at its next batch.
///
/// # Errors
/// A [`SendFailure`] with the summary so far: the stream could not be
/// opened or ended with a status, acks did not come within
/// `options.ack_timeout`, the file could not be read, or (with
/// `options.strict`) a row was unreadable.
pub async fn send_file<R>(
    channel: wire::Connection,
    reader: TickReader<R>,
    options: &SendOptions,
) -> Result<SendSummary, Box<SendFailure>>
where
    R: BufRead + Send + 'static,
{
    let mut summary = SendSummary {
        attempts: 1,
        ..SendSummary::default()
    };
    let fail = |summary: SendSummary, error| Err(Box::new(SendFailure { summary, error }));

    // Reader thread → sender: a few batches of read-ahead.
    let (item_tx, mut item_rx) = mpsc::channel::<Item>(4);
    let batch_size = options.batch.max(1);
    let skip_through = options.skip_through.clone();
    let reader_thread =
        tokio::task::spawn_blocking(move || read_batches(reader, batch_size, skip_through.as_deref(), &item_tx));

    // Sender → gRPC stream.
    let (batch_tx, batch_rx) = mpsc::channel::<proto::TickBatch>(8);
    let mut client = IngestClient::new(channel);
    let acks = match client.ingest(ReceiverStream::new(batch_rx)).await {
        Ok(response) => response.into_inner(),
        Err(status) => return fail(summary, SendError::Open(status)),
    };

    // Sender → ack reader: each batch's lines, in send order.
    let (pending_tx, pending_rx) = mpsc::unbounded_channel::<Pending>();
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let ack_task = tokio::spawn(read_acks(acks, pending_rx));

    let start = Instant::now();
    let mut pacer = Pacer::new(options.rate, start);
    let mut batch_id = 0u64;
    let mut file_error = None;
    // Set when MAX_IN_FLIGHT batches went unacknowledged for ack_timeout.
    let mut stalled = false;
    while let Some(item) = item_rx.recv().await {
        let (ticks, lines) = match item {
            Item::Batch { ticks, lines } => (ticks, lines),
            Item::Unreadable(e) => {
                summary.unreadable_rows += 1;
                if e.is_fatal() || options.strict {
                    file_error = Some(e);
                    break;
                }
                if summary.unreadable_examples.len() < EXAMPLES_PER_CODE {
                    summary.unreadable_examples.push(e.to_string());
                }
                continue;
            }
        };
        pacer.wait(ticks.len()).await;
        let permit = match tokio::time::timeout(options.ack_timeout, in_flight.clone().acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_closed)) => break,
            Err(_elapsed) => {
                stalled = true;
                break;
            }
        };
        batch_id += 1;
        let n = ticks.len() as u64;
        // Record before sending, so the ack can never arrive first.
        if pending_tx
            .send(Pending {
                batch_id,
                lines,
                _permit: permit,
            })
            .is_err()
        {
            break; // The ack reader has stopped: the stream failed.
        }
        if batch_tx.send(proto::TickBatch { batch_id, ticks }).await.is_err() {
            break; // The stream is gone; the ack reader has the status.
        }
        summary.batches_sent += 1;
        summary.ticks_sent += n;
    }
    // Ends the request stream: the server acks what it has and closes.
    drop(batch_tx);
    drop(pending_tx);
    drop(item_rx);

    let acked = if stalled {
        ack_task.abort();
        // Reported as a timeout below.
        Err(())
    } else {
        tokio::time::timeout(options.ack_timeout, ack_task)
            .await
            .map_err(|_| ())
    };
    // The reader thread ends once its channel is closed.
    summary.skipped_applied = reader_thread.await.unwrap_or(0);
    let (tally, ack_error) = match acked {
        Err(_) => (AckTally::default(), Some(SendError::AckTimeout(options.ack_timeout))),
        Ok(Err(join_error)) => (
            AckTally::default(),
            Some(SendError::Stream(tonic::Status::internal(format!(
                "ack reader failed: {join_error}"
            )))),
        ),
        Ok(Ok((tally, error))) => (tally, error),
    };
    summary.batches_acked = tally.acked;
    summary.applied = tally.applied;
    summary.rejected = tally.rejected;
    summary.rejected_by_code = tally.by_code;
    summary.rejection_examples = tally.examples;
    summary.rejection_examples.sort_by_key(|r| r.line);
    summary.elapsed = tally
        .last_ack
        .unwrap_or_else(Instant::now)
        .saturating_duration_since(start);

    if let Some(error) = ack_error {
        return fail(summary, error);
    }
    if let Some(e) = file_error {
        return fail(summary, SendError::File(e));
    }
    if summary.batches_acked < summary.batches_sent {
        return fail(summary, SendError::Closed);
    }
    Ok(summary)
}

/// The reader thread: batches of proto ticks with their lines, leaving
/// out ticks at or below `skip_through`. Returns how many it left out.
fn read_batches<R: BufRead>(
    reader: TickReader<R>,
    batch: usize,
    skip_through: Option<&HashMap<String, u64>>,
    out: &mpsc::Sender<Item>,
) -> u64 {
    let mut ticks = Vec::with_capacity(batch);
    let mut lines = Vec::with_capacity(batch);
    let mut skipped = 0;
    for record in reader {
        match record {
            Ok(record) => {
                if skip_through.and_then(|s| s.get(&*record.instrument)) >= Some(&record.seq) {
                    skipped += 1;
                    continue;
                }
                ticks.push(wire::tick(&record));
                lines.push(record.line);
                if ticks.len() == batch {
                    let item = Item::Batch {
                        ticks: std::mem::replace(&mut ticks, Vec::with_capacity(batch)),
                        lines: std::mem::replace(&mut lines, Vec::with_capacity(batch)),
                    };
                    if out.blocking_send(item).is_err() {
                        return skipped;
                    }
                }
            }
            Err(e) => {
                let fatal = e.is_fatal();
                // Flush the rows before the bad one, so order holds.
                if !ticks.is_empty() {
                    let item = Item::Batch {
                        ticks: std::mem::take(&mut ticks),
                        lines: std::mem::take(&mut lines),
                    };
                    if out.blocking_send(item).is_err() {
                        return skipped;
                    }
                }
                if out.blocking_send(Item::Unreadable(e)).is_err() || fatal {
                    return skipped;
                }
            }
        }
    }
    if !ticks.is_empty() {
        let _ = out.blocking_send(Item::Batch { ticks, lines });
    }
    skipped
}

/// The ack reader: tallies acks until the server closes the stream.
/// Returns the tally and, if the stream failed, why.
async fn read_acks(
    mut acks: tonic::codec::Streaming<proto::IngestAck>,
    mut pending_rx: mpsc::UnboundedReceiver<Pending>,
) -> (AckTally, Option<SendError>) {
    let mut tally = AckTally::default();
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut per_code: BTreeMap<String, usize> = BTreeMap::new();
    loop {
        let ack = match acks.message().await {
            Ok(Some(ack)) => ack,
            Ok(None) => return (tally, None),
            Err(status) => return (tally, Some(SendError::Stream(status))),
        };
        tally.last_ack = Some(Instant::now());
        while let Ok(p) = pending_rx.try_recv() {
            pending.push_back(p);
        }
        // Acks come in batch order; skip (and forget) any batch the
        // server did not answer rather than mislabel lines.
        let batch = loop {
            match pending.pop_front() {
                Some(p) if p.batch_id == ack.batch_id => break Some(p),
                Some(p) if p.batch_id < ack.batch_id => continue,
                Some(p) => {
                    pending.push_front(p);
                    break None;
                }
                None => break None,
            }
        };
        tally.acked += 1;
        tally.applied += u64::from(ack.applied);
        tally.rejected += ack.rejected.len() as u64;
        for r in ack.rejected {
            *tally.by_code.entry(r.code.clone()).or_default() += 1;
            let shown = per_code.entry(r.code.clone()).or_default();
            if *shown < EXAMPLES_PER_CODE {
                *shown += 1;
                let line = batch
                    .as_ref()
                    .and_then(|b| b.lines.get(r.index as usize))
                    .copied()
                    .unwrap_or(0);
                tally.examples.push(RejectedTick {
                    line,
                    code: r.code,
                    reason: r.reason,
                });
            }
        }
    }
}
