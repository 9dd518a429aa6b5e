//! Replay on several threads, with the output of one.
//!
//! One reader thread reads and parses the files ([`Merge`]), decides the
//! timer steps exactly as [`super::drive`] does, and routes each row to
//! the worker that owns its instrument ([`super::partition`]). Each worker
//! runs its own engines (one per ruleset) over its instruments' rows, in
//! merged order, and every timer step. The calling thread merges the
//! workers' alerts back into the order one engine raises them in, numbers
//! them and hands them to `deliver`: the same alerts, numbers and bytes
//! as one thread.
//!
//! # The order
//!
//! Every alert carries a [`Key`]: its place in the merged stream (timers
//! before tick `i` at `2i`, tick `i` at `2i + 1`, the final timers after
//! the last tick), then its ruleset (`--compare` runs A before B), then,
//! for timers, what raised it, as [`crate::Engine::check_timers_marked`]
//! reports it: instruments in order of first sight (one engine's id
//! order), then groups by key, then patterns fed the alerts those relayed.
//! A tick's alerts are all raised by its instrument's worker. Each worker
//! hands back its alerts sorted by key, with how far it has read; the
//! merge emits an alert once every worker has read past it.
//!
//! Rows are handed to the workers in pieces of [`HANDOFF_ROWS`], in
//! buffers handed back for reuse, so neither side allocates per tick.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::io;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::Arc;

use super::drive::{boundary_after, Hooks, Options, Progress, Totals, PROGRESS_EVERY};
use super::merge::Merge;
use super::partition::Partitioner;
use super::runner::{Rejections, Runner, Sources};
use super::stats::RuleStats;
use super::ReplayError;
use crate::engine::group::GroupKey;
use crate::engine::{TimerMark, TimerSource};
use crate::model::{Alert, InstrumentId};
use crate::rules::RuleSet;
use crate::tick_file::TickRow;

/// Rows read between two hand-offs to the workers.
pub const HANDOFF_ROWS: usize = 16 * 1024;

/// What one ruleset did over the whole replay.
#[derive(Debug, Default)]
pub struct Side {
    pub rejections: Rejections,
    pub stats: RuleStats,
    /// Alerts emitted; the last one's sequence number.
    pub emitted: u64,
}

/// What raised an alert, in the order one engine raises them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Origin {
    Tick,
    /// By order of first sight.
    Instrument(u32),
    Group(GroupKey),
    /// The `n`-th alert relayed by an instrument's or group's timers.
    Relay(Box<Origin>, u32),
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    place: u64,
    side: usize,
    origin: Origin,
}

struct Raised {
    key: Key,
    alert: Alert,
    received_ns: i64,
}

/// A piece of the merged stream for one worker.
#[derive(Default)]
struct Work {
    rows: Vec<TickRow>,
    /// Each row's index in the merged stream.
    at: Vec<u64>,
    steps: Vec<Step>,
    /// Instruments first routed to this worker: file, index in the file,
    /// symbol, order of first sight.
    symbols: Vec<(u32, u32, Arc<str>, u32)>,
    /// Every later alert's place is at or after this.
    through: u64,
}

enum Step {
    /// The rows up to `end` (from the previous step's end), of one file.
    Rows { source: u32, end: usize },
    /// Timers at `now_ns`, before tick `at` of the merged stream.
    Timers { now_ns: i64, at: u64 },
}

impl Work {
    fn clear(&mut self) {
        self.rows.clear();
        self.at.clear();
        self.steps.clear();
        self.symbols.clear();
    }

    fn push(&mut self, source: u32, row: TickRow, at: u64) {
        self.rows.push(row);
        self.at.push(at);
        let end = self.rows.len();
        match self.steps.last_mut() {
            Some(Step::Rows { source: s, end: e }) if *s == source => *e = end,
            _ => self.steps.push(Step::Rows { source, end }),
        }
    }
}

/// What a worker handed back.
struct Done {
    worker: usize,
    alerts: Vec<Raised>,
    through: u64,
}

/// Runs every row of `merge` through one engine per ruleset in
/// `rulesets`, split over `partitioner`'s workers, as [`super::drive`]
/// runs them through one [`Runner`] each. Each alert goes to `deliver`
/// with its ruleset's index, its sequence number and its receive time,
/// in the order and with the numbers of [`super::drive`]. Pacing
/// (`options.speed`) is not done here.
///
/// # Errors
/// As [`super::drive`]: the alerts before a row that stops the replay
/// are delivered first.
pub fn drive_threads(
    merge: &mut Merge,
    rulesets: &[Arc<RuleSet>],
    partitioner: Partitioner,
    workers: usize,
    options: &Options,
    hooks: &mut (impl Hooks + Send),
    deliver: &mut impl FnMut(usize, u64, &Alert, i64) -> io::Result<()>,
) -> Result<(Totals, Vec<Side>), ReplayError> {
    let workers = workers.max(1);
    let has_seq: Vec<bool> = (0..merge.len() as u32).map(|i| merge.has_seq(i)).collect();
    let names: Vec<String> = (0..merge.len() as u32).map(|i| merge.name(i).to_owned()).collect();
    let mut sides: Vec<Side> = rulesets.iter().map(|_| Side::default()).collect();
    std::thread::scope(|scope| {
        let (done_tx, done_rx) = channel::<Done>();
        let mut to_workers = Vec::with_capacity(workers);
        let mut recycled = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for worker in 0..workers {
            let (work_tx, work_rx) = sync_channel::<Work>(2);
            let (back_tx, back_rx) = channel::<Work>();
            let runners: Vec<Runner> = rulesets
                .iter()
                .map(|set| Runner::for_files(RuleSet::clone(set), has_seq.clone()))
                .collect();
            let sources = WorkerSources {
                names: names.clone(),
                symbols: vec![Vec::new(); names.len()],
            };
            let done = done_tx.clone();
            handles.push(scope.spawn(move || run_worker(worker, runners, sources, work_rx, back_tx, done)));
            to_workers.push(work_tx);
            recycled.push(back_rx);
        }
        drop(done_tx);
        let reader = scope.spawn(move || read(merge, partitioner, &to_workers, &recycled, options, hooks));
        let merged = merge_alerts(done_rx, workers, &mut sides, deliver);
        let read = match reader.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let mut parts: Vec<Vec<Rejections>> = rulesets.iter().map(|_| Vec::new()).collect();
        for handle in handles {
            let rejections = match handle.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            for (side, r) in rejections.into_iter().enumerate() {
                parts[side].push(r);
            }
        }
        for (side, part) in sides.iter_mut().zip(&parts) {
            side.rejections = Rejections::merged(part);
        }
        merged.map_err(ReplayError::Output)?;
        read
    })
    .map(|totals| (totals, sides))
}

/// The reader: rows to workers, timer steps to all of them.
fn read(
    merge: &mut Merge,
    mut partitioner: Partitioner,
    workers: &[SyncSender<Work>],
    recycled: &[Receiver<Work>],
    options: &Options,
    hooks: &mut impl Hooks,
) -> Result<Totals, ReplayError> {
    let step = options.timer_step_ns.max(1);
    let mut works: Vec<Work> = workers.iter().map(|_| Work::default()).collect();
    // The worker of each file's instruments, by the file's index.
    let mut routes: Vec<Vec<u32>> = vec![Vec::new(); merge.len()];
    // By symbol: order of first sight and worker.
    let mut seen: HashMap<Box<str>, (u32, u32)> = HashMap::new();
    let mut totals = Totals::default();
    let mut next_timer = i64::MAX;
    let mut pending = 0;
    let result = loop {
        let source = match merge.next_batch() {
            Ok(Some(source)) => source,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        let rows = merge.batch();
        for row in rows {
            let t = row.event_time_ns;
            if totals.first_ns.is_none() {
                totals.first_ns = Some(t);
                next_timer = boundary_after(t, step);
            }
            if t >= next_timer {
                let now_ns = t.div_euclid(step) * step;
                for work in &mut works {
                    work.steps.push(Step::Timers {
                        now_ns,
                        at: totals.ticks,
                    });
                }
                next_timer = boundary_after(t, step);
            }
            let route = &mut routes[source as usize];
            let index = row.instrument as usize;
            let worker = match route.get(index) {
                Some(w) if *w != u32::MAX => *w,
                _ => {
                    let symbol = merge.symbol(source, row.instrument);
                    let (rank, worker) = match seen.get(symbol) {
                        Some(known) => *known,
                        None => {
                            let known = (seen.len() as u32, partitioner.assign(symbol) as u32);
                            seen.insert(symbol.into(), known);
                            known
                        }
                    };
                    if route.len() <= index {
                        route.resize(index + 1, u32::MAX);
                    }
                    route[index] = worker;
                    works[worker as usize]
                        .symbols
                        .push((source, row.instrument, Arc::from(symbol), rank));
                    worker
                }
            };
            works[worker as usize].push(source, *row, totals.ticks);
            totals.ticks += 1;
            totals.last_ns = Some(t);
            if totals.ticks % PROGRESS_EVERY == 0 {
                let (bytes_read, bytes_total) = merge.bytes();
                hooks.progress(&Progress {
                    ticks: totals.ticks,
                    bytes_read,
                    bytes_total,
                    event_time_ns: t,
                });
            }
        }
        pending += rows.len();
        if pending >= HANDOFF_ROWS {
            pending = 0;
            if !hand_off(&mut works, workers, recycled, 2 * totals.ticks) {
                // The merge stopped: its error is the replay's.
                return Ok(totals);
            }
        }
    };
    if let (Ok(()), Some(last)) = (&result, totals.last_ns) {
        for work in &mut works {
            work.steps.push(Step::Timers {
                now_ns: last,
                at: totals.ticks,
            });
        }
    }
    hand_off(&mut works, workers, recycled, u64::MAX);
    result.map(|()| totals)
}

/// Sends each worker its piece (empty ones too: they carry how far the
/// stream has been read), replacing it with a handed-back buffer.
/// Whether every worker took it.
fn hand_off(works: &mut [Work], workers: &[SyncSender<Work>], recycled: &[Receiver<Work>], through: u64) -> bool {
    for ((work, to), back) in works.iter_mut().zip(workers).zip(recycled) {
        let mut next = back.try_recv().unwrap_or_default();
        next.clear();
        let mut full = std::mem::replace(work, next);
        full.through = through;
        if to.send(full).is_err() {
            return false;
        }
    }
    true
}

/// A worker's view of the files: names, and the symbols routed to it.
struct WorkerSources {
    names: Vec<String>,
    symbols: Vec<Vec<Option<Arc<str>>>>,
}

impl Sources for WorkerSources {
    fn name(&self, source: u32) -> &str {
        self.names.get(source as usize).map_or("", |s| s)
    }

    fn symbol(&self, source: u32, index: u32) -> &str {
        self.symbols
            .get(source as usize)
            .and_then(|s| s.get(index as usize))
            .and_then(|s| s.as_deref())
            .unwrap_or("")
    }
}

/// One worker: its pieces through its engines, the alerts back with keys.
/// Returns each ruleset's rejections.
fn run_worker(
    worker: usize,
    mut runners: Vec<Runner>,
    mut sources: WorkerSources,
    work_rx: Receiver<Work>,
    back: Sender<Work>,
    done: Sender<Done>,
) -> Vec<Rejections> {
    // Order of first sight by symbol, and by each engine's ids.
    let mut rank_of: HashMap<Arc<str>, u32> = HashMap::new();
    let mut ranks: Vec<Vec<u32>> = runners.iter().map(|_| Vec::new()).collect();
    let mut marks = Vec::new();
    let mut timed: Vec<(Option<TimerMark>, Alert, i64)> = Vec::new();
    for mut work in work_rx {
        for (source, index, symbol, rank) in work.symbols.drain(..) {
            let file = &mut sources.symbols[source as usize];
            if file.len() <= index as usize {
                file.resize(index as usize + 1, None);
            }
            file[index as usize] = Some(symbol.clone());
            rank_of.insert(symbol, rank);
        }
        let mut alerts = Vec::new();
        let mut start = 0;
        for step in &work.steps {
            match *step {
                Step::Rows { source, end } => {
                    let (rows, at) = (&work.rows[start..end], &work.at[start..end]);
                    for (side, runner) in runners.iter_mut().enumerate() {
                        let _ = runner.ticks_at(&sources, source, rows, at, &mut |k, _, alert, rx| {
                            alerts.push(Raised {
                                key: Key {
                                    place: 2 * at[k] + 1,
                                    side,
                                    origin: Origin::Tick,
                                },
                                alert: alert.clone(),
                                received_ns: rx,
                            });
                            Ok::<_, Infallible>(())
                        });
                    }
                    start = end;
                }
                Step::Timers { now_ns, at } => {
                    for (side, runner) in runners.iter_mut().enumerate() {
                        let _ = runner.timers_marked(now_ns, &mut marks, &mut |mark, _, alert, rx| {
                            timed.push((mark.cloned(), alert.clone(), rx));
                            Ok::<_, Infallible>(())
                        });
                        for (mark, alert, received_ns) in timed.drain(..) {
                            let origin = match mark {
                                Some(TimerMark::Eval(source)) => origin(&source, runner, &mut ranks[side], &rank_of),
                                Some(TimerMark::Relay(source, n)) => {
                                    Origin::Relay(Box::new(origin(&source, runner, &mut ranks[side], &rank_of)), n)
                                }
                                None => Origin::Tick,
                            };
                            alerts.push(Raised {
                                key: Key {
                                    place: 2 * at,
                                    side,
                                    origin,
                                },
                                alert,
                                received_ns,
                            });
                        }
                    }
                }
            }
        }
        // Stable: a source's alerts keep their order.
        alerts.sort_by(|a, b| a.key.cmp(&b.key));
        let through = work.through;
        if done
            .send(Done {
                worker,
                alerts,
                through,
            })
            .is_err()
        {
            break;
        }
        work.clear();
        let _ = back.send(work);
    }
    runners.into_iter().map(|r| r.rejections).collect()
}

/// The order of a timer's source among every worker's.
fn origin(source: &TimerSource, runner: &Runner, ranks: &mut Vec<u32>, rank_of: &HashMap<Arc<str>, u32>) -> Origin {
    match source {
        TimerSource::Group(key) => Origin::Group(key.clone()),
        TimerSource::Instrument(InstrumentId(id)) => {
            let id = *id as usize;
            if let Some(rank) = ranks.get(id).filter(|r| **r != u32::MAX) {
                return Origin::Instrument(*rank);
            }
            let rank = runner
                .engine()
                .instruments()
                .symbol(InstrumentId(id as u32))
                .and_then(|s| rank_of.get(&s).copied())
                .unwrap_or(u32::MAX);
            if ranks.len() <= id {
                ranks.resize(id + 1, u32::MAX);
            }
            ranks[id] = rank;
            Origin::Instrument(rank)
        }
    }
}

/// The calling thread: every worker's alerts, in key order, numbered per
/// ruleset, to `deliver`.
fn merge_alerts(
    done: Receiver<Done>,
    workers: usize,
    sides: &mut [Side],
    deliver: &mut impl FnMut(usize, u64, &Alert, i64) -> io::Result<()>,
) -> io::Result<()> {
    let mut queues: Vec<VecDeque<Raised>> = (0..workers).map(|_| VecDeque::new()).collect();
    let mut through = vec![0u64; workers];
    for piece in done {
        queues[piece.worker].extend(piece.alerts);
        through[piece.worker] = piece.through;
        let bound = through.iter().copied().min().unwrap_or(0);
        emit(&mut queues, bound, sides, deliver)?;
    }
    emit(&mut queues, u64::MAX, sides, deliver)
}

/// Emits, in key order, the queued alerts placed before `bound`.
fn emit(
    queues: &mut [VecDeque<Raised>],
    bound: u64,
    sides: &mut [Side],
    deliver: &mut impl FnMut(usize, u64, &Alert, i64) -> io::Result<()>,
) -> io::Result<()> {
    loop {
        let next = queues
            .iter()
            .enumerate()
            .filter_map(|(i, q)| q.front().map(|r| (i, &r.key)))
            .filter(|(_, key)| key.place < bound || bound == u64::MAX)
            .min_by(|a, b| a.1.cmp(b.1))
            .map(|(i, _)| i);
        let Some(i) = next else {
            return Ok(());
        };
        let Some(raised) = queues[i].pop_front() else {
            return Ok(());
        };
        let side = &mut sides[raised.key.side];
        side.emitted += 1;
        side.stats.record(&raised.alert);
        deliver(raised.key.side, side.emitted, &raised.alert, raised.received_ns)?;
    }
}
