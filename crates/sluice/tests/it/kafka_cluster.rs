//! Fault tests on a 3-node Apache Kafka cluster (replication 3,
//! `min.insync.replicas = 2`, `acks = all`), pipe → kafka through the real
//! daemon, the test writing into the FIFO so it controls when the fault comes:
//! (a) the partition leader's broker is SIGKILLed mid-run: nothing lost, order
//! per partition kept; (b) two of three brokers stopped (below min ISR) for 30 s:
//! the sink holds — the writer is held back by the bounded buffers — and
//! everything arrives once they return.

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer as _};

use crate::common::Daemon;
use crate::kafka_broker::Cluster;
use crate::kafka_support::{consume, need_kafka, wait_for};

const PARTITIONS: u32 = 3;

fn value(run: &str, i: u64) -> String {
    format!("{run} {i:08} {}", "x".repeat(80))
}

/// Records of `topic` on the cluster, by high watermarks (0 while unreachable).
fn high_watermarks(cluster: &Cluster, topic: &str) -> u64 {
    let Ok(c) = cluster.client_config().create::<BaseConsumer>() else {
        return 0;
    };
    (0..PARTITIONS as i32)
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(5))
                .map_or(0, |(_, hi)| hi.max(0) as u64)
        })
        .sum()
}

/// Writes lines `from..to` of run `run` into the FIFO, counting lines handed to
/// the pipe in `written`.
fn writer(
    fifo: PathBuf,
    run: &'static str,
    from: u64,
    to: u64,
    written: Arc<AtomicU64>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&fifo)
            .expect("open the FIFO");
        let mut buf = Vec::with_capacity(64 * 1024);
        for i in from..to {
            buf.extend_from_slice(value(run, i).as_bytes());
            buf.push(b'\n');
            if buf.len() >= 16 * 1024 || i + 1 == to {
                f.write_all(&buf).expect("write into the FIFO");
                buf.clear();
                written.store(i + 1, Ordering::SeqCst);
            }
        }
    })
}

fn wait_fifo(p: &Path) {
    wait_for("the daemon's FIFO", Duration::from_secs(30), || {
        std::fs::metadata(p).is_ok_and(|m| m.file_type().is_fifo())
    });
}

/// Reads `topic` back with the independent reader; asserts every one of
/// `total` values is there and that, per partition, values first appear in
/// the order they were written. Returns the duplicate count.
fn check_all_once_in_order(cluster: &Cluster, topic: &str, total: u64, log: &str) -> usize {
    let recs = consume(
        &cluster.bootstrap(),
        &[topic],
        total as usize,
        Duration::from_secs(20),
    );
    let mut seen = HashSet::new();
    let mut last: HashMap<u32, u64> = HashMap::new();
    let mut by_offset = recs.clone();
    by_offset.sort_by_key(|r| (r.partition, r.offset));
    for r in &by_offset {
        let text = String::from_utf8_lossy(&r.value);
        let seq: u64 = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("unexpected record {text:?}"));
        if seen.insert(seq) {
            let prev = last.insert(r.partition, seq);
            assert!(
                prev.is_none_or(|p| p < seq),
                "partition {} out of order: {seq} after {prev:?}",
                r.partition
            );
        }
    }
    let missing: Vec<u64> = (0..total).filter(|i| !seen.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "{} of {total} events missing (first {:?}); {} records read\n{log}",
        missing.len(),
        &missing[..missing.len().min(5)],
        recs.len()
    );
    recs.len() - seen.len()
}

fn config(dir: &Path, cluster: &Cluster, topic: &str) -> String {
    format!(
        r#"
shutdown_timeout_secs = 120
[sources.p]
type = "pipe"
path = "{dir}/in.pipe"

[sinks.k]
type = "kafka"
inputs = ["p"]
brokers = "{brokers}"
topic = "{topic}"
acks = "all"
buffer = {{ max_events = 10000, when_full = "block" }}
[sinks.k.librdkafka]
"queue.buffering.max.messages" = 10000
"reconnect.backoff.max.ms" = 1000
"message.timeout.ms" = 300000
"#,
        dir = dir.display(),
        brokers = cluster.bootstrap()
    )
}

#[test]
fn cluster_leader_killed_mid_run_and_min_isr_outage_lose_nothing() {
    let kafka = need_kafka!();
    let mut cluster = Cluster::start(&kafka, 3);

    // (a) 1,000,000 events; the leader of partition 0 is SIGKILLed once
    // 200,000 are in Kafka, while the rest are still to be written.
    let topic = "failover";
    cluster.create_topic(topic, PARTITIONS);
    let total = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &config(dir.path(), &cluster, topic));
    let fifo = dir.path().join("in.pipe");
    wait_fifo(&fifo);
    let written = Arc::new(AtomicU64::new(0));
    let first = writer(fifo.clone(), "a", 0, 300_000, written.clone());
    wait_for("200,000 records in Kafka", Duration::from_secs(120), || {
        high_watermarks(&cluster, topic) >= 200_000
    });
    let leader = cluster.leader(topic, 0).expect("partition 0 has a leader");
    cluster.node(leader).kill();
    first.join().unwrap();
    writer(fifo.clone(), "a", 300_000, total, written.clone())
        .join()
        .unwrap();
    d.signal(libc::SIGTERM);
    let st = d.wait(Duration::from_secs(180));
    let log = d.stderr();
    assert!(st.success(), "sluice: {st}\n{log}");
    let dups = check_all_once_in_order(&cluster, topic, total, &log);
    eprintln!("leader kill: {total} events all present, in order, {dups} duplicates");
    cluster.node(leader).start_process();

    // (b) two of three brokers killed for 30 s: below min ISR nothing is
    // acknowledged; the writer is held back by the bounded queues (10,000 in
    // the sink's buffer, 10,000 in librdkafka's, a pipe's worth) and every event
    // arrives once the brokers return.
    let topic = "below-min-isr";
    cluster.create_topic(topic, PARTITIONS);
    let total = 300_000;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &config(dir.path(), &cluster, topic));
    let fifo = dir.path().join("in.pipe");
    wait_fifo(&fifo);
    let written = Arc::new(AtomicU64::new(0));
    let w = writer(fifo, "b", 0, total, written.clone());
    wait_for("50,000 records in Kafka", Duration::from_secs(120), || {
        high_watermarks(&cluster, topic) >= 50_000
    });
    // Everything written is in Kafka or in a bounded queue (sink buffer,
    // librdkafka, the pipe: 25,000 with slack); what is in Kafka now plus
    // what may complete before the brokers go is under two queues' worth more.
    let in_kafka_before = high_watermarks(&cluster, topic);
    let stopped = [2, 3];
    for n in stopped {
        cluster.node(n).kill();
    }
    std::thread::sleep(Duration::from_secs(30));
    let held = written.load(Ordering::SeqCst);
    let bound = in_kafka_before + 2 * 25_000;
    assert!(
        held < total && held <= bound,
        "the writer got {held} lines in during the outage; the queues hold at most {bound}"
    );
    for n in stopped {
        cluster.node(n).spawn();
    }
    for n in stopped {
        cluster.node(n).wait_ready(3);
    }
    w.join().unwrap();
    d.signal(libc::SIGTERM);
    let st = d.wait(Duration::from_secs(300));
    let log = d.stderr();
    assert!(st.success(), "sluice: {st}\n{log}");
    let dups = check_all_once_in_order(&cluster, topic, total, &log);
    eprintln!(
        "min ISR outage: writer held at {held} lines; {total} events all present, {dups} duplicates"
    );
}
