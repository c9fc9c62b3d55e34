//! The file source → a real Apache Kafka broker, killed with SIGKILL five times
//! while writers append to 50 files: every line reaches Kafka, and the
//! duplicates (lines sent again after a restart) are counted and stay within the
//! unacknowledged window of each kill — the records in Kafka beyond the
//! checkpoints the killed process left.
//!
//! Lines are fixed-width (`NN-IIIIIIII\n`, 12 bytes) so a checkpoint offset is a
//! line count.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;

use crate::common::{Daemon, wait_until};
use crate::kafka_support::{need_kafka, records_in, shared_broker};

const FILES: u64 = 50;
const PER_FILE: u64 = 40_000;
const LINE: u64 = 12;
const KILLS: u64 = 5;
const PARTITIONS: i32 = 4;

fn start(dir: &Path, config: &str) -> Daemon {
    let d = Daemon::start(dir, config);
    wait_until(Duration::from_secs(30), "sluice to start", || {
        d.stderr().contains("Sluice started.")
    });
    d
}

/// Lines covered by the checkpoints on disk (every file's acknowledged offset).
fn checkpointed_lines(dir: &Path) -> u64 {
    let p = dir.join("data/file_source/f/checkpoints.json");
    let Ok(b) = std::fs::read(p) else { return 0 };
    let v: Value = serde_json::from_slice(&b).expect("checkpoints are whole JSON");
    v["files"]
        .as_array()
        .map(|a| a.iter().map(|f| f["offset"].as_u64().unwrap() / LINE).sum())
        .unwrap_or(0)
}

/// How often each line is in `topic`, read from the start by a consumer of
/// our own (librdkafka), until `want` distinct lines or 60 s of nothing new.
fn read_all(addr: &str, topic: &str, want: usize) -> HashMap<Vec<u8>, u32> {
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", format!("{topic}-check"))
        .set("enable.auto.commit", "false")
        .set("log_level", "0")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut seen: HashMap<Vec<u8>, u32> = HashMap::with_capacity(want);
    let mut last_new = Instant::now();
    while seen.len() < want && last_new.elapsed() < Duration::from_secs(60) {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.expect("consume");
            *seen
                .entry(m.payload().unwrap_or_default().to_vec())
                .or_insert(0) += 1;
            last_new = Instant::now();
        }
    }
    // Duplicates after the last distinct line are read too.
    let hi = records_in(addr, topic, PARTITIONS);
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.values().map(|&k| u64::from(k)).sum::<u64>() < hi && Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(200)) {
            let m = m.expect("consume");
            *seen
                .entry(m.payload().unwrap_or_default().to_vec())
                .or_insert(0) += 1;
        }
    }
    seen
}

#[test]
fn kill_9_five_times_while_50_files_grow_every_line_reaches_kafka() {
    let kafka = need_kafka!();
    let broker = shared_broker(&kafka);
    let addr = broker.addr();
    // The shared broker outlives the test run: a topic of this run only.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let topic = &format!("file-kill9-{stamp}");
    broker.create_topic(topic, PARTITIONS as u32);
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let cfg = format!(
        r#"
        data_dir = "$DIR/data"
        [sources.f]
        type = "file"
        include = ["{}/*.log"]
        [sinks.k]
        type = "kafka"
        inputs = ["f"]
        brokers = "{addr}"
        topic = "{topic}"
        [sinks.k.librdkafka]
        "linger.ms" = 5
        "#,
        logs.display()
    );
    let total = FILES * PER_FILE;
    let written = Arc::new(AtomicU64::new(0));
    let mut d = start(dir.path(), &cfg);
    let t0 = Instant::now();
    // 50 writers append in bursts of 1,000 lines, paced so the stream lasts
    // through the five kills.
    let writers: Vec<_> = (0..FILES)
        .map(|f| {
            let path = logs.join(format!("{f:02}.log"));
            let written = written.clone();
            std::thread::spawn(move || {
                let mut file = std::fs::OpenOptions::new()
                    .append(true)
                    .create(true)
                    .open(&path)
                    .unwrap();
                for from in (0..PER_FILE).step_by(500) {
                    let burst: String = (from..from + 500)
                        .map(|i| format!("{f:02}-{i:08}\n"))
                        .collect();
                    file.write_all(burst.as_bytes()).unwrap();
                    written.fetch_add(500, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        })
        .collect();
    // Kill when the checkpoints cover 1/7, 2/7 … 5/7 of the lines (so each
    // process made acknowledged progress). The unacknowledged window of a kill:
    // what that process put in Kafka beyond the checkpoints it left, i.e. its
    // records minus the lines its checkpoints moved over.
    let (mut window, mut prev_records, mut prev_acked) = (0u64, 0u64, 0u64);
    for k in 1..=KILLS {
        let mark = total * k / (KILLS + 2);
        wait_until(
            Duration::from_secs(120),
            "the checkpoints to advance",
            || checkpointed_lines(dir.path()) >= mark,
        );
        d.signal(libc::SIGKILL);
        let _ = d.wait(Duration::from_secs(10));
        let in_kafka = records_in(&addr, topic, PARTITIONS);
        let acked = checkpointed_lines(dir.path());
        assert!(
            written.load(Ordering::Relaxed) < total,
            "the writers were done before kill {k}"
        );
        let w = (in_kafka - prev_records).saturating_sub(acked - prev_acked);
        eprintln!(
            "kill {k} at {:?}: {in_kafka} records in Kafka, {acked} lines checkpointed, window {w}",
            t0.elapsed()
        );
        window += w;
        (prev_records, prev_acked) = (in_kafka, acked);
        d = start(dir.path(), &cfg);
    }
    for w in writers {
        w.join().unwrap();
    }
    let wrote = t0.elapsed();
    wait_until(Duration::from_secs(180), "every record in Kafka", || {
        records_in(&addr, topic, PARTITIONS) >= total
    });
    assert!(d.stop().success(), "{}", d.stderr());
    let seen = read_all(&addr, topic, total as usize);
    let mut missing = Vec::new();
    for f in 0..FILES {
        for i in 0..PER_FILE {
            if !seen.contains_key(format!("{f:02}-{i:08}").as_bytes()) {
                missing.push((f, i));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "{} lines missing from Kafka, first {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_eq!(seen.len() as u64, total, "records that are no line written");
    let dups: u64 = seen.values().map(|&k| u64::from(k) - 1).sum();
    eprintln!(
        "kill -9 ×{KILLS}: {total} lines in {FILES} files (written in {wrote:?}, all in Kafka after {:?}), {dups} duplicates, unacknowledged windows {window}",
        t0.elapsed()
    );
    assert!(
        dups <= window,
        "{dups} duplicates, more than the unacknowledged windows ({window})"
    );
}
