//! Incremental request decoder (server side) and response decoder (client side).
//!
//! # How a request is found and decoded
//! 1. The first byte classifies the request: nil is a heartbeat, an array marker starts
//!    a request, anything else is [`DecodeErrorKind::NotArray`] (no waiting for more).
//! 2. The resumable [`Scanner`] walks msgpack headers until the request's last byte is
//!    buffered, checking every declared length against [`Limits::max_frame_bytes`] and
//!    nesting against [`Limits::max_depth`] as soon as the header is seen. Progress is
//!    kept across calls, so a request arriving in k reads costs O(len + k), not
//!    O(len * k).
//! 3. The complete request is split off the caller's buffer as a [`Bytes`] and decoded:
//!    the option map first (it decides compression and may reject the request
//!    cheaply), then the entries. Each record (and v1.5 metadata) is validated in place
//!    — every header, every length against the bytes present, nesting against the depth
//!    limit — and returned as a [`RawMap`](super::RawMap): a slice of the request, no
//!    copy and no per-value allocation. The entries therefore keep the request's bytes
//!    alive until they are dropped; tag and chunk are copied out (they are small).
//! 4. PackedForward payloads that are compressed are inflated in 64 KiB steps and their
//!    entries are scanned and validated as they become complete, so garbage (e.g. a
//!    bomb of zeros) fails on the first inflated step; total output is capped by
//!    [`Limits::max_decompressed_bytes`]. The inflated bytes are kept (they back the
//!    records) in one buffer.
//!
//! Total cost per request: O(wire bytes + decompressed bytes); memory: the request,
//! its inflated payload if compressed, and one [`Entry`] (96 bytes) per event.

use bytes::{Buf, Bytes, BytesMut};

use super::entry::{parse_entry, parse_record, parse_time};
use super::error::{DecodeError, DecodeErrorKind, ErrorContext};
use super::handshake;
use super::msgpack::{
    Header, ReadError, Reader, Scan, ScanError, Scanner, TopOffsets, marker_type_name,
};
use super::{Entry, EventFrame, Limits, Mode, Request};
use options::{Options, parse_options};

mod options;
mod packed;

/// Decodes client requests from a connection's byte stream.
///
/// One decoder per connection. Feed it the connection's read buffer: it only ever
/// consumes whole requests from the front and only looks at bytes the caller appended
/// since the last call, so between calls that return `Ok(None)` the caller must only
/// append to the buffer.
#[derive(Debug, Default)]
pub struct Decoder {
    limits: Limits,
    scanner: Scanner,
    offset: u64,
}

impl Decoder {
    /// A decoder with the given limits.
    pub fn new(limits: Limits) -> Self {
        Decoder {
            limits,
            scanner: Scanner::default(),
            offset: 0,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Replace the limits, between requests (after a call that returned a
    /// request, before the next): a server decodes an unauthenticated peer's
    /// requests under small limits and lifts them once the handshake is done.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// Bytes of the stream consumed so far (the offset of the next request).
    pub fn stream_offset(&self) -> u64 {
        self.offset
    }

    /// Decodes the next request from the front of `buf`.
    ///
    /// * `Ok(None)`: `buf` holds only part of a request (or nothing); it is left
    ///   untouched. Read more, append, call again.
    /// * `Ok(Some(request))`: that request's bytes were removed from the front of `buf`.
    ///   Call again: more requests may already be buffered.
    /// * `Err(e)`: the request is invalid. If [`DecodeError::can_continue`] its bytes
    ///   were consumed and decoding may go on; otherwise close the connection.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, DecodeError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        if !self.scanner.in_progress() {
            match first {
                0xc0 => {
                    buf.advance(1);
                    self.offset += 1;
                    return Ok(Some(Request::Heartbeat));
                }
                0x90..=0x9f | 0xdc | 0xdd => {}
                _ => {
                    let found = marker_type_name(first);
                    return Err(self.framing_error(DecodeErrorKind::NotArray { found }));
                }
            }
        }
        let depth = self.limits.depth();
        let len = match self.scanner.scan(buf, self.limits.max_frame_bytes, depth) {
            Ok(Scan::NeedMore) => return Ok(None),
            Ok(Scan::Complete(len)) => len,
            Err(e) => {
                let kind = scan_error_kind(e, self.limits.max_frame_bytes, depth);
                return Err(self.framing_error(kind));
            }
        };
        let start = self.offset;
        let top = self.scanner.last_top_offsets();
        let frame = buf.split_to(len).freeze();
        self.offset += len as u64;
        let result = parse_request(&frame, top, &self.limits, start);
        result.map(Some)
    }

    /// Like [`Decoder::decode`], for when the peer has closed its side: bytes left that
    /// do not form a request are [`DecodeErrorKind::Truncated`] instead of `Ok(None)`.
    pub fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, DecodeError> {
        match self.decode(buf)? {
            Some(request) => Ok(Some(request)),
            None if buf.is_empty() => Ok(None),
            None => {
                self.scanner.reset();
                let buffered = buf.len();
                Err(self.framing_error(DecodeErrorKind::Truncated { buffered }))
            }
        }
    }

    fn framing_error(&self, kind: DecodeErrorKind) -> DecodeError {
        let ctx = ErrorContext {
            offset: self.offset,
            ..ErrorContext::default()
        };
        DecodeError::new(kind, ctx)
    }
}

pub(crate) fn scan_error_kind(e: ScanError, limit: usize, depth: usize) -> DecodeErrorKind {
    match e {
        ScanError::TooLarge { declared } => DecodeErrorKind::FrameTooLarge { declared, limit },
        ScanError::TooDeep => DecodeErrorKind::TooDeep { limit: depth },
        ScanError::InvalidMarker { byte, .. } => DecodeErrorKind::InvalidMarker { byte },
    }
}

/// Decoding state for one complete request: the error context grows as parsing
/// learns the tag, the mode and the entry index.
struct RequestParser<'a> {
    frame: &'a Bytes,
    /// Where the request array's elements start (from the scanner).
    top: TopOffsets,
    limits: &'a Limits,
    ctx: ErrorContext,
    /// Bytes allocated for the inflated payload (0 unless compressed).
    inflated: usize,
}

fn parse_request(
    frame: &Bytes,
    top: TopOffsets,
    limits: &Limits,
    offset: u64,
) -> Result<Request, DecodeError> {
    let mut p = RequestParser {
        frame,
        top,
        limits,
        ctx: ErrorContext {
            offset,
            ..ErrorContext::default()
        },
        inflated: 0,
    };
    p.parse().map_err(|kind| {
        // `read_error` cannot know the limit; fill it in here.
        let kind = match kind {
            DecodeErrorKind::TooDeep { .. } => DecodeErrorKind::TooDeep {
                limit: limits.depth(),
            },
            kind => kind,
        };
        DecodeError::new(kind, p.ctx.clone())
    })
}

impl RequestParser<'_> {
    fn parse(&mut self) -> Result<Request, DecodeErrorKind> {
        let mut r = Reader::new(self.frame);
        let Header::Array(len) = r.header().map_err(read_error)? else {
            unreachable!("the decoder only scans requests that start with an array");
        };
        if len < 2 {
            return Err(DecodeErrorKind::WrongArity { len });
        }
        let tag = match r.header().map_err(read_error)? {
            Header::Str(n) | Header::Bin(n) => r.bytes(n).map_err(read_error)?,
            other => {
                return Err(DecodeErrorKind::TagNotString {
                    found: other.type_name(),
                });
            }
        };
        self.ctx.tag = Some(Bytes::copy_from_slice(tag));
        // A PING has 6 elements, more than any event mode; a short array tagged
        // "PING" is an ordinary event.
        if tag == handshake::PING && len >= 5 {
            return handshake::parse_ping(&mut r, len).map(Request::Ping);
        }

        let body = r.pos();
        let second = r.header().map_err(read_error)?;
        let mode = match second {
            Header::Array(_) => Mode::Forward,
            Header::Str(_) | Header::Bin(_) => Mode::PackedForward,
            Header::Uint(_)
            | Header::Int(_)
            | Header::F32(_)
            | Header::F64(_)
            | Header::Ext(..) => Mode::Message,
            other => {
                return Err(DecodeErrorKind::UnknownMode {
                    found: other.type_name(),
                });
            }
        };
        self.ctx.mode = Some(mode);
        let option_index = if mode == Mode::Message { 3 } else { 2 };
        if mode == Mode::Message && len < 3 {
            return Err(DecodeErrorKind::MissingRecord);
        }
        if len > option_index + 1 {
            return Err(DecodeErrorKind::WrongArity { len });
        }

        // Option first: it decides compression and signal, and rejecting there is cheap.
        // The scanner noted where it starts, so the entries are not walked twice.
        let options = if len > option_index {
            match self.top.get(option_index as usize) {
                Some(pos) => r.set_pos(pos),
                None => {
                    r.set_pos(body);
                    for _ in 1..option_index {
                        r.skip().map_err(read_error)?;
                    }
                }
            }
            parse_options(&mut r, self.frame, self.limits.depth())?
        } else {
            Options::default()
        };
        if let Some(signal @ 1..) = options.fluent_signal {
            return Err(DecodeErrorKind::UnsupportedSignal(signal));
        }

        r.set_pos(body);
        let mut entries = Vec::new();
        let mode = match mode {
            Mode::Message => {
                let header = r.header().map_err(read_error)?;
                let time = parse_time(&mut r, header)?;
                let record = parse_record(&mut r, self.limits.depth())?;
                if let Some(time) = time {
                    entries.push(Entry {
                        time,
                        record: record.to_raw(self.frame, 0),
                        metadata: None,
                    });
                }
                Mode::Message
            }
            Mode::Forward => {
                self.parse_forward_entries(&mut r, &mut entries)?;
                Mode::Forward
            }
            Mode::PackedForward | Mode::CompressedPackedForward => {
                let (Header::Str(n) | Header::Bin(n)) = r.header().map_err(read_error)? else {
                    unreachable!("mode was chosen from this header");
                };
                let base = r.pos();
                let payload = r.bytes(n).map_err(read_error)?;
                let size = options.size;
                self.parse_packed_entries(payload, base, options.compressed, size, &mut entries)?
            }
        };
        self.ctx.entry = None;
        self.ctx.mode = Some(mode);
        Ok(Request::Events(EventFrame {
            tag: self.ctx.tag.clone().unwrap_or_default(),
            mode,
            entries,
            chunk: options.chunk,
            size: options.size,
            fluent_signal: options.fluent_signal,
            metadata: options.metadata,
            wire_len: self.frame.len(),
            inflated_len: self.inflated,
        }))
    }

    fn parse_forward_entries(
        &mut self,
        r: &mut Reader<'_>,
        entries: &mut Vec<Entry>,
    ) -> Result<(), DecodeErrorKind> {
        let Header::Array(n) = r.header().map_err(read_error)? else {
            unreachable!("mode was chosen from this header");
        };
        let n = n as usize;
        if n > self.limits.max_entries_per_frame {
            return Err(DecodeErrorKind::TooManyEntries {
                limit: self.limits.max_entries_per_frame,
            });
        }
        // The smallest entry, `[0, {}]`, is 3 bytes.
        entries.reserve(n.min(r.remaining() / 3));
        for i in 0..n {
            self.ctx.entry = Some(i);
            if let Some(entry) = parse_entry(r, self.limits.depth())? {
                entries.push(entry.to_entry(self.frame, 0));
            }
        }
        Ok(())
    }
}

fn is_array_marker(b: u8) -> bool {
    matches!(b, 0x90..=0x9f | 0xdc | 0xdd)
}

/// Maps a [`Reader`] failure. Inside a scanned request `Eof` cannot happen; inside a
/// PackedForward payload it means the last entry is cut short.
pub(crate) fn read_error(e: ReadError) -> DecodeErrorKind {
    match e {
        ReadError::Eof => DecodeErrorKind::TruncatedEntries,
        ReadError::InvalidMarker(byte) => DecodeErrorKind::InvalidMarker { byte },
        ReadError::TooDeep => DecodeErrorKind::TooDeep { limit: 0 },
    }
}
