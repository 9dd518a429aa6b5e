//! The conditions behind the edge-triggered kinds: each one decides, from
//! the instrument's windows and newest values, whether it holds now, and
//! explains itself with values when it fires.
//!
//! Every comparison is exact: a threshold is a [`Fraction`] compared with a
//! ratio of two [`Fixed`] values by cross-multiplication. "At least"
//! comparisons (drawdown, rally, velocity) include the threshold; "above"
//! comparisons (spread, deviation, volume spike) exclude it.

use crate::model::{percent_of, AlertValue, Fixed, Fraction, KindMask, FIXED_SCALE};
use crate::rules::context::EvalCtx;
use crate::rules::expr::CompiledExpr;
use crate::state::{Field, WindowSlot};

/// A condition one edge-triggered rule watches.
#[derive(Debug)]
pub enum Measure {
    /// Fall of at least `threshold` from the highest `field` in the window.
    Drawdown {
        field: Field,
        slot: WindowSlot,
        threshold: Fraction,
    },
    /// Rise of at least `threshold` from the lowest `field` in the window.
    Rally {
        field: Field,
        slot: WindowSlot,
        threshold: Fraction,
    },
    /// Move of at least `threshold` (or `ticks` increments of `tick_size`)
    /// between the current value and any value in the window, either way.
    Velocity {
        field: Field,
        slot: WindowSlot,
        threshold: Option<Fraction>,
        ticks: Option<(i64, Fixed)>,
    },
    /// ask - bid above `max` of mid.
    Spread {
        max: Fraction,
    },
    /// |mark - index| / index above `threshold`.
    MarkIndex {
        threshold: Fraction,
    },
    /// Volume in the short window above `factor` × its mean per short
    /// window over the long one. Waits until the long window has been
    /// filled once.
    VolumeSpike {
        short: WindowSlot,
        short_ns: i64,
        long: WindowSlot,
        long_ns: i64,
        factor: Fixed,
    },
    Expression(Box<CompiledExpr>),
}

fn age_ms(now_ns: i64, then_ns: i64) -> Fixed {
    Fixed::from_raw((now_ns - then_ns).saturating_mul(100))
}

impl Measure {
    /// Tick kinds whose arrival can change the outcome.
    pub fn triggers(&self) -> KindMask {
        use crate::model::TickKind;
        match self {
            Measure::Drawdown { field, .. } | Measure::Rally { field, .. } | Measure::Velocity { field, .. } => {
                KindMask::of(field.tick_kind())
            }
            Measure::Spread { .. } => KindMask::of(TickKind::Quote),
            Measure::MarkIndex { .. } => KindMask::of(TickKind::Mark).with(TickKind::Index),
            Measure::VolumeSpike { .. } => KindMask::of(TickKind::Trade),
            Measure::Expression(e) => e.triggers(),
        }
    }

    /// Whether the condition holds; unknown (missing data) is false.
    #[inline]
    pub fn holds(&self, ctx: &EvalCtx<'_>) -> bool {
        match self {
            Measure::Drawdown { field, slot, threshold } => {
                let (Some(peak), Some(now)) = (ctx.window(*slot).and_then(|w| w.max()), ctx.last.field(*field)) else {
                    return false;
                };
                peak.value.is_positive() && threshold.le_ratio(peak.value.raw() - now.raw(), peak.value.raw())
            }
            Measure::Rally { field, slot, threshold } => {
                let (Some(trough), Some(now)) = (ctx.window(*slot).and_then(|w| w.min()), ctx.last.field(*field))
                else {
                    return false;
                };
                trough.value.is_positive() && threshold.le_ratio(now.raw() - trough.value.raw(), trough.value.raw())
            }
            Measure::Velocity {
                field,
                slot,
                threshold,
                ticks,
            } => {
                let Some(window) = ctx.window(*slot) else { return false };
                let (Some(max), Some(min), Some(now)) = (window.max(), window.min(), ctx.last.field(*field)) else {
                    return false;
                };
                let down = max.value.raw() - now.raw();
                let up = now.raw() - min.value.raw();
                let by_pct = threshold.is_some_and(|t| {
                    (max.value.is_positive() && t.le_ratio(down, max.value.raw()))
                        || (min.value.is_positive() && t.le_ratio(up, min.value.raw()))
                });
                let by_ticks = ticks.is_some_and(|(n, size)| {
                    let step = i128::from(n) * i128::from(size.raw());
                    i128::from(down) >= step || i128::from(up) >= step
                });
                by_pct || by_ticks
            }
            Measure::Spread { max } => {
                let (Some(bid), Some(ask)) = (ctx.last.bid, ctx.last.ask) else {
                    return false;
                };
                let mid = crate::state::window::mid(bid, ask);
                mid.is_positive() && max.lt_ratio(ask.raw() - bid.raw(), mid.raw())
            }
            Measure::MarkIndex { threshold } => {
                let (Some(mark), Some(index)) = (ctx.last.mark, ctx.last.index) else {
                    return false;
                };
                index.is_positive() && threshold.lt_ratio((mark.raw() - index.raw()).abs(), index.raw())
            }
            Measure::VolumeSpike {
                short,
                short_ns,
                long,
                long_ns,
                factor,
            } => {
                let (Some(s), Some(l)) = (ctx.window(*short), ctx.window(*long)) else {
                    return false;
                };
                if !l.has_covered(ctx.now_ns) {
                    return false;
                }
                // sum_s / short > factor * sum_l / long, in milliseconds to keep the products small.
                let lhs = s.sum_raw().checked_mul(i128::from(long_ns / 1_000_000));
                let rhs = l
                    .sum_raw()
                    .checked_mul(i128::from(factor.raw()))
                    .and_then(|v| v.checked_mul(i128::from(short_ns / 1_000_000)))
                    .map(|v| v / i128::from(FIXED_SCALE));
                matches!((lhs, rhs), (Some(a), Some(b)) if a > b)
            }
            Measure::Expression(e) => e.eval(ctx),
        }
    }

    /// The values that explain the condition, computed when it fires.
    pub fn values(&self, ctx: &EvalCtx<'_>) -> Vec<AlertValue> {
        let mut values = Vec::with_capacity(5);
        match self {
            Measure::Drawdown { field, slot, threshold } | Measure::Rally { field, slot, threshold } => {
                let is_drawdown = matches!(self, Measure::Drawdown { .. });
                let window = ctx.window(*slot);
                let extreme = window.and_then(|w| if is_drawdown { w.max() } else { w.min() });
                if let (Some(ext), Some(now)) = (extreme, ctx.last.field(*field)) {
                    values.push(AlertValue::new(if is_drawdown { "peak" } else { "trough" }, ext.value));
                    values.push(AlertValue::new(
                        if is_drawdown { "peak_age_ms" } else { "trough_age_ms" },
                        age_ms(ctx.now_ns, ext.time_ns),
                    ));
                    values.push(AlertValue::new("price", now));
                    if let Some(pct) = percent_of(now.raw() - ext.value.raw(), ext.value.raw()) {
                        values.push(AlertValue::new("change_pct", pct));
                    }
                }
                values.push(AlertValue::new("threshold_pct", threshold.percent()));
            }
            Measure::Velocity {
                field, slot, threshold, ..
            } => {
                if let (Some(w), Some(now)) = (ctx.window(*slot), ctx.last.field(*field)) {
                    if let (Some(max), Some(min)) = (w.max(), w.min()) {
                        let from = if max.value.raw() - now.raw() >= now.raw() - min.value.raw() {
                            max
                        } else {
                            min
                        };
                        values.push(AlertValue::new("from", from.value));
                        values.push(AlertValue::new("from_age_ms", age_ms(ctx.now_ns, from.time_ns)));
                        values.push(AlertValue::new("price", now));
                        if let Some(pct) = percent_of(now.raw() - from.value.raw(), from.value.raw()) {
                            values.push(AlertValue::new("change_pct", pct));
                        }
                    }
                }
                if let Some(t) = threshold {
                    values.push(AlertValue::new("threshold_pct", t.percent()));
                }
            }
            Measure::Spread { max } => {
                if let (Some(bid), Some(ask)) = (ctx.last.bid, ctx.last.ask) {
                    values.push(AlertValue::new("bid", bid));
                    values.push(AlertValue::new("ask", ask));
                    let mid = crate::state::window::mid(bid, ask);
                    if let Some(pct) = percent_of(ask.raw() - bid.raw(), mid.raw()) {
                        values.push(AlertValue::new("spread_bps", Fixed::from_raw(pct.raw() * 100)));
                    }
                }
                values.push(AlertValue::new("max_bps", Fixed::from_raw(max.raw() * 10_000)));
            }
            Measure::MarkIndex { threshold } => {
                if let (Some(mark), Some(index)) = (ctx.last.mark, ctx.last.index) {
                    values.push(AlertValue::new("mark", mark));
                    values.push(AlertValue::new("index", index));
                    if let Some(pct) = percent_of(mark.raw() - index.raw(), index.raw()) {
                        values.push(AlertValue::new("deviation_pct", pct));
                    }
                }
                values.push(AlertValue::new("threshold_pct", threshold.percent()));
            }
            Measure::VolumeSpike {
                short,
                short_ns,
                long,
                long_ns,
                factor,
            } => {
                if let (Some(s), Some(l)) = (ctx.window(*short), ctx.window(*long)) {
                    if let Some(v) = s.sum() {
                        values.push(AlertValue::new("volume", v));
                    }
                    let baseline = l.sum_raw() * i128::from(*short_ns) / i128::from((*long_ns).max(1));
                    if let Ok(b) = i64::try_from(baseline) {
                        values.push(AlertValue::new("baseline", Fixed::from_raw(b)));
                    }
                }
                values.push(AlertValue::new("factor", *factor));
            }
            Measure::Expression(e) => values = e.values(ctx),
        }
        values
    }
}
