//! Mount-time housekeeping: the owner lock, `/proc/self/mountinfo`, stale-mount
//! recovery and lazy unmount.
//!
//! Ownership is an `flock` on a lock file outside the watched directory. The kernel
//! drops the lock when its holder dies, so "locked" means "a live process owns the
//! directory", and "sluice mount present but lock free" means the owner is gone. A dead
//! owner leaves its mount behind (every access fails with `ENOTCONN`) unless
//! `auto_unmount` was on; such a mount is detached lazily before mounting again.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::MountError;

/// Name shown as mount source and subtype (`fuse.sluice` in mountinfo).
pub(crate) const FS_NAME: &str = "sluice";
/// How long a liveness probe of an existing mount may take before it counts as hung.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// `fusermount3` (or `$FUSERMOUNT_PATH`, as fuser honours it) if installed.
pub(crate) fn find_fusermount() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FUSERMOUNT_PATH") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|d| d.join("fusermount3"))
        .find(|p| p.is_file())
}

/// Every cached inode holds an `O_PATH` fd, so lift the soft fd limit to the hard one
/// (as libfuse's passthrough_hp does); the kernel may keep many inodes cached.
pub(crate) fn raise_fd_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, soft = ?limit.current,
                "Cannot raise the open-file limit; large trees may fail with EMFILE.");
        }
    }
}

/// Default directory for lock files.
pub(crate) fn default_lock_dir() -> PathBuf {
    if is_root() {
        return PathBuf::from("/run/sluice");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) => PathBuf::from(d).join("sluice"),
        None => {
            std::env::temp_dir().join(format!("sluice-{}", rustix::process::geteuid().as_raw()))
        }
    }
}

/// Held for as long as the directory is ours.
#[derive(Debug)]
pub(crate) struct OwnerLock {
    _file: File,
    path: PathBuf,
}

impl OwnerLock {
    pub(crate) fn acquire(lock_dir: &Path, dir: &Path) -> Result<OwnerLock, MountError> {
        let path = lock_dir.join(format!("capture{}.lock", escape(dir)));
        let lock_err = |source| MountError::Lock {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(lock_dir).map_err(lock_err)?;
        sweep_stale_locks(lock_dir);
        // Lock files are removed on release, so after locking check that the file is
        // still the one at `path` (a releasing owner may have unlinked it meanwhile).
        let mut file = loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(&path)
                .map_err(lock_err)?;
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    let mut text = String::new();
                    let _ = file.read_to_string(&mut text);
                    let pid = text.lines().next().and_then(|l| l.trim().parse().ok());
                    let who = pid.map_or_else(|| "unknown pid".to_string(), |p| format!("pid {p}"));
                    return Err(MountError::AlreadyMounted {
                        path: dir.to_path_buf(),
                        pid,
                        owner: format!("{who}, lock {}", path.display()),
                    });
                }
                Err(e) => return Err(lock_err(e.into())),
            }
            let locked = rustix::fs::fstat(&file).map_err(|e| lock_err(e.into()))?;
            match rustix::fs::stat(&path) {
                Ok(now) if now.st_ino == locked.st_ino && now.st_dev == locked.st_dev => {
                    break file;
                }
                _ => continue,
            }
        };
        let record = format!("{}\n{}\n", std::process::id(), dir.display());
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(record.as_bytes()))
            .map_err(lock_err)?;
        Ok(OwnerLock { _file: file, path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OwnerLock {
    fn drop(&mut self) {
        // Unlink before the lock is released (when `_file` closes right after), so a
        // waiting process never locks a file that is about to disappear.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes lock files whose owner died without releasing them (killed daemons).
fn sweep_stale_locks(lock_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(lock_dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with("capture") && name.ends_with(".lock")) {
            continue;
        }
        let Ok(file) = File::open(e.path()) else {
            continue;
        };
        // Locked means a live owner; an unlocked file is stale: unlink it while we hold
        // its lock, so nobody can be holding it as theirs.
        if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// systemd-style escaping: `/var/log/app` → `-var-log-app`, other bytes as `\xNN`.
fn escape(p: &Path) -> String {
    let mut out = String::new();
    for &b in p.as_os_str().as_bytes() {
        match b {
            b'/' => out.push('-'),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    pub(crate) id: u64,
    pub(crate) mount_point: PathBuf,
    pub(crate) fstype: String,
    pub(crate) source: String,
}

impl MountEntry {
    pub(crate) fn is_fuse(&self) -> bool {
        self.fstype == "fuse" || self.fstype.starts_with("fuse.")
    }

    pub(crate) fn is_sluice(&self) -> bool {
        self.fstype == format!("fuse.{FS_NAME}") || (self.is_fuse() && self.source == FS_NAME)
    }
}

pub(crate) fn mountinfo() -> io::Result<Vec<MountEntry>> {
    let text = std::fs::read("/proc/self/mountinfo")?;
    Ok(parse_mountinfo(&text))
}

/// Mounts whose mount point is exactly `path`, bottom to top.
pub(crate) fn mounts_at(path: &Path) -> io::Result<Vec<MountEntry>> {
    Ok(mountinfo()?
        .into_iter()
        .filter(|m| m.mount_point == path)
        .collect())
}

fn parse_mountinfo(text: &[u8]) -> Vec<MountEntry> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| {
            let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
            let sep = fields.iter().position(|f| *f == b"-")?;
            Some(MountEntry {
                id: std::str::from_utf8(fields.first()?).ok()?.parse().ok()?,
                mount_point: PathBuf::from(OsString::from_vec(unescape(fields.get(4)?))),
                fstype: String::from_utf8_lossy(&unescape(fields.get(sep + 1)?)).into_owned(),
                source: String::from_utf8_lossy(&unescape(fields.get(sep + 2)?)).into_owned(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 4 <= field.len() {
            let oct = &field[i + 1..i + 4];
            if oct.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = oct.iter().fold(0u32, |a, d| a * 8 + u32::from(d - b'0'));
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

#[derive(Debug)]
enum Probe {
    Alive,
    NotConnected,
    Failed(io::Error),
    Hung,
}

/// `statfs` the path from a helper thread so that a hung FUSE daemon cannot hang us.
/// Not `lstat`: the kernel answers that from cached attributes for up to the attribute
/// TTL after the daemon died, whereas every `statfs` is a request to the daemon.
fn probe(path: &Path) -> Probe {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let p = path.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("sluice-probe".into())
        .spawn(move || {
            let _ = tx.send(rustix::fs::statfs(&p).map_err(io::Error::from));
        });
    if let Err(e) = spawned {
        return Probe::Failed(e);
    }
    match rx.recv_timeout(PROBE_TIMEOUT) {
        Ok(Ok(_)) => Probe::Alive,
        Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOTCONN) => Probe::NotConnected,
        Ok(Err(e)) => Probe::Failed(e),
        // The helper stays blocked in the kernel until that mount is aborted.
        Err(_) => Probe::Hung,
    }
}

/// Refuses a directory inside, or containing, another capture mount.
pub(crate) fn check_not_nested(dir: &Path) -> Result<(), MountError> {
    let mounts = mountinfo().map_err(|source| MountError::StaleMount {
        path: dir.to_path_buf(),
        source,
    })?;
    let other = mounts.iter().find(|m| {
        m.is_sluice()
            && m.mount_point != dir
            && (dir.starts_with(&m.mount_point) || m.mount_point.starts_with(dir))
    });
    match other {
        Some(m) => Err(MountError::Nested {
            path: dir.to_path_buf(),
            other: m.mount_point.clone(),
        }),
        None => Ok(()),
    }
}

/// Makes sure nothing but a dead sluice mount covers `dir`, and removes those.
/// Must be called with the owner lock held (so any sluice mount there is ownerless).
pub(crate) fn clear_stale(dir: &Path) -> Result<(), MountError> {
    let stale_err = |source| MountError::StaleMount {
        path: dir.to_path_buf(),
        source,
    };
    // Stacked dead mounts are possible (several crashes in a row): peel them one by one.
    for _ in 0..16 {
        let mounts = mounts_at(dir).map_err(stale_err)?;
        let Some(top) = mounts.last() else {
            return Ok(());
        };
        if !top.is_fuse() {
            // A regular mount (tmpfs, bind, ...) is a fine thing to cover.
            return Ok(());
        }
        if !top.is_sluice() {
            return Err(MountError::ForeignMount {
                path: dir.to_path_buf(),
                fstype: top.fstype.clone(),
                source_name: top.source.clone(),
            });
        }
        match probe(dir) {
            Probe::NotConnected => {
                tracing::warn!(path = %dir.display(), mount_id = top.id,
                    "Clearing stale capture mount left by a dead run.");
                lazy_unmount(dir).map_err(stale_err)?;
            }
            Probe::Alive | Probe::Hung => {
                // Lock free but the mount is served: a sluice using another lock dir,
                // or a /dev/fuse fd passed to another process. Not ours to remove.
                return Err(MountError::AlreadyMounted {
                    path: dir.to_path_buf(),
                    pid: None,
                    owner: "served by a process not holding our lock: another lock dir, or a \
                            passed /dev/fuse fd"
                        .into(),
                });
            }
            Probe::Failed(e) => return Err(stale_err(e)),
        }
    }
    Err(stale_err(io::Error::other("too many stacked mounts")))
}

/// Unmounts the top mount at `path`; fails with `EBUSY` while it is in use.
pub(crate) fn unmount(path: &Path) -> io::Result<()> {
    unmount_with(path, false)
}

/// Detaches the top mount at `path` now; it goes away once its last user is done.
pub(crate) fn lazy_unmount(path: &Path) -> io::Result<()> {
    unmount_with(path, true)
}

fn unmount_with(path: &Path, lazy: bool) -> io::Result<()> {
    if is_root() {
        let flags = if lazy {
            rustix::mount::UnmountFlags::DETACH
        } else {
            rustix::mount::UnmountFlags::empty()
        };
        return rustix::mount::unmount(path, flags).map_err(io::Error::from);
    }
    let bin = find_fusermount()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "fusermount3 not found"))?;
    let mut cmd = Command::new(bin);
    cmd.arg("-u");
    if lazy {
        cmd.arg("-z");
    }
    let out = cmd.arg("--").arg(path).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Absolute, symlink-free form of `dir` that works even when `dir` itself is a dead
/// mountpoint (where `canonicalize` would fail with `ENOTCONN`).
pub(crate) fn resolve_dir(dir: &Path) -> io::Result<PathBuf> {
    let abs = std::path::absolute(dir)?;
    let (Some(parent), Some(name)) = (abs.parent(), abs.file_name()) else {
        return Ok(abs); // "/"
    };
    let candidate = parent.canonicalize()?.join(name);
    match std::fs::symlink_metadata(&candidate) {
        Ok(m) if m.file_type().is_symlink() => candidate.canonicalize(),
        _ => Ok(candidate),
    }
}

/// A process that had a file under the watched directory open for writing when the
/// mount was made. Its fd still points at the covered file: its writes reach the disk
/// but bypass capture until it reopens the file (restart it, or signal it to reopen).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreMountWriter {
    /// Process id.
    pub pid: u32,
    /// Its command line (NULs as spaces).
    pub command: String,
    /// The file it holds open for writing.
    pub path: PathBuf,
}

/// Scans `/proc/*/fd` for files under `dir` open for writing by other processes.
/// Only names are read (`readlink` of the fd links), never the files themselves.
pub(crate) fn writers_under(dir: &Path) -> Vec<PreMountWriter> {
    let own = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == own {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if !target.starts_with(dir) || target == dir {
                continue;
            }
            let info = p.path().join("fdinfo").join(fd.file_name());
            if !open_for_writing(&info) {
                continue;
            }
            if found
                .iter()
                .any(|w: &PreMountWriter| w.pid == pid && w.path == target)
            {
                continue;
            }
            let command = std::fs::read(p.path().join("cmdline"))
                .map(|raw| crate::identity::cmdline_to_string(&raw))
                .unwrap_or_default();
            found.push(PreMountWriter {
                pid,
                command,
                path: target,
            });
        }
    }
    found
}

fn open_for_writing(fdinfo: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(fdinfo) else {
        return false;
    };
    text.lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|v| i32::from_str_radix(v.trim(), 8).ok())
        .is_some_and(|flags| flags & libc::O_ACCMODE != libc::O_RDONLY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_parse_with_escapes() {
        let text =
            b"36 35 98:0 / /mnt/my\\040dir rw,noatime master:1 - fuse.sluice sluice rw,user_id=0\n\
                     37 35 98:0 / / rw - ext4 /dev/vda rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].id, 36);
        assert_eq!(m[0].mount_point, Path::new("/mnt/my dir"));
        assert!(m[0].is_sluice());
        assert!(!m[1].is_fuse());
        let plain = MountEntry {
            id: 1,
            mount_point: "/x".into(),
            fstype: "fuse".into(),
            source: "sluice".into(),
        };
        assert!(plain.is_sluice());
    }

    #[test]
    fn writers_holding_files_under_a_dir_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().canonicalize().unwrap();
        std::fs::write(dir.join("ro.txt"), b"").unwrap();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg("exec 3>>held.log 4<ro.txt; exec sleep 30")
            .current_dir(&dir)
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut found = Vec::new();
        for _ in 0..200 {
            found = writers_under(&dir);
            if found
                .iter()
                .any(|w| w.pid == pid && w.command.starts_with("sleep"))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let mine: Vec<_> = found.iter().filter(|w| w.pid == pid).collect();
        assert_eq!(mine.len(), 1, "{found:?}");
        assert_eq!(mine[0].path, dir.join("held.log"));
    }

    #[test]
    fn lock_names_are_unambiguous() {
        assert_eq!(escape(Path::new("/var/log/app")), "-var-log-app");
        assert_ne!(escape(Path::new("/a-b")), escape(Path::new("/a/b")));
    }

    #[test]
    fn second_lock_on_same_dir_is_refused_with_owner_pid() {
        let locks = tempfile::tempdir().unwrap();
        let dir = Path::new("/some/watched dir");
        let first = OwnerLock::acquire(locks.path(), dir).unwrap();
        match OwnerLock::acquire(locks.path(), dir) {
            Err(MountError::AlreadyMounted { pid, .. }) => {
                assert_eq!(pid, Some(std::process::id()))
            }
            other => panic!("expected AlreadyMounted, got {other:?}"),
        }
        drop(first);
        OwnerLock::acquire(locks.path(), dir).expect("free again after release");
    }
}
