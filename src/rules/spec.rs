//! The rule file format, as serde types that remember where each value was
//! written so that errors can point at it.
//!
//! A file holds one or more `[[rule]]` tables; `rules/README.md` documents
//! every key. Unknown keys are errors. Whether a key applies to the rule's
//! kind is checked when the rule is compiled.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// One rule file: rules, and reference data (instruments and groups).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFileSpec {
    #[serde(default)]
    pub rule: Vec<Spanned<RuleSpec>>,
    #[serde(default)]
    pub instrument: Vec<Spanned<crate::refdata::spec::InstrumentSpec>>,
    #[serde(default)]
    pub group: Vec<Spanned<crate::refdata::spec::GroupSpec>>,
}

/// One value or a list of them.
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn values(&self) -> Vec<String> {
        match self {
            OneOrMany::One(v) => vec![v.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// A rule's `select` table: instruments chosen by their reference data.
/// Every key given must match; within a key, any value.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectSpec {
    pub underlying: Option<OneOrMany>,
    pub product: Option<OneOrMany>,
    pub quote: Option<OneOrMany>,
    /// Label name -> accepted values.
    #[serde(default)]
    pub labels: BTreeMap<String, OneOrMany>,
}

/// A number written as a TOML integer, float or string. Floats are taken by
/// their shortest decimal form (`0.1` is exactly 0.1).
#[derive(Debug, Deserialize, Clone, PartialEq)]
#[serde(untagged)]
pub enum NumberSpec {
    Int(i64),
    Float(f64),
    Text(String),
}

impl NumberSpec {
    pub fn as_text(&self) -> String {
        match self {
            NumberSpec::Int(v) => v.to_string(),
            NumberSpec::Float(v) => v.to_string(),
            NumberSpec::Text(v) => v.clone(),
        }
    }
}

/// One `[[rule]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    pub id: Spanned<String>,
    /// A named kind (`drawdown`, `circuit_breaker`, ...); or give `when`.
    pub kind: Option<Spanned<String>>,
    /// A condition in the expression language.
    pub when: Option<Spanned<String>>,
    pub description: Option<String>,
    /// Symbols or globs (`BTC-*`); absent means every instrument.
    pub instruments: Option<Vec<Spanned<String>>>,
    /// Symbols or globs to leave out.
    pub exclude: Option<Vec<Spanned<String>>>,
    /// Instruments chosen by reference data (with `instruments`, both must
    /// match).
    pub select: Option<Spanned<SelectSpec>>,
    /// Which instruments the rule's alerts act on: `underlying`,
    /// `group:NAME` or `market`; absent, its own instrument.
    pub targets: Option<Spanned<String>>,
    /// Evaluate over a group of instruments (`underlying` or
    /// `group:NAME`) instead of each instrument alone.
    pub group: Option<Spanned<String>>,
    /// In a group rule: members whose newest tick is older than this are
    /// left out of aggregates.
    pub max_age: Option<Spanned<String>>,
    /// In a group rule: members further than this from the median are
    /// left out of aggregates.
    pub outlier: Option<Spanned<String>>,
    pub severity: Option<Spanned<String>>,
    pub actions: Option<Vec<Spanned<String>>>,
    pub cooldown: Option<Spanned<String>>,
    #[serde(rename = "for")]
    pub hold: Option<Spanned<String>>,
    /// A condition that has fired (a band in its limit state) must stay
    /// clear this long before it resolves.
    pub clear_for: Option<Spanned<String>>,
    pub mode: Option<Spanned<String>>,
    pub labels: Option<BTreeMap<String, String>>,

    // Parameters of the named kinds.
    pub field: Option<Spanned<String>>,
    pub window: Option<Spanned<String>>,
    pub threshold: Option<Spanned<String>>,
    pub ticks: Option<Spanned<i64>>,
    pub tick_size: Option<Spanned<NumberSpec>>,
    pub max_spread: Option<Spanned<String>>,
    pub baseline: Option<Spanned<String>>,
    pub factor: Option<Spanned<NumberSpec>>,
    pub after: Option<Spanned<String>>,
    pub reference_window: Option<Spanned<String>>,
    pub reference_price: Option<Spanned<NumberSpec>>,
    pub tiers: Option<Spanned<Vec<Spanned<TierSpec>>>>,
    pub direction: Option<Spanned<String>>,
    pub latch: Option<Spanned<String>>,
    pub band: Option<Spanned<String>>,
    pub limit_for: Option<Spanned<String>>,
    pub pause: Option<Spanned<String>>,
    pub min_missing: Option<Spanned<i64>>,
    /// A pattern (`kind = "pattern"`), in the pattern language.
    pub pattern: Option<Spanned<String>>,
    /// Most partial-match slots a pattern may keep per instrument.
    pub max_partials: Option<Spanned<i64>>,
    /// What a pattern does with its other partial matches after a match.
    pub after_match: Option<Spanned<String>>,

    // Expression rules: named sub-expressions, a trading session, and
    // the halt state (`pause`, `limit_for`, `latch`, `reopen`,
    // `lookback`).
    /// `[rule.let]`: names for sub-expressions of `when`.
    #[serde(rename = "let")]
    pub lets: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    /// `[rule.session]`: trading hours in a time zone.
    pub session: Option<Spanned<crate::rules::calendar::SessionSpec>>,
    /// `resume` or `extend`: what ends a pause.
    pub reopen: Option<Spanned<String>>,
    /// `rolling` or `resume`: whether the windows' max and min restart
    /// after each resume of a halt rule.
    pub lookback: Option<Spanned<String>>,

    /// Tests of this rule, run whenever the rule is loaded.
    #[serde(default, rename = "test")]
    pub tests: Vec<Spanned<RuleTestSpec>>,
}

/// A `[[rule.test]]` table: ticks in, the alerts this rule must raise.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleTestSpec {
    pub name: Option<String>,
    /// The symbol the ticks are for; defaults to the rule's first exact
    /// symbol, or `TEST` when the rule watches every instrument.
    pub instrument: Option<Spanned<String>>,
    /// When the test starts (`at = "0s"`): an RFC 3339 time with an
    /// offset, such as `2026-03-09T09:30:00-04:00`; default
    /// 2023-11-14T22:13:20Z.
    pub start: Option<Spanned<String>>,
    pub ticks: Vec<Spanned<TestTickSpec>>,
    #[serde(default)]
    pub expect: Vec<Spanned<ExpectSpec>>,
}

/// One step of a rule test: a tick at a time offset, an alert of another
/// rule (`alert = "rule-id"`, for patterns that read alerts), or, with no
/// values, only the timers run at that time.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestTickSpec {
    /// Offset from the test's start, e.g. `2s`.
    pub at: Spanned<String>,
    pub price: Option<Spanned<NumberSpec>>,
    pub size: Option<Spanned<NumberSpec>>,
    pub bid: Option<Spanned<NumberSpec>>,
    pub ask: Option<Spanned<NumberSpec>>,
    pub mark: Option<Spanned<NumberSpec>>,
    pub index: Option<Spanned<NumberSpec>>,
    /// An alert of rule `alert` on the test's instrument, at `at`.
    pub alert: Option<Spanned<String>>,
    /// Its kind (default `fired`).
    pub kind: Option<Spanned<String>>,
    /// Its severity (default `warning`).
    pub severity: Option<Spanned<String>>,
}

/// One alert a rule test expects, in order.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectSpec {
    /// `fired`, `resolved`, `tripped`, `resumed`, `rearmed`, `limit`, `paused`.
    pub kind: String,
    /// Offset of the alert's event time from the test's start.
    pub at: Option<String>,
    /// The instrument the alert names (a rule with `targets` raises one
    /// per target).
    pub instrument: Option<String>,
    /// Values the alert must carry, exactly.
    #[serde(default)]
    pub values: std::collections::BTreeMap<String, NumberSpec>,
}

/// One tier of a circuit breaker.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierSpec {
    #[serde(rename = "move")]
    pub min_move: Spanned<String>,
    pub halt: Spanned<String>,
    pub severity: Option<Spanned<String>>,
    pub actions: Option<Vec<Spanned<String>>>,
}

impl RuleSpec {
    /// The kind-specific keys that are present, with where they start: to
    /// reject keys that do not apply to the rule's kind.
    pub fn parameter_keys(&self) -> Vec<(&'static str, usize)> {
        fn at<T>(name: &'static str, v: &Option<Spanned<T>>) -> Option<(&'static str, usize)> {
            v.as_ref().map(|s| (name, s.span().start))
        }
        [
            at("field", &self.field),
            at("window", &self.window),
            at("threshold", &self.threshold),
            at("ticks", &self.ticks),
            at("tick_size", &self.tick_size),
            at("max_spread", &self.max_spread),
            at("baseline", &self.baseline),
            at("factor", &self.factor),
            at("after", &self.after),
            at("reference_window", &self.reference_window),
            at("reference_price", &self.reference_price),
            at("tiers", &self.tiers),
            at("direction", &self.direction),
            at("latch", &self.latch),
            at("band", &self.band),
            at("limit_for", &self.limit_for),
            at("pause", &self.pause),
            at("min_missing", &self.min_missing),
            at("let", &self.lets),
            at("session", &self.session),
            at("reopen", &self.reopen),
            at("lookback", &self.lookback),
            at("pattern", &self.pattern),
            at("max_partials", &self.max_partials),
            at("after_match", &self.after_match),
            at("for", &self.hold),
            at("clear_for", &self.clear_for),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}
