//! Writeback mode (`CaptureConfig::writeback`): the kernel's page cache absorbs small
//! writes and sends them to us later, in large page-cache WRITE requests.
//!
//! - Attribution: a page-cache WRITE is issued by the kernel (the flusher thread, or
//!   whoever calls fsync/close), not by the process that wrote the bytes, so its pid
//!   says nothing. The bytes are attributed to the opener of the file handle the kernel
//!   names in the request (pid, uid, gid, user, group, command recorded at open). With
//!   one writer per file that is the writer. When several handles of one file are open
//!   for writing, the kernel names one of them (Linux: the most recently opened one
//!   still open) for all dirty pages of the file, so bytes of one process may be
//!   attributed to another process holding the same file open for writing. When the
//!   request names a handle we do not know (already released), the bytes are written
//!   through a fresh backing fd and attributed to the last process that opened the
//!   file for writing (unknown identity if none). Writes that bypass the cache
//!   (`O_DIRECT` opens) keep exact per-write attribution.
//! - Backing fds of writable handles are opened read-write (the kernel reads partial
//!   pages before filling them) and without `O_APPEND` (the kernel places appends at
//!   its own end of file and every WRITE carries its offset).
//! - Order: page-cache WRITEs are background requests; the kernel is told to keep at
//!   most one in flight (`max_background = 1`), so they are captured in the order the
//!   kernel sends them, which for a file is ascending offsets per writeback pass.
//! - Whole pages: the kernel writes back whole pages (up to the end of file), so it
//!   sends the last, partly filled page of a log again from its start each time more
//!   lines land in it, and a small write inside a file as its whole page. Before a
//!   page-cache WRITE lands, the range is read from the backing file and only the span
//!   from the first to the last changed byte is captured (bytes past the old end of
//!   file are always new). So appends are captured exactly once, an overwrite as the
//!   bytes it changed; rewriting bytes with the values they had is not seen.
//! - Durability: `fsync` and `close` make the kernel write the dirty pages back before
//!   it sends FSYNC/FLUSH, and each WRITE is captured before it is answered: when fsync
//!   returns, the bytes are in the capture queue.
//! - Privileges: the kernel would ask for `security.capability` before every cached
//!   write (one more round trip per `write(2)`); with `FUSE_HANDLE_KILLPRIV_V2` it does
//!   not, and clearing set-user-id/set-group-id bits and file capabilities becomes our
//!   job. The backing operations run as the daemon (root, which keeps those bits), so
//!   we clear them ourselves: on a WRITE flagged `FUSE_WRITE_KILL_SUIDGID` (the kernel
//!   writes through, uncached, to files that have them), on truncation and `O_TRUNC`
//!   opens by a caller other than root, and file capabilities at a writable open by a
//!   caller other than root. (`chown` clears them in the backing filesystem itself.)
//! - The kernel trusts its own file size while pages are cached: a process writing the
//!   backing file directly (one that predates the mount) may have its bytes overwritten
//!   by appends through the mount. Same rule as without writeback, stronger effect.

use std::ops::Range;
use std::os::fd::OwnedFd;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;

use fuser::{INodeNo, Request};
use parking_lot::Mutex;
use rustix::fs::{Mode, OFlags};

use super::convert::{errno, open_flags, proc_path};
use super::{CaptureFs, Inode, OpenFile, R, Target};

/// Capabilities only, or (`all`) set-id bits as well.
fn kill_privs_or_caps(path: &str, all: bool) -> R<()> {
    if all {
        return kill_privs(path, true);
    }
    match rustix::fs::removexattr(path, "security.capability") {
        Ok(()) | Err(rustix::io::Errno::NODATA | rustix::io::Errno::OPNOTSUPP) => Ok(()),
        Err(e) => Err(errno(e)),
    }
}

/// Clears set-user-id, set-group-id (when group-executable) and file capabilities of
/// the file `path` names, as a write by an unprivileged process would.
pub(super) fn kill_privs(path: &str, capabilities: bool) -> R<()> {
    let st = rustix::fs::stat(path).map_err(errno)?;
    let mut kill = st.st_mode & libc::S_ISUID;
    if st.st_mode & libc::S_IXGRP != 0 {
        kill |= st.st_mode & libc::S_ISGID;
    }
    if kill != 0 {
        let mode = Mode::from_raw_mode(st.st_mode & 0o7777 & !kill);
        rustix::fs::chmod(path, mode).map_err(errno)?;
    }
    if capabilities {
        match rustix::fs::removexattr(path, "security.capability") {
            Ok(()) | Err(rustix::io::Errno::NODATA | rustix::io::Errno::OPNOTSUPP) => {}
            Err(e) => return Err(errno(e)),
        }
    }
    Ok(())
}

thread_local! {
    static OLD_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl CaptureFs {
    /// At a FUSE open or create by `uid` with `flags`, what the kernel leaves to us
    /// under `FUSE_HANDLE_KILLPRIV_V2`.
    pub(super) fn kill_privs_at_open(&self, uid: u32, flags: i32, path: &str) -> R<()> {
        if !self.killpriv || uid == 0 || flags & libc::O_ACCMODE == libc::O_RDONLY {
            return Ok(());
        }
        kill_privs_or_caps(path, flags & libc::O_TRUNC != 0)
    }

    /// The flags a backing open uses for FUSE open `flags`: in writeback mode writable
    /// handles become read-write and lose `O_APPEND`.
    pub(super) fn backing_flags(&self, flags: i32) -> i32 {
        if !self.writeback || flags & libc::O_ACCMODE == libc::O_RDONLY {
            return flags;
        }
        (flags & !(libc::O_ACCMODE | libc::O_APPEND)) | libc::O_RDWR
    }

    /// Opens the backing file of `inode` for a FUSE open with `flags`. A write-only
    /// open the daemon may not upgrade to read-write (not root, mode without `r`) keeps
    /// its access mode: partial pages then cannot be read, and the kernel gets `EBADF`
    /// for that read (the write itself still works if it covers whole pages).
    pub(super) fn open_backing(&self, inode: &Inode, flags: i32) -> R<OwnedFd> {
        let path = proc_path(&inode.fd);
        let wanted = self.backing_flags(flags);
        match rustix::fs::open(path.as_str(), open_flags(wanted), Mode::empty()) {
            Err(rustix::io::Errno::ACCESS) if wanted != flags => {
                rustix::fs::open(path, open_flags(flags & !libc::O_APPEND), Mode::empty())
                    .map_err(errno)
            }
            r => r.map_err(errno),
        }
    }

    /// The part of a page-cache write at `offset` that changes the file: the span from
    /// the first to the last byte that differs from what the backing file holds there
    /// (bytes past its end always differ). Read before the write lands. The kernel
    /// writes whole pages, so this drops the unchanged rest of a page sent again or
    /// written around a small change.
    pub(super) fn changed_span(&self, f: &OpenFile, offset: u64, data: &[u8]) -> Range<usize> {
        OLD_BUF.with_borrow_mut(|old| {
            old.resize(data.len(), 0);
            let mut got = 0;
            while got < data.len() {
                match rustix::io::pread(&f.file, &mut old[got..], offset + got as u64) {
                    Ok(0) => break,
                    Ok(k) => got += k,
                    Err(rustix::io::Errno::INTR) => {}
                    // Not readable (write-only fallback): capture it all.
                    Err(_) => return 0..data.len(),
                }
            }
            let Some(first) = old[..got].iter().zip(data).position(|(a, b)| a != b) else {
                // Unchanged up to the old end of file; the rest (if any) is new.
                return got..data.len();
            };
            if got < data.len() {
                return first..data.len();
            }
            let last = old[..got]
                .iter()
                .zip(data)
                .rposition(|(a, b)| a != b)
                .unwrap_or(first);
            first..last + 1
        })
    }

    /// A page-cache WRITE naming a handle we do not know: write it through a fresh fd
    /// and attribute it to the last writer of the file. Returns bytes written.
    pub(super) fn write_unknown_handle(
        &self,
        req: &Request,
        ino: INodeNo,
        offset: u64,
        data: &[u8],
    ) -> R<usize> {
        let inode = self.inode(ino)?;
        let file = rustix::fs::open(
            proc_path(&inode.fd),
            OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        let n = rustix::io::pwrite(&file, data, offset).map_err(errno)?;
        let path = self.capture_path(&file);
        let opener = inode.last_writer.lock().clone();
        let f = OpenFile {
            inode,
            file,
            writable: true,
            append: false,
            positional: OnceLock::new(),
            target: Mutex::new(Target {
                generation: self.path_generation.load(Ordering::Acquire),
                path,
            }),
            opener,
            backing: None,
        };
        self.capture(req, &f, offset, &data[..n], true);
        Ok(n)
    }
}
