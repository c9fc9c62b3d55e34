//! The disk buffer: a sink's queue kept in a write-ahead log (`sluice-wal`), so
//! what a sink has not delivered survives `kill -9`, restarts and long outages
//! (Flume's end-to-end channel, Scribe's store-on-failure).
//!
//! # Shape
//! ```text
//!  senders ──encode──► inbox ──► WAL thread ──append──► segments on disk
//!  (sources, routes)   (bounded)  (owns the Wal)  ◄──acks── delivery callbacks
//!                                      │ read ahead (bounded)
//!                                      ▼
//!                                   outbox ──decode──► receiver (the sink)
//! ```
//! - Senders serialize a batch ([`codec`]) on their own thread into one record
//!   (several when over the record cap) and queue it in the inbox (bounded in
//!   bytes). One thread per buffer owns the [`Wal`](::wal::Wal): it appends everything
//!   queued with one write (group commit: one fsync per group with
//!   `fsync = "always"`; with `interval`, one fsync per group as soon as a
//!   source waits on any record of it, else on the interval), applies
//!   delivery acknowledgements, checkpoints on the interval, and reads ahead of the sink into the outbox (at most
//!   [`MAX_HELD_RECORDS`] records / [`MAX_HELD_BYTES`] bytes not yet resolved).
//! - The receiver decodes a record into an
//!   [`EventBatch`](crate::event::EventBatch) whose token acks the record's seq
//!   when the sink resolves it `Delivered` (or `Dropped` by the sink's own
//!   policy). `Errored` keeps the events in memory and re-sends them
//!   after a backoff (100 ms doubling to 5 s), in seq order and before anything
//!   newer: store-on-failure. New records wait behind them, on disk.
//!
//! # Poison records
//! Sinks drop and count what they refuse for a reason of the record's own (the
//! Kafka sink: invalid or unknown topic, too large, invalid record) and resolve
//! it `Dropped`, which acknowledges it here. `Errored` means "try again". So
//! that one record the sink always fails cannot block everything behind it for
//! ever, re-sends narrow down: a record failed [`SOLO_AFTER`] times is re-sent
//! alone; one that failed alone [`PROBE_AFTER`] times is *suspected*, and the
//! next record is sent alone as a probe. If the probe fails too, the sink is
//! down: both wait (store-on-failure, nothing is given up). If the probe is
//! delivered, the suspect gets one more try at once, and if that fails it is
//! appended to the **dead-letter buffer** — a WAL of its own at
//! `<dir>.dead-letter` (fsync always), read with `sluice buffer inspect` and
//! delivered with `sluice buffer replay` once the cause is fixed — and then
//! acknowledged here. A poison record therefore costs a few backoffs (about 1 s)
//! and one reordering (the probe goes before it), and is never lost.
//!
//! # Source acknowledgements (`acknowledgements` of the sink)
//! - `disk` (default): `Delivered` once the record is appended and fsynced:
//!   after the group's fdatasync, in both fsync modes. With `interval` the
//!   group is synced as soon as the previous sync returns, not at the next
//!   tick (senders that queued during a sync share the next one), so an ack
//!   waits for the device; only records nobody waits on (untracked tokens,
//!   `end_to_end`, `none`) wait up to `fsync_interval_ms`. A failed sync
//!   resolves every token waiting on it `Errored` and poisons the buffer.
//! - `end_to_end`: the source's token is held (in memory, by seq) until the sink
//!   delivered the record; after a crash the tokens are gone and the records
//!   are simply delivered again.
//! - `none`: `Delivered` on receipt.
//!
//! # Full buffer (`max_bytes` of segment files)
//! - `block`: appends wait for space; senders wait once the inbox is full (a
//!   sender feeding other sinks too is shed instead, as with memory buffers).
//! - `drop_newest`: what does not fit is dropped and resolved `Dropped`.
//! - `drop_oldest`: the oldest segment's unacknowledged records are discarded
//!   (durably) until the new ones fit; copies the sink holds at that moment are
//!   counted dropped only if they then fail.
//!
//! Every event dropped this way is counted in the sink's `dropped` counter and
//! the buffer's own counters, logged (rate-limited) and reported at close;
//! re-sent events (possible duplicates) and records replayed after a restart
//! are counted too.
//!
//! # Stop, crash, recovery
//! When every sender is gone the receiver keeps delivering until caught up, the
//! sink fails, or half the shutdown timeout passed; then it ends and what is
//! left stays on disk. [`DiskBufferHandle::close`] syncs, checkpoints and
//! releases the directory. On open the WAL's recovery report is logged (torn
//! tail cut, damaged segments) and every unacknowledged record is replayed. A
//! failed fsync or write is fatal for the buffer: it stops taking data
//! (senders see `Closed`) until sluice restarts and recovery re-reads the disk.
//!
//! # Files
//! This file: the options, tuning constants, errors and counters. `open.rs`
//! recovers the WAL and starts the thread; `sender.rs` and `receiver.rs` are
//! the two halves; `shared.rs` their shared state and what a delivery report
//! does; `worker.rs` (+ `worker/`) the WAL thread; `handle.rs` closes the
//! buffer; `chunks.rs` the client chunks found at open; `codec/` the record format (also fuzzed, `fuzz/`).

mod accounts;
mod chunks;
mod codec;
mod handle;
mod open;
mod receiver;
#[cfg(test)]
mod resent_tests;
mod sender;
mod shared;
#[cfg(test)]
mod sync_tests;
#[cfg(test)]
mod tests;
mod worker;

pub use chunks::RecoveredChunks;
pub use codec::{DecodeError, decode, event_count};
pub use handle::{DiskBufferHandle, DiskReport};
pub use open::open;
pub use receiver::DiskReceiver;
pub use sender::DiskSender;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use ::wal::{Fsync, Options};

use super::{Acknowledgements, WhenFull};

/// Records read ahead and not yet resolved by the sink, at most.
pub const MAX_HELD_RECORDS: usize = 1024;
/// Payload bytes read ahead and not yet resolved by the sink, at most.
pub const MAX_HELD_BYTES: usize = 64 << 20;
/// Serialized bytes waiting for the WAL thread before senders wait.
const INBOX_BYTES: usize = 16 << 20;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A re-sent record that failed this many times goes to the sink alone, so a
/// group that fails because of one record does not fail for ever.
const SOLO_AFTER: u32 = 2;
/// A record failing alone this many times is suspected: the next record is
/// sent alone to test the sink (see the module doc, "Poison records").
const PROBE_AFTER: u32 = 5;

/// How a sink's disk buffer is set up (from `[sinks.NAME.buffer]`).
#[derive(Debug, Clone)]
pub struct DiskOptions {
    /// Directory of the WAL (`<dir>/buffers/<sink>`).
    pub dir: PathBuf,
    /// Cap on segment bytes.
    pub max_bytes: u64,
    /// Policy when full.
    pub when_full: WhenFull,
    /// `None`: fsync every append group; `Some(period)`: sync on that period.
    pub fsync: Option<Duration>,
    /// When sources' acknowledgements resolve.
    pub acknowledgements: Acknowledgements,
    /// Cap on events per second handed to the sink.
    pub replay_events_per_sec: Option<u64>,
    /// After the last sender is gone, how long the receiver keeps delivering.
    pub drain_timeout: Duration,
    /// How often acknowledgements are checkpointed (and, with `interval`,
    /// appends synced).
    pub sync_interval: Duration,
    /// Keep the per-tenant accounts beside the buffer, with at most this many
    /// series (see `accounts.rs`).
    pub tenant_series: Option<usize>,
}

impl DiskOptions {
    /// WAL options: segments of 1/8 of the cap (64 KiB..64 MiB); a record may
    /// fill the whole cap (1 GiB at most), so no event the buffer can hold is
    /// refused (a record larger than a segment makes one larger segment).
    pub fn wal_options(&self) -> Options {
        Options {
            fsync: match self.fsync {
                None => Fsync::Always,
                Some(p) => Fsync::Interval(p.max(Duration::from_millis(1))),
            },
            segment_bytes: self.segment_bytes(),
            max_bytes: self.max_bytes,
            max_record_bytes: Options::largest_record(self.max_bytes),
        }
    }

    fn segment_bytes(&self) -> u64 {
        (self.max_bytes / 8).clamp(64 << 10, 64 << 20)
    }

    /// Events of a batch are packed into records of up to this size (a
    /// segment, 16 MiB at most); a larger event gets a record of its own.
    fn pack_bytes(&self) -> usize {
        self.segment_bytes().min(16 << 20) as usize - 64
    }
}

/// Where a buffer's poison records go: a WAL of its own next to the buffer,
/// readable with `sluice buffer inspect` / `replay`.
pub fn dead_letter_dir(dir: &std::path::Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".dead-letter");
    dir.with_file_name(name)
}

/// A disk buffer that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum DiskBufferError {
    /// The WAL did not open (locked by another sluice, unreadable...).
    #[error("disk buffer {}: {}", dir.display(), chain(source))]
    Open {
        /// Its directory.
        dir: PathBuf,
        /// Why.
        source: ::wal::OpenError,
    },
    /// The per-tenant accounts beside it could not be read or written.
    #[error("disk buffer {}: per-tenant accounts: {source}", dir.display())]
    Accounts {
        /// Its directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The buffer's thread did not start.
    #[error("disk buffer {}: cannot start its thread: {source}", dir.display())]
    Thread {
        /// Its directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// An error with its sources, `a: b: c`.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// The buffer's own counters (events unless named records).
#[derive(Debug, Default)]
pub struct DiskStats {
    /// Records appended to the WAL.
    pub appended_records: AtomicU64,
    /// Events appended.
    pub appended_events: AtomicU64,
    /// Events dropped by `when_full` (drop_newest, drop_oldest) or shed.
    pub dropped_events: AtomicU64,
    /// Records discarded by `drop_oldest`.
    pub dropped_records: AtomicU64,
    /// Events larger than a record (dropped, counted in `dropped_events` too).
    pub oversize_events: AtomicU64,
    /// Events re-sent to the sink after it failed them (may duplicate what the
    /// sink wrote before failing).
    pub redelivered_events: AtomicU64,
    /// Records found unacknowledged at open and replayed (those delivered after
    /// the last checkpoint before a crash are duplicates).
    pub replayed_records: AtomicU64,
    /// Records that could not be read back (damaged after open, undecodable).
    pub lost_records: AtomicU64,
    /// Events of poison records moved to the dead-letter buffer (kept there).
    pub dead_letter_events: AtomicU64,
    /// Events failed because they never reached the disk (fatal buffer error, or
    /// still waiting for space when the buffer closed): the only events a disk
    /// buffer loses at a stop.
    pub unstored_events: AtomicU64,
    /// Set when the buffer closed: records left unacknowledged on disk (kept for
    /// the next start) and the bytes of its segment files.
    pub kept_records: AtomicU64,
    /// See `kept_records`.
    pub kept_bytes: AtomicU64,
}

impl DiskStats {
    fn line(&self) -> String {
        let g = |c: &AtomicU64| c.load(Relaxed);
        format!(
            "appended_records={} appended_events={} dropped_events={} dropped_records={} oversize_events={} \
             redelivered_events={} replayed_records={} lost_records={} unstored_events={} \
             dead_letter_events={}",
            g(&self.appended_records),
            g(&self.appended_events),
            g(&self.dropped_events),
            g(&self.dropped_records),
            g(&self.oversize_events),
            g(&self.redelivered_events),
            g(&self.replayed_records),
            g(&self.lost_records),
            g(&self.unstored_events),
            g(&self.dead_letter_events),
        )
    }
}
