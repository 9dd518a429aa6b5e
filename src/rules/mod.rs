//! Rules: from TOML files to compiled, evaluable rules.
//!
//! - [`spec`]: the file format (serde types with source spans).
//! - [`load`]: reads a folder or texts, compiles everything, collects every
//!   error with file, line and column, and the `[[rule.test]]` tables (run
//!   by [`crate::service::rulebook`], which loads rules for use).
//! - [`compile`]: one spec into one [`CompiledRule`].
//! - [`kinds`]: the evaluation logic of every rule kind and its state.
//! - [`expr`]: the expression language (`when = "..."`).
//! - [`ruleset`]: the immutable compiled [`RuleSet`].
//! - [`context`]: what a rule sees when it is evaluated.
//! - [`watch`]: notices changes to the rules folder, however written.

pub mod calendar;
pub mod compile;
pub mod context;
pub mod expr;
pub mod kinds;
pub mod load;
pub mod ruleset;
pub mod spec;
pub mod units;
pub mod watch;

use std::collections::BTreeMap;
use std::sync::Arc;

use globset::GlobSet;

use crate::model::{Action, AlertSink, KindMask, Mode, Severity};
use crate::refdata::{InstrumentRef, Product, RefData, Targets};
use crate::state::WindowSlot;

pub use context::{EvalCtx, WindowRegistry};
pub use kinds::{RuleLogic, RuleState, RuleStatus};
pub use load::{compile, compile_dir, Compiled, RuleError, RuleLimits, RuleTestCase};
pub use ruleset::RuleSet;

/// Compiles rule texts for a unit test below the service: their own
/// `[[rule.test]]` tables are not run.
#[cfg(test)]
pub(crate) fn compile_for_test(files: &[(String, String)]) -> Result<RuleSet, Vec<RuleError>> {
    compile(files, &RuleLimits::default()).map(Compiled::without_tests)
}

/// Which instruments a rule watches: by symbol (globs) and by reference
/// data (`select`); both must match when both are given.
#[derive(Clone, Debug)]
pub struct Scope {
    /// Patterns as written (for listing); empty means every instrument.
    pub patterns: Vec<String>,
    pub include: Option<GlobSet>,
    pub exclude_patterns: Vec<String>,
    pub exclude: Option<GlobSet>,
    pub select: Option<Selector>,
}

impl Scope {
    /// Whether the rule watches `symbol`, whose reference data is looked up
    /// in `refdata` when the rule selects by it.
    pub fn matches(&self, symbol: &str, refdata: &RefData) -> bool {
        self.include.as_ref().is_none_or(|g| g.is_match(symbol))
            && !self.exclude.as_ref().is_some_and(|g| g.is_match(symbol))
            && self
                .select
                .as_ref()
                .is_none_or(|s| refdata.instrument(symbol).is_some_and(|i| s.matches(i)))
    }
}

/// Which group a group rule is evaluated over.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum GroupScope {
    /// Each underlying's instruments form a group.
    Underlying,
    /// A named `[[group]]`.
    Named(Arc<str>),
}

/// How a group rule is evaluated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRule {
    pub scope: GroupScope,
    /// Members whose newest tick is older than this are left out of
    /// aggregates.
    pub max_age_ns: Option<i64>,
    /// Members further than this from the median are left out.
    pub outlier: Option<crate::model::Fraction>,
}

/// Instruments chosen by reference data: each list given must contain the
/// instrument's value; an instrument without reference data is never
/// selected.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    pub underlying: Vec<String>,
    pub product: Vec<Product>,
    pub quote: Vec<String>,
    /// Label name -> accepted values.
    pub labels: Vec<(String, Vec<String>)>,
}

impl Selector {
    pub fn matches(&self, instrument: &InstrumentRef) -> bool {
        fn any(wanted: &[String], value: Option<&str>) -> bool {
            wanted.is_empty() || value.is_some_and(|v| wanted.iter().any(|w| w == v))
        }
        any(&self.underlying, instrument.underlying.as_deref())
            && (self.product.is_empty() || instrument.product.is_some_and(|p| self.product.contains(&p)))
            && any(&self.quote, instrument.quote.as_deref())
            && self
                .labels
                .iter()
                .all(|(name, values)| any(values, instrument.labels.get(name).map(String::as_str)))
    }
}

/// Where a rule was defined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSource {
    pub file: String,
    pub line: usize,
}

/// A rule ready to evaluate: everything parsed, checked and resolved.
#[derive(Debug)]
pub struct CompiledRule {
    pub id: Arc<str>,
    /// Hash of the rule's definition: a rule whose id and hash are
    /// unchanged across a reload keeps its state.
    pub content_hash: u64,
    /// `kind` as written, or `expression`.
    pub kind_name: &'static str,
    pub description: Option<String>,
    pub scope: Scope,
    pub severity: Severity,
    pub actions: Arc<[Action]>,
    pub mode: Mode,
    /// Which instruments its alerts act on; `None`: its own.
    pub targets: Option<Targets>,
    /// For a rule evaluated over a group of instruments: which group, and
    /// how its aggregates filter members. `None`: per instrument.
    pub group: Option<GroupRule>,
    /// After a rule fires for an instrument it does not fire again for
    /// that instrument until this much event time has passed.
    pub cooldown_ns: i64,
    /// A condition must hold this long before it fires (`for`).
    pub hold_ns: i64,
    /// A fired condition (a band's limit state) must stay clear this long
    /// before it resolves (`clear_for`): one episode, one alert pair.
    pub clear_ns: i64,
    pub labels: BTreeMap<String, String>,
    pub logic: RuleLogic,
    /// Windows the rule reads.
    pub slots: Vec<WindowSlot>,
    /// Tick kinds that make it evaluate.
    pub triggers: KindMask,
    /// Whether the rule can ever wait for a timer (a `for` period, a halt,
    /// a silent feed); the engine asks the others for no deadline.
    pub timed: bool,
    pub source: RuleSource,
}

impl CompiledRule {
    pub fn initial_state(&self) -> RuleState {
        self.logic.initial_state()
    }

    /// Evaluates the rule on the tick in `ctx` (first running any timer
    /// transition that fell due before it).
    #[inline]
    pub fn on_tick(&self, ctx: &EvalCtx<'_>, state: &mut RuleState, out: &mut impl AlertSink) {
        self.logic.on_tick(self, ctx, state, out);
    }

    /// Runs transitions that are due at `ctx.now_ns` without a tick: a halt
    /// ending, a hold period completing, a feed gone silent.
    pub fn on_timer(&self, ctx: &EvalCtx<'_>, state: &mut RuleState, out: &mut impl AlertSink) {
        self.logic.on_timer(self, ctx, state, out);
    }

    /// Takes an alert raised on the instrument by another rule (only rules
    /// that [watch alerts](RuleLogic::watches_alerts) do anything).
    pub fn on_alert(
        &self,
        ctx: &EvalCtx<'_>,
        alert: &crate::model::Alert,
        state: &mut RuleState,
        out: &mut impl AlertSink,
    ) {
        self.logic.on_alert(self, ctx, alert, state, out);
    }

    /// When `on_timer` next has something to do, if ever.
    #[inline]
    pub fn deadline(&self, last_tick_ns: i64, state: &RuleState) -> Option<i64> {
        if !self.timed {
            return None;
        }
        self.logic.deadline(self, last_tick_ns, state)
    }

    /// What the rule has in force on an instrument with `state`, if
    /// anything.
    pub fn status(&self, state: &RuleState, last_tick_ns: i64) -> Option<RuleStatus> {
        self.logic.status(self, state, last_tick_ns)
    }

    /// Closes what this rule has open on an instrument because the rule was
    /// removed or changed by a reload.
    pub fn on_removed(&self, ctx: &EvalCtx<'_>, state: &RuleState, out: &mut impl AlertSink) {
        kinds::on_removed(self, ctx, state, out);
    }

    /// Closes what this rule has open on an instrument, saying `why`;
    /// returns whether it had anything open.
    pub fn close(&self, ctx: &EvalCtx<'_>, state: &RuleState, why: &'static str, out: &mut impl AlertSink) -> bool {
        kinds::close(self, ctx, state, why, out)
    }

    /// Whether the rule can halt trading: `critical`, or action `halt`
    /// (a breaker tier's or a price band's pause included).
    pub fn can_halt(&self) -> bool {
        if self.severity == Severity::Critical || self.actions.contains(&Action::Halt) {
            return true;
        }
        match &self.logic {
            RuleLogic::Breaker(b) => b
                .tiers
                .iter()
                .any(|t| t.severity == Severity::Critical || t.actions.contains(&Action::Halt)),
            RuleLogic::Band(_) | RuleLogic::Halt(_) => true,
            _ => false,
        }
    }
}
