//! `sluice-wal`: a durable, segmented write-ahead disk buffer.
//!
//! One [`Wal`] backs one sink: sources' batches are appended as opaque records,
//! the sink replays them in order with [`Wal::read_next`] (reading ahead of its
//! acknowledgements) and acknowledges each record with [`Wal::ack`], in any
//! order, once it is delivered downstream. Records not acknowledged survive a
//! crash (`kill -9`, and with [`Fsync::Always`] or after [`Wal::sync`], a power
//! loss) and are replayed after [`Wal::open`]. Delivery is at least once:
//! acknowledged records may be replayed again, never silently lost.
//!
//! The API is synchronous and does blocking file I/O; the daemon owns a `Wal`
//! behind a mutex on a blocking thread. A directory is opened by one `Wal` at a
//! time (an exclusive `flock` on `lock`; a second open fails with
//! [`OpenError::Locked`] once the lock has stayed held for half a second: a
//! child forked by this process holds a released lock until it execs).
//!
//! ```
//! use sluice_wal::{Options, Wal};
//!
//! let dir = tempfile::tempdir()?;
//! let mut wal = Wal::open(dir.path(), Options::default())?;
//! let seq = wal.append(b"one serialized batch")?;
//! let record = wal.read_next()?.expect("appended above");
//! assert_eq!((record.seq, &record.payload[..]), (seq, &b"one serialized batch"[..]));
//! wal.ack(seq)?; // once the sink has delivered it
//! wal.sync()?; // also persists the acknowledgement watermark
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Directory
//!
//! ```text
//! <dir>/lock                        flock'ed by the writer, empty
//! <dir>/checkpoint                  low watermark (below)
//! <dir>/checkpoint.tmp              a checkpoint being written; deleted by open
//! <dir>/00000000000000000000.seg    segments, named by the seq of their first
//! <dir>/00000000000000001234.seg    record: 20 decimal digits, so names sort
//! ```
//! Other files are ignored. Records are appended to the last (active) segment;
//! before an append would take it past `segment_bytes` a new segment named
//! `next_seq` is started (a batch is never split).
//!
//! # Byte layout (all integers little-endian)
//!
//! Segment: an 8-byte header, then records back to back, no padding.
//! ```text
//! segment  0   8  magic "SLWSEG01" (format version 1)
//!          8   …  records
//! record   0   4  crc32c (Castagnoli) of bytes 4 .. 24+len
//!          4   4  len: payload length (u32; at most 1 GiB)
//!          8   8  seq: sequence number (u64)
//!         16   8  append time, nanoseconds since the Unix epoch (u64)
//!         24 len  payload
//! slot       0 8  magic "SLWCKP01"
//!            8 8  low watermark: every seq below it is acknowledged
//!           16 4  crc32c of bytes 0 .. 16
//! checkpoint 0 20 slot A
//!          512 20 slot B (bytes 20..512 are zero)
//! ```
//! The checkpoint's value is the higher watermark of its valid slots. A
//! 20-byte file (one slot, written by earlier versions) is read too.
//! Sequence numbers are consecutive within a segment starting at the name's
//! seq; the next segment starts where the previous ended. They increase across
//! restarts (the checkpoint and the segment names carry them), except that
//! the seqs of records lost to a power loss before they were synced may be
//! handed out again (nothing durable ever referred to them).
//!
//! # Durability
//! - [`Fsync::Always`]: an append returns after `fdatasync`; new segments and
//!   the directory are synced before they hold records.
//! - [`Fsync::Interval`]: an append returns after `write(2)`.
//!   [`Wal::sync_appends`] (called by the owner as soon as anyone waits on
//!   appended records: group commit, one `fdatasync` for every append since
//!   the previous one) and [`Wal::sync`] (called by the owner on the period,
//!   and by an append when the period has passed; it also writes the
//!   checkpoint) sync closed segments not yet synced (oldest first), the active
//!   segment and the directory. A closed segment deleted (fully acknowledged)
//!   before the next sync is never synced: a fast sink keeps data off the disk
//!   path. After a power loss, anything after the last sync may be lost; an
//!   older segment cut short that way is reported in `skipped`.
//! - Acknowledgements live in memory; `sync` (and `close`/drop) persists the
//!   watermark: the first time after `open` by writing both slots to
//!   `checkpoint.tmp`, fsyncing, renaming it over `checkpoint` and fsyncing the
//!   directory; afterwards by overwriting the older slot in place and
//!   `fdatasync` (one sync instead of three per period). A torn slot fails
//!   its CRC and the other slot holds the previous watermark. A stale
//!   checkpoint only means replaying acked records.
//! - A segment is deleted once every record in it is below the watermark.
//!   Out-of-order acks above the watermark are not persisted: after a restart
//!   those records are replayed.
//!
//! # Recovery (on open)
//! 1. Delete `checkpoint.tmp`; read `checkpoint` (a damaged one is ignored and
//!    reported: replay starts at the oldest segment).
//! 2. Delete segments whose successor starts at or below the watermark, unread.
//! 3. Scan every remaining segment, checking for each record, in this order:
//!    header fits in the file, `len` under the hard cap (checked before any
//!    allocation, which is also bounded by the file length), payload fits,
//!    CRC, `seq` is the next expected one (and below the next segment's name).
//! 4. The last segment is cut at its first bad record (a torn or corrupt tail:
//!    short record, bad CRC, garbage length); a bad or short segment header
//!    is rewritten. Reported in [`RecoveryReport::truncated`].
//! 5. In an older segment, the bad record and everything after it in that
//!    segment are skipped (left on disk, reported in
//!    [`RecoveryReport::skipped`]); reading goes on with the next segment and
//!    the lost seqs count as acknowledged.
//! 6. The next seq is the end of the last segment (or the watermark, if
//!    higher: then a new segment is started there). Reading starts at the
//!    first unacknowledged record.
//!
//! No file content makes recovery panic or allocate more than the file holds.
//! Sequence numbers stay at or below 2^62 (a billion appends a second for 146
//! years), so no `seq + count` overflows: a segment named beyond it is refused
//! ([`OpenError::SeqOutOfRange`], naming the file), a checkpoint beyond it is
//! ignored as invalid, and appends past it fail with
//! [`AppendError::SeqExhausted`].
//!
//! # Capacity and errors
//! `max_bytes` caps the bytes of all segment files (acknowledged records count
//! until their segment is deleted, so keep `segment_bytes` well below it).
//! [`AppendError::Full`] leaves the policy to the caller: wait for acks, drop
//! the new records, or [`Wal::drop_oldest`]. A failed write (ENOSPC:
//! [`IoError::kind`] is `StorageFull`) returns an error and cuts the partial
//! record; whatever remains is cut by the next open.
//!
//! # Non-goals
//! - Resynchronising inside a damaged segment: there is no sync marker, so a
//!   corrupt length loses the rest of that segment.
//! - Persisting out-of-order acks, compression, encryption, preallocation.
//! - Recovering from a failed fsync: after one the kernel may have dropped the
//!   dirty pages, and a retried `fdatasync` returns 0 without bringing them
//!   back. The `Wal` is poisoned ([`Wal::is_poisoned`]): every later sync,
//!   append and `drop_oldest` returns the failure, so nothing appended before
//!   it is ever reported durable; the owner drops it and reopens, which
//!   replays what is really on disk.
//! - Several writers or processes on one directory; non-Unix platforms.
//! - Shared read-only access while a writer runs, other than [`inspect`].

#![warn(missing_docs)]

mod error;
mod format;
mod inspect;
mod scan;
mod storage;
mod wal;

#[cfg(test)]
mod tests;

pub use error::{AckError, AppendError, IoError, OpenError, ReadError};
pub use format::Corruption;
pub use inspect::{Inspection, SegmentInfo, inspect};
pub use storage::{DirStorage, LockGuard, ReadFile, Storage, WriteFile};
pub use wal::{Damage, Dropped, Fsync, Options, Record, Records, RecoveryReport, SyncJob, Wal};
