//! Rule tests: `[[rule.test]]` tables in a rule file, run every time the
//! rule is loaded ([`super::rulebook`]: by `airbag check` and by every
//! reload). A rule whose own test fails is rejected like a syntax error.
//!
//! Each test runs the rule alone in a fresh engine, from a fixed start time,
//! in event time: before each step the timers due by its time run, then its
//! tick (if it has values) goes through the service's batch [`Pipeline`],
//! as a tick from any source does. A step `alert = "rule-id"` is another
//! rule's alert instead, given to the rule under test as the engine gives
//! it alerts raised elsewhere ([`Engine::feed_alert`]): so a pattern over
//! alerts is tested alone, like every rule. The alerts raised must match `expect` in
//! order: same kind, same time when `at` is given, and the listed values
//! exactly.

use std::sync::Arc;

use crate::engine::{Engine, EngineConfig};
use crate::model::{Alert, AlertKind, Fixed, Mode, Severity, TickValues};
use crate::refdata::RefData;
use crate::rules::spec::{NumberSpec, TestTickSpec};
use crate::rules::units::{format_duration, parse_duration};
use crate::rules::{RuleError, RuleSet, RuleTestCase};

use super::Pipeline;

/// Event time tests start at: 2023-11-14T22:13:20Z.
const START_NS: i64 = 1_700_000_000_000_000_000;

/// Runs one rule test.
///
/// # Errors
/// The first mismatch or malformed step, located in the test's file.
pub fn run_test(case: RuleTestCase, refdata: &Arc<RefData>) -> Result<(), RuleError> {
    let RuleTestCase {
        rule,
        windows,
        test,
        offset: at,
        file,
        text,
    } = case;
    let test = &test;
    let name = test.name.clone().unwrap_or_else(|| "unnamed".into());
    let fail = |offset: usize, message: String| {
        let (line, column) = crate::rules::load::line_col(&text, offset);
        RuleError {
            file: file.clone(),
            line,
            column,
            message: format!("test `{name}`: {message}"),
        }
    };
    let instrument = match &test.instrument {
        Some(s) => s.get_ref().clone(),
        None => rule
            .scope
            .patterns
            .iter()
            .find(|p| !p.contains(['*', '?', '[', '{']))
            .cloned()
            .unwrap_or_else(|| "TEST".into()),
    };
    if !rule.scope.matches(&instrument, refdata) {
        let offset = test.instrument.as_ref().map_or(at, |s| s.span().start);
        return Err(fail(
            offset,
            format!("instrument `{instrument}` is not watched by the rule"),
        ));
    }
    let engine = Engine::new(
        EngineConfig {
            max_instruments: 1,
            ..EngineConfig::default()
        },
        RuleSet {
            version: 0,
            rules: vec![Arc::new(rule)],
            windows,
            sources: Vec::new(),
            refdata: refdata.clone(),
        },
    );
    let start_ns = match &test.start {
        None => START_NS,
        Some(s) => start_time(s.get_ref()).map_err(|m| fail(s.span().start, format!("`start`: {m}")))?,
    };
    let after_start = |text: &str, offset_ns: i64| after(start_ns, text, offset_ns);
    let mut alerts: Vec<Alert> = Vec::new();
    let mut pipeline = Pipeline::new();
    for (seq, step) in test.ticks.iter().enumerate() {
        let at = &step.get_ref().at;
        let now = parse_duration(at.get_ref())
            .and_then(|offset_ns| after_start(at.get_ref(), offset_ns))
            .map_err(|e| fail(at.span().start, format!("`at`: {e}")))?;
        engine.check_timers(now, &mut alerts);
        if let Some(alert) = test_alert(step.get_ref(), &instrument, now).map_err(|m| fail(step.span().start, m))? {
            // Only the rule under test's own alerts are recorded: the input
            // alert is the event, as another rule's alert would be.
            engine
                .resolve(&instrument, now)
                .map_err(|e| fail(step.span().start, format!("alert rejected: {e}")))?;
            engine.feed_alert(&alert, now, &mut alerts);
            continue;
        }
        if let Some(values) = tick_values(step.get_ref()).map_err(|m| fail(step.span().start, m))? {
            pipeline.clear();
            pipeline.push(&instrument, now, seq as u64 + 1, Ok(values));
            let mut refused = None;
            pipeline.apply_in_event_time(&engine, &mut alerts, |_, result, _| {
                refused = result.err().map(ToString::to_string);
                true
            });
            if let Some(why) = refused {
                return Err(fail(step.span().start, format!("tick rejected: {why}")));
            }
        }
    }
    for (i, expected) in test.expect.iter().enumerate() {
        let e = expected.get_ref();
        let Some(got) = alerts.get(i) else {
            return Err(fail(
                expected.span().start,
                format!(
                    "expected alert {} `{}`, but only {} raised",
                    i + 1,
                    e.kind,
                    alerts.len()
                ),
            ));
        };
        if got.kind.name() != e.kind {
            return Err(fail(
                expected.span().start,
                format!(
                    "alert {} is `{}`, expected `{}`",
                    i + 1,
                    describe(got, start_ns),
                    e.kind
                ),
            ));
        }
        if let Some(instrument) = &e.instrument {
            if *got.instrument != **instrument {
                return Err(fail(
                    expected.span().start,
                    format!(
                        "alert {} is `{}` on {}, expected on {instrument}",
                        i + 1,
                        describe(got, start_ns),
                        got.instrument
                    ),
                ));
            }
        }
        if let Some(at) = &e.at {
            let at_ns = parse_duration(at)
                .and_then(|offset_ns| after_start(at, offset_ns))
                .map_err(|m| fail(expected.span().start, format!("`at`: {m}")))?;
            if got.event_time_ns != at_ns {
                return Err(fail(
                    expected.span().start,
                    format!("alert {} is `{}`, expected at {at}", i + 1, describe(got, start_ns)),
                ));
            }
        }
        for (name, value) in &e.values {
            let want = number(value).map_err(|m| fail(expected.span().start, format!("value `{name}`: {m}")))?;
            match got.value(name) {
                Some(v) if v == want => {}
                Some(v) => {
                    return Err(fail(
                        expected.span().start,
                        format!("alert {} has {name} = {v}, expected {want}", i + 1),
                    ));
                }
                None => {
                    return Err(fail(
                        expected.span().start,
                        format!("alert {} has no value `{name}`", i + 1),
                    ))
                }
            }
        }
    }
    if alerts.len() > test.expect.len() {
        let extra = &alerts[test.expect.len()];
        return Err(fail(
            at,
            format!(
                "unexpected alert {}: `{}`",
                test.expect.len() + 1,
                describe(extra, start_ns)
            ),
        ));
    }
    Ok(())
}

/// A test's `start`: an RFC 3339 time with an offset.
///
/// # Errors
/// Not such a time, or outside the clock (1677 to 2262).
fn start_time(text: &str) -> Result<i64, String> {
    let t = text.parse::<jiff::Timestamp>().map_err(|e| {
        format!("`{text}` is not an RFC 3339 time with an offset, such as 2026-03-09T09:30:00-04:00: {e}")
    })?;
    i64::try_from(t.as_nanosecond()).map_err(|_| format!("`{text}` is outside the clock (1677 to 2262)"))
}

/// The event time `offset_ns` after `start_ns`, the start of a test.
///
/// # Errors
/// The time is past the end of the clock (year 2262).
fn after(start_ns: i64, text: &str, offset_ns: i64) -> Result<i64, String> {
    start_ns
        .checked_add(offset_ns)
        .ok_or_else(|| format!("`{text}` is too far after the test's start: the clock ends in the year 2262"))
}

fn describe(alert: &Alert, start_ns: i64) -> String {
    format!(
        "{} at {} on {}",
        alert.kind.name(),
        format_duration(alert.event_time_ns - start_ns),
        alert.instrument
    )
}

fn number(value: &NumberSpec) -> Result<Fixed, String> {
    let text = value.as_text();
    Fixed::parse(&text).map_err(|e| format!("`{text}` {e}"))
}

fn field(value: &Option<toml::Spanned<NumberSpec>>, name: &str) -> Result<Option<Fixed>, String> {
    value
        .as_ref()
        .map(|v| number(v.get_ref()).map_err(|e| format!("`{name}`: {e}")))
        .transpose()
}

/// The alert a step gives the rule (`alert = "rule-id"`), if it is one.
fn test_alert(step: &TestTickSpec, instrument: &str, now: i64) -> Result<Option<Alert>, String> {
    let Some(rule) = &step.alert else {
        if step.kind.is_some() || step.severity.is_some() {
            return Err("`kind` and `severity` describe an alert step: add `alert = \"rule-id\"`".into());
        }
        return Ok(None);
    };
    let values = [&step.price, &step.size, &step.bid, &step.ask, &step.mark, &step.index];
    if values.iter().any(|v| v.is_some()) {
        return Err("a step is a tick or an alert (`alert`, `kind`, `severity`), not both".into());
    }
    let kind = match &step.kind {
        None => AlertKind::Fired,
        Some(k) => AlertKind::from_name(k.get_ref()).ok_or_else(|| {
            format!(
                "`kind`: `{}` is not an alert kind (fired, resolved, tripped, resumed, rearmed, limit, paused)",
                k.get_ref()
            )
        })?,
    };
    let severity = match &step.severity {
        None => Severity::Warning,
        Some(s) => Severity::from_name(s.get_ref())
            .ok_or_else(|| format!("`severity`: `{}` is not info, warning or critical", s.get_ref()))?,
    };
    Ok(Some(Alert {
        rule_id: Arc::from(rule.get_ref().as_str()),
        ruleset_version: 0,
        instrument: Arc::from(instrument),
        kind,
        severity,
        actions: Arc::from(Vec::new()),
        mode: Mode::Active,
        values: Vec::new(),
        event_time_ns: now,
        tick_seq: None,
        reason: None,
        trigger_instrument: None,
    }))
}

fn tick_values(step: &TestTickSpec) -> Result<Option<TickValues>, String> {
    let price = field(&step.price, "price")?;
    let size = field(&step.size, "size")?;
    let bid = field(&step.bid, "bid")?;
    let ask = field(&step.ask, "ask")?;
    let mark = field(&step.mark, "mark")?;
    let index = field(&step.index, "index")?;
    Ok(match (price, bid, ask, mark, index) {
        (None, None, None, None, None) => None,
        (Some(price), None, None, None, None) => Some(TickValues::Trade {
            price,
            size: size.unwrap_or(Fixed::ONE),
            side: None,
        }),
        (None, Some(bid), Some(ask), None, None) => Some(TickValues::Quote {
            bid,
            ask,
            bid_size: Fixed::ONE,
            ask_size: Fixed::ONE,
        }),
        (None, None, None, Some(price), None) => Some(TickValues::Mark { price }),
        (None, None, None, None, Some(price)) => Some(TickValues::Index { price }),
        _ => {
            return Err(
                "a step is a trade (`price`, `size`), a quote (`bid` and `ask`), a `mark` or an `index`, \
                        or only `at` to run timers"
                    .into(),
            )
        }
    })
}
