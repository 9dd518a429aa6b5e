//! The batch pipeline every source of ticks goes through: gRPC ingest
//! streams, the Kafka source, replays of tick files and rule tests.
//!
//! A source reads a batch in its own format and hands each tick over as it
//! reads it ([`Pipeline::push`]): a symbol, an event time, a sequence
//! number and the values, or why they could not be read. The pipeline then
//! runs the batch in three steps, on the caller's thread:
//!
//! 1. **validate** (in `push`, once per tick): the values are checked as a
//!    whole ([`CheckedValues`]) before the symbol is looked at, so a bad
//!    tick adds no instrument;
//! 2. **resolve**: each good tick's symbol is found in the source's cache
//!    ([`SymbolCache`], its slot prefetched by `push`), or interned by the
//!    engine on first sight;
//! 3. **apply**: every resolved tick goes to the engine in one call
//!    ([`Engine::apply_batch`], which prefetches instrument state ahead),
//!    alerts into the caller's sink.
//!
//! What happened is kept for the source to acknowledge in its own format:
//! the rejections in batch order ([`Pipeline::rejections`]), the count by
//! code, and each instrument the batch touched with its last applied
//! sequence number ([`Pipeline::touched`]).
//!
//! Every buffer lives as long as the pipeline and is reused, so once they
//! have grown a batch allocates nothing: not per tick, not per rejection.
//! Only alerts, and a symbol the source has not sent before, allocate.

use rustc_hash::FxHashMap;

use crate::engine::Engine;
use crate::ingest::{CheckedValues, RejectCounts, TickError, ValidTick};
use crate::model::{AlertSink, InstrumentId, TickValues};

use super::symbols::{SymbolCache, SymbolHash};

/// Symbols one source remembers; past this, lookups go to the engine's
/// symbol table (still correct, a little slower).
const SYMBOL_CACHE_LIMIT: usize = 65_536;

/// One source's batch pipeline: its symbol cache and the buffers of the
/// batch in hand.
pub struct Pipeline {
    /// Symbol -> id for symbols this source has sent: saves a lookup in the
    /// engine's symbol table per tick.
    symbols: SymbolCache,
    /// The batch's ticks as pushed, in order.
    read: Vec<ReadTick>,
    /// The symbols of the good ticks of `read`, one after the other.
    text: String,
    /// Instrument -> index in `touched` for the current batch.
    touched_at: FxHashMap<InstrumentId, usize>,
    touched: Vec<Touched>,
    /// The batch's good ticks, handed to the engine in one call.
    ticks: Vec<ValidTick>,
    /// For each of `ticks`: its index in the batch and its `touched` slot.
    origin: Vec<(u32, usize)>,
    /// The batch's rejected ticks: index in the batch, and why.
    rejected: Vec<(u32, TickError)>,
    counts: RejectCounts,
    applied: u32,
    /// How far (ms) a tick's event time may be ahead of its receive time
    /// in [`Pipeline::apply`]; `None`: unbounded (replays and rule tests,
    /// which run in event time).
    max_future_skew_ms: Option<u64>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("ticks", &self.read.len())
            .field("symbols_cached", &self.symbols.len())
            .finish_non_exhaustive()
    }
}

/// A symbol's place in `Pipeline::text`.
#[derive(Debug, Clone, Copy)]
struct Span {
    at: usize,
    len: usize,
}

impl Span {
    fn range(self) -> std::ops::Range<usize> {
        self.at..self.at + self.len
    }
}

/// A tick of the batch as pushed.
struct ReadTick {
    seq: u64,
    /// The checked values and the instrument, or why the tick is rejected
    /// before its instrument is looked at.
    checked: Result<(CheckedValues, Instrument), TickError>,
}

/// A good tick's instrument: a symbol to resolve, or an id the source
/// resolved itself ([`Pipeline::resolve`]).
#[derive(Debug, Clone, Copy)]
enum Instrument {
    Symbol { span: Span, hash: SymbolHash },
    Id(InstrumentId),
}

/// An instrument the current batch touched.
struct Touched {
    id: InstrumentId,
    /// Its symbol in `Pipeline::text`, if the batch named it by symbol.
    symbol: Option<Span>,
    /// The last sequence number this batch applied, if any.
    applied: Option<u64>,
}

/// An instrument a batch touched, as [`Pipeline::touched`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TouchedInstrument<'a> {
    pub id: InstrumentId,
    /// The symbol as the batch sent it; `None` for ticks pushed by id.
    pub symbol: Option<&'a str>,
    /// The last sequence number this batch applied, if it applied any.
    pub applied: Option<u64>,
}

impl Default for Pipeline {
    fn default() -> Self {
        Self::new()
    }
}

impl Pipeline {
    pub fn new() -> Self {
        Pipeline {
            symbols: SymbolCache::new(SYMBOL_CACHE_LIMIT),
            read: Vec::new(),
            text: String::new(),
            touched_at: FxHashMap::default(),
            touched: Vec::new(),
            ticks: Vec::new(),
            origin: Vec::new(),
            rejected: Vec::new(),
            counts: RejectCounts::default(),
            applied: 0,
            max_future_skew_ms: None,
        }
    }

    /// A pipeline that refuses, in [`Pipeline::apply`], a tick whose event
    /// time is more than `max_skew_ms` ahead of the time it is received
    /// (the service clock's), as `bad_time` ([`TickError::Future`]): one
    /// tick from a broken clock, or in the wrong unit, must not make every
    /// later tick of its instrument `late`. Replays and rule tests run in
    /// event time ([`Pipeline::apply_in_event_time`]) and are not bound.
    pub fn bounding_future(max_skew_ms: u64) -> Self {
        Pipeline {
            max_future_skew_ms: Some(max_skew_ms),
            ..Pipeline::new()
        }
    }

    /// Starts a new batch, forgetting the last one.
    pub fn clear(&mut self) {
        self.read.clear();
        self.text.clear();
        self.touched_at.clear();
        self.touched.clear();
        self.ticks.clear();
        self.origin.clear();
        self.rejected.clear();
        self.counts = RejectCounts::default();
        self.applied = 0;
    }

    /// Ticks pushed since [`Pipeline::clear`].
    pub fn len(&self) -> usize {
        self.read.len()
    }

    pub fn is_empty(&self) -> bool {
        self.read.is_empty()
    }

    /// Adds the next tick of the batch, named by symbol: its values are
    /// checked now (nothing is looked up or interned until
    /// [`Pipeline::apply`], so a batch a source later finds malformed can
    /// be dropped with [`Pipeline::clear`] having changed nothing).
    #[inline]
    pub fn push(&mut self, symbol: &str, event_time_ns: i64, seq: u64, values: Result<TickValues, TickError>) {
        let checked = values
            .and_then(|values| CheckedValues::new(event_time_ns, values))
            .map(|checked| {
                let hash = SymbolHash::of(symbol);
                self.symbols.prefetch(hash);
                let span = Span {
                    at: self.text.len(),
                    len: symbol.len(),
                };
                self.text.push_str(symbol);
                (checked, Instrument::Symbol { span, hash })
            });
        self.read.push(ReadTick { seq, checked });
    }

    /// The symbol of the `index`th tick pushed to the batch, if it was
    /// pushed by symbol and its values were good.
    #[inline]
    pub fn symbol_at(&self, index: usize) -> Option<&str> {
        match self.read.get(index)?.checked {
            Ok((_, Instrument::Symbol { span, .. })) => self.text.get(span.range()),
            _ => None,
        }
    }

    /// Adds the next tick of the batch for an instrument the source
    /// resolved itself with [`Pipeline::resolve`] (a replay resolves each
    /// of a file's symbols once).
    #[inline]
    pub fn push_resolved(
        &mut self,
        id: InstrumentId,
        event_time_ns: i64,
        seq: u64,
        values: Result<TickValues, TickError>,
    ) {
        let checked = values
            .and_then(|values| CheckedValues::new(event_time_ns, values))
            .map(|checked| (checked, Instrument::Id(id)));
        self.read.push(ReadTick { seq, checked });
    }

    /// The id of `symbol`, interning it on first sight, through this
    /// pipeline's cache.
    ///
    /// # Errors
    /// A malformed symbol, or the instrument cap reached.
    pub fn resolve(&mut self, engine: &Engine, symbol: &str, received_ns: i64) -> Result<InstrumentId, TickError> {
        let hash = SymbolHash::of(symbol);
        self.resolve_hashed(engine, hash, symbol, received_ns)
    }

    #[inline]
    fn resolve_hashed(
        &mut self,
        engine: &Engine,
        hash: SymbolHash,
        symbol: &str,
        received_ns: i64,
    ) -> Result<InstrumentId, TickError> {
        if let Some(id) = self.symbols.get(hash, symbol) {
            return Ok(id);
        }
        let id = engine.resolve(symbol, received_ns)?;
        self.symbols.insert(hash, symbol, id);
        Ok(id)
    }

    /// Resolves and applies the batch, every tick received at
    /// `received_ns`; alerts go to `out` as the engine raises them.
    /// Returns how many ticks were applied.
    pub fn apply(&mut self, engine: &Engine, received_ns: i64, out: &mut impl AlertSink) -> u32 {
        self.resolve_all(engine, received_ns);
        let read_rejections = self.rejected.len();
        {
            let Pipeline {
                ticks,
                origin,
                touched,
                rejected,
                counts,
                applied,
                ..
            } = self;
            engine.apply_batch(ticks, received_ns, out, |i, result| {
                let (index, slot) = origin[i];
                match result {
                    Ok(()) => {
                        *applied += 1;
                        touched[slot].applied = Some(ticks[i].seq);
                    }
                    Err(e) => {
                        counts.add(e.code());
                        rejected.push((index, e));
                    }
                }
            });
        }
        self.sort_rejections(read_rejections);
        self.applied
    }

    /// As [`Pipeline::apply`], but each tick is received at its own event
    /// time (a replay, a rule test), and `after` is given each pushed
    /// tick's index and outcome, with `out` holding that tick's alerts, in
    /// batch order; it returns whether to go on. A tick refused before the
    /// engine (bad values, a bad symbol) is reported in its place too.
    /// Returns how many pushed ticks were handled (applied or refused)
    /// before stopping: the rest were not looked at.
    pub fn apply_in_event_time<S: AlertSink>(
        &mut self,
        engine: &Engine,
        out: &mut S,
        mut after: impl FnMut(usize, Result<(), &TickError>, &mut S) -> bool,
    ) -> usize {
        self.resolve_each(engine);
        // Refusals so far are all before the engine, in batch order.
        let before_engine = self.rejected.len();
        let pushed = self.read.len();
        let Pipeline {
            ticks,
            origin,
            touched,
            rejected,
            counts,
            applied,
            ..
        } = self;
        let mut early = 0usize;
        let first = origin.first().map_or(pushed, |&(index, _)| index as usize);
        let mut stopped = report_early(rejected, &mut early, before_engine, first, out, &mut after);
        if stopped.is_none() {
            engine.apply_batch_in_event_time(ticks, out, |i, result, out| {
                let (index, slot) = origin[i];
                let go_on = match result {
                    Ok(()) => {
                        *applied += 1;
                        touched[slot].applied = Some(ticks[i].seq);
                        after(index as usize, Ok(()), out)
                    }
                    Err(e) => {
                        counts.add(e.code());
                        let go_on = after(index as usize, Err(&e), out);
                        rejected.push((index, e));
                        go_on
                    }
                };
                if !go_on {
                    stopped = Some(index as usize + 1);
                    return false;
                }
                let next = origin.get(i + 1).map_or(pushed, |&(index, _)| index as usize);
                stopped = report_early(rejected, &mut early, before_engine, next, out, &mut after);
                stopped.is_none()
            });
        }
        self.sort_rejections(before_engine);
        stopped.unwrap_or(pushed)
    }

    /// Resolves every good tick of the batch into `ticks`, all received at
    /// `received_ns` (an instrument seen first is created then); a tick
    /// too far ahead of `received_ns` is refused first, so it adds no
    /// instrument.
    fn resolve_all(&mut self, engine: &Engine, received_ns: i64) {
        let bound = self.max_future_skew_ms.map(|ms| {
            let skew_ns = i64::try_from(ms).unwrap_or(i64::MAX).saturating_mul(1_000_000);
            (ms, received_ns.saturating_add(skew_ns))
        });
        for index in 0..self.read.len() {
            if let (Some((max_skew_ms, latest_ns)), Ok((checked, _))) = (bound, &self.read[index].checked) {
                let event_time_ns = checked.event_time_ns();
                if event_time_ns > latest_ns {
                    let why = TickError::Future {
                        event_time_ns,
                        now_ns: received_ns,
                        max_skew_ms,
                    };
                    self.counts.add(why.code());
                    self.rejected.push((u32::try_from(index).unwrap_or(u32::MAX), why));
                    continue;
                }
            }
            self.resolve_one(engine, index, received_ns);
        }
    }

    /// As [`Pipeline::resolve_all`], each tick received at its event time.
    fn resolve_each(&mut self, engine: &Engine) {
        for index in 0..self.read.len() {
            let received_ns = match &self.read[index].checked {
                Ok((checked, _)) => checked.event_time_ns(),
                Err(_) => 0,
            };
            self.resolve_one(engine, index, received_ns);
        }
    }

    /// Resolves the instrument of the `index`th tick pushed, adding the
    /// tick to `ticks` or its refusal to `rejected`.
    #[inline]
    fn resolve_one(&mut self, engine: &Engine, index: usize, received_ns: i64) {
        let position = u32::try_from(index).unwrap_or(u32::MAX);
        let read = &self.read[index];
        let seq = read.seq;
        let (checked, instrument) = match &read.checked {
            Ok(checked) => *checked,
            Err(why) => {
                self.counts.add(why.code());
                self.rejected.push((position, why.clone()));
                return;
            }
        };
        let (id, symbol) = match instrument {
            Instrument::Id(id) => (id, None),
            Instrument::Symbol { span, hash } => {
                // Split borrows: the text is read while the cache may grow.
                let text = std::mem::take(&mut self.text);
                let resolved = self.resolve_hashed(engine, hash, &text[span.range()], received_ns);
                self.text = text;
                match resolved {
                    Ok(id) => (id, Some(span)),
                    Err(why) => {
                        self.counts.add(why.code());
                        self.rejected.push((position, why));
                        return;
                    }
                }
            }
        };
        let slot = match self.touched_at.get(&id) {
            Some(&slot) => slot,
            None => {
                let slot = self.touched.len();
                self.touched_at.insert(id, slot);
                self.touched.push(Touched {
                    id,
                    symbol,
                    applied: None,
                });
                slot
            }
        };
        self.ticks.push(checked.tick(id, seq));
        self.origin.push((position, slot));
    }

    /// Puts the rejections in batch order when refusals before the engine
    /// (the first `before_engine`) and by it are both present.
    fn sort_rejections(&mut self, before_engine: usize) {
        if before_engine > 0 && self.rejected.len() > before_engine {
            // Each index once: an unstable sort gives the one order.
            self.rejected.sort_unstable_by_key(|&(index, _)| index);
        }
    }

    /// Ticks the last batch applied.
    pub fn applied(&self) -> u32 {
        self.applied
    }

    /// The last batch's refused ticks, in batch order: the index of each
    /// in the batch, and why.
    pub fn rejections(&self) -> &[(u32, TickError)] {
        &self.rejected
    }

    /// The last batch's refusals by code.
    pub fn reject_counts(&self) -> &RejectCounts {
        &self.counts
    }

    /// How many instruments the last batch touched.
    pub fn touched_count(&self) -> usize {
        self.touched.len()
    }

    /// Each instrument the last batch touched, in the order it first did.
    pub fn touched(&self) -> impl Iterator<Item = TouchedInstrument<'_>> {
        self.touched.iter().map(|t| TouchedInstrument {
            id: t.id,
            symbol: t.symbol.map(|span| &self.text[span.range()]),
            applied: t.applied,
        })
    }
}

/// Reports to `after` the refusals before the engine, `rejected[*next..end]`,
/// that lie ahead of the pushed index `upto`; when `after` says stop, the
/// count of pushed ticks handled.
fn report_early<S>(
    rejected: &[(u32, TickError)],
    next: &mut usize,
    end: usize,
    upto: usize,
    out: &mut S,
    after: &mut impl FnMut(usize, Result<(), &TickError>, &mut S) -> bool,
) -> Option<usize> {
    while *next < end && (rejected[*next].0 as usize) < upto {
        let (index, why) = &rejected[*next];
        *next += 1;
        if !after(*index as usize, Err(why), out) {
            return Some(*index as usize + 1);
        }
    }
    None
}
