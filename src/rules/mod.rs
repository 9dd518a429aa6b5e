//! Rules: from TOML files to compiled, evaluable rules.
//!
//! - [`spec`]: the file format (serde types with source spans).
//! - [`load`]: reads a folder or texts, compiles everything, collects every
//!   error with file, line and column.
//! - [`compile`]: one spec into one [`CompiledRule`].
//! - [`kinds`]: the evaluation logic of every rule kind and its state.
//! - [`expr`]: the expression language (`when = "..."`).
//! - [`ruleset`]: the immutable compiled [`RuleSet`].
//! - [`context`]: what a rule sees when it is evaluated.
//! - [`selftest`]: runs the `[[rule.test]]` tables of a rule file.
//! - [`watch`]: notices changes to the rules folder, however written.

pub mod compile;
pub mod context;
pub mod expr;
pub mod kinds;
pub mod load;
pub mod ruleset;
pub mod selftest;
pub mod spec;
pub mod units;
pub mod watch;

use std::collections::BTreeMap;
use std::sync::Arc;

use globset::GlobSet;

use crate::model::{Action, AlertSink, KindMask, Mode, Severity};
use crate::state::WindowSlot;

pub use context::{EvalCtx, WindowRegistry};
pub use kinds::{RuleLogic, RuleState};
pub use load::{compile_texts, compile_texts_with, load_dir, load_dir_with, RuleError, RuleLimits};
pub use ruleset::RuleSet;

/// Which instruments a rule watches.
#[derive(Clone, Debug)]
pub struct Scope {
    /// Patterns as written (for listing); empty means every instrument.
    pub patterns: Vec<String>,
    pub include: Option<GlobSet>,
    pub exclude_patterns: Vec<String>,
    pub exclude: Option<GlobSet>,
}

impl Scope {
    pub fn matches(&self, symbol: &str) -> bool {
        self.include.as_ref().is_none_or(|g| g.is_match(symbol))
            && !self.exclude.as_ref().is_some_and(|g| g.is_match(symbol))
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
    /// After a rule fires for an instrument it does not fire again for
    /// that instrument until this much event time has passed.
    pub cooldown_ns: i64,
    /// A condition must hold this long before it fires (`for`).
    pub hold_ns: i64,
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
        kinds::on_tick(self, ctx, state, out);
    }

    /// Runs transitions that are due at `ctx.now_ns` without a tick: a halt
    /// ending, a hold period completing, a feed gone silent.
    pub fn on_timer(&self, ctx: &EvalCtx<'_>, state: &mut RuleState, out: &mut impl AlertSink) {
        kinds::on_timer(self, ctx, state, out);
    }

    /// When `on_timer` next has something to do, if ever.
    #[inline]
    pub fn deadline(&self, ctx_last_received_ns: i64, state: &RuleState) -> Option<i64> {
        if !self.timed {
            return None;
        }
        kinds::deadline(self, ctx_last_received_ns, state)
    }

    /// Closes what this rule has open on an instrument because the rule was
    /// removed or changed by a reload.
    pub fn on_removed(&self, ctx: &EvalCtx<'_>, state: &RuleState, out: &mut impl AlertSink) {
        kinds::on_removed(self, ctx, state, out);
    }
}
