//! The WAL thread of a disk buffer: the only owner of the [`Wal`]. One loop
//! applies acknowledgements, appends what senders queued (group commit: one
//! write, and one fdatasync when a source waits on it), syncs and checkpoints
//! on the interval, reads ahead into the outbox, and publishes the receiver's
//! end conditions. See the parent module for the rules.
//!
//! This file: the loop, waiting for work, the end and the failure path;
//! `acks.rs`: acknowledgements and dead letters; `append.rs`: appends,
//! `when_full`, the periodic sync; `commit.rs`: group commit on the sync
//! thread; `drop_oldest.rs`; `read.rs`: read-ahead.

mod acks;
mod append;
mod commit;
mod drop_oldest;
mod read;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use ::wal::Wal;
use tracing::{error, info, warn};

use super::accounts::Accounts;
use super::shared::{DeadLetter, Pending, Shared};
use super::{MAX_HELD_BYTES, MAX_HELD_RECORDS, chain};
use crate::ack::{AckStatus, AckToken};
use crate::metrics::Counters;
use crate::route::accounting::Ledger;

/// How long the thread waits for late delivery reports once both ends are gone.
const LATE_ACKS: Duration = Duration::from_secs(2);
/// How often a full `block` buffer retries its stalled appends without a wake-up.
const STALLED_RETRY: Duration = Duration::from_millis(100);
/// Minimum period between two "dropping" log lines.
const REPORT_EVERY: Duration = Duration::from_secs(10);

pub(super) struct Worker {
    sh: Arc<Shared>,
    wal: Option<Wal>,
    /// Poison records' buffer, opened at the first one.
    dead: Option<Wal>,
    /// The per-tenant accounts kept beside the buffer, if any.
    accounts: Option<Accounts>,
    /// `block`: appends waiting for space, in order.
    stalled: Vec<Pending>,
    /// `disk` acknowledgements of records appended since the last commit
    /// started, waiting for the next one.
    awaiting_sync: Vec<AckToken>,
    /// The sync thread (started at the first group commit).
    committer: Option<commit::Committer>,
    /// It could not be started: group commits run on this thread.
    committer_failed: bool,
    /// A group commit is on the sync thread.
    committing: bool,
    /// `end_to_end`: sources' tokens by seq.
    e2e: BTreeMap<u64, AckToken>,
    /// Every seq below it was read (or dropped, or names no record).
    read_upto: u64,
    /// A damaged record was met; seqs from here to the next record read are lost.
    lost_from: Option<u64>,
    last_sync: Instant,
    senders_gone_at: Option<Instant>,
    receiver_gone_at: Option<Instant>,
    failed: bool,
    last_report: Instant,
    reported_dropped: u64,
    reported_redelivered: u64,
}

struct Taken {
    items: Vec<Pending>,
    acks: Vec<(u64, AckStatus, Option<Ledger>)>,
    dead: Vec<DeadLetter>,
    senders_gone: bool,
    receiver_alive: bool,
    closing: bool,
    committed: bool,
    journal_error: Option<std::io::Error>,
}

impl Worker {
    pub(super) fn new(sh: Arc<Shared>, wal: Wal, accounts: Option<Accounts>) -> Self {
        let read_upto = wal.first_unacked();
        Worker {
            sh,
            wal: Some(wal),
            dead: None,
            accounts,
            stalled: Vec::new(),
            awaiting_sync: Vec::new(),
            committer: None,
            committer_failed: false,
            committing: false,
            e2e: BTreeMap::new(),
            read_upto,
            lost_from: None,
            last_sync: Instant::now(),
            senders_gone_at: None,
            receiver_gone_at: None,
            failed: false,
            last_report: Instant::now(),
            reported_dropped: 0,
            reported_redelivered: 0,
        }
    }

    fn wal(&mut self) -> &mut Wal {
        self.wal
            .as_mut()
            .expect("the wal is only taken when the thread ends")
    }

    pub(super) fn run(mut self) {
        loop {
            let t = self.wait_for_work();
            if t.committed {
                self.committed(t.journal_error);
            }
            self.dead_letter(t.dead);
            self.apply_acks(t.acks);
            if !self.failed {
                self.append(t.items);
            } else {
                self.fail_items(t.items);
            }
            if !self.failed {
                self.maybe_sync(false);
            }
            if !self.failed {
                self.group_commit();
            }
            if !self.failed && t.receiver_alive {
                self.read_ahead();
            }
            if let Some(a) = &mut self.accounts {
                // The hand-off mark, if it moved and nothing else wrote it.
                a.write();
            }
            if t.senders_gone && self.senders_gone_at.is_none() {
                self.senders_gone_at = Some(Instant::now());
            }
            if !t.receiver_alive && self.receiver_gone_at.is_none() {
                self.receiver_gone_at = Some(Instant::now());
            }
            self.publish(t.senders_gone);
            self.report();
            let held = self.sh.held_records.load(Relaxed);
            let both_gone = t.senders_gone && !t.receiver_alive;
            let late_over = self
                .receiver_gone_at
                .is_some_and(|t| t.elapsed() >= LATE_ACKS);
            if self.failed || t.closing || (both_gone && (held == 0 || late_over)) {
                break;
            }
        }
        self.finish();
    }

    fn sync_period(&self) -> Duration {
        self.sh.opts.fsync.unwrap_or(self.sh.opts.sync_interval)
    }

    fn can_read(&mut self) -> bool {
        let next = self.wal.as_ref().map_or(0, Wal::next_seq);
        self.read_upto < next
            && self.sh.held_records.load(Relaxed) < MAX_HELD_RECORDS
            && self.sh.held_bytes.load(Relaxed) < MAX_HELD_BYTES
    }

    /// Block until there is something to do or a timer is due; take the inbox.
    fn wait_for_work(&mut self) -> Taken {
        let sh = self.sh.clone();
        let mut ib = sh.inbox();
        loop {
            let sync_due = self.last_sync + self.sync_period();
            let senders_gone = ib.senders == 0;
            let work = (!ib.items.is_empty() && self.stalled.is_empty())
                || ib.committed
                || !ib.acks.is_empty()
                || !ib.dead.is_empty()
                || ib.closing
                || ib.failed
                || sh.hand_off.as_ref().is_some_and(|h| h.moved())
                || (ib.receiver_alive && !self.failed && self.can_read())
                || (senders_gone && self.senders_gone_at.is_none())
                || (!ib.receiver_alive && self.receiver_gone_at.is_none());
            if work {
                break;
            }
            // The periodic sync waits for a commit in flight: its return
            // wakes this thread.
            let mut wake = (!self.committing).then_some(sync_due);
            let mut at = |t: Instant| wake = Some(wake.map_or(t, |w| w.min(t)));
            if !self.stalled.is_empty() {
                at(Instant::now() + STALLED_RETRY);
            }
            if let Some(t) = self.senders_gone_at {
                at(t + sh.opts.drain_timeout);
            }
            if let Some(t) = self.receiver_gone_at {
                at(t + LATE_ACKS);
            }
            let now = Instant::now();
            ib = match wake {
                Some(w) if w <= now => break,
                Some(w) => {
                    let waited = sh.work.wait_timeout(ib, w - now);
                    waited.unwrap_or_else(|e| e.into_inner()).0
                }
                None => sh.work.wait(ib).unwrap_or_else(|e| e.into_inner()),
            };
        }
        let items = if self.stalled.is_empty() {
            ib.bytes = 0;
            std::mem::take(&mut ib.items)
        } else {
            Vec::new()
        };
        let t = Taken {
            items,
            acks: std::mem::take(&mut ib.acks),
            dead: std::mem::take(&mut ib.dead),
            senders_gone: ib.senders == 0,
            receiver_alive: ib.receiver_alive,
            closing: ib.closing,
            committed: std::mem::take(&mut ib.committed),
            journal_error: ib.journal_error.take(),
        };
        drop(ib);
        if !t.items.is_empty() {
            sh.space.notify_waiters();
        }
        t
    }

    /// Tell the receiver when it may end.
    fn publish(&mut self, senders_gone: bool) {
        let caught_up =
            self.stalled.is_empty() && self.read_upto >= self.wal.as_ref().map_or(0, Wal::next_seq);
        let drain_over = self
            .senders_gone_at
            .is_some_and(|t| t.elapsed() >= self.sh.opts.drain_timeout);
        let mut ob = self.sh.outbox();
        let changed = ob.senders_gone != senders_gone
            || ob.caught_up != caught_up
            || ob.drain_over != drain_over
            || ob.failed != self.failed;
        ob.senders_gone = senders_gone;
        ob.caught_up = caught_up && senders_gone;
        ob.drain_over = drain_over;
        ob.failed = self.failed;
        drop(ob);
        if changed {
            self.sh.data_ready.notify_one();
        }
    }

    fn report(&mut self) {
        if self.last_report.elapsed() < REPORT_EVERY {
            return;
        }
        self.last_report = Instant::now();
        let s = &self.sh.stats;
        let dropped = s.dropped_events.load(Relaxed);
        if dropped > self.reported_dropped {
            warn!(
                sink = %self.sh.name,
                when_full = self.sh.opts.when_full.name(),
                dropped_events = dropped - self.reported_dropped,
                total_dropped_events = dropped,
                "Disk buffer full: events dropped by policy."
            );
            self.reported_dropped = dropped;
        }
        let redelivered = s.redelivered_events.load(Relaxed);
        if redelivered > self.reported_redelivered {
            warn!(
                sink = %self.sh.name,
                redelivered_events = redelivered - self.reported_redelivered,
                total_redelivered_events = redelivered,
                "Disk buffer: events re-sent after the sink failed them (possible duplicates)."
            );
            self.reported_redelivered = redelivered;
        }
    }

    /// A write, read or sync failed: the buffer takes no more data.
    fn fail(&mut self, what: &str, e: &dyn std::error::Error) {
        if self.wal.as_ref().is_some_and(Wal::is_poisoned) {
            // The kernel may have dropped what was not synced: nothing waiting
            // on a sync is acknowledged, and only a reopen tells what is left.
            error!(
                sink = %self.sh.name,
                dir = %self.sh.opts.dir.display(),
                error = %chain(e),
                "Disk buffer: fsync failed; data not yet synced may be lost, so nothing waiting on it is acknowledged (sources resend it). The buffer takes no more data: check the device (dmesg, free space, mount state), then restart sluice; what is on disk is replayed."
            );
        } else {
            error!(
                sink = %self.sh.name,
                error = %chain(e),
                "Disk buffer failed while {what}; it takes no more data until sluice restarts (what is on disk is replayed then)."
            );
        }
        self.failed = true;
        self.sh.inbox().failed = true;
        self.sh.space.notify_waiters();
        for t in self.awaiting_sync.drain(..) {
            t.resolve(AckStatus::Errored);
        }
        let stalled = std::mem::take(&mut self.stalled);
        self.fail_items(stalled);
    }

    fn fail_items(&mut self, items: Vec<Pending>) {
        for p in items {
            let n: u64 = p.events.iter().map(|&n| u64::from(n)).sum();
            Counters::add(&self.sh.counters.errors, n as usize);
            self.sh.stats.unstored_events.fetch_add(n, Relaxed);
            p.token.resolve(AckStatus::Errored);
        }
    }

    fn finish(mut self) {
        self.stop_committer();
        // Anything queued after the last turn, then the final sync.
        let rest = {
            let mut ib = self.sh.inbox();
            ib.closing = true;
            ib.bytes = 0;
            std::mem::take(&mut ib.items)
        };
        if !self.failed {
            self.append(rest);
            self.maybe_sync(true);
        } else {
            self.fail_items(rest);
        }
        let stalled = std::mem::take(&mut self.stalled);
        self.fail_items(stalled);
        for t in self.awaiting_sync.drain(..) {
            t.resolve(AckStatus::Errored);
        }
        // End-to-end tokens of records not delivered yet: the sources hear
        // Errored (their peers resend); the records stay on disk.
        for (_, t) in std::mem::take(&mut self.e2e) {
            t.resolve(AckStatus::Errored);
        }
        {
            let mut ob = self.sh.outbox();
            ob.failed = true;
        }
        self.sh.data_ready.notify_one();
        self.sh.space.notify_waiters();
        if let Some(dead) = self.dead.take()
            && let Err(e) = dead.close()
        {
            error!(sink = %self.sh.name, error = %chain(&e), "Disk buffer: closing the dead-letter buffer failed.");
        }
        if let Some(wal) = self.wal.take() {
            let left = wal.unacked_records();
            let bytes = wal.disk_bytes();
            self.sh.stats.kept_records.store(left, Relaxed);
            self.sh.stats.kept_bytes.store(bytes, Relaxed);
            let closed = if self.failed { Ok(()) } else { wal.close() };
            if let Err(e) = closed {
                error!(sink = %self.sh.name, error = %chain(&e), "Disk buffer: final sync failed.");
            }
            info!(
                sink = %self.sh.name,
                unacked_records = left,
                disk_bytes = bytes,
                "Disk buffer closed ({}).",
                self.sh.stats.line()
            );
        }
        self.sh.done.store(true, Relaxed);
    }
}
