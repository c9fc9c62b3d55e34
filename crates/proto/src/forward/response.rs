//! Client side: decodes what a forward server sends back (HELO, PONG, `{"ack": chunk}`)
//! with the same resumable scanner as the request decoder, limited to 64 KiB and 8
//! levels per message. Any complete msgpack value is consumed, so an unexpected one
//! is a [`DecodeErrorKind::MalformedResponse`] that leaves the stream in sync.

use bytes::{Buf, Bytes, BytesMut};

use super::decode::{read_error, scan_error_kind};
use super::error::{DecodeError, DecodeErrorKind, ErrorContext};
use super::handshake::{self, Helo, Pong};
use super::msgpack::{Header, Reader, Scan, Scanner};

/// A message from a forward server, decoded by [`ResponseDecoder`].
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// `["HELO", {...}]`: the server wants a handshake.
    Helo(Helo),
    /// `["PONG", ...]`: the handshake result; check it with [`handshake::verify_pong`].
    Pong(Pong),
    /// `{"ack": chunk}`: the request carrying `chunk` was accepted.
    Ack(Bytes),
}

/// Decodes server messages (HELO, PONG, acks) on the client side of a connection.
/// Same buffer contract as [`Decoder`](super::Decoder); messages are limited to 64 KiB.
#[derive(Debug, Default)]
pub struct ResponseDecoder {
    scanner: Scanner,
    offset: u64,
}

const MAX_RESPONSE_BYTES: usize = 64 << 10;
const MAX_RESPONSE_DEPTH: usize = 8;

impl ResponseDecoder {
    /// A fresh decoder for one connection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes the next server message from the front of `buf`; see
    /// [`Decoder::decode`](super::Decoder::decode) for the meaning of the results.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Response>, DecodeError> {
        let ctx = ErrorContext {
            offset: self.offset,
            ..ErrorContext::default()
        };
        let len = match self
            .scanner
            .scan(buf, MAX_RESPONSE_BYTES, MAX_RESPONSE_DEPTH)
        {
            Ok(Scan::NeedMore) => return Ok(None),
            Ok(Scan::Complete(len)) => len,
            Err(e) => {
                let kind = scan_error_kind(e, MAX_RESPONSE_BYTES, MAX_RESPONSE_DEPTH);
                return Err(DecodeError::new(kind, ctx));
            }
        };
        let result = parse_response(&buf[..len]);
        buf.advance(len);
        self.offset += len as u64;
        result.map(Some).map_err(|kind| DecodeError::new(kind, ctx))
    }
}

fn parse_response(msg: &[u8]) -> Result<Response, DecodeErrorKind> {
    let malformed = |reason| DecodeErrorKind::MalformedResponse { reason };
    let mut r = Reader::new(msg);
    match r.header().map_err(read_error)? {
        Header::Map(n) => {
            for _ in 0..n {
                let key_start = r.pos();
                let is_ack = match r.header().map_err(read_error)? {
                    Header::Str(len) | Header::Bin(len) => {
                        r.bytes(len).map_err(read_error)? == b"ack"
                    }
                    _ => {
                        r.set_pos(key_start);
                        r.skip().map_err(read_error)?;
                        false
                    }
                };
                if is_ack {
                    return match r.header().map_err(read_error)? {
                        Header::Str(len) | Header::Bin(len) => Ok(Response::Ack(
                            Bytes::copy_from_slice(r.bytes(len).map_err(read_error)?),
                        )),
                        _ => Err(malformed("ack value is not a string")),
                    };
                }
                r.skip().map_err(read_error)?;
            }
            Err(malformed("map without an ack key"))
        }
        Header::Array(n) if n >= 1 => {
            let kind = match r.header().map_err(read_error)? {
                Header::Str(len) | Header::Bin(len) => r.bytes(len).map_err(read_error)?,
                _ => return Err(malformed("message type is not a string")),
            };
            match kind {
                handshake::HELO => handshake::parse_helo(&mut r, n).map(Response::Helo),
                handshake::PONG => handshake::parse_pong(&mut r, n).map(Response::Pong),
                _ => Err(malformed("array is neither HELO nor PONG")),
            }
        }
        _ => Err(malformed("neither an ack map nor a HELO/PONG array")),
    }
}
