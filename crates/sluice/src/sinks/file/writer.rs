//! The sink's thread: group commit of the queued batches, paths rendered per
//! event, open files, rotation, idle closing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::FileSinkConfig;
use super::stream::{OpenFile, Stream, next_rotated_name, sync_dir, with_path};
use crate::ack::AckStatus;
use crate::encoding::Encoding;
use crate::event::{Event, EventBatch};
use crate::metrics::Counters;
use crate::template::Template;
use crate::topology::{ComponentError, SinkContext};

const IDLE_CLOSE: Duration = Duration::from_secs(60);
const MAX_OPEN_FILES: usize = 256;
const WRITE_CHUNK: usize = 256 * 1024;
/// Batches taken per group commit at most.
const GROUP_MAX: usize = 256;

/// The last rendered path and what it was rendered from: tag, source, tenant,
/// second of the event time.
type PathCache = (Arc<str>, Arc<str>, Option<Arc<str>>, i64, PathBuf);

pub(super) struct Writer {
    pub(super) config: FileSinkConfig,
    pub(super) template: Template,
    pub(super) encoding: Encoding,
    pub(super) counters: Arc<Counters>,
    pub(super) files: HashMap<PathBuf, OpenFile>,
    /// Last rendered path and the event properties it was rendered for.
    pub(super) cache: Option<PathCache>,
    pub(super) scratch: String,
    pub(super) failing_since: Option<Instant>,
    /// The input is a disk buffer: failed batches are kept and re-sent, not lost.
    pub(super) durable: bool,
    /// Directories with entries (new files, new directories) not fsynced yet;
    /// kept across a failed commit, so a reopened file is still covered.
    pub(super) unsynced_dirs: Vec<PathBuf>,
    /// Directory fsyncs done (new files, new directories, rotations).
    pub(super) dir_syncs: u64,
}

impl Writer {
    pub(super) fn new(
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

    pub(super) fn run(
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
    pub(super) fn commit(&mut self, group: &mut Vec<EventBatch>) {
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

    pub(super) fn write_batch(&mut self, batch: &EventBatch) -> std::io::Result<()> {
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
    pub(super) fn same_path(&self, e: &Event) -> bool {
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

    pub(super) fn path_for(&mut self, e: &Event) -> PathBuf {
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

    pub(super) fn open(&mut self, path: PathBuf) -> std::io::Result<&mut OpenFile> {
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

    pub(super) fn flush_dirty(&mut self, sync: bool) -> std::io::Result<()> {
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
    pub(super) fn sync_dirs(&mut self) -> std::io::Result<()> {
        while let Some(d) = self.unsynced_dirs.last() {
            sync_dir(d)?;
            self.unsynced_dirs.pop();
            self.dir_syncs += 1;
        }
        Ok(())
    }

    pub(super) fn close(&mut self, path: &Path, why: &str) -> std::io::Result<()> {
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

    pub(super) fn rotate(&mut self, path: &Path) -> std::io::Result<()> {
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

    pub(super) fn housekeeping(&mut self) {
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

    pub(super) fn close_all(&mut self, why: &str) {
        let paths: Vec<PathBuf> = self.files.keys().cloned().collect();
        for p in paths {
            if let Err(e) = self.close(&p, why) {
                error!(error = %e, "Closing file failed; its last writes may be lost.");
            }
        }
    }
}
