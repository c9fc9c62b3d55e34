//! Error types, one per operation.

use std::io;
use std::path::{Path, PathBuf};

use crate::format::Corruption;

/// An I/O failure on one file of the buffer directory.
#[derive(Debug, thiserror::Error)]
#[error("failed to {op} {}", path.display())]
pub struct IoError {
    op: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

impl IoError {
    pub(crate) fn new(op: &'static str, path: PathBuf, source: io::Error) -> Self {
        IoError { op, path, source }
    }

    /// The kind of the underlying error; `StorageFull` for ENOSPC.
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }

    /// The file (or directory) the operation was on.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A failed fsync, kept by the `Wal` and returned again by every later sync
/// and append (an `io::Error` cannot be cloned).
#[derive(Debug)]
pub(crate) struct FailedSync {
    op: &'static str,
    path: PathBuf,
    kind: io::ErrorKind,
    message: String,
}

impl From<&IoError> for FailedSync {
    fn from(e: &IoError) -> Self {
        FailedSync {
            op: e.op,
            path: e.path.clone(),
            kind: e.source.kind(),
            message: e.source.to_string(),
        }
    }
}

impl FailedSync {
    pub(crate) fn to_error(&self) -> IoError {
        let message = format!(
            "{} (an earlier fsync failed; unsynced data may be lost: reopen the buffer)",
            self.message
        );
        IoError::new(
            self.op,
            self.path.clone(),
            io::Error::new(self.kind, message),
        )
    }
}

/// Why [`Wal::open`](crate::Wal::open) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Another process (or another `Wal` in this one) has the directory open.
    #[error("buffer directory is locked by another writer ({})", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The options cannot work together.
    #[error("invalid wal options: {0}")]
    InvalidOptions(String),
    /// A segment file name carries a sequence number no `Wal` writes (beyond
    /// 2^62): a file put there by something else, or crafted.
    #[error(
        "segment file {} names sequence number {seq}, beyond the largest a buffer uses ({max}); \
         move it out of the buffer directory",
        path.display()
    )]
    SeqOutOfRange {
        /// The segment file.
        path: PathBuf,
        /// The sequence number of its name.
        seq: u64,
        /// The largest valid one.
        max: u64,
    },
    /// Reading, repairing or creating a file failed.
    #[error(transparent)]
    Io(#[from] IoError),
}

/// Why an append failed; nothing of the batch was appended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// Appending would take the directory over `max_bytes`; the caller applies
    /// its policy (block and retry after acks, drop the new records, or
    /// [`drop_oldest`](crate::Wal::drop_oldest)).
    #[error("buffer full: {needed} bytes needed, {available} available")]
    Full {
        /// Bytes the batch needs (frames plus a new segment header if any).
        needed: u64,
        /// Bytes left under `max_bytes`.
        available: u64,
    },
    /// The sequence numbers are used up (2^62 records appended in the life of
    /// the directory); start a new directory.
    #[error("sequence numbers exhausted at {next_seq}")]
    SeqExhausted {
        /// The next sequence number.
        next_seq: u64,
    },
    /// One payload is larger than `max_record_bytes`.
    #[error("record of {len} bytes over the {max} byte limit")]
    TooLarge {
        /// Payload length.
        len: usize,
        /// The configured limit.
        max: u32,
    },
    /// Writing or syncing failed (`kind() == StorageFull` for ENOSPC); the
    /// partial write was cut off again, or will be on the next open.
    #[error(transparent)]
    Io(#[from] IoError),
}

/// Why an acknowledgement failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AckError {
    /// The sequence number was never handed out.
    #[error("sequence {seq} not appended yet (next is {next_seq})")]
    NotAppended {
        /// The acknowledged sequence number.
        seq: u64,
        /// The next sequence number to be appended.
        next_seq: u64,
    },
    /// The ack was recorded but deleting a fully acknowledged segment failed;
    /// the deletion is retried on the next ack.
    #[error(transparent)]
    Io(#[from] IoError),
}

/// Why reading the next record failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// A record failed its checks; the reader has moved past the rest of that
    /// segment, so the next call continues with the following one.
    #[error("corrupt record in {} at offset {offset}: {corruption}", path.display())]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Offset of the bad record.
        offset: u64,
        /// What is wrong with it.
        corruption: Corruption,
    },
    /// Reading failed; the next call retries at the same record.
    #[error(transparent)]
    Io(#[from] IoError),
}
