//! Alerts that reach an instrument from outside its own evaluation: a rule
//! with `targets` on another instrument, and group rules. A pattern on the
//! instrument that reads alerts (`alert('...')`) sees them through
//! [`super::Engine::feed_alert`], after the lock of the partition that
//! raised them is released (no two partition locks are ever held at once).
//!
//! Only when the ruleset has a rule that reads alerts: otherwise a tick
//! pays one branch.

use crate::model::{Alert, AlertSink};

/// Passes every alert on to `out`, keeping a copy of those to relay: all
/// of them for a group's evaluation (`all`), else a fan-out's copies for
/// other instruments (those naming a `trigger_instrument`).
pub(super) struct Relay<'a, S> {
    pub out: &'a mut S,
    pub all: bool,
    pub held: &'a mut Vec<Alert>,
}

impl<S: AlertSink> AlertSink for Relay<'_, S> {
    fn emit(&mut self, alert: Alert) {
        if self.all || alert.trigger_instrument.is_some() {
            self.held.push(alert.clone());
        }
        self.out.emit(alert);
    }
}
