//! Feed gaps: a tick whose sequence number skips past the one after the
//! last applied, so some of the source's ticks never arrived.
//!
//! Each gap is one event: the tick that reveals it raises a `fired` alert
//! naming how many sequence numbers are missing and where; there is
//! nothing to resolve. Ticks are seen in the engine's applied order, so a
//! tick that arrives late but within the allowed lateness fills its place
//! before the gap would be judged, and raises nothing.

use crate::model::{AlertKind, AlertSink, AlertValue, Fixed};
use crate::rules::context::EvalCtx;
use crate::rules::CompiledRule;

#[derive(Debug)]
pub struct FeedGap {
    /// The fewest missing sequence numbers that count as a gap (≥ 1).
    pub min_missing: u64,
}

/// The last sequence number this rule saw for the instrument.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GapState {
    pub last_seq: Option<u64>,
}

impl FeedGap {
    pub fn on_tick(&self, rule: &CompiledRule, ctx: &EvalCtx<'_>, state: &mut GapState, out: &mut impl AlertSink) {
        let Some(tick) = ctx.tick else { return };
        let previous = state.last_seq.replace(tick.seq);
        let Some(previous) = previous else { return };
        let missing = tick.seq.saturating_sub(previous).saturating_sub(1);
        if missing >= self.min_missing {
            let count = |n: u64| Fixed::from_int(i64::try_from(n).unwrap_or(i64::MAX)).unwrap_or(Fixed::MAX);
            let values = vec![
                AlertValue::new("missing", count(missing)),
                AlertValue::new("after_seq", count(previous)),
                AlertValue::new("seq", count(tick.seq)),
            ];
            out.emit(ctx.alert(rule, AlertKind::Fired, ctx.now_ns, values));
        }
    }
}
