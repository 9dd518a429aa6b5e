//! Alerts raised a second time after a restart, recognised and dropped.
//!
//! A checkpoint holds the state of every instrument and the alert sequence
//! number read before it was taken. After a crash the service restores it,
//! and clients resend the ticks applied since; those ticks raise again the
//! alerts they raised before the crash, which the journal already holds and
//! subscribers may already have. Each journaled alert after the
//! checkpoint's sequence number is remembered by its identity — rule,
//! instrument, kind, event time and triggering tick — and the first alert
//! raised again with that identity is dropped instead of published.
//! Alerts raised by ticks the service never saw before the crash have no
//! match and are published as new.
//!
//! Timer alerts (`tick_seq` empty) are matched by their time as well; a
//! timer on the receive clock that fires at another moment after the
//! restart is a new alert.
//!
//! While alerts are still expected, the engine's state is behind the
//! alert sequence: a checkpoint taken then must record the sequence
//! number before the oldest alert still expected ([`ReplayedAlerts::floor`]),
//! or a restart from it would not expect that alert again.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use crate::model::{Alert, AlertKind};

/// What makes two alerts the same alert raised twice.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AlertIdentity {
    pub rule_id: Arc<str>,
    pub instrument: Arc<str>,
    pub kind: AlertKind,
    pub event_time_ns: i64,
    pub tick_seq: Option<u64>,
}

impl AlertIdentity {
    pub fn of(alert: &Alert) -> Self {
        AlertIdentity {
            rule_id: alert.rule_id.clone(),
            instrument: alert.instrument.clone(),
            kind: alert.kind,
            event_time_ns: alert.event_time_ns,
            tick_seq: alert.tick_seq,
        }
    }
}

/// The journaled alerts that may be raised again, each with the sequence
/// numbers it was journaled under.
#[derive(Debug, Default)]
pub struct ReplayedAlerts {
    expected: HashMap<AlertIdentity, VecDeque<u64>>,
    /// Sequence numbers of the alerts still expected.
    remaining: BTreeSet<u64>,
    dropped: u64,
}

impl ReplayedAlerts {
    /// From the alerts journaled after the restored checkpoint, with their
    /// sequence numbers, in order.
    pub fn new<'a>(journaled: impl IntoIterator<Item = (u64, &'a Alert)>) -> Self {
        let mut expected: HashMap<AlertIdentity, VecDeque<u64>> = HashMap::new();
        let mut remaining = BTreeSet::new();
        for (seq, alert) in journaled {
            expected.entry(AlertIdentity::of(alert)).or_default().push_back(seq);
            remaining.insert(seq);
        }
        ReplayedAlerts {
            expected,
            remaining,
            dropped: 0,
        }
    }

    /// Whether `alert` was published before the restart; if so it is
    /// counted off and must not be published again.
    pub fn take(&mut self, alert: &Alert) -> bool {
        if self.remaining.is_empty() {
            return false;
        }
        let identity = AlertIdentity::of(alert);
        let Some(seqs) = self.expected.get_mut(&identity) else {
            return false;
        };
        if let Some(seq) = seqs.pop_front() {
            self.remaining.remove(&seq);
        }
        if seqs.is_empty() {
            self.expected.remove(&identity);
        }
        self.dropped += 1;
        true
    }

    /// Journaled alerts not raised again yet.
    pub fn remaining(&self) -> usize {
        self.remaining.len()
    }

    /// The sequence number before the oldest alert still expected: every
    /// alert up to it has been raised again (or was before the
    /// checkpoint). `None` when none is expected.
    pub fn floor(&self) -> Option<u64> {
        self.remaining.first().map(|seq| seq - 1)
    }

    /// Alerts recognised and dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Mode, Severity};

    fn alert(rule: &str, instrument: &str, t: i64, seq: Option<u64>) -> Alert {
        Alert {
            rule_id: rule.into(),
            ruleset_version: 1,
            instrument: instrument.into(),
            kind: AlertKind::Fired,
            severity: Severity::Warning,
            actions: Arc::from(Vec::new()),
            mode: Mode::Active,
            values: Vec::new(),
            event_time_ns: t,
            tick_seq: seq,
            reason: None,
            trigger_instrument: None,
        }
    }

    #[test]
    fn each_journaled_alert_is_dropped_once_and_others_pass() {
        let journaled = [
            alert("dd", "A", 10, Some(1)),
            alert("dd", "A", 10, Some(1)),
            alert("dd", "B", 10, Some(1)),
        ];
        let mut replayed = ReplayedAlerts::new(journaled.iter().enumerate().map(|(i, a)| (i as u64 + 7, a)));
        assert_eq!((replayed.remaining(), replayed.floor()), (3, Some(6)));
        assert!(replayed.take(&alert("dd", "A", 10, Some(1))));
        assert_eq!(
            replayed.floor(),
            Some(7),
            "the first is raised again: the oldest expected is the second"
        );
        assert!(replayed.take(&alert("dd", "A", 10, Some(1))));
        assert!(
            !replayed.take(&alert("dd", "A", 10, Some(1))),
            "journaled twice, dropped twice"
        );
        assert!(!replayed.take(&alert("dd", "B", 11, Some(2))), "a new alert");
        assert!(!replayed.take(&alert("vel", "B", 10, Some(1))), "another rule");
        assert!(replayed.take(&alert("dd", "B", 10, Some(1))));
        assert_eq!(
            (replayed.remaining(), replayed.dropped(), replayed.floor()),
            (0, 3, None)
        );
    }
}
