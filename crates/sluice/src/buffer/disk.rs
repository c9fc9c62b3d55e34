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
//! - The receiver decodes a record into an [`EventBatch`] whose token acks the
//!   record's seq when the sink resolves it `Delivered` (or `Dropped` by the
//!   sink's own policy). `Errored` keeps the events in memory and re-sends them
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

mod codec;
mod open;
#[cfg(test)]
mod sync_tests;
#[cfg(test)]
mod tests;
mod worker;

pub use open::open;

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ::wal::{Fsync, Options};
use bytes::Bytes;
use tokio::sync::Notify;
use tracing::{error, warn};

pub use codec::{DecodeError, decode, event_count};

use super::{Acknowledgements, SendOutcome, WhenFull};
use crate::ack::{AckStatus, AckToken};
use crate::event::{Event, EventBatch};
use crate::metrics::Counters;

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

/// A poison record to move to the dead-letter buffer, then acknowledge.
struct DeadLetter {
    seq: u64,
    payloads: Vec<Vec<u8>>,
    events: u64,
}

/// Serialized batch waiting for the WAL thread.
struct Pending {
    payloads: Vec<Vec<u8>>,
    events: Vec<u32>,
    token: AckToken,
}

#[derive(Default)]
struct Inbox {
    items: Vec<Pending>,
    bytes: usize,
    /// Seqs resolved by the sink (`Delivered` or `Dropped`).
    acks: Vec<(u64, AckStatus)>,
    /// Poison records for the dead-letter buffer.
    dead: Vec<DeadLetter>,
    senders: usize,
    receiver_alive: bool,
    /// `block` policy: appends wait for space; senders wait too.
    wal_full: bool,
    /// The handle asked the thread to finish.
    closing: bool,
    /// A fatal I/O error: no more data is taken.
    failed: bool,
}

/// A record the sink failed, waiting to be re-sent.
struct Retry {
    events: Arc<Vec<Event>>,
    bytes: usize,
    /// Times the sink failed it.
    failures: u32,
}

/// A record handed to the sink, unresolved.
struct Flight {
    events: u32,
    bytes: usize,
    /// Dropped by `drop_oldest` meanwhile.
    dropped: bool,
    /// Times the sink failed it before.
    failures: u32,
}

/// A record read from the WAL, waiting for the sink.
struct Ready {
    seq: u64,
    payload: Vec<u8>,
}

/// Read-side state, shared by the WAL thread, the receiver and delivery callbacks.
struct Outbox {
    ready: VecDeque<Ready>,
    ready_events: usize,
    /// Failed by the sink, to be re-sent in seq order.
    retry: BTreeMap<u64, Retry>,
    retry_events: usize,
    retry_at: Instant,
    backoff: Duration,
    /// Handed to the sink, unresolved.
    inflight: BTreeMap<u64, Flight>,
    /// A record handed to the sink alone: nothing else goes until it resolves.
    solo: Option<u64>,
    /// A solo record just succeeded: the other re-sends go together once.
    group_retry: bool,
    /// A record that failed alone `PROBE_AFTER` times (poison or a sink down).
    suspect: Option<u64>,
    /// The record sent alone to test the sink while `suspect` waits.
    probe: Option<u64>,
    /// The probe was delivered: the sink works, so the suspect's next failure
    /// is its own and sends it to the dead-letter buffer.
    verified: bool,
    /// Every sender is gone (the receiver may end).
    senders_gone: bool,
    /// Since `senders_gone`: everything appended was read.
    caught_up: bool,
    /// Since `senders_gone`: the drain timeout passed.
    drain_over: bool,
    /// Fatal error: end after `ready` is drained.
    failed: bool,
    receiver_alive: bool,
}

struct Shared {
    name: Arc<str>,
    opts: DiskOptions,
    /// Events are packed into records of up to this many bytes...
    max_record: usize,
    /// ...and one event alone into a record of up to this many (what the
    /// buffer can hold).
    max_alone: usize,
    counters: Arc<Counters>,
    stats: DiskStats,
    inbox: Mutex<Inbox>,
    /// Wakes the WAL thread.
    work: Condvar,
    /// Wakes senders waiting for inbox space.
    space: Notify,
    outbox: Mutex<Outbox>,
    /// Wakes the receiver.
    data_ready: Notify,
    /// Records + bytes read ahead and not finally resolved (the read budget).
    held_records: AtomicUsize,
    held_bytes: AtomicUsize,
    done: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state stays consistent across a panic in another holder (every
    // update is a few plain assignments).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        lock(&self.inbox)
    }

    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        lock(&self.outbox)
    }

    fn release(&self, bytes: usize) {
        self.held_records.fetch_sub(1, Relaxed);
        self.held_bytes.fetch_sub(bytes, Relaxed);
    }

    fn count_dropped(&self, events: u64) {
        self.stats.dropped_events.fetch_add(events, Relaxed);
        self.counters.dropped.fetch_add(events, Relaxed);
    }

    /// A delivery callback: the sink resolved record `seq`.
    fn resolved(self: &Arc<Self>, seq: u64, status: AckStatus, events: Arc<Vec<Event>>) {
        let mut ob = self.outbox();
        let Some(f) = ob.inflight.remove(&seq) else {
            return;
        };
        if ob.solo == Some(seq) {
            ob.solo = None;
        }
        let probe = ob.probe == Some(seq);
        if probe {
            ob.probe = None;
        }
        if status != AckStatus::Errored && ob.suspect == Some(seq) {
            ob.suspect = None;
            ob.verified = false;
        }
        match status {
            AckStatus::Delivered | AckStatus::Dropped => {
                if status == AckStatus::Delivered {
                    ob.backoff = BACKOFF_MIN;
                    if f.failures > 0 {
                        ob.group_retry = true;
                    }
                    if probe && ob.suspect.is_some() {
                        // The sink works: the suspect gets one more try, now.
                        ob.verified = true;
                    }
                }
                let wake = probe || f.failures > 0 || !ob.retry.is_empty() || ob.solo.is_none();
                drop(ob);
                self.release(f.bytes);
                if !f.dropped {
                    self.inbox().acks.push((seq, status));
                }
                self.work.notify_one();
                if wake {
                    self.data_ready.notify_one();
                }
            }
            AckStatus::Errored if f.dropped || !ob.receiver_alive => {
                drop(ob);
                self.release(f.bytes);
                if f.dropped {
                    self.count_dropped(u64::from(f.events));
                }
                self.work.notify_one();
            }
            AckStatus::Errored if ob.verified && ob.suspect == Some(seq) => {
                // Failed alone right after the sink delivered the probe: the
                // record itself is refused. Keep it aside; free the buffer.
                ob.suspect = None;
                ob.verified = false;
                drop(ob);
                self.dead_letter(seq, &events, f.failures + 1);
                self.release(f.bytes);
                self.work.notify_one();
                self.data_ready.notify_one();
            }
            AckStatus::Errored => {
                let failures = f.failures + 1;
                if probe {
                    // The probe failed too: the sink is down, not the suspect.
                    ob.suspect = None;
                    ob.verified = false;
                } else if failures >= PROBE_AFTER
                    && ob.suspect.is_none()
                    && ob.retry.keys().next().is_none_or(|&first| seq < first)
                {
                    ob.suspect = Some(seq);
                }
                // A new round of failures waits a backoff; the rest of a burst
                // (a group failing together) shares it.
                let now = Instant::now();
                if now >= ob.retry_at {
                    ob.retry_at = now + ob.backoff;
                    ob.backoff = (ob.backoff * 2).min(BACKOFF_MAX);
                }
                ob.group_retry = false;
                ob.retry_events += events.len();
                // The budget stays held: the events are still ours.
                ob.retry.insert(
                    seq,
                    Retry {
                        events,
                        bytes: f.bytes,
                        failures,
                    },
                );
                drop(ob);
                self.data_ready.notify_one();
            }
        }
    }

    /// Hand a poison record to the WAL thread for the dead-letter buffer.
    fn dead_letter(&self, seq: u64, events: &[Event], failures: u32) {
        let mut payloads = Vec::new();
        let mut oversize = Vec::new();
        codec::encode(
            events,
            self.max_record,
            self.max_alone,
            &mut payloads,
            &mut oversize,
        );
        error!(
            sink = %self.name,
            seq,
            events = events.len(),
            failures,
            dir = %dead_letter_dir(&self.opts.dir).display(),
            "Disk buffer: the sink keeps failing this record while it delivers the next one; \
             moved to the dead-letter buffer (inspect and replay it with `sluice buffer`)."
        );
        self.inbox().dead.push(DeadLetter {
            seq,
            payloads,
            events: events.len() as u64,
        });
    }
}

/// Where a buffer's poison records go: a WAL of its own next to the buffer,
/// readable with `sluice buffer inspect` / `replay`.
pub fn dead_letter_dir(dir: &std::path::Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".dead-letter");
    dir.with_file_name(name)
}

/// Sending half of a disk buffer.
pub struct DiskSender {
    shared: Arc<Shared>,
}

impl Clone for DiskSender {
    fn clone(&self) -> Self {
        self.shared.inbox().senders += 1;
        DiskSender {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for DiskSender {
    fn drop(&mut self) {
        let mut ib = self.shared.inbox();
        ib.senders -= 1;
        if ib.senders == 0 {
            drop(ib);
            self.shared.work.notify_one();
        }
    }
}

impl DiskSender {
    /// Serialize and queue a batch (see the module doc for the policies).
    pub async fn send(&self, batch: EventBatch, may_block: bool) -> SendOutcome {
        let sh = &*self.shared;
        let n = batch.len();
        let EventBatch { events, ack } = batch;
        let token = if sh.opts.acknowledgements == Acknowledgements::None {
            ack.resolve(AckStatus::Delivered);
            AckToken::none()
        } else {
            ack
        };
        let mut payloads = Vec::new();
        let mut oversize = Vec::new();
        codec::encode(
            &events,
            sh.max_record,
            sh.max_alone,
            &mut payloads,
            &mut oversize,
        );
        if !oversize.is_empty() {
            let k = oversize.len() as u64;
            sh.stats.oversize_events.fetch_add(k, Relaxed);
            sh.count_dropped(k);
            warn!(
                events = k,
                max_record_bytes = sh.max_alone,
                "Events larger than the whole disk buffer dropped."
            );
            // The batch lost events: its source must not hear `Delivered`
            // (worst wins: the stored rest resolves this token too).
            token.clone().resolve(AckStatus::Dropped);
        }
        if payloads.is_empty() {
            token.resolve(if n == 0 {
                AckStatus::Delivered
            } else {
                AckStatus::Dropped
            });
            return if n == 0 {
                SendOutcome::Queued
            } else {
                SendOutcome::Dropped
            };
        }
        let counts = payloads
            .iter()
            .map(|p| codec::event_count(p).unwrap_or(0))
            .collect();
        let bytes: usize = payloads.iter().map(Vec::len).sum();
        let mut item = Some(Pending {
            payloads,
            events: counts,
            token,
        });
        let kept = n - oversize.len();
        loop {
            let notified = {
                let mut ib = sh.inbox();
                if ib.failed || ib.closing {
                    drop(ib);
                    Counters::add(&sh.counters.errors, kept);
                    sh.stats.unstored_events.fetch_add(kept as u64, Relaxed);
                    if let Some(p) = item.take() {
                        p.token.resolve(AckStatus::Errored);
                    }
                    return SendOutcome::Closed;
                }
                let full = ib.wal_full || (ib.bytes > 0 && ib.bytes + bytes > INBOX_BYTES);
                if !full {
                    let was_idle = ib.items.is_empty();
                    ib.bytes += bytes;
                    ib.items.push(item.take().expect("taken once"));
                    drop(ib);
                    if was_idle {
                        sh.work.notify_one();
                    }
                    return SendOutcome::Queued;
                }
                match (sh.opts.when_full, may_block) {
                    (WhenFull::DropNewest, _) | (_, false) => {
                        drop(ib);
                        sh.count_dropped(kept as u64);
                        let status = if sh.opts.when_full == WhenFull::DropNewest {
                            AckStatus::Dropped
                        } else {
                            AckStatus::Errored
                        };
                        if let Some(p) = item.take() {
                            p.token.resolve(status);
                        }
                        return SendOutcome::Dropped;
                    }
                    (_, true) => sh.space.notified(),
                }
            };
            notified.await;
        }
    }
}

struct Limiter {
    per_sec: f64,
    next: Instant,
}

impl Limiter {
    fn wait(&self) -> Option<Instant> {
        (self.next > Instant::now()).then_some(self.next)
    }

    fn take(&mut self, events: usize) {
        let now = Instant::now();
        // Up to one second of unused rate may be spent at once.
        let base = self
            .next
            .max(now.checked_sub(Duration::from_secs(1)).unwrap_or(now));
        self.next = base + Duration::from_secs_f64(events as f64 / self.per_sec);
    }
}

/// Receiving half of a disk buffer, owned by the sink.
pub struct DiskReceiver {
    shared: Arc<Shared>,
    limiter: Option<Limiter>,
    /// Seq of the record the last batch handed out came from.
    last_seq: Option<u64>,
}

enum Poll {
    Batch(EventBatch),
    Wait(Option<Instant>),
    End,
}

impl DiskReceiver {
    /// Next batch. Ends (`None`) once every sender is gone and everything was
    /// delivered, or the sink fails, or the drain timeout passed: the rest stays
    /// on disk for the next start. Cancel-safe: nothing is taken before the
    /// batch is returned.
    pub async fn recv(&mut self) -> Option<EventBatch> {
        loop {
            if let Some(until) = self.limiter.as_ref().and_then(Limiter::wait) {
                tokio::time::sleep_until(until.into()).await;
            }
            let shared = self.shared.clone();
            let notified = shared.data_ready.notified();
            match self.poll() {
                Poll::Batch(b) => return Some(b),
                Poll::End => return None,
                Poll::Wait(None) => notified.await,
                Poll::Wait(Some(at)) => {
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(at.into()) => {}
                    }
                }
            }
        }
    }

    /// A batch if one is ready now.
    pub fn try_recv(&mut self) -> Option<EventBatch> {
        if self.limiter.as_ref().and_then(Limiter::wait).is_some() {
            return None;
        }
        match self.poll() {
            Poll::Batch(b) => Some(b),
            _ => None,
        }
    }

    /// Seq of the record the batch last returned by `recv`/`try_recv` came
    /// from (its position in the buffer; the exactly-once Kafka sink's
    /// checkpoints are made of them).
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    /// The lowest seq handed to the sink and not finally resolved (in flight,
    /// or failed and waiting for a re-send). Every lower seq handed out was
    /// resolved `Delivered` or `Dropped`, dropped by `drop_oldest`, or moved to
    /// the dead-letter buffer. Records read from the WAL reach the sink in seq
    /// order, re-sends aside.
    pub fn first_unresolved(&self) -> Option<u64> {
        let ob = self.shared.outbox();
        let a = ob.inflight.keys().next().copied();
        let b = ob.retry.keys().next().copied();
        a.into_iter().chain(b).min()
    }

    /// The buffer's directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.shared.opts.dir
    }

    /// Events read ahead or waiting for a retry.
    pub fn queued_events(&self) -> usize {
        let ob = self.shared.outbox();
        ob.ready_events + ob.retry_events
    }

    fn poll(&mut self) -> Poll {
        let sh = self.shared.clone();
        loop {
            let mut ob = sh.outbox();
            if ob.failed || (ob.senders_gone && ob.drain_over) {
                return Poll::End;
            }
            if let Some(s) = ob.solo {
                if ob.inflight.contains_key(&s) {
                    return Poll::Wait(None);
                }
                ob.solo = None;
            }
            if let Some(x) = ob.suspect {
                if !ob.retry.contains_key(&x) && !ob.inflight.contains_key(&x) {
                    // Gone meanwhile (drop_oldest).
                    ob.suspect = None;
                    ob.verified = false;
                } else if ob.probe.is_none() && !ob.verified {
                    // Test the sink with the next record, alone.
                    let next = ob.retry.range(x + 1..).next().map(|(&seq, _)| seq);
                    if let Some(seq) = next {
                        ob.probe = Some(seq);
                        return self.resend(ob, seq, true);
                    }
                    if let Some(r) = ob.ready.pop_front() {
                        ob.probe = Some(r.seq);
                        ob.solo = Some(r.seq);
                        match self.take_ready(ob, r) {
                            Some(p) => return p,
                            None => continue,
                        }
                    }
                    // Nothing behind it yet: retry it after the backoff.
                }
            }
            if let Some((&seq, r)) = ob.retry.first_key_value() {
                let now = Instant::now();
                let final_try = ob.verified && ob.suspect == Some(seq);
                if now < ob.retry_at && !final_try {
                    if ob.senders_gone {
                        // Stopping while the sink fails: leave it on disk.
                        return Poll::End;
                    }
                    return Poll::Wait(Some(ob.retry_at));
                }
                let solo = final_try
                    || ob.suspect == Some(seq)
                    || (r.failures >= SOLO_AFTER && !ob.group_retry);
                return self.resend(ob, seq, solo);
            }
            let Some(r) = ob.ready.pop_front() else {
                if ob.failed || (ob.senders_gone && ob.caught_up) {
                    return Poll::End;
                }
                return Poll::Wait(None);
            };
            if let Some(p) = self.take_ready(ob, r) {
                return p;
            }
        }
    }

    /// Hand out a failed record again (`solo`: alone).
    fn resend(&mut self, mut ob: MutexGuard<'_, Outbox>, seq: u64, solo: bool) -> Poll {
        let r = ob.retry.remove(&seq).expect("the caller saw it");
        ob.retry_events -= r.events.len();
        let n = r.events.len() as u32;
        ob.inflight.insert(
            seq,
            Flight {
                events: n,
                bytes: r.bytes,
                dropped: false,
                failures: r.failures,
            },
        );
        if solo {
            ob.solo = Some(seq);
            ob.group_retry = false;
        }
        drop(ob);
        self.shared
            .stats
            .redelivered_events
            .fetch_add(u64::from(n), Relaxed);
        Poll::Batch(self.batch(seq, r.events))
    }

    /// Hand out a record read ahead; `None` when it does not decode (skipped).
    fn take_ready(&mut self, mut ob: MutexGuard<'_, Outbox>, r: Ready) -> Option<Poll> {
        let sh = self.shared.clone();
        let n = codec::event_count(&r.payload).unwrap_or(0);
        ob.ready_events -= n as usize;
        let bytes = r.payload.len();
        ob.inflight.insert(
            r.seq,
            Flight {
                events: n,
                bytes,
                dropped: false,
                failures: 0,
            },
        );
        drop(ob);
        match codec::decode(Bytes::from(r.payload)) {
            Ok(events) => {
                Counters::add(&sh.counters.events_in, events.len());
                Some(Poll::Batch(self.batch(r.seq, Arc::new(events))))
            }
            Err(e) => {
                error!(seq = r.seq, error = %e, "Disk buffer record does not decode; skipped.");
                sh.stats.lost_records.fetch_add(1, Relaxed);
                Counters::add(&sh.counters.errors, n as usize);
                // Acknowledge it so it does not block the buffer forever.
                sh.resolved(r.seq, AckStatus::Dropped, Arc::new(Vec::new()));
                None
            }
        }
    }

    fn batch(&mut self, seq: u64, events: Arc<Vec<Event>>) -> EventBatch {
        self.last_seq = Some(seq);
        if let Some(l) = &mut self.limiter {
            l.take(events.len());
        }
        let sh = self.shared.clone();
        let mine = events.clone();
        let ack = AckToken::with_callback(move |status| sh.resolved(seq, status, mine));
        EventBatch { events, ack }
    }
}

impl Drop for DiskReceiver {
    fn drop(&mut self) {
        let sh = &self.shared;
        let mut ob = sh.outbox();
        ob.receiver_alive = false;
        // What was read ahead stays on disk, unacknowledged: release its budget.
        let mut released: Vec<usize> = ob.ready.drain(..).map(|r| r.payload.len()).collect();
        released.extend(std::mem::take(&mut ob.retry).into_values().map(|r| r.bytes));
        ob.ready_events = 0;
        ob.retry_events = 0;
        drop(ob);
        for bytes in released {
            sh.release(bytes);
        }
        sh.inbox().receiver_alive = false;
        sh.work.notify_one();
    }
}

/// Reads a disk buffer's counters and directory, also after it closed.
pub struct DiskReport {
    shared: Arc<Shared>,
}

impl DiskReport {
    /// The buffer's counters.
    pub fn stats(&self) -> &DiskStats {
        &self.shared.stats
    }

    /// The buffer's directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.shared.opts.dir
    }

    /// The sink's name.
    pub fn sink(&self) -> &str {
        &self.shared.name
    }
}

/// Closes a disk buffer once its sink has ended.
pub struct DiskBufferHandle {
    shared: Arc<Shared>,
    done: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl DiskBufferHandle {
    /// A handle to the counters that outlives [`close`](Self::close).
    pub fn report(&self) -> DiskReport {
        DiskReport {
            shared: self.shared.clone(),
        }
    }

    /// Ask the WAL thread to append what is queued, sync, checkpoint and
    /// release the directory; wait for it at most `timeout`.
    pub async fn close(mut self, timeout: Duration) {
        self.shared.inbox().closing = true;
        self.shared.work.notify_one();
        let Some(done) = self.done.take() else { return };
        if tokio::time::timeout(timeout, done).await.is_err() {
            error!(
                sink = %self.shared.name,
                "Disk buffer did not close in time; unsynced acknowledgements will be replayed."
            );
        }
    }

    /// Blocking [`close`](Self::close), for callers outside the runtime.
    pub fn close_blocking(mut self, timeout: Duration) {
        self.shared.inbox().closing = true;
        self.shared.work.notify_one();
        let deadline = Instant::now() + timeout;
        while !self.shared.done.load(Relaxed) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.done = None;
    }
}

impl Drop for DiskBufferHandle {
    fn drop(&mut self) {
        self.shared.inbox().closing = true;
        self.shared.work.notify_one();
    }
}
