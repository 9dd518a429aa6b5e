use std::fs;

use super::*;
use crate::engine::EngineConfig;
use crate::model::{Fixed, TickValues};
use crate::rules::{compile_for_test as compile_texts, RuleState};

const S: i64 = 1_000_000_000;

const RULES: &str = r#"
[[rule]]
id = "dd"
kind = "drawdown"
window = "3s"
threshold = "5%"
cooldown = "10s"

[[rule]]
id = "cb"
kind = "circuit_breaker"
reference_window = "90s"
tiers = [{ move = "3%", halt = "60s" }, { move = "6%", halt = "120s" }]
"#;

fn engine() -> Engine {
    Engine::new(
        EngineConfig::default(),
        compile_texts(&[("r.toml".into(), RULES.into())]).unwrap(),
    )
}

fn trade(e: &Engine, symbol: &str, t: i64, seq: u64, price: &str) {
    let values = TickValues::Trade {
        price: Fixed::parse(price).unwrap(),
        size: Fixed::ONE,
        side: None,
    };
    e.ingest(symbol, t, seq, values, t, &mut Vec::new()).unwrap();
}

/// An engine with state in every part: windows over and under a minute, a
/// fired drawdown, a halted breaker.
fn busy_engine() -> Engine {
    let e = engine();
    for (i, symbol) in ["BTC-USDT", "ETH-USDT"].iter().enumerate() {
        for k in 0..40u64 {
            let price = 100 + (k % 7) as i64 + i as i64;
            trade(&e, symbol, (k as i64 + 1) * S, k + 1, &price.to_string());
        }
    }
    trade(&e, "BTC-USDT", 42 * S, 41, "90");
    e
}

fn checkpoint(e: &Engine, alert_seq: u64) -> Checkpoint {
    Checkpoint {
        alert_seq,
        written_at_ns: 1_700_000_000_000_000_000 + alert_seq as i64,
        engine: e.snapshot(),
    }
}

fn store(dir: &std::path::Path) -> CheckpointStore {
    CheckpointStore::open(dir.join("checkpoints"), 3).unwrap()
}

#[test]
fn round_trip_restores_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let original = busy_engine();
    let written = checkpoint(&original, 7);
    assert!(written.engine.instruments[0].rules.iter().any(|(_, s)| matches!(
        s,
        RuleState::Breaker(b) if !b.is_armed()
    )));
    let store = store(dir.path());
    store.write(&written).unwrap();
    let outcome = store.load_newest().unwrap();
    assert!(outcome.rejected.is_empty());
    let loaded = outcome.loaded.unwrap();
    assert_eq!(loaded.checkpoint, written);

    let restored = engine();
    let report = restored.restore(loaded.checkpoint.engine, i64::MIN).unwrap();
    assert_eq!(report.instruments_restored, 2);
    assert_eq!(report.rule_states_restored, 4);
    assert_eq!(
        report.rule_states_reset + report.rule_states_new + report.inconsistent,
        0
    );
    assert_eq!(restored.snapshot(), written.engine);
}

fn write_two(store: &CheckpointStore) -> (Written, Written) {
    let e = busy_engine();
    let older = store.write(&checkpoint(&e, 1)).unwrap();
    let newer = store.write(&checkpoint(&e, 2)).unwrap();
    assert!(newer.number > older.number);
    (older, newer)
}

fn damaged_newest_falls_back(damage: impl FnOnce(&mut Vec<u8>)) -> String {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let (older, newer) = write_two(&store);
    let mut bytes = fs::read(&newer.path).unwrap();
    damage(&mut bytes);
    fs::write(&newer.path, &bytes).unwrap();
    let outcome = store.load_newest().unwrap();
    let loaded = outcome.loaded.expect("the older checkpoint");
    assert_eq!((loaded.path, loaded.checkpoint.alert_seq), (older.path, 1));
    assert_eq!(outcome.rejected.len(), 1);
    assert_eq!(outcome.rejected[0].path, newer.path);
    outcome.rejected[0].error.to_string()
}

#[test]
fn a_truncated_newest_falls_back_to_the_previous() {
    let reason = damaged_newest_falls_back(|b| b.truncate(b.len() - 10));
    assert!(reason.contains("truncated"), "{reason}");
    let reason = damaged_newest_falls_back(|b| b.truncate(30));
    assert!(reason.contains("shorter than the 52-byte header"), "{reason}");
    let reason = damaged_newest_falls_back(Vec::clear);
    assert!(reason.contains("0 bytes"), "{reason}");
}

#[test]
fn a_bit_flip_in_the_newest_falls_back_to_the_previous() {
    let reason = damaged_newest_falls_back(|b| {
        let middle = format::HEADER_LEN + (b.len() - format::HEADER_LEN) / 2;
        b[middle] ^= 0x10;
    });
    assert!(reason.contains("checksum mismatch"), "{reason}");
    let reason = damaged_newest_falls_back(|b| b[25] ^= 1);
    assert!(reason.contains("checksum mismatch"), "{reason}");
    let reason = damaged_newest_falls_back(|b| b[0] = b'X');
    assert!(reason.contains("not an Airbag checkpoint"), "{reason}");
}

#[test]
fn another_format_version_is_rejected_with_a_clear_message() {
    let reason = damaged_newest_falls_back(|b| b[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes()));
    assert_eq!(
        reason,
        format!(
            "checkpoint format version {} is not supported by this build, which reads versions 1 to {FORMAT_VERSION}",
            FORMAT_VERSION + 1
        )
    );
}

#[test]
fn nothing_usable_loads_nothing_and_reports_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let (older, newer) = write_two(&store);
    fs::write(&older.path, b"junk").unwrap();
    fs::write(&newer.path, b"").unwrap();
    let outcome = store.load_newest().unwrap();
    assert!(outcome.loaded.is_none());
    let paths: Vec<_> = outcome.rejected.iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, [newer.path, older.path]);
}

#[test]
fn keeps_the_newest_and_numbers_on_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let e = busy_engine();
    let first = store(dir.path());
    let numbers: Vec<u64> = (0..5)
        .map(|i| first.write(&checkpoint(&e, i)).unwrap().number)
        .collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5]);
    let kept: Vec<u64> = first.list().unwrap().into_iter().map(|(n, _)| n).collect();
    assert_eq!(kept, [5, 4, 3]);

    // A crash mid-write leaves a temporary file: removed at open, never loaded.
    let temp = first.dir().join(".checkpoint-00000000000000000006.tmp");
    fs::write(&temp, b"half a checkpoint").unwrap();
    fs::write(first.dir().join("notes.txt"), b"not a checkpoint").unwrap();
    drop(first);
    let second = store(dir.path());
    assert!(!temp.exists());
    let written = second.write(&checkpoint(&e, 9)).unwrap();
    assert_eq!(written.number, 6);
    let loaded = second.load_newest().unwrap().loaded.unwrap();
    assert_eq!((loaded.number, loaded.checkpoint.alert_seq), (6, 9));
    assert!(second.dir().join("notes.txt").exists());
}

#[test]
fn a_write_into_a_missing_folder_fails_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let checkpointer = Checkpointer::new(store(dir.path()));
    let e = busy_engine();
    checkpointer.write(&e, 3, 1).unwrap();
    fs::remove_dir_all(dir.path().join("checkpoints")).unwrap();
    let error = checkpointer.write(&e, 4, 2).unwrap_err().to_string();
    assert!(error.starts_with("cannot write checkpoint"), "{error}");
    assert_eq!(checkpointer.counts(), (1, 1));
    let mut page = Exposition::new();
    checkpointer.render(&mut page);
    let page = page.finish();
    assert!(page.contains("airbag_checkpoint_success_ratio 0.5\n"), "{page}");
}

/// The body is postcard over the state types: changing any of them changes
/// the bytes. This test pins the encoding of a fixed checkpoint, so that
/// such a change cannot go out without a new `FORMAT_VERSION` (bump it, then
/// update the digest here). The digest also covers the rules' content
/// hashes, so a change to how rules are hashed shows here too (then only
/// the digest needs updating).
#[test]
fn the_encoding_is_pinned_to_the_format_version() {
    use sha2::{Digest, Sha256};
    let e = engine();
    trade(&e, "BTC-USDT", S, 1, "100");
    trade(&e, "BTC-USDT", 2 * S, 2, "94");
    let bytes = format::encode(&checkpoint(&e, 5)).unwrap();
    let digest: String = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        (FORMAT_VERSION, digest.as_str()),
        (3, "d3ca60978ec8221ae12ad2117f52529ab3301c06fe2ceee0fe2592b39ec33ff6"),
        "the checkpoint encoding changed: if a serialized type changed, bump FORMAT_VERSION; then update the digest"
    );
}

/// A version 1 file (written before group partitions existed) is the
/// version 2 body without its trailing groups section: it reads as a
/// checkpoint with no groups.
#[test]
fn a_version_1_checkpoint_reads_with_no_groups() {
    use sha2::{Digest, Sha256};
    let e = engine();
    trade(&e, "BTC-USDT", S, 1, "100");
    let current = format::encode(&checkpoint(&e, 5)).unwrap();
    // The groups section of an engine without groups: an empty list, one byte.
    assert_eq!(current.last(), Some(&0));
    let body = &current[format::HEADER_LEN..current.len() - 1];
    let mut old = current[..format::HEADER_LEN].to_vec();
    old[8..12].copy_from_slice(&1u32.to_le_bytes());
    old[12..20].copy_from_slice(&(body.len() as u64).to_le_bytes());
    old[20..52].copy_from_slice(&Sha256::digest(body));
    old.extend_from_slice(body);
    let read = format::decode(&old).unwrap();
    assert_eq!(read, checkpoint(&e, 5));
    assert!(read.engine.groups.is_empty());
}

/// A version 2 file has the body layout of version 3; version 3 only adds
/// a price band's clearing state, so a version 2 body reads unchanged.
#[test]
fn a_version_2_checkpoint_reads_unchanged() {
    use sha2::{Digest, Sha256};
    let e = busy_engine();
    let mut bytes = format::encode(&checkpoint(&e, 5)).unwrap();
    bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
    let digest = Sha256::digest(&bytes[format::HEADER_LEN..]);
    bytes[20..52].copy_from_slice(&digest);
    assert_eq!(format::decode(&bytes).unwrap(), checkpoint(&e, 5));
}

/// A band waiting out `clear_for` is checkpointed in that state and, once
/// restored, resolves when the wait ends, not before.
#[test]
fn a_clearing_band_survives_a_checkpoint() {
    const BAND: &str = r#"
[[rule]]
id = "band"
kind = "price_band"
reference_window = "5m"
band = "5%"
limit_for = "15s"
pause = "1m"
clear_for = "5s"
"#;
    let band_engine = || {
        Engine::new(
            EngineConfig::default(),
            compile_texts(&[("b.toml".into(), BAND.into())]).unwrap(),
        )
    };
    let e = band_engine();
    for k in 1..=10u64 {
        trade(&e, "BTC-USDT", k as i64 * S, k, "100");
    }
    trade(&e, "BTC-USDT", 11 * S, 11, "90");
    trade(&e, "BTC-USDT", 12 * S, 12, "99");
    let bytes = format::encode(&checkpoint(&e, 3)).unwrap();
    let read = format::decode(&bytes).unwrap();
    assert_eq!(read, checkpoint(&e, 3));
    let restored = band_engine();
    restored.restore(read.engine, i64::MIN).unwrap();
    let mut alerts = Vec::new();
    restored.check_timers(16 * S, &mut alerts);
    assert!(alerts.is_empty(), "{alerts:?}");
    restored.check_timers(17 * S, &mut alerts);
    let kinds: Vec<_> = alerts.iter().map(|a| (a.kind, a.event_time_ns)).collect();
    assert_eq!(kinds, vec![(crate::model::AlertKind::Resolved, 17 * S)]);
}
