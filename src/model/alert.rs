//! Alerts: what the engine tells margin, trading and people.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use super::fixed::Fixed;

/// How urgent an alert is. Ordered: `Info < Warning < Critical`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub const NAMES: &'static str = "`info`, `warning` or `critical`";

    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// What an acting system should do. Venues may name their own actions.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Halt,
    Resume,
    ReduceOnly,
    RaiseMargin,
    Notify,
    Custom(Arc<str>),
}

impl Action {
    pub fn name(&self) -> &str {
        match self {
            Action::Halt => "halt",
            Action::Resume => "resume",
            Action::ReduceOnly => "reduce_only",
            Action::RaiseMargin => "raise_margin",
            Action::Notify => "notify",
            Action::Custom(name) => name,
        }
    }

    /// Any non-empty name; the five standard ones map to their variants.
    pub fn from_name(name: &str) -> Self {
        match name {
            "halt" => Action::Halt,
            "resume" => Action::Resume,
            "reduce_only" => Action::ReduceOnly,
            "raise_margin" => Action::RaiseMargin,
            "notify" => Action::Notify,
            other => Action::Custom(Arc::from(other)),
        }
    }
}

/// Whether a rule's alerts go to acting systems.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Alerts are sent to every matching subscriber.
    Active,
    /// Evaluated and recorded, sent only to subscribers that ask for shadow
    /// alerts: for trying a rule out on live data.
    Shadow,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Active => "active",
            Mode::Shadow => "shadow",
        }
    }

    /// The mode named by [`Mode::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "active" => Some(Mode::Active),
            "shadow" => Some(Mode::Shadow),
            _ => None,
        }
    }
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AlertKind {
    /// A condition became true.
    Fired,
    /// A condition that fired is no longer true (or its rule was removed).
    Resolved,
    /// A circuit breaker tier tripped (or a higher tier escalated).
    Tripped,
    /// A halt (breaker or price-band pause) ended.
    Resumed,
    /// A breaker is armed again: the price is back inside its lowest tier.
    Rearmed,
    /// A price reached its band: limit state.
    Limit,
    /// A price stayed at its band past the limit time: trading pause.
    Paused,
}

impl AlertKind {
    pub fn name(self) -> &'static str {
        match self {
            AlertKind::Fired => "fired",
            AlertKind::Resolved => "resolved",
            AlertKind::Tripped => "tripped",
            AlertKind::Resumed => "resumed",
            AlertKind::Rearmed => "rearmed",
            AlertKind::Limit => "limit",
            AlertKind::Paused => "paused",
        }
    }

    /// The kind named by [`AlertKind::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "fired" => AlertKind::Fired,
            "resolved" => AlertKind::Resolved,
            "tripped" => AlertKind::Tripped,
            "resumed" => AlertKind::Resumed,
            "rearmed" => AlertKind::Rearmed,
            "limit" => AlertKind::Limit,
            "paused" => AlertKind::Paused,
            _ => return None,
        })
    }
}

/// One named value that explains an alert, such as `peak` or `change_pct`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertValue {
    pub name: Cow<'static, str>,
    pub value: Fixed,
}

impl AlertValue {
    pub const fn new(name: &'static str, value: Fixed) -> Self {
        AlertValue {
            name: Cow::Borrowed(name),
            value,
        }
    }
}

/// An alert as the engine raises it. The alert bus adds the global sequence
/// number and the receive and emit times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alert {
    pub rule_id: Arc<str>,
    pub ruleset_version: u64,
    pub instrument: Arc<str>,
    pub kind: AlertKind,
    pub severity: Severity,
    pub actions: Arc<[Action]>,
    pub mode: Mode,
    /// The values that made it fire, in a fixed order per rule kind.
    pub values: Vec<AlertValue>,
    /// Event time of the triggering tick, or the time a timer fired.
    pub event_time_ns: i64,
    /// Sequence number of the triggering tick; `None` when a timer raised it.
    pub tick_seq: Option<u64>,
    /// A short explanation where the kind alone does not say enough.
    /// Borrowed when the engine raises the alert, owned when it is read
    /// back from the journal.
    pub reason: Option<Cow<'static, str>>,
    /// When the alert acts on another instrument than the one whose tick
    /// (or timer) raised it (a rule with `targets`): that instrument.
    /// `None` when it is `instrument` itself.
    pub trigger_instrument: Option<Arc<str>>,
}

impl Alert {
    /// The same alert with no actions: resolutions tell, they do not act.
    pub fn without_actions(mut self) -> Self {
        self.actions = Arc::from(Vec::new());
        self
    }

    pub fn value(&self, name: &str) -> Option<Fixed> {
        self.values.iter().find(|v| v.name == name).map(|v| v.value)
    }
}

impl fmt::Display for Alert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} on {} at {}",
            self.severity.name(),
            self.rule_id,
            self.kind.name(),
            self.instrument,
            self.event_time_ns
        )?;
        for v in &self.values {
            write!(f, " {}={}", v.name, v.value)?;
        }
        Ok(())
    }
}

/// Where the engine puts the alerts it raises.
pub trait AlertSink {
    fn emit(&mut self, alert: Alert);
}

impl AlertSink for Vec<Alert> {
    fn emit(&mut self, alert: Alert) {
        self.push(alert);
    }
}
