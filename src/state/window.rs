//! Rolling windows over event time.
//!
//! A [`Window`] keeps the samples of one field (say, trade price) whose
//! event time lies in the trailing span `[now - span, now]` (both ends
//! included) and answers max, min, sum, count, mean, VWAP, first and last.
//!
//! - Max and min use monotonic deques: O(1) amortised per sample.
//! - Sums, counts and first/last use a deque of slots with running totals.
//!   Only the parts a ruleset asks for ([`WindowNeeds`]) are kept.
//! - Windows longer than [`EXACT_SPAN_LIMIT_NS`] group samples into
//!   buckets of `span / 300`, so a 5-minute mean on a busy instrument holds
//!   300 slots instead of every trade. Such a window's old edge moves in
//!   steps of one bucket: a bucket stays while any part of it overlaps the
//!   span. Windows up to the limit are exact to the nanosecond.
//!
//! The running Σ value × weight (for VWAP) is kept in 10^-16 units with
//! wrapping arithmetic: samples leave exactly as they came, so the total is
//! right whenever the true total over the window fits in an `i128`.
//!
//! Growth of the deques is amortised: once a window has seen its busiest
//! span, pushing a sample allocates nothing.

use std::collections::VecDeque;

use crate::model::{Fixed, TickValues};

mod ring;

pub use ring::Ring;

/// Max/min values kept inside the window before its deque spills to the
/// heap (see [`Ring`]).
const INLINE_EXTREMES: usize = 4;

/// Windows up to this span keep every sample; longer ones use buckets.
pub const EXACT_SPAN_LIMIT_NS: i64 = 60 * 1_000_000_000;
/// How many buckets a long window is cut into.
pub const BUCKETS_PER_LONG_WINDOW: i64 = 300;

/// A value a tick can carry, by name in rules (`price`, `bid`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Field {
    /// Trade price.
    Price,
    /// Trade size.
    Size,
    /// Trade price × size.
    Notional,
    Bid,
    Ask,
    /// (bid + ask) / 2, truncated to 8 decimals.
    Mid,
    /// ask - bid.
    Spread,
    Mark,
    Index,
}

impl Field {
    pub const ALL: [Field; 9] = [
        Field::Price,
        Field::Size,
        Field::Notional,
        Field::Bid,
        Field::Ask,
        Field::Mid,
        Field::Spread,
        Field::Mark,
        Field::Index,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Field::Price => "price",
            Field::Size => "size",
            Field::Notional => "notional",
            Field::Bid => "bid",
            Field::Ask => "ask",
            Field::Mid => "mid",
            Field::Spread => "spread",
            Field::Mark => "mark",
            Field::Index => "index",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The tick kind that carries this field.
    pub fn tick_kind(self) -> crate::model::TickKind {
        use crate::model::TickKind;
        match self {
            Field::Price | Field::Size | Field::Notional => TickKind::Trade,
            Field::Bid | Field::Ask | Field::Mid | Field::Spread => TickKind::Quote,
            Field::Mark => TickKind::Mark,
            Field::Index => TickKind::Index,
        }
    }

    /// This field's value in a tick, with its weight for VWAP (the trade
    /// size for `price`, zero otherwise); `None` when the tick does not
    /// carry the field.
    #[inline]
    pub fn sample(self, values: &TickValues) -> Option<(Fixed, Fixed)> {
        match (self, values) {
            (Field::Price, TickValues::Trade { price, size, .. }) => Some((*price, *size)),
            (Field::Size, TickValues::Trade { size, .. }) => Some((*size, Fixed::ZERO)),
            (Field::Notional, TickValues::Trade { price, size, .. }) => Some((notional(*price, *size), Fixed::ZERO)),
            (Field::Bid, TickValues::Quote { bid, .. }) => Some((*bid, Fixed::ZERO)),
            (Field::Ask, TickValues::Quote { ask, .. }) => Some((*ask, Fixed::ZERO)),
            (Field::Mid, TickValues::Quote { bid, ask, .. }) => Some((mid(*bid, *ask), Fixed::ZERO)),
            (Field::Spread, TickValues::Quote { bid, ask, .. }) => {
                Some((Fixed::from_raw(ask.raw() - bid.raw()), Fixed::ZERO))
            }
            (Field::Mark, TickValues::Mark { price }) => Some((*price, Fixed::ZERO)),
            (Field::Index, TickValues::Index { price }) => Some((*price, Fixed::ZERO)),
            _ => None,
        }
    }
}

/// price × size, saturating. Kept out of line: the compiler would
/// otherwise compute its 128-bit division speculatively for every field.
#[inline(never)]
fn notional(price: Fixed, size: Fixed) -> Fixed {
    price.checked_mul(size).unwrap_or(Fixed::MAX)
}

/// (bid + ask) / 2 without overflow, truncated to 8 decimals. Kept out of
/// line for the same reason as `notional`: inlined into a window update,
/// its 128-bit arithmetic was computed for every tick, quote or not.
#[inline(never)]
pub fn mid(bid: Fixed, ask: Fixed) -> Fixed {
    Fixed::from_raw(((i128::from(bid.raw()) + i128::from(ask.raw())) / 2) as i64)
}

/// Identifies one window: the same key is one shared window per
/// instrument, however many rules read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct WindowKey {
    pub field: Field,
    pub span_ns: i64,
}

/// Which aggregates the rules of a ruleset read from a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct WindowNeeds {
    pub max: bool,
    pub min: bool,
    /// sum, count, mean, VWAP, first and last.
    pub slots: bool,
}

impl WindowNeeds {
    pub const MAX: WindowNeeds = WindowNeeds {
        max: true,
        min: false,
        slots: false,
    };
    pub const MIN: WindowNeeds = WindowNeeds {
        max: false,
        min: true,
        slots: false,
    };
    pub const SLOTS: WindowNeeds = WindowNeeds {
        max: false,
        min: false,
        slots: true,
    };

    pub fn union(self, other: WindowNeeds) -> WindowNeeds {
        WindowNeeds {
            max: self.max || other.max,
            min: self.min || other.min,
            slots: self.slots || other.slots,
        }
    }
}

/// A value and the event time it was seen at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Extreme {
    pub time_ns: i64,
    pub value: Fixed,
}

/// Running totals of the samples that fell in one bucket (or one sample,
/// for exact windows).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Slot {
    /// Bucket start (exact windows: the sample's time).
    time_ns: i64,
    count: u64,
    sum: i128,
    sum_weight: i128,
    /// Σ value × weight, in 10^-16 units, wrapping (see `Window`).
    sum_weighted: i128,
    first: i64,
    last: i64,
}

/// One rolling window of one field for one instrument.
///
/// Laid out in the order a tick reads it (`repr(C)`): span, start, needs
/// and the max/min deques first, then the sums and slots, so a max or min
/// window is read from the front of the struct.
///
/// Checkpoints hold windows in the field order of `WindowRecord`, which
/// does not follow this layout.
#[derive(Clone, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Window {
    span_ns: i64,
    /// Bucket width; 0 for an exact window.
    bucket_ns: i64,
    /// Event time this window first saw (its first `advance`).
    started_ns: Option<i64>,
    needs: WindowNeeds,
    /// Decreasing values (front = max) with their times.
    maxq: ExtremeQueue,
    /// Increasing values (front = min) with their times.
    minq: ExtremeQueue,
    count: u64,
    sum: i128,
    sum_weight: i128,
    sum_weighted: i128,
    slots: VecDeque<Slot>,
}

/// A window as checkpoints store it: fields in this order, whatever the
/// in-memory layout, so checkpoints written before and after a layout
/// change read the same. `Q` and `S` are the deque types, owned when
/// reading and borrowed when writing.
#[derive(serde::Serialize, serde::Deserialize)]
struct WindowRecord<Q, S> {
    span_ns: i64,
    bucket_ns: i64,
    needs: WindowNeeds,
    maxq: Q,
    minq: Q,
    slots: S,
    count: u64,
    sum: i128,
    sum_weight: i128,
    sum_weighted: i128,
    started_ns: Option<i64>,
}

type ExtremeQueue = Ring<Extreme, INLINE_EXTREMES>;

impl serde::Serialize for Window {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        WindowRecord {
            span_ns: self.span_ns,
            bucket_ns: self.bucket_ns,
            needs: self.needs,
            maxq: &self.maxq,
            minq: &self.minq,
            slots: &self.slots,
            count: self.count,
            sum: self.sum,
            sum_weight: self.sum_weight,
            sum_weighted: self.sum_weighted,
            started_ns: self.started_ns,
        }
        .serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Window {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let r = WindowRecord::<ExtremeQueue, VecDeque<Slot>>::deserialize(deserializer)?;
        Ok(Window {
            span_ns: r.span_ns,
            bucket_ns: r.bucket_ns,
            started_ns: r.started_ns,
            needs: r.needs,
            maxq: r.maxq,
            minq: r.minq,
            count: r.count,
            sum: r.sum,
            sum_weight: r.sum_weight,
            sum_weighted: r.sum_weighted,
            slots: r.slots,
        })
    }
}

impl Window {
    pub fn new(span_ns: i64, needs: WindowNeeds) -> Self {
        let bucket_ns = if span_ns > EXACT_SPAN_LIMIT_NS {
            (span_ns / BUCKETS_PER_LONG_WINDOW).max(1)
        } else {
            0
        };
        Window {
            span_ns,
            bucket_ns,
            started_ns: None,
            needs,
            maxq: Ring::new(),
            minq: Ring::new(),
            count: 0,
            sum: 0,
            sum_weight: 0,
            sum_weighted: 0,
            slots: VecDeque::new(),
        }
    }

    /// True once the window has been observing for a whole span, so its
    /// totals cover the span rather than only part of it.
    pub fn has_covered(&self, now_ns: i64) -> bool {
        self.started_ns
            .is_some_and(|t| now_ns.saturating_sub(t) >= self.span_ns)
    }

    pub fn span_ns(&self) -> i64 {
        self.span_ns
    }

    /// Bucket width in ns, 0 for an exact window.
    pub fn bucket_ns(&self) -> i64 {
        self.bucket_ns
    }

    pub fn needs(&self) -> WindowNeeds {
        self.needs
    }

    #[inline]
    fn bucket_of(&self, time_ns: i64) -> i64 {
        if self.bucket_ns == 0 {
            time_ns
        } else {
            time_ns - time_ns.rem_euclid(self.bucket_ns)
        }
    }

    /// Oldest slot time still inside the window at `now_ns`.
    #[inline]
    fn cutoff(&self, now_ns: i64) -> i64 {
        let edge = now_ns.saturating_sub(self.span_ns);
        if self.bucket_ns == 0 {
            edge
        } else {
            edge.saturating_sub(self.bucket_ns - 1)
        }
    }

    /// Drops samples that have left the window at `now_ns`.
    #[inline]
    pub fn advance(&mut self, now_ns: i64) {
        if self.started_ns.is_none() {
            self.started_ns = Some(now_ns);
        }
        let cutoff = self.cutoff(now_ns);
        // Extremes keep their samples' own times: one leaves with its
        // bucket, that is once the first bucket start at or after
        // `cutoff` is later than its time.
        let extreme_cutoff = if self.bucket_ns == 0 {
            cutoff
        } else {
            self.bucket_of(cutoff.saturating_add(self.bucket_ns - 1))
        };
        if self.needs.max {
            while self.maxq.front().is_some_and(|e| e.time_ns < extreme_cutoff) {
                self.maxq.pop_front();
            }
        }
        if self.needs.min {
            while self.minq.front().is_some_and(|e| e.time_ns < extreme_cutoff) {
                self.minq.pop_front();
            }
        }
        if !self.needs.slots {
            return;
        }
        while let Some(slot) = self.slots.front() {
            if slot.time_ns >= cutoff {
                break;
            }
            self.count -= slot.count;
            self.sum -= slot.sum;
            self.sum_weight -= slot.sum_weight;
            self.sum_weighted = self.sum_weighted.wrapping_sub(slot.sum_weighted);
            self.slots.pop_front();
        }
    }

    /// Adds a sample seen at `time_ns`. Times must not go backwards (the
    /// engine rejects late ticks before they reach a window).
    #[inline]
    pub fn push(&mut self, time_ns: i64, value: Fixed, weight: Fixed) {
        let t = self.bucket_of(time_ns);
        let v = value.raw();
        if self.needs.max {
            while self.maxq.back().is_some_and(|e| e.value.raw() <= v) {
                self.maxq.pop_back();
            }
            self.maxq.push_back(Extreme { time_ns, value });
        }
        if self.needs.min {
            while self.minq.back().is_some_and(|e| e.value.raw() >= v) {
                self.minq.pop_back();
            }
            self.minq.push_back(Extreme { time_ns, value });
        }
        if self.needs.slots {
            let w = i128::from(weight.raw());
            let vw = i128::from(v) * w;
            self.count += 1;
            self.sum += i128::from(v);
            self.sum_weight += w;
            self.sum_weighted = self.sum_weighted.wrapping_add(vw);
            match self.slots.back_mut() {
                Some(slot) if self.bucket_ns != 0 && slot.time_ns == t => {
                    slot.count += 1;
                    slot.sum += i128::from(v);
                    slot.sum_weight += w;
                    slot.sum_weighted = slot.sum_weighted.wrapping_add(vw);
                    slot.last = v;
                }
                _ => self.slots.push_back(Slot {
                    time_ns: t,
                    count: 1,
                    sum: i128::from(v),
                    sum_weight: w,
                    sum_weighted: vw,
                    first: v,
                    last: v,
                }),
            }
        }
    }

    /// Highest value in the window and when it was seen (the latest time
    /// if it was seen more than once).
    #[inline]
    pub fn max(&self) -> Option<Extreme> {
        self.maxq.front().copied()
    }

    /// Lowest value in the window and when it was seen.
    #[inline]
    pub fn min(&self) -> Option<Extreme> {
        self.minq.front().copied()
    }

    /// Highest value among the window's samples seen at or after
    /// `from_ns` (a look-back that restarted then); `None` if there is
    /// none. The deque holds, after each of its values, the maximum of
    /// everything later, so the answer is its first value from `from_ns`
    /// on: a binary search, nothing allocated.
    #[inline]
    pub fn max_since(&self, from_ns: i64) -> Option<Extreme> {
        self.maxq.first_from(|e| e.time_ns >= from_ns)
    }

    /// Lowest value among the samples seen at or after `from_ns`.
    #[inline]
    pub fn min_since(&self, from_ns: i64) -> Option<Extreme> {
        self.minq.first_from(|e| e.time_ns >= from_ns)
    }

    /// Number of samples in the window.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Sum of the values; `None` if it does not fit a [`Fixed`].
    pub fn sum(&self) -> Option<Fixed> {
        i64::try_from(self.sum).ok().map(Fixed::from_raw)
    }

    /// Sum of the values, unbounded, in 10^-8 units.
    pub fn sum_raw(&self) -> i128 {
        self.sum
    }

    /// Plain mean of the values, truncated to 8 decimals.
    pub fn mean(&self) -> Option<Fixed> {
        if self.count == 0 {
            return None;
        }
        i64::try_from(self.sum / i128::from(self.count))
            .ok()
            .map(Fixed::from_raw)
    }

    /// Volume-weighted mean (only meaningful for `price`), truncated.
    pub fn vwap(&self) -> Option<Fixed> {
        if self.sum_weight == 0 {
            return None;
        }
        // Σ v·w is in 10^-16 units and Σ w in 10^-8: the quotient is in 10^-8.
        i64::try_from(self.sum_weighted / self.sum_weight)
            .ok()
            .map(Fixed::from_raw)
    }

    /// Oldest value still in the window.
    pub fn first(&self) -> Option<Fixed> {
        self.slots.front().map(|s| Fixed::from_raw(s.first))
    }

    /// Newest value in the window.
    pub fn last(&self) -> Option<Fixed> {
        self.slots.back().map(|s| Fixed::from_raw(s.last))
    }

    /// Samples held, for memory accounting.
    pub fn held(&self) -> usize {
        self.maxq.len() + self.minq.len() + self.slots.len()
    }

    /// Checks that a window read back from outside (a checkpoint) is one
    /// this code could have built for `key`: its span and buckets, deques
    /// in order, running totals equal to the sums of its slots. Names the
    /// first thing found wrong.
    ///
    /// # Errors
    /// The first inconsistency found.
    pub fn check_consistent(&self, key: WindowKey) -> Result<(), &'static str> {
        let expected = Window::new(key.span_ns, self.needs);
        if key.span_ns <= 0 || self.span_ns != key.span_ns || self.bucket_ns != expected.bucket_ns {
            return Err("span or bucket width does not match the window's key");
        }
        if (!self.needs.max && !self.maxq.is_empty())
            || (!self.needs.min && !self.minq.is_empty())
            || (!self.needs.slots && !self.slots.is_empty())
        {
            return Err("holds samples for an aggregate it does not keep");
        }
        let ordered = |q: &ExtremeQueue, falling: bool| {
            q.iter()
                .zip(q.iter().skip(1))
                .all(|(a, b)| a.time_ns <= b.time_ns && if falling { a.value > b.value } else { a.value < b.value })
        };
        if !ordered(&self.maxq, true) || !ordered(&self.minq, false) {
            return Err("max or min deque out of order");
        }
        let mut count = 0u64;
        let (mut sum, mut sum_weight, mut sum_weighted) = (0i128, 0i128, 0i128);
        let mut previous = i64::MIN;
        for slot in &self.slots {
            if slot.count == 0 || slot.time_ns < previous {
                return Err("empty or out-of-order slot");
            }
            previous = slot.time_ns;
            count = count.checked_add(slot.count).ok_or("slot counts overflow")?;
            sum = sum.checked_add(slot.sum).ok_or("slot sums overflow")?;
            sum_weight = sum_weight.checked_add(slot.sum_weight).ok_or("slot weights overflow")?;
            sum_weighted = sum_weighted.wrapping_add(slot.sum_weighted);
        }
        if (count, sum, sum_weight, sum_weighted) != (self.count, self.sum, self.sum_weight, self.sum_weighted) {
            return Err("running totals differ from the sum of the slots");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
