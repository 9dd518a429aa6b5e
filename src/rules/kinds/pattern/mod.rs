//! Patterns (`kind = "pattern"`): sequences of events, counts, `within`,
//! and absence, over ticks and over other rules' alerts. `rules/README.md`
//! ("Patterns") documents the language for rule authors; [`parse`] is its
//! grammar.
//!
//! # How a match is tracked
//!
//! A pattern is a chain of positive steps, each needing `{n}` events, and
//! optionally one absence at the end. Its partial matches are kept as the
//! states of that chain: one slot per (step, events counted so far), plus
//! one for "waiting out the absence". Each slot holds at most one partial
//! match, the one that started latest (it expires last, and its future is
//! the same as any other partial in the slot: no value of an earlier event
//! is read later). An absence slot holds the one that entered it first
//! (its deadline comes first; one absent event cancels them all). So a
//! rule's state per instrument is bounded by its pattern (Σn + 1 slots,
//! checked against `max_partials` at load), never by the traffic: a
//! million start events on one instrument leave it the size it was.
//!
//! Contiguity is relaxed (skip till any match): events that match no step
//! are skipped, and a partial match stays where it is when an event moves a
//! copy of it on, so every subsequence of the stream that meets the
//! pattern is found. A match fires once (`fired`) and clears every partial
//! match of the rule on the instrument (Flink's `skip_past_last_event`): no
//! two matches share an event. `cooldown` then suppresses matches for a
//! while. Absence deadlines are timers: they fire at the deadline on a
//! silent feed, stamped with the deadline in event time.
//!
//! The evaluation of one tick reads no heap memory beyond the slots and
//! allocates nothing unless a match fires.

pub mod parse;

use std::sync::Arc;

use crate::model::{Alert, AlertKind, AlertSink, AlertValue, Fixed, KindMask, Severity};
use crate::rules::compile::{source_offset, KindCompiler, MAX_WINDOW_NS};
use crate::rules::context::EvalCtx;
use crate::rules::expr::CompiledExpr;
use crate::rules::{CompiledRule, RuleState};

use super::{KindEntry, RuleKind, RuleLogic};
use parse::{EventAst, PatternAst};

/// `pattern`: a sequence of events over ticks and alerts.
pub const KIND: KindEntry = KindEntry {
    name: "pattern",
    params: &["pattern", "max_partials"],
    own_durations: false,
    compile,
};

/// Default of `max_partials`: the most partial-match slots a pattern may
/// keep per instrument.
pub const DEFAULT_MAX_PARTIALS: i64 = 64;
/// Highest `max_partials` accepted.
pub const MAX_PARTIALS_LIMIT: i64 = 1024;
/// Most steps in one pattern.
pub const MAX_STEPS: usize = 16;

/// A compiled pattern.
#[derive(Debug)]
pub struct Pattern {
    /// The pattern as written.
    pub text: Box<str>,
    steps: Vec<Step>,
    absence: Option<Absence>,
    /// Longest time from the first event of a match to its last positive
    /// event (inclusive); `None` for a pattern of one event.
    within_ns: Option<i64>,
    /// Slots per instrument: Σn, plus one when the pattern ends in an
    /// absence.
    slots: usize,
    triggers: KindMask,
    watches_alerts: bool,
}

#[derive(Debug)]
struct Step {
    event: Event,
    count: u16,
    /// Index of this step's first slot: slot `base + c` holds the partial
    /// match that has counted `c` of its events (slot `base` of the first
    /// step stays empty: every event starts a match of its own).
    base: u16,
}

#[derive(Debug)]
struct Absence {
    event: Event,
    window_ns: i64,
}

/// What one step waits for.
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
    fn matches(&self, alert: &Alert, rule: &CompiledRule, symbol: &str) -> bool {
        *alert.instrument == *symbol
            && alert.rule_id != rule.id
            && self.kinds & kind_bit(alert.kind) != 0
            && self.rule.as_ref().is_none_or(|r| *r == alert.rule_id)
            && self
                .severity
                .is_none_or(|(s, min)| if min { alert.severity >= s } else { alert.severity == s })
    }
}

/// One partial match.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Partial {
    /// Event time of its first event.
    pub start_ns: i64,
    /// Event time it entered its slot.
    pub entered_ns: i64,
}

/// What a pattern did on one instrument, since its state began (counted in
/// the state, so no counter is shared between threads; summed for metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PatternCounts {
    /// Partial matches started (events matching the first step).
    pub started: u64,
    /// Partial matches replaced in their slot by one that started later
    /// (or, for the absence slot, dropped for one that entered earlier):
    /// the bound at work. Loses no match (see the module docs).
    pub superseded: u64,
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
        self.expired += other.expired;
        self.cancelled += other.cancelled;
        self.matched += other.matched;
        self.suppressed += other.suppressed;
    }
}

/// A pattern's state on one instrument.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PatternState {
    /// One entry per slot (allocated at the first event, then reused);
    /// empty before it.
    pub partials: Vec<Option<Partial>>,
    /// When the rule last fired (for `cooldown`).
    pub last_fired_ns: Option<i64>,
    pub counts: PatternCounts,
}

/// The counts of a pattern rule's state, `None` for another kind's.
pub fn counts(state: &RuleState) -> Option<&PatternCounts> {
    match state {
        RuleState::Pattern(s) => Some(&s.counts),
        _ => None,
    }
}

impl Pattern {
    fn absence_slot(&self) -> usize {
        self.slots - 1
    }

    /// When the pending absence wait ends, if one is pending.
    fn due(&self, state: &PatternState) -> Option<i64> {
        let absence = self.absence.as_ref()?;
        let p = state.partials.get(self.absence_slot()).copied().flatten()?;
        Some(p.entered_ns.saturating_add(absence.window_ns))
    }

    fn ready(&self, state: &mut PatternState) {
        if state.partials.len() != self.slots {
            state.partials.clear();
            state.partials.resize(self.slots, None);
        }
    }

    /// Moves the partial matches on for one event at `t`, `hit` telling
    /// which events it is. Returns the start of a complete match (one
    /// without an absence to wait out).
    #[inline]
    fn advance(&self, state: &mut PatternState, t: i64, hit: impl Fn(&Event) -> bool) -> Option<i64> {
        self.ready(state);
        let PatternState { partials, counts, .. } = state;
        if let Some(within) = self.within_ns {
            let oldest = t.saturating_sub(within);
            for p in partials
                .iter_mut()
                .take(self.slots - usize::from(self.absence.is_some()))
            {
                if p.is_some_and(|p| p.start_ns < oldest) {
                    *p = None;
                    counts.expired += 1;
                }
            }
        }
        if let Some(absence) = &self.absence {
            let slot = self.slots - 1;
            if partials[slot].is_some() && hit(&absence.event) {
                partials[slot] = None;
                counts.cancelled += 1;
            }
        }
        let last = self.steps.len() - 1;
        let mut done: Option<i64> = None;
        for (i, step) in self.steps.iter().enumerate().rev() {
            let (base, n) = (step.base as usize, step.count as usize);
            if i > 0 && partials[base..base + n].iter().all(Option::is_none) {
                continue;
            }
            if !hit(&step.event) {
                continue;
            }
            for c in (0..n).rev() {
                let start = if i == 0 && c == 0 {
                    counts.started += 1;
                    t
                } else {
                    match partials[base + c] {
                        Some(p) => p.start_ns,
                        None => continue,
                    }
                };
                let target = if c + 1 < n {
                    base + c + 1
                } else if i < last {
                    self.steps[i + 1].base as usize
                } else {
                    done = Some(done.map_or(start, |d| d.min(start)));
                    continue;
                };
                match &mut partials[target] {
                    slot @ None => {
                        *slot = Some(Partial {
                            start_ns: start,
                            entered_ns: t,
                        })
                    }
                    Some(p) => {
                        counts.superseded += 1;
                        if start > p.start_ns {
                            *p = Partial {
                                start_ns: start,
                                entered_ns: t,
                            };
                        }
                    }
                }
            }
        }
        let start = done?;
        if self.absence.is_none() {
            return Some(start);
        }
        match &mut partials[self.slots - 1] {
            slot @ None => {
                *slot = Some(Partial {
                    start_ns: start,
                    entered_ns: t,
                })
            }
            Some(_) => counts.superseded += 1,
        }
        None
    }

    /// Raises the match that started at `start_ns` and completed at
    /// `at_ns` (unless cooling down) and clears every partial match.
    fn fire(
        &self,
        rule: &CompiledRule,
        ctx: &EvalCtx<'_>,
        state: &mut PatternState,
        start_ns: i64,
        at_ns: i64,
        out: &mut impl AlertSink,
    ) {
        state.counts.matched += 1;
        state.partials.iter_mut().for_each(|p| *p = None);
        if rule.cooldown_ns > 0 && state.last_fired_ns.is_some_and(|t| at_ns - t < rule.cooldown_ns) {
            state.counts.suppressed += 1;
            return;
        }
        state.last_fired_ns = Some(at_ns);
        let ms = |ns: i64| Fixed::from_raw(ns.saturating_mul(100));
        let mut values = vec![AlertValue::new("match_ms", ms(at_ns - start_ns))];
        match (&self.absence, ctx.tick) {
            (Some(a), _) => values.push(AlertValue::new("absent_ms", ms(a.window_ns))),
            (None, Some(_)) => {
                if let Some(Event::Tick(e)) = self.steps.last().map(|s| &s.event) {
                    values.extend(e.values(ctx));
                }
            }
            (None, None) => {}
        }
        out.emit(ctx.alert(rule, AlertKind::Fired, at_ns, values));
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
        self.due(state)
    }

    fn is_open(&self, _state: &PatternState) -> bool {
        false
    }

    fn fits(&self, state: &PatternState) -> bool {
        state.partials.is_empty() || state.partials.len() == self.slots
    }

    fn watches_alerts(&self) -> bool {
        self.watches_alerts
    }

    #[inline]
    fn on_tick(&self, rule: &CompiledRule, ctx: &EvalCtx<'_>, state: &mut PatternState, out: &mut impl AlertSink) {
        if self.absence.is_some() {
            self.on_timer(rule, &EvalCtx { tick: None, ..*ctx }, state, out);
        }
        let Some(tick) = ctx.tick else { return };
        let kind = tick.kind();
        let hit = |e: &Event| match e {
            Event::Tick(expr) => expr.triggers().contains(kind) && expr.eval(ctx),
            Event::Alert(_) => false,
        };
        if let Some(start) = self.advance(state, ctx.now_ns, hit) {
            self.fire(rule, ctx, state, start, ctx.now_ns, out);
        }
    }

    fn on_timer(&self, rule: &CompiledRule, ctx: &EvalCtx<'_>, state: &mut PatternState, out: &mut impl AlertSink) {
        let Some(due) = self.due(state) else { return };
        if ctx.now_ns < due {
            return;
        }
        let start = state.partials[self.absence_slot()].map_or(due, |p| p.start_ns);
        self.fire(rule, &EvalCtx { tick: None, ..*ctx }, state, start, due, out);
    }

    fn on_alert(
        &self,
        rule: &CompiledRule,
        ctx: &EvalCtx<'_>,
        alert: &Alert,
        state: &mut PatternState,
        out: &mut impl AlertSink,
    ) {
        let t = alert.event_time_ns;
        if self.absence.is_some() {
            self.on_timer(
                rule,
                &EvalCtx {
                    tick: None,
                    now_ns: t,
                    ..*ctx
                },
                state,
                out,
            );
        }
        let symbol: &str = ctx.symbol;
        let hit = |e: &Event| match e {
            Event::Alert(m) => m.matches(alert, rule, symbol),
            Event::Tick(_) => false,
        };
        if let Some(start) = self.advance(state, t, hit) {
            self.fire(rule, &EvalCtx { tick: None, ..*ctx }, state, start, t, out);
        }
    }
}

// === compile ===

fn compile(c: &mut KindCompiler<'_>) -> Option<RuleLogic> {
    let text = c.required(&c.spec.pattern, "pattern", c.kind)?;
    let at = |column: usize| source_offset(text, column);
    let max_partials = match &c.spec.max_partials {
        None => DEFAULT_MAX_PARTIALS,
        Some(m) if (1..=MAX_PARTIALS_LIMIT).contains(m.get_ref()) => *m.get_ref(),
        Some(m) => {
            c.errors.at(
                m.span().start,
                format!("`max_partials` must be 1 to {MAX_PARTIALS_LIMIT}"),
            );
            return None;
        }
    };
    let ast: PatternAst = match parse::parse(text.get_ref()) {
        Ok(ast) => ast,
        Err(e) => {
            c.errors.at(at(e.column), format!("in `pattern`: {}", e.message));
            return None;
        }
    };
    let fail = |c: &mut KindCompiler<'_>, column: usize, message: String| {
        c.errors.at(at(column), format!("in `pattern`: {message}"));
        None
    };
    if ast.steps.len() > MAX_STEPS {
        return fail(
            c,
            ast.steps[MAX_STEPS].column,
            format!("a pattern has at most {MAX_STEPS} steps"),
        );
    }
    let (positive, absence_ast) = match ast.steps.split_last() {
        Some((last, before)) if last.absent_for.is_some() => (before, Some(last)),
        _ => (&ast.steps[..], None),
    };
    if positive.is_empty() {
        return fail(
            c,
            ast.steps[0].column,
            "an absence needs a step before it, the event that starts the wait: `EVENT -> not EVENT within D`".into(),
        );
    }
    let events: u64 = positive.iter().map(|s| u64::from(s.count.0)).sum();
    let slots = events + u64::from(absence_ast.is_some());
    if slots > max_partials as u64 {
        let widest = positive.iter().max_by_key(|s| s.count.0).map_or(1, |s| s.count.1);
        return fail(
            c,
            widest,
            format!(
                "this pattern keeps up to {slots} partial matches per instrument (one per step and count{}), \
                 more than `max_partials` = {max_partials}: lower a count or raise `max_partials` (at most {MAX_PARTIALS_LIMIT})",
                if absence_ast.is_some() { ", one for the absence" } else { "" }
            ),
        );
    }
    let within_ns = match ast.within {
        Some((ns, column)) if ns > MAX_WINDOW_NS => return fail(c, column, "`within` may be at most 1d".into()),
        Some((ns, _)) => Some(ns),
        None if events > 1 => {
            return fail(
                c,
                text.get_ref().chars().count() + 1,
                "a pattern of more than one event needs `within DURATION` at its end: the longest time from its first event to its last".into(),
            )
        }
        None => None,
    };
    let mut steps = Vec::with_capacity(positive.len());
    let mut base = 0u16;
    let mut ok = true;
    for s in positive {
        match event(c, &s.event, &at) {
            Some(event) => steps.push(Step {
                event,
                count: s.count.0 as u16,
                base,
            }),
            None => ok = false,
        }
        base += s.count.0 as u16;
    }
    let absence = match absence_ast {
        None => None,
        Some(s) => {
            let window_ns = s.absent_for.unwrap_or(0);
            if window_ns > MAX_WINDOW_NS {
                return fail(c, s.column, "an absence's `within` may be at most 1d".into());
            }
            match event(c, &s.event, &at) {
                Some(event) => Some(Absence { event, window_ns }),
                None => {
                    ok = false;
                    None
                }
            }
        }
    };
    if !ok {
        return None;
    }
    let all = steps.iter().map(|s| &s.event).chain(absence.as_ref().map(|a| &a.event));
    let mut triggers = KindMask::NONE;
    let mut watches_alerts = false;
    for e in all {
        match e {
            Event::Tick(expr) => triggers = triggers.union(expr.triggers()),
            Event::Alert(_) => watches_alerts = true,
        }
    }
    Some(RuleLogic::Pattern(Pattern {
        text: text.get_ref().as_str().into(),
        steps,
        absence,
        within_ns,
        slots: slots as usize,
        triggers,
        watches_alerts,
    }))
}

fn event(c: &mut KindCompiler<'_>, ast: &EventAst, at: &impl Fn(usize) -> usize) -> Option<Event> {
    match ast {
        EventAst::Tick { expr, column } => match c.expression(expr) {
            Ok(e) => Some(Event::Tick(Box::new(e))),
            Err(e) => {
                c.errors
                    .at(at(column + e.column - 1), format!("in `pattern`: {}", e.message));
                None
            }
        },
        EventAst::Alert(a) => {
            let mut m = AlertMatch {
                rule: a.rule.as_ref().map(|(id, _)| Arc::from(id.as_str())),
                kinds: RAISING,
                severity: None,
            };
            if let Some((name, column)) = &a.kind {
                match AlertKind::from_name(name) {
                    Some(k) => m.kinds = kind_bit(k),
                    None => {
                        c.errors.at(
                            at(*column),
                            format!(
                                "in `pattern`: unknown alert kind `{name}`: use fired, resolved, tripped, resumed, rearmed, limit or paused"
                            ),
                        );
                        return None;
                    }
                }
            }
            if let Some((name, min, column)) = &a.severity {
                match Severity::from_name(name) {
                    Some(s) => m.severity = Some((s, *min)),
                    None => {
                        c.errors.at(
                            at(*column),
                            format!("in `pattern`: unknown severity `{name}`: use {}", Severity::NAMES),
                        );
                        return None;
                    }
                }
            }
            Some(Event::Alert(m))
        }
    }
}
