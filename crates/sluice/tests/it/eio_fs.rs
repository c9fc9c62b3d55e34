//! A tiny in-memory FUSE filesystem whose next `fsync`/`fdatasync` (or
//! directory fsync) fails with EIO once armed: the one fault a real disk gives rarely and a
//! test cannot provoke otherwise. Everything else (create, write, read,
//! truncate, rename, unlink, mkdir, readdir) works as on a normal filesystem,
//! enough for a disk buffer's WAL. Mounted in this process at a temp dir;
//! dropping [`EioMount`] unmounts it.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

/// Attributes are never cached: sizes change under the kernel's feet.
const TTL: Duration = Duration::ZERO;

struct Node {
    kind: FileType,
    data: Vec<u8>,
    children: BTreeMap<OsString, u64>,
}

struct Tree {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
}

/// Shared switches of a mount.
#[derive(Default)]
pub struct Faults {
    /// Fsyncs still to fail.
    to_fail: AtomicU64,
    failed: AtomicU64,
}

impl Faults {
    /// The next `n` file or directory fsyncs fail with EIO; later ones succeed
    /// again, as on Linux, where a writeback error is reported once (the pages
    /// may be gone, and a retried `fdatasync` returns 0).
    pub fn fail_next_fsyncs(&self, n: u64) {
        self.to_fail.store(n, SeqCst);
    }

    /// Fsyncs answered with EIO so far.
    pub fn failed_fsyncs(&self) -> u64 {
        self.failed.load(SeqCst)
    }

    fn sync(&self, reply: ReplyEmpty) {
        let fail = self
            .to_fail
            .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            self.failed.fetch_add(1, SeqCst);
            reply.error(Errno::EIO);
        } else {
            reply.ok();
        }
    }
}

struct EioFs {
    tree: Mutex<Tree>,
    faults: Arc<Faults>,
}

fn attr(ino: u64, node: &Node) -> FileAttr {
    let dir = node.kind == FileType::Directory;
    FileAttr {
        ino: INodeNo(ino),
        size: node.data.len() as u64,
        blocks: (node.data.len() as u64).div_ceil(512),
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: node.kind,
        perm: if dir { 0o755 } else { 0o644 },
        nlink: if dir { 2 } else { 1 },
        uid: unsafe { libc::geteuid() },
        gid: unsafe { libc::getegid() },
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl EioFs {
    fn tree(&self) -> MutexGuard<'_, Tree> {
        self.tree.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `name` under `parent`: its attributes, or the errno.
    fn add(&self, parent: INodeNo, name: &OsStr, kind: FileType) -> Result<FileAttr, Errno> {
        let mut t = self.tree();
        let ino = t.next_ino;
        let dir = t.nodes.get_mut(&parent.0).ok_or(Errno::ENOENT)?;
        if dir.children.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        dir.children.insert(name.to_owned(), ino);
        t.next_ino += 1;
        let node = Node {
            kind,
            data: Vec::new(),
            children: BTreeMap::new(),
        };
        let a = attr(ino, &node);
        t.nodes.insert(ino, node);
        Ok(a)
    }
}

impl Filesystem for EioFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let t = self.tree();
        let found = t.nodes.get(&parent.0).and_then(|d| d.children.get(name));
        match found.and_then(|ino| t.nodes.get(ino).map(|n| attr(*ino, n))) {
            Some(a) => reply.entry(&TTL, &a, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.tree().nodes.get(&ino.0) {
            Some(n) => reply.attr(&TTL, &attr(ino.0, n)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut t = self.tree();
        let Some(n) = t.nodes.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if let Some(size) = size {
            n.data.resize(size as usize, 0);
        }
        reply.attr(&TTL, &attr(ino.0, n));
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        match self.add(parent, name, FileType::Directory) {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut t = self.tree();
        let removed = t
            .nodes
            .get_mut(&parent.0)
            .and_then(|d| d.children.remove(name));
        match removed {
            // Open handles keep nothing of their own here: the data goes too.
            Some(ino) => {
                t.nodes.remove(&ino);
                reply.ok();
            }
            None => reply.error(Errno::ENOENT),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut t = self.tree();
        let Some(ino) = t
            .nodes
            .get_mut(&parent.0)
            .and_then(|d| d.children.remove(name))
        else {
            return reply.error(Errno::ENOENT);
        };
        let replaced = match t.nodes.get_mut(&newparent.0) {
            Some(d) => d.children.insert(newname.to_owned(), ino),
            None => return reply.error(Errno::ENOENT),
        };
        if let Some(old) = replaced {
            t.nodes.remove(&old);
        }
        reply.ok();
    }

    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // Direct I/O: every write reaches us, none waits in the page cache.
        reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let created = match self.add(parent, name, FileType::RegularFile) {
            Err(e) if e == Errno::EEXIST && flags & libc::O_EXCL == 0 => {
                let mut t = self.tree();
                let ino = t.nodes[&parent.0].children[name];
                let n = t.nodes.get_mut(&ino).expect("a child exists");
                if flags & libc::O_TRUNC != 0 {
                    n.data.clear();
                }
                Ok(attr(ino, n))
            }
            other => other,
        };
        match created {
            Ok(a) => reply.created(
                &TTL,
                &a,
                Generation(0),
                FileHandle(0),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let t = self.tree();
        let Some(n) = t.nodes.get(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let start = (offset as usize).min(n.data.len());
        let end = (start + size as usize).min(n.data.len());
        reply.data(&n.data[start..end]);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut t = self.tree();
        let Some(n) = t.nodes.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let end = offset as usize + data.len();
        if n.data.len() < end {
            n.data.resize(end, 0);
        }
        n.data[offset as usize..end].copy_from_slice(data);
        reply.written(data.len() as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.faults.sync(reply);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let t = self.tree();
        let Some(d) = t.nodes.get(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        let mut entries = vec![
            (ino.0, FileType::Directory, OsString::from(".")),
            (ino.0, FileType::Directory, OsString::from("..")),
        ];
        for (name, child) in &d.children {
            let kind = t.nodes.get(child).map_or(FileType::RegularFile, |n| n.kind);
            entries.push((*child, kind, name.clone()));
        }
        for (i, (child, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.faults.sync(reply);
    }
}

/// The filesystem mounted at a temp dir, unmounted on drop.
pub struct EioMount {
    /// Where it is mounted.
    pub path: PathBuf,
    /// Its fault switches.
    pub faults: Arc<Faults>,
    _session: fuser::BackgroundSession,
    _tmp: tempfile::TempDir,
}

impl EioMount {
    /// Mounts a fresh, empty filesystem (needs /dev/fuse and root, like the
    /// FUSE tests: see `crate::fuse`).
    pub fn new() -> EioMount {
        let tmp = tempfile::tempdir().expect("temp dir");
        let path = tmp.path().join("mnt");
        std::fs::create_dir(&path).expect("mount point");
        let root = Node {
            kind: FileType::Directory,
            data: Vec::new(),
            children: BTreeMap::new(),
        };
        let faults = Arc::new(Faults::default());
        let fs = EioFs {
            tree: Mutex::new(Tree {
                nodes: HashMap::from([(INodeNo::ROOT.0, root)]),
                next_ino: INodeNo::ROOT.0 + 1,
            }),
            faults: faults.clone(),
        };
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            fuser::MountOption::FSName("sluice-eio-test".into()),
            fuser::MountOption::RW,
        ];
        let session = fuser::spawn_mount(fs, &path, &config).expect("mount the EIO filesystem");
        EioMount {
            path,
            faults,
            _session: session,
            _tmp: tmp,
        }
    }

    /// A path inside the mount.
    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }
}
