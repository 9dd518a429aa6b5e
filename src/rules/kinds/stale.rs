//! Stale feeds: an instrument whose ticks stopped arriving.
//!
//! Silence is measured from the instrument's newest tick, raised by the
//! engine's timer (a silent feed sends no tick to trigger anything). Like
//! every timer, it runs on the instrument's event time advanced by the
//! server's clock since that tick was received (see [`crate::engine`]):
//! live, the rule fires `after` of server time after the newest tick was
//! received; the alert is stamped with that tick's event time plus
//! `after`, on the same time axis as the instrument's ticks. The next tick
//! resolves it.

use crate::model::{AlertKind, AlertSink, AlertValue, Fixed, KindMask};
use crate::rules::compile::{duration, KindCompiler};
use crate::rules::context::EvalCtx;
use crate::rules::CompiledRule;

use super::{KindEntry, RuleKind, RuleLogic, RuleStatus};

/// `stale_feed`: no tick for `after`.
pub const KIND: KindEntry = KindEntry {
    name: "stale_feed",
    params: &["after"],
    own_durations: false,
    compile: stale_feed,
};

#[derive(Debug)]
pub struct StaleFeed {
    pub after_ns: i64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StaleState {
    pub stale: bool,
}

impl StaleState {
    pub fn deadline(&self, feed: &StaleFeed, last_tick_ns: i64) -> Option<i64> {
        (!self.stale).then(|| last_tick_ns.saturating_add(feed.after_ns))
    }
}

impl RuleKind for StaleFeed {
    type State = StaleState;

    fn triggers(&self) -> KindMask {
        KindMask::ALL
    }

    fn timed(&self, _rule: &CompiledRule) -> bool {
        true
    }

    fn deadline(&self, _rule: &CompiledRule, last_tick_ns: i64, state: &StaleState) -> Option<i64> {
        state.deadline(self, last_tick_ns)
    }

    fn is_open(&self, state: &StaleState) -> bool {
        state.stale
    }

    fn status(&self, rule: &CompiledRule, state: &StaleState, last_tick_ns: i64) -> Option<RuleStatus> {
        state.stale.then(|| RuleStatus {
            kind: AlertKind::Fired,
            since_ns: last_tick_ns.saturating_add(self.after_ns),
            until_ns: None,
            severity: rule.severity,
            actions: rule.actions.clone(),
        })
    }

    fn on_tick(&self, rule: &CompiledRule, ctx: &EvalCtx<'_>, state: &mut StaleState, out: &mut impl AlertSink) {
        if state.stale {
            state.stale = false;
            out.emit(
                ctx.alert(rule, AlertKind::Resolved, ctx.now_ns, Vec::new())
                    .without_actions(),
            );
        }
    }

    fn on_timer(&self, rule: &CompiledRule, ctx: &EvalCtx<'_>, state: &mut StaleState, out: &mut impl AlertSink) {
        let due = ctx.last_tick_ns.saturating_add(self.after_ns);
        if state.stale || ctx.now_ns < due {
            return;
        }
        state.stale = true;
        let values = vec![AlertValue::new(
            "silent_ms",
            Fixed::from_raw((ctx.now_ns - ctx.last_tick_ns).saturating_mul(100)),
        )];
        out.emit(ctx.alert(rule, AlertKind::Fired, due, values));
    }
}

fn stale_feed(c: &mut KindCompiler<'_>) -> Option<RuleLogic> {
    let after = c.required(&c.spec.after, "after", c.kind)?;
    let after_ns = duration(after, "after", false, c.errors)?;
    Some(RuleLogic::Stale(StaleFeed { after_ns }))
}
