//! `[sources.NAME]`: the keys every source has and the closed set of kinds.

use serde::Deserialize;
use toml_edit::{Item, Table};

use super::load::{Diagnostics, deserialize, struct_fields};

use super::{Check, Validate};
use crate::sources::exec::ExecSourceConfig;
use crate::sources::file::FileSourceConfig;
use crate::sources::forward::ForwardSourceConfig;
use crate::sources::fuse::FuseSourceConfig;
use crate::sources::kafka::KafkaSourceConfig;
use crate::sources::pipe::PipeSourceConfig;
use crate::sources::stdin::StdinSourceConfig;
use crate::sources::syslog::SyslogSourceConfig;

/// One source.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    /// The user's name for it.
    pub name: String,
    /// Tag given to its events (default: the source name).
    pub tag: String,
    /// Kind-specific settings.
    pub kind: SourceKind,
}

/// Keys every source has.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct SourceCommon {
    #[serde(rename = "type")]
    pub(super) _type: String,
    #[serde(default)]
    pub(super) tag: Option<String>,
}

/// Source kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceKind {
    /// Lines from standard input.
    Stdin(StdinSourceConfig),
    /// Lines from a child process's stdout (and optionally stderr).
    Exec(ExecSourceConfig),
    /// Lines from a named FIFO.
    Pipe(PipeSourceConfig),
    /// Lines appended to files matching globs (tail, rotation, checkpoints).
    File(FileSourceConfig),
    /// Writes captured through a FUSE mount over watched directories.
    Fuse(FuseSourceConfig),
    /// Fluentd forward protocol server.
    Forward(ForwardSourceConfig),
    /// Syslog server (UDP, TCP/TLS, Unix sockets).
    Syslog(SyslogSourceConfig),
    /// Kafka consumer group; offsets committed after acknowledgement.
    Kafka(KafkaSourceConfig),
}

pub(super) const SOURCE_TYPES: &[&str] = &[
    "stdin", "exec", "pipe", "file", "forward", "fuse", "syslog", "kafka",
];

impl SourceKind {
    pub(super) fn fields(ty: &str) -> &'static [&'static str] {
        match ty {
            "stdin" => struct_fields::<StdinSourceConfig>(),
            "exec" => struct_fields::<ExecSourceConfig>(),
            "pipe" => struct_fields::<PipeSourceConfig>(),
            "file" => struct_fields::<FileSourceConfig>(),
            "fuse" => struct_fields::<FuseSourceConfig>(),
            "forward" => struct_fields::<ForwardSourceConfig>(),
            "syslog" => struct_fields::<SyslogSourceConfig>(),
            "kafka" => struct_fields::<KafkaSourceConfig>(),
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
            "stdin" => SourceKind::Stdin(deserialize(item, path, Some(t), d)?),
            "exec" => SourceKind::Exec(deserialize(item, path, Some(t), d)?),
            "pipe" => SourceKind::Pipe(deserialize(item, path, Some(t), d)?),
            "file" => SourceKind::File(deserialize(item, path, Some(t), d)?),
            "fuse" => SourceKind::Fuse(deserialize(item, path, Some(t), d)?),
            "forward" => SourceKind::Forward(deserialize(item, path, Some(t), d)?),
            "syslog" => SourceKind::Syslog(deserialize(item, path, Some(t), d)?),
            "kafka" => SourceKind::Kafka(deserialize(item, path, Some(t), d)?),
            _ => return None,
        })
    }

    pub(super) fn validate(&self, v: &mut Check<'_, '_>) {
        match self {
            SourceKind::Stdin(c) => c.validate(v),
            SourceKind::Exec(c) => c.validate(v),
            SourceKind::Pipe(c) => c.validate(v),
            SourceKind::File(c) => c.validate(v),
            SourceKind::Fuse(c) => c.validate(v),
            SourceKind::Forward(c) => c.validate(v),
            SourceKind::Syslog(c) => c.validate(v),
            SourceKind::Kafka(c) => c.validate(v),
        }
    }

    /// The kind's `type` string.
    pub fn type_name(&self) -> &'static str {
        match self {
            SourceKind::Stdin(_) => "stdin",
            SourceKind::Exec(_) => "exec",
            SourceKind::Pipe(_) => "pipe",
            SourceKind::File(_) => "file",
            SourceKind::Fuse(_) => "fuse",
            SourceKind::Forward(_) => "forward",
            SourceKind::Syslog(_) => "syslog",
            SourceKind::Kafka(_) => "kafka",
        }
    }
}
