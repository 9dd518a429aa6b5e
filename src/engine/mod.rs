//! The engine: ticks in, alerts out.
//!
//! The engine owns [`partition`]s: today one per instrument, holding the
//! instrument's state and the rules bound to it. [`Engine::apply`] runs one
//! tick through the instrument's partition, on the caller's thread: no
//! queue, no allocation unless an alert is raised. Symbols are interned in
//! a concurrent map; partitions sit in a slab by id, each behind its own
//! lock, so ticks for different instruments from many threads never meet
//! on a lock, and no lock is held beyond one tick. [`Engine::apply_batch`]
//! prefetches the partitions of the ticks ahead, which matters when a
//! batch spans thousands of instruments.
//!
//! Rulesets are swapped atomically ([`Engine::install`]). Each partition
//! is re-bound to a new ruleset under its own lock, before its next tick:
//! every tick is evaluated by exactly one ruleset, and a rule whose
//! definition did not change keeps its state and windows.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use crate::ingest::{CheckedValues, TickError, ValidTick};
use crate::model::{AlertSink, InstrumentId, Tick, TickValues};
use crate::rules::RuleSet;
pub use crate::state::SequenceStats;
use crate::state::{InstrumentState, Instruments, StateStore};

pub mod group;
pub mod partition;
mod relay;
mod snapshot;
pub mod status;

pub use partition::{BoundRule, BoundRules, Partition, PartitionReset};
pub use status::InstrumentStatus;

/// An evaluation run by [`Engine::check_timers_marked`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimerSource {
    Instrument(InstrumentId),
    Group(group::GroupKey),
}

/// What raises the alerts that follow, in [`Engine::check_timers_marked`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimerMark {
    /// The timers of an instrument or a group.
    Eval(TimerSource),
    /// The patterns given the `n`-th alert (from 0) that the timers of
    /// the source relayed.
    Relay(TimerSource, u32),
}

type StateCell = crate::state::StateCell<Partition>;
pub use snapshot::{EngineSnapshot, InstrumentSnapshot, RestoreError, RestoreReport, RuleStamp, SkippedInstrument};

/// The highest `max_instruments` an engine takes: its state store keeps
/// one pointer per possible instrument (128 MiB of address space at this
/// limit, mapped only as instruments appear).
pub const MAX_INSTRUMENTS_LIMIT: u32 = 1 << 24;

/// Limits and options of an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// Most distinct instruments; the tick that would add one more is
    /// rejected. At most [`MAX_INSTRUMENTS_LIMIT`]; a larger value counts
    /// as that limit.
    pub max_instruments: u32,
    /// How far behind an instrument's newest tick (event time, ns) a tick
    /// may arrive and still be applied in its place. Above 0, ticks are
    /// held up to this long to be applied in event-time order (see
    /// [`crate::state::reorder`]); 0 applies each tick at once and rejects
    /// any tick older than the newest.
    pub allowed_lateness_ns: i64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_instruments: 100_000,
            allowed_lateness_ns: 0,
        }
    }
}

/// Rolling state for every instrument and the ruleset that evaluates it.
pub struct Engine {
    instruments: Instruments,
    states: StateStore<Partition>,
    /// The partitions of rules evaluated over groups of instruments.
    groups: group::Groups,
    ruleset: ArcSwap<RuleSet>,
    /// Serialises installs so versions are assigned in swap order.
    install_lock: Mutex<()>,
    last_version: AtomicU64,
    /// Version of the ruleset in `ruleset`, published after it: a tick
    /// whose instrument is bound to this version need not load the ruleset.
    current_version: AtomicU64,
    /// No instrument has a timer due before this (it may be earlier than
    /// the true earliest deadline, never later): `check_timers` skips its
    /// scan until then. See `check_timers` for why this holds.
    earliest_deadline_ns: AtomicI64,
    allowed_lateness_ns: i64,
    /// Whether a rule in force reads alerts: then alerts raised for an
    /// instrument outside its own evaluation are relayed to it
    /// ([`relay`]).
    relays: AtomicBool,
}

/// Whether alerts must be relayed between partitions for `ruleset`.
fn reads_alerts(ruleset: &RuleSet) -> bool {
    ruleset.rules.iter().any(|r| r.logic.watches_alerts())
}

impl Engine {
    /// An engine running `ruleset` as version 1.
    pub fn new(config: EngineConfig, mut ruleset: RuleSet) -> Self {
        ruleset.version = 1;
        let relays = AtomicBool::new(reads_alerts(&ruleset));
        let max_instruments = config.max_instruments.min(MAX_INSTRUMENTS_LIMIT);
        Engine {
            instruments: Instruments::new(max_instruments),
            states: StateStore::new(max_instruments),
            groups: group::Groups::default(),
            ruleset: ArcSwap::from_pointee(ruleset),
            install_lock: Mutex::new(()),
            last_version: AtomicU64::new(1),
            current_version: AtomicU64::new(1),
            earliest_deadline_ns: AtomicI64::new(i64::MAX),
            allowed_lateness_ns: config.allowed_lateness_ns.max(0),
            relays,
        }
    }

    pub fn instruments(&self) -> &Instruments {
        &self.instruments
    }

    /// The ruleset in force now.
    pub fn ruleset(&self) -> Arc<RuleSet> {
        self.ruleset.load_full()
    }

    /// The id for `symbol`, adding the instrument on first sight.
    ///
    /// # Errors
    /// A malformed symbol, or the instrument cap reached.
    pub fn resolve(&self, symbol: &str, received_ns: i64) -> Result<InstrumentId, TickError> {
        if let Some(id) = self.instruments.get(symbol) {
            return Ok(id);
        }
        let (id, symbol, _) = self.instruments.intern(symbol)?;
        self.states
            .get_or_insert(id, || Partition::new(id, symbol, received_ns));
        Ok(id)
    }

    /// Validates, resolves and applies one tick: the convenient entry for
    /// decoders that have a symbol rather than an id.
    ///
    /// # Errors
    /// As [`Engine::resolve`] and [`Engine::apply`]; nothing changes.
    pub fn ingest(
        &self,
        symbol: &str,
        event_time_ns: i64,
        seq: u64,
        values: TickValues,
        received_ns: i64,
        out: &mut impl AlertSink,
    ) -> Result<InstrumentId, TickError> {
        let checked = CheckedValues::new(event_time_ns, values)?;
        let instrument = self.resolve(symbol, received_ns)?;
        let tick = checked.tick(instrument, seq);
        self.apply_to(self.states.get(instrument), &tick, received_ns, out)?;
        Ok(instrument)
    }

    /// Applies one tick and evaluates the rules that watch its instrument,
    /// emitting alerts into `out` in rule order.
    ///
    /// # Errors
    /// Invalid values, a duplicate sequence number (at or below the last
    /// applied), or an event time before the instrument's newest. A
    /// rejected tick changes nothing.
    #[inline]
    pub fn apply(&self, tick: &Tick, received_ns: i64, out: &mut impl AlertSink) -> Result<(), TickError> {
        let tick = ValidTick::new(*tick)?;
        self.apply_to(self.states.get(tick.instrument), &tick, received_ns, out)
    }

    /// As [`Engine::apply`] for a tick already validated, given the tick's
    /// state if it has one (looked up ahead by a batch).
    #[inline(always)]
    fn apply_to(
        &self,
        cell: Option<&StateCell>,
        tick: &ValidTick,
        received_ns: i64,
        out: &mut impl AlertSink,
    ) -> Result<(), TickError> {
        let tick = tick.tick();
        let cell = match cell {
            Some(cell) => cell,
            None => self.create_state(tick.instrument, received_ns)?,
        };
        let mut relayed = Vec::new();
        let mut guard = cell.lock();
        let partition = &mut *guard;
        let state = &partition.instrument;
        if let Some(last) = state.last_seq {
            if tick.seq <= last {
                return Err(TickError::Duplicate { seq: tick.seq, last });
            }
        }
        let lateness = self.allowed_lateness_ns;
        let result = if lateness == 0 {
            if let Some(newest_ns) = state.last_event_ns {
                if tick.event_time_ns < newest_ns {
                    return Err(TickError::Late {
                        event_time_ns: tick.event_time_ns,
                        newest_ns,
                        allowed_ns: 0,
                    });
                }
            }
            self.apply_in_order(partition, tick, received_ns, out, &mut relayed);
            Ok(())
        } else {
            self.hold_and_release(partition, tick, received_ns, out, &mut relayed)
        };
        drop(guard);
        self.relay(&relayed, received_ns, out);
        result
    }

    /// Gives alerts raised outside their instruments' own evaluation to
    /// those instruments' patterns ([`relay`]), once: what the patterns
    /// raise goes to `out`, not round again.
    #[cold]
    fn relay_all(&self, relayed: &[crate::model::Alert], received_ns: i64, out: &mut impl AlertSink) {
        for alert in relayed {
            self.feed_alert(alert, received_ns, out);
        }
    }

    #[inline(always)]
    fn relay(&self, relayed: &[crate::model::Alert], received_ns: i64, out: &mut impl AlertSink) {
        if !relayed.is_empty() {
            self.relay_all(relayed, received_ns, out);
        }
    }

    /// The state of an instrument's first tick.
    #[cold]
    fn create_state(&self, id: InstrumentId, received_ns: i64) -> Result<&StateCell, TickError> {
        let unknown = TickError::Symbol(crate::state::SymbolError::Unknown(id.0));
        let symbol = self.instruments.symbol(id).ok_or(unknown.clone())?;
        self.states
            .get_or_insert(id, || Partition::new(id, symbol, received_ns))
            .ok_or(unknown)
    }

    /// With an allowed lateness: holds `tick` in its instrument's reorder
    /// buffer, then applies every held tick the watermark has passed.
    fn hold_and_release(
        &self,
        partition: &mut Partition,
        tick: &Tick,
        received_ns: i64,
        out: &mut impl AlertSink,
        relayed: &mut Vec<crate::model::Alert>,
    ) -> Result<(), TickError> {
        let lateness = self.allowed_lateness_ns;
        let state = &mut partition.instrument;
        let held = state.held.get_or_insert_with(Default::default);
        if held.holds_seq(tick.seq) {
            return Err(TickError::DuplicateHeld { seq: tick.seq });
        }
        let newest = match (held.newest_ns(), state.last_event_ns) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if let Some(newest_ns) = newest {
            // Behind the newest applied tick it cannot take its place any
            // more; that only happens beyond the allowed lateness.
            let behind_applied = state.last_event_ns.is_some_and(|applied| tick.event_time_ns < applied);
            if behind_applied || tick.event_time_ns < newest_ns.saturating_sub(lateness) {
                return Err(TickError::Late {
                    event_time_ns: tick.event_time_ns,
                    newest_ns,
                    allowed_ns: lateness,
                });
            }
            if tick.event_time_ns < newest_ns {
                state.sequence.reordered += 1;
            }
        }
        held.hold(*tick, received_ns);
        while let Some(next) = partition
            .instrument
            .held
            .as_mut()
            .and_then(|b| b.release_passed(lateness))
        {
            self.apply_in_order(partition, &next.tick, next.received_ns, out, relayed);
        }
        self.note_held_deadline(partition);
        Ok(())
    }

    /// Lowers the partition's deadline to when its longest-held tick is
    /// due.
    fn note_held_deadline(&self, partition: &mut Partition) {
        if let Some(due) = self.held_due(&partition.instrument) {
            partition.next_deadline_ns = partition.next_deadline_ns.min(due);
            self.note_deadline(due);
        }
    }

    /// When the instrument's longest-held tick is due, if it holds any.
    #[inline]
    fn held_due(&self, state: &InstrumentState) -> Option<i64> {
        state.held.as_ref().and_then(|b| b.deadline(self.allowed_lateness_ns))
    }

    /// Applies a tick known to be next in its instrument's order, and
    /// evaluates the rules that watch it (re-binding the partition first
    /// if a newer ruleset was installed).
    #[inline]
    fn apply_in_order(
        &self,
        partition: &mut Partition,
        tick: &Tick,
        received_ns: i64,
        out: &mut impl AlertSink,
        relayed: &mut Vec<crate::model::Alert>,
    ) {
        // Read under the partition's lock: see `install`.
        if self.current_version.load(Ordering::Acquire) > partition.ruleset_version {
            partition.rebind(
                &self.ruleset.load(),
                tick.event_time_ns,
                out,
                &self.instruments,
                &self.groups,
            );
        }
        let held_due = self.held_due(&partition.instrument);
        if self.relays.load(Ordering::Relaxed) {
            let mut relay = relay::Relay {
                out,
                all: false,
                held: relayed,
            };
            let deadline = partition.on_tick(tick, received_ns, &mut relay, held_due, &self.instruments);
            self.note_deadline(deadline);
            if !partition.groups.is_empty() {
                relay.all = true;
                self.feed_groups(partition, tick, received_ns, &mut relay);
            }
            return;
        }
        let deadline = partition.on_tick(tick, received_ns, out, held_due, &self.instruments);
        self.note_deadline(deadline);
        if !partition.groups.is_empty() {
            self.feed_groups(partition, tick, received_ns, out);
        }
    }

    /// Copies a member's tick into its groups and evaluates their rules,
    /// under the member's lock (lock order: instrument, then group).
    fn feed_groups(&self, partition: &Partition, tick: &Tick, received_ns: i64, out: &mut impl AlertSink) {
        let version = self.current_version.load(Ordering::Acquire);
        for cell in &partition.groups {
            let mut group = cell.lock();
            let joined = group.update_member(partition.instrument.id, &partition.instrument);
            if joined || group.ruleset_version < version {
                group.rebind(&self.ruleset.load(), tick.event_time_ns, out, &self.instruments);
            }
            let due = group.on_member_tick(tick, &partition.instrument, received_ns, out, &self.instruments);
            self.note_deadline(due);
        }
    }

    /// Applies every held tick now, in order: at the end of a replay's
    /// input, and when the service drains before it stops.
    pub fn flush_held(&self, out: &mut impl AlertSink) {
        if self.allowed_lateness_ns == 0 {
            return;
        }
        let mut relayed = Vec::new();
        let mut last_received = i64::MIN;
        self.states.for_each(|partition| {
            while let Some(next) = partition.instrument.held.as_mut().and_then(|b| b.release_any()) {
                last_received = last_received.max(next.received_ns);
                self.apply_in_order(partition, &next.tick, next.received_ns, out, &mut relayed);
            }
        });
        self.relay(&relayed, last_received, out);
    }

    /// Sequence gaps and reordering seen so far.
    ///
    /// Each instrument counts its own under its lock, so a tick adds to no
    /// counter shared between threads; this sums them, locking each
    /// instrument in turn (for a metrics scrape, not for every tick).
    pub fn sequence_stats(&self) -> SequenceStats {
        let mut total = SequenceStats::default();
        self.states.for_each(|p| total.add(&p.instrument.sequence));
        total
    }

    /// What pattern rules did, summed over every instrument (locking each
    /// in turn: for a metrics scrape, not for every tick).
    pub fn pattern_counts(&self) -> crate::rules::kinds::PatternCounts {
        let mut total = crate::rules::kinds::PatternCounts::default();
        self.states.for_each(|p| {
            for bound in &p.rules {
                if let Some(c) = crate::rules::kinds::pattern::counts(&bound.state) {
                    total.add(c);
                }
            }
        });
        total
    }

    /// Gives `alert` to the pattern rules on its instrument that read
    /// alerts, as an event at its event time (see [`Partition::on_alert`]):
    /// for alerts raised outside the instrument's own evaluation, and for
    /// rule tests. Their alerts go to `out`. Returns whether the
    /// instrument exists.
    pub fn feed_alert(&self, alert: &crate::model::Alert, received_ns: i64, out: &mut impl AlertSink) -> bool {
        let Some(id) = self.instruments.get(&alert.instrument) else {
            return false;
        };
        let Some(cell) = self.states.get(id) else {
            return false;
        };
        let mut guard = cell.lock();
        let partition = &mut *guard;
        if self.current_version.load(Ordering::Acquire) > partition.ruleset_version {
            let event_now = partition.instrument.event_time_at(received_ns);
            partition.rebind(&self.ruleset.load(), event_now, out, &self.instruments, &self.groups);
        }
        let held_due = self.held_due(&partition.instrument);
        let deadline = partition.on_alert(alert, out, held_due, &self.instruments);
        self.note_deadline(deadline);
        true
    }

    /// The allowed lateness this engine runs with, ns.
    pub fn allowed_lateness_ns(&self) -> i64 {
        self.allowed_lateness_ns
    }

    /// Applies ticks in order, as [`Engine::apply`] would one by one,
    /// reporting each tick's outcome to `outcome` (index in `ticks`,
    /// result). Prefetches the state of the ticks a few places ahead.
    pub fn apply_batch(
        &self,
        ticks: &[ValidTick],
        received_ns: i64,
        out: &mut impl AlertSink,
        mut outcome: impl FnMut(usize, Result<(), TickError>),
    ) {
        let mut ahead = Lookahead::start(self, ticks);
        for (i, tick) in ticks.iter().enumerate() {
            let cell = ahead.next(self, ticks, i);
            outcome(i, self.apply_to(cell, tick, received_ns, out));
        }
    }

    /// As [`Engine::apply_batch`], but each tick is received at its own
    /// event time (replays and rule tests run in event time), and
    /// `outcome` is given `out` after each tick, to take that tick's
    /// alerts; it returns whether to go on. Returns how many ticks were
    /// applied or refused before stopping.
    pub fn apply_batch_in_event_time<S: AlertSink>(
        &self,
        ticks: &[ValidTick],
        out: &mut S,
        mut outcome: impl FnMut(usize, Result<(), TickError>, &mut S) -> bool,
    ) -> usize {
        let mut ahead = Lookahead::start(self, ticks);
        for (i, tick) in ticks.iter().enumerate() {
            let cell = ahead.next(self, ticks, i);
            let result = self.apply_to(cell, tick, tick.event_time_ns, out);
            if !outcome(i, result, out) {
                return i + 1;
            }
        }
        ticks.len()
    }

    /// Runs every timer due at `now_ns`: halts ending, `for` periods
    /// completing without a tick, feeds gone silent. Call it periodically
    /// with the clock ticks are received by: the service clock live, event
    /// time in a replay (where each tick is received at its event time).
    ///
    /// # The time of a timer
    ///
    /// Rules keep every deadline in their instrument's event time. Between
    /// two ticks an instrument's event time is taken to advance with the
    /// receive clock from its newest tick: at `now_ns` it is
    /// `newest event time + (now_ns - when that tick was received)`. A
    /// timer fires when that reaches its deadline (or on the first tick at
    /// or past it, whichever comes first), and its alert carries the
    /// deadline as its event time: a halt of 5 minutes ends 5 minutes of
    /// server time after the tick that tripped it was received, and is
    /// stamped 5 minutes of event time after that tick, however old the
    /// feed's timestamps are. In a replay receive time is event time, so
    /// the two coincide.
    pub fn check_timers(&self, now_ns: i64, out: &mut impl AlertSink) {
        self.check_timers_marked(now_ns, out, |_, _| {});
    }

    /// As [`Engine::check_timers`], calling `mark` before each evaluation
    /// whose alerts follow in `out`: an instrument's or a group's timers
    /// ([`TimerMark::Eval`]), then the patterns given each alert those
    /// relayed ([`TimerMark::Relay`]). Evaluations with nothing due are
    /// not marked. A replay on several engines uses the marks to merge
    /// their timer alerts back into the order of one engine: instruments
    /// in id order, then groups in key order, then the relayed alerts in
    /// the order they were raised.
    pub fn check_timers_marked<S: AlertSink>(&self, now_ns: i64, out: &mut S, mut mark: impl FnMut(&mut S, TimerMark)) {
        if now_ns < self.earliest_deadline_ns.load(Ordering::Acquire) {
            return;
        }
        // Reset before scanning: every deadline set from here on, by this
        // scan or by a tick applied meanwhile, lowers it again, so when the
        // scan ends it is at or below every instrument's deadline.
        self.earliest_deadline_ns.store(i64::MAX, Ordering::Release);
        let ruleset = self.ruleset.load();
        let relays = self.relays.load(Ordering::Relaxed);
        let mut relayed = Vec::new();
        // Where each marked evaluation's relayed alerts start.
        let mut origins: Vec<(usize, TimerSource)> = Vec::new();
        self.states.for_each(|partition| {
            if partition.next_deadline_ns > now_ns {
                self.note_deadline(partition.next_deadline_ns);
                return;
            }
            let source = TimerSource::Instrument(partition.instrument.id);
            if relays {
                origins.push((relayed.len(), source.clone()));
            }
            mark(out, TimerMark::Eval(source));
            if partition.ruleset_version < ruleset.version {
                let event_now = partition.instrument.event_time_at(now_ns);
                partition.rebind(&ruleset, event_now, out, &self.instruments, &self.groups);
            }
            while let Some(next) = partition
                .instrument
                .held
                .as_mut()
                .and_then(|b| b.release_due(now_ns, self.allowed_lateness_ns))
            {
                self.apply_in_order(partition, &next.tick, next.received_ns, out, &mut relayed);
            }
            let held_due = self.held_due(&partition.instrument);
            let deadline = if relays {
                let mut relay = relay::Relay {
                    out: &mut *out,
                    all: false,
                    held: &mut relayed,
                };
                partition.on_timer(now_ns, &mut relay, held_due, &self.instruments)
            } else {
                partition.on_timer(now_ns, out, held_due, &self.instruments)
            };
            self.note_deadline(deadline);
        });
        for cell in self.groups.all() {
            let mut group = cell.lock();
            if group.next_deadline_ns > now_ns {
                self.note_deadline(group.next_deadline_ns);
                continue;
            }
            let source = TimerSource::Group(group.key.clone());
            if relays {
                origins.push((relayed.len(), source.clone()));
            }
            mark(out, TimerMark::Eval(source));
            if group.ruleset_version < ruleset.version {
                group.rebind(&ruleset, now_ns, out, &self.instruments);
            }
            let due = if relays {
                let mut relay = relay::Relay {
                    out: &mut *out,
                    all: true,
                    held: &mut relayed,
                };
                group.on_timer(now_ns, &mut relay, &self.instruments)
            } else {
                group.on_timer(now_ns, out, &self.instruments)
            };
            self.note_deadline(due);
        }
        if relayed.is_empty() {
            return;
        }
        let mut origin = 0;
        for (i, alert) in relayed.iter().enumerate() {
            while origin + 1 < origins.len() && origins[origin + 1].0 <= i {
                origin += 1;
            }
            if let Some((start, source)) = origins.get(origin) {
                mark(out, TimerMark::Relay(source.clone(), (i - start) as u32));
            }
            self.feed_alert(alert, now_ns, out);
        }
    }

    /// Lowers the earliest-deadline hint to `deadline_ns` if that is
    /// earlier. A plain load first: most ticks leave the hint alone, and
    /// only a read keeps the shared cache line from bouncing between cores.
    #[inline]
    fn note_deadline(&self, deadline_ns: i64) {
        if deadline_ns < self.earliest_deadline_ns.load(Ordering::Relaxed) {
            self.earliest_deadline_ns.fetch_min(deadline_ns, Ordering::AcqRel);
        }
    }

    /// Swaps in a new ruleset and re-binds every instrument to it. Rules
    /// with an unchanged definition keep their state; open conditions of
    /// removed or changed rules are closed with `resolved` alerts into
    /// `out`. Returns the installed ruleset with its version.
    pub fn install(&self, mut ruleset: RuleSet, now_ns: i64, out: &mut impl AlertSink) -> Arc<RuleSet> {
        let _serial = self.install_lock.lock().unwrap_or_else(|p| p.into_inner());
        ruleset.version = self.last_version.fetch_add(1, Ordering::SeqCst) + 1;
        let ruleset = Arc::new(ruleset);
        self.relays.store(reads_alerts(&ruleset), Ordering::Relaxed);
        // Published before re-binding: a tick that takes an instrument's
        // lock after its re-bind sees this version, so it never re-binds
        // back; a tick that takes it before may re-bind it itself.
        self.ruleset.store(ruleset.clone());
        self.current_version.store(ruleset.version, Ordering::Release);
        self.states.for_each(|partition| {
            if partition.ruleset_version < ruleset.version {
                let event_now = partition.instrument.event_time_at(now_ns);
                partition.rebind(&ruleset, event_now, out, &self.instruments, &self.groups);
                self.note_deadline(partition.next_deadline_ns);
            }
        });
        for cell in self.groups.all() {
            let mut group = cell.lock();
            if group.ruleset_version < ruleset.version {
                group.rebind(&ruleset, now_ns, out, &self.instruments);
                self.note_deadline(group.next_deadline_ns);
            }
        }
        ruleset
    }

    /// Resets the instrument `symbol` ([`Partition::reset`]): its clock,
    /// windows and rule states start afresh, its sequence numbers are kept.
    /// `None` for an instrument never seen.
    pub fn reset_instrument(&self, symbol: &str, now_ns: i64, out: &mut impl AlertSink) -> Option<PartitionReset> {
        let id = self.instruments.get(symbol)?;
        let cell = self.states.get(id)?;
        let mut partition = cell.lock();
        let ruleset = self.ruleset.load();
        let report = partition.reset(&ruleset, now_ns, out, &self.instruments, &self.groups);
        self.note_deadline(partition.next_deadline_ns);
        Some(report)
    }

    /// Reads one instrument's state.
    pub fn with_state<R>(&self, symbol: &str, f: impl FnOnce(&InstrumentState) -> R) -> Option<R> {
        self.with_partition(symbol, |p| f(&p.instrument))
    }

    /// Reads the partition of one instrument: its state and bound rules.
    pub fn with_partition<R>(&self, symbol: &str, f: impl FnOnce(&Partition) -> R) -> Option<R> {
        let id = self.instruments.get(symbol)?;
        self.states.get(id).map(|s| f(&s.lock()))
    }

    pub fn instrument_count(&self) -> usize {
        self.instruments.len()
    }

    /// Every instrument that has had a tick applied, with its last
    /// applied sequence number, in id order.
    pub fn last_applied_all(&self) -> Vec<(Arc<str>, u64)> {
        let mut all = Vec::new();
        self.states.for_each(|p| {
            if let Some(seq) = p.instrument.last_seq {
                all.push((p.instrument.symbol.clone(), seq));
            }
        });
        all
    }

    /// The last applied sequence number of an instrument, if any tick of
    /// it has been applied.
    pub fn last_seq(&self, id: InstrumentId) -> Option<u64> {
        self.states.get(id).and_then(|s| s.lock().instrument.last_seq)
    }
}

/// How many ticks ahead a batch looks up a tick's state and prefetches it.
const AHEAD: usize = 4;

/// The states of the next [`AHEAD`] ticks of a batch, each looked up once,
/// when it is prefetched.
struct Lookahead<'e> {
    cells: [Option<&'e StateCell>; AHEAD],
}

impl<'e> Lookahead<'e> {
    #[inline]
    fn start(engine: &'e Engine, ticks: &[ValidTick]) -> Self {
        let mut cells = [None; AHEAD];
        for (cell, tick) in cells.iter_mut().zip(ticks) {
            *cell = Self::fetch(engine, tick);
        }
        Lookahead { cells }
    }

    /// Looks up `tick`'s state and starts fetching it into cache.
    #[inline(always)]
    fn fetch(engine: &'e Engine, tick: &Tick) -> Option<&'e StateCell> {
        let cell = engine.states.get(tick.instrument);
        if let Some(cell) = cell {
            cell.prefetch();
        }
        cell
    }

    /// The state of `ticks[i]` (`None` if it had none when looked up: a
    /// tick earlier in the batch may have created it since), after
    /// starting the fetch of the state [`AHEAD`] ticks on. Called with
    /// `i` = 0, 1, 2, ... in turn.
    #[inline(always)]
    fn next(&mut self, engine: &'e Engine, ticks: &[ValidTick], i: usize) -> Option<&'e StateCell> {
        let slot = i % AHEAD;
        let cell = self.cells[slot];
        self.cells[slot] = ticks.get(i + AHEAD).and_then(|tick| Self::fetch(engine, tick));
        cell
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Alert, Fixed};
    use crate::rules::compile_for_test as compile_texts;

    fn engine() -> Engine {
        engine_with(EngineConfig::default())
    }

    fn engine_with(config: EngineConfig) -> Engine {
        let rules = "[[rule]]\nid = \"dd\"\nkind = \"drawdown\"\nwindow = \"3s\"\nthreshold = \"5%\"\n";
        Engine::new(config, compile_texts(&[("t.toml".into(), rules.into())]).unwrap())
    }

    fn ticks(e: &Engine) -> Vec<ValidTick> {
        const S: i64 = 1_000_000_000;
        let ids: Vec<_> = ["A", "B", "C"].iter().map(|s| e.resolve(s, 0).unwrap()).collect();
        let rows = [
            (0, 1, S, "100"),
            (1, 1, S, "50"),
            (0, 2, 2 * S, "90"),
            (0, 2, 2 * S, "91"),
            (2, 1, 2 * S, "1"),
            (1, 2, 3 * S, "40"),
            (0, 3, S, "80"),
            (2, 2, 4 * S, "10"),
            (1, 3, 4 * S, "60"),
        ];
        rows.iter()
            .map(|&(i, seq, t, price)| {
                ValidTick::new(Tick {
                    instrument: ids[i],
                    event_time_ns: t,
                    seq,
                    values: TickValues::Trade {
                        price: Fixed::parse(price).unwrap(),
                        size: Fixed::ONE,
                        side: None,
                    },
                })
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn apply_batch_in_event_time_is_apply_one_by_one_at_each_time() {
        let (one, batched) = (engine(), engine());
        let (ticks_one, ticks_batched) = (ticks(&one), ticks(&batched));
        let received: Vec<i64> = ticks_one.iter().map(|t| t.event_time_ns).collect();
        let mut expected: Vec<(usize, Result<(), String>, Vec<Alert>)> = Vec::new();
        for (i, tick) in ticks_one.iter().enumerate() {
            let mut out = Vec::new();
            let result = one.apply(tick, received[i], &mut out).map_err(|e| e.to_string());
            expected.push((i, result, out));
        }
        let mut got = Vec::new();
        let mut out = Vec::new();
        let n = batched.apply_batch_in_event_time(&ticks_batched, &mut out, |i, result, out| {
            got.push((i, result.map_err(|e| e.to_string()), std::mem::take(out)));
            true
        });
        assert_eq!(n, ticks_one.len());
        assert_eq!(got, expected);
        assert!(got.iter().any(|(_, r, _)| r.is_err()));
        assert!(got.iter().any(|(_, _, alerts)| !alerts.is_empty()));
        for symbol in ["A", "B", "C"] {
            let state = |e: &Engine| e.with_state(symbol, |s| (s.last_seq, s.last_event_ns, s.last_received_ns));
            assert_eq!(state(&one), state(&batched), "{symbol}");
        }
    }

    #[test]
    fn a_share_of_instruments_moves_to_a_running_engine_and_is_forgotten_where_it_was() {
        let (from, to) = (engine(), engine());
        let ticks = ticks(&from);
        from.apply_batch(&ticks, 0, &mut Vec::new(), |_, _| {});
        // The receiver already holds a stale A and its own C.
        let stale = to.resolve("A", 0).unwrap();
        let c = to.resolve("C", 0).unwrap();
        let price = |p: &str| TickValues::Trade {
            price: Fixed::parse(p).unwrap(),
            size: Fixed::ONE,
            side: None,
        };
        for (id, seq) in [(stale, 9), (c, 1)] {
            let tick = Tick {
                instrument: id,
                event_time_ns: 1,
                seq,
                values: price("5"),
            };
            to.apply(&tick, 0, &mut Vec::new()).unwrap();
        }
        let share = from.snapshot_where(|s| s == "A" || s == "B", false);
        assert_eq!(share.instruments.len(), 2);
        let report = to.restore_share(share, i64::MIN).unwrap();
        assert_eq!(report.instruments_restored, 2);
        let state = |e: &Engine, s: &str| e.with_state(s, |s| (s.last_seq, s.last_event_ns, s.last));
        for symbol in ["A", "B"] {
            assert_eq!(state(&to, symbol), state(&from, symbol), "{symbol}");
        }
        assert_eq!(to.with_state("C", |s| s.last_seq), Some(Some(1)), "C untouched");
        // Bound to the rules again: the next tick of A is evaluated.
        assert!(to.with_partition("A", |p| p.rules.len()).unwrap() > 0);
        assert_eq!(from.forget_instruments(["A", "B", "Z"], 0), 2);
        assert_eq!(from.with_state("A", |s| s.last_seq), Some(None));
        assert_eq!(from.with_partition("B", |p| p.rules.len()), Some(0));
        assert_eq!(from.with_state("C", |s| s.last_seq), Some(Some(2)));
    }

    #[test]
    fn a_cap_above_the_limit_counts_as_the_limit() {
        let e = engine_with(EngineConfig {
            max_instruments: u32::MAX,
            ..EngineConfig::default()
        });
        let id = e.resolve("A", 0).unwrap();
        let tick = Tick {
            instrument: id,
            event_time_ns: 1,
            seq: 1,
            values: TickValues::Mark {
                price: Fixed::parse("1").unwrap(),
            },
        };
        e.apply(&tick, 1, &mut Vec::new()).unwrap();
        assert_eq!(e.last_seq(id), Some(1));
    }

    #[test]
    fn apply_batch_in_event_time_stops_when_told() {
        let e = engine();
        let ticks = ticks(&e);
        let mut seen = Vec::new();
        let n = e.apply_batch_in_event_time(&ticks, &mut Vec::new(), |i, _, _| {
            seen.push(i);
            i < 2
        });
        assert_eq!((n, seen), (3, vec![0, 1, 2]));
        // The sixth tick was not applied: B's last is still its first.
        assert_eq!(e.with_state("B", |s| s.last_seq), Some(Some(1)));
    }
}
