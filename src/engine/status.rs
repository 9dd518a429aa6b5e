//! The current state: what every rule has in force on every instrument
//! right now (halts, pauses, limit states, conditions that fired and have
//! not resolved), read from the partitions themselves. A downstream system
//! that restarts asks this instead of replaying every alert; it survives a
//! restart with the checkpoint that holds the rule states.

use std::sync::Arc;

use crate::refdata::Targets;
use crate::rules::RuleStatus;

use super::group::{GroupKind, GroupPartition};
use super::partition::BoundRule;
use super::Engine;

/// One thing in force on one instrument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstrumentStatus {
    pub instrument: Arc<str>,
    /// For a rule with `targets`: the instrument it fired on, when that is
    /// not `instrument`.
    pub trigger_instrument: Option<Arc<str>>,
    pub rule_id: Arc<str>,
    /// The ruleset version the instrument is bound to.
    pub ruleset_version: u64,
    pub status: RuleStatus,
}

impl Engine {
    /// Everything in force now on the instruments whose symbol `select`
    /// accepts: by the instrument whose rule holds it (in instrument id
    /// order, then rule order), each rule with `targets` followed by its
    /// other targets. Locks each partition in turn, briefly (for a query,
    /// not for every tick).
    pub fn statuses(&self, mut select: impl FnMut(&str) -> bool) -> Vec<InstrumentStatus> {
        let mut out = Vec::new();
        let known = || self.instruments.symbols();
        self.states.for_each(|partition| {
            let state = &partition.instrument;
            for bound in &partition.rules {
                let Some(status) = bound.rule.status(&bound.state, state.last_tick_ns()) else {
                    continue;
                };
                let targets = match &bound.rule.targets {
                    Some(targets) => partition.refdata.targets_of(targets, &state.symbol, &known),
                    None => vec![state.symbol.clone()],
                };
                push_targets(
                    &mut out,
                    &mut select,
                    targets,
                    &state.symbol,
                    bound,
                    partition.ruleset_version,
                    &status,
                );
            }
        });
        for cell in self.groups.all() {
            let group = cell.lock();
            for bound in &group.rules {
                let Some(status) = bound.rule.status(&bound.state, 0) else {
                    continue;
                };
                let label = group.key.name.clone();
                let targets = group_targets(&group, bound, &known);
                push_targets(
                    &mut out,
                    &mut select,
                    targets,
                    &label,
                    bound,
                    group.ruleset_version,
                    &status,
                );
            }
        }
        out
    }
}

/// The instruments a group rule's alerts go to: its targets, or the group
/// itself.
fn group_targets(group: &GroupPartition, bound: &BoundRule, known: &dyn Fn() -> Vec<Arc<str>>) -> Vec<Arc<str>> {
    let label = group.key.name.clone();
    let all = match (&bound.rule.targets, group.key.scope) {
        (None, _) => return vec![label],
        (Some(Targets::Underlying), GroupKind::Underlying) => group.refdata.of_underlying(&group.key.name).to_vec(),
        (Some(Targets::Underlying), GroupKind::Named) => Vec::new(),
        (Some(targets), _) => {
            let mut all = group.refdata.targets_of(targets, &label, known);
            all.retain(|s| *s != label);
            all
        }
    };
    if all.is_empty() {
        vec![label]
    } else {
        all
    }
}

/// One status per target instrument that `select` accepts.
fn push_targets(
    out: &mut Vec<InstrumentStatus>,
    select: &mut impl FnMut(&str) -> bool,
    targets: Vec<Arc<str>>,
    holder: &Arc<str>,
    bound: &BoundRule,
    ruleset_version: u64,
    status: &RuleStatus,
) {
    for instrument in targets {
        if !select(&instrument) {
            continue;
        }
        let trigger_instrument = (instrument != *holder).then(|| holder.clone());
        out.push(InstrumentStatus {
            instrument,
            trigger_instrument,
            rule_id: bound.rule.id.clone(),
            ruleset_version,
            status: status.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;
    use crate::model::{Action, AlertKind, Fixed, TickValues};
    use crate::rules::compile_for_test;

    const S: i64 = 1_000_000_000;
    const T0: i64 = 1_700_000_000 * S;
    const RULES: &str = r#"
[[rule]]
id = "crash"
kind = "drawdown"
window = "3s"
threshold = "8%"
severity = "critical"
actions = ["halt"]

[[rule]]
id = "cb"
kind = "circuit_breaker"
reference_price = "100"
tiers = [{ move = "5%", halt = "30s" }]
"#;

    fn trade(e: &Engine, symbol: &str, t: i64, seq: u64, price: &str) {
        let values = TickValues::Trade {
            price: Fixed::parse(price).unwrap(),
            size: Fixed::ONE,
            side: None,
        };
        e.ingest(symbol, t, seq, values, t, &mut Vec::new()).unwrap();
    }

    #[test]
    fn what_is_in_force_comes_and_goes_with_the_rule_states() {
        let rules = compile_for_test(&[("r.toml".into(), RULES.into())]).unwrap();
        let e = Engine::new(EngineConfig::default(), rules);
        trade(&e, "BTC-USDT", T0, 1, "100");
        trade(&e, "ETH-USDT", T0, 1, "100");
        assert!(e.statuses(|_| true).is_empty());

        // BTC falls 10%: the drawdown fires and the breaker trips.
        trade(&e, "BTC-USDT", T0 + S, 2, "90");
        let now = e.statuses(|_| true);
        let summary: Vec<_> = now
            .iter()
            .map(|s| {
                (
                    &*s.instrument,
                    &*s.rule_id,
                    s.status.kind,
                    s.status.since_ns,
                    s.status.until_ns,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("BTC-USDT", "crash", AlertKind::Fired, T0 + S, None),
                ("BTC-USDT", "cb", AlertKind::Tripped, T0 + S, Some(T0 + 31 * S)),
            ]
        );
        assert_eq!(&*now[0].status.actions, &[Action::Halt]);
        assert!(e.statuses(|s| s.starts_with("ETH")).is_empty(), "selected by symbol");

        // Back above the trailing peak's threshold: the drawdown resolves;
        // the halt stays until its time is over.
        trade(&e, "BTC-USDT", T0 + 2 * S, 3, "99");
        let rules_now: Vec<_> = e.statuses(|_| true).into_iter().map(|s| s.rule_id).collect();
        assert_eq!(rules_now, [Arc::from("cb")]);
        e.check_timers(T0 + 31 * S, &mut Vec::new());
        assert!(e.statuses(|_| true).is_empty(), "the halt ended");
    }
}
