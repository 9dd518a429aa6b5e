//! The service on a manual clock: ticks go through the same ingest
//! session every transport uses, and time moves only when the test moves
//! it, so timer behaviour (a feed gone silent, a halt ending) is checked
//! at the service level to the nanosecond, without waiting.

use std::sync::Arc;

use airbag::alerts::SubscriptionFilter;
use airbag::clock::{Clock, ManualClock};
use airbag::config::ServiceConfig;
use airbag::model::{AlertKind, Fixed, TickValues};
use airbag::service::rulebook::compile_texts;
use airbag::service::{Core, IngestSession};

const T0: i64 = 1_700_000_000_000_000_000;
const SECOND: i64 = 1_000_000_000;

const RULES: &str = r#"
[[rule]]
id = "silent"
kind = "stale_feed"
after = "10s"

[[rule]]
id = "cb"
kind = "circuit_breaker"
reference_price = "100"
tiers = [{ move = "5%", halt = "30s" }]
"#;

fn trade(price: &str) -> TickValues {
    TickValues::Trade {
        price: Fixed::parse(price).unwrap(),
        size: Fixed::ONE,
        side: None,
    }
}

fn core(clock: &Arc<ManualClock>) -> Arc<Core> {
    let ruleset = compile_texts(&[("r.toml".into(), RULES.into())]).expect("rules");
    Arc::new(Core::new(ServiceConfig::default(), ruleset, clock.clone()))
}

/// Applies one trade of `symbol` through a session, received now.
fn send(session: &mut IngestSession, symbol: &str, event_time_ns: i64, seq: u64, price: &str) {
    session.batch().push(symbol, event_time_ns, seq, Ok(trade(price)));
    let applied = session.apply();
    assert_eq!(applied.applied, 1, "{:?}", session.pipeline().rejections());
}

#[tokio::test]
async fn timers_run_on_the_service_clock() {
    let clock = Arc::new(ManualClock::new(T0));
    let core = core(&clock);
    let mut alerts = core.bus().subscribe(SubscriptionFilter::all(), 0).expect("subscribe");
    let mut session = IngestSession::new(core.clone());

    // A 6% fall trips the breaker; its halt ends 30 s of event time later.
    send(&mut session, "BTC-USDT", T0, 1, "94");
    let tripped = alerts.next_alert().await.unwrap().unwrap();
    assert_eq!(
        (&*tripped.alert.rule_id, tripped.alert.kind),
        ("cb", AlertKind::Tripped)
    );
    assert_eq!(tripped.received_ns, T0, "received at the service clock's time");

    // Nothing is due a nanosecond before the feed has been silent 10 s.
    clock.set(T0 + 10 * SECOND - 1);
    core.run_timers();
    assert_eq!(core.bus().last_seq(), 1, "no timer alert yet");

    // At 10 s the feed is stale, stamped with the moment it became so.
    clock.set(T0 + 10 * SECOND);
    core.run_timers();
    let stale = alerts.next_alert().await.unwrap().unwrap();
    assert_eq!((&*stale.alert.rule_id, stale.alert.kind), ("silent", AlertKind::Fired));
    assert_eq!(stale.alert.event_time_ns, T0 + 10 * SECOND);
    assert_eq!(stale.received_ns, clock.now_ns());

    // The next tick resolves it.
    clock.set(T0 + 12 * SECOND);
    send(&mut session, "BTC-USDT", T0 + 12 * SECOND, 2, "95");
    let resolved = alerts.next_alert().await.unwrap().unwrap();
    assert_eq!(
        (&*resolved.alert.rule_id, resolved.alert.kind),
        ("silent", AlertKind::Resolved)
    );

    // At 30 s two timers are due, run in rule order: the feed silent
    // again since 22 s, and the breaker's halt ending at exactly 30 s.
    clock.set(T0 + 30 * SECOND);
    core.run_timers();
    let stale = alerts.next_alert().await.unwrap().unwrap();
    assert_eq!((&*stale.alert.rule_id, stale.alert.kind), ("silent", AlertKind::Fired));
    assert_eq!(stale.alert.event_time_ns, T0 + 22 * SECOND);
    let resumed = alerts.next_alert().await.unwrap().unwrap();
    assert_eq!(
        (&*resumed.alert.rule_id, resumed.alert.kind),
        ("cb", AlertKind::Resumed)
    );
    assert_eq!(resumed.alert.event_time_ns, T0 + 30 * SECOND);
    assert_eq!(core.bus().last_seq(), 5);
}
