//! inotify (through `notify`) for the file source: which paths changed.
//!
//! Every root is watched — recursively when its patterns cross directories, so a
//! directory created later below it is watched too (and walked by the reader, so
//! files created in it before its watch existed are found). A root that does not
//! exist yet is replaced by its nearest existing ancestor, watched alone; each
//! event makes the reader call [`Watch::refresh`], which moves the watch down as
//! directories appear (and back up when a root is deleted, or re-adds it when it
//! was replaced by another directory of the same name).
//!
//! Events go to the reader through a bounded channel. When it is full, or
//! inotify's own queue overflowed, or a watch failed, a flag asks the reader for a
//! full rescan instead: nothing is missed, only found later.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use notify::{RecursiveMode, Watcher as _};

use super::paths::Root;

/// Events queued for the reader before the rest turn into one rescan request.
const QUEUE: usize = 8192;

/// What woke the reader.
#[derive(Debug)]
pub enum Wake {
    /// These paths changed (created, written, renamed, removed).
    Paths(Vec<PathBuf>),
    /// Look again (stop requested, or an overflow: see [`Watch::take_rescan`]).
    Nudge,
}

/// The watcher plus the directories it currently holds.
pub struct Watch {
    inner: notify::RecommendedWatcher,
    /// Watched directory → (recursive, inode it had when watched).
    held: HashMap<PathBuf, (bool, u64)>,
    rescan: Arc<AtomicBool>,
    tx: SyncSender<Wake>,
}

impl Watch {
    /// A watcher and the receiving end of its events.
    pub fn new() -> notify::Result<(Watch, Receiver<Wake>)> {
        let (tx, rx) = sync_channel(QUEUE);
        let rescan = Arc::new(AtomicBool::new(false));
        let (cb_tx, cb_rescan) = (tx.clone(), rescan.clone());
        let inner = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            let wake = match res {
                Ok(ev) if !ev.need_rescan() => Wake::Paths(ev.paths),
                _ => {
                    cb_rescan.store(true, Ordering::Release);
                    Wake::Nudge
                }
            };
            match cb_tx.try_send(wake) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                Err(TrySendError::Full(_)) => {
                    cb_rescan.store(true, Ordering::Release);
                }
            }
        })?;
        Ok((
            Watch {
                inner,
                held: HashMap::new(),
                rescan,
                tx,
            },
            rx,
        ))
    }

    /// A sender that wakes the reader (used at stop).
    pub fn waker(&self) -> SyncSender<Wake> {
        self.tx.clone()
    }

    /// Whether a full rescan was asked for since the last call.
    pub fn take_rescan(&self) -> bool {
        self.rescan.swap(false, Ordering::AcqRel)
    }

    /// Bring the watches in line with the roots. Returns the directories newly
    /// watched, which the caller walks (files may predate their watch).
    pub fn refresh(&mut self, roots: &[Root]) -> Vec<PathBuf> {
        let mut want: HashMap<PathBuf, (bool, u64)> = HashMap::new();
        for r in roots {
            let (dir, recursive) = match nearest_existing(&r.dir) {
                Some(d) if d == r.dir => (d, r.recursive),
                Some(d) => (d, false),
                None => continue,
            };
            let ino = std::fs::metadata(&dir).map(|m| m.ino()).unwrap_or(0);
            let e = want.entry(dir).or_insert((recursive, ino));
            e.0 |= recursive;
        }
        self.held.retain(|dir, held| {
            if want.get(dir) == Some(held) {
                return true;
            }
            // Gone with its directory already, or about to be re-added.
            let _ = self.inner.unwatch(dir);
            false
        });
        let mut added = Vec::new();
        for (dir, (recursive, ino)) in want {
            if self.held.contains_key(&dir) {
                continue;
            }
            let mode = if recursive {
                RecursiveMode::Recursive
            } else {
                RecursiveMode::NonRecursive
            };
            match self.inner.watch(&dir, mode) {
                Ok(()) => {
                    self.held.insert(dir.clone(), (recursive, ino));
                    added.push(dir);
                }
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "Cannot watch directory; relying on rescans.");
                    self.rescan.store(true, Ordering::Release);
                }
            }
        }
        added
    }

    /// Whether every root is watched itself (not through an ancestor).
    pub fn all_roots_held(&self, roots: &[Root]) -> bool {
        roots.iter().all(|r| self.held.contains_key(&r.dir))
    }
}

/// `dir` or its nearest existing ancestor directory.
fn nearest_existing(dir: &Path) -> Option<PathBuf> {
    let mut d = Some(dir);
    while let Some(p) = d {
        if p.is_dir() {
            return Some(p.to_owned());
        }
        d = p.parent();
    }
    None
}
