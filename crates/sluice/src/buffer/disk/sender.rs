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
