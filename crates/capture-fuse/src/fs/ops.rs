//! The `fuser::Filesystem` operations: argument plumbing around `CaptureFs` helpers.

use std::ffi::OsStr;
use std::io;
use std::path::Path;
use std::time::SystemTime;

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileHandle, FileType, Generation, INodeNo, IoctlFlags,
    KernelConfig, LockOwner, OpenFlags, PollEvents, PollFlags, PollNotifier, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyIoctl,
    ReplyLseek, ReplyOpen, ReplyPoll, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};
use rustix::fs::{AtFlags, CWD, Mode, SeekFrom};

use super::convert::{attr, errno, proc_path};
use super::{CaptureFs, TTL};

impl fuser::Filesystem for CaptureFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        self.negotiate(config)
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
        self.do_read(fh, offset, size, reply);
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
        self.do_write(req, ino, fh, offset, data, write_flags, reply);
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
        self.do_opendir(ino, reply);
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        self.do_readdir(fh, offset, reply);
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
        self.do_fsyncdir(fh, datasync, reply);
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
        self.do_setxattr(ino, name, value, flags, reply);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.do_getxattr(ino, name, size, reply);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.do_listxattr(ino, size, reply);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.do_removexattr(ino, name, reply);
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
