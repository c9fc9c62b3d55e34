//! Buffer settings shared by both buffer types: the sink's delivery guarantee
//! (`acknowledgements`), the disk buffer's fsync policy, their validation, and
//! building the buffer a sink's config asks for.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::disk::{self, DiskBufferHandle, DiskOptions};
use super::{BufferReceiver, BufferSender, WhenFull};
use crate::config::{BufferConfig, BufferKind, Check, SinkConfig};
use crate::metrics::Counters;

/// When a source's acknowledgement resolves (`acknowledgements` of a sink).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Acknowledgements {
    /// Once the sink delivered the batch (Kafka acks, file fsync). Default with a
    /// memory buffer.
    EndToEnd,
    /// Once the batch is appended to the disk buffer and fsynced. Default with a
    /// disk buffer; needs one.
    Disk,
    /// On receipt by the buffer (best effort; drops are counted).
    None,
}

impl Acknowledgements {
    /// The default for a buffer type.
    pub fn default_for(kind: BufferKind) -> Self {
        match kind {
            BufferKind::Memory => Acknowledgements::EndToEnd,
            BufferKind::Disk => Acknowledgements::Disk,
        }
    }
}

/// `fsync` of a disk buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// Every group of appends is fdatasync'ed before it is acknowledged.
    Always,
    /// A group of appends is fdatasync'ed as soon as the previous sync returned
    /// when a source waits on it (group commit), else within
    /// `fsync_interval_ms`.
    #[default]
    Interval,
}

/// Default `max_bytes` of a disk buffer: 1 GiB.
pub fn default_max_bytes() -> u64 {
    1 << 30
}

/// Default `fsync_interval_ms`.
pub fn default_fsync_interval_ms() -> u64 {
    100
}

/// Smallest `max_bytes` accepted for a disk buffer.
const MIN_MAX_BYTES: u64 = 1 << 20;
/// Smallest `max_bytes` accepted for a memory buffer.
const MIN_MEMORY_MAX_BYTES: u64 = 64 << 10;

/// Keys of `[sinks.NAME.buffer]` that only a disk buffer reads.
const DISK_KEYS: [&str; 4] = ["dir", "fsync", "fsync_interval_ms", "replay_events_per_sec"];

/// Pure validation of a sink's buffer and acknowledgements; returns the
/// acknowledgements in force (the type's default when absent).
pub fn validate_buffer(
    buffer: &BufferConfig,
    acknowledgements: Option<Acknowledgements>,
    table: Option<&toml_edit::Item>,
    check: &mut Check<'_, '_>,
) -> Acknowledgements {
    let acks = acknowledgements.unwrap_or(Acknowledgements::default_for(buffer.kind));
    match buffer.kind {
        BufferKind::Memory => {
            if acks == Acknowledgements::Disk {
                check.error(
                    "acknowledgements",
                    "acknowledgements = \"disk\" needs a disk buffer (buffer.type = \"disk\")",
                );
            }
            if buffer.max_bytes() < MIN_MEMORY_MAX_BYTES {
                check.error(
                    "buffer",
                    format!("buffer.max_bytes must be at least {MIN_MEMORY_MAX_BYTES}"),
                );
            }
            for key in DISK_KEYS {
                if table.and_then(|t| t.get(key)).is_some() {
                    check.error(
                        "buffer",
                        format!("buffer.{key} applies to buffer.type = \"disk\" only"),
                    );
                }
            }
        }
        BufferKind::Disk => {
            if buffer.max_bytes() < MIN_MAX_BYTES {
                check.error(
                    "buffer",
                    format!("buffer.max_bytes must be at least {MIN_MAX_BYTES}"),
                );
            }
            if buffer.fsync == FsyncPolicy::Interval && buffer.fsync_interval_ms == 0 {
                check.error(
                    "buffer",
                    "buffer.fsync_interval_ms must be at least 1 (or use fsync = \"always\")",
                );
            }
            if buffer.replay_events_per_sec == Some(0) {
                check.error(
                    "buffer",
                    "buffer.replay_events_per_sec must be at least 1 (or absent)",
                );
            }
            if table.and_then(|t| t.get("max_events")).is_some() {
                check.error(
                    "buffer",
                    "buffer.max_events applies to buffer.type = \"memory\" only",
                );
            }
            if buffer
                .dir
                .as_ref()
                .is_some_and(|d| d.as_os_str().is_empty())
            {
                check.error("buffer", "buffer.dir must not be empty");
            }
        }
    }
    acks
}

/// A sink's buffer: both halves, and for a disk buffer the handle that closes it.
pub struct SinkBuffer {
    /// Sending half, for the sources and routes feeding the sink.
    pub tx: BufferSender,
    /// Receiving half, for the sink.
    pub rx: BufferReceiver,
    /// Disk buffers only: close (sync, checkpoint, report) after the sink ended.
    pub handle: Option<DiskBufferHandle>,
}

/// A sink's buffer that cannot open.
#[derive(Debug, thiserror::Error)]
pub enum BufferOpenError {
    /// Its directory cannot be created.
    #[error(transparent)]
    Dir(#[from] crate::dirs::DirError),
    /// The disk buffer does not open.
    #[error(transparent)]
    Disk(#[from] disk::DiskBufferError),
}

/// Where a sink's disk buffer lives: `<dir or data_dir>/buffers/<sink>/`.
pub fn disk_dir(config: &SinkConfig, data_dir: &Path) -> PathBuf {
    config
        .buffer
        .dir
        .as_deref()
        .unwrap_or(data_dir)
        .join("buffers")
        .join(&config.name)
}

/// Build the buffer `config` asks for (opening and recovering a disk buffer).
pub fn for_sink(
    config: &SinkConfig,
    data_dir: &Path,
    shutdown_timeout: Duration,
    counters: Arc<Counters>,
) -> Result<SinkBuffer, BufferOpenError> {
    let b = &config.buffer;
    match b.kind {
        BufferKind::Memory => {
            let (tx, rx) = super::memory_with(
                super::Capacity {
                    events: b.max_events,
                    bytes: usize::try_from(b.max_bytes()).unwrap_or(usize::MAX),
                },
                b.when_full,
                counters,
            );
            let tx = match (config.acknowledgements, tx) {
                (Acknowledgements::None, BufferSender::Memory(m)) => BufferSender::MemoryNoAck(m),
                (_, tx) => tx,
            };
            Ok(SinkBuffer {
                tx,
                rx,
                handle: None,
            })
        }
        BufferKind::Disk => {
            let dir = disk_dir(config, data_dir);
            crate::dirs::ensure(&dir, "disk buffer")?;
            let opts = DiskOptions {
                dir,
                max_bytes: b.max_bytes(),
                when_full: b.when_full,
                fsync: match b.fsync {
                    FsyncPolicy::Always => None,
                    FsyncPolicy::Interval => {
                        Some(Duration::from_millis(b.fsync_interval_ms.max(1)))
                    }
                },
                acknowledgements: config.acknowledgements,
                replay_events_per_sec: b.replay_events_per_sec,
                drain_timeout: shutdown_timeout / 2,
                sync_interval: Duration::from_millis(b.fsync_interval_ms.max(1)),
                tenant_series: b.tenant_series,
            };
            let (tx, rx, handle) = disk::open(&config.name, opts, counters)?;
            Ok(SinkBuffer {
                tx: BufferSender::Disk(tx),
                rx: BufferReceiver::Disk(rx),
                handle: Some(handle),
            })
        }
    }
}

impl WhenFull {
    /// The config spelling.
    pub fn name(self) -> &'static str {
        match self {
            WhenFull::Block => "block",
            WhenFull::DropNewest => "drop_newest",
            WhenFull::DropOldest => "drop_oldest",
        }
    }
}
