//! `type = "file"`: encoded events appended to files named by a path template.
//!
//! The sink runs on its own thread (file writes and fsync are blocking calls and
//! must not stall the async runtime). It takes every batch queued at the moment,
//! writes them, flushes, and — when any of those batches is tracked by a source
//! waiting for an acknowledgement — fsyncs the touched files before resolving them
//! (group commit). At stop and on rotation every file is flushed and fsynced.
//!
//! A new file (and every directory created for it) is a new directory entry: the
//! parent directories are fsynced too before the first batch written to it is
//! acknowledged, and after a rotation's rename, so a file whose events were
//! acknowledged cannot vanish with a power loss.
//!
//! Rotation: when a file reaches `rotate_bytes` (bytes before compression) or has
//! been open `rotate_secs`, it is closed and renamed `NAME.N` (with compression,
//! `N` goes before `.gz`/`.zst`: `app.log.3.gz`), N increasing, and writing goes on
//! in a fresh `NAME`. Compressed files are gzip/zstd streams; appending to an
//! existing one adds a new member/frame, which readers accept.
//!
//! This file holds the config and the build; `writer.rs` the thread (the loop),
//! `stream.rs` the files and directories on disk.

use std::path::Path;

use serde::Deserialize;

use crate::config::{Check, Validate};
use crate::encoding::Encoding;
use crate::template::Template;
use crate::topology::{ComponentError, SinkContext, Task};

/// Compression of written files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Plain files.
    #[default]
    None,
    /// gzip stream.
    Gzip,
    /// zstd stream.
    Zstd,
}

/// `[sinks.NAME] type = "file"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FileSinkConfig {
    /// Path template: `{tag}`, `{source}`, `{tenant}`, `{field.NAME}`, strftime items.
    pub path: String,
    /// Rotate a file once this many bytes (before compression) were written to it.
    #[serde(default)]
    pub rotate_bytes: Option<u64>,
    /// Rotate a file once it has been open this long.
    #[serde(default)]
    pub rotate_secs: Option<u64>,
    /// Compression.
    #[serde(default)]
    pub compression: Compression,
}

impl Validate for FileSinkConfig {
    fn validate(&self, v: &mut Check<'_, '_>) {
        if self.path.is_empty() {
            v.error("path", "must not be empty");
        } else if let Err(e) = Template::parse(&self.path, true, true) {
            v.error("path", e);
        }
        if self.rotate_bytes == Some(0) {
            v.error(
                "rotate_bytes",
                "must be at least 1 (or absent for no size rotation)",
            );
        }
        if self.rotate_secs == Some(0) {
            v.error(
                "rotate_secs",
                "must be at least 1 (or absent for no time rotation)",
            );
        }
    }
}

pub(super) fn build(
    config: FileSinkConfig,
    encoding: Encoding,
    cx: SinkContext,
) -> Result<Task, ComponentError> {
    let template = Template::parse(&config.path, true, true).map_err(ComponentError::Other)?;
    // Fail at start, not at the first event, when the directory cannot be made
    // (the error names the path and the permission at fault); the parts below
    // a placeholder are made as events name them. Directories made here are
    // durable before anything is acknowledged: their parents are fsynced.
    let dir = Path::new(template.fixed_dir());
    let parents = missing_parents(dir);
    crate::dirs::ensure(dir, format!("file sink path {}", config.path))?;
    parents
        .iter()
        .try_for_each(|d| sync_dir(d))
        .map_err(|e| ComponentError::io(format!("creating {}", dir.display()), e))?;
    let handle = tokio::runtime::Handle::current();
    Ok(Box::pin(async move {
        let name = cx.name.to_string();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let mut w = Writer::new(config, template, encoding, cx.counters.clone());
            w.run(cx, &handle)
        })
        .await
        .map_err(|e| ComponentError::Other(format!("file sink {name} thread failed: {e}")))?
    }))
}

mod stream;
mod writer;

#[cfg(test)]
use stream::next_rotated_name;
use stream::{missing_parents, sync_dir};
use writer::Writer;

#[cfg(test)]
mod tests;
