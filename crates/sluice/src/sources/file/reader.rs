//! The file source's loop, on its own thread: discovery, reading, rotation,
//! acknowledgements and checkpoints. See the module doc of `file` for the rules.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, info, warn};

use super::checkpoint::{Checkpoints, Entry, FileKey};
use super::paths::Patterns;
use super::tail::{SizeCheck, Tailed};
use super::watch::{Wake, Watch};
use super::{Format, ReadFrom};
use crate::ack::AckToken;
use crate::event::EventBatch;
use crate::metrics::Counters;
use crate::topology::Output;

mod discover;
mod emit;

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
    pub multiline: Option<super::multiline::Rule>,
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
    /// Open multiline events.
    joiner: super::multiline::Joiner,
    /// Lines not of the `format`, or with an unreadable time (kept raw).
    parse_errors: u64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
            joiner: super::multiline::Joiner::default(),
            parse_errors: 0,
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
            let lost = self.watch.take_rescan();
            if lost {
                info!("File events lost (inotify queue overflow or a full queue); full rescan.");
            }
            if lost || last_rescan.elapsed() >= self.s.rescan {
                self.full_scan();
                last_rescan = Instant::now();
            }
            if last_poll.elapsed() >= POLL {
                self.housekeeping();
                last_poll = Instant::now();
            }
            self.read_round();
            if self.dirty.is_empty() {
                // Every open file is read: room for those closed unread.
                self.reopen_waiting();
            }
            self.flush_quiet_events();
            if last_ckpt.elapsed() >= CHECKPOINT_EVERY {
                self.commit();
                last_ckpt = Instant::now();
            }
        }
        self.stop()
    }

    fn stop(mut self) -> std::io::Result<()> {
        self.flush_all_events();
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
            parse_errors = self.parse_errors,
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
        self.reopen_waiting();
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
        if f.rewind_if_needed() {
            // Its lines are read again from the checkpoint, which is before
            // every open event and pending partial line of the file.
            self.joiner.take(k, None);
            self.cri.rewind(k);
        }
        if f.waiting_to_retry() {
            // Housekeeping marks it again within a second.
            return false;
        }
        if f.file.is_none() {
            if f.rotated {
                self.release(k);
            }
            return false;
        }
        match f.check_size() {
            Ok(SizeCheck::Truncated) => {
                let (read_offset, size) = (f.read_offset, f.size);
                let cut = f.restart_from_zero();
                if cut == 0 {
                    warn!(path = %f.path.display(), read_offset, size,
                        "File truncated (copytruncate or rewritten); reading it again from its start.");
                } else {
                    warn!(path = %f.path.display(), read_offset, size, cut_line_bytes = cut,
                        "File truncated (copytruncate or rewritten); reading it again from its start. \
                         The line it cut before its newline is not sent: a rotated copy holds it whole.");
                }
                // The old content's open event ends with it.
                self.flush_open_event(k, false, None);
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
        // Its open multiline event, if any, is complete: no line will follow.
        self.flush_open_event(k, true, None);
        let Some(f) = self.files.get_mut(&k) else {
            return false;
        };
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
            if self.s.format != Format::None
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
