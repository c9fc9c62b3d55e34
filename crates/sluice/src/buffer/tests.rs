//! Memory buffer: policies, byte and event bounds, end of stream.
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
    let probe = rx.depth_probe().expect("a memory buffer");
    tx.send(batch(10), true).await;
    let tx2 = tx.clone();
    let waiter = tokio::spawn(async move { tx2.send(batch(5), true).await });
    // Positive signal: the sender is parked on the full buffer.
    until("the sender parks on the full buffer", || {
        probe.waiting_senders() == 1
    })
    .await;
    assert!(
        !waiter.is_finished(),
        "sender must wait while the buffer is full"
    );
    assert_eq!(probe.events(), 10, "nothing of the waiting batch is queued");
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

/// One event with a body of `len` bytes.
fn sized(len: usize) -> (EventBatch, crate::ack::AckReceiver) {
    let (t, rx) = AckToken::channel();
    let ev = Event::new(Bytes::from(vec![b'x'; len]), 0, "t".into(), "s".into());
    (EventBatch::new(vec![ev], t), rx)
}

/// Polls `cond` until it holds, failing after a generous deadline.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn by_bytes(bytes: usize, policy: WhenFull) -> (BufferSender, BufferReceiver, DepthProbe) {
    let cap = Capacity {
        events: 1_000,
        bytes,
    };
    let (tx, rx) = memory_with(cap, policy, Arc::new(Counters::default()));
    let probe = rx.depth_probe().expect("a memory buffer");
    (tx, rx, probe)
}

#[tokio::test]
async fn full_by_bytes_parks_the_sender_until_the_sink_takes() {
    let (tx, mut rx, probe) = by_bytes(100_000, WhenFull::Block);
    let (a, _) = sized(60_000);
    let (b, _) = sized(60_000);
    assert_eq!(tx.send(a, true).await, SendOutcome::Queued);
    assert!(probe.bytes() >= 60_000, "{}", probe.bytes());
    let tx2 = tx.clone();
    let waiter = tokio::spawn(async move { tx2.send(b, true).await });
    // Two events are far below max_events: only the bytes hold it back.
    until("the sender parks on the full buffer", || {
        probe.waiting_senders() == 1
    })
    .await;
    assert!(!waiter.is_finished());
    assert_eq!(probe.events(), 1);
    assert_eq!(rx.recv().await.unwrap().len(), 1);
    assert_eq!(waiter.await.unwrap(), SendOutcome::Queued);
    assert_eq!(probe.waiting_senders(), 0);
    assert!(rx.recv().await.is_some());
    assert_eq!(probe.bytes(), 0);
}

#[tokio::test]
async fn full_by_bytes_drops_newest_and_oldest_by_bytes() {
    let (tx, mut rx, _) = by_bytes(100_000, WhenFull::DropNewest);
    let (a, _) = sized(60_000);
    let (b, b_ack) = sized(60_000);
    tx.send(a, true).await;
    assert_eq!(tx.send(b, true).await, SendOutcome::Dropped);
    assert_eq!(b_ack.await, AckStatus::Dropped);
    assert_eq!(rx.recv().await.unwrap().events[0].body.len(), 60_000);

    let (tx, mut rx, probe) = by_bytes(100_000, WhenFull::DropOldest);
    let (a, a_ack) = sized(60_000);
    let (b, _) = sized(50_000);
    tx.send(a, true).await;
    assert_eq!(tx.send(b, true).await, SendOutcome::Queued);
    assert_eq!(a_ack.await, AckStatus::Dropped);
    assert!(probe.bytes() < 100_000);
    assert_eq!(rx.recv().await.unwrap().events[0].body.len(), 50_000);
}

#[tokio::test]
async fn a_batch_larger_than_max_bytes_passes_alone() {
    let (tx, mut rx, _) = by_bytes(10_000, WhenFull::Block);
    let (a, _) = sized(50_000);
    assert_eq!(tx.send(a, true).await, SendOutcome::Queued);
    assert_eq!(rx.recv().await.unwrap().len(), 1);
}
