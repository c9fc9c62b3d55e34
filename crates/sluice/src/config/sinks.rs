//! `[sinks.NAME]`: the keys every sink has (inputs, encoding, buffer,
//! acknowledgements) and the closed set of kinds.

use std::path::PathBuf;

use serde::Deserialize;
use toml_edit::{Item, Table};

use super::load::{Diagnostics, deserialize, struct_fields};

use super::{Check, Validate};
use crate::buffer::{DEFAULT_MAX_EVENTS, WhenFull};
use crate::encoding::Encoding;
use crate::sinks::archive::ArchiveSinkConfig;
use crate::sinks::file::FileSinkConfig;
use crate::sinks::forward::ForwardSinkConfig;
use crate::sinks::kafka::KafkaSinkConfig;

/// One sink.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkConfig {
    /// The user's name for it.
    pub name: String,
    /// Components feeding it.
    pub inputs: Vec<String>,
    /// Encoding (kind default when absent).
    pub encoding: Option<Encoding>,
    /// Its buffer.
    pub buffer: BufferConfig,
    /// When the sources' acknowledgements resolve (default by buffer type).
    pub acknowledgements: crate::buffer::Acknowledgements,
    /// Kind-specific settings.
    pub kind: SinkKind,
}

/// `[sinks.NAME.buffer]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// Buffer type: `memory` (default) or `disk`.
    #[serde(rename = "type", default)]
    pub kind: BufferKind,
    /// Capacity of a memory buffer, in events.
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Policy when full.
    #[serde(default)]
    pub when_full: WhenFull,
    /// Cap in bytes: a disk buffer's segment files, a memory buffer's queued
    /// events (and the request buffers they pin). Absent: the type's default, see
    /// [`BufferConfig::max_bytes`].
    #[serde(default, rename = "max_bytes")]
    pub max_bytes_set: Option<u64>,
    /// Disk buffer: parent directory (`<dir>/buffers/<sink>/`); global `data_dir` when absent.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Disk buffer: `always` (fsync every append) or `interval`.
    #[serde(default)]
    pub fsync: crate::buffer::FsyncPolicy,
    /// Disk buffer: period of `fsync = "interval"` (and of acknowledgement checkpoints).
    #[serde(default = "crate::buffer::default_fsync_interval_ms")]
    pub fsync_interval_ms: u64,
    /// Disk buffer: cap on the events per second read out of the buffer (catch-up rate).
    #[serde(default)]
    pub replay_events_per_sec: Option<u64>,
    /// Set at load, not a key: this disk buffer keeps the per-tenant accounts
    /// (with this many series at most), being the one sink the tenant routes
    /// lead to while the API runs (see `route::accounting`).
    #[serde(skip)]
    pub tenant_series: Option<usize>,
}

impl BufferConfig {
    /// `max_bytes` in force: as set, else the default of the buffer's type.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes_set.unwrap_or(match self.kind {
            BufferKind::Memory => crate::buffer::DEFAULT_MEMORY_MAX_BYTES,
            BufferKind::Disk => crate::buffer::default_max_bytes(),
        })
    }
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            kind: BufferKind::Memory,
            max_events: DEFAULT_MAX_EVENTS,
            when_full: WhenFull::Block,
            max_bytes_set: None,
            dir: None,
            fsync: crate::buffer::FsyncPolicy::default(),
            fsync_interval_ms: crate::buffer::default_fsync_interval_ms(),
            replay_events_per_sec: None,
            tenant_series: None,
        }
    }
}

fn default_max_events() -> usize {
    DEFAULT_MAX_EVENTS
}

/// Buffer types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BufferKind {
    /// Bounded in-memory queue.
    #[default]
    Memory,
    /// Write-ahead log on disk (`crate::buffer::disk`).
    Disk,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct SinkCommon {
    #[serde(rename = "type")]
    pub(super) _type: String,
    #[serde(default)]
    pub(super) inputs: Option<Vec<String>>,
    #[serde(default)]
    pub(super) encoding: Option<Encoding>,
    #[serde(default)]
    pub(super) when_full: Option<WhenFull>,
    #[serde(default)]
    pub(super) buffer: Option<BufferConfig>,
    #[serde(default)]
    pub(super) acknowledgements: Option<crate::buffer::Acknowledgements>,
}

/// Sink kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkKind {
    /// Encoded events to standard output.
    Stdout(NoOptions),
    /// Discards events (counts them delivered).
    Null(NoOptions),
    /// Files from a path template, with rotation and compression.
    File(FileSinkConfig),
    /// Records produced to Kafka topics.
    Kafka(KafkaSinkConfig),
    /// Fluentd forward protocol client.
    Forward(ForwardSinkConfig),
    /// Exactly-once archive files of Kafka records (local or object store).
    Archive(ArchiveSinkConfig),
}

/// A kind without options of its own.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
pub struct NoOptions {}

pub(super) const SINK_TYPES: &[&str] = &["stdout", "null", "file", "kafka", "forward", "archive"];

impl SinkKind {
    pub(super) fn fields(ty: &str) -> &'static [&'static str] {
        match ty {
            "file" => struct_fields::<FileSinkConfig>(),
            "kafka" => struct_fields::<KafkaSinkConfig>(),
            "forward" => struct_fields::<ForwardSinkConfig>(),
            "archive" => struct_fields::<ArchiveSinkConfig>(),
            _ => &[],
        }
    }

    pub(super) fn parse(
        ty: &str,
        item: &Item,
        path: &str,
        t: &Table,
        d: &mut Diagnostics<'_>,
    ) -> Option<Self> {
        Some(match ty {
            "stdout" => SinkKind::Stdout(NoOptions {}),
            "null" => SinkKind::Null(NoOptions {}),
            "file" => SinkKind::File(deserialize(item, path, Some(t), d)?),
            "kafka" => SinkKind::Kafka(deserialize(item, path, Some(t), d)?),
            "forward" => SinkKind::Forward(deserialize(item, path, Some(t), d)?),
            "archive" => SinkKind::Archive(deserialize(item, path, Some(t), d)?),
            _ => return None,
        })
    }

    pub(super) fn validate(&self, v: &mut Check<'_, '_>) {
        match self {
            SinkKind::File(c) => c.validate(v),
            SinkKind::Kafka(c) => c.validate(v),
            SinkKind::Forward(c) => c.validate(v),
            SinkKind::Archive(c) => c.validate(v),
            SinkKind::Stdout(_) | SinkKind::Null(_) => {}
        }
    }

    /// The kind's `type` string.
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkKind::Stdout(_) => "stdout",
            SinkKind::Null(_) => "null",
            SinkKind::File(_) => "file",
            SinkKind::Kafka(_) => "kafka",
            SinkKind::Forward(_) => "forward",
            SinkKind::Archive(_) => "archive",
        }
    }
}
