//! Fluentd forward protocol v1 / v1.5, sans-IO.
//!
//! The reference is `shared/spec/forward-protocol.md`; byte vectors live in
//! `testdata/forward/` (copied from the team's shared vectors) and are decoded by this module's tests.
//!
//! # Wire format
//! A connection is a stream of msgpack values back to back, no length prefix. Each
//! request is an array whose element `[1]` selects the mode:
//!
//! ```text
//! Message                  [tag, time, record, option?]        time = int | EventTime | float
//! Forward                  [tag, [[time, record], ...], option?]
//! PackedForward            [tag, str|bin <<[time, record]>>*, option?]
//! CompressedPackedForward  same, option compressed = "gzip" (may be several members) | "zstd"
//! heartbeat                nil
//! handshake                ["PING", hostname, salt, digest, username, password_digest]
//! ```
//!
//! EventTime is ext type 0 with 8 bytes: u32 BE seconds, u32 BE nanoseconds (seconds are
//! unsigned: 0x80000000 is 2038, not negative). Since v1.5 the time slot of an entry may
//! be `[time, metadata-map]`. The option map may carry `chunk` (echoed in the ack
//! `{"ack": chunk}`), `size`, `compressed`, `fluent_signal` and `metadata`.
//!
//! # Invariants
//! * str and bin are interchangeable for opaque bytes (tags, keys, chunk ids,
//!   packed payloads); nothing requires UTF-8. Tags are kept as bytes, invalid UTF-8
//!   included (the vectors' `tag_invalid_utf8.bin` policy).
//! * [`Decoder::decode`] never allocates from a length header: a declared length is
//!   checked against [`Limits`] and the bytes actually present first; containers are
//!   depth-limited and walked iteratively; inflation stops at
//!   [`Limits::max_decompressed_bytes`] and happens in 64 KiB steps.
//! * A request is accepted whole or not at all: a request whose last packed entry is
//!   truncated yields an error, never a partial [`EventFrame`] (so it is never acked).
//! * Fluent Bit group markers (EventTime seconds `0xFFFFFFFF` / `0xFFFFFFFE`) are
//!   dropped; they are not events. Time 0 is passed through (Fluentd replaces it
//!   with "now"; that is the caller's policy).
//! * A packed payload starting with the gzip (`1f 8b`) or zstd (`28 b5 2f fd`) magic is
//!   inflated whatever `compressed` says, as Fluent Bit does: a plain entry stream
//!   starts with an array marker, so this cannot misread valid input.
//!
//! # Errors and recovery
//! [`DecodeError::can_continue`] is true when the offending request was consumed
//! whole and the stream is still in sync (e.g. record not a map, unknown compression):
//! the caller may skip it (no ack) and keep reading, or close. It is false when the
//! framing itself is lost or untrusted (not an array, too large, too deep, bad
//! marker, truncated at EOF): close the connection.
//!
//! # Non-goals
//! Fluentd's JSON mode (a connection starting with `[`/`{`) is not supported: such a
//! stream fails with [`DecodeErrorKind::NotArray`]. `fluent_signal` 1/2 (cmetrics /
//! ctraces payloads) are rejected. UDP heartbeats and TLS are the caller's business.

mod decode;
mod encode;
mod entry;
mod error;
pub mod handshake;
mod msgpack;
mod pairs;
mod raw;
mod response;

#[cfg(test)]
mod tests;

pub use decode::Decoder;
pub use encode::{Compression, PackedForwardBuilder, encode_ack, new_chunk_id};
pub use error::{DecodeError, DecodeErrorKind, TimeError};
pub use handshake::Ping;
pub use pairs::PairsWriter;
pub use raw::{Pairs, RawError, RawMap, RawSeq, RawValue, Values};
pub use response::{Response, ResponseDecoder};

use bytes::Bytes;

/// Size and shape limits applied by [`Decoder`]. All are hard caps: exceeding one is
/// an error, never a truncation.
///
/// Memory per request is the request's wire bytes, its inflated payload (at most
/// `max_decompressed_bytes`) and a 96-byte [`Entry`] per event (the smallest entry is
/// 3 bytes, so at worst ~32 × the payload). Records are not decoded into values.
/// Lower the limits for untrusted peers with many connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest request accepted, in wire bytes (default 32 MiB). While
    /// [`Decoder::decode`] answers "need more", the request being assembled is known to
    /// fit in this, so a caller that only reads while it gets `Ok(None)` buffers at
    /// most this plus one read.
    pub max_frame_bytes: usize,
    /// Largest decompressed PackedForward payload (default 128 MiB).
    pub max_decompressed_bytes: usize,
    /// Most entries (events plus group markers) in one request (default 1 000 000).
    pub max_entries_per_frame: usize,
    /// Deepest container nesting, counting the request array as 1 (default 64; values
    /// above 512 are treated as 512 to keep recursive readers' stacks small). A record
    /// is checked against this budget on its own (the map counting as 1).
    pub max_depth: usize,
}

/// Ceiling applied to [`Limits::max_depth`].
pub(crate) const MAX_DEPTH_CEILING: usize = 512;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_bytes: 32 << 20,
            max_decompressed_bytes: 128 << 20,
            max_entries_per_frame: 1_000_000,
            max_depth: 64,
        }
    }
}

impl Limits {
    pub(crate) fn depth(&self) -> usize {
        self.max_depth.min(MAX_DEPTH_CEILING)
    }
}

/// How a request carried its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// `[tag, time, record, option?]`: one event.
    Message,
    /// `[tag, [[time, record], ...], option?]`.
    Forward,
    /// `[tag, <bin/str of concatenated entries>, option?]`.
    PackedForward,
    /// PackedForward whose payload was gzip or zstd compressed.
    CompressedPackedForward,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Message => "Message",
            Mode::Forward => "Forward",
            Mode::PackedForward => "PackedForward",
            Mode::CompressedPackedForward => "CompressedPackedForward",
        })
    }
}

/// An event timestamp: seconds since the Unix epoch and nanoseconds (< 1e9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EventTime {
    /// Seconds since 1970-01-01T00:00:00Z.
    pub secs: i64,
    /// Nanoseconds within the second, always below 1 000 000 000.
    pub nanos: u32,
}

impl EventTime {
    /// A time from parts; `nanos` above 999 999 999 carry into `secs`.
    pub fn new(secs: i64, nanos: u32) -> Self {
        EventTime {
            secs: secs.saturating_add(i64::from(nanos / 1_000_000_000)),
            nanos: nanos % 1_000_000_000,
        }
    }
}

/// One event: `[time, record]`, or `[[time, metadata], record]` (v1.5).
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Event time (int, EventTime or float on the wire).
    pub time: EventTime,
    /// The record (always a map), validated and kept as the bytes sent: a slice of the
    /// request (or of its inflated payload). Keys and strings are as sent (str and bin
    /// both occur, and str need not be valid UTF-8).
    pub record: RawMap,
    /// v1.5 per-event metadata from the `[time, metadata]` time slot (always a map).
    /// See [`EventFrame::metadata_for`] for Message-mode metadata sent as an option.
    pub metadata: Option<RawMap>,
}

/// A request carrying events.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EventFrame {
    /// Tag, as bytes (usually but not necessarily UTF-8).
    pub tag: Bytes,
    /// Mode the request used.
    pub mode: Mode,
    /// Events in wire order, group markers removed.
    pub entries: Vec<Entry>,
    /// Option `chunk`, byte for byte (Fluentd's end in `\n`): echo it with
    /// [`EventFrame::ack`] once the events are durable.
    pub chunk: Option<Bytes>,
    /// Option `size`: advisory only (some clients send a byte count).
    pub size: Option<u64>,
    /// Option `fluent_signal`: only 0 (logs) or absent get here.
    pub fluent_signal: Option<u64>,
    /// Option `metadata` (a map): Fluent Bit's per-event metadata in Message mode.
    pub metadata: Option<RawMap>,
    /// Wire size of the request in bytes.
    pub wire_len: usize,
    /// Bytes allocated for the inflated payload of a compressed request (its
    /// records are slices of it and keep it alive); 0 otherwise.
    pub inflated_len: usize,
}

impl EventFrame {
    /// Bytes the events of this request keep alive while any of them lives: the
    /// request's wire bytes and, when compressed, its inflated payload.
    pub fn pinned_bytes(&self) -> usize {
        self.wire_len.saturating_add(self.inflated_len)
    }

    /// The `{"ack": chunk}` reply this request needs, if it carried a chunk.
    pub fn ack(&self) -> Option<Bytes> {
        self.chunk.as_deref().map(encode_ack)
    }

    /// Metadata that applies to `entry`: its own v1.5 metadata, else the option's.
    pub fn metadata_for<'a>(&'a self, entry: &'a Entry) -> Option<&'a RawMap> {
        entry.metadata.as_ref().or(self.metadata.as_ref())
    }
}

/// One decoded request from a client.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// msgpack nil: keep-alive, no reply.
    Heartbeat,
    /// Events in any of the four modes.
    Events(EventFrame),
    /// Handshake `["PING", ...]`: verify with [`handshake::verify_ping`]. The decoder
    /// has no handshake state: a PING after authentication, or events before it, are
    /// for the caller to refuse ([`handshake::PingRejection::InvalidPing`]).
    Ping(Ping),
}
