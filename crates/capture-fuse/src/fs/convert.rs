//! Conversions between backing-filesystem values and FUSE replies.

use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo, TimeOrNow};
use rustix::fs::{OFlags, Stat, Timespec};

pub(super) fn errno(e: rustix::io::Errno) -> Errno {
    Errno::from_i32(e.raw_os_error())
}

/// `/proc/self/fd/N`: reopens (or names) what an `O_PATH` fd refers to.
pub(super) fn proc_path(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Flags for a backing open of a FUSE open: never create here, never follow (we open
/// through `/proc/self/fd`), no direct I/O on our unaligned buffers, close-on-exec.
pub(super) fn open_flags(flags: i32) -> OFlags {
    let strip = OFlags::CREATE | OFlags::EXCL | OFlags::NOCTTY | OFlags::NOFOLLOW | OFlags::DIRECT;
    (OFlags::from_bits_retain(flags as u32) - strip) | OFlags::CLOEXEC
}

pub(super) fn timespec(t: Option<TimeOrNow>) -> Timespec {
    match t {
        None => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(t)) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Timespec {
                tv_sec: d.as_secs() as i64,
                tv_nsec: d.subsec_nanos().into(),
            },
            Err(before) => {
                let d = before.duration();
                let (mut sec, mut nsec) = (-(d.as_secs() as i64), -i64::from(d.subsec_nanos()));
                if nsec < 0 {
                    sec -= 1;
                    nsec += 1_000_000_000;
                }
                Timespec {
                    tv_sec: sec,
                    tv_nsec: nsec as _,
                }
            }
        },
    }
}

pub(super) fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

pub(super) fn time(sec: i64, nsec: u64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec)
    }
}

/// Backing identity `(st_dev, st_ino)`.
// The casts are identities on x86_64 but not for every target's `Stat` layout.
#[allow(clippy::unnecessary_cast)]
pub(super) fn key_of(st: &Stat) -> (u64, u64) {
    (st.st_dev as u64, st.st_ino as u64)
}

#[allow(clippy::unnecessary_cast)]
pub(super) fn attr(nodeid: u64, st: &Stat) -> FileAttr {
    FileAttr {
        ino: INodeNo(nodeid),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: time(st.st_atime as i64, st.st_atime_nsec as u64),
        mtime: time(st.st_mtime as i64, st.st_mtime_nsec as u64),
        ctime: time(st.st_ctime as i64, st.st_ctime_nsec as u64),
        crtime: UNIX_EPOCH,
        kind: kind_of(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

pub(super) fn dir_kind(t: rustix::fs::FileType) -> Option<FileType> {
    use rustix::fs::FileType as T;
    Some(match t {
        T::RegularFile => FileType::RegularFile,
        T::Directory => FileType::Directory,
        T::Symlink => FileType::Symlink,
        T::Fifo => FileType::NamedPipe,
        T::Socket => FileType::Socket,
        T::CharacterDevice => FileType::CharDevice,
        T::BlockDevice => FileType::BlockDevice,
        T::Unknown => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backing_open_keeps_append_and_trunc_but_never_creates_or_follows() {
        let f = open_flags(
            libc::O_WRONLY
                | libc::O_APPEND
                | libc::O_TRUNC
                | libc::O_CREAT
                | libc::O_EXCL
                | libc::O_NOCTTY
                | libc::O_NOFOLLOW
                | libc::O_DIRECT,
        );
        assert!(f.contains(OFlags::WRONLY | OFlags::APPEND | OFlags::TRUNC | OFlags::CLOEXEC));
        for gone in [
            OFlags::CREATE,
            OFlags::EXCL,
            OFlags::NOCTTY,
            OFlags::NOFOLLOW,
            OFlags::DIRECT,
        ] {
            assert!(!f.contains(gone), "{gone:?} kept");
        }
    }

    #[test]
    fn times_convert_both_ways_including_before_the_epoch() {
        assert_eq!(timespec(None).tv_nsec, rustix::fs::UTIME_OMIT);
        assert_eq!(
            timespec(Some(TimeOrNow::Now)).tv_nsec,
            rustix::fs::UTIME_NOW
        );
        let t = UNIX_EPOCH + Duration::new(5, 7);
        let ts = timespec(Some(TimeOrNow::SpecificTime(t)));
        assert_eq!((ts.tv_sec, ts.tv_nsec), (5, 7));
        let before = UNIX_EPOCH - Duration::new(1, 250_000_000);
        let ts = timespec(Some(TimeOrNow::SpecificTime(before)));
        assert_eq!((ts.tv_sec, ts.tv_nsec), (-2, 750_000_000));
        assert_eq!(time(-2, 750_000_000), before);
        assert_eq!(time(5, 7), t);
    }

    #[test]
    fn file_types_follow_the_mode() {
        assert_eq!(kind_of(libc::S_IFDIR | 0o755), FileType::Directory);
        assert_eq!(kind_of(libc::S_IFLNK | 0o777), FileType::Symlink);
        assert_eq!(kind_of(libc::S_IFIFO), FileType::NamedPipe);
        assert_eq!(kind_of(libc::S_IFREG | 0o644), FileType::RegularFile);
    }
}
