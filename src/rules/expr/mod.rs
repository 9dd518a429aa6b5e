//! The expression form of rule conditions (`when = "..."`).
//!
//! A condition such as
//! `drawdown(price, 3s) >= 8% and volume(1s) > 5 * mean(volume(1s), 5m)`
//! is parsed, type-checked and compiled once, at load time, by [`compile()`]
//! into a [`CompiledExpr`]. The language is described for rule authors in
//! `rules/EXPRESSIONS.md`; in short:
//!
//! - numbers `5`, `2.5`, fractions `8%`, `50bp`; durations `3s`, `500ms`,
//!   `5m` only as window arguments;
//! - fields (newest value): `price size notional bid ask mid spread mark
//!   index`;
//! - window functions `max min sum count mean first` `(field, W)`,
//!   `vwap(W)`, `volume(W)`; relative moves `drawdown rally change range`
//!   `(field, W)`; per-period means `mean(sum(f, W), L)`,
//!   `mean(volume(W), L)`; `abs(x)`;
//! - `+ - * /`, unary `-`, comparisons `< <= > >= == !=` (not chaining),
//!   `and or not`, parentheses.
//!
//! Pipeline: `lexer` (tokens with 1-based character columns), `parser`
//! (untyped tree, at most [`MAX_NODES`] nodes and [`MAX_DEPTH`] levels),
//! `compile` (types, windows, constant folding) and
//! `eval` (separate number and condition trees, so evaluation never
//! checks a type; recursion is bounded by the depth limit; nothing is
//! allocated). Two shapes are specialised when compiling: a comparison
//! with a constant keeps the constant inline, and a relative move compared
//! with a constant (`drawdown(price, 3s) >= 8%`) is fused into one
//! cross-multiplication of the window's raw values.
//!
//! # Exactness
//!
//! No floating point. Every number is an exact rational `num / den` of two
//! `i128` (`ratio`): fields and window values are `Fixed` (`raw / 10^8`),
//! literals are reduced fractions (`8%` is `2 / 25`), relative moves are
//! `(a - b) / d` on raw values, means are `sum / (count × 10^8)`. `+ - * /`
//! are exact; comparison is exact cross-multiplication, widened to 256 bits
//! when the products do not fit `i128`, so it never overflows. Nothing is
//! rounded between the data and the decision, hence `drawdown(price, 3s)
//! >= 8%` holds when a price falls from 100 to exactly 92 and not at 92.01,
//! and `> 8%` holds at any fall above 8%, however small the excess. An
//! arithmetic result that does not fit `i128` even in lowest terms is
//! unknown. Only [`CompiledExpr::values`] truncates, for display.
//!
//! # Missing data
//!
//! A field no tick has carried yet, an empty window (for every window
//! function, `count` and `sum` included), division by zero and overflow make
//! a value unknown. Conditions are three-valued (comparisons with an
//! unknown side and `not` of unknown are unknown; `and` is false if either
//! side is false, `or` true if either side is true) and
//! [`CompiledExpr::eval`] is true only for a definite true.

mod compile;
mod eval;
mod functions;
mod lexer;
mod parser;
mod ratio;

#[cfg(test)]
mod tests;

use std::borrow::Cow;

use crate::model::{AlertValue, KindMask};
use crate::rules::context::{EvalCtx, WindowRegistry};
use crate::state::WindowSlot;

use self::eval::{Cond, Num};

pub use self::compile::{Binder, ExprScope};

/// Most syntax-tree nodes (values, operators, calls) one expression may
/// have.
pub const MAX_NODES: usize = 256;
/// Deepest nesting of one expression (parentheses, calls, operators).
pub const MAX_DEPTH: usize = 32;

/// A parse or type error, with the 1-based character column it points at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct ExprError {
    pub column: usize,
    pub message: String,
}

/// A condition compiled once at load time.
#[derive(Debug, Clone)]
pub struct CompiledExpr {
    text: Box<str>,
    root: Cond,
    slots: Vec<WindowSlot>,
    triggers: KindMask,
    /// Each comparison side, by its source text, for [`CompiledExpr::values`].
    explain: Vec<(Cow<'static, str>, Num)>,
}

/// Compiles `text`, asking `registry` for the windows it reads (only once
/// the whole expression has compiled, so a failed expression requests
/// nothing).
///
/// # Errors
/// The first error found, with its column.
pub fn compile(text: &str, registry: &mut WindowRegistry) -> Result<CompiledExpr, ExprError> {
    compile_in(text, registry, ExprScope::Instrument)
}

/// As [`compile()`], for evaluation in `scope`: a group rule's expression
/// reads its members, not one instrument's fields and windows.
///
/// # Errors
/// The first error found, with its column.
pub fn compile_in(text: &str, registry: &mut WindowRegistry, scope: ExprScope) -> Result<CompiledExpr, ExprError> {
    compile_with(text, registry, scope, &ExprEnv::default()).map_err(|(_, e)| e)
}

/// What a rule gives its expressions besides market data: named
/// sub-expressions (`[rule.let]`) and a trading session
/// (`[rule.session]`).
#[derive(Debug, Default, Clone)]
pub struct ExprEnv {
    /// `(name, expression)`, as written.
    pub lets: Vec<(String, String)>,
    pub session: Option<std::sync::Arc<crate::rules::calendar::Calendar>>,
    /// The rule's look-back restarts after each resume (`lookback =
    /// "resume"`): only window functions that read a window's max or min
    /// may be used, the others keep their whole window.
    pub lookback_resume: bool,
}

/// Where an error of [`compile_with`] is: in the expression, or in the
/// `let` definition at this index of [`ExprEnv::lets`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorIn {
    Expression,
    Let(usize),
}

/// As [`compile_in`], with a rule's `let` definitions and session: each
/// definition is checked on its own (its errors point into its own text),
/// then compiled where the expression names it.
///
/// # Errors
/// The first error found, with the text it is in and its column.
pub fn compile_with(
    text: &str,
    registry: &mut WindowRegistry,
    scope: ExprScope,
    env: &ExprEnv,
) -> Result<CompiledExpr, (ErrorIn, ExprError)> {
    compile_full(text, registry, scope, env, None)
}

/// As [`compile_in`], for a pattern step whose condition may read values
/// earlier steps bound (`a.price`), resolved by `binder`.
///
/// # Errors
/// The first error found, with its column.
pub fn compile_bound(
    text: &str,
    registry: &mut WindowRegistry,
    scope: ExprScope,
    binder: Option<Binder<'_>>,
) -> Result<CompiledExpr, ExprError> {
    compile_full(text, registry, scope, &ExprEnv::default(), binder).map_err(|(_, e)| e)
}

fn compile_full(
    text: &str,
    registry: &mut WindowRegistry,
    scope: ExprScope,
    env: &ExprEnv,
    binder: Option<Binder<'_>>,
) -> Result<CompiledExpr, (ErrorIn, ExprError)> {
    let mut lets = Vec::with_capacity(env.lets.len());
    for (i, (name, body)) in env.lets.iter().enumerate() {
        let tokens = lexer::lex(body).map_err(|e| (ErrorIn::Let(i), e))?;
        let tree = parser::parse(body, &tokens).map_err(|e| (ErrorIn::Let(i), e))?;
        lets.push((name.as_str(), tree));
    }
    for (i, (_, tree)) in lets.iter().enumerate() {
        compile::check_let(tree, scope, env, &lets).map_err(|e| (ErrorIn::Let(i), e))?;
    }
    let at = |e| (ErrorIn::Expression, e);
    let tokens = lexer::lex(text).map_err(at)?;
    let tree = parser::parse(text, &tokens).map_err(at)?;
    let compiled = compile::compile(&tree, scope, env, &lets, binder).map_err(at)?;
    let slots: Vec<WindowSlot> = compiled
        .windows
        .iter()
        .map(|&(key, needs)| registry.request(key, needs))
        .collect();
    let map = |local: WindowSlot| slots[local.0 as usize];
    let mut root = compiled.root;
    root.map_slots(&map);
    let explain = compiled
        .explain
        .into_iter()
        .map(|(name, mut num)| {
            num.map_slots(&map);
            (Cow::Owned(name), num)
        })
        .collect();
    Ok(CompiledExpr {
        text: text.into(),
        root,
        slots,
        triggers: compiled.triggers,
        explain,
    })
}

impl CompiledExpr {
    /// The tick kinds that can change the value: those carrying the fields
    /// it reads.
    pub fn triggers(&self) -> KindMask {
        self.triggers
    }

    /// Every window slot it reads, each once.
    pub fn slots(&self) -> &[WindowSlot] {
        &self.slots
    }

    /// The expression as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether the condition is definitely true (unknown counts as not
    /// true). Allocates nothing.
    #[inline]
    pub fn eval(&self, ctx: &EvalCtx<'_>) -> bool {
        self.root.eval(ctx) == Some(true)
    }

    /// The three-valued result: `None` when unknown.
    pub fn eval_tri(&self, ctx: &EvalCtx<'_>) -> Option<bool> {
        self.root.eval(ctx)
    }

    /// The value of each comparison side, named by its source text
    /// (`drawdown(price, 3s)`, `8%`), truncated to 8 decimals; fractions
    /// as fractions (8% is 0.08). Unknown values are left out; a name used
    /// by several comparisons appears once.
    pub fn values(&self, ctx: &EvalCtx<'_>) -> Vec<AlertValue> {
        self.explain
            .iter()
            .filter_map(|(name, num)| {
                let value = num.eval(ctx)?.to_fixed()?;
                Some(AlertValue {
                    name: name.clone(),
                    value,
                })
            })
            .collect()
    }
}
