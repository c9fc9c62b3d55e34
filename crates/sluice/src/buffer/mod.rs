//! Per-sink buffers: the bounded queue between everything upstream and one sink.
//!
//! Every sink owns exactly one buffer, so a stalled sink fills only its own queue.
//! Capacity is counted in events (`max_events`); a batch larger than the whole
//! capacity is admitted alone into an empty queue so it can never wait forever.
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
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use tokio::sync::Notify;

use crate::ack::{AckStatus, AckToken};
use crate::event::EventBatch;
use crate::metrics::Counters;

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

struct State {
    queue: VecDeque<EventBatch>,
    events: usize,
    senders: usize,
    receiver_alive: bool,
}

struct Shared {
    state: Mutex<State>,
    data_ready: Notify,
    space_ready: Notify,
    capacity: usize,
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

/// Create a memory buffer of `max_events` with a policy; `counters` are the sink's.
pub fn memory(
    max_events: usize,
    policy: WhenFull,
    counters: Arc<Counters>,
) -> (BufferSender, BufferReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            events: 0,
            senders: 1,
            receiver_alive: true,
        }),
        data_ready: Notify::new(),
        space_ready: Notify::new(),
        capacity: max_events.max(1),
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
}

impl BufferSender {
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

/// Reads how many events a memory buffer holds (see [`BufferReceiver::depth_probe`]).
pub struct DepthProbe {
    shared: Arc<Shared>,
}

impl DepthProbe {
    /// Events queued now.
    pub fn events(&self) -> usize {
        self.shared.lock().events
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
        let sh = &*self.shared;
        let mut batch = Some(batch);
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
                let fits = st.events == 0 || st.events + n <= sh.capacity;
                if fits {
                    st.events += n;
                    st.queue
                        .push_back(batch.take().expect("batch is only taken once"));
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
                        while st.events > 0 && st.events + n > sh.capacity {
                            let Some(old) = st.queue.pop_front() else {
                                break;
                            };
                            st.events -= old.len();
                            victims.push(old);
                        }
                        st.events += n;
                        st.queue
                            .push_back(batch.take().expect("batch is only taken once"));
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
                    (WhenFull::Block, true) => sh.space_ready.notified(),
                }
            };
            notified.await;
        }
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
        let b = st.queue.pop_front()?;
        st.events -= b.len();
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
            st.queue.drain(..).collect()
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
mod tests {
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::ack::AckToken;
    use crate::event::Event;

    fn batch(n: usize) -> EventBatch {
        let ev = Event::new(Bytes::from_static(b"x"), 0, "t".into(), "s".into());
        EventBatch::new(vec![ev; n], AckToken::none())
    }

    fn tracked(n: usize) -> (EventBatch, crate::ack::AckReceiver) {
        let (t, rx) = AckToken::channel();
        let ev = Event::new(Bytes::from_static(b"x"), 0, "t".into(), "s".into());
        (EventBatch::new(vec![ev; n], t), rx)
    }

    #[tokio::test]
    async fn drop_newest_counts_and_resolves_dropped() {
        let c = Arc::new(Counters::default());
        let (tx, mut rx) = memory(10, WhenFull::DropNewest, c.clone());
        assert_eq!(tx.send(batch(8), true).await, SendOutcome::Queued);
        let (b, ack) = tracked(5);
        assert_eq!(tx.send(b, true).await, SendOutcome::Dropped);
        assert_eq!(ack.await, AckStatus::Dropped);
        assert_eq!(c.dropped.load(Relaxed), 5);
        assert_eq!(rx.recv().await.unwrap().len(), 8);
    }

    #[tokio::test]
    async fn drop_oldest_evicts_front() {
        let c = Arc::new(Counters::default());
        let (tx, mut rx) = memory(10, WhenFull::DropOldest, c.clone());
        let (b1, a1) = tracked(6);
        tx.send(b1, true).await;
        tx.send(batch(6), true).await;
        assert_eq!(a1.await, AckStatus::Dropped);
        assert_eq!(c.dropped.load(Relaxed), 6);
        assert_eq!(rx.recv().await.unwrap().len(), 6);
        assert_eq!(rx.queued_events(), 0);
    }

    #[tokio::test]
    async fn block_waits_for_space_then_queues() {
        let c = Arc::new(Counters::default());
        let (tx, mut rx) = memory(10, WhenFull::Block, c);
        tx.send(batch(10), true).await;
        let tx2 = tx.clone();
        let waiter = tokio::spawn(async move { tx2.send(batch(5), true).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !waiter.is_finished(),
            "sender must wait while the buffer is full"
        );
        assert_eq!(rx.recv().await.unwrap().len(), 10);
        assert_eq!(waiter.await.unwrap(), SendOutcome::Queued);
        assert_eq!(rx.recv().await.unwrap().len(), 5);
    }

    #[tokio::test]
    async fn block_sheds_when_sender_feeds_others() {
        let c = Arc::new(Counters::default());
        let (tx, _rx) = memory(10, WhenFull::Block, c.clone());
        tx.send(batch(10), true).await;
        let (b, ack) = tracked(3);
        assert_eq!(tx.send(b, false).await, SendOutcome::Dropped);
        assert_eq!(ack.await, AckStatus::Errored);
        assert_eq!(c.dropped.load(Relaxed), 3);
    }

    #[tokio::test]
    async fn oversize_batch_admitted_into_empty_queue() {
        let (tx, mut rx) = memory(10, WhenFull::Block, Arc::new(Counters::default()));
        assert_eq!(tx.send(batch(50), true).await, SendOutcome::Queued);
        assert_eq!(rx.recv().await.unwrap().len(), 50);
    }

    #[tokio::test]
    async fn receiver_sees_end_after_drain() {
        let (tx, mut rx) = memory(10, WhenFull::Block, Arc::new(Counters::default()));
        tx.send(batch(1), true).await;
        drop(tx);
        assert!(rx.recv().await.is_some());
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn dropped_receiver_fails_queued_and_new_batches() {
        let c = Arc::new(Counters::default());
        let (tx, rx) = memory(10, WhenFull::Block, c.clone());
        let (b, ack) = tracked(2);
        tx.send(b, true).await;
        drop(rx);
        assert_eq!(ack.await, AckStatus::Errored);
        let (b, ack) = tracked(2);
        assert_eq!(tx.send(b, true).await, SendOutcome::Closed);
        assert_eq!(ack.await, AckStatus::Errored);
    }
}
