//! Disk buffer behaviour that needs no daemon: what a source hears for a batch
//! whose events do not all fit in one record.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;

use super::{DiskOptions, open};
use crate::ack::{AckStatus, AckToken};
use crate::buffer::{Acknowledgements, SendOutcome, WhenFull};
use crate::event::{Event, EventBatch};
use crate::metrics::Counters;

const MAX_BYTES: u64 = 1 << 20;

fn opts(dir: &std::path::Path) -> DiskOptions {
    DiskOptions {
        dir: dir.join("buf"),
        max_bytes: MAX_BYTES,
        when_full: WhenFull::Block,
        fsync: None,
        acknowledgements: Acknowledgements::Disk,
        replay_events_per_sec: None,
        drain_timeout: Duration::from_secs(1),
        sync_interval: Duration::from_millis(100),
        tenant_series: None,
    }
}

fn event(len: usize) -> Event {
    Event::new(Bytes::from(vec![b'x'; len]), 0, "t".into(), "s".into())
}

#[tokio::test]
async fn an_event_larger_than_a_segment_is_stored_and_the_batch_acked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (tx, mut rx, handle) = open("k", opts(dir.path()), Arc::default()).expect("open");
    // 300 KiB: over the 128 KiB segments (and the old per-record cap), well
    // under the 1 MiB buffer.
    let sizes = [10, 300 << 10, 10];
    let (token, ack) = AckToken::channel();
    let batch = EventBatch::new(sizes.iter().map(|&n| event(n)).collect(), token);
    assert_eq!(tx.send(batch, true).await, SendOutcome::Queued);
    assert_eq!(ack.await, AckStatus::Delivered);
    let mut got = Vec::new();
    while got.len() < sizes.len() {
        let b = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("records read back in time")
            .expect("buffer open");
        got.extend(b.events.iter().map(|e| e.body.len()));
        b.ack.resolve(AckStatus::Delivered);
    }
    assert_eq!(got, sizes);
    assert_eq!(handle.report().stats().oversize_events.load(Relaxed), 0);
    drop(tx);
    drop(rx);
    handle.close(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_batch_with_an_event_too_large_for_the_buffer_is_not_acked_delivered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let counters = Arc::new(Counters::default());
    let (tx, mut rx, handle) = open("k", opts(dir.path()), counters.clone()).expect("open");
    let (token, ack) = AckToken::channel();
    let batch = EventBatch::new(vec![event(10), event(2 << 20), event(10)], token);
    tx.send(batch, true).await;
    // The two small events are stored, the large one is dropped and counted:
    // the source must not be told everything was delivered.
    assert_eq!(ack.await, AckStatus::Dropped);
    let report = handle.report();
    assert_eq!(report.stats().oversize_events.load(Relaxed), 1);
    assert_eq!(counters.dropped.load(Relaxed), 1);
    let mut got = 0;
    while got < 2 {
        let b = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("records read back in time")
            .expect("buffer open");
        got += b.events.len();
        assert!(b.events.iter().all(|e| e.body.len() == 10));
        b.ack.resolve(AckStatus::Delivered);
    }
    assert_eq!(got, 2);
    drop(tx);
    drop(rx);
    handle.close(Duration::from_secs(5)).await;
}
