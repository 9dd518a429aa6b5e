//! LULD-style price bands.
//!
//! The band is `reference × (1 ± band)` around the mean of the field over a
//! trailing window. A price at or beyond either edge enters the limit state
//! (alert `limit`, the rule's severity and actions); a price back inside
//! ends it (`resolved`). If the price is still at or beyond the band
//! `limit_for` after the limit state began, trading pauses (`paused`,
//! action `halt`) for `pause`; then `resumed` (action `resume`). Both
//! transitions happen on time even if no tick arrives.
//!
//! With `clear_for`, a price back inside must stay inside that long before
//! the limit state resolves (at `back inside + clear_for`, by timer if no
//! tick comes): a price that crosses the edge back and forth is one
//! episode, one `limit`/`resolved` pair. While it is clearing the pause
//! does not start; a price outside again after `limit_for` has passed
//! pauses at once.

use std::sync::Arc;

use crate::model::{percent_of, Action, AlertKind, AlertSink, AlertValue, Fixed, Fraction, KindMask, FIXED_SCALE};
use crate::rules::compile::{duration, KindCompiler};
use crate::rules::context::EvalCtx;
use crate::rules::CompiledRule;
use crate::state::{Field, WindowNeeds, WindowSlot};

use super::{KindEntry, RuleKind, RuleLogic, RuleStatus};

/// `price_band`: limit state at the band's edge, then a pause.
pub const KIND: KindEntry = KindEntry {
    name: "price_band",
    params: &["field", "reference_window", "band", "limit_for", "pause", "clear_for"],
    own_durations: true,
    compile: price_band,
};

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
    /// Still the limit state that began at `since_ns`, with the price back
    /// inside since `inside_since_ns`, waiting out `clear_for`. (Last, so
    /// the encodings of the other states are those of older checkpoints.)
    Clearing {
        since_ns: i64,
        inside_since_ns: i64,
    },
}

impl BandState {
    /// When the state changes by itself; `clear_ns` is the rule's
    /// `clear_for`.
    pub fn deadline(&self, band: &PriceBand, clear_ns: i64) -> Option<i64> {
        match *self {
            BandState::Normal => None,
            BandState::Limit { since_ns } => Some(since_ns.saturating_add(band.limit_ns)),
            BandState::Paused { until_ns, .. } => Some(until_ns),
            BandState::Clearing { inside_since_ns, .. } => Some(inside_since_ns.saturating_add(clear_ns)),
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

    /// The limit state lasted `limit_for`: trading pauses from `at_ns`.
    fn pause(
        &self,
        rule: &CompiledRule,
        ctx: &EvalCtx<'_>,
        state: &mut BandState,
        at_ns: i64,
        mut values: Vec<AlertValue>,
        out: &mut impl AlertSink,
    ) {
        let until_ns = at_ns.saturating_add(self.pause_ns);
        *state = BandState::Paused {
            since_ns: at_ns,
            until_ns,
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
            at_ns,
            values,
        ));
    }
}

impl RuleKind for PriceBand {
    type State = BandState;

    fn triggers(&self) -> KindMask {
        KindMask::of(self.field.tick_kind())
    }

    fn timed(&self, _rule: &CompiledRule) -> bool {
        true
    }

    fn deadline(&self, rule: &CompiledRule, _last_tick_ns: i64, state: &BandState) -> Option<i64> {
        state.deadline(self, rule.clear_ns)
    }

    fn is_open(&self, state: &BandState) -> bool {
        !state.is_normal()
    }

    fn status(&self, rule: &CompiledRule, state: &BandState, _last_tick_ns: i64) -> Option<RuleStatus> {
        let (kind, since_ns, until_ns, actions) = match *state {
            BandState::Normal => return None,
            // A limit state does not end by itself: it resolves, or
            // becomes a pause.
            BandState::Limit { since_ns } | BandState::Clearing { since_ns, .. } => {
                (AlertKind::Limit, since_ns, None, rule.actions.clone())
            }
            BandState::Paused { since_ns, until_ns } => {
                (AlertKind::Paused, since_ns, Some(until_ns), Arc::from([Action::Halt]))
            }
        };
        Some(RuleStatus {
            kind,
            since_ns,
            until_ns,
            severity: rule.severity,
            actions,
        })
    }

    fn on_tick(&self, rule: &CompiledRule, ctx: &EvalCtx<'_>, state: &mut BandState, out: &mut impl AlertSink) {
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
            BandState::Limit { since_ns } if !outside => {
                if rule.clear_ns > 0 {
                    *state = BandState::Clearing {
                        since_ns,
                        inside_since_ns: now,
                    };
                } else {
                    *state = BandState::Normal;
                    out.emit(
                        ctx.alert(rule, AlertKind::Resolved, now, self.values(reference, price))
                            .without_actions(),
                    );
                }
            }
            BandState::Clearing { since_ns, .. } if outside => {
                *state = BandState::Limit { since_ns };
                if now >= since_ns.saturating_add(self.limit_ns) {
                    self.pause(rule, ctx, state, now, self.values(reference, price), out);
                }
            }
            _ => {}
        }
    }

    fn on_timer(&self, rule: &CompiledRule, ctx: &EvalCtx<'_>, state: &mut BandState, out: &mut impl AlertSink) {
        let values = || match self.measure(ctx) {
            Some((reference, price, _)) => self.values(reference, price),
            None => Vec::new(),
        };
        if let BandState::Clearing { inside_since_ns, .. } = *state {
            let due = inside_since_ns.saturating_add(rule.clear_ns);
            if ctx.now_ns < due {
                return;
            }
            *state = BandState::Normal;
            out.emit(ctx.alert(rule, AlertKind::Resolved, due, values()).without_actions());
            return;
        }
        if let BandState::Limit { since_ns } = *state {
            let due = since_ns.saturating_add(self.limit_ns);
            if ctx.now_ns < due {
                return;
            }
            self.pause(rule, ctx, state, due, values(), out);
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

fn price_band(c: &mut KindCompiler<'_>) -> Option<RuleLogic> {
    let field = c.price_field();
    let reference = c.window("reference_window");
    let band = c.fraction(&c.spec.band, "band", c.kind);
    if let Some(b) = band {
        if b >= Fraction::from_raw(100_000_000) {
            c.errors.at(
                c.spec.band.as_ref().map_or(c.start, |s| s.span().start),
                "`band` must be below 100%",
            );
        }
    }
    let limit_ns = c
        .required(&c.spec.limit_for, "limit_for", c.kind)
        .and_then(|s| duration(s, "limit_for", true, c.errors));
    let pause_ns = c
        .required(&c.spec.pause, "pause", c.kind)
        .and_then(|s| duration(s, "pause", false, c.errors));
    let (field, reference, band, limit_ns, pause_ns) = (field?, reference?, band?, limit_ns?, pause_ns?);

    let reference = c.slot(field, reference, WindowNeeds::SLOTS);
    Some(RuleLogic::Band(PriceBand {
        field,
        reference,
        band,
        limit_ns,
        pause_ns,
    }))
}
