//! What leaves the filesystem: the captured-write record, the bounded never-blocking
//! queue that carries it, the drop counters, the per-inode quota and the path filter.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use globset::{Glob, GlobSet, GlobSetBuilder};
use parking_lot::{Condvar, Mutex};

use crate::error::MountError;

/// One `write` request that reached the backing file of an included path.
///
/// Every field describes that one request: `data` holds exactly the bytes the backing
/// file accepted, `offset` is where they landed (for `O_APPEND` handles, the real end of
/// file at the time, not the kernel's guess).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedWrite {
    /// Path as the writing application sees it: mountpoint joined with the path inside.
    /// A file unlinked while open keeps its last name.
    pub path: Arc<Path>,
    /// Byte offset in the file where `data` was written.
    pub offset: u64,
    /// The bytes written. Payloads of 64 KiB and more live in recycled buffers that
    /// return to a pool when the last clone of this `Bytes` is dropped.
    pub data: Bytes,
    /// Wall-clock time at which the write reached the backing file.
    pub time: SystemTime,
    /// Process id (thread group id) of the writer; 0 when unknown.
    pub pid: u32,
    /// Thread id of the writer as sent by the kernel; 0 when unknown.
    pub tid: u32,
    /// File-system uid of the writer.
    pub uid: u32,
    /// File-system gid of the writer.
    pub gid: u32,
    /// User name of `uid`, empty when it cannot be resolved (yet).
    pub user: Arc<str>,
    /// Group name of `gid`, empty when it cannot be resolved (yet).
    pub group: Arc<str>,
    /// Writer's command line, arguments separated by single spaces; empty when unknown.
    pub command: Arc<str>,
    /// Inode number of the backing file (`st_ino`, the same one `stat` shows through the
    /// mount).
    pub inode: u64,
    /// The write came from the page cache (a shared writable `mmap`), not from a
    /// `write(2)` call: the identity fields are then those of the process that opened
    /// the file handle, not necessarily of the one that stored the bytes.
    pub from_page_cache: bool,
}

/// Live counters, shared between the filesystem threads and the daemon.
///
/// All counters only grow. Obtain one with [`crate::CaptureHandle::counters`]; it stays
/// valid after unmount.
#[derive(Debug, Default)]
pub struct CaptureCounters {
    captured_writes: AtomicU64,
    captured_bytes: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_queue_full_bytes: AtomicU64,
    dropped_quota: AtomicU64,
    dropped_quota_bytes: AtomicU64,
    errors: AtomicU64,
    passthrough_opens: AtomicU64,
    read_requests: AtomicU64,
}

/// A point-in-time copy of [`CaptureCounters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Writes handed to the queue.
    pub captured_writes: u64,
    /// Bytes handed to the queue.
    pub captured_bytes: u64,
    /// Writes not captured because the queue was full (or its receiver was gone).
    pub dropped_queue_full: u64,
    /// Bytes of those writes.
    pub dropped_queue_full_bytes: u64,
    /// Writes not captured because their file was over its quota.
    pub dropped_quota: u64,
    /// Bytes of those writes.
    pub dropped_quota_bytes: u64,
    /// Backing-file errors returned to applications on captured files, and capture-side
    /// failures (path or identity could not be determined).
    pub errors: u64,
    /// Opens served by kernel passthrough (their reads never reach sluice).
    pub passthrough_opens: u64,
    /// READ requests sluice served itself.
    pub read_requests: u64,
}

impl CaptureCounters {
    /// Reads every counter (each individually atomic).
    pub fn snapshot(&self) -> CaptureStats {
        CaptureStats {
            captured_writes: self.captured_writes.load(Ordering::Relaxed),
            captured_bytes: self.captured_bytes.load(Ordering::Relaxed),
            dropped_queue_full: self.dropped_queue_full.load(Ordering::Relaxed),
            dropped_queue_full_bytes: self.dropped_queue_full_bytes.load(Ordering::Relaxed),
            dropped_quota: self.dropped_quota.load(Ordering::Relaxed),
            dropped_quota_bytes: self.dropped_quota_bytes.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            passthrough_opens: self.passthrough_opens.load(Ordering::Relaxed),
            read_requests: self.read_requests.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn captured(&self, bytes: usize) {
        self.captured_writes.fetch_add(1, Ordering::Relaxed);
        self.captured_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn queue_full(&self, bytes: usize) {
        self.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
        self.dropped_queue_full_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn over_quota(&self, bytes: usize) {
        self.dropped_quota.fetch_add(1, Ordering::Relaxed);
        self.dropped_quota_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn passthrough_open(&self) {
        self.passthrough_opens.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn read_request(&self) {
        self.read_requests.fetch_add(1, Ordering::Relaxed);
    }
}

/// How long an idle receiver naps before asking writers to wake it. Under load it
/// therefore drains in batches and writers never make a wake-up syscall; a lone write
/// after a quiet period costs one wake-up and at most this much extra latency.
const RECEIVER_LINGER: Duration = Duration::from_micros(500);

struct Shared {
    queue: Mutex<Queue>,
    /// Receivers blocked in `wake.wait`; writers only notify when non-zero.
    sleepers: AtomicUsize,
    /// Mirror of `queue.items.len()` for the lock-free full check.
    len: AtomicUsize,
    wake: Condvar,
    closed: AtomicBool,
    /// The receiver was dropped: nothing will ever be consumed.
    abandoned: AtomicBool,
    capacity: usize,
    max_bytes: usize,
}

struct Queue {
    items: VecDeque<CapturedWrite>,
    bytes: usize,
}

/// Creates the queue: at most `capacity` writes and about `max_bytes` of payload in
/// flight (a single write larger than `max_bytes` still passes when the queue is empty).
pub(crate) fn queue(capacity: usize, max_bytes: usize) -> (QueueSender, CaptureReceiver) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue {
            items: VecDeque::with_capacity(capacity.min(4096)),
            bytes: 0,
        }),
        sleepers: AtomicUsize::new(0),
        len: AtomicUsize::new(0),
        wake: Condvar::new(),
        closed: AtomicBool::new(false),
        abandoned: AtomicBool::new(false),
        capacity,
        max_bytes,
    });
    (
        QueueSender {
            shared: shared.clone(),
        },
        CaptureReceiver { shared },
    )
}

/// The filesystem's end. Dropping it disconnects the receiver once drained.
pub(crate) struct QueueSender {
    shared: Arc<Shared>,
}

impl QueueSender {
    /// Never blocks (beyond a short uncontended lock). `false` when full.
    pub(crate) fn try_send(&self, write: CapturedWrite) -> bool {
        let sh = &*self.shared;
        {
            let mut q = sh.queue.lock();
            let len = write.data.len();
            let over_bytes = q.bytes != 0 && q.bytes + len > sh.max_bytes;
            if q.items.len() >= sh.capacity || over_bytes || sh.abandoned.load(Ordering::Relaxed) {
                return false;
            }
            q.bytes += len;
            q.items.push_back(write);
            sh.len.store(q.items.len(), Ordering::Relaxed);
        }
        // A receiver registers as sleeper under the lock after seeing the queue empty,
        // so either it saw our item or we see it registered here.
        if sh.sleepers.load(Ordering::SeqCst) != 0 {
            sh.wake.notify_all();
        }
        true
    }

    /// Cheap pre-check so that a full queue costs no copy of the data.
    pub(crate) fn is_full(&self) -> bool {
        self.shared.len.load(Ordering::Relaxed) >= self.shared.capacity
            || self.shared.abandoned.load(Ordering::Relaxed)
    }
}

impl Drop for QueueSender {
    fn drop(&mut self) {
        let _q = self.shared.queue.lock();
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
    }
}

/// Receiving end of the capture queue.
///
/// Disconnects (receive calls return `Disconnected` once drained) when the filesystem
/// session has ended, i.e. after unmount and the last open file was closed. Writers
/// never wait for it: it naps briefly when empty and is woken only after a quiet
/// period, so draining happens in batches under load.
pub struct CaptureReceiver {
    shared: Arc<Shared>,
}

impl Drop for CaptureReceiver {
    fn drop(&mut self) {
        self.shared.abandoned.store(true, Ordering::Relaxed);
        let mut q = self.shared.queue.lock();
        q.items.clear();
        q.bytes = 0;
        self.shared.len.store(0, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for CaptureReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureReceiver")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

/// Error of [`CaptureReceiver::try_recv`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// Nothing queued right now.
    #[error("capture queue is empty")]
    Empty,
    /// The filesystem is gone and the queue is drained.
    #[error("capture ended")]
    Disconnected,
}

/// Error of [`CaptureReceiver::recv_timeout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecvTimeoutError {
    /// Nothing arrived in time.
    #[error("timed out waiting for a captured write")]
    Timeout,
    /// The filesystem is gone and the queue is drained.
    #[error("capture ended")]
    Disconnected,
}

impl CaptureReceiver {
    /// Takes the next captured write if one is queued.
    pub fn try_recv(&self) -> Result<CapturedWrite, TryRecvError> {
        let mut q = self.shared.queue.lock();
        match q.items.pop_front() {
            Some(w) => {
                q.bytes -= w.data.len();
                self.shared.len.store(q.items.len(), Ordering::Relaxed);
                Ok(w)
            }
            None if self.shared.closed.load(Ordering::SeqCst) => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Waits up to `timeout` for the next captured write.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<CapturedWrite, RecvTimeoutError> {
        let deadline = Instant::now() + timeout;
        let mut lingered = false;
        loop {
            match self.try_recv() {
                Ok(w) => return Ok(w),
                Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(RecvTimeoutError::Timeout);
            }
            if !lingered {
                lingered = true;
                std::thread::sleep(RECEIVER_LINGER.min(deadline - now));
                continue;
            }
            let sh = &*self.shared;
            let mut q = sh.queue.lock();
            if q.items.is_empty() && !sh.closed.load(Ordering::SeqCst) {
                sh.sleepers.fetch_add(1, Ordering::SeqCst);
                sh.wake.wait_until(&mut q, deadline);
                sh.sleepers.fetch_sub(1, Ordering::SeqCst);
            }
            lingered = false;
        }
    }

    /// Number of writes waiting in the queue.
    pub fn len(&self) -> usize {
        self.shared.len.load(Ordering::Relaxed)
    }

    /// Whether the queue is empty right now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Token-bucket parameters shared by all files.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Quota {
    pub(crate) rate: f64,
    pub(crate) burst: f64,
}

/// Per-inode token bucket (rate `Quota::rate` bytes/s, capacity `Quota::burst`).
#[derive(Debug)]
pub(crate) struct Bucket {
    tokens: f64,
    last: Option<Instant>,
    dropped_since_log: u64,
    last_log: Option<Instant>,
}

/// How often a file over quota may log.
pub(crate) const QUOTA_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Outcome of [`Bucket::admit`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    Pass,
    Drop,
    /// Dropped, and this file may log now: carries the number of drops since its last line.
    DropAndLog(u64),
}

impl Bucket {
    pub(crate) const fn new() -> Self {
        Bucket {
            tokens: 0.0,
            last: None,
            dropped_since_log: 0,
            last_log: None,
        }
    }

    /// A write of `n` bytes passes when the bucket holds `n` tokens, or when it is full
    /// (so writes larger than the burst still pass, then the file pays the debt).
    pub(crate) fn admit(&mut self, q: Quota, n: usize, now: Instant) -> Admit {
        self.tokens = match self.last {
            None => q.burst,
            Some(last) => {
                let refill = now.saturating_duration_since(last).as_secs_f64() * q.rate;
                (self.tokens + refill).min(q.burst)
            }
        };
        self.last = Some(now);
        let n = n as f64;
        if self.tokens >= n || self.tokens >= q.burst {
            self.tokens -= n;
            return Admit::Pass;
        }
        self.dropped_since_log += 1;
        let may_log = self
            .last_log
            .is_none_or(|t| now.saturating_duration_since(t) >= QUOTA_LOG_INTERVAL);
        if may_log {
            self.last_log = Some(now);
            Admit::DropAndLog(std::mem::take(&mut self.dropped_since_log))
        } else {
            Admit::Drop
        }
    }
}

/// Include/exclude globs over the path relative to the watched directory.
#[derive(Debug)]
pub(crate) struct PathFilter {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

impl PathFilter {
    pub(crate) fn new(include: &[String], exclude: &[String]) -> Result<Self, MountError> {
        Ok(PathFilter {
            include: build_set(include)?,
            exclude: build_set(exclude)?,
        })
    }

    /// Empty include list means everything; exclusion wins over inclusion.
    pub(crate) fn matches(&self, relative: &Path) -> bool {
        if self.exclude.as_ref().is_some_and(|s| s.is_match(relative)) {
            return false;
        }
        self.include.as_ref().is_none_or(|s| s.is_match(relative))
    }
}

fn build_set(patterns: &[String]) -> Result<Option<GlobSet>, MountError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let glob = Glob::new(p).map_err(|source| MountError::InvalidGlob {
            pattern: p.clone(),
            source,
        })?;
        b.add(glob);
    }
    b.build()
        .map(Some)
        .map_err(|source| MountError::InvalidGlob {
            pattern: patterns.join(", "),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_passes_burst_then_drops_until_refilled() {
        let q = Quota {
            rate: 1000.0,
            burst: 1000.0,
        };
        let t0 = Instant::now();
        let mut b = Bucket::new();
        for _ in 0..10 {
            assert_eq!(b.admit(q, 100, t0), Admit::Pass);
        }
        assert_eq!(b.admit(q, 100, t0), Admit::DropAndLog(1));
        assert_eq!(b.admit(q, 100, t0), Admit::Drop);
        // 100 ms refills 100 bytes.
        assert_eq!(
            b.admit(q, 100, t0 + Duration::from_millis(100)),
            Admit::Pass
        );
        assert_eq!(
            b.admit(q, 100, t0 + Duration::from_millis(100)),
            Admit::Drop
        );
        // The next line may be logged only after the interval, with the count so far.
        let later = t0 + QUOTA_LOG_INTERVAL + Duration::from_millis(1);
        let mut b2 = Bucket::new();
        b2.tokens = 0.0;
        b2.last = Some(later);
        b2.dropped_since_log = 4;
        b2.last_log = Some(t0);
        assert_eq!(b2.admit(q, 500, later), Admit::DropAndLog(5));
    }

    #[test]
    fn bucket_lets_oversized_write_through_when_full() {
        let q = Quota {
            rate: 10.0,
            burst: 10.0,
        };
        let t0 = Instant::now();
        let mut b = Bucket::new();
        assert_eq!(b.admit(q, 1000, t0), Admit::Pass);
        // In debt now: 99 s at 10 B/s are needed before anything passes again.
        assert!(matches!(
            b.admit(q, 1, t0 + Duration::from_secs(50)),
            Admit::DropAndLog(_)
        ));
        assert_eq!(b.admit(q, 1, t0 + Duration::from_secs(100)), Admit::Pass);
    }

    #[test]
    fn filter_exclude_wins_and_empty_include_means_all() {
        let f = PathFilter::new(&[], &["*.gz".into()]).unwrap();
        assert!(f.matches(Path::new("a.log")));
        assert!(f.matches(Path::new("sub/a.log")));
        assert!(!f.matches(Path::new("sub/a.log.gz")));
        let f = PathFilter::new(&["*.log".into()], &["secret/**".into()]).unwrap();
        assert!(f.matches(Path::new("deep/er/x.log")));
        assert!(!f.matches(Path::new("x.txt")));
        assert!(!f.matches(Path::new("secret/x.log")));
    }

    #[test]
    fn queue_bounds_count_and_bytes_without_blocking() {
        let (tx, rx) = queue(2, 10);
        let w = |n: usize| CapturedWrite {
            path: Arc::from(Path::new("/x")),
            offset: 0,
            data: Bytes::from(vec![0; n]),
            time: SystemTime::UNIX_EPOCH,
            pid: 0,
            tid: 0,
            uid: 0,
            gid: 0,
            user: Arc::from(""),
            group: Arc::from(""),
            command: Arc::from(""),
            inode: 0,
            from_page_cache: false,
        };
        assert!(
            tx.try_send(w(100)),
            "oversized write passes into an empty queue"
        );
        assert!(!tx.try_send(w(1)), "but nothing else fits behind it");
        assert_eq!(rx.try_recv().unwrap().data.len(), 100);
        assert!(tx.try_send(w(4)));
        assert!(tx.try_send(w(4)));
        assert!(!tx.try_send(w(1)), "count bound");
        drop(tx);
        assert!(rx.try_recv().is_ok());
        assert!(rx.recv_timeout(Duration::from_millis(1)).is_ok());
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
        let (tx, rx) = queue(2, 10);
        drop(rx);
        assert!(
            tx.is_full() && !tx.try_send(w(1)),
            "nobody listens: drop at once"
        );
    }
}
