//! Flapping: a price that crosses a band's edge back and forth, or a
//! condition that turns true and false tick by tick, is one episode when
//! the rule says `clear_for`: one `limit` (or `fired`) and one `resolved`,
//! not one pair per crossing.

use airbag::model::{Alert, AlertKind, Fixed, TickValues};
use airbag::service::rulebook::compile_texts;
use airbag::{Engine, EngineConfig};

const S: i64 = 1_000_000_000;
const MS: i64 = 1_000_000;

fn engine(rules: &str) -> Engine {
    Engine::new(
        EngineConfig::default(),
        compile_texts(&[("r.toml".to_string(), rules.to_string())]).expect("rules"),
    )
}

struct Feed<'a> {
    engine: &'a Engine,
    seq: u64,
    alerts: Vec<Alert>,
}

impl<'a> Feed<'a> {
    fn new(engine: &'a Engine) -> Self {
        Feed {
            engine,
            seq: 0,
            alerts: Vec::new(),
        }
    }

    fn trade(&mut self, t: i64, price: &str) {
        self.seq += 1;
        let values = TickValues::Trade {
            price: Fixed::parse(price).unwrap(),
            size: Fixed::ONE,
            side: None,
        };
        self.engine
            .ingest("BTC-USDT", t, self.seq, values, t, &mut self.alerts)
            .unwrap();
    }

    fn timers(&mut self, now: i64) {
        self.engine.check_timers(now, &mut self.alerts);
    }

    /// A calm minute at 100, one tick a second (seconds 1 to 60).
    fn calm_minute(&mut self) {
        for k in 1..=60 {
            self.trade(k * S, "100");
        }
    }

    /// From second 61, `seconds` of a price that alternates between 90 (at
    /// or past a 5% band's lower edge) on whole seconds and 97 (inside) on
    /// half seconds; returns when the last tick (at 97) was sent.
    fn flap(&mut self, seconds: i64) -> i64 {
        let mut last = 0;
        for k in 0..seconds {
            let t = (61 + k) * S;
            self.trade(t, "90");
            self.trade(t + 500 * MS, "97");
            last = t + 500 * MS;
        }
        last
    }

    fn kinds(&self) -> Vec<(AlertKind, i64)> {
        self.alerts.iter().map(|a| (a.kind, a.event_time_ns)).collect()
    }

    /// The alerts of one rule, as (kind, event time).
    fn of(&self, rule: &str) -> Vec<(AlertKind, i64)> {
        self.alerts
            .iter()
            .filter(|a| &*a.rule_id == rule)
            .map(|a| (a.kind, a.event_time_ns))
            .collect()
    }
}

fn band(clear_for: Option<&str>) -> String {
    let clear = clear_for.map_or(String::new(), |c| format!("clear_for = \"{c}\"\n"));
    format!(
        r#"
[[rule]]
id = "band"
kind = "price_band"
reference_window = "5m"
band = "5%"
limit_for = "15s"
pause = "1m"
{clear}"#
    )
}

#[test]
fn without_clear_for_every_crossing_is_an_alert_pair() {
    let e = engine(&band(None));
    let mut feed = Feed::new(&e);
    feed.calm_minute();
    feed.flap(10);
    let limits = feed.kinds().iter().filter(|(k, _)| *k == AlertKind::Limit).count();
    let resolved = feed.kinds().iter().filter(|(k, _)| *k == AlertKind::Resolved).count();
    assert_eq!((limits, resolved), (10, 10), "{:?}", feed.kinds());
}

#[test]
fn with_clear_for_a_flapping_price_is_one_episode_resolved_by_timer() {
    let e = engine(&band(Some("5s")));
    let mut feed = Feed::new(&e);
    feed.calm_minute();
    let last_inside = feed.flap(10);
    assert_eq!(feed.kinds(), vec![(AlertKind::Limit, 61 * S)]);
    // No tick after the last one inside: the timer resolves the episode
    // exactly `clear_for` after the price came back, not a moment before.
    feed.timers(last_inside + 5 * S - 1);
    assert_eq!(feed.kinds().len(), 1, "{:?}", feed.kinds());
    feed.timers(last_inside + 5 * S);
    assert_eq!(
        feed.kinds(),
        vec![(AlertKind::Limit, 61 * S), (AlertKind::Resolved, last_inside + 5 * S)]
    );
    assert!(feed.alerts[1].actions.is_empty(), "a resolution acts on nothing");
}

#[test]
fn a_tick_inside_after_clear_for_resolves_at_that_tick() {
    let e = engine(&band(Some("5s")));
    let mut feed = Feed::new(&e);
    feed.calm_minute();
    let last_inside = feed.flap(3);
    feed.trade(last_inside + 2 * S, "99");
    assert_eq!(feed.kinds().len(), 1, "still clearing: {:?}", feed.kinds());
    feed.trade(last_inside + 7 * S, "99");
    // The deadline passed before this tick arrived: the tick's own timer
    // check resolves it at the deadline.
    assert_eq!(
        feed.kinds(),
        vec![(AlertKind::Limit, 61 * S), (AlertKind::Resolved, last_inside + 5 * S)]
    );
}

#[test]
fn a_price_still_flapping_after_limit_for_pauses_when_it_is_outside_again() {
    let e = engine(&band(Some("5s")));
    let mut feed = Feed::new(&e);
    feed.calm_minute();
    // 61 + 15 = 76: the limit state has lasted `limit_for`. At 75.5 the
    // price was inside (clearing), so the pause waits for the next price
    // outside, at 76.
    feed.flap(20);
    let kinds = feed.kinds();
    assert_eq!(kinds[0], (AlertKind::Limit, 61 * S));
    assert_eq!(kinds[1], (AlertKind::Paused, 76 * S), "{kinds:?}");
    assert_eq!(kinds.len(), 2, "{kinds:?}");
}

#[test]
fn clearing_when_limit_for_ends_does_not_pause() {
    let e = engine(&band(Some("5s")));
    let mut feed = Feed::new(&e);
    feed.calm_minute();
    feed.trade(61 * S, "90");
    feed.trade(74 * S, "98");
    feed.timers(76 * S);
    assert_eq!(feed.kinds(), vec![(AlertKind::Limit, 61 * S)]);
    feed.timers(79 * S);
    assert_eq!(
        feed.kinds(),
        vec![(AlertKind::Limit, 61 * S), (AlertKind::Resolved, 79 * S)]
    );
}

const CONDITION: &str = r#"
[[rule]]
id = "below-95"
when = "price < 95"
clear_for = "3s"

[[rule]]
id = "dd"
kind = "drawdown"
window = "3s"
threshold = "5%"
clear_for = "3s"
"#;

#[test]
fn condition_rules_resolve_once_clear_for_has_passed() {
    let e = engine(CONDITION);
    let mut feed = Feed::new(&e);
    feed.trade(60 * S, "100");
    let last_inside = feed.flap(4);
    assert_eq!(feed.of("below-95"), vec![(AlertKind::Fired, 61 * S)]);
    assert_eq!(feed.of("dd"), vec![(AlertKind::Fired, 61 * S)]);
    feed.timers(last_inside + 3 * S);
    assert_eq!(
        feed.of("below-95"),
        vec![(AlertKind::Fired, 61 * S), (AlertKind::Resolved, last_inside + 3 * S)]
    );
    // The drawdown from the window's peak is 7% or more at every 90 and
    // none at every 97: the same flapping, the same single episode.
    assert_eq!(
        feed.of("dd"),
        vec![(AlertKind::Fired, 61 * S), (AlertKind::Resolved, last_inside + 3 * S)]
    );
}

#[test]
fn true_again_while_clearing_keeps_the_episode_open() {
    let e = engine(CONDITION);
    let mut feed = Feed::new(&e);
    feed.trade(S, "100");
    feed.trade(2 * S, "90");
    feed.trade(3 * S, "99");
    feed.trade(5 * S, "90");
    feed.timers(7 * S);
    feed.trade(8 * S, "99");
    feed.timers(11 * S - 1);
    assert_eq!(feed.of("below-95"), vec![(AlertKind::Fired, 2 * S)]);
    feed.timers(11 * S);
    assert_eq!(
        feed.of("below-95"),
        vec![(AlertKind::Fired, 2 * S), (AlertKind::Resolved, 11 * S)]
    );
}

#[test]
fn clear_for_is_refused_where_it_does_not_apply_and_when_malformed() {
    let breaker = r#"
[[rule]]
id = "cb"
kind = "circuit_breaker"
reference_window = "90s"
tiers = [{ move = "3%", halt = "60s" }]
clear_for = "5s"
"#;
    let errors = compile_texts(&[("cb.toml".into(), breaker.into())]).expect_err("refused");
    let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert!(
        text.iter()
            .any(|e| e.starts_with("cb.toml:7:") && e.contains("`clear_for` does not apply to kind `circuit_breaker`")),
        "{text:?}"
    );

    let malformed = "[[rule]]\nid = \"x\"\nwhen = \"price < 95\"\nclear_for = \"soon\"\n";
    let errors = compile_texts(&[("x.toml".into(), malformed.into())]).expect_err("refused");
    let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(text.len(), 1, "{text:?}");
    assert!(
        text[0].starts_with("x.toml:4:") && text[0].contains("clear_for"),
        "{text:?}"
    );
}
