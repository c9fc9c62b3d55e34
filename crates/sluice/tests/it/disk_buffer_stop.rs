//! Disk buffers at a stop and with records a sink refuses: what a disk buffer
//! keeps is reported as kept (exit 0), only what memory buffers abandon is an
//! error, counted per sink; records refused for good are dropped and counted
//! (Kafka) or moved to the dead-letter buffer (a file the sink cannot write),
//! never blocking the records behind them.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::common::{Daemon, line, wait_until};
use crate::disk_buffer::{closed_counter, wal_unacked};

fn write_fifo(path: &Path, lines: impl Iterator<Item = String>) {
    wait_until(Duration::from_secs(20), "the FIFO", || path.exists());
    let mut w = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let mut buf = Vec::new();
    for l in lines {
        buf.extend_from_slice(l.as_bytes());
    }
    w.write_all(&buf).unwrap();
}

fn ids(values: impl Iterator<Item = Vec<u8>>) -> Vec<u64> {
    values
        .map(|v| std::str::from_utf8(&v).unwrap().trim().parse().unwrap())
        .collect()
}

/// SIGTERM while the broker is down and the events sit in the disk buffer: they
/// are kept (logged with the count and the directory), the exit status is 0,
/// and a restart with the broker up delivers every one of them.
#[test]
fn sigterm_with_the_broker_down_keeps_disk_buffered_events_and_exits_0() {
    use crate::kafka_support::{Broker, consume, free_port, need_kafka};
    const N: u64 = 5_000;
    let kafka = need_kafka!();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        r#"
        data_dir = "$DIR/data"
        shutdown_timeout_secs = 4
        [sources.p]
        type = "pipe"
        path = "$DIR/in.fifo"
        [sinks.k]
        type = "kafka"
        inputs = ["p"]
        brokers = "127.0.0.1:{port}"
        topic = "kept"
        create_topics = {{ partitions = 1, replication_factor = 1 }}
        [sinks.k.librdkafka]
        "reconnect.backoff.max.ms" = 500
        [sinks.k.buffer]
        type = "disk"
        "#
    );
    let bdir = dir.path().join("data/buffers/k");
    let mut d = Daemon::start(dir.path(), &cfg);
    write_fifo(&dir.path().join("in.fifo"), (0..N).map(line));
    wait_until(Duration::from_secs(20), "the lines on disk", || {
        segment_bytes(&bdir) >= N * 109
    });
    let status = d.stop();
    let log = d.stderr();
    assert!(status.success(), "exit {status:?}:\n{log}");
    assert!(
        !log.contains("abandoning"),
        "nothing is abandoned while a disk buffer keeps it:\n{log}"
    );
    let kept = log
        .lines()
        .find(|l| l.contains("Undelivered events kept in the disk buffer"))
        .unwrap_or_else(|| panic!("no kept line:\n{log}"));
    assert!(kept.contains(bdir.to_str().unwrap()), "{kept}");
    assert!(!kept.contains("kept_records=0 "), "{kept}");
    assert_eq!(closed_counter(&log, "appended_events"), N, "{log}");
    let left = wal_unacked(&bdir);
    assert!(left > 0, "the buffer keeps the undelivered records");

    let mut broker = Broker::new(&kafka, port);
    broker.start_process();
    let mut d = Daemon::start(dir.path(), &cfg);
    wait_until(Duration::from_secs(60), "the buffer to drain", || {
        wal_unacked(&bdir) == 0
    });
    assert!(d.stop().success(), "{}", d.stderr());
    let recs = consume(
        &broker.addr(),
        &["kept"],
        N as usize,
        Duration::from_secs(10),
    );
    let got: HashSet<u64> = ids(recs.into_iter().map(|r| r.value)).into_iter().collect();
    assert_eq!(got, (0..N).collect::<HashSet<_>>(), "every line delivered");
}

/// Bytes of a WAL's segment files: every line appended takes at least 109
/// (inspect counts records, and a record holds many lines).
fn segment_bytes(bdir: &Path) -> u64 {
    std::fs::read_dir(bdir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Two memory-buffered Kafka sinks fed by one source (fan-out), broker down:
/// each sink's copy of every event the source read is counted as abandoned at
/// the deadline, the total is both copies (not the source's count once), and
/// the exit status is 1.
#[test]
fn fan_out_memory_sinks_count_undelivered_events_per_sink() {
    use crate::kafka_support::free_port;
    const N: u64 = 1_000;
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let sink = |name: &str| {
        format!(
            r#"
        [sinks.{name}]
        type = "kafka"
        inputs = ["p"]
        brokers = "127.0.0.1:{port}"
        topic = "{name}"
        "#
        )
    };
    let cfg = format!(
        r#"
        data_dir = "$DIR/data"
        shutdown_timeout_secs = 2
        [sources.p]
        type = "pipe"
        path = "$DIR/in.fifo"
        {}{}"#,
        sink("a"),
        sink("b")
    );
    let mut d = Daemon::start(dir.path(), &cfg);
    write_fifo(&dir.path().join("in.fifo"), (0..N).map(line));
    let status = d.stop();
    let log = d.stderr();
    assert_eq!(status.code(), Some(1), "{log}");
    let read = log
        .lines()
        .find(|l| l.contains("Counters sources.p:"))
        .map(|l| crate::kafka_support::counter(l, "out"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(read > 0, "{log}");
    for s in ["sinks.a", "sinks.b"] {
        let l = log
            .lines()
            .find(|l| l.contains("abandoning") && l.contains(s))
            .unwrap_or_else(|| panic!("no abandoning line for {s}:\n{log}"));
        assert!(l.contains(&format!("undelivered_events={read}")), "{l}");
    }
    let stopped = log
        .lines()
        .find(|l| l.contains("Stopped with failures"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        stopped.contains(&format!("undelivered={}", 2 * read)),
        "{stopped}"
    );
}

/// Records Kafka can never take (their topic name is invalid) are dropped and
/// counted; they do not hold up the disk buffer, which drains completely, and
/// every valid record is delivered once.
#[test]
fn kafka_rejected_records_are_dropped_and_do_not_block_the_disk_buffer() {
    use crate::kafka_support::{consume, need_kafka, shared_broker};
    const N: u64 = 2_000;
    let kafka = need_kafka!();
    let broker = shared_broker(&kafka);
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        r#"
        data_dir = "$DIR/data"
        shutdown_timeout_secs = 10
        [sources.good]
        type = "pipe"
        path = "$DIR/good.fifo"
        tag = "good"
        [sources.bad]
        type = "pipe"
        path = "$DIR/bad.fifo"
        tag = "bad topic!"
        [sinks.k]
        type = "kafka"
        inputs = ["good", "bad"]
        brokers = "{}"
        topic = "{{tag}}"
        create_topics = {{ partitions = 1, replication_factor = 1 }}
        [sinks.k.buffer]
        type = "disk"
        "#,
        broker.addr()
    );
    let bdir = dir.path().join("data/buffers/k");
    let mut d = Daemon::start(dir.path(), &cfg);
    write_fifo(&dir.path().join("good.fifo"), (0..N / 2).map(line));
    write_fifo(&dir.path().join("bad.fifo"), (0..10).map(line));
    write_fifo(&dir.path().join("good.fifo"), (N / 2..N).map(line));
    let recs_wanted = N as usize;
    let mut recs = Vec::new();
    wait_until(Duration::from_secs(60), "the good lines in Kafka", || {
        recs = consume(
            &broker.addr(),
            &["good"],
            recs_wanted,
            Duration::from_secs(3),
        );
        recs.len() >= recs_wanted
    });
    wait_until(Duration::from_secs(30), "the buffer to drain", || {
        wal_unacked(&bdir) == 0
    });
    assert!(d.stop().success(), "{}", d.stderr());
    let log = d.stderr();
    let got = ids(recs.into_iter().map(|r| r.value));
    assert_eq!(got.len() as u64, N, "each good line once");
    assert_eq!(got.iter().copied().collect::<HashSet<_>>().len() as u64, N);
    assert!(log.contains("Kafka refused events permanently"), "{log}");
    assert_eq!(closed_counter(&log, "redelivered_events"), 0, "{log}");
    let counters = log
        .lines()
        .find(|l| l.contains("Counters sinks.k:"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(counters.contains("errors=10"), "{counters}");
    assert!(counters.contains(&format!("out={N}")), "{counters}");
}

/// One record the file sink can never write (its tag makes a file name longer
/// than the system allows) while the lines around it are fine: the record is
/// moved to the dead-letter buffer, every other line is delivered, and the
/// dead-letter buffer holds exactly the refused events (inspectable).
#[test]
fn a_poison_record_goes_to_the_dead_letter_buffer_and_the_rest_is_delivered() {
    const N: u64 = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let long_tag = "x".repeat(300);
    let cfg = format!(
        r#"
        data_dir = "$DIR/data"
        shutdown_timeout_secs = 10
        [sources.good]
        type = "pipe"
        path = "$DIR/good.fifo"
        tag = "good"
        [sources.bad]
        type = "pipe"
        path = "$DIR/bad.fifo"
        tag = "{long_tag}"
        [sinks.f]
        type = "file"
        inputs = ["good", "bad"]
        path = "$DIR/out/{{tag}}.log"
        [sinks.f.buffer]
        type = "disk"
        "#
    );
    let bdir = dir.path().join("data/buffers/f");
    let dead = dir.path().join("data/buffers/f.dead-letter");
    let mut d = Daemon::start(dir.path(), &cfg);
    write_fifo(&dir.path().join("good.fifo"), (0..N / 3).map(line));
    write_fifo(&dir.path().join("bad.fifo"), (0..3).map(line));
    std::thread::sleep(Duration::from_millis(200));
    write_fifo(&dir.path().join("good.fifo"), (N / 3..N).map(line));
    let out = dir.path().join("out/good.log");
    let good = || -> HashSet<u64> {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        text.lines().map(|l| l.parse().unwrap()).collect()
    };
    wait_until(Duration::from_secs(60), "every good line", || {
        good().len() as u64 == N
    });
    wait_until(Duration::from_secs(30), "the buffer to drain", || {
        wal_unacked(&bdir) == 0
    });
    assert!(d.stop().success(), "{}", d.stderr());
    let log = d.stderr();
    assert_eq!(closed_counter(&log, "dead_letter_events"), 3, "{log}");
    assert!(log.contains("moved to the dead-letter buffer"), "{log}");
    assert!(
        wal_unacked(&dead) >= 1,
        "the dead-letter buffer holds the record"
    );
    assert_eq!(good(), (0..N).collect::<HashSet<_>>());
}
