//! Disk buffers end to end: the real `sluice` binary with a file sink that cannot
//! write yet (its path is a directory), `kill -9`, restarts, `when_full`
//! policies with counters matching what is missing, `sluice buffer inspect` and
//! `replay`; and at library level, when sources' acknowledgements resolve.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice::ack::{AckStatus, AckToken};
use sluice::buffer::disk::{self, DiskOptions};
use sluice::buffer::{Acknowledgements, SendOutcome, WhenFull};
use sluice::event::{Event, EventBatch};
use sluice::metrics::Counters;

use crate::common::{Daemon, file_len, line, sluice_bin, wait_until};

/// Bytes one standard test line (99 digits, newline stripped) takes in a record,
/// beyond the first event of the record: flags, time, length, body.
const ENCODED_LINE: u64 = 1 + 8 + 1 + 99;

fn config(extra_buffer: &str) -> String {
    format!(
        r#"
        data_dir = "$DIR/data"
        shutdown_timeout_secs = 6
        [sources.p]
        type = "pipe"
        path = "$DIR/in.fifo"
        [sinks.f]
        type = "file"
        inputs = ["p"]
        path = "$DIR/out.log"
        [sinks.f.buffer]
        type = "disk"
        {extra_buffer}
        "#
    )
}

fn buffer_dir(dir: &Path) -> PathBuf {
    dir.join("data/buffers/f")
}

/// Bytes of the buffer's segment files.
fn buffer_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(buffer_dir(dir)) else {
        return 0;
    };
    rd.filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Write lines `from..to` of the standard stream into the FIFO.
fn feed(dir: &Path, from: u64, to: u64) {
    let fifo = dir.join("in.fifo");
    wait_until(Duration::from_secs(20), "the FIFO", || fifo.exists());
    let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let mut buf = Vec::with_capacity(1 << 20);
    for i in from..to {
        buf.extend_from_slice(line(i).as_bytes());
        if buf.len() >= 1 << 20 {
            w.write_all(&buf).unwrap();
            buf.clear();
        }
    }
    w.write_all(&buf).unwrap();
}

/// The line numbers in the output file, in file order.
fn delivered(dir: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(dir.join("out.log")).unwrap_or_default();
    text.lines()
        .map(|l| l.parse::<u64>().expect("a standard line"))
        .collect()
}

/// A counter from the "Disk buffer closed (...)" line of a log.
pub(crate) fn closed_counter(log: &str, name: &str) -> u64 {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("Disk buffer closed"))
        .unwrap_or_else(|| panic!("no close report in:\n{log}"));
    let key = format!("{name}=");
    let at = line
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        + key.len();
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The sink cannot write: its path is a directory.
fn block_sink(dir: &Path) {
    std::fs::create_dir_all(dir.join("out.log")).unwrap();
}

fn unblock_sink(dir: &Path) {
    std::fs::remove_dir(dir.join("out.log")).unwrap();
}

/// Wait until source `id` made `n` events (read from `/metrics`; the config
/// needs `[api] address = "127.0.0.1:0"`).
fn wait_source_read(d: &Daemon, id: &str, n: u64) {
    use crate::api::{api_addr, get};
    let addr = api_addr(d);
    let name = "sluice_component_received_events_total";
    let pattern = format!("component_id=\"{id}\"");
    let mut seen = 0;
    wait_until(
        Duration::from_secs(60),
        "the source to read every line",
        || {
            let (_, body) = get(addr, "/metrics");
            seen = body
                .lines()
                .find(|l| l.starts_with(name) && l.contains(&pattern))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0) as u64;
            seen >= n
        },
    );
    assert_eq!(seen, n, "the source made more events than lines sent");
}

fn wait_lines(dir: &Path, n: u64, within: Duration, d: &Daemon) {
    let out = dir.join("out.log");
    let deadline = Instant::now() + within;
    while file_len(&out) < n * 100 {
        assert!(
            Instant::now() < deadline,
            "{} of {n} lines delivered; log:\n{}",
            file_len(&out) / 100,
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kill_9_before_delivery_loses_nothing_and_restart_delivers_in_order() {
    const N: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    block_sink(dir.path());
    let mut d = Daemon::start(dir.path(), &config(""));
    feed(dir.path(), 0, N);
    wait_until(Duration::from_secs(30), "every line in the buffer", || {
        buffer_bytes(dir.path()) >= N * ENCODED_LINE
    });
    assert!(d.stderr().contains("Writing failed"), "{}", d.stderr());
    d.child.kill().unwrap();
    d.child.wait().unwrap();

    unblock_sink(dir.path());
    let mut d = Daemon::start(dir.path(), &config(""));
    wait_lines(dir.path(), N, Duration::from_secs(60), &d);
    // New lines after the backlog.
    feed(dir.path(), N, N + 1000);
    wait_lines(dir.path(), N + 1000, Duration::from_secs(30), &d);
    assert!(d.stop().success(), "{}", d.stderr());
    let log = d.stderr();
    assert!(log.contains("unacked_records="), "{log}");
    let got = delivered(dir.path());
    assert_eq!(
        got,
        (0..N + 1000).collect::<Vec<_>>(),
        "every line once, in order"
    );
    assert!(closed_counter(&log, "replayed_records") > 0, "{log}");
    assert_eq!(closed_counter(&log, "dropped_events"), 0);
}

#[test]
fn store_on_failure_delivers_the_backlog_in_order_when_the_sink_recovers() {
    const N: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    block_sink(dir.path());
    let mut d = Daemon::start(dir.path(), &config(""));
    feed(dir.path(), 0, N);
    wait_until(Duration::from_secs(30), "the sink to fail", || {
        d.stderr().contains("Writing failed")
    });
    // A failed batch is retried from the buffer: once the sink works again the
    // retry is a redelivery, counted below.
    unblock_sink(dir.path());
    feed(dir.path(), N, 2 * N);
    wait_lines(dir.path(), 2 * N, Duration::from_secs(60), &d);
    assert!(d.stop().success(), "{}", d.stderr());
    let log = d.stderr();
    assert_eq!(
        delivered(dir.path()),
        (0..2 * N).collect::<Vec<_>>(),
        "in order, once"
    );
    assert!(
        closed_counter(&log, "redelivered_events") > 0,
        "retries are counted:\n{log}"
    );
    assert_eq!(closed_counter(&log, "unacked_records"), 0);
}

/// Fill a 1 MiB buffer with a failing sink, stop, restart with a working sink:
/// what arrives plus what the counters say was dropped is exactly what was sent.
fn overflow(policy: &str) -> (Vec<u64>, u64, u64) {
    const N: u64 = 40_000; // ~4 MB of lines into a 1 MiB buffer
    let dir = tempfile::tempdir().unwrap();
    block_sink(dir.path());
    let cfg = config(&format!("max_bytes = 1048576\nwhen_full = \"{policy}\""));
    let cfg = format!("{cfg}\n[api]\naddress = \"127.0.0.1:0\"\n");
    let mut d = Daemon::start(dir.path(), &cfg);
    feed(dir.path(), 0, N);
    // The stop lets a source finish the read in hand and hands it to the
    // buffer: once the source made every line an event, all of them meet the
    // policy before the buffer closes.
    wait_source_read(&d, "p", N);
    assert!(d.stop().success(), "{}", d.stderr());
    let first = d.stderr();
    let dropped_first = closed_counter(&first, "dropped_events");
    assert!(buffer_bytes(dir.path()) <= 1 << 20);

    unblock_sink(dir.path());
    let mut d = Daemon::start(dir.path(), &config("max_bytes = 1048576"));
    let expect = N - dropped_first;
    wait_lines(dir.path(), expect, Duration::from_secs(30), &d);
    assert!(d.stop().success(), "{}", d.stderr());
    let got = delivered(dir.path());
    let second = d.stderr();
    assert_eq!(closed_counter(&second, "dropped_events"), 0);
    (got, dropped_first, N)
}

#[test]
fn drop_newest_keeps_the_oldest_and_counts_exactly_what_is_missing() {
    let (got, dropped, n) = overflow("drop_newest");
    assert!(dropped > 0, "the buffer must have overflowed");
    assert_eq!(got.len() as u64 + dropped, n, "delivered + dropped = sent");
    // Once full, what does not fit is dropped; a later, smaller batch may still
    // fit in what is left, so the survivors are not always a strict prefix.
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicates"
    );
    assert_eq!(got.first(), Some(&0), "the oldest line is kept");
    let prefix = got
        .iter()
        .enumerate()
        .take_while(|(i, v)| *i as u64 == **v)
        .count() as u64;
    assert!(
        prefix * 2 >= got.len() as u64,
        "mostly the oldest lines: prefix {prefix} of {}",
        got.len()
    );
}

#[test]
fn drop_oldest_keeps_the_newest_and_counts_exactly_what_is_missing() {
    let (got, dropped, n) = overflow("drop_oldest");
    assert!(dropped > 0, "the buffer must have overflowed");
    assert_eq!(got.len() as u64 + dropped, n, "delivered + dropped = sent");
    let unique: HashSet<u64> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len(), "no duplicates");
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order");
    assert_eq!(got.last(), Some(&(n - 1)), "the newest line is kept");
    assert!(!unique.contains(&0), "the oldest line is dropped");
}

#[test]
fn block_holds_the_writer_back_and_drops_nothing() {
    const N: u64 = 40_000;
    let dir = tempfile::tempdir().unwrap();
    block_sink(dir.path());
    let mut d = Daemon::start(
        dir.path(),
        &config("max_bytes = 1048576\nwhen_full = \"block\""),
    );
    let path = dir.path().to_owned();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        tid_tx.send(unsafe { libc::gettid() }).unwrap();
        feed(&path, 0, N)
    });
    let tid = tid_rx.recv().unwrap();
    // Positive signal: the buffer holds more than half its max_bytes (it stops at
    // about 560 KiB of files: records and segment headers count against it) and
    // the writer is parked in write(2) on the FIFO, most of its 4 MB unwritten.
    wait_until(
        Duration::from_secs(30),
        "a full buffer and the writer blocked in write(2)",
        || buffer_bytes(dir.path()) >= 512 << 10 && blocked_in_write(tid),
    );
    assert!(
        !writer.is_finished(),
        "the writer must be held back by the full buffer"
    );
    assert!(buffer_bytes(dir.path()) <= 1 << 20);
    unblock_sink(dir.path());
    writer.join().unwrap();
    wait_lines(dir.path(), N, Duration::from_secs(60), &d);
    assert!(d.stop().success(), "{}", d.stderr());
    assert_eq!(delivered(dir.path()), (0..N).collect::<Vec<_>>());
    assert_eq!(closed_counter(&d.stderr(), "dropped_events"), 0);
}

/// Whether thread `tid` of this process is blocked in write(2) now
/// (`/proc/self/task/TID/syscall` starts with the number of the call it waits in).
fn blocked_in_write(tid: libc::pid_t) -> bool {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<libc::c_long>().ok())
        == Some(libc::SYS_write)
}

fn run_cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(sluice_bin())
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A stopped sluice whose buffer holds lines 0..n undelivered.
fn stranded_buffer(dir: &Path, n: u64) {
    block_sink(dir);
    let mut d = Daemon::start(dir, &config(""));
    feed(dir, 0, n);
    wait_until(Duration::from_secs(30), "every line in the buffer", || {
        buffer_bytes(dir) >= n * ENCODED_LINE
    });
    assert!(d.stop().success(), "{}", d.stderr());
}

#[test]
fn inspect_shows_a_real_buffer_and_detects_a_flipped_byte() {
    let dir = tempfile::tempdir().unwrap();
    stranded_buffer(dir.path(), 5000);
    let bdir = buffer_dir(dir.path());
    let b = bdir.to_str().unwrap();
    let (ok, out, err) = run_cli(&["buffer", "inspect", b]);
    assert!(ok, "{out}{err}");
    for want in [
        "segments:         1",
        "unacked records:",
        "oldest unacked:",
        "00000000000000000000.seg",
        "crc:              ok",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let unacked: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("unacked records:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap();
    assert!(unacked > 0, "{out}");
    assert!(out.contains("s ago"), "{out}");

    let seg = bdir.join("00000000000000000000.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&seg, bytes).unwrap();
    let (ok, out, _) = run_cli(&["buffer", "inspect", b]);
    assert!(!ok, "damage must fail the check:\n{out}");
    assert!(out.contains("DAMAGED at offset"), "{out}");
}

#[test]
fn a_torn_tail_is_cut_with_a_log_line_and_the_rest_is_delivered() {
    const N: u64 = 3000;
    let dir = tempfile::tempdir().unwrap();
    stranded_buffer(dir.path(), N);
    let seg = buffer_dir(dir.path()).join("00000000000000000000.seg");
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[0xde, 0xad, 0xbe, 0xef, 0x01]).unwrap();
    drop(f);
    unblock_sink(dir.path());
    let mut d = Daemon::start(dir.path(), &config(""));
    wait_lines(dir.path(), N, Duration::from_secs(30), &d);
    assert!(d.stop().success(), "{}", d.stderr());
    assert!(
        d.stderr().contains("torn or corrupt tail cut off"),
        "{}",
        d.stderr()
    );
    assert_eq!(delivered(dir.path()), (0..N).collect::<Vec<_>>());
}

#[test]
fn replay_delivers_a_stranded_buffer_through_another_config() {
    const N: u64 = 8000;
    let dir = tempfile::tempdir().unwrap();
    stranded_buffer(dir.path(), N);
    let other = dir.path().join("other.toml");
    let target = dir.path().join("migrated.log");
    std::fs::write(
        &other,
        format!(
            "[sources.x]\ntype = \"stdin\"\n[sinks.m]\ntype = \"file\"\ninputs = [\"x\"]\npath = \"{}\"\n",
            target.display()
        ),
    )
    .unwrap();
    let b = buffer_dir(dir.path());
    let (ok, out, err) = run_cli(&[
        "buffer",
        "replay",
        b.to_str().unwrap(),
        "--to-config",
        other.to_str().unwrap(),
    ]);
    assert!(ok, "{out}\n{err}");
    assert!(
        err.contains("records, ") && err.contains("events"),
        "progress on stderr:\n{err}"
    );
    assert!(err.contains("0 records left in the buffer"), "{err}");
    let text = std::fs::read_to_string(&target).unwrap();
    let got: Vec<u64> = text.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(got, (0..N).collect::<Vec<_>>());
    // Replayed records are acknowledged: a second replay has nothing to do.
    let (ok, _, err) = run_cli(&[
        "buffer",
        "replay",
        b.to_str().unwrap(),
        "--to-config",
        other.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(err.contains("Replayed 0 records"), "{err}");
}

// ---- Library level: when a source's acknowledgement resolves. ----

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

/// Unacknowledged records according to `sluice buffer inspect`.
pub(crate) fn wal_unacked(dir: &Path) -> u64 {
    let (_, out, _) = run_cli(&["buffer", "inspect", dir.to_str().unwrap()]);
    out.lines()
        .find_map(|l| l.strip_prefix("unacked records:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no unacked line in {out}"))
}

// ---- Kafka: an outage longer than the buffer can hold. ----

/// The broker is absent while 4 MB of lines go into a 1 MiB disk buffer; then
/// it comes up. What Kafka holds plus what the counters call dropped is exactly
/// what was sent, with no duplicate.
fn kafka_overflow(policy: &str) {
    use crate::kafka_support::{Broker, consume, free_port, need_kafka};
    const N: u64 = 40_000;
    let kafka = need_kafka!();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        r#"
        data_dir = "$DIR/data"
        shutdown_timeout_secs = 20
        [sources.p]
        type = "pipe"
        path = "$DIR/in.fifo"
        [sinks.f]
        type = "kafka"
        inputs = ["p"]
        brokers = "127.0.0.1:{port}"
        topic = "overflow"
        create_topics = {{ partitions = 1, replication_factor = 1 }}
        [sinks.f.librdkafka]
        "reconnect.backoff.max.ms" = 500
        [sinks.f.buffer]
        type = "disk"
        max_bytes = 1048576
        when_full = "{policy}"
        [api]
        address = "127.0.0.1:0"
        "#
    );
    let mut d = Daemon::start(dir.path(), &cfg);
    feed(dir.path(), 0, N);
    // Every line met the full buffer before the broker comes.
    wait_source_read(&d, "p", N);
    let mut broker = Broker::new(&kafka, port);
    broker.start_process();
    let bdir = buffer_dir(dir.path());
    wait_until(Duration::from_secs(60), "the buffer to drain", || {
        wal_unacked(&bdir) == 0
    });
    assert!(d.stop().success(), "{}", d.stderr());
    let log = d.stderr();
    let dropped = closed_counter(&log, "dropped_events");
    assert!(dropped > 0, "the outage must overflow the buffer:\n{log}");
    let recs = consume(
        &broker.addr(),
        &["overflow"],
        (N - dropped) as usize,
        Duration::from_secs(10),
    );
    let got: Vec<u64> = recs
        .iter()
        .map(|r| std::str::from_utf8(&r.value).unwrap().parse().unwrap())
        .collect();
    let unique: HashSet<u64> = got.iter().copied().collect();
    assert_eq!(unique.len(), got.len(), "no duplicates");
    assert!(unique.iter().all(|&i| i < N));
    assert_eq!(
        got.len() as u64 + dropped,
        N,
        "in Kafka + dropped = sent ({policy})"
    );
    match policy {
        "drop_newest" => assert!(unique.contains(&0)),
        _ => assert!(unique.contains(&(N - 1))),
    }
}

#[test]
fn kafka_outage_longer_than_the_buffer_drop_newest_counts_exactly() {
    kafka_overflow("drop_newest");
}

#[test]
fn kafka_outage_longer_than_the_buffer_drop_oldest_counts_exactly() {
    kafka_overflow("drop_oldest");
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
