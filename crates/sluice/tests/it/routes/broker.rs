//! Routes against a real broker (Apache Kafka): per-tenant topics with live
//! activation, bucket → partition, order over several producers, and the tenant
//! commands.

use std::collections::{BTreeMap, HashSet};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{counter, python_source, write_atomically};
use crate::common::Daemon;
use crate::kafka_support::{Broker, consume, counters, need_kafka};
use crate::tenant_acl::{tenant, text};

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Topic names on the broker, asked of an independent client (Python
/// confluent-kafka's AdminClient).
fn topics(addr: &str) -> HashSet<String> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys\nfrom confluent_kafka.admin import AdminClient\n\
             md = AdminClient({'bootstrap.servers': sys.argv[1]}).list_topics(timeout=10)\n\
             print('\\n'.join(md.topics))",
            addr,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The CDN case: 1,000 client ids, half active, through the tenant route into
/// one topic per client; a client added mid-run flows within 2 s.
#[test]
fn cdn_split_to_per_tenant_topics_with_live_activation() {
    let kafka = need_kafka!();
    // Its own broker: tenant ids (and topic names) repeat across these tests.
    let broker = Broker::start(&kafka);
    let dir = tempfile::tempdir().unwrap();
    let active: Vec<String> = (0..1000).step_by(2).map(|i| format!("c{i}")).collect();
    std::fs::write(dir.path().join("tenants.txt"), active.join("\n") + "\n").unwrap();
    // Phase 1: 3 lines per client, interleaved. Phase 2: c0 (active) and c1
    // (inactive until the test adds it) with their send time, for ~12 s.
    let source = python_source(
        "edge",
        "import time\nfor n in range(3):\n for c in range(1000):\n  print(f'c{c} line {c} {n}')\n\
         for i in range(2400):\n t = time.time()\n print(f'c0 t {t:.3f}')\n print(f'c1 t {t:.3f}')\n time.sleep(0.005)",
    );
    let config = format!(
        r#"
        data_dir = "$DIR/data"
        {source}
        [routes.by_tenant]
        type = "tenant"
        inputs = ["edge"]
        strip = true
        active_list = "$DIR/tenants.txt"
        [routes.by_tenant.admin]
        brokers = "{addr}"
        [sinks.k]
        type = "kafka"
        inputs = ["by_tenant"]
        brokers = "{addr}"
        topic = "logs-{{tenant}}"
        create_topics = {{ partitions = 1, replication_factor = 1 }}
        [sinks.k.librdkafka]
        "linger.ms" = 50
        "#,
        addr = broker.addr()
    );
    let mut d = Daemon::start(dir.path(), &config);
    // Let phase 2 run a while, then activate c1.
    std::thread::sleep(Duration::from_secs(4));
    let added = now();
    write_atomically(
        &dir.path().join("tenants.txt"),
        &(active.join("\n") + "\nc1\n"),
    );
    let st = d.wait(Duration::from_secs(120));
    let stderr = d.stderr();
    assert!(st.success(), "{stderr}");

    let names: Vec<String> = active.iter().map(|c| format!("logs-{c}")).collect();
    let on_broker = topics(&broker.addr());
    for i in (1..1000).step_by(2).filter(|i| *i != 1) {
        assert!(
            !on_broker.contains(&format!("logs-c{i}")),
            "inactive c{i} got a topic"
        );
    }
    // The active clients' topics hold exactly 1,500 + 2,400 records: the reader
    // waits for all of them. c1's count depends on when it was activated, so it
    // is read on its own (a reader told too few stops before the slowest topics).
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut recs = consume(&broker.addr(), &refs, 1500 + 2400, Duration::from_secs(30));
    recs.extend(consume(
        &broker.addr(),
        &["logs-c1"],
        1,
        Duration::from_secs(10),
    ));
    let mut by_topic: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in recs {
        by_topic
            .entry(r.topic)
            .or_default()
            .push(String::from_utf8(r.value).unwrap());
    }
    for c in (0..1000).step_by(2) {
        let got = &by_topic[&format!("logs-c{c}")];
        let phase1: Vec<String> = got
            .iter()
            .filter(|l| l.starts_with("line "))
            .cloned()
            .collect();
        let want: Vec<String> = (0..3).map(|n| format!("line {c} {n}")).collect();
        assert_eq!(
            phase1,
            want,
            "c{c}: its own lines, id stripped, in order; sink: {}\n{stderr}",
            counters(&stderr, "sinks.k")
        );
    }
    assert_eq!(
        by_topic["logs-c0"].len(),
        3 + 2400,
        "c0 lost lines during the reload"
    );
    let c1: Vec<f64> = by_topic["logs-c1"]
        .iter()
        .map(|l| l.strip_prefix("t ").unwrap().parse().unwrap())
        .collect();
    let first = c1.first().copied().expect("c1 never flowed");
    assert!(
        first - added < 2.0,
        "c1 flowed {:.2} s after activation",
        first - added
    );
    assert!(
        c1.iter().all(|t| *t > added - 0.5),
        "c1 lines from before its activation"
    );
    assert!(
        counter(&stderr, "routes.by_tenant", "dropped") >= 1500,
        "{stderr}"
    );
    // The first batch's 500 topics were created together, not one by one.
    assert!(stderr.contains("Kafka topics ready."), "{stderr}");
}

/// The bucket route's number as the Kafka partition: `partition = "{bucket}"`.
#[test]
fn bucket_route_picks_the_kafka_partition() {
    let kafka = need_kafka!();
    // Its own broker: tenant ids (and topic names) repeat across these tests.
    let broker = Broker::start(&kafka);
    broker.create_topic("logs", 5);
    let dir = tempfile::tempdir().unwrap();
    let source = python_source(
        "gen",
        "for r in range(4):\n for k in range(500):\n  print(f'user{k}:{r}')",
    );
    let config = format!(
        r#"
        data_dir = "$DIR/data"
        {source}
        [routes.bucketed]
        type = "bucket"
        inputs = ["gen"]
        buckets = 5
        key = "prefix"
        [sinks.k]
        type = "kafka"
        inputs = ["bucketed"]
        brokers = "{addr}"
        topic = "logs"
        partition = "{{bucket}}"
        [sinks.k.librdkafka]
        "linger.ms" = 20
        "#,
        addr = broker.addr()
    );
    let mut d = Daemon::start(dir.path(), &config);
    let st = d.wait(Duration::from_secs(60));
    assert!(st.success(), "{}", d.stderr());
    let recs = consume(&broker.addr(), &["logs"], 2000, Duration::from_secs(20));
    assert_eq!(recs.len(), 2000);
    let mut per_partition = [0usize; 5];
    let mut rounds: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for r in &recs {
        let line = String::from_utf8(r.value.clone()).unwrap();
        let (key, round) = line.split_once(':').unwrap();
        let bucket = sluice::route::bucket::bucket(key.as_bytes(), 5);
        assert_eq!(r.partition, bucket, "{line} in partition {}", r.partition);
        per_partition[bucket as usize] += 1;
        rounds
            .entry(key.to_owned())
            .or_default()
            .push(round.parse().unwrap());
    }
    assert!(per_partition.iter().all(|n| *n > 0), "{per_partition:?}");
    assert_eq!(rounds.len(), 500);
    for (key, got) in rounds {
        assert_eq!(got, vec![0, 1, 2, 3], "{key}: its lines in order");
    }
}

/// Per-tenant topics spread over several librdkafka clients (`producers`):
/// every line arrives once, in its tenant's topic, in order.
#[test]
fn per_tenant_topics_over_several_producers_keep_order() {
    let kafka = need_kafka!();
    // Its own broker: tenant ids (and topic names) repeat across these tests.
    let broker = Broker::start(&kafka);
    for c in 0..20 {
        broker.create_topic(&format!("logs-c{c}"), 1);
    }
    let dir = tempfile::tempdir().unwrap();
    let ids: Vec<String> = (0..20).map(|c| format!("c{c}")).collect();
    std::fs::write(dir.path().join("tenants.txt"), ids.join("\n") + "\n").unwrap();
    let source = python_source("edge", "for i in range(4000):\n print(f'c{i % 20} {i}')");
    let config = format!(
        r#"
        data_dir = "$DIR/data"
        {source}
        [routes.by_tenant]
        type = "tenant"
        inputs = ["edge"]
        strip = true
        active_list = "$DIR/tenants.txt"
        [sinks.k]
        type = "kafka"
        inputs = ["by_tenant"]
        brokers = "{addr}"
        topic = "logs-{{tenant}}"
        producers = 4
        [sinks.k.librdkafka]
        "linger.ms" = 20
        "#,
        addr = broker.addr()
    );
    let mut d = Daemon::start(dir.path(), &config);
    let st = d.wait(Duration::from_secs(60));
    assert!(st.success(), "{}", d.stderr());
    let names: Vec<String> = ids.iter().map(|c| format!("logs-{c}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let recs = consume(&broker.addr(), &refs, 4000, Duration::from_secs(20));
    let mut by_topic: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for r in recs {
        let n = String::from_utf8(r.value).unwrap().parse().unwrap();
        by_topic.entry(r.topic).or_default().push(n);
    }
    assert_eq!(by_topic.len(), 20);
    for c in 0..20u32 {
        let want: Vec<u32> = (0..200).map(|k| k * 20 + c).collect();
        assert_eq!(by_topic[&format!("logs-c{c}")], want, "c{c}");
    }
}

/// `tenant add/list/bundle/remove` against a broker without ACL support.
#[test]
fn tenant_commands_against_a_broker_without_acls() {
    let kafka = need_kafka!();
    // Its own broker: tenant ids (and topic names) repeat across these tests.
    let broker = Broker::start(&kafka);
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("tenants.txt");
    std::fs::write(&list, "# tenants\n").unwrap();
    let source = python_source(
        "edge",
        "for n in range(20):\n print(f'acme hello {n}')\n print(f'zed other {n}')",
    );
    let config = format!(
        r#"
        data_dir = "$DIR/data"
        {source}
        [routes.by_tenant]
        type = "tenant"
        inputs = ["edge"]
        strip = true
        active_list = "$DIR/tenants.txt"
        [routes.by_tenant.admin]
        partitions = 2              # brokers: those of the kafka sink below
        [sinks.k]
        type = "kafka"
        inputs = ["by_tenant"]
        brokers = "{addr}"
        topic = "logs-{{tenant}}"
        "#,
        addr = broker.addr()
    );
    std::fs::write(
        dir.path().join("sluice.toml"),
        config.replace("$DIR", dir.path().to_str().unwrap()),
    )
    .unwrap();

    // Without --no-acls: topic created, ACLs reported as not applied, exit 1,
    // tenant left inactive.
    let out = tenant(dir.path(), &["add", "acme"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("topic: created logs-acme (partitions 2"), "{t}");
    assert!(t.contains("ACLs were NOT applied"), "{t}");
    assert!(
        topics(&broker.addr()).contains("logs-acme"),
        "independent admin client does not see the topic"
    );
    assert!(!std::fs::read_to_string(&list).unwrap().contains("acme"));

    let out = tenant(dir.path(), &["add", "acme", "--no-acls"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("logs-acme already exists") && t.contains("activated: acme"),
        "{t}"
    );
    assert_eq!(std::fs::read_to_string(&list).unwrap(), "# tenants\nacme\n");

    let out = tenant(dir.path(), &["list"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    let row: Vec<&str> = t
        .lines()
        .find(|l| l.starts_with("acme "))
        .expect("acme row")
        .split_whitespace()
        .collect();
    assert_eq!(row, ["acme", "logs-acme", "2", "yes"]);

    // Traffic through the daemon, then the bundle's Python consumer reads it.
    let mut d = Daemon::start(dir.path(), &config);
    assert!(d.wait(Duration::from_secs(60)).success(), "{}", d.stderr());
    let unpack = crate::tenant_acl::unpack_bundle(dir.path(), "acme");
    for f in [
        "README.md",
        "kcat.sh",
        "logstash.conf",
        "filebeat.yml",
        "consumer.py",
    ] {
        assert!(
            unpack.join("acme").join(f).is_file(),
            "{f} missing from the bundle"
        );
    }
    let got = crate::tenant_acl::consumer_lines(&unpack, "acme", 20, 20);
    let want: Vec<String> = (0..20).map(|n| format!("hello {n}")).collect();
    assert_eq!(got, want);
    // The bundle's kcat.sh, with Debian's kcat as it is.
    assert_eq!(
        crate::tenant_acl::kcat_lines(&unpack.join("acme/kcat.sh"), 20, false),
        want
    );

    let out = tenant(dir.path(), &["remove", "acme"]);
    assert!(
        out.status.success()
            && text(&out).contains("deactivated: acme")
            && text(&out).contains("acls: none to revoke"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_to_string(&list).unwrap(), "# tenants\n");
}

#[test]
fn bad_tenant_ids_and_missing_brokers_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = r#"
        [sources.s]
        type = "stdin"
        [routes.t]
        type = "tenant"
        inputs = ["s"]
        active_list = "$DIR/t.txt"
        [sinks.n]
        type = "null"
        inputs = ["t"]
    "#;
    std::fs::write(
        dir.path().join("sluice.toml"),
        config.replace("$DIR", dir.path().to_str().unwrap()),
    )
    .unwrap();
    let out = tenant(dir.path(), &["add", "bad/id"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = tenant(dir.path(), &["add", "acme"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("no brokers"), "{}", text(&out));
}
