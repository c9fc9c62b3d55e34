//! `type = "file"`: every line appended to every file matching `include`.
//!
//! # Discovery
//! inotify is the main path ([`watch`]): each include's root directory is watched
//! (recursively when `**` or a wildcard directory lies below it), and a root that
//! does not exist yet is watched through its nearest existing ancestor, so a
//! directory created later — however deep — is seen within milliseconds. A new
//! directory is walked when it appears, since files may be created in it before
//! its own watch exists. A full rescan every `rescan_secs`, and at once after an
//! inotify queue overflow, is the safety net; every open file is also checked for
//! growth once a second.
//!
//! # Identity and rotation
//! A file is its `(device, inode)`, confirmed by a fingerprint (hash of its first
//! `fingerprint_bytes`): the same file reached by two globs or a symlink is read
//! once, a file renamed to another matching name keeps its position, and a new
//! file reusing a deleted file's inode is read from its start, not from the stale
//! offset. Reads go through the open descriptor, so:
//! - rename + create: the old file (its path now names the new one) is read to its
//!   end, then released once it has not grown for a second; the new file is read
//!   from 0. No line of either is lost.
//! - copytruncate, truncation: the file is smaller than the read offset, or its
//!   first bytes changed; it is read again from 0, with a warning naming it. (Lines
//!   written between logrotate's copy and its truncate exist nowhere: no reader
//!   can recover them. Lines we had not read before the truncate are in the copy,
//!   which is read only if `include` matches it. A line read up to its middle
//!   when the truncate came is not sent as a fragment: the copy holds it whole.)
//! - deleted while open: read to its end, then the descriptor is released so the
//!   disk space comes back.
//!
//! # Acknowledgements and checkpoints
//! One batch per read (up to 256 KiB of lines), with a tracked token. A file's
//! checkpoint advances over a batch only when the batch and all earlier ones of
//! the file resolved (delivered, or dropped by a sink's policy); an errored batch
//! makes the reader go back to the checkpoint and send those lines again.
//! Checkpoints are written at most once a second, atomically ([`checkpoint`]), and
//! at stop after waiting (up to `shutdown_timeout_secs`) for what is in flight.
//! After a kill -9 a restart resumes at the checkpoints: nothing written is lost,
//! lines sent but not yet acknowledged are sent again.
//!
//! # Lines
//! Framing as the other line sources ([`crate::framing`]); a line without its
//! newline yet is held back until the newline comes, and emitted alone only when
//! its file is released after rotation or deletion. Then `format` ([`cri`]: CRI
//! and Docker `json-file` lines), then `multiline` ([`multiline`]) turn lines
//! into events; both hold the checkpoint before an event still waiting for its end.
//!
//! # Threads
//! The loop runs on its own thread (reads, `stat`s and fsyncs are blocking calls)
//! and hands batches to the pipeline with `Handle::block_on`.

mod checkpoint;
mod cri;
mod multiline;
mod paths;
mod reader;
mod tail;
mod watch;

#[cfg(test)]
mod tests;

use std::time::Duration;

use serde::Deserialize;

pub use multiline::{Condition, MultilineConfig};

use super::default_max_line_bytes;
use crate::config::{Check, Validate};
use crate::topology::{ComponentError, SourceContext, Task};

/// Where to start in a file that has no checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    /// From its first byte.
    #[default]
    Beginning,
    /// Files present at start: from their end. Files created later are still
    /// read from their start (their first lines are new).
    End,
}

/// How a checkpoint is matched to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FingerprintMode {
    /// By `(device, inode)`, confirmed by the checksum of the first bytes.
    #[default]
    DeviceInode,
    /// As `device_inode`; a file with no checkpoint for its inode also takes the
    /// checkpoint of a vanished file with the same first bytes (a file moved to
    /// another filesystem, restored from backup).
    Checksum,
}

/// How lines are parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Each line is an event body as it is.
    #[default]
    None,
    /// Container runtime (CRI) lines: stream, time, partial lines joined,
    /// Kubernetes fields from the path.
    Cri,
    /// Docker `json-file` lines: `log` (without its newline), stream, time,
    /// partial lines joined.
    DockerJson,
}

/// `[sources.NAME] type = "file"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FileSourceConfig {
    /// Absolute path globs; `**` crosses directories.
    pub include: Vec<String>,
    /// Globs to leave out: without `/` matched against the file name.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Start of files never seen before.
    #[serde(default)]
    pub read_from: ReadFrom,
    /// Longer lines are cut to this many bytes (counted).
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// Files not modified for this long are not opened (until they change).
    #[serde(default)]
    pub ignore_older_secs: Option<u64>,
    /// Close a file read to its end and idle this long; reopened when it grows.
    #[serde(default = "default_close_idle_secs")]
    pub close_idle_secs: u64,
    /// Open descriptors at most; beyond, the least recently read are closed.
    #[serde(default = "default_max_open_files")]
    pub max_open_files: usize,
    /// Period of the full rescan (inotify is the main path).
    #[serde(default = "default_rescan_secs")]
    pub rescan_secs: u64,
    /// Identity of files across restarts.
    #[serde(default)]
    pub fingerprint: FingerprintMode,
    /// Bytes hashed for the fingerprint.
    #[serde(default = "default_fingerprint_bytes")]
    pub fingerprint_bytes: usize,
    /// Line format.
    #[serde(default)]
    pub format: Format,
    /// Join continuation lines into the event their start line began.
    #[serde(default)]
    pub multiline: Option<MultilineConfig>,
    /// Checkpoints of files not seen for this long are forgotten.
    #[serde(default = "default_checkpoint_retention_secs")]
    pub checkpoint_retention_secs: u64,
}

fn default_close_idle_secs() -> u64 {
    300
}
fn default_max_open_files() -> usize {
    1024
}
fn default_rescan_secs() -> u64 {
    10
}
fn default_fingerprint_bytes() -> usize {
    256
}
fn default_checkpoint_retention_secs() -> u64 {
    7 * 24 * 3600
}

impl Validate for FileSourceConfig {
    fn validate(&self, v: &mut Check<'_, '_>) {
        if self.include.is_empty() {
            v.error("include", "needs at least one path glob");
        }
        for p in &self.include {
            if let Err(e) = paths::check_pattern(p) {
                v.error("include", &e);
            }
        }
        for p in &self.exclude {
            // Name patterns are relative by design; only syntax is checked.
            let full = if p.starts_with('/') {
                p.clone()
            } else {
                format!("/{p}")
            };
            if let Err(e) = paths::check_pattern(&full) {
                v.error("exclude", &e);
            }
        }
        if self.max_line_bytes == 0 {
            v.error("max_line_bytes", "must be at least 1");
        }
        if self.max_open_files == 0 {
            v.error("max_open_files", "must be at least 1");
        }
        if self.rescan_secs == 0 {
            v.error("rescan_secs", "must be at least 1");
        }
        if self.fingerprint_bytes == 0 || self.fingerprint_bytes > 64 * 1024 {
            v.error("fingerprint_bytes", "must be between 1 and 65536");
        }
        if let Some(m) = &self.multiline {
            if let Err(e) = regex::bytes::Regex::new(&m.start) {
                v.error("multiline.start", format!("not a regular expression: {e}"));
            }
            if m.timeout_ms == 0 {
                v.error("multiline.timeout_ms", "must be at least 1");
            }
        }
    }
}

pub(super) fn build(config: FileSourceConfig, cx: SourceContext) -> Result<Task, ComponentError> {
    let patterns = paths::Patterns::new(&config.include, &config.exclude)
        .map_err(|e| ComponentError::Other(format!("include/exclude: {e}")))?;
    let dir = cx.data_dir.join("file_source").join(&*cx.name);
    let checkpoints = checkpoint::Checkpoints::open(&dir).map_err(ComponentError::Other)?;
    let watch =
        watch::Watch::new().map_err(|e| ComponentError::Other(format!("starting inotify: {e}")))?;
    let settings = reader::Settings {
        patterns,
        read_from: config.read_from,
        max_line_bytes: config.max_line_bytes,
        ignore_older: config.ignore_older_secs.map(Duration::from_secs),
        close_idle: Duration::from_secs(config.close_idle_secs),
        max_open_files: config.max_open_files,
        rescan: Duration::from_secs(config.rescan_secs),
        fingerprint_bytes: config.fingerprint_bytes,
        match_by_checksum: config.fingerprint == FingerprintMode::Checksum,
        retention_secs: config.checkpoint_retention_secs,
        format: config.format,
        multiline: config
            .multiline
            .as_ref()
            .map(|m| multiline::Rule::new(m, config.max_line_bytes))
            .transpose()
            .map_err(|e| ComponentError::Other(format!("multiline.start: {e}")))?,
    };
    let shutdown_timeout = Duration::from_secs(cx.reload.borrow().global.shutdown_timeout_secs);
    let waker = watch.0.waker();
    let link = reader::Link {
        out: Some(cx.out),
        name: cx.name.clone(),
        tag: cx.tag,
        counters: cx.counters,
        shutdown: cx.shutdown.clone(),
        shutdown_timeout,
        rt: tokio::runtime::Handle::current(),
    };
    let r = reader::Reader::new(settings, link, watch, checkpoints);
    let shutdown = cx.shutdown;
    let name = cx.name;
    Ok(Box::pin(async move {
        // The thread starts only once every component built.
        let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
        let span = tracing::Span::current();
        std::thread::Builder::new()
            .name(format!("file-{name}"))
            .spawn(move || {
                let _g = span.enter();
                let _ = done_tx.send(r.run());
            })
            .map_err(|e| ComponentError::io("starting the file reader thread", e))?;
        tracing::info!(checkpoints = %dir.display(), "File source started.");
        tokio::select! {
            r = &mut done_rx => return finish(r),
            _ = shutdown.cancelled() => {}
        }
        let _ = waker.try_send(watch::Wake::Nudge);
        finish(done_rx.await)
    }))
}

fn finish(
    r: Result<std::io::Result<()>, tokio::sync::oneshot::error::RecvError>,
) -> Result<(), ComponentError> {
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ComponentError::io("file source", e)),
        Err(_) => Err(ComponentError::Other("file reader thread panicked".into())),
    }
}
