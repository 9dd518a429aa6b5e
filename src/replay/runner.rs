//! One engine driven by a merged tick stream, through the service's batch
//! pipeline ([`Pipeline`]) in event time.
//!
//! Each file's instruments are resolved to engine ids once, on first
//! sight, and cached by the file's own instrument index, so the per-tick
//! cost of naming an instrument is an index. Each tick is received at its
//! event time, which the engine keeps per instrument for silent-feed
//! timers.
//!
//! Ticks the engine refuses (duplicates, late, bad values, bad symbols)
//! are counted by [`RejectCode`] with the first few quoted: a replay never
//! drops a tick silently.

use crate::engine::TimerMark;
use crate::ingest::{RejectCounts, TickError};
use crate::model::{Alert, InstrumentId};
use crate::rules::RuleSet;
use crate::service::Pipeline;
use crate::tick_file::TickRow;
use crate::{Engine, EngineConfig};

use super::merge::Merge;
use super::stats::RuleStats;

/// How many rejected ticks are quoted in the summary.
pub const REJECTED_EXAMPLES: usize = 5;

/// The files a [`Runner`] reads from: their names and instruments.
pub trait Sources {
    /// The name of file `source`, for messages.
    fn name(&self, source: u32) -> &str;
    /// The symbol of instrument `index` of file `source`.
    fn symbol(&self, source: u32, index: u32) -> &str;
}

impl Sources for Merge {
    fn name(&self, source: u32) -> &str {
        Merge::name(self, source)
    }

    fn symbol(&self, source: u32, index: u32) -> &str {
        Merge::symbol(self, source, index)
    }
}

/// Ticks the engine refused, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rejections {
    pub by_code: RejectCounts,
    /// `file:line: reason` of the first rejected ticks.
    pub examples: Vec<String>,
    /// Where each example's tick is in the merged stream, when the runner
    /// is told ([`Runner::ticks_at`]): to keep the first few of several
    /// runners.
    pub example_at: Vec<u64>,
}

impl Rejections {
    pub fn total(&self) -> u64 {
        self.by_code.total()
    }

    /// `(code, count)` for every code with a count, in a fixed order.
    pub fn counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.by_code.nonzero().map(|(code, n)| (code.as_str(), n))
    }

    fn count(&mut self, error: &TickError, names: &impl Sources, source: u32, line: u64, at: u64) {
        self.by_code.add(error.code());
        if self.examples.len() < REJECTED_EXAMPLES {
            self.examples.push(format!("{}:{line}: {error}", names.name(source)));
            self.example_at.push(at);
        }
    }

    /// The rejections of several runners over parts of one stream, as
    /// one runner over all of it would count them: the counts summed, the
    /// first examples by their place in the stream.
    pub fn merged<'a>(parts: impl IntoIterator<Item = &'a Rejections>) -> Rejections {
        let mut by_code = RejectCounts::default();
        let mut examples: Vec<(u64, &str)> = Vec::new();
        for part in parts {
            for (total, n) in by_code.0.iter_mut().zip(part.by_code.0) {
                *total += n;
            }
            examples.extend(
                part.example_at
                    .iter()
                    .copied()
                    .zip(part.examples.iter().map(String::as_str)),
            );
        }
        examples.sort_by_key(|(at, _)| *at);
        examples.truncate(REJECTED_EXAMPLES);
        Rejections {
            by_code,
            examples: examples.iter().map(|(_, e)| (*e).to_owned()).collect(),
            example_at: examples.iter().map(|(at, _)| *at).collect(),
        }
    }
}

/// Numbers, counts and delivers the alerts in `alerts`, emptying it.
#[inline]
fn flush<E>(
    alerts: &mut Vec<Alert>,
    emitted: &mut u64,
    stats: &mut RuleStats,
    received_ns: i64,
    deliver: &mut impl FnMut(u64, &Alert, i64) -> Result<(), E>,
) -> Result<(), E> {
    if alerts.is_empty() {
        return Ok(());
    }
    let mut result = Ok(());
    for alert in alerts.drain(..) {
        *emitted += 1;
        stats.record(&alert);
        if result.is_ok() {
            result = deliver(*emitted, &alert, received_ns);
        }
    }
    result
}

/// An engine fed by replay, and what it did.
pub struct Runner {
    engine: Engine,
    pipeline: Pipeline,
    /// Engine ids by file, then by the file's instrument index.
    ids: Vec<Vec<Option<InstrumentId>>>,
    /// Whether each file numbers its own ticks.
    has_seq: Vec<bool>,
    /// For files without sequence numbers: the last number given, by
    /// engine id, in merged order (so one instrument may span files).
    next_seq: Vec<u64>,
    /// The instruments of the ticks pushed into the pipeline, in order.
    pushed: Vec<InstrumentId>,
    /// Alerts of the tick or timer being run.
    alerts: Vec<Alert>,
    pub rejections: Rejections,
    pub stats: RuleStats,
    /// Alerts emitted so far; the last one's sequence number.
    pub emitted: u64,
}

impl Runner {
    /// A fresh engine with `ruleset`, for the files of `merge`.
    pub fn new(ruleset: RuleSet, merge: &Merge) -> Self {
        Runner::for_files(ruleset, (0..merge.len() as u32).map(|i| merge.has_seq(i)).collect())
    }

    /// A fresh engine with `ruleset`, for files of which `has_seq` says
    /// whether each numbers its own ticks.
    pub fn for_files(ruleset: RuleSet, has_seq: Vec<bool>) -> Self {
        Runner {
            engine: Engine::new(EngineConfig::default(), ruleset),
            pipeline: Pipeline::new(),
            ids: vec![Vec::new(); has_seq.len()],
            has_seq,
            next_seq: Vec::new(),
            pushed: Vec::new(),
            alerts: Vec::new(),
            rejections: Rejections::default(),
            stats: RuleStats::default(),
            emitted: 0,
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Applies one row of file `source`; each alert it raises goes to
    /// `deliver` with its sequence number and receive time.
    ///
    /// # Errors
    /// Whatever `deliver` returns.
    #[inline]
    pub fn tick<E>(
        &mut self,
        names: &impl Sources,
        source: u32,
        row: &TickRow,
        deliver: &mut impl FnMut(u64, &Alert, i64) -> Result<(), E>,
    ) -> Result<(), E> {
        self.ticks(names, source, std::slice::from_ref(row), deliver)
    }

    /// Applies rows of file `source` in order, as a batch through the
    /// pipeline (which prefetches the engine's state for the ticks ahead),
    /// exactly as [`Runner::tick`] one by one would.
    ///
    /// # Errors
    /// Whatever `deliver` returns; the rows after the one whose alert it
    /// refused are not applied.
    pub fn ticks<E>(
        &mut self,
        names: &impl Sources,
        source: u32,
        rows: &[TickRow],
        deliver: &mut impl FnMut(u64, &Alert, i64) -> Result<(), E>,
    ) -> Result<(), E> {
        self.ticks_at(names, source, rows, &[], &mut |_, seq, alert, rx| {
            deliver(seq, alert, rx)
        })
    }

    /// As [`Runner::ticks`], with each row's place in the merged stream
    /// (`at`, parallel to `rows`, or empty when unknown), kept with the
    /// rejected ticks' examples; `deliver` is also given the index in
    /// `rows` of the tick that raised the alert.
    ///
    /// # Errors
    /// As [`Runner::ticks`].
    pub fn ticks_at<E>(
        &mut self,
        names: &impl Sources,
        source: u32,
        rows: &[TickRow],
        at: &[u64],
        deliver: &mut impl FnMut(usize, u64, &Alert, i64) -> Result<(), E>,
    ) -> Result<(), E> {
        let place = |k: usize| at.get(k).copied().unwrap_or(0);
        let has_seq = self.has_seq[source as usize];
        let mut rest = rows;
        while !rest.is_empty() {
            let offset = rows.len() - rest.len();
            // Number the rows up to the first whose instrument is refused.
            self.pipeline.clear();
            self.pushed.clear();
            let mut unresolved = None;
            for row in rest {
                let t = row.event_time_ns;
                let instrument = match self.id(names, source, row.instrument, t) {
                    Ok(id) => id,
                    Err(e) => {
                        unresolved = Some(e);
                        break;
                    }
                };
                let seq = if has_seq {
                    row.seq
                } else {
                    let next = &mut self.next_seq[instrument.0 as usize];
                    *next += 1;
                    *next
                };
                self.pipeline.push_resolved(instrument, t, seq, Ok(row.values));
                self.pushed.push(instrument);
            }
            let Runner {
                engine,
                pipeline,
                pushed,
                next_seq,
                alerts,
                rejections,
                stats,
                emitted,
                ..
            } = self;
            let mut result = Ok(());
            // A refused tick stops the batch: the numbers given to the
            // ticks after it are given again.
            let done = pipeline.apply_in_event_time(engine, alerts, |i, applied, alerts| {
                let refused = applied.is_err();
                if let Err(e) = applied {
                    if !has_seq {
                        next_seq[pushed[i].0 as usize] -= 1;
                    }
                    rejections.count(e, names, source, rest[i].line, place(offset + i));
                }
                result = flush(alerts, emitted, stats, rest[i].event_time_ns, &mut |seq, alert, rx| {
                    deliver(offset + i, seq, alert, rx)
                });
                !refused && result.is_ok()
            });
            if !has_seq {
                for id in pushed[done..].iter().rev() {
                    next_seq[id.0 as usize] -= 1;
                }
            }
            result?;
            if done < pushed.len() {
                rest = &rest[done..];
                continue;
            }
            if let Some(e) = unresolved {
                self.rejections
                    .count(&e, names, source, rest[done].line, place(offset + done));
                rest = &rest[done + 1..];
            } else {
                rest = &[];
            }
        }
        Ok(())
    }

    /// Runs the timers due at `now_ns`.
    ///
    /// # Errors
    /// Whatever `deliver` returns.
    pub fn timers<E>(
        &mut self,
        now_ns: i64,
        deliver: &mut impl FnMut(u64, &Alert, i64) -> Result<(), E>,
    ) -> Result<(), E> {
        self.engine.check_timers(now_ns, &mut self.alerts);
        self.flush(now_ns, deliver)
    }

    /// As [`Runner::timers`], giving `deliver` also what raised each alert
    /// ([`Engine::check_timers_marked`]).
    ///
    /// # Errors
    /// Whatever `deliver` returns.
    pub fn timers_marked<E>(
        &mut self,
        now_ns: i64,
        marks: &mut Vec<(usize, TimerMark)>,
        deliver: &mut impl FnMut(Option<&TimerMark>, u64, &Alert, i64) -> Result<(), E>,
    ) -> Result<(), E> {
        marks.clear();
        self.engine
            .check_timers_marked(now_ns, &mut self.alerts, |alerts, mark| {
                marks.push((alerts.len(), mark))
            });
        let mut k = 0;
        let mut result = Ok(());
        let Runner {
            alerts, emitted, stats, ..
        } = self;
        for (i, alert) in alerts.drain(..).enumerate() {
            while k + 1 < marks.len() && marks[k + 1].0 <= i {
                k += 1;
            }
            *emitted += 1;
            stats.record(&alert);
            if result.is_ok() {
                let mark = marks.get(k).filter(|(at, _)| *at <= i).map(|(_, m)| m);
                result = deliver(mark, *emitted, &alert, now_ns);
            }
        }
        result
    }

    #[inline]
    fn flush<E>(
        &mut self,
        received_ns: i64,
        deliver: &mut impl FnMut(u64, &Alert, i64) -> Result<(), E>,
    ) -> Result<(), E> {
        flush(
            &mut self.alerts,
            &mut self.emitted,
            &mut self.stats,
            received_ns,
            deliver,
        )
    }

    /// The engine id of instrument `index` of file `source`.
    #[inline]
    fn id(&mut self, names: &impl Sources, source: u32, index: u32, now_ns: i64) -> Result<InstrumentId, TickError> {
        let ids = &mut self.ids[source as usize];
        if let Some(Some(id)) = ids.get(index as usize) {
            return Ok(*id);
        }
        let id = self
            .pipeline
            .resolve(&self.engine, names.symbol(source, index), now_ns)?;
        if ids.len() <= index as usize {
            ids.resize(index as usize + 1, None);
        }
        ids[index as usize] = Some(id);
        if self.next_seq.len() <= id.0 as usize {
            self.next_seq.resize(id.0 as usize + 1, 0);
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, Cursor};

    use super::*;
    use crate::replay::merge::BadRows;
    use crate::rules::compile_for_test as compile_texts;
    use crate::tick_file::TickReader;

    fn setup(text: &str) -> (Merge, Runner) {
        let boxed: Box<dyn BufRead + Send> = Box::new(Cursor::new(text.as_bytes().to_vec()));
        let merge = Merge::from_readers(vec![("f".into(), TickReader::new(boxed).unwrap())], BadRows::Stop);
        let rules = "[[rule]]\nid = \"dd\"\nkind = \"drawdown\"\nwindow = \"3s\"\nthreshold = \"5%\"\n";
        let runner = Runner::new(compile_texts(&[("t.toml".into(), rules.into())]).unwrap(), &merge);
        (merge, runner)
    }

    #[test]
    fn ticks_are_tick_one_by_one_with_refusals_renumbered() {
        let text = "instrument,ts_ms,price\nA,1000,100\nB,1000,50\nA,2000,90\nA,1500,91\nA,2000,-1\n\
                    A,2500,80\nbad symbol,2500,1\nB,3000,40\nA,3000,70\nB,4000,30\n";
        let (mut merge, mut one) = setup(text);
        let mut rows = Vec::new();
        while let Some((_, row)) = merge.next_row().unwrap() {
            rows.push(row);
        }
        let mut alerts_one = Vec::new();
        for row in &rows {
            one.tick(&merge, 0, row, &mut |seq, alert: &Alert, rx| {
                alerts_one.push((seq, alert.clone(), rx));
                Ok::<_, ()>(())
            })
            .unwrap();
        }
        let (_, mut batched) = setup(text);
        let mut alerts_batched = Vec::new();
        batched
            .ticks(&merge, 0, &rows, &mut |seq, alert: &Alert, rx| {
                alerts_batched.push((seq, alert.clone(), rx));
                Ok::<_, ()>(())
            })
            .unwrap();
        assert!(!alerts_one.is_empty());
        assert_eq!(alerts_batched, alerts_one);
        assert_eq!(batched.rejections, one.rejections);
        assert_eq!(one.rejections.total(), 3);
        assert_eq!(batched.next_seq, one.next_seq);
        for symbol in ["A", "B"] {
            let id = one.engine().instruments().get(symbol).unwrap();
            assert_eq!(batched.engine().last_seq(id), one.engine().last_seq(id), "{symbol}");
        }
    }
}
