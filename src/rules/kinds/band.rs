//! LULD-style price bands.
//!
//! The band is `reference × (1 ± band)` around the mean of the field over a
//! trailing window. A price at or beyond either edge enters the limit state
//! (alert `limit`, the rule's severity and actions); a price back inside
//! ends it (`resolved`). If the price is still at or beyond the band
//! `limit_for` after the limit state began, trading pauses (`paused`,
//! action `halt`) for `pause`; then `resumed` (action `resume`). Both
//! transitions happen on time even if no tick arrives.

use std::sync::Arc;

use crate::model::{percent_of, Action, AlertKind, AlertSink, AlertValue, Fixed, Fraction, FIXED_SCALE};
use crate::rules::context::EvalCtx;
use crate::rules::CompiledRule;
use crate::state::{Field, WindowSlot};

#[derive(Debug)]
pub struct PriceBand {
    pub field: Field,
    pub reference: WindowSlot,
    pub band: Fraction,
    pub limit_ns: i64,
    pub pause_ns: i64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BandState {
    #[default]
    Normal,
    Limit {
        since_ns: i64,
    },
    Paused {
        since_ns: i64,
        until_ns: i64,
    },
}

impl BandState {
    pub fn deadline(&self, band: &PriceBand) -> Option<i64> {
        match *self {
            BandState::Normal => None,
            BandState::Limit { since_ns } => Some(since_ns.saturating_add(band.limit_ns)),
            BandState::Paused { until_ns, .. } => Some(until_ns),
        }
    }

    pub fn is_normal(&self) -> bool {
        *self == BandState::Normal
    }
}

impl PriceBand {
    /// Reference, price, and whether the price is at or beyond the band.
    fn measure(&self, ctx: &EvalCtx<'_>) -> Option<(Fixed, Fixed, bool)> {
        let price = ctx.last.field(self.field)?;
        let reference = ctx.window(self.reference)?.mean()?;
        if !reference.is_positive() {
            return None;
        }
        let outside = self
            .band
            .le_ratio((price.raw() - reference.raw()).abs(), reference.raw());
        Some((reference, price, outside))
    }

    fn values(&self, reference: Fixed, price: Fixed) -> Vec<AlertValue> {
        let width = (i128::from(reference.raw()) * i128::from(self.band.raw()) / i128::from(FIXED_SCALE)) as i64;
        let mut values = vec![
            AlertValue::new("reference", reference),
            AlertValue::new("lower", Fixed::from_raw(reference.raw() - width)),
            AlertValue::new("upper", Fixed::from_raw(reference.raw().saturating_add(width))),
            AlertValue::new("price", price),
        ];
        if let Some(pct) = percent_of(price.raw() - reference.raw(), reference.raw()) {
            values.push(AlertValue::new("change_pct", pct));
        }
        values.push(AlertValue::new("band_pct", self.band.percent()));
        values
    }

    pub fn on_tick(&self, rule: &CompiledRule, ctx: &EvalCtx<'_>, state: &mut BandState, out: &mut impl AlertSink) {
        if !state.is_normal() {
            self.on_timer(rule, &EvalCtx { tick: None, ..*ctx }, state, out);
        }
        let Some((reference, price, outside)) = self.measure(ctx) else {
            return;
        };
        let now = ctx.now_ns;
        match *state {
            BandState::Normal if outside => {
                *state = BandState::Limit { since_ns: now };
                out.emit(ctx.alert(rule, AlertKind::Limit, now, self.values(reference, price)));
            }
            BandState::Limit { .. } if !outside => {
                *state = BandState::Normal;
                out.emit(
                    ctx.alert(rule, AlertKind::Resolved, now, self.values(reference, price))
                        .without_actions(),
                );
            }
            _ => {}
        }
    }

    pub fn on_timer(&self, rule: &CompiledRule, ctx: &EvalCtx<'_>, state: &mut BandState, out: &mut impl AlertSink) {
        if let BandState::Limit { since_ns } = *state {
            let due = since_ns.saturating_add(self.limit_ns);
            if ctx.now_ns < due {
                return;
            }
            let until_ns = due.saturating_add(self.pause_ns);
            *state = BandState::Paused {
                since_ns: due,
                until_ns,
            };
            let mut values = match self.measure(ctx) {
                Some((reference, price, _)) => self.values(reference, price),
                None => Vec::new(),
            };
            values.push(AlertValue::new(
                "pause_ms",
                Fixed::from_raw(self.pause_ns.saturating_mul(100)),
            ));
            out.emit(ctx.alert_as(
                rule,
                AlertKind::Paused,
                rule.severity,
                Arc::from([Action::Halt]),
                due,
                values,
            ));
        }
        if let BandState::Paused { since_ns, until_ns } = *state {
            if ctx.now_ns < until_ns {
                return;
            }
            *state = BandState::Normal;
            let values = vec![AlertValue::new(
                "paused_ms",
                Fixed::from_raw((until_ns - since_ns).saturating_mul(100)),
            )];
            out.emit(ctx.alert_as(
                rule,
                AlertKind::Resumed,
                rule.severity,
                Arc::from([Action::Resume]),
                until_ns,
                values,
            ));
        }
    }
}
