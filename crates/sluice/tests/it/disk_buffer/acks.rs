//! Library level: when a source's acknowledgement resolves (`disk`,
//! `end_to_end`, `none`), and the replay rate cap; then the config refusing
//! acknowledgement and buffer keys that need a disk buffer.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice::ack::{AckStatus, AckToken};
use sluice::buffer::disk::{self, DiskOptions};
use sluice::buffer::{Acknowledgements, SendOutcome, WhenFull};
use sluice::event::{Event, EventBatch};
use sluice::metrics::Counters;

use super::wal_unacked;
use crate::common::sluice_bin;

fn opts(dir: &Path, acks: Acknowledgements, fsync: Option<Duration>) -> DiskOptions {
    DiskOptions {
        dir: dir.to_owned(),
        max_bytes: 8 << 20,
        when_full: WhenFull::Block,
        fsync,
        acknowledgements: acks,
        replay_events_per_sec: None,
        drain_timeout: Duration::from_secs(1),
        sync_interval: Duration::from_millis(50),
        tenant_series: None,
    }
}

fn batch(n: usize) -> (EventBatch, sluice::ack::AckReceiver) {
    let (t, rx) = AckToken::channel();
    let events = (0..n)
        .map(|i| Event::new(Bytes::from(format!("e{i}")), 0, "t".into(), "s".into()))
        .collect();
    (EventBatch::new(events, t), rx)
}

async fn resolved_within(rx: &mut sluice::ack::AckReceiver, d: Duration) -> Option<AckStatus> {
    tokio::time::timeout(d, rx).await.ok()
}

#[tokio::test]
async fn disk_acknowledgements_resolve_once_fsynced_without_the_sink() {
    for fsync in [None, Some(Duration::from_millis(50))] {
        let dir = tempfile::tempdir().unwrap();
        let (tx, _rx, handle) = disk::open(
            "k",
            opts(dir.path(), Acknowledgements::Disk, fsync),
            Arc::new(Counters::default()),
        )
        .unwrap();
        let (b, mut ack) = batch(10);
        assert_eq!(tx.send(b, true).await, SendOutcome::Queued);
        // The sink never reads: the disk has it, so the source may ack.
        assert_eq!(
            resolved_within(&mut ack, Duration::from_secs(5)).await,
            Some(AckStatus::Delivered)
        );
        drop(tx);
        handle.close(Duration::from_secs(5)).await;
    }
}

#[tokio::test]
async fn end_to_end_acknowledgements_wait_for_the_sink_and_survive_its_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx, handle) = disk::open(
        "k",
        opts(
            dir.path(),
            Acknowledgements::EndToEnd,
            Some(Duration::from_millis(20)),
        ),
        Arc::new(Counters::default()),
    )
    .unwrap();
    let (b, mut ack) = batch(3);
    tx.send(b, true).await;
    let got = rx.recv().await.unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(
        resolved_within(&mut ack, Duration::from_millis(300)).await,
        None,
        "held until delivered"
    );
    // The sink fails it: the buffer sends it again, the source still waits.
    got.ack.resolve(AckStatus::Errored);
    let again = tokio::time::timeout(Duration::from_secs(3), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.events, got.events);
    assert_eq!(
        resolved_within(&mut ack, Duration::from_millis(100)).await,
        None
    );
    again.ack.resolve(AckStatus::Delivered);
    assert_eq!(
        resolved_within(&mut ack, Duration::from_secs(3)).await,
        Some(AckStatus::Delivered)
    );
    drop(tx);
    assert!(
        tokio::time::timeout(Duration::from_secs(3), rx.recv())
            .await
            .unwrap()
            .is_none()
    );
    drop(rx);
    handle.close(Duration::from_secs(5)).await;
    // Delivered and checkpointed: nothing to replay.
    let insp = wal_unacked(dir.path());
    assert_eq!(insp, 0);
}

#[tokio::test]
async fn none_acknowledgements_resolve_on_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, _rx, handle) = disk::open(
        "k",
        opts(
            dir.path(),
            Acknowledgements::None,
            Some(Duration::from_secs(60)),
        ),
        Arc::new(Counters::default()),
    )
    .unwrap();
    let (b, mut ack) = batch(1);
    tx.send(b, true).await;
    assert_eq!(
        resolved_within(&mut ack, Duration::from_millis(50)).await,
        Some(AckStatus::Delivered)
    );
    drop(tx);
    handle.close(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn replay_events_per_sec_caps_the_catch_up_rate() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(
        dir.path(),
        Acknowledgements::Disk,
        Some(Duration::from_millis(20)),
    );
    o.replay_events_per_sec = Some(20_000);
    o.drain_timeout = Duration::from_secs(30);
    let (tx, mut rx, handle) = disk::open("k", o, Arc::new(Counters::default())).unwrap();
    for _ in 0..40 {
        tx.send(batch(1000).0, true).await;
    }
    drop(tx);
    let start = Instant::now();
    let mut n = 0;
    while let Some(b) = rx.recv().await {
        n += b.len();
        b.ack.resolve(AckStatus::Delivered);
    }
    let took = start.elapsed();
    assert_eq!(n, 40_000);
    // 40k events at 20k/s with a one-second burst allowance: at least ~1 s.
    assert!(took >= Duration::from_millis(900), "took {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    drop(rx);
    handle.close(Duration::from_secs(5)).await;
}

#[test]
fn config_refuses_disk_acknowledgements_without_a_disk_buffer_and_disk_keys_on_memory() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[sources.i]\ntype = \"stdin\"\n[sinks.a]\ntype = \"null\"\ninputs = [\"i\"]\nacknowledgements = \"disk\"\n\
         [sinks.b]\ntype = \"null\"\ninputs = [\"i\"]\nbuffer = { fsync_interval_ms = 5 }\n\
         [sinks.c]\ntype = \"null\"\ninputs = [\"i\"]\nbuffer = { type = \"disk\", max_bytes = 10, fsync = \"sometimes\" }\n",
    )
    .unwrap();
    let out = Command::new(sluice_bin())
        .args(["validate", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("needs a disk buffer"), "{err}");
    assert!(
        err.contains("buffer.fsync_interval_ms applies to buffer.type = \"disk\" only"),
        "{err}"
    );
    assert!(err.contains("sometimes"), "{err}");
}
