//! Writing [`RawMap`]s without building values first: [`PairsWriter`] appends one
//! map's pairs to a buffer that many maps (and other bytes) share, so a producer of
//! structured events — the Kafka source, one map per consumed record — fills a
//! single growing buffer per batch and hands out slices of it, instead of
//! allocating a tree of [`rmpv::Value`]s per event.
//!
//! The writer only offers whole pairs (a key and a complete value), so what it
//! writes is valid msgpack by construction; [`RawMap::from_written`] wraps the
//! result without validating it again (debug builds still check).

use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use super::RawMap;
use super::msgpack::{put_bin, put_int, put_str};

/// Appends the pairs of one map (`key value key value ...`, no map header) to the
/// end of `out`; [`PairsWriter::finish`] says where they are and how many.
pub struct PairsWriter<'a> {
    out: &'a mut BytesMut,
    start: usize,
    len: u32,
}

impl<'a> PairsWriter<'a> {
    /// Starts a map at the current end of `out`.
    pub fn new(out: &'a mut BytesMut) -> Self {
        let start = out.len();
        PairsWriter { out, start, len: 0 }
    }

    fn key(&mut self, key: &str) {
        put_str(self.out, key.as_bytes());
        self.len += 1;
    }

    /// `key`: a str.
    pub fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        put_str(self.out, value.as_bytes());
    }

    /// `key`: a str when `value` is UTF-8, else a bin.
    pub fn text(&mut self, key: &str, value: &[u8]) {
        self.key(key);
        put_text(self.out, value);
    }

    /// `key`: an integer.
    pub fn int(&mut self, key: &str, value: i64) {
        self.key(key);
        put_int(self.out, value);
    }

    /// `key`: nil.
    pub fn nil(&mut self, key: &str) {
        self.key(key);
        self.out.put_u8(0xc0);
    }

    /// `key`: a map of `entries`, each value a str when UTF-8, else a bin. The
    /// nested map's header is always the 5-byte form (its count is known only at
    /// the end), which msgpack readers accept like the smallest one.
    pub fn text_map<'e>(&mut self, key: &str, entries: impl Iterator<Item = (&'e str, &'e [u8])>) {
        self.key(key);
        let at = self.out.len();
        self.out.put_u8(0xdf);
        self.out.put_u32(0);
        let mut n: u32 = 0;
        for (k, v) in entries {
            put_str(self.out, k.as_bytes());
            put_text(self.out, v);
            n += 1;
        }
        self.out[at + 1..at + 5].copy_from_slice(&n.to_be_bytes());
    }

    /// Where the pairs are in `out`, and how many there are: give
    /// `out.freeze().slice(range)` and the count to [`RawMap::from_written`].
    pub fn finish(self) -> (Range<usize>, u32) {
        (self.start..self.out.len(), self.len)
    }
}

fn put_text(out: &mut BytesMut, value: &[u8]) {
    if std::str::from_utf8(value).is_ok() {
        put_str(out, value);
    } else {
        put_bin(out, value);
    }
}

impl RawMap {
    /// Wraps `len` pairs that a [`PairsWriter`] wrote (no second validation; debug
    /// builds check). Bytes from anywhere else must go through
    /// [`RawMap::parse_pairs`]: the readers stay bounds-checked either way, but only
    /// validated bytes are guaranteed to read back whole.
    pub fn from_written(pairs: Bytes, len: u32) -> RawMap {
        debug_assert!(
            RawMap::parse_pairs(pairs.clone(), len, 4).is_ok(),
            "PairsWriter output did not validate"
        );
        RawMap::from_validated(pairs, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmpv::Value;

    #[test]
    fn written_pairs_read_back_as_the_values_they_were_given() {
        let mut buf = BytesMut::from(&b"payload before"[..]);
        let mut w = PairsWriter::new(&mut buf);
        w.str("kafka.topic", "logs");
        w.int("kafka.offset", -7);
        w.int("kafka.big", i64::MAX);
        w.text("kafka.key", b"\xff\x00");
        w.nil("kafka.timestamp");
        w.text_map(
            "kafka.headers",
            [("h", &b"v"[..]), ("bin", &b"\xc1"[..])].into_iter(),
        );
        let (range, len) = w.finish();
        buf.extend_from_slice(b"payload after");
        let map = RawMap::parse_pairs(buf.freeze().slice(range), len, 2).unwrap();
        let expect = Value::Map(vec![
            ("kafka.topic".into(), "logs".into()),
            ("kafka.offset".into(), Value::from(-7)),
            ("kafka.big".into(), Value::from(i64::MAX)),
            ("kafka.key".into(), Value::Binary(vec![0xff, 0])),
            ("kafka.timestamp".into(), Value::Nil),
            (
                "kafka.headers".into(),
                Value::Map(vec![
                    ("h".into(), "v".into()),
                    ("bin".into(), Value::Binary(vec![0xc1])),
                ]),
            ),
        ]);
        assert_eq!(map.to_value(), expect);
        assert_eq!(
            map.get(b"kafka.offset").map(|v| v.to_value()),
            Some(Value::from(-7))
        );
    }

    #[test]
    fn an_empty_map_and_many_header_entries_stay_valid() {
        let mut buf = BytesMut::new();
        let w = PairsWriter::new(&mut buf);
        let (range, len) = w.finish();
        assert_eq!((range.len(), len), (0, 0));
        let mut w = PairsWriter::new(&mut buf);
        let keys: Vec<String> = (0..70_000).map(|i| format!("k{i}")).collect();
        w.text_map("h", keys.iter().map(|k| (k.as_str(), k.as_bytes())));
        let (range, len) = w.finish();
        let map = RawMap::from_written(buf.freeze().slice(range), len);
        let Some(Value::Map(h)) = map.to_value().as_map().map(|m| m[0].1.clone()) else {
            panic!("not a map");
        };
        assert_eq!(h.len(), 70_000);
    }
}
