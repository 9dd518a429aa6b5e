//! Engine state out and back in, for checkpoints.
//!
//! [`Engine::snapshot`] copies every instrument's state (sequence and time
//! marks, last values, windows, the state of every bound rule) into an
//! [`EngineSnapshot`], holding each instrument's lock only while it clones
//! that instrument. [`Engine::restore`] rebuilds a fresh engine's
//! instruments from one, bound to the engine's own ruleset: a rule whose id
//! and definition are unchanged gets its saved state, a window comes back
//! by its key, and everything else starts fresh, so a changed ruleset keeps
//! what still applies. Ticks held back for reordering are not part of a
//! snapshot: clients resend from the last applied sequence number.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use crate::rules::{CompiledRule, RuleSet, RuleState};
use crate::state::{LastValues, SymbolError, Window, WindowKey, WindowSet};

use super::group::{groups_of, GroupKey, GroupKind};
use super::partition::{feeds_alerts, BoundRule, BoundRules, Partition};

use super::Engine;

/// A rule as an instrument was bound to it: its id and the hash of its
/// definition.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RuleStamp {
    pub id: String,
    pub content_hash: u64,
}

/// One instrument's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstrumentSnapshot {
    pub symbol: String,
    pub last_seq: Option<u64>,
    pub last_event_ns: Option<i64>,
    pub last_received_ns: i64,
    pub last: LastValues,
    /// False for an instrument no ruleset was bound to yet (interned, no
    /// tick applied): it gets bound by its first tick, as before.
    pub bound: bool,
    pub windows: Vec<(WindowKey, Window)>,
    /// Each bound rule's state, with the rule's index in
    /// [`EngineSnapshot::rules`].
    pub rules: Vec<(u32, RuleState)>,
    pub next_deadline_ns: i64,
}

/// Every instrument's state and the rules it was evaluated by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineSnapshot {
    /// Version of the ruleset in force when the snapshot began.
    pub ruleset_version: u64,
    /// The rules the instrument states refer to: first the ruleset in
    /// force, in evaluation order (`rules_in_force` of them), then any rule
    /// of an older ruleset an instrument was still bound to.
    pub rules: Vec<RuleStamp>,
    pub rules_in_force: u32,
    /// In instrument id order.
    pub instruments: Vec<InstrumentSnapshot>,
    /// The group partitions (rules evaluated over several instruments), in
    /// key order. Encoded after the rest by the checkpoint format (a
    /// section of its own, so files written before groups existed read as
    /// having none).
    #[serde(skip)]
    pub groups: Vec<GroupSnapshot>,
}

/// One group partition's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSnapshot {
    pub kind: GroupKind,
    pub name: String,
    /// Each bound group rule's state, with the rule's index in
    /// [`EngineSnapshot::rules`].
    pub rules: Vec<(u32, RuleState)>,
    /// The members' newest values, by symbol.
    pub members: Vec<MemberSnapshot>,
}

/// A group member's newest values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSnapshot {
    pub symbol: String,
    pub last: LastValues,
    pub last_event_ns: Option<i64>,
}

impl EngineSnapshot {
    /// Checks that every rule state refers to a rule the snapshot lists.
    ///
    /// # Errors
    /// The first state that does not.
    pub fn check_references(&self) -> Result<(), RestoreError> {
        for instrument in &self.instruments {
            if let Some(&(index, _)) = instrument.rules.iter().find(|(i, _)| *i as usize >= self.rules.len()) {
                return Err(RestoreError::UnknownRule {
                    symbol: instrument.symbol.clone(),
                    index,
                    rules: self.rules.len(),
                });
            }
        }
        for group in &self.groups {
            if let Some(&(index, _)) = group.rules.iter().find(|(i, _)| *i as usize >= self.rules.len()) {
                return Err(RestoreError::UnknownRule {
                    symbol: group.name.clone(),
                    index,
                    rules: self.rules.len(),
                });
            }
        }
        Ok(())
    }
}

/// An instrument of a snapshot that could not be restored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedInstrument {
    pub symbol: String,
    pub reason: String,
}

/// What [`Engine::restore`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestoreReport {
    pub instruments_restored: usize,
    pub instruments_skipped: Vec<SkippedInstrument>,
    /// Rule states carried over: same rule id, same definition.
    pub rule_states_restored: usize,
    /// Rules whose definition changed since the snapshot: started fresh.
    pub rule_states_reset: usize,
    /// Rules that did not apply to the instrument in the snapshot (new
    /// rules, or new to this instrument): started fresh.
    pub rule_states_new: usize,
    /// Saved states of rules that no longer apply to the instrument.
    pub rule_states_dropped: usize,
    pub windows_restored: usize,
    pub windows_new: usize,
    /// Saved rule states or windows that failed their consistency checks
    /// and were started fresh instead (each is also counted as reset or
    /// new).
    pub inconsistent: usize,
    /// The version the ruleset in force now carries: the snapshot's when
    /// its rules are the same, the next one when they changed, so versions
    /// in alerts never go back across a restart.
    pub ruleset_version: u64,
}

/// Why a snapshot could not be restored at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error("the engine already has {instruments} instrument(s): restore only into a fresh engine, before any ingest")]
    NotFresh { instruments: usize },
    #[error(
        "instrument {symbol} refers to rule #{index}, but the snapshot lists only {rules} rules: the snapshot is corrupt"
    )]
    UnknownRule { symbol: String, index: u32, rules: usize },
}

impl Engine {
    /// Numbers the ruleset in force (still version 1 in a fresh engine)
    /// after the snapshot's: the same version when the snapshot was taken
    /// under the same rules, the next one otherwise. Returns the version.
    fn continue_versions(&self, snapshot: &EngineSnapshot) -> u64 {
        let current = self.ruleset.load_full();
        let in_force = snapshot.rules.get(..snapshot.rules_in_force as usize).unwrap_or(&[]);
        let same = current.rules.len() == in_force.len()
            && current
                .rules
                .iter()
                .zip(in_force)
                .all(|(rule, stamp)| *rule.id == *stamp.id && rule.content_hash == stamp.content_hash);
        let version = if same {
            snapshot.ruleset_version
        } else {
            snapshot.ruleset_version.saturating_add(1)
        };
        if version <= current.version {
            return current.version;
        }
        let continued = RuleSet {
            version,
            rules: current.rules.clone(),
            windows: current.windows.clone(),
            sources: current.sources.clone(),
            refdata: current.refdata.clone(),
        };
        self.ruleset.store(Arc::new(continued));
        self.last_version.store(version, Ordering::SeqCst);
        self.current_version.store(version, Ordering::Release);
        version
    }

    /// Copies every instrument's state, one instrument at a time: each is
    /// locked only while its state is cloned, so ingest on other
    /// instruments goes on and no instrument waits longer than one clone.
    /// Blocking (it allocates the copy): call off the async workers.
    pub fn snapshot(&self) -> EngineSnapshot {
        self.snapshot_where(|_| true, true)
    }

    /// As [`Engine::snapshot`], of the instruments whose symbol `wanted`
    /// takes only (each checked before its state is cloned), with the
    /// group partitions when `groups`: the state of a share of the
    /// instruments, handed to another instance ([`crate::kafka`]).
    pub fn snapshot_where(&self, mut wanted: impl FnMut(&str) -> bool, groups: bool) -> EngineSnapshot {
        let ruleset = self.ruleset.load_full();
        let mut table = RuleTable::default();
        for rule in &ruleset.rules {
            table.index(rule);
        }
        let rules_in_force = table.stamps.len() as u32;

        struct Copied {
            symbol: Arc<str>,
            last_seq: Option<u64>,
            last_event_ns: Option<i64>,
            last_received_ns: i64,
            last: LastValues,
            bound: bool,
            windows: WindowSet,
            rules: BoundRules,
            next_deadline_ns: i64,
        }
        let mut copied = Vec::with_capacity(self.instruments.len());
        self.states.for_each(|partition| {
            let state = &partition.instrument;
            if !wanted(&state.symbol) {
                return;
            }
            copied.push(Copied {
                symbol: state.symbol.clone(),
                last_seq: state.last_seq,
                last_event_ns: state.last_event_ns,
                last_received_ns: state.last_received_ns,
                last: state.last,
                bound: partition.ruleset_version != 0,
                windows: state.windows.clone(),
                rules: partition.rules.clone(),
                next_deadline_ns: partition.next_deadline_ns,
            });
        });

        let instruments = copied
            .into_iter()
            .map(|c| InstrumentSnapshot {
                symbol: c.symbol.to_string(),
                last_seq: c.last_seq,
                last_event_ns: c.last_event_ns,
                last_received_ns: c.last_received_ns,
                last: c.last,
                bound: c.bound,
                windows: c.windows.into_windows().collect(),
                rules: c.rules.into_iter().map(|b| (table.index(&b.rule), b.state)).collect(),
                next_deadline_ns: c.next_deadline_ns,
            })
            .collect();
        let cells = if groups { self.groups.all() } else { Vec::new() };
        let groups = cells
            .into_iter()
            .map(|cell| {
                let group = cell.lock();
                GroupSnapshot {
                    kind: group.key.scope,
                    name: group.key.name.to_string(),
                    rules: group
                        .rules
                        .iter()
                        .map(|b| (table.index(&b.rule), b.state.clone()))
                        .collect(),
                    members: group
                        .members
                        .iter()
                        .map(|m| MemberSnapshot {
                            symbol: m.symbol.to_string(),
                            last: m.last,
                            last_event_ns: m.last_event_ns,
                        })
                        .collect(),
                }
            })
            .collect();
        EngineSnapshot {
            ruleset_version: ruleset.version,
            rules: table.stamps,
            rules_in_force,
            instruments,
            groups,
        }
    }

    /// Rebuilds the instruments of `snapshot` in this engine, which must be
    /// fresh (no instrument yet). Symbols are interned in snapshot order;
    /// each instrument is bound to this engine's ruleset: a rule whose id
    /// and content hash match a saved state gets that state, windows come
    /// back by key, the rest start fresh. Timer deadlines follow from the
    /// restored states.
    ///
    /// `resume_ns` (server clock) is when the service resumes: an
    /// instrument's last-received mark is moved forward to it if earlier,
    /// so the time the service was down does not count as silence of the
    /// feed. `i64::MIN` restores the marks as saved.
    ///
    /// # Errors
    /// The engine is not fresh, or the snapshot refers to a rule it does
    /// not list; nothing is restored then.
    pub fn restore(&self, snapshot: EngineSnapshot, resume_ns: i64) -> Result<RestoreReport, RestoreError> {
        let existing = self.instruments.len();
        if existing > 0 {
            return Err(RestoreError::NotFresh { instruments: existing });
        }
        snapshot.check_references()?;
        let mut report = RestoreReport {
            ruleset_version: self.continue_versions(&snapshot),
            ..RestoreReport::default()
        };
        let ruleset = self.ruleset.load_full();
        for saved in snapshot.instruments {
            let (id, symbol, new) = match self.instruments.intern(&saved.symbol) {
                Ok(interned) => interned,
                Err(error) => {
                    report.instruments_skipped.push(SkippedInstrument {
                        symbol: saved.symbol,
                        reason: error.to_string(),
                    });
                    continue;
                }
            };
            if !new {
                report.instruments_skipped.push(SkippedInstrument {
                    symbol: saved.symbol,
                    reason: "listed twice in the snapshot; the first is kept".into(),
                });
                continue;
            }
            let partition =
                self.restored_partition(id, symbol, saved, &snapshot.rules, &ruleset, resume_ns, &mut report);
            let deadline = partition.next_deadline_ns;
            if self.states.get_or_insert(id, || partition).is_none() {
                report.instruments_skipped.push(SkippedInstrument {
                    symbol: self.instruments.symbol(id).map(|s| s.to_string()).unwrap_or_default(),
                    reason: SymbolError::Unknown(id.0).to_string(),
                });
                continue;
            }
            self.note_deadline(deadline);
            report.instruments_restored += 1;
        }
        for saved in snapshot.groups {
            self.restore_group(saved, &snapshot.rules, &ruleset, &mut report);
        }
        Ok(report)
    }
}

impl Engine {
    /// One saved instrument as a partition bound to `ruleset`.
    #[allow(clippy::too_many_arguments)]
    fn restored_partition(
        &self,
        id: crate::model::InstrumentId,
        symbol: Arc<str>,
        saved: InstrumentSnapshot,
        stamps: &[RuleStamp],
        ruleset: &RuleSet,
        resume_ns: i64,
        report: &mut RestoreReport,
    ) -> Partition {
        let mut partition = Partition::new(id, symbol, saved.last_received_ns.max(resume_ns));
        let state = &mut partition.instrument;
        state.last_seq = saved.last_seq;
        state.last_event_ns = saved.last_event_ns;
        state.last = saved.last;
        if saved.bound {
            bind_saved(&mut partition, ruleset, stamps, saved, report);
        }
        partition.groups = groups_of(&partition.instrument.symbol, ruleset)
            .iter()
            .map(|key| self.groups.get_or_create(key))
            .collect();
        partition
    }

    /// Puts the instruments of `snapshot` (a share of another engine's, see
    /// [`Engine::snapshot_where`]) into this running engine, each in place
    /// of whatever state it had here, bound to this engine's ruleset as
    /// [`Engine::restore`] binds. The ruleset's version is left alone, and
    /// the snapshot's group partitions are not restored.
    ///
    /// # Errors
    /// The snapshot refers to a rule it does not list; nothing is restored.
    pub fn restore_share(&self, snapshot: EngineSnapshot, resume_ns: i64) -> Result<RestoreReport, RestoreError> {
        snapshot.check_references()?;
        let ruleset = self.ruleset.load_full();
        let mut report = RestoreReport {
            ruleset_version: ruleset.version,
            ..RestoreReport::default()
        };
        for saved in snapshot.instruments {
            let (id, symbol, _) = match self.instruments.intern(&saved.symbol) {
                Ok(interned) => interned,
                Err(error) => {
                    report.instruments_skipped.push(SkippedInstrument {
                        symbol: saved.symbol,
                        reason: error.to_string(),
                    });
                    continue;
                }
            };
            let partition =
                self.restored_partition(id, symbol, saved, &snapshot.rules, &ruleset, resume_ns, &mut report);
            let deadline = partition.next_deadline_ns;
            let mut fresh = Some(partition);
            match self.states.get_or_insert(id, || fresh.take().expect("taken once")) {
                Some(cell) => {
                    if let Some(partition) = fresh.take() {
                        *cell.lock() = partition;
                    }
                }
                None => {
                    report.instruments_skipped.push(SkippedInstrument {
                        symbol: saved_symbol(self, id),
                        reason: SymbolError::Unknown(id.0).to_string(),
                    });
                    continue;
                }
            }
            self.note_deadline(deadline);
            report.instruments_restored += 1;
        }
        Ok(report)
    }

    /// Drops the state of the instruments `symbols` (handed to another
    /// instance): each starts afresh, bound to no rule, with no timer,
    /// until a tick or a restored share brings it back. Returns how many
    /// it found.
    pub fn forget_instruments<'a>(&self, symbols: impl IntoIterator<Item = &'a str>, now_ns: i64) -> usize {
        let mut found = 0;
        for symbol in symbols {
            let Some(id) = self.instruments.get(symbol) else {
                continue;
            };
            if let Some(cell) = self.states.get(id) {
                let mut partition = cell.lock();
                let symbol = partition.instrument.symbol.clone();
                *partition = Partition::new(id, symbol, now_ns);
                found += 1;
            }
        }
        found
    }
}

fn saved_symbol(engine: &Engine, id: crate::model::InstrumentId) -> String {
    engine.instruments.symbol(id).map(|s| s.to_string()).unwrap_or_default()
}

impl Engine {
    /// Restores one group partition: its members' values, then its rules
    /// bound to the ruleset in force, with the saved state of each rule
    /// whose id and definition are unchanged.
    fn restore_group(&self, saved: GroupSnapshot, stamps: &[RuleStamp], ruleset: &RuleSet, report: &mut RestoreReport) {
        let key = GroupKey {
            scope: saved.kind,
            name: saved.name.as_str().into(),
        };
        let cell = self.groups.get_or_create(&key);
        let mut group = cell.lock();
        group.refdata = ruleset.refdata.clone();
        for member in saved.members {
            if let Some(id) = self.instruments.get(&member.symbol) {
                group.restore_member(id, member.symbol.as_str().into(), member.last, member.last_event_ns);
            }
        }
        group.rebind(ruleset, 0, &mut Vec::new(), &self.instruments);
        let mut saved_rules: Vec<Option<(&RuleStamp, RuleState)>> = saved
            .rules
            .into_iter()
            .map(|(i, s)| Some((&stamps[i as usize], s)))
            .collect();
        for bound in group.rules.iter_mut() {
            let same = saved_rules
                .iter()
                .position(|s| s.as_ref().is_some_and(|(stamp, _)| is_rule(stamp, &bound.rule)));
            match same.and_then(|i| saved_rules[i].take()) {
                Some((_, state)) if bound.rule.logic.fits(&state) => {
                    bound.state = state;
                    report.rule_states_restored += 1;
                }
                Some(_) => {
                    report.inconsistent += 1;
                    report.rule_states_reset += 1;
                }
                None => report.rule_states_new += 1,
            }
        }
        report.rule_states_dropped += saved_rules.iter().filter(|s| s.is_some()).count();
        group.next_deadline_ns = group.deadline();
        self.note_deadline(group.next_deadline_ns);
    }
}

/// Stamps of the rules instruments are bound to, each once.
#[derive(Default)]
struct RuleTable {
    stamps: Vec<RuleStamp>,
    by_rule: FxHashMap<(Arc<str>, u64), u32>,
}

impl RuleTable {
    fn index(&mut self, rule: &CompiledRule) -> u32 {
        let next = self.stamps.len() as u32;
        let stamps = &mut self.stamps;
        *self
            .by_rule
            .entry((rule.id.clone(), rule.content_hash))
            .or_insert_with(|| {
                stamps.push(RuleStamp {
                    id: rule.id.to_string(),
                    content_hash: rule.content_hash,
                });
                next
            })
    }
}

/// Binds `partition` to `ruleset`, taking the saved rule states and
/// windows that still apply.
fn bind_saved(
    partition: &mut Partition,
    ruleset: &RuleSet,
    stamps: &[RuleStamp],
    saved: InstrumentSnapshot,
    report: &mut RestoreReport,
) {
    let mut saved_windows: HashMap<WindowKey, Window> = saved.windows.into_iter().collect();
    let mut saved_rules: Vec<Option<(&RuleStamp, RuleState)>> = saved
        .rules
        .into_iter()
        .map(|(i, s)| Some((&stamps[i as usize], s)))
        .collect();
    let mut windows = WindowSet::with_slots(ruleset.windows.len());
    let mut rules = SmallVec::new();
    for rule in &ruleset.rules {
        if !rule.scope.matches(&partition.instrument.symbol, &ruleset.refdata) {
            continue;
        }
        let same = saved_rules
            .iter()
            .position(|s| s.as_ref().is_some_and(|(stamp, _)| is_rule(stamp, rule)));
        let rule_state = match same.and_then(|i| saved_rules[i].take()) {
            Some((_, saved_state)) if rule.logic.fits(&saved_state) => {
                report.rule_states_restored += 1;
                saved_state
            }
            Some(_) => {
                report.inconsistent += 1;
                report.rule_states_reset += 1;
                rule.initial_state()
            }
            None => {
                let changed = saved_rules
                    .iter_mut()
                    .find(|s| s.as_ref().is_some_and(|(stamp, _)| *stamp.id == *rule.id))
                    .map(Option::take);
                if changed.is_some() {
                    report.rule_states_reset += 1;
                } else {
                    report.rule_states_new += 1;
                }
                rule.initial_state()
            }
        };
        for &slot in &rule.slots {
            if windows.get(slot).is_some() {
                continue;
            }
            let (key, needs) = ruleset.windows[slot.0 as usize];
            let window = match saved_windows.remove(&key) {
                Some(w) if w.needs() == needs => match w.check_consistent(key) {
                    Ok(()) => Some(w),
                    Err(_) => {
                        report.inconsistent += 1;
                        None
                    }
                },
                _ => None,
            };
            if window.is_some() {
                report.windows_restored += 1;
            } else {
                report.windows_new += 1;
            }
            windows.insert(slot, key, needs, window);
        }
        rules.push(BoundRule {
            rule: rule.clone(),
            state: rule_state,
        });
    }
    report.rule_states_dropped += saved_rules.iter().filter(|s| s.is_some()).count();
    partition.feeds_alerts = feeds_alerts(&rules);
    partition.rules = rules;
    partition.reference = ruleset.refdata.instrument(&partition.instrument.symbol).cloned();
    partition.refdata = ruleset.refdata.clone();
    partition.instrument.windows = windows;
    partition.ruleset_version = ruleset.version;
    partition.next_deadline_ns = partition.earliest_rule_deadline();
}

fn is_rule(stamp: &RuleStamp, rule: &CompiledRule) -> bool {
    stamp.content_hash == rule.content_hash && *stamp.id == *rule.id
}
