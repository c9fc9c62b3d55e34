//! Reads at native speed: read-only opens served by the kernel's FUSE passthrough
//! (`FOPEN_PASSTHROUGH`, Linux 6.9+): the kernel reads the backing file itself, no
//! request reaches us. Not in writeback mode (the kernel refuses the combination).
//!
//! The kernel keeps one I/O mode per inode and fails an open (`EIO`) whose handle does
//! not fit it: while any handle of an inode is in passthrough mode, every new handle
//! must be too (with the same backing file), and no passthrough handle may join an
//! inode with page-cache handles. So, per inode, under one lock:
//! - a read-only open gets passthrough when no other kind of handle is open (the inode
//!   has no writer; its readers are all passthrough);
//! - a writable open gets `FOPEN_PASSTHROUGH | FOPEN_DIRECT_IO` when passthrough
//!   readers are open (direct I/O wins for read and write, so its writes still come to
//!   us and are captured), otherwise our usual handle;
//! - a read-only open while a writer is open gets our usual (page-cache) handle.
//!
//! Limit: a shared writable `mmap` of a file made while passthrough readers have it
//! open maps the backing file directly, so bytes stored through it are not captured.
//!
//! The backing file is registered once per inode (`FUSE_DEV_IOC_BACKING_OPEN`, which
//! needs `CAP_SYS_ADMIN`) from the first passthrough reader's read-only descriptor and
//! shared by every handle until the last closes. If registering fails (not root, a
//! backing filesystem stacked too deep), passthrough is switched off with one log line
//! and reads are served as before.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use fuser::{BackingId, FopenFlags};

use super::{CaptureFs, Inode};

/// Open handles of an inode by I/O mode, and its registered backing file.
#[derive(Default)]
pub(super) struct IoModes {
    passthrough_open: usize,
    other_open: usize,
    backing: Option<Arc<BackingId>>,
}

impl CaptureFs {
    /// Decides the I/O mode of a new handle of `inode` (backing fd `file`) and counts
    /// it: `Some(backing)` means reply with passthrough and these extra open flags.
    pub(super) fn choose_io(
        &self,
        inode: &Inode,
        file: &OwnedFd,
        writable: bool,
        open_backing: impl FnOnce(BorrowedFd<'_>) -> std::io::Result<BackingId>,
    ) -> Option<Arc<BackingId>> {
        let mut io = inode.io.lock();
        let want = self.passthrough.load(Ordering::Relaxed)
            && if writable {
                io.passthrough_open > 0
            } else {
                io.other_open == 0
            };
        let backing = if want {
            match &io.backing {
                Some(b) => Some(b.clone()),
                None => match open_backing(file.as_fd()) {
                    Ok(b) => {
                        let b = Arc::new(b);
                        io.backing = Some(b.clone());
                        Some(b)
                    }
                    Err(e) => {
                        if self.passthrough.swap(false, Ordering::Relaxed) {
                            tracing::warn!(error = %e,
                                "Cannot register a backing file for FUSE passthrough; \
                                 reads go through sluice from now on.");
                        }
                        None
                    }
                },
            }
        } else {
            None
        };
        match backing {
            Some(_) => {
                io.passthrough_open += 1;
                self.counters.passthrough_open();
            }
            None => io.other_open += 1,
        }
        backing
    }

    /// A handle chosen by [`CaptureFs::choose_io`] was released.
    pub(super) fn release_io(&self, inode: &Inode, passthrough: bool) {
        let mut io = inode.io.lock();
        if passthrough {
            io.passthrough_open = io.passthrough_open.saturating_sub(1);
            if io.passthrough_open == 0 {
                io.backing = None;
            }
        } else {
            io.other_open = io.other_open.saturating_sub(1);
        }
    }
}

/// Open flags of a handle that goes passthrough: writers keep direct I/O, which wins
/// over passthrough for reads and writes, so their writes are still ours to capture.
pub(super) fn passthrough_flags(flags: FopenFlags, writable: bool) -> FopenFlags {
    if writable {
        flags | FopenFlags::FOPEN_DIRECT_IO
    } else {
        flags
    }
}
