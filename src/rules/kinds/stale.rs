//! Stale feeds: an instrument whose ticks stopped arriving.
//!
//! Silence is measured on the server's clock from when the newest tick was
//! received, not from its event time, and raised by the engine's timer
//! (a silent feed sends no tick to trigger anything). The alert is stamped
//! with the moment the silence reached `after`; the next tick resolves it.

use crate::model::{AlertKind, AlertSink, AlertValue, Fixed};
use crate::rules::context::EvalCtx;
use crate::rules::CompiledRule;

#[derive(Debug)]
pub struct StaleFeed {
    pub after_ns: i64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StaleState {
    pub stale: bool,
}

impl StaleState {
    pub fn deadline(&self, feed: &StaleFeed, last_received_ns: i64) -> Option<i64> {
        (!self.stale).then(|| last_received_ns.saturating_add(feed.after_ns))
    }
}

impl StaleFeed {
    pub fn on_tick(&self, rule: &CompiledRule, ctx: &EvalCtx<'_>, state: &mut StaleState, out: &mut impl AlertSink) {
        if state.stale {
            state.stale = false;
            out.emit(
                ctx.alert(rule, AlertKind::Resolved, ctx.now_ns, Vec::new())
                    .without_actions(),
            );
        }
    }

    pub fn on_timer(&self, rule: &CompiledRule, ctx: &EvalCtx<'_>, state: &mut StaleState, out: &mut impl AlertSink) {
        let due = ctx.last_received_ns.saturating_add(self.after_ns);
        if state.stale || ctx.now_ns < due {
            return;
        }
        state.stale = true;
        let values = vec![AlertValue::new(
            "silent_ms",
            Fixed::from_raw((ctx.now_ns - ctx.last_received_ns).saturating_mul(100)),
        )];
        out.emit(ctx.alert(rule, AlertKind::Fired, due, values));
    }
}
