//! One engine driven by a merged tick stream.
//!
//! Each file's instruments are resolved to engine ids once, on first
//! sight, and cached by the file's own instrument index, so the per-tick
//! cost is an index and [`Engine::apply`]. Ticks are applied one at a time
//! because each carries its own receive time (its event time), which the
//! engine keeps per instrument for silent-feed timers;
//! [`Engine::apply_batch`] takes one receive time for a whole batch.
//!
//! Ticks the engine refuses (duplicates, late, bad values, bad symbols)
//! are counted by [`TickError::code`] with the first few quoted: a replay
//! never drops a tick silently.

use crate::cli::tick_file::TickRow;
use crate::ingest::TickError;
use crate::model::{Alert, InstrumentId, Tick};
use crate::rules::RuleSet;
use crate::{Engine, EngineConfig};

use super::merge::Merge;
use super::stats::RuleStats;

/// How many rejected ticks are quoted in the summary.
pub const REJECTED_EXAMPLES: usize = 5;

/// Ticks the engine refused, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rejections {
    /// Counts in the order of [`TickError::CODES`].
    pub by_code: [u64; TickError::CODES.len()],
    /// `file:line: reason` of the first rejected ticks.
    pub examples: Vec<String>,
}

impl Rejections {
    pub fn total(&self) -> u64 {
        self.by_code.iter().sum()
    }

    /// `(code, count)` for every code with a count, in a fixed order.
    pub fn counts(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        TickError::CODES
            .iter()
            .zip(self.by_code)
            .filter(|(_, n)| *n > 0)
            .map(|(code, n)| (*code, n))
    }

    fn count(&mut self, error: &TickError, merge: &Merge, source: u32, line: u64) {
        let code = error.code();
        if let Some(i) = TickError::CODES.iter().position(|c| *c == code) {
            self.by_code[i] += 1;
        }
        if self.examples.len() < REJECTED_EXAMPLES {
            self.examples.push(format!("{}:{line}: {error}", merge.name(source)));
        }
    }
}

/// An engine fed by replay, and what it did.
pub struct Runner {
    engine: Engine,
    /// Engine ids by file, then by the file's instrument index.
    ids: Vec<Vec<Option<InstrumentId>>>,
    /// Whether each file numbers its own ticks.
    has_seq: Vec<bool>,
    /// For files without sequence numbers: the last number given, by
    /// engine id, in merged order (so one instrument may span files).
    next_seq: Vec<u64>,
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
        Runner {
            engine: Engine::new(EngineConfig::default(), ruleset),
            ids: vec![Vec::new(); merge.len()],
            has_seq: (0..merge.len() as u32).map(|i| merge.has_seq(i)).collect(),
            next_seq: Vec::new(),
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
        merge: &Merge,
        source: u32,
        row: &TickRow,
        deliver: &mut impl FnMut(u64, &Alert, i64) -> Result<(), E>,
    ) -> Result<(), E> {
        let t = row.event_time_ns;
        let instrument = match self.id(merge, source, row.instrument, t) {
            Ok(id) => id,
            Err(e) => {
                self.rejections.count(&e, merge, source, row.line);
                return Ok(());
            }
        };
        let has_seq = self.has_seq[source as usize];
        let seq = if has_seq {
            row.seq
        } else {
            let next = &mut self.next_seq[instrument.0 as usize];
            *next += 1;
            *next
        };
        let tick = Tick {
            instrument,
            event_time_ns: t,
            seq,
            values: row.values,
        };
        if let Err(e) = self.engine.apply(&tick, t, &mut self.alerts) {
            if !has_seq {
                // The number was not used.
                self.next_seq[instrument.0 as usize] -= 1;
            }
            self.rejections.count(&e, merge, source, row.line);
        }
        self.flush(t, deliver)
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

    #[inline]
    fn flush<E>(
        &mut self,
        received_ns: i64,
        deliver: &mut impl FnMut(u64, &Alert, i64) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.alerts.is_empty() {
            return Ok(());
        }
        let mut result = Ok(());
        for alert in self.alerts.drain(..) {
            self.emitted += 1;
            self.stats.record(&alert);
            if result.is_ok() {
                result = deliver(self.emitted, &alert, received_ns);
            }
        }
        result
    }

    /// The engine id of instrument `index` of file `source`.
    #[inline]
    fn id(&mut self, merge: &Merge, source: u32, index: u32, now_ns: i64) -> Result<InstrumentId, TickError> {
        let ids = &mut self.ids[source as usize];
        if let Some(Some(id)) = ids.get(index as usize) {
            return Ok(*id);
        }
        let id = self.engine.resolve(merge.symbol(source, index), now_ns)?;
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
