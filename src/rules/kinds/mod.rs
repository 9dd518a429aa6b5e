//! Rule kinds: what each one computes and the state it keeps per
//! instrument. `rules/README.md` states every kind's semantics for rule
//! authors; the code here is the definition.
//!
//! - [`condition`]: edge-triggered conditions (`fired` when one becomes
//!   true, `resolved` when it clears) with `for` and `cooldown`, shared by
//!   drawdown, rally, velocity, spread, mark/index deviation, volume spike
//!   and expressions; [`measures`] computes those conditions.
//! - [`breaker`]: tiered circuit breakers (armed, tripped, resumed).
//! - [`band`]: LULD-style price bands (limit state, then pause).
//! - [`stale`]: feeds that went silent, raised by timers.
//! - [`gap`]: feeds that skipped sequence numbers.

pub mod band;
pub mod breaker;
pub mod condition;
pub mod gap;
pub mod measures;
pub mod stale;

use crate::model::AlertSink;

use super::context::EvalCtx;
use super::CompiledRule;

pub use band::{BandState, PriceBand};
pub use breaker::{Breaker, BreakerState, Tier};
pub use condition::{Condition, ConditionState};
pub use gap::{FeedGap, GapState};
pub use measures::Measure;
pub use stale::{StaleFeed, StaleState};

/// What a rule computes.
#[derive(Debug)]
pub enum RuleLogic {
    Condition(Condition),
    Breaker(Breaker),
    Band(PriceBand),
    Stale(StaleFeed),
    Gap(FeedGap),
}

/// A rule's state for one instrument.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RuleState {
    Condition(ConditionState),
    Breaker(BreakerState),
    Band(BandState),
    Stale(StaleState),
    Gap(GapState),
}

impl RuleLogic {
    pub fn initial_state(&self) -> RuleState {
        match self {
            RuleLogic::Condition(_) => RuleState::Condition(ConditionState::default()),
            RuleLogic::Breaker(_) => RuleState::Breaker(BreakerState::default()),
            RuleLogic::Band(_) => RuleState::Band(BandState::default()),
            RuleLogic::Stale(_) => RuleState::Stale(StaleState::default()),
            RuleLogic::Gap(_) => RuleState::Gap(GapState::default()),
        }
    }
}

#[inline]
pub(crate) fn on_tick(rule: &CompiledRule, ctx: &EvalCtx<'_>, state: &mut RuleState, out: &mut impl AlertSink) {
    match (&rule.logic, state) {
        (RuleLogic::Condition(c), RuleState::Condition(s)) => c.on_tick(rule, ctx, s, out),
        (RuleLogic::Breaker(b), RuleState::Breaker(s)) => b.on_tick(rule, ctx, s, out),
        (RuleLogic::Band(b), RuleState::Band(s)) => b.on_tick(rule, ctx, s, out),
        (RuleLogic::Stale(f), RuleState::Stale(s)) => f.on_tick(rule, ctx, s, out),
        (RuleLogic::Gap(g), RuleState::Gap(s)) => g.on_tick(rule, ctx, s, out),
        (_, state) => *state = rule.initial_state(),
    }
}

pub(crate) fn on_timer(rule: &CompiledRule, ctx: &EvalCtx<'_>, state: &mut RuleState, out: &mut impl AlertSink) {
    match (&rule.logic, state) {
        (RuleLogic::Condition(c), RuleState::Condition(s)) => c.on_timer(rule, ctx, s, out),
        (RuleLogic::Breaker(b), RuleState::Breaker(s)) => b.on_timer(rule, ctx, s, out),
        (RuleLogic::Band(b), RuleState::Band(s)) => b.on_timer(rule, ctx, s, out),
        (RuleLogic::Stale(f), RuleState::Stale(s)) => f.on_timer(rule, ctx, s, out),
        (RuleLogic::Gap(_), RuleState::Gap(_)) => {}
        (_, state) => *state = rule.initial_state(),
    }
}

#[inline]
pub(crate) fn deadline(rule: &CompiledRule, last_received_ns: i64, state: &RuleState) -> Option<i64> {
    match (&rule.logic, state) {
        (RuleLogic::Condition(_), RuleState::Condition(s)) => s.deadline(rule),
        (RuleLogic::Breaker(_), RuleState::Breaker(s)) => s.deadline(),
        (RuleLogic::Band(b), RuleState::Band(s)) => s.deadline(b),
        (RuleLogic::Stale(f), RuleState::Stale(s)) => s.deadline(f, last_received_ns),
        _ => None,
    }
}

pub(crate) fn on_removed(rule: &CompiledRule, ctx: &EvalCtx<'_>, state: &RuleState, out: &mut impl AlertSink) {
    let open = match state {
        RuleState::Condition(s) => s.active,
        RuleState::Breaker(s) => !s.is_armed(),
        RuleState::Band(s) => !s.is_normal(),
        RuleState::Stale(s) => s.stale,
        RuleState::Gap(_) => false,
    };
    if open {
        let mut alert = ctx.alert(rule, crate::model::AlertKind::Resolved, ctx.now_ns, Vec::new());
        alert.actions = std::sync::Arc::from([]);
        alert.reason = Some("rule removed or changed by a reload".into());
        out.emit(alert);
    }
}
