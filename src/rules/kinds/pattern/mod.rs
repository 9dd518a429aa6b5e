//! Patterns (`kind = "pattern"`): sequences of events, strict or relaxed,
//! counts, `and`/`or` groups, `within`, and absence, over ticks and over
//! other rules' alerts. `rules/PATTERNS.md` documents the language and
//! its semantics for rule authors; [`parse`] is its grammar, [`nfa`] turns
//! it into states, [`compile`](self::compile) checks and builds it.
//!
//! # How a match is tracked
//!
//! A pattern is compiled to a small automaton ([`nfa`]): one node per
//! (step, events counted so far) or, for an `and` group, per subset of its
//! members seen. A partial match is a node plus the event time of its
//! first event, when it entered the node (for strict contiguity and
//! absence deadlines) and the values its steps bound. Every event the
//! pattern is fed is numbered; an edge marked strict (`=>`) may only be
//! taken by a partial that entered its node at the previous event.
//!
//! When no condition reads an earlier step and the policy is not
//! `skip_to_next`, two partials in one node have the same future, except
//! that the one that started later expires later and the one that entered
//! at the last event may still take strict edges: so each node keeps at
//! most the latest-starting partial and the latest-starting fresh one
//! (the state is bounded by the pattern: at most `3 × nodes + 2` partials,
//! whatever the traffic). Otherwise partials differ by start or by bound
//! values and the pattern needs an explicit `max_partials`; when full, the
//! partial that started first is dropped and counted.
//!
//! The evaluation of one event allocates nothing unless a match fires:
//! the partial list and its scratch buffer are sized at the first event.

mod compile;
pub mod nfa;
pub mod parse;

use std::borrow::Cow;
use std::sync::Arc;

use crate::model::{Alert, AlertKind, AlertSink, AlertValue, Fixed, KindMask, Mode, Severity};
use crate::rules::context::{Bound, EvalCtx};
use crate::rules::expr::CompiledExpr;
use crate::rules::{CompiledRule, RuleState};
use crate::state::Field;

use super::{KindEntry, RuleKind};

/// `pattern`: a sequence of events over ticks and alerts.
pub const KIND: KindEntry = KindEntry {
    name: "pattern",
    params: &["pattern", "max_partials", "after_match"],
    own_durations: false,
    compile: compile::compile,
};

/// Highest `max_partials` accepted.
pub const MAX_PARTIALS_LIMIT: i64 = 4096;
/// Most positive steps in one pattern.
pub const MAX_STEPS: usize = 8;
/// Most automaton nodes one pattern may compile to.
pub const MAX_NODES: usize = 128;
/// Most distinct events (`tick(...)`, `alert(...)`) in one pattern.
pub const MAX_EVENTS: usize = 32;

/// Node number of a partial that waits out the absence.
const WAIT: u16 = u16::MAX - 1;
/// Edge target that completes the positive part.
const DONE: u16 = u16::MAX;

/// What happens to the other partial matches when one completes (Flink's
/// after-match skip strategies, where they can be had with bounded state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterMatch {
    /// Every partial match is dropped: no two matches share an event, and
    /// the next starts after this one's last event (its deadline, for an
    /// absence). The default.
    SkipPastLastEvent,
    /// Partial matches are kept: every event that completes a match fires
    /// once (for the latest-starting match that ends at it).
    NoSkip,
    /// Partial matches that started with the completed match's first event
    /// are dropped: each start event fires at most once, at the earliest
    /// event completing a match from it. Needs `max_partials`.
    SkipToNext,
}

impl AfterMatch {
    pub const NAMES: &'static str = "skip_past_last_event, no_skip, skip_to_next";

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "skip_past_last_event" => Some(AfterMatch::SkipPastLastEvent),
            "no_skip" => Some(AfterMatch::NoSkip),
            "skip_to_next" => Some(AfterMatch::SkipToNext),
            _ => None,
        }
    }
}

/// A compiled pattern.
#[derive(Debug)]
pub struct Pattern {
    /// The pattern as written.
    pub text: Box<str>,
    events: Vec<Event>,
    /// Bit `i` set when event `i` reads an earlier step (evaluated per
    /// partial match, not once per event).
    bound_events: u32,
    nodes: Vec<nfa::Node>,
    /// The edges every event may take, starting a partial match.
    starts: Vec<nfa::Edge>,
    steps: Vec<StepInfo>,
    absence: Option<Absence>,
    /// Longest time from the first event of a match to its last positive
    /// event (inclusive); `None` for a pattern of one event.
    within_ns: Option<i64>,
    policy: AfterMatch,
    /// Bound values that conditions read: partials that differ in them are
    /// kept apart.
    read_mask: u16,
    /// Most partials per instrument.
    capacity: usize,
    /// Most edges out of one node (to size the scratch buffer).
    fan_out: usize,
    triggers: KindMask,
    watches_alerts: bool,
}

/// What the alert reports of one positive step.
#[derive(Debug)]
struct StepInfo {
    /// `NAME.at_ms`: when its (last) event came, after the first event.
    at_name: Cow<'static, str>,
    /// `NAME.field` and the bound value holding it.
    values: Vec<(Cow<'static, str>, Field, u8)>,
}

#[derive(Debug)]
struct Absence {
    /// The events that end the wait (any of).
    events: u32,
    window_ns: i64,
}

/// What one event of a step waits for.
#[derive(Debug)]
enum Event {
    /// A tick of a kind the expression reads, on which it is true.
    Tick(Box<CompiledExpr>),
    Alert(AlertMatch),
}

/// Which alerts an `alert(...)` step matches: on the same instrument, of
/// another rule.
#[derive(Debug)]
struct AlertMatch {
    rule: Option<Arc<str>>,
    /// Bit `1 << kind as u8` for each kind matched.
    kinds: u8,
    /// A severity, and whether it is a minimum.
    severity: Option<(Severity, bool)>,
}

const fn kind_bit(kind: AlertKind) -> u8 {
    1 << kind as u8
}

/// Kinds an `alert(...)` without `kind =` matches: those that raise
/// something (not `resolved`, `resumed` or `rearmed`).
const RAISING: u8 = kind_bit(AlertKind::Fired)
    | kind_bit(AlertKind::Tripped)
    | kind_bit(AlertKind::Limit)
    | kind_bit(AlertKind::Paused);

impl AlertMatch {
    #[inline]
    fn matches(&self, alert: &Alert) -> bool {
        self.kinds & kind_bit(alert.kind) != 0
            && self.rule.as_ref().is_none_or(|r| *r == alert.rule_id)
            && self
                .severity
                .is_none_or(|(s, min)| if min { alert.severity >= s } else { alert.severity == s })
    }
}

/// One partial match.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Partial {
    /// Its node in the automaton ([`WAIT`] while waiting out an absence).
    pub node: u16,
    /// Event time of its first event.
    pub start_ns: i64,
    /// Number of its first event (the events fed to the pattern on the
    /// instrument, from 1).
    pub start_no: u64,
    /// Number of the event that put it in its node.
    pub entered_no: u64,
    /// Event time of that event.
    pub entered_ns: i64,
    /// Values its steps bound.
    pub bound: Bound,
    /// Event time of each step's (last) event.
    pub at: [i64; MAX_STEPS],
}

/// What a pattern did on one instrument, since its state began (counted in
/// the state, so no counter is shared between threads; summed for metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PatternCounts {
    /// Partial matches started (events taking a first step).
    pub started: u64,
    /// Partial matches not kept because another in the same node has the
    /// same future and lasts longer (loses no match: see the module docs).
    pub superseded: u64,
    /// Partial matches dropped because `max_partials` was reached (the
    /// one that started first goes): the user's bound at work.
    pub dropped: u64,
    /// Partial matches dropped because `within` ran out.
    pub expired: u64,
    /// Absence waits ended by the absent event arriving.
    pub cancelled: u64,
    /// Complete matches (fired or suppressed).
    pub matched: u64,
    /// Matches not raised because of `cooldown`.
    pub suppressed: u64,
}

impl PatternCounts {
    pub fn add(&mut self, other: &PatternCounts) {
        self.started += other.started;
        self.superseded += other.superseded;
        self.dropped += other.dropped;
        self.expired += other.expired;
        self.cancelled += other.cancelled;
        self.matched += other.matched;
        self.suppressed += other.suppressed;
    }
}

/// A pattern's state on one instrument.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PatternState {
    /// The partial matches (capacity reserved at the first event).
    pub partials: Vec<Partial>,
    /// The rest, boxed: every rule's state is stored inline, as large as
    /// the largest kind's, for every rule on every instrument, so a
    /// pattern's must not make the other kinds' larger.
    pub more: Box<PatternMore>,
}

/// The rest of a [`PatternState`].
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PatternMore {
    /// Events fed to the pattern on this instrument so far.
    pub events: u64,
    /// When the rule last fired (for `cooldown`).
    pub last_fired_ns: Option<i64>,
    pub counts: PatternCounts,
    /// The transitions of one event; empty between events.
    #[serde(skip)]
    scratch: Vec<Partial>,
}

impl PatternState {
    /// Bytes this state holds: itself and the buffers it owns (what one
    /// instrument costs the pattern).
    pub fn bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + std::mem::size_of::<PatternMore>()
            + (self.partials.capacity() + self.more.scratch.capacity()) * std::mem::size_of::<Partial>()
    }
}

/// The counts of a pattern rule's state, `None` for another kind's.
pub fn counts(state: &RuleState) -> Option<&PatternCounts> {
    match state {
        RuleState::Pattern(s) => Some(&s.more.counts),
        _ => None,
    }
}

/// The bytes of a pattern rule's state, `None` for another kind's.
pub fn state_bytes(state: &RuleState) -> Option<usize> {
    match state {
        RuleState::Pattern(s) => Some(s.bytes()),
        _ => None,
    }
}

/// What is known of the event being fed: which events (without bound
/// values) it is, and how to test the others for one partial match.
struct Fed<'a, F: Fn(usize, &Bound) -> bool> {
    t: i64,
    free: u32,
    bound: &'a F,
    ctx: &'a EvalCtx<'a>,
}

impl Pattern {
    /// The policy after a match.
    pub fn policy(&self) -> AfterMatch {
        self.policy
    }

    /// Most partial matches kept per instrument.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn wait_deadline(&self, p: &Partial) -> i64 {
        p.entered_ns
            .saturating_add(self.absence.as_ref().map_or(0, |a| a.window_ns))
    }

    /// When the earliest absence wait ends, if one is pending.
    fn due(&self, state: &PatternState) -> Option<i64> {
        self.absence.as_ref()?;
        state
            .partials
            .iter()
            .filter(|p| p.node == WAIT)
            .map(|p| self.wait_deadline(p))
            .min()
    }

    fn ready(&self, state: &mut PatternState) {
        if state.partials.capacity() < self.capacity {
            state.partials.reserve_exact(self.capacity - state.partials.len());
        }
        let scratch = (self.capacity + 1) * self.fan_out.max(1);
        if state.more.scratch.capacity() < scratch {
            state.more.scratch.reserve_exact(scratch - state.more.scratch.len());
        }
    }

    #[inline]
    fn hits<F: Fn(usize, &Bound) -> bool>(&self, events: u32, fed: &Fed<'_, F>, bound: &Bound) -> bool {
        if events & fed.free != 0 {
            return true;
        }
        let mut todo = events & self.bound_events;
        while todo != 0 {
            let i = todo.trailing_zeros() as usize;
            todo &= todo - 1;
            if (fed.bound)(i, bound) {
                return true;
            }
        }
        false
    }

    /// `p` moved along `edge` at the event in `fed`, number `k`.
    fn moved(&self, p: &Partial, edge: &nfa::Edge, k: u64, ctx: &EvalCtx<'_>, t: i64) -> Partial {
        let mut n = *p;
        n.node = edge.target;
        n.entered_no = k;
        n.entered_ns = t;
        let step = usize::from(edge.step);
        if let Some(info) = self.steps.get(step) {
            n.at[step] = t;
            for &(_, field, i) in &info.values {
                n.bound.set(i, ctx.last.field(field));
            }
        }
        n
    }

    fn same_key(&self, a: &Partial, b: &Partial) -> bool {
        a.node == b.node
            && (self.policy != AfterMatch::SkipToNext || a.start_no == b.start_no)
            && (self.read_mask == 0
                || (a.bound.known & self.read_mask == b.bound.known & self.read_mask
                    && (0..16).all(|i| self.read_mask & (1 << i) == 0 || a.bound.raw[i] == b.bound.raw[i])))
    }

    /// Adds `n` (entered at event `k`) to `list`, keeping per key only the
    /// partials that can still make a difference (see the module docs).
    fn insert(&self, list: &mut Vec<Partial>, n: Partial, k: u64, counts: &mut PatternCounts) {
        let strict_out = self.nodes.get(usize::from(n.node)).is_some_and(|node| node.strict_out);
        let mut best_stale: Option<(usize, i64)> = None;
        for (j, e) in list.iter().enumerate() {
            if e.entered_no < k && self.same_key(e, &n) && best_stale.is_none_or(|(_, s)| e.start_ns > s) {
                best_stale = Some((j, e.start_ns));
            }
        }
        let mut drop_new = false;
        let mut j = 0usize;
        list.retain(|e| {
            let at = j;
            j += 1;
            if !self.same_key(e, &n) {
                return true;
            }
            if e.entered_no == k {
                if e.start_ns >= n.start_ns {
                    drop_new = true;
                    return true;
                }
                counts.superseded += 1;
                return false;
            }
            if best_stale.is_some_and(|(b, _)| b != at) {
                counts.superseded += 1;
                return false;
            }
            if e.start_ns >= n.start_ns {
                // Keep `e` (it lasts as long, and its events came first);
                // `n` only for the strict edges it may take next.
                drop_new |= !strict_out;
                return true;
            }
            counts.superseded += 1;
            false
        });
        if drop_new {
            counts.superseded += 1;
            return;
        }
        self.push_bounded(list, n, counts);
    }

    fn push_bounded(&self, list: &mut Vec<Partial>, n: Partial, counts: &mut PatternCounts) {
        if list.len() >= self.capacity {
            let oldest = list
                .iter()
                .enumerate()
                .min_by_key(|(_, p)| (p.start_ns, p.start_no))
                .map(|(i, p)| (i, p.start_ns));
            counts.dropped += 1;
            match oldest {
                Some((i, s)) if s <= n.start_ns => {
                    list.swap_remove(i);
                }
                _ => return,
            }
        }
        list.push(n);
    }

    /// Feeds one event (a tick or an alert) at `fed.t`.
    fn feed<F: Fn(usize, &Bound) -> bool>(
        &self,
        rule: &CompiledRule,
        state: &mut PatternState,
        fed: &Fed<'_, F>,
        out: &mut impl AlertSink,
    ) {
        self.ready(state);
        let t = fed.t;
        let PatternState { partials, more } = state;
        let PatternMore {
            events,
            last_fired_ns,
            counts,
            scratch,
        } = &mut **more;
        *events += 1;
        let k = *events;
        // Expired, and strict-only partials that missed their event.
        let within = self.within_ns;
        let nodes = &self.nodes;
        partials.retain(|p| {
            if p.node == WAIT {
                return true;
            }
            if within.is_some_and(|w| t.saturating_sub(p.start_ns) > w) {
                counts.expired += 1;
                return false;
            }
            p.entered_no + 1 >= k || nodes.get(usize::from(p.node)).is_some_and(|n| n.relaxed_out)
        });
        // The absent event ends the waits it falls in.
        if let Some(absence) = &self.absence {
            partials.retain(|p| {
                if p.node != WAIT || p.entered_no >= k || !self.hits(absence.events, fed, &p.bound) {
                    return true;
                }
                counts.cancelled += 1;
                false
            });
        }
        scratch.clear();
        let origin = Partial {
            node: 0,
            start_ns: t,
            start_no: k,
            entered_no: k,
            entered_ns: t,
            bound: Bound::default(),
            at: [t; MAX_STEPS],
        };
        for edge in &self.starts {
            if self.hits(edge.events, fed, &origin.bound) {
                counts.started += 1;
                scratch.push(self.moved(&origin, edge, k, fed.ctx, t));
            }
        }
        for p in partials.iter() {
            if p.node == WAIT || p.entered_no >= k {
                continue;
            }
            let Some(node) = self.nodes.get(usize::from(p.node)) else {
                continue;
            };
            for edge in &node.edges {
                if edge.strict && p.entered_no + 1 != k {
                    continue;
                }
                if self.hits(edge.events, fed, &p.bound) {
                    scratch.push(self.moved(p, edge, k, fed.ctx, t));
                }
            }
        }
        if scratch.is_empty() {
            return;
        }
        let mut done = 0usize;
        for i in 0..scratch.len() {
            let n = scratch[i];
            if n.node == DONE {
                scratch.swap(done, i);
                done += 1;
            } else {
                self.insert(partials, n, k, counts);
            }
        }
        if done == 0 {
            scratch.clear();
            return;
        }
        let completed = &mut scratch[..done];
        match (self.policy, &self.absence) {
            (AfterMatch::SkipToNext, _) => {
                completed.sort_unstable_by_key(|p| (p.start_no, p.entered_no));
                let mut last = None;
                for &c in completed.iter() {
                    if last == Some(c.start_no) {
                        continue;
                    }
                    last = Some(c.start_no);
                    if self.absence.is_some() {
                        if !partials.iter().any(|p| p.node == WAIT && p.start_no == c.start_no) {
                            self.push_bounded(partials, Partial { node: WAIT, ..c }, counts);
                        }
                    } else {
                        counts.matched += 1;
                        partials.retain(|p| p.start_no != c.start_no);
                        self.fire(rule, fed.ctx, last_fired_ns, counts, &c, t, out);
                    }
                }
            }
            (policy, absence) => {
                let best = completed
                    .iter()
                    .copied()
                    .reduce(|a, b| if b.start_ns > a.start_ns { b } else { a })
                    .unwrap_or_default();
                if absence.is_some() {
                    if partials.iter().any(|p| p.node == WAIT) {
                        counts.superseded += 1;
                    } else {
                        self.push_bounded(partials, Partial { node: WAIT, ..best }, counts);
                    }
                } else {
                    counts.matched += 1;
                    if policy == AfterMatch::SkipPastLastEvent {
                        partials.clear();
                    }
                    self.fire(rule, fed.ctx, last_fired_ns, counts, &best, t, out);
                }
            }
        }
        scratch.clear();
    }

    /// Fires the absence waits whose window ended before `now_ns`, each at
    /// its deadline, in deadline order.
    fn fire_due(&self, rule: &CompiledRule, ctx: &EvalCtx<'_>, state: &mut PatternState, out: &mut impl AlertSink) {
        if self.absence.is_none() {
            return;
        }
        loop {
            let next = state
                .partials
                .iter()
                .enumerate()
                .filter(|(_, p)| p.node == WAIT)
                .min_by_key(|(_, p)| (self.wait_deadline(p), p.start_no))
                .map(|(i, p)| (i, *p));
            let Some((i, p)) = next else { return };
            let deadline = self.wait_deadline(&p);
            if ctx.now_ns <= deadline {
                return;
            }
            state.more.counts.matched += 1;
            match self.policy {
                AfterMatch::SkipToNext => state.partials.retain(|q| q.start_no != p.start_no),
                _ => {
                    state.partials.swap_remove(i);
                    state.partials.clear();
                }
            }
            let timer = EvalCtx { tick: None, ..*ctx };
            self.fire(
                rule,
                &timer,
                &mut state.more.last_fired_ns,
                &mut state.more.counts,
                &p,
                deadline,
                out,
            );
        }
    }

    /// Raises the match `m` completed at `at_ns` (unless cooling down).
    #[allow(clippy::too_many_arguments)]
    fn fire(
        &self,
        rule: &CompiledRule,
        ctx: &EvalCtx<'_>,
        last_fired_ns: &mut Option<i64>,
        counts: &mut PatternCounts,
        m: &Partial,
        at_ns: i64,
        out: &mut impl AlertSink,
    ) {
        if rule.cooldown_ns > 0 && last_fired_ns.is_some_and(|t| at_ns - t < rule.cooldown_ns) {
            counts.suppressed += 1;
            return;
        }
        *last_fired_ns = Some(at_ns);
        let ms = |ns: i64| Fixed::from_raw(ns.saturating_mul(100));
        let mut values = Vec::with_capacity(2 + self.steps.len() * 2);
        values.push(AlertValue::new("match_ms", ms(at_ns - m.start_ns)));
        if let Some(a) = &self.absence {
            values.push(AlertValue::new("absent_ms", ms(a.window_ns)));
        }
        for (s, info) in self.steps.iter().enumerate() {
            values.push(AlertValue {
                name: info.at_name.clone(),
                value: ms(m.at[s] - m.start_ns),
            });
            for (name, _, i) in &info.values {
                if let Some(v) = m.bound.get(*i) {
                    values.push(AlertValue {
                        name: name.clone(),
                        value: v,
                    });
                }
            }
        }
        out.emit(ctx.alert(rule, AlertKind::Fired, at_ns, values));
    }

    /// Whether `alert` is an event for this pattern: about the instrument
    /// evaluated, raised by another rule, and active unless the pattern is
    /// in shadow mode itself (a rule on trial never moves an active one).
    fn sees(&self, rule: &CompiledRule, ctx: &EvalCtx<'_>, alert: &Alert) -> bool {
        self.watches_alerts
            && alert.rule_id != rule.id
            && *alert.instrument == **ctx.symbol
            && (alert.mode == Mode::Active || rule.mode == Mode::Shadow)
    }
}

impl RuleKind for Pattern {
    type State = PatternState;

    fn triggers(&self) -> KindMask {
        self.triggers
    }

    fn timed(&self, _rule: &CompiledRule) -> bool {
        self.absence.is_some()
    }

    fn deadline(&self, _rule: &CompiledRule, _last_tick_ns: i64, state: &PatternState) -> Option<i64> {
        // The window is inclusive: the wait ends just after its deadline.
        self.due(state).map(|d| d.saturating_add(1))
    }

    fn is_open(&self, _state: &PatternState) -> bool {
        false
    }

    fn fits(&self, state: &PatternState) -> bool {
        state.partials.len() <= self.capacity
            && state
                .partials
                .iter()
                .all(|p| usize::from(p.node) < self.nodes.len() || (p.node == WAIT && self.absence.is_some()))
    }

    fn watches_alerts(&self) -> bool {
        self.watches_alerts
    }

    #[inline]
    fn on_tick(&self, rule: &CompiledRule, ctx: &EvalCtx<'_>, state: &mut PatternState, out: &mut impl AlertSink) {
        let Some(tick) = ctx.tick else { return };
        self.fire_due(rule, ctx, state, out);
        let kind = tick.kind();
        let mut free = 0u32;
        for (i, e) in self.events.iter().enumerate() {
            if self.bound_events & (1 << i) == 0 {
                if let Event::Tick(expr) = e {
                    if expr.triggers().contains(kind) && expr.eval(ctx) {
                        free |= 1 << i;
                    }
                }
            }
        }
        let bound = |i: usize, b: &Bound| match &self.events[i] {
            Event::Tick(expr) => expr.triggers().contains(kind) && expr.eval(&EvalCtx { bound: Some(b), ..*ctx }),
            Event::Alert(_) => false,
        };
        let fed = Fed {
            t: ctx.now_ns,
            free,
            bound: &bound,
            ctx,
        };
        self.feed(rule, state, &fed, out);
    }

    fn on_timer(&self, rule: &CompiledRule, ctx: &EvalCtx<'_>, state: &mut PatternState, out: &mut impl AlertSink) {
        self.fire_due(rule, ctx, state, out);
    }

    fn on_alert(
        &self,
        rule: &CompiledRule,
        ctx: &EvalCtx<'_>,
        alert: &Alert,
        state: &mut PatternState,
        out: &mut impl AlertSink,
    ) {
        if !self.sees(rule, ctx, alert) {
            return;
        }
        let t = alert.event_time_ns;
        let at = EvalCtx {
            tick: None,
            now_ns: t,
            ..*ctx
        };
        self.fire_due(rule, &at, state, out);
        let mut free = 0u32;
        for (i, e) in self.events.iter().enumerate() {
            if let Event::Alert(m) = e {
                if m.matches(alert) {
                    free |= 1 << i;
                }
            }
        }
        let fed = Fed {
            t,
            free,
            bound: &|_: usize, _: &Bound| false,
            ctx: &at,
        };
        self.feed(rule, state, &fed, out);
    }
}
