//! The compiled, type-checked form of an expression and its evaluation.
//!
//! Numbers and conditions are separate trees, so evaluation never checks a
//! type. Evaluation only reads the context and computes on the stack: it
//! allocates nothing. Recursion is bounded by the depth limit checked when
//! parsing.

use std::cmp::Ordering;

use crate::rules::context::EvalCtx;
use crate::state::{Field, Window, WindowSlot};

use super::ratio::{Ratio, SCALE};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CmpOp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl CmpOp {
    #[inline]
    fn test(self, ord: Ordering) -> bool {
        match self {
            CmpOp::Lt => ord == Ordering::Less,
            CmpOp::Le => ord != Ordering::Greater,
            CmpOp::Gt => ord == Ordering::Greater,
            CmpOp::Ge => ord != Ordering::Less,
            CmpOp::Eq => ord == Ordering::Equal,
            CmpOp::Ne => ord != Ordering::Equal,
        }
    }
}

/// A numeric expression. Its value is `None` when unknown.
#[derive(Clone, Debug)]
pub(super) enum Num {
    Lit(Ratio),
    /// Newest value of a field.
    Last(Field),
    Max(WindowSlot),
    Min(WindowSlot),
    Sum(WindowSlot),
    Count(WindowSlot),
    Mean(WindowSlot),
    First(WindowSlot),
    Vwap(WindowSlot),
    /// `sum × per`: the mean per period (`per` = period / span).
    PeriodMean {
        slot: WindowSlot,
        per: Ratio,
    },
    Drawdown(Field, WindowSlot),
    Rally(Field, WindowSlot),
    Change(Field, WindowSlot),
    Range(WindowSlot),
    Abs(Box<Num>),
    Neg(Box<Num>),
    Add(Box<(Num, Num)>),
    Sub(Box<(Num, Num)>),
    Mul(Box<(Num, Num)>),
    Div(Box<(Num, Num)>),
}

/// A condition. Its value is three-valued: `None` when unknown.
#[derive(Clone, Debug)]
pub(super) enum Cond {
    Cmp(CmpOp, Box<(Num, Num)>),
    And(Box<(Cond, Cond)>),
    Or(Box<(Cond, Cond)>),
    Not(Box<Cond>),
}

/// The window, if it holds at least one sample.
#[inline]
fn filled<'w>(ctx: &'w EvalCtx<'_>, slot: WindowSlot) -> Option<&'w Window> {
    ctx.window(slot).filter(|w| w.count() > 0)
}

/// `(a - b) / d` for raw 10^-8 values: the scale cancels.
#[inline]
fn relative(a: i64, b: i64, d: i64) -> Option<Ratio> {
    Ratio::new(i128::from(a) - i128::from(b), i128::from(d))
}

impl Num {
    pub(super) fn eval(&self, ctx: &EvalCtx<'_>) -> Option<Ratio> {
        match self {
            Num::Lit(v) => Some(*v),
            Num::Last(f) => ctx.last.field(*f).map(Ratio::fixed),
            Num::Max(s) => Some(Ratio::fixed(ctx.window(*s)?.max()?.value)),
            Num::Min(s) => Some(Ratio::fixed(ctx.window(*s)?.min()?.value)),
            Num::Sum(s) => Some(Ratio::raw_fixed(filled(ctx, *s)?.sum_raw())),
            Num::Count(s) => Some(Ratio::int(i128::from(filled(ctx, *s)?.count()))),
            Num::Mean(s) => {
                let w = filled(ctx, *s)?;
                Ratio::new(w.sum_raw(), i128::from(w.count()).checked_mul(SCALE)?)
            }
            Num::First(s) => ctx.window(*s)?.first().map(Ratio::fixed),
            Num::Vwap(s) => ctx.window(*s)?.vwap().map(Ratio::fixed),
            Num::PeriodMean { slot, per } => Ratio::raw_fixed(filled(ctx, *slot)?.sum_raw()).mul(*per),
            Num::Drawdown(f, s) => {
                let max = ctx.window(*s)?.max()?.value.raw();
                relative(max, ctx.last.field(*f)?.raw(), max)
            }
            Num::Rally(f, s) => {
                let min = ctx.window(*s)?.min()?.value.raw();
                relative(ctx.last.field(*f)?.raw(), min, min)
            }
            Num::Change(f, s) => {
                let first = ctx.window(*s)?.first()?.raw();
                relative(ctx.last.field(*f)?.raw(), first, first)
            }
            Num::Range(s) => {
                let w = ctx.window(*s)?;
                let (max, min) = (w.max()?.value.raw(), w.min()?.value.raw());
                relative(max, min, min)
            }
            Num::Abs(x) => x.eval(ctx)?.abs(),
            Num::Neg(x) => x.eval(ctx)?.neg(),
            Num::Add(b) => b.0.eval(ctx)?.add(b.1.eval(ctx)?),
            Num::Sub(b) => b.0.eval(ctx)?.sub(b.1.eval(ctx)?),
            Num::Mul(b) => b.0.eval(ctx)?.mul(b.1.eval(ctx)?),
            Num::Div(b) => b.0.eval(ctx)?.div(b.1.eval(ctx)?),
        }
    }

    /// Replaces every window slot by `map(slot)`.
    pub(super) fn map_slots(&mut self, map: &impl Fn(WindowSlot) -> WindowSlot) {
        match self {
            Num::Lit(_) | Num::Last(_) => {}
            Num::Max(s)
            | Num::Min(s)
            | Num::Sum(s)
            | Num::Count(s)
            | Num::Mean(s)
            | Num::First(s)
            | Num::Vwap(s)
            | Num::PeriodMean { slot: s, .. }
            | Num::Drawdown(_, s)
            | Num::Rally(_, s)
            | Num::Change(_, s)
            | Num::Range(s) => *s = map(*s),
            Num::Abs(x) | Num::Neg(x) => x.map_slots(map),
            Num::Add(b) | Num::Sub(b) | Num::Mul(b) | Num::Div(b) => {
                b.0.map_slots(map);
                b.1.map_slots(map);
            }
        }
    }
}

impl Cond {
    pub(super) fn eval(&self, ctx: &EvalCtx<'_>) -> Option<bool> {
        match self {
            Cond::Cmp(op, sides) => {
                let a = sides.0.eval(ctx)?;
                let b = sides.1.eval(ctx)?;
                Some(op.test(a.compare(b)))
            }
            Cond::Not(c) => c.eval(ctx).map(|v| !v),
            Cond::And(b) => match b.0.eval(ctx) {
                Some(false) => Some(false),
                left => match (left, b.1.eval(ctx)) {
                    (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                },
            },
            Cond::Or(b) => match b.0.eval(ctx) {
                Some(true) => Some(true),
                left => match (left, b.1.eval(ctx)) {
                    (_, Some(true)) => Some(true),
                    (Some(false), Some(false)) => Some(false),
                    _ => None,
                },
            },
        }
    }

    pub(super) fn map_slots(&mut self, map: &impl Fn(WindowSlot) -> WindowSlot) {
        match self {
            Cond::Cmp(_, sides) => {
                sides.0.map_slots(map);
                sides.1.map_slots(map);
            }
            Cond::And(b) | Cond::Or(b) => {
                b.0.map_slots(map);
                b.1.map_slots(map);
            }
            Cond::Not(c) => c.map_slots(map),
        }
    }
}
