//! Re-sends after a restart, per tenant: records handed to the sink and not
//! settled before the buffer closed are delivered again after it reopens and
//! counted `resent` for their tenants — unless the sink skips them as already
//! at its destination. A stop after everything was delivered counts nothing.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;

use super::{DiskBufferHandle, DiskOptions, DiskReceiver, DiskSender, open};
use crate::ack::{AckReceiver, AckStatus, AckToken};
use crate::buffer::{Acknowledgements, SendOutcome, WhenFull};
use crate::event::{Event, EventBatch};

fn opts(dir: &std::path::Path) -> DiskOptions {
    DiskOptions {
        dir: dir.join("buf"),
        max_bytes: 1 << 20,
        when_full: WhenFull::Block,
        fsync: None,
        acknowledgements: Acknowledgements::Disk,
        replay_events_per_sec: None,
        drain_timeout: Duration::from_secs(1),
        sync_interval: Duration::from_millis(100),
        tenant_series: Some(10),
    }
}

fn batch(tenants: &[&str]) -> (EventBatch, AckReceiver) {
    let events = tenants
        .iter()
        .map(|t| {
            let mut e = Event::new(Bytes::from_static(b"line"), 0, "t".into(), "s".into());
            e.tenant = Some(Arc::from(*t));
            e
        })
        .collect();
    let (token, rx) = AckToken::channel();
    (EventBatch::new(events, token), rx)
}

type Buffer = (DiskSender, DiskReceiver, DiskBufferHandle);

async fn store(b: &Buffer, tenants: &[&str]) {
    let (batch, stored) = batch(tenants);
    assert_eq!(b.0.send(batch, true).await, SendOutcome::Queued);
    assert_eq!(stored.await, AckStatus::Delivered, "stored");
}

async fn next(b: &mut Buffer) -> EventBatch {
    tokio::time::timeout(Duration::from_secs(10), b.1.recv())
        .await
        .expect("a record in time")
        .expect("the buffer is open")
}

/// Per tenant: (delivered, resent).
fn counts(b: &Buffer, tenant: &str) -> (u64, u64) {
    let c = b.0.tenant_book().expect("kept accounts").tenant(tenant);
    (
        c.delivered_events.load(Relaxed),
        c.resent_events.load(Relaxed),
    )
}

async fn close(b: Buffer) {
    let (tx, rx, handle) = b;
    drop(tx);
    drop(rx);
    handle.close(Duration::from_secs(10)).await;
}

/// Store two records; the sink delivers the first and holds the second
/// (sent, never acknowledged) when the buffer stops.
async fn first_run(dir: &std::path::Path) {
    let mut b = open("k", opts(dir), Arc::default()).expect("open");
    store(&b, &["a", "a", "a"]).await;
    store(&b, &["b", "b", "a"]).await;
    next(&mut b).await.ack.resolve(AckStatus::Delivered);
    let held = next(&mut b).await;
    settled(&b, "a", 3).await;
    assert_eq!(counts(&b, "a"), (3, 0));
    close(b).await;
    drop(held);
}

/// Wait until the WAL thread applied what the sink resolved.
async fn settled(b: &Buffer, tenant: &str, delivered: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while counts(b, tenant).0 < delivered {
        assert!(tokio::time::Instant::now() < deadline, "{tenant} settled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn records_handed_before_a_restart_count_as_resent_when_delivered_again() {
    let dir = tempfile::tempdir().unwrap();
    first_run(dir.path()).await;

    let mut b = open("k", opts(dir.path()), Arc::default()).expect("reopen");
    let again = next(&mut b).await;
    assert_eq!(again.events.len(), 3, "the held record is replayed");
    again.ack.resolve(AckStatus::Delivered);
    settled(&b, "b", 2).await;
    assert_eq!(counts(&b, "b"), (2, 2), "b: delivered once, re-sent twice");
    assert_eq!(counts(&b, "a"), (4, 1));
    // A record stored after the restart is no re-send.
    store(&b, &["a", "c"]).await;
    next(&mut b).await.ack.resolve(AckStatus::Delivered);
    settled(&b, "c", 1).await;
    assert_eq!(counts(&b, "a"), (5, 1));
    assert_eq!(counts(&b, "c"), (1, 0));
    close(b).await;

    // Everything was delivered: a clean stop and start re-sends nothing, and
    // the counts are kept.
    let mut b = open("k", opts(dir.path()), Arc::default()).expect("reopen");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), b.1.recv())
            .await
            .is_err(),
        "nothing to replay"
    );
    assert_eq!(counts(&b, "a"), (5, 1));
    assert_eq!(counts(&b, "b"), (2, 2));
    close(b).await;
}

#[tokio::test]
async fn a_record_the_sink_finds_at_its_destination_is_not_counted_resent() {
    let dir = tempfile::tempdir().unwrap();
    first_run(dir.path()).await;

    let mut b = open("k", opts(dir.path()), Arc::default()).expect("reopen");
    let again = next(&mut b).await;
    let seq = b.1.last_seq().expect("a position");
    // As the exactly-once Kafka sink does for a record its checkpoint covers.
    b.1.already_delivered(seq);
    again.ack.resolve(AckStatus::Delivered);
    settled(&b, "b", 2).await;
    assert_eq!(counts(&b, "b"), (2, 0));
    assert_eq!(counts(&b, "a"), (4, 0));
    close(b).await;
}
