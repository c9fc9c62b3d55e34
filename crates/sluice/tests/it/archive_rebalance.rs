//! Two archivers in one consumer group on one topic, into one archive, while an
//! independent producer keeps writing: partitions move between them on a join, a
//! SIGKILL (the partitions return to the archiver that held them first) and a
//! clean stop. Afterwards every record is in the archive exactly once (read back
//! here and by `sluice archive verify`) and the committed offsets are the ends.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::archive::{count_files, read_all, verify};
use crate::common::Daemon;
use crate::kafka_source::{BASE_TS_MS, committed, end_offsets};
use crate::kafka_support::{need_kafka, shared_broker, wait_for};

const PARTS: i32 = 4;

/// Produce `v-{i}` (key `k-{i}`) in rounds of 250 records every 50 ms until
/// `stop`; returns how many were produced (all delivered).
fn producer(addr: String, topic: &'static str, stop: Arc<AtomicBool>) -> JoinHandle<usize> {
    std::thread::spawn(move || {
        let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", &addr)
            .set("linger.ms", "5")
            .set("log_level", "0")
            .create()
            .expect("producer");
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..250 {
                let (k, v) = (format!("k-{i}"), format!("v-{i}"));
                let rec = BaseRecord::to(topic)
                    .key(&k)
                    .payload(&v)
                    .timestamp(BASE_TS_MS + i as i64 * 10);
                p.send(rec).map_err(|(e, _)| e).expect("enqueue");
                i += 1;
            }
            p.flush(Duration::from_secs(30)).expect("flush");
            // Pacing of the load, not a wait for readiness.
            std::thread::sleep(Duration::from_millis(50));
        }
        i
    })
}

fn config(addr: &str, topic: &str, group: &str, root: &Path) -> String {
    format!(
        r#"
shutdown_timeout_secs = 10
data_dir = "$DIR/data"

[sources.in]
type = "kafka"
brokers = "{addr}"
topics = ["{topic}"]
group_id = "{group}"
[sources.in.librdkafka]
"session.timeout.ms" = 6000
"heartbeat.interval.ms" = 500

[sinks.cold]
type = "archive"
inputs = ["in"]
url = "file://{root}"
path = "{{field.kafka.topic}}/{{field.kafka.partition}}-{{first_offset}}.jsonl.zst"
max_file_bytes = 200000
max_file_secs = 1
"#,
        root = root.display()
    )
}

/// Partitions of `topic` named by the `n`th "assigned" line of a daemon's log.
fn assigned(log: &str, topic: &str, n: usize) -> Option<Vec<i32>> {
    let line = log
        .lines()
        .filter(|l| l.contains("Kafka partitions assigned."))
        .nth(n)?;
    let prefix = format!("{topic}/");
    let parts = line
        .split(|c: char| c.is_whitespace() || c == '=' || c == '"')
        .filter_map(|t| t.strip_prefix(&prefix)?.parse().ok())
        .collect();
    Some(parts)
}

/// Wait until the committed offset of every partition in `parts` passed its
/// value now: their owner is archiving.
fn wait_progress(addr: &str, group: &str, topic: &str, parts: &[i32], what: &str) {
    let before = committed(addr, group, topic, PARTS);
    wait_for(what, Duration::from_secs(60), || {
        let now = committed(addr, group, topic, PARTS);
        parts
            .iter()
            .all(|&p| now[p as usize].unwrap_or(-1) > before[p as usize].unwrap_or(-1))
    });
}

#[test]
fn two_archivers_in_one_group_archive_every_record_once_across_rebalances() {
    let kafka = need_kafka!();
    let broker = shared_broker(&kafka);
    let addr = broker.addr();
    let (topic, group) = ("archive-rebalance", "archive-rebalance-g");
    broker.create_topic(topic, PARTS as u32);
    let stop = Arc::new(AtomicBool::new(false));
    let produced = producer(addr.clone(), topic, stop.clone());

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let cfg = config(&addr, topic, group, &root);
    let all: Vec<i32> = (0..PARTS).collect();

    // A alone owns every partition.
    let mut a = Daemon::start(&dir_a, &cfg);
    wait_for("A assigned", Duration::from_secs(30), || {
        assigned(&a.stderr(), topic, 0).is_some_and(|p| p.len() == PARTS as usize)
    });
    wait_for("A's first files", Duration::from_secs(30), || {
        count_files(&root) > 0
    });
    wait_progress(&addr, group, topic, &all, "A archiving every partition");

    // B joins: some partitions move from A to B, mid-stream.
    let mut b = Daemon::start(&dir_b, &cfg);
    let mut b_parts = Vec::new();
    wait_for(
        "B assigned some partitions",
        Duration::from_secs(30),
        || {
            b_parts = assigned(&b.stderr(), topic, 0).unwrap_or_default();
            !b_parts.is_empty()
        },
    );
    eprintln!("B took {b_parts:?}");
    wait_progress(&addr, group, topic, &all, "A and B archiving");

    // B is SIGKILLed: after the session timeout its partitions return to A,
    // which held them before.
    b.signal(libc::SIGKILL);
    let _ = b.wait(Duration::from_secs(10));
    wait_for(
        "A assigned every partition again",
        Duration::from_secs(60),
        || {
            let log = a.stderr();
            (1..8).any(|n| assigned(&log, topic, n).is_some_and(|p| p.len() == PARTS as usize))
        },
    );
    wait_progress(&addr, group, topic, &b_parts, "A archiving B's partitions");

    // B again, then A stops cleanly: everything moves to B.
    let mut b = Daemon::start(&dir_b, &cfg);
    wait_for("B assigned again", Duration::from_secs(30), || {
        assigned(&b.stderr(), topic, 0).is_some_and(|p| !p.is_empty())
    });
    wait_progress(&addr, group, topic, &all, "A and B archiving again");
    assert!(a.stop().success(), "A's log:\n{}", a.stderr());
    wait_progress(&addr, group, topic, &all, "B archiving every partition");

    stop.store(true, Ordering::Relaxed);
    let n = produced.join().expect("producer thread");
    let ends = end_offsets(&addr, topic, PARTS);
    wait_for("every offset committed", Duration::from_secs(90), || {
        committed(&addr, group, topic, PARTS) == ends
    });
    assert!(b.stop().success(), "B's log:\n{}", b.stderr());

    let records = read_all(&root);
    let values: HashSet<&str> = records.iter().map(|r| r.3.as_str()).collect();
    assert_eq!(values.len(), n, "distinct values archived of {n} produced");
    assert_eq!(records.len(), n, "records in the archive (duplicates?)");
    let mut by_part: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for r in &records {
        by_part.entry(r.1).or_default().push(r.2);
    }
    for (p, mut offs) in by_part {
        offs.sort_unstable();
        let end = ends[p as usize].unwrap();
        assert_eq!(offs, (0..end).collect::<Vec<_>>(), "partition {p}");
    }
    let (ok, report) = verify(&root);
    assert!(ok, "verify failed:\n{report}");
    assert!(
        report.contains(&format!("records={n} ")) && report.contains("gaps=0 overlaps=0"),
        "{report}"
    );
}
