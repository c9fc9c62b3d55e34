//! Kafka → Kafka exactly once (issue 17): topic A → sluice (kafka source →
//! disk buffer → kafka sink with `exactly_once = true`) → topic B, on a real
//! broker. The source commits no offsets; the sink commits them inside its
//! transactions (`send_offsets_to_transaction`). sluice is SIGKILLed three
//! times while a transaction is open (records consumed, in the disk buffer,
//! produced, not yet committed) and restarted on the same
//! data dir: the source reads those again from the group's offsets, and a
//! read_committed reader of B finds every record of A exactly once, and the
//! group's committed offsets end at A's end.

use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::common::Daemon;
use crate::kafka_source::{committed, end_offsets};
use crate::kafka_support::{consume_with, need_kafka, records_in, shared_broker, wait_for};

const PARTS: i32 = 4;
const N: usize = 60_000;

/// Produce `v-{i}` for every `i` of `range`; waits for delivery.
fn produce(addr: &str, topic: &str, range: Range<usize>) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("linger.ms", "5")
        .set("log_level", "0")
        .create()
        .expect("producer");
    for i in range {
        let (k, v) = (format!("k-{i}"), format!("v-{i}"));
        p.send(BaseRecord::to(topic).key(&k).payload(&v))
            .map_err(|(e, _)| e)
            .expect("enqueue");
    }
    p.flush(Duration::from_secs(60)).expect("flush");
}

#[test]
fn kafka_to_kafka_exactly_once_through_three_kill_9_of_the_middle_sluice() {
    let kafka = need_kafka!();
    let broker = shared_broker(&kafka);
    let addr = broker.addr();
    let (topic_a, topic_b, group) = ("k2k-eo-a", "k2k-eo-b", "k2k-eo-g");
    broker.create_topic(topic_a, PARTS as u32);
    broker.create_topic(topic_b, PARTS as u32);
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        r#"
data_dir = "$DIR/data"
shutdown_timeout_secs = 20

[sources.in]
type = "kafka"
brokers = "{addr}"
topics = ["{topic_a}"]
group_id = "{group}"
start_from = "earliest"

[sinks.out]
type = "kafka"
inputs = ["in"]
brokers = "{addr}"
topic = "{topic_b}"
encoding = "raw"
exactly_once = true
checkpoint_topic = "{topic_b}-checkpoints"
# Transactions stay open 2 s: records produced into B (its high watermark,
# which the kills wait for) are not committed yet when the kill comes, so the
# restart finds records read from A and stored in the buffer that no committed
# transaction holds, and the source reads them again.
transaction_interval_ms = 2000
transaction_max_events = 1000000
[sinks.out.buffer]
type = "disk"
"#
    );
    let mut d = Daemon::start(dir.path(), &cfg);
    let third = N / 3;
    let mut logs = Vec::new();
    for (round, range) in [0..third, third..2 * third, 2 * third..N]
        .into_iter()
        .enumerate()
    {
        let start = range.start as u64;
        produce(&addr, topic_a, range);
        // Mid-round: part of this round is in B (records and transaction
        // markers), the rest still flowing.
        wait_for(
            &format!("round {round} reaching B"),
            Duration::from_secs(120),
            || records_in(&addr, topic_b, PARTS) >= start + (third / 4) as u64,
        );
        d.signal(libc::SIGKILL);
        d.wait(Duration::from_secs(10));
        logs.push(d.stderr());
        d = Daemon::start(dir.path(), &cfg);
    }
    let ends = end_offsets(&addr, topic_a, PARTS);
    assert_eq!(ends.iter().map(|o| o.unwrap_or(0)).sum::<i64>(), N as i64);
    wait_for(
        "the group's offsets, committed by the sink's transactions, at A's end",
        Duration::from_secs(180),
        || committed(&addr, group, topic_a, PARTS) == ends,
    );
    assert!(d.stop().success(), "{}", d.stderr());
    let log = d.stderr();
    assert!(
        log.contains("offsets are committed inside the sink's transactions"),
        "{log}"
    );

    let recs = consume_with(
        &addr,
        &[topic_b],
        N,
        Duration::from_secs(60),
        &[("isolation.level", "read_committed")],
    );
    let mut seen: HashMap<usize, u32> = HashMap::with_capacity(N);
    for r in &recs {
        let text = std::str::from_utf8(&r.value).unwrap();
        let i: usize = text
            .strip_prefix("v-")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("bad record {text:?}"));
        *seen.entry(i).or_default() += 1;
    }
    let missing: Vec<usize> = (0..N).filter(|i| !seen.contains_key(i)).collect();
    let twice: Vec<(usize, u32)> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(i, n)| (*i, *n))
        .collect();
    let skipped: u64 = logs
        .iter()
        .chain(std::iter::once(&log))
        .filter_map(|l| {
            l.lines()
                .find(|x| x.contains("Exactly-once Kafka sink stopped."))
        })
        .filter_map(|l| {
            l.split("skipped_events=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    eprintln!(
        "kafka → kafka exactly once: {} records read_committed from B, {} distinct, {} missing, {} twice; \
         skipped_events at the clean stop: {skipped}; starts that dropped records read again: {}",
        recs.len(),
        seen.len(),
        missing.len(),
        twice.len(),
        logs.iter()
            .chain(std::iter::once(&log))
            .filter(|l| l.contains("records the source read again are already produced"))
            .count()
    );
    assert!(
        missing.is_empty(),
        "missing from B: {:?}",
        &missing[..missing.len().min(10)]
    );
    assert!(
        twice.is_empty(),
        "duplicated in B: {:?}",
        &twice[..twice.len().min(10)]
    );
    assert_eq!(recs.len(), N);
    let rereads = logs
        .iter()
        .chain(std::iter::once(&log))
        .filter(|l| l.contains("records the source read again are already produced"))
        .count();
    assert!(
        rereads >= 1,
        "no restart met records read again: the scenario was not created"
    );
}
