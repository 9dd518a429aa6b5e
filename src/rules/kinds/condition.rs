//! Edge triggering for condition rules.
//!
//! A condition rule raises `fired` when its [`Measure`] becomes true and
//! `resolved` when it stops being true, never one alert per tick while it
//! stays true. Two options shape that:
//!
//! - `for` (hold): the measure must stay true for this long before the rule
//!   fires. A timer fires it at exactly `since + hold` when no tick arrives
//!   in between; a tick that finds the measure false first cancels it.
//! - `cooldown`: after firing for an instrument, the rule does not fire
//!   again for it until this much event time has passed. A rising edge
//!   inside the cooldown is ignored; the rule fires on the first tick after
//!   the cooldown that still finds the measure true.
//! - `clear_for` (hysteresis): once fired, the measure must stay false for
//!   this long before the rule resolves. A tick that finds it true again
//!   meanwhile keeps the episode open without a new alert; a timer
//!   resolves it at exactly `cleared + clear_for` when no tick arrives.

use crate::model::{AlertKind, AlertSink, KindMask};
use crate::rules::context::EvalCtx;
use crate::rules::CompiledRule;

use super::measures::Measure;
use super::{RuleKind, RuleStatus};

/// An edge-triggered condition rule.
#[derive(Debug)]
pub struct Condition {
    pub measure: Measure,
}

/// Per-instrument state of a condition rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConditionState {
    /// The rule has fired and not yet resolved.
    pub active: bool,
    /// While not active: when the measure became true, waiting out `for`.
    /// While active: when the measure became false, waiting out
    /// `clear_for`.
    pub pending_since_ns: Option<i64>,
    /// When the rule last fired (for `cooldown`).
    pub last_fired_ns: Option<i64>,
}

impl ConditionState {
    pub fn deadline(&self, rule: &CompiledRule) -> Option<i64> {
        let wait = if self.active { rule.clear_ns } else { rule.hold_ns };
        match self.pending_since_ns {
            Some(since) if wait > 0 => Some(since.saturating_add(wait)),
            _ => None,
        }
    }

    fn cooling_down(&self, rule: &CompiledRule, at_ns: i64) -> bool {
        rule.cooldown_ns > 0 && self.last_fired_ns.is_some_and(|t| at_ns - t < rule.cooldown_ns)
    }
}

impl RuleKind for Condition {
    type State = ConditionState;

    fn triggers(&self) -> KindMask {
        self.measure.triggers()
    }

    fn timed(&self, rule: &CompiledRule) -> bool {
        rule.hold_ns > 0 || rule.clear_ns > 0
    }

    fn deadline(&self, rule: &CompiledRule, _last_tick_ns: i64, state: &ConditionState) -> Option<i64> {
        state.deadline(rule)
    }

    fn is_open(&self, state: &ConditionState) -> bool {
        state.active
    }

    fn status(&self, rule: &CompiledRule, state: &ConditionState, _last_tick_ns: i64) -> Option<RuleStatus> {
        let since_ns = state.last_fired_ns.filter(|_| state.active)?;
        Some(RuleStatus {
            kind: AlertKind::Fired,
            since_ns,
            until_ns: None,
            severity: rule.severity,
            actions: rule.actions.clone(),
        })
    }

    #[inline]
    fn on_tick(&self, rule: &CompiledRule, ctx: &EvalCtx<'_>, state: &mut ConditionState, out: &mut impl AlertSink) {
        if state.pending_since_ns.is_some() {
            self.on_timer(rule, &EvalCtx { tick: None, ..*ctx }, state, out);
        }
        let now = ctx.now_ns;
        if self.measure.holds(ctx) {
            if state.active {
                // True again while clearing: the same episode goes on.
                state.pending_since_ns = None;
                return;
            }
            if rule.hold_ns > 0 {
                let since = *state.pending_since_ns.get_or_insert(now);
                if now - since < rule.hold_ns {
                    return;
                }
            }
            if state.cooling_down(rule, now) {
                return;
            }
            self.fire(rule, ctx, state, now, out);
        } else if state.active {
            if rule.clear_ns > 0 {
                let since = *state.pending_since_ns.get_or_insert(now);
                if now - since < rule.clear_ns {
                    return;
                }
            }
            self.resolve(rule, ctx, state, now, out);
        } else {
            state.pending_since_ns = None;
        }
    }

    fn on_timer(&self, rule: &CompiledRule, ctx: &EvalCtx<'_>, state: &mut ConditionState, out: &mut impl AlertSink) {
        let Some(due) = state.deadline(rule) else { return };
        if ctx.now_ns < due {
            return;
        }
        if state.active {
            self.resolve(rule, ctx, state, due, out);
        } else if !state.cooling_down(rule, due) {
            self.fire(rule, ctx, state, due, out);
        }
    }
}

impl Condition {
    fn fire(
        &self,
        rule: &CompiledRule,
        ctx: &EvalCtx<'_>,
        state: &mut ConditionState,
        at_ns: i64,
        out: &mut impl AlertSink,
    ) {
        state.active = true;
        state.pending_since_ns = None;
        state.last_fired_ns = Some(at_ns);
        out.emit(ctx.alert(rule, AlertKind::Fired, at_ns, self.measure.values(ctx)));
    }

    fn resolve(
        &self,
        rule: &CompiledRule,
        ctx: &EvalCtx<'_>,
        state: &mut ConditionState,
        at_ns: i64,
        out: &mut impl AlertSink,
    ) {
        state.active = false;
        state.pending_since_ns = None;
        out.emit(
            ctx.alert(rule, AlertKind::Resolved, at_ns, self.measure.values(ctx))
                .without_actions(),
        );
    }
}
