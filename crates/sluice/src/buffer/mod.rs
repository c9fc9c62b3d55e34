//! Per-sink buffers: the bounded queue between everything upstream and one sink.
//!
//! Every sink owns exactly one buffer, so a stalled sink fills only its own queue.
//! Capacity is counted in events (`max_events`) and in bytes (`max_bytes`), the
//! bytes being each batch's [`EventBatch::footprint`]: what its events keep alive,
//! including the request buffer or inflated payload a forward record is a slice
//! of. The buffer is full when either bound would be passed; a batch larger than
//! the whole capacity is admitted alone into an empty queue so it can never wait
//! forever. A sender waiting for space is counted while it waits
//! ([`DepthProbe::waiting_senders`]): the sign that its source is held back.
//!
//! What happens when the buffer is full is the sink's `when_full` policy:
//! - `block`: the sender waits for space. A sender that feeds *other* sinks too
//!   never waits on this one (`may_block = false`): its copy for this sink is shed,
//!   counted as dropped and resolved `Errored`, so healthy siblings keep flowing and
//!   sources that acknowledge upstream do not acknowledge it (the peer resends).
//!   Sources that feed only this sink are slowed down: that is backpressure.
//! - `drop_newest`: the arriving batch is dropped, counted, resolved `Dropped`.
//! - `drop_oldest`: the oldest queued batches are dropped to make room.
//!
//! When every sender is gone the receiver drains what is queued, then sees the end.
//! When the receiver is gone, queued and future batches resolve `Errored`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use tokio::sync::Notify;

use crate::ack::{AckStatus, AckToken};
use crate::event::EventBatch;
use crate::metrics::Counters;

pub mod deferred;
pub mod disk;
pub mod replay;
mod settings;

pub use settings::{
    Acknowledgements, BufferOpenError, FsyncPolicy, SinkBuffer, default_fsync_interval_ms,
    default_max_bytes, for_sink, validate_buffer,
};

/// What a full buffer does with new data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait for space (backpressure).
    #[default]
    Block,
    /// Drop the arriving batch, counted.
    DropNewest,
    /// Drop the oldest queued batches, counted.
    DropOldest,
}

/// Default memory buffer capacity in events.
pub const DEFAULT_MAX_EVENTS: usize = 100_000;
/// Default memory buffer capacity in bytes: 256 MiB.
pub const DEFAULT_MEMORY_MAX_BYTES: u64 = 256 << 20;

/// How much a memory buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// Events.
    pub events: usize,
    /// Bytes, as [`EventBatch::footprint`] counts them.
    pub bytes: usize,
}

impl Capacity {
    /// Whether `n` more events of `b` more bytes fit beside what `st` holds.
    fn fits(&self, st: &State, n: usize, b: usize) -> bool {
        st.events == 0 || (st.events + n <= self.events && st.bytes.saturating_add(b) <= self.bytes)
    }
}

struct State {
    /// Each batch with its footprint (counted once, when queued).
    queue: VecDeque<(EventBatch, usize)>,
    events: usize,
    bytes: usize,
    senders: usize,
    receiver_alive: bool,
}

struct Shared {
    state: Mutex<State>,
    data_ready: Notify,
    space_ready: Notify,
    /// Senders waiting for space now.
    waiting: AtomicUsize,
    capacity: Capacity,
    policy: WhenFull,
    counters: Arc<Counters>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave State inconsistent in a way
        // that matters more than stopping the pipeline would.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Create a memory buffer of `max_events` (and the default `max_bytes`) with a
/// policy; `counters` are the sink's.
pub fn memory(
    max_events: usize,
    policy: WhenFull,
    counters: Arc<Counters>,
) -> (BufferSender, BufferReceiver) {
    let bytes = usize::try_from(DEFAULT_MEMORY_MAX_BYTES).unwrap_or(usize::MAX);
    let capacity = Capacity {
        events: max_events,
        bytes,
    };
    memory_with(capacity, policy, counters)
}

/// Create a memory buffer of `capacity` with a policy; `counters` are the sink's.
pub fn memory_with(
    capacity: Capacity,
    policy: WhenFull,
    counters: Arc<Counters>,
) -> (BufferSender, BufferReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            events: 0,
            bytes: 0,
            senders: 1,
            receiver_alive: true,
        }),
        data_ready: Notify::new(),
        space_ready: Notify::new(),
        waiting: AtomicUsize::new(0),
        capacity: Capacity {
            events: capacity.events.max(1),
            bytes: capacity.bytes.max(1),
        },
        policy,
        counters,
    });
    (
        BufferSender::Memory(MemorySender {
            shared: shared.clone(),
        }),
        BufferReceiver::Memory(MemoryReceiver { shared }),
    )
}

/// Sending half of a sink's buffer; clone it for every upstream.
#[derive(Clone)]
pub enum BufferSender {
    /// A memory buffer.
    Memory(MemorySender),
    /// A memory buffer with `acknowledgements = "none"`: resolved on receipt.
    MemoryNoAck(MemorySender),
    /// A disk buffer.
    Disk(disk::DiskSender),
    /// A buffer that opens later (a reload replacing a disk-buffered sink).
    Deferred(deferred::DeferredSender),
}

impl BufferSender {
    /// The per-tenant accounts this buffer keeps (a disk buffer chosen to keep
    /// them, see [`crate::route::accounting`]).
    pub fn tenant_book(&self) -> Option<Arc<crate::route::accounting::TenantBook>> {
        match self {
            BufferSender::Disk(d) => d.tenant_book(),
            _ => None,
        }
    }

    /// Client chunks of forward source `source` found complete in this buffer
    /// when it opened; `None` when the buffer cannot tell (memory, or a disk
    /// buffer not open yet).
    pub fn recovered_chunks(
        &self,
        source: &str,
    ) -> Option<std::collections::HashMap<bytes::Bytes, u64>> {
        match self {
            BufferSender::Disk(d) => Some(d.recovered_chunks(source)),
            _ => None,
        }
    }

    /// Queue a batch, applying the policy when full (see the module doc for
    /// `may_block`).
    #[inline]
    pub async fn send(&self, batch: EventBatch, may_block: bool) -> SendOutcome {
        match self {
            BufferSender::Memory(m) => m.send(batch, may_block).await,
            BufferSender::MemoryNoAck(m) => {
                let EventBatch { events, ack } = batch;
                ack.resolve(AckStatus::Delivered);
                m.send(
                    EventBatch {
                        events,
                        ack: AckToken::none(),
                    },
                    may_block,
                )
                .await
            }
            BufferSender::Disk(d) => d.send(batch, may_block).await,
            BufferSender::Deferred(d) => d.send(batch, may_block).await,
        }
    }
}

/// Receiving half of a sink's buffer, owned by the sink.
pub enum BufferReceiver {
    /// A memory buffer.
    Memory(MemoryReceiver),
    /// A disk buffer.
    Disk(disk::DiskReceiver),
}

impl BufferReceiver {
    /// Next batch; `None` once every sender is gone and the queue is drained (a
    /// disk buffer: see [`disk::DiskReceiver::recv`]). Cancel-safe.
    #[inline]
    pub async fn recv(&mut self) -> Option<EventBatch> {
        match self {
            BufferReceiver::Memory(m) => m.recv().await,
            BufferReceiver::Disk(d) => d.recv().await,
        }
    }

    /// A queued batch if there is one, without waiting.
    #[inline]
    pub fn try_recv(&mut self) -> Option<EventBatch> {
        match self {
            BufferReceiver::Memory(m) => m.try_recv(),
            BufferReceiver::Disk(d) => d.try_recv(),
        }
    }

    /// The disk buffer, when the sink has one.
    pub fn disk(&self) -> Option<&disk::DiskReceiver> {
        match self {
            BufferReceiver::Memory(_) => None,
            BufferReceiver::Disk(d) => Some(d),
        }
    }

    /// Events currently queued for the sink (a disk buffer: read ahead in memory).
    pub fn queued_events(&self) -> usize {
        match self {
            BufferReceiver::Memory(m) => m.queued_events(),
            BufferReceiver::Disk(d) => d.queued_events(),
        }
    }

    /// Whether what the sink fails stays in a disk buffer (kept, re-sent or left
    /// for the next start) rather than being lost.
    pub fn is_durable(&self) -> bool {
        matches!(self, BufferReceiver::Disk(_))
    }

    /// A memory buffer's depth, readable after the receiver moved into the sink
    /// (for the shutdown report); `None` for a disk buffer.
    pub fn depth_probe(&self) -> Option<DepthProbe> {
        match self {
            BufferReceiver::Memory(m) => Some(DepthProbe {
                shared: m.shared.clone(),
            }),
            BufferReceiver::Disk(_) => None,
        }
    }
}

/// Reads how much a memory buffer holds (see [`BufferReceiver::depth_probe`]).
pub struct DepthProbe {
    shared: Arc<Shared>,
}

impl DepthProbe {
    /// Events queued now.
    pub fn events(&self) -> usize {
        self.shared.lock().events
    }

    /// Bytes queued now ([`EventBatch::footprint`]).
    pub fn bytes(&self) -> usize {
        self.shared.lock().bytes
    }

    /// Senders (`when_full = "block"`) waiting for space now.
    pub fn waiting_senders(&self) -> usize {
        self.shared.waiting.load(Relaxed)
    }
}

/// Sending half of a memory buffer.
pub struct MemorySender {
    shared: Arc<Shared>,
}

impl Clone for MemorySender {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        MemorySender {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for MemorySender {
    fn drop(&mut self) {
        let last = {
            let mut st = self.shared.lock();
            st.senders -= 1;
            st.senders == 0
        };
        if last {
            self.shared.data_ready.notify_one();
        }
    }
}

/// What became of a send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// Queued.
    Queued,
    /// Dropped by policy or shed; already counted and resolved.
    Dropped,
    /// The sink is gone; resolved errored.
    Closed,
}

impl MemorySender {
    /// Queue a batch, applying the policy when full (see the module doc for
    /// `may_block`).
    pub async fn send(&self, batch: EventBatch, may_block: bool) -> SendOutcome {
        let n = batch.len();
        let bytes = batch.footprint();
        let sh = &*self.shared;
        let mut batch = Some(batch);
        let mut parked = None;
        loop {
            let notified = {
                let mut st = sh.lock();
                if !st.receiver_alive {
                    drop(st);
                    if let Some(b) = batch.take() {
                        Counters::add(&sh.counters.errors, n);
                        b.ack.resolve(AckStatus::Errored);
                    }
                    return SendOutcome::Closed;
                }
                if sh.capacity.fits(&st, n, bytes) {
                    st.events += n;
                    st.bytes += bytes;
                    let b = batch.take().expect("batch is only taken once");
                    st.queue.push_back((b, bytes));
                    drop(st);
                    sh.data_ready.notify_one();
                    return SendOutcome::Queued;
                }
                match (sh.policy, may_block) {
                    (WhenFull::DropNewest, _) => {
                        drop(st);
                        Counters::add(&sh.counters.dropped, n);
                        if let Some(b) = batch.take() {
                            b.ack.resolve(AckStatus::Dropped);
                        }
                        return SendOutcome::Dropped;
                    }
                    (WhenFull::DropOldest, _) => {
                        let mut victims = Vec::new();
                        while !sh.capacity.fits(&st, n, bytes) {
                            let Some((old, old_bytes)) = st.queue.pop_front() else {
                                break;
                            };
                            st.events -= old.len();
                            st.bytes -= old_bytes;
                            victims.push(old);
                        }
                        st.events += n;
                        st.bytes += bytes;
                        let b = batch.take().expect("batch is only taken once");
                        st.queue.push_back((b, bytes));
                        drop(st);
                        for old in victims {
                            Counters::add(&sh.counters.dropped, old.len());
                            old.ack.resolve(AckStatus::Dropped);
                        }
                        sh.data_ready.notify_one();
                        return SendOutcome::Queued;
                    }
                    (WhenFull::Block, false) => {
                        drop(st);
                        Counters::add(&sh.counters.dropped, n);
                        if let Some(b) = batch.take() {
                            b.ack.resolve(AckStatus::Errored);
                        }
                        return SendOutcome::Dropped;
                    }
                    (WhenFull::Block, true) => {
                        parked.get_or_insert_with(|| Parked::new(&sh.waiting));
                        sh.space_ready.notified()
                    }
                }
            };
            notified.await;
        }
    }
}

/// Counts a sender as waiting for space for as long as it lives (the send future
/// may be dropped while it waits).
struct Parked<'a>(&'a AtomicUsize);

impl<'a> Parked<'a> {
    fn new(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, Relaxed);
        Parked(waiting)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Receiving half of a memory buffer.
pub struct MemoryReceiver {
    shared: Arc<Shared>,
}

impl MemoryReceiver {
    /// Next batch; `None` once every sender is gone and the queue is drained.
    pub async fn recv(&mut self) -> Option<EventBatch> {
        loop {
            let notified = {
                let mut st = self.shared.lock();
                if let Some(b) = self.pop(&mut st) {
                    return Some(b);
                }
                if st.senders == 0 {
                    return None;
                }
                self.shared.data_ready.notified()
            };
            notified.await;
        }
    }

    /// A queued batch if there is one, without waiting.
    pub fn try_recv(&mut self) -> Option<EventBatch> {
        let mut st = self.shared.lock();
        self.pop(&mut st)
    }

    fn pop(&self, st: &mut State) -> Option<EventBatch> {
        let (b, bytes) = st.queue.pop_front()?;
        st.events -= b.len();
        st.bytes -= bytes;
        self.shared.space_ready.notify_waiters();
        Counters::add(&self.shared.counters.events_in, b.len());
        Some(b)
    }

    /// Events currently queued.
    pub fn queued_events(&self) -> usize {
        self.shared.lock().events
    }
}

impl Drop for MemoryReceiver {
    fn drop(&mut self) {
        let left: Vec<EventBatch> = {
            let mut st = self.shared.lock();
            st.receiver_alive = false;
            st.events = 0;
            st.bytes = 0;
            st.queue.drain(..).map(|(b, _)| b).collect()
        };
        let lost: usize = left.iter().map(EventBatch::len).sum();
        if lost > 0 {
            self.shared.counters.errors.fetch_add(lost as u64, Relaxed);
        }
        for b in left {
            b.ack.resolve(AckStatus::Errored);
        }
        self.shared.space_ready.notify_waiters();
    }
}

#[cfg(test)]
mod tests;
