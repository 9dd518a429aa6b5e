//! Several `airbag serve` processes in one consumer group over a real
//! broker (tansu on loopback): three share a 6-partition tick topic of 201
//! instruments with crashes at known points, handing partition state over
//! through a state topic. All alive throughout; then, in a second run, the
//! owner of an instrument whose breaker has just tripped is killed with
//! SIGKILL mid-stream and a fourth joins, and four more random members are
//! killed and replaced one session timeout and a bit apart.
//! Their alert topic, deduplicated by alert identity, holds exactly the
//! alerts of a single uninterrupted instance over the same topic; every
//! crash is alerted once; the breaker halted before the kill is not
//! tripped a second time and resumes at the same event time. The test
//! prints the time from the kill until a survivor applies the dead
//! instance's partitions, and how many repeats the topic held.
#![cfg(feature = "kafka")]

mod common;
#[path = "support/airbag_process.rs"]
mod process;
#[path = "support/rng.rs"]
mod rng;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use airbag::wire::proto;
use common::kafka::{json_of, Broker};
use process::{free_port, last_applied, Serve};
use prost::Message as _;
use rdkafka::producer::FutureRecord;
use serde_json::Value;

const INSTRUMENTS: usize = 200;
/// The instrument with a circuit breaker.
const BREAKER: &str = "BRK";
/// Rounds of a run with at most one kill; each further kill adds
/// [`ROUNDS_PER_KILL`].
const ROUNDS: u64 = 400;
const ROUNDS_PER_KILL: u64 = 200;
/// One run at a time in this binary: each takes a broker and five servers.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
/// One round of one tick per instrument every this long.
const EVERY: Duration = Duration::from_millis(50);
const TICK_PARTITIONS: i32 = 6;
const ALERT_PARTITIONS: i32 = 3;
/// The members' session timeout, ms.
const SESSION_MS: u64 = 6_000;

const RULES: &str = r#"
[[rule]]
id = "fall"
kind = "drawdown"
instruments = ["G-*"]
window = "30s"
threshold = "10%"
severity = "critical"
actions = ["halt"]

[[rule]]
id = "gap"
kind = "feed_gap"
instruments = ["G-*", "BRK"]
min_missing = 1
severity = "warning"

[[rule]]
id = "cb"
kind = "circuit_breaker"
instruments = ["BRK"]
reference_window = "600s"
direction = "down"
tiers = [{ move = "4%", halt = "60s" }]
"#;

fn instrument(i: usize) -> String {
    format!("G-{i:03}")
}

/// Instrument `i`'s price in round `r`: flat with a small wobble, and a
/// 12% fall over ten rounds every 120 rounds, at an offset per instrument.
fn price(i: usize, r: u64) -> String {
    let phase = (r + i as u64 * 7) % 120;
    let base = 1_000.0 + ((r * 31 + i as u64 * 17) % 7) as f64;
    let factor = if phase < 10 {
        1.0 - 0.012 * (phase + 1) as f64
    } else {
        1.0
    };
    format!("{:.2}", base * factor)
}

/// The breaker's price: flat, then 10% down from round 60 on (it trips
/// there and halts for 60 s of event time: 60 rounds; it rearms only once
/// the 600 s mean comes within 4%, about 40 rounds after the halt ends, on
/// a tick, whenever the timer ended the halt), back up at round 200.
fn breaker_price(r: u64) -> String {
    let p = if (60..200).contains(&r) { 900.0 } else { 1_000.0 };
    format!("{p:.2}")
}

fn config(port: u16, broker: &str, group: &str, alerts: &str, state: Option<&str>, rules: &Path) -> String {
    let shared = match state {
        Some(state) => format!("partitions = \"group\"\nstate_topic = \"{state}\"\nstate_interval_ms = 500\n"),
        None => "partitions = \"all\"\n".to_string(),
    };
    format!(
        r#"listen = "127.0.0.1:{port}"
metrics_listen = "127.0.0.1:0"
rules = "{rules}"

[[kafka.source]]
brokers = ["{broker}"]
topics = ["group-ticks"]
group_id = "{group}"
format = "protobuf_tick"
{shared}
[kafka.source.properties]
"session.timeout.ms" = "{SESSION_MS}"
"heartbeat.interval.ms" = "1000"

[[kafka.sink]]
brokers = ["{broker}"]
topic = "{alerts}"
"#,
        rules = rules.display(),
    )
}

/// The newest sequence number applied of each instrument over `ports`.
async fn applied_over(ports: &[u16]) -> HashMap<String, u64> {
    let mut all = HashMap::new();
    for &port in ports {
        for (instrument, seq) in last_applied(port).await.unwrap_or_default() {
            let at = all.entry(instrument).or_insert(0);
            *at = seq.max(*at);
        }
    }
    all
}

fn every_instrument() -> Vec<String> {
    (0..INSTRUMENTS).map(instrument).chain([BREAKER.to_string()]).collect()
}

/// Waits until the servers on `ports` together applied every round of
/// every instrument.
async fn wait_applied_all(ports: &[u16], rounds: u64, limit: Duration, logs: impl Fn() -> String) {
    let deadline = Instant::now() + limit;
    loop {
        let applied = applied_over(ports).await;
        if every_instrument().iter().all(|i| applied.get(i) == Some(&rounds)) {
            return;
        }
        if Instant::now() >= deadline {
            let behind: Vec<_> = every_instrument()
                .into_iter()
                .filter(|i| applied.get(i) != Some(&rounds))
                .map(|i| (applied.get(&i).copied(), i))
                .take(10)
                .collect();
            panic!(
                "not every tick applied within {limit:?}; behind (first 10): {behind:?}\n{}",
                logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An alert's identity: rule, instrument, kind, event time, tick sequence.
fn identity(alert: &Value) -> String {
    format!(
        "{} {} {} {} {}",
        alert["rule_id"], alert["instrument"], alert["kind"], alert["event_time_ns"], alert["tick_seq"]
    )
}

/// An alert without what may differ between instances: its number and the
/// wall-clock times.
fn comparable(alert: &Value) -> String {
    let mut alert = alert.clone();
    let object = alert.as_object_mut().expect("an alert object");
    for field in ["seq", "received_time_ns", "emitted_time_ns"] {
        object.remove(field);
    }
    alert.to_string()
}

/// The alerts by identity, and how many repeats of an identity there were.
/// Two alerts with one identity and different contents fail the test.
fn by_identity(messages: &[Value]) -> (BTreeMap<String, String>, usize) {
    let mut out = BTreeMap::new();
    let mut repeats = 0;
    for alert in messages {
        let body = comparable(alert);
        match out.get(&identity(alert)) {
            Some(seen) => {
                assert_eq!(seen, &body, "one identity, two alerts");
                repeats += 1;
            }
            None => {
                out.insert(identity(alert), body);
            }
        }
    }
    (out, repeats)
}

/// The topic's alerts, read until `count(alerts)` reaches `want` or 30 s.
async fn read_alerts(broker: &Broker, topic: &str, want: usize) -> Vec<Value> {
    broker
        .read(topic, ALERT_PARTITIONS, Duration::from_secs(30), move |m| {
            let mut ids: Vec<String> = m.iter().map(|m| identity(&json_of(m))).collect();
            ids.sort_unstable();
            ids.dedup();
            ids.len() >= want
        })
        .await
        .iter()
        .map(json_of)
        .collect()
}

/// Produces the stream: a round every [`EVERY`], each tick keyed by its
/// instrument; counts the rounds produced in `produced`.
fn stream(broker: &Broker, rounds: u64, produced: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    let producer = broker.producer();
    tokio::spawn(async move {
        let mut next = tokio::time::Instant::now();
        for round in 0..rounds {
            next += EVERY;
            tokio::time::sleep_until(next).await;
            let mut sends = Vec::with_capacity(INSTRUMENTS + 1);
            for name in every_instrument() {
                let p = if name == BREAKER {
                    breaker_price(round)
                } else {
                    price(name[2..].parse().unwrap_or(0), round)
                };
                // A second of event time per round, 20 times the wall clock's
                // pace: a timer (on the receive clock) never overtakes a tick.
                let tick = common::trade(&name, round as i64 * 1_000, round + 1, &p);
                let payload = tick.encode_to_vec();
                let mut record = FutureRecord::to("group-ticks").key(&name).payload(&payload);
                loop {
                    match producer.send_result(record) {
                        Ok(delivery) => break sends.push(delivery),
                        Err((error, back)) => {
                            assert!(
                                matches!(
                                    error,
                                    rdkafka::error::KafkaError::MessageProduction(
                                        rdkafka::types::RDKafkaErrorCode::QueueFull
                                    )
                                ),
                                "cannot produce round {round}: {error}"
                            );
                            record = back;
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                }
            }
            for send in sends {
                match send.await {
                    Ok(Ok(_)) => {}
                    other => panic!("round {round} not delivered: {other:?}"),
                }
            }
            produced.store(round + 1, Ordering::SeqCst);
        }
    })
}

/// Three members all alive throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_of_a_group_raise_what_one_instance_raises() {
    run(0).await;
}

/// The breaker's owner killed mid-stream and a new member started, then a
/// random member killed four more times (`AIRBAG_GROUP_KILLS=N` for N
/// kills in all), each replaced by a new one: nothing lost, nothing but
/// repeats by identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_members_lose_no_alert() {
    let kills = match std::env::var("AIRBAG_GROUP_KILLS") {
        Ok(n) => n.parse().expect("AIRBAG_GROUP_KILLS: a number of kills"),
        Err(_) => 5,
    };
    run(kills.max(1)).await;
}

/// Three members and a reference over the same stream; with `kills` > 0,
/// the breaker's owner is killed mid-stream and a new member started, then
/// (for each further kill) a random member every session timeout and a
/// bit, each replaced by a new one.
async fn run(kills: usize) {
    let _one = ONE_AT_A_TIME.lock().await;
    let rounds = ROUNDS + ROUNDS_PER_KILL * kills.saturating_sub(1) as u64;
    let started = Instant::now();
    let broker = Broker::start();
    broker.create_topic("group-ticks", TICK_PARTITIONS).await;
    broker.create_topic("group-state", 3).await;
    broker.create_topic("group-alerts", ALERT_PARTITIONS).await;
    broker.create_topic("group-alerts-ref", ALERT_PARTITIONS).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).expect("rules dir");
    std::fs::write(rules.join("rules.toml"), RULES).expect("rules");
    let pid = std::process::id();
    let bootstrap = broker.bootstrap();

    let reference_port = free_port();
    let reference_config = dir.path().join("reference.toml");
    let text = config(
        reference_port,
        &bootstrap,
        &format!("ref-{pid}"),
        "group-alerts-ref",
        None,
        &rules,
    );
    std::fs::write(&reference_config, text).expect("config");
    let reference = Serve::start(&reference_config, reference_port, dir.path().join("reference.log"));

    let group = format!("shared-{pid}");
    let start_member = |n: usize| {
        let port = free_port();
        let path = dir.path().join(format!("member-{n}.toml"));
        let text = config(port, &bootstrap, &group, "group-alerts", Some("group-state"), &rules);
        std::fs::write(&path, text).expect("config");
        Serve::start(&path, port, dir.path().join(format!("member-{n}.log")))
    };
    let mut members: Vec<Serve> = (0..3).map(start_member).collect();
    let logs = |members: &[Serve]| -> String {
        members
            .iter()
            .map(|m| format!("--- {}\n{}", m.log.display(), m.log_text()))
            .collect::<Vec<_>>()
            .join("\n")
    };

    let produced = Arc::new(AtomicU64::new(0));
    let producer = stream(&broker, rounds, produced.clone());
    if kills == 0 {
        producer.await.expect("producer");
        let ports: Vec<u16> = members.iter().map(|m| m.port).collect();
        wait_applied_all(&[reference.port], rounds, Duration::from_secs(60), || {
            reference.log_text()
        })
        .await;
        wait_applied_all(&ports, rounds, Duration::from_secs(60), || logs(&members)).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let ports: Vec<u16> = members.iter().map(|m| m.port).collect();
        let (got, _, held, repeats) = compare(&broker, &reference, &ports, || logs(&members)).await;
        eprintln!(
            "group of 3, all alive: {} alerts as a single instance's; the topic held {held} messages, {repeats} \
             repeats by identity; {:.1} s",
            got.len(),
            started.elapsed().as_secs_f64()
        );
        return;
    }

    // The breaker trips at round 60 and stays halted to round 120: kill
    // its owner in between, once every member is applying.
    let deadline = Instant::now() + Duration::from_secs(60);
    let victim = loop {
        assert!(
            Instant::now() < deadline,
            "the breaker never tripped:\n{}",
            logs(&members)
        );
        let round = produced.load(Ordering::SeqCst);
        if round >= 75 {
            let mut owner = None;
            let mut busy = 0;
            for (n, member) in members.iter().enumerate() {
                let applied = last_applied(member.port).await.unwrap_or_default();
                busy += usize::from(!applied.is_empty());
                if applied.get(BREAKER).is_some_and(|&seq| seq > 62) {
                    owner = Some(n);
                }
            }
            if let (Some(owner), 3) = (owner, busy) {
                break owner;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let before = last_applied(members[victim].port).await.unwrap_or_default()[BREAKER];
    members[victim].process.kill();
    let killed = Instant::now();
    let round_at_kill = produced.load(Ordering::SeqCst);
    let fourth = start_member(3);
    members.push(fourth);
    let mut dead = vec![victim];
    let survivors: Vec<u16> = (0..members.len())
        .filter(|&n| n != victim)
        .map(|n| members[n].port)
        .collect();

    // Kill to resume: a survivor applies the breaker's ticks past those
    // the dead member had applied.
    let resumed_after = loop {
        let applied = applied_over(&survivors).await;
        if applied.get(BREAKER).is_some_and(|&seq| seq > before) {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_millis(SESSION_MS * 5),
            "no survivor took the dead member's partitions over:\n{}",
            logs(&members)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Further kills: a random live member, each replaced by a new one.
    let mut rng = rng::Rng(u64::from(pid) | 1);
    let mut last_kill_round = round_at_kill;
    for _ in 1..kills {
        tokio::time::sleep(Duration::from_millis(SESSION_MS + 2_000 + rng.below(2_000))).await;
        let alive: Vec<usize> = (0..members.len()).filter(|n| !dead.contains(n)).collect();
        let pick = alive[rng.below(alive.len() as u64) as usize];
        members[pick].process.kill();
        dead.push(pick);
        last_kill_round = produced.load(Ordering::SeqCst);
        let next = start_member(members.len());
        members.push(next);
    }
    let survivors: Vec<u16> = (0..members.len())
        .filter(|n| !dead.contains(n))
        .map(|n| members[n].port)
        .collect();
    producer.await.expect("producer");
    assert!(
        last_kill_round < rounds,
        "the last kill came after the last round: nothing streamed meanwhile"
    );
    assert!(
        round_at_kill < rounds,
        "the kill came after the last round: nothing streamed meanwhile"
    );
    wait_applied_all(&[reference.port], rounds, Duration::from_secs(60), || {
        reference.log_text()
    })
    .await;
    wait_applied_all(&survivors, rounds, Duration::from_secs(90), || logs(&members)).await;
    // The breaker's resume after the stream: wait for the last timers.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let (got, expected, held, repeats) = compare(&broker, &reference, &survivors, || {
        format!("{}\n--- reference\n{}", logs(&members), reference.log_text())
    })
    .await;
    let crashes = expected.values().filter(|a| a.contains(r#""kind":"fired""#)).count();
    let shared = read_alerts(&broker, "group-alerts", expected.len()).await;
    let breaker: Vec<&Value> = shared.iter().filter(|a| a["instrument"] == BREAKER).collect();
    let tripped = breaker.iter().filter(|a| a["kind"] == "tripped").count();
    assert_eq!(
        tripped, 1,
        "the breaker halted before the kill trips once: {breaker:#?}"
    );
    assert!(
        breaker.iter().any(|a| a["kind"] == "resumed"),
        "the breaker resumes after the move: {breaker:#?}"
    );
    eprintln!(
        "group of 3, {kills} kill(s), the first (member {victim}) at round {round_at_kill}, each followed by a new \
         member: {} alerts as a single \
         instance's ({crashes} crash alerts); the topic held {held} messages, {repeats} repeats by identity; a \
         survivor applied the dead member's partitions {:.2} s after the SIGKILL (session.timeout.ms {SESSION_MS}); \
         {:.1} s in all",
        got.len(),
        resumed_after.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// How many alerts a server has published.
async fn published_alerts(port: u16) -> usize {
    let mut client = proto::alerts_client::AlertsClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect");
    let mut stream = client
        .subscribe(proto::SubscribeRequest {
            from_seq: 1,
            ..Default::default()
        })
        .await
        .expect("subscribe")
        .into_inner();
    let mut count = 0;
    // Idle for a second once the backlog is read: all of it.
    while let Ok(Ok(Some(_))) = tokio::time::timeout(Duration::from_secs(1), stream.message()).await {
        count += 1;
    }
    count
}

/// The identities of the alerts a server's bus holds, from its first.
async fn raised_identities(port: u16) -> Vec<String> {
    let Ok(mut client) = proto::alerts_client::AlertsClient::connect(format!("http://127.0.0.1:{port}")).await else {
        return Vec::new();
    };
    let Ok(stream) = client
        .subscribe(proto::SubscribeRequest {
            from_seq: 1,
            ..Default::default()
        })
        .await
    else {
        return Vec::new();
    };
    let mut stream = stream.into_inner();
    let mut out = Vec::new();
    while let Ok(Ok(Some(a))) = tokio::time::timeout(Duration::from_secs(1), stream.message()).await {
        let tick_seq = a.tick_seq.map_or_else(|| "null".to_string(), |s| s.to_string());
        out.push(format!(
            "{:?} {:?} {:?} {} {tick_seq}",
            a.rule_id, a.instrument, a.kind, a.event_time_ns
        ));
    }
    out
}

/// The group's alert topic and the reference's, each by identity: (group,
/// reference, messages the group's topic held, its repeats). Fails the
/// test when they differ.
async fn compare(
    broker: &Broker,
    reference: &Serve,
    live: &[u16],
    logs: impl Fn() -> String,
) -> (BTreeMap<String, String>, BTreeMap<String, String>, usize, usize) {
    let published = published_alerts(reference.port).await;
    let reference_alerts = read_alerts(broker, "group-alerts-ref", published).await;
    let (expected, reference_repeats) = by_identity(&reference_alerts);
    assert_eq!(reference_repeats, 0, "a single instance raises each alert once");
    let crashes = expected.values().filter(|a| a.contains(r#""kind":"fired""#)).count();
    assert!(
        crashes >= INSTRUMENTS * 2,
        "the stream crashes each instrument at least twice: {crashes} fired"
    );
    let wanted: std::collections::BTreeSet<String> = expected.keys().cloned().collect();
    let shared: Vec<Value> = broker
        .read("group-alerts", ALERT_PARTITIONS, Duration::from_secs(30), move |m| {
            let seen: std::collections::BTreeSet<String> = m.iter().map(|m| identity(&json_of(m))).collect();
            wanted.is_subset(&seen)
        })
        .await
        .iter()
        .map(json_of)
        .collect();
    let held = shared.len();
    let (got, repeats) = by_identity(&shared);
    let missing: Vec<_> = expected.keys().filter(|k| !got.contains_key(*k)).take(40).collect();
    let extra: Vec<_> = got.keys().filter(|k| !expected.contains_key(*k)).take(40).collect();
    if !missing.is_empty() || !extra.is_empty() {
        // Where the missing ones went: raised by a live member (and not
        // delivered), or never raised by one.
        let mut raised = std::collections::BTreeSet::new();
        for &port in live {
            raised.extend(raised_identities(port).await);
        }
        let missing_all: Vec<&String> = expected.keys().filter(|k| !got.contains_key(*k)).collect();
        let raised_missing = missing_all.iter().filter(|k| raised.contains(**k)).count();
        panic!(
            "the group's alerts differ from a single instance's: {} against {}\nmissing (first 40): {missing:#?}\n\
             extra (first 40): {extra:#?}\nof the {} missing, {raised_missing} were raised by a live member (which \
             raised {} in all)\n{}",
            got.len(),
            expected.len(),
            missing_all.len(),
            raised.len(),
            logs()
        );
    }
    assert_eq!(got, expected, "same identities, same alerts");
    (got, expected, held, repeats)
}
