//! Read-only inspection of a buffer directory (`sluice` status and debugging).

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::IoError;
use crate::format::{CHECKPOINT_NAME, parse_segment_name, time_from_ns};
use crate::scan::{read_checkpoint, scan_segment};
use crate::storage::{DirStorage, Storage};
use crate::wal::Damage;

/// What [`inspect`] found in a buffer directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Inspection {
    /// Low watermark from the checkpoint file (`None`: absent or invalid).
    pub checkpoint: Option<u64>,
    /// Segments in sequence order.
    pub segments: Vec<SegmentInfo>,
    /// Bytes of all segment files.
    pub total_bytes: u64,
    /// Readable records in all segments (acknowledged or not).
    pub total_records: u64,
    /// Readable records at or above the checkpoint watermark.
    pub unacked_records: u64,
    /// Append time of the oldest readable record.
    pub oldest_record_time: Option<SystemTime>,
    /// Append time of the oldest record at or above the checkpoint watermark:
    /// how far behind the sink is.
    pub oldest_unacked_time: Option<SystemTime>,
}

/// One segment file as found by [`inspect`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentInfo {
    /// The file.
    pub path: PathBuf,
    /// File length.
    pub bytes: u64,
    /// Readable records.
    pub records: u64,
    /// Seq of the first readable record (the name's seq) if any.
    pub first_seq: Option<u64>,
    /// Seq of the last readable record, if any.
    pub last_seq: Option<u64>,
    /// Append times of the first and last readable records.
    pub first_time: Option<SystemTime>,
    /// Append time of the last readable record.
    pub last_time: Option<SystemTime>,
    /// First unreadable record (bad checksum, bad length, short, ...), if any.
    /// On a live directory a short record at the end of the last segment can
    /// be a write in progress.
    pub damage: Option<Damage>,
}

/// Reads every segment of the buffer in `dir` and reports what it holds.
///
/// Read-only and lock-free, so it is safe on a directory a `Wal` has open: it
/// writes nothing, and a segment deleted while it runs is left out.
pub fn inspect(dir: impl AsRef<Path>) -> Result<Inspection, IoError> {
    inspect_storage(&DirStorage::new(dir.as_ref()))
}

pub(crate) fn inspect_storage(st: &dyn Storage) -> Result<Inspection, IoError> {
    let err = |op, name: &str| {
        let path = st.path(name);
        move |e| IoError::new(op, path, e)
    };
    let mut out = Inspection {
        checkpoint: read_checkpoint(st)
            .map_err(err("read", CHECKPOINT_NAME))?
            .flatten(),
        ..Inspection::default()
    };
    let watermark = out.checkpoint.unwrap_or(0);
    let mut firsts: Vec<u64> = st
        .list()
        .map_err(err("list", ""))?
        .iter()
        .filter_map(|n| parse_segment_name(n))
        .collect();
    firsts.sort_unstable();
    for (i, &first) in firsts.iter().enumerate() {
        let name = crate::format::segment_name(first);
        let scan = match scan_segment(st, &name, first, firsts.get(i + 1).copied(), watermark) {
            Ok(scan) => scan,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(err("read", &name)(e)),
        };
        let path = st.path(&name);
        out.total_bytes += scan.file_len;
        out.total_records += scan.records;
        // Checked: a crafted name near u64::MAX must not overflow.
        let last_seq = scan
            .records
            .checked_sub(1)
            .and_then(|r| first.checked_add(r));
        let end = last_seq.map_or(first, |l| l.saturating_add(1));
        out.unacked_records += end.saturating_sub(first.max(watermark));
        let first_time = scan.first_time_ns.map(time_from_ns);
        out.oldest_record_time = out.oldest_record_time.or(first_time);
        out.oldest_unacked_time = out
            .oldest_unacked_time
            .or(scan.from_time_ns.map(time_from_ns));
        out.segments.push(SegmentInfo {
            bytes: scan.file_len,
            records: scan.records,
            first_seq: (scan.records > 0).then_some(first),
            last_seq,
            first_time,
            last_time: scan.last_time_ns.map(time_from_ns),
            damage: scan.corruption.map(|(offset, corruption)| Damage {
                path: path.clone(),
                offset,
                bytes: scan.file_len.saturating_sub(offset),
                corruption,
            }),
            path,
        });
    }
    Ok(out)
}
