//! Ticks held back so an instrument's ticks are applied in event-time
//! order although they arrived out of it.
//!
//! With an allowed lateness `L`, a tick is held until the instrument has
//! seen a tick more than `L` newer (the watermark passed it), or until it
//! has waited `L` on the receive clock, whichever comes first; held ticks
//! are released in (event time, sequence number) order. A tick arriving up
//! to `L` behind the newest therefore still finds its place, and the
//! windows and rules see exactly the ordered stream. The price is that
//! every tick waits up to `L` before it is evaluated: `L = 0` (the
//! default) holds nothing.
//!
//! Held ticks are not part of checkpoints: they are not applied, so the
//! acknowledged sequence numbers do not cover them and a client resends
//! them after a restart.

use crate::model::Tick;

/// One held tick and when it was received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldTick {
    pub tick: Tick,
    pub received_ns: i64,
}

impl HeldTick {
    fn key(&self) -> (i64, u64) {
        (self.tick.event_time_ns, self.tick.seq)
    }
}

/// One instrument's held ticks, newest last. Small: bounded by what
/// arrives within the allowed lateness.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReorderBuffer {
    /// Sorted by (event time, sequence number).
    held: Vec<HeldTick>,
    /// Newest event time seen, held or applied.
    newest_ns: Option<i64>,
}

impl ReorderBuffer {
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Newest event time this buffer has seen.
    pub fn newest_ns(&self) -> Option<i64> {
        self.newest_ns
    }

    /// Whether a tick with this sequence number is held.
    pub fn holds_seq(&self, seq: u64) -> bool {
        self.held.iter().any(|h| h.tick.seq == seq)
    }

    /// Holds `tick`, in order.
    pub fn hold(&mut self, tick: Tick, received_ns: i64) {
        let held = HeldTick { tick, received_ns };
        let at = self.held.partition_point(|h| h.key() <= held.key());
        self.held.insert(at, held);
        self.newest_ns = Some(self.newest_ns.map_or(tick.event_time_ns, |n| n.max(tick.event_time_ns)));
    }

    /// Removes and returns the oldest held tick if the watermark (newest
    /// seen minus `lateness_ns`) has passed it: no tick still allowed to
    /// arrive can come before it.
    pub fn release_passed(&mut self, lateness_ns: i64) -> Option<HeldTick> {
        let watermark = self.newest_ns?.saturating_sub(lateness_ns);
        match self.held.first() {
            Some(first) if first.tick.event_time_ns < watermark => Some(self.held.remove(0)),
            _ => None,
        }
    }

    /// Removes and returns the oldest held tick if it, or any tick after
    /// it, has waited `lateness_ns` on the receive clock by `now_ns`:
    /// waiting ticks go out in order, so a tick that is due takes the
    /// ticks before it along.
    pub fn release_due(&mut self, now_ns: i64, lateness_ns: i64) -> Option<HeldTick> {
        let due = self
            .held
            .iter()
            .any(|h| h.received_ns.saturating_add(lateness_ns) <= now_ns);
        if due {
            Some(self.held.remove(0))
        } else {
            None
        }
    }

    /// Removes and returns the oldest held tick.
    pub fn release_any(&mut self) -> Option<HeldTick> {
        (!self.held.is_empty()).then(|| self.held.remove(0))
    }

    /// When the longest-waiting held tick is due on the receive clock.
    pub fn deadline(&self, lateness_ns: i64) -> Option<i64> {
        self.held
            .iter()
            .map(|h| h.received_ns.saturating_add(lateness_ns))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Fixed, InstrumentId, TickValues};

    fn tick(t: i64, seq: u64) -> Tick {
        Tick {
            instrument: InstrumentId(0),
            event_time_ns: t,
            seq,
            values: TickValues::Mark { price: Fixed::ONE },
        }
    }

    #[test]
    fn releases_in_event_time_then_sequence_order_once_the_watermark_passes() {
        let mut b = ReorderBuffer::default();
        b.hold(tick(30, 3), 0);
        b.hold(tick(10, 2), 0);
        b.hold(tick(10, 1), 0);
        assert_eq!(b.release_passed(20), None, "watermark 10 has not passed 10");
        b.hold(tick(31, 4), 0);
        let out: Vec<_> = std::iter::from_fn(|| b.release_passed(20))
            .map(|h| h.tick.seq)
            .collect();
        assert_eq!(out, vec![1, 2]);
        assert_eq!(b.len(), 2);
        assert!(b.holds_seq(3) && !b.holds_seq(1));
    }

    #[test]
    fn a_due_tick_takes_the_earlier_ones_with_it() {
        let mut b = ReorderBuffer::default();
        b.hold(tick(10, 1), 500);
        b.hold(tick(20, 2), 100);
        b.hold(tick(30, 3), 900);
        assert_eq!(b.deadline(50), Some(150));
        let out: Vec<_> = std::iter::from_fn(|| b.release_due(160, 50))
            .map(|h| h.tick.seq)
            .collect();
        assert_eq!(out, vec![1, 2], "tick 2 is due, and tick 1 goes before it");
        assert_eq!(b.deadline(50), Some(950));
        assert_eq!(b.release_any().map(|h| h.tick.seq), Some(3));
        assert!(b.is_empty());
    }
}
