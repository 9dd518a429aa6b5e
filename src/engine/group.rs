//! Group partitions: the state a rule evaluated over several instruments
//! keeps (a basis between spot and perpetual, an index as the median of
//! several venues' prices), owned like an instrument's.
//!
//! A group is an underlying's instruments (`group = "underlying"`: one
//! group per underlying, `BTC`, `ETH`, ...) or a named `[[group]]` of the
//! reference data. Its partition holds the newest values of each member
//! that has ticked and the group rules bound to it, each with its state,
//! behind its own lock. A member's tick is applied to its own partition
//! first; then, still under the member's lock, the member's values are
//! copied into each of its groups and the group's rules evaluated on them
//! (lock order: an instrument, then its groups; a group never takes an
//! instrument's lock). An instrument in no group pays one emptiness check
//! per tick.
//!
//! A group's members are its instruments that match the scope
//! (`instruments`, `select`) of at least one group rule; a rule binds to a
//! group when one of its members matches the rule's scope. Alerts of a
//! group rule name the group (`BTC`, or the group's name) as their
//! instrument and the member whose tick raised them as the trigger; with
//! `targets` they go to the instruments of the group's underlying, a named
//! group or the market instead.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use parking_lot::Mutex;
use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use crate::model::{Alert, AlertSink, InstrumentId, Tick, TickKind};
use crate::refdata::{RefData, Targets};
use crate::rules::context::{AggregateMemo, GroupView, MemberValues};
use crate::rules::{CompiledRule, EvalCtx, GroupScope, RuleSet};
use crate::state::{InstrumentState, Instruments, LastValues, WindowSet};

use super::partition::{BoundRule, BoundRules};

/// A group's key: its scope and its name (`underlying:BTC`, `group:majors`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey {
    pub scope: GroupKind,
    pub name: Arc<str>,
}

/// Whether a group is an underlying's instruments or a named group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum GroupKind {
    Underlying,
    Named,
}

impl std::fmt::Display for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.scope {
            GroupKind::Underlying => write!(f, "underlying:{}", self.name),
            GroupKind::Named => write!(f, "group:{}", self.name),
        }
    }
}

impl GroupKey {
    /// The group of `scope` that `symbol` belongs to, if any.
    pub fn of(scope: &GroupScope, symbol: &str, refdata: &RefData) -> Option<GroupKey> {
        match scope {
            GroupScope::Underlying => {
                let underlying = refdata.instrument(symbol)?.underlying.clone()?;
                Some(GroupKey {
                    scope: GroupKind::Underlying,
                    name: underlying,
                })
            }
            GroupScope::Named(name) => refdata.group(name).filter(|g| g.contains(symbol)).map(|_| GroupKey {
                scope: GroupKind::Named,
                name: name.clone(),
            }),
        }
    }

    /// Whether a rule of `scope` is evaluated in groups like this one.
    fn takes(&self, scope: &GroupScope) -> bool {
        match (scope, self.scope) {
            (GroupScope::Underlying, GroupKind::Underlying) => true,
            (GroupScope::Named(name), GroupKind::Named) => *name == self.name,
            _ => false,
        }
    }
}

/// One group's state.
#[derive(Debug)]
pub struct GroupPartition {
    pub key: GroupKey,
    /// The ruleset version `rules` were bound for; 0 before the first.
    pub ruleset_version: u64,
    /// Earliest time a timer-driven transition is due: a `for` hold, or a
    /// member going stale under a rule's `max_age`.
    pub next_deadline_ns: i64,
    /// Members that have ticked, sorted by symbol.
    pub members: Vec<MemberValues>,
    /// The instrument id of each of `members`, at the same index.
    ids: Vec<InstrumentId>,
    /// Member instrument -> index in `members`.
    member_at: FxHashMap<InstrumentId, usize>,
    pub rules: BoundRules,
    pub refdata: Arc<RefData>,
    /// The group's name as an instrument: alerts without `targets` name it.
    label: Arc<str>,
    /// The (empty) window set group rules read: they keep no windows.
    no_windows: WindowSet,
    /// How far the server's clock was ahead of event time at the newest
    /// member tick: between ticks the group's event time advances with the
    /// server clock from there, as an instrument's does
    /// ([`InstrumentState::event_time_at`]).
    clock_offset_ns: i64,
    /// Event time of the newest member tick.
    last_tick_ns: i64,
}

impl GroupPartition {
    fn new(key: GroupKey) -> Self {
        GroupPartition {
            label: key.name.clone(),
            key,
            ruleset_version: 0,
            next_deadline_ns: i64::MAX,
            members: Vec::new(),
            ids: Vec::new(),
            member_at: FxHashMap::default(),
            rules: SmallVec::new(),
            refdata: Arc::default(),
            no_windows: WindowSet::default(),
            clock_offset_ns: 0,
            last_tick_ns: 0,
        }
    }

    /// Binds the group to `ruleset`: the group rules whose scope matches
    /// one of its members, states kept for unchanged rules; closes what
    /// removed or changed rules had open.
    pub fn rebind(&mut self, ruleset: &RuleSet, now_ns: i64, out: &mut impl AlertSink, known: &Instruments) {
        let old = std::mem::take(&mut self.rules);
        let refdata = ruleset.refdata.clone();
        for member in &mut self.members {
            member.reference = refdata.instrument(&member.symbol).cloned();
        }
        let mut carried = vec![false; old.len()];
        let mut rules = SmallVec::new();
        for rule in &ruleset.rules {
            let Some(group) = &rule.group else { continue };
            if !self.key.takes(&group.scope) || !self.members.iter().any(|m| rule.scope.matches(&m.symbol, &refdata)) {
                continue;
            }
            let previous = old
                .iter()
                .position(|b| b.rule.id == rule.id && b.rule.content_hash == rule.content_hash);
            let state = match previous {
                Some(i) => {
                    carried[i] = true;
                    old[i].state.clone()
                }
                None => rule.initial_state(),
            };
            rules.push(BoundRule {
                rule: rule.clone(),
                state,
            });
        }
        let last = LastValues::default();
        let memo = AggregateMemo::default();
        let view = GroupView {
            memo: &memo,
            members: &self.members,
            max_age_ns: None,
            outlier: None,
        };
        let ctx = self.ctx(&last, None, now_ns, &view, ruleset.version);
        for (bound, kept) in old.iter().zip(carried) {
            if !kept {
                let mut fan = GroupOut::new(out, &bound.rule, &self.key, &self.refdata, known, None);
                bound.rule.on_removed(&ctx, &bound.state, &mut fan);
            }
        }
        self.rules = rules;
        self.refdata = refdata;
        self.ruleset_version = ruleset.version;
        self.next_deadline_ns = self.deadline();
    }

    fn ctx<'a>(
        &'a self,
        last: &'a LastValues,
        tick: Option<&'a Tick>,
        now_ns: i64,
        view: &'a GroupView<'a>,
        version: u64,
    ) -> EvalCtx<'a> {
        EvalCtx {
            now_ns,
            tick,
            last,
            windows: &self.no_windows,
            symbol: &self.label,
            ruleset_version: version,
            last_tick_ns: self.last_tick_ns,
            reference: None,
            group: Some(view),
            lookback_from_ns: None,
            bound: None,
        }
    }

    /// Copies a member's newest values in, adding it on its first tick.
    /// Returns whether it was new (the rules may need binding again).
    pub fn update_member(&mut self, id: InstrumentId, state: &InstrumentState) -> bool {
        if let Some(&i) = self.member_at.get(&id) {
            let member = &mut self.members[i];
            member.last = state.last;
            member.last_event_ns = state.last_event_ns;
            return false;
        }
        self.insert_member(id, state.symbol.clone(), state.last, state.last_event_ns);
        true
    }

    /// Adds a member in symbol order.
    fn insert_member(&mut self, id: InstrumentId, symbol: Arc<str>, last: LastValues, last_event_ns: Option<i64>) {
        let member = MemberValues {
            reference: self.refdata.instrument(&symbol).cloned(),
            symbol,
            last,
            last_event_ns,
        };
        let at = self.members.partition_point(|m| m.symbol < member.symbol);
        self.members.insert(at, member);
        self.ids.insert(at, id);
        self.member_at = self.ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    }

    /// Evaluates the group rules on a member's tick (already copied in
    /// with [`GroupPartition::update_member`]); returns the group's next
    /// deadline.
    pub fn on_member_tick(
        &mut self,
        tick: &Tick,
        member: &InstrumentState,
        received_ns: i64,
        out: &mut impl AlertSink,
        known: &Instruments,
    ) -> i64 {
        let kind = tick.kind();
        self.last_tick_ns = tick.event_time_ns;
        self.clock_offset_ns = received_ns.saturating_sub(tick.event_time_ns);
        self.evaluate(
            Some(tick),
            Some(kind),
            &member.last,
            &member.symbol,
            tick.event_time_ns,
            out,
            known,
        );
        self.next_deadline_ns = self.deadline();
        self.next_deadline_ns
    }

    /// Runs what is due by server time `now_ns` without a tick: `for`
    /// holds, and members gone stale changing an aggregate, in the group's
    /// event time then. Returns the next deadline (server time).
    pub fn on_timer(&mut self, now_ns: i64, out: &mut impl AlertSink, known: &Instruments) -> i64 {
        let last = LastValues::default();
        let label = self.label.clone();
        let event_now = now_ns.saturating_sub(self.clock_offset_ns);
        self.evaluate(None, None, &last, &label, event_now, out, known);
        self.next_deadline_ns = self.deadline();
        self.next_deadline_ns
    }

    #[allow(clippy::too_many_arguments)]
    fn evaluate(
        &mut self,
        tick: Option<&Tick>,
        kind: Option<TickKind>,
        last: &LastValues,
        trigger: &Arc<str>,
        now_ns: i64,
        out: &mut impl AlertSink,
        known: &Instruments,
    ) {
        let GroupPartition {
            key,
            ruleset_version,
            members,
            rules,
            refdata,
            label,
            no_windows,
            last_tick_ns,
            ..
        } = self;
        let trigger = (!Arc::ptr_eq(trigger, label)).then_some(trigger);
        for bound in rules.iter_mut() {
            let Some(group) = &bound.rule.group else { continue };
            let memo = AggregateMemo::default();
            let view = GroupView {
                memo: &memo,
                members,
                max_age_ns: group.max_age_ns,
                outlier: group.outlier,
            };
            let ctx = EvalCtx {
                now_ns,
                tick,
                last,
                windows: no_windows,
                symbol: label,
                ruleset_version: *ruleset_version,
                last_tick_ns: *last_tick_ns,
                reference: None,
                group: Some(&view),
                lookback_from_ns: None,
                bound: None,
            };
            let mut fan = GroupOut::new(out, &bound.rule, key, refdata, known, trigger);
            match kind {
                Some(kind) if !bound.rule.triggers.contains(kind) => {}
                Some(_) => bound.rule.on_tick(&ctx, &mut bound.state, &mut fan),
                // A timer: a stale member may have changed an aggregate, so
                // the condition is evaluated again, then any hold runs.
                None => {
                    bound.rule.on_tick(&ctx, &mut bound.state, &mut fan);
                    bound.rule.on_timer(&ctx, &mut bound.state, &mut fan);
                }
            }
        }
    }

    /// When the group next needs a timer, by the server's clock: the
    /// rules' own deadlines, and for rules with `max_age`, when the next
    /// fresh member goes stale.
    pub(crate) fn deadline(&self) -> i64 {
        let mut due = i64::MAX;
        for bound in &self.rules {
            if let Some(d) = bound.rule.deadline(self.last_tick_ns, &bound.state) {
                due = due.min(d);
            }
            if let Some(age) = bound.rule.group.as_ref().and_then(|g| g.max_age_ns) {
                for member in &self.members {
                    if let Some(t) = member.last_event_ns {
                        let stale_at = t.saturating_add(age).saturating_add(1);
                        if stale_at > self.last_tick_ns {
                            due = due.min(stale_at);
                        }
                    }
                }
            }
        }
        if due == i64::MAX {
            due
        } else {
            due.saturating_add(self.clock_offset_ns)
        }
    }

    /// Each member's instrument id and values, in symbol order, for a
    /// snapshot.
    pub fn members_with_ids(&self) -> impl Iterator<Item = (InstrumentId, &MemberValues)> {
        self.ids.iter().copied().zip(&self.members)
    }

    /// Restores a member's values from a checkpoint.
    pub fn restore_member(&mut self, id: InstrumentId, symbol: Arc<str>, last: LastValues, last_event_ns: Option<i64>) {
        if !self.member_at.contains_key(&id) {
            self.insert_member(id, symbol, last, last_event_ns);
        }
    }
}

/// Where a group rule's alerts go: named after the group and its trigger
/// member, or, with `targets`, one per target instrument.
struct GroupOut<'a, S> {
    out: &'a mut S,
    targets: Option<&'a Targets>,
    key: &'a GroupKey,
    refdata: &'a RefData,
    known: &'a Instruments,
    trigger: Option<&'a Arc<str>>,
}

impl<'a, S> GroupOut<'a, S> {
    fn new(
        out: &'a mut S,
        rule: &'a CompiledRule,
        key: &'a GroupKey,
        refdata: &'a RefData,
        known: &'a Instruments,
        trigger: Option<&'a Arc<str>>,
    ) -> Self {
        GroupOut {
            out,
            targets: rule.targets.as_ref(),
            key,
            refdata,
            known,
            trigger,
        }
    }
}

impl<S: AlertSink> AlertSink for GroupOut<'_, S> {
    fn emit(&mut self, mut alert: Alert) {
        alert.trigger_instrument = self.trigger.cloned();
        let Some(targets) = self.targets else {
            self.out.emit(alert);
            return;
        };
        let recipients: Vec<Arc<str>> = match (targets, self.key.scope) {
            (Targets::Underlying, GroupKind::Underlying) => self.refdata.of_underlying(&self.key.name).to_vec(),
            (Targets::Underlying, GroupKind::Named) => Vec::new(),
            (targets, _) => {
                let known = || self.known.symbols();
                let mut all = self.refdata.targets_of(targets, &alert.instrument, &known);
                all.retain(|s| *s != alert.instrument);
                all
            }
        };
        if recipients.is_empty() {
            self.out.emit(alert);
            return;
        }
        for symbol in recipients {
            let mut copy = alert.clone();
            copy.instrument = symbol;
            self.out.emit(copy);
        }
    }
}

/// A group partition behind its own lock.
#[derive(Debug)]
pub struct GroupCell(Mutex<GroupPartition>);

impl GroupCell {
    pub fn lock(&self) -> parking_lot::MutexGuard<'_, GroupPartition> {
        self.0.lock()
    }

    pub fn key(&self) -> GroupKey {
        self.0.lock().key.clone()
    }
}

/// Every group partition, by key, created when a first member binds.
#[derive(Debug, Default)]
pub struct Groups {
    cells: RwLock<HashMap<GroupKey, Arc<GroupCell>>>,
}

impl Groups {
    /// The partition of `key`, created empty on first use.
    pub fn get_or_create(&self, key: &GroupKey) -> Arc<GroupCell> {
        if let Some(cell) = self.cells.read().unwrap_or_else(|p| p.into_inner()).get(key) {
            return cell.clone();
        }
        let mut cells = self.cells.write().unwrap_or_else(|p| p.into_inner());
        cells
            .entry(key.clone())
            .or_insert_with(|| Arc::new(GroupCell(Mutex::new(GroupPartition::new(key.clone())))))
            .clone()
    }

    /// Every group partition, in key order.
    pub fn all(&self) -> Vec<Arc<GroupCell>> {
        let cells = self.cells.read().unwrap_or_else(|p| p.into_inner());
        let mut all: Vec<_> = cells.iter().map(|(k, c)| (k.clone(), c.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all.into_iter().map(|(_, c)| c).collect()
    }

    pub fn len(&self) -> usize {
        self.cells.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The groups an instrument belongs to under `ruleset`: one per distinct
/// key of the group rules whose scope matches it.
pub fn groups_of(symbol: &str, ruleset: &RuleSet) -> SmallVec<[GroupKey; 1]> {
    let mut keys: SmallVec<[GroupKey; 1]> = SmallVec::new();
    for rule in &ruleset.rules {
        let Some(group) = &rule.group else { continue };
        if !rule.scope.matches(symbol, &ruleset.refdata) {
            continue;
        }
        if let Some(key) = GroupKey::of(&group.scope, symbol, &ruleset.refdata) {
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    keys
}
