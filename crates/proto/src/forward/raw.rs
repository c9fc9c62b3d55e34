//! Records kept as the msgpack bytes they arrived in, read in place.
//!
//! The decoder validates each record once (every header parsed, every length checked
//! against the bytes present, nesting within the depth limit, no reserved marker) and
//! then hands out a [`RawMap`]: a reference-counted slice of the request's buffer (or
//! of the inflated payload), not a tree of values. Looking a key up, iterating,
//! converting to JSON or re-sending the record walks those bytes without allocating.
//!
//! # Layout and invariants
//! A [`RawMap`] holds the pair count and the concatenated encodings of its pairs
//! (`key value key value ...`) *without* the map header, so the same form serves a
//! record cut from a forward request and one read back from a disk buffer (which
//! stores the count separately). [`RawMap::write_msgpack`] writes the smallest map
//! header followed by those bytes.
//!
//! Every `RawMap` was validated when built ([`RawMap::parse_pairs`] or inside the
//! decoder), so the readers below never see malformed input; they are still
//! bounds-checked and stop (yield `None`) instead of panicking if that ever failed.
//! Nesting is bounded by the depth the map was validated with, so recursive consumers
//! (JSON writers, [`RawMap::to_value`]) recurse at most that deep.

use std::fmt;

use bytes::{BufMut, Bytes};
use rmpv::Value;

use super::msgpack::{Header, ReadError, Reader, put_map_len, put_str, put_value};

/// A msgpack map kept as its encoded pairs (`key value key value ...`, no map
/// header) plus the pair count, validated when built: a reference-counted slice of
/// the bytes it arrived in, read in place by [`RawMap::get`] and [`RawMap::iter`].
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct RawMap {
    len: u32,
    pairs: Bytes,
}

/// Why bytes are not a valid map body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RawError {
    /// The bytes end inside a pair.
    #[error("map ends inside pair {0}")]
    Truncated(u32),
    /// Reserved marker 0xc1.
    #[error("invalid msgpack marker {0:#04x}")]
    InvalidMarker(u8),
    /// Containers nest deeper than allowed.
    #[error("map nests deeper than {0}")]
    TooDeep(usize),
    /// Bytes after the last pair.
    #[error("{0} bytes after the last pair")]
    Trailing(usize),
}

impl RawMap {
    /// Validates that `pairs` holds exactly `len` key/value encodings nesting at most
    /// `max_depth` containers below the map, and keeps it (no copy).
    pub fn parse_pairs(pairs: Bytes, len: u32, max_depth: usize) -> Result<RawMap, RawError> {
        let (map, used) = RawMap::parse_prefix(&pairs, len, max_depth)?;
        match pairs.len() - used {
            0 => Ok(map),
            trailing => Err(RawError::Trailing(trailing)),
        }
    }

    /// Validates `len` pairs at the front of `bytes` as [`RawMap::parse_pairs`] does;
    /// returns them as a slice of `bytes` and the number of bytes they take.
    pub fn parse_prefix(
        bytes: &Bytes,
        len: u32,
        max_depth: usize,
    ) -> Result<(RawMap, usize), RawError> {
        let mut r = Reader::new(bytes);
        for i in 0..len {
            for _ in 0..2 {
                r.skip_bounded(max_depth).map_err(|e| match e {
                    ReadError::Eof => RawError::Truncated(i),
                    ReadError::InvalidMarker(b) => RawError::InvalidMarker(b),
                    ReadError::TooDeep => RawError::TooDeep(max_depth),
                })?;
            }
        }
        let used = r.pos();
        Ok((
            RawMap {
                len,
                pairs: bytes.slice(..used),
            },
            used,
        ))
    }

    /// Wraps bytes the caller already validated.
    pub(crate) fn from_validated(pairs: Bytes, len: u32) -> RawMap {
        RawMap { len, pairs }
    }

    /// Encodes decoded pairs (for producers that hold values, and for tests).
    ///
    /// # Panics
    /// If one string, bin or container exceeds msgpack's 2^32 limits.
    pub fn encode(pairs: &[(Value, Value)]) -> RawMap {
        let mut out = Vec::new();
        for (k, v) in pairs {
            put_value(&mut out, k);
            put_value(&mut out, v);
        }
        let len = u32::try_from(pairs.len()).expect("fewer than 2^32 pairs");
        RawMap {
            len,
            pairs: out.into(),
        }
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True when the map has no pair.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The encoded pairs, without the map header.
    pub fn pairs_bytes(&self) -> &Bytes {
        &self.pairs
    }

    /// Appends the map as msgpack (smallest header, then the pairs as received).
    pub fn write_msgpack(&self, out: &mut impl BufMut) {
        put_map_len(out, self.len);
        out.put_slice(&self.pairs);
    }

    /// This map with one more pair at the end (one copy of the pairs).
    pub fn with_pair(&self, key: &[u8], value: &RawMap) -> RawMap {
        let mut out = Vec::with_capacity(self.pairs.len() + key.len() + value.pairs.len() + 16);
        out.extend_from_slice(&self.pairs);
        put_str(&mut out, key);
        value.write_msgpack(&mut out);
        RawMap {
            len: self.len.saturating_add(1),
            pairs: out.into(),
        }
    }

    /// The pairs in order, read in place.
    pub fn iter(&self) -> Pairs<'_> {
        Pairs {
            values: Values::new(&self.pairs, u64::from(self.len) * 2),
        }
    }

    /// The value of the first pair whose key is a str or bin equal to `key`.
    pub fn get(&self, key: &[u8]) -> Option<RawValue<'_>> {
        map_get(&self.pairs, self.len, key)
    }

    /// Decodes the whole map into an owned [`Value::Map`] (allocates).
    pub fn to_value(&self) -> Value {
        Value::Map(
            self.iter()
                .map(|(k, v)| (k.to_value(), v.to_value()))
                .collect(),
        )
    }
}

impl fmt::Debug for RawMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// One msgpack value inside a [`RawMap`], borrowed from its bytes.
#[derive(Clone, Copy, PartialEq)]
pub enum RawValue<'a> {
    /// nil
    Nil,
    /// true / false
    Bool(bool),
    /// An integer with an unsigned or positive fixint marker.
    Uint(u64),
    /// An integer with a signed marker.
    Int(i64),
    /// float 32
    F32(f32),
    /// float 64
    F64(f64),
    /// str: the bytes as sent (not necessarily UTF-8).
    Str(&'a [u8]),
    /// bin
    Bin(&'a [u8]),
    /// ext: type and data.
    Ext(i8, &'a [u8]),
    /// An array, read in place.
    Array(RawSeq<'a>),
    /// A map, read in place.
    Map(RawSeq<'a>),
}

/// The elements of an array (or the pairs of a map, flattened) inside a record.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RawSeq<'a> {
    /// Encoded children, back to back.
    bytes: &'a [u8],
    /// Number of elements (for a map: pairs).
    len: u32,
}

impl<'a> RawSeq<'a> {
    /// Elements (array) or pairs (map).
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Array elements in order.
    pub fn items(&self) -> Values<'a> {
        Values::new(self.bytes, u64::from(self.len))
    }

    /// Map pairs in order.
    pub fn pairs(&self) -> Pairs<'a> {
        Pairs {
            values: Values::new(self.bytes, u64::from(self.len) * 2),
        }
    }

    /// Map lookup by str/bin key.
    pub fn get(&self, key: &[u8]) -> Option<RawValue<'a>> {
        map_get(self.bytes, self.len, key)
    }
}

impl fmt::Debug for RawSeq<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RawSeq({} elements, {} bytes)",
            self.len,
            self.bytes.len()
        )
    }
}

fn map_get<'a>(bytes: &'a [u8], len: u32, key: &[u8]) -> Option<RawValue<'a>> {
    let mut r = Reader::new(bytes);
    for _ in 0..len {
        let matches = match r.header().ok()? {
            Header::Str(n) | Header::Bin(n) => r.bytes(n).ok()? == key,
            h => {
                r.skip_rest(h).ok()?;
                false
            }
        };
        if matches {
            return read_value(&mut r);
        }
        r.skip().ok()?;
    }
    None
}

/// Reads one value at the reader's position; containers are skipped over and
/// returned as a [`RawSeq`] of their children.
fn read_value<'a>(r: &mut Reader<'a>) -> Option<RawValue<'a>> {
    let h = r.header().ok()?;
    Some(match h {
        Header::Nil => RawValue::Nil,
        Header::Bool(b) => RawValue::Bool(b),
        Header::Uint(n) => RawValue::Uint(n),
        Header::Int(n) => RawValue::Int(n),
        Header::F32(f) => RawValue::F32(f),
        Header::F64(f) => RawValue::F64(f),
        Header::Str(n) => RawValue::Str(r.bytes(n).ok()?),
        Header::Bin(n) => RawValue::Bin(r.bytes(n).ok()?),
        Header::Ext(ty, n) => RawValue::Ext(ty, r.bytes(n).ok()?),
        Header::Array(n) | Header::Map(n) => {
            let start = r.pos();
            r.skip_rest(h).ok()?;
            let seq = RawSeq {
                bytes: r.slice(start, r.pos()),
                len: n,
            };
            if matches!(h, Header::Map(_)) {
                RawValue::Map(seq)
            } else {
                RawValue::Array(seq)
            }
        }
    })
}

/// Iterator over consecutive values.
#[derive(Clone)]
pub struct Values<'a> {
    r: Reader<'a>,
    left: u64,
}

impl<'a> Values<'a> {
    fn new(bytes: &'a [u8], count: u64) -> Self {
        Values {
            r: Reader::new(bytes),
            left: count,
        }
    }
}

impl<'a> Iterator for Values<'a> {
    type Item = RawValue<'a>;

    fn next(&mut self) -> Option<RawValue<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let v = read_value(&mut self.r);
        if v.is_none() {
            self.left = 0;
        }
        v
    }
}

/// Iterator over key/value pairs.
#[derive(Clone)]
pub struct Pairs<'a> {
    values: Values<'a>,
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (RawValue<'a>, RawValue<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let k = self.values.next()?;
        let v = self.values.next()?;
        Some((k, v))
    }
}

impl<'a> RawValue<'a> {
    /// The bytes of a str or bin.
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match *self {
            RawValue::Str(b) | RawValue::Bin(b) => Some(b),
            _ => None,
        }
    }

    /// A non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            RawValue::Uint(n) => Some(n),
            RawValue::Int(n) => u64::try_from(n).ok(),
            _ => None,
        }
    }

    /// Decodes into an owned [`Value`] (allocates for strings and containers).
    pub fn to_value(&self) -> Value {
        match *self {
            RawValue::Nil => Value::Nil,
            RawValue::Bool(b) => Value::Boolean(b),
            RawValue::Uint(n) => Value::from(n),
            RawValue::Int(n) => Value::from(n),
            RawValue::F32(f) => Value::F32(f),
            RawValue::F64(f) => Value::F64(f),
            RawValue::Str(b) => match std::str::from_utf8(b) {
                Ok(s) => Value::String(s.into()),
                // rmpv has no public constructor for a non-UTF-8 `Utf8String`; its own
                // reader builds one from an encoded str.
                Err(_) => {
                    let mut enc = Vec::with_capacity(b.len() + 5);
                    put_str(&mut enc, b);
                    rmpv::decode::read_value(&mut &enc[..])
                        .unwrap_or_else(|_| Value::Binary(b.to_vec()))
                }
            },
            RawValue::Bin(b) => Value::Binary(b.to_vec()),
            RawValue::Ext(ty, b) => Value::Ext(ty, b.to_vec()),
            RawValue::Array(seq) => Value::Array(seq.items().map(|v| v.to_value()).collect()),
            RawValue::Map(seq) => Value::Map(
                seq.pairs()
                    .map(|(k, v)| (k.to_value(), v.to_value()))
                    .collect(),
            ),
        }
    }
}

impl fmt::Debug for RawValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawValue::Str(b) => write!(f, "{:?}", b.escape_ascii().to_string()),
            RawValue::Array(_) | RawValue::Map(_) => write!(f, "{}", self.to_value()),
            other => write!(f, "{}", other.to_value()),
        }
    }
}

impl fmt::Display for RawValue<'_> {
    /// rmpv's text form (strings quoted), as [`Value`]'s `Display`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_value())
    }
}

/// Span of a validated map inside the slice a [`Reader`] walks: the pairs' bytes
/// (after the map header) and the pair count.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MapSpan {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) len: u32,
}

impl MapSpan {
    /// Validates the rest of a map whose header `Map(len)` was just read.
    pub(crate) fn read(r: &mut Reader<'_>, len: u32, depth: usize) -> Result<MapSpan, ReadError> {
        let start = r.pos();
        r.skip_bounded_rest(Header::Map(len), depth)?;
        Ok(MapSpan {
            start,
            end: r.pos(),
            len,
        })
    }

    /// The map as a slice of `backing`, where the walked slice began at `base`.
    pub(crate) fn to_raw(self, backing: &Bytes, base: usize) -> RawMap {
        RawMap::from_validated(backing.slice(base + self.start..base + self.end), self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        Value::Map(vec![
            (Value::from("message"), Value::from("hello")),
            (Value::Binary(b"bin".to_vec()), Value::from(-3)),
            (Value::from(7), Value::from(u64::MAX)),
            (
                Value::from("k8s"),
                Value::Map(vec![(
                    Value::from("pod"),
                    Value::Array(vec![Value::Nil, Value::F64(1.5), Value::Boolean(true)]),
                )]),
            ),
            (Value::from("ext"), Value::Ext(5, vec![1, 2, 3])),
        ])
    }

    fn raw(v: &Value) -> RawMap {
        RawMap::encode(v.as_map().unwrap())
    }

    #[test]
    fn lookup_iteration_and_decoding_read_the_bytes_in_place() {
        let v = sample();
        let m = raw(&v);
        assert_eq!(m.len(), 5);
        assert_eq!(m.to_value(), v);
        assert_eq!(m.get(b"message"), Some(RawValue::Str(b"hello")));
        assert_eq!(m.get(b"bin").and_then(|v| v.as_u64()), None);
        assert_eq!(m.get(b"bin"), Some(RawValue::Int(-3)));
        assert_eq!(m.get(b"missing"), None);
        // A non-string key is skipped by lookups, kept by iteration.
        assert_eq!(m.iter().nth(2).map(|(k, _)| k), Some(RawValue::Uint(7)));
        let Some(RawValue::Map(k8s)) = m.get(b"k8s") else {
            panic!("{:?}", m.get(b"k8s"))
        };
        let Some(RawValue::Array(pod)) = k8s.get(b"pod") else {
            panic!()
        };
        assert_eq!(pod.len(), 3);
        assert_eq!(pod.items().nth(1), Some(RawValue::F64(1.5)));
        // After the nested map, the next pair is still found.
        assert_eq!(m.get(b"ext"), Some(RawValue::Ext(5, &[1, 2, 3])));
    }

    #[test]
    fn write_msgpack_and_with_pair_produce_valid_maps() {
        let m = raw(&sample());
        let mut out = Vec::new();
        m.write_msgpack(&mut out);
        assert_eq!(rmpv::decode::read_value(&mut &out[..]).unwrap(), sample());
        let meta = raw(&Value::Map(vec![(Value::from("a"), Value::from(1))]));
        let more = m.with_pair(b"@metadata", &meta);
        assert_eq!(more.len(), 6);
        assert_eq!(
            more.get(b"@metadata").map(|v| v.to_value()),
            Some(meta.to_value())
        );
        let again = RawMap::parse_pairs(more.pairs_bytes().clone(), 6, 8).unwrap();
        assert_eq!(again, more);
    }

    #[test]
    fn parse_pairs_rejects_every_malformation() {
        let m = raw(&sample());
        let bytes = m.pairs_bytes().clone();
        assert_eq!(RawMap::parse_pairs(bytes.clone(), 5, 8).as_ref(), Ok(&m));
        for cut in 0..bytes.len() {
            assert!(
                RawMap::parse_pairs(bytes.slice(..cut), 5, 8).is_err(),
                "cut {cut}"
            );
        }
        assert_eq!(
            RawMap::parse_pairs(bytes.clone(), 4, 8),
            Err(RawError::Trailing(10))
        );
        // The nested map holds an array: two levels below the record.
        assert_eq!(
            RawMap::parse_pairs(bytes.clone(), 5, 1),
            Err(RawError::TooDeep(1))
        );
        assert!(RawMap::parse_pairs(bytes, 5, 2).is_ok());
        assert_eq!(
            RawMap::parse_pairs(Bytes::from_static(&[0xa1, b'k', 0xc1]), 1, 8),
            Err(RawError::InvalidMarker(0xc1))
        );
        // A declared length of 2^32-1 is a truncation, not an allocation.
        let huge = Bytes::from_static(&[0xa1, b'k', 0xdd, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(RawMap::parse_pairs(huge, 1, 8), Err(RawError::Truncated(0)));
    }

    #[test]
    fn readers_stop_instead_of_panicking_on_bytes_that_were_not_validated() {
        // Only reachable through a bug: from_validated on garbage.
        for garbage in [&[0xdd, 0xff][..], &[0xc1, 0xc1], &[0xa5, b'x'], &[0x81]] {
            let m = RawMap::from_validated(Bytes::copy_from_slice(garbage), 3);
            let _ = m.get(b"x");
            let _ = m.iter().count();
            let _ = m.to_value();
            let _ = format!("{m:?}");
        }
    }
}
