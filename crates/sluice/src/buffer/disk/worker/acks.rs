//! Delivery acknowledgements on the WAL thread: acknowledge records in the WAL
//! (the sink resolved them), resolve the sources' `end_to_end` tokens, and move
//! poison records to the dead-letter buffer first.

use std::sync::atomic::Ordering::Relaxed;

use ::wal::{AckError, Wal};
use tracing::{debug, error, warn};

use super::super::shared::DeadLetter;
use super::super::{chain, dead_letter_dir};
use super::Worker;
use crate::ack::AckStatus;
use crate::route::accounting::Ledger;

impl Worker {
    /// Append poison records to the dead-letter buffer (synced), then
    /// acknowledge them here. If that fails they stay unacknowledged in this
    /// buffer and are replayed at the next start: kept either way.
    pub(super) fn dead_letter(&mut self, dead: Vec<DeadLetter>) {
        if dead.is_empty() {
            return;
        }
        let dir = dead_letter_dir(&self.sh.opts.dir);
        if self.dead.is_none() {
            let mut opts = self.sh.opts.wal_options();
            opts.fsync = ::wal::Fsync::Always;
            match Wal::open(&dir, opts) {
                Ok(w) => self.dead = Some(w),
                Err(e) => {
                    error!(dir = %dir.display(), error = %chain(&e), "Disk buffer: cannot open the dead-letter buffer; poison records stay in this buffer until a restart.");
                    return;
                }
            }
        }
        let wal = self.dead.as_mut().expect("opened above");
        let mut acks = Vec::new();
        for d in dead {
            match wal.append_batch(d.payloads.iter()).map(|_| ()) {
                Ok(()) => {
                    self.sh
                        .stats
                        .dead_letter_events
                        .fetch_add(d.events, Relaxed);
                    acks.push((d.seq, AckStatus::Dropped, d.rows));
                }
                Err(e) => {
                    error!(dir = %dir.display(), seq = d.seq, error = %chain(&e), "Disk buffer: writing to the dead-letter buffer failed; the record stays in this buffer until a restart.");
                }
            }
        }
        self.apply_acks(acks);
    }

    pub(super) fn apply_acks(&mut self, acks: Vec<(u64, AckStatus, Option<Ledger>)>) {
        // Kept accounts: journal the outcomes before the WAL acknowledges.
        if let Some(a) = &mut self.accounts {
            for (seq, _, rows) in &acks {
                if let Some(r) = rows {
                    a.settle(*seq..*seq + 1, r);
                }
            }
            a.write();
        }
        for (seq, status, rows) in acks {
            if let (Some(a), Some(r)) = (&self.accounts, rows) {
                r.apply(&a.book);
            }
            // The source's token first: with a forward source, resolving it
            // journals the chunk id, which must be on disk before the record
            // can be trimmed (see `buffer::disk::chunks`).
            if let Some(t) = self.e2e.remove(&seq) {
                t.resolve(if status == AckStatus::Delivered {
                    AckStatus::Delivered
                } else {
                    AckStatus::Dropped
                });
            }
            if let Some(wal) = self.wal.as_mut() {
                match wal.ack(seq) {
                    Ok(()) => {}
                    Err(AckError::Io(e)) => {
                        warn!(error = %chain(&e), "Disk buffer: removing an acknowledged segment failed; retried later.");
                    }
                    Err(e) => debug!(error = %e, "Disk buffer: unexpected acknowledgement."),
                }
            }
        }
    }
}
