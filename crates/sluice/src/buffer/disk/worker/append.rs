//! Appends on the WAL thread: one write per group of queued batches, the
//! `when_full` policy when it does not fit, source acknowledgements by mode,
//! and the periodic sync (the interval, the checkpoint).

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use ::wal::AppendError;
use tracing::warn;

use super::super::shared::Pending;
use super::super::{Acknowledgements, WhenFull, chain};
use super::Worker;
use crate::ack::AckStatus;

fn is_full(e: &AppendError) -> bool {
    match e {
        AppendError::Full { .. } => true,
        AppendError::Io(io) => io.kind() == std::io::ErrorKind::StorageFull,
        _ => false,
    }
}

impl Worker {
    pub(super) fn append(&mut self, items: Vec<Pending>) {
        let group = if self.stalled.is_empty() {
            items
        } else {
            std::mem::take(&mut self.stalled)
        };
        if group.is_empty() {
            return;
        }
        // Counts of batches stored nowhere: journalled, nothing to append.
        let (counts, group): (Vec<_>, Vec<_>) =
            group.into_iter().partition(|p| p.payloads.is_empty());
        if !counts.is_empty() {
            if let Some(a) = &mut self.accounts {
                for p in &counts {
                    if let Some(l) = &p.ledger {
                        a.rows(l);
                    }
                }
                a.write();
                if self.sh.opts.fsync.is_none() {
                    a.sync();
                }
            }
            for p in counts {
                self.accepted(p, 0);
            }
        }
        if group.is_empty() {
            return;
        }
        let first = self.wal().next_seq();
        self.journal_appends(&group, first);
        let result = self
            .wal()
            .append_batch(group.iter().flat_map(|p| p.payloads.iter()));
        match result {
            Ok(seqs) => {
                let mut seq = seqs.start;
                for p in group {
                    let n = p.payloads.len() as u64;
                    self.accepted(p, seq);
                    seq += n;
                }
                self.after_appends();
            }
            Err(e) if is_full(&e) || matches!(e, AppendError::TooLarge { .. }) => {
                self.journal_cancels(&group, first);
                self.append_each(group)
            }
            Err(e) => {
                self.journal_cancels(&group, first);
                self.fail("appending", &e);
                self.fail_items(group);
            }
        }
    }

    /// Kept accounts: journal the batches about to be appended from `first` on
    /// (before the append; see `accounts.rs`).
    fn journal_appends(&mut self, group: &[Pending], first: u64) {
        let always = self.sh.opts.fsync.is_none();
        let Some(a) = &mut self.accounts else { return };
        let mut seq = first;
        for p in group {
            let end = seq + p.payloads.len() as u64;
            if let Some(l) = &p.ledger {
                a.append(seq, end, l);
            }
            seq = end;
        }
        a.write();
        if always {
            // `fsync = "always"` acknowledges right after the append.
            a.sync();
        }
    }

    /// The appends journalled from `first` on failed.
    fn journal_cancels(&mut self, group: &[Pending], first: u64) {
        let Some(a) = &mut self.accounts else { return };
        let mut seq = first;
        for p in group {
            if p.ledger.is_some() {
                a.cancel(seq);
            }
            seq += p.payloads.len() as u64;
        }
        a.write();
    }

    /// The group did not fit: append item by item, applying `when_full`.
    fn append_each(&mut self, group: Vec<Pending>) {
        let mut rest = group.into_iter();
        while let Some(p) = rest.next() {
            loop {
                let first = self.wal().next_seq();
                let one = std::slice::from_ref(&p);
                self.journal_appends(one, first);
                let result = self.wal().append_batch(p.payloads.iter());
                if result.is_err() {
                    self.journal_cancels(std::slice::from_ref(&p), first);
                }
                match result {
                    Ok(seqs) => {
                        self.accepted(p, seqs.start);
                        break;
                    }
                    Err(e) if is_full(&e) => match self.sh.opts.when_full {
                        WhenFull::Block => {
                            self.stalled.push(p);
                            self.stalled.extend(rest);
                            self.sh.inbox().wal_full = true;
                            return;
                        }
                        WhenFull::DropNewest => {
                            self.drop_pending(p, AckStatus::Dropped);
                            break;
                        }
                        WhenFull::DropOldest => match self.drop_oldest() {
                            Ok(true) => continue,
                            Ok(false) => {
                                self.drop_pending(p, AckStatus::Dropped);
                                break;
                            }
                            Err(e) => {
                                self.fail("dropping the oldest segment", &e);
                                self.fail_items(std::iter::once(p).chain(rest).collect());
                                return;
                            }
                        },
                    },
                    Err(AppendError::TooLarge { .. }) => {
                        // Records are cut below the cap when encoded; not expected.
                        self.drop_pending(p, AckStatus::Errored);
                        break;
                    }
                    Err(e) => {
                        self.fail("appending", &e);
                        self.fail_items(std::iter::once(p).chain(rest).collect());
                        return;
                    }
                }
            }
        }
        self.after_appends();
    }

    fn after_appends(&mut self) {
        if self.stalled.is_empty() {
            let mut ib = self.sh.inbox();
            if std::mem::take(&mut ib.wal_full) {
                drop(ib);
                self.sh.space.notify_waiters();
            }
        }
    }

    fn drop_pending(&mut self, mut p: Pending, status: AckStatus) {
        let events: u64 = p.events.iter().map(|&n| u64::from(n)).sum();
        self.sh.count_dropped(events);
        if status == AckStatus::Dropped
            && let (Some(a), Some(mut l)) = (&mut self.accounts, p.ledger.take())
        {
            // Received, then dropped when full: kept like a stored batch.
            if let Some(d) = &p.if_dropped {
                l.merge(d);
            }
            a.rows(&l);
            a.write();
            l.apply(&a.book);
        }
        p.token.resolve(status);
    }

    /// Appended at `first..first + p.payloads.len()` (none: counts only,
    /// journalled): resolve or hold the token.
    fn accepted(&mut self, mut p: Pending, first: u64) {
        if let (Some(a), Some(l)) = (&self.accounts, p.ledger.take()) {
            l.apply(&a.book);
        }
        if p.payloads.is_empty() {
            let waits = self.sh.opts.acknowledgements == Acknowledgements::Disk
                && self.sh.opts.fsync.is_some()
                && p.token.is_tracked();
            if waits {
                self.awaiting_sync.push(p.token);
            } else {
                p.token.resolve(AckStatus::Delivered);
            }
            return;
        }
        let stats = &self.sh.stats;
        stats
            .appended_records
            .fetch_add(p.payloads.len() as u64, Relaxed);
        stats
            .appended_events
            .fetch_add(p.events.iter().map(|&n| u64::from(n)).sum(), Relaxed);
        match self.sh.opts.acknowledgements {
            Acknowledgements::None => p.token.resolve(AckStatus::Delivered),
            Acknowledgements::Disk if self.sh.opts.fsync.is_none() => {
                p.token.resolve(AckStatus::Delivered)
            }
            Acknowledgements::Disk => {
                if p.token.is_tracked() {
                    self.awaiting_sync.push(p.token);
                } else {
                    p.token.resolve(AckStatus::Delivered);
                }
            }
            Acknowledgements::EndToEnd => {
                if p.token.is_tracked() {
                    let last = first + p.payloads.len() as u64 - 1;
                    for seq in first..last {
                        self.e2e.insert(seq, p.token.clone());
                    }
                    self.e2e.insert(last, p.token);
                } else {
                    p.token.resolve(AckStatus::Delivered);
                }
            }
        }
    }

    /// The periodic sync (everything, the checkpoint, the accounts' snapshot
    /// when due), after the group commit in flight if any: it waits for the
    /// commit's return (`force` comes after `stop_committer`).
    pub(super) fn maybe_sync(&mut self, force: bool) {
        if !force && (self.committing || self.last_sync.elapsed() < self.sync_period()) {
            return;
        }
        self.last_sync = Instant::now();
        if let Some(a) = &mut self.accounts {
            a.sync();
        }
        match self.wal().sync() {
            Ok(()) => {
                let wal = self.wal.as_ref().expect("taken only at the end");
                if let Some(a) = &mut self.accounts
                    && (force || a.due())
                    && let Err(e) = a.snapshot(wal)
                {
                    warn!(error = %e, "Per-tenant accounts: writing the snapshot failed; retried.");
                }
            }
            Err(e)
                if e.path()
                    .file_name()
                    .is_some_and(|n| n == "checkpoint.tmp" || n == "checkpoint") =>
            {
                // Data and directory were synced first; only the checkpoint
                // failed (acknowledged records may be replayed).
                warn!(error = %chain(&e), "Disk buffer: writing the checkpoint failed.");
            }
            Err(e) => {
                self.fail("syncing", &e);
                return;
            }
        }
        for t in self.awaiting_sync.drain(..) {
            t.resolve(AckStatus::Delivered);
        }
    }
}
