//! `sluice run --watch-config`: a change of the config file asks for a reload,
//! as SIGHUP does.
//!
//! The file's directory is watched (not the file): editors and configuration
//! managers replace a file by renaming a new one over it, which a watch on the
//! old inode would miss. Events naming the file are coalesced: one reload
//! follows a burst once the file has been quiet for [`QUIET`], so a save that
//! writes, truncates and renames is read once, whole.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher as _};
use tokio::sync::mpsc;

/// How long the file must stay unchanged before the reload.
pub const QUIET: Duration = Duration::from_millis(300);

/// Watching a config file; dropping it stops the watch.
pub struct ConfigWatch {
    _inner: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ConfigWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Call `on_change` after each burst of changes to `path`. Needs a tokio runtime.
pub fn watch(path: &Path, on_change: impl Fn() + Send + 'static) -> notify::Result<ConfigWatch> {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let dir = path
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_owned);
    let (tx, mut rx) = mpsc::channel::<()>(1);
    let target = path.clone();
    let mut inner = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let relevant = match res {
            // Not `Access`: reading the file for the reload opens it, and would
            // trigger the next reload.
            Ok(ev) => {
                ev.need_rescan()
                    || (matches!(
                        ev.kind,
                        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
                    ) && ev.paths.iter().any(|p| p == &target))
            }
            Err(_) => true,
        };
        if relevant {
            // Full: a wake-up is already pending, which covers this change.
            let _ = tx.try_send(());
        }
    })?;
    inner.watch(&dir, RecursiveMode::NonRecursive)?;
    let task = tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Quiet period: later events of the same save restart it.
            while let Ok(Some(())) = tokio::time::timeout(QUIET, rx.recv()).await {}
            on_change();
        }
    });
    Ok(ConfigWatch {
        _inner: inner,
        task,
    })
}
