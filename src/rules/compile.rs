//! One rule spec into one [`CompiledRule`], collecting every error.
//!
//! Errors carry the byte offset of the value they are about; [`super::load`]
//! turns offsets into lines and columns.

use std::sync::Arc;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use toml::Spanned;

use crate::model::{Action, Fixed, Fraction, KindMask, Mode, Severity};
use crate::state::{Field, WindowKey, WindowNeeds, WindowSlot};

use super::context::WindowRegistry;
use super::kinds::breaker::{Direction, Reference};
use super::kinds::{Breaker, Condition, FeedGap, Measure, PriceBand, RuleLogic, StaleFeed, Tier};
use super::spec::{NumberSpec, RuleSpec};
use super::units::{parse_duration, parse_fraction};
use super::{expr, CompiledRule, RuleSource, Scope};

/// The longest window a rule may ask for: bounds per-instrument memory.
pub const MAX_WINDOW_NS: i64 = 86_400_000_000_000;
/// Longest rule id, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// The named kinds and the parameters each accepts.
pub const KINDS: &[(&str, &[&str])] = &[
    ("drawdown", &["field", "window", "threshold", "for"]),
    ("rally", &["field", "window", "threshold", "for"]),
    (
        "velocity",
        &["field", "window", "threshold", "ticks", "tick_size", "for"],
    ),
    ("spread", &["max_spread", "for"]),
    ("mark_index_deviation", &["threshold", "for"]),
    ("volume_spike", &["window", "baseline", "factor", "for"]),
    ("stale_feed", &["after"]),
    ("feed_gap", &["min_missing"]),
    (
        "circuit_breaker",
        &[
            "field",
            "reference_window",
            "reference_price",
            "tiers",
            "direction",
            "latch",
        ],
    ),
    (
        "price_band",
        &["field", "reference_window", "band", "limit_for", "pause"],
    ),
];

/// A problem with one value in a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// Byte offset in the file.
    pub offset: usize,
    pub message: String,
}

struct Errors(Vec<SpecError>);

impl Errors {
    fn at(&mut self, offset: usize, message: impl Into<String>) {
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
    let scope = scope(spec, start, &mut errors);

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
        (None, Some(when)) => {
            for (key, at) in spec.parameter_keys() {
                if key != "for" {
                    errors.at(at, format!("`{key}` does not apply to an expression rule (`when`)"));
                }
            }
            match expr::compile(when.get_ref(), registry) {
                Ok(e) => {
                    slots.extend_from_slice(e.slots());
                    (
                        "expression",
                        Some(RuleLogic::Condition(Condition {
                            measure: Measure::Expression(Box::new(e)),
                        })),
                    )
                }
                Err(e) => {
                    errors.at(expression_offset(when, e.column), format!("in `when`: {}", e.message));
                    ("expression", None)
                }
            }
        }
        (Some(kind), None) => match KINDS.iter().find(|(name, _)| name == kind.get_ref()) {
            None => {
                let known: Vec<_> = KINDS.iter().map(|(n, _)| *n).collect();
                errors.at(
                    kind.span().start,
                    format!("unknown kind `{}` (known: {})", kind.get_ref(), known.join(", ")),
                );
                ("", None)
            }
            Some((name, allowed)) => {
                for (key, at) in spec.parameter_keys() {
                    if !allowed.contains(&key) {
                        errors.at(
                            at,
                            format!(
                                "`{key}` does not apply to kind `{name}` (it takes: {})",
                                allowed.join(", ")
                            ),
                        );
                    }
                }
                if matches!(*name, "circuit_breaker" | "price_band") {
                    if let Some(c) = &spec.cooldown {
                        errors.at(
                            c.span().start,
                            format!("`cooldown` does not apply to kind `{name}`: its halts have their own durations"),
                        );
                    }
                }
                let mut kc = KindCompiler {
                    spec,
                    start,
                    registry,
                    errors: &mut errors,
                    slots: &mut slots,
                };
                (*name, kc.compile(name))
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
    let triggers = match &logic {
        RuleLogic::Condition(c) => c.triggers(),
        RuleLogic::Breaker(b) => KindMask::of(b.field.tick_kind()),
        RuleLogic::Band(b) => KindMask::of(b.field.tick_kind()),
        RuleLogic::Stale(_) | RuleLogic::Gap(_) => KindMask::ALL,
    };
    let timed = match &logic {
        RuleLogic::Condition(_) => hold_ns > 0,
        RuleLogic::Gap(_) => false,
        RuleLogic::Breaker(_) | RuleLogic::Band(_) | RuleLogic::Stale(_) => true,
    };
    slots.sort();
    slots.dedup();
    Ok(CompiledRule {
        id: Arc::from(id),
        content_hash,
        kind_name,
        description: spec.description.clone(),
        scope,
        severity,
        actions,
        mode,
        cooldown_ns,
        hold_ns,
        labels: spec.labels.clone().unwrap_or_default(),
        logic,
        slots,
        triggers,
        timed,
        source,
    })
}

/// The file offset of character `column` (1-based) of an expression
/// string. Exact when the TOML string has no escapes (its text is the
/// expression between one or three quote characters on each side);
/// otherwise the start of the string.
fn expression_offset(when: &Spanned<String>, column: usize) -> usize {
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

fn severity(s: &Spanned<String>, errors: &mut Errors) -> Option<Severity> {
    let parsed = Severity::from_name(s.get_ref());
    if parsed.is_none() {
        errors.at(
            s.span().start,
            format!("unknown severity `{}`: use {}", s.get_ref(), Severity::NAMES),
        );
    }
    parsed
}

fn actions(list: &[Spanned<String>], errors: &mut Errors) -> Option<Arc<[Action]>> {
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

fn duration(s: &Spanned<String>, key: &str, zero_ok: bool, errors: &mut Errors) -> Option<i64> {
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
    }
}

struct KindCompiler<'a> {
    spec: &'a RuleSpec,
    start: usize,
    registry: &'a mut WindowRegistry,
    errors: &'a mut Errors,
    slots: &'a mut Vec<WindowSlot>,
}

impl KindCompiler<'_> {
    fn compile(&mut self, kind: &str) -> Option<RuleLogic> {
        match kind {
            "drawdown" | "rally" => {
                let field = self.price_field();
                let window = self.window("window");
                let threshold = self.fraction(&self.spec.threshold, "threshold", kind);
                let drawdown = kind == "drawdown";
                if let (Some(t), true) = (threshold, drawdown) {
                    if t > Fraction::from_raw(100_000_000) {
                        self.errors.at(
                            self.spec.threshold.as_ref().map_or(self.start, |s| s.span().start),
                            "a drawdown `threshold` cannot exceed 100%",
                        );
                    }
                }
                let (field, window, threshold) = (field?, window?, threshold?);
                let slot = self.slot(
                    field,
                    window,
                    if drawdown { WindowNeeds::MAX } else { WindowNeeds::MIN },
                );
                let measure = if drawdown {
                    Measure::Drawdown { field, slot, threshold }
                } else {
                    Measure::Rally { field, slot, threshold }
                };
                Some(RuleLogic::Condition(Condition { measure }))
            }
            "velocity" => {
                let field = self.price_field();
                let window = self.window("window");
                let threshold = self
                    .spec
                    .threshold
                    .as_ref()
                    .and_then(|_| self.fraction(&self.spec.threshold, "threshold", kind));
                let ticks = match (&self.spec.ticks, &self.spec.tick_size) {
                    (None, None) => None,
                    (Some(n), Some(size)) => {
                        let size = self.positive_number(size, "tick_size");
                        if *n.get_ref() <= 0 {
                            self.errors
                                .at(n.span().start, "`ticks` must be a positive whole number");
                        }
                        size.map(|s| (*n.get_ref(), s))
                    }
                    (Some(n), None) => {
                        self.errors
                            .at(n.span().start, "`ticks` needs `tick_size`, the price increment");
                        None
                    }
                    (None, Some(s)) => {
                        self.errors.at(s.span().start, "`tick_size` needs `ticks`");
                        None
                    }
                };
                if self.spec.threshold.is_none() && self.spec.ticks.is_none() {
                    self.errors.at(
                        self.start,
                        "kind `velocity` needs `threshold` (a percentage) or `ticks` with `tick_size`",
                    );
                }
                let (field, window) = (field?, window?);
                let slot = self.slot(field, window, WindowNeeds::MAX.union(WindowNeeds::MIN));
                Some(RuleLogic::Condition(Condition {
                    measure: Measure::Velocity {
                        field,
                        slot,
                        threshold,
                        ticks,
                    },
                }))
            }
            "spread" => {
                let max = self.fraction(&self.spec.max_spread, "max_spread", kind)?;
                Some(RuleLogic::Condition(Condition {
                    measure: Measure::Spread { max },
                }))
            }
            "mark_index_deviation" => {
                let threshold = self.fraction(&self.spec.threshold, "threshold", kind)?;
                Some(RuleLogic::Condition(Condition {
                    measure: Measure::MarkIndex { threshold },
                }))
            }
            "volume_spike" => {
                let short_ns = self.window("window");
                let long_ns = self.window("baseline");
                let factor = self
                    .required(&self.spec.factor, "factor", kind)
                    .and_then(|f| self.positive_number(f, "factor"));
                let (short_ns, long_ns, factor) = (short_ns?, long_ns?, factor?);
                if long_ns <= short_ns {
                    let at = self.spec.baseline.as_ref().map_or(self.start, |s| s.span().start);
                    self.errors.at(at, "`baseline` must be longer than `window`");
                    return None;
                }
                let short = self.slot(Field::Size, short_ns, WindowNeeds::SLOTS);
                let long = self.slot(Field::Size, long_ns, WindowNeeds::SLOTS);
                Some(RuleLogic::Condition(Condition {
                    measure: Measure::VolumeSpike {
                        short,
                        short_ns,
                        long,
                        long_ns,
                        factor,
                    },
                }))
            }
            "stale_feed" => {
                let after = self.required(&self.spec.after, "after", kind)?;
                let after_ns = duration(after, "after", false, self.errors)?;
                Some(RuleLogic::Stale(StaleFeed { after_ns }))
            }
            "feed_gap" => {
                let min_missing = match &self.spec.min_missing {
                    None => 1,
                    Some(n) if *n.get_ref() >= 1 => n.get_ref().unsigned_abs(),
                    Some(n) => {
                        self.errors
                            .at(n.span().start, "`min_missing` must be a whole number of at least 1");
                        return None;
                    }
                };
                Some(RuleLogic::Gap(FeedGap { min_missing }))
            }
            "circuit_breaker" => self.breaker(),
            "price_band" => {
                let field = self.price_field();
                let reference = self.window("reference_window");
                let band = self.fraction(&self.spec.band, "band", kind);
                if let Some(b) = band {
                    if b >= Fraction::from_raw(100_000_000) {
                        self.errors.at(
                            self.spec.band.as_ref().map_or(self.start, |s| s.span().start),
                            "`band` must be below 100%",
                        );
                    }
                }
                let limit_ns = self
                    .required(&self.spec.limit_for, "limit_for", kind)
                    .and_then(|s| duration(s, "limit_for", true, self.errors));
                let pause_ns = self
                    .required(&self.spec.pause, "pause", kind)
                    .and_then(|s| duration(s, "pause", false, self.errors));
                let (field, reference, band, limit_ns, pause_ns) = (field?, reference?, band?, limit_ns?, pause_ns?);
                let reference = self.slot(field, reference, WindowNeeds::SLOTS);
                Some(RuleLogic::Band(PriceBand {
                    field,
                    reference,
                    band,
                    limit_ns,
                    pause_ns,
                }))
            }
            _ => None,
        }
    }

    fn breaker(&mut self) -> Option<RuleLogic> {
        let spec = self.spec;
        let field = self.price_field();
        let reference = match (&spec.reference_window, &spec.reference_price) {
            (Some(_), Some(p)) => {
                self.errors
                    .at(p.span().start, "give `reference_window` or `reference_price`, not both");
                None
            }
            (None, None) => {
                self.errors.at(
                    self.start,
                    "kind `circuit_breaker` needs `reference_window` (a trailing mean) or `reference_price`",
                );
                None
            }
            (Some(_), None) => self.window("reference_window").map(|w| (Some(w), None)),
            (None, Some(p)) => self.positive_number(p, "reference_price").map(|p| (None, Some(p))),
        };
        let direction = match spec.direction.as_ref() {
            None => Some(Direction::Both),
            Some(d) => match d.get_ref().as_str() {
                "down" => Some(Direction::Down),
                "up" => Some(Direction::Up),
                "both" => Some(Direction::Both),
                other => {
                    self.errors.at(
                        d.span().start,
                        format!("unknown direction `{other}`: use `down`, `up` or `both`"),
                    );
                    None
                }
            },
        };
        let latch_daily = match spec.latch.as_ref() {
            None => false,
            Some(l) => match l.get_ref().as_str() {
                "day" => true,
                "none" => false,
                other => {
                    self.errors
                        .at(l.span().start, format!("unknown latch `{other}`: use `day` or `none`"));
                    false
                }
            },
        };
        let default_severity = spec
            .severity
            .as_ref()
            .and_then(|s| Severity::from_name(s.get_ref()))
            .unwrap_or(Severity::Warning);
        let tiers_spec = self.required(&spec.tiers, "tiers", "circuit_breaker")?;
        if tiers_spec.get_ref().is_empty() || tiers_spec.get_ref().len() > 255 {
            self.errors.at(tiers_spec.span().start, "`tiers` needs 1 to 255 tiers");
        }
        let mut tiers = Vec::new();
        let mut previous: Option<Fraction> = None;
        for t in tiers_spec.get_ref() {
            let t = t.get_ref();
            let min_move = match parse_fraction(t.min_move.get_ref()) {
                Ok(f) if f.raw() > 0 => Some(f),
                Ok(_) => {
                    self.errors
                        .at(t.min_move.span().start, "a tier's `move` must be above 0%");
                    None
                }
                Err(e) => {
                    self.errors.at(t.min_move.span().start, format!("tier `move`: {e}"));
                    None
                }
            };
            if let (Some(m), Some(p)) = (min_move, previous) {
                if m <= p {
                    self.errors.at(
                        t.min_move.span().start,
                        format!("tiers must be in increasing order of `move`: {m} follows {p}"),
                    );
                }
            }
            previous = min_move.or(previous);
            let halt_ns = duration(&t.halt, "halt", false, self.errors);
            let severity = t
                .severity
                .as_ref()
                .map_or(Some(default_severity), |s| severity(s, self.errors));
            let actions = t
                .actions
                .as_ref()
                .map_or_else(|| Some(Arc::from([Action::Halt])), |a| actions(a, self.errors));
            if let (Some(min_move), Some(halt_ns), Some(severity), Some(actions)) =
                (min_move, halt_ns, severity, actions)
            {
                tiers.push(Tier {
                    min_move,
                    halt_ns,
                    severity,
                    actions,
                });
            }
        }
        let (field, (window, price), direction) = (field?, reference?, direction?);
        if tiers.len() != tiers_spec.get_ref().len() {
            return None;
        }
        let reference = match (window, price) {
            (Some(w), _) => Reference::Mean(self.slot(field, w, WindowNeeds::SLOTS)),
            (None, Some(p)) => Reference::Fixed(p),
            (None, None) => return None,
        };
        Some(RuleLogic::Breaker(Breaker {
            field,
            reference,
            tiers,
            direction,
            latch_daily,
        }))
    }

    fn required<'s, T>(&mut self, value: &'s Option<T>, key: &str, kind: &str) -> Option<&'s T> {
        if value.is_none() {
            self.errors.at(self.start, format!("kind `{kind}` needs `{key}`"));
        }
        value.as_ref()
    }

    fn price_field(&mut self) -> Option<Field> {
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

    fn window(&mut self, key: &str) -> Option<i64> {
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

    fn fraction(&mut self, value: &Option<Spanned<String>>, key: &str, kind: &str) -> Option<Fraction> {
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

    fn positive_number(&mut self, value: &Spanned<NumberSpec>, key: &str) -> Option<Fixed> {
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

    fn slot(&mut self, field: Field, span_ns: i64, needs: WindowNeeds) -> WindowSlot {
        let slot = self.registry.request(WindowKey { field, span_ns }, needs);
        self.slots.push(slot);
        slot
    }
}
