//! Test harness for the Kafka tests: real Apache Kafka brokers
//! ([`crate::kafka_broker`]: a shared single node, per-test nodes, a 3-node
//! cluster, SASL/ACL), an independent reader (Python confluent-kafka,
//! `kafka_consume.py`) that counts records by reading them, and the counters of a
//! daemon's shutdown report (the daemon itself is `common::Daemon`).
//!
//! A missing broker install or Python client fails the test with the command that
//! installs it (`scripts/install-deps.sh`); `SLUICE_SKIP_KAFKA_TESTS=1` skips
//! them instead, printing why.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

pub use crate::kafka_broker::{Broker, Kafka, Options, create_topics, free_port, kafka, shared};

/// Start of a Kafka test: the install, or return early (skip) when asked to.
macro_rules! need_kafka {
    () => {
        match crate::kafka_support::kafka() {
            Some(k) => k,
            None => return,
        }
    };
}
pub(crate) use need_kafka;

/// The broker every test of this binary shares ([`shared`]); topic names must
/// be unique to the test.
pub struct SharedBroker {
    addr: &'static str,
}

/// The shared broker, started on first use.
pub fn shared_broker(kafka: &Kafka) -> SharedBroker {
    SharedBroker {
        addr: shared(kafka),
    }
}

impl SharedBroker {
    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.addr.to_owned()
    }

    /// Create a topic (replication 1); one that exists already is fine.
    pub fn create_topic(&self, name: &str, partitions: u32) {
        let mut c = rdkafka::ClientConfig::new();
        c.set("bootstrap.servers", self.addr).set("log_level", "0");
        create_topics(c, &[(name, partitions)], 1);
    }
}

/// Poll `cond` until true; panic after `timeout` naming `what`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
}

/// Read every record of `topics` from the beginning with the independent reader;
/// stops once `expect` records were read and nothing more came for a second (or
/// after `idle` without any record).
pub fn consume(addr: &str, topics: &[&str], expect: usize, idle: Duration) -> Vec<Rec> {
    consume_with(addr, topics, expect, idle, &[])
}

/// [`consume`] with extra librdkafka properties for the reader (TLS, for instance).
pub fn consume_with(
    addr: &str,
    topics: &[&str],
    expect: usize,
    idle: Duration,
    properties: &[(&str, &str)],
) -> Vec<Rec> {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("records.tsv");
    let script = crate::common::manifest_dir().join("tests/it/kafka_consume.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .args(["--brokers", addr, "--out"])
        .arg(&out);
    cmd.args([
        "--expect",
        &expect.to_string(),
        "--idle",
        &idle.as_secs_f64().to_string(),
    ]);
    for t in topics {
        cmd.args(["--topic", t]);
    }
    for (k, v) in properties {
        cmd.args(["--set", &format!("{k}={v}")]);
    }
    let res = cmd.output().expect("run kafka_consume.py");
    assert!(
        res.status.success(),
        "reader failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let text = std::fs::read_to_string(&out).expect("reader output");
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 5, "bad reader line {l:?}");
            Rec {
                topic: f[0].to_owned(),
                partition: f[1].parse().expect("partition"),
                offset: f[2].parse().expect("offset"),
                key: (f[3] != "-").then(|| B64.decode(f[3]).expect("key base64")),
                value: B64.decode(f[4]).expect("value base64"),
            }
        })
        .collect()
}

/// The shutdown report's counter line for component `id` (`sinks.k`) in a
/// daemon's log, empty when absent.
pub fn counters(log: &str, id: &str) -> String {
    let needle = format!("Counters {id}:");
    log.lines()
        .find_map(|l| {
            l.find(&needle)
                .map(|i| l[i + needle.len()..].trim().to_owned())
        })
        .unwrap_or_default()
}

/// Value of `name=N` in a counters line, 0 when absent.
pub fn counter(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| {
            kv.trim_end_matches('.')
                .strip_prefix(&format!("{name}="))
                .map(str::to_owned)
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Write `lines` to a file (one per line) for an exec source to `cat`.
pub fn write_lines(path: &Path, lines: &[Vec<u8>]) {
    let mut data = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for l in lines {
        data.extend_from_slice(l);
        data.push(b'\n');
    }
    std::fs::write(path, data).expect("write lines");
}

/// Records in `topic` (partitions `0..partitions`) by high watermarks; 0 for a
/// partition that does not answer.
pub fn records_in(addr: &str, topic: &str, partitions: i32) -> u64 {
    records_in_with(addr, topic, partitions, "read_committed")
}

/// [`records_in`] with `isolation.level` = `isolation`: `read_uncommitted`
/// counts records of open transactions too (the high watermark, not the last
/// stable offset, librdkafka's default).
pub fn records_in_with(addr: &str, topic: &str, partitions: i32, isolation: &str) -> u64 {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", addr)
        .set("log_level", "0")
        .set("isolation.level", isolation);
    let Ok(c) = c.create::<BaseConsumer>() else {
        return 0;
    };
    (0..partitions)
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(5))
                .map_or(0, |(_, hi)| hi.max(0) as u64)
        })
        .sum()
}
