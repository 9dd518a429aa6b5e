//! The compiled, type-checked form of an expression and its evaluation.
//!
//! Numbers and conditions are separate trees, so evaluation never checks a
//! type. Evaluation only reads the context and computes on the stack: it
//! allocates nothing. Recursion is bounded by the depth limit checked when
//! parsing.

use std::cmp::Ordering;

use smallvec::SmallVec;

use crate::refdata::Product;
use crate::rules::context::{EvalCtx, GroupView, RefField, Source};
use crate::state::{Field, Window, WindowSlot};

use super::functions::{ExtCond, ExtNum};
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
    /// The operator with its sides swapped: `a < b` is `b > a`.
    pub(super) fn flip(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
            other => other,
        }
    }

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

/// A relative move `(a - b) / d` read from one window (and the newest
/// value of its field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Rel {
    /// `(max - f) / max`
    Drawdown,
    /// `(f - min) / min`
    Rally,
    /// `(f - first) / first`
    Change,
    /// `(max - min) / min`
    Range,
}

impl Rel {
    /// `(a, b, d)` with the move being `(a - b) / d`, as raw 10^-8 counts
    /// (the scale cancels).
    #[inline(always)]
    fn parts(self, field: Field, slot: WindowSlot, ctx: &EvalCtx<'_>) -> Option<(i64, i64, i64)> {
        Some(match self {
            Rel::Drawdown => {
                let max = ctx.max(slot)?.value.raw();
                (max, ctx.last.field(field)?.raw(), max)
            }
            Rel::Rally => {
                let min = ctx.min(slot)?.value.raw();
                (ctx.last.field(field)?.raw(), min, min)
            }
            Rel::Change => {
                let first = ctx.window(slot)?.first()?.raw();
                (ctx.last.field(field)?.raw(), first, first)
            }
            Rel::Range => {
                let min = ctx.min(slot)?.value.raw();
                (ctx.max(slot)?.value.raw(), min, min)
            }
        })
    }

    #[inline]
    fn value(self, field: Field, slot: WindowSlot, ctx: &EvalCtx<'_>) -> Option<Ratio> {
        let (a, b, d) = self.parts(field, slot, ctx)?;
        Ratio::new(i128::from(a) - i128::from(b), i128::from(d))
    }
}

/// Largest numerator or denominator of a constant that [`Cond::RelLit`]
/// takes: with `|a - b| < 2^64` and `|d| < 2^63`, both cross products stay
/// below 2^126.
pub(super) const REL_LIT_LIMIT: i128 = 1 << 62;

/// An aggregate over a group's members.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AggOp {
    Median,
    Mean,
    Min,
    Max,
    /// Weighted by the members' reference-data `weight`.
    WMean,
}

impl AggOp {
    pub(super) fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "group_median" => AggOp::Median,
            "group_mean" => AggOp::Mean,
            "group_min" => AggOp::Min,
            "group_max" => AggOp::Max,
            "group_wmean" => AggOp::WMean,
            _ => return None,
        })
    }
}

/// The members an aggregate reads, without allocating up to 16: (value,
/// weight, fresh), raw.
type Values = SmallVec<[(i64, i64, bool); 16]>;

/// A key for an aggregate in one evaluation's memo.
fn memo_key(op: AggOp, source: Source, product: Option<Product>) -> u32 {
    let source = match source {
        Source::Market(field) => field as u32,
        Source::Reference(field) => 64 + field as u32,
    };
    let product = product.map_or(0, |p| p as u32 + 1);
    (op as u32) << 16 | source << 8 | product
}

/// The median of values already in order; `None` for none.
fn median_of_sorted(values: &[(i64, i64, bool)]) -> Option<Ratio> {
    if values.is_empty() {
        return None;
    }
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        Some(Ratio::raw_fixed(i128::from(values[mid].0)))
    } else {
        Ratio::new(i128::from(values[mid - 1].0) + i128::from(values[mid].0), 2 * SCALE)
    }
}

/// `op` over the members of `group` with `product` (all members when
/// `None`): exact, allocating nothing up to 16 members. With an outlier
/// band, members further than the band from the median of every member's
/// value (stale ones included, as an index provider judges its sources)
/// are left out; with a maximum age, stale members are left out.
fn aggregate(group: &GroupView<'_>, op: AggOp, source: Source, product: Option<Product>, now_ns: i64) -> Option<Ratio> {
    let mut values: Values = group
        .members
        .iter()
        .filter(|m| product.is_none_or(|p| m.product() == Some(p)))
        .filter_map(|m| {
            let v = m.value(source)?.raw();
            let w = if op == AggOp::WMean { m.weight()?.raw() } else { 1 };
            Some((v, w, group.fresh(m, now_ns)))
        })
        .collect();
    // In value order: the medians below need no further sort.
    values.sort_unstable_by_key(|v| v.0);
    if let Some(band) = group.outlier {
        let (num, den) = median_of_sorted(&values)?.parts();
        // The median as a raw value, to compare each member against.
        let center = i64::try_from(num.checked_mul(SCALE)? / den).ok()?;
        if center <= 0 {
            return None;
        }
        values.retain(|v| !band.lt_ratio((v.0 - center).abs(), center));
    }
    values.retain(|v| v.2);
    match op {
        AggOp::Median => median_of_sorted(&values),
        AggOp::Min => values.first().map(|v| Ratio::raw_fixed(i128::from(v.0))),
        AggOp::Max => values.last().map(|v| Ratio::raw_fixed(i128::from(v.0))),
        AggOp::Mean => {
            let sum: i128 = values.iter().map(|v| i128::from(v.0)).sum();
            Ratio::new(sum, i128::try_from(values.len()).ok()?.checked_mul(SCALE)?)
        }
        AggOp::WMean => {
            let mut weighted: i128 = 0;
            let mut weights: i128 = 0;
            for &(v, w, _) in &values {
                weighted = weighted.checked_add(i128::from(v).checked_mul(i128::from(w))?)?;
                weights = weights.checked_add(i128::from(w))?;
            }
            Ratio::new(weighted, weights.checked_mul(SCALE)?)
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
    /// `sum × per`: the mean per period (`per` = period / span, times any
    /// constant factor folded in).
    PeriodMean {
        slot: WindowSlot,
        per: Ratio,
    },
    Rel(Rel, Field, WindowSlot),
    /// A reference price of the instrument itself.
    Reference(RefField),
    /// A value bound by an earlier step of a pattern (`a.price`): index
    /// into [`crate::rules::context::Bound`].
    Bound(u8),
    /// A group member's value: `price(spot)`.
    Member(Source, Product),
    /// An aggregate over a group's fresh members (of one product, if
    /// given): `group_median(price)`.
    Aggregate {
        op: AggOp,
        source: Source,
        product: Option<Product>,
    },
    /// `least`, `greatest`, `if`, rounding, parameters, clocks.
    Ext(Box<ExtNum>),
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
    /// A comparison with a constant (the most common shape, kept flat).
    CmpLit(CmpOp, Box<Num>, Ratio),
    /// `rel(field, W) op num / den` (den > 0, both below
    /// [`REL_LIT_LIMIT`]): the rule authors' favourite, fused into one
    /// exact cross-multiplication.
    RelLit {
        op: CmpOp,
        rel: Rel,
        field: Field,
        slot: WindowSlot,
        num: i128,
        den: i128,
    },
    And(Box<(Cond, Cond)>),
    Or(Box<(Cond, Cond)>),
    Not(Box<Cond>),
    /// `in_session()`.
    Ext(Box<ExtCond>),
}

/// The window, if it holds at least one sample.
#[inline]
fn filled<'w>(ctx: &'w EvalCtx<'_>, slot: WindowSlot) -> Option<&'w Window> {
    ctx.window(slot).filter(|w| w.count() > 0)
}

impl Num {
    pub(super) fn eval(&self, ctx: &EvalCtx<'_>) -> Option<Ratio> {
        match self {
            Num::Lit(v) => Some(*v),
            Num::Last(f) => ctx.last.field(*f).map(Ratio::fixed),
            Num::Max(s) => Some(Ratio::fixed(ctx.max(*s)?.value)),
            Num::Min(s) => Some(Ratio::fixed(ctx.min(*s)?.value)),
            Num::Sum(s) => Some(Ratio::raw_fixed(filled(ctx, *s)?.sum_raw())),
            Num::Count(s) => Some(Ratio::int(i128::from(filled(ctx, *s)?.count()))),
            Num::Mean(s) => {
                let w = filled(ctx, *s)?;
                Ratio::new(w.sum_raw(), i128::from(w.count()).checked_mul(SCALE)?)
            }
            Num::First(s) => ctx.window(*s)?.first().map(Ratio::fixed),
            Num::Vwap(s) => ctx.window(*s)?.vwap().map(Ratio::fixed),
            Num::PeriodMean { slot, per } => Ratio::raw_fixed(filled(ctx, *slot)?.sum_raw()).mul(*per),
            Num::Rel(rel, f, s) => rel.value(*f, *s, ctx),
            Num::Reference(f) => f.of(ctx.reference?).map(Ratio::fixed),
            Num::Bound(i) => ctx.bound?.get(*i).map(Ratio::fixed),
            Num::Member(source, product) => ctx
                .group?
                .member(*product, ctx.now_ns)?
                .value(*source)
                .map(Ratio::fixed),
            Num::Aggregate { op, source, product } => {
                let group = ctx.group?;
                let key = memo_key(*op, *source, *product);
                let known = group.memo.borrow().iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
                let value = match known {
                    Some(value) => value.and_then(|(num, den)| Ratio::new(num, den)),
                    None => {
                        let value = aggregate(group, *op, *source, *product, ctx.now_ns);
                        group.memo.borrow_mut().push((key, value.map(Ratio::parts)));
                        value
                    }
                };
                value
            }
            Num::Ext(x) => x.eval(ctx),
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
            Num::Lit(_)
            | Num::Last(_)
            | Num::Reference(_)
            | Num::Bound(_)
            | Num::Member(..)
            | Num::Aggregate { .. } => {}
            Num::Max(s)
            | Num::Min(s)
            | Num::Sum(s)
            | Num::Count(s)
            | Num::Mean(s)
            | Num::First(s)
            | Num::Vwap(s)
            | Num::PeriodMean { slot: s, .. }
            | Num::Rel(_, _, s) => *s = map(*s),
            Num::Abs(x) | Num::Neg(x) => x.map_slots(map),
            Num::Ext(x) => x.map_slots(map),
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
            Cond::CmpLit(op, num, lit) => Some(op.test(num.eval(ctx)?.compare(*lit))),
            Cond::RelLit {
                op,
                rel,
                field,
                slot,
                num,
                den,
            } => {
                let (a, b, d) = rel.parts(*field, *slot, ctx)?;
                // (a - b) / d  op  num / den, den > 0: multiply by d × den,
                // which reverses the order when d < 0.
                let lhs = (i128::from(a) - i128::from(b)) * den;
                let rhs = num * i128::from(d);
                Some(op.test(match d {
                    0 => return None,
                    d if d > 0 => lhs.cmp(&rhs),
                    _ => rhs.cmp(&lhs),
                }))
            }
            Cond::Not(c) => c.eval(ctx).map(|v| !v),
            Cond::Ext(c) => c.eval(ctx),
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
            Cond::CmpLit(_, num, _) => num.map_slots(map),
            Cond::RelLit { slot, .. } => *slot = map(*slot),
            Cond::And(b) | Cond::Or(b) => {
                b.0.map_slots(map);
                b.1.map_slots(map);
            }
            Cond::Not(c) => c.map_slots(map),
            Cond::Ext(_) => {}
        }
    }
}
