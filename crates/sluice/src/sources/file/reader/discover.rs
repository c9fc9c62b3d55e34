//! Finding files and opening them: scans, inotify paths, renames, where a new
//! file starts (its checkpoint, or `read_from`), and the open-descriptor cap.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, info, warn};

use super::super::checkpoint::{Entry, FileKey, Fingerprint};
use super::super::tail::{Tailed, read_head};
use super::super::{Format, ReadFrom};
use super::{Reader, SEEN_REFRESH_SECS, unix_now};
use crate::event::Origin;

impl Reader {
    /// Walk every root and consider every match; files no longer found at their
    /// path are marked rotated; every open file is checked for growth.
    pub(super) fn full_scan(&mut self) {
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

    pub(super) fn walk_and_consider(&mut self, dir: &Path) {
        let mut found = Vec::new();
        self.s.patterns.walk(dir, &mut found);
        for p in found {
            self.consider(&p);
        }
    }

    pub(super) fn on_path_event(&mut self, p: &Path) {
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

    pub(super) fn mark_rotated(&mut self, k: FileKey) {
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
    pub(super) fn consider(&mut self, p: &Path) -> Option<FileKey> {
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
                if f.at_end() {
                    self.reopen(k);
                } else {
                    // Closed unread over the cap: [`Self::reopen_waiting`] opens
                    // it in the place of a file read to its end. Reopening it
                    // here would close another unread one (a scan of more new
                    // files than the cap would only shuffle descriptors).
                    f.size = f.size.max(meta.len());
                }
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

    pub(super) fn open_new(&mut self, p: &Path, meta: &std::fs::Metadata, k: FileKey) {
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
        t.exact_starts = self.s.multiline.is_some() || self.s.format != Format::None;
        debug!(path = %p.display(), offset, "Reading new file.");
        self.files.insert(k, t);
        self.by_path.insert(p.to_owned(), k);
        self.dirty.insert(k);
    }

    /// Where to start in a file seen for the first time by this process.
    pub(super) fn start_offset(&mut self, p: &Path, file: &File, k: FileKey, size: u64) -> u64 {
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
    /// recently read file, preferring one read to its end (it is reopened when it
    /// grows; one with unread bytes is reopened by [`Self::reopen_waiting`]).
    pub(super) fn make_room(&mut self) {
        let open = self.files.values().filter(|f| f.file.is_some()).count();
        if open < self.s.max_open_files {
            return;
        }
        let victim = self
            .files
            .values()
            .filter(|f| f.file.is_some() && !f.rotated)
            .min_by_key(|f| (!f.at_end(), f.last_read))
            .map(|f| f.key);
        if let Some(k) = victim
            && let Some(f) = self.files.get_mut(&k)
        {
            debug!(path = %f.path.display(), "Closing least recently read file (max_open_files).");
            f.close();
        }
    }

    /// Files closed over `max_open_files` before they were read to their end
    /// (more new files than the cap at once) are opened again, in the place of
    /// files read to their end, so none waits for an event or a rescan.
    pub(super) fn reopen_waiting(&mut self) {
        let mut waiting: Vec<_> = self
            .files
            .values()
            .filter(|f| f.file.is_none() && !f.rotated && !f.at_end())
            .map(|f| (f.last_read, f.key))
            .collect();
        if waiting.is_empty() {
            return;
        }
        waiting.sort_unstable();
        let mut done: Vec<_> = self
            .files
            .values()
            .filter(|f| f.file.is_some() && !f.rotated && f.at_end())
            .map(|f| (f.last_read, f.key))
            .collect();
        // Oldest last: popped first.
        done.sort_unstable_by(|a, b| b.cmp(a));
        let mut open = self.files.values().filter(|f| f.file.is_some()).count();
        for (_, k) in waiting {
            if open >= self.s.max_open_files {
                let Some((_, v)) = done.pop() else { break };
                if let Some(f) = self.files.get_mut(&v) {
                    f.close();
                    open -= 1;
                }
            }
            self.reopen(k);
            if self.files.get(&k).is_some_and(|f| f.file.is_some()) {
                open += 1;
                self.dirty.insert(k);
            }
        }
    }

    pub(super) fn reopen(&mut self, k: FileKey) {
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
}

pub(super) fn key_of(m: &std::fs::Metadata) -> FileKey {
    (m.dev(), m.ino())
}

pub(super) fn make_origin(p: &Path, host: Option<String>) -> Origin {
    Origin {
        path: Some(p.to_string_lossy().into_owned()),
        host,
        ..Origin::default()
    }
}
