//! One instrument's state: last values, sequence and time marks, and its
//! rolling windows. Which rules apply to it, and their state, the engine
//! keeps beside it (a partition, in `crate::engine`): state knows nothing
//! of rules.

use std::sync::Arc;

use smallvec::SmallVec;

use crate::model::{Fixed, InstrumentId, TickValues};

use super::reorder::ReorderBuffer;
use super::window::{Field, Window, WindowKey, WindowNeeds};

/// The newest value of every field, whatever tick carried it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LastValues {
    pub price: Option<Fixed>,
    pub size: Option<Fixed>,
    pub bid: Option<Fixed>,
    pub ask: Option<Fixed>,
    pub bid_size: Option<Fixed>,
    pub ask_size: Option<Fixed>,
    pub mark: Option<Fixed>,
    pub index: Option<Fixed>,
}

impl LastValues {
    #[inline]
    pub fn update(&mut self, values: &TickValues) {
        match *values {
            TickValues::Trade { price, size, .. } => {
                self.price = Some(price);
                self.size = Some(size);
            }
            TickValues::Quote {
                bid,
                ask,
                bid_size,
                ask_size,
            } => {
                self.bid = Some(bid);
                self.ask = Some(ask);
                self.bid_size = Some(bid_size);
                self.ask_size = Some(ask_size);
            }
            TickValues::Mark { price } => self.mark = Some(price),
            TickValues::Index { price } => self.index = Some(price),
        }
    }

    /// The newest value of `field`, if a tick has carried it.
    #[inline]
    pub fn field(&self, field: Field) -> Option<Fixed> {
        match field {
            Field::Price => self.price,
            Field::Size => self.size,
            Field::Notional => self.price?.checked_mul(self.size?),
            Field::Bid => self.bid,
            Field::Ask => self.ask,
            Field::Mid => Some(super::window::mid(self.bid?, self.ask?)),
            Field::Spread => Some(Fixed::from_raw(self.ask?.raw() - self.bid?.raw())),
            Field::Mark => self.mark,
            Field::Index => self.index,
        }
    }
}

/// Sequence-number and ordering counts, for metrics and status: one
/// instrument's, or summed over all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SequenceStats {
    /// Applied ticks whose sequence number skipped past the next one.
    pub gaps: u64,
    /// Sequence numbers skipped, over all gaps.
    pub missing: u64,
    /// Ticks accepted behind their instrument's newest (within the allowed
    /// lateness) and applied in their place.
    pub reordered: u64,
}

impl SequenceStats {
    pub fn add(&mut self, other: &SequenceStats) {
        self.gaps += other.gaps;
        self.missing += other.missing;
        self.reordered += other.reordered;
    }
}

/// Index of a window in a ruleset's window table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WindowSlot(pub u16);

/// The windows one instrument keeps: those its rules read, and no others.
#[derive(Clone, Debug, Default)]
pub struct WindowSet {
    /// Ruleset window slot -> index in `windows`, or `u16::MAX` if this
    /// instrument's rules do not read that window.
    local: SmallVec<[u16; 16]>,
    windows: SmallVec<[(WindowKey, Window); 2]>,
}

const ABSENT: u16 = u16::MAX;

impl WindowSet {
    /// An empty set sized for a ruleset with `slots` windows.
    pub fn with_slots(slots: usize) -> Self {
        WindowSet {
            local: smallvec::smallvec![ABSENT; slots],
            windows: SmallVec::new(),
        }
    }

    /// Adds the window for `slot`, or takes `existing` (state carried over
    /// from the previous ruleset) when given.
    pub fn insert(&mut self, slot: WindowSlot, key: WindowKey, needs: WindowNeeds, existing: Option<Window>) {
        if self.local[slot.0 as usize] != ABSENT {
            return;
        }
        let window = match existing {
            Some(w) if w.needs() == needs => w,
            _ => Window::new(key.span_ns, needs),
        };
        self.local[slot.0 as usize] = self.windows.len() as u16;
        self.windows.push((key, window));
    }

    #[inline]
    pub fn get(&self, slot: WindowSlot) -> Option<&Window> {
        match self.local.get(slot.0 as usize) {
            Some(&i) if i != ABSENT => Some(&self.windows[i as usize].1),
            _ => None,
        }
    }

    /// Every window with its key.
    pub fn iter(&self) -> impl Iterator<Item = &(WindowKey, Window)> {
        self.windows.iter()
    }

    /// Moves every window out, for carrying state into a new ruleset.
    pub fn into_windows(self) -> impl Iterator<Item = (WindowKey, Window)> {
        self.windows.into_iter()
    }

    /// Advances every window to `now_ns` and adds the tick's sample to those
    /// whose field it carries.
    #[inline]
    pub fn observe(&mut self, now_ns: i64, values: &TickValues) {
        for (key, window) in &mut self.windows {
            window.advance(now_ns);
            if let Some((value, weight)) = key.field.sample(values) {
                window.push(now_ns, value, weight);
            }
        }
    }

    pub fn held(&self) -> usize {
        self.windows.iter().map(|(_, w)| w.held()).sum()
    }
}

/// Everything the engine keeps for one instrument besides its rules.
///
/// Laid out in the order a tick reads it (`repr(C)`): marks and last
/// values, then windows, with what only reloads, snapshots and alerts read
/// at the end. The engine prefetches the front of this struct a few ticks
/// ahead, up to [`InstrumentState::HOT_BYTES`].
#[derive(Clone, Debug)]
#[repr(C)]
pub struct InstrumentState {
    /// Sequence number of the newest applied tick.
    pub last_seq: Option<u64>,
    /// Event time of the newest applied tick.
    pub last_event_ns: Option<i64>,
    /// When the newest tick was received (server clock; before any tick,
    /// when the instrument was first seen): with `last_event_ns`, it maps
    /// the instrument's event time to the server's clock for timers.
    pub last_received_ns: i64,
    pub last: LastValues,
    pub windows: WindowSet,
    /// Ticks waiting to be applied in event-time order; only with an
    /// allowed lateness (see [`ReorderBuffer`]).
    pub held: Option<Box<ReorderBuffer>>,
    pub id: InstrumentId,
    pub symbol: Arc<str>,
    /// Sequence gaps and reordering seen on this instrument (written, not
    /// read, by a tick with a gap: kept off the lines a tick reads).
    pub sequence: SequenceStats,
}

impl InstrumentState {
    /// How much of the front of an instrument's state a tick reads: marks,
    /// last values and the first 256 bytes of the windows (the set's index
    /// and the front of the first window: its span, needs and max deque).
    pub const HOT_BYTES: usize = {
        let end = std::mem::offset_of!(InstrumentState, windows) + 256;
        let size = std::mem::size_of::<InstrumentState>();
        if end < size {
            end
        } else {
            size
        }
    };

    /// Event time of the newest applied tick; before any, the server time
    /// the instrument was first seen.
    #[inline]
    pub fn last_tick_ns(&self) -> i64 {
        self.last_event_ns.unwrap_or(self.last_received_ns)
    }

    /// How far the server's clock was ahead of the instrument's event time
    /// when its newest tick was received (0 before any tick): the
    /// instrument's event time at server time `t` is taken as
    /// `t - offset` between ticks, and an event-time deadline `d` falls
    /// due at server time `d + offset`.
    #[inline]
    pub fn clock_offset_ns(&self) -> i64 {
        self.last_received_ns.saturating_sub(self.last_tick_ns())
    }

    /// The instrument's event time at server time `server_ns`.
    #[inline]
    pub fn event_time_at(&self, server_ns: i64) -> i64 {
        server_ns.saturating_sub(self.clock_offset_ns())
    }

    /// The server time at which the instrument's event time reaches
    /// `event_ns`.
    #[inline]
    pub fn server_time_of(&self, event_ns: i64) -> i64 {
        event_ns.saturating_add(self.clock_offset_ns())
    }

    pub fn new(id: InstrumentId, symbol: Arc<str>, received_ns: i64) -> Self {
        InstrumentState {
            id,
            symbol,
            last_seq: None,
            last_event_ns: None,
            last_received_ns: received_ns,
            last: LastValues::default(),
            sequence: SequenceStats::default(),
            windows: WindowSet::default(),
            held: None,
        }
    }
}
