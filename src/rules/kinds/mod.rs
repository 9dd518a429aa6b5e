//! Rule kinds: what each one computes and the state it keeps per
//! instrument. `rules/README.md` states every kind's semantics for rule
//! authors; the code here is the definition.
//!
//! A kind is one type implementing [`RuleKind`] (its compiled parameters,
//! with an associated `State` type) in one file, plus its entries in
//! [`KINDS`] (the names rule files use, the parameters each takes, and how
//! each compiles). [`rule_kinds!`] turns the list of kinds into the two
//! enums the engine stores, [`RuleLogic`] and [`RuleState`], so that a
//! rule's state sits inline in its instrument's state (no allocation, no
//! pointer to follow per tick) and every dispatch is one `match`. A new
//! kind is a new file and one line in each list below.
//!
//! - [`condition`]: edge-triggered conditions (`fired` when one becomes
//!   true, `resolved` when it clears) with `for` and `cooldown`, shared by
//!   drawdown, rally, velocity, spread, mark/index deviation, volume spike
//!   and expressions; [`measures`] computes those conditions.
//! - [`breaker`]: tiered circuit breakers (armed, tripped, resumed).
//! - [`band`]: LULD-style price bands (limit state, then pause).
//! - [`stale`]: feeds that went silent, raised by timers.
//! - [`gap`]: feeds that skipped sequence numbers.
//! - [`halt`]: expression rules with a halt state (`when` with `pause`:
//!   limit state, pause or halt, resume, latches per session).
//! - [`pattern`]: sequences, counts and absences over ticks and alerts.

pub mod band;
pub mod breaker;
pub mod condition;
pub mod gap;
pub mod halt;
pub mod measures;
pub mod pattern;
pub mod stale;

use std::fmt;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::model::{Action, Alert, AlertKind, AlertSink, KindMask, Severity};

use super::compile::KindCompiler;
use super::context::EvalCtx;
use super::CompiledRule;

pub use band::{BandState, PriceBand};
pub use breaker::{Breaker, BreakerState, Tier};
pub use condition::{Condition, ConditionState};
pub use gap::{FeedGap, GapState};
pub use halt::{HaltRule, HaltState};
pub use measures::Measure;
pub use pattern::{Pattern, PatternCounts, PatternMore, PatternState};
pub use stale::{StaleFeed, StaleState};

/// What a kind of rule computes: its parameters, compiled once, and what
/// it does with its per-instrument [`RuleKind::State`] on each tick and
/// timer. `rule` carries what every rule has (id, severity, actions,
/// `for`, `cooldown`).
pub trait RuleKind: fmt::Debug + Send + Sync + 'static {
    /// What the rule keeps per instrument: checkpointed with it, carried
    /// over a reload while the rule's definition is unchanged.
    type State: Clone + Default + fmt::Debug + PartialEq + Eq + Serialize + DeserializeOwned + Send + Sync + 'static;

    /// Tick kinds whose arrival can change the outcome.
    fn triggers(&self) -> KindMask;

    /// Whether the rule can ever wait for a timer (a `for` period, a halt,
    /// a silent feed); the engine asks the others for no deadline.
    fn timed(&self, rule: &CompiledRule) -> bool;

    /// Evaluates the tick in `ctx` (first running any timer transition that
    /// fell due before it).
    fn on_tick(&self, rule: &CompiledRule, ctx: &EvalCtx<'_>, state: &mut Self::State, out: &mut impl AlertSink);

    /// Runs transitions due at `ctx.now_ns` without a tick.
    fn on_timer(&self, _rule: &CompiledRule, _ctx: &EvalCtx<'_>, _state: &mut Self::State, _out: &mut impl AlertSink) {}

    /// Whether the rule reads other rules' alerts ([`RuleKind::on_alert`]).
    fn watches_alerts(&self) -> bool {
        false
    }

    /// Takes an alert raised on the instrument by another rule, in the
    /// evaluation `ctx` (a tick's or a timer's).
    fn on_alert(
        &self,
        _rule: &CompiledRule,
        _ctx: &EvalCtx<'_>,
        _alert: &Alert,
        _state: &mut Self::State,
        _out: &mut impl AlertSink,
    ) {
    }

    /// When [`RuleKind::on_timer`] next has something to do, if ever.
    fn deadline(&self, _rule: &CompiledRule, _last_tick_ns: i64, _state: &Self::State) -> Option<i64> {
        None
    }

    /// Whether the rule has something open on the instrument (fired, a
    /// halt, a limit state) that must be closed if the rule goes away.
    fn is_open(&self, state: &Self::State) -> bool;

    /// Whether a saved state (from a checkpoint) stays within this
    /// definition; one that does not starts fresh.
    fn fits(&self, _state: &Self::State) -> bool {
        true
    }

    /// What the rule has in force on the instrument right now (a halt, a
    /// limit state, a condition that fired and has not resolved), for the
    /// current-state view; `None` when nothing is.
    fn status(&self, _rule: &CompiledRule, _state: &Self::State, _last_tick_ns: i64) -> Option<RuleStatus> {
        None
    }
}

/// What a rule has in force on an instrument right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleStatus {
    /// The alert that put it in force: `fired`, `tripped`, `limit` or
    /// `paused`.
    pub kind: AlertKind,
    /// When it came into force (the alert's event time).
    pub since_ns: i64,
    /// When it ends by itself (a halt's or a pause's end), if it does.
    pub until_ns: Option<i64>,
    pub severity: Severity,
    /// What acting systems were told to do.
    pub actions: std::sync::Arc<[Action]>,
}

/// A named kind as rule files write it.
pub struct KindEntry {
    /// The `kind = "..."` name.
    pub name: &'static str,
    /// The parameter keys it takes (besides the keys every rule has).
    pub params: &'static [&'static str],
    /// True when the kind's halts have their own durations, so `cooldown`
    /// does not apply.
    pub own_durations: bool,
    pub(crate) compile: fn(&mut KindCompiler<'_>) -> Option<RuleLogic>,
}

impl fmt::Debug for KindEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KindEntry")
            .field("name", &self.name)
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// Every named kind, in the order `airbag check` lists them.
pub const KINDS: &[KindEntry] = &[
    measures::DRAWDOWN,
    measures::RALLY,
    measures::VELOCITY,
    measures::SPREAD,
    measures::MARK_INDEX_DEVIATION,
    measures::VOLUME_SPIKE,
    stale::KIND,
    gap::KIND,
    breaker::KIND,
    band::KIND,
    pattern::KIND,
];

/// The entry of the kind named `name`.
pub fn kind(name: &str) -> Option<&'static KindEntry> {
    KINDS.iter().find(|k| k.name == name)
}

/// Declares the kinds: [`RuleLogic`] holds one kind's parameters,
/// [`RuleState`] one kind's state (variants in the same order, which is
/// also their order in checkpoints: add new kinds at the end), and each
/// [`RuleLogic`] method dispatches to the kind's [`RuleKind`] method. A
/// state of another kind than its rule (which only a damaged checkpoint
/// could give) is replaced by the rule's initial state.
macro_rules! rule_kinds {
    ($($variant:ident($kind:ty)),+ $(,)?) => {
        /// What a rule computes: one kind's compiled parameters.
        #[derive(Debug)]
        pub enum RuleLogic {
            $($variant($kind),)+
        }

        /// A rule's state for one instrument.
        #[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        pub enum RuleState {
            $($variant(<$kind as RuleKind>::State),)+
        }

        impl RuleLogic {
            pub fn initial_state(&self) -> RuleState {
                match self {
                    $(RuleLogic::$variant(_) => RuleState::$variant(Default::default()),)+
                }
            }

            pub fn triggers(&self) -> KindMask {
                match self {
                    $(RuleLogic::$variant(k) => k.triggers(),)+
                }
            }

            pub fn timed(&self, rule: &CompiledRule) -> bool {
                match self {
                    $(RuleLogic::$variant(k) => k.timed(rule),)+
                }
            }

            #[inline]
            pub(crate) fn on_tick(&self, rule: &CompiledRule, ctx: &EvalCtx<'_>, state: &mut RuleState, out: &mut impl AlertSink) {
                match (self, &mut *state) {
                    $((RuleLogic::$variant(k), RuleState::$variant(s)) => k.on_tick(rule, ctx, s, out),)+
                    #[allow(unreachable_patterns)]
                    _ => *state = self.initial_state(),
                }
            }

            pub(crate) fn on_timer(&self, rule: &CompiledRule, ctx: &EvalCtx<'_>, state: &mut RuleState, out: &mut impl AlertSink) {
                match (self, &mut *state) {
                    $((RuleLogic::$variant(k), RuleState::$variant(s)) => k.on_timer(rule, ctx, s, out),)+
                    #[allow(unreachable_patterns)]
                    _ => *state = self.initial_state(),
                }
            }

            pub fn watches_alerts(&self) -> bool {
                match self {
                    $(RuleLogic::$variant(k) => k.watches_alerts(),)+
                }
            }

            pub(crate) fn on_alert(&self, rule: &CompiledRule, ctx: &EvalCtx<'_>, alert: &Alert, state: &mut RuleState, out: &mut impl AlertSink) {
                match (self, &mut *state) {
                    $((RuleLogic::$variant(k), RuleState::$variant(s)) => k.on_alert(rule, ctx, alert, s, out),)+
                    #[allow(unreachable_patterns)]
                    _ => *state = self.initial_state(),
                }
            }

            #[inline]
            pub(crate) fn deadline(&self, rule: &CompiledRule, last_tick_ns: i64, state: &RuleState) -> Option<i64> {
                match (self, state) {
                    $((RuleLogic::$variant(k), RuleState::$variant(s)) => k.deadline(rule, last_tick_ns, s),)+
                    #[allow(unreachable_patterns)]
                    _ => None,
                }
            }

            pub(crate) fn is_open(&self, state: &RuleState) -> bool {
                match (self, state) {
                    $((RuleLogic::$variant(k), RuleState::$variant(s)) => k.is_open(s),)+
                    #[allow(unreachable_patterns)]
                    _ => false,
                }
            }

            /// What the rule has in force with `state`, if anything.
            pub(crate) fn status(&self, rule: &CompiledRule, state: &RuleState, last_tick_ns: i64) -> Option<RuleStatus> {
                match (self, state) {
                    $((RuleLogic::$variant(k), RuleState::$variant(s)) => k.status(rule, s, last_tick_ns),)+
                    #[allow(unreachable_patterns)]
                    _ => None,
                }
            }

            /// Whether `state` is of this rule's kind and stays within its
            /// definition.
            pub fn fits(&self, state: &RuleState) -> bool {
                match (self, state) {
                    $((RuleLogic::$variant(k), RuleState::$variant(s)) => k.fits(s),)+
                    #[allow(unreachable_patterns)]
                    _ => false,
                }
            }
        }
    };
}

rule_kinds! {
    Condition(Condition),
    Breaker(Breaker),
    Band(PriceBand),
    Stale(StaleFeed),
    Gap(FeedGap),
    Halt(HaltRule),
    Pattern(Pattern),
}

/// Closes what `rule` has open on an instrument because the rule was
/// removed or changed by a reload.
pub(crate) fn on_removed(rule: &CompiledRule, ctx: &EvalCtx<'_>, state: &RuleState, out: &mut impl AlertSink) {
    close(rule, ctx, state, "rule removed or changed by a reload", out);
}

/// Closes what `rule` has open on an instrument (a `resolved` alert
/// without actions, saying `why`); returns whether it had anything open.
pub(crate) fn close(
    rule: &CompiledRule,
    ctx: &EvalCtx<'_>,
    state: &RuleState,
    why: &'static str,
    out: &mut impl AlertSink,
) -> bool {
    if !rule.logic.is_open(state) {
        return false;
    }
    let mut alert = ctx.alert(rule, AlertKind::Resolved, ctx.now_ns, Vec::new());
    alert.actions = std::sync::Arc::from([]);
    alert.reason = Some(why.into());
    out.emit(alert);
    true
}
