//! Reading ahead on the WAL thread: records not yet handed to the sink go to
//! the outbox, within the read budget; records that can never be read are
//! acknowledged and counted lost.

use std::sync::atomic::Ordering::Relaxed;

use ::wal::ReadError;
use tracing::error;

use super::super::shared::Ready;
use super::super::{MAX_HELD_BYTES, MAX_HELD_RECORDS, codec};
use super::Worker;
use crate::ack::AckStatus;

impl Worker {
    pub(super) fn read_ahead(&mut self) {
        let mut batch = Vec::new();
        let mut bytes = 0;
        let held = self.sh.held_records.load(Relaxed);
        let held_bytes = self.sh.held_bytes.load(Relaxed);
        while held + batch.len() < MAX_HELD_RECORDS && held_bytes + bytes < MAX_HELD_BYTES {
            if self.read_upto >= self.wal().next_seq() {
                break;
            }
            match self.wal().read_next() {
                Ok(Some(r)) => {
                    if let Some(from) = self.lost_from.take() {
                        self.lose(from..r.seq);
                    }
                    self.read_upto = r.seq + 1;
                    if self.accounts.as_ref().is_some_and(|a| a.is_settled(r.seq)) {
                        // Delivered before a restart (the journal says so).
                        continue;
                    }
                    bytes += r.payload.len();
                    batch.push(Ready {
                        seq: r.seq,
                        payload: r.payload,
                    });
                }
                Ok(None) => {
                    self.read_upto = self.wal().next_seq();
                    break;
                }
                Err(ReadError::Corrupt {
                    path,
                    offset,
                    corruption,
                }) => {
                    error!(
                        segment = %path.display(), offset, %corruption,
                        "Disk buffer: record damaged after it was written; the rest of its segment is lost."
                    );
                    self.lost_from.get_or_insert(self.read_upto);
                }
                Err(e) => {
                    self.fail("reading", &e);
                    break;
                }
            }
        }
        if !batch.is_empty() {
            self.push_ready(batch);
        }
    }

    pub(super) fn push_ready(&mut self, batch: Vec<Ready>) {
        let bytes: usize = batch.iter().map(|r| r.payload.len()).sum();
        self.sh.held_records.fetch_add(batch.len(), Relaxed);
        self.sh.held_bytes.fetch_add(bytes, Relaxed);
        let mut ob = self.sh.outbox();
        for r in batch {
            ob.ready_events += codec::event_count(&r.payload).unwrap_or(0) as usize;
            ob.ready.push_back(r);
        }
        drop(ob);
        self.sh.data_ready.notify_one();
    }

    /// Seqs that can never be read: acknowledge them so the buffer moves on.
    fn lose(&mut self, seqs: std::ops::Range<u64>) {
        let mut n = 0;
        for s in seqs {
            if self.wal().ack(s).is_ok() {
                n += 1;
            }
            if let Some(t) = self.e2e.remove(&s) {
                t.resolve(AckStatus::Errored);
            }
        }
        self.sh.stats.lost_records.fetch_add(n, Relaxed);
    }
}
