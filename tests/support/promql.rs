//! The metric names a PromQL expression reads, and whether a `/metrics`
//! page exposes them: enough PromQL to check dashboards and alerting rules
//! against the server, not a parser.
//!
//! An expression is reduced to its bare identifiers: string literals,
//! label matchers (`{...}`), range and subquery brackets (`[...]`), label
//! lists after `by`, `without`, `on`, `ignoring`, `group_left` and
//! `group_right`, Grafana variables (`$instance`, `$__rate_interval`),
//! numbers and durations are dropped; an identifier followed by `(` is a
//! function, and keywords and aggregation operators are not metrics. What
//! is left are the metric names.
//!
//! [`parsed_names`] reads the same names from the syntax tree of
//! `promql-parser`, which also proves the expression is valid PromQL; the
//! two must agree.

use std::collections::{BTreeMap, BTreeSet};

/// Operators and keywords that look like identifiers.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// Keywords followed by a parenthesised list of label names.
const LABEL_LISTS: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];

/// The metric names `expr` reads, in order of appearance, each once.
pub fn metric_names(expr: &str) -> Vec<String> {
    let stripped = strip(expr);
    let chars: Vec<char> = stripped.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '$' {
            // A Grafana variable outside brackets: skip its name.
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            continue;
        }
        if c.is_ascii_digit() || c == '.' {
            // A number or a duration (5m, 1e3, 0x1f).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':') {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let mut next = i;
        while next < chars.len() && chars[next].is_whitespace() {
            next += 1;
        }
        let lower = word.to_ascii_lowercase();
        if LABEL_LISTS.contains(&lower.as_str()) && chars.get(next) == Some(&'(') {
            // Skip the label list.
            while next < chars.len() && chars[next] != ')' {
                next += 1;
            }
            i = next + 1;
            continue;
        }
        if chars.get(next) == Some(&'(') || KEYWORDS.contains(&lower.as_str()) {
            continue;
        }
        if !names.contains(&word) {
            names.push(word);
        }
    }
    names
}

/// `expr` without string literals, `{...}` and `[...]`, each replaced by
/// a space.
fn strip(expr: &str) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                while let Some(d) = chars.next() {
                    if d == '\\' && c != '`' {
                        chars.next();
                    } else if d == c {
                        break;
                    }
                }
                out.push(' ');
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                // Label values are strings: skip them whole, braces and
                // all.
                while let Some(d) = chars.next() {
                    if d == '"' {
                        while let Some(e) = chars.next() {
                            if e == '\\' {
                                chars.next();
                            } else if e == '"' {
                                break;
                            }
                        }
                    } else if d == close {
                        break;
                    }
                }
                out.push(' ');
            }
            '#' => {
                // A comment runs to the end of the line.
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    out
}

/// Grafana's interval variables, as the durations a query may take.
const GRAFANA_INTERVALS: &[(&str, &str)] = &[("$__rate_interval", "1m"), ("$__interval", "30s"), ("$__range", "1h")];

/// The metric names of `expr` from its syntax tree, each once, sorted;
/// Grafana interval variables count as durations.
///
/// # Errors
/// The expression is not valid PromQL: the parser's message.
pub fn parsed_names(expr: &str) -> Result<BTreeSet<String>, String> {
    use promql_parser::parser::{self, Expr};
    fn walk(expr: &Expr, out: &mut BTreeSet<String>) {
        match expr {
            Expr::Aggregate(a) => {
                walk(&a.expr, out);
                if let Some(param) = &a.param {
                    walk(param, out);
                }
            }
            Expr::Unary(u) => walk(&u.expr, out),
            Expr::Binary(b) => {
                walk(&b.lhs, out);
                walk(&b.rhs, out);
            }
            Expr::Paren(p) => walk(&p.expr, out),
            Expr::Subquery(s) => walk(&s.expr, out),
            Expr::VectorSelector(v) => out.extend(v.name.clone()),
            Expr::MatrixSelector(m) => out.extend(m.vs.name.clone()),
            Expr::Call(c) => c.args.args.iter().for_each(|arg| walk(arg, out)),
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }
    let mut text = expr.to_string();
    for (variable, duration) in GRAFANA_INTERVALS {
        text = text.replace(variable, duration);
    }
    let tree = parser::parse(&text)?;
    let mut names = BTreeSet::new();
    walk(&tree, &mut names);
    Ok(names)
}

/// What a `/metrics` page exposes: every family with its `# TYPE`, and
/// every sample's name.
#[derive(Debug, Default)]
pub struct Exposition {
    pub families: BTreeMap<String, String>,
    pub samples: BTreeSet<String>,
}

impl Exposition {
    pub fn parse(text: &str) -> Exposition {
        let mut exposition = Exposition::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                    exposition.families.insert(name.to_string(), kind.to_string());
                }
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                let end = line.find(['{', ' ']).unwrap_or(line.len());
                exposition.samples.insert(line[..end].to_string());
            }
        }
        exposition
    }

    /// Whether `name` can be queried: a sample written, a family declared
    /// (one whose labelled series appear only once configured, such as a
    /// Kafka sink's), or a `_sum`/`_count` of a summary or histogram, or
    /// a `_bucket` of a histogram.
    pub fn has(&self, name: &str) -> bool {
        if self.samples.contains(name) || self.families.contains_key(name) {
            return true;
        }
        let suffixed = |suffix: &str, kinds: &[&str]| {
            name.strip_suffix(suffix)
                .and_then(|family| self.families.get(family))
                .is_some_and(|kind| kinds.contains(&kind.as_str()))
        };
        suffixed("_sum", &["summary", "histogram"])
            || suffixed("_count", &["summary", "histogram"])
            || suffixed("_bucket", &["histogram"])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "\
# HELP airbag_ticks_received_total Ticks.
# TYPE airbag_ticks_received_total counter
airbag_ticks_received_total 10
# TYPE airbag_tick_to_alert_seconds summary
airbag_tick_to_alert_seconds{quantile=\"0.5\"} 0.0003
airbag_tick_to_alert_seconds_sum 0.001
airbag_tick_to_alert_seconds_count 4
# TYPE airbag_kafka_sink_lag_alerts gauge
";

    #[test]
    fn names_come_without_functions_labels_ranges_or_variables() {
        let expr = r#"sum by (instance, reason) (rate(airbag_ticks_rejected_total{instance=~"$instance", reason!="late"}[$__rate_interval]))
            / ignoring (reason) group_left sum without (job) (increase(airbag_ticks_received_total[5m] offset 1h)) > 0.05
            and on (instance) time() - airbag_checkpoint_last_success_timestamp_seconds > 300"#;
        assert_eq!(
            metric_names(expr),
            [
                "airbag_ticks_rejected_total",
                "airbag_ticks_received_total",
                "airbag_checkpoint_last_success_timestamp_seconds"
            ]
        );
    }

    #[test]
    fn quantile_labels_topk_and_braces_in_label_values_are_not_names() {
        let expr =
            r#"topk(10, max by (rule) (airbag_tick_to_alert_seconds{quantile="0.99", x="a}b"})) * on() vector(1)"#;
        assert_eq!(metric_names(expr), ["airbag_tick_to_alert_seconds"]);
        assert_eq!(metric_names("up{job=\"airbag\"} == 0"), ["up"]);
        assert_eq!(
            metric_names("histogram_quantile(0.99, sum by (le) (rate(x_bucket[1m])))"),
            ["x_bucket"]
        );
    }

    #[test]
    fn a_renamed_metric_is_missing() {
        let page = Exposition::parse(PAGE);
        let expr = r#"rate(airbag_tick_to_alert_seconds_sum[5m]) / rate(airbag_tick_to_alert_seconds_count[5m])
            + sum(rate(airbag_ticks_recieved_total{instance=~"$instance"}[$__rate_interval]))"#;
        let missing: Vec<String> = metric_names(expr).into_iter().filter(|n| !page.has(n)).collect();
        assert_eq!(missing, ["airbag_ticks_recieved_total"]);
    }

    #[test]
    fn the_syntax_tree_agrees_and_refuses_broken_promql() {
        let expr = r#"sum by (reason) (rate(airbag_ticks_rejected_total{instance=~"$instance"}[$__rate_interval]))
            / on () group_left topk(3, airbag_instruments) > bool 0 unless time() - airbag_rules offset 5m"#;
        let parsed = parsed_names(expr).unwrap();
        assert_eq!(parsed, metric_names(expr).into_iter().collect::<BTreeSet<_>>());
        assert_eq!(parsed.len(), 3);
        assert!(parsed_names("sum(rate(airbag_ticks_received_total[5m])").is_err());
        assert!(parsed_names("airbag_alerts_total{rule=\"x\"").is_err());
    }

    #[test]
    fn suffixes_count_only_for_the_family_kinds_that_have_them() {
        let page = Exposition::parse(PAGE);
        assert!(page.has("airbag_ticks_received_total"));
        assert!(page.has("airbag_tick_to_alert_seconds"));
        assert!(page.has("airbag_tick_to_alert_seconds_count"));
        // Declared, no series yet (no sink configured).
        assert!(page.has("airbag_kafka_sink_lag_alerts"));
        // A summary has no buckets; a counter has no _sum.
        assert!(!page.has("airbag_tick_to_alert_seconds_bucket"));
        assert!(!page.has("airbag_ticks_received_total_sum"));
        assert!(!page.has("airbag_tick_to_alert"));
    }
}
