//! The file source's loop, on its own thread: discovery, reading, rotation,
//! acknowledgements and checkpoints. See the module doc of `file` for the rules.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, info, warn};

use super::checkpoint::{Checkpoints, Entry, FileKey, Fingerprint};
use super::paths::Patterns;
use super::tail::{Chunk, SizeCheck, Tailed, read_head};
use super::watch::{Wake, Watch};
use super::{Format, ReadFrom};
use crate::ack::AckToken;
use crate::event::{Event, EventBatch, Origin, now_ns};
use crate::metrics::Counters;
use crate::topology::Output;

/// Safety poll of every open file (inotify is the main path).
const POLL: Duration = Duration::from_secs(1);
/// Checkpoint writes at most this often.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// A rotated or deleted file read to its end is released once it has not grown
/// for this long (a writer may still append before it reopens its log).
const ROTATED_GRACE: Duration = Duration::from_secs(1);
/// Chunks read from one file before the others get their turn.
const CHUNKS_PER_TURN: usize = 8;
/// `seen_unix` of an unchanged checkpoint is refreshed this rarely.
const SEEN_REFRESH_SECS: u64 = 3600;

/// The source's settings, resolved from its config.
pub struct Settings {
    pub patterns: Patterns,
    pub read_from: ReadFrom,
    pub max_line_bytes: usize,
    pub ignore_older: Option<Duration>,
    pub close_idle: Duration,
    pub max_open_files: usize,
    pub rescan: Duration,
    pub fingerprint_bytes: usize,
    pub match_by_checksum: bool,
    pub retention_secs: u64,
    pub format: Format,
}

/// What the reader needs from the topology.
pub struct Link {
    /// Taken by the reader; dropped at stop so the sinks see the end.
    pub out: Option<Output>,
    pub name: Arc<str>,
    pub tag: Arc<str>,
    pub counters: Arc<Counters>,
    pub shutdown: tokio_util::sync::CancellationToken,
    pub shutdown_timeout: Duration,
    pub rt: tokio::runtime::Handle,
}

pub struct Reader {
    s: Settings,
    link: Link,
    out: Option<Output>,
    watch: Watch,
    rx: Receiver<Wake>,
    checkpoints: Checkpoints,
    files: HashMap<FileKey, Tailed>,
    by_path: HashMap<PathBuf, FileKey>,
    /// Files with bytes (maybe) to read.
    dirty: HashSet<FileKey>,
    host: Option<String>,
    first_scan: bool,
    /// Truncations noticed (copytruncate, rewrites).
    truncations: u64,
    cri: super::cri::Joiner,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn key_of(m: &std::fs::Metadata) -> FileKey {
    (m.dev(), m.ino())
}

impl Reader {
    pub fn new(
        s: Settings,
        mut link: Link,
        watch: (Watch, Receiver<Wake>),
        checkpoints: Checkpoints,
    ) -> Self {
        let out = link.out.take();
        Reader {
            s,
            link,
            out,
            watch: watch.0,
            rx: watch.1,
            checkpoints,
            files: HashMap::new(),
            by_path: HashMap::new(),
            dirty: HashSet::new(),
            host: Some(crate::host::hostname()),
            first_scan: true,
            truncations: 0,
            cri: super::cri::Joiner::default(),
        }
    }

    /// Run until the source is stopped; then wait (up to the shutdown timeout)
    /// for the acknowledgements of what was sent and write the last checkpoint.
    pub fn run(mut self) -> std::io::Result<()> {
        let cutoff = unix_now().saturating_sub(self.s.retention_secs);
        let n = self.checkpoints.expire(cutoff);
        if n > 0 {
            info!(
                forgotten = n,
                "Checkpoints of files not seen within the retention forgotten."
            );
        }
        self.watch.refresh(&self.s.patterns.roots);
        self.full_scan();
        self.first_scan = false;
        let (mut last_rescan, mut last_poll, mut last_ckpt) =
            (Instant::now(), Instant::now(), Instant::now());
        while !self.link.shutdown.is_cancelled() {
            let timeout = if self.dirty.is_empty() {
                Duration::from_millis(250)
            } else {
                Duration::ZERO
            };
            let mut paths = Vec::new();
            match self.rx.recv_timeout(timeout) {
                Ok(w) => collect(w, &mut paths),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            while let Ok(w) = self.rx.try_recv() {
                collect(w, &mut paths);
                if paths.len() > 100_000 {
                    break;
                }
            }
            if !paths.is_empty() || !self.watch.all_roots_held(&self.s.patterns.roots) {
                for dir in self.watch.refresh(&self.s.patterns.roots) {
                    self.walk_and_consider(&dir);
                }
            }
            for p in paths {
                self.on_path_event(&p);
            }
            if self.watch.take_rescan() || last_rescan.elapsed() >= self.s.rescan {
                self.full_scan();
                last_rescan = Instant::now();
            }
            if last_poll.elapsed() >= POLL {
                self.housekeeping();
                last_poll = Instant::now();
            }
            self.read_round();
            if last_ckpt.elapsed() >= CHECKPOINT_EVERY {
                self.commit();
                last_ckpt = Instant::now();
            }
        }
        self.stop()
    }

    fn stop(mut self) -> std::io::Result<()> {
        // Sinks end when the last sender is gone; acknowledgements keep coming.
        self.out = None;
        let deadline = Instant::now() + self.link.shutdown_timeout;
        loop {
            self.commit();
            if self.files.values().all(|f| f.in_flight() == 0) || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        info!(
            files = self.files.len(),
            truncations = self.truncations,
            "File source stopped."
        );
        let waiting: usize = self.files.values().map(Tailed::in_flight).sum();
        if waiting > 0 {
            warn!(
                batches = waiting,
                "Stopped with batches unacknowledged; their lines are read again at the next start."
            );
        }
        self.checkpoints.save()
    }

    /// Walk every root and consider every match; files no longer found at their
    /// path are marked rotated; every open file is checked for growth.
    fn full_scan(&mut self) {
        let mut found = Vec::new();
        for r in &self.s.patterns.roots {
            if r.dir.is_dir() {
                self.s.patterns.walk(&r.dir, &mut found);
            }
        }
        let mut seen = HashSet::new();
        for p in found {
            if let Some(k) = self.consider(&p) {
                seen.insert(k);
            }
        }
        let gone: Vec<FileKey> = self
            .files
            .keys()
            .filter(|k| !seen.contains(k))
            .copied()
            .collect();
        for k in gone {
            self.mark_rotated(k);
        }
        self.dirty.extend(self.files.keys().copied());
    }

    fn walk_and_consider(&mut self, dir: &Path) {
        let mut found = Vec::new();
        self.s.patterns.walk(dir, &mut found);
        for p in found {
            self.consider(&p);
        }
    }

    fn on_path_event(&mut self, p: &Path) {
        let meta = std::fs::metadata(p).ok();
        if let Some(&k) = self.by_path.get(p) {
            self.dirty.insert(k);
            if meta.as_ref().map(key_of) != Some(k) {
                // Renamed away, removed, or replaced by another file.
                self.mark_rotated(k);
            }
        }
        match meta {
            Some(m) if m.is_dir() && self.s.patterns.covers_dir(p) => {
                self.walk_and_consider(p);
            }
            Some(_) if self.s.patterns.matches(p) => {
                self.consider(p);
            }
            _ => {}
        }
    }

    fn mark_rotated(&mut self, k: FileKey) {
        let Some(f) = self.files.get_mut(&k) else {
            return;
        };
        if self.by_path.get(&f.path) == Some(&k) {
            self.by_path.remove(&f.path);
        }
        if !f.rotated {
            debug!(path = %f.path.display(), "File rotated or removed; reading it to its end.");
            f.rotated = true;
            if f.file.is_none() {
                // Closed (idle or over the open-file cap) and no longer at its
                // path: reopen is impossible; what it had unread is reported.
                if f.read_offset < f.size {
                    warn!(path = %f.path.display(), unread_bytes = f.size - f.read_offset,
                        "File rotated while closed; its unread bytes are lost.");
                }
            }
        }
        self.dirty.insert(k);
    }

    /// A matching path: a known file (maybe under a new name) or a new one.
    fn consider(&mut self, p: &Path) -> Option<FileKey> {
        let meta = std::fs::metadata(p).ok()?;
        if !meta.is_file() {
            return None;
        }
        let k = key_of(&meta);
        if let Some(f) = self.files.get_mut(&k) {
            if f.path != p && (f.rotated || !f.path.exists()) {
                // Renamed to another matching name: same file, keep reading.
                f.path = p.to_owned();
                f.rotated = false;
                f.origin = Arc::new(make_origin(p, self.host.clone()));
            }
            if f.path == p {
                self.by_path.insert(p.to_owned(), k);
            }
            if f.file.is_none() && meta.len() != f.read_offset {
                self.reopen(k);
            }
            self.dirty.insert(k);
            if let Some(e) = self.checkpoints.entries.get(&k)
                && unix_now().saturating_sub(e.seen_unix) > SEEN_REFRESH_SECS
            {
                let mut e = e.clone();
                e.seen_unix = unix_now();
                self.checkpoints.set(e);
            }
            return Some(k);
        }
        if let Some(age) = self.s.ignore_older {
            let old = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|e| e > age);
            if old {
                return None;
            }
        }
        self.open_new(p, &meta, k);
        Some(k)
    }

    fn open_new(&mut self, p: &Path, meta: &std::fs::Metadata, k: FileKey) {
        let file = match File::open(p) {
            Ok(f) => f,
            Err(e) => {
                warn!(path = %p.display(), error = %e, "Cannot open file.");
                return;
            }
        };
        let size = meta.len();
        let fp_n = usize::try_from(size)
            .unwrap_or(usize::MAX)
            .min(self.s.fingerprint_bytes);
        let head = read_head(&file, fp_n).ok().flatten().unwrap_or_default();
        let fingerprint = Fingerprint::of(&head);
        let offset = self.start_offset(p, &file, k, size);
        self.make_room();
        let origin = Arc::new(make_origin(p, self.host.clone()));
        let mut t = Tailed::new(
            k,
            p.to_owned(),
            origin,
            file,
            offset,
            fingerprint,
            self.s.max_line_bytes,
        );
        t.size = size;
        debug!(path = %p.display(), offset, "Reading new file.");
        self.files.insert(k, t);
        self.by_path.insert(p.to_owned(), k);
        self.dirty.insert(k);
    }

    /// Where to start in a file seen for the first time by this process.
    fn start_offset(&mut self, p: &Path, file: &File, k: FileKey, size: u64) -> u64 {
        let same = |e: &Entry| {
            let n = e.fingerprint.fp_len as usize;
            n == 0
                || read_head(file, n)
                    .ok()
                    .flatten()
                    .is_some_and(|h| Fingerprint::of(&h) == e.fingerprint)
        };
        let found = match self.checkpoints.entries.get(&k) {
            Some(e) if same(e) => Some(e.offset),
            Some(_) => {
                info!(path = %p.display(), "Inode reused by a new file; reading it from its start.");
                self.checkpoints.remove(k);
                None
            }
            None if self.s.match_by_checksum => {
                let present: HashSet<FileKey> = self.files.keys().copied().collect();
                self.checkpoints
                    .entries
                    .values()
                    .find(|e| {
                        e.fingerprint.fp_len > 0 && !present.contains(&(e.dev, e.ino)) && same(e)
                    })
                    .map(|e| e.offset)
            }
            None => None,
        };
        match found {
            Some(off) if off > size => {
                warn!(path = %p.display(), checkpoint = off, size,
                    "File is shorter than its checkpoint (truncated while stopped); reading it from its start.");
                0
            }
            Some(off) => off,
            None if self.first_scan && self.s.read_from == ReadFrom::End => size,
            None => 0,
        }
    }

    /// Keep the open descriptors within `max_open_files`: close the least
    /// recently read file that is fully read (it is reopened when it grows).
    fn make_room(&mut self) {
        let open = self.files.values().filter(|f| f.file.is_some()).count();
        if open < self.s.max_open_files {
            return;
        }
        let victim = self
            .files
            .values()
            .filter(|f| f.file.is_some() && !f.rotated)
            .min_by_key(|f| f.last_read)
            .map(|f| f.key);
        if let Some(k) = victim
            && let Some(f) = self.files.get_mut(&k)
        {
            debug!(path = %f.path.display(), "Closing least recently read file (max_open_files).");
            f.close();
        }
    }

    fn reopen(&mut self, k: FileKey) {
        let Some(path) = self.files.get(&k).map(|f| f.path.clone()) else {
            return;
        };
        let Ok(file) = File::open(&path) else { return };
        if file.metadata().map(|m| key_of(&m)).ok() != Some(k) {
            return;
        }
        self.make_room();
        if let Some(f) = self.files.get_mut(&k) {
            f.file = Some(file);
            f.last_read = Instant::now();
        }
    }

    /// Once a second: every open file is checked (a missed event costs at most
    /// this delay), idle files closed, released files dropped.
    fn housekeeping(&mut self) {
        let close_idle = self.s.close_idle;
        for f in self.files.values_mut() {
            if f.rotated {
                self.dirty.insert(f.key);
            }
            if f.file.is_some() {
                self.dirty.insert(f.key);
                if !f.rotated && f.at_end() && f.last_read.elapsed() >= close_idle {
                    debug!(path = %f.path.display(), "Closing idle file.");
                    f.close();
                }
            }
        }
    }

    /// Read every dirty file a turn; release rotated files read to their end.
    fn read_round(&mut self) {
        let keys: Vec<FileKey> = self.dirty.iter().copied().collect();
        for k in keys {
            let more = self.read_file(k);
            if !more {
                self.dirty.remove(&k);
            }
        }
    }

    /// One turn of one file; returns whether it has more to read now.
    fn read_file(&mut self, k: FileKey) -> bool {
        let Some(f) = self.files.get_mut(&k) else {
            return false;
        };
        f.collect_acks();
        f.rewind_if_needed();
        if f.file.is_none() {
            if f.rotated {
                self.release(k);
            }
            return false;
        }
        match f.check_size() {
            Ok(SizeCheck::Truncated) => {
                warn!(path = %f.path.display(), read_offset = f.read_offset, size = f.size,
                    "File truncated (copytruncate or rewritten); reading it again from its start.");
                let tail = f.restart_from_zero();
                let chunk = (!tail.is_empty()).then(|| Chunk {
                    start: 0,
                    lines: tail,
                    ack: AckToken::none(),
                    truncated: 0,
                });
                let f = &*f;
                let (origin, path) = (f.origin.clone(), f.path.clone());
                if let Some(c) = chunk {
                    self.send(k, c, &origin, &path);
                }
                self.truncations += 1;
                return true;
            }
            Ok(SizeCheck::Same) => {
                if f.rotated
                    && f.last_read.elapsed() >= ROTATED_GRACE
                    && let Some(c) = f.finish()
                {
                    let (origin, path) = (f.origin.clone(), f.path.clone());
                    self.send(k, c, &origin, &path);
                }
                if self.files.get(&k).is_some_and(|f| f.rotated) {
                    // Not released yet (grace period, acknowledgements in
                    // flight): housekeeping looks again within a second.
                    self.release(k);
                }
                return false;
            }
            Ok(SizeCheck::Grew) => {}
            Err(e) => {
                warn!(path = %f.path.display(), error = %e, "Cannot check file size.");
                return false;
            }
        }
        for _ in 0..CHUNKS_PER_TURN {
            let Some(f) = self.files.get_mut(&k) else {
                return false;
            };
            match f.read_chunk() {
                Ok(Some(c)) => {
                    let (origin, path) = (f.origin.clone(), f.path.clone());
                    self.send(k, c, &origin, &path);
                }
                Ok(None) => break,
                Err(e) => {
                    warn!(path = %f.path.display(), error = %e, "Read failed.");
                    return false;
                }
            }
        }
        let Some(f) = self.files.get_mut(&k) else {
            return false;
        };
        let _ = f.grow_fingerprint(self.s.fingerprint_bytes);
        !f.at_end()
    }

    /// Drop a rotated file once read to its end, past the grace period and
    /// fully acknowledged. Returns whether it is still held.
    fn release(&mut self, k: FileKey) -> bool {
        let Some(f) = self.files.get_mut(&k) else {
            return false;
        };
        if f.file.is_some() && f.last_read.elapsed() < ROTATED_GRACE {
            return true;
        }
        f.collect_acks();
        if f.in_flight() > 0 {
            return true;
        }
        let deleted = f
            .file
            .as_ref()
            .and_then(|d| d.metadata().ok())
            .is_some_and(|m| m.nlink() == 0);
        self.save_entry(k);
        if deleted {
            self.checkpoints.remove(k);
        }
        if let Some(f) = self.files.remove(&k) {
            debug!(path = %f.path.display(), deleted, "Rotated file read to its end; released.");
            if self.by_path.get(&f.path) == Some(&k) {
                self.by_path.remove(&f.path);
            }
            let dir = f.path.parent().unwrap_or(Path::new("/"));
            if self.s.format == Format::Cri
                && !self.files.values().any(|o| o.path.parent() == Some(dir))
            {
                // Nothing left to finish its partial lines: send them as they are.
                let names = self.names();
                let events = self.cri.flush_dir(dir, &f.origin, &names);
                if !events.is_empty()
                    && let Some(out) = &self.out
                {
                    Counters::add(&self.link.counters.events_out, events.len());
                    self.link
                        .rt
                        .block_on(out.send(EventBatch::new(events, AckToken::none())));
                }
            }
        }
        false
    }

    fn send(&mut self, k: FileKey, chunk: Chunk, origin: &Arc<Origin>, path: &Path) {
        let Chunk {
            start,
            lines,
            ack,
            truncated,
        } = chunk;
        Counters::add(&self.link.counters.truncated, truncated as usize);
        let bytes: usize = lines.iter().map(|l| l.len() + 1).sum();
        Counters::add(&self.link.counters.bytes_in, bytes);
        let time_ns = now_ns();
        let mut events = Vec::with_capacity(lines.len());
        match self.s.format {
            Format::None => {
                for body in lines {
                    let mut ev =
                        Event::new(body, time_ns, self.link.tag.clone(), self.link.name.clone());
                    ev.origin = Some(origin.clone());
                    events.push(ev);
                }
            }
            Format::Cri => {
                let names = self.names();
                let o = self.cri.chunk(k, path, start, lines, origin, &names);
                Counters::add(&self.link.counters.truncated, o.truncated as usize);
                events = o.events;
                if let (Some(at), Some(f)) = (o.hold_back, self.files.get_mut(&k)) {
                    f.hold_back(at);
                }
            }
        }
        Counters::add(&self.link.counters.events_out, events.len());
        let Some(out) = &self.out else {
            return;
        };
        let batch = EventBatch::new(events, ack);
        self.link.rt.block_on(out.send(batch));
    }

    fn names(&self) -> super::cri::Names {
        super::cri::Names {
            tag: self.link.tag.clone(),
            source: self.link.name.clone(),
            max_line_bytes: self.s.max_line_bytes,
        }
    }

    /// Move the checkpoints of files whose acknowledgements came in, and write
    /// the document if anything changed.
    fn commit(&mut self) {
        let mut moved = Vec::new();
        for (k, f) in &mut self.files {
            f.collect_acks();
            let saved = self.checkpoints.entries.get(k);
            let stale = match saved {
                Some(e) => e.offset != f.committed || e.fingerprint != f.fingerprint,
                None => f.committed > 0,
            };
            if stale {
                moved.push(*k);
            }
        }
        for k in moved {
            self.save_entry(k);
        }
        if let Err(e) = self.checkpoints.save() {
            warn!(error = %e, "Cannot write checkpoints; retrying.");
        }
    }

    fn save_entry(&mut self, k: FileKey) {
        if let Some(f) = self.files.get(&k) {
            self.checkpoints.set(Entry {
                dev: k.0,
                ino: k.1,
                fingerprint: f.fingerprint,
                offset: f.committed,
                path: f.path.clone(),
                seen_unix: unix_now(),
            });
        }
    }
}

fn collect(w: Wake, paths: &mut Vec<PathBuf>) {
    if let Wake::Paths(p) = w {
        paths.extend(p);
    }
}

fn make_origin(p: &Path, host: Option<String>) -> Origin {
    Origin {
        path: Some(p.to_string_lossy().into_owned()),
        host,
        ..Origin::default()
    }
}
