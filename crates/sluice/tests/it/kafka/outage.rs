//! The broker down mid-run, or absent at start: nothing is lost.

use super::*;

#[test]
fn broker_down_for_10s_mid_run_loses_nothing() {
    let kafka = need_kafka!();
    let mut broker = Broker::start(&kafka);
    broker.create_topic("outage", 2);
    // About 2,000 lines/s for 16 s; the broker is away from 3 s to 13 s.
    let total = 32_000;
    let generator = format!(
        "import sys, time\nfor i in range({total}):\n    sys.stdout.write('outage %07d %s\\n' % (i, 'x' * 80))\n    \
         if i % 100 == 99:\n        sys.stdout.flush(); time.sleep(0.05)\n"
    );
    let config = format!(
        r#"
shutdown_timeout_secs = 60
[sources.gen]
type = "exec"
command = ["python3", "-c", {generator:?}]
restart = "never"

[sinks.k]
type = "kafka"
inputs = ["gen"]
brokers = "{addr}"
topic = "outage"
key = "{{source}}"
[sinks.k.librdkafka]
"reconnect.backoff.max.ms" = 1000
"#,
        addr = broker.addr()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut sluice = Daemon::start(dir.path(), &config);
    // The outage comes once events flow (some are in Kafka), mid-run.
    wait_for(
        "records in Kafka before the outage",
        Duration::from_secs(60),
        || records_in(&broker.addr(), "outage", 2) >= 2_000,
    );
    broker.kill();
    // The outage itself: the broker is away for 10 s.
    std::thread::sleep(Duration::from_secs(10));
    broker.start_process();
    let status = sluice.wait(Duration::from_secs(90));
    assert!(
        status.success(),
        "sluice failed: {status}\n{}",
        sluice.stderr()
    );
    let recs = consume(&broker.addr(), &["outage"], total, Duration::from_secs(10));
    let unique: HashSet<&[u8]> = recs.iter().map(|r| r.value.as_slice()).collect();
    let missing: Vec<usize> = (0..total)
        .filter(|i| !unique.contains(format!("outage {i:07} {}", "x".repeat(80)).as_bytes()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {total} events missing after the outage (first {:?}); {} records read\n{}",
        missing.len(),
        &missing[..missing.len().min(5)],
        recs.len(),
        sluice.stderr()
    );
    let log = sluice.stderr();
    assert!(
        log.contains("unreachable"),
        "the outage went unnoticed:\n{log}"
    );
    assert!(
        log.contains("reachable again"),
        "the recovery went unnoticed:\n{log}"
    );
    eprintln!(
        "outage: {total} events all present, {} duplicates",
        recs.len() - unique.len()
    );
}

#[test]
fn broker_absent_at_start_then_all_events_arrive() {
    let kafka = need_kafka!();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<Vec<u8>> = (0..10_000).map(|i| line("late", i, 100)).collect();
    write_lines(&dir.path().join("in.txt"), &lines);
    let config = format!(
        r#"
shutdown_timeout_secs = 60
[sources.in]
type = "exec"
command = ["cat", "{dir}/in.txt"]
restart = "never"

[sinks.k]
type = "kafka"
inputs = ["in"]
brokers = "127.0.0.1:{port}"
topic = "late"
create_topics = {{ partitions = 2, replication_factor = 1 }}
[sinks.k.librdkafka]
"reconnect.backoff.max.ms" = 1000
"#,
        dir = dir.path().display()
    );
    let mut sluice = Daemon::start(dir.path(), &config);
    wait_for(
        "the unreachable-broker line",
        Duration::from_secs(30),
        || sluice.stderr().contains("unreachable"),
    );
    let mut broker = Broker::new(&kafka, port);
    broker.start_process();
    let status = sluice.wait(Duration::from_secs(60));
    assert!(
        status.success(),
        "sluice failed: {status}\n{}",
        sluice.stderr()
    );
    let recs = consume(
        &broker.addr(),
        &["late"],
        lines.len(),
        Duration::from_secs(10),
    );
    let got: HashSet<&[u8]> = recs.iter().map(|r| r.value.as_slice()).collect();
    assert_eq!(recs.len(), lines.len(), "records read back");
    assert!(
        lines.iter().all(|l| got.contains(l.as_slice())),
        "some events are missing"
    );
}
