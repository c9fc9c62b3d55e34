//! The chunk label trailer of a record (version 2): which client chunk the
//! record's events belong to, so that a restart can rebuild the forward
//! source's de-duplication window from what is durable in the buffer (see
//! `sources::forward::dedupe`).
//!
//! ```text
//! record v2   the version 1 layout (version byte 2), then:
//!             id         id_len bytes, the client's chunk id
//!             source     source_len bytes, the forward source's name (UTF-8)
//!             events     u32, events of the whole chunk
//!             id_len     u8, 1..=64
//!             source_len u16
//! ```
//! The trailer sits at the end so it is read without decoding the events.
//! Every record of a labelled batch carries it; a restart sums the records'
//! event counts per chunk and counts a chunk durable only when they add up to
//! the whole chunk.

use crate::ack::ChunkLabel;

/// Bytes after the source name.
const FOOTER: usize = 4 + 1 + 2;
/// Longest chunk id a label carries (as the forward source's window).
const MAX_ID: usize = 64;

/// The trailer for `label`; empty when it cannot be labelled (no label, an
/// id out of range, a source name too long).
pub(super) fn trailer(label: Option<&ChunkLabel>) -> Vec<u8> {
    let Some(l) = label else {
        return Vec::new();
    };
    let (id, source) = (&l.id[..], l.source.as_bytes());
    let (Ok(src_len), true) = (
        u16::try_from(source.len()),
        !id.is_empty() && id.len() <= MAX_ID,
    ) else {
        return Vec::new();
    };
    let mut t = Vec::with_capacity(id.len() + source.len() + FOOTER);
    t.extend_from_slice(id);
    t.extend_from_slice(source);
    t.extend_from_slice(&l.events.to_le_bytes());
    t.push(id.len() as u8);
    t.extend_from_slice(&src_len.to_le_bytes());
    t
}

/// A record's chunk label as found on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredLabel<'a> {
    /// The forward source's name.
    pub source: &'a [u8],
    /// The chunk id.
    pub id: &'a [u8],
    /// Events of the whole chunk.
    pub events: u32,
}

/// Split a version 2 payload's `body_end` from its label; `None` when the
/// trailer does not fit in `payload[min_body..]`.
pub(super) fn split(payload: &[u8], min_body: usize) -> Option<(usize, StoredLabel<'_>)> {
    let n = payload.len();
    if n < min_body + FOOTER {
        return None;
    }
    let src_len = usize::from(u16::from_le_bytes([payload[n - 2], payload[n - 1]]));
    let id_len = usize::from(payload[n - 3]);
    if id_len == 0 || id_len > MAX_ID {
        return None;
    }
    let events = u32::from_le_bytes([
        payload[n - 7],
        payload[n - 6],
        payload[n - 5],
        payload[n - 4],
    ]);
    let label_len = id_len + src_len + FOOTER;
    let body_end = n.checked_sub(label_len).filter(|e| *e >= min_body)?;
    let id = &payload[body_end..body_end + id_len];
    let source = &payload[body_end + id_len..body_end + id_len + src_len];
    Some((body_end, StoredLabel { source, id, events }))
}
