//! Syslog over a stream (RFC 6587): octet counting (`MSG-LEN SP MSG`, as RFC 5425
//! TLS and rsyslog `omfwd` with `TCP_Framing="octet-counted"` send) and newline
//! framing (`MSG LF`, the traditional way).
//!
//! [`Framer`] cuts frames off the front of the caller's buffer as zero-copy
//! [`Bytes`]. `Auto` decides once per connection from its first byte: a digit `1`..`9`
//! starts an octet count, anything else (`<` in practice) means newline framing.
//!
//! Memory is bounded by `max_message_bytes`: a frame longer than that is emitted
//! truncated to it (`Frame::truncated`, counted in [`Framer::truncated`]) as soon as
//! that much has arrived, and the rest of it is discarded as it arrives: up to the
//! declared length for octet counting (so the next frame is read exactly from its
//! boundary, however large the count), up to the next LF for newline framing. The
//! caller therefore never needs to hold more than `max_message_bytes` plus a frame
//! header plus one read.
//!
//! Octet counting: a header must be `NONZERO-DIGIT *DIGIT SP` with at most 19
//! digits; anything else is an error after which the stream cannot be resynchronised
//! (close the connection). Stray CR/LF between frames are skipped (senders that
//! append a newline to counted frames). Newline framing: a trailing CR is left to
//! the message parser, empty lines are skipped. At end of stream an unterminated
//! last line is a frame; a cut octet-counted frame is an error.

use bytes::{Bytes, BytesMut};

/// How frames are delimited on one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// Decide from the connection's first byte.
    #[default]
    Auto,
    /// `MSG-LEN SP MSG`.
    OctetCounting,
    /// `MSG LF`.
    Newline,
}

/// One message's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The message (at most `max_message_bytes`).
    pub bytes: Bytes,
    /// Whether the sender's frame was longer and was cut.
    pub truncated: bool,
}

/// Why the stream cannot be read on: close the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// Octet counting: the header is not `MSG-LEN SP`.
    #[error("invalid octet count header")]
    BadOctetCount,
    /// The stream ended inside an octet-counted frame.
    #[error("stream ended inside a frame ({0} bytes missing)")]
    CutFrame(u64),
}

/// Most digits of an octet count (19 digits always fit in a u64).
const MAX_COUNT_DIGITS: usize = 19;

/// Cuts syslog frames off a stream (sans-IO).
#[derive(Debug, Clone)]
pub struct Framer {
    framing: Framing,
    max: usize,
    /// Octet counting: bytes of an over-long frame still to discard.
    skip: u64,
    /// Newline: discarding the rest of an over-long line.
    skip_line: bool,
    truncated: u64,
}

impl Framer {
    /// A framer for one connection. `max_message_bytes` is at least 1.
    pub fn new(framing: Framing, max_message_bytes: usize) -> Self {
        Framer {
            framing,
            max: max_message_bytes.max(1),
            skip: 0,
            skip_line: false,
            truncated: 0,
        }
    }

    /// The framing in use (`Auto` until the first byte arrived).
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Frames cut to `max_message_bytes` so far.
    pub fn truncated(&self) -> u64 {
        self.truncated
    }

    /// The next complete frame, `Ok(None)` when more bytes are needed. Consumes
    /// what it returns and what it discards from `buf`.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if self.framing == Framing::Auto {
            match buf.first() {
                None => return Ok(None),
                Some(b'1'..=b'9') => self.framing = Framing::OctetCounting,
                Some(_) => self.framing = Framing::Newline,
            }
        }
        match self.framing {
            Framing::OctetCounting => self.octet(buf),
            _ => Ok(self.newline(buf)),
        }
    }

    /// Like [`Framer::decode`] once the stream has ended: an unterminated last line
    /// is returned, a cut counted frame is an error. Call until `Ok(None)`.
    pub fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        if self.framing == Framing::OctetCounting {
            let missing = self.skip;
            self.skip = 0;
            let leftover = buf.iter().any(|&b| !matches!(b, b'\r' | b'\n'));
            buf.clear();
            if missing > 0 || leftover {
                return Err(FrameError::CutFrame(missing));
            }
            return Ok(None);
        }
        if self.skip_line || buf.is_empty() {
            self.skip_line = false;
            buf.clear();
            return Ok(None);
        }
        let bytes = buf.split().freeze();
        Ok(Some(Frame {
            bytes,
            truncated: false,
        }))
    }

    fn octet(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if self.skip > 0 {
            let n = usize::try_from(self.skip)
                .unwrap_or(usize::MAX)
                .min(buf.len());
            let _ = buf.split_to(n);
            self.skip -= n as u64;
            if self.skip > 0 {
                return Ok(None);
            }
        }
        let stray = buf
            .iter()
            .take_while(|&&b| matches!(b, b'\r' | b'\n'))
            .count();
        let _ = buf.split_to(stray);
        let digits = buf.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits > MAX_COUNT_DIGITS || buf.first() == Some(&b'0') {
            return Err(FrameError::BadOctetCount);
        }
        match buf.get(digits) {
            None => return Ok(None),
            Some(b' ') if digits > 0 => {}
            Some(_) => return Err(FrameError::BadOctetCount),
        }
        let len = buf[..digits]
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
        let body = buf.len() - digits - 1;
        if len <= self.max as u64 {
            let len = len as usize;
            if body < len {
                return Ok(None);
            }
            let _ = buf.split_to(digits + 1);
            let bytes = buf.split_to(len).freeze();
            return Ok(Some(Frame {
                bytes,
                truncated: false,
            }));
        }
        if body < self.max {
            return Ok(None);
        }
        let _ = buf.split_to(digits + 1);
        let bytes = buf.split_to(self.max).freeze();
        self.skip = len - self.max as u64;
        self.truncated += 1;
        Ok(Some(Frame {
            bytes,
            truncated: true,
        }))
    }

    fn newline(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        loop {
            if self.skip_line {
                match memchr(buf) {
                    Some(p) => {
                        let _ = buf.split_to(p + 1);
                        self.skip_line = false;
                    }
                    None => {
                        buf.clear();
                        return None;
                    }
                }
            }
            let window = &buf[..buf.len().min(self.max + 1)];
            match memchr(window) {
                Some(0) => {
                    let _ = buf.split_to(1);
                }
                Some(p) => {
                    let bytes = buf.split_to(p).freeze();
                    let _ = buf.split_to(1);
                    return Some(Frame {
                        bytes,
                        truncated: false,
                    });
                }
                None if buf.len() > self.max => {
                    let bytes = buf.split_to(self.max).freeze();
                    self.skip_line = true;
                    self.truncated += 1;
                    return Some(Frame {
                        bytes,
                        truncated: true,
                    });
                }
                None => return None,
            }
        }
    }
}

fn memchr(s: &[u8]) -> Option<usize> {
    memchr::memchr(b'\n', s)
}
