//! A small harness for pattern tests: an engine over one rules text, a
//! feed of trades whose price names the event (1 = A, 2 = B, ...), and the
//! pattern rule's alerts as (event time, match length) pairs.

#![allow(dead_code)]

use airbag::model::{Alert, Fixed, TickValues};
use airbag::service::rulebook::compile_texts;
use airbag::{Engine, EngineConfig};

pub const MS: i64 = 1_000_000;
pub const S: i64 = 1_000 * MS;
/// Event time zero of every stream.
pub const T0: i64 = 1_700_000_000 * S;

pub fn engine_with(rules: &str, lateness_ms: i64) -> Engine {
    Engine::new(
        EngineConfig {
            allowed_lateness_ns: lateness_ms * MS,
            ..EngineConfig::default()
        },
        compile_texts(&[("p.toml".to_string(), rules.to_string())]).expect("rules"),
    )
}

pub fn engine(rules: &str) -> Engine {
    engine_with(rules, 0)
}

/// The load error of `rules`, as text.
pub fn load_error(rules: &str) -> String {
    match compile_texts(&[("p.toml".to_string(), rules.to_string())]) {
        Ok(_) => panic!("rules loaded, expected an error:\n{rules}"),
        Err(e) => format!("{e:?}"),
    }
}

/// A pattern rule `p` with `pattern` and extra keys.
pub fn rule(pattern: &str, extra: &str) -> String {
    format!("[[rule]]\nid = \"p\"\nkind = \"pattern\"\npattern = \"{pattern}\"\n{extra}\n")
}

pub fn trade(price: &str) -> TickValues {
    TickValues::Trade {
        price: Fixed::parse(price).unwrap(),
        size: Fixed::ONE,
        side: None,
    }
}

pub struct Feed<'a> {
    pub engine: &'a Engine,
    pub symbol: &'static str,
    pub seq: u64,
    pub alerts: Vec<Alert>,
}

impl<'a> Feed<'a> {
    pub fn new(engine: &'a Engine) -> Self {
        Feed {
            engine,
            symbol: "BTC-USDT",
            seq: 0,
            alerts: Vec::new(),
        }
    }

    /// A trade at `ms` after [`T0`], received then.
    pub fn at(&mut self, ms: i64, price: &str) -> &mut Self {
        self.seq += 1;
        let t = T0 + ms * MS;
        self.engine
            .ingest(self.symbol, t, self.seq, trade(price), t, &mut self.alerts)
            .unwrap();
        self
    }

    /// Runs the engine's timers at `ms` after [`T0`].
    pub fn timers(&mut self, ms: i64) -> &mut Self {
        self.engine.check_timers(T0 + ms * MS, &mut self.alerts);
        self
    }

    /// The alerts of rule `id`.
    pub fn of(&self, id: &str) -> Vec<&Alert> {
        self.alerts.iter().filter(|a| &*a.rule_id == id).collect()
    }

    /// Rule `p`'s alerts as (ms after T0 it fired at, `match_ms`).
    pub fn fired(&self) -> Vec<(i64, i64)> {
        self.of("p")
            .iter()
            .map(|a| {
                (
                    (a.event_time_ns - T0) / MS,
                    value(a, "match_ms").map_or(-1, |v| v / 100_000_000),
                )
            })
            .collect()
    }
}

/// The raw value (×10^8) an alert reports under `name`.
pub fn value(alert: &Alert, name: &str) -> Option<i64> {
    alert.values.iter().find(|v| v.name == name).map(|v| v.value.raw())
}

/// Feeds `(ms, price)` events to a fresh engine over `rules`, then runs
/// the timers at `end_ms`; returns rule `p`'s alerts.
pub fn run(rules: &str, events: &[(i64, &str)], end_ms: i64) -> Vec<(i64, i64)> {
    let e = engine(rules);
    let mut f = Feed::new(&e);
    for &(ms, price) in events {
        f.at(ms, price);
    }
    f.timers(end_ms);
    f.fired()
}
