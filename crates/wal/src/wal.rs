//! The write-ahead buffer: appends, replay cursor, acknowledgements, recovery.
//!
//! Invariants kept by every method (and re-established by `open`):
//! - `segments` is sorted by first seq, never empty; the last one is the
//!   active segment, open in `writer`, and its `end == next_seq`.
//! - Records of a segment carry `first..end` consecutively; the seqs in
//!   `end..next.first` (lost with a corrupt tail) name no record.
//! - `watermark` is the first seq that is neither acknowledged nor missing;
//!   it lies in `segments[0]` (or equals `next_seq`), `acked_ahead` holds only
//!   seqs above it.
//! - `disk_bytes` is the sum of the segments' `file_len`.
//!
//! This file holds the types and the state; the methods are split by role:
//! `open.rs` (recovery), `append.rs`, `read.rs` (replay cursor, acks,
//! `drop_oldest`), `sync.rs` (durability) and `sync_job.rs` (a group commit
//! run on another thread while appends go on).

use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::error::{FailedSync, IoError, OpenError, ReadError};
use crate::format::{
    Corruption, MAX_RECORD_BYTES_LIMIT, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, SEGMENT_MAGIC,
    segment_name,
};
use crate::scan::ChunkReader;
use crate::storage::{LockGuard, ReadFile, Storage, WriteFile};

mod append;
mod open;
mod read;
mod sync;
mod sync_job;

pub use sync_job::SyncJob;

/// When appended data is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Every append (and every batch) is `fdatasync`ed before it returns.
    Always,
    /// Appends return once written to the OS (they survive a process crash,
    /// not a power loss). The owner makes them durable: with
    /// [`Wal::sync_appends`] as soon as someone waits on them (group commit:
    /// one `fdatasync` for everything appended since the previous one), and
    /// with [`Wal::sync`] on this period, which bounds how long a record
    /// nobody waits on stays volatile and persists acknowledgements. An append
    /// made at least this long after the last `sync` syncs too (a failure
    /// there poisons the `Wal`: the append still returns its seqs, and every
    /// later sync and append returns the failure).
    Interval(Duration),
}

/// Options for [`Wal::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Durability of appends. Default: `Always`.
    pub fsync: Fsync,
    /// A segment is closed and a new one started before an append that would
    /// take it past this size (a batch is never split, so one batch larger than
    /// this makes one larger segment). Default: 64 MiB.
    pub segment_bytes: u64,
    /// Cap on the bytes of all segment files; an append past it fails with
    /// [`AppendError::Full`]. Acknowledged records count until their segment
    /// is deleted. Default: 1 GiB.
    pub max_bytes: u64,
    /// Largest payload accepted by `append`. At most 1 GiB. Default: 16 MiB.
    pub max_record_bytes: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            fsync: Fsync::Always,
            segment_bytes: 64 << 20,
            max_bytes: 1 << 30,
            max_record_bytes: 16 << 20,
        }
    }
}

impl Options {
    /// The largest `max_record_bytes` that `max_bytes` allows: one record
    /// filling an otherwise empty buffer (at most 1 GiB).
    pub fn largest_record(max_bytes: u64) -> u32 {
        let fits = max_bytes.saturating_sub(SEGMENT_HEADER_LEN + RECORD_HEADER_LEN as u64);
        fits.min(u64::from(MAX_RECORD_BYTES_LIMIT)) as u32
    }

    fn validate(&self) -> Result<(), OpenError> {
        let invalid = |msg: String| Err(OpenError::InvalidOptions(msg));
        if self.max_record_bytes > MAX_RECORD_BYTES_LIMIT {
            return invalid(format!("max_record_bytes over {MAX_RECORD_BYTES_LIMIT}"));
        }
        let one_record =
            SEGMENT_HEADER_LEN + RECORD_HEADER_LEN as u64 + self.max_record_bytes as u64;
        if self.max_bytes < one_record {
            return invalid(format!(
                "max_bytes must hold one largest record ({one_record} bytes)"
            ));
        }
        if self.segment_bytes <= SEGMENT_HEADER_LEN {
            return invalid(format!("segment_bytes must exceed {SEGMENT_HEADER_LEN}"));
        }
        if self.fsync == Fsync::Interval(Duration::ZERO) {
            return invalid("fsync interval must not be zero (use Always)".to_string());
        }
        Ok(())
    }
}

/// One record read back from the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Sequence number given by `append`.
    pub seq: u64,
    /// Wall-clock time of the append.
    pub appended_at: SystemTime,
    /// The bytes given to `append`.
    pub payload: Vec<u8>,
}

/// Records discarded by [`Wal::drop_oldest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// Sequence numbers removed: the unacknowledged part of the oldest segment.
    pub seqs: Range<u64>,
    /// How many of them were not acknowledged (count these as dropped).
    pub records: u64,
}

/// Damage found in a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// The segment file.
    pub path: PathBuf,
    /// Offset of the first bad byte; everything from here on is unreadable.
    pub offset: u64,
    /// Bytes from `offset` to the end of the file.
    pub bytes: u64,
    /// What was wrong at `offset`.
    pub corruption: Corruption,
}

/// What [`Wal::open`] found and repaired; the daemon logs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Low watermark read from the checkpoint file, if it was valid.
    pub checkpoint: Option<u64>,
    /// A checkpoint file existed but was not valid (it was ignored: records
    /// are replayed from the oldest segment, duplicates but no loss).
    pub checkpoint_invalid: bool,
    /// Segments kept.
    pub segments: usize,
    /// Fully acknowledged segments deleted.
    pub deleted_segments: usize,
    /// Records that will be replayed.
    pub unacked_records: u64,
    /// Torn or corrupt tail cut off the last segment (expected after a crash).
    pub truncated: Option<Damage>,
    /// Older segments with a corrupt record: their records from it on are lost.
    pub skipped: Vec<Damage>,
}

impl RecoveryReport {
    /// Nothing was truncated or skipped and the checkpoint (if any) was valid.
    pub fn is_clean(&self) -> bool {
        self.truncated.is_none() && self.skipped.is_empty() && !self.checkpoint_invalid
    }
}

#[derive(Debug, Clone, Copy)]
struct Segment {
    /// Seq of its first record, and its file name.
    first: u64,
    /// One past its last readable record.
    end: u64,
    /// Bytes that are readable as records (the reader's limit).
    valid_len: u64,
    /// Bytes the file occupies (counted against `max_bytes`).
    file_len: u64,
}

impl Segment {
    fn empty(first: u64) -> Self {
        Segment {
            first,
            end: first,
            valid_len: SEGMENT_HEADER_LEN,
            file_len: SEGMENT_HEADER_LEN,
        }
    }
}

/// Bytes of recently appended payloads kept in memory for the reader.
const TAIL_CACHE_BYTES: usize = 32 << 20;

/// A record appended by this `Wal`, kept so that a reader caught up with the
/// writer gets it without reading the file back (no `pread`, no CRC check of
/// bytes that never left memory).
struct Cached {
    seq: u64,
    seg_first: u64,
    /// Offset of the record's header in its segment.
    offset: u64,
    time_ns: u64,
    payload: Vec<u8>,
}

/// Replay position: the next record to read is at `offset` of segment
/// `seg_first` and must carry `expected`.
#[derive(Default)]
struct Cursor {
    seg_first: u64,
    offset: u64,
    expected: u64,
    file: Option<Box<dyn ReadFile>>,
    chunk: ChunkReader,
}

impl Cursor {
    fn enter(&mut self, seg_first: u64) {
        self.seg_first = seg_first;
        self.offset = SEGMENT_HEADER_LEN;
        self.expected = seg_first;
        self.file = None;
        self.chunk.reset();
    }
}

/// A durable, segmented write-ahead buffer in one directory. See the crate
/// documentation for the format and the guarantees.
pub struct Wal {
    storage: Arc<dyn Storage>,
    _lock: LockGuard,
    opts: Options,
    segments: VecDeque<Segment>,
    writer: Box<dyn WriteFile>,
    next_seq: u64,
    watermark: u64,
    acked_ahead: BTreeSet<u64>,
    /// Watermark stored in the checkpoint file, if any.
    checkpointed: Option<u64>,
    /// The two-slot checkpoint file this `Wal` created, kept open for in-place
    /// updates, and the slot the next update goes to.
    checkpoint_file: Option<(Box<dyn WriteFile>, usize)>,
    disk_bytes: u64,
    /// The active segment has writes not yet `fdatasync`ed.
    data_dirty: bool,
    /// Closed segments with writes not yet `fdatasync`ed (`Fsync::Interval`):
    /// synced by the next `sync`, unless fully acknowledged and deleted first,
    /// so with a fast sink most data never waits for the disk.
    unsynced: Vec<(u64, Box<dyn WriteFile>)>,
    /// Creations/removals/renames not yet made durable.
    dir_dirty: bool,
    /// A failed write may have left bytes past the active segment's length.
    tail_dirty: bool,
    /// The first failed fsync of a segment or of the directory. Linux reports
    /// a writeback error once and may drop the dirty pages, so a retried
    /// `fdatasync` returning 0 proves nothing: once set, `sync`, appends and
    /// `drop_oldest` return it until the directory is reopened (recovery reads
    /// what really is on disk).
    failed_sync: Option<FailedSync>,
    /// The [`SyncJob`] handed out by `start_sync` and not joined yet.
    in_flight: Option<sync_job::InFlight>,
    last_sync: Instant,
    frame: Vec<u8>,
    cursor: Cursor,
    /// Recently appended records not read yet, oldest first (at most
    /// `TAIL_CACHE_BYTES` of payload; a reader that falls behind reads the
    /// older ones from disk). Cleared when segments are dropped or reset.
    tail: VecDeque<Cached>,
    tail_bytes: usize,
    report: RecoveryReport,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.storage.path(""))
            .field("segments", &self.segments.len())
            .field("next_seq", &self.next_seq)
            .field("first_unacked", &self.watermark)
            .field("disk_bytes", &self.disk_bytes)
            .finish_non_exhaustive()
    }
}

/// Error mapper for a file; builds the path only on error (appends and reads
/// are hot paths).
fn io_err<'a>(
    storage: &'a dyn Storage,
    op: &'static str,
    name: &'a str,
) -> impl FnOnce(io::Error) -> IoError + 'a {
    move |source| IoError::new(op, storage.path(name), source)
}

/// Error mapper for the segment starting at `first`.
fn seg_err<'a>(
    storage: &'a dyn Storage,
    op: &'static str,
    first: u64,
) -> impl FnOnce(io::Error) -> IoError + 'a {
    move |source| IoError::new(op, storage.path(&segment_name(first)), source)
}

impl Wal {
    /// What `open` found and repaired.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.report
    }
    /// Syncs and releases the directory. Dropping a `Wal` does the same but
    /// ignores errors.
    pub fn close(mut self) -> Result<(), IoError> {
        self.sync()
    }

    /// Sequence number the next append will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Low watermark: every record below it is acknowledged (or was dropped);
    /// equals `next_seq()` when nothing is pending.
    pub fn first_unacked(&self) -> u64 {
        self.watermark
    }

    /// Records appended and not yet acknowledged.
    pub fn unacked_records(&self) -> u64 {
        let present: u64 = self
            .segments
            .iter()
            .map(|s| s.end.saturating_sub(s.first.max(self.watermark)))
            .sum();
        present - self.acked_ahead.len() as u64
    }

    /// Bytes of all segment files, as counted against `max_bytes`.
    pub fn disk_bytes(&self) -> u64 {
        self.disk_bytes
    }

    fn active(&self) -> &Segment {
        self.segments.back().expect("never empty")
    }

    fn active_err(&self, op: &'static str) -> impl FnOnce(io::Error) -> IoError + '_ {
        seg_err(self.storage.as_ref(), op, self.active().first)
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Best effort: a failure here only means records or acks replayed.
        let _ = self.sync();
    }
}

/// Iterator over [`Wal::read_next`], from [`Wal::records`].
#[derive(Debug)]
pub struct Records<'a> {
    wal: &'a mut Wal,
}

impl Iterator for Records<'_> {
    type Item = Result<Record, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.wal.read_next().transpose()
    }
}

fn create_segment(st: &dyn Storage, first: u64, sync: bool) -> Result<Box<dyn WriteFile>, IoError> {
    let name = segment_name(first);
    let mut file = st.create(&name).map_err(io_err(st, "create", &name))?;
    let written = file
        .write_all_at(0, &SEGMENT_MAGIC)
        .and_then(|()| if sync { file.sync_data() } else { Ok(()) });
    if let Err(e) = written {
        let _ = st.remove(&name);
        return Err(io_err(st, "write", &name)(e));
    }
    Ok(file)
}

fn remove_if_present(st: &dyn Storage, name: &str) -> Result<(), IoError> {
    match st.remove(name) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(st, "remove", name)(e)),
        _ => Ok(()),
    }
}
