//! The passthrough filesystem served over the watched directory.
//!
//! Every backing operation is relative to a file descriptor: the directory opened
//! before mounting (the root inode) or an `O_PATH` descriptor per cached inode. No
//! path into the mountpoint is ever used — it would re-enter this filesystem.
//!
//! Bookkeeping (the libfuse `passthrough_hp` model):
//! - inodes are keyed by backing `(st_dev, st_ino)`, so hard links share one node; each
//!   entry reply adds one lookup, `forget` subtracts, the `O_PATH` fd closes at zero.
//!   Holding that fd pins the backing inode, so its number cannot be reused while cached.
//! - node ids are the backing inode numbers (what `stat` shows through the mount, which
//!   `tail -F` and shippers use to detect rotation); inodes of other devices mounted
//!   inside, and the rare collision, get synthetic ids above 2^63.
//! - a file handle owns its own backing fd, opened through `/proc/self/fd/N` with the
//!   caller's flags (`O_APPEND` kept, `O_DIRECT` dropped); `flush` never closes it.
//!
//! Permissions are enforced by the kernel (`default_permissions`); backing operations
//! run with the daemon's credentials, and new nodes are handed to the caller with
//! `fchown` (the group is left alone under a set-group-id directory) and get the
//! caller's mode even if the daemon's umask would cut it.
//!
//! Files: this one the inode table, handles and FUSE init; `ops.rs` the
//! `fuser::Filesystem` operations; `capture.rs` the capture path; `data.rs` reads
//! and writes through a handle; `dir.rs` directory handles; `xattr.rs`;
//! `writeback.rs`, `order.rs`, `passthrough.rs` the modes; `convert.rs` the types.

mod capture;
mod convert;
mod data;
mod dir;
mod ops;
mod order;
mod passthrough;
mod writeback;
mod xattr;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use fuser::{
    BackingId, Errno, FileAttr, FileHandle, FileType, FopenFlags, INodeNo, InitFlags, KernelConfig,
    Request, TimeOrNow,
};
use parking_lot::{Mutex, RwLock};
use rustix::fs::{AtFlags, CWD, Mode, OFlags, Stat, Timestamps};

use self::convert::{attr, errno, key_of, kind_of, open_flags, proc_path, timespec};
use crate::capture::{Bucket, CaptureCounters, PathFilter, QueueSender, Quota};
use crate::identity::{NameCache, ProcCache, ProcInfo};
use crate::payload::BufferPool;

/// Entry and attribute validity: short, because writers that predate the mount change
/// files underneath.
const TTL: Duration = Duration::from_secs(1);
/// First synthetic node id (for inodes whose own number cannot be used).
const SYNTHETIC_BASE: u64 = 1 << 63;
const ROOT_ID: u64 = 1;

type R<T> = Result<T, Errno>;
/// A registered handle: its number, open flags, and backing file when passthrough.
type Opened = (FileHandle, FopenFlags, Option<Arc<BackingId>>);
struct Inode {
    nodeid: u64,
    /// `O_PATH | O_NOFOLLOW` descriptor of the backing node.
    fd: OwnedFd,
    /// Backing `(st_dev, st_ino)`.
    key: (u64, u64),
    ino: u64,
    kind: FileType,
    quota: Mutex<Bucket>,
    /// The last process that opened this file for writing (writeback mode: who a
    /// page-cache write naming no handle we know is attributed to).
    last_writer: Mutex<Option<Writer>>,
    /// Open handles by I/O mode (passthrough or not), see fs/passthrough.rs.
    io: Mutex<passthrough::IoModes>,
    /// Writeback mode: page-cache captures held back until they are in file order.
    order: Mutex<order::Order>,
}

struct TableEntry {
    inode: Arc<Inode>,
    nlookup: u64,
}

struct InodeTable {
    by_node: HashMap<u64, TableEntry>,
    by_key: HashMap<(u64, u64), u64>,
    next_synthetic: u64,
}

/// Who issued a request, as far as we could tell.
#[derive(Clone)]
struct Writer {
    tid: u32,
    uid: u32,
    gid: u32,
    info: Arc<ProcInfo>,
}

/// Where a writable handle's captures go; recomputed when paths may have changed.
struct Target {
    generation: u64,
    /// `None`: not captured (excluded, or the path could not be determined).
    path: Option<Arc<Path>>,
}

struct OpenFile {
    inode: Arc<Inode>,
    file: OwnedFd,
    writable: bool,
    append: bool,
    /// Non-append twin of `file` for page-cache writes, which carry real offsets.
    positional: OnceLock<Option<OwnedFd>>,
    target: Mutex<Target>,
    opener: Option<Writer>,
    /// Served by kernel passthrough to this backing file (shared per inode).
    backing: Option<Arc<BackingId>>,
}

struct OpenDir {
    fd: Mutex<OwnedFd>,
}

/// Capture policy, fixed at mount time.
pub(crate) struct CapturePolicy {
    pub(crate) filter: PathFilter,
    pub(crate) quota: Option<Quota>,
    pub(crate) capture_own_process: bool,
    /// Ask for the writeback cache (granted or not at FUSE init).
    pub(crate) writeback: bool,
    /// Serve read-only opens by kernel passthrough where the kernel allows it.
    pub(crate) passthrough: bool,
}

pub(crate) struct CaptureFs {
    root_path: PathBuf,
    root_dev: u64,
    root: Arc<Inode>,
    inodes: Mutex<InodeTable>,
    files: RwLock<HashMap<u64, Arc<OpenFile>>>,
    dirs: RwLock<HashMap<u64, Arc<OpenDir>>>,
    next_fh: AtomicU64,
    /// Bumped by every operation that can change the path of an existing file.
    path_generation: AtomicU64,
    policy: CapturePolicy,
    queue: QueueSender,
    counters: Arc<CaptureCounters>,
    procs: ProcCache,
    names: NameCache,
    payloads: Arc<BufferPool>,
    own_pid: u32,
    give_to_caller: bool,
    /// Open writable handles with FOPEN_DIRECT_IO (decided at FUSE init).
    direct_io_writes: bool,
    /// The kernel's writeback cache is on (asked for and granted at FUSE init).
    writeback: bool,
    /// We clear set-user-id/set-group-id bits and file capabilities ourselves
    /// (FUSE_HANDLE_KILLPRIV_V2), so the kernel stops asking for `security.capability`
    /// before every cached write.
    killpriv: bool,
    /// Passthrough granted at init and not switched off since (fs/passthrough.rs).
    passthrough: AtomicBool,
}

impl CaptureFs {
    pub(crate) fn new(
        root_path: PathBuf,
        root_fd: OwnedFd,
        policy: CapturePolicy,
        queue: QueueSender,
        counters: Arc<CaptureCounters>,
        names: NameCache,
    ) -> io::Result<Self> {
        let st = rustix::fs::fstat(&root_fd)?;
        let root = Arc::new(Inode {
            nodeid: ROOT_ID,
            fd: root_fd,
            key: key_of(&st),
            ino: key_of(&st).1,
            kind: FileType::Directory,
            quota: Mutex::new(Bucket::new()),
            last_writer: Mutex::new(None),
            io: Mutex::default(),
            order: Mutex::default(),
        });
        let mut table = InodeTable {
            by_node: HashMap::new(),
            by_key: HashMap::new(),
            next_synthetic: SYNTHETIC_BASE,
        };
        table.by_key.insert(key_of(&st), ROOT_ID);
        table.by_node.insert(
            ROOT_ID,
            TableEntry {
                inode: root.clone(),
                nlookup: u64::MAX / 2,
            },
        );
        Ok(CaptureFs {
            root_path,
            root_dev: key_of(&st).0,
            root,
            inodes: Mutex::new(table),
            files: RwLock::new(HashMap::new()),
            dirs: RwLock::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            path_generation: AtomicU64::new(0),
            policy,
            queue,
            counters,
            procs: ProcCache::new(),
            names,
            payloads: Arc::default(),
            own_pid: std::process::id(),
            give_to_caller: crate::mount::is_root(),
            direct_io_writes: false,
            writeback: false,
            killpriv: false,
            passthrough: AtomicBool::new(false),
        })
    }

    fn inode(&self, nodeid: INodeNo) -> R<Arc<Inode>> {
        if nodeid.0 == ROOT_ID {
            return Ok(self.root.clone());
        }
        self.inodes
            .lock()
            .by_node
            .get(&nodeid.0)
            .map(|e| e.inode.clone())
            .ok_or(Errno::ESTALE)
    }

    fn file(&self, fh: FileHandle) -> R<Arc<OpenFile>> {
        self.files.read().get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    fn dir(&self, fh: FileHandle) -> R<Arc<OpenDir>> {
        self.dirs.read().get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    /// Registers one more kernel reference to the node behind `fd`.
    fn intern(&self, fd: OwnedFd, st: &Stat) -> Arc<Inode> {
        let key = key_of(st);
        let mut t = self.inodes.lock();
        if let Some(&node) = t.by_key.get(&key) {
            let e = t
                .by_node
                .get_mut(&node)
                .expect("by_key and by_node are updated together");
            e.nlookup += 1;
            return e.inode.clone();
        }
        let nodeid = if key.0 == self.root_dev
            && key.1 > ROOT_ID
            && key.1 < SYNTHETIC_BASE
            && !t.by_node.contains_key(&key.1)
        {
            key.1
        } else {
            t.next_synthetic += 1;
            t.next_synthetic
        };
        let inode = Arc::new(Inode {
            nodeid,
            fd,
            key,
            ino: key.1,
            kind: kind_of(st.st_mode),
            quota: Mutex::new(Bucket::new()),
            last_writer: Mutex::new(None),
            io: Mutex::default(),
            order: Mutex::default(),
        });
        t.by_key.insert(key, nodeid);
        t.by_node.insert(
            nodeid,
            TableEntry {
                inode: inode.clone(),
                nlookup: 1,
            },
        );
        inode
    }

    fn forget_one(&self, nodeid: u64, n: u64) {
        if nodeid == ROOT_ID {
            return;
        }
        let mut t = self.inodes.lock();
        let Some(e) = t.by_node.get_mut(&nodeid) else {
            return;
        };
        e.nlookup = e.nlookup.saturating_sub(n);
        if e.nlookup == 0 {
            if let Some(e) = t.by_node.remove(&nodeid) {
                if t.by_key.get(&e.inode.key) == Some(&nodeid) {
                    t.by_key.remove(&e.inode.key);
                }
            }
        }
    }

    fn lookup_at(&self, parent: &Inode, name: &OsStr) -> R<(Arc<Inode>, Stat)> {
        let fd = rustix::fs::openat(
            &parent.fd,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        let st = rustix::fs::fstat(&fd).map_err(errno)?;
        let inode = self.intern(fd, &st);
        Ok((inode, st))
    }

    /// After creating `name` in `parent`: look it up, give it to the caller, fix its mode.
    fn adopt(&self, req: &Request, parent: &Inode, name: &OsStr, mode: u32) -> R<FileAttr> {
        let (inode, st) = self.lookup_at(parent, name)?;
        let result = self.give(req, parent, &inode.fd, inode.kind, &st, mode);
        if let Err(e) = result {
            let flags = if inode.kind == FileType::Directory {
                AtFlags::REMOVEDIR
            } else {
                AtFlags::empty()
            };
            let _ = rustix::fs::unlinkat(&parent.fd, name, flags);
            self.forget_one(inode.nodeid, 1);
            return Err(e);
        }
        let st = rustix::fs::fstat(&inode.fd).map_err(errno)?;
        Ok(attr(inode.nodeid, &st))
    }

    /// Owner = caller (group kept under a set-group-id parent), permission bits = `mode`
    /// (plus the set-group-id bit a directory inherits).
    fn give(
        &self,
        req: &Request,
        parent: &Inode,
        fd: &OwnedFd,
        kind: FileType,
        st: &Stat,
        mode: u32,
    ) -> R<()> {
        if self.give_to_caller {
            let parent_st = rustix::fs::fstat(&parent.fd).map_err(errno)?;
            let gid = (parent_st.st_mode & libc::S_ISGID == 0).then_some(req.gid());
            if st.st_uid != req.uid() || gid.is_some_and(|g| g != st.st_gid) {
                rustix::fs::chownat(
                    fd,
                    "",
                    Some(rustix::fs::Uid::from_raw(req.uid())),
                    gid.map(rustix::fs::Gid::from_raw),
                    AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(errno)?;
            }
        }
        if kind == FileType::Symlink {
            return Ok(());
        }
        let now = rustix::fs::fstat(fd).map_err(errno)?;
        let mut want = mode & 0o7777;
        if kind == FileType::Directory {
            want |= now.st_mode & libc::S_ISGID;
        }
        if now.st_mode & 0o7777 != want {
            rustix::fs::chmodat(
                CWD,
                proc_path(fd),
                Mode::from_raw_mode(want),
                AtFlags::empty(),
            )
            .map_err(errno)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn do_setattr(
        &self,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<FileHandle>,
    ) -> R<FileAttr> {
        let inode = self.inode(ino)?;
        let file = fh.and_then(|fh| self.file(fh).ok());
        let symlink = inode.kind == FileType::Symlink;
        if let Some(mode) = mode {
            let mode = Mode::from_raw_mode(mode);
            match &file {
                Some(f) => rustix::fs::fchmod(&f.file, mode).map_err(errno)?,
                None if symlink => return Err(Errno::EOPNOTSUPP),
                None => rustix::fs::chmodat(CWD, proc_path(&inode.fd), mode, AtFlags::empty())
                    .map_err(errno)?,
            }
        }
        if uid.is_some() || gid.is_some() {
            rustix::fs::chownat(
                &inode.fd,
                "",
                uid.map(rustix::fs::Uid::from_raw),
                gid.map(rustix::fs::Gid::from_raw),
                AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(errno)?;
        }
        if let Some(size) = size {
            match &file {
                Some(f) if f.writable => rustix::fs::ftruncate(&f.file, size).map_err(errno)?,
                _ => {
                    let fd = rustix::fs::open(
                        proc_path(&inode.fd),
                        OFlags::WRONLY | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(errno)?;
                    rustix::fs::ftruncate(&fd, size).map_err(errno)?;
                }
            }
        }
        if atime.is_some() || mtime.is_some() {
            let times = Timestamps {
                last_access: timespec(atime),
                last_modification: timespec(mtime),
            };
            match &file {
                Some(f) => rustix::fs::futimens(&f.file, &times).map_err(errno)?,
                None if symlink => rustix::fs::utimensat(
                    &inode.fd,
                    "",
                    &times,
                    AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(errno)?,
                None => rustix::fs::utimensat(CWD, proc_path(&inode.fd), &times, AtFlags::empty())
                    .map_err(errno)?,
            }
        }
        let st = rustix::fs::fstat(&inode.fd).map_err(errno)?;
        Ok(attr(inode.nodeid, &st))
    }

    fn do_create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        flags: i32,
        open_backing: impl FnOnce(std::os::fd::BorrowedFd<'_>) -> io::Result<BackingId>,
    ) -> R<(FileAttr, Opened)> {
        let parent = self.inode(parent)?;
        let base = open_flags(self.backing_flags(flags));
        let mode_bits = Mode::from_raw_mode(mode & 0o7777);
        // O_EXCL first, so that ownership is only ever changed on a node we created.
        let (file, created) = match rustix::fs::openat(
            &parent.fd,
            name,
            base | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW,
            mode_bits,
        ) {
            Ok(fd) => (fd, true),
            Err(rustix::io::Errno::EXIST) if flags & libc::O_EXCL == 0 => {
                // Appeared meanwhile (we only get `create` for names the kernel saw
                // missing). Never follow a symlink here: its target would be resolved
                // in our namespace, possibly through this very mount.
                let fd =
                    rustix::fs::openat(&parent.fd, name, base | OFlags::NOFOLLOW, Mode::empty())
                        .map_err(errno)?;
                (fd, false)
            }
            Err(e) => return Err(errno(e)),
        };
        let opath = rustix::fs::open(
            proc_path(&file),
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        if !created {
            self.kill_privs_at_open(req.uid(), flags, &proc_path(&file))?;
        }
        let st = rustix::fs::fstat(&file).map_err(errno)?;
        if created {
            if let Err(e) = self.give(req, &parent, &file, FileType::RegularFile, &st, mode) {
                let _ = rustix::fs::unlinkat(&parent.fd, name, AtFlags::empty());
                return Err(e);
            }
        }
        let inode = self.intern(opath, &st);
        let st = rustix::fs::fstat(&file).map_err(errno)?;
        let attr = attr(inode.nodeid, &st);
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let backing = self.choose_io(&inode, &file, writable, open_backing);
        let fh = self.register_file(req, inode, file, flags, backing);
        Ok((attr, fh))
    }

    /// Asks the kernel for the capabilities we use (FUSE init) and records
    /// which were granted.
    pub(super) fn negotiate(&mut self, config: &mut KernelConfig) -> io::Result<()> {
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
}
