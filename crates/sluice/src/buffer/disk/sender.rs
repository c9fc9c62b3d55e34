//! The sending half of a disk buffer: serialize a batch on the sender's own
//! thread, queue it in the inbox for the WAL thread, and apply `when_full`
//! when the inbox or the WAL is full.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use tracing::warn;

use super::shared::{Pending, Shared};
use super::{INBOX_BYTES, codec};
use crate::ack::{AckStatus, AckToken};
use crate::buffer::{Acknowledgements, SendOutcome, WhenFull};
use crate::event::EventBatch;
use crate::metrics::Counters;
use crate::route::accounting::{Ledger, Reason};

/// Sending half of a disk buffer.
pub struct DiskSender {
    pub(super) shared: Arc<Shared>,
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
    /// The per-tenant accounts this buffer keeps, if it keeps them.
    pub fn tenant_book(&self) -> Option<Arc<crate::route::accounting::TenantBook>> {
        self.shared.book.clone()
    }

    /// Queue counts of a batch stored nowhere for the journal (not held by
    /// the inbox's cap: they are small); the token resolves once they are kept.
    fn keep_counts(&self, ledger: Box<Ledger>, token: AckToken) {
        let sh = &*self.shared;
        let mut ib = sh.inbox();
        if ib.failed || ib.closing {
            drop(ib);
            token.resolve(AckStatus::Errored);
            return;
        }
        let was_idle = ib.items.is_empty();
        ib.items.push(Pending {
            payloads: Vec::new(),
            events: Vec::new(),
            token,
            ledger: Some(ledger),
            if_dropped: None,
        });
        drop(ib);
        if was_idle {
            sh.work.notify_one();
        }
    }

    /// Client chunks of forward source `source` found complete in the
    /// records unacknowledged when the buffer opened (id → Unix time stored).
    pub fn recovered_chunks(&self, source: &str) -> std::collections::HashMap<bytes::Bytes, u64> {
        self.shared.recovered.complete(source)
    }

    /// Serialize and queue a batch (see the module doc for the policies).
    pub async fn send(&self, batch: EventBatch, may_block: bool) -> SendOutcome {
        let sh = &*self.shared;
        let n = batch.len();
        let EventBatch { events, ack } = batch;
        // Kept accounts: the routes' counts for this batch go into the journal
        // with it (or alone, if it is not stored).
        let mut ledger = sh.book.as_ref().and_then(|_| ack.take_ledger());
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
            token.chunk(),
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
            if let (Some(book), Some(l)) = (&sh.book, &mut ledger) {
                let big: Vec<_> = oversize.iter().map(|&i| events[i].clone()).collect();
                l.drop_events(book, &big, Reason::WhenFull);
            }
        }
        if payloads.is_empty() {
            if let Some(l) = ledger {
                self.keep_counts(l, token);
                return if n == 0 {
                    SendOutcome::Queued
                } else {
                    SendOutcome::Dropped
                };
            }
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
        let if_dropped = match (&sh.book, &ledger) {
            (Some(book), Some(_)) => {
                let mut l = Ledger::default();
                if oversize.is_empty() {
                    l.drop_events(book, &events, Reason::WhenFull);
                } else {
                    let kept: Vec<_> = (0..events.len())
                        .filter(|i| !oversize.contains(i))
                        .map(|i| events[i].clone())
                        .collect();
                    l.drop_events(book, &kept, Reason::WhenFull);
                }
                Some(l)
            }
            _ => None,
        };
        let mut item = Some(Pending {
            payloads,
            events: counts,
            token,
            ledger,
            if_dropped,
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
                        if let Some(mut p) = item.take() {
                            match (status, p.ledger.take(), p.if_dropped.take()) {
                                (AckStatus::Dropped, Some(mut l), Some(d)) => {
                                    l.merge(&d);
                                    p.token.clone().resolve(status);
                                    self.keep_counts(l, p.token);
                                }
                                _ => p.token.resolve(status),
                            }
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
