//! Directories through a handle: open, read (the backing filesystem's own
//! cookies as offsets), fsync.

use std::ffi::OsStr;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use fuser::{FileHandle, FileType, FopenFlags, INodeNo, ReplyDirectory, ReplyEmpty, ReplyOpen};
use parking_lot::Mutex;
use rustix::fs::{AtFlags, Mode, OFlags, SeekFrom};

use super::convert::{dir_kind, errno, kind_of};
use super::{CaptureFs, OpenDir};

impl CaptureFs {
    pub(super) fn do_opendir(&self, ino: INodeNo, reply: ReplyOpen) {
        let r = self.inode(ino).and_then(|i| {
            rustix::fs::openat(
                &i.fd,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(errno)
        });
        match r {
            Ok(fd) => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                self.dirs
                    .write()
                    .insert(fh, Arc::new(OpenDir { fd: Mutex::new(fd) }));
                reply.opened(FileHandle(fh), FopenFlags::empty());
            }
            Err(e) => reply.error(e),
        }
    }

    pub(super) fn do_readdir(&self, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let d = match self.dir(fh) {
            Ok(d) => d,
            Err(e) => return reply.error(e),
        };
        let fd = d.fd.lock();
        // Offsets are the backing filesystem's own cookies (d_off), so seeking to the
        // one the kernel hands back resumes exactly after the last entry it accepted.
        if let Err(e) = rustix::fs::seek(&*fd, SeekFrom::Start(offset)) {
            return reply.error(errno(e));
        }
        let mut buf = vec![MaybeUninit::<u8>::uninit(); 32 * 1024];
        let mut entries = rustix::fs::RawDir::new(&*fd, &mut buf);
        while let Some(entry) = entries.next() {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => return reply.error(errno(e)),
            };
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            let kind = dir_kind(entry.file_type()).unwrap_or_else(|| {
                rustix::fs::statat(&*fd, name, AtFlags::SYMLINK_NOFOLLOW)
                    .map(|st| kind_of(st.st_mode))
                    .unwrap_or(FileType::RegularFile)
            });
            if reply.add(INodeNo(entry.ino()), entry.next_entry_cookie(), kind, name) {
                break;
            }
        }
        reply.ok();
    }

    pub(super) fn do_fsyncdir(&self, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        let r = self.dir(fh).and_then(|d| {
            let fd = d.fd.lock();
            if datasync {
                rustix::fs::fdatasync(&*fd)
            } else {
                rustix::fs::fsync(&*fd)
            }
            .map_err(errno)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}
