//! One rule spec into one [`CompiledRule`], collecting every error.
//!
//! Errors carry the byte offset of the value they are about; [`super::load`]
//! turns offsets into lines and columns.

use std::sync::Arc;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use toml::Spanned;

use crate::model::{Action, Fixed, Fraction, Mode, Severity};
use crate::state::{Field, WindowKey, WindowNeeds, WindowSlot};

use super::context::WindowRegistry;
use super::kinds;
use super::spec::{NumberSpec, OneOrMany, RuleSpec, SelectSpec};
use super::units::{parse_duration, parse_fraction};
use super::{expr, CompiledRule, GroupRule, GroupScope, RuleSource, Scope, Selector};
use crate::refdata::{Product, Targets};

/// The longest window a rule may ask for: bounds per-instrument memory.
pub const MAX_WINDOW_NS: i64 = 86_400_000_000_000;
/// Longest rule id, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// A problem with one value in a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// Byte offset in the file.
    pub offset: usize,
    pub message: String,
}

pub(crate) struct Errors(Vec<SpecError>);

impl Errors {
    pub(crate) fn at(&mut self, offset: usize, message: impl Into<String>) {
        self.0.push(SpecError {
            offset,
            message: message.into(),
        });
    }
}

/// Compiles one rule. `start` is the offset of its `[[rule]]` table.
///
/// # Errors
/// Every problem found in the rule.
pub fn compile_rule(
    spec: &RuleSpec,
    start: usize,
    registry: &mut WindowRegistry,
    source: RuleSource,
    content_hash: u64,
) -> Result<CompiledRule, Vec<SpecError>> {
    let mut errors = Errors(Vec::new());
    let id = spec.id.get_ref().as_str();
    if id.is_empty() || id.len() > MAX_ID_LEN || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        errors.at(
            spec.id.span().start,
            format!("rule id `{id}` must be 1 to {MAX_ID_LEN} characters of letters, digits, `-`, `_`, `.` or `:`"),
        );
    }

    let severity = spec
        .severity
        .as_ref()
        .map_or(Some(Severity::Warning), |s| severity(s, &mut errors));
    let actions = spec
        .actions
        .as_ref()
        .map_or_else(|| Some(Arc::from(Vec::new())), |a| actions(a, &mut errors));
    let mode = match spec.mode.as_ref() {
        None => Mode::Active,
        Some(m) => match m.get_ref().as_str() {
            "active" => Mode::Active,
            "shadow" => Mode::Shadow,
            other => {
                errors.at(
                    m.span().start,
                    format!("unknown mode `{other}`: use `active` or `shadow`"),
                );
                Mode::Active
            }
        },
    };
    let cooldown_ns = spec
        .cooldown
        .as_ref()
        .and_then(|c| duration(c, "cooldown", true, &mut errors))
        .unwrap_or(0);
    let hold_ns = spec
        .hold
        .as_ref()
        .and_then(|c| duration(c, "for", true, &mut errors))
        .unwrap_or(0);
    let clear_ns = spec
        .clear_for
        .as_ref()
        .and_then(|c| duration(c, "clear_for", true, &mut errors))
        .unwrap_or(0);
    let scope = scope(spec, start, &mut errors);
    let targets = spec.targets.as_ref().and_then(|t| targets(t, &mut errors));
    let group = group_rule(spec, &mut errors);

    let mut slots = Vec::new();
    let (kind_name, logic) = match (&spec.kind, &spec.when) {
        (Some(_), Some(when)) => {
            errors.at(when.span().start, "give either `kind` or `when`, not both");
            ("", None)
        }
        (None, None) => {
            errors.at(
                start,
                "rule needs a `kind` (a named rule kind) or `when` (an expression)",
            );
            ("", None)
        }
        (Some(kind), None) if spec.group.is_some() => {
            errors.at(
                kind.span().start,
                "a group rule (`group`) states its condition with `when`, over its members: `kind` does not apply",
            );
            ("", None)
        }
        (None, Some(when)) => {
            let scope = if group.is_some() {
                expr::ExprScope::Group
            } else {
                expr::ExprScope::Instrument
            };
            let logic = kinds::halt::compile_when(spec, when, registry, scope, &mut errors);
            if let Some(l) = &logic {
                slots.extend_from_slice(kinds::halt::slots_of(l));
            }
            ("expression", logic)
        }
        (Some(kind), None) => match kinds::kind(kind.get_ref()) {
            None => {
                let known: Vec<_> = kinds::KINDS.iter().map(|k| k.name).collect();
                errors.at(
                    kind.span().start,
                    format!("unknown kind `{}` (known: {})", kind.get_ref(), known.join(", ")),
                );
                ("", None)
            }
            Some(entry) => {
                let name = entry.name;
                for (key, at) in spec.parameter_keys() {
                    if !entry.params.contains(&key) {
                        errors.at(
                            at,
                            format!(
                                "`{key}` does not apply to kind `{name}` (it takes: {})",
                                entry.params.join(", ")
                            ),
                        );
                    }
                }
                if entry.own_durations {
                    if let Some(c) = &spec.cooldown {
                        errors.at(
                            c.span().start,
                            format!("`cooldown` does not apply to kind `{name}`: its halts have their own durations"),
                        );
                    }
                }
                let mut kc = KindCompiler {
                    kind: name,
                    spec,
                    start,
                    registry,
                    errors: &mut errors,
                    slots: &mut slots,
                };
                (name, (entry.compile)(&mut kc))
            }
        },
    };

    if !errors.0.is_empty() {
        return Err(errors.0);
    }
    let (Some(severity), Some(actions), Some(logic)) = (severity, actions, logic) else {
        return Err(vec![SpecError {
            offset: start,
            message: "rule could not be compiled".into(),
        }]);
    };
    let triggers = logic.triggers();
    slots.sort();
    slots.dedup();
    let mut rule = CompiledRule {
        id: Arc::from(id),
        content_hash,
        kind_name,
        description: spec.description.clone(),
        scope,
        severity,
        actions,
        mode,
        targets,
        group,
        cooldown_ns,
        hold_ns,
        clear_ns,
        labels: spec.labels.clone().unwrap_or_default(),
        logic,
        slots,
        triggers,
        timed: false,
        source,
    };
    rule.timed = rule.logic.timed(&rule);
    Ok(rule)
}

/// The file offset of character `column` (1-based) of an expression
/// string. Exact when the TOML string has no escapes (its text is the
/// expression between one or three quote characters on each side);
/// otherwise the start of the string.
pub(crate) fn source_offset(when: &Spanned<String>, column: usize) -> usize {
    let span = when.span();
    let text = when.get_ref();
    let quotes = (span.len().saturating_sub(text.len())) / 2;
    if span.len() != text.len() + 2 * quotes || !(quotes == 1 || quotes == 3) {
        return span.start;
    }
    let within = text
        .char_indices()
        .nth(column.saturating_sub(1))
        .map_or(text.len(), |(i, _)| i);
    span.start + quotes + within
}

pub(crate) fn severity(s: &Spanned<String>, errors: &mut Errors) -> Option<Severity> {
    let parsed = Severity::from_name(s.get_ref());
    if parsed.is_none() {
        errors.at(
            s.span().start,
            format!("unknown severity `{}`: use {}", s.get_ref(), Severity::NAMES),
        );
    }
    parsed
}

pub(crate) fn actions(list: &[Spanned<String>], errors: &mut Errors) -> Option<Arc<[Action]>> {
    let mut out = Vec::with_capacity(list.len());
    let mut ok = true;
    for a in list {
        let name = a.get_ref();
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            errors.at(
                a.span().start,
                format!("action `{name}` must be 1 to 64 letters, digits, `_` or `-`"),
            );
            ok = false;
        } else {
            out.push(Action::from_name(name));
        }
    }
    ok.then(|| Arc::from(out))
}

pub(crate) fn duration(s: &Spanned<String>, key: &str, zero_ok: bool, errors: &mut Errors) -> Option<i64> {
    match parse_duration(s.get_ref()) {
        Ok(0) if !zero_ok => {
            errors.at(s.span().start, format!("`{key}` must be longer than zero"));
            None
        }
        Ok(ns) => Some(ns),
        Err(e) => {
            errors.at(s.span().start, format!("`{key}`: {e}"));
            None
        }
    }
}

fn scope(spec: &RuleSpec, start: usize, errors: &mut Errors) -> Scope {
    fn globs(list: &[Spanned<String>], key: &str, errors: &mut Errors) -> (Vec<String>, Option<GlobSet>) {
        let mut builder = GlobSetBuilder::new();
        let mut patterns = Vec::new();
        for p in list {
            let text = p.get_ref();
            if text.is_empty() || text.len() > 64 || text.chars().any(char::is_control) {
                errors.at(
                    p.span().start,
                    format!("`{key}` entry `{text}` must be 1 to 64 printable characters"),
                );
                continue;
            }
            match GlobBuilder::new(text).literal_separator(false).build() {
                Ok(g) => {
                    builder.add(g);
                    patterns.push(text.clone());
                }
                Err(e) => errors.at(
                    p.span().start,
                    format!("`{key}` entry `{text}` is not a valid glob: {}", e.kind()),
                ),
            }
        }
        let set = builder.build().ok();
        (patterns, set)
    }
    let (patterns, include) = match &spec.instruments {
        None => (Vec::new(), None),
        Some(list) => {
            if list.is_empty() {
                errors.at(start, "`instruments` is empty: leave it out to watch every instrument");
            }
            globs(list, "instruments", errors)
        }
    };
    let (exclude_patterns, exclude) = match &spec.exclude {
        None => (Vec::new(), None),
        Some(list) => globs(list, "exclude", errors),
    };
    Scope {
        patterns,
        include,
        exclude_patterns,
        exclude,
        select: spec.select.as_ref().and_then(|s| selector(s, errors)),
    }
}

/// The `select` table: instruments by reference data.
fn selector(spec: &Spanned<SelectSpec>, errors: &mut Errors) -> Option<Selector> {
    let at = spec.span().start;
    let s = spec.get_ref();
    let mut selector = Selector {
        underlying: s.underlying.as_ref().map(OneOrMany::values).unwrap_or_default(),
        quote: s.quote.as_ref().map(OneOrMany::values).unwrap_or_default(),
        labels: s.labels.iter().map(|(k, v)| (k.clone(), v.values())).collect(),
        ..Selector::default()
    };
    for name in s.product.as_ref().map(OneOrMany::values).unwrap_or_default() {
        match Product::from_name(&name) {
            Some(p) => selector.product.push(p),
            None => errors.at(
                at,
                format!("unknown product `{name}` in `select`: use {}", Product::NAMES),
            ),
        }
    }
    if selector == Selector::default() {
        errors.at(
            at,
            "`select` is empty: give `underlying`, `product`, `quote` or `labels`",
        );
        return None;
    }
    Some(selector)
}

/// `group`, with `max_age` and `outlier`.
fn group_rule(spec: &RuleSpec, errors: &mut Errors) -> Option<GroupRule> {
    let Some(group) = &spec.group else {
        for (key, value) in [("max_age", &spec.max_age), ("outlier", &spec.outlier)] {
            if let Some(v) = value {
                errors.at(
                    v.span().start,
                    format!("`{key}` applies to group rules only (`group = \"underlying\"`)"),
                );
            }
        }
        return None;
    };
    let scope = match group.get_ref().as_str() {
        "underlying" => GroupScope::Underlying,
        other => match other.strip_prefix("group:") {
            Some(name) if !name.is_empty() => GroupScope::Named(name.into()),
            _ => {
                errors.at(
                    group.span().start,
                    format!("unknown group `{other}`: use `underlying` or `group:NAME`"),
                );
                return None;
            }
        },
    };
    let max_age_ns = spec
        .max_age
        .as_ref()
        .and_then(|s| duration(s, "max_age", false, errors));
    let outlier = spec.outlier.as_ref().and_then(|s| match parse_fraction(s.get_ref()) {
        Ok(f) if f.raw() > 0 => Some(f),
        Ok(_) => {
            errors.at(s.span().start, "`outlier` must be above 0%");
            None
        }
        Err(e) => {
            errors.at(s.span().start, format!("`outlier`: {e}"));
            None
        }
    });
    Some(GroupRule {
        scope,
        max_age_ns,
        outlier,
    })
}

/// `targets`: `underlying`, `group:NAME` or `market`.
fn targets(spec: &Spanned<String>, errors: &mut Errors) -> Option<Targets> {
    match spec.get_ref().as_str() {
        "underlying" => Some(Targets::Underlying),
        "market" => Some(Targets::Market),
        other => match other.strip_prefix("group:") {
            Some(name) if !name.is_empty() => Some(Targets::Group(name.into())),
            _ => {
                errors.at(
                    spec.span().start,
                    format!("unknown targets `{other}`: use `underlying`, `group:NAME` or `market`"),
                );
                None
            }
        },
    }
}

/// What a kind's compile function works with: the rule's spec, where its
/// table starts, the window registry, and where errors go.
pub(crate) struct KindCompiler<'a> {
    /// The kind's name, as written.
    pub(crate) kind: &'static str,
    pub(crate) spec: &'a RuleSpec,
    /// Offset of the rule's table, for errors about a missing key.
    pub(crate) start: usize,
    registry: &'a mut WindowRegistry,
    pub(crate) errors: &'a mut Errors,
    slots: &'a mut Vec<WindowSlot>,
}

impl KindCompiler<'_> {
    pub(crate) fn required<'s, T>(&mut self, value: &'s Option<T>, key: &str, kind: &str) -> Option<&'s T> {
        if value.is_none() {
            self.errors.at(self.start, format!("kind `{kind}` needs `{key}`"));
        }
        value.as_ref()
    }

    pub(crate) fn price_field(&mut self) -> Option<Field> {
        let Some(f) = &self.spec.field else {
            return Some(Field::Price);
        };
        match Field::from_name(f.get_ref()) {
            Some(field @ (Field::Price | Field::Bid | Field::Ask | Field::Mid | Field::Mark | Field::Index)) => {
                Some(field)
            }
            _ => {
                self.errors.at(
                    f.span().start,
                    format!(
                        "`field` must be a price: price, bid, ask, mid, mark or index (not `{}`)",
                        f.get_ref()
                    ),
                );
                None
            }
        }
    }

    pub(crate) fn window(&mut self, key: &str) -> Option<i64> {
        let value = match key {
            "window" => &self.spec.window,
            "baseline" => &self.spec.baseline,
            _ => &self.spec.reference_window,
        };
        let Some(s) = value else {
            let kind = self.spec.kind.as_ref().map_or("", |k| k.get_ref().as_str());
            self.errors.at(self.start, format!("kind `{kind}` needs `{key}`"));
            return None;
        };
        let ns = duration(s, key, false, self.errors)?;
        if ns > MAX_WINDOW_NS {
            self.errors.at(s.span().start, format!("`{key}` may be at most 1d"));
            return None;
        }
        Some(ns)
    }

    pub(crate) fn fraction(&mut self, value: &Option<Spanned<String>>, key: &str, kind: &str) -> Option<Fraction> {
        let s = self.required(value, key, kind)?;
        match parse_fraction(s.get_ref()) {
            Ok(f) if f.raw() > 0 => Some(f),
            Ok(_) => {
                self.errors.at(s.span().start, format!("`{key}` must be above 0%"));
                None
            }
            Err(e) => {
                self.errors.at(s.span().start, format!("`{key}`: {e}"));
                None
            }
        }
    }

    pub(crate) fn positive_number(&mut self, value: &Spanned<NumberSpec>, key: &str) -> Option<Fixed> {
        let text = value.get_ref().as_text();
        match Fixed::parse(&text) {
            Ok(v) if v.is_positive() => Some(v),
            Ok(_) => {
                self.errors
                    .at(value.span().start, format!("`{key}` must be above zero"));
                None
            }
            Err(e) => {
                self.errors.at(value.span().start, format!("`{key}` `{text}` {e}"));
                None
            }
        }
    }

    /// Compiles an expression the kind evaluates per instrument, asking
    /// for its windows.
    pub(crate) fn expression(
        &mut self,
        text: &str,
        binder: Option<expr::Binder<'_>>,
    ) -> Result<expr::CompiledExpr, expr::ExprError> {
        let e = expr::compile_bound(text, self.registry, expr::ExprScope::Instrument, binder)?;
        self.slots.extend_from_slice(e.slots());
        Ok(e)
    }

    pub(crate) fn slot(&mut self, field: Field, span_ns: i64, needs: WindowNeeds) -> WindowSlot {
        let slot = self.registry.request(WindowKey { field, span_ns }, needs);
        self.slots.push(slot);
        slot
    }
}
