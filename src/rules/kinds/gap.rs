//! Feed gaps: a tick whose sequence number skips past the one after the
//! last applied, so some of the source's ticks never arrived.
//!
//! Each gap is one event: the tick that reveals it raises a `fired` alert
//! naming how many sequence numbers are missing and where; there is
//! nothing to resolve. Ticks are seen in the engine's applied order, so a
//! tick that arrives late but within the allowed lateness fills its place
//! before the gap would be judged, and raises nothing.

use crate::model::{AlertKind, AlertSink, AlertValue, Fixed, KindMask};
use crate::rules::compile::KindCompiler;
use crate::rules::context::EvalCtx;
use crate::rules::CompiledRule;

use super::{KindEntry, RuleKind, RuleLogic};

/// `feed_gap`: a tick whose sequence number skips past the next one.
pub const KIND: KindEntry = KindEntry {
    name: "feed_gap",
    params: &["min_missing"],
    own_durations: false,
    compile: feed_gap,
};

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

impl RuleKind for FeedGap {
    type State = GapState;

    fn triggers(&self) -> KindMask {
        KindMask::ALL
    }

    fn timed(&self, _rule: &CompiledRule) -> bool {
        false
    }

    fn is_open(&self, _state: &GapState) -> bool {
        // Each gap is one event: nothing stays open.
        false
    }

    fn on_tick(&self, rule: &CompiledRule, ctx: &EvalCtx<'_>, state: &mut GapState, out: &mut impl AlertSink) {
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

fn feed_gap(c: &mut KindCompiler<'_>) -> Option<RuleLogic> {
    let min_missing = match &c.spec.min_missing {
        None => 1,
        Some(n) if *n.get_ref() >= 1 => n.get_ref().unsigned_abs(),
        Some(n) => {
            c.errors
                .at(n.span().start, "`min_missing` must be a whole number of at least 1");
            return None;
        }
    };
    Some(RuleLogic::Gap(FeedGap { min_missing }))
}
