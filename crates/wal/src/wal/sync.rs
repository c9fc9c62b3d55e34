//! Making appends and acknowledgements durable: the full [`Wal::sync`] (data,
//! directory, checkpoint), the group-commit [`Wal::sync_appends`] (data and
//! directory only), and the poisoning rule for a failed fsync.
//!
//! Group commit: the owner appends whatever arrived since the last sync with
//! one write, then calls `sync_appends` once for all of it, so writers waiting
//! on durability share one `fdatasync` and wait for the device, not for a
//! timer. The checkpoint (acknowledgements) is not part of that path: it costs
//! an fsync of its own and losing it only means replaying acknowledged
//! records, so it is written by `sync` on the owner's period.
//!
//! `sync_job.rs` holds the same group commit run on another thread
//! ([`Wal::start_sync`]), so that appends go on while the device syncs.

use std::time::Instant;

use super::{Wal, io_err};
use crate::error::{FailedSync, IoError};
use crate::format::{
    CHECKPOINT_LEN, CHECKPOINT_NAME, CHECKPOINT_SLOT2, CHECKPOINT_TMP_NAME, encode_checkpoint,
    encode_checkpoint_file, segment_name,
};

impl Wal {
    /// Makes everything appended so far durable (`fdatasync` of the active
    /// segment, directory fsync if files were created or removed), then writes
    /// the checkpoint if the watermark moved. No-op when nothing changed.
    ///
    /// A failed fsync of a segment or of the directory poisons the `Wal`:
    /// this and every later `sync`, append and `drop_oldest` fail with it
    /// (see [`is_poisoned`](Self::is_poisoned)). A failed checkpoint write does
    /// not (it only means replaying acknowledged records) and is retried.
    pub fn sync(&mut self) -> Result<(), IoError> {
        self.check_sync()?;
        self.sync_data_files()?;
        if self.dir_dirty {
            self.sync_dir()?;
        }
        if self.checkpointed != Some(self.watermark) {
            self.write_checkpoint()?;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Makes every record appended so far durable, and nothing more:
    /// `fdatasync` of the closed segments not yet synced (oldest first) and of
    /// the active segment, and a directory fsync if segments were created or
    /// removed. The checkpoint is left to [`sync`](Self::sync). No-op (no
    /// system call) when everything appended is already durable, so calling it
    /// after every append group costs nothing while nobody appends.
    ///
    /// A failure poisons the `Wal` as `sync` does.
    pub fn sync_appends(&mut self) -> Result<(), IoError> {
        self.check_sync()?;
        self.sync_data_files()?;
        if self.dir_dirty {
            self.sync_dir()?;
        }
        Ok(())
    }

    /// Whether records appended (or segment files created or removed) are not
    /// yet durable and no [`SyncJob`](super::SyncJob) covers them: what the
    /// next [`start_sync`](Self::start_sync) would take.
    pub fn has_unsynced(&self) -> bool {
        self.data_dirty || !self.unsynced.is_empty() || self.dir_dirty
    }

    /// Persists the watermark. The first time after `open`, a fresh two-slot
    /// file is written under `checkpoint.tmp`, fsynced, renamed into place and
    /// the directory fsynced; from then on one slot is overwritten in place,
    /// alternating, with one `fdatasync` — no create, rename or directory
    /// sync on the periodic path. A crash mid-update tears at most the slot
    /// being written; the other still holds the previous watermark.
    pub(super) fn write_checkpoint(&mut self) -> Result<(), IoError> {
        let st = self.storage.as_ref();
        if let Some((file, slot)) = &mut self.checkpoint_file {
            let offset = if *slot == 0 {
                0
            } else {
                CHECKPOINT_SLOT2 as u64
            };
            let bytes: [u8; CHECKPOINT_LEN] = encode_checkpoint(self.watermark);
            let written = file
                .write_all_at(offset, &bytes)
                .and_then(|()| file.sync_data());
            match written {
                Ok(()) => {
                    *slot = 1 - *slot;
                    self.checkpointed = Some(self.watermark);
                    return Ok(());
                }
                Err(e) => {
                    // Start over with a fresh file next time.
                    self.checkpoint_file = None;
                    return Err(io_err(st, "write", CHECKPOINT_NAME)(e));
                }
            }
        }
        let bytes = encode_checkpoint_file(self.watermark);
        let mut file =
            st.create(CHECKPOINT_TMP_NAME)
                .map_err(io_err(st, "create", CHECKPOINT_TMP_NAME))?;
        file.write_all_at(0, &bytes)
            .and_then(|()| file.sync_data())
            .map_err(io_err(st, "write", CHECKPOINT_TMP_NAME))?;
        st.rename(CHECKPOINT_TMP_NAME, CHECKPOINT_NAME)
            .map_err(io_err(st, "rename", CHECKPOINT_TMP_NAME))?;
        st.sync_dir().map_err(io_err(st, "sync", ""))?;
        // The handle still names the renamed file.
        self.checkpoint_file = Some((file, 0));
        self.checkpointed = Some(self.watermark);
        Ok(())
    }

    /// `fdatasync`s segments with unsynced writes, oldest first (a crash then
    /// never keeps a newer segment's records while losing an older one's),
    /// after the [`SyncJob`](super::SyncJob) in flight, if any.
    pub(super) fn sync_data_files(&mut self) -> Result<(), IoError> {
        self.join_sync()?;
        while let Some((first, file)) = self.unsynced.first_mut() {
            let name = segment_name(*first);
            let synced = file
                .sync_data()
                .map_err(io_err(self.storage.as_ref(), "sync", &name));
            synced.map_err(|e| self.poison(e))?;
            self.unsynced.remove(0);
        }
        if self.data_dirty {
            let synced = self.writer.sync_data().map_err(self.active_err("sync"));
            synced.map_err(|e| self.poison(e))?;
            self.data_dirty = false;
        }
        Ok(())
    }

    /// Syncs the directory (after the job in flight, if any); a failure
    /// poisons the `Wal`.
    pub(super) fn sync_dir(&mut self) -> Result<(), IoError> {
        self.join_sync()?;
        let synced = self
            .storage
            .sync_dir()
            .map_err(io_err(self.storage.as_ref(), "sync", ""));
        synced.map_err(|e| self.poison(e))?;
        self.dir_dirty = false;
        Ok(())
    }

    /// Records the first failed fsync and passes the error on.
    pub(super) fn poison(&mut self, e: IoError) -> IoError {
        if self.failed_sync.is_none() {
            self.failed_sync = Some(FailedSync::from(&e));
        }
        e
    }

    /// `Err` with the recorded failure once a fsync failed.
    pub(super) fn check_sync(&self) -> Result<(), IoError> {
        match &self.failed_sync {
            Some(f) => Err(f.to_error()),
            None => Ok(()),
        }
    }

    /// Whether a fsync failed: the `Wal` then refuses appends and syncs; drop
    /// it and open the directory again to go on with what is really on disk.
    pub fn is_poisoned(&self) -> bool {
        self.failed_sync.is_some()
    }
}
