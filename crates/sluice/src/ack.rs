//! Acknowledgement tokens: how a source learns what became of a batch it emitted.
//!
//! A source creates one [`AckToken`] per batch together with a way to hear the
//! outcome (an [`AckReceiver`] future or a callback). Every place that takes a copy
//! of the batch (each sink of a fan-out, each output of a route) holds a clone of the
//! token and must *resolve* it with the outcome of its copy. When the last copy is
//! gone, the worst outcome of all copies is reported to the source exactly once.
//!
//! Invariants:
//! - Worst wins: `Delivered < Dropped < Errored`.
//! - A copy dropped without an explicit [`AckToken::resolve`] counts as `Errored`:
//!   a bug then means a resend, never a silent "delivered" (unlike vector, which
//!   counts such copies as delivered).
//! - [`AckToken::none`] is free: no allocation, resolution is a no-op. Sources with
//!   nobody to answer use it, or a callback that only counts.
//! - A token may carry a [`ChunkLabel`] (the forward source's chunk id): every
//!   copy shares it, and a disk buffer stores it with the batch's records so a
//!   restart can tell which chunks were already made durable.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::sync::oneshot;

use crate::latency::LatencyHistogram;
use crate::route::accounting::Ledger;

/// Outcome of one batch (or of one copy of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum AckStatus {
    /// Every sink that took the batch delivered it under its guarantee.
    Delivered = 0,
    /// A sink dropped it by policy (`when_full = "drop_newest"`, quota, null route
    /// of a filtered event is *not* this: filters resolve Delivered). Counted.
    Dropped = 1,
    /// A sink failed it, or a copy vanished unresolved. The source should not
    /// acknowledge upstream, so the peer resends.
    Errored = 2,
}

impl AckStatus {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => AckStatus::Delivered,
            1 => AckStatus::Dropped,
            _ => AckStatus::Errored,
        }
    }
}

impl fmt::Display for AckStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AckStatus::Delivered => "delivered",
            AckStatus::Dropped => "dropped",
            AckStatus::Errored => "errored",
        })
    }
}

type Callback = Box<dyn FnOnce(AckStatus) + Send + 'static>;

enum Notify {
    Channel(oneshot::Sender<AckStatus>),
    Callback(Callback),
}

struct Shared {
    status: AtomicU8,
    notify: std::sync::Mutex<Option<Notify>>,
    /// When the batch entered the pipeline and where its latency is counted,
    /// set by the source's output (see [`AckToken::start_timer`]).
    timer: OnceLock<(Instant, Arc<LatencyHistogram>)>,
    /// Per-tenant counts noted by routes for this batch, on their way to the
    /// disk buffer that keeps them (see [`crate::route::accounting`]): shared by
    /// every copy, taken by the first copy that reaches the buffer.
    ledger: std::sync::Mutex<Option<Box<Ledger>>>,
    /// The client chunk this batch is (forward de-duplication).
    chunk: Option<Arc<ChunkLabel>>,
}

/// Which client chunk a batch carries: the forward source that took it, the
/// chunk id its client gave, and how many events the whole chunk holds. A disk
/// buffer stores it with the records of the batch (see `buffer::disk::codec`),
/// so after a crash the source can rebuild the ids of the chunks that are
/// durable, even those whose ack the client never saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkLabel {
    /// The forward source's name.
    pub source: Arc<str>,
    /// The client's chunk id (1..=64 bytes).
    pub id: bytes::Bytes,
    /// Events in the chunk as the source emitted it.
    pub events: u32,
}

impl Shared {
    fn merge(&self, status: AckStatus) {
        self.status.fetch_max(status as u8, Ordering::AcqRel);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some((start, histogram)) = self.timer.get() {
            histogram.observe(start.elapsed());
        }
        let status = AckStatus::from_u8(*self.status.get_mut());
        let notify = self.notify.get_mut().map(Option::take).unwrap_or_default();
        match notify {
            Some(Notify::Channel(tx)) => {
                // The source may have stopped listening; that is its choice.
                let _ = tx.send(status);
            }
            Some(Notify::Callback(cb)) => cb(status),
            None => {}
        }
    }
}

/// One copy of a batch's acknowledgement. Clone it for every extra copy of the batch.
pub struct AckToken {
    shared: Option<Arc<Shared>>,
    resolved: bool,
}

impl AckToken {
    /// A token nobody listens to. Free to create, clone and resolve.
    pub const fn none() -> Self {
        AckToken {
            shared: None,
            resolved: true,
        }
    }

    /// A token whose final outcome arrives on the returned receiver.
    pub fn channel() -> (AckToken, AckReceiver) {
        let (tx, rx) = oneshot::channel();
        (
            Self::with_notify(Notify::Channel(tx), None),
            AckReceiver { rx },
        )
    }

    /// A token whose final outcome is passed to `cb` (on whichever thread drops the
    /// last copy; keep it cheap).
    pub fn with_callback(cb: impl FnOnce(AckStatus) + Send + 'static) -> AckToken {
        Self::with_notify(Notify::Callback(Box::new(cb)), None)
    }

    /// [`AckToken::with_callback`] for a batch that is the client chunk `label`.
    pub fn with_chunk_callback(
        label: ChunkLabel,
        cb: impl FnOnce(AckStatus) + Send + 'static,
    ) -> AckToken {
        Self::with_notify(Notify::Callback(Box::new(cb)), Some(Arc::new(label)))
    }

    fn with_notify(notify: Notify, chunk: Option<Arc<ChunkLabel>>) -> AckToken {
        AckToken {
            shared: Some(Arc::new(Shared {
                status: AtomicU8::new(AckStatus::Delivered as u8),
                notify: std::sync::Mutex::new(Some(notify)),
                timer: OnceLock::new(),
                ledger: std::sync::Mutex::new(None),
                chunk,
            })),
            resolved: false,
        }
    }

    /// The client chunk this batch is, when its source said so.
    pub fn chunk(&self) -> Option<&ChunkLabel> {
        self.shared.as_ref()?.chunk.as_deref()
    }

    /// Whether somebody waits for this token's outcome.
    pub fn is_tracked(&self) -> bool {
        self.shared.is_some()
    }

    /// Count the time from now until the outcome is known in `histogram`. The
    /// first call wins (a batch enters the pipeline once); an untracked token
    /// has no outcome to time and ignores it.
    #[inline]
    pub fn start_timer(&self, histogram: &Arc<LatencyHistogram>) {
        if let Some(shared) = &self.shared
            && shared.timer.get().is_none()
        {
            let _ = shared.timer.set((Instant::now(), histogram.clone()));
        }
    }

    /// Note per-tenant counts for this batch (`f` edits the shared ledger).
    /// An untracked token has nowhere to keep them: returns false.
    pub fn note(&self, f: impl FnOnce(&mut Ledger)) -> bool {
        let Some(shared) = &self.shared else {
            return false;
        };
        let mut l = shared.ledger.lock().unwrap_or_else(|e| e.into_inner());
        f(l.get_or_insert_with(Box::default));
        true
    }

    /// Take the counts noted so far (the copy reaching the buffer that keeps them).
    pub fn take_ledger(&self) -> Option<Box<Ledger>> {
        let shared = self.shared.as_ref()?;
        let mut l = shared.ledger.lock().unwrap_or_else(|e| e.into_inner());
        l.take().filter(|l| !l.is_empty())
    }

    /// Whether counts were noted and not taken yet.
    pub fn has_ledger(&self) -> bool {
        self.shared.as_ref().is_some_and(|s| {
            s.ledger
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .is_some_and(|l| !l.is_empty())
        })
    }

    /// Resolve this copy. The source hears the worst outcome once every copy is
    /// resolved or dropped.
    pub fn resolve(mut self, status: AckStatus) {
        if let Some(shared) = &self.shared {
            shared.merge(status);
        }
        self.resolved = true;
    }
}

impl Clone for AckToken {
    fn clone(&self) -> Self {
        AckToken {
            shared: self.shared.clone(),
            resolved: self.shared.is_none(),
        }
    }
}

impl Drop for AckToken {
    fn drop(&mut self) {
        if let (false, Some(shared)) = (self.resolved, &self.shared) {
            shared.merge(AckStatus::Errored);
        }
    }
}

impl fmt::Debug for AckToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AckToken")
            .field("tracked", &self.is_tracked())
            .finish()
    }
}

/// Resolves to the final outcome of a batch.
#[derive(Debug)]
pub struct AckReceiver {
    rx: oneshot::Receiver<AckStatus>,
}

impl Future for AckReceiver {
    type Output = AckStatus;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<AckStatus> {
        // The sender lives in `Shared`, whose drop always sends; a closed channel
        // therefore cannot happen, but if it did, errored is the safe answer.
        Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(AckStatus::Errored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn all_copies_delivered_reports_delivered() {
        let (token, rx) = AckToken::channel();
        let copy = token.clone();
        token.resolve(AckStatus::Delivered);
        copy.resolve(AckStatus::Delivered);
        assert_eq!(rx.await, AckStatus::Delivered);
    }

    #[tokio::test]
    async fn worst_outcome_wins() {
        let (token, rx) = AckToken::channel();
        let a = token.clone();
        let b = token.clone();
        token.resolve(AckStatus::Delivered);
        a.resolve(AckStatus::Dropped);
        b.resolve(AckStatus::Delivered);
        assert_eq!(rx.await, AckStatus::Dropped);
    }

    #[tokio::test]
    async fn copy_dropped_unresolved_reports_errored() {
        let (token, rx) = AckToken::channel();
        let copy = token.clone();
        token.resolve(AckStatus::Delivered);
        drop(copy);
        assert_eq!(rx.await, AckStatus::Errored);
    }

    #[tokio::test]
    async fn outcome_waits_for_the_last_copy() {
        let (token, mut rx) = AckToken::channel();
        let copy = token.clone();
        token.resolve(AckStatus::Delivered);
        assert!(futures_poll_once(&mut rx).is_none());
        copy.resolve(AckStatus::Delivered);
        assert_eq!(rx.await, AckStatus::Delivered);
    }

    #[test]
    fn callback_runs_once_with_the_outcome() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let token = AckToken::with_callback(move |st| s.lock().unwrap().push(st));
        let copy = token.clone();
        copy.resolve(AckStatus::Errored);
        token.resolve(AckStatus::Delivered);
        assert_eq!(*seen.lock().unwrap(), vec![AckStatus::Errored]);
    }

    #[test]
    fn none_token_is_inert() {
        let t = AckToken::none();
        assert!(!t.is_tracked());
        let c = t.clone();
        drop(c);
        t.resolve(AckStatus::Errored);
    }

    #[test]
    fn timer_counts_one_observation_when_the_outcome_is_known() {
        let h = Arc::new(LatencyHistogram::default());
        let token = AckToken::with_callback(|_| {});
        token.start_timer(&h);
        let copy = token.clone();
        copy.start_timer(&h); // a route's output: the first start stands
        token.resolve(AckStatus::Delivered);
        assert_eq!(h.snapshot().count, 0);
        copy.resolve(AckStatus::Delivered);
        assert_eq!(h.snapshot().count, 1);
        AckToken::none().start_timer(&h);
        assert_eq!(h.snapshot().count, 1);
    }

    fn futures_poll_once(rx: &mut AckReceiver) -> Option<AckStatus> {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        match Pin::new(rx).poll(&mut cx) {
            Poll::Ready(s) => Some(s),
            Poll::Pending => None,
        }
    }
}
