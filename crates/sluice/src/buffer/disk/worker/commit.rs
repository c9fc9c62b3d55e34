//! Group commit (`fsync = "interval"`, sources waiting on the records just
//! appended), overlapped with the next appends: the WAL thread hands the
//! group's sync to the buffer's sync thread and goes on appending what senders
//! queue meanwhile.
//!
//! One commit is in flight at a time. It carries a handle on the accounts
//! journal (if entries were written since the last sync), the WAL's
//! [`SyncJob`] (everything appended before it started) and the sources' tokens
//! of those appends. The sync thread `fdatasync`s the journal first, then the
//! job's segments and directory, and resolves the tokens — `Delivered` only if
//! the job synced, so a source hears "stored" only after a sync that started
//! after its records were written (and its journal entries) returned. Then it
//! wakes the WAL thread, which takes the job's outcome from the `Wal` (a
//! failure poisons it and fails the buffer, as an inline sync does) and starts
//! the next commit for the tokens that gathered meanwhile. The periodic full
//! sync and the accounts snapshot wait for a commit in flight to return.
//!
//! If the sync thread cannot be started the commit runs inline, as before.

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use ::wal::SyncJob;
use tracing::warn;

use super::super::shared::Shared;
use super::Worker;
use crate::ack::{AckStatus, AckToken};

/// One group's sync, for the sync thread.
struct Commit {
    journal: Option<File>,
    job: Option<SyncJob>,
    tokens: Vec<AckToken>,
}

impl Commit {
    /// Syncs the journal, then the WAL job; resolves the tokens. Returns the
    /// journal's failure (it does not stop acknowledgements: the accounts
    /// only report it).
    fn run(self) -> Option<io::Error> {
        let journal = self.journal.and_then(|f| f.sync_data().err());
        let synced = self.job.is_none_or(SyncJob::run);
        let status = if synced {
            AckStatus::Delivered
        } else {
            AckStatus::Errored
        };
        for t in self.tokens {
            t.resolve(status);
        }
        journal
    }
}

/// The buffer's sync thread.
pub(super) struct Committer {
    tx: Option<Sender<Commit>>,
    thread: Option<JoinHandle<()>>,
}

impl Committer {
    fn spawn(sh: &Arc<Shared>) -> io::Result<Committer> {
        let (tx, rx) = channel();
        let sh = sh.clone();
        let thread = std::thread::Builder::new()
            .name(format!("wal-sync-{}", sh.name))
            .spawn(move || serve(&sh, &rx))?;
        Ok(Committer {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Lets the commit in flight finish and ends the thread.
    pub(super) fn stop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(sh: &Shared, rx: &Receiver<Commit>) {
    while let Ok(c) = rx.recv() {
        let journal = c.run();
        let mut ib = sh.inbox();
        ib.committed = true;
        ib.journal_error = journal;
        drop(ib);
        sh.work.notify_one();
    }
}

impl Worker {
    /// Sources wait on records appended and not yet synced: start their sync
    /// on the sync thread, unless one is in flight (they go with the next).
    pub(super) fn group_commit(&mut self) {
        if self.awaiting_sync.is_empty() || self.committing {
            return;
        }
        if self.committer.is_none() {
            match Committer::spawn(&self.sh) {
                Ok(c) => self.committer = Some(c),
                Err(e) => {
                    warn!(sink = %self.sh.name, error = %e, "Disk buffer: cannot start the sync thread; syncing on the WAL thread.");
                    self.committer_failed = true;
                }
            }
        }
        if self.committer_failed {
            return self.commit_inline();
        }
        let journal = self.accounts.as_mut().and_then(|a| a.sync_handle());
        let job = match self.wal().start_sync() {
            Ok(job) => job,
            Err(e) => return self.fail("syncing", &e),
        };
        let tokens = std::mem::take(&mut self.awaiting_sync);
        let commit = Commit {
            journal,
            job,
            tokens,
        };
        if commit.journal.is_none() && commit.job.is_none() {
            // Durable already (nothing new, or synced inline by `start_sync`).
            commit.run();
            return;
        }
        let tx = self.committer.as_ref().and_then(|c| c.tx.as_ref());
        let Some(tx) = tx else {
            return self.finish_inline(commit);
        };
        match tx.send(commit) {
            Ok(()) => self.committing = true,
            // The thread is gone (it cannot fail on its own): sync here.
            Err(e) => self.finish_inline(e.0),
        }
    }

    fn finish_inline(&mut self, commit: Commit) {
        if let Some(e) = commit.run() {
            self.journal_failed(&e);
        }
        self.take_sync_outcome();
    }

    /// The sync thread returned the commit in flight: take the WAL job's
    /// outcome (its tokens are resolved already).
    pub(super) fn committed(&mut self, journal: Option<io::Error>) {
        self.committing = false;
        if let Some(e) = journal {
            self.journal_failed(&e);
        }
        self.take_sync_outcome();
    }

    fn journal_failed(&mut self, e: &io::Error) {
        if let Some(a) = &mut self.accounts {
            a.sync_failed(e);
        }
    }

    /// A failed job poisons the `Wal` and fails the buffer (`None`: a sync
    /// that waited for the job took its outcome and reported it).
    fn take_sync_outcome(&mut self) {
        if let Some(Err(e)) = self.wal().poll_sync()
            && !self.failed
        {
            self.fail("syncing", &e);
        }
    }

    /// Group commit on the WAL thread: one fdatasync for the group, then the
    /// acknowledgements. A failure poisons the WAL and resolves every waiting
    /// token `Errored`.
    fn commit_inline(&mut self) {
        if let Some(a) = &mut self.accounts {
            a.sync();
        }
        match self.wal().sync_appends() {
            Ok(()) => {
                for t in self.awaiting_sync.drain(..) {
                    t.resolve(AckStatus::Delivered);
                }
            }
            Err(e) => self.fail("syncing", &e),
        }
    }

    /// At the end: let the commit in flight return and take its outcome.
    pub(super) fn stop_committer(&mut self) {
        let Some(mut c) = self.committer.take() else {
            return;
        };
        c.stop();
        if self.committing {
            let journal = self.sh.inbox().journal_error.take();
            self.committed(journal);
        }
    }
}
