//! Group commit with `fsync = "interval"`: a source's acknowledgement (a
//! forward chunk's `{"ack": id}` is written when its token resolves) is given
//! only after an fdatasync that covers its records returned, as soon as that
//! sync returns (not at the interval tick), batches queued during a sync share
//! the next one — they are appended while it runs, and not acknowledged by it —,
//! nothing is synced when nobody waits, and a failed sync never resolves a
//! token `Delivered`.
//!
//! The WAL runs on real files through a storage whose `fdatasync` can be held
//! open and released one call at a time, or made to fail: a real disk cannot
//! be told to hold a sync.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ::wal::{DirStorage, LockGuard, ReadFile, Storage, Wal, WriteFile};
use bytes::Bytes;

use super::{DiskOptions, open::start};
use crate::ack::{AckStatus, AckToken};
use crate::buffer::{Acknowledgements, SendOutcome, WhenFull};
use crate::event::{Event, EventBatch};

/// Far beyond the test: any ack seen was given by group commit, not the tick.
const TICK: Duration = Duration::from_secs(600);
const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Default)]
struct GateState {
    /// Syncs wait for a permit.
    held: bool,
    permits: u32,
    /// Syncs blocked now.
    waiting: u32,
    /// `fdatasync` calls made (including failed ones).
    calls: u32,
    /// `fdatasync` calls that returned success.
    synced: u32,
    /// The next sync fails with EIO (without syncing).
    fail_next: bool,
    /// Writes to the WAL's files.
    writes: u32,
}

/// Controls every `fdatasync` of the WAL's files.
#[derive(Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn hold(&self) {
        self.lock().held = true;
    }

    /// Let `n` held syncs through.
    fn release(&self, n: u32) {
        self.lock().permits += n;
        self.changed.notify_all();
    }

    fn fail_next(&self) {
        self.lock().fail_next = true;
    }

    fn synced(&self) -> u32 {
        self.lock().synced
    }

    fn calls(&self) -> u32 {
        self.lock().calls
    }

    fn writes(&self) -> u32 {
        self.lock().writes
    }

    /// Block until more than `n` writes were made.
    fn wait_writes_over(&self, n: u32) {
        let deadline = Instant::now() + DEADLINE;
        let mut st = self.lock();
        while st.writes <= n {
            let left = deadline
                .checked_duration_since(Instant::now())
                .expect("written in time");
            st = self
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Block until `n` syncs are held open.
    fn wait_waiting(&self, n: u32) {
        let deadline = Instant::now() + DEADLINE;
        let mut st = self.lock();
        while st.waiting < n {
            let left = deadline
                .checked_duration_since(Instant::now())
                .expect("a sync was started in time");
            st = self
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn sync(&self, file: &mut dyn WriteFile) -> io::Result<()> {
        let mut st = self.lock();
        st.calls += 1;
        if std::mem::take(&mut st.fail_next) {
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        if st.held {
            st.waiting += 1;
            self.changed.notify_all();
            while st.permits == 0 {
                st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            st.permits -= 1;
            st.waiting -= 1;
        }
        drop(st);
        file.sync_data()?;
        self.lock().synced += 1;
        Ok(())
    }
}

/// Real files; every file sync goes through the gate.
struct GatedStorage {
    dir: DirStorage,
    gate: Arc<Gate>,
}

struct GatedFile {
    file: Box<dyn WriteFile>,
    gate: Arc<Gate>,
}

impl WriteFile for GatedFile {
    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.file.write_all_at(offset, buf)?;
        self.gate.lock().writes += 1;
        self.gate.changed.notify_all();
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.gate.sync(self.file.as_mut())
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync_handle(&self) -> io::Result<Box<dyn WriteFile>> {
        Ok(Box::new(GatedFile {
            file: self.file.sync_handle()?,
            gate: self.gate.clone(),
        }))
    }
}

impl GatedStorage {
    fn wrap(&self, file: Box<dyn WriteFile>) -> Box<dyn WriteFile> {
        Box::new(GatedFile {
            file,
            gate: self.gate.clone(),
        })
    }
}

impl Storage for GatedStorage {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path(name)
    }
    fn list(&self) -> io::Result<Vec<String>> {
        self.dir.list()
    }
    fn open_read(&self, name: &str) -> io::Result<Box<dyn ReadFile>> {
        self.dir.open_read(name)
    }
    fn create(&self, name: &str) -> io::Result<Box<dyn WriteFile>> {
        self.dir.create(name).map(|f| self.wrap(f))
    }
    fn open_write(&self, name: &str) -> io::Result<Box<dyn WriteFile>> {
        self.dir.open_write(name).map(|f| self.wrap(f))
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        self.dir.remove(name)
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.dir.rename(from, to)
    }
    fn sync_dir(&self) -> io::Result<()> {
        self.dir.sync_dir()
    }
    fn try_lock(&self) -> io::Result<Option<LockGuard>> {
        self.dir.try_lock()
    }
}

/// What a source heard: (chunk, status, successful syncs when it heard it).
type Heard = Arc<Mutex<Vec<(u32, AckStatus, u32)>>>;

struct Fixture {
    gate: Arc<Gate>,
    heard: Heard,
    tx: super::DiskSender,
    rx: super::DiskReceiver,
    handle: super::DiskBufferHandle,
    _dir: tempfile::TempDir,
}

fn fixture(acks: Acknowledgements) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = DiskOptions {
        dir: dir.path().join("buf"),
        max_bytes: 16 << 20,
        when_full: WhenFull::Block,
        fsync: Some(TICK),
        acknowledgements: acks,
        replay_events_per_sec: None,
        drain_timeout: Duration::from_secs(1),
        sync_interval: TICK,
        tenant_series: None,
    };
    std::fs::create_dir_all(&opts.dir).expect("buffer dir");
    let gate = Arc::new(Gate::default());
    let storage = GatedStorage {
        dir: DirStorage::new(&opts.dir),
        gate: gate.clone(),
    };
    let wal = Wal::open_storage(Box::new(storage), opts.wal_options()).expect("open wal");
    let (tx, rx, handle) = start("k", opts, Arc::default(), wal).expect("start");
    // Count from here: opening synced the new segment.
    *gate.lock() = GateState::default();
    Fixture {
        gate,
        heard: Heard::default(),
        tx,
        rx,
        handle,
        _dir: dir,
    }
}

impl Fixture {
    /// Queue one batch of one event as a chunk whose source waits for its ack.
    async fn send_chunk(&self, chunk: u32) -> SendOutcome {
        let heard = self.heard.clone();
        let gate = self.gate.clone();
        let token = AckToken::with_callback(move |status| {
            let synced = gate.synced();
            heard
                .lock()
                .expect("not poisoned")
                .push((chunk, status, synced));
        });
        self.tx
            .send(EventBatch::new(vec![event()], token), true)
            .await
    }

    fn heard(&self) -> Vec<(u32, AckStatus, u32)> {
        self.heard.lock().expect("not poisoned").clone()
    }

    /// Poll (with a deadline) until `n` acks were heard.
    async fn wait_heard(&self, n: usize) -> Vec<(u32, AckStatus, u32)> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let heard = self.heard();
            if heard.len() >= n {
                return heard;
            }
            assert!(Instant::now() < deadline, "only {heard:?} heard in time");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn close(self) {
        self.gate.lock().held = false;
        self.gate.changed.notify_all();
        drop(self.tx);
        drop(self.rx);
        self.handle.close(DEADLINE).await;
    }
}

fn event() -> Event {
    Event::new(Bytes::from_static(b"line"), 0, "t".into(), "s".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_is_acked_only_after_the_sync_of_its_group_returns() {
    let f = fixture(Acknowledgements::Disk);
    f.gate.hold();
    assert_eq!(f.send_chunk(1).await, SendOutcome::Queued);
    // The group's sync starts at once (the tick is minutes away) and is held.
    tokio::task::block_in_place(|| f.gate.wait_waiting(1));
    // Three more chunks arrive while it is held: they form the next group.
    for chunk in 2..=4 {
        assert_eq!(f.send_chunk(chunk).await, SendOutcome::Queued);
    }
    assert_eq!(f.heard(), [], "nothing acked while its sync is open");

    f.gate.release(1);
    let heard = f.wait_heard(1).await;
    assert_eq!(
        heard,
        [(1, AckStatus::Delivered, 1)],
        "acked after one sync"
    );
    // The next group (2..=4) is appended and its sync started: still held.
    tokio::task::block_in_place(|| f.gate.wait_waiting(1));
    assert_eq!(f.heard().len(), 1, "chunks 2..=4 wait for their own sync");

    f.gate.release(1);
    let heard = f.wait_heard(4).await;
    let expect: Vec<_> = (2..=4).map(|c| (c, AckStatus::Delivered, 2)).collect();
    assert_eq!(heard[1..], expect[..], "the three waiters shared one sync");
    assert_eq!(f.gate.calls(), 2);
    f.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_appended_while_a_sync_runs_are_not_acked_by_it() {
    let f = fixture(Acknowledgements::Disk);
    f.gate.hold();
    assert_eq!(f.send_chunk(1).await, SendOutcome::Queued);
    tokio::task::block_in_place(|| f.gate.wait_waiting(1));
    // While chunk 1's sync is held open, chunk 2 is written to the segment
    // (the WAL thread appends while the sync thread syncs)...
    let writes = f.gate.writes();
    assert_eq!(f.send_chunk(2).await, SendOutcome::Queued);
    tokio::task::block_in_place(|| f.gate.wait_writes_over(writes));
    assert_eq!(f.gate.calls(), 1, "no second sync while one is in flight");
    assert_eq!(f.heard(), [], "nothing acked while its sync is open");
    // ...but the sync in flight started before it was: it acks chunk 1 only.
    f.gate.release(1);
    assert_eq!(f.wait_heard(1).await, [(1, AckStatus::Delivered, 1)]);
    // Chunk 2 waits for a sync of its own, started when the first returned.
    tokio::task::block_in_place(|| f.gate.wait_waiting(1));
    assert_eq!(f.heard().len(), 1, "chunk 2 is not acked by chunk 1's sync");
    f.gate.release(1);
    let heard = f.wait_heard(2).await;
    assert_eq!(heard[1], (2, AckStatus::Delivered, 2));
    assert_eq!(f.gate.calls(), 2);
    f.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_synced_before_the_tick_when_nobody_waits() {
    let mut f = fixture(Acknowledgements::Disk);
    let calls = f.gate.calls();
    let batch = EventBatch::new(vec![event()], AckToken::none());
    assert_eq!(f.tx.send(batch, true).await, SendOutcome::Queued);
    // Read back means the WAL thread appended it and passed its commit step.
    let b = tokio::time::timeout(DEADLINE, f.rx.recv())
        .await
        .expect("read back in time")
        .expect("buffer open");
    b.ack.resolve(AckStatus::Delivered);
    assert_eq!(f.gate.calls(), calls, "no fdatasync for an untracked batch");
    f.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_group_sync_never_acks_and_closes_the_buffer() {
    let f = fixture(Acknowledgements::Disk);
    f.gate.fail_next();
    assert_eq!(f.send_chunk(1).await, SendOutcome::Queued);
    let heard = f.wait_heard(1).await;
    assert_eq!(heard, [(1, AckStatus::Errored, 0)]);
    // Poisoned: no later chunk is taken (the source resends elsewhere/later).
    let deadline = Instant::now() + DEADLINE;
    loop {
        match f.send_chunk(2).await {
            SendOutcome::Closed => break,
            _ => assert!(Instant::now() < deadline, "the buffer kept taking data"),
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(f.heard().iter().all(|h| h.1 != AckStatus::Delivered));
    f.close().await;
}
