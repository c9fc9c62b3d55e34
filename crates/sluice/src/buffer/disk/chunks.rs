//! Client chunks durable in a disk buffer, found at open: the forward source
//! rebuilds its de-duplication window from them (`sources::forward::dedupe`),
//! so a chunk whose records reached the disk before the process died — before
//! the chunk id journal was written, or before the client saw its ack — is
//! recognised when the client resends it.
//!
//! Opening scans every record not yet acknowledged and reads its chunk label
//! (a trailer, [`codec::chunk_label`]), then rewinds the reader. Records the
//! sink already delivered and acknowledged are not needed: their ids were
//! journaled before the sink could read them (the WAL thread resolves a
//! record's source token, which writes the journal, before reading it ahead),
//! and an acknowledgement is applied only after that.

use std::collections::HashMap;
use std::time::UNIX_EPOCH;

use ::wal::Wal;
use bytes::Bytes;
use tracing::warn;

use super::codec;

/// What was found of one chunk.
#[derive(Debug, Clone, Copy)]
struct Found {
    /// Events of its records found.
    events: u64,
    /// Events of the whole chunk (from the label).
    total: u32,
    /// Unix time of its latest record.
    secs: u64,
}

/// Chunk labels of the records unacknowledged at open, by source.
#[derive(Debug, Default)]
pub struct RecoveredChunks {
    by_source: HashMap<Box<[u8]>, HashMap<Bytes, Found>>,
}

impl RecoveredChunks {
    /// Scan the unacknowledged records of a just-opened `wal`, then rewind it.
    pub(super) fn scan(wal: &mut Wal, dir: &std::path::Path) -> RecoveredChunks {
        let mut found = RecoveredChunks::default();
        for r in wal.records() {
            let r = match r {
                Ok(r) => r,
                Err(e) => {
                    // The read-ahead meets it again and reports it; chunks
                    // past it are not recognised (a duplicate, not a loss).
                    warn!(dir = %dir.display(), error = %e, "Disk buffer: scanning chunk ids stopped at a damaged record.");
                    break;
                }
            };
            let Some(label) = codec::chunk_label(&r.payload) else {
                continue;
            };
            let events = u64::from(codec::event_count(&r.payload).unwrap_or(0));
            let secs = r
                .appended_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let chunks = found.by_source.entry(label.source.into()).or_default();
            let f = chunks
                .entry(Bytes::copy_from_slice(label.id))
                .or_insert(Found {
                    events: 0,
                    total: label.events,
                    secs,
                });
            f.events += events;
            f.secs = f.secs.max(secs);
        }
        wal.rewind();
        found
    }

    /// The chunks of `source` whose every event is in the buffer, with the
    /// time they were stored.
    pub fn complete(&self, source: &str) -> HashMap<Bytes, u64> {
        self.by_source
            .get(source.as_bytes())
            .into_iter()
            .flatten()
            .filter(|(_, f)| f.events == u64::from(f.total))
            .map(|(id, f)| (id.clone(), f.secs))
            .collect()
    }
}
