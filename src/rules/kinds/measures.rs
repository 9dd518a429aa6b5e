//! The conditions behind the edge-triggered kinds: each one decides, from
//! the instrument's windows and newest values, whether it holds now, and
//! explains itself with values when it fires.
//!
//! Every comparison is exact: a threshold is a [`Fraction`] compared with a
//! ratio of two [`Fixed`] values by cross-multiplication. "At least"
//! comparisons (drawdown, rally, velocity) include the threshold; "above"
//! comparisons (spread, deviation, volume spike) exclude it.

use crate::model::{percent_of, AlertValue, Fixed, Fraction, KindMask, FIXED_SCALE};
use crate::rules::compile::KindCompiler;
use crate::rules::context::EvalCtx;
use crate::rules::expr::CompiledExpr;
use crate::state::{Field, WindowNeeds, WindowSlot};

use super::{Condition, KindEntry, RuleLogic};

/// `drawdown`: fall of at least `threshold` from the trailing peak.
pub const DRAWDOWN: KindEntry = KindEntry {
    name: "drawdown",
    params: &["field", "window", "threshold", "for", "clear_for"],
    own_durations: false,
    compile: drawdown_or_rally,
};

/// `rally`: rise of at least `threshold` from the trailing trough.
pub const RALLY: KindEntry = KindEntry {
    name: "rally",
    params: &["field", "window", "threshold", "for", "clear_for"],
    own_durations: false,
    compile: drawdown_or_rally,
};

/// `velocity`: a move of a percentage or a number of ticks within a
/// short window.
pub const VELOCITY: KindEntry = KindEntry {
    name: "velocity",
    params: &["field", "window", "threshold", "ticks", "tick_size", "for", "clear_for"],
    own_durations: false,
    compile: velocity,
};

/// `spread`: ask - bid too wide a fraction of mid.
pub const SPREAD: KindEntry = KindEntry {
    name: "spread",
    params: &["max_spread", "for", "clear_for"],
    own_durations: false,
    compile: spread,
};

/// `mark_index_deviation`: mark too far from index.
pub const MARK_INDEX_DEVIATION: KindEntry = KindEntry {
    name: "mark_index_deviation",
    params: &["threshold", "for", "clear_for"],
    own_durations: false,
    compile: mark_index_deviation,
};

/// `volume_spike`: volume in a short window far above its baseline.
pub const VOLUME_SPIKE: KindEntry = KindEntry {
    name: "volume_spike",
    params: &["window", "baseline", "factor", "for", "clear_for"],
    own_durations: false,
    compile: volume_spike,
};

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

// === compiling the condition kinds ===

fn drawdown_or_rally(c: &mut KindCompiler<'_>) -> Option<RuleLogic> {
    let field = c.price_field();
    let window = c.window("window");
    let threshold = c.fraction(&c.spec.threshold, "threshold", c.kind);
    let drawdown = c.kind == "drawdown";
    if let (Some(t), true) = (threshold, drawdown) {
        if t > Fraction::from_raw(100_000_000) {
            c.errors.at(
                c.spec.threshold.as_ref().map_or(c.start, |s| s.span().start),
                "a drawdown `threshold` cannot exceed 100%",
            );
        }
    }
    let (field, window, threshold) = (field?, window?, threshold?);
    let slot = c.slot(
        field,
        window,
        if drawdown { WindowNeeds::MAX } else { WindowNeeds::MIN },
    );
    let measure = if drawdown {
        Measure::Drawdown { field, slot, threshold }
    } else {
        Measure::Rally { field, slot, threshold }
    };
    Some(RuleLogic::Condition(Condition { measure }))
}

fn velocity(c: &mut KindCompiler<'_>) -> Option<RuleLogic> {
    let field = c.price_field();
    let window = c.window("window");
    let threshold = c
        .spec
        .threshold
        .as_ref()
        .and_then(|_| c.fraction(&c.spec.threshold, "threshold", c.kind));
    let ticks = match (&c.spec.ticks, &c.spec.tick_size) {
        (None, None) => None,
        (Some(n), Some(size)) => {
            let size = c.positive_number(size, "tick_size");
            if *n.get_ref() <= 0 {
                c.errors.at(n.span().start, "`ticks` must be a positive whole number");
            }
            size.map(|s| (*n.get_ref(), s))
        }
        (Some(n), None) => {
            c.errors
                .at(n.span().start, "`ticks` needs `tick_size`, the price increment");
            None
        }
        (None, Some(s)) => {
            c.errors.at(s.span().start, "`tick_size` needs `ticks`");
            None
        }
    };
    if c.spec.threshold.is_none() && c.spec.ticks.is_none() {
        c.errors.at(
            c.start,
            "c.kind `velocity` needs `threshold` (a percentage) or `ticks` with `tick_size`",
        );
    }
    let (field, window) = (field?, window?);
    let slot = c.slot(field, window, WindowNeeds::MAX.union(WindowNeeds::MIN));
    Some(RuleLogic::Condition(Condition {
        measure: Measure::Velocity {
            field,
            slot,
            threshold,
            ticks,
        },
    }))
}

fn spread(c: &mut KindCompiler<'_>) -> Option<RuleLogic> {
    let max = c.fraction(&c.spec.max_spread, "max_spread", c.kind)?;
    Some(RuleLogic::Condition(Condition {
        measure: Measure::Spread { max },
    }))
}

fn mark_index_deviation(c: &mut KindCompiler<'_>) -> Option<RuleLogic> {
    let threshold = c.fraction(&c.spec.threshold, "threshold", c.kind)?;
    Some(RuleLogic::Condition(Condition {
        measure: Measure::MarkIndex { threshold },
    }))
}

fn volume_spike(c: &mut KindCompiler<'_>) -> Option<RuleLogic> {
    let short_ns = c.window("window");
    let long_ns = c.window("baseline");
    let factor = c
        .required(&c.spec.factor, "factor", c.kind)
        .and_then(|f| c.positive_number(f, "factor"));
    let (short_ns, long_ns, factor) = (short_ns?, long_ns?, factor?);
    if long_ns <= short_ns {
        let at = c.spec.baseline.as_ref().map_or(c.start, |s| s.span().start);
        c.errors.at(at, "`baseline` must be longer than `window`");
        return None;
    }
    let short = c.slot(Field::Size, short_ns, WindowNeeds::SLOTS);
    let long = c.slot(Field::Size, long_ns, WindowNeeds::SLOTS);
    Some(RuleLogic::Condition(Condition {
        measure: Measure::VolumeSpike {
            short,
            short_ns,
            long,
            long_ns,
            factor,
        },
    }))
}
