//! Events to topics: 100k events once and in order with templated topics and
//! keys, every compression codec, oversize events dropped or truncated.

use super::*;

#[test]
fn exec_100k_events_arrive_once_in_order_with_template_topics_and_keys() {
    let kafka = need_kafka!();
    let broker = shared_broker(&kafka);
    broker.create_topic("logs-app-a", 3);
    broker.create_topic("logs-app-b", 3);
    let dir = tempfile::tempdir().unwrap();
    let a: Vec<Vec<u8>> = (0..50_000).map(|i| line("a", i, 100)).collect();
    let b: Vec<Vec<u8>> = (0..50_000).map(|i| line("b", i, 100)).collect();
    write_lines(&dir.path().join("a.txt"), &a);
    write_lines(&dir.path().join("b.txt"), &b);
    let config = format!(
        r#"
[sources.a]
type = "exec"
command = ["cat", "{dir}/a.txt"]
restart = "never"
tag = "app-a"

[sources.b]
type = "exec"
command = ["cat", "{dir}/b.txt"]
restart = "never"
tag = "app-b"

[sinks.k]
type = "kafka"
inputs = ["a", "b"]
brokers = "{addr}"
topic = "logs-{{tag}}"
key = "{{source}}"
encoding = "raw"
"#,
        dir = dir.path().display(),
        addr = broker.addr()
    );
    let started = Instant::now();
    let mut sluice = Daemon::start(dir.path(), &config);
    let status = sluice.wait(Duration::from_secs(60));
    assert!(
        status.success(),
        "sluice failed: {status}\n{}",
        sluice.stderr()
    );
    let took = started.elapsed();
    let report = counters(&sluice.stderr(), "sinks.k");
    assert_eq!(counter(&report, "out"), 100_000, "{report}");
    assert_eq!(counter(&report, "errors"), 0, "{report}");

    let recs = consume(
        &broker.addr(),
        &["logs-app-a", "logs-app-b"],
        100_000,
        Duration::from_secs(10),
    );
    assert_eq!(recs.len(), 100_000, "records read back");
    let topics = by_topic(&recs);
    for (topic, source, lines) in [("logs-app-a", "a", &a), ("logs-app-b", "b", &b)] {
        let got = &topics[topic];
        assert!(
            got.iter()
                .all(|r| r.key.as_deref() == Some(source.as_bytes())),
            "keys of {topic}"
        );
        // One key → one partition → the exact source order, byte for byte, no duplicates.
        let partitions: HashSet<u32> = got.iter().map(|r| r.partition).collect();
        assert_eq!(partitions.len(), 1, "{topic} spread over {partitions:?}");
        let values: Vec<&[u8]> = got.iter().map(|r| r.value.as_slice()).collect();
        let expected: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        assert!(
            values == expected,
            "{topic}: records differ from the source lines"
        );
    }
    eprintln!("100k events exec → kafka in {took:?} (debug build)");
}

#[test]
fn every_compression_codec_round_trips() {
    let kafka = need_kafka!();
    let broker = shared_broker(&kafka);
    let codecs = ["none", "gzip", "snappy", "lz4", "zstd"];
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<Vec<u8>> = (0..2_000).map(|i| line("c", i, 200)).collect();
    write_lines(&dir.path().join("in.txt"), &lines);
    let mut config = format!(
        "[sources.in]\ntype = \"exec\"\ncommand = [\"cat\", \"{}/in.txt\"]\nrestart = \"never\"\n",
        dir.path().display()
    );
    for c in codecs {
        broker.create_topic(&format!("c-{c}"), 1);
        config.push_str(&format!(
            "\n[sinks.{c}]\ntype = \"kafka\"\ninputs = [\"in\"]\nbrokers = \"{}\"\ntopic = \"c-{c}\"\ncompression = \"{c}\"\n",
            broker.addr()
        ));
    }
    let mut sluice = Daemon::start(dir.path(), &config);
    let status = sluice.wait(Duration::from_secs(60));
    assert!(
        status.success(),
        "sluice failed: {status}\n{}",
        sluice.stderr()
    );
    let topics: Vec<String> = codecs.iter().map(|c| format!("c-{c}")).collect();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let recs = consume(
        &broker.addr(),
        &names,
        5 * lines.len(),
        Duration::from_secs(10),
    );
    let got = by_topic(&recs);
    for t in &names {
        let values: Vec<&[u8]> = got
            .get(t)
            .map(|v| v.iter().map(|r| r.value.as_slice()).collect())
            .unwrap_or_default();
        let expected: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        assert!(
            values == expected,
            "{t}: {} records, not the {} lines sent",
            values.len(),
            expected.len()
        );
    }
}

#[test]
fn oversize_events_are_dropped_or_truncated_and_counted() {
    let kafka = need_kafka!();
    let broker = shared_broker(&kafka);
    broker.create_topic("ov-drop", 1);
    broker.create_topic("ov-cut", 1);
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<Vec<u8>> = (0..1_000)
        .map(|i| line("ov", i, if i % 10 == 0 { 300 } else { 60 }))
        .collect();
    write_lines(&dir.path().join("in.txt"), &lines);
    let mut config = format!(
        "[sources.in]\ntype = \"exec\"\ncommand = [\"cat\", \"{}/in.txt\"]\nrestart = \"never\"\n",
        dir.path().display()
    );
    for (name, policy) in [("drop", "drop"), ("cut", "truncate")] {
        config.push_str(&format!(
            "\n[sinks.{name}]\ntype = \"kafka\"\ninputs = [\"in\"]\nbrokers = \"{}\"\ntopic = \"ov-{name}\"\n\
             max_message_bytes = 200\nwhen_oversize = \"{policy}\"\n",
            broker.addr()
        ));
    }
    let mut sluice = Daemon::start(dir.path(), &config);
    let status = sluice.wait(Duration::from_secs(60));
    assert!(
        status.success(),
        "sluice failed: {status}\n{}",
        sluice.stderr()
    );
    let dropped = counters(&sluice.stderr(), "sinks.drop");
    assert_eq!(
        (counter(&dropped, "out"), counter(&dropped, "dropped")),
        (900, 100),
        "{dropped}"
    );
    let cut = counters(&sluice.stderr(), "sinks.cut");
    assert_eq!(
        (counter(&cut, "out"), counter(&cut, "truncated")),
        (1_000, 100),
        "{cut}"
    );

    let recs = consume(
        &broker.addr(),
        &["ov-drop", "ov-cut"],
        1_900,
        Duration::from_secs(10),
    );
    let got = by_topic(&recs);
    let values = |t: &str| -> Vec<Vec<u8>> { got[t].iter().map(|r| r.value.clone()).collect() };
    let small: Vec<Vec<u8>> = lines.iter().filter(|l| l.len() <= 200).cloned().collect();
    assert_eq!(values("ov-drop"), small);
    let cut_lines: Vec<Vec<u8>> = lines
        .iter()
        .map(|l| l[..l.len().min(200)].to_vec())
        .collect();
    assert_eq!(values("ov-cut"), cut_lines);
}
