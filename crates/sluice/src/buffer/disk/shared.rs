//! The state a disk buffer's parts share: the inbox (senders → WAL thread),
//! the outbox (WAL thread → receiver), and what a delivery report does to a
//! record: acknowledge it, keep it for a re-send, suspect it, or move it to
//! the dead-letter buffer (see the parent module, "Poison records").

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tracing::error;

use super::accounts::HandOff;
use super::{
    BACKOFF_MAX, BACKOFF_MIN, DiskOptions, DiskStats, PROBE_AFTER, codec, dead_letter_dir,
};
use crate::ack::{AckStatus, AckToken};
use crate::event::Event;
use crate::metrics::Counters;
use crate::route::accounting::{Ledger, Reason, TenantBook};

/// A poison record to move to the dead-letter buffer, then acknowledge.
pub(super) struct DeadLetter {
    pub(super) seq: u64,
    pub(super) payloads: Vec<Vec<u8>>,
    pub(super) events: u64,
    /// Its events per tenant, as refused (kept accounts only).
    pub(super) rows: Option<Ledger>,
}

/// Serialized batch waiting for the WAL thread.
pub(super) struct Pending {
    pub(super) payloads: Vec<Vec<u8>>,
    pub(super) events: Vec<u32>,
    pub(super) token: AckToken,
    /// Kept accounts: the batch's per-tenant counts from the routes (none
    /// payloads: a batch stored nowhere whose counts must still be kept)...
    pub(super) ledger: Option<Box<Ledger>>,
    /// ...and what to add if it is dropped when full instead of stored.
    pub(super) if_dropped: Option<Ledger>,
}

#[derive(Default)]
pub(super) struct Inbox {
    pub(super) items: Vec<Pending>,
    pub(super) bytes: usize,
    /// Seqs resolved by the sink (`Delivered` or `Dropped`), with their events
    /// per tenant as settled (kept accounts only).
    pub(super) acks: Vec<(u64, AckStatus, Option<Ledger>)>,
    /// Poison records for the dead-letter buffer.
    pub(super) dead: Vec<DeadLetter>,
    pub(super) senders: usize,
    pub(super) receiver_alive: bool,
    /// `block` policy: appends wait for space; senders wait too.
    pub(super) wal_full: bool,
    /// The handle asked the thread to finish.
    pub(super) closing: bool,
    /// A fatal I/O error: no more data is taken.
    pub(super) failed: bool,
    /// The sync thread returned the group commit in flight...
    pub(super) committed: bool,
    /// ...and syncing the accounts journal failed.
    pub(super) journal_error: Option<std::io::Error>,
}

/// A record the sink failed, waiting to be re-sent.
pub(super) struct Retry {
    pub(super) events: Arc<Vec<Event>>,
    pub(super) bytes: usize,
    /// Times the sink failed it.
    pub(super) failures: u32,
}

/// A record handed to the sink, unresolved.
pub(super) struct Flight {
    pub(super) events: u32,
    pub(super) bytes: usize,
    /// Dropped by `drop_oldest` meanwhile.
    pub(super) dropped: bool,
    /// Times the sink failed it before.
    pub(super) failures: u32,
    /// Its events (kept accounts only: `drop_oldest` counts them by tenant).
    pub(super) batch: Option<Arc<Vec<Event>>>,
}

/// A record read from the WAL, waiting for the sink.
pub(super) struct Ready {
    pub(super) seq: u64,
    pub(super) payload: Vec<u8>,
}

/// Read-side state, shared by the WAL thread, the receiver and delivery callbacks.
pub(super) struct Outbox {
    pub(super) ready: VecDeque<Ready>,
    pub(super) ready_events: usize,
    /// Failed by the sink, to be re-sent in seq order.
    pub(super) retry: BTreeMap<u64, Retry>,
    pub(super) retry_events: usize,
    pub(super) retry_at: Instant,
    pub(super) backoff: Duration,
    /// Handed to the sink, unresolved.
    pub(super) inflight: BTreeMap<u64, Flight>,
    /// A record handed to the sink alone: nothing else goes until it resolves.
    pub(super) solo: Option<u64>,
    /// A solo record just succeeded: the other re-sends go together once.
    pub(super) group_retry: bool,
    /// A record that failed alone `PROBE_AFTER` times (poison or a sink down).
    pub(super) suspect: Option<u64>,
    /// The record sent alone to test the sink while `suspect` waits.
    pub(super) probe: Option<u64>,
    /// The probe was delivered: the sink works, so the suspect's next failure
    /// is its own and sends it to the dead-letter buffer.
    pub(super) verified: bool,
    /// Every sender is gone (the receiver may end).
    pub(super) senders_gone: bool,
    /// Since `senders_gone`: everything appended was read.
    pub(super) caught_up: bool,
    /// Since `senders_gone`: the drain timeout passed.
    pub(super) drain_over: bool,
    /// Fatal error: end after `ready` is drained.
    pub(super) failed: bool,
    pub(super) receiver_alive: bool,
    /// Records handed before this run that the sink found at its destination
    /// already and did not send again (not re-sends; see `accounts.rs`).
    pub(super) already_there: BTreeSet<u64>,
}

pub(super) struct Shared {
    pub(super) name: Arc<str>,
    pub(super) opts: DiskOptions,
    /// Events are packed into records of up to this many bytes...
    pub(super) max_record: usize,
    /// ...and one event alone into a record of up to this many (what the
    /// buffer can hold).
    pub(super) max_alone: usize,
    pub(super) counters: Arc<Counters>,
    pub(super) stats: DiskStats,
    pub(super) inbox: Mutex<Inbox>,
    /// Wakes the WAL thread.
    pub(super) work: Condvar,
    /// Wakes senders waiting for inbox space.
    pub(super) space: Notify,
    pub(super) outbox: Mutex<Outbox>,
    /// Wakes the receiver.
    pub(super) data_ready: Notify,
    /// Records + bytes read ahead and not finally resolved (the read budget).
    pub(super) held_records: AtomicUsize,
    pub(super) held_bytes: AtomicUsize,
    pub(super) done: AtomicBool,
    /// The per-tenant accounts this buffer keeps, if it keeps them...
    pub(super) book: Option<Arc<TenantBook>>,
    /// ...and the sink's hand-offs (re-sends after a restart).
    pub(super) hand_off: Option<Arc<HandOff>>,
    /// Client chunks found in the records unacknowledged at open.
    pub(super) recovered: super::chunks::RecoveredChunks,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The state stays consistent across a panic in another holder (every
    // update is a few plain assignments).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(super) fn inbox(&self) -> MutexGuard<'_, Inbox> {
        lock(&self.inbox)
    }

    pub(super) fn outbox(&self) -> MutexGuard<'_, Outbox> {
        lock(&self.outbox)
    }

    pub(super) fn release(&self, bytes: usize) {
        self.held_records.fetch_sub(1, Relaxed);
        self.held_bytes.fetch_sub(bytes, Relaxed);
    }

    pub(super) fn count_dropped(&self, events: u64) {
        self.stats.dropped_events.fetch_add(events, Relaxed);
        self.counters.dropped.fetch_add(events, Relaxed);
    }

    /// A delivery callback: the sink resolved record `seq`.
    pub(super) fn resolved(self: &Arc<Self>, seq: u64, status: AckStatus, events: Arc<Vec<Event>>) {
        let mut ob = self.outbox();
        let Some(f) = ob.inflight.remove(&seq) else {
            return;
        };
        let already_there = !ob.already_there.is_empty() && ob.already_there.remove(&seq);
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
                    let rows = self.book.as_ref().map(|b| {
                        let reason = (status != AckStatus::Delivered).then_some(Reason::Refused);
                        let l = Ledger::settled(b, &events, reason);
                        if reason.is_none() && !already_there && self.resent(seq) {
                            l.resent()
                        } else {
                            l
                        }
                    });
                    self.inbox().acks.push((seq, status, rows));
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

    /// Whether record `seq` was handed to the sink before this run (kept
    /// accounts only): delivered now, it is a re-send.
    fn resent(&self, seq: u64) -> bool {
        self.hand_off.as_ref().is_some_and(|h| seq < h.resent_below)
    }

    /// Hand a poison record to the WAL thread for the dead-letter buffer.
    fn dead_letter(&self, seq: u64, events: &[Event], failures: u32) {
        let mut payloads = Vec::new();
        let mut oversize = Vec::new();
        codec::encode(
            events,
            None,
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
        let rows = self
            .book
            .as_ref()
            .map(|b| Ledger::settled(b, events, Some(Reason::Refused)));
        self.inbox().dead.push(DeadLetter {
            seq,
            payloads,
            events: events.len() as u64,
            rows,
        });
    }
}
