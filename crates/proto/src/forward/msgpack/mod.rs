//! Bounded msgpack primitives used by the forward codec.
//!
//! Three pieces, all working on byte slices and never trusting a length header:
//!
//! * [`parse_header`] decodes one msgpack header (the marker plus any fixed-size
//!   scalar payload) and reports "need more bytes" as `Ok(None)`.
//! * [`Scanner`] finds where one complete msgpack value ends in a growing buffer
//!   without building it. It is resumable: it keeps its position and a stack of
//!   "children still to see" counters between calls, so a frame delivered in k reads
//!   costs O(frame bytes + k) header parses in total, never a re-scan. It checks every
//!   declared length against the caller's size limit and every container against the
//!   depth limit *before* waiting for the bytes, so an `array32` claiming 4 G elements
//!   is rejected at once instead of being buffered.
//! * [`Reader`] builds [`rmpv::Value`]s (and skips values) from a slice with a depth
//!   bound; container capacity is capped by the bytes left (each element takes at least
//!   one byte), so no header can make it pre-allocate more than the input justifies.
//!
//! [`write`] holds the matching infallible encoders (`put_*`), always writing the
//! smallest header for a value.
//!
//! Non-goals: timestamps and other extension semantics (see `decode.rs`), streaming
//! `Read` input (decompressed payloads are fed to the scanner in chunks instead).

#[cfg(test)]
use rmpv::Value;

mod write;
pub(crate) use write::*;

/// One decoded msgpack header. Scalars carry their value; `Str`, `Bin`, `Ext` carry the
/// payload length that follows; `Array`/`Map` carry their element/pair count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Header {
    Nil,
    Bool(bool),
    /// Any non-negative integer written with an unsigned or fixint marker.
    Uint(u64),
    /// Any integer written with a signed marker (may still be non-negative).
    Int(i64),
    F32(f32),
    F64(f64),
    Str(u32),
    Bin(u32),
    Array(u32),
    Map(u32),
    Ext(i8, u32),
}

impl Header {
    /// Short msgpack type name for error messages.
    pub(crate) fn type_name(self) -> &'static str {
        match self {
            Header::Nil => "nil",
            Header::Bool(_) => "bool",
            Header::Uint(_) | Header::Int(_) => "integer",
            Header::F32(_) | Header::F64(_) => "float",
            Header::Str(_) => "str",
            Header::Bin(_) => "bin",
            Header::Array(_) => "array",
            Header::Map(_) => "map",
            Header::Ext(..) => "ext",
        }
    }

    /// Bytes of opaque payload following the header.
    fn payload_len(self) -> u32 {
        match self {
            Header::Str(n) | Header::Bin(n) | Header::Ext(_, n) => n,
            _ => 0,
        }
    }

    /// Number of nested values that follow (`None` for a scalar).
    fn children(self) -> Option<u64> {
        match self {
            Header::Array(n) => Some(u64::from(n)),
            Header::Map(n) => Some(2 * u64::from(n)),
            _ => None,
        }
    }
}

/// Msgpack type name of a value starting with `marker`, for "not an array" errors.
pub(crate) fn marker_type_name(marker: u8) -> &'static str {
    match parse_header(&[marker]) {
        Ok(Some((h, _))) => h.type_name(),
        Err(_) => "reserved marker 0xc1",
        // Multi-byte header: classify by marker range alone.
        Ok(None) => match marker {
            0xc4..=0xc6 => "bin",
            0xc7..=0xc9 | 0xd4..=0xd8 => "ext",
            0xca | 0xcb => "float",
            0xcc..=0xd3 => "integer",
            0xd9..=0xdb => "str",
            0xdc | 0xdd => "array",
            _ => "map",
        },
    }
}

/// The reserved marker `0xc1` (never valid msgpack).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidMarker(pub(crate) u8);

fn be<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
    b.get(1..1 + N)?.try_into().ok()
}

/// Decodes the header at the front of `b`: `Ok(None)` if `b` ends inside it, otherwise
/// the header and its length in bytes (marker + length/scalar bytes, not the payload).
pub(crate) fn parse_header(b: &[u8]) -> Result<Option<(Header, usize)>, InvalidMarker> {
    let Some(&m) = b.first() else {
        return Ok(None);
    };
    let u8_at = |b: &[u8]| be::<1>(b).map(|x| x[0]);
    let u16_at = |b: &[u8]| be::<2>(b).map(u16::from_be_bytes);
    let u32_at = |b: &[u8]| be::<4>(b).map(u32::from_be_bytes);
    let ext = |len: u32, at: usize| b.get(at).map(|&t| Header::Ext(t as i8, len));
    let parsed = match m {
        0x00..=0x7f => Some((Header::Uint(u64::from(m)), 1)),
        0x80..=0x8f => Some((Header::Map(u32::from(m & 0x0f)), 1)),
        0x90..=0x9f => Some((Header::Array(u32::from(m & 0x0f)), 1)),
        0xa0..=0xbf => Some((Header::Str(u32::from(m & 0x1f)), 1)),
        0xc0 => Some((Header::Nil, 1)),
        0xc1 => return Err(InvalidMarker(m)),
        0xc2 => Some((Header::Bool(false), 1)),
        0xc3 => Some((Header::Bool(true), 1)),
        0xc4 => u8_at(b).map(|n| (Header::Bin(n.into()), 2)),
        0xc5 => u16_at(b).map(|n| (Header::Bin(n.into()), 3)),
        0xc6 => u32_at(b).map(|n| (Header::Bin(n), 5)),
        0xc7 => u8_at(b).and_then(|n| ext(n.into(), 2)).map(|h| (h, 3)),
        0xc8 => u16_at(b).and_then(|n| ext(n.into(), 3)).map(|h| (h, 4)),
        0xc9 => u32_at(b).and_then(|n| ext(n, 5)).map(|h| (h, 6)),
        0xca => be::<4>(b).map(|x| (Header::F32(f32::from_be_bytes(x)), 5)),
        0xcb => be::<8>(b).map(|x| (Header::F64(f64::from_be_bytes(x)), 9)),
        0xcc => u8_at(b).map(|n| (Header::Uint(n.into()), 2)),
        0xcd => u16_at(b).map(|n| (Header::Uint(n.into()), 3)),
        0xce => u32_at(b).map(|n| (Header::Uint(n.into()), 5)),
        0xcf => be::<8>(b).map(|x| (Header::Uint(u64::from_be_bytes(x)), 9)),
        0xd0 => be::<1>(b).map(|x| (Header::Int(i8::from_be_bytes(x).into()), 2)),
        0xd1 => be::<2>(b).map(|x| (Header::Int(i16::from_be_bytes(x).into()), 3)),
        0xd2 => be::<4>(b).map(|x| (Header::Int(i32::from_be_bytes(x).into()), 5)),
        0xd3 => be::<8>(b).map(|x| (Header::Int(i64::from_be_bytes(x)), 9)),
        0xd4..=0xd8 => ext(1 << (m - 0xd4), 1).map(|h| (h, 2)),
        0xd9 => u8_at(b).map(|n| (Header::Str(n.into()), 2)),
        0xda => u16_at(b).map(|n| (Header::Str(n.into()), 3)),
        0xdb => u32_at(b).map(|n| (Header::Str(n), 5)),
        0xdc => u16_at(b).map(|n| (Header::Array(n.into()), 3)),
        0xdd => u32_at(b).map(|n| (Header::Array(n), 5)),
        0xde => u16_at(b).map(|n| (Header::Map(n.into()), 3)),
        0xdf => u32_at(b).map(|n| (Header::Map(n), 5)),
        0xe0..=0xff => Some((Header::Int(i64::from(m as i8)), 1)),
    };
    Ok(parsed)
}

/// Why [`Scanner::scan`] gave up on a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScanError {
    /// The value would end at `declared` bytes or later, past the size limit.
    TooLarge { declared: u64 },
    /// A container opened deeper than the depth limit.
    TooDeep,
    /// Reserved marker `byte` at `offset` from the start of the value.
    InvalidMarker { byte: u8, offset: usize },
}

/// Progress of [`Scanner::scan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scan {
    /// The buffer ends inside the value; call again with the same buffer extended.
    NeedMore,
    /// The value occupies exactly this many bytes at the front of the buffer.
    Complete(usize),
}

/// Resumable boundary finder for one msgpack value at the front of a buffer.
///
/// Invariant between calls: `pos` bytes of the buffer have been walked and `stack`
/// holds, per open container, how many child values are still to come. The caller
/// must pass the same buffer again, possibly extended at the end, until the scanner
/// returns `Complete` or an error (after which it is reset for the next value).
///
/// As a by-product it records where the first [`TopOffsets::CAPACITY`] children of
/// the outermost container start, so a request's option can be found without walking
/// its entries a second time.
#[derive(Debug, Default)]
pub(crate) struct Scanner {
    pos: usize,
    started: bool,
    stack: Vec<u64>,
    top: TopOffsets,
    last_top: TopOffsets,
}

/// Start offsets of the first children of the last completed top-level container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TopOffsets {
    offsets: [usize; TopOffsets::CAPACITY],
    seen: usize,
}

impl TopOffsets {
    /// Children recorded; enough for every request shape (PING has 6 elements).
    pub(crate) const CAPACITY: usize = 6;

    /// Offset of child `i`, if it was recorded.
    pub(crate) fn get(&self, i: usize) -> Option<usize> {
        if i < self.seen.min(Self::CAPACITY) {
            Some(self.offsets[i])
        } else {
            None
        }
    }

    fn record(&mut self, offset: usize) {
        if let Some(slot) = self.offsets.get_mut(self.seen) {
            *slot = offset;
        }
        self.seen += 1;
    }
}

impl Scanner {
    /// True while a value is partly scanned.
    pub(crate) fn in_progress(&self) -> bool {
        self.started
    }

    /// Forgets any partial progress.
    pub(crate) fn reset(&mut self) {
        self.pos = 0;
        self.started = false;
        self.stack.clear();
        self.top = TopOffsets::default();
    }

    /// Child offsets of the value the last `Complete` was for.
    pub(crate) fn last_top_offsets(&self) -> TopOffsets {
        self.last_top
    }

    /// Continues scanning the value at the front of `buf`. `max_len` bounds the value's
    /// size in bytes and `max_depth` its container nesting (the outermost container is
    /// depth 1). Cost: O(headers newly available) per call.
    pub(crate) fn scan(
        &mut self,
        buf: &[u8],
        max_len: usize,
        max_depth: usize,
    ) -> Result<Scan, ScanError> {
        if buf.len() < self.pos {
            // The caller replaced the buffer; start over rather than index past it.
            self.reset();
        }
        let result = self.scan_inner(buf, max_len as u64, max_depth);
        match result {
            Ok(Scan::NeedMore) => {}
            Ok(Scan::Complete(_)) => {
                self.last_top = self.top;
                self.reset();
            }
            Err(_) => self.reset(),
        }
        result
    }

    fn scan_inner(
        &mut self,
        buf: &[u8],
        max_len: u64,
        max_depth: usize,
    ) -> Result<Scan, ScanError> {
        loop {
            while self.stack.last() == Some(&0) {
                self.stack.pop();
            }
            if self.started && self.stack.is_empty() {
                return Ok(Scan::Complete(self.pos));
            }
            let pos = self.pos;
            let (header, header_len) = match parse_header(&buf[pos..]) {
                Ok(Some(parsed)) => parsed,
                // At most 8 header bytes are missing. `pos < max_len` holds here: every
                // container checked that its children (one byte each at least) fit.
                Ok(None) => return Ok(Scan::NeedMore),
                Err(InvalidMarker(byte)) => {
                    return Err(ScanError::InvalidMarker { byte, offset: pos });
                }
            };
            let end = pos as u64 + header_len as u64 + u64::from(header.payload_len());
            if end > max_len {
                return Err(ScanError::TooLarge { declared: end });
            }
            let children = header.children();
            if let Some(children) = children {
                if self.stack.len() >= max_depth {
                    return Err(ScanError::TooDeep);
                }
                // Each child takes at least one byte.
                if end + children > max_len {
                    return Err(ScanError::TooLarge {
                        declared: end + children,
                    });
                }
            }
            if end > buf.len() as u64 {
                return Ok(Scan::NeedMore);
            }
            if let Some(top) = self.stack.last_mut() {
                *top -= 1;
            }
            if self.stack.len() == 1 {
                self.top.record(pos);
            }
            self.started = true;
            self.pos = end as usize;
            if let Some(children) = children {
                self.stack.push(children);
            }
        }
    }
}

/// Why [`Reader`] could not produce a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// The slice ends inside the value.
    Eof,
    /// Reserved marker.
    InvalidMarker(u8),
    /// Nesting deeper than the reader's depth budget.
    TooDeep,
}

impl From<InvalidMarker> for ReadError {
    fn from(e: InvalidMarker) -> Self {
        ReadError::InvalidMarker(e.0)
    }
}

/// Cursor over a complete msgpack slice.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn set_pos(&mut self, pos: usize) {
        self.pos = pos.min(self.buf.len());
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn header(&mut self) -> Result<Header, ReadError> {
        let (h, n) = parse_header(&self.buf[self.pos..])?.ok_or(ReadError::Eof)?;
        self.pos += n;
        Ok(h)
    }

    /// Takes the next `len` bytes (a str/bin/ext payload).
    pub(crate) fn bytes(&mut self, len: u32) -> Result<&'a [u8], ReadError> {
        let len = len as usize;
        if self.remaining() < len {
            return Err(ReadError::Eof);
        }
        let out = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(out)
    }

    /// Reads a whole value with at most `depth` levels of containers.
    #[cfg(test)]
    pub(crate) fn value(&mut self, depth: usize) -> Result<Value, ReadError> {
        let start = self.pos;
        let h = self.header()?;
        self.value_with(h, start, depth)
    }

    /// Reads the rest of a value whose header `h` (which began at `start`) was just read.
    #[cfg(test)]
    pub(crate) fn value_with(
        &mut self,
        h: Header,
        start: usize,
        depth: usize,
    ) -> Result<Value, ReadError> {
        Ok(match h {
            Header::Nil => Value::Nil,
            Header::Bool(b) => Value::Boolean(b),
            Header::Uint(n) => Value::from(n),
            Header::Int(n) => Value::from(n),
            Header::F32(f) => Value::F32(f),
            Header::F64(f) => Value::F64(f),
            Header::Str(n) => {
                let bytes = self.bytes(n)?;
                match std::str::from_utf8(bytes) {
                    Ok(s) => Value::String(s.into()),
                    // rmpv has no public constructor for a non-UTF-8 `Utf8String`; its
                    // own reader builds one from the raw str (header + bytes, no nesting).
                    Err(_) => rmpv::decode::read_value(&mut &self.buf[start..self.pos])
                        .unwrap_or_else(|_| Value::Binary(bytes.to_vec())),
                }
            }
            Header::Bin(n) => Value::Binary(self.bytes(n)?.to_vec()),
            Header::Ext(ty, n) => Value::Ext(ty, self.bytes(n)?.to_vec()),
            Header::Array(n) => {
                let depth = depth.checked_sub(1).ok_or(ReadError::TooDeep)?;
                let mut items = Vec::with_capacity((n as usize).min(self.remaining()));
                for _ in 0..n {
                    items.push(self.value(depth)?);
                }
                Value::Array(items)
            }
            Header::Map(n) => {
                let depth = depth.checked_sub(1).ok_or(ReadError::TooDeep)?;
                let mut pairs = Vec::with_capacity((n as usize).min(self.remaining() / 2));
                for _ in 0..n {
                    let k = self.value(depth)?;
                    let v = self.value(depth)?;
                    pairs.push((k, v));
                }
                Value::Map(pairs)
            }
        })
    }

    /// The bytes not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// Moves past `n` bytes (at most to the end).
    pub(crate) fn advance(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
    }

    /// The bytes between two positions of this reader (empty if out of range).
    pub(crate) fn slice(&self, start: usize, end: usize) -> &'a [u8] {
        self.buf.get(start..end).unwrap_or_default()
    }

    /// Skips one value, checking every length and at most `depth` levels of
    /// containers (the same budget [`Reader::value`] applies), without building it.
    #[inline]
    pub(crate) fn skip_bounded(&mut self, depth: usize) -> Result<(), ReadError> {
        // Fast path for the values records are mostly made of: one-byte scalars and
        // short strings (fixstr), no header parse.
        let Some(&m) = self.buf.get(self.pos) else {
            return Err(ReadError::Eof);
        };
        match m {
            0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => {
                self.pos += 1;
                return Ok(());
            }
            0xa0..=0xbf => {
                let end = self.pos + 1 + usize::from(m & 0x1f);
                if end > self.buf.len() {
                    return Err(ReadError::Eof);
                }
                self.pos = end;
                return Ok(());
            }
            _ => {}
        }
        let h = self.header()?;
        self.skip_bounded_rest(h, depth)
    }

    /// [`Reader::skip_bounded`] for a value whose header `h` was just read.
    pub(crate) fn skip_bounded_rest(&mut self, h: Header, depth: usize) -> Result<(), ReadError> {
        match h {
            Header::Str(n) | Header::Bin(n) | Header::Ext(_, n) => {
                self.bytes(n)?;
            }
            Header::Array(_) | Header::Map(_) => {
                let depth = depth.checked_sub(1).ok_or(ReadError::TooDeep)?;
                let children = h.children().unwrap_or(0);
                // Each child takes at least one byte.
                if children > self.remaining() as u64 {
                    return Err(ReadError::Eof);
                }
                for _ in 0..children {
                    self.skip_bounded(depth)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Skips the rest of a value whose header `h` was just read (no depth bound:
    /// for input already validated).
    pub(crate) fn skip_rest(&mut self, h: Header) -> Result<(), ReadError> {
        self.bytes(h.payload_len())?;
        if let Some(children) = h.children() {
            if children > self.remaining() as u64 {
                return Err(ReadError::Eof);
            }
            for _ in 0..children {
                self.skip()?;
            }
        }
        Ok(())
    }

    /// Skips one value without building it. Iterative, so no depth limit is needed.
    pub(crate) fn skip(&mut self) -> Result<(), ReadError> {
        let mut pending: u64 = 1;
        while pending > 0 {
            pending -= 1;
            let h = self.header()?;
            self.bytes(h.payload_len())?;
            if let Some(children) = h.children() {
                if children > self.remaining() as u64 {
                    return Err(ReadError::Eof);
                }
                pending += children;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        put_value(&mut out, v);
        out
    }

    #[test]
    fn every_marker_parses_or_needs_more_without_panicking() {
        for m in 0..=255u8 {
            let mut buf = vec![m];
            // Truncated header: either parsed (1-byte header), need-more or 0xc1.
            let _ = parse_header(&buf);
            buf.extend_from_slice(&[0; 16]);
            match parse_header(&buf) {
                Ok(Some((_, n))) => assert!(n <= 9, "marker {m:#x}"),
                Ok(None) => panic!("marker {m:#x} needs more than 17 bytes"),
                Err(InvalidMarker(b)) => assert_eq!(b, 0xc1),
            }
        }
    }

    #[test]
    fn encoder_round_trips_through_reader_with_minimal_headers() {
        let v = Value::Map(vec![
            (Value::from("a"), Value::from(-33)),
            (Value::from("u"), Value::from(u64::MAX)),
            (Value::from("i"), Value::from(i64::MIN)),
            (
                Value::Binary(vec![0; 300]),
                Value::Array(vec![Value::Nil; 20]),
            ),
            (Value::from("e"), Value::Ext(0, vec![1; 8])),
            (Value::from("x"), Value::Ext(5, vec![1; 3])),
            (Value::from("f"), Value::F32(1.5)),
            (Value::from("s"), Value::from("x".repeat(70_000))),
        ]);
        let bytes = encode(&v);
        let mut r = Reader::new(&bytes);
        assert_eq!(r.value(8).unwrap(), v);
        assert_eq!(r.remaining(), 0);
        assert_eq!(encode(&Value::from(5)), [0x05]);
        assert_eq!(encode(&Value::from(-1)), [0xff]);
        assert_eq!(encode(&Value::from(200)), [0xcc, 200]);
        assert_eq!(encode(&Value::from(-100)), [0xd0, 0x9c]);
    }

    #[test]
    fn reader_keeps_invalid_utf8_str_as_str_bytes() {
        let bytes = [0xa3, 0xff, 0xfe, 0xfd];
        let v = Reader::new(&bytes).value(1).unwrap();
        let Value::String(s) = &v else {
            panic!("{v:?}")
        };
        assert_eq!(s.as_bytes(), &[0xff, 0xfe, 0xfd]);
        assert_eq!(encode(&v), bytes);
    }

    #[test]
    fn reader_rejects_depth_and_truncation_without_large_allocation() {
        let nested = [0x91u8; 10];
        assert_eq!(Reader::new(&nested).value(4), Err(ReadError::TooDeep));
        // array32 of 4 G elements followed by nothing: Eof, capacity capped at 0.
        let huge = [0xdd, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(Reader::new(&huge).value(4), Err(ReadError::Eof));
        assert_eq!(Reader::new(&huge).skip(), Err(ReadError::Eof));
        assert_eq!(
            Reader::new(&[0xc1]).skip(),
            Err(ReadError::InvalidMarker(0xc1))
        );
    }

    #[test]
    fn scanner_resumes_and_finds_the_exact_boundary() {
        let v = Value::Array(vec![Value::from("tag"), Value::Binary(vec![7; 100])]);
        let mut bytes = encode(&v);
        let len = bytes.len();
        bytes.extend_from_slice(&[0xc0, 0xc0]);
        let mut s = Scanner::default();
        for end in 0..len {
            assert_eq!(
                s.scan(&bytes[..end], 1 << 20, 8),
                Ok(Scan::NeedMore),
                "{end}"
            );
        }
        assert_eq!(s.scan(&bytes, 1 << 20, 8), Ok(Scan::Complete(len)));
        assert!(!s.in_progress());
        let top = s.last_top_offsets();
        assert_eq!(
            (top.get(0), top.get(1), top.get(2)),
            (Some(1), Some(5), None)
        );
    }

    #[test]
    fn scanner_rejects_oversized_claims_before_the_bytes_arrive() {
        let mut s = Scanner::default();
        let array32 = [0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0];
        assert!(matches!(
            s.scan(&array32, 1 << 20, 8),
            Err(ScanError::TooLarge { .. })
        ));
        let str32 = [0x92, 0xa1, b't', 0xdb, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            s.scan(&str32, 1 << 20, 8),
            Err(ScanError::TooLarge { .. })
        ));
        let deep = [0x91u8; 100];
        assert_eq!(s.scan(&deep, 1 << 20, 8), Err(ScanError::TooDeep));
        assert_eq!(
            s.scan(&[0x92, 0xc0, 0xc1], 1 << 20, 8),
            Err(ScanError::InvalidMarker {
                byte: 0xc1,
                offset: 2
            })
        );
        // Exactly at the limit is fine, one byte over is not.
        assert_eq!(s.scan(&[0x92, 0xc0, 0xc0], 3, 8), Ok(Scan::Complete(3)));
        assert!(s.scan(&[0x93, 0xc0, 0xc0, 0xc0], 3, 8).is_err());
    }

    #[test]
    fn scanner_restarts_when_the_buffer_shrinks() {
        let mut s = Scanner::default();
        assert_eq!(s.scan(&[0x92, 0xc0], 100, 8), Ok(Scan::NeedMore));
        assert_eq!(s.scan(&[0xc0], 100, 8), Ok(Scan::Complete(1)));
    }
}
