//! Kafka source against a real broker: records produced by an independent client
//! (librdkafka through rdkafka, not sluice's code) arrive with their metadata
//! fields, and the group's committed offsets — read by an independent consumer
//! of the same group — follow the acknowledgements: the end offsets once every
//! sink delivered, nothing while a sink stalls, everything re-read after it.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::common::Daemon;
use crate::kafka_support::{free_port, need_kafka, shared_broker, wait_for};

/// Base record timestamp: 2024-03-01T00:00:00Z, in ms.
pub const BASE_TS_MS: i64 = 1_709_251_200_000;

/// Produce `n` records to `topic`: value `v-{i}`, key `k-{i}`, header `h = hv-{i}`,
/// timestamp `ts(i)`, spread over partitions by key. Waits for every delivery.
pub fn produce(addr: &str, topic: &str, n: usize, ts: impl Fn(usize) -> i64) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .set("log_level", "0")
        .create()
        .expect("producer");
    for i in 0..n {
        let (k, v, h) = (format!("k-{i}"), format!("v-{i}"), format!("hv-{i}"));
        let rec = BaseRecord::to(topic)
            .key(&k)
            .payload(&v)
            .timestamp(ts(i))
            .headers(OwnedHeaders::new().insert(Header {
                key: "h",
                value: Some(&h),
            }));
        p.send(rec).map_err(|(e, _)| e).expect("enqueue");
    }
    p.flush(Duration::from_secs(30)).expect("flush");
}

fn group_consumer(addr: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", group)
        .set("log_level", "0")
        .create()
        .expect("consumer")
}

/// The group's committed offset per partition (`None`: nothing committed).
pub fn committed(addr: &str, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let c = group_consumer(addr, group);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    // A fresh group's coordinator may not be ready yet (NotCoordinator): retry.
    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        match c.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
            Ok(got) => break got,
            Err(e) if Instant::now() < deadline => {
                eprintln!("committed offsets: {e}; retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("committed offsets: {e}"),
        }
    };
    (0..partitions)
        .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        })
        .collect()
}

/// High watermark per partition.
pub fn end_offsets(addr: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
    let c = group_consumer(addr, "sluice-it-watermarks");
    (0..partitions)
        .map(|p| {
            let (_, hi) = c
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            Some(hi)
        })
        .collect()
}

fn lines_in(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if let Ok(text) = std::fs::read_to_string(e.path()) {
            out.extend(text.lines().map(str::to_owned));
        }
    }
    out
}

fn source_config(addr: &str, topic: &str, group: &str) -> String {
    format!(
        r#"
shutdown_timeout_secs = 3

[sources.in]
type = "kafka"
brokers = "{addr}"
topics = ["{topic}"]
group_id = "{group}"
start_from = "earliest"
"#
    )
}

#[test]
fn records_arrive_with_fields_and_offsets_commit_after_delivery() {
    let kafka = need_kafka!();
    let broker = shared_broker(&kafka);
    let addr = broker.addr();
    let (topic, group, n) = ("ksrc-fields", "ksrc-fields-g", 20_000);
    broker.create_topic(topic, 3);
    produce(&addr, topic, n, |i| BASE_TS_MS + i as i64);
    let dir = tempfile::tempdir().unwrap();
    let config = source_config(&addr, topic, group)
        + r#"
[sinks.f]
type = "file"
inputs = ["in"]
path = "$DIR/out/p{field.kafka.partition}.log"
encoding = "json"
"#;
    let mut d = Daemon::start(dir.path(), &config);
    let out = dir.path().join("out");
    let deadline = Instant::now() + Duration::from_secs(60);
    while lines_in(&out).len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} records arrived; log:\n{}",
            lines_in(&out).len(),
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let ends = end_offsets(&addr, topic, 3);
    wait_for(
        "committed offsets at the end",
        Duration::from_secs(20),
        || committed(&addr, group, topic, 3) == ends,
    );
    assert!(d.stop().success(), "log:\n{}", d.stderr());

    let lines = lines_in(&out);
    assert_eq!(lines.len(), n, "every record exactly once");
    let mut seen = HashSet::new();
    let mut next_offset: HashMap<i64, i64> = HashMap::new();
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).expect("json line");
        let msg = v["message"].as_str().expect("message");
        let i: i64 = msg.strip_prefix("v-").unwrap().parse().unwrap();
        assert!(seen.insert(i), "duplicate {msg}");
        assert_eq!(v["kafka.topic"], topic);
        assert_eq!(v["kafka.key"], format!("k-{i}"));
        assert_eq!(v["kafka.headers"]["h"], format!("hv-{i}"));
        assert_eq!(v["kafka.timestamp"], BASE_TS_MS + i);
        let expected_time = chrono::DateTime::from_timestamp_millis(BASE_TS_MS + i)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        assert_eq!(v["time"], expected_time);
        // Lines of one partition's file are in offset order, without holes.
        let p = v["kafka.partition"].as_i64().unwrap();
        let o = v["kafka.offset"].as_i64().unwrap();
        let next = next_offset.entry(p).or_insert(0);
        assert_eq!(o, *next, "partition {p} out of order");
        *next = o + 1;
    }
}

#[test]
fn a_stalled_sink_holds_the_commit_and_a_restart_rereads_everything() {
    let kafka = need_kafka!();
    let broker = shared_broker(&kafka);
    let addr = broker.addr();
    let (topic, group, n) = ("ksrc-stall", "ksrc-stall-g", 5_000);
    broker.create_topic(topic, 2);
    produce(&addr, topic, n, |i| BASE_TS_MS + i as i64);
    let dir = tempfile::tempdir().unwrap();
    // The forward sink's collector never answers (nothing listens on its port):
    // it never acknowledges, so no batch resolves though the file has them all.
    let dead = free_port();
    let stalled = source_config(&addr, topic, group)
        + &format!(
            r#"
[sinks.f]
type = "file"
inputs = ["in"]
path = "$DIR/first/all.log"

[sinks.stuck]
type = "forward"
inputs = ["in"]
servers = ["127.0.0.1:{dead}"]
connect_timeout_secs = 1
"#
        );
    let mut d = Daemon::start(dir.path(), &stalled);
    let first = dir.path().join("first");
    wait_for("every record in the file", Duration::from_secs(60), || {
        lines_in(&first).len() >= n
    });
    // Observe for several commit intervals: nothing may be committed.
    let watch_until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < watch_until {
        assert_eq!(
            committed(&addr, group, topic, 2),
            vec![None, None],
            "committed while a sink held the records"
        );
    }
    d.stop();
    assert_eq!(committed(&addr, group, topic, 2), vec![None, None]);

    // Without the stalled sink, everything is read again and then committed.
    let healthy = source_config(&addr, topic, group)
        + r#"
[sinks.f]
type = "file"
inputs = ["in"]
path = "$DIR/second/all.log"
"#;
    let mut d = Daemon::start(dir.path(), &healthy);
    let second = dir.path().join("second");
    wait_for("every record read again", Duration::from_secs(60), || {
        lines_in(&second).len() >= n
    });
    let ends = end_offsets(&addr, topic, 2);
    wait_for("committed at the end", Duration::from_secs(20), || {
        committed(&addr, group, topic, 2) == ends
    });
    assert!(d.stop().success(), "log:\n{}", d.stderr());
    let mut got: Vec<String> = lines_in(&second);
    got.sort();
    got.dedup();
    assert_eq!(got.len(), n);
}
