//! The `fuser::Filesystem` operations: argument plumbing around `CaptureFs` helpers.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileHandle, FileType, FopenFlags, Generation, INodeNo,
    InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, PollEvents, PollFlags, PollNotifier,
    RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry,
    ReplyIoctl, ReplyLseek, ReplyOpen, ReplyPoll, ReplyStatfs, ReplyWrite, ReplyXattr, Request,
    TimeOrNow, WriteFlags,
};
use parking_lot::Mutex;
use rustix::fs::{AtFlags, CWD, Mode, OFlags, SeekFrom};

use super::convert::{attr, dir_kind, errno, kind_of, proc_path};
use super::{CaptureFs, OpenDir, TTL};

thread_local! {
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl fuser::Filesystem for CaptureFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        // Concurrent lookups/readdirs in one directory; O_TRUNC inside open (one round
        // trip less for `>` redirects); drop cached pages when the backing file changed
        // underneath. FUSE_WRITEBACK_CACHE only when asked for (fs/writeback.rs).
        for cap in [
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_ATOMIC_O_TRUNC,
            InitFlags::FUSE_AUTO_INVAL_DATA,
        ] {
            let _ = config.add_capabilities(cap);
        }
        if self.policy.writeback {
            self.writeback = config
                .add_capabilities(InitFlags::FUSE_WRITEBACK_CACHE)
                .is_ok();
            if self.writeback {
                // Page-cache WRITEs are background requests: one in flight at a time
                // keeps them in the order the kernel sends them (see fs/writeback.rs).
                let _ = config.set_max_background(1);
                self.killpriv = config
                    .add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2)
                    .is_ok();
            } else {
                tracing::warn!("Kernel lacks FUSE_WRITEBACK_CACHE: writeback = true ignored.");
            }
        }
        if self.policy.passthrough && !self.writeback {
            let granted = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            self.passthrough.store(granted, Ordering::Relaxed);
            if !granted {
                tracing::info!(
                    "Kernel lacks FUSE_PASSTHROUGH (Linux 6.9+): reads through the mount \
                     are served by sluice."
                );
            }
        }
        // Writable handles use direct I/O only where shared mmap then still works
        // (Linux 6.6+); older kernels would refuse MAP_SHARED on them with ENODEV.
        self.direct_io_writes = config
            .add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP)
            .is_ok();
        if !self.direct_io_writes {
            tracing::warn!(
                "Kernel lacks FUSE_DIRECT_IO_ALLOW_MMAP: writes go through the page \
                cache, and a write(2) crossing a page boundary may be captured in two parts."
            );
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let r = self
            .inode(parent)
            .and_then(|p| self.lookup_at(&p, name))
            .map(|(inode, st)| attr(inode.nodeid, &st));
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.forget_one(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let r = match fh.and_then(|fh| self.file(fh).ok()) {
            Some(f) => rustix::fs::fstat(&f.file)
                .map(|st| attr(f.inode.nodeid, &st))
                .map_err(errno),
            None => self.inode(ino).and_then(|i| {
                rustix::fs::fstat(&i.fd)
                    .map(|st| attr(i.nodeid, &st))
                    .map_err(errno)
            }),
        };
        match r {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if self.killpriv && size.is_some() && mode.is_none() && req.uid() != 0 {
            let killed = self
                .inode(ino)
                .and_then(|i| super::writeback::kill_privs(&proc_path(&i.fd), true));
            if let Err(e) = killed {
                return reply.error(e);
            }
        }
        if let (true, Some(size), Ok(inode)) = (self.writeback, size, self.inode(ino)) {
            self.order_flush(&inode, Some(size));
        }
        match self.do_setattr(ino, mode, uid, gid, size, atime, mtime, fh) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let r = self
            .inode(ino)
            .and_then(|i| rustix::fs::readlinkat(&i.fd, "", Vec::new()).map_err(errno));
        match r {
            Ok(target) => reply.data(target.as_bytes()),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let r = self.inode(parent).and_then(|p| {
            rustix::fs::mknodat(
                &p.fd,
                name,
                rustix::fs::FileType::from_raw_mode(mode),
                Mode::from_raw_mode(mode & 0o7777),
                u64::from(rdev),
            )
            .map_err(errno)?;
            self.adopt(req, &p, name, mode)
        });
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let r = self.inode(parent).and_then(|p| {
            rustix::fs::mkdirat(&p.fd, name, Mode::from_raw_mode(mode & 0o7777)).map_err(errno)?;
            self.adopt(req, &p, name, mode)
        });
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self
            .inode(parent)
            .and_then(|p| rustix::fs::unlinkat(&p.fd, name, AtFlags::empty()).map_err(errno));
        self.paths_changed();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self
            .inode(parent)
            .and_then(|p| rustix::fs::unlinkat(&p.fd, name, AtFlags::REMOVEDIR).map_err(errno));
        self.paths_changed();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let r = self.inode(parent).and_then(|p| {
            rustix::fs::symlinkat(target, &p.fd, link_name).map_err(errno)?;
            self.adopt(req, &p, link_name, 0o777)
        });
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = self.inode(parent).and_then(|p| {
            let np = self.inode(newparent)?;
            rustix::fs::renameat_with(
                &p.fd,
                name,
                &np.fd,
                newname,
                rustix::fs::RenameFlags::from_bits_retain(flags.bits()),
            )
            .map_err(errno)
        });
        self.paths_changed();
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let r = self.inode(ino).and_then(|i| {
            let np = self.inode(newparent)?;
            if i.kind == FileType::Symlink {
                rustix::fs::linkat(&i.fd, "", &np.fd, newname, AtFlags::EMPTY_PATH)
            } else {
                rustix::fs::linkat(
                    CWD,
                    proc_path(&i.fd),
                    &np.fd,
                    newname,
                    AtFlags::SYMLINK_FOLLOW,
                )
            }
            .map_err(errno)?;
            let (inode, st) = self.lookup_at(&np, newname)?;
            Ok(attr(inode.nodeid, &st))
        });
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let r = self.inode(ino).and_then(|inode| {
            let file = self.open_backing(&inode, flags.0)?;
            self.kill_privs_at_open(req.uid(), flags.0, &proc_path(&file))?;
            if self.writeback && flags.0 & libc::O_TRUNC != 0 {
                self.order_flush(&inode, Some(0));
            }
            let writable = flags.0 & libc::O_ACCMODE != libc::O_RDONLY;
            let backing = self.choose_io(&inode, &file, writable, |fd| reply.open_backing(fd));
            Ok(self.register_file(req, inode, file, flags.0, backing))
        });
        match r {
            Ok((fh, open_flags, Some(b))) => reply.opened_passthrough(fh, open_flags, &b),
            Ok((fh, open_flags, None)) => reply.opened(fh, open_flags),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let f = match self.file(fh) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        self.counters.read_request();
        let size = size as usize;
        READ_BUF.with_borrow_mut(|buf| {
            if buf.len() < size {
                buf.resize(size, 0);
            }
            let mut done = 0;
            while done < size {
                match rustix::io::pread(&f.file, &mut buf[done..size], offset + done as u64) {
                    Ok(0) => break,
                    Ok(n) => done += n,
                    Err(rustix::io::Errno::INTR) => {}
                    Err(e) if done == 0 => return reply.error(errno(e)),
                    Err(_) => break,
                }
            }
            reply.data(&buf[..done]);
        });
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let page_cache = write_flags.contains(WriteFlags::FUSE_WRITE_CACHE);
        let f = match self.file(fh) {
            Ok(f) => f,
            Err(_) if page_cache => {
                return match self.write_unknown_handle(req, ino, offset, data) {
                    Ok(n) => reply.written(n as u32),
                    Err(e) => reply.error(e),
                };
            }
            Err(e) => return reply.error(e),
        };
        if self.killpriv && write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
            if let Err(e) = super::writeback::kill_privs(&proc_path(&f.file), true) {
                return reply.error(e);
            }
        }
        let changed = if page_cache && self.writeback {
            self.changed_span(&f, offset, data)
        } else {
            0..data.len()
        };
        let ordered = page_cache && self.writeback;
        if ordered {
            self.order_start(&f);
        }
        match self.write_backing(&f, offset, data, page_cache) {
            Ok((n, at)) => {
                // Enqueue before replying: the writer (and the next write to this inode)
                // waits for the reply, so per-file order is the queue order (in
                // writeback mode restored by fs/order.rs).
                let span = changed.start.min(n)..changed.end.min(n);
                let changed_at = at + span.start as u64;
                if ordered {
                    self.capture_in_order(req, &f, at, n as u64, changed_at, &data[span]);
                } else {
                    self.capture(req, &f, changed_at, &data[span], page_cache);
                }
                reply.written(n as u32);
            }
            Err(e) => {
                if self.target(&f).is_some() {
                    self.counters.error();
                }
                reply.error(e);
            }
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Called on every close of every dup: close a duplicate so that backing
        // filesystems that report errors at close do so, but keep our fd.
        if let (true, Ok(f)) = (self.writeback, self.file(fh)) {
            self.order_flush(&f.inode, None);
        }
        match self.file(fh) {
            Ok(f) => match rustix::io::fcntl_dupfd_cloexec(&f.file, 0) {
                Ok(dup) => {
                    drop(dup);
                    reply.ok()
                }
                Err(e) => reply.error(errno(e)),
            },
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let f = self.files.write().remove(&fh.0);
        if let Some(f) = f {
            self.release_io(&f.inode, f.backing.is_some());
            if self.writeback {
                self.order_flush(&f.inode, None);
            }
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.file(fh).and_then(|f| {
            // The kernel wrote the dirty pages back before asking: what is held for
            // order goes to the queue now, before fsync returns.
            if self.writeback {
                self.order_flush(&f.inode, None);
            }
            if datasync {
                rustix::fs::fdatasync(&f.file)
            } else {
                rustix::fs::fsync(&f.file)
            }
            .map_err(errno)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
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

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
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

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs.write().remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
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

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        match rustix::fs::fstatvfs(&self.root.fd) {
            Ok(s) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namemax as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let r = self.xattr_path(ino).and_then(|p| {
            rustix::fs::setxattr(
                p.as_str(),
                name,
                value,
                rustix::fs::XattrFlags::from_bits_retain(flags as u32),
            )
            .map_err(errno)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let p = match self.xattr_path(ino) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        if size == 0 {
            return match rustix::fs::getxattr_query(p.as_str(), name) {
                Ok(n) => reply.size(n as u32),
                Err(e) => reply.error(errno(e)),
            };
        }
        let mut buf = vec![0u8; size as usize];
        match rustix::fs::getxattr(p.as_str(), name, &mut buf[..]) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let p = match self.xattr_path(ino) {
            Ok(p) => p,
            Err(e) => return reply.error(e),
        };
        if size == 0 {
            return match rustix::fs::listxattr_query(p.as_str()) {
                Ok(n) => reply.size(n as u32),
                Err(e) => reply.error(errno(e)),
            };
        }
        let mut buf = vec![0u8; size as usize];
        match rustix::fs::listxattr(p.as_str(), &mut buf[..]) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self
            .xattr_path(ino)
            .and_then(|p| rustix::fs::removexattr(p.as_str(), name).map_err(errno));
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Not called under default_permissions; ENOSYS makes the kernel stop asking.
        reply.error(Errno::ENOSYS);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = self.do_create(req, parent, name, mode, flags, |fd| reply.open_backing(fd));
        match r {
            Ok((a, (fh, fl, Some(b)))) => {
                reply.created_passthrough(&TTL, &a, Generation(0), fh, fl, &b)
            }
            Ok((a, (fh, fl, None))) => reply.created(&TTL, &a, Generation(0), fh, fl),
            Err(e) => reply.error(e),
        }
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        // Not forwarded: FICLONE & co. would move data without a write we could see.
        reply.error(Errno::ENOTTY);
    }

    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ph: PollNotifier,
        _events: PollEvents,
        _flags: PollFlags,
        reply: ReplyPoll,
    ) {
        // Regular files are always ready; ENOSYS makes the kernel say so itself.
        reply.error(Errno::ENOSYS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let r = self.file(fh).and_then(|f| {
            rustix::fs::fallocate(
                &f.file,
                rustix::fs::FallocateFlags::from_bits_retain(mode as u32),
                offset,
                length,
            )
            .map_err(errno)
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let r = self.file(fh).and_then(|f| {
            let pos = match whence {
                libc::SEEK_DATA => SeekFrom::Data(offset as u64),
                libc::SEEK_HOLE => SeekFrom::Hole(offset as u64),
                libc::SEEK_SET => SeekFrom::Start(offset as u64),
                libc::SEEK_CUR => SeekFrom::Current(offset),
                libc::SEEK_END => SeekFrom::End(offset),
                _ => return Err(Errno::EINVAL),
            };
            rustix::fs::seek(&f.file, pos).map_err(errno)
        });
        match r {
            Ok(pos) => reply.offset(pos as i64),
            Err(e) => reply.error(e),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        // Deliberately unsupported: the kernel then falls back to read + write, and
        // every copied byte is captured like any other write.
        reply.error(Errno::ENOSYS);
    }
}
