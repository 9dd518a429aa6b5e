//! What a rule sees when it is evaluated, and how rules ask for windows
//! when they are compiled.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::{Action, Alert, AlertKind, AlertValue, Severity, Tick};
use crate::state::{LastValues, Window, WindowKey, WindowNeeds, WindowSet, WindowSlot};

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
    /// When the instrument's newest tick was received.
    pub last_received_ns: i64,
}

impl EvalCtx<'_> {
    /// The window a rule asked for at compile time. Always present for a
    /// rule bound to this instrument.
    #[inline]
    pub fn window(&self, slot: WindowSlot) -> Option<&Window> {
        self.windows.get(slot)
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
