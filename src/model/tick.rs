//! Ticks: one market-data event for one instrument, already validated.

use super::fixed::Fixed;

/// An instrument's small integer id, given on first sight of its symbol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstrumentId(pub u32);

/// What a tick reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TickKind {
    Trade,
    Quote,
    Mark,
    Index,
}

impl TickKind {
    pub const ALL: [TickKind; 4] = [TickKind::Trade, TickKind::Quote, TickKind::Mark, TickKind::Index];

    pub fn name(self) -> &'static str {
        match self {
            TickKind::Trade => "trade",
            TickKind::Quote => "quote",
            TickKind::Mark => "mark",
            TickKind::Index => "index",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        TickKind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// This kind's bit in a [`KindMask`].
    pub const fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of tick kinds: which ticks make a rule evaluate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct KindMask(pub u8);

impl KindMask {
    pub const NONE: KindMask = KindMask(0);
    pub const ALL: KindMask = KindMask(0b1111);

    pub const fn of(kind: TickKind) -> Self {
        KindMask(kind.bit())
    }

    pub const fn with(self, kind: TickKind) -> Self {
        KindMask(self.0 | kind.bit())
    }

    pub const fn union(self, other: KindMask) -> Self {
        KindMask(self.0 | other.0)
    }

    #[inline]
    pub const fn contains(self, kind: TickKind) -> bool {
        self.0 & kind.bit() != 0
    }
}

/// The aggressor side of a trade.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Buy,
    Sell,
}

/// The values a tick carries, by kind. Checked by
/// [`crate::ingest::validate_tick`]: prices positive, sizes not negative,
/// bid not above ask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TickValues {
    Trade {
        price: Fixed,
        size: Fixed,
        side: Option<Side>,
    },
    Quote {
        bid: Fixed,
        ask: Fixed,
        bid_size: Fixed,
        ask_size: Fixed,
    },
    Mark {
        price: Fixed,
    },
    Index {
        price: Fixed,
    },
}

impl TickValues {
    pub fn kind(&self) -> TickKind {
        match self {
            TickValues::Trade { .. } => TickKind::Trade,
            TickValues::Quote { .. } => TickKind::Quote,
            TickValues::Mark { .. } => TickKind::Mark,
            TickValues::Index { .. } => TickKind::Index,
        }
    }
}

/// A validated tick for an interned instrument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tick {
    pub instrument: InstrumentId,
    /// Exchange timestamp, nanoseconds since the Unix epoch.
    pub event_time_ns: i64,
    /// The source's per-instrument sequence number.
    pub seq: u64,
    pub values: TickValues,
}

impl Tick {
    pub fn kind(&self) -> TickKind {
        self.values.kind()
    }
}
