//! What a rule sees when it is evaluated, and how rules ask for windows
//! when they are compiled.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::{Action, Alert, AlertKind, AlertValue, Fixed, Fraction, Severity, Tick};
use crate::refdata::{InstrumentRef, Product};
use crate::state::{Extreme, Field, LastValues, Window, WindowKey, WindowNeeds, WindowSet, WindowSlot};

use super::CompiledRule;

/// One evaluation: a tick just applied to an instrument, or a timer.
#[derive(Clone, Copy)]
pub struct EvalCtx<'a> {
    /// Event time of the tick, or the timer's time.
    pub now_ns: i64,
    /// The tick being evaluated; `None` when a timer runs.
    pub tick: Option<&'a Tick>,
    pub last: &'a LastValues,
    pub windows: &'a WindowSet,
    pub symbol: &'a Arc<str>,
    pub ruleset_version: u64,
    /// Event time of the instrument's newest tick (when it has had none,
    /// when it was first seen): silence is measured from here.
    pub last_tick_ns: i64,
    /// The instrument's reference data, if it has any (`prior_close`,
    /// `settlement`, `tick_size` in expressions).
    pub reference: Option<&'a InstrumentRef>,
    /// When a group rule is evaluated: the group's members.
    pub group: Option<&'a GroupView<'a>>,
    /// Where the rule's look-back starts, if it restarted (a halt rule
    /// with `lookback = "resume"`, after a resume): max and min read only
    /// the samples seen from then on.
    pub lookback_from_ns: Option<i64>,
    /// When a pattern step is evaluated for one partial match: the values
    /// its earlier steps bound (`a.price`).
    pub bound: Option<&'a Bound>,
}

/// Most values a pattern's steps may bind.
pub const MAX_BOUND: usize = 16;

/// The values the steps of one partial match bound, by the index the
/// pattern gave each (step, field) at compile time; unknown where the
/// field had no value at the step's event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Bound {
    pub raw: [i64; MAX_BOUND],
    /// Bit `i` set when `raw[i]` is known.
    pub known: u16,
}

impl Bound {
    #[inline]
    pub fn get(&self, i: u8) -> Option<Fixed> {
        let i = usize::from(i);
        (i < MAX_BOUND && self.known & (1 << i) != 0).then(|| Fixed::from_raw(self.raw[i]))
    }

    #[inline]
    pub fn set(&mut self, i: u8, value: Option<Fixed>) {
        let i = usize::from(i);
        if i >= MAX_BOUND {
            return;
        }
        match value {
            Some(v) => {
                self.raw[i] = v.raw();
                self.known |= 1 << i;
            }
            None => {
                self.raw[i] = 0;
                self.known &= !(1 << i);
            }
        }
    }
}

/// A value an expression reads from a group member: a market-data field
/// (its newest value) or a reference price.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    Market(Field),
    Reference(RefField),
}

/// A value from an instrument's reference data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RefField {
    PriorClose,
    Settlement,
    TickSize,
}

impl RefField {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "prior_close" => Some(RefField::PriorClose),
            "settlement" => Some(RefField::Settlement),
            "tick_size" => Some(RefField::TickSize),
            _ => None,
        }
    }

    pub fn of(self, instrument: &InstrumentRef) -> Option<Fixed> {
        match self {
            RefField::PriorClose => instrument.prior_close,
            RefField::Settlement => instrument.settlement,
            RefField::TickSize => instrument.tick_size,
        }
    }
}

/// One member of a group, as a group rule sees it.
#[derive(Clone, Debug)]
pub struct MemberValues {
    pub symbol: Arc<str>,
    /// Its reference data (product, expiry, weight, reference prices).
    pub reference: Option<Arc<InstrumentRef>>,
    pub last: LastValues,
    /// Event time of its newest tick; `None` before its first.
    pub last_event_ns: Option<i64>,
}

impl MemberValues {
    pub fn product(&self) -> Option<Product> {
        self.reference.as_ref()?.product
    }

    pub fn expiry_ns(&self) -> Option<i64> {
        self.reference.as_ref()?.expiry_ns
    }

    /// Its weight in `group_wmean`.
    pub fn weight(&self) -> Option<Fixed> {
        self.reference.as_ref()?.weight
    }

    /// The member's value of `source`.
    #[inline]
    pub fn value(&self, source: Source) -> Option<Fixed> {
        match source {
            Source::Market(field) => self.last.field(field),
            Source::Reference(field) => field.of(self.reference.as_deref()?),
        }
    }
}

/// Aggregates already computed in one evaluation, by a key the
/// expression evaluator gives each (an expression that reads
/// `group_median(price, spot)` twice computes it once).
pub type AggregateMemo = std::cell::RefCell<smallvec::SmallVec<[(u32, Option<(i128, i128)>); 4]>>;

/// The members of a group at one evaluation, and how the rule being
/// evaluated filters them for aggregates.
#[derive(Clone, Copy, Debug)]
pub struct GroupView<'a> {
    /// Aggregates computed so far in this evaluation.
    pub memo: &'a AggregateMemo,
    /// Sorted by symbol.
    pub members: &'a [MemberValues],
    /// A member whose newest tick is older than this (event time, before
    /// the tick being evaluated) is left out of aggregates.
    pub max_age_ns: Option<i64>,
    /// A member further than this from the median of the fresh members
    /// is left out of aggregates (an outlier, given weight 0).
    pub outlier: Option<Fraction>,
}

impl GroupView<'_> {
    /// The member with `product`: the one expiring soonest (not yet
    /// expired at `now_ns`) among those with an expiry, else the first by
    /// symbol.
    pub fn member(&self, product: Product, now_ns: i64) -> Option<&MemberValues> {
        let mut first = None;
        let mut soonest: Option<(&MemberValues, i64)> = None;
        for m in self.members {
            let Some(reference) = &m.reference else { continue };
            if reference.product != Some(product) {
                continue;
            }
            first = first.or(Some(m));
            if let Some(expiry) = reference.expiry_ns.filter(|&e| e >= now_ns) {
                if soonest.is_none_or(|(_, best)| expiry < best) {
                    soonest = Some((m, expiry));
                }
            }
        }
        soonest.map(|(m, _)| m).or(first)
    }

    /// Whether `member` counts in an aggregate at `now_ns` (not stale).
    #[inline]
    pub fn fresh(&self, member: &MemberValues, now_ns: i64) -> bool {
        match (self.max_age_ns, member.last_event_ns) {
            (None, _) => true,
            (Some(age), Some(t)) => now_ns.saturating_sub(t) <= age,
            (Some(_), None) => false,
        }
    }
}

impl EvalCtx<'_> {
    /// The window a rule asked for at compile time. Always present for a
    /// rule bound to this instrument.
    #[inline]
    pub fn window(&self, slot: WindowSlot) -> Option<&Window> {
        self.windows.get(slot)
    }

    /// The highest value of a window, within the look-back.
    #[inline]
    pub fn max(&self, slot: WindowSlot) -> Option<Extreme> {
        let w = self.windows.get(slot)?;
        match self.lookback_from_ns {
            None => w.max(),
            Some(from) => w.max_since(from),
        }
    }

    /// The lowest value of a window, within the look-back.
    #[inline]
    pub fn min(&self, slot: WindowSlot) -> Option<Extreme> {
        let w = self.windows.get(slot)?;
        match self.lookback_from_ns {
            None => w.min(),
            Some(from) => w.min_since(from),
        }
    }

    /// An alert of `rule` about this instrument, stamped with the tick's
    /// sequence number (if a tick is being evaluated).
    pub fn alert(&self, rule: &CompiledRule, kind: AlertKind, at_ns: i64, values: Vec<AlertValue>) -> Alert {
        self.alert_as(rule, kind, rule.severity, rule.actions.clone(), at_ns, values)
    }

    /// As [`EvalCtx::alert`], with a severity and actions other than the
    /// rule's own (a breaker tier's, say).
    pub fn alert_as(
        &self,
        rule: &CompiledRule,
        kind: AlertKind,
        severity: Severity,
        actions: Arc<[Action]>,
        at_ns: i64,
        values: Vec<AlertValue>,
    ) -> Alert {
        Alert {
            rule_id: rule.id.clone(),
            ruleset_version: self.ruleset_version,
            instrument: self.symbol.clone(),
            kind,
            severity,
            actions,
            mode: rule.mode,
            values,
            event_time_ns: at_ns,
            tick_seq: self.tick.map(|t| t.seq),
            reason: None,
            trigger_instrument: None,
        }
    }
}

/// Collects the windows a ruleset's rules read, so that rules reading the
/// same field over the same span share one window per instrument.
#[derive(Debug, Default)]
pub struct WindowRegistry {
    slots: BTreeMap<WindowKey, (WindowSlot, WindowNeeds)>,
}

impl WindowRegistry {
    /// The slot for `key`, widening what it keeps to include `needs`.
    pub fn request(&mut self, key: WindowKey, needs: WindowNeeds) -> WindowSlot {
        let next = WindowSlot(self.slots.len() as u16);
        let entry = self.slots.entry(key).or_insert((next, WindowNeeds::default()));
        entry.1 = entry.1.union(needs);
        entry.0
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The window table, indexed by slot.
    pub fn into_table(self) -> Vec<(WindowKey, WindowNeeds)> {
        let mut table: Vec<_> = self.slots.into_iter().map(|(k, (s, n))| (s, k, n)).collect();
        table.sort_by_key(|(s, _, _)| *s);
        table.into_iter().map(|(_, k, n)| (k, n)).collect()
    }
}
