//! The drain thread of one mounted directory: captured writes → events → batches.
//!
//! Runs on its own OS thread (the capture receiver blocks) and sends each batch with
//! `Handle::block_on`. While the pipeline is busy the capture queue fills, and once
//! full the filesystem drops captures (counted): writers never wait for us.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use capture_fuse::{
    CaptureCounters, CaptureHandle, CaptureReceiver, CapturedWrite, RecvTimeoutError, TryRecvError,
    UnmountOutcome,
};
use tracing::{error, info, warn};

use super::{MAX_BATCH, Mounted, error_chain};
use crate::ack::AckToken;
use crate::event::{Event, EventBatch, Origin};
use crate::metrics::Counters;
use crate::topology::{Output, SourceContext};

/// How long an idle drain waits before looking at the stop flag again.
const IDLE_WAIT: Duration = Duration::from_millis(50);
/// How often the capture counters are folded into the source's counters.
const COUNTER_PERIOD: Duration = Duration::from_secs(1);
/// How often a send held up by the pipeline looks at the drop counters and the
/// stop flag.
const SEND_TICK: Duration = Duration::from_millis(50);
/// At most one "queue full" line per directory per interval.
const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Origins remembered per directory before the cache starts over.
const ORIGIN_CACHE: usize = 4_096;

/// What every event of the source shares.
#[derive(Debug)]
pub(crate) struct Statics {
    pub(crate) fields: Option<Arc<Vec<(String, String)>>>,
    pub(crate) tags: Option<Arc<Vec<String>>>,
    pub(crate) offsets: bool,
}

pub(crate) struct Drainer {
    handle: Option<CaptureHandle>,
    rx: CaptureReceiver,
    dir: PathBuf,
    capture: Arc<CaptureCounters>,
    counters: Arc<Counters>,
    out: Output,
    tag: Arc<str>,
    source: Arc<str>,
    statics: Arc<Statics>,
    stop: Arc<AtomicBool>,
    rt: tokio::runtime::Handle,
    origins: OriginCache,
    batch: Vec<Event>,
    batch_bytes: usize,
    /// Quota and queue drops already added to `counters.dropped`.
    seen_dropped: u64,
    /// Queue-full drops (writes, bytes) at the last log line.
    logged_full: (u64, u64),
    last_fold: Instant,
    last_log: Option<Instant>,
}

impl Drainer {
    pub(crate) fn new(
        m: Mounted,
        cx: &SourceContext,
        statics: Arc<Statics>,
        stop: Arc<AtomicBool>,
        rt: tokio::runtime::Handle,
    ) -> Drainer {
        Drainer {
            dir: m.handle.mountpoint().to_owned(),
            capture: m.handle.counters(),
            handle: Some(m.handle),
            rx: m.rx,
            counters: cx.counters.clone(),
            out: cx.out.clone(),
            tag: cx.tag.clone(),
            source: cx.name.clone(),
            statics,
            stop,
            rt,
            origins: OriginCache::default(),
            batch: Vec::with_capacity(64),
            batch_bytes: 0,
            seen_dropped: 0,
            logged_full: (0, 0),
            last_fold: Instant::now(),
            last_log: None,
        }
    }

    /// Until stopped (then unmount and send what is left) or the mount goes away.
    pub(crate) fn run(mut self) {
        while !self.stop.load(Ordering::SeqCst) {
            match self.rx.recv_timeout(IDLE_WAIT) {
                Ok(w) => self.take_batch(w),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    warn!(path = %self.dir.display(),
                        "Capture filesystem went away (unmounted from outside?); nothing more \
                         is captured from this directory.");
                    self.handle.take();
                    break;
                }
            }
            self.fold_counters(false);
        }
        self.stop_and_unmount();
        self.fold_counters(true);
        let s = self.capture.snapshot();
        info!(path = %self.dir.display(), captured_writes = s.captured_writes,
            captured_bytes = s.captured_bytes, dropped_quota = s.dropped_quota,
            dropped_quota_bytes = s.dropped_quota_bytes,
            dropped_queue_full = s.dropped_queue_full,
            dropped_queue_full_bytes = s.dropped_queue_full_bytes, errors = s.errors,
            "Capture stopped.");
    }

    /// `first` and whatever else is queued right now, up to a batch.
    fn take_batch(&mut self, first: CapturedWrite) {
        self.push(first);
        while self.batch.len() < MAX_BATCH {
            match self.rx.try_recv() {
                Ok(w) => self.push(w),
                Err(_) => break,
            }
        }
        self.flush();
    }

    /// Sends everything queued now. Returns true once the queue is closed and empty.
    fn drain_queued(&mut self) -> bool {
        loop {
            match self.rx.try_recv() {
                Ok(w) => {
                    self.push(w);
                    if self.batch.len() >= MAX_BATCH {
                        self.flush();
                    }
                }
                Err(e) => {
                    self.flush();
                    return e == TryRecvError::Disconnected;
                }
            }
        }
    }

    /// Stop: send what is queued, unmount (lazily if files are open) while still
    /// draining, then send what arrived meanwhile.
    fn stop_and_unmount(&mut self) {
        if self.drain_queued() {
            return;
        }
        let Some(handle) = self.handle.take() else {
            return;
        };
        let joined = std::thread::scope(|s| {
            let unmounting = s.spawn(move || handle.unmount());
            while !unmounting.is_finished() {
                match self.rx.recv_timeout(Duration::from_millis(10)) {
                    Ok(w) => self.take_batch(w),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                }
            }
            unmounting.join()
        });
        match joined {
            Ok(Ok(UnmountOutcome::Complete)) => {
                // The session is over: the queue is closed, drain it to the end.
                let deadline = Instant::now() + Duration::from_secs(1);
                while !self.drain_queued() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Ok(Ok(UnmountOutcome::Detached)) => {
                warn!(path = %self.dir.display(),
                    "Files were still open at stop: the mount was detached lazily. New opens \
                     see the real directory; writes through those open files after sluice \
                     exits fail (ENOTCONN) until the programs reopen them.");
                self.drain_queued();
            }
            Ok(Err(e)) => {
                error!(path = %self.dir.display(), error = %error_chain(&e),
                    "Cannot unmount the capture filesystem.");
                self.drain_queued();
            }
            Err(_) => error!(path = %self.dir.display(), "Unmount thread panicked."),
        }
    }

    fn push(&mut self, w: CapturedWrite) {
        let origin = self.origins.get(&w, &self.statics);
        let time_ns = w
            .time
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        self.batch_bytes += w.data.len();
        let mut ev = Event::new(w.data, time_ns, self.tag.clone(), self.source.clone());
        ev.origin = Some(origin);
        self.batch.push(ev);
    }

    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let events = std::mem::replace(&mut self.batch, Vec::with_capacity(64));
        Counters::add(&self.counters.events_in, events.len());
        Counters::add(
            &self.counters.bytes_in,
            std::mem::take(&mut self.batch_bytes),
        );
        Counters::add(&self.counters.events_out, events.len());
        let batch = EventBatch::new(events, AckToken::none());
        // A stalled pipeline can hold this send for as long as it likes: keep
        // counting the captures dropped meanwhile, so the counters (and the
        // queue-full log line) stay true while the writers go on.
        let out = self.out.clone();
        let rt = self.rt.clone();
        rt.block_on(async {
            let send = out.send(batch);
            tokio::pin!(send);
            loop {
                tokio::select! {
                    _ = &mut send => break,
                    () = tokio::time::sleep(SEND_TICK) => {
                        // At a stop, fold at once: the shutdown report reads them.
                        let stopping = self.stop.load(Ordering::SeqCst);
                        self.fold_counters(stopping);
                    }
                }
            }
        });
    }

    /// Adds new capture drops to the source's `dropped`, and logs queue-full drops
    /// at most once per interval (quota drops are logged per file by the crate).
    fn fold_counters(&mut self, last: bool) {
        let now = Instant::now();
        if !last && now.duration_since(self.last_fold) < COUNTER_PERIOD {
            return;
        }
        self.last_fold = now;
        let s = self.capture.snapshot();
        let dropped = s.dropped_quota + s.dropped_queue_full;
        let new = dropped.saturating_sub(self.seen_dropped);
        Counters::add(&self.counters.dropped, new as usize);
        self.seen_dropped = dropped;
        let due = last
            || self
                .last_log
                .is_none_or(|t| now.duration_since(t) >= LOG_INTERVAL);
        if s.dropped_queue_full > self.logged_full.0 && due {
            warn!(path = %self.dir.display(),
                dropped_writes = s.dropped_queue_full - self.logged_full.0,
                dropped_bytes = s.dropped_queue_full_bytes.saturating_sub(self.logged_full.1),
                "Capture queue full: these writes reached their files but were not captured \
                 (the pipeline is slower than the writers).");
            self.logged_full = (s.dropped_queue_full, s.dropped_queue_full_bytes);
            self.last_log = Some(now);
        }
    }
}

/// One origin per (pid, path) while the writer's identity stays the same.
#[derive(Default)]
struct OriginCache {
    map: foldhash::HashMap<(u32, Arc<Path>), Cached>,
}

struct Cached {
    uid: u32,
    gid: u32,
    command: Arc<str>,
    user: Arc<str>,
    group: Arc<str>,
    origin: Arc<Origin>,
}

fn same(a: &Arc<str>, b: &Arc<str>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

impl OriginCache {
    fn get(&mut self, w: &CapturedWrite, statics: &Statics) -> Arc<Origin> {
        let key = (w.pid, w.path.clone());
        let hit = self.map.get(&key).filter(|c| {
            c.uid == w.uid
                && c.gid == w.gid
                && same(&c.command, &w.command)
                && same(&c.user, &w.user)
                && same(&c.group, &w.group)
        });
        let origin = match hit {
            Some(c) => c.origin.clone(),
            None => {
                let text = |s: &Arc<str>| (!s.is_empty()).then(|| s.to_string());
                let origin = Arc::new(Origin {
                    path: Some(w.path.to_string_lossy().into_owned()),
                    pid: (w.pid != 0).then_some(w.pid),
                    uid: Some(w.uid),
                    gid: Some(w.gid),
                    user: text(&w.user),
                    group: text(&w.group),
                    command: text(&w.command),
                    static_fields: statics.fields.clone(),
                    static_tags: statics.tags.clone(),
                    ..Origin::default()
                });
                if self.map.len() >= ORIGIN_CACHE {
                    self.map.clear();
                }
                let cached = Cached {
                    uid: w.uid,
                    gid: w.gid,
                    command: w.command.clone(),
                    user: w.user.clone(),
                    group: w.group.clone(),
                    origin: origin.clone(),
                };
                self.map.insert(key, cached);
                origin
            }
        };
        if statics.offsets {
            Arc::new(Origin {
                offset: Some(w.offset),
                ..(*origin).clone()
            })
        } else {
            origin
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use bytes::Bytes;

    use super::*;

    fn write(pid: u32, path: &Arc<Path>, command: &str, offset: u64) -> CapturedWrite {
        CapturedWrite {
            path: path.clone(),
            offset,
            data: Bytes::from_static(b"x\n"),
            time: SystemTime::now(),
            pid,
            tid: pid,
            uid: 1000,
            gid: 1000,
            user: Arc::from("alice"),
            group: Arc::from(""),
            command: Arc::from(command),
            inode: 7,
            from_page_cache: false,
        }
    }

    #[test]
    fn origins_are_shared_per_writer_and_file_until_identity_changes() {
        let statics = Statics {
            fields: Some(Arc::new(vec![("dc".into(), "par1".into())])),
            tags: None,
            offsets: false,
        };
        let (a, b): (Arc<Path>, Arc<Path>) =
            (Arc::from(Path::new("/l/a")), Arc::from(Path::new("/l/b")));
        let mut cache = OriginCache::default();
        let o1 = cache.get(&write(10, &a, "app -v", 0), &statics);
        let o2 = cache.get(&write(10, &a, "app -v", 2), &statics);
        assert!(Arc::ptr_eq(&o1, &o2));
        assert_eq!(o1.path.as_deref(), Some("/l/a"));
        assert_eq!(
            (o1.pid, o1.uid, o1.user.as_deref(), o1.group.as_deref()),
            (Some(10), Some(1000), Some("alice"), None)
        );
        assert!(Arc::ptr_eq(
            o1.static_fields.as_ref().unwrap(),
            statics.fields.as_ref().unwrap()
        ));
        assert!(!Arc::ptr_eq(
            &o1,
            &cache.get(&write(10, &b, "app -v", 0), &statics)
        ));
        assert!(!Arc::ptr_eq(
            &o1,
            &cache.get(&write(11, &a, "app -v", 0), &statics)
        ));
        let exec = cache.get(&write(10, &a, "other", 4), &statics);
        assert_eq!(exec.command.as_deref(), Some("other"));
        let with_offsets = Statics {
            offsets: true,
            ..statics
        };
        assert_eq!(
            cache.get(&write(10, &a, "other", 42), &with_offsets).offset,
            Some(42)
        );
    }
}
