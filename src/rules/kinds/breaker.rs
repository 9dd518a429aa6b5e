//! Tiered circuit breakers.
//!
//! The move is measured from a reference price (the mean of the field over
//! a trailing window, or a fixed price in the rule) as |price - reference| /
//! reference (or only downward / upward moves, by `direction`). Tiers are
//! sorted by move; a tier is reached when the move is at least its `move`.
//!
//! ```text
//!  armed ──tier i reached──> halted(i) ──halt time over──> resumed(i) ──move below tier 1──> armed
//!                              │  ^                          │
//!                              └──┴── tier j > i reached ────┘   (escalation: halted(j), new halt time)
//! ```
//!
//! Alerts: `tripped` (the tier's severity and actions, `halt` by default),
//! `resumed` (action `resume`, raised by a timer when no tick arrives),
//! `rearmed` (info). With `latch = "day"`, a tier that tripped cannot trip
//! again on the same UTC day (event time); higher tiers still can.

use std::sync::Arc;

use crate::model::{percent_of, Action, AlertKind, AlertSink, AlertValue, Fixed, Fraction, KindMask, Severity};
use crate::rules::compile::{actions, duration, severity, KindCompiler};
use crate::rules::context::EvalCtx;
use crate::rules::units::parse_fraction;
use crate::rules::CompiledRule;
use crate::state::{Field, WindowNeeds, WindowSlot};

use super::{KindEntry, RuleKind, RuleLogic, RuleStatus};

/// `circuit_breaker`: tiers of move from a reference, each with a halt.
pub const KIND: KindEntry = KindEntry {
    name: "circuit_breaker",
    params: &[
        "field",
        "reference_window",
        "reference_price",
        "tiers",
        "direction",
        "latch",
    ],
    own_durations: true,
    compile: circuit_breaker,
};

const DAY_NS: i64 = 86_400_000_000_000;

/// One tier of a breaker.
#[derive(Debug, Clone)]
pub struct Tier {
    pub min_move: Fraction,
    pub halt_ns: i64,
    pub severity: Severity,
    pub actions: Arc<[Action]>,
}

/// Where moves are measured from.
#[derive(Debug, Clone, Copy)]
pub enum Reference {
    /// Mean of the field over a trailing window.
    Mean(WindowSlot),
    Fixed(Fixed),
}

/// Which moves count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Down,
    Up,
    Both,
}

#[derive(Debug)]
pub struct Breaker {
    pub field: Field,
    pub reference: Reference,
    /// Sorted by `min_move`, ascending; at most 255.
    pub tiers: Vec<Tier>,
    pub direction: Direction,
    pub latch_daily: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Phase {
    #[default]
    Armed,
    Halted {
        tier: u8,
        since_ns: i64,
        until_ns: i64,
    },
    Resumed {
        tier: u8,
    },
}

/// Per-instrument state of a breaker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BreakerState {
    pub phase: Phase,
    /// With daily latching: the UTC day (days since the epoch) and the
    /// highest tier tripped on it.
    pub latched: Option<(i64, u8)>,
}

impl BreakerState {
    pub fn deadline(&self) -> Option<i64> {
        match self.phase {
            Phase::Halted { until_ns, .. } => Some(until_ns),
            _ => None,
        }
    }

    pub fn is_armed(&self) -> bool {
        self.phase == Phase::Armed
    }
}

impl Breaker {
    fn reference_price(&self, ctx: &EvalCtx<'_>) -> Option<Fixed> {
        match self.reference {
            Reference::Fixed(p) => Some(p),
            Reference::Mean(slot) => ctx.window(slot)?.mean(),
        }
    }

    /// The move's size in 10^-8 units (signed away from the reference in
    /// the watched direction) and the highest tier it reaches.
    fn measure(&self, ctx: &EvalCtx<'_>) -> Option<(Fixed, Fixed, Option<u8>)> {
        let price = ctx.last.field(self.field)?;
        let reference = self.reference_price(ctx)?;
        if !reference.is_positive() {
            return None;
        }
        let diff = price.raw() - reference.raw();
        let moved = match self.direction {
            Direction::Down => -diff,
            Direction::Up => diff,
            Direction::Both => diff.abs(),
        };
        let tier = self
            .tiers
            .iter()
            .rposition(|t| t.min_move.le_ratio(moved, reference.raw()))
            .map(|i| i as u8);
        Some((price, reference, tier))
    }
}

impl RuleKind for Breaker {
    type State = BreakerState;

    fn triggers(&self) -> KindMask {
        KindMask::of(self.field.tick_kind())
    }

    fn timed(&self, _rule: &CompiledRule) -> bool {
        true
    }

    fn deadline(&self, _rule: &CompiledRule, _last_tick_ns: i64, state: &BreakerState) -> Option<i64> {
        state.deadline()
    }

    fn is_open(&self, state: &BreakerState) -> bool {
        !state.is_armed()
    }

    /// A halt in force; a breaker that resumed and is not re-armed yet
    /// has nothing in force.
    fn status(&self, _rule: &CompiledRule, state: &BreakerState, _last_tick_ns: i64) -> Option<RuleStatus> {
        let Phase::Halted {
            tier,
            since_ns,
            until_ns,
        } = state.phase
        else {
            return None;
        };
        let spec = self.tiers.get(usize::from(tier))?;
        Some(RuleStatus {
            kind: AlertKind::Tripped,
            since_ns,
            until_ns: Some(until_ns),
            severity: spec.severity,
            actions: spec.actions.clone(),
        })
    }

    /// A saved state names only tiers this breaker has.
    fn fits(&self, state: &BreakerState) -> bool {
        let tiers = self.tiers.len();
        let phase = match state.phase {
            Phase::Armed => true,
            Phase::Halted { tier, .. } | Phase::Resumed { tier } => usize::from(tier) < tiers,
        };
        phase && state.latched.is_none_or(|(_, tier)| usize::from(tier) < tiers)
    }

    fn on_tick(&self, rule: &CompiledRule, ctx: &EvalCtx<'_>, state: &mut BreakerState, out: &mut impl AlertSink) {
        if matches!(state.phase, Phase::Halted { .. }) {
            self.on_timer(rule, &EvalCtx { tick: None, ..*ctx }, state, out);
        }
        let Some((price, reference, reached)) = self.measure(ctx) else {
            return;
        };
        let now = ctx.now_ns;
        match (state.phase, reached) {
            (Phase::Armed, Some(tier)) => {
                let tier = match state.latched {
                    Some((day, latched)) if self.latch_daily && day == now.div_euclid(DAY_NS) => {
                        if tier <= latched {
                            return;
                        }
                        tier
                    }
                    _ => tier,
                };
                self.trip(rule, ctx, state, tier, price, reference, out);
            }
            (Phase::Halted { tier: current, .. } | Phase::Resumed { tier: current }, Some(tier)) if tier > current => {
                self.trip(rule, ctx, state, tier, price, reference, out);
            }
            (Phase::Resumed { tier }, None) => {
                state.phase = Phase::Armed;
                let values = vec![
                    AlertValue::new("tier", Fixed::from_int(i64::from(tier) + 1).unwrap_or_default()),
                    AlertValue::new("reference", reference),
                    AlertValue::new("price", price),
                ];
                out.emit(ctx.alert_as(
                    rule,
                    AlertKind::Rearmed,
                    Severity::Info,
                    Arc::from(Vec::new()),
                    now,
                    values,
                ));
            }
            _ => {}
        }
    }

    fn on_timer(&self, rule: &CompiledRule, ctx: &EvalCtx<'_>, state: &mut BreakerState, out: &mut impl AlertSink) {
        self.end_halt(rule, ctx, state, out);
    }
}

impl Breaker {
    #[allow(clippy::too_many_arguments)]
    fn trip(
        &self,
        rule: &CompiledRule,
        ctx: &EvalCtx<'_>,
        state: &mut BreakerState,
        tier: u8,
        price: Fixed,
        reference: Fixed,
        out: &mut impl AlertSink,
    ) {
        let now = ctx.now_ns;
        let spec = &self.tiers[tier as usize];
        let until_ns = now.saturating_add(spec.halt_ns);
        let escalated_from = match state.phase {
            Phase::Halted { tier, .. } | Phase::Resumed { tier } => Some(tier),
            Phase::Armed => None,
        };
        state.phase = Phase::Halted {
            tier,
            since_ns: now,
            until_ns,
        };
        if self.latch_daily {
            state.latched = Some((now.div_euclid(DAY_NS), tier));
        }
        let mut values = vec![
            AlertValue::new("tier", Fixed::from_int(i64::from(tier) + 1).unwrap_or_default()),
            AlertValue::new("reference", reference),
            AlertValue::new("price", price),
        ];
        if let Some(pct) = percent_of(price.raw() - reference.raw(), reference.raw()) {
            values.push(AlertValue::new("change_pct", pct));
        }
        values.push(AlertValue::new("tier_move_pct", spec.min_move.percent()));
        values.push(AlertValue::new(
            "halt_ms",
            Fixed::from_raw(spec.halt_ns.saturating_mul(100)),
        ));
        if let Some(from) = escalated_from {
            values.push(AlertValue::new(
                "escalated_from_tier",
                Fixed::from_int(i64::from(from) + 1).unwrap_or_default(),
            ));
        }
        out.emit(ctx.alert_as(
            rule,
            AlertKind::Tripped,
            spec.severity,
            spec.actions.clone(),
            now,
            values,
        ));
    }

    /// Resumes a halt whose time is over.
    fn end_halt(&self, rule: &CompiledRule, ctx: &EvalCtx<'_>, state: &mut BreakerState, out: &mut impl AlertSink) {
        let Phase::Halted {
            tier,
            since_ns,
            until_ns,
        } = state.phase
        else {
            return;
        };
        if ctx.now_ns < until_ns {
            return;
        }
        state.phase = Phase::Resumed { tier };
        let spec = &self.tiers[tier as usize];
        let values = vec![
            AlertValue::new("tier", Fixed::from_int(i64::from(tier) + 1).unwrap_or_default()),
            AlertValue::new("halted_ms", Fixed::from_raw((until_ns - since_ns).saturating_mul(100))),
        ];
        out.emit(ctx.alert_as(
            rule,
            AlertKind::Resumed,
            spec.severity,
            Arc::from([Action::Resume]),
            until_ns,
            values,
        ));
    }
}

fn circuit_breaker(c: &mut KindCompiler<'_>) -> Option<RuleLogic> {
    let spec = c.spec;
    let field = c.price_field();
    let reference = match (&spec.reference_window, &spec.reference_price) {
        (Some(_), Some(p)) => {
            c.errors
                .at(p.span().start, "give `reference_window` or `reference_price`, not both");
            None
        }
        (None, None) => {
            c.errors.at(
                c.start,
                "c.kind `circuit_breaker` needs `reference_window` (a trailing mean) or `reference_price`",
            );
            None
        }
        (Some(_), None) => c.window("reference_window").map(|w| (Some(w), None)),
        (None, Some(p)) => c.positive_number(p, "reference_price").map(|p| (None, Some(p))),
    };
    let direction = match spec.direction.as_ref() {
        None => Some(Direction::Both),
        Some(d) => match d.get_ref().as_str() {
            "down" => Some(Direction::Down),
            "up" => Some(Direction::Up),
            "both" => Some(Direction::Both),
            other => {
                c.errors.at(
                    d.span().start,
                    format!("unknown direction `{other}`: use `down`, `up` or `both`"),
                );
                None
            }
        },
    };
    let latch_daily = match spec.latch.as_ref() {
        None => false,
        Some(l) => match l.get_ref().as_str() {
            "day" => true,
            "none" => false,
            other => {
                c.errors
                    .at(l.span().start, format!("unknown latch `{other}`: use `day` or `none`"));
                false
            }
        },
    };
    let default_severity = spec
        .severity
        .as_ref()
        .and_then(|s| Severity::from_name(s.get_ref()))
        .unwrap_or(Severity::Warning);
    let tiers_spec = c.required(&spec.tiers, "tiers", "circuit_breaker")?;
    if tiers_spec.get_ref().is_empty() || tiers_spec.get_ref().len() > 255 {
        c.errors.at(tiers_spec.span().start, "`tiers` needs 1 to 255 tiers");
    }
    let mut tiers = Vec::new();
    let mut previous: Option<Fraction> = None;
    for t in tiers_spec.get_ref() {
        let t = t.get_ref();
        let min_move = match parse_fraction(t.min_move.get_ref()) {
            Ok(f) if f.raw() > 0 => Some(f),
            Ok(_) => {
                c.errors.at(t.min_move.span().start, "a tier's `move` must be above 0%");
                None
            }
            Err(e) => {
                c.errors.at(t.min_move.span().start, format!("tier `move`: {e}"));
                None
            }
        };
        if let (Some(m), Some(p)) = (min_move, previous) {
            if m <= p {
                c.errors.at(
                    t.min_move.span().start,
                    format!("tiers must be in increasing order of `move`: {m} follows {p}"),
                );
            }
        }
        previous = min_move.or(previous);
        let halt_ns = duration(&t.halt, "halt", false, c.errors);
        let severity = t
            .severity
            .as_ref()
            .map_or(Some(default_severity), |s| severity(s, c.errors));
        let actions = t
            .actions
            .as_ref()
            .map_or_else(|| Some(Arc::from([Action::Halt])), |a| actions(a, c.errors));
        if let (Some(min_move), Some(halt_ns), Some(severity), Some(actions)) = (min_move, halt_ns, severity, actions) {
            tiers.push(Tier {
                min_move,
                halt_ns,
                severity,
                actions,
            });
        }
    }
    let (field, (window, price), direction) = (field?, reference?, direction?);
    if tiers.len() != tiers_spec.get_ref().len() {
        return None;
    }
    let reference = match (window, price) {
        (Some(w), _) => Reference::Mean(c.slot(field, w, WindowNeeds::SLOTS)),
        (None, Some(p)) => Reference::Fixed(p),
        (None, None) => return None,
    };
    Some(RuleLogic::Breaker(Breaker {
        field,
        reference,
        tiers,
        direction,
        latch_daily,
    }))
}
