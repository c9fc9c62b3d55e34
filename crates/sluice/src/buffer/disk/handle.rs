//! What outlives a disk buffer's two halves: the handle that closes it once
//! its sink has ended, and the report of its counters.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tracing::error;

use super::DiskStats;
use super::shared::Shared;

/// Reads a disk buffer's counters and directory, also after it closed.
pub struct DiskReport {
    shared: Arc<Shared>,
}

impl DiskReport {
    /// The buffer's counters.
    pub fn stats(&self) -> &DiskStats {
        &self.shared.stats
    }

    /// The buffer's directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.shared.opts.dir
    }

    /// The sink's name.
    pub fn sink(&self) -> &str {
        &self.shared.name
    }
}

/// Closes a disk buffer once its sink has ended.
pub struct DiskBufferHandle {
    pub(super) shared: Arc<Shared>,
    pub(super) done: Option<tokio::sync::oneshot::Receiver<()>>,
}

impl DiskBufferHandle {
    /// A handle to the counters that outlives [`close`](Self::close).
    pub fn report(&self) -> DiskReport {
        DiskReport {
            shared: self.shared.clone(),
        }
    }

    /// Ask the WAL thread to append what is queued, sync, checkpoint and
    /// release the directory; wait for it at most `timeout`.
    pub async fn close(mut self, timeout: Duration) {
        self.shared.inbox().closing = true;
        self.shared.work.notify_one();
        let Some(done) = self.done.take() else { return };
        if tokio::time::timeout(timeout, done).await.is_err() {
            error!(
                sink = %self.shared.name,
                "Disk buffer did not close in time; unsynced acknowledgements will be replayed."
            );
        }
    }

    /// Blocking [`close`](Self::close), for callers outside the runtime.
    pub fn close_blocking(mut self, timeout: Duration) {
        self.shared.inbox().closing = true;
        self.shared.work.notify_one();
        let deadline = Instant::now() + timeout;
        while !self.shared.done.load(Relaxed) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.done = None;
    }
}

impl Drop for DiskBufferHandle {
    fn drop(&mut self) {
        self.shared.inbox().closing = true;
        self.shared.work.notify_one();
    }
}
