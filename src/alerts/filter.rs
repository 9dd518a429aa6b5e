//! What a subscriber asks to see: instruments (globs), a minimum severity,
//! actions, rule ids, and whether shadow-mode alerts are included.

use std::fmt;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::model::{Alert, Mode, Severity};

/// Most entries in one list of a filter.
pub const MAX_FILTER_ENTRIES: usize = 1_000;

/// A subscriber's filter as asked for: every list empty means "all".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilterSpec {
    /// Symbols or globs (`BTC-*`).
    pub instruments: Vec<String>,
    pub min_severity: Option<Severity>,
    /// Alerts carrying at least one of these actions.
    pub actions: Vec<String>,
    pub rule_ids: Vec<String>,
    /// Also deliver alerts of rules in shadow mode.
    pub include_shadow: bool,
}

/// Why a filter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("instrument pattern `{pattern}` is not a valid glob: {reason}")]
    BadGlob { pattern: String, reason: String },
    #[error("{list} has {len} entries; the limit is {MAX_FILTER_ENTRIES}")]
    TooMany { list: &'static str, len: usize },
    #[error("{list} contains an empty entry")]
    Empty { list: &'static str },
}

/// A compiled filter, checked against each alert on publish.
#[derive(Clone)]
pub struct SubscriptionFilter {
    spec: FilterSpec,
    instruments: Option<GlobSet>,
}

impl fmt::Debug for SubscriptionFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SubscriptionFilter").field(&self.spec).finish()
    }
}

impl SubscriptionFilter {
    /// Everything except shadow-mode alerts.
    pub fn all() -> Self {
        SubscriptionFilter {
            spec: FilterSpec::default(),
            instruments: None,
        }
    }

    /// Compiles `spec`.
    ///
    /// # Errors
    /// A pattern that is not a glob, an empty entry, or a list too long.
    pub fn new(spec: FilterSpec) -> Result<Self, FilterError> {
        for (list, entries) in [
            ("instruments", &spec.instruments),
            ("actions", &spec.actions),
            ("rule_ids", &spec.rule_ids),
        ] {
            if entries.len() > MAX_FILTER_ENTRIES {
                return Err(FilterError::TooMany {
                    list,
                    len: entries.len(),
                });
            }
            if entries.iter().any(String::is_empty) {
                return Err(FilterError::Empty { list });
            }
        }
        let instruments = if spec.instruments.is_empty() {
            None
        } else {
            let mut builder = GlobSetBuilder::new();
            for pattern in &spec.instruments {
                // As rule scopes: `*` crosses every character.
                let glob = GlobBuilder::new(pattern)
                    .literal_separator(false)
                    .build()
                    .map_err(|e| FilterError::BadGlob {
                        pattern: pattern.clone(),
                        reason: e.kind().to_string(),
                    })?;
                builder.add(glob);
            }
            Some(builder.build().map_err(|e| FilterError::BadGlob {
                pattern: spec.instruments.join(", "),
                reason: e.to_string(),
            })?)
        };
        Ok(SubscriptionFilter { spec, instruments })
    }

    pub fn spec(&self) -> &FilterSpec {
        &self.spec
    }

    /// Whether the filter's instrument patterns (if any) take `symbol`.
    pub fn matches_instrument(&self, symbol: &str) -> bool {
        self.instruments.as_ref().is_none_or(|g| g.is_match(symbol))
    }

    /// Whether `alert` is for this subscriber.
    #[inline]
    pub fn matches(&self, alert: &Alert) -> bool {
        if alert.mode == Mode::Shadow && !self.spec.include_shadow {
            return false;
        }
        if self.spec.min_severity.is_some_and(|min| alert.severity < min) {
            return false;
        }
        if !self.spec.rule_ids.is_empty() && !self.spec.rule_ids.iter().any(|r| **r == *alert.rule_id) {
            return false;
        }
        if !self.spec.actions.is_empty()
            && !alert
                .actions
                .iter()
                .any(|a| self.spec.actions.iter().any(|want| want == a.name()))
        {
            return false;
        }
        if let Some(globs) = &self.instruments {
            if !globs.is_match(&*alert.instrument) {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::{Action, AlertKind};

    fn alert(rule: &str, instrument: &str, severity: Severity, actions: &[Action], mode: Mode) -> Alert {
        Alert {
            rule_id: Arc::from(rule),
            ruleset_version: 1,
            instrument: Arc::from(instrument),
            kind: AlertKind::Fired,
            severity,
            actions: Arc::from(actions.to_vec()),
            mode,
            values: Vec::new(),
            event_time_ns: 1,
            tick_seq: Some(1),
            reason: None,
            trigger_instrument: None,
        }
    }

    #[test]
    fn matches_each_criterion() {
        let btc = alert("crash", "BTC-USDT", Severity::Critical, &[Action::Halt], Mode::Active);
        let eth = alert("warn", "ETH-USDT", Severity::Warning, &[Action::Notify], Mode::Active);
        let shadow = alert("try", "BTC-USDT", Severity::Info, &[], Mode::Shadow);

        let all = SubscriptionFilter::all();
        assert!(all.matches(&btc) && all.matches(&eth) && !all.matches(&shadow));

        let f = |spec: FilterSpec| SubscriptionFilter::new(spec).unwrap();
        let by_glob = f(FilterSpec {
            instruments: vec!["BTC-*".into()],
            ..Default::default()
        });
        assert!(by_glob.matches(&btc) && !by_glob.matches(&eth));
        let by_severity = f(FilterSpec {
            min_severity: Some(Severity::Critical),
            ..Default::default()
        });
        assert!(by_severity.matches(&btc) && !by_severity.matches(&eth));
        let by_action = f(FilterSpec {
            actions: vec!["notify".into()],
            ..Default::default()
        });
        assert!(!by_action.matches(&btc) && by_action.matches(&eth));
        let by_rule = f(FilterSpec {
            rule_ids: vec!["crash".into()],
            ..Default::default()
        });
        assert!(by_rule.matches(&btc) && !by_rule.matches(&eth));
        let with_shadow = f(FilterSpec {
            include_shadow: true,
            ..Default::default()
        });
        assert!(with_shadow.matches(&shadow));
    }

    #[test]
    fn refuses_bad_filters() {
        let bad = SubscriptionFilter::new(FilterSpec {
            instruments: vec!["BTC-[".into()],
            ..Default::default()
        });
        assert!(matches!(bad, Err(FilterError::BadGlob { .. })), "{bad:?}");
        let empty = SubscriptionFilter::new(FilterSpec {
            actions: vec![String::new()],
            ..Default::default()
        });
        assert_eq!(empty.unwrap_err(), FilterError::Empty { list: "actions" });
    }
}
