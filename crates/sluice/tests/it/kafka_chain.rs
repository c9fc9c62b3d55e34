//! The chain: Kafka topic A → sluice #1 (kafka source, consumer group → forward
//! sink with `require_ack`) → sluice #2 (forward source → kafka sink, memory
//! buffer, so its acks are end to end) → topic B, on a real broker. The far end
//! (#2) is SIGKILLed mid-run; while it is down #1 commits nothing past what #2
//! acked, and after #2 is back on the same port every record of A is in B
//! (duplicates allowed, counted) and #1's committed offsets are A's end offsets.

use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use crate::common::Daemon;
use crate::forward::bound_addrs;
use crate::kafka_source::{committed, end_offsets};
use crate::kafka_support::{consume, free_port, need_kafka, records_in, shared_broker, wait_for};

const PARTS: i32 = 4;
const N: usize = 100_000;

/// Produce `v-{i}` (key `k-{i}`) for every `i` of `range`; waits for delivery.
pub(crate) fn produce(addr: &str, topic: &str, range: Range<usize>) {
    let p: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
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

fn total(offsets: &[Option<i64>]) -> i64 {
    offsets.iter().map(|o| o.unwrap_or(0)).sum()
}

#[test]
fn kafka_forward_sluice_kafka_chain_loses_nothing_when_the_far_end_is_killed() {
    let kafka = need_kafka!();
    let broker = shared_broker(&kafka);
    let addr = broker.addr();
    let (topic_a, topic_b, group) = ("chain-a", "chain-b", "chain-g");
    broker.create_topic(topic_a, PARTS as u32);
    broker.create_topic(topic_b, PARTS as u32);
    produce(&addr, topic_a, 0..N / 2);

    let port = free_port();
    let far_dir = tempfile::tempdir().unwrap();
    let far_cfg = format!(
        r#"
shutdown_timeout_secs = 20

[sources.fw]
type = "forward"
address = "127.0.0.1:{port}"

[sinks.k]
type = "kafka"
inputs = ["fw"]
brokers = "{addr}"
topic = "{topic_b}"
[sinks.k.librdkafka]
"linger.ms" = 5
"#
    );
    let mut far = Daemon::start(far_dir.path(), &far_cfg);
    bound_addrs(&far, 1);

    let near_dir = tempfile::tempdir().unwrap();
    let near_cfg = format!(
        r#"
shutdown_timeout_secs = 20

[sources.in]
type = "kafka"
brokers = "{addr}"
topics = ["{topic_a}"]
group_id = "{group}"
start_from = "earliest"

[sinks.next]
type = "forward"
inputs = ["in"]
servers = ["127.0.0.1:{port}"]
require_ack = true
ack_timeout_secs = 10
connect_timeout_secs = 2
"#
    );
    let mut near = Daemon::start(near_dir.path(), &near_cfg);

    // Mid-run: records are reaching B.
    wait_for("records in B", Duration::from_secs(120), || {
        records_in(&addr, topic_b, PARTS) >= (N / 10) as u64
    });
    far.signal(libc::SIGKILL);
    far.wait(Duration::from_secs(10));
    let in_b_at_kill = records_in(&addr, topic_b, PARTS);

    // The second half arrives while the far end is down: #1 reads it, cannot
    // deliver it, and so must not commit it.
    produce(&addr, topic_a, N / 2..N);
    let ends = end_offsets(&addr, topic_a, PARTS);
    assert_eq!(total(&ends), N as i64);
    let refused = |log: &str| log.matches("Cannot use forward server.").count();
    wait_for(
        "sluice #1 to find the far end down",
        Duration::from_secs(60),
        || refused(&near.stderr()) >= 1,
    );
    let held = committed(&addr, group, topic_a, PARTS);
    assert!(
        total(&held) <= in_b_at_kill as i64 && total(&held) < N as i64,
        "committed {held:?} (B had {in_b_at_kill} records at the kill) while the far end is down"
    );

    // The far end again, on the same port.
    let mut far = Daemon::start(far_dir.path(), &far_cfg);
    bound_addrs(&far, 1);
    wait_for(
        "the committed offsets of #1's group at A's end",
        Duration::from_secs(180),
        || committed(&addr, group, topic_a, PARTS) == ends,
    );
    assert!(near.stop().success(), "#1's log:\n{}", near.stderr());
    assert!(far.stop().success(), "#2's log:\n{}", far.stderr());

    // An independent reader of B.
    let in_b = records_in(&addr, topic_b, PARTS) as usize;
    let recs = consume(&addr, &[topic_b], in_b, Duration::from_secs(10));
    assert_eq!(recs.len(), in_b, "records read back from B");
    let mut seen: HashMap<usize, u32> = HashMap::with_capacity(N);
    for r in &recs {
        let v = String::from_utf8_lossy(&r.value);
        let i: usize = v
            .strip_prefix("v-")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("unexpected record in B: {v:?}"));
        assert!(i < N, "unexpected record in B: {v:?}");
        *seen.entry(i).or_default() += 1;
    }
    let missing: Vec<usize> = (0..N).filter(|i| !seen.contains_key(i)).collect();
    let duplicates = recs.len() - seen.len();
    eprintln!(
        "chain: {N} records in A, {} in B ({duplicates} duplicates), {in_b_at_kill} in B at the kill, \
         committed while down {}",
        recs.len(),
        total(&held)
    );
    assert!(
        missing.is_empty(),
        "{} records of A missing from B, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}
