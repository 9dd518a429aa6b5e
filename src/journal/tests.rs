use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use proptest::prelude::*;

use super::record::{self, HEADER_LEN, RECORD_HEAD};
use super::*;

fn config(segment_bytes: u64, fsync: FsyncPolicy) -> JournalConfig {
    JournalConfig {
        segment_bytes,
        fsync,
        ..JournalConfig::default()
    }
}

/// The payload of record `seq`: its length varies with `seq`.
fn payload(seq: u64) -> Vec<u8> {
    let len = (seq * 37 % 200) as usize;
    (0..len).map(|i| (seq as usize + i) as u8).collect()
}

fn append_range(journal: &mut Journal, seqs: std::ops::RangeInclusive<u64>) {
    for seq in seqs {
        journal.append(seq, &payload(seq)).unwrap();
    }
}

/// Every record a reader from `from` returns: (seq, payload).
fn read_all(journal: &Journal, from: u64) -> Vec<(u64, Vec<u8>)> {
    let mut reader = journal.reader(from).unwrap();
    let mut out = Vec::new();
    while let Some((seq, bytes)) = reader.next_record().unwrap() {
        out.push((seq, bytes.to_vec()));
    }
    assert!(reader.is_done());
    out
}

fn expected(seqs: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
    seqs.map(|s| (s, payload(s))).collect()
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

#[test]
fn appends_read_back_across_segments_and_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), config(4096, FsyncPolicy::Never)).unwrap();
    assert_eq!(
        (journal.first_seq(), journal.next_seq(), journal.last_seq()),
        (1, 1, None)
    );
    append_range(&mut journal, 1..=500);
    assert_eq!(journal.last_seq(), Some(500));
    let segments = journal.segments();
    assert!(segments.len() > 10, "{} segments", segments.len());
    for pair in segments.windows(2) {
        assert!(pair[0].bytes <= 4096, "{pair:?}");
        assert!(pair[0].first_seq < pair[1].first_seq);
    }
    for s in &segments {
        assert_eq!(s.path, dir.path().join(record::segment_name(s.first_seq)));
        assert_eq!(file_len(&s.path), s.bytes);
    }
    assert_eq!(journal.bytes(), segments.iter().map(|s| s.bytes).sum::<u64>());
    assert_eq!(read_all(&journal, 1), expected(1..=500));
    // Starts anywhere: a segment's first record, its middle, the end.
    for from in [2, segments[3].first_seq, segments[3].first_seq + 1, 499, 500] {
        assert_eq!(read_all(&journal, from), expected(from..=500), "from {from}");
    }
    assert_eq!(read_all(&journal, 501), vec![]);
    drop(journal);

    let mut journal = Journal::open(dir.path(), config(4096, FsyncPolicy::Never)).unwrap();
    let recovery = journal.recovery().clone();
    assert_eq!((recovery.first_seq, recovery.next_seq, recovery.cut), (1, 501, None));
    assert_eq!(recovery.segments, segments.len());
    append_range(&mut journal, 501..=510);
    assert_eq!(read_all(&journal, 1), expected(1..=510));
}

#[test]
fn out_of_order_and_oversized_appends_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), config(4096, FsyncPolicy::Never)).unwrap();
    let err = journal.append(2, b"x").unwrap_err();
    assert!(
        matches!(err, JournalError::OutOfOrder { expected: 1, got: 2 }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "journal append out of order: the next record must be seq 1, got seq 2"
    );
    journal.append(1, b"a").unwrap();
    let err = journal.append(1, b"a").unwrap_err();
    assert!(
        matches!(err, JournalError::OutOfOrder { expected: 2, got: 1 }),
        "{err:?}"
    );
    let err = journal.append(2, &vec![0; MAX_PAYLOAD + 1]).unwrap_err();
    assert!(matches!(err, JournalError::TooLarge { seq: 2, .. }), "{err:?}");
    assert!(err.to_string().contains("the limit is 1048576"), "{err}");
    journal.append(2, &vec![7; MAX_PAYLOAD]).unwrap();
    assert_eq!(journal.next_seq(), 3);
    let records = read_all(&journal, 1);
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].1.len(), MAX_PAYLOAD);
    assert_eq!(journal.stats().appends, 2);
}

#[test]
fn a_failed_append_changes_nothing_and_the_next_one_works() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), config(4096, FsyncPolicy::Never)).unwrap();
    // A folder where the second segment would go: creating it fails.
    let mut seq = 1;
    while journal.segments().last().unwrap().bytes + (RECORD_HEAD + payload(seq).len()) as u64 <= 4096 {
        journal.append(seq, &payload(seq)).unwrap();
        seq += 1;
    }
    let blocker = record::segment_path(dir.path(), seq);
    fs::create_dir(&blocker).unwrap();
    let before = journal.segments();
    let err = journal.append(seq, &payload(seq)).unwrap_err();
    assert!(
        matches!(
            err,
            JournalError::Io {
                op: "create segment",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains(&record::segment_name(seq)), "{err}");
    assert_eq!((journal.next_seq(), journal.segments()), (seq, before));
    assert_eq!(journal.stats().write_errors, 1);
    fs::remove_dir(&blocker).unwrap();
    journal.append(seq, &payload(seq)).unwrap();
    assert_eq!(read_all(&journal, 1), expected(1..=seq));
}

#[test]
fn a_batch_is_one_write_per_segment_and_one_fdatasync_at_commit() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), config(4096, FsyncPolicy::Always)).unwrap();
    let payloads: Vec<Vec<u8>> = (1..=100).map(payload).collect();
    let appended = journal.append_batch(1, payloads.iter().map(Vec::as_slice)).unwrap();
    assert_eq!((appended, journal.next_seq()), (100, 101));
    let segments = journal.segments().len();
    assert!(segments > 1, "the batch crossed segments");
    // Each closed segment was synced as it closed; the rest waits for the
    // commit, which syncs once.
    let closed_syncs = journal.stats().fsync.len();
    assert_eq!(closed_syncs, (segments - 1) as u64);
    assert!(journal.commit());
    assert!(!journal.commit(), "nothing written since");
    assert_eq!(journal.stats().fsync.len(), closed_syncs + 1);
    assert_eq!(journal.stats().appends, 100);
    assert_eq!(read_all(&journal, 1), expected(1..=100));
    // Segments never exceed their size, as with single appends.
    for segment in journal.segments() {
        assert!(segment.bytes <= 4096, "{segment:?}");
    }
    // And the journal reopens to the same records.
    drop(journal);
    let journal = Journal::open(dir.path(), config(4096, FsyncPolicy::Always)).unwrap();
    assert_eq!(read_all(&journal, 1), expected(1..=100));
}

#[test]
fn a_batch_that_fails_part_way_keeps_the_records_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), config(4096, FsyncPolicy::Never)).unwrap();
    let err = journal.append_batch(2, [&b"x"[..]]).unwrap_err();
    assert!(
        matches!(err.error, JournalError::OutOfOrder { expected: 1, got: 2 }),
        "{err}"
    );
    // The second segment cannot be created: the batch stops there.
    let mut fits = 0;
    let mut bytes = HEADER_LEN;
    while bytes + (RECORD_HEAD + payload(fits + 1).len()) as u64 <= 4096 {
        fits += 1;
        bytes += (RECORD_HEAD + payload(fits).len()) as u64;
    }
    let blocker = record::segment_path(dir.path(), fits + 1);
    fs::create_dir(&blocker).unwrap();
    let payloads: Vec<Vec<u8>> = (1..=fits + 10).map(payload).collect();
    let err = journal.append_batch(1, payloads.iter().map(Vec::as_slice)).unwrap_err();
    assert_eq!(err.appended as u64, fits);
    assert!(
        matches!(
            err.error,
            JournalError::Io {
                op: "create segment",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(journal.next_seq(), fits + 1);
    fs::remove_dir(&blocker).unwrap();
    // A payload too large stops a batch after the records before it.
    let big = vec![0; MAX_PAYLOAD + 1];
    let next = payload(fits + 1);
    let err = journal
        .append_batch(fits + 1, [next.as_slice(), big.as_slice()])
        .unwrap_err();
    assert_eq!(err.appended, 1);
    assert!(matches!(err.error, JournalError::TooLarge { .. }), "{err}");
    assert_eq!(read_all(&journal, 1), expected(1..=fits + 1));
}

#[test]
fn an_extent_reads_what_was_there_when_it_was_taken() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), config(4096, FsyncPolicy::Never)).unwrap();
    append_range(&mut journal, 1..=50);
    let extent = journal.extent();
    append_range(&mut journal, 51..=300);
    assert_eq!((extent.first_seq(), extent.next_seq()), (1, 51));
    let mut reader = extent.reader(10).unwrap();
    let mut got = Vec::new();
    while let Some((seq, bytes)) = reader.next_record().unwrap() {
        got.push((seq, bytes.to_vec()));
    }
    assert_eq!(got, expected(10..=50));
    assert!(matches!(
        extent.reader(52),
        Err(JournalError::Ahead {
            from_seq: 52,
            next_seq: 51
        })
    ));
    assert_eq!(journal.extent().next_seq(), 301);
}

#[test]
fn readers_stop_at_the_end_they_were_made_with_while_appends_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), config(4096, FsyncPolicy::Never)).unwrap();
    append_range(&mut journal, 1..=50);
    let mut early = journal.reader(10).unwrap();
    assert_eq!((early.next_seq(), early.end_seq()), (10, 51));
    let (seq, bytes) = early.next_record().unwrap().unwrap();
    assert_eq!((seq, bytes), (10, &payload(10)[..]));
    // Appends across several segments while the reader is half-way.
    append_range(&mut journal, 51..=300);
    let mut seen = vec![10];
    while let Some((seq, bytes)) = early.next_record().unwrap() {
        assert_eq!(bytes, payload(seq));
        seen.push(seq);
    }
    assert_eq!(seen, (10..=50).collect::<Vec<_>>());
    assert_eq!(read_all(&journal, 40), expected(40..=300));

    let err = journal.reader(302).unwrap_err();
    assert!(
        matches!(
            err,
            JournalError::Ahead {
                from_seq: 302,
                next_seq: 301
            }
        ),
        "{err:?}"
    );
    let err = journal.reader(0).unwrap_err();
    assert!(
        matches!(
            err,
            JournalError::TooOld {
                from_seq: 0,
                first_seq: 1
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_torn_tail_is_cut_at_the_last_good_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), config(1 << 20, FsyncPolicy::Never)).unwrap();
    append_range(&mut journal, 1..=20);
    let path = journal.segments()[0].path.clone();
    drop(journal);
    let full = file_len(&path);
    let last = (RECORD_HEAD + payload(20).len()) as u64;
    // Half of the last record is there.
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(full - last / 2)
        .unwrap();

    let mut journal = Journal::open(dir.path(), config(1 << 20, FsyncPolicy::Never)).unwrap();
    let cut = journal.recovery().cut.clone().expect("a cut");
    assert_eq!(cut.file, path);
    assert_eq!(cut.offset, full - last);
    assert_eq!(cut.bytes_cut, last - last / 2);
    assert_eq!(cut.segments_deleted, 0);
    assert!(cut.reason.contains("torn"), "{}", cut.reason);
    assert_eq!(file_len(&path), full - last);
    assert_eq!(journal.next_seq(), 20);
    assert_eq!(read_all(&journal, 1), expected(1..=19));
    let stats = journal.stats();
    assert_eq!((stats.repairs, stats.repaired_bytes), (1, last - last / 2));
    // Numbering goes on from the last good record.
    append_range(&mut journal, 20..=21);
    drop(journal);
    let journal = Journal::open(dir.path(), config(1 << 20, FsyncPolicy::Never)).unwrap();
    assert_eq!(journal.recovery().cut, None);
    assert_eq!(read_all(&journal, 1), expected(1..=21));
}

#[test]
fn a_bit_flip_in_the_last_record_is_cut_and_everything_before_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), config(1 << 20, FsyncPolicy::Never)).unwrap();
    append_range(&mut journal, 1..=20);
    let path = journal.segments()[0].path.clone();
    drop(journal);
    let full = file_len(&path);
    let last = (RECORD_HEAD + payload(20).len()) as u64;
    flip_bit(&path, full - 3, 5);

    let journal = Journal::open(dir.path(), config(1 << 20, FsyncPolicy::Never)).unwrap();
    let cut = journal.recovery().cut.clone().expect("a cut");
    assert_eq!((cut.offset, cut.bytes_cut), (full - last, last));
    assert!(cut.reason.contains("checksum mismatch"), "{}", cut.reason);
    assert_eq!(read_all(&journal, 1), expected(1..=19));
    assert_eq!(journal.next_seq(), 20);
}

fn flip_bit(path: &Path, offset: u64, bit: u8) {
    let mut f = OpenOptions::new().read(true).write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut b = [0u8];
    f.read_exact(&mut b).unwrap();
    b[0] ^= 1 << bit;
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&b).unwrap();
}

#[test]
fn damage_in_an_older_segment_deletes_the_later_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), config(4096, FsyncPolicy::Never)).unwrap();
    append_range(&mut journal, 1..=300);
    let segments = journal.segments();
    drop(journal);
    let damaged = &segments[2];
    // The first record of the third segment.
    flip_bit(&damaged.path, HEADER_LEN + 10, 0);

    let journal = Journal::open(dir.path(), config(4096, FsyncPolicy::Never)).unwrap();
    let cut = journal.recovery().cut.clone().expect("a cut");
    assert_eq!((cut.file.clone(), cut.offset), (damaged.path.clone(), HEADER_LEN));
    assert_eq!(cut.segments_deleted, segments.len() - 3);
    let later: u64 = segments[3..].iter().map(|s| s.bytes).sum();
    assert_eq!(cut.bytes_cut, damaged.bytes - HEADER_LEN + later);
    for s in &segments[3..] {
        assert!(!s.path.exists(), "{} deleted", s.path.display());
    }
    assert_eq!(journal.next_seq(), damaged.first_seq);
    assert_eq!(read_all(&journal, 1), expected(1..=damaged.first_seq - 1));
}

#[test]
fn a_damaged_header_keeps_the_numbering_its_name_gives() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), config(4096, FsyncPolicy::Never)).unwrap();
    append_range(&mut journal, 1..=100);
    let segments = journal.segments();
    drop(journal);
    let last = segments.last().unwrap();
    fs::write(&last.path, b"AIR").unwrap();

    let mut journal = Journal::open(dir.path(), config(4096, FsyncPolicy::Never)).unwrap();
    let cut = journal.recovery().cut.clone().expect("a cut");
    assert_eq!((cut.offset, cut.bytes_cut), (0, 3));
    assert!(cut.reason.contains("header is torn"), "{}", cut.reason);
    assert_eq!(journal.next_seq(), last.first_seq);
    assert_eq!(file_len(&last.path), HEADER_LEN);
    journal.append(last.first_seq, b"again").unwrap();
    assert_eq!(
        read_all(&journal, last.first_seq),
        vec![(last.first_seq, b"again".to_vec())]
    );
}

#[test]
fn a_segment_that_breaks_the_numbering_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), config(4096, FsyncPolicy::Never)).unwrap();
    append_range(&mut journal, 1..=100);
    let segments = journal.segments();
    drop(journal);
    // A stray segment far ahead of the last one.
    let stray = dir.path().join(record::segment_name(10_000));
    fs::write(&stray, record::header()).unwrap();
    // Other files are left alone.
    let note = dir.path().join("README");
    fs::write(&note, "operator notes").unwrap();

    let journal = Journal::open(dir.path(), config(4096, FsyncPolicy::Never)).unwrap();
    let cut = journal.recovery().cut.clone().expect("a cut");
    assert_eq!((cut.file.clone(), cut.segments_deleted), (stray.clone(), 1));
    assert!(cut.reason.contains("starts at seq 10000"), "{}", cut.reason);
    assert!(!stray.exists());
    assert!(note.exists());
    assert_eq!(journal.segments(), segments);
    assert_eq!(read_all(&journal, 1), expected(1..=100));
}

#[test]
fn a_segment_of_another_format_version_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let mut journal = Journal::open(dir.path(), config(4096, FsyncPolicy::Never)).unwrap();
    append_range(&mut journal, 1..=5);
    let path = journal.segments()[0].path.clone();
    drop(journal);
    let mut bytes = fs::read(&path).unwrap();
    bytes[7] = 9;
    fs::write(&path, &bytes).unwrap();
    let err = Journal::open(dir.path(), config(4096, FsyncPolicy::Never)).unwrap_err();
    assert!(
        matches!(err, JournalError::UnsupportedVersion { version: 9, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("format version 9"), "{err}");
    assert_eq!(fs::read(&path).unwrap(), bytes);
}

#[test]
fn retention_by_size_drops_the_oldest_whole_segments_never_the_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = JournalConfig {
        segment_bytes: 4096,
        fsync: FsyncPolicy::Never,
        retain_bytes: 3 * 4096,
        retain_age: Duration::from_secs(3600),
    };
    let mut journal = Journal::open(dir.path(), cfg).unwrap();
    append_range(&mut journal, 1..=1000);
    let segments = journal.segments();
    // Closed segments within the limit; the active one may overshoot it
    // until it is closed.
    let closed: u64 = segments[..segments.len() - 1].iter().map(|s| s.bytes).sum();
    assert!(closed <= 3 * 4096, "{segments:?}");
    assert!(segments.len() >= 3, "{segments:?}");
    let first = journal.first_seq();
    assert!(first > 1);
    assert_eq!(read_all(&journal, first), expected(first..=1000));
    let err = journal.reader(first - 1).unwrap_err();
    assert!(
        matches!(err, JournalError::TooOld { first_seq, .. } if first_seq == first),
        "{err:?}"
    );
    assert!(journal.stats().segments_removed > 0);
    // Files on disk are exactly the segments kept.
    let mut on_disk: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().path()).collect();
    on_disk.sort();
    assert_eq!(on_disk, segments.iter().map(|s| s.path.clone()).collect::<Vec<_>>());

    // However small the limit, the active segment stays.
    drop(journal);
    let tiny = JournalConfig { retain_bytes: 1, ..cfg };
    let journal = Journal::open(dir.path(), tiny).unwrap();
    assert_eq!(journal.segments().len(), 1);
    assert_eq!(journal.recovery().removed_by_retention, segments.len() - 1);
    let first = journal.first_seq();
    assert_eq!(read_all(&journal, first), expected(first..=1000));
}

#[test]
fn retention_by_age_uses_when_a_segment_was_last_written() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = JournalConfig {
        segment_bytes: 4096,
        fsync: FsyncPolicy::Never,
        retain_bytes: 1 << 30,
        retain_age: Duration::from_secs(3600),
    };
    let mut journal = Journal::open(dir.path(), cfg).unwrap();
    append_range(&mut journal, 1..=200);
    let segments = journal.segments();
    assert!(segments.len() >= 4);
    // Nothing is old yet.
    assert_eq!(
        journal.enforce_retention(SystemTime::now()).unwrap(),
        Retained::default()
    );
    drop(journal);
    // The first two segments were last written two hours ago.
    let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
    for s in &segments[..2] {
        let f = OpenOptions::new().write(true).open(&s.path).unwrap();
        f.set_modified(two_hours_ago).unwrap();
    }
    let mut journal = Journal::open(dir.path(), cfg).unwrap();
    assert_eq!(journal.recovery().removed_by_retention, 2);
    assert_eq!(journal.first_seq(), segments[2].first_seq);
    assert_eq!(journal.recovery().first_seq, segments[2].first_seq);
    assert_eq!(journal.recovery().segments, segments.len() - 2);
    // A day later every closed segment is old; the active one stays.
    let later = journal
        .enforce_retention(SystemTime::now() + Duration::from_secs(86_400))
        .unwrap();
    assert_eq!(later.removed, segments.len() - 3);
    assert_eq!(journal.segments(), vec![segments.last().unwrap().clone()]);
}

#[test]
fn a_reader_whose_segment_was_removed_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = JournalConfig {
        segment_bytes: 4096,
        fsync: FsyncPolicy::Never,
        retain_bytes: 1 << 30,
        retain_age: Duration::from_secs(3600),
    };
    let mut journal = Journal::open(dir.path(), cfg).unwrap();
    append_range(&mut journal, 1..=200);
    let mut reader = journal.reader(1).unwrap();
    let retained = journal
        .enforce_retention(SystemTime::now() + Duration::from_secs(86_400))
        .unwrap();
    assert!(retained.removed > 0);
    let err = reader.next_record().unwrap_err();
    assert!(matches!(err, JournalError::Removed { seq: 1, .. }), "{err:?}");
    assert!(err.to_string().contains("removed by retention"), "{err}");
}

#[test]
fn every_fsync_policy_keeps_the_records() {
    for policy in [
        FsyncPolicy::Always,
        FsyncPolicy::Interval(Duration::from_millis(5)),
        FsyncPolicy::Never,
    ] {
        let dir = tempfile::tempdir().unwrap();
        // One segment: every sync counted is the policy's own.
        let mut journal = Journal::open(dir.path(), config(1 << 20, policy)).unwrap();
        append_range(&mut journal, 1..=100);
        assert_eq!(journal.segments().len(), 1);
        let synced = match policy {
            FsyncPolicy::Always => journal.stats().fsync.len(),
            FsyncPolicy::Interval(_) => {
                // The sync thread gets to it: bounded wait.
                let deadline = Instant::now() + Duration::from_secs(10);
                while journal.stats().fsync.is_empty() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                journal.stats().fsync.len()
            }
            FsyncPolicy::Never => journal.stats().fsync.len(),
        };
        match policy {
            FsyncPolicy::Always => assert_eq!(synced, 100, "{policy}"),
            FsyncPolicy::Interval(_) => assert!(synced >= 1, "{policy}"),
            FsyncPolicy::Never => assert_eq!(synced, 0, "{policy}"),
        }
        assert_eq!(journal.stats().sync_errors, 0);
        assert_eq!(read_all(&journal, 1), expected(1..=100), "{policy}");
        drop(journal);
        let journal = Journal::open(dir.path(), config(1 << 20, policy)).unwrap();
        assert_eq!(journal.recovery().cut, None, "{policy}");
        assert_eq!(read_all(&journal, 1), expected(1..=100), "{policy}");
    }
}

#[test]
fn bad_configurations_are_refused_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let bad = JournalConfig {
        segment_bytes: 100,
        fsync: FsyncPolicy::Interval(Duration::ZERO),
        retain_bytes: 0,
        retain_age: Duration::ZERO,
    };
    let err = Journal::open(&dir.path().join("j"), bad).unwrap_err();
    let JournalError::Config(problems) = &err else {
        panic!("{err:?}")
    };
    let keys: Vec<_> = problems.iter().map(|p| p.0).collect();
    assert_eq!(keys, ["segment_bytes", "fsync", "retain_bytes", "retain_age"]);
    assert!(err.to_string().contains("segment_bytes: must be between 4096"), "{err}");
    assert!(!dir.path().join("j").exists(), "nothing created");
}

/// Where each record of a journal lies: (segment index, start, end).
fn layout(journal: &Journal) -> Vec<(usize, u64, u64)> {
    let segments = journal.segments();
    let mut out = Vec::new();
    for (i, s) in segments.iter().enumerate() {
        let bytes = fs::read(&s.path).unwrap();
        let mut offset = HEADER_LEN;
        let mut r = &bytes[HEADER_LEN as usize..];
        let mut payload = Vec::new();
        while let record::Next::Record { bytes, .. } = record::read_next(&mut r, &mut payload).unwrap() {
            out.push((i, offset, offset + bytes));
            offset += bytes;
        }
    }
    out
}

#[derive(Clone, Debug)]
enum Damage {
    /// Truncate segment `segment % n` to `offset % len`.
    Truncate { segment: usize, offset: u64 },
    /// Flip bit `bit` of byte `offset % len` of segment `segment % n`.
    Flip { segment: usize, offset: u64, bit: u8 },
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the damage, opening keeps exactly the records that lie
    /// wholly before it, and the journal goes on from there.
    #[test]
    fn recovery_keeps_exactly_the_valid_prefix(
        sizes in prop::collection::vec(0usize..600, 1..120),
        segment_bytes in 4096u64..9000,
        damage in prop_oneof![
            (any::<usize>(), any::<u64>()).prop_map(|(segment, offset)| Damage::Truncate { segment, offset }),
            (any::<usize>(), any::<u64>(), 0u8..8).prop_map(|(segment, offset, bit)| Damage::Flip { segment, offset, bit }),
        ],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(segment_bytes, FsyncPolicy::Never);
        let mut journal = Journal::open(dir.path(), cfg).unwrap();
        let payloads: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|j| (i * 31 + j) as u8).collect())
            .collect();
        for (i, p) in payloads.iter().enumerate() {
            journal.append(i as u64 + 1, p).unwrap();
        }
        let records = layout(&journal);
        prop_assert_eq!(records.len(), payloads.len());
        let segments = journal.segments();
        drop(journal);

        let is_flip = matches!(damage, Damage::Flip { .. });
        let (seg, at) = match damage {
            Damage::Truncate { segment, offset } => {
                let seg = segment % segments.len();
                let at = offset % segments[seg].bytes;
                OpenOptions::new().write(true).open(&segments[seg].path).unwrap().set_len(at).unwrap();
                (seg, at)
            }
            Damage::Flip { segment, offset, bit } => {
                let seg = segment % segments.len();
                let at = offset % segments[seg].bytes;
                flip_bit(&segments[seg].path, at, bit);
                (seg, at)
            }
        };
        // Records before the damaged segment, and those of it that end at
        // or before the damage.
        let kept = records
            .iter()
            .take_while(|(s, _, end)| *s < seg || (*s == seg && *end <= at))
            .count();

        let reopened = Journal::open(dir.path(), cfg);
        if is_flip && at == HEADER_LEN - 1 {
            // The format version byte: another version is refused, never cut.
            let refused = matches!(reopened, Err(JournalError::UnsupportedVersion { .. }));
            prop_assert!(refused, "expected a refusal, got {:?}", reopened.map(|_| ()));
            return Ok(());
        }
        let mut journal = reopened.unwrap();
        // A cut at a record boundary of the last segment leaves a valid
        // journal: nothing to repair.
        let clean_end = seg == segments.len() - 1
            && !is_flip
            && (at == HEADER_LEN || records.iter().any(|&(s, _, end)| s == seg && end == at));
        prop_assert_eq!(journal.recovery().cut.is_none(), clean_end);
        let got = read_all(&journal, 1);
        prop_assert_eq!(got.len(), kept);
        for (i, (seq, bytes)) in got.iter().enumerate() {
            prop_assert_eq!(*seq, i as u64 + 1);
            prop_assert_eq!(bytes, &payloads[i]);
        }
        // The numbering goes on, and a second open finds nothing to cut.
        let next = kept as u64 + 1;
        prop_assert_eq!(journal.next_seq(), next);
        journal.append(next, b"after").unwrap();
        drop(journal);
        let journal = Journal::open(dir.path(), cfg).unwrap();
        prop_assert_eq!(journal.recovery().cut.clone(), None);
        prop_assert_eq!(read_all(&journal, 1).len(), kept + 1);
    }
}
