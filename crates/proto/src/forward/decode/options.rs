//! The option map of a request (chunk, size, compressed, fluent_signal, metadata)
//! and the compression it names.

use bytes::Bytes;

use super::read_error;
use crate::forward::error::DecodeErrorKind;
use crate::forward::msgpack::{Header, Reader};
use crate::forward::raw::{MapSpan, RawMap};

/// Option map of a request, as far as the decoder cares.
#[derive(Debug, Default)]
pub(super) struct Options {
    pub(super) chunk: Option<Bytes>,
    pub(super) size: Option<u64>,
    pub(super) compressed: Option<Algorithm>,
    pub(super) fluent_signal: Option<u64>,
    pub(super) metadata: Option<RawMap>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Algorithm {
    Gzip,
    Zstd,
}

impl Algorithm {
    pub(super) fn name(self) -> &'static str {
        match self {
            Algorithm::Gzip => "gzip",
            Algorithm::Zstd => "zstd",
        }
    }

    /// Fluent Bit trusts the payload's magic over the option; so do we. A plain
    /// entry stream starts with an array marker, never with either magic.
    pub(super) fn sniff(payload: &[u8]) -> Option<Algorithm> {
        if payload.starts_with(&[0x1f, 0x8b]) {
            Some(Algorithm::Gzip)
        } else if payload.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Algorithm::Zstd)
        } else {
            None
        }
    }
}

pub(super) fn parse_options(
    r: &mut Reader<'_>,
    frame: &Bytes,
    depth: usize,
) -> Result<Options, DecodeErrorKind> {
    let mut options = Options::default();
    let pairs = match r.header().map_err(read_error)? {
        Header::Nil => return Ok(options),
        Header::Map(n) => n,
        other => {
            return Err(DecodeErrorKind::OptionNotMap {
                found: other.type_name(),
            });
        }
    };
    for _ in 0..pairs {
        let key_start = r.pos();
        let key = match r.header().map_err(read_error)? {
            Header::Str(n) | Header::Bin(n) => r.bytes(n).map_err(read_error)?,
            _ => {
                // Not a key we know: skip the key and its value whatever they are.
                r.set_pos(key_start);
                r.skip().map_err(read_error)?;
                r.skip().map_err(read_error)?;
                continue;
            }
        };
        let value_start = r.pos();
        let value = r.header().map_err(read_error)?;
        let invalid = |key| DecodeErrorKind::InvalidOption {
            key,
            found: value.type_name(),
        };
        match key {
            b"chunk" => match value {
                Header::Str(n) | Header::Bin(n) => {
                    options.chunk = Some(Bytes::copy_from_slice(r.bytes(n).map_err(read_error)?));
                }
                _ => return Err(invalid("chunk")),
            },
            b"compressed" => {
                options.compressed = match value {
                    Header::Nil => None,
                    Header::Str(n) | Header::Bin(n) => match r.bytes(n).map_err(read_error)? {
                        b"gzip" => Some(Algorithm::Gzip),
                        b"zstd" => Some(Algorithm::Zstd),
                        b"text" => None,
                        other => {
                            let shown = &other[..other.len().min(32)];
                            let name = String::from_utf8_lossy(shown).escape_debug().to_string();
                            return Err(DecodeErrorKind::UnsupportedCompression(name));
                        }
                    },
                    _ => return Err(invalid("compressed")),
                }
            }
            b"fluent_signal" => {
                options.fluent_signal = match value {
                    Header::Uint(n) => Some(n),
                    Header::Int(n) if n >= 0 => Some(n as u64),
                    _ => return Err(invalid("fluent_signal")),
                }
            }
            b"metadata" => {
                options.metadata = match value {
                    Header::Nil => None,
                    Header::Map(n) => Some(
                        MapSpan::read(r, n, depth)
                            .map_err(read_error)?
                            .to_raw(frame, 0),
                    ),
                    _ => return Err(invalid("metadata")),
                }
            }
            _ => {
                // `size` is advisory (fluent-logger-node sends a byte count), so a
                // mistyped one is ignored like any unknown key.
                if key == b"size" {
                    options.size = match value {
                        Header::Uint(n) => Some(n),
                        _ => None,
                    };
                }
                r.set_pos(value_start);
                r.skip().map_err(read_error)?;
            }
        }
    }
    Ok(options)
}
