//! The receiving half of a disk buffer, owned by the sink: hands out records
//! read ahead and re-sends failed ones (in seq order, narrowing down to one
//! record alone and a probe; see the parent module, "Poison records"), at the
//! replay rate limit.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::error;

use super::shared::{Flight, Outbox, Ready, Shared};
use super::{SOLO_AFTER, codec};
use crate::ack::{AckStatus, AckToken};
use crate::event::{Event, EventBatch};
use crate::metrics::Counters;

pub(super) struct Limiter {
    pub(super) per_sec: f64,
    pub(super) next: Instant,
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
    pub(super) shared: Arc<Shared>,
    pub(super) limiter: Option<Limiter>,
    /// Seq of the record the last batch handed out came from.
    pub(super) last_seq: Option<u64>,
    /// Stored bytes of that record.
    pub(super) last_bytes: usize,
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

    /// The sink found the record it was handed as `seq` at its destination
    /// already and resolves it `Delivered` without sending it (the
    /// exactly-once Kafka sink's checkpoint): if it had been handed before a
    /// restart, it is not counted as re-sent. Call before resolving it.
    pub fn already_delivered(&self, seq: u64) {
        if self
            .shared
            .hand_off
            .as_ref()
            .is_some_and(|h| seq < h.resent_below)
        {
            self.shared.outbox().already_there.insert(seq);
        }
    }

    /// The buffer's directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.shared.opts.dir
    }

    /// Stored size of the record the batch last returned came from, as the
    /// read-ahead bound ([`super::MAX_HELD_BYTES`]) counts it: the encoded
    /// record, fields and all, not only the bodies.
    pub fn last_bytes(&self) -> usize {
        self.last_bytes
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
                batch: self.shared.book.as_ref().map(|_| r.events.clone()),
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
        Poll::Batch(self.batch(seq, r.bytes, r.events))
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
                batch: None,
            },
        );
        drop(ob);
        if let Some(h) = &sh.hand_off
            && h.handing(r.seq)
        {
            // Wake the WAL thread to journal the mark (see `accounts.rs`);
            // the lock orders this with its wait.
            drop(sh.inbox());
            sh.work.notify_one();
        }
        match codec::decode(Bytes::from(r.payload)) {
            Ok(events) => {
                Counters::add(&sh.counters.events_in, events.len());
                let events = Arc::new(events);
                if sh.book.is_some()
                    && let Some(f) = sh.outbox().inflight.get_mut(&r.seq)
                {
                    f.batch = Some(events.clone());
                }
                Some(Poll::Batch(self.batch(r.seq, bytes, events)))
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

    fn batch(&mut self, seq: u64, bytes: usize, events: Arc<Vec<Event>>) -> EventBatch {
        self.last_seq = Some(seq);
        self.last_bytes = bytes;
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
