//! Client-side encoding: PackedForward requests (optionally gzip'd), acks, chunk ids.
//!
//! Output is what Fluentd's out_forward sends, with the spec-preferred bin for the
//! payload:
//!
//! ```text
//! [tag(str), bin(<<[EventTime, record]>>*), {"size": n, "chunk": id?, "compressed": "gzip"|"text"}]
//! ```
//!
//! Times are EventTime (fixext8 `d7 00 <u32 secs> <u32 nanos>`); a time whose seconds
//! do not fit u32 (before 1970 or after 2106) is written as integer seconds. A resend
//! must reuse the same encoded bytes and chunk id so the server can deduplicate.

use std::io::Write;

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use rmpv::Value;

use super::msgpack::{
    put_array_len, put_bin, put_ext, put_int, put_map_len, put_str, put_uint, put_value,
};
use super::{EventTime, RawMap};

/// Compression of a PackedForward payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    /// Plain PackedForward (option `compressed: "text"`).
    #[default]
    None,
    /// CompressedPackedForward, gzip at the default level (option `compressed: "gzip"`).
    Gzip,
}

/// Accumulates events for one PackedForward request.
#[derive(Debug, Clone)]
pub struct PackedForwardBuilder {
    tag: Bytes,
    entries: Vec<u8>,
    count: u64,
}

impl PackedForwardBuilder {
    /// An empty request for `tag`.
    pub fn new(tag: impl Into<Bytes>) -> Self {
        PackedForwardBuilder {
            tag: tag.into(),
            entries: Vec::new(),
            count: 0,
        }
    }

    /// Appends `[time, record]`. `record` should be a map: servers reject anything else.
    ///
    /// # Panics
    /// If one string, bin or container in `record` exceeds 4 GiB / 2^32 elements.
    pub fn push(&mut self, time: EventTime, record: &Value) {
        put_array_len(&mut self.entries, 2);
        put_time(&mut self.entries, time);
        put_value(&mut self.entries, record);
        self.count += 1;
    }

    /// Appends `[time, record]` for a record kept as msgpack bytes (copied as is).
    pub fn push_raw(&mut self, time: EventTime, record: &RawMap) {
        put_array_len(&mut self.entries, 2);
        put_time(&mut self.entries, time);
        record.write_msgpack(&mut self.entries);
        self.count += 1;
    }

    /// Appends the v1.5 shape `[[time, metadata], record]` (metadata should be a map).
    pub fn push_with_metadata(&mut self, time: EventTime, metadata: &Value, record: &Value) {
        put_array_len(&mut self.entries, 2);
        put_array_len(&mut self.entries, 2);
        put_time(&mut self.entries, time);
        put_value(&mut self.entries, metadata);
        put_value(&mut self.entries, record);
        self.count += 1;
    }

    /// Events pushed so far.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// True if nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Uncompressed size of the entries so far, in bytes (for batch sizing).
    pub fn payload_len(&self) -> usize {
        self.entries.len()
    }

    /// Encodes the request. With a `chunk` the server will answer `{"ack": chunk}`
    /// (see [`new_chunk_id`]).
    ///
    /// # Panics
    /// If the payload exceeds 4 GiB, msgpack's limit for one bin (batch far below it:
    /// servers accept a few MiB to 32 MiB per request).
    pub fn finish(self, chunk: Option<&[u8]>, compression: Compression) -> Bytes {
        let payload = match compression {
            Compression::None => self.entries,
            Compression::Gzip => {
                let out = Vec::with_capacity(self.entries.len() / 4 + 64);
                let mut gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
                gz.write_all(&self.entries)
                    .expect("writing into a Vec cannot fail");
                gz.finish().expect("writing into a Vec cannot fail")
            }
        };
        let chunk_len = chunk.map_or(0, <[u8]>::len);
        let mut out = BytesMut::with_capacity(payload.len() + self.tag.len() + chunk_len + 64);
        put_array_len(&mut out, 3);
        put_str(&mut out, &self.tag);
        put_bin(&mut out, &payload);
        put_map_len(&mut out, if chunk.is_some() { 3 } else { 2 });
        put_str(&mut out, b"size");
        put_uint(&mut out, self.count);
        if let Some(chunk) = chunk {
            put_str(&mut out, b"chunk");
            put_str(&mut out, chunk);
        }
        put_str(&mut out, b"compressed");
        put_str(
            &mut out,
            match compression {
                Compression::None => b"text",
                Compression::Gzip => b"gzip",
            },
        );
        out.freeze()
    }
}

/// Writes an EventTime (fixext8), or integer seconds if `secs` does not fit u32.
pub(crate) fn put_time(w: &mut impl BufMut, time: EventTime) {
    match u32::try_from(time.secs) {
        Ok(secs) => {
            let mut data = [0u8; 8];
            data[..4].copy_from_slice(&secs.to_be_bytes());
            data[4..].copy_from_slice(&time.nanos.to_be_bytes());
            put_ext(w, 0, &data);
        }
        Err(_) => put_int(w, time.secs),
    }
}

/// The reply `{"ack": chunk}` (`81 a3 "ack" <str chunk>`), echoing `chunk` byte for byte.
pub fn encode_ack(chunk: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(chunk.len() + 10);
    put_map_len(&mut out, 1);
    put_str(&mut out, b"ack");
    put_str(&mut out, chunk);
    out.freeze()
}

/// A fresh chunk id: base64 of 16 random bytes (24 characters), as the spec asks.
pub fn new_chunk_id() -> String {
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_ids_are_24_char_base64_of_16_bytes_and_differ() {
        let a = new_chunk_id();
        let b = new_chunk_id();
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&a)
            .unwrap();
        assert_eq!(raw.len(), 16);
    }

    #[test]
    fn times_outside_u32_seconds_fall_back_to_integers() {
        let mut out = Vec::new();
        put_time(&mut out, EventTime { secs: -5, nanos: 7 });
        assert_eq!(out, [0xfb]);
        out.clear();
        put_time(
            &mut out,
            EventTime {
                secs: 1_700_000_000,
                nanos: 123_456_789,
            },
        );
        assert_eq!(
            out,
            [0xd7, 0x00, 0x65, 0x53, 0xf1, 0x00, 0x07, 0x5b, 0xcd, 0x15]
        );
    }

    #[test]
    fn push_raw_writes_what_push_writes_for_the_same_record() {
        let record = Value::Map(vec![
            (Value::from("message"), Value::from("hi")),
            (Value::from("n"), Value::from(-70_000)),
        ]);
        let mut a = PackedForwardBuilder::new("t");
        a.push(EventTime::new(1, 2), &record);
        let mut b = PackedForwardBuilder::new("t");
        b.push_raw(
            EventTime::new(1, 2),
            &RawMap::encode(record.as_map().unwrap()),
        );
        assert_eq!(b.len(), 1);
        assert_eq!(
            a.finish(None, Compression::None),
            b.finish(None, Compression::None)
        );
    }

    #[test]
    fn finish_writes_fluentd_style_option_order() {
        let mut b = PackedForwardBuilder::new("t");
        b.push(EventTime::new(1, 0), &Value::Map(vec![]));
        assert_eq!((b.len(), b.payload_len()), (1, 12));
        let bytes = b.finish(Some(b"id"), Compression::None);
        let tail: &[u8] = b"\x83\xa4size\x01\xa5chunk\xa2id\xaacompressed\xa4text";
        assert!(bytes.ends_with(tail), "{bytes:02x?}");
    }
}
