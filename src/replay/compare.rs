//! Two rulesets over one pass of the data: what an edit changes.
//!
//! Alerts are matched by (rule id, instrument, kind, occurrence): the n-th
//! `fired` of rule R on BTC-USDT under ruleset A is matched with the n-th
//! under B. A matched pair at the same event time is the same alert; at
//! different times it has **moved**; an occurrence only one side reaches
//! is **only A** or **only B**. So a loosened threshold that fires earlier
//! shows as moved, and one that fires more often as extra `only_b`
//! occurrences.
//!
//! Memory holds only the occurrences not yet matched and the differences
//! found, never every alert.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::model::{Alert, AlertKind};

/// Which side of a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DiffSide {
    OnlyA,
    OnlyB,
    Moved,
}

impl DiffSide {
    pub fn name(self) -> &'static str {
        match self {
            DiffSide::OnlyA => "only_a",
            DiffSide::OnlyB => "only_b",
            DiffSide::Moved => "moved",
        }
    }
}

/// One alert of one side, with its sequence number in that side's replay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub seq: u64,
    pub received_ns: i64,
    pub alert: Alert,
}

/// A difference between the two sides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diff {
    pub side: DiffSide,
    /// 1-based occurrence of (rule, instrument, kind) on its side(s).
    pub occurrence: u64,
    pub a: Option<Seen>,
    pub b: Option<Seen>,
}

impl Diff {
    /// Either side's alert (A's when both).
    pub fn alert(&self) -> &Alert {
        match (&self.a, &self.b) {
            (Some(a), _) => &a.alert,
            (None, Some(b)) => &b.alert,
            (None, None) => unreachable!("a diff has at least one side"),
        }
    }

    /// The earlier of its times: the order differences are reported in.
    fn time(&self) -> i64 {
        let a = self.a.as_ref().map_or(i64::MAX, |s| s.alert.event_time_ns);
        let b = self.b.as_ref().map_or(i64::MAX, |s| s.alert.event_time_ns);
        a.min(b)
    }
}

type Key = (Arc<str>, Arc<str>, AlertKind);

/// Occurrences of one key.
#[derive(Default)]
struct Occurrences {
    /// How many each side has raised.
    count: [u64; 2],
    /// Raised by one side and not yet by the other, oldest first. Only one
    /// side can have any: the other side's next one matches the front.
    waiting: VecDeque<Seen>,
}

/// Pairs the alerts of two replays as they are raised.
#[derive(Default)]
pub struct Matcher {
    keys: HashMap<Key, Occurrences>,
    diffs: Vec<Diff>,
    /// Pairs at the same time.
    pub same: u64,
    /// Alerts raised by each side.
    pub raised: [u64; 2],
}

impl Matcher {
    pub fn new() -> Self {
        Matcher::default()
    }

    /// Records an alert of side `side` (0: A, 1: B).
    pub fn push(&mut self, side: usize, seen: Seen) {
        let side = side.min(1);
        let other = 1 - side;
        self.raised[side] += 1;
        let key = (
            seen.alert.rule_id.clone(),
            seen.alert.instrument.clone(),
            seen.alert.kind,
        );
        let occ = self.keys.entry(key).or_default();
        occ.count[side] += 1;
        let occurrence = occ.count[side];
        if occ.count[side] <= occ.count[other] {
            // The other side's occurrence `occurrence` is waiting.
            let Some(theirs) = occ.waiting.pop_front() else {
                return;
            };
            if theirs.alert.event_time_ns == seen.alert.event_time_ns {
                self.same += 1;
                return;
            }
            let (a, b) = if side == 0 { (seen, theirs) } else { (theirs, seen) };
            self.diffs.push(Diff {
                side: DiffSide::Moved,
                occurrence,
                a: Some(a),
                b: Some(b),
            });
        } else {
            occ.waiting.push_back(seen);
        }
    }

    /// Every difference: moved pairs and occurrences only one side
    /// reached, ordered by time, then side, rule, instrument, kind and
    /// occurrence.
    pub fn finish(mut self) -> Vec<Diff> {
        for occ in self.keys.into_values() {
            let side = if occ.count[0] > occ.count[1] { 0 } else { 1 };
            let matched = occ.count[1 - side];
            for (i, seen) in occ.waiting.into_iter().enumerate() {
                let occurrence = matched + i as u64 + 1;
                let (a, b, side) = if side == 0 {
                    (Some(seen), None, DiffSide::OnlyA)
                } else {
                    (None, Some(seen), DiffSide::OnlyB)
                };
                self.diffs.push(Diff { side, occurrence, a, b });
            }
        }
        self.diffs.sort_by(|x, y| {
            let (ax, ay) = (x.alert(), y.alert());
            (
                x.time(),
                x.side,
                &ax.rule_id,
                &ax.instrument,
                ax.kind.name(),
                x.occurrence,
            )
                .cmp(&(
                    y.time(),
                    y.side,
                    &ay.rule_id,
                    &ay.instrument,
                    ay.kind.name(),
                    y.occurrence,
                ))
        });
        self.diffs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Mode, Severity};

    fn seen(rule: &str, kind: AlertKind, t: i64) -> Seen {
        Seen {
            seq: 0,
            received_ns: t,
            alert: Alert {
                rule_id: Arc::from(rule),
                ruleset_version: 1,
                instrument: Arc::from("X"),
                kind,
                severity: Severity::Warning,
                actions: Arc::from(vec![]),
                mode: Mode::Active,
                values: vec![],
                event_time_ns: t,
                tick_seq: None,
                reason: None,
                trigger_instrument: None,
            },
        }
    }

    #[test]
    fn matches_by_occurrence_and_reports_the_rest() {
        let mut m = Matcher::new();
        m.push(0, seen("r", AlertKind::Fired, 10));
        m.push(1, seen("r", AlertKind::Fired, 8)); // moved 10 -> 8
        m.push(1, seen("r", AlertKind::Resolved, 12));
        m.push(0, seen("r", AlertKind::Resolved, 12)); // same
        m.push(1, seen("r", AlertKind::Fired, 20)); // only B
        m.push(1, seen("r", AlertKind::Fired, 30)); // only B
        m.push(0, seen("s", AlertKind::Fired, 5)); // only A
        assert_eq!(m.raised, [3, 4]);
        assert_eq!(m.same, 1);
        let diffs = m.finish();
        let summary: Vec<(DiffSide, &str, u64, i64)> = diffs
            .iter()
            .map(|d| (d.side, &*d.alert().rule_id, d.occurrence, d.time()))
            .collect();
        assert_eq!(
            summary,
            [
                (DiffSide::OnlyA, "s", 1, 5),
                (DiffSide::Moved, "r", 1, 8),
                (DiffSide::OnlyB, "r", 2, 20),
                (DiffSide::OnlyB, "r", 3, 30),
            ]
        );
        assert_eq!(diffs[1].a.as_ref().unwrap().alert.event_time_ns, 10);
        assert_eq!(diffs[1].b.as_ref().unwrap().alert.event_time_ns, 8);
    }
}
