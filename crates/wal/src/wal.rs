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

use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::error::{AckError, AppendError, FailedSync, IoError, OpenError, ReadError};
use crate::format::{
    CHECKPOINT_NAME, CHECKPOINT_TMP_NAME, Corruption, LOCK_NAME, MAX_RECORD_BYTES_LIMIT, MAX_SEQ,
    RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, SEGMENT_MAGIC, encode_record, now_ns,
    parse_segment_name, segment_name, time_from_ns,
};
mod sync;

use crate::scan::{ChunkReader, Parsed, parse_record, read_checkpoint, scan_segment};
use crate::storage::{DirStorage, LockGuard, ReadFile, Storage, WriteFile};

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
    storage: Box<dyn Storage>,
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
    /// Opens (creating if needed) the buffer in `dir`, takes its lock and
    /// recovers: see the crate documentation for the rules.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Wal, OpenError> {
        let dir = dir.as_ref();
        opts.validate()?;
        std::fs::create_dir_all(dir)
            .map_err(|e| IoError::new("create directory", dir.to_path_buf(), e))?;
        Wal::open_storage(Box::new(DirStorage::new(dir)), opts)
    }

    /// [`open`](Self::open) on any [`Storage`]: tests use one whose sync can
    /// fail or be held open. The directory must exist.
    pub fn open_storage(storage: Box<dyn Storage>, opts: Options) -> Result<Wal, OpenError> {
        opts.validate()?;
        let st = storage.as_ref();
        let lock = st
            .try_lock()
            .map_err(io_err(st, "lock", LOCK_NAME))?
            .ok_or_else(|| OpenError::Locked {
                path: st.path(LOCK_NAME),
            })?;
        let mut report = RecoveryReport::default();
        let names = st.list().map_err(io_err(st, "list", ""))?;
        if names.iter().any(|n| n == CHECKPOINT_TMP_NAME) {
            remove_if_present(st, CHECKPOINT_TMP_NAME)?;
        }
        let checkpoint = read_checkpoint(st).map_err(io_err(st, "read", CHECKPOINT_NAME))?;
        // A watermark beyond `MAX_SEQ` passed its CRC but no `Wal` wrote it:
        // ignore it like a damaged one (replay from the oldest segment).
        let checkpointed = checkpoint.flatten().filter(|&w| w <= MAX_SEQ);
        report.checkpoint = checkpointed;
        report.checkpoint_invalid =
            matches!(checkpoint, Some(None)) || checkpoint.flatten().is_some_and(|w| w > MAX_SEQ);
        let ckpt = checkpointed.unwrap_or(0);

        let mut firsts: Vec<u64> = names.iter().filter_map(|n| parse_segment_name(n)).collect();
        firsts.sort_unstable();
        if let Some(&seq) = firsts.last().filter(|&&s| s > MAX_SEQ) {
            return Err(OpenError::SeqOutOfRange {
                path: st.path(&segment_name(seq)),
                seq,
                max: MAX_SEQ,
            });
        }
        // Segments followed by one starting at or below the checkpoint are
        // fully acknowledged: delete them unread.
        let mut kept = Vec::with_capacity(firsts.len());
        for (i, &first) in firsts.iter().enumerate() {
            if firsts.get(i + 1).is_some_and(|&next| next <= ckpt) {
                remove_if_present(st, &segment_name(first))?;
                report.deleted_segments += 1;
            } else {
                kept.push(first);
            }
        }

        let mut segments = VecDeque::with_capacity(kept.len() + 1);
        let mut writer = None;
        let mut dir_dirty = report.deleted_segments > 0;
        for (i, &first) in kept.iter().enumerate() {
            let name = segment_name(first);
            let bound = kept.get(i + 1).copied();
            let scan = scan_segment(st, &name, first, bound, u64::MAX)
                .map_err(io_err(st, "read", &name))?;
            let mut seg = Segment {
                first,
                // At most MAX_SEQ plus a count bounded by the file length.
                end: first.saturating_add(scan.records),
                valid_len: scan.valid_len,
                file_len: scan.file_len,
            };
            if let Some((offset, corruption)) = scan.corruption {
                let damage = Damage {
                    path: st.path(&name),
                    offset,
                    bytes: scan.file_len - offset,
                    corruption,
                };
                if bound.is_some() {
                    report.skipped.push(damage);
                } else {
                    // The last segment is the one being written: cut the torn
                    // tail so appends continue after the last good record.
                    let mut w = st.open_write(&name).map_err(io_err(st, "open", &name))?;
                    if offset < SEGMENT_HEADER_LEN {
                        w.set_len(0)
                            .and_then(|()| w.write_all_at(0, &SEGMENT_MAGIC))
                            .map_err(io_err(st, "repair", &name))?;
                    } else {
                        w.set_len(offset).map_err(io_err(st, "truncate", &name))?;
                    }
                    w.sync_data().map_err(io_err(st, "sync", &name))?;
                    seg.file_len = seg.valid_len;
                    report.truncated = Some(damage);
                    writer = Some(w);
                }
            }
            if scan.corruption.is_none() && bound.is_some_and(|b| b > ckpt.max(seg.end)) {
                // Unacknowledged records are missing without damage (the file
                // was cut short): still worth a line in the log.
                report.skipped.push(Damage {
                    path: st.path(&name),
                    offset: seg.valid_len,
                    bytes: 0,
                    corruption: Corruption::Truncated,
                });
            }
            segments.push_back(seg);
        }

        let next_seq = segments.back().map_or(ckpt, |s| s.end.max(ckpt));
        let writer = match (segments.back(), writer) {
            (Some(last), Some(w)) if last.end == next_seq => w,
            (Some(last), None) if last.end == next_seq => {
                let name = segment_name(last.first);
                st.open_write(&name).map_err(io_err(st, "open", &name))?
            }
            _ => {
                // No segment, or the checkpoint is past the last record (files
                // were lost): start a segment at the next seq.
                let w = create_segment(st, next_seq, true)?;
                segments.push_back(Segment::empty(next_seq));
                dir_dirty = true;
                w
            }
        };
        if dir_dirty {
            st.sync_dir().map_err(io_err(st, "sync", ""))?;
        }

        let disk_bytes = segments.iter().map(|s| s.file_len).sum();
        let watermark = ckpt.max(segments[0].first);
        let mut wal = Wal {
            storage,
            _lock: lock,
            opts,
            segments,
            writer,
            next_seq,
            watermark,
            acked_ahead: BTreeSet::new(),
            checkpointed,
            checkpoint_file: None,
            disk_bytes,
            data_dirty: false,
            unsynced: Vec::new(),
            dir_dirty: false,
            tail_dirty: false,
            failed_sync: None,
            last_sync: Instant::now(),
            frame: Vec::new(),
            cursor: Cursor::default(),
            tail: VecDeque::new(),
            tail_bytes: 0,
            report,
        };
        wal.advance();
        let before = wal.segments.len();
        wal.remove_acked_segments()?;
        wal.report.deleted_segments += before - wal.segments.len();
        wal.report.segments = wal.segments.len();
        wal.report.unacked_records = wal.unacked_records();
        wal.cursor.enter(wal.segments[0].first);
        Ok(wal)
    }

    /// What `open` found and repaired.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.report
    }

    /// Appends one record; returns its sequence number.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, AppendError> {
        self.append_batch([payload]).map(|seqs| seqs.start)
    }

    /// Appends records with one write (and one fsync under `Fsync::Always`),
    /// all or none; returns their sequence numbers.
    pub fn append_batch<I>(&mut self, payloads: I) -> Result<Range<u64>, AppendError>
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        self.check_sync()?;
        let time_ns = now_ns();
        let first = self.next_seq;
        let mut seq = first;
        let mut frame = std::mem::take(&mut self.frame);
        frame.clear();
        let mut copies = Vec::new();
        for payload in payloads {
            let payload = payload.as_ref();
            if seq >= MAX_SEQ {
                self.frame = frame;
                return Err(AppendError::SeqExhausted { next_seq: seq });
            }
            if payload.len() > self.opts.max_record_bytes as usize {
                self.frame = frame;
                let max = self.opts.max_record_bytes;
                return Err(AppendError::TooLarge {
                    len: payload.len(),
                    max,
                });
            }
            encode_record(&mut frame, seq, time_ns, payload);
            copies.push(payload.to_vec());
            seq += 1;
        }
        let result = if seq == first {
            Ok(())
        } else {
            self.write_frame(&frame, seq).map(|at| {
                let seg_first = self.active().first;
                self.cache_tail(first, seg_first, at, time_ns, copies)
            })
        };
        self.frame = frame;
        result.map(|()| first..seq)
    }

    /// Keep records just written at `offset` of segment `seg_first` for the
    /// reader, dropping the oldest kept ones past the cap.
    fn cache_tail(
        &mut self,
        first: u64,
        seg_first: u64,
        mut offset: u64,
        time_ns: u64,
        payloads: Vec<Vec<u8>>,
    ) {
        for (i, payload) in payloads.into_iter().enumerate() {
            let len = payload.len();
            self.tail_bytes += len;
            self.tail.push_back(Cached {
                seq: first + i as u64,
                seg_first,
                offset,
                time_ns,
                payload,
            });
            offset += (RECORD_HEADER_LEN + len) as u64;
        }
        while self.tail_bytes > TAIL_CACHE_BYTES {
            let Some(old) = self.tail.pop_front() else {
                break;
            };
            self.tail_bytes -= old.payload.len();
        }
    }

    /// Forget the tail cache, so that reads go to the files (tests of damage
    /// done to the files after the records were written).
    #[cfg(test)]
    pub(crate) fn forget_tail(&mut self) {
        self.clear_tail();
    }

    fn clear_tail(&mut self) {
        self.tail.clear();
        self.tail_bytes = 0;
    }

    /// Writes a frame at the end of the active segment (rotating first if
    /// needed); returns the offset it was written at.
    fn write_frame(&mut self, frame: &[u8], end_seq: u64) -> Result<u64, AppendError> {
        if self.tail_dirty {
            let len = self.active().file_len;
            self.writer
                .set_len(len)
                .map_err(self.active_err("truncate"))?;
            self.tail_dirty = false;
        }
        let len = frame.len() as u64;
        self.make_room(len)?;
        let offset = self.active().file_len;
        let written = self
            .writer
            .write_all_at(offset, frame)
            .map_err(self.active_err("write"));
        let synced = written.and_then(|()| match self.opts.fsync {
            Fsync::Always => {
                let synced = self.writer.sync_data().map_err(self.active_err("sync"));
                synced.map_err(|e| self.poison(e))
            }
            Fsync::Interval(_) => Ok(()),
        });
        if let Err(e) = synced {
            // Cut the partial record; if even that fails, retry before the
            // next write (and `open` would cut it anyway).
            self.tail_dirty = self.writer.set_len(offset).is_err();
            return Err(e.into());
        }
        let active = self.segments.back_mut().expect("never empty");
        active.file_len += len;
        active.valid_len += len;
        active.end = end_seq;
        self.next_seq = end_seq;
        self.disk_bytes += len;
        if let Fsync::Interval(period) = self.opts.fsync {
            self.data_dirty = true;
            if self.last_sync.elapsed() >= period {
                // The records are appended. A failed sync poisons the `Wal`
                // (kept in `failed_sync`): the next `sync()` returns it, so no
                // acknowledgement waiting on a sync is ever given for them.
                let _ = self.sync();
            }
        }
        Ok(offset)
    }

    /// Ensures `len` more bytes fit, rotating the active segment if needed.
    fn make_room(&mut self, len: u64) -> Result<(), AppendError> {
        let active = *self.active();
        let has_records = active.end > active.first;
        let rotate = has_records && active.file_len + len > self.opts.segment_bytes;
        let needed = len + if rotate { SEGMENT_HEADER_LEN } else { 0 };
        if self.disk_bytes + needed > self.opts.max_bytes {
            if has_records && active.end <= self.watermark {
                // Everything is acknowledged but the active segment still holds
                // the space: empty it and try again.
                self.reset_active()?;
                return self.make_room(len);
            }
            let available = self.opts.max_bytes.saturating_sub(self.disk_bytes);
            return Err(AppendError::Full { needed, available });
        }
        if rotate {
            self.rotate()?;
        }
        Ok(())
    }

    /// Closes the active segment and starts a new one at `next_seq`.
    fn rotate(&mut self) -> Result<(), IoError> {
        let closed = self.active().first;
        let always = self.opts.fsync == Fsync::Always;
        let writer = create_segment(self.storage.as_ref(), self.next_seq, always)?;
        if always {
            self.sync_dir()?;
        } else {
            self.dir_dirty = true;
        }
        let closed_writer = std::mem::replace(&mut self.writer, writer);
        if self.data_dirty {
            self.unsynced.push((closed, closed_writer));
        }
        if !always {
            self.data_dirty = true; // the new segment's header
        }
        self.segments.push_back(Segment::empty(self.next_seq));
        self.disk_bytes += SEGMENT_HEADER_LEN;
        // The closed segment may already be fully acknowledged. The rotation
        // itself succeeded; a failed deletion is retried by the next ack.
        let _ = self.remove_acked_segments();
        Ok(())
    }

    /// Empties the active segment, whose records are all acknowledged or being
    /// dropped, without creating a file (so it works on a full disk): rename it
    /// to `next_seq`, then cut it to its header. A crash in between leaves a
    /// segment whose first record has the wrong seq: recovery cuts it.
    fn reset_active(&mut self) -> Result<(), IoError> {
        self.clear_tail();
        let st = self.storage.as_ref();
        let old = segment_name(self.active().first);
        let new = segment_name(self.next_seq);
        st.rename(&old, &new).map_err(io_err(st, "rename", &old))?;
        let seg = self.segments.back_mut().expect("never empty");
        self.disk_bytes -= seg.file_len - SEGMENT_HEADER_LEN;
        *seg = Segment::empty(self.next_seq);
        self.dir_dirty = true;
        self.data_dirty = true;
        self.tail_dirty = true;
        // Durable at once in every fsync mode: a crash undoing the rename would
        // bring back the old name, and with it old sequence numbers.
        self.sync_dir()?;
        let st = self.storage.as_ref();
        self.writer
            .set_len(SEGMENT_HEADER_LEN)
            .map_err(io_err(st, "truncate", &new))?;
        self.tail_dirty = false;
        if self.opts.fsync == Fsync::Always {
            let synced = self.writer.sync_data().map_err(io_err(st, "sync", &new));
            synced.map_err(|e| self.poison(e))?;
            self.data_dirty = false;
        }
        Ok(())
    }

    /// Reads the next record after the previous one read, starting (after
    /// `open` or [`rewind`](Self::rewind)) at the oldest unacknowledged record.
    /// Reading does not acknowledge. `Ok(None)` when caught up with appends.
    pub fn read_next(&mut self) -> Result<Option<Record>, ReadError> {
        loop {
            if let Some(record) = self.read_cached() {
                match record {
                    Some(r) => return Ok(Some(r)),
                    None => continue,
                }
            }
            let cur = &mut self.cursor;
            // The cursor's segment may have been deleted under it.
            let idx = self.segments.partition_point(|s| s.first < cur.seg_first);
            let Some(seg) = self.segments.get(idx) else {
                return Ok(None);
            };
            if seg.first != cur.seg_first {
                cur.enter(seg.first);
            }
            if cur.offset >= seg.valid_len {
                match self.segments.get(idx + 1) {
                    Some(next) => {
                        cur.enter(next.first);
                        continue;
                    }
                    None => return Ok(None),
                }
            }
            let st = self.storage.as_ref();
            let file = match &mut cur.file {
                Some(file) => file,
                None => {
                    let file = st.open_read(&segment_name(seg.first));
                    cur.file
                        .insert(file.map_err(seg_err(st, "open", seg.first))?)
                }
            };
            let offset = cur.offset;
            let parsed = parse_record(
                &mut cur.chunk,
                file.as_mut(),
                offset,
                seg.valid_len,
                cur.expected,
            )
            .map_err(seg_err(st, "read", seg.first))?;
            let (header, payload) = match parsed {
                Parsed::Record(header, payload) => (header, payload),
                Parsed::End => return Ok(None),
                Parsed::Corrupt(corruption) => {
                    // Damaged after open (recovery checked it): skip the segment.
                    cur.offset = seg.valid_len;
                    let path = st.path(&segment_name(seg.first));
                    return Err(ReadError::Corrupt {
                        path,
                        offset,
                        corruption,
                    });
                }
            };
            cur.offset += (RECORD_HEADER_LEN + payload.len()) as u64;
            cur.expected += 1;
            if header.seq >= self.watermark {
                return Ok(Some(Record {
                    seq: header.seq,
                    appended_at: time_from_ns(header.time_ns),
                    payload: payload.to_vec(),
                }));
            }
        }
    }

    /// The next record from the tail cache when the cursor is exactly at it:
    /// `Some(Some)` a record, `Some(None)` an acknowledged one skipped, `None`
    /// read from disk instead. Moves the cursor as reading the file would.
    fn read_cached(&mut self) -> Option<Option<Record>> {
        let cur = &self.cursor;
        while let Some(c) = self.tail.front() {
            // Behind the cursor (read from disk meanwhile): no longer needed.
            if c.seq < cur.expected && c.seg_first <= cur.seg_first {
                let old = self.tail.pop_front().expect("front exists");
                self.tail_bytes -= old.payload.len();
            } else {
                break;
            }
        }
        let c = self.tail.front()?;
        // The cursor must stand right before it: same segment at its offset,
        // or at the end of the previous segment (records continue the seqs).
        let here = c.seg_first == cur.seg_first && c.offset == cur.offset && c.seq == cur.expected;
        let next_segment = c.seg_first != cur.seg_first
            && c.offset == SEGMENT_HEADER_LEN
            && c.seq == cur.expected
            && c.seq == c.seg_first;
        if !here && !next_segment {
            return None;
        }
        let c = self.tail.pop_front().expect("front exists");
        self.tail_bytes -= c.payload.len();
        if c.seg_first != self.cursor.seg_first {
            self.cursor.enter(c.seg_first);
        }
        self.cursor.offset = c.offset + (RECORD_HEADER_LEN + c.payload.len()) as u64;
        self.cursor.expected = c.seq + 1;
        if c.seq < self.watermark {
            return Some(None);
        }
        Some(Some(Record {
            seq: c.seq,
            appended_at: time_from_ns(c.time_ns),
            payload: c.payload,
        }))
    }

    /// Iterates with [`read_next`](Self::read_next) until caught up.
    pub fn records(&mut self) -> Records<'_> {
        Records { wal: self }
    }

    /// Moves the reader back to the oldest unacknowledged record, e.g. to
    /// re-deliver after the sink lost what it had read.
    pub fn rewind(&mut self) {
        self.cursor.enter(self.segments[0].first);
    }

    /// Acknowledges one record, in any order. Acks below the low watermark are
    /// ignored; when the watermark passes the end of a segment, that segment
    /// is deleted. The watermark reaches the checkpoint file on the next
    /// [`sync`](Self::sync).
    pub fn ack(&mut self, seq: u64) -> Result<(), AckError> {
        if seq >= self.next_seq {
            return Err(AckError::NotAppended {
                seq,
                next_seq: self.next_seq,
            });
        }
        if seq < self.watermark {
            return Ok(());
        }
        if seq == self.watermark {
            self.watermark += 1; // in-order ack: no set traffic
        } else {
            self.acked_ahead.insert(seq);
        }
        self.advance();
        self.remove_acked_segments()?;
        Ok(())
    }

    /// Discards the oldest segment's unacknowledged records (the `drop_oldest`
    /// full-buffer policy) and deletes it, or empties the active segment when
    /// it is the only one. The deletion is made durable before returning, so
    /// dropped records stay dropped after a crash. `Ok(None)` when nothing is
    /// unacknowledged.
    pub fn drop_oldest(&mut self) -> Result<Option<Dropped>, IoError> {
        self.check_sync()?;
        self.clear_tail();
        self.remove_acked_segments()?;
        if self.watermark >= self.next_seq {
            return Ok(None);
        }
        let seg = self.segments[0];
        let start = self.watermark.max(seg.first);
        let acked = self.acked_ahead.range(start..seg.end).count() as u64;
        let records = seg.end.saturating_sub(start) - acked;
        if self.segments.len() == 1 {
            self.watermark = self.next_seq;
            self.acked_ahead.clear();
            self.reset_active()?;
        } else {
            self.watermark = self.segments[1].first;
            self.advance();
            self.remove_acked_segments()?;
            // Data first: a durable directory entry must not point at bytes
            // that are not (it would read as damage after a power loss).
            self.sync_data_files()?;
            self.sync_dir()?;
        }
        Ok(Some(Dropped {
            seqs: start..seg.end,
            records,
        }))
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

    /// Moves the watermark over acknowledged seqs and seqs that name no record.
    fn advance(&mut self) {
        loop {
            while let Some(&seq) = self.acked_ahead.first() {
                if seq > self.watermark {
                    break;
                }
                self.acked_ahead.pop_first();
                if seq == self.watermark {
                    self.watermark += 1;
                }
            }
            let w = self.watermark;
            let idx = self.segments.partition_point(|s| s.first <= w);
            let jump = match idx.checked_sub(1) {
                None => Some(self.segments[0].first),
                Some(i) if w >= self.segments[i].end => self.segments.get(idx).map(|s| s.first),
                Some(_) => None,
            };
            match jump {
                Some(to) if to > w => self.watermark = to,
                _ => break,
            }
        }
    }

    /// Deletes leading segments whose records are all below the watermark.
    fn remove_acked_segments(&mut self) -> Result<(), IoError> {
        while self.segments.len() > 1 && self.segments[0].end <= self.watermark {
            let seg = self.segments[0];
            remove_if_present(self.storage.as_ref(), &segment_name(seg.first))?;
            self.segments.pop_front();
            self.unsynced.retain(|(first, _)| *first != seg.first);
            self.disk_bytes -= seg.file_len;
            self.dir_dirty = true;
        }
        Ok(())
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
