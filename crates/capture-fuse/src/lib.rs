//! Write capture for sluice: a FUSE passthrough filesystem mounted **over** a watched
//! directory. Applications keep using the same paths; every `write` to an included file
//! reaches the real file first and is then handed, with the writer's identity, to a
//! bounded queue the daemon drains. This is the only crate that imports `fuser`; it
//! knows nothing of the daemon's event type.
//!
//! # Design
//! - [`Capture::mount`] opens the directory (`O_PATH`) *before* mounting on top of it;
//!   afterwards that fd still names the covered directory, and all backing I/O is done
//!   relative to it or to per-inode `O_PATH` fds (`openat`, `mkdirat`, `renameat2`, …,
//!   xattrs and reopen through `/proc/self/fd/N`). No absolute path into the mountpoint
//!   is ever used, so the filesystem never re-enters itself.
//! - Low-level fuser API (0.18: `&self` methods, several session threads with cloned
//!   `/dev/fuse` fds). Inodes keyed by backing `(st_dev, st_ino)` with lookup counts and
//!   `forget`; `stat` through the mount shows the backing inode numbers.
//! - Mounted with `allow_other`, `default_permissions` (the kernel checks modes, the
//!   daemon is not a confused deputy), `nodev`, `nosuid`, fsname/subtype `sluice`
//!   (`fuse.sluice` in mountinfo), and by default `auto_unmount` (fusermount3 detaches
//!   the mount if the daemon dies). 1 s entry/attr TTLs, never `keep_cache`: writers
//!   that predate the mount change files underneath. No writeback cache unless
//!   [`CaptureConfig::writeback`] asks for it (below).
//! - Handles opened for writing use `FOPEN_DIRECT_IO` (with `FUSE_DIRECT_IO_ALLOW_MMAP`,
//!   Linux 6.6+, so shared `mmap` still works; older kernels keep the page cache and
//!   log a warning). The cached write path would split a `write(2)` at every page it
//!   partly fills and ask for `security.capability` before each write; direct I/O
//!   turns one `write(2)` into one request and one capture. Read-only handles are
//!   served by kernel passthrough to the backing file where the kernel allows it
//!   ([`CaptureConfig::passthrough`], `fs/passthrough.rs`: per-inode I/O modes), else
//!   keep the page cache (readers such as `tail` stay fast).
//! - New files, directories, nodes and symlinks belong to the caller (`fchown` after
//!   creation; the group is inherited under a set-group-id directory), with the mode
//!   the caller asked for regardless of the daemon's umask.
//!
//! # Writeback mode
//! With [`CaptureConfig::writeback`] the kernel's page cache absorbs writes
//! (`FUSE_WRITEBACK_CACHE`): a 100-byte `write(2)` costs what it costs on the raw
//! directory, and the bytes reach us later in page-cache WRITEs of up to 1 MiB, flagged
//! [`CapturedWrite::from_page_cache`]. What changes:
//! - **Attribution**: the identity is the one recorded when the file handle the kernel
//!   names was opened (pid, uid, gid, names, command). One writer per file: exact.
//!   Several processes with the same file open for writing: the kernel names one of
//!   their handles (Linux: the most recently opened) for all dirty pages, so the bytes
//!   are attributed to one of the processes holding the file open for writing, not
//!   necessarily the one that wrote them. A request naming a handle we no longer know
//!   is still written, and attributed to the last opener for writing of the file.
//! - **Order and exactness**: one page-cache WRITE in flight at a time, captured in the
//!   order sent (per file: ascending offsets within a writeback pass); bytes the kernel
//!   sends again unchanged (the rest of a partly filled page) are not captured twice.
//!   Per file, the captures of appends are contiguous and complete.
//! - **Timing**: bytes are captured when written back (within ~30 s, at `fsync`, at
//!   `close`), not at `write(2)`; `fsync` returns after they are queued. The path is the
//!   file's name at writeback time, and the `time` is the writeback's.
//! - The kernel trusts its cached size: never let processes write the backing files
//!   directly (pre-mount writers) in this mode. See `fs/writeback.rs` for the details
//!   (privileges under `FUSE_HANDLE_KILLPRIV_V2`, read-write backing fds).
//!
//! # Capture invariants
//! - A [`CapturedWrite`] is queued only after the bytes reached the backing file, and
//!   holds exactly the accepted bytes at the offset where they landed (for `O_APPEND`
//!   handles the real end of file, read back from the backing fd).
//! - It is queued before the write is answered: writes to one inode are serialised by
//!   the kernel, so per-file queue order is file order.
//! - The queue never blocks a writer. Full (by count or bytes) → the capture is dropped
//!   and counted ([`CaptureStats::dropped_queue_full`]); the file is still complete.
//!   Writers do not wake the consumer either while it is busy: an empty
//!   [`CaptureReceiver`] naps 0.5 ms before asking to be woken, so under load it drains
//!   in batches and a write costs no wake-up syscall.
//! - Quota (token bucket per inode, [`CaptureConfig::quota_bytes_per_sec`]): over it the
//!   write still reaches disk, only the capture is dropped and counted, with one
//!   `tracing` line per file per 10 s.
//! - Identity is read from `/proc` for the writing thread while it is blocked in our
//!   write (so it cannot have exited): `pid` is its thread-group id, `command` its
//!   cmdline. Cached per thread: tid reuse is caught exactly (held procfs fds fail with
//!   `ESRCH`), an `exec` by the next write through `comm`, or within 50 ms through
//!   `stat`'s `startstack` when the new program has the same name. Page-cache writes use
//!   the identity taken when the handle was opened. Names come from a cache filled by a
//!   separate NSS thread.
//! - Writes from the daemon's own process are passed through uncaptured (no feedback
//!   loop) unless [`CaptureConfig::capture_own_process`] is set.
//!
//! # Limits (what is not captured, or captured differently)
//! - Processes whose fds were opened before the mount keep writing to the covered file
//!   and are not seen; they are listed at mount ([`CaptureHandle::pre_mount_writers`],
//!   and a warning) and must reopen their files (restart, or their reopen signal).
//! - Shared writable `mmap`: the bytes arrive later from the page cache, attributed to
//!   the handle's opener and flagged [`CapturedWrite::from_page_cache`]; they cover
//!   whole pages (bytes the app did not change are sent again).
//! - `O_RDWR` handles read without the page cache (no readahead): fine for logs, slow
//!   for databases kept in a watched directory (exclude does not change this).
//! - `O_DIRECT` opens are served buffered (the flag is dropped on the backing fd); data
//!   and offsets are still captured exactly.
//! - `copy_file_range`, `FICLONE` and other ioctls are refused so that copies fall back
//!   to read + write (and are captured); `fallocate` and truncation change files without
//!   a capture. Renames, unlinks and truncations are not reported as events: a captured
//!   path is the file's name at write time (a file unlinked while open keeps its last
//!   name, a hard-linked file the name it was first looked up by).
//! - A single write larger than the kernel's `max_write` (1 MiB by default) arrives as
//!   several requests, hence several captures; lines may span captures.
//! - POSIX/flock locks are handled by the kernel locally (not forwarded), which is
//!   correct as long as every accessor goes through the mount.
//! - Never put the daemon's own log file inside a watched directory.
//!
//! # Example
//! ```no_run
//! use std::time::Duration;
//! use sluice_capture_fuse::{Capture, CaptureConfig, RecvTimeoutError};
//!
//! let mut cfg = CaptureConfig::new("/var/log/app");
//! cfg.include = vec!["*.log".into()];
//! cfg.quota_bytes_per_sec = Some(1 << 20);
//! let (handle, rx) = Capture::mount(cfg)?;
//! let stop = std::sync::atomic::AtomicBool::new(false);
//! while !stop.load(std::sync::atomic::Ordering::Relaxed) {
//!     match rx.recv_timeout(Duration::from_millis(100)) {
//!         Ok(w) => println!("{} pid {} {:?}: {} bytes", w.path.display(), w.pid, w.command, w.data.len()),
//!         Err(RecvTimeoutError::Timeout) => {}
//!         Err(RecvTimeoutError::Disconnected) => break,
//!     }
//! }
//! println!("{:?}", handle.stats());
//! handle.unmount()?;
//! // Writes to files still open at unmount keep arriving until they are closed.
//! while let Ok(w) = rx.recv_timeout(Duration::from_secs(1)) {
//!     println!("late: {} bytes", w.data.len());
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

mod capture;
mod error;
mod fs;
mod identity;
mod mount;
mod payload;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub use capture::{
    CaptureCounters, CaptureReceiver, CaptureStats, CapturedWrite, RecvTimeoutError, TryRecvError,
};
pub use error::{MountError, UnmountError};
pub use mount::PreMountWriter;

use crate::capture::{PathFilter, Quota};
use crate::fs::{CaptureFs, CapturePolicy};
use crate::mount::OwnerLock;

/// What to mount and how to capture. Build with [`CaptureConfig::new`], then adjust
/// fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CaptureConfig {
    /// Directory to mount over (resolved to an absolute, symlink-free path).
    pub directory: PathBuf,
    /// Globs (globset syntax, `*` also crosses `/`) over the path relative to
    /// `directory`; empty means every file.
    pub include: Vec<String>,
    /// Globs of files never captured; wins over `include`.
    pub exclude: Vec<String>,
    /// Capture at most this many bytes per second per file; `None` disables the quota.
    pub quota_bytes_per_sec: Option<u64>,
    /// Bucket size of the quota; `None` means one second's worth.
    pub quota_burst_bytes: Option<u64>,
    /// Queue bound in captured writes.
    pub queue_capacity: usize,
    /// Queue bound in payload bytes.
    pub queue_max_bytes: usize,
    /// FUSE session threads.
    pub n_threads: usize,
    /// Let fusermount3 lazily unmount if this process dies (needs fusermount3; when it
    /// is missing and we are root, the mount is made without it and a warning logged).
    pub auto_unmount: bool,
    /// Where owner lock files live; `None` → `/run/sluice` as root, else
    /// `$XDG_RUNTIME_DIR/sluice` or `$TMPDIR/sluice-<uid>`.
    pub lock_dir: Option<PathBuf>,
    /// Also capture writes made by this process (tests, benchmarks).
    pub capture_own_process: bool,
    /// How long [`CaptureHandle::unmount`] waits for open files to be closed before it
    /// returns, leaving the detached filesystem to be served in the background.
    pub unmount_grace: Duration,
    /// Mount with the kernel's writeback cache (`FUSE_WRITEBACK_CACHE`): small writes
    /// are absorbed by the page cache and reach us as large page-cache writes, attributed
    /// to the opener of the file handle the kernel names (see "Writeback mode" above).
    /// Falls back to write-through (logged) where the kernel lacks it.
    pub writeback: bool,
    /// Serve read-only opens by kernel passthrough to the backing file
    /// (`FOPEN_PASSTHROUGH`, Linux 6.9+, needs root): such readers cost sluice nothing.
    /// Where the kernel or the privileges lack it, reads are served as before (logged).
    /// Not combined with `writeback`.
    pub passthrough: bool,
}

impl CaptureConfig {
    /// Defaults: capture everything, no quota, 65,536 writes / 256 MiB queue,
    /// `available_parallelism` clamped to 2..=8 threads, `auto_unmount` on.
    pub fn new(directory: impl Into<PathBuf>) -> Self {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
        CaptureConfig {
            directory: directory.into(),
            include: Vec::new(),
            exclude: Vec::new(),
            quota_bytes_per_sec: None,
            quota_burst_bytes: None,
            queue_capacity: 65_536,
            queue_max_bytes: 256 << 20,
            n_threads: threads,
            auto_unmount: true,
            lock_dir: None,
            capture_own_process: false,
            unmount_grace: Duration::from_secs(2),
            writeback: false,
            passthrough: true,
        }
    }
}

/// Checks an include/exclude pattern as [`Capture::mount`] will parse it, so that a
/// configuration can be validated without mounting anything.
pub fn check_glob(pattern: &str) -> Result<(), String> {
    globset::Glob::new(pattern)
        .map(drop)
        .map_err(|e| e.kind().to_string())
}

/// Entry point: `Capture::mount(config)`.
#[derive(Debug)]
pub struct Capture;

/// How an unmount ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnmountOutcome {
    /// Unmounted and the session has ended; the receiver disconnects once drained.
    Complete,
    /// Detached lazily: files were still open after the grace period. They keep being
    /// served (and captured) in the background until closed; new opens see the real
    /// directory.
    Detached,
}

impl Capture {
    /// Mounts the capture filesystem over `cfg.directory`.
    ///
    /// Clears a stale mount left there by a crashed sluice; refuses when a live one
    /// owns the directory, when another FUSE filesystem covers it, when a capture mount
    /// sits above or below it, or when `/dev/fuse` (or, not being root, `fusermount3`)
    /// is missing.
    pub fn mount(cfg: CaptureConfig) -> Result<(CaptureHandle, CaptureReceiver), MountError> {
        let invalid = |reason| MountError::InvalidConfig {
            path: cfg.directory.clone(),
            reason,
        };
        if cfg.queue_capacity == 0 || cfg.queue_max_bytes == 0 {
            return Err(invalid(
                "queue_capacity and queue_max_bytes must be positive",
            ));
        }
        if cfg.n_threads == 0 {
            return Err(invalid("n_threads must be positive"));
        }
        let quota = match cfg.quota_bytes_per_sec {
            Some(0) => return Err(invalid("quota_bytes_per_sec must be positive")),
            Some(rate) => Some(Quota {
                rate: rate as f64,
                burst: cfg.quota_burst_bytes.unwrap_or(rate).max(1) as f64,
            }),
            None => None,
        };
        let filter = PathFilter::new(&cfg.include, &cfg.exclude)?;

        let dev = Path::new("/dev/fuse");
        if !dev.exists() {
            return Err(MountError::NoFuseDevice { path: dev.into() });
        }
        let root = mount::is_root();
        let fusermount = mount::find_fusermount();
        if !root && fusermount.is_none() {
            return Err(MountError::FusermountMissing);
        }
        let auto_unmount = cfg.auto_unmount && fusermount.is_some();

        let dir = mount::resolve_dir(&cfg.directory).map_err(|source| MountError::Directory {
            path: cfg.directory.clone(),
            source,
        })?;
        if dir.parent().is_none() {
            return Err(invalid("cannot mount over /"));
        }
        if cfg.auto_unmount && !auto_unmount {
            tracing::warn!(path = %dir.display(),
                "fusermount3 not found, mounting without auto_unmount.");
        }
        let lock_dir = cfg.lock_dir.clone().unwrap_or_else(mount::default_lock_dir);
        mount::check_not_nested(&dir)?;
        let lock = OwnerLock::acquire(&lock_dir, &dir)?;
        mount::clear_stale(&dir)?;

        let pre_mount_writers = mount::writers_under(&dir);
        if !pre_mount_writers.is_empty() {
            let sample: Vec<String> = pre_mount_writers
                .iter()
                .take(5)
                .map(|w| format!("{} ({}) {}", w.pid, w.command, w.path.display()))
                .collect();
            tracing::warn!(path = %dir.display(), count = pre_mount_writers.len(),
                writers = ?sample,
                "Processes hold files open for writing under the watched directory; their \
                 writes bypass capture until they reopen them.");
        }
        let dir_err = |source| MountError::Directory {
            path: dir.clone(),
            source,
        };
        let meta = std::fs::metadata(&dir).map_err(dir_err)?;
        if !meta.is_dir() {
            return Err(MountError::NotADirectory { path: dir });
        }
        let root_fd = rustix::fs::open(
            &dir,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| dir_err(e.into()))?;

        mount::raise_fd_limit();
        let thread_err = |source| MountError::Thread {
            path: dir.clone(),
            source,
        };
        let names = identity::NameCache::new().map_err(thread_err)?;
        let counters = Arc::new(CaptureCounters::default());
        let (tx, rx) = capture::queue(cfg.queue_capacity, cfg.queue_max_bytes);
        let policy = CapturePolicy {
            filter,
            quota,
            capture_own_process: cfg.capture_own_process,
            writeback: cfg.writeback,
            passthrough: cfg.passthrough,
        };
        let filesystem = CaptureFs::new(dir.clone(), root_fd, policy, tx, counters.clone(), names)
            .map_err(dir_err)?;

        let mut options = vec![
            fuser::MountOption::FSName(mount::FS_NAME.into()),
            // As a kernel option too (fuser passes `Subtype` only to fusermount).
            fuser::MountOption::CUSTOM(format!("subtype={}", mount::FS_NAME)),
            fuser::MountOption::DefaultPermissions,
            fuser::MountOption::NoDev,
            fuser::MountOption::NoSuid,
            fuser::MountOption::RW,
        ];
        if auto_unmount {
            options.push(fuser::MountOption::AutoUnmount);
        }
        let mut config = fuser::Config::default();
        config.mount_options = options;
        config.acl = fuser::SessionACL::All;
        config.n_threads = Some(cfg.n_threads);
        config.clone_fd = true;

        let mount_err = |source| MountError::Mount {
            path: dir.clone(),
            source,
        };
        let mut session = fuser::Session::new(filesystem, &dir, &config).map_err(mount_err)?;
        let unmounter = session.unmount_callable();
        let (done_tx, done_rx) = crossbeam_channel::bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("sluice-fuse".into())
            .spawn(move || {
                let result = session.run();
                let _ = done_tx.send(());
                result
            })
            .map_err(thread_err)?;
        let mount_id = mount::mounts_at(&dir)
            .ok()
            .and_then(|m| m.iter().rev().find(|m| m.is_sluice()).map(|m| m.id));
        tracing::info!(path = %dir.display(), threads = cfg.n_threads, auto_unmount,
            lock = %lock.path().display(), "Capture filesystem mounted.");
        Ok((
            CaptureHandle {
                mountpoint: dir,
                mount_id,
                counters,
                unmounter: Some(unmounter),
                thread: Some(thread),
                done: done_rx,
                lock: Some(lock),
                unmount_grace: cfg.unmount_grace,
                pre_mount_writers,
            },
            rx,
        ))
    }
}

/// A mounted capture filesystem. Dropping it unmounts (lazily, without waiting long).
#[derive(Debug)]
pub struct CaptureHandle {
    mountpoint: PathBuf,
    mount_id: Option<u64>,
    counters: Arc<CaptureCounters>,
    unmounter: Option<fuser::SessionUnmounter>,
    thread: Option<JoinHandle<io::Result<()>>>,
    done: crossbeam_channel::Receiver<()>,
    lock: Option<OwnerLock>,
    unmount_grace: Duration,
    pre_mount_writers: Vec<PreMountWriter>,
}

impl CaptureHandle {
    /// The watched directory, which is also the mountpoint.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Shared live counters (still valid after unmount).
    pub fn counters(&self) -> Arc<CaptureCounters> {
        self.counters.clone()
    }

    /// Processes that held files under the directory open for writing when it was
    /// mounted (found by scanning `/proc/*/fd`): their writes are not captured until
    /// they reopen the files. Also logged at mount.
    pub fn pre_mount_writers(&self) -> &[PreMountWriter] {
        &self.pre_mount_writers
    }

    /// Current counter values.
    pub fn stats(&self) -> CaptureStats {
        self.counters.snapshot()
    }

    /// Unmounts: normally if nothing is open, else lazily (new opens see the real
    /// directory at once, open files keep being served until closed). Waits up to
    /// [`CaptureConfig::unmount_grace`] for the session to end.
    pub fn unmount(mut self) -> Result<UnmountOutcome, UnmountError> {
        let grace = self.unmount_grace;
        self.shutdown(grace)
    }

    fn our_mount_present(&self) -> bool {
        let Ok(mounts) = mount::mounts_at(&self.mountpoint) else {
            return false;
        };
        match self.mount_id {
            Some(id) => mounts.iter().any(|m| m.id == id),
            None => mounts.last().is_some_and(|m| m.is_sluice()),
        }
    }

    fn shutdown(&mut self, grace: Duration) -> Result<UnmountOutcome, UnmountError> {
        let Some(mut unmounter) = self.unmounter.take() else {
            return Ok(UnmountOutcome::Complete);
        };
        let unmount_err = |source| UnmountError::Unmount {
            path: self.mountpoint.clone(),
            source,
        };
        // fuser's unmount: umount(2) for a direct mount (EBUSY while files are open);
        // with auto_unmount it only closes fusermount3's socket, and fusermount3
        // unmounts only filesystems that are already dead. So: ours, then lazy.
        let first = unmounter.unmount();
        if self.our_mount_present() {
            if let Err(plain) = mount::unmount(&self.mountpoint) {
                mount::lazy_unmount(&self.mountpoint).map_err(|lazy| {
                    let first = first.err().map(|e| format!("{e}; ")).unwrap_or_default();
                    unmount_err(io::Error::other(format!("{first}{plain}; lazy: {lazy}")))
                })?;
            }
        }
        let outcome = match self.done.recv_timeout(grace) {
            Ok(()) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                let result = match self.thread.take().map(JoinHandle::join) {
                    Some(Ok(r)) => r,
                    Some(Err(_)) => Err(io::Error::other("session thread panicked")),
                    None => Ok(()),
                };
                result.map_err(|source| UnmountError::Session {
                    path: self.mountpoint.clone(),
                    source,
                })?;
                UnmountOutcome::Complete
            }
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                // Open files keep the detached filesystem alive; the session thread
                // serves them until the kernel drops the connection.
                self.thread.take();
                UnmountOutcome::Detached
            }
        };
        self.lock.take();
        tracing::info!(path = %self.mountpoint.display(), ?outcome,
            "Capture filesystem unmounted.");
        Ok(outcome)
    }
}

impl Drop for CaptureHandle {
    fn drop(&mut self) {
        if self.unmounter.is_some() {
            if let Err(e) = self.shutdown(Duration::from_millis(200)) {
                tracing::error!(error = %e, "Capture filesystem left mounted.");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_can_move_to_other_threads() {
        fn send<T: Send>() {}
        fn shared<T: Send + Sync>() {}
        send::<CaptureHandle>();
        shared::<CaptureReceiver>();
        shared::<CaptureCounters>();
        send::<CapturedWrite>();
        shared::<MountError>();
    }
}
