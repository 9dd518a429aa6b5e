//! Bounded state: a million start events on one instrument, inside one
//! long `within`, leave its pattern state the size it had after the first
//! few (Flink's report: 21.6 million partial matches for one key).

#[path = "support/patterns.rs"]
mod support;

use airbag::rules::kinds::pattern;
use support::*;

fn bytes(e: &airbag::Engine) -> usize {
    e.with_partition("BTC-USDT", |p| {
        p.rules.iter().filter_map(|b| pattern::state_bytes(&b.state)).sum()
    })
    .expect("partition")
}

#[test]
fn a_million_start_events_keep_the_state_flat() {
    let r = rule("tick(price == 1) -> tick(price == 2) -> tick(price == 3) within 1d", "");
    let e = engine(&r);
    let mut f = Feed::new(&e);
    f.at(0, "1");
    let first = bytes(&e);
    for k in 1..1_000_000i64 {
        f.at(k, "1");
    }
    let after = bytes(&e);
    eprintln!("pattern state of one instrument: {first} bytes after 1 start event, {after} after 1,000,000");
    assert_eq!(first, after, "state grew with the traffic");
    // And it still matches: the latest start completes.
    f.at(1_000_000, "2").at(1_000_001, "3");
    assert_eq!(f.fired(), vec![(1_000_001, 2)]);
}
