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

mod read;
mod write;
pub(crate) use read::{ReadError, Reader};
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

#[cfg(test)]
mod tests;
