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

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tracing::{error, info, warn};

use crate::ack::AckStatus;
use crate::config::{Check, Validate};
use crate::encoding::Encoding;
use crate::event::{Event, EventBatch};
use crate::metrics::Counters;
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

const IDLE_CLOSE: Duration = Duration::from_secs(60);
const MAX_OPEN_FILES: usize = 256;
const WRITE_CHUNK: usize = 256 * 1024;
/// Batches taken per group commit at most.
const GROUP_MAX: usize = 256;

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

enum Stream {
    Plain(File),
    Gzip(flate2::write::GzEncoder<File>),
    Zstd(zstd::stream::write::Encoder<'static, File>),
}

/// The directories whose entries change when `dir` and its missing ancestors
/// are created (the parent of each directory to create), to be fsynced.
fn missing_parents(dir: &Path) -> Vec<PathBuf> {
    let mut parents = Vec::new();
    let mut d = dir;
    while !d.as_os_str().is_empty() && !d.exists() {
        match d.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(p) => {
                parents.push(p.to_path_buf());
                d = p;
            }
            None => {
                // A relative path's first component: its parent is `.`.
                parents.push(PathBuf::from("."));
                break;
            }
        }
    }
    parents
}

/// Creates `dir` and its missing ancestors (a failure names the path and the
/// permission at fault); returns the directories whose entries changed.
fn create_dirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let parents = missing_parents(dir);
    crate::dirs::ensure(dir, "file sink output")
        .map_err(|e| std::io::Error::new(e.kind, e.detail))?;
    Ok(parents)
}

/// Makes the creations, removals and renames in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| with_path(e, "syncing directory", dir))
}

impl Stream {
    /// Opens `path` for appending, creating it and its directories; also
    /// returns the directories whose entries changed (to fsync).
    fn open(path: &Path, compression: Compression) -> std::io::Result<(Stream, Vec<PathBuf>)> {
        let parent = path.parent().filter(|d| !d.as_os_str().is_empty());
        let mut new_entries = match parent {
            Some(dir) => create_dirs(dir)?,
            None => Vec::new(),
        };
        let file = match OpenOptions::new().create_new(true).append(true).open(path) {
            Ok(file) => {
                new_entries.push(parent.map_or_else(|| PathBuf::from("."), Path::to_path_buf));
                file
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                OpenOptions::new().append(true).open(path)?
            }
            Err(e) => return Err(e),
        };
        let stream = match compression {
            Compression::None => Stream::Plain(file),
            Compression::Gzip => Stream::Gzip(flate2::write::GzEncoder::new(
                file,
                flate2::Compression::default(),
            )),
            Compression::Zstd => Stream::Zstd(zstd::stream::write::Encoder::new(file, 3)?),
        };
        Ok((stream, new_entries))
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Plain(f) => f.write_all(buf),
            Stream::Gzip(g) => g.write_all(buf),
            Stream::Zstd(z) => z.write_all(buf),
        }
    }

    /// Push everything written so far to the file (a sync flush for compressors).
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(f) => f.flush(),
            Stream::Gzip(g) => g.flush(),
            Stream::Zstd(z) => z.flush(),
        }
    }

    fn file(&self) -> &File {
        match self {
            Stream::Plain(f) => f,
            Stream::Gzip(g) => g.get_ref(),
            Stream::Zstd(z) => z.get_ref(),
        }
    }

    /// Finish the compressed stream and fsync.
    fn close(self) -> std::io::Result<()> {
        let file = match self {
            Stream::Plain(f) => f,
            Stream::Gzip(g) => g.finish()?,
            Stream::Zstd(z) => z.finish()?,
        };
        file.sync_all()
    }
}

struct OpenFile {
    stream: Stream,
    buf: Vec<u8>,
    written: u64,
    opened: Instant,
    last_write: Instant,
    /// Written since the last flush.
    unflushed: bool,
    /// Written since the last fsync.
    dirty: bool,
}

impl OpenFile {
    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.stream.write_all(&self.buf)?;
            self.buf.clear();
        }
        self.stream.flush()
    }
}

/// The last rendered path and what it was rendered from: tag, source, tenant,
/// second of the event time.
type PathCache = (Arc<str>, Arc<str>, Option<Arc<str>>, i64, PathBuf);

struct Writer {
    config: FileSinkConfig,
    template: Template,
    encoding: Encoding,
    counters: Arc<Counters>,
    files: HashMap<PathBuf, OpenFile>,
    /// Last rendered path and the event properties it was rendered for.
    cache: Option<PathCache>,
    scratch: String,
    failing_since: Option<Instant>,
    /// The input is a disk buffer: failed batches are kept and re-sent, not lost.
    durable: bool,
    /// Directories with entries (new files, new directories) not fsynced yet;
    /// kept across a failed commit, so a reopened file is still covered.
    unsynced_dirs: Vec<PathBuf>,
    /// Directory fsyncs done (new files, new directories, rotations).
    dir_syncs: u64,
}

impl Writer {
    fn new(
        config: FileSinkConfig,
        template: Template,
        encoding: Encoding,
        counters: Arc<Counters>,
    ) -> Self {
        Writer {
            config,
            template,
            encoding,
            counters,
            files: HashMap::new(),
            cache: None,
            scratch: String::new(),
            failing_since: None,
            durable: false,
            unsynced_dirs: Vec::new(),
            dir_syncs: 0,
        }
    }

    fn run(
        &mut self,
        mut cx: SinkContext,
        handle: &tokio::runtime::Handle,
    ) -> Result<(), ComponentError> {
        let mut group: Vec<EventBatch> = Vec::new();
        let mut tick = Instant::now();
        self.durable = cx.input.is_durable();
        loop {
            enum Next {
                Batch(EventBatch),
                End,
                Tick,
                Reload,
                Abort,
            }
            let next = handle.block_on(async {
                tokio::select! {
                    biased;
                    _ = cx.abort.cancelled() => Next::Abort,
                    b = cx.input.recv() => b.map_or(Next::End, Next::Batch),
                    r = cx.reload.changed() => if r.is_ok() { Next::Reload } else { Next::Tick },
                    _ = tokio::time::sleep(Duration::from_secs(1)) => Next::Tick,
                }
            });
            match next {
                Next::Batch(b) => {
                    group.push(b);
                    while group.len() < GROUP_MAX {
                        match cx.input.try_recv() {
                            Some(b) => group.push(b),
                            None => break,
                        }
                    }
                    self.commit(&mut group);
                }
                Next::End => {
                    self.close_all("stop");
                    return Ok(());
                }
                Next::Abort => {
                    self.close_all("abort");
                    return Ok(());
                }
                Next::Reload => {
                    self.close_all("reload");
                    info!("Files reopened after reload.");
                }
                Next::Tick => {}
            }
            if tick.elapsed() >= Duration::from_secs(1) {
                tick = Instant::now();
                self.housekeeping();
            }
        }
    }

    /// Write a group of batches, make them as durable as their sources need, and
    /// resolve their acknowledgements.
    fn commit(&mut self, group: &mut Vec<EventBatch>) {
        let needs_sync = group.iter().any(|b| b.ack.is_tracked());
        let mut result = Ok(());
        let mut events = 0;
        for batch in group.iter() {
            events += batch.len();
            if result.is_ok() {
                result = self.write_batch(batch);
            }
        }
        if result.is_ok() {
            result = self.flush_dirty(needs_sync);
        }
        match result {
            Ok(()) => {
                Counters::add(&self.counters.events_out, events);
                if self.failing_since.take().is_some() {
                    info!("Writing works again.");
                }
                for b in group.drain(..) {
                    b.ack.resolve(AckStatus::Delivered);
                }
            }
            Err(e) => {
                Counters::add(&self.counters.errors, events);
                if self
                    .failing_since
                    .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
                {
                    if self.durable {
                        warn!(error = %e, events, "Writing failed; the events stay in the disk buffer and are retried.");
                    } else {
                        error!(error = %e, events, "Writing failed; events lost for this sink.");
                    }
                    self.failing_since = Some(Instant::now());
                }
                // Drop the files: the next write reopens them.
                self.files.clear();
                for b in group.drain(..) {
                    b.ack.resolve(AckStatus::Errored);
                }
            }
        }
    }

    fn write_batch(&mut self, batch: &EventBatch) -> std::io::Result<()> {
        let encoding = self.encoding;
        let rotate_bytes = self.config.rotate_bytes.unwrap_or(u64::MAX);
        let events = &batch.events[..];
        let mut i = 0;
        // Runs of events going to the same file share one lookup: hashing a path
        // per event would cost more than encoding it.
        while i < events.len() {
            let path = self.path_for(&events[i]);
            let mut end = i + 1;
            while end < events.len() && self.same_path(&events[end]) {
                end += 1;
            }
            let file = match self.files.get_mut(&path) {
                Some(f) => f,
                None => self.open(path.clone())?,
            };
            let mut next = end;
            for (k, event) in events[i..end].iter().enumerate() {
                encoding.encode(event, &mut file.buf, true);
                if file.buf.len() >= WRITE_CHUNK {
                    file.written += file.buf.len() as u64;
                    file.stream.write_all(&file.buf)?;
                    file.buf.clear();
                }
                file.unflushed = true;
                file.dirty = true;
                if file.written + file.buf.len() as u64 >= rotate_bytes {
                    next = i + k + 1;
                    break;
                }
            }
            if next < end || file.written + file.buf.len() as u64 >= rotate_bytes {
                self.rotate(&path)?;
            }
            i = next;
        }
        Ok(())
    }

    /// Whether `e` renders to the same path as the last rendered event, decided
    /// without rendering.
    fn same_path(&self, e: &Event) -> bool {
        if self.template.uses_fields() {
            return false;
        }
        let Some((tag, src, tenant, sec, _)) = &self.cache else {
            return false;
        };
        if self.template.is_static() {
            return true;
        }
        (Arc::ptr_eq(tag, &e.tag) || **tag == *e.tag)
            && (Arc::ptr_eq(src, &e.source) || **src == *e.source)
            && tenant.as_deref() == e.tenant.as_deref()
            && (!self.template.uses_time() || *sec == e.time_ns.div_euclid(1_000_000_000))
    }

    fn path_for(&mut self, e: &Event) -> PathBuf {
        if let (true, Some((.., path))) = (self.same_path(e), &self.cache) {
            return path.clone();
        }
        self.scratch.clear();
        self.template.render(e, &mut self.scratch);
        let path = PathBuf::from(&self.scratch);
        let second = e.time_ns.div_euclid(1_000_000_000);
        self.cache = Some((
            e.tag.clone(),
            e.source.clone(),
            e.tenant.clone(),
            second,
            path.clone(),
        ));
        path
    }

    fn open(&mut self, path: PathBuf) -> std::io::Result<&mut OpenFile> {
        if self.files.len() >= MAX_OPEN_FILES {
            let oldest = self
                .files
                .iter()
                .min_by_key(|(_, f)| f.last_write)
                .map(|(p, _)| p.clone());
            if let Some(p) = oldest {
                self.close(&p, "too many open files")?;
            }
        }
        let (stream, new_entries) = Stream::open(&path, self.config.compression).map_err(|e| {
            std::io::Error::new(e.kind(), format!("opening {}: {e}", path.display()))
        })?;
        let written = stream.file().metadata().map(|m| m.len()).unwrap_or(0);
        let now = Instant::now();
        let f = OpenFile {
            stream,
            buf: Vec::with_capacity(WRITE_CHUNK),
            written,
            opened: now,
            last_write: now,
            unflushed: false,
            dirty: false,
        };
        for d in new_entries {
            if !self.unsynced_dirs.contains(&d) {
                self.unsynced_dirs.push(d);
            }
        }
        Ok(self.files.entry(path).or_insert(f))
    }

    fn flush_dirty(&mut self, sync: bool) -> std::io::Result<()> {
        let now = Instant::now();
        for (path, f) in self.files.iter_mut().filter(|(_, f)| f.dirty) {
            if std::mem::take(&mut f.unflushed) {
                f.written += f.buf.len() as u64;
                f.flush().map_err(|e| with_path(e, "writing", path))?;
                f.last_write = now;
            }
            if sync {
                f.stream
                    .file()
                    .sync_data()
                    .map_err(|e| with_path(e, "syncing", path))?;
                f.dirty = false;
            }
        }
        if sync {
            // Data first, then the entries naming it.
            self.sync_dirs()?;
        }
        Ok(())
    }

    /// Fsyncs the directories with new entries; those that fail stay listed.
    fn sync_dirs(&mut self) -> std::io::Result<()> {
        while let Some(d) = self.unsynced_dirs.last() {
            sync_dir(d)?;
            self.unsynced_dirs.pop();
            self.dir_syncs += 1;
        }
        Ok(())
    }

    fn close(&mut self, path: &Path, why: &str) -> std::io::Result<()> {
        if let Some(mut f) = self.files.remove(path) {
            f.written += f.buf.len() as u64;
            f.flush().map_err(|e| with_path(e, "writing", path))?;
            f.stream
                .close()
                .map_err(|e| with_path(e, "closing", path))?;
            self.sync_dirs()?;
            tracing::debug!(path = %path.display(), why, "File closed.");
        }
        Ok(())
    }

    fn rotate(&mut self, path: &Path) -> std::io::Result<()> {
        self.close(path, "rotation")?;
        let target = next_rotated_name(path, self.config.compression);
        std::fs::rename(path, &target).map_err(|e| with_path(e, "rotating", path))?;
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            sync_dir(dir)?;
            self.dir_syncs += 1;
        }
        info!(from = %path.display(), to = %target.display(), "File rotated.");
        Ok(())
    }

    fn housekeeping(&mut self) {
        let now = Instant::now();
        let max_age = self.config.rotate_secs.map(Duration::from_secs);
        let paths: Vec<(PathBuf, bool)> = self
            .files
            .iter()
            .filter_map(|(p, f)| {
                if max_age.is_some_and(|a| now.duration_since(f.opened) >= a) {
                    Some((p.clone(), true))
                } else if now.duration_since(f.last_write) >= IDLE_CLOSE {
                    Some((p.clone(), false))
                } else {
                    None
                }
            })
            .collect();
        for (p, rotate) in paths {
            let r = if rotate {
                self.rotate(&p)
            } else {
                self.close(&p, "idle")
            };
            if let Err(e) = r {
                warn!(error = %e, "File housekeeping failed.");
            }
        }
    }

    fn close_all(&mut self, why: &str) {
        let paths: Vec<PathBuf> = self.files.keys().cloned().collect();
        for p in paths {
            if let Err(e) = self.close(&p, why) {
                error!(error = %e, "Closing file failed; its last writes may be lost.");
            }
        }
    }
}

fn with_path(e: std::io::Error, what: &str, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

fn next_rotated_name(path: &Path, compression: Compression) -> PathBuf {
    let s = path.to_string_lossy();
    let ext = match compression {
        Compression::Gzip if s.ends_with(".gz") => ".gz",
        Compression::Zstd if s.ends_with(".zst") => ".zst",
        _ => "",
    };
    let stem = &s[..s.len() - ext.len()];
    (1u64..)
        .map(|n| PathBuf::from(format!("{stem}.{n}{ext}")))
        .find(|p| !p.exists())
        .expect("an unused rotation number exists")
}

#[cfg(test)]
mod tests;
