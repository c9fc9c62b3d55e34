//! The capture path: who wrote (the writer recorded at open), which file (the
//! handle's target, recomputed when paths may have changed), the filter and
//! quota, the write to the backing file and the queued `CapturedWrite`.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Instant, SystemTime};

use fuser::{BackingId, Errno, FileHandle, FopenFlags, Request};
use parking_lot::Mutex;
use rustix::fs::{CWD, Mode, OFlags};

use super::convert::{errno, proc_path};
use super::{CaptureFs, Inode, OpenFile, Opened, R, Target, Writer, passthrough};
use crate::capture::{Admit, CapturedWrite};
use crate::identity::ProcInfo;

impl CaptureFs {
    pub(super) fn writer(&self, req: &Request) -> Option<Writer> {
        let info = self.procs.lookup(req.pid())?;
        Some(Writer {
            tid: req.pid(),
            uid: req.uid(),
            gid: req.gid(),
            info,
        })
    }

    pub(super) fn register_file(
        &self,
        req: &Request,
        inode: Arc<Inode>,
        file: OwnedFd,
        flags: i32,
        backing: Option<Arc<BackingId>>,
    ) -> Opened {
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let (target, opener) = if writable {
            let generation = self.path_generation.load(Ordering::Acquire);
            let path = self.capture_path(&file);
            let opener = self.writer(req);
            if self.writeback && opener.is_some() {
                *inode.last_writer.lock() = opener.clone();
            }
            (Target { generation, path }, opener)
        } else {
            (
                Target {
                    generation: u64::MAX,
                    path: None,
                },
                None,
            )
        };
        // Writable handles bypass the page cache. The cached write path splits a
        // write(2) at every page it only partly fills (the page is not up to date), so
        // a log line crossing a 4 KiB boundary would become two captures, and it asks
        // for `security.capability` (one more round trip) before every write. Direct
        // I/O sends each write(2) as one request (up to max_write), still serialised
        // per inode; shared mmap keeps working through FUSE_DIRECT_IO_ALLOW_MMAP.
        // Read-only handles keep the page cache, but never FOPEN_KEEP_CACHE: pages are
        // dropped on open, since writers that predate the mount change files
        // underneath.
        // In writeback mode the page cache is the point: small writes are absorbed
        // there and reach us as large page-cache writes.
        let open_flags = if writable && self.direct_io_writes && !self.writeback {
            FopenFlags::FOPEN_DIRECT_IO
        } else {
            FopenFlags::empty()
        };
        let open_flags = match backing {
            Some(_) => passthrough::passthrough_flags(open_flags, writable),
            None => open_flags,
        };
        let f = Arc::new(OpenFile {
            backing: backing.clone(),
            inode,
            file,
            writable,
            // Writeback mode: the kernel places appends itself; the backing fd was
            // opened without O_APPEND and every write carries its offset.
            append: flags & libc::O_APPEND != 0 && !self.writeback,
            positional: OnceLock::new(),
            target: Mutex::new(target),
            opener,
        });
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.files.write().insert(fh, f);
        (FileHandle(fh), open_flags, backing)
    }

    /// The app-visible path of an open file if it is to be captured.
    pub(super) fn capture_path(&self, fd: &OwnedFd) -> Option<Arc<Path>> {
        let link = match rustix::fs::readlinkat(CWD, proc_path(fd), Vec::new()) {
            Ok(l) => l.into_bytes(),
            Err(_) => {
                self.counters.error();
                return None;
            }
        };
        let link = link.strip_suffix(b" (deleted)").unwrap_or(&link);
        let path = Path::new(OsStr::from_bytes(link));
        let relative = path.strip_prefix(&self.root_path).ok()?;
        self.policy
            .filter
            .matches(relative)
            .then(|| Arc::from(path))
    }

    /// Current capture path of a writable handle, recomputed after renames/unlinks.
    pub(super) fn target(&self, f: &OpenFile) -> Option<Arc<Path>> {
        let generation = self.path_generation.load(Ordering::Acquire);
        let mut t = f.target.lock();
        if t.generation != generation {
            t.path = self.capture_path(&f.file);
            t.generation = generation;
        }
        t.path.clone()
    }

    pub(super) fn paths_changed(&self) {
        self.path_generation.fetch_add(1, Ordering::AcqRel);
    }

    pub(super) fn capture(
        &self,
        req: &Request,
        f: &OpenFile,
        offset: u64,
        data: &[u8],
        page_cache: bool,
    ) {
        if let Some(w) = self.make_capture(req, f, offset, data, page_cache) {
            self.send(w);
        }
    }

    /// The capture of `data` written at `offset` through `f`, unless it is not to be
    /// captured (excluded, own process, over quota: counted).
    pub(super) fn make_capture(
        &self,
        req: &Request,
        f: &OpenFile,
        offset: u64,
        data: &[u8],
        page_cache: bool,
    ) -> Option<CapturedWrite> {
        if data.is_empty() {
            return None;
        }
        let path = self.target(f)?;
        let found = if page_cache || req.pid() == 0 {
            None
        } else {
            self.writer(req)
        };
        let writer = found
            .or_else(|| f.opener.clone())
            .unwrap_or_else(|| Writer {
                tid: req.pid(),
                uid: req.uid(),
                gid: req.gid(),
                info: ProcInfo::unknown(),
            });
        if writer.info.tgid == self.own_pid && !self.policy.capture_own_process {
            return None;
        }
        let len = data.len();
        if let Some(q) = self.policy.quota {
            let verdict = f.inode.quota.lock().admit(q, len, Instant::now());
            match verdict {
                Admit::Pass => {}
                Admit::Drop => {
                    self.counters.over_quota(len);
                    return None;
                }
                Admit::DropAndLog(dropped) => {
                    self.counters.over_quota(len);
                    tracing::warn!(path = %path.display(), dropped,
                        quota_bytes_per_sec = q.rate,
                        "File over capture quota, dropping its captured writes.");
                    return None;
                }
            }
        }
        if self.queue.is_full() {
            self.counters.queue_full(len);
            return None;
        }
        Some(CapturedWrite {
            path,
            offset,
            data: self.payloads.copy(data),
            time: SystemTime::now(),
            pid: writer.info.tgid,
            tid: writer.tid,
            uid: writer.uid,
            gid: writer.gid,
            user: self.names.user(writer.uid),
            group: self.names.group(writer.gid),
            command: writer.info.command.clone(),
            inode: f.inode.ino,
            from_page_cache: page_cache,
        })
    }

    pub(super) fn send(&self, w: CapturedWrite) {
        let len = w.data.len();
        if self.queue.try_send(w) {
            self.counters.captured(len);
        } else {
            self.counters.queue_full(len);
        }
    }

    /// Writes to the backing file; returns (bytes written, offset they landed at).
    pub(super) fn write_backing(
        &self,
        f: &OpenFile,
        offset: u64,
        data: &[u8],
        page_cache: bool,
    ) -> R<(usize, u64)> {
        if f.append && !page_cache {
            // Linux appends on an O_APPEND fd whatever offset `pwrite` is given; use
            // `write` and read back where this one landed. Writes to one inode are
            // serialised by the kernel (inode lock), and the position is per handle.
            let n = rustix::io::write(&f.file, data).map_err(errno)?;
            let end = rustix::fs::tell(&f.file).map_err(errno)?;
            return Ok((n, end - n as u64));
        }
        let fd = if f.append {
            // Page-cache writeback carries real offsets: needs a non-append twin.
            f.positional
                .get_or_init(|| {
                    rustix::fs::open(
                        proc_path(&f.file),
                        OFlags::WRONLY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .ok()
                })
                .as_ref()
                .ok_or(Errno::EIO)?
                .as_fd()
        } else {
            f.file.as_fd()
        };
        let n = rustix::io::pwrite(fd, data, offset).map_err(errno)?;
        Ok((n, offset))
    }
}
