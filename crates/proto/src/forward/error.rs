//! Decode errors: what went wrong ([`DecodeErrorKind`]) plus where (stream offset,
//! tag, mode, entry index), so one log line is enough to find the offending request.

use std::fmt;

use bytes::Bytes;
use thiserror::Error;

use super::Mode;

/// Why a request was rejected, with the context to log it.
///
/// `Display` is self-contained (kind and context); [`std::error::Error::source`] is the
/// underlying decompression error, if any.
#[derive(Debug)]
pub struct DecodeError {
    kind: DecodeErrorKind,
    ctx: ErrorContext,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ErrorContext {
    /// Stream offset of the first byte of the request.
    pub(crate) offset: u64,
    pub(crate) tag: Option<Bytes>,
    pub(crate) mode: Option<Mode>,
    pub(crate) entry: Option<usize>,
}

impl DecodeError {
    pub(crate) fn new(kind: DecodeErrorKind, ctx: ErrorContext) -> Self {
        DecodeError { kind, ctx }
    }

    /// What was wrong.
    pub fn kind(&self) -> &DecodeErrorKind {
        &self.kind
    }

    /// True if the bad request was consumed whole and the stream is still in sync, so
    /// the connection may skip it (sending no ack) and keep decoding. False if framing
    /// is lost or untrusted: the connection must close.
    pub fn can_continue(&self) -> bool {
        !matches!(
            self.kind,
            DecodeErrorKind::FrameTooLarge { .. }
                | DecodeErrorKind::TooDeep { .. }
                | DecodeErrorKind::InvalidMarker { .. }
                | DecodeErrorKind::NotArray { .. }
                | DecodeErrorKind::Truncated { .. }
        )
    }

    /// Offset in the connection's byte stream where the bad request starts.
    pub fn stream_offset(&self) -> u64 {
        self.ctx.offset
    }

    /// Tag of the bad request, if it got that far.
    pub fn tag(&self) -> Option<&[u8]> {
        self.ctx.tag.as_deref()
    }

    /// Mode of the bad request, if it got that far.
    pub fn mode(&self) -> Option<Mode> {
        self.ctx.mode
    }

    /// Index of the bad entry within the request, for entry-level errors.
    pub fn entry_index(&self) -> Option<usize> {
        self.ctx.entry
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (request at stream offset {}",
            self.kind, self.ctx.offset
        )?;
        if let Some(tag) = &self.ctx.tag {
            const MAX: usize = 64;
            let shown = &tag[..tag.len().min(MAX)];
            let more = if tag.len() > MAX { "..." } else { "" };
            write!(f, ", tag \"{}{more}\"", shown.escape_ascii())?;
        }
        if let Some(mode) = self.ctx.mode {
            write!(f, ", {mode} mode")?;
        }
        if let Some(entry) = self.ctx.entry {
            write!(f, ", entry {entry}")?;
        }
        f.write_str(")")
    }
}

impl std::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.kind)
    }
}

/// The reason a request or server message was rejected.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// A declared length or the bytes buffered exceed [`super::Limits::max_frame_bytes`].
    #[error("request of at least {declared} bytes exceeds the {limit}-byte limit")]
    FrameTooLarge {
        /// Minimum size the request claims.
        declared: u64,
        /// Configured limit.
        limit: usize,
    },
    /// Containers nested deeper than [`super::Limits::max_depth`].
    #[error("msgpack nesting exceeds the depth limit of {limit}")]
    TooDeep {
        /// Configured (effective) limit.
        limit: usize,
    },
    /// The reserved msgpack marker 0xc1.
    #[error("invalid msgpack marker 0x{byte:02x}")]
    InvalidMarker {
        /// The marker byte.
        byte: u8,
    },
    /// A request that is neither an array nor nil (this includes Fluentd's JSON mode).
    #[error("request is a msgpack {found}, not an array")]
    NotArray {
        /// Msgpack type seen.
        found: &'static str,
    },
    /// The stream ended inside a request ([`super::Decoder::decode_eof`]).
    #[error("stream ended inside a request ({buffered} bytes buffered)")]
    Truncated {
        /// Bytes left in the buffer.
        buffered: usize,
    },
    /// Request array length does not fit its mode.
    #[error("request array has {len} elements")]
    WrongArity {
        /// Elements present.
        len: u32,
    },
    /// Message-mode request `[tag, time]` without a record.
    #[error("message mode request has no record")]
    MissingRecord,
    /// Element 0 is not a str or bin.
    #[error("tag is a msgpack {found}, not a string")]
    TagNotString {
        /// Msgpack type seen.
        found: &'static str,
    },
    /// Element 1 selects no mode (not array, str/bin, int, float or ext).
    #[error("second element is a msgpack {found}, which selects no event mode")]
    UnknownMode {
        /// Msgpack type seen.
        found: &'static str,
    },
    /// The option element is neither a map nor nil.
    #[error("option is a msgpack {found}, not a map")]
    OptionNotMap {
        /// Msgpack type seen.
        found: &'static str,
    },
    /// A known option key has a value of the wrong type.
    #[error("option {key} is a msgpack {found}")]
    InvalidOption {
        /// Option key.
        key: &'static str,
        /// Msgpack type seen.
        found: &'static str,
    },
    /// Option `compressed` names an algorithm other than gzip, zstd or text.
    #[error("unsupported compression \"{0}\"")]
    UnsupportedCompression(String),
    /// Option `fluent_signal` other than 0 (logs).
    #[error("unsupported fluent_signal {0} (only 0, logs, is decoded)")]
    UnsupportedSignal(u64),
    /// More entries than [`super::Limits::max_entries_per_frame`].
    #[error("request has more than {limit} entries")]
    TooManyEntries {
        /// Configured limit.
        limit: usize,
    },
    /// An entry is not `[time, record]` / `[[time, metadata], record]`.
    #[error("invalid entry: {reason}")]
    InvalidEntry {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The time slot holds no valid time.
    #[error("invalid event time: {0}")]
    InvalidTime(TimeError),
    /// The record is not a map.
    #[error("record is a msgpack {found}, not a map")]
    RecordNotMap {
        /// Msgpack type seen.
        found: &'static str,
    },
    /// A PackedForward payload ends inside an entry (nothing of the request is kept).
    #[error("packed entries end inside an entry")]
    TruncatedEntries,
    /// Inflating passed [`super::Limits::max_decompressed_bytes`].
    #[error("{algorithm} payload inflates past the {limit}-byte limit")]
    DecompressedTooLarge {
        /// "gzip" or "zstd".
        algorithm: &'static str,
        /// Configured limit.
        limit: usize,
    },
    /// The compressed payload is corrupt.
    #[error("corrupt {algorithm} payload")]
    Decompress {
        /// "gzip" or "zstd".
        algorithm: &'static str,
        /// Decompressor's error.
        #[source]
        source: std::io::Error,
    },
    /// `["PING", ...]` with a missing or mistyped field.
    #[error("malformed PING: {reason}")]
    MalformedPing {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A server message (HELO, PONG, ack) the client cannot use.
    #[error("malformed server message: {reason}")]
    MalformedResponse {
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Why a time slot was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TimeError {
    /// Not an integer, EventTime, float or v1.5 `[time, metadata]` array.
    #[error("time is a msgpack {0}")]
    WrongType(&'static str),
    /// Ext type other than 0.
    #[error("ext type {0}, expected 0 (EventTime)")]
    ExtType(i8),
    /// EventTime ext whose length is not 8.
    #[error("EventTime of {0} bytes, expected 8")]
    ExtLen(u32),
    /// Nanoseconds of 1e9 or more.
    #[error("nanoseconds {0} out of range")]
    Nanos(u32),
    /// Integer or float seconds outside the i64 range, or NaN/infinite.
    #[error("seconds out of range")]
    OutOfRange,
}
