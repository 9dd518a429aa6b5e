//! `IngestAck` written by hand into a reused buffer: byte for byte what
//! prost encodes for the same `proto::IngestAck` (fields in number order,
//! zeros and empty strings left out), without building the message's
//! strings and vectors first.

use bytes::{BufMut, BytesMut};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType};

/// Writes one acknowledgement: the batch fields, then every rejection,
/// then every last-applied entry (the order the fields are numbered in,
/// which is the order prost writes them in).
pub struct AckWriter<'b> {
    buf: &'b mut BytesMut,
}

impl<'b> AckWriter<'b> {
    /// Starts an acknowledgement of `batch_id` that applied `applied` ticks.
    pub fn new(buf: &'b mut BytesMut, batch_id: u64, applied: u32) -> Self {
        varint_field(buf, 1, batch_id);
        varint_field(buf, 2, u64::from(applied));
        AckWriter { buf }
    }

    /// Adds a `Rejection`. Call before [`AckWriter::last_applied`].
    pub fn rejection(&mut self, index: u32, code: &str, reason: &str) {
        let len =
            varint_field_len(1, u64::from(index)) + string_field_len(2, code.len()) + string_field_len(3, reason.len());
        encode_key(3, WireType::LengthDelimited, self.buf);
        encode_varint(len as u64, self.buf);
        varint_field(self.buf, 1, u64::from(index));
        string_field(self.buf, 2, code.as_bytes());
        string_field(self.buf, 3, reason.as_bytes());
    }

    /// Adds an `InstrumentSeq`; `instrument` is the symbol's UTF-8 bytes.
    pub fn last_applied(&mut self, instrument: &[u8], seq: u64) {
        let len = string_field_len(1, instrument.len()) + varint_field_len(2, seq);
        encode_key(4, WireType::LengthDelimited, self.buf);
        encode_varint(len as u64, self.buf);
        string_field(self.buf, 1, instrument);
        varint_field(self.buf, 2, seq);
    }
}

/// A scalar varint field; left out when zero, as proto3 does.
fn varint_field(buf: &mut BytesMut, tag: u32, value: u64) {
    if value != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(value, buf);
    }
}

fn varint_field_len(tag: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(value)
    }
}

/// A string field; left out when empty, as proto3 does.
fn string_field(buf: &mut BytesMut, tag: u32, value: &[u8]) {
    if !value.is_empty() {
        encode_key(tag, WireType::LengthDelimited, buf);
        encode_varint(value.len() as u64, buf);
        buf.put_slice(value);
    }
}

fn string_field_len(tag: u32, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(len as u64) + len
    }
}
