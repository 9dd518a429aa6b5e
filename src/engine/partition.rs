//! A partition: the unit of state the engine owns, locks and evaluates as
//! one. Today a partition is one instrument: its state (last values,
//! windows, sequence marks, held ticks) and the rules of the ruleset in
//! force that watch it, each with its own state. Groups of instruments
//! (an underlying's spot, perpetual and futures) will be partitions of
//! their own, owned the same way.
//!
//! A partition is evaluated on events: a tick applied in order
//! ([`Partition::on_tick`]) and timers ([`Partition::on_timer`]). Both end
//! by noting when the partition next needs a timer.

use std::collections::HashMap;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::model::{Alert, AlertSink, InstrumentId, Tick};
use crate::refdata::{InstrumentRef, RefData, Targets};
use crate::rules::{CompiledRule, EvalCtx, RuleSet, RuleState};
use crate::state::{HotPrefix, InstrumentState, Instruments, WindowSet};

use super::group::{groups_of, GroupCell, Groups};

/// The rules bound to one partition, the first four inline.
pub type BoundRules = SmallVec<[BoundRule; 4]>;

/// A rule that applies to a partition, with its state there.
#[derive(Clone, Debug)]
pub struct BoundRule {
    pub rule: Arc<CompiledRule>,
    pub state: RuleState,
}

/// Whether any of `rules` reads other rules' alerts: the partition then
/// hands each alert it raises back to its rules.
pub fn feeds_alerts(rules: &[BoundRule]) -> bool {
    rules.iter().any(|b| b.rule.logic.watches_alerts())
}

/// What [`Partition::reset`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionReset {
    /// The instrument's newest event time before the reset.
    pub previous_event_ns: Option<i64>,
    /// Its last applied sequence number (kept).
    pub last_seq: Option<u64>,
    /// Ticks held for event-time order, dropped.
    pub held_dropped: usize,
    /// Rules that had something open (closed with `resolved`).
    pub rules_closed: usize,
}

/// One partition: an instrument's state and the rules bound to it.
///
/// Laid out in the order a tick reads it (`repr(C)`): the binding's marks,
/// the rule states, then the instrument's state (whose own front is hot,
/// see [`InstrumentState::HOT_BYTES`]). The engine prefetches the front of
/// this struct a few ticks ahead ([`HotPrefix`]).
#[derive(Clone, Debug)]
#[repr(C)]
pub struct Partition {
    /// The ruleset version `rules` and the instrument's windows were bound
    /// for; 0 before the first binding.
    pub ruleset_version: u64,
    /// Earliest time a timer-driven transition is due (a halt ending, a
    /// hold period, a silent feed, a held tick); `i64::MAX` when none is.
    pub next_deadline_ns: i64,
    /// Whether a bound rule reads the alerts of the others (a pattern with
    /// `alert(...)` steps): then the partition's alerts pass through
    /// `scratch` on their way out (see [`evaluate_fed`]).
    pub feeds_alerts: bool,
    /// The instrument's reference data in the ruleset it is bound to, if
    /// any (kept here, on the line a tick reads, for rules that read
    /// reference prices).
    pub reference: Option<Arc<InstrumentRef>>,
    /// The groups whose rules watch this instrument: each tick is copied
    /// into them after this partition's own rules ran.
    pub groups: SmallVec<[Arc<GroupCell>; 1]>,
    pub rules: BoundRules,
    pub instrument: InstrumentState,
    /// The reference data of the ruleset the partition is bound to: where
    /// the alerts of rules with `targets` go.
    pub refdata: Arc<RefData>,
    /// The alerts of one evaluation, while rules that watch alerts read
    /// them; empty between evaluations (its capacity is kept).
    pub scratch: Vec<Alert>,
}

impl HotPrefix for Partition {
    /// The binding's marks, the inline rule states, and the hot front of
    /// the instrument's state.
    const HOT_BYTES: usize = {
        let end = std::mem::offset_of!(Partition, instrument) + InstrumentState::HOT_BYTES;
        let size = std::mem::size_of::<Partition>();
        if end < size {
            end
        } else {
            size
        }
    };
}

impl Partition {
    /// The partition of an instrument seen for the first time, bound to no
    /// ruleset yet.
    pub fn new(id: InstrumentId, symbol: Arc<str>, received_ns: i64) -> Self {
        Partition {
            ruleset_version: 0,
            next_deadline_ns: i64::MAX,
            feeds_alerts: false,
            reference: None,
            groups: SmallVec::new(),
            rules: SmallVec::new(),
            instrument: InstrumentState::new(id, symbol, received_ns),
            refdata: Arc::default(),
            scratch: Vec::new(),
        }
    }

    /// When the first timer of the bound rules is due, by the server's
    /// clock (`i64::MAX`: none is).
    pub fn earliest_rule_deadline(&self) -> i64 {
        let state = &self.instrument;
        let last_tick_ns = state.last_tick_ns();
        self.rules
            .iter()
            .filter_map(|b| b.rule.deadline(last_tick_ns, &b.state))
            .map(|due| state.server_time_of(due))
            .min()
            .unwrap_or(i64::MAX)
    }

    /// Applies a tick known to be next in the instrument's order and
    /// evaluates the rules that watch it; sets the partition's next
    /// deadline (the held ticks' due time, `held_due`, included) and
    /// returns it.
    #[inline]
    pub fn on_tick(
        &mut self,
        tick: &Tick,
        received_ns: i64,
        out: &mut impl AlertSink,
        held_due: Option<i64>,
        known: &Instruments,
    ) -> i64 {
        let state = &mut self.instrument;
        if let Some(last) = state.last_seq {
            let missing = tick.seq.saturating_sub(last).saturating_sub(1);
            if missing > 0 {
                state.sequence.gaps += 1;
                state.sequence.missing += missing;
            }
        }
        state.last_seq = Some(state.last_seq.map_or(tick.seq, |last| last.max(tick.seq)));
        state.last_event_ns = Some(tick.event_time_ns);
        state.last_received_ns = received_ns;
        state.last.update(&tick.values);
        state.windows.observe(tick.event_time_ns, &tick.values);

        let ctx = EvalCtx {
            now_ns: tick.event_time_ns,
            tick: Some(tick),
            last: &state.last,
            windows: &state.windows,
            symbol: &state.symbol,
            ruleset_version: self.ruleset_version,
            last_tick_ns: tick.event_time_ns,
            reference: self.reference.as_deref(),
            group: None,
            lookback_from_ns: None,
            bound: None,
        };
        let kind = tick.kind();
        let mut deadline = held_due.unwrap_or(i64::MAX);
        if self.feeds_alerts {
            evaluate_fed(
                &mut self.rules,
                &mut self.scratch,
                &ctx,
                Some(kind),
                &self.refdata,
                known,
                out,
            );
            for bound in &self.rules {
                if let Some(due) = bound.rule.deadline(tick.event_time_ns, &bound.state) {
                    deadline = deadline.min(state.server_time_of(due));
                }
            }
            self.next_deadline_ns = deadline;
            return deadline;
        }
        for bound in self.rules.iter_mut() {
            if bound.rule.triggers.contains(kind) {
                match &bound.rule.targets {
                    None => bound.rule.on_tick(&ctx, &mut bound.state, out),
                    Some(targets) => {
                        let mut fan = FanOut::new(out, targets, &self.refdata, known);
                        bound.rule.on_tick(&ctx, &mut bound.state, &mut fan);
                    }
                }
            }
            if let Some(due) = bound.rule.deadline(tick.event_time_ns, &bound.state) {
                deadline = deadline.min(state.server_time_of(due));
            }
        }
        self.next_deadline_ns = deadline;
        deadline
    }

    /// Runs the rules' transitions due by server time `now_ns` without a
    /// tick: the rules see the instrument's event time then
    /// ([`InstrumentState::event_time_at`]), and every timer alert is
    /// stamped with its due time in event time. Sets the partition's next
    /// deadline (server time; `held_due` included) and returns it.
    pub fn on_timer(
        &mut self,
        now_ns: i64,
        out: &mut impl AlertSink,
        held_due: Option<i64>,
        known: &Instruments,
    ) -> i64 {
        let state = &self.instrument;
        let last_tick_ns = state.last_tick_ns();
        let ctx = EvalCtx {
            now_ns: state.event_time_at(now_ns),
            tick: None,
            last: &state.last,
            windows: &state.windows,
            symbol: &state.symbol,
            ruleset_version: self.ruleset_version,
            last_tick_ns,
            reference: self.reference.as_deref(),
            group: None,
            lookback_from_ns: None,
            bound: None,
        };
        let mut deadline = held_due.unwrap_or(i64::MAX);
        if self.feeds_alerts {
            evaluate_fed(
                &mut self.rules,
                &mut self.scratch,
                &ctx,
                None,
                &self.refdata,
                known,
                out,
            );
            for bound in &self.rules {
                if let Some(due) = bound.rule.deadline(last_tick_ns, &bound.state) {
                    deadline = deadline.min(state.server_time_of(due));
                }
            }
            self.next_deadline_ns = deadline;
            return deadline;
        }
        for bound in self.rules.iter_mut() {
            match &bound.rule.targets {
                None => bound.rule.on_timer(&ctx, &mut bound.state, out),
                Some(targets) => {
                    let mut fan = FanOut::new(out, targets, &self.refdata, known);
                    bound.rule.on_timer(&ctx, &mut bound.state, &mut fan);
                }
            }
            if let Some(due) = bound.rule.deadline(last_tick_ns, &bound.state) {
                deadline = deadline.min(state.server_time_of(due));
            }
        }
        self.next_deadline_ns = deadline;
        deadline
    }

    /// Starts the instrument's clock, windows, newest values and rule
    /// states afresh (its sequence numbers are kept, so duplicates are
    /// still refused): what an operator does when a tick from a broken
    /// clock left the instrument ahead of every real tick. What the rules
    /// had open is closed with `resolved` alerts into `out`, stamped
    /// `now_ns`. Held ticks are dropped.
    pub fn reset(
        &mut self,
        ruleset: &RuleSet,
        now_ns: i64,
        out: &mut impl AlertSink,
        known: &Instruments,
        groups: &Groups,
    ) -> PartitionReset {
        let state = &mut self.instrument;
        let report = PartitionReset {
            previous_event_ns: state.last_event_ns,
            last_seq: state.last_seq,
            held_dropped: state.held.take().map_or(0, |held| held.len()),
            rules_closed: 0,
        };
        let ctx = EvalCtx {
            now_ns,
            tick: None,
            last: &state.last,
            windows: &state.windows,
            symbol: &state.symbol,
            ruleset_version: self.ruleset_version,
            last_tick_ns: now_ns,
            reference: self.reference.as_deref(),
            group: None,
            lookback_from_ns: None,
            bound: None,
        };
        let mut closed = 0;
        for bound in &self.rules {
            let reason = "instrument reset by an operator";
            let was_open = match &bound.rule.targets {
                None => bound.rule.close(&ctx, &bound.state, reason, out),
                Some(targets) => {
                    let mut fan = FanOut::new(out, targets, &self.refdata, known);
                    bound.rule.close(&ctx, &bound.state, reason, &mut fan)
                }
            };
            closed += usize::from(was_open);
        }
        state.last_event_ns = None;
        state.last_received_ns = now_ns;
        state.last = crate::state::LastValues::default();
        state.windows = WindowSet::default();
        self.rules = SmallVec::new();
        self.ruleset_version = 0;
        self.rebind(ruleset, now_ns, out, known, groups);
        PartitionReset {
            rules_closed: closed,
            ..report
        }
    }

    /// Binds the partition to `ruleset`: keeps the windows and rule states
    /// that carry over, starts the rest fresh, and closes what removed or
    /// changed rules had open.
    pub fn rebind(
        &mut self,
        ruleset: &RuleSet,
        now_ns: i64,
        out: &mut impl AlertSink,
        known: &Instruments,
        groups: &Groups,
    ) {
        let state = &mut self.instrument;
        let old_rules = std::mem::take(&mut self.rules);
        let mut old_windows: HashMap<_, _> = std::mem::take(&mut state.windows).into_windows().collect();
        let mut windows = WindowSet::with_slots(ruleset.windows.len());
        let mut carried = vec![false; old_rules.len()];
        let mut rules = SmallVec::new();
        for rule in &ruleset.rules {
            if !rule.scope.matches(&state.symbol, &ruleset.refdata) {
                continue;
            }
            let previous = old_rules
                .iter()
                .position(|b| b.rule.id == rule.id && b.rule.content_hash == rule.content_hash);
            let rule_state = match previous {
                Some(i) => {
                    carried[i] = true;
                    old_rules[i].state.clone()
                }
                None => rule.initial_state(),
            };
            for &slot in &rule.slots {
                let (key, needs) = ruleset.windows[slot.0 as usize];
                windows.insert(slot, key, needs, old_windows.remove(&key));
            }
            rules.push(BoundRule {
                rule: rule.clone(),
                state: rule_state,
            });
        }
        let ctx = EvalCtx {
            now_ns,
            tick: None,
            last: &state.last,
            windows: &windows,
            symbol: &state.symbol,
            ruleset_version: ruleset.version,
            last_tick_ns: state.last_tick_ns(),
            reference: self.reference.as_deref(),
            group: None,
            lookback_from_ns: None,
            bound: None,
        };
        for (bound, kept) in old_rules.iter().zip(carried) {
            if !kept {
                match &bound.rule.targets {
                    None => bound.rule.on_removed(&ctx, &bound.state, out),
                    Some(targets) => {
                        let mut fan = FanOut::new(out, targets, &self.refdata, known);
                        bound.rule.on_removed(&ctx, &bound.state, &mut fan);
                    }
                }
            }
        }
        self.reference = ruleset.refdata.instrument(&state.symbol).cloned();
        self.groups = groups_of(&state.symbol, ruleset)
            .iter()
            .map(|key| groups.get_or_create(key))
            .collect();
        self.refdata = ruleset.refdata.clone();
        self.feeds_alerts = feeds_alerts(&rules);
        self.rules = rules;
        state.windows = windows;
        self.ruleset_version = ruleset.version;
        self.next_deadline_ns = self.earliest_rule_deadline();
    }
}

impl Partition {
    /// Gives `alert`, raised on this instrument outside the partition's
    /// own evaluation (by a group rule, another partition, or a rule
    /// test), to the bound rules that watch alerts, as if at its event
    /// time; their alerts go to `out`. Sets the next deadline and returns
    /// it.
    pub fn on_alert(
        &mut self,
        alert: &Alert,
        out: &mut impl AlertSink,
        held_due: Option<i64>,
        known: &Instruments,
    ) -> i64 {
        let state = &self.instrument;
        let last_tick_ns = state.last_tick_ns();
        let ctx = EvalCtx {
            now_ns: alert.event_time_ns,
            tick: None,
            last: &state.last,
            windows: &state.windows,
            symbol: &state.symbol,
            ruleset_version: self.ruleset_version,
            last_tick_ns,
            reference: self.reference.as_deref(),
            group: None,
            lookback_from_ns: None,
            bound: None,
        };
        let mut deadline = held_due.unwrap_or(i64::MAX);
        if self.feeds_alerts {
            let scratch = &mut self.scratch;
            scratch.push(alert.clone());
            feed_watchers(&mut self.rules, scratch, &ctx, &self.refdata, known);
            for a in scratch.drain(..).skip(1) {
                out.emit(a);
            }
        }
        for bound in &self.rules {
            if let Some(due) = bound.rule.deadline(last_tick_ns, &bound.state) {
                deadline = deadline.min(state.server_time_of(due));
            }
        }
        self.next_deadline_ns = deadline;
        deadline
    }
}

/// Evaluates a tick (`kind`) or a timer (`None`) when some bound rules
/// watch alerts: the other rules first, then those that do, in rule order,
/// each seeing every alert raised before it in this evaluation (other
/// rules', and earlier patterns'). Alerts collect in `scratch` and go to
/// `out` in that order at the end. Allocates only when a pattern that reads
/// alerts raises one of its own.
#[inline(never)]
fn evaluate_fed(
    rules: &mut BoundRules,
    scratch: &mut Vec<Alert>,
    ctx: &EvalCtx<'_>,
    kind: Option<crate::model::TickKind>,
    refdata: &RefData,
    known: &Instruments,
    out: &mut impl AlertSink,
) {
    for bound in rules.iter_mut().filter(|b| !b.rule.logic.watches_alerts()) {
        evaluate_one(bound, ctx, kind, refdata, known, scratch);
    }
    for bound in rules.iter_mut().filter(|b| b.rule.logic.watches_alerts()) {
        evaluate_one(bound, ctx, kind, refdata, known, scratch);
    }
    feed_watchers(rules, scratch, ctx, refdata, known);
    for a in scratch.drain(..) {
        out.emit(a);
    }
}

/// Gives each alert in `scratch` to every rule that watches alerts, in
/// rule order; a watcher's own alerts are appended, for the watchers after
/// it.
fn feed_watchers(
    rules: &mut BoundRules,
    scratch: &mut Vec<Alert>,
    ctx: &EvalCtx<'_>,
    refdata: &RefData,
    known: &Instruments,
) {
    for bound in rules.iter_mut().filter(|b| b.rule.logic.watches_alerts()) {
        let mut spill: Vec<Alert> = Vec::new();
        for alert in scratch.iter() {
            match &bound.rule.targets {
                None => bound.rule.on_alert(ctx, alert, &mut bound.state, &mut spill),
                Some(targets) => {
                    let mut fan = FanOut::new(&mut spill, targets, refdata, known);
                    bound.rule.on_alert(ctx, alert, &mut bound.state, &mut fan);
                }
            }
        }
        scratch.append(&mut spill);
    }
}

/// One rule's evaluation of a tick (`kind`) or a timer (`None`).
#[inline]
fn evaluate_one(
    bound: &mut BoundRule,
    ctx: &EvalCtx<'_>,
    kind: Option<crate::model::TickKind>,
    refdata: &RefData,
    known: &Instruments,
    out: &mut impl AlertSink,
) {
    if kind.is_some_and(|k| !bound.rule.triggers.contains(k)) {
        return;
    }
    let (rule, state) = (&bound.rule, &mut bound.state);
    match (&rule.targets, kind) {
        (None, Some(_)) => rule.on_tick(ctx, state, out),
        (None, None) => rule.on_timer(ctx, state, out),
        (Some(targets), Some(_)) => rule.on_tick(ctx, state, &mut FanOut::new(out, targets, refdata, known)),
        (Some(targets), None) => rule.on_timer(ctx, state, &mut FanOut::new(out, targets, refdata, known)),
    }
}

/// Sends each alert of a rule with `targets` to every target instrument:
/// the alert as raised for the instrument that raised it, and a copy for
/// each other target, naming the instrument that raised it. All in one
/// evaluation, so a downstream system that halts on `halt` halts them all
/// within the same batch.
struct FanOut<'a, S> {
    out: &'a mut S,
    targets: &'a Targets,
    refdata: &'a RefData,
    known: &'a Instruments,
}

impl<'a, S> FanOut<'a, S> {
    fn new(out: &'a mut S, targets: &'a Targets, refdata: &'a RefData, known: &'a Instruments) -> Self {
        FanOut {
            out,
            targets,
            refdata,
            known,
        }
    }
}

impl<S: AlertSink> AlertSink for FanOut<'_, S> {
    fn emit(&mut self, alert: Alert) {
        let known = || self.known.symbols();
        let targets = self.refdata.targets_of(self.targets, &alert.instrument, &known);
        for symbol in targets {
            if symbol == alert.instrument {
                self.out.emit(alert.clone());
            } else {
                let mut copy = alert.clone();
                copy.trigger_instrument = Some(alert.instrument.clone());
                copy.instrument = symbol;
                self.out.emit(copy);
            }
        }
    }
}
