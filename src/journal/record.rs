//! The on-disk layout: segment files and the records in them.
//!
//! A segment is named by the sequence number of its first record,
//! `{first_seq:020}.journal`, and starts with an 8-byte header: the magic
//! `AIRBAGJ` and a format version byte. Records follow back to back, all
//! integers little-endian:
//!
//! ```text
//! len: u32   bytes after the crc field: 8 + payload length
//! crc: u32   CRC-32 (IEEE) of len, seq and payload
//! seq: u64
//! payload: [u8; len - 8]
//! ```

use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Magic at the start of every segment, before the version byte.
pub const MAGIC: &[u8; 7] = b"AIRBAGJ";
/// The segment format this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Bytes of a segment's header.
pub const HEADER_LEN: u64 = 8;
/// Bytes of a record before its payload: len, crc, seq.
pub const RECORD_HEAD: usize = 16;
/// Largest payload of one record.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// File name suffix of a segment.
pub const SEGMENT_SUFFIX: &str = ".journal";

/// The header every segment starts with.
pub fn header() -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..7].copy_from_slice(MAGIC);
    h[7] = FORMAT_VERSION;
    h
}

/// What a segment's first bytes say.
#[derive(Debug, PartialEq, Eq)]
pub enum Header {
    Valid,
    /// An Airbag journal of another format version: never cut, refused.
    OtherVersion(u8),
    /// Shorter than a header, or not a journal segment at all.
    Invalid,
}

pub fn check_header(bytes: &[u8]) -> Header {
    if bytes.len() < HEADER_LEN as usize || &bytes[..7] != MAGIC {
        return Header::Invalid;
    }
    if bytes[7] == FORMAT_VERSION {
        Header::Valid
    } else {
        Header::OtherVersion(bytes[7])
    }
}

/// The file name of the segment whose first record is `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SEGMENT_SUFFIX}")
}

/// File name suffix of a gap marker: `{first_seq:020}.gap` says that the
/// segment starting at `first_seq` follows a gap in the numbering on
/// purpose (records lost before they were synced, numbered past by a
/// checkpoint), so opening the journal keeps it.
pub const GAP_SUFFIX: &str = ".gap";

/// The gap marker of the segment whose first record is `first_seq`.
pub fn gap_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}{GAP_SUFFIX}"))
}

pub fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(segment_name(first_seq))
}

/// The first sequence number a segment file name stands for, if `name` is
/// one (twenty digits and the suffix).
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Replaces `out` with the record for `seq` and `payload`.
pub fn encode(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    encode_after(seq, payload, out);
}

/// Appends the record for `seq` and `payload` to `out`, after the records
/// already there.
pub fn encode_after(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    debug_assert!(payload.len() <= MAX_PAYLOAD);
    let len = (8 + payload.len()) as u32;
    let at = out.len();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
    let record = &out[at..];
    let crc = checksum(&record[0..4], &record[8..16], payload);
    out[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
}

fn checksum(len: &[u8], seq: &[u8], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(len);
    h.update(seq);
    h.update(payload);
    h.finalize()
}

/// The outcome of reading one record.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A valid record; its payload is in the buffer given.
    Record { seq: u64, bytes: u64 },
    /// Clean end: no byte after the last record.
    End,
    /// The file ends inside a record: `bytes` of it are there.
    Torn { bytes: u64 },
    /// The record is damaged.
    Corrupt { reason: String },
}

/// Reads the next record from `r` into `payload`.
///
/// # Errors
/// Only I/O errors; damage is [`Next::Torn`] or [`Next::Corrupt`].
pub fn read_next(r: &mut impl Read, payload: &mut Vec<u8>) -> io::Result<Next> {
    let mut head = [0u8; RECORD_HEAD];
    let got = read_full(r, &mut head)?;
    if got == 0 {
        return Ok(Next::End);
    }
    if got < RECORD_HEAD {
        return Ok(Next::Torn { bytes: got as u64 });
    }
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let seq = u64::from_le_bytes([
        head[8], head[9], head[10], head[11], head[12], head[13], head[14], head[15],
    ]);
    if !(8..=8 + MAX_PAYLOAD).contains(&len) {
        return Ok(Next::Corrupt {
            reason: format!("record length {len} is impossible (8..={})", 8 + MAX_PAYLOAD),
        });
    }
    payload.clear();
    payload.resize(len - 8, 0);
    let got = read_full(r, payload)?;
    if got < payload.len() {
        return Ok(Next::Torn {
            bytes: (RECORD_HEAD + got) as u64,
        });
    }
    if checksum(&head[0..4], &head[8..16], payload) != crc {
        return Ok(Next::Corrupt {
            reason: format!("checksum mismatch in the record claiming seq {seq}"),
        });
    }
    Ok(Next::Record {
        seq,
        bytes: (RECORD_HEAD + payload.len()) as u64,
    })
}

/// Reads until `buf` is full or the end; returns the bytes read.
pub(super) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_numerically() {
        assert_eq!(segment_name(1), "00000000000000000001.journal");
        assert_eq!(parse_segment_name(&segment_name(u64::MAX)), Some(u64::MAX));
        for bad in [
            "1.journal",
            "0000000000000000000a.journal",
            "00000000000000000001.log",
            "",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
        assert!(segment_name(9) < segment_name(10));
    }

    #[test]
    fn a_record_reads_back_and_every_damage_is_seen() {
        let mut rec = Vec::new();
        encode(42, b"hello", &mut rec);
        assert_eq!(rec.len(), RECORD_HEAD + 5);
        let mut payload = Vec::new();
        assert_eq!(
            read_next(&mut &rec[..], &mut payload).unwrap(),
            Next::Record { seq: 42, bytes: 21 }
        );
        assert_eq!(payload, b"hello");
        assert_eq!(read_next(&mut &rec[..0], &mut payload).unwrap(), Next::End);
        for cut in 1..rec.len() {
            assert_eq!(
                read_next(&mut &rec[..cut], &mut payload).unwrap(),
                Next::Torn { bytes: cut as u64 },
                "cut at {cut}"
            );
        }
        for byte in 0..rec.len() {
            for bit in 0..8 {
                let mut bad = rec.clone();
                bad[byte] ^= 1 << bit;
                let next = read_next(&mut &bad[..], &mut payload).unwrap();
                assert!(
                    matches!(next, Next::Corrupt { .. } | Next::Torn { .. }),
                    "flip {byte}:{bit} gave {next:?}"
                );
            }
        }
    }

    #[test]
    fn headers_tell_other_versions_from_garbage() {
        assert_eq!(check_header(&header()), Header::Valid);
        let mut v2 = header();
        v2[7] = 2;
        assert_eq!(check_header(&v2), Header::OtherVersion(2));
        assert_eq!(check_header(b"AIRBAG"), Header::Invalid);
        assert_eq!(check_header(b"XIRBAGJ\x01"), Header::Invalid);
    }
}
