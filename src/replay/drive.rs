//! The replay loop: the merged stream through one or more engines, timers
//! in event time, optional pacing, progress.

use std::io;
use std::time::{Duration, Instant};

use super::merge::Merge;
use super::runner::Runner;
use super::ReplayError;
use crate::model::Alert;
use crate::tick_file::TickRow;

/// How often (in ticks) [`Hooks::progress`] is called.
pub(super) const PROGRESS_EVERY: u64 = 1 << 16;

/// How a replay runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Options {
    /// Timers run whenever event time crosses a multiple of this.
    pub timer_step_ns: i64,
    /// `None`: as fast as possible; `Some(x)`: `x` times real time
    /// (`1.0` is real time, `10.0` ten times faster).
    pub speed: Option<f64>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timer_step_ns: 100_000_000,
            speed: None,
        }
    }
}

/// Where a replay is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub ticks: u64,
    /// Compressed bytes read, and the files' total.
    pub bytes_read: u64,
    pub bytes_total: u64,
    pub event_time_ns: i64,
}

/// Callbacks during a replay.
pub trait Hooks {
    /// Called every few tens of thousands of ticks.
    fn progress(&mut self, _progress: &Progress) {}
}

/// No callbacks.
pub struct NoHooks;

impl Hooks for NoHooks {}

/// What a replay read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Rows read and offered to the engines (rejected ones included).
    pub ticks: u64,
    /// Event time of the first and last tick.
    pub first_ns: Option<i64>,
    pub last_ns: Option<i64>,
}

/// Runs every row of `merge` through every runner, in order, with timers
/// in event time. Each alert goes to `deliver` with the runner's index,
/// the alert's sequence number in that runner and its receive time.
/// With no runners, only reads and parses (a baseline).
///
/// # Errors
/// A row that stops the replay, or `deliver` failing.
pub fn drive(
    merge: &mut Merge,
    runners: &mut [Runner],
    options: &Options,
    hooks: &mut impl Hooks,
    deliver: &mut impl FnMut(usize, u64, &Alert, i64) -> io::Result<()>,
) -> Result<Totals, ReplayError> {
    let step = options.timer_step_ns.max(1);
    let mut totals = Totals::default();
    let mut next_timer = i64::MAX;
    let start = Instant::now();
    while let Some(source) = merge.next_batch()? {
        if let ([], None) = (&*runners, options.speed) {
            // Only reading: count the rows and note their times.
            read_only(merge.batch(), &mut totals, merge, hooks);
            continue;
        }
        if let ([runner], None) = (&mut *runners, options.speed) {
            // One engine, unpaced: runs of ticks with no timer or progress
            // call between them go to the engine together.
            let rows = merge.batch();
            let mut k = 0;
            while k < rows.len() {
                let t = rows[k].event_time_ns;
                if totals.first_ns.is_none() {
                    totals.first_ns = Some(t);
                    next_timer = boundary_after(t, step);
                }
                if t >= next_timer {
                    let now = t.div_euclid(step) * step;
                    runner
                        .timers(now, &mut |seq, alert, rx| deliver(0, seq, alert, rx))
                        .map_err(ReplayError::Output)?;
                    next_timer = boundary_after(t, step);
                }
                let to_progress = (PROGRESS_EVERY - totals.ticks % PROGRESS_EVERY) as usize;
                let limit = rows.len().min(k.saturating_add(to_progress));
                let mut end = k + 1;
                while end < limit && rows[end].event_time_ns < next_timer {
                    end += 1;
                }
                runner
                    .ticks(merge, source, &rows[k..end], &mut |seq, alert, rx| {
                        deliver(0, seq, alert, rx)
                    })
                    .map_err(ReplayError::Output)?;
                let t = rows[end - 1].event_time_ns;
                totals.ticks += (end - k) as u64;
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
                k = end;
            }
            continue;
        }
        for row in merge.batch() {
            let t = row.event_time_ns;
            if totals.first_ns.is_none() {
                totals.first_ns = Some(t);
                next_timer = boundary_after(t, step);
            }
            if t >= next_timer {
                // The latest boundary at or before this tick: every earlier
                // tick is before it, so timers run in event-time order.
                let now = t.div_euclid(step) * step;
                for (i, runner) in runners.iter_mut().enumerate() {
                    runner
                        .timers(now, &mut |seq, alert, rx| deliver(i, seq, alert, rx))
                        .map_err(ReplayError::Output)?;
                }
                next_timer = boundary_after(t, step);
            }
            if let (Some(speed), Some(t0)) = (options.speed, totals.first_ns) {
                pace(start, t - t0, speed);
            }
            for (i, runner) in runners.iter_mut().enumerate() {
                runner
                    .tick(merge, source, row, &mut |seq, alert, rx| deliver(i, seq, alert, rx))
                    .map_err(ReplayError::Output)?;
            }
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
    }
    if let Some(last) = totals.last_ns {
        for (i, runner) in runners.iter_mut().enumerate() {
            runner
                .timers(last, &mut |seq, alert, rx| deliver(i, seq, alert, rx))
                .map_err(ReplayError::Output)?;
        }
    }
    Ok(totals)
}

/// What [`drive`] does with a batch of rows when there is no engine to
/// run and no pace to keep: counts them, notes the first and last time,
/// and reports progress at the same rows as the general loop.
fn read_only(rows: &[TickRow], totals: &mut Totals, merge: &Merge, hooks: &mut impl Hooks) {
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return;
    };
    totals.first_ns.get_or_insert(first.event_time_ns);
    totals.last_ns = Some(last.event_time_ns);
    let before = totals.ticks;
    totals.ticks += rows.len() as u64;
    // The rows that bring the count to a multiple of PROGRESS_EVERY.
    let mut k = PROGRESS_EVERY - before % PROGRESS_EVERY;
    while k <= rows.len() as u64 {
        let (bytes_read, bytes_total) = merge.bytes();
        hooks.progress(&Progress {
            ticks: before + k,
            bytes_read,
            bytes_total,
            event_time_ns: rows[k as usize - 1].event_time_ns,
        });
        k += PROGRESS_EVERY;
    }
}

/// The first multiple of `step` after `t`.
pub(super) fn boundary_after(t: i64, step: i64) -> i64 {
    (t.div_euclid(step) + 1).saturating_mul(step)
}

/// Sleeps until `event_offset_ns / speed` of wall time has passed since
/// `start`.
fn pace(start: Instant, event_offset_ns: i64, speed: f64) {
    if !(speed.is_finite() && speed > 0.0) || event_offset_ns <= 0 {
        return;
    }
    let due = Duration::from_secs_f64(event_offset_ns as f64 / 1e9 / speed);
    let elapsed = start.elapsed();
    if due > elapsed + Duration::from_micros(200) {
        std::thread::sleep(due - elapsed);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, Cursor};

    use super::*;
    use crate::replay::BadRows;
    use crate::tick_file::TickReader;

    /// Records every progress report.
    struct Reports(Vec<Progress>);

    impl Hooks for Reports {
        fn progress(&mut self, progress: &Progress) {
            self.0.push(*progress);
        }
    }

    fn read_only_run(text: &str, speed: Option<f64>) -> (Totals, Vec<Progress>) {
        let boxed: Box<dyn BufRead + Send> = Box::new(Cursor::new(text.as_bytes().to_vec()));
        let mut merge = Merge::from_readers(vec![("f".into(), TickReader::new(boxed).unwrap())], BadRows::Skip);
        let options = Options {
            speed,
            ..Options::default()
        };
        let mut reports = Reports(Vec::new());
        let totals = drive(&mut merge, &mut [], &options, &mut reports, &mut |_, _, _, _| Ok(())).unwrap();
        (totals, reports.0)
    }

    #[test]
    fn reading_only_counts_and_reports_as_the_row_by_row_loop_does() {
        let mut text = String::from("instrument,ts_ms,price\n");
        for i in 0..200_000u64 {
            // A few bad rows, so that batches are not all full.
            if i % 7_777 == 3 {
                text.push_str("X,oops,1\n");
            }
            text.push_str(&format!("X{},{},1\n", i % 5, 1_000 + i));
        }
        // A speed too high to wait takes the row-by-row loop.
        let (fast, fast_reports) = read_only_run(&text, None);
        let (slow, slow_reports) = read_only_run(&text, Some(1e15));
        assert_eq!(fast, slow);
        assert_eq!(fast.ticks, 200_000);
        assert_eq!(
            (fast.first_ns, fast.last_ns),
            (Some(1_000_000_000), Some(200_999_000_000))
        );
        assert_eq!(fast_reports, slow_reports);
        let ticks: Vec<u64> = fast_reports.iter().map(|p| p.ticks).collect();
        assert_eq!(ticks, [65_536, 131_072, 196_608]);
        assert_eq!(fast_reports[0].event_time_ns, (1_000 + 65_535) * 1_000_000);
        assert_eq!(
            read_only_run("instrument,ts_ms,price\n", None),
            (Totals::default(), vec![])
        );
    }

    #[test]
    fn boundaries() {
        assert_eq!(boundary_after(0, 100), 100);
        assert_eq!(boundary_after(99, 100), 100);
        assert_eq!(boundary_after(100, 100), 200);
        assert_eq!(boundary_after(-1, 100), 0);
    }
}
