//! The semantics of patterns, construct by construct: each test feeds a
//! hand-written stream (trades whose price names the event: 1 is A, 2 is
//! B, 3 is C, 9 is noise) and checks the exact alerts, as (ms it fired at,
//! `match_ms`). `rules/PATTERNS.md` cites these tests by name.

#[path = "support/patterns.rs"]
mod support;

use support::*;

const A: &str = "tick(price == 1)";
const B: &str = "tick(price == 2)";
const C: &str = "tick(price == 3)";

fn p(pattern: &str) -> String {
    rule(pattern, "")
}

#[test]
fn relaxed_sequence_skips_other_events() {
    let r = p(&format!("{A} -> {B} within 10s"));
    assert_eq!(
        run(&r, &[(1000, "1"), (2000, "9"), (3000, "2")], 60_000),
        vec![(3000, 2000)]
    );
    // B before A is no match.
    assert_eq!(run(&r, &[(1000, "2"), (2000, "1")], 60_000), vec![]);
}

#[test]
fn strict_next_needs_the_very_next_event() {
    let r = p(&format!("{A} => {B} within 10s"));
    assert_eq!(run(&r, &[(1000, "1"), (2000, "9"), (3000, "2")], 60_000), vec![]);
    assert_eq!(run(&r, &[(1000, "1"), (2000, "2")], 60_000), vec![(2000, 1000)]);
    // A A B: the second A is followed at once by B.
    assert_eq!(
        run(&r, &[(1000, "1"), (2000, "1"), (3000, "2")], 60_000),
        vec![(3000, 1000)]
    );
}

#[test]
fn within_is_measured_from_the_first_event() {
    let r = p(&format!("{A} -> {B} -> {C} within 10s"));
    // C comes 5 s after B but 11 s after A: too late.
    assert_eq!(run(&r, &[(0, "1"), (6000, "2"), (11_000, "3")], 60_000), vec![]);
    // Exactly 10 s from A is in time (the bound is inclusive).
    assert_eq!(
        run(&r, &[(20_000, "1"), (21_000, "2"), (30_000, "3")], 60_000),
        vec![(30_000, 10_000)]
    );
    // A later A restarts the clock: A@0 expires, A@8 still completes.
    assert_eq!(
        run(&r, &[(0, "1"), (8000, "1"), (12_000, "2"), (17_000, "3")], 60_000),
        vec![(17_000, 9000)]
    );
}

#[test]
fn exact_count() {
    let r = p(&format!("{A}{{3}} within 10s"));
    assert_eq!(
        run(&r, &[(1000, "1"), (2000, "1"), (2500, "9"), (3000, "1")], 60_000),
        vec![(3000, 2000)]
    );
    // Only two inside 10 s.
    assert_eq!(run(&r, &[(0, "1"), (5000, "1"), (10_001, "1")], 60_000), vec![]);
}

#[test]
fn at_least_and_range_counts() {
    // A{2,} -> B: two or more As, then B (a loop keeps one state).
    let r = p(&format!("{A}{{2,}} -> {B} within 10s"));
    assert_eq!(run(&r, &[(0, "1"), (1000, "2")], 60_000), vec![]);
    assert_eq!(
        run(
            &r,
            &[(0, "1"), (1000, "1"), (2000, "1"), (3000, "1"), (4000, "2")],
            60_000
        ),
        vec![(4000, 2000)],
        "the latest start with two As before B: the A at 2 s"
    );
    assert_eq!(
        run(
            &r,
            &[(0, "1"), (1000, "1"), (2000, "1"), (3000, "1"), (11_000, "2")],
            60_000
        ),
        vec![(11_000, 9000)],
        "the As at 2 s and 3 s; the earlier ones expired"
    );
    // A{2,3} => B: B right after the second or third A (not after a noise).
    let r = p(&format!("{A}{{2,3}} => {B} within 10s"));
    assert_eq!(
        run(&r, &[(0, "1"), (1000, "1"), (2000, "9"), (3000, "2")], 60_000),
        vec![]
    );
    assert_eq!(
        run(&r, &[(0, "1"), (1000, "1"), (2000, "1"), (3000, "2")], 60_000),
        vec![(3000, 2000)]
    );
    // Strict repeats: => A{3} wants three As in a row after C.
    let r = p(&format!("{C} => {A}{{3}} within 10s"));
    assert_eq!(
        run(
            &r,
            &[(0, "3"), (1000, "1"), (2000, "9"), (3000, "1"), (4000, "1")],
            60_000
        ),
        vec![]
    );
    assert_eq!(
        run(&r, &[(0, "3"), (1000, "1"), (2000, "1"), (3000, "1")], 60_000),
        vec![(3000, 3000)]
    );
}

#[test]
fn or_and_groups() {
    let r = p(&format!("({A} or {B}) -> {C} within 10s"));
    assert_eq!(run(&r, &[(0, "2"), (1000, "3")], 60_000), vec![(1000, 1000)]);
    assert_eq!(run(&r, &[(0, "9"), (1000, "3")], 60_000), vec![]);
    // Both A and B, in any order, then C.
    let r = p(&format!("({A} and {B}) -> {C} within 10s"));
    assert_eq!(
        run(&r, &[(0, "2"), (1000, "1"), (2000, "3")], 60_000),
        vec![(2000, 2000)]
    );
    assert_eq!(run(&r, &[(0, "1"), (1000, "1"), (2000, "3")], 60_000), vec![]);
}

#[test]
fn conditions_read_earlier_steps() {
    let r = rule(
        "a = tick(price > 0) -> b = tick(price < a.price * 0.95) within 30s",
        "max_partials = 16",
    );
    let e = engine(&r);
    let mut f = Feed::new(&e);
    f.at(0, "100").at(1000, "98").at(2000, "92");
    // Both a = 100 and a = 98 work with b = 92 (< 95, < 93.1); the latest
    // start is reported, with every step's values.
    assert_eq!(f.fired(), vec![(2000, 1000)]);
    let alert = f.of("p")[0];
    assert_eq!(value(alert, "a.price"), Some(98 * 100_000_000));
    assert_eq!(value(alert, "b.price"), Some(92 * 100_000_000));
    assert_eq!(value(alert, "a.at_ms"), Some(0));
    assert_eq!(value(alert, "b.at_ms"), Some(1000 * 100_000_000));
    // 93.2 is not 5% under 98 but is under 100: the older start matches.
    let e = engine(&r);
    let mut f = Feed::new(&e);
    f.at(0, "100").at(1000, "98").at(2000, "94.9");
    assert_eq!(f.fired(), vec![(2000, 2000)]);
    assert_eq!(value(f.of("p")[0], "a.price"), Some(100 * 100_000_000));
}

#[test]
fn a_condition_on_earlier_steps_needs_an_explicit_bound() {
    let err = load_error(&rule(
        "a = tick(price > 0) -> tick(price < a.price * 0.95) within 30s",
        "",
    ));
    assert!(err.contains("needs `max_partials`"), "{err}");
    assert!(err.contains("grows with the events"), "{err}");
    let err = load_error(&rule(
        "a = tick(price > 0) -> tick(price < b.price) within 30s",
        "max_partials = 8",
    ));
    assert!(err.contains("unknown step `b`"), "{err}");
}

#[test]
fn alerts_of_other_rules_are_events() {
    let rules = format!(
        "[[rule]]\nid = \"hot\"\nwhen = \"price >= 200\"\n\n{}",
        rule(
            "alert('hot'){2} within 10s",
            "severity = \"critical\"\nactions = [\"halt\"]"
        )
    );
    let e = engine(&rules);
    let mut f = Feed::new(&e);
    f.at(0, "200").at(1000, "100").at(2000, "210");
    assert_eq!(f.of("hot").len(), 3, "fired, resolved, fired");
    assert_eq!(f.fired(), vec![(2000, 2000)]);
    let alert = f.of("p")[0];
    assert_eq!(&*alert.actions, &[airbag::model::Action::Halt]);
    // The pattern's alert comes after the alert that completed it.
    let last = f.alerts.last().unwrap();
    assert_eq!(&*last.rule_id, "p");
}

#[test]
fn absence_at_the_end_fires_at_its_deadline() {
    let r = p(&format!("{A} -> not {B} within 5s"));
    // Noise ticks do not end the wait; the tick after the deadline fires
    // it, stamped with the deadline.
    let fired = run(&r, &[(0, "1"), (3000, "9"), (7000, "9")], 7000);
    assert_eq!(fired, vec![(5000, 5000)]);
    // B inside the window (even exactly at the deadline) cancels it.
    assert_eq!(run(&r, &[(0, "1"), (4000, "2")], 60_000), vec![]);
    assert_eq!(run(&r, &[(0, "1"), (5000, "2")], 60_000), vec![]);
    // B after the deadline is too late to cancel.
    assert_eq!(run(&r, &[(0, "1"), (5001, "2")], 60_000), vec![(5000, 5000)]);
}

#[test]
fn absence_fires_on_the_engine_timer_with_an_idle_feed() {
    let r = p(&format!("{A} -> {C} within 10s -> not {B} within 5s"));
    let e = engine(&r);
    let mut f = Feed::new(&e);
    f.at(0, "1").at(2000, "3");
    f.timers(7000);
    assert_eq!(f.fired(), vec![], "the window ends at 7 s inclusive");
    f.timers(7001);
    assert_eq!(f.fired(), vec![(7000, 7000)]);
    assert_eq!(value(f.of("p")[0], "absent_ms"), Some(5000 * 100_000_000));
    assert_eq!(value(f.of("p")[0], "step2.at_ms"), Some(2000 * 100_000_000));
}

#[tokio::test]
async fn absence_fires_on_the_service_clock_with_an_idle_feed() {
    use airbag::alerts::SubscriptionFilter;
    use airbag::clock::ManualClock;
    use airbag::config::ServiceConfig;
    use airbag::service::rulebook::compile_texts;
    use airbag::service::{Core, IngestSession};
    use std::sync::Arc;

    let rules = format!(
        "[[rule]]\nid = \"halt\"\nkind = \"circuit_breaker\"\nreference_price = \"100\"\ntiers = [{{ move = \"5%\", halt = \"1h\" }}]\n\n{}",
        rule(
            "alert('halt', kind = tripped) -> not alert('halt', kind = resumed) within 15m",
            "severity = \"critical\"\nactions = [\"page\"]"
        )
    );
    let clock = Arc::new(ManualClock::new(T0));
    let ruleset = compile_texts(&[("r.toml".into(), rules)]).expect("rules");
    let core = Arc::new(Core::new(ServiceConfig::default(), ruleset, clock.clone()));
    let mut session = IngestSession::new(core.clone());
    session.batch().push("BTC-USDT", T0, 1, Ok(trade("94")));
    assert_eq!(session.apply().applied, 1);
    let tripped = core.bus().last_seq();
    assert_eq!(tripped, 1, "the breaker tripped");
    // Silence: nothing at 15 minutes exactly, the page just after.
    clock.set(T0 + 15 * 60 * S);
    core.run_timers();
    assert_eq!(core.bus().last_seq(), 1);
    clock.set(T0 + 15 * 60 * S + 1);
    core.run_timers();
    assert_eq!(core.bus().last_seq(), 2);
    let mut reader = core.bus().subscribe(SubscriptionFilter::all(), 2).expect("subscribe");
    let page = reader.next_alert().await.unwrap().unwrap().alert.clone();
    assert_eq!(&*page.rule_id, "p");
    assert_eq!(page.event_time_ns, T0 + 15 * 60 * S);
}

/// A A B B, pattern A -> B: the policies differ in what they do after the
/// first match.
const OVERLAP: &[(i64, &str)] = &[(0, "1"), (1000, "1"), (2000, "2"), (3000, "2")];

#[test]
fn overlapping_matches_skip_past_last_event() {
    let r = rule(
        &format!("{A} -> {B} within 10s"),
        "after_match = \"skip_past_last_event\"",
    );
    // One match (the latest-starting one); no event is used twice.
    assert_eq!(run(&r, OVERLAP, 60_000), vec![(2000, 1000)]);
}

#[test]
fn overlapping_matches_no_skip() {
    let r = rule(&format!("{A} -> {B} within 10s"), "after_match = \"no_skip\"");
    // Each completing event fires once.
    assert_eq!(run(&r, OVERLAP, 60_000), vec![(2000, 1000), (3000, 2000)]);
}

#[test]
fn overlapping_matches_skip_to_next() {
    let r = rule(
        &format!("{A} -> {B} within 10s"),
        "after_match = \"skip_to_next\"\nmax_partials = 16",
    );
    // Each A is the start of one match, at the first B after it.
    assert_eq!(run(&r, OVERLAP, 60_000), vec![(2000, 2000), (2000, 1000)]);
}

#[test]
fn overlapping_absences_skip_to_next() {
    let r = rule(
        &format!("{A} -> not {B} within 5s"),
        "after_match = \"skip_to_next\"\nmax_partials = 16",
    );
    // Two As, no B: each waits out its own window.
    assert_eq!(
        run(&r, &[(0, "1"), (1000, "1")], 60_000),
        vec![(5000, 5000), (6000, 5000)]
    );
    // Under the default one wait runs, and its match takes both As.
    let r = p(&format!("{A} -> not {B} within 5s"));
    assert_eq!(run(&r, &[(0, "1"), (1000, "1")], 60_000), vec![(5000, 5000)]);
}

#[test]
fn unbounded_shapes_are_refused_at_load() {
    let err = load_error(&rule(&format!("{A} -> not {B} within 5s"), "after_match = \"no_skip\""));
    assert!(err.contains("grows with the traffic"), "{err}");
    let err = load_error(&rule(
        &format!("{A} -> {B} within 5s"),
        "after_match = \"skip_to_next\"",
    ));
    assert!(err.contains("needs `max_partials`"), "{err}");
    let err = load_error(&p(&format!("{A} -> {B}")));
    assert!(err.contains("needs `within"), "{err}");
    let err = load_error(&rule(
        &format!("{A} -> {B} within 5s"),
        "after_match = \"skip_to_last\"",
    ));
    assert!(err.contains("Airbag does not offer them"), "{err}");
    let err = load_error(&rule(&format!("{A} -> {B} within 5s"), "max_partials = 2"));
    assert!(err.contains("leave it out"), "{err}");
}

#[test]
fn cooldown_suppresses_matches() {
    let r = rule(&format!("{A} -> {B} within 10s"), "cooldown = \"5s\"");
    assert_eq!(
        run(
            &r,
            &[
                (0, "1"),
                (1000, "2"),
                (2000, "1"),
                (3000, "2"),
                (7000, "1"),
                (8000, "2")
            ],
            60_000
        ),
        vec![(1000, 1000), (8000, 1000)]
    );
}

#[test]
fn late_ticks_within_the_lateness_give_the_ordered_matches() {
    let r = p(&format!("{A} -> {B} -> {C} within 10s -> not {A} within 3s"));
    let ordered: Vec<(i64, &str)> = vec![
        (0, "1"),
        (100, "9"),
        (200, "2"),
        (300, "3"),
        (5000, "1"),
        (5100, "2"),
        (5200, "1"),
        (5300, "3"),
        (9000, "1"),
        (9500, "2"),
        (9700, "3"),
        (20_000, "9"),
    ];
    // Arrival order: within 500 ms of lateness, pairs swapped.
    let mut late = ordered.clone();
    for i in (0..late.len() - 1).step_by(2) {
        if late[i + 1].0 - late[i].0 <= 500 {
            late.swap(i, i + 1);
        }
    }
    assert_ne!(late, ordered);
    let expected = run(&r, &ordered, 60_000);
    assert!(!expected.is_empty());
    let e = engine_with(&r, 500);
    let mut f = Feed::new(&e);
    let mut seqs: Vec<u64> = Vec::new();
    for (i, _) in ordered.iter().enumerate() {
        seqs.push(i as u64 + 1);
    }
    let mut clock = 0;
    for &(ms, price) in &late {
        let i = ordered.iter().position(|o| *o == (ms, price)).unwrap();
        clock = clock.max(ms);
        let t = T0 + ms * MS;
        e.ingest("BTC-USDT", t, seqs[i], trade(price), T0 + clock * MS, &mut f.alerts)
            .unwrap();
    }
    e.flush_held(&mut f.alerts);
    f.timers(60_000);
    assert_eq!(f.fired(), expected);
}

#[test]
fn every_step_reports_its_values() {
    let r = p("a = tick(price > 100) -> b = tick(price < 90) -> tick(price > 95) within 30s");
    let e = engine(&r);
    let mut f = Feed::new(&e);
    f.at(0, "101").at(1000, "89").at(2500, "96");
    let alert = f.of("p")[0];
    let names: Vec<&str> = alert.values.iter().map(|v| &*v.name).collect();
    assert_eq!(
        names,
        vec![
            "match_ms",
            "a.at_ms",
            "a.price",
            "b.at_ms",
            "b.price",
            "step3.at_ms",
            "step3.price"
        ]
    );
    assert_eq!(value(alert, "b.price"), Some(89 * 100_000_000));
    assert_eq!(value(alert, "step3.at_ms"), Some(2500 * 100_000_000));
}
