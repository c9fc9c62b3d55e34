//! A failed fsync on a real filesystem (our EIO FUSE filesystem, see
//! `eio_fs`): no source acknowledgement waiting on it resolves `Delivered`,
//! and the buffer stays failed although the next fsync would succeed (Linux
//! reports a writeback error once). The WAL's own tests pin the mechanism
//! with a storage that fails one sync; this one runs the whole disk buffer
//! against the kernel.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice::ack::{AckReceiver, AckStatus, AckToken};
use sluice::buffer::disk::{self, DiskOptions};
use sluice::buffer::{Acknowledgements, SendOutcome, WhenFull};
use sluice::event::{Event, EventBatch};
use sluice::metrics::Counters;

use crate::common::wait_until;
use crate::eio_fs::EioMount;

fn opts(dir: &Path, fsync: Option<Duration>) -> DiskOptions {
    DiskOptions {
        dir: dir.to_owned(),
        max_bytes: 8 << 20,
        when_full: WhenFull::Block,
        fsync,
        acknowledgements: Acknowledgements::Disk,
        replay_events_per_sec: None,
        drain_timeout: Duration::from_secs(1),
        sync_interval: Duration::from_millis(20),
        tenant_series: None,
    }
}

fn batch(n: usize) -> (EventBatch, AckReceiver) {
    let (t, rx) = AckToken::channel();
    let events = (0..n)
        .map(|i| Event::new(Bytes::from(format!("e{i}")), 0, "t".into(), "s".into()))
        .collect();
    (EventBatch::new(events, t), rx)
}

async fn outcome(rx: AckReceiver) -> AckStatus {
    tokio::time::timeout(Duration::from_secs(10), rx)
        .await
        .expect("the acknowledgement resolves in time")
}

#[tokio::test]
async fn a_failed_fsync_on_a_real_filesystem_never_acknowledges_delivered() {
    if !crate::fuse::fuse_usable() {
        return;
    }
    let mount = EioMount::new();
    for (name, fsync) in [
        ("always", None),
        ("interval", Some(Duration::from_millis(20))),
    ] {
        let failed_before = mount.faults.failed_fsyncs();
        let (tx, _rx, handle) = disk::open(
            "k",
            opts(&mount.join(name), fsync),
            Arc::new(Counters::default()),
        )
        .expect("open the buffer on the FUSE mount");
        // While fsync works, the disk acknowledgement comes.
        let (b, ack) = batch(10);
        assert_eq!(tx.send(b, true).await, SendOutcome::Queued);
        assert_eq!(outcome(ack).await, AckStatus::Delivered, "{name}");
        // The first checkpoint is written by the first periodic sync; after it
        // (no acknowledgements move the watermark) the next fsync is the
        // next batch's.
        let checkpoint = mount.join(name).join("checkpoint");
        wait_until(Duration::from_secs(10), "the first checkpoint", || {
            checkpoint.exists()
        });

        mount.faults.fail_next_fsyncs(1);
        let (b, ack) = batch(10);
        tx.send(b, true).await;
        assert_eq!(outcome(ack).await, AckStatus::Errored, "{name}");
        assert_eq!(mount.faults.failed_fsyncs(), failed_before + 1, "{name}");

        // The filesystem would sync again now; the lost pages stay lost, so the
        // buffer takes nothing more rather than acknowledging it.
        let (b, ack) = batch(1);
        tx.send(b, true).await;
        assert_ne!(outcome(ack).await, AckStatus::Delivered, "{name}");
        drop(tx);
        handle.close(Duration::from_secs(5)).await;
    }
}
