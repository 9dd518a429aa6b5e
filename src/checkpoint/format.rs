//! The checkpoint file format.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "AIRBAGCK"
//!      8     4  format version, u32 little-endian
//!     12     8  body length in bytes, u64 little-endian
//!     20    32  SHA-256 of the body
//!     52     …  body: the [`Checkpoint`] in postcard encoding, then (from
//!                 version 2) its group partitions, also in postcard
//! ```
//!
//! Every version is read: a version 1 file has no group partitions;
//! version 3 adds a price band's clearing state (`clear_for`) as a new
//! last variant, so version 2 bodies decode unchanged.
//!
//! The layout of the first 12 bytes never changes, so any build can tell a
//! file of another format version from a corrupt one. A change to the body's
//! encoding (any serialized type) takes a new [`FORMAT_VERSION`].

use sha2::{Digest, Sha256};

use super::Checkpoint;

pub const MAGIC: [u8; 8] = *b"AIRBAGCK";
/// The body encoding this build writes.
pub const FORMAT_VERSION: u32 = 3;
/// The oldest body encoding this build reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;
pub const HEADER_LEN: usize = 52;

/// Why bytes are not a checkpoint this build can read.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("file is {len} bytes, shorter than the {HEADER_LEN}-byte header (truncated)")]
    TooShort { len: usize },
    #[error("not an Airbag checkpoint: the file does not start with the magic bytes")]
    BadMagic,
    #[error(
        "checkpoint format version {found} is not supported by this build, which reads versions {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}"
    )]
    Version { found: u32 },
    #[error("header says the body is {expected} bytes but {found} follow (truncated or extended)")]
    Length { expected: u64, found: u64 },
    #[error("body checksum mismatch: the file is corrupt")]
    Checksum,
    #[error("body cannot be decoded: {0}")]
    Decode(#[source] postcard::Error),
    #[error("body decodes with {0} bytes left over")]
    TrailingBytes(usize),
    #[error(transparent)]
    Inconsistent(#[from] crate::engine::RestoreError),
    #[error("checkpoint cannot be encoded: {0}")]
    Encode(#[source] postcard::Error),
}

/// A checkpoint as file bytes: header, then body.
///
/// # Errors
/// [`FormatError::Encode`]: a value the encoding cannot represent.
pub fn encode(checkpoint: &Checkpoint) -> Result<Vec<u8>, FormatError> {
    let out = postcard::serialize_with_flavor(checkpoint, VecAfterHeader(vec![0u8; HEADER_LEN]))
        .map_err(FormatError::Encode)?;
    let mut out =
        postcard::serialize_with_flavor(&checkpoint.engine.groups, VecAfterHeader(out)).map_err(FormatError::Encode)?;
    let body_len = (out.len() - HEADER_LEN) as u64;
    let digest = Sha256::digest(&out[HEADER_LEN..]);
    out[0..8].copy_from_slice(&MAGIC);
    out[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    out[12..20].copy_from_slice(&body_len.to_le_bytes());
    out[20..52].copy_from_slice(&digest);
    Ok(out)
}

/// Postcard output into a `Vec` that already holds room for the header,
/// copying slices whole.
struct VecAfterHeader(Vec<u8>);

impl postcard::ser_flavors::Flavor for VecAfterHeader {
    type Output = Vec<u8>;

    #[inline]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    #[inline]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// Reads a checkpoint from file bytes, checking magic, version, length and
/// checksum before decoding the body, and the body's references after.
///
/// # Errors
/// The first check that fails.
pub fn decode(bytes: &[u8]) -> Result<Checkpoint, FormatError> {
    if bytes.len() >= 8 && bytes[0..8] != MAGIC {
        return Err(FormatError::BadMagic);
    }
    if bytes.len() >= 12 {
        let found = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default());
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&found) {
            return Err(FormatError::Version { found });
        }
    }
    let version = u32::from_le_bytes(bytes.get(8..12).and_then(|b| b.try_into().ok()).unwrap_or_default());
    if bytes.len() < HEADER_LEN {
        return Err(FormatError::TooShort { len: bytes.len() });
    }
    let expected = u64::from_le_bytes(bytes[12..20].try_into().unwrap_or_default());
    let body = &bytes[HEADER_LEN..];
    if body.len() as u64 != expected {
        return Err(FormatError::Length {
            expected,
            found: body.len() as u64,
        });
    }
    if Sha256::digest(body)[..] != bytes[20..52] {
        return Err(FormatError::Checksum);
    }
    let (mut checkpoint, mut rest) = postcard::take_from_bytes::<Checkpoint>(body).map_err(FormatError::Decode)?;
    if version >= 2 {
        let (groups, after) = postcard::take_from_bytes(rest).map_err(FormatError::Decode)?;
        checkpoint.engine.groups = groups;
        rest = after;
    }
    if !rest.is_empty() {
        return Err(FormatError::TrailingBytes(rest.len()));
    }
    checkpoint.engine.check_references()?;
    Ok(checkpoint)
}
