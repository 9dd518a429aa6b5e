//! Expression rules with a halt state and its timers: `when` plus `pause`.
//!
//! The state machine of the published halt mechanisms (a limit state that
//! becomes a trading pause, a circuit-breaker halt, a pre-open), over any
//! condition the expression language can state:
//!
//! ```text
//!  armed ──when true──> limit ──limit_for, still true──> paused ──pause over──> resumed ─┬─> armed
//!    │                    └──when not true──> resolved ──> armed        ^ reopen="extend":  └─> rearming ──when not true──> rearmed ──> armed
//!    └──when true (no limit_for)──> tripped ──pause over──> resumed     │ still true: paused again
//! ```
//!
//! - With `limit_for`, the condition first puts the instrument in a limit
//!   state (`limit`, the rule's severity and actions); if it is still true
//!   `limit_for` later (no tick found it false), trading pauses (`paused`,
//!   action `halt`) for `pause`. A tick finding it false before then ends
//!   the limit state (`resolved`).
//! - Without `limit_for`, the condition halts at once: `tripped` with the
//!   rule's severity and actions, for `pause`.
//! - When the pause ends (by timer, on time), `resumed` (action
//!   `resume`). With `reopen = "extend"` a condition still true at that
//!   moment extends the pause by another `pause` instead (`paused`, with
//!   value `extension`). After `resumed`, a condition still true must be
//!   seen not true before it can act again (`rearmed`): one episode per
//!   move, not one per tick.
//! - `pause = "session"`: the halt lasts until the close of the rule's
//!   session.
//! - `latch = "session"`: the rule acts at most once per trading date of
//!   its session (so the latch resets at the session boundary, not at UTC
//!   midnight); `latch = "day"`: once per UTC day.
//! - `lookback = "resume"`: the look-back restarts after each resume. The
//!   state keeps when the rule last resumed on the instrument, and from
//!   then on the condition's window functions (max, min, drawdown, rally,
//!   range) read only the samples seen since that resume (and within
//!   their span): `min(price, 60m)` is the low since the resume, up to 60
//!   minutes. The shared windows are untouched; the state only narrows
//!   what this rule reads. The condition at the resume itself is read on
//!   the fresh look-back (so a window with no sample since makes it
//!   unknown, and the rule is armed again at once); an extension is
//!   decided on the look-back of the pause it extends.

use std::sync::Arc;

use toml::Spanned;

use crate::model::{Action, AlertKind, AlertSink, AlertValue, Fixed, KindMask, Severity};
use crate::rules::calendar::Calendar;
use crate::rules::compile::{duration, source_offset, Errors};
use crate::rules::context::{EvalCtx, RefField, WindowRegistry};
use crate::rules::expr::{self, CompiledExpr, ErrorIn, ExprEnv, ExprScope};
use crate::rules::spec::RuleSpec;
use crate::rules::CompiledRule;
use crate::state::{Field, WindowSlot};

use super::{Condition, Measure, RuleKind, RuleLogic, RuleStatus};

const NS_PER_DAY: i64 = 86_400_000_000_000;

/// How long a halt lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PauseLength {
    For(i64),
    /// Until the close of the rule's session.
    Session,
}

/// Which days a latch counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Latch {
    /// Trading dates of the rule's session.
    Session,
    /// UTC days of event time.
    Day,
}

/// An expression rule with a halt state.
#[derive(Debug)]
pub struct HaltRule {
    pub expr: Box<CompiledExpr>,
    /// Limit state before the pause; 0: halt at once.
    pub limit_ns: i64,
    pub pause: PauseLength,
    /// A condition still true when the pause ends extends it.
    pub extend: bool,
    pub latch: Option<Latch>,
    pub session: Option<Arc<Calendar>>,
    /// The look-back restarts after each resume (`lookback = "resume"`).
    pub lookback_resume: bool,
}

/// Where a halt rule is, for one instrument.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Phase {
    #[default]
    Armed,
    Limit {
        since_ns: i64,
    },
    Paused {
        since_ns: i64,
        until_ns: i64,
        /// How many times the pause was extended.
        extensions: u32,
    },
    /// Resumed with the condition still true: waiting for it to clear.
    Rearming,
}

/// Per-instrument state of a halt rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HaltState {
    pub phase: Phase,
    /// The day (trading date or UTC day number) the rule last acted on,
    /// with a latch.
    pub latched_day: Option<i64>,
    /// When the rule last resumed on the instrument (the end of its last
    /// pause), for `lookback = "resume"`.
    pub resumed_ns: Option<i64>,
}

impl HaltRule {
    fn day(&self, at_ns: i64) -> Option<i64> {
        match self.latch? {
            Latch::Day => Some(at_ns.div_euclid(NS_PER_DAY)),
            Latch::Session => self.session.as_ref()?.trading_day(at_ns).map(i64::from),
        }
    }

    fn pause_until(&self, at_ns: i64) -> i64 {
        match self.pause {
            PauseLength::For(ns) => at_ns.saturating_add(ns),
            PauseLength::Session => self.session.as_ref().and_then(|s| s.close_of(at_ns)).unwrap_or(at_ns),
        }
    }

    /// The context the condition is read in: with `lookback = "resume"`,
    /// window extremes only from the last resume on.
    #[inline]
    fn scoped<'a>(&self, ctx: &EvalCtx<'a>, state: &HaltState) -> EvalCtx<'a> {
        EvalCtx {
            lookback_from_ns: if self.lookback_resume { state.resumed_ns } else { None },
            ..*ctx
        }
    }

    fn holds(&self, ctx: &EvalCtx<'_>) -> bool {
        self.expr.eval(ctx)
    }

    fn ms(ns: i64) -> Fixed {
        Fixed::from_raw(ns.saturating_mul(100))
    }

    fn pause_now(
        &self,
        rule: &CompiledRule,
        ctx: &EvalCtx<'_>,
        state: &mut HaltState,
        at_ns: i64,
        kind: AlertKind,
        out: &mut impl AlertSink,
    ) {
        let until_ns = self.pause_until(at_ns);
        state.phase = Phase::Paused {
            since_ns: at_ns,
            until_ns,
            extensions: 0,
        };
        let mut values = self.expr.values(ctx);
        values.push(AlertValue::new("pause_ms", Self::ms(until_ns - at_ns)));
        let (severity, actions) = if kind == AlertKind::Tripped {
            (rule.severity, rule.actions.clone())
        } else {
            (rule.severity, Arc::from([Action::Halt]))
        };
        out.emit(ctx.alert_as(rule, kind, severity, actions, at_ns, values));
    }
}

impl RuleKind for HaltRule {
    type State = HaltState;

    fn triggers(&self) -> KindMask {
        self.expr.triggers()
    }

    fn timed(&self, _rule: &CompiledRule) -> bool {
        true
    }

    fn deadline(&self, _rule: &CompiledRule, _last_tick_ns: i64, state: &HaltState) -> Option<i64> {
        match state.phase {
            Phase::Limit { since_ns } => Some(since_ns.saturating_add(self.limit_ns)),
            Phase::Paused { until_ns, .. } => Some(until_ns),
            Phase::Armed | Phase::Rearming => None,
        }
    }

    fn is_open(&self, state: &HaltState) -> bool {
        matches!(state.phase, Phase::Limit { .. } | Phase::Paused { .. })
    }

    fn status(&self, rule: &CompiledRule, state: &HaltState, _last_tick_ns: i64) -> Option<RuleStatus> {
        let (kind, since_ns, until_ns, actions) = match state.phase {
            Phase::Limit { since_ns } => (AlertKind::Limit, since_ns, None, rule.actions.clone()),
            Phase::Paused { since_ns, until_ns, .. } if self.limit_ns > 0 => {
                (AlertKind::Paused, since_ns, Some(until_ns), Arc::from([Action::Halt]))
            }
            Phase::Paused { since_ns, until_ns, .. } => {
                (AlertKind::Tripped, since_ns, Some(until_ns), rule.actions.clone())
            }
            Phase::Armed | Phase::Rearming => return None,
        };
        Some(RuleStatus {
            kind,
            since_ns,
            until_ns,
            severity: rule.severity,
            actions,
        })
    }

    fn on_tick(&self, rule: &CompiledRule, ctx: &EvalCtx<'_>, state: &mut HaltState, out: &mut impl AlertSink) {
        if self.is_open(state) {
            self.on_timer(rule, &EvalCtx { tick: None, ..*ctx }, state, out);
        }
        let now = ctx.now_ns;
        let scoped = self.scoped(ctx, state);
        let ctx = &scoped;
        let holds = self.holds(ctx);
        match state.phase {
            Phase::Armed if holds => {
                let day = self.day(now);
                if day.is_some() && state.latched_day == day {
                    return;
                }
                state.latched_day = day.or(state.latched_day);
                if self.limit_ns > 0 {
                    state.phase = Phase::Limit { since_ns: now };
                    out.emit(ctx.alert(rule, AlertKind::Limit, now, self.expr.values(ctx)));
                } else {
                    self.pause_now(rule, ctx, state, now, AlertKind::Tripped, out);
                }
            }
            Phase::Limit { .. } if !holds => {
                state.phase = Phase::Armed;
                out.emit(
                    ctx.alert(rule, AlertKind::Resolved, now, self.expr.values(ctx))
                        .without_actions(),
                );
            }
            Phase::Rearming if !holds => {
                state.phase = Phase::Armed;
                out.emit(ctx.alert_as(
                    rule,
                    AlertKind::Rearmed,
                    Severity::Info,
                    Arc::from([]),
                    now,
                    self.expr.values(ctx),
                ));
            }
            _ => {}
        }
    }

    fn on_timer(&self, rule: &CompiledRule, ctx: &EvalCtx<'_>, state: &mut HaltState, out: &mut impl AlertSink) {
        let outer = ctx;
        let scoped = self.scoped(outer, state);
        let ctx = &scoped;
        if let Phase::Limit { since_ns } = state.phase {
            let due = since_ns.saturating_add(self.limit_ns);
            if ctx.now_ns < due {
                return;
            }
            self.pause_now(rule, ctx, state, due, AlertKind::Paused, out);
        }
        // A pause that ended and was extended may be due again already.
        while let Phase::Paused {
            since_ns,
            until_ns,
            extensions,
        } = state.phase
        {
            if ctx.now_ns < until_ns {
                return;
            }
            let ctx = &self.scoped(outer, state);
            let holds = self.holds(ctx);
            if self.extend && holds && until_ns > since_ns {
                let next = self.pause_until(until_ns);
                state.phase = Phase::Paused {
                    since_ns,
                    until_ns: next,
                    extensions: extensions + 1,
                };
                let mut values = self.expr.values(ctx);
                values.push(AlertValue::new("pause_ms", Self::ms(next - until_ns)));
                values.push(AlertValue::new(
                    "extension",
                    Fixed::from_raw((i64::from(extensions) + 1) * crate::model::FIXED_SCALE),
                ));
                out.emit(ctx.alert_as(
                    rule,
                    AlertKind::Paused,
                    rule.severity,
                    Arc::from([Action::Halt]),
                    until_ns,
                    values,
                ));
                continue;
            }
            // The look-back restarts here: the condition at the resume is
            // read on it.
            state.resumed_ns = Some(until_ns);
            let holds = if self.lookback_resume {
                self.holds(&self.scoped(outer, state))
            } else {
                holds
            };
            state.phase = if holds { Phase::Rearming } else { Phase::Armed };
            out.emit(ctx.alert_as(
                rule,
                AlertKind::Resumed,
                rule.severity,
                Arc::from([Action::Resume]),
                until_ns,
                vec![AlertValue::new("paused_ms", Self::ms(until_ns - since_ns))],
            ));
        }
    }
}

/// A name a `let` may not take: it would hide a field, a reference price
/// or a word of the language.
fn reserved(name: &str) -> bool {
    Field::from_name(name).is_some() || RefField::from_name(name).is_some() || ["and", "or", "not"].contains(&name)
}

/// Compiles an expression rule (`when`): a plain condition, or with
/// `pause` a halt rule. Reports every problem into `errors`.
pub(crate) fn compile_when(
    spec: &RuleSpec,
    when: &Spanned<String>,
    registry: &mut WindowRegistry,
    scope: ExprScope,
    errors: &mut Errors,
) -> Option<RuleLogic> {
    let halting = spec.pause.is_some();
    for (key, at) in spec.parameter_keys() {
        let fits = match key {
            "for" | "clear_for" => !halting,
            "let" | "session" => true,
            "pause" => true,
            "limit_for" | "latch" | "reopen" | "lookback" => halting,
            _ => false,
        };
        if fits {
            continue;
        }
        let message = match key {
            "for" | "clear_for" => format!("`{key}` does not apply to an expression rule with `pause`: its limit state and halts have their own durations (`limit_for`, `pause`)"),
            "limit_for" | "latch" | "reopen" | "lookback" => format!("`{key}` applies to an expression rule with a halt: give it `pause` too"),
            _ => format!("`{key}` does not apply to an expression rule (`when`)"),
        };
        errors.at(at, message);
    }
    if halting {
        if let Some(c) = &spec.cooldown {
            errors.at(
                c.span().start,
                "`cooldown` does not apply to an expression rule with `pause`: its halts have their own durations",
            );
        }
    }
    let session = spec.session.as_ref().and_then(|s| match s.get_ref().compile() {
        Ok(c) => Some(Arc::new(c)),
        Err(errs) => {
            for (offset, message) in errs {
                errors.at(offset, format!("in `session`: {message}"));
            }
            None
        }
    });
    let session_broken = spec.session.is_some() && session.is_none();
    let lets: Vec<(&String, &Spanned<String>)> = spec
        .lets
        .as_ref()
        .map(|l| l.get_ref().iter().collect())
        .unwrap_or_default();
    let mut names_ok = true;
    for (name, value) in &lets {
        let ok = name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !ok || reserved(name) {
            names_ok = false;
            errors.at(
                value.span().start,
                format!("`let` name `{name}` must be 1 to 64 lowercase letters, digits or `_`, starting with a letter, and not a field, reference price or `and`/`or`/`not`"),
            );
        }
    }
    let lookback_resume = match spec.lookback.as_ref() {
        None => Some(false),
        Some(l) => match l.get_ref().as_str() {
            "rolling" => Some(false),
            "resume" => Some(true),
            other => {
                errors.at(
                    l.span().start,
                    format!("unknown `lookback` `{other}`: use `rolling` (windows keep their whole span) or `resume` (window highs and lows restart after each resume)"),
                );
                None
            }
        },
    };
    let env = ExprEnv {
        lets: lets.iter().map(|(n, v)| ((*n).clone(), v.get_ref().clone())).collect(),
        session: session.clone(),
        lookback_resume: lookback_resume.unwrap_or(false),
    };
    let compiled = if session_broken || !names_ok {
        None
    } else {
        match expr::compile_with(when.get_ref(), registry, scope, &env) {
            Ok(e) => Some(e),
            Err((ErrorIn::Expression, e)) => {
                errors.at(source_offset(when, e.column), format!("in `when`: {}", e.message));
                None
            }
            Err((ErrorIn::Let(i), e)) => {
                let (name, value) = lets[i];
                errors.at(
                    source_offset(value, e.column),
                    format!("in `let.{name}`: {}", e.message),
                );
                None
            }
        }
    };
    let limit_ns = spec
        .limit_for
        .as_ref()
        .and_then(|s| duration(s, "limit_for", false, errors))
        .unwrap_or(0);
    let pause = spec.pause.as_ref().and_then(|p| {
        if p.get_ref() == "session" {
            if spec.session.is_none() {
                errors.at(
                    p.span().start,
                    "`pause = \"session\"` halts until the session's close: give the rule a `[rule.session]` table",
                );
                return None;
            }
            return Some(PauseLength::Session);
        }
        duration(p, "pause", false, errors).map(PauseLength::For)
    });
    let extend = match spec.reopen.as_ref() {
        None => Some(false),
        Some(r) => match r.get_ref().as_str() {
            "resume" => Some(false),
            "extend" => Some(true),
            other => {
                errors.at(
                    r.span().start,
                    format!("unknown `reopen` `{other}`: use `resume` (the pause ends on time) or `extend` (another pause while the condition holds)"),
                );
                None
            }
        },
    };
    let latch = match spec.latch.as_ref() {
        None => Some(None),
        Some(l) => match l.get_ref().as_str() {
            "none" => Some(None),
            "day" => Some(Some(Latch::Day)),
            "session" if spec.session.is_some() => Some(Some(Latch::Session)),
            "session" => {
                errors.at(
                    l.span().start,
                    "`latch = \"session\"` counts trading dates of the rule's session: give the rule a `[rule.session]` table",
                );
                None
            }
            other => {
                errors.at(
                    l.span().start,
                    format!("unknown `latch` `{other}`: use `session`, `day` or `none`"),
                );
                None
            }
        },
    };
    let expr = Box::new(compiled?);
    if !halting {
        return Some(RuleLogic::Condition(Condition {
            measure: Measure::Expression(expr),
        }));
    }
    Some(RuleLogic::Halt(HaltRule {
        expr,
        limit_ns,
        pause: pause?,
        extend: extend?,
        latch: latch?,
        session,
        lookback_resume: lookback_resume?,
    }))
}

/// The windows a halt rule reads.
pub(crate) fn slots_of(logic: &RuleLogic) -> &[WindowSlot] {
    match logic {
        RuleLogic::Halt(h) => h.expr.slots(),
        RuleLogic::Condition(Condition {
            measure: Measure::Expression(e),
        }) => e.slots(),
        _ => &[],
    }
}
