//! From a rule's `pattern`, `after_match` and `max_partials` to a
//! [`Pattern`], refusing at load what would need state that grows with
//! the traffic, with a message that says why.

use std::borrow::Cow;
use std::sync::Arc;

use crate::model::{AlertKind, KindMask, Severity, TickKind};
use crate::rules::compile::{source_offset, KindCompiler, MAX_WINDOW_NS};
use crate::rules::context::MAX_BOUND;
use crate::rules::kinds::RuleLogic;
use crate::state::Field;

use super::nfa::{self, StepSpec, Unit};
use super::parse::{self, EventAst, PatternAst, UnitAst};
use super::{
    kind_bit, Absence, AfterMatch, AlertMatch, Event, Pattern, StepInfo, MAX_EVENTS, MAX_NODES, MAX_PARTIALS_LIMIT,
    MAX_STEPS, RAISING,
};

/// Most members of one `and` group.
const MAX_ALL: usize = 4;

/// The values steps bind: (step, field) by index.
#[derive(Default)]
struct Binds {
    table: Vec<(usize, Field)>,
    /// The indices conditions read.
    read: u16,
}

impl Binds {
    fn index(&mut self, step: usize, field: Field) -> Option<u8> {
        if let Some(i) = self.table.iter().position(|&b| b == (step, field)) {
            return Some(i as u8);
        }
        if self.table.len() >= MAX_BOUND {
            return None;
        }
        self.table.push((step, field));
        Some((self.table.len() - 1) as u8)
    }
}

pub(super) fn compile(c: &mut KindCompiler<'_>) -> Option<RuleLogic> {
    let text = c.required(&c.spec.pattern, "pattern", c.kind)?;
    let at = |column: usize| source_offset(text, column);
    let max_partials = match &c.spec.max_partials {
        None => None,
        Some(m) if (1..=MAX_PARTIALS_LIMIT).contains(m.get_ref()) => Some((*m.get_ref() as usize, m.span().start)),
        Some(m) => {
            c.errors.at(
                m.span().start,
                format!("`max_partials` must be 1 to {MAX_PARTIALS_LIMIT}"),
            );
            return None;
        }
    };
    let policy = match &c.spec.after_match {
        None => AfterMatch::SkipPastLastEvent,
        Some(p) => match AfterMatch::from_name(p.get_ref()) {
            Some(p) => p,
            None => {
                let hint = match p.get_ref().as_str() {
                    "skip_to_first" | "skip_to_last" => {
                        ": Flink's skip_to_first/skip_to_last[step] restart inside a match and need every partial match kept; Airbag does not offer them"
                    }
                    _ => "",
                };
                c.errors.at(
                    p.span().start,
                    format!(
                        "unknown `after_match` `{}`: use {}{hint}",
                        p.get_ref(),
                        AfterMatch::NAMES
                    ),
                );
                return None;
            }
        },
    };
    let ast: PatternAst = match parse::parse(text.get_ref()) {
        Ok(ast) => ast,
        Err(e) => {
            c.errors.at(at(e.column), format!("in `pattern`: {}", e.message));
            return None;
        }
    };
    let fail = |c: &mut KindCompiler<'_>, column: usize, message: String| {
        c.errors.at(at(column), format!("in `pattern`: {message}"));
        None
    };
    if ast.steps.len() > MAX_STEPS {
        return fail(
            c,
            ast.steps[MAX_STEPS].column,
            format!("a pattern has at most {MAX_STEPS} steps before its absence"),
        );
    }
    // Names: given, or step1, step2, ...
    let mut names: Vec<String> = Vec::with_capacity(ast.steps.len());
    for (i, s) in ast.steps.iter().enumerate() {
        let name = match &s.name {
            Some((n, col)) => {
                if names.contains(n) {
                    return fail(c, *col, format!("the step name `{n}` is used twice"));
                }
                n.clone()
            }
            None => format!("step{}", i + 1),
        };
        names.push(name);
    }
    let mut binds = Binds::default();
    let mut events: Vec<Event> = Vec::new();
    let mut bound_events = 0u32;
    let mut specs = Vec::with_capacity(ast.steps.len());
    let mut kinds: Vec<KindMask> = Vec::with_capacity(ast.steps.len());
    let mut ok = true;
    for (i, s) in ast.steps.iter().enumerate() {
        let mut step_kinds = KindMask::NONE;
        let mut list = Vec::new();
        let group: &[EventAst] = match &s.unit {
            UnitAst::One(e) => std::slice::from_ref(e),
            UnitAst::Any(v) | UnitAst::All(v) => v,
        };
        if let UnitAst::All(v) = &s.unit {
            if v.len() > MAX_ALL {
                return fail(
                    c,
                    s.column,
                    format!("an `and` group has at most {MAX_ALL} members: each subset seen is a state of its own"),
                );
            }
            if (s.count.min, s.count.max) != (1, Some(1)) {
                return fail(
                    c,
                    s.count.column,
                    "an `and` group takes no count: repeat the step instead".into(),
                );
            }
        }
        for e in group {
            if events.len() >= MAX_EVENTS {
                return fail(c, s.column, format!("a pattern has at most {MAX_EVENTS} events"));
            }
            match event(c, e, &at, &names, i, &mut binds) {
                Some((ev, reads)) => {
                    if let Event::Tick(expr) = &ev {
                        step_kinds = step_kinds.union(expr.triggers());
                    }
                    if reads {
                        bound_events |= 1 << events.len();
                    }
                    list.push(1u32 << events.len());
                    events.push(ev);
                }
                None => ok = false,
            }
        }
        kinds.push(step_kinds);
        let unit = match &s.unit {
            UnitAst::All(_) => Unit::All(list),
            _ => Unit::Any(list.iter().fold(0, |a, b| a | b)),
        };
        specs.push(StepSpec {
            unit,
            min: s.count.min,
            max: s.count.max,
            strict: s.strict,
        });
    }
    let absence = match &ast.absence {
        None => None,
        Some(a) => {
            if a.window_ns > MAX_WINDOW_NS {
                return fail(c, a.column, "an absence's `within` may be at most 1d".into());
            }
            if matches!(a.unit, UnitAst::All(_)) {
                return fail(
                    c,
                    a.column,
                    "an absence is of one event or an `or` group: `not (A and B)` would wait for both, which is an `and` of absences; write two rules".into(),
                );
            }
            let group: &[EventAst] = match &a.unit {
                UnitAst::One(e) => std::slice::from_ref(e),
                UnitAst::Any(v) | UnitAst::All(v) => v,
            };
            let mut mask = 0u32;
            for e in group {
                if events.len() >= MAX_EVENTS {
                    return fail(c, a.column, format!("a pattern has at most {MAX_EVENTS} events"));
                }
                match event(c, e, &at, &names, ast.steps.len(), &mut binds) {
                    Some((ev, reads)) => {
                        if reads {
                            bound_events |= 1 << events.len();
                        }
                        mask |= 1 << events.len();
                        events.push(ev);
                    }
                    None => ok = false,
                }
            }
            Some(Absence {
                events: mask,
                window_ns: a.window_ns,
            })
        }
    };
    if !ok {
        return None;
    }
    let automaton = match nfa::build(&specs, MAX_NODES) {
        Ok(a) => a,
        Err(needed) => {
            return fail(
                c,
                1,
                format!(
                "this pattern needs {needed} states, more than {MAX_NODES}: lower its counts or split its `and` groups"
            ),
            )
        }
    };
    let min_events: u32 = specs
        .iter()
        .map(|s| match &s.unit {
            Unit::All(m) => m.len() as u32,
            Unit::Any(_) => s.min,
        })
        .sum();
    let within_ns = match ast.within {
        Some((ns, column)) if ns > MAX_WINDOW_NS => return fail(c, column, "`within` may be at most 1d".into()),
        Some((ns, _)) => Some(ns),
        None if min_events > 1 => {
            return fail(
                c,
                text.get_ref().chars().count() + 1,
                "a pattern of more than one event needs `within DURATION` after its last positive step: the longest time from its first event to its last (without it, partial matches would wait forever)".into(),
            )
        }
        None => None,
    };
    // What is bounded by the pattern, and what needs the user's bound.
    let needs_bound = if binds.read != 0 {
        Some("a condition reads an earlier step's values, so partial matches that differ in them have different futures and each must be kept: their number grows with the events inside `within`")
    } else if policy == AfterMatch::SkipToNext {
        Some("`skip_to_next` fires once per start event, so a partial match is kept for every start event inside `within`: their number grows with the traffic")
    } else {
        None
    };
    if policy == AfterMatch::NoSkip && absence.is_some() {
        let at_key = c.spec.after_match.as_ref().map_or(c.start, |p| p.span().start);
        c.errors.at(
            at_key,
            "`after_match = \"no_skip\"` with an absence would keep one wait per completed match until its deadline, a number that grows with the traffic: use `skip_past_last_event` (one wait, the earliest) or `skip_to_next` with `max_partials`",
        );
        return None;
    }
    let by_pattern = 3 * automaton.nodes.len() + 2;
    let capacity = match (needs_bound, max_partials) {
        (Some(why), None) => {
            c.errors.at(
                c.start,
                format!("pattern rule needs `max_partials`: {why}; set `max_partials = N` (1 to {MAX_PARTIALS_LIMIT}), the most kept per instrument (the oldest is dropped and counted)"),
            );
            return None;
        }
        (Some(_), Some((n, _))) => n,
        (None, Some((n, offset))) if n < by_pattern => {
            c.errors.at(
                offset,
                format!("this pattern keeps up to {by_pattern} partial matches per instrument (its bound by construction): `max_partials` = {n} is below it; leave it out"),
            );
            return None;
        }
        (None, _) => by_pattern,
    };
    // Report each step's time and value; conditions' reads come first.
    let mut steps: Vec<StepInfo> = names
        .iter()
        .map(|n| StepInfo {
            at_name: Cow::Owned(format!("{n}.at_ms")),
            values: Vec::new(),
        })
        .collect();
    for (i, k) in kinds.iter().enumerate() {
        let field = if k.contains(TickKind::Trade) || *k == KindMask::NONE {
            Field::Price
        } else if k.contains(TickKind::Mark) {
            Field::Mark
        } else if k.contains(TickKind::Index) {
            Field::Index
        } else {
            Field::Mid
        };
        let _ = binds.index(i, field);
    }
    for (idx, &(step, field)) in binds.table.iter().enumerate() {
        if let Some(info) = steps.get_mut(step) {
            info.values.push((
                Cow::Owned(format!("{}.{}", names[step], field.name())),
                field,
                idx as u8,
            ));
        }
    }
    let mut triggers = KindMask::NONE;
    let mut watches_alerts = false;
    for e in &events {
        match e {
            Event::Tick(expr) => triggers = triggers.union(expr.triggers()),
            Event::Alert(_) => watches_alerts = true,
        }
    }
    let fan_out = automaton.fan_out();
    Some(RuleLogic::Pattern(Pattern {
        text: text.get_ref().as_str().into(),
        events,
        bound_events,
        nodes: automaton.nodes,
        starts: automaton.starts,
        steps,
        absence,
        within_ns,
        policy,
        read_mask: binds.read,
        capacity,
        fan_out,
        triggers,
        watches_alerts,
    }))
}

/// Compiles one event of step `step` (the absence is step `names.len()`);
/// also says whether its condition reads earlier steps.
fn event(
    c: &mut KindCompiler<'_>,
    ast: &EventAst,
    at: &impl Fn(usize) -> usize,
    names: &[String],
    step: usize,
    binds: &mut Binds,
) -> Option<(Event, bool)> {
    match ast {
        EventAst::Tick { expr, column } => {
            let mut reads = false;
            let mut binder = |name: &str, field: &str| -> Result<u8, String> {
                let Some(j) = names.iter().position(|n| n == name) else {
                    return Err(format!(
                        "unknown step `{name}`: a condition may read the steps before it by name ({})",
                        if step == 0 {
                            "this is the first step".to_string()
                        } else {
                            names[..step].join(", ")
                        }
                    ));
                };
                if j >= step {
                    return Err(format!(
                        "`{name}` is this step or a later one: a condition may read only the steps before it"
                    ));
                }
                let Some(f) = Field::from_name(field) else {
                    return Err(format!(
                        "unknown field `{field}` of step `{name}` (known: price, size, notional, bid, ask, mid, spread, mark, index)"
                    ));
                };
                let Some(i) = binds.index(j, f) else {
                    return Err(format!("a pattern may read at most {MAX_BOUND} step values"));
                };
                binds.read |= 1 << i;
                reads = true;
                Ok(i)
            };
            match c.expression(expr, Some(&mut binder)) {
                Ok(e) => Some((Event::Tick(Box::new(e)), reads)),
                Err(e) => {
                    c.errors
                        .at(at(column + e.column - 1), format!("in `pattern`: {}", e.message));
                    None
                }
            }
        }
        EventAst::Alert(a) => {
            let mut m = AlertMatch {
                rule: a.rule.as_ref().map(|(id, _)| Arc::from(id.as_str())),
                kinds: RAISING,
                severity: None,
            };
            if let Some((name, column)) = &a.kind {
                match AlertKind::from_name(name) {
                    Some(k) => m.kinds = kind_bit(k),
                    None => {
                        c.errors.at(
                            at(*column),
                            format!(
                                "in `pattern`: unknown alert kind `{name}`: use fired, resolved, tripped, resumed, rearmed, limit or paused"
                            ),
                        );
                        return None;
                    }
                }
            }
            if let Some((name, min, column)) = &a.severity {
                match Severity::from_name(name) {
                    Some(s) => m.severity = Some((s, *min)),
                    None => {
                        c.errors.at(
                            at(*column),
                            format!("in `pattern`: unknown severity `{name}`: use {}", Severity::NAMES),
                        );
                        return None;
                    }
                }
            }
            Some((Event::Alert(m), false))
        }
    }
}
