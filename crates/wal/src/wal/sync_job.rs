//! Group commit overlapped with appends: [`Wal::start_sync`] hands the owner a
//! [`SyncJob`] that `fdatasync`s everything appended so far, to run on another
//! thread while the owner keeps appending the next group.
//!
//! The job syncs handles of its own (closed segments' writers moved out of the
//! `Wal`, a `dup` of the active segment's), oldest segment first, then the
//! directory if files were created or removed. Records appended after
//! `start_sync` returned are not covered: they stay unsynced in the `Wal` and
//! go to the next job (or `sync`), so an owner that acknowledges a job's
//! records when [`run`](SyncJob::run) returns `true` acknowledges only records
//! written before that sync started. A segment closed while the job runs keeps
//! its later writes in the `Wal`'s unsynced list, synced by the next job before
//! the newer segment.
//!
//! At most one job is in flight: every other sync of the `Wal` (`sync`,
//! `sync_appends`, `drop_oldest`, the next `start_sync`) first waits for it and
//! takes its outcome, so no later sync overtakes it and a failed one poisons
//! the `Wal` as an inline sync does. [`Wal::poll_sync`] takes the outcome
//! without waiting.

use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use super::{Wal, io_err, seg_err};
use crate::error::IoError;
use crate::storage::{Storage, WriteFile};

/// Where a job leaves its outcome for the `Wal`.
#[derive(Default)]
pub(super) struct Slot {
    result: Mutex<Option<Result<(), IoError>>>,
    done: Condvar,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `Wal`'s side of a job handed out.
pub(super) struct InFlight {
    upto: u64,
    slot: Arc<Slot>,
}

/// A sync of every record appended before [`Wal::start_sync`] returned it; run
/// it on any thread with [`run`](Self::run). Dropping it unrun counts as a
/// failed sync (the `Wal` cannot know what reached the disk).
pub struct SyncJob {
    storage: Arc<dyn Storage>,
    /// Segment files to `fdatasync`, by first seq, oldest first.
    files: Vec<(u64, Box<dyn WriteFile>)>,
    dir: bool,
    upto: u64,
    slot: Arc<Slot>,
    ran: bool,
}

impl std::fmt::Debug for SyncJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncJob")
            .field(
                "segments",
                &self.files.iter().map(|f| f.0).collect::<Vec<_>>(),
            )
            .field("dir", &self.dir)
            .field("upto", &self.upto)
            .finish()
    }
}

impl SyncJob {
    /// Every record below this seq is durable once [`run`](Self::run)
    /// returned `true`.
    pub fn upto(&self) -> u64 {
        self.upto
    }

    /// `fdatasync`s the segments (oldest first), then the directory if
    /// needed. Returns whether everything was synced; the `Wal` learns the
    /// outcome at its next [`poll_sync`](Wal::poll_sync) or sync, and is
    /// poisoned by a failure.
    #[must_use]
    pub fn run(mut self) -> bool {
        let result = self.sync();
        let ok = result.is_ok();
        self.finish(result);
        ok
    }

    fn sync(&mut self) -> Result<(), IoError> {
        let st = self.storage.as_ref();
        for (first, file) in &mut self.files {
            file.sync_data().map_err(seg_err(st, "sync", *first))?;
        }
        if self.dir {
            st.sync_dir().map_err(io_err(st, "sync", ""))?;
        }
        Ok(())
    }

    fn finish(&mut self, result: Result<(), IoError>) {
        self.ran = true;
        *lock(&self.slot.result) = Some(result);
        self.slot.done.notify_all();
    }
}

impl Drop for SyncJob {
    fn drop(&mut self) {
        if !self.ran {
            let e = io::Error::other("the sync job was dropped before it ran");
            let e = IoError::new("sync", self.storage.path(""), e);
            self.finish(Err(e));
        }
    }
}

impl Wal {
    /// Group commit without stopping appends: takes everything appended so
    /// far (and the directory, if files were created or removed) into a
    /// [`SyncJob`] for another thread, and returns at once; appends go on
    /// meanwhile and are left to the next job. `Ok(None)` when there is
    /// nothing to sync — or when a handle on the active segment could not be
    /// made and the sync was done here instead: either way every record
    /// appended so far is then durable.
    ///
    /// A job still in flight is waited for first (one at a time); its failure
    /// is returned here. The checkpoint is left to [`sync`](Self::sync).
    pub fn start_sync(&mut self) -> Result<Option<SyncJob>, IoError> {
        self.join_sync()?;
        self.check_sync()?;
        if !self.has_unsynced() {
            return Ok(None);
        }
        let active = if self.data_dirty {
            match self.writer.sync_handle() {
                Ok(h) => Some(h),
                Err(_) => {
                    // Out of descriptors, say: sync here, as `sync_appends`.
                    self.sync_appends()?;
                    return Ok(None);
                }
            }
        } else {
            None
        };
        let mut files = std::mem::take(&mut self.unsynced);
        if let Some(h) = active {
            files.push((self.active().first, h));
        }
        self.data_dirty = false;
        let dir = std::mem::take(&mut self.dir_dirty);
        let slot = Arc::new(Slot::default());
        let upto = self.next_seq;
        self.in_flight = Some(InFlight {
            upto,
            slot: slot.clone(),
        });
        Ok(Some(SyncJob {
            storage: self.storage.clone(),
            files,
            dir,
            upto,
            slot,
            ran: false,
        }))
    }

    /// Takes the outcome of the job from [`start_sync`](Self::start_sync)
    /// without waiting: `Some(Ok(upto))` once it synced everything below
    /// `upto`, `Some(Err(_))` once it failed (the `Wal` is then poisoned);
    /// `None` while it runs, or when no job is in flight (none was started, or
    /// a sync that waited for it took its outcome already).
    pub fn poll_sync(&mut self) -> Option<Result<u64, IoError>> {
        let result = lock(&self.in_flight.as_ref()?.slot.result).take()?;
        let upto = self.in_flight.take().expect("checked above").upto;
        Some(self.settle(result, upto))
    }

    /// Whether a job from [`start_sync`](Self::start_sync) has not been
    /// joined yet.
    pub fn sync_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Waits for the job in flight, if any, and takes its outcome: every other
    /// sync calls this first, so none overtakes it.
    pub(super) fn join_sync(&mut self) -> Result<(), IoError> {
        let Some(f) = self.in_flight.take() else {
            return Ok(());
        };
        let result = {
            let mut guard = lock(&f.slot.result);
            loop {
                if let Some(r) = guard.take() {
                    break r;
                }
                guard = f.slot.done.wait(guard).unwrap_or_else(|e| e.into_inner());
            }
        };
        self.settle(result, f.upto).map(drop)
    }

    fn settle(&mut self, result: Result<(), IoError>, upto: u64) -> Result<u64, IoError> {
        result.map(|()| upto).map_err(|e| self.poison(e))
    }
}
