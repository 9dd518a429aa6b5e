//! Which replay worker runs which instrument.
//!
//! A replay on several threads gives each worker its own engines and a
//! share of the instruments. Instruments that rules couple must share a
//! worker, so that each sees the others as one engine would:
//!
//! - instruments of one underlying (in any ruleset's reference data): a
//!   group rule over the underlying evaluates them together, and a rule
//!   with `targets = "underlying"` sends its alerts (halts) to all of
//!   them, where patterns that read alerts see them;
//! - members of the named groups of group rules: a named group is a
//!   pattern of symbols, so an instrument seen later may join several;
//!   all of them share one worker (with the underlyings of those that are
//!   in the reference data).
//!
//! A rule with `targets = "group:NAME"` or `targets = "market"` sends its
//! alerts to every matching instrument *seen so far*, over the whole
//! replay: no partition keeps that, and the replay runs on one thread
//! ([`Plan::Single`] says why).
//!
//! Each new coupled set, and each instrument in none, goes to the worker
//! with the fewest instruments so far (the lowest index on a tie), in
//! order of first sight: the assignment is deterministic, though the
//! output would not change with another one.

use std::collections::HashMap;
use std::sync::Arc;

use crate::engine::group::{groups_of, GroupKind};
use crate::refdata::Targets;
use crate::rules::RuleSet;

/// How a replay may be split.
pub enum Plan {
    /// One thread, for this reason.
    Single(String),
    /// Instruments partitioned by coupled sets.
    Partitioned(Partitioner),
}

/// What couples an instrument to others.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Link {
    Underlying(Arc<str>),
    /// The named groups of every group rule, together.
    Named,
}

/// Assigns instruments to workers, keeping coupled ones together.
pub struct Partitioner {
    rulesets: Vec<Arc<RuleSet>>,
    /// Union-find over links: parent by link index.
    parent: Vec<usize>,
    links: HashMap<Link, usize>,
    /// The worker of each coupled set, by its root link.
    set_worker: HashMap<usize, usize>,
    /// Instruments assigned to each worker.
    load: Vec<u64>,
}

impl Plan {
    /// The plan for `rulesets` (one, or two for a comparison) on
    /// `workers` threads.
    pub fn new(rulesets: &[Arc<RuleSet>], workers: usize) -> Plan {
        for set in rulesets {
            for rule in &set.rules {
                if let Some(targets @ (Targets::Group(_) | Targets::Market)) = &rule.targets {
                    return Plan::Single(format!(
                        "rule `{}` has `targets = \"{targets}\"`, which reaches every instrument seen so far",
                        rule.id
                    ));
                }
            }
        }
        let mut p = Partitioner {
            rulesets: rulesets.to_vec(),
            parent: Vec::new(),
            links: HashMap::new(),
            set_worker: HashMap::new(),
            load: vec![0; workers.max(1)],
        };
        // Couple what the reference data already says: each instrument
        // with its underlyings and, if it is in a named group, the
        // named groups.
        let symbols: Vec<Arc<str>> = rulesets
            .iter()
            .flat_map(|set| set.refdata.instruments().map(|i| i.symbol.clone()))
            .collect();
        for symbol in symbols {
            let links = p.links_of(&symbol);
            let ids: Vec<usize> = links.into_iter().map(|l| p.link(l)).collect();
            for pair in ids.windows(2) {
                p.union(pair[0], pair[1]);
            }
        }
        Plan::Partitioned(p)
    }
}

impl Partitioner {
    /// The worker that runs `symbol`, seen for the first time.
    pub fn assign(&mut self, symbol: &str) -> usize {
        let links = self.links_of(symbol);
        let worker = match links.into_iter().next() {
            None => self.least_loaded(),
            Some(link) => {
                // Every link of an instrument in the reference data is
                // already joined; another has at most `Named`.
                let id = self.link(link);
                let root = self.find(id);
                match self.set_worker.get(&root) {
                    Some(w) => *w,
                    None => {
                        let w = self.least_loaded();
                        self.set_worker.insert(root, w);
                        w
                    }
                }
            }
        };
        self.load[worker] += 1;
        worker
    }

    fn least_loaded(&self) -> usize {
        let min = self.load.iter().min().copied().unwrap_or(0);
        self.load.iter().position(|l| *l == min).unwrap_or(0)
    }

    /// What couples `symbol` under any of the rulesets.
    fn links_of(&self, symbol: &str) -> Vec<Link> {
        let mut links = Vec::new();
        for set in &self.rulesets {
            if let Some(u) = set.refdata.instrument(symbol).and_then(|i| i.underlying.clone()) {
                let link = Link::Underlying(u);
                if !links.contains(&link) {
                    links.push(link);
                }
            }
            let named = groups_of(symbol, set).iter().any(|k| k.scope == GroupKind::Named);
            if named && !links.contains(&Link::Named) {
                links.push(Link::Named);
            }
        }
        links
    }

    fn link(&mut self, link: Link) -> usize {
        let next = self.parent.len();
        let id = *self.links.entry(link).or_insert(next);
        if id == next {
            self.parent.push(next);
        }
        id
    }

    fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] != x {
            self.parent[x] = self.parent[self.parent[x]];
            x = self.parent[x];
        }
        x
    }

    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[ra.max(rb)] = ra.min(rb);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::compile_for_test;

    fn plan(rules: &str) -> Plan {
        let set = compile_for_test(&[("r.toml".into(), rules.into())]).unwrap();
        Plan::new(&[Arc::new(set)], 2)
    }

    const REFDATA: &str = "[[instrument]]\nsymbol = \"BTC-USDT\"\nunderlying = \"BTC\"\n\
        [[instrument]]\nsymbol = \"BTC-PERP\"\nunderlying = \"BTC\"\n\
        [[instrument]]\nsymbol = \"ETH-USDT\"\nunderlying = \"ETH\"\n\
        [[instrument]]\nsymbol = \"ETH-PERP\"\nunderlying = \"ETH\"\n";

    #[test]
    fn an_underlying_shares_a_worker_and_the_rest_is_spread() {
        let rules =
            format!("{REFDATA}[[rule]]\nid = \"g\"\ngroup = \"underlying\"\nwhen = \"group_median(price) > 1\"\n");
        let Plan::Partitioned(mut p) = plan(&rules) else {
            panic!("partitioned")
        };
        let btc = p.assign("BTC-USDT");
        let eth = p.assign("ETH-USDT");
        assert_ne!(btc, eth);
        assert_eq!(p.assign("ETH-PERP"), eth);
        assert_eq!(p.assign("BTC-PERP"), btc);
        let (x, y) = (p.assign("X-USDT"), p.assign("Y-USDT"));
        assert_ne!(x, y);
    }

    #[test]
    fn named_groups_share_one_worker_and_market_targets_take_one_thread() {
        let rules = format!(
            "{REFDATA}[[group]]\nname = \"majors\"\ninstruments = [\"*-PERP\"]\n\
             [[rule]]\nid = \"g\"\ngroup = \"group:majors\"\nwhen = \"group_median(price) > 1\"\n"
        );
        let Plan::Partitioned(mut p) = plan(&rules) else {
            panic!("partitioned")
        };
        let perp = p.assign("SOL-PERP");
        // BTC's and ETH's underlyings are joined through their perpetuals.
        assert_eq!(p.assign("BTC-USDT"), perp);
        assert_eq!(p.assign("ETH-USDT"), perp);
        assert_ne!(p.assign("X-USDT"), perp);
        let market =
            "[[rule]]\nid = \"m\"\nkind = \"drawdown\"\nwindow = \"3s\"\nthreshold = \"8%\"\ntargets = \"market\"\n";
        let Plan::Single(why) = plan(market) else {
            panic!("single")
        };
        assert!(why.contains("rule `m`"), "{why}");
    }
}
