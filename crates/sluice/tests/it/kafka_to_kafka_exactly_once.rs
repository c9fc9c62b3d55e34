//! Kafka → Kafka exactly once (issue 17): topic A → sluice (kafka source →
//! disk buffer → kafka sink with `exactly_once = true`) → topic B, on a real
//! broker. The source commits no offsets; the sink commits them inside its
//! transactions (`send_offsets_to_transaction`). sluice is SIGKILLed three
//! times while records flow and restarted on the same data dir: a
//! read_committed reader of B finds every record of A exactly once, and the
//! group's offsets, committed only by the transactions, end at A's end. Each
//! kill lands inside an open transaction (10 s long), so a restart meets
//! records the source reads again and drops their second copy (asserted).

use std::collections::HashMap;
use std::time::Duration;

use crate::common::Daemon;
use crate::kafka_chain::produce;
use crate::kafka_source::{committed, end_offsets};
use crate::kafka_support::{consume_with, need_kafka, records_in_with, shared_broker, wait_for};

const PARTS: i32 = 4;
const N: usize = 60_000;

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
# A killed member's partitions go to the restarted one within 6 s, not 45.
[sources.in.librdkafka]
"session.timeout.ms" = 6000
"heartbeat.interval.ms" = 1000

[sinks.out]
type = "kafka"
inputs = ["in"]
brokers = "{addr}"
topic = "{topic_b}"
encoding = "raw"
exactly_once = true
checkpoint_topic = "{topic_b}-checkpoints"
# Transactions stay open 10 s (the most allowed): a step of records is
# produced into B (counted read_uncommitted) long before it commits, so each
# kill finds records read from A and stored in the buffer that no committed
# transaction holds, and the source reads them again after the restart.
transaction_interval_ms = 10000
transaction_max_events = 1000000
[sinks.out.buffer]
type = "disk"
"#
    );
    let mut d = Daemon::start(dir.path(), &cfg);
    let total = |o: &[Option<i64>]| o.iter().map(|o| o.unwrap_or(0)).sum::<i64>();
    produce(&addr, topic_a, 0..N - 6000);
    let mut sent = N - 6000;
    let mut logs = Vec::new();
    for round in 0..3 {
        // 2,000 more records into A; once they are in B (in the open
        // transaction), the kill.
        let in_b = || records_in_with(&addr, topic_b, PARTS, "read_uncommitted");
        let before = in_b();
        produce(&addr, topic_a, sent..sent + 2000);
        sent += 2000;
        wait_for(
            &format!("round {round}: the step in B"),
            Duration::from_secs(120),
            || in_b() >= before + 2000,
        );
        d.signal(libc::SIGKILL);
        d.wait(Duration::from_secs(10));
        logs.push(d.stderr());
        d = Daemon::start(dir.path(), &cfg);
    }
    produce(&addr, topic_a, sent..N);
    let ends = end_offsets(&addr, topic_a, PARTS);
    assert_eq!(total(&ends), N as i64);
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
