//! `type = "archive"`: Kafka records into exactly-once, time-partitioned,
//! compressed files, on a local disk or in an object store (S3, Azure Blob).
//!
//! # Files
//! Events must come from a [`kafka` source](crate::sources::kafka) (they carry
//! `kafka.topic`, `kafka.partition`, `kafka.offset`; others are dropped and
//! counted). A file holds a contiguous offset range of one partition, in offset
//! order, encoded with the sink's `encoding` (default `json`) and compressed
//! (`zstd` level 3 by default, `gzip`, `none`). Its key is the `path` template
//! rendered for its first record, with `{first_offset}` its first offset; strftime
//! items render the **event time** (the record timestamp), so a replayed backlog
//! lands in the hours it belongs to.
//!
//! # Boundaries
//! A file ends after the record that brings it to `max_file_bytes` (encoded, before
//! compression), before a record whose path renders differently (another hour of
//! event time, another topic), or — the one rule of the wall clock — when it has
//! been open `max_file_secs`. The first two are functions of the records alone.
//!
//! # Exactly once
//! Each partition has a manifest (`_sluice/manifest/<topic>/<partition>`: the first
//! and last offset of its latest file). Closing a file: (1) finish the staged file,
//! (2) write the manifest durably, (3) publish the file (local: fsync, rename into
//! place, fsync the directory; object store: one PUT, or a multipart upload
//! completed only now), (4) only then resolve the batches whose records are all
//! archived — so the source commits only published records. Files are closed in
//! offset order per partition, so everything before the manifest's file is
//! published. When a partition (re)starts at offset `x` (a start, a rebalance):
//! - no manifest: nothing is archived; files start at `x`;
//! - `x <= first` of the manifest: the latest file may be unpublished; records
//!   before it are skipped (published), and the file is written again with the
//!   recorded bounds — same name, same records, replacing an earlier attempt;
//! - `x > first`: a record of the latest file was committed, so it is published;
//!   records up to its `last` are skipped.
//!
//! Hence every boundary is recorded before its file appears, whatever rule (or
//! clock) chose it, and a re-read after any crash cuts the same files: a reader
//! listing the archive sees every record exactly once. Before writing a manifest
//! the sink reads it: if another archiver of the group moved the partition past
//! this file (a rebalance this one was slow to notice), the file is discarded.
//! Staging files of a crashed attempt stay under `_sluice/` (local) or the data
//! directory (object stores); readers and `sluice archive verify` ignore `_sluice/`.

pub mod restore;
mod service;
pub mod store;
pub mod verify;
mod writer;

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::{Check, Validate};
use crate::encoding::Encoding;
use crate::event::Event;
use crate::template::Template;
use crate::topology::{ComponentError, SinkContext, Task};

/// The placeholder of a file's first offset.
pub const FIRST_OFFSET: &str = "{first_offset}";

/// Compression of archive files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ArchiveCompression {
    /// zstd level 3.
    #[default]
    Zstd,
    /// gzip level 6.
    Gzip,
    /// None.
    None,
}

/// `[sinks.NAME] type = "archive"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ArchiveSinkConfig {
    /// `file:///dir`, `s3://bucket/prefix`, `az://container/prefix`.
    pub url: String,
    /// Key template: `{field.X}`, strftime of the event time, `{first_offset}`.
    pub path: String,
    /// Compression.
    #[serde(default)]
    pub compression: ArchiveCompression,
    /// Close a file at this many encoded bytes.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// Close a file open this long.
    #[serde(default = "default_max_file_secs")]
    pub max_file_secs: u64,
    /// Object store options (credentials, endpoint, region, allow_http), verbatim.
    #[serde(default)]
    pub object_store: BTreeMap<String, crate::sinks::kafka::RdValue>,
}

fn default_max_file_bytes() -> u64 {
    256 << 20
}

fn default_max_file_secs() -> u64 {
    600
}

/// The path template split around `{first_offset}`.
#[derive(Debug, Clone)]
pub struct ArchivePath {
    before: Template,
    after: Template,
}

impl ArchivePath {
    /// Parse; the template must hold `{first_offset}` once.
    pub fn parse(path: &str) -> Result<Self, String> {
        let (before, after) = path
            .split_once(FIRST_OFFSET)
            .ok_or_else(|| format!("must contain {FIRST_OFFSET}: files are named by it"))?;
        if after.contains(FIRST_OFFSET) {
            return Err(format!("{FIRST_OFFSET} may appear only once"));
        }
        if !path.contains("{field.kafka.partition}") || !path.contains("{field.kafka.topic}") {
            return Err(
                "must contain {field.kafka.topic} and {field.kafka.partition}: a file holds one partition"
                    .into(),
            );
        }
        if path.starts_with('/') || path.split('/').any(|s| s == ".." || s == META) {
            return Err("must be relative, without `..` or `_sluice`".into());
        }
        Ok(ArchivePath {
            before: Template::parse(before, true, true)?,
            after: Template::parse(after, true, true)?,
        })
    }

    /// Whether the rendering depends on nothing but the record's topic and
    /// partition: then it is the same for every record of a partition.
    pub fn per_partition(&self) -> bool {
        let names = ["kafka.topic", "kafka.partition"];
        self.before.only_fields(&names) && self.after.only_fields(&names)
    }

    /// The rendering around the offset: records rendering alike share a file.
    pub fn render_ident(&self, ev: &Event, out: &mut String) {
        self.before.render(ev, out);
        out.push('\0');
        self.after.render(ev, out);
    }

    /// The key of a file starting with `ev` at `first`.
    pub fn render_key(&self, ev: &Event, first: i64) -> String {
        let mut s = String::new();
        self.before.render(ev, &mut s);
        s.push_str(&format!("{first:020}"));
        self.after.render(ev, &mut s);
        s
    }
}

const META: &str = store::META_DIR;

impl Validate for ArchiveSinkConfig {
    fn validate(&self, v: &mut Check<'_, '_>) {
        match url::Url::parse(&self.url) {
            Err(e) => v.error("url", format!("`{}`: {e}", self.url)),
            Ok(u) if !matches!(u.scheme(), "file" | "s3" | "s3a" | "az" | "azure" | "abfs") => v
                .error(
                    "url",
                    format!(
                        "scheme `{}` is not supported; use file://, s3:// or az://",
                        u.scheme()
                    ),
                ),
            Ok(u) if u.scheme() == "file" && !u.path().starts_with('/') => {
                v.error("url", "a file:// url needs an absolute path")
            }
            Ok(_) => {}
        }
        if let Err(e) = ArchivePath::parse(&self.path) {
            v.error("path", e);
        }
        if self.max_file_bytes == 0 {
            v.error("max_file_bytes", "must be at least 1");
        }
        if self.max_file_secs == 0 {
            v.error("max_file_secs", "must be at least 1");
        }
    }
}

/// Build the sink: open the store (creating local directories); no network I/O.
pub(super) fn build(
    config: ArchiveSinkConfig,
    encoding: Option<Encoding>,
    cx: SinkContext,
    data_dir: &std::path::Path,
) -> Result<Task, ComponentError> {
    let path = ArchivePath::parse(&config.path).map_err(ComponentError::Other)?;
    let options: Vec<(String, String)> = config
        .object_store
        .iter()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    let rt = tokio::runtime::Handle::current();
    let staging = data_dir.join("archive").join(&*cx.name);
    let store = store::Store::open(&config.url, &options, staging, rt.clone())
        .map_err(ComponentError::Other)?;
    let settings = service::Settings {
        path,
        encoding: encoding.unwrap_or(Encoding::Json),
        compression: config.compression,
        max_file_bytes: config.max_file_bytes,
        max_file_secs: config.max_file_secs,
    };
    let sink = service::ArchiveSink::new(store, settings);
    Ok(Box::pin(async move {
        let handle = rt.clone();
        tokio::task::spawn_blocking(move || sink.run(cx, handle))
            .await
            .map_err(|e| ComponentError::Other(format!("archive thread failed: {e}")))?
    }))
}
