//! `when_full = "drop_oldest"` on the WAL thread: discard the oldest segment's
//! unacknowledged records, counting their events exactly, and drop the copies
//! read ahead or waiting for a retry with them.

use std::sync::atomic::Ordering::Relaxed;

use ::wal::{IoError, ReadError};
use tracing::{debug, warn};

use super::super::codec;
use super::super::shared::Ready;
use super::Worker;
use bytes::Bytes;

use crate::ack::AckStatus;
use crate::route::accounting::{Ledger, Reason};

impl Worker {
    /// `drop_oldest`: discard the oldest segment's unacknowledged records,
    /// counting their events exactly. Returns whether anything was dropped.
    pub(super) fn drop_oldest(&mut self) -> Result<bool, IoError> {
        let w = self.wal().first_unacked();
        let next = self.wal().next_seq();
        if w >= next {
            return Ok(false);
        }
        let end = oldest_segment_end(&self.sh.opts.dir, w, next);
        // Records never read: read them now, only to count their events.
        let (mut records, mut events) = (0u64, 0u64);
        let book = self.accounts.as_ref().map(|a| a.book.clone());
        let mut rows = Ledger::default();
        let count = |rows: &mut Ledger, payload: &[u8]| {
            if let (Some(b), Ok(ev)) = (&book, codec::decode(Bytes::copy_from_slice(payload))) {
                rows.merge(&Ledger::settled(b, &ev, Some(Reason::WhenFull)));
            }
        };
        let mut beyond = Vec::new();
        while self.read_upto < end {
            match self.wal().read_next() {
                Ok(Some(r)) if r.seq < end => {
                    self.read_upto = r.seq + 1;
                    if self.accounts.as_ref().is_some_and(|a| a.is_settled(r.seq)) {
                        continue;
                    }
                    records += 1;
                    events += u64::from(codec::event_count(&r.payload).unwrap_or(0));
                    count(&mut rows, &r.payload);
                }
                Ok(Some(r)) => {
                    self.read_upto = r.seq + 1;
                    beyond.push(Ready {
                        seq: r.seq,
                        payload: r.payload,
                    });
                    break;
                }
                Ok(None) => {
                    self.read_upto = next;
                    break;
                }
                Err(ReadError::Corrupt { .. }) => continue,
                Err(ReadError::Io(e)) => return Err(e),
                Err(e) => {
                    warn!(error = %e, "Disk buffer: reading before drop_oldest failed.");
                    break;
                }
            }
        }
        // The outbox stays locked until its records below the cut are gone, so
        // that none is both counted here and settled by the sink.
        let sh = self.sh.clone();
        let mut ob = sh.outbox();
        if let (Some(a), Some(b)) = (&mut self.accounts, &book) {
            // Kept accounts: journal what is dropped, by tenant, before the WAL
            // drops it (copies the sink holds count here, whatever it does).
            for r in ob.ready.iter().filter(|r| r.seq < end) {
                count(&mut rows, &r.payload);
            }
            for r in ob.retry.range(..end).map(|(_, r)| r) {
                rows.merge(&Ledger::settled(b, &r.events, Some(Reason::WhenFull)));
            }
            for f in ob
                .inflight
                .range(..end)
                .filter_map(|(_, f)| f.batch.as_ref())
            {
                rows.merge(&Ledger::settled(b, f, Some(Reason::WhenFull)));
            }
            a.settle(w..end, &rows);
            a.write();
        }
        let Some(dropped) = self.wal().drop_oldest()? else {
            return Ok(false);
        };
        if let Some(b) = &book {
            rows.apply(b);
        }
        let cut = dropped.seqs.end;
        // Records read ahead or waiting for a retry are dropped too; copies the
        // sink holds count as dropped only if they then fail.
        let mut released = Vec::new();
        while ob.ready.front().is_some_and(|r| r.seq < cut) {
            let r = ob.ready.pop_front().expect("front exists");
            let n = codec::event_count(&r.payload).unwrap_or(0) as usize;
            ob.ready_events -= n;
            records += 1;
            events += n as u64;
            released.push(r.payload.len());
        }
        let keep = ob.retry.split_off(&cut);
        let gone = std::mem::replace(&mut ob.retry, keep);
        for (_, r) in gone {
            ob.retry_events -= r.events.len();
            records += 1;
            events += r.events.len() as u64;
            released.push(r.bytes);
        }
        for (_, f) in ob.inflight.range_mut(..cut) {
            f.dropped = true;
        }
        drop(ob);
        for b in released {
            self.sh.release(b);
        }
        if !beyond.is_empty() {
            self.push_ready(beyond);
        }
        let tokens: Vec<u64> = self.e2e.range(..cut).map(|(s, _)| *s).collect();
        for s in tokens {
            if let Some(t) = self.e2e.remove(&s) {
                t.resolve(AckStatus::Dropped);
            }
        }
        self.read_upto = self.read_upto.max(cut);
        self.sh.stats.dropped_records.fetch_add(records, Relaxed);
        self.sh.count_dropped(events);
        debug!(records, events, seqs = ?dropped.seqs, "Disk buffer full: oldest segment dropped.");
        Ok(true)
    }
}

/// End of the segment holding `watermark`: the first segment file named above
/// it, or `next` when it is the active one.
fn oldest_segment_end(dir: &std::path::Path, watermark: u64, next: u64) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return next;
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let name = name.to_str()?;
            let stem = name.strip_suffix(".seg")?;
            (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
                .then(|| stem.parse::<u64>().ok())?
        })
        .filter(|&first| first > watermark)
        .min()
        .unwrap_or(next)
        .min(next)
}
