//! Errors of mounting and unmounting.

use std::io;
use std::path::PathBuf;

/// Why [`crate::Capture::mount`] failed. Nothing is left mounted when it is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    /// The configuration is unusable.
    #[error("invalid capture config for {path}: {reason}")]
    InvalidConfig {
        /// Watched directory.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// An include or exclude pattern does not parse.
    #[error("invalid glob {pattern:?}")]
    InvalidGlob {
        /// The offending pattern(s).
        pattern: String,
        /// Parser error.
        #[source]
        source: globset::Error,
    },
    /// The watched directory cannot be resolved or opened.
    #[error("cannot open watched directory {path}")]
    Directory {
        /// Watched directory.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// The watched path exists but is not a directory.
    #[error("watched path {path} is not a directory")]
    NotADirectory {
        /// Watched path.
        path: PathBuf,
    },
    /// `/dev/fuse` is missing: the kernel module is not loaded or the device is not
    /// available in this container.
    #[error("{path} is missing (modprobe fuse, or pass the device into the container)")]
    NoFuseDevice {
        /// Device path.
        path: PathBuf,
    },
    /// Not running as root and no `fusermount3` helper was found.
    #[error("not root and fusermount3 is not installed (install the fuse3 package)")]
    FusermountMissing,
    /// Another live sluice already mounts (or is mounting) this directory.
    #[error("{path} is already captured by a live sluice ({owner})")]
    AlreadyMounted {
        /// Watched directory.
        path: PathBuf,
        /// Owner's pid from its lock file, when known.
        pid: Option<u32>,
        /// Who owns it, in words (pid and lock file, or why it is unknown).
        owner: String,
    },
    /// The directory is covered by a FUSE mount that is not a dead sluice mount.
    #[error(
        "{path} is already a mountpoint of {fstype} (source {source_name:?}); refusing to cover it"
    )]
    ForeignMount {
        /// Watched directory.
        path: PathBuf,
        /// File-system type from mountinfo.
        fstype: String,
        /// Mount source from mountinfo.
        source_name: String,
    },
    /// Another capture mount sits above or below this directory: every write there
    /// would be captured twice (and served through two FUSE daemons).
    #[error("{path} overlaps the capture mount on {other}; watched directories must not nest")]
    Nested {
        /// Watched directory.
        path: PathBuf,
        /// The other capture mount.
        other: PathBuf,
    },
    /// The lock file could not be created or locked.
    #[error("cannot use lock file {path}")]
    Lock {
        /// Lock file.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// A stale mount left by a crashed run was found but could not be removed.
    #[error("cannot clear stale mount on {path}")]
    StaleMount {
        /// Watched directory.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// Starting a thread failed.
    #[error("cannot start capture thread for {path}")]
    Thread {
        /// Watched directory.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// The kernel or fusermount3 refused the mount, or the FUSE handshake failed.
    #[error("cannot mount capture filesystem on {path}")]
    Mount {
        /// Watched directory.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
}

/// Why [`crate::CaptureHandle::unmount`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnmountError {
    /// Neither a normal nor a lazy unmount succeeded; the filesystem is still mounted
    /// and still served.
    #[error("cannot unmount capture filesystem from {path}")]
    Unmount {
        /// Watched directory.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// The session thread ended with an error or panicked.
    #[error("capture session on {path} ended abnormally")]
    Session {
        /// Watched directory.
        path: PathBuf,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
}
