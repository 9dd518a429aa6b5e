//! Functions beyond the market-data windows, for the published mechanisms
//! of venues (`rules/exchanges/`):
//!
//! - `least(a, b, ...)`, `greatest(a, b, ...)`: the smallest / largest of
//!   two or more numbers (unknown if any is);
//! - `if(condition, a, b)`: `a` when the condition is true, `b` when it is
//!   false, unknown when it is unknown;
//! - `floor_to(x, step)`, `ceil_to(x, step)`, `round_to(x, step)`: `x` to
//!   a multiple of `step` (a tick size), down, up, or to the nearest (half
//!   away from zero); unknown when `step` is not above zero;
//! - `param(NAME)`: a number from the instrument's reference data
//!   (`params = { NAME = 5 }`), so that one rule applies each symbol's own
//!   multipliers or thresholds;
//! - `since_listing()`: time since the instrument's `listing_time`;
//! - with a rule `[rule.session]`: `in_session()` (a condition: within
//!   regular hours), `since_open()`, `until_close()` (unknown outside a
//!   session) and `time_of_day()` (local time since midnight), all in the
//!   session's time zone.
//!
//! The time functions are compared with durations: `since_open() < 15m`,
//! `until_close() > 35m`, `time_of_day() >= 15h25m`; their value is in
//! seconds (exact to the nanosecond) so that arithmetic with durations in
//! the same comparison stays exact.

use std::sync::Arc;

use crate::rules::calendar::Calendar;
use crate::rules::context::EvalCtx;
use crate::state::WindowSlot;

use super::compile::Compiler;
use super::eval::{Cond, Num};
use super::parser::{Node, NodeKind};
use super::ratio::Ratio;
use super::ExprError;

/// Functions whose value is a time (compared with durations).
const CLOCKS: [&str; 4] = ["since_listing", "since_open", "until_close", "time_of_day"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Round {
    Floor,
    Ceil,
    Nearest,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Clock {
    SinceOpen,
    UntilClose,
    TimeOfDay,
}

/// A number computed by one of these functions.
#[derive(Clone, Debug)]
pub(super) enum ExtNum {
    Least(Num, Num),
    Greatest(Num, Num),
    If(Cond, Num, Num),
    Round(Round, Num, Num),
    Param(Box<str>),
    SinceListing,
    Clock(Clock, Arc<Calendar>),
}

/// A condition computed by one of these functions.
#[derive(Clone, Debug)]
pub(super) enum ExtCond {
    InSession(Arc<Calendar>),
}

fn seconds(ns: i64) -> Option<Ratio> {
    Ratio::new(i128::from(ns), 1_000_000_000)
}

fn round(mode: Round, x: Ratio, step: Ratio) -> Option<Ratio> {
    if step.compare(Ratio::ZERO).is_le() {
        return None;
    }
    let (num, den) = x.div(step)?.parts();
    let q = match mode {
        Round::Floor => num.div_euclid(den),
        Round::Ceil => -((-num).div_euclid(den)),
        Round::Nearest => {
            let twice = num.checked_mul(2)?;
            let q = (twice.abs() + den).div_euclid(2 * den);
            if num < 0 {
                -q
            } else {
                q
            }
        }
    };
    Ratio::int(q).mul(step)
}

impl ExtNum {
    pub(super) fn eval(&self, ctx: &EvalCtx<'_>) -> Option<Ratio> {
        match self {
            ExtNum::Least(a, b) => {
                let (a, b) = (a.eval(ctx)?, b.eval(ctx)?);
                Some(if a.compare(b).is_le() { a } else { b })
            }
            ExtNum::Greatest(a, b) => {
                let (a, b) = (a.eval(ctx)?, b.eval(ctx)?);
                Some(if a.compare(b).is_ge() { a } else { b })
            }
            ExtNum::If(c, a, b) => match c.eval(ctx)? {
                true => a.eval(ctx),
                false => b.eval(ctx),
            },
            ExtNum::Round(mode, x, step) => round(*mode, x.eval(ctx)?, step.eval(ctx)?),
            ExtNum::Param(name) => ctx.reference?.param(name).map(Ratio::fixed),
            ExtNum::SinceListing => seconds(ctx.now_ns.checked_sub(ctx.reference?.listing_ns?)?),
            ExtNum::Clock(clock, calendar) => seconds(match clock {
                Clock::SinceOpen => calendar.since_open(ctx.now_ns)?,
                Clock::UntilClose => calendar.until_close(ctx.now_ns)?,
                Clock::TimeOfDay => calendar.time_of_day(ctx.now_ns)?,
            }),
        }
    }

    pub(super) fn map_slots(&mut self, map: &impl Fn(WindowSlot) -> WindowSlot) {
        match self {
            ExtNum::Least(a, b) | ExtNum::Greatest(a, b) | ExtNum::Round(_, a, b) => {
                a.map_slots(map);
                b.map_slots(map);
            }
            ExtNum::If(c, a, b) => {
                c.map_slots(map);
                a.map_slots(map);
                b.map_slots(map);
            }
            ExtNum::Param(_) | ExtNum::SinceListing | ExtNum::Clock(..) => {}
        }
    }
}

impl ExtCond {
    pub(super) fn eval(&self, ctx: &EvalCtx<'_>) -> Option<bool> {
        match self {
            ExtCond::InSession(calendar) => Some(calendar.in_session(ctx.now_ns)),
        }
    }
}

/// Whether a node reads a clock (so durations compare with it).
pub(super) fn mentions_clock(node: &Node<'_>) -> bool {
    match &node.kind {
        NodeKind::Call { name, args } => CLOCKS.contains(name) || args.iter().any(mentions_clock),
        NodeKind::Neg(inner) => mentions_clock(inner),
        NodeKind::Binary { lhs, rhs, .. } => mentions_clock(lhs) || mentions_clock(rhs),
        _ => false,
    }
}

fn err(column: usize, message: impl Into<String>) -> ExprError {
    ExprError {
        column,
        message: message.into(),
    }
}

impl Compiler<'_, '_> {
    fn session(&self, node: &Node<'_>, name: &str) -> Result<Arc<Calendar>, ExprError> {
        self.env.session.clone().ok_or_else(|| {
            err(
                node.col,
                format!("`{name}()` reads the rule's trading session: give the rule a `[rule.session]` table (time_zone, open, close)"),
            )
        })
    }

    fn no_args(&self, node: &Node<'_>, name: &str, args: &[Node<'_>]) -> Result<(), ExprError> {
        if args.is_empty() {
            return Ok(());
        }
        Err(err(node.col, format!("`{name}` takes no arguments: write `{name}()`")))
    }

    /// A condition function (`in_session()`), or `None` if `name` is not one.
    pub(super) fn ext_cond(
        &mut self,
        node: &Node<'_>,
        name: &str,
        args: &[Node<'_>],
    ) -> Result<Option<Cond>, ExprError> {
        if name != "in_session" {
            return Ok(None);
        }
        self.no_args(node, name, args)?;
        Ok(Some(Cond::Ext(Box::new(ExtCond::InSession(self.session(node, name)?)))))
    }

    /// One of this file's number functions, or `None` if `name` is not one.
    pub(super) fn ext_num(&mut self, node: &Node<'_>, name: &str, args: &[Node<'_>]) -> Result<Option<Num>, ExprError> {
        let ext = match name {
            "least" | "greatest" => {
                if args.len() < 2 {
                    return Err(err(
                        node.col,
                        format!(
                            "`{name}` takes two or more numbers, as in `{name}(index * 1.05, mark)`, but was given {}",
                            args.len()
                        ),
                    ));
                }
                let mut acc = self.num(&args[0], &format!("as an argument of `{name}`"))?;
                for arg in &args[1..] {
                    let next = self.num(arg, &format!("as an argument of `{name}`"))?;
                    acc = Num::Ext(Box::new(if name == "least" {
                        ExtNum::Least(acc, next)
                    } else {
                        ExtNum::Greatest(acc, next)
                    }));
                }
                return Ok(Some(acc));
            }
            "if" => {
                if args.len() != 3 {
                    return Err(err(
                        node.col,
                        format!("`if` takes a condition and two numbers, as in `if(prior_close > 3, 5%, 20%)`, but was given {}", args.len()),
                    ));
                }
                let c = self.cond(&args[0], "as the first argument of `if`")?;
                let a = self.num(&args[1], "as the second argument of `if` (its value when true)")?;
                let b = self.num(&args[2], "as the third argument of `if` (its value when false)")?;
                ExtNum::If(c, a, b)
            }
            "floor_to" | "ceil_to" | "round_to" => {
                if args.len() != 2 {
                    return Err(err(
                        node.col,
                        format!("`{name}` takes a number and a step, as in `{name}(settlement * 7%, tick_size)`, but was given {}", args.len()),
                    ));
                }
                let x = self.num(&args[0], &format!("as the first argument of `{name}`"))?;
                let step = self.num(&args[1], &format!("as the step of `{name}`"))?;
                if matches!(step, Num::Lit(s) if s.compare(Ratio::ZERO).is_le()) {
                    return Err(err(args[1].col, format!("the step of `{name}` must be above zero")));
                }
                let mode = match name {
                    "floor_to" => Round::Floor,
                    "ceil_to" => Round::Ceil,
                    _ => Round::Nearest,
                };
                ExtNum::Round(mode, x, step)
            }
            "param" => {
                let name_arg = match args {
                    [a] => match a.kind {
                        NodeKind::Ident(p) => p,
                        _ => {
                            return Err(err(
                                a.col,
                                "`param` takes the name of an instrument parameter, as in `param(multiplier_up)`",
                            ))
                        }
                    },
                    _ => {
                        return Err(err(
                            node.col,
                            format!(
                                "`param` takes one name, as in `param(multiplier_up)`, but was given {}",
                                args.len()
                            ),
                        ))
                    }
                };
                ExtNum::Param(name_arg.into())
            }
            "since_listing" => {
                self.no_args(node, name, args)?;
                ExtNum::SinceListing
            }
            "since_open" | "until_close" | "time_of_day" => {
                self.no_args(node, name, args)?;
                let clock = match name {
                    "since_open" => Clock::SinceOpen,
                    "until_close" => Clock::UntilClose,
                    _ => Clock::TimeOfDay,
                };
                ExtNum::Clock(clock, self.session(node, name)?)
            }
            "in_session" => {
                return Err(err(
                    node.col,
                    "`in_session()` is a condition, not a number: use it with `and`, `or`, `not` or `if`",
                ))
            }
            _ => return Ok(None),
        };
        Ok(Some(Num::Ext(Box::new(ext))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(n: i128, d: i128) -> Ratio {
        Ratio::new(n, d).unwrap()
    }

    #[test]
    fn rounding_to_a_step_is_exact() {
        let tick = r(25, 100);
        // 7% of 4321.10 is 302.477: down to 302.25, up to 302.50, nearest 302.50.
        let x = r(302_477, 1000);
        assert!(round(Round::Floor, x, tick).unwrap().compare(r(30225, 100)).is_eq());
        assert!(round(Round::Ceil, x, tick).unwrap().compare(r(30250, 100)).is_eq());
        assert!(round(Round::Nearest, x, tick).unwrap().compare(r(30250, 100)).is_eq());
        // Already on the step: unchanged either way; negatives floor down.
        assert!(round(Round::Floor, r(30225, 100), tick)
            .unwrap()
            .compare(r(30225, 100))
            .is_eq());
        assert!(round(Round::Ceil, r(30225, 100), tick)
            .unwrap()
            .compare(r(30225, 100))
            .is_eq());
        assert!(round(Round::Floor, r(-1, 10), tick)
            .unwrap()
            .compare(r(-25, 100))
            .is_eq());
        assert!(round(Round::Nearest, r(-125, 1000), tick)
            .unwrap()
            .compare(r(-25, 100))
            .is_eq());
        assert!(round(Round::Floor, x, Ratio::ZERO).is_none());
    }
}
