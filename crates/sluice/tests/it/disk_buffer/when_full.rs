//! `when_full` policies: a buffer filled by a failing sink (a file sink, then
//! Kafka absent for longer than the buffer holds) keeps what its policy says,
//! and what arrives plus what the counters call dropped is what was sent.

use std::collections::HashSet;
use std::time::Duration;

use super::{
    block_sink, buffer_bytes, buffer_dir, closed_counter, config, delivered, feed, unblock_sink,
    wait_lines, wait_source_read, wal_unacked,
};
use crate::common::{Daemon, wait_until};

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
