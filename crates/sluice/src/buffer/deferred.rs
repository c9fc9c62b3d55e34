//! A sink's buffer that opens later. A reload that changes a sink with a disk
//! buffer builds the new sink beside the old one, but the buffer's directory is
//! the old one's until it has drained and closed. The new outputs get a
//! [`DeferredSender`] at once: a send waits (backpressure, like a full buffer
//! with `when_full = "block"`) until the new buffer is open, then goes to it.
//! A sender that feeds other sinks too never waits (`may_block = false`): its
//! copy is shed, counted as dropped and resolved `Errored`, as a full buffer
//! sheds it. If the buffer never opens (its open failed, or the sink was
//! removed before) every waiting and later send resolves `Errored`.

use std::sync::Arc;

use tokio::sync::watch;

use super::{BufferSender, SendOutcome};
use crate::ack::AckStatus;
use crate::event::EventBatch;
use crate::metrics::Counters;

/// The sending half of a buffer not open yet; clone it for every upstream.
#[derive(Clone)]
pub struct DeferredSender {
    ready: watch::Receiver<Option<BufferSender>>,
    counters: Arc<Counters>,
}

/// Opens a [`DeferredSender`]'s buffer: give it the real sender.
pub struct DeferredOpen {
    tx: watch::Sender<Option<BufferSender>>,
}

/// A sender whose buffer opens later, and what opens it. `counters` are the sink's.
pub fn deferred(counters: Arc<Counters>) -> (BufferSender, DeferredOpen) {
    let (tx, ready) = watch::channel(None);
    (
        BufferSender::Deferred(DeferredSender { ready, counters }),
        DeferredOpen { tx },
    )
}

impl DeferredOpen {
    /// From now on sends go to `sender`; waiting sends go on.
    pub fn open(self, sender: BufferSender) {
        // No sender left: nothing to hand over, the buffer closes with `sender`.
        let _ = self.tx.send(Some(sender));
    }

    /// Whether no sender is left (every output that held one is gone): the
    /// buffer need not open.
    pub fn unused(&self) -> bool {
        self.tx.is_closed()
    }
}

impl DeferredSender {
    /// Queue a batch once the buffer is open (see the module doc).
    pub async fn send(&self, batch: EventBatch, may_block: bool) -> SendOutcome {
        let mut ready = self.ready.clone();
        let now = ready.borrow().clone();
        let sender = match now {
            Some(s) => s,
            None if !may_block => {
                Counters::add(&self.counters.dropped, batch.len());
                batch.ack.resolve(AckStatus::Errored);
                return SendOutcome::Dropped;
            }
            None => match ready.wait_for(Option::is_some).await {
                Ok(s) => s.clone().expect("waited for Some"),
                Err(_) => {
                    Counters::add(&self.counters.errors, batch.len());
                    batch.ack.resolve(AckStatus::Errored);
                    return SendOutcome::Closed;
                }
            },
        };
        Box::pin(sender.send(batch, may_block)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::AckToken;
    use crate::event::Event;

    fn batch() -> (EventBatch, crate::ack::AckReceiver) {
        let (token, rx) = AckToken::channel();
        let ev = Event::new(bytes::Bytes::from_static(b"x"), 0, "t".into(), "s".into());
        (EventBatch::new(vec![ev], token), rx)
    }

    #[tokio::test]
    async fn a_send_waits_for_the_open_then_reaches_the_buffer() {
        let counters = Arc::new(Counters::default());
        let (tx, open) = deferred(counters.clone());
        let (b, _ack) = batch();
        let send = tokio::spawn(async move { tx.send(b, true).await });
        tokio::task::yield_now().await;
        assert!(!send.is_finished(), "a send before the open waits");
        let (real, mut rx) = super::super::memory(10, super::super::WhenFull::Block, counters);
        open.open(real);
        assert_eq!(send.await.unwrap(), SendOutcome::Queued);
        assert_eq!(rx.recv().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_sender_that_may_not_block_sheds_and_a_never_opened_buffer_errors() {
        let counters = Arc::new(Counters::default());
        let (tx, open) = deferred(counters.clone());
        let (b, ack) = batch();
        assert_eq!(tx.send(b, false).await, SendOutcome::Dropped);
        assert_eq!(ack.await, AckStatus::Errored);
        let (b, ack) = batch();
        let tx2 = tx.clone();
        let send = tokio::spawn(async move { tx2.send(b, true).await });
        drop(open);
        assert_eq!(send.await.unwrap(), SendOutcome::Closed);
        assert_eq!(ack.await, AckStatus::Errored);
        assert_eq!(
            counters.dropped.load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert_eq!(
            counters.errors.load(std::sync::atomic::Ordering::Relaxed),
            1
        );
    }
}
