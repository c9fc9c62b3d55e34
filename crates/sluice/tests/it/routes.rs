//! Routes end to end through the real daemon: exec sources → routes → file sinks
//! with `{tenant}` in the path. Tenant split and strip, unknown ids dropped or
//! passed (counted), the active list reloaded live while traffic flows, rules with
//! globs and a default, stable and spread buckets, rate limits (drop and block),
//! level filters, and the config errors of a bad graph.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{Daemon, sluice_bin, wait_until};

/// The `key=N` value of a component's shutdown counter line, 0 when absent.
fn counter(stderr: &str, component: &str, key: &str) -> u64 {
    let tag = format!("Counters {component}: ");
    let line = stderr
        .lines()
        .find(|l| l.contains(&tag))
        .unwrap_or_else(|| panic!("no counters for {component}:\n{stderr}"));
    let rest = &line[line.find(&tag).unwrap() + tag.len()..];
    rest.trim_end_matches('.')
        .split_whitespace()
        .find_map(|kv| {
            kv.strip_prefix(&format!("{key}="))
                .map(|v| v.parse().unwrap())
        })
        .unwrap_or(0)
}

fn read_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// An exec source running a Python program (stdout unbuffered), ending with it.
fn python_source(name: &str, program: &str) -> String {
    let program = program
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n");
    format!(
        "[sources.{name}]\ntype = \"exec\"\nrestart = \"never\"\ncommand = [\"python3\", \"-u\", \"-c\", \"{program}\"]\n"
    )
}

fn run_to_end(dir: &Path, config: &str) -> String {
    let mut d = Daemon::start(dir, config);
    let st = d.wait(Duration::from_secs(60));
    let stderr = d.stderr();
    assert!(st.success(), "{stderr}");
    stderr
}

#[test]
fn tenant_split_strips_ids_and_counts_unknown() {
    let dir = tempfile::tempdir().unwrap();
    // 20 clients, even ones active; 50 lines each, interleaved.
    let active: Vec<String> = (0..20).step_by(2).map(|i| format!("c{i}")).collect();
    std::fs::write(
        dir.path().join("tenants.txt"),
        format!("# active\n{}\n", active.join("\n")),
    )
    .unwrap();
    let source = python_source(
        "edge",
        "for n in range(50):\n for c in range(20):\n  print(f'c{c} GET /{c}/{n} 200')",
    );
    let config = format!(
        r#"
        data_dir = "$DIR/data"
        {source}
        [routes.by_tenant]
        type = "tenant"
        inputs = ["edge"]
        split = "first_space"
        strip = true
        active_list = "$DIR/tenants.txt"
        unknown = "drop"
        [sinks.per_tenant]
        type = "file"
        inputs = ["by_tenant"]
        path = "$DIR/out/logs-{{tenant}}.log"
        "#
    );
    let stderr = run_to_end(dir.path(), &config);
    for c in 0..20 {
        let got = read_lines(&dir.path().join(format!("out/logs-c{c}.log")));
        if c % 2 == 1 {
            assert!(got.is_empty(), "inactive c{c} got lines");
            continue;
        }
        let want: Vec<String> = (0..50).map(|n| format!("GET /{c}/{n} 200")).collect();
        assert_eq!(got, want, "c{c}: exactly its lines, id stripped, in order");
    }
    assert_eq!(counter(&stderr, "routes.by_tenant", "in"), 1000);
    assert_eq!(counter(&stderr, "routes.by_tenant", "out"), 500);
    assert_eq!(counter(&stderr, "routes.by_tenant", "dropped"), 500);
}

#[test]
fn unknown_pass_keeps_the_line_without_a_tenant() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tenants.txt"), "acme\n").unwrap();
    let source = python_source(
        "edge",
        "print('acme a1')\nprint('zed z1')\nprint('acme a2')",
    );
    let config = format!(
        r#"
        data_dir = "$DIR/data"
        {source}
        [routes.t]
        type = "tenant"
        inputs = ["edge"]
        strip = true
        active_list = "$DIR/tenants.txt"
        unknown = "pass"
        [sinks.f]
        type = "file"
        inputs = ["t"]
        path = "$DIR/out/t-{{tenant}}.log"
        "#
    );
    let stderr = run_to_end(dir.path(), &config);
    assert_eq!(
        read_lines(&dir.path().join("out/t-acme.log")),
        vec!["a1", "a2"]
    );
    assert_eq!(read_lines(&dir.path().join("out/t-.log")), vec!["zed z1"]);
    assert_eq!(counter(&stderr, "routes.t", "dropped"), 0);
}

fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn active_list_reloads_live_without_pausing_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("tenants.txt");
    std::fs::write(&list, "a\n").unwrap();
    // About 400 lines/s per client, for up to 60 s (the test stops it sooner).
    let source = python_source(
        "edge",
        "import time\nfor n in range(30000):\n print(f'a {n}')\n print(f'b {n}')\n time.sleep(0.0025)",
    );
    let config = format!(
        r#"
        data_dir = "$DIR/data"
        {source}
        [routes.t]
        type = "tenant"
        inputs = ["edge"]
        strip = true
        active_list = "$DIR/tenants.txt"
        [sinks.f]
        type = "file"
        inputs = ["t"]
        path = "$DIR/out/{{tenant}}.log"
        "#
    );
    let mut d = Daemon::start(dir.path(), &config);
    let (a, b) = (dir.path().join("out/a.log"), dir.path().join("out/b.log"));
    wait_until(Duration::from_secs(20), "a's lines", || {
        read_lines(&a).len() > 200
    });
    assert!(read_lines(&b).is_empty());

    write_atomically(&list, "a\nb\n");
    let added = Instant::now();
    wait_until(Duration::from_secs(5), "b's lines after adding b", || {
        !read_lines(&b).is_empty()
    });
    let took = added.elapsed();
    assert!(took < Duration::from_secs(2), "b flowed after {took:?}");

    // SIGHUP re-reads the list too (and reloads the config).
    let reloads = |s: &str| s.matches("Active list reloaded.").count();
    let before = reloads(&d.stderr());
    d.signal(libc::SIGHUP);
    wait_until(Duration::from_secs(5), "a reload on SIGHUP", || {
        reloads(&d.stderr()) > before
    });

    // Removing b stops its lines while a keeps flowing: once the reload is
    // logged and a's lines routed before it have landed (a grew by 400, about
    // a second of traffic), b does not grow while a grows by another 200.
    let before = reloads(&d.stderr());
    write_atomically(&list, "a\n");
    wait_until(Duration::from_secs(5), "the reload removing b", || {
        reloads(&d.stderr()) > before
    });
    let a_at_reload = read_lines(&a).len();
    wait_until(
        Duration::from_secs(20),
        "a flowing after the reload",
        || read_lines(&a).len() > a_at_reload + 400,
    );
    let b_len = read_lines(&b).len();
    let a_len = read_lines(&a).len();
    wait_until(Duration::from_secs(20), "a flowing on", || {
        read_lines(&a).len() > a_len + 200
    });
    assert_eq!(read_lines(&b).len(), b_len, "b still flowing after removal");
    assert!(d.stop().success(), "{}", d.stderr());

    // a never lost a line across three reloads: its numbers are contiguous.
    let got = read_lines(&a);
    for (i, l) in got.iter().enumerate() {
        assert_eq!(l, &i.to_string(), "a's line {i}");
    }
    let stderr = d.stderr();
    assert!(counter(&stderr, "routes.t", "dropped") > 0);
}

#[test]
fn rules_route_by_tag_glob_with_default_and_drop() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = String::from("data_dir = \"$DIR/data\"\n");
    for (name, tag, n) in [
        ("web", "app.web", 30),
        ("db", "app.db.slow", 20),
        ("noise", "ignore_me", 40),
        ("misc", "misc", 10),
    ] {
        config.push_str(&python_source(
            name,
            &format!("for i in range({n}):\n print(f'{name} {{i}}')"),
        ));
        config.push_str(&format!("tag = \"{tag}\"\n"));
    }
    config.push_str(
        r#"
        [routes.by_category]
        type = "rules"
        inputs = ["web", "db", "noise", "misc"]
        rules = [
          { match = "ignore*", to = "drop" },
          { match = "app.**", to = "apps" },
          { match = "app.web", to = "never" },
        ]
        default = "rest"
        [sinks.apps]
        type = "file"
        inputs = ["by_category.apps"]
        path = "$DIR/out/apps-{tag}.log"
        [sinks.rest]
        type = "file"
        inputs = ["by_category.rest"]
        path = "$DIR/out/rest.log"
        # Every port needs a consumer (validation); first match wins, so this
        # one never gets an event.
        [sinks.never]
        type = "file"
        inputs = ["by_category.never"]
        path = "$DIR/out/never.log"
        "#,
    );
    let stderr = run_to_end(dir.path(), &config);
    assert!(read_lines(&dir.path().join("out/never.log")).is_empty());
    assert_eq!(
        read_lines(&dir.path().join("out/apps-app.web.log")).len(),
        30
    );
    assert_eq!(
        read_lines(&dir.path().join("out/apps-app.db.slow.log")).len(),
        20
    );
    let rest = read_lines(&dir.path().join("out/rest.log"));
    assert_eq!(
        rest,
        (0..10).map(|i| format!("misc {i}")).collect::<Vec<_>>()
    );
    assert_eq!(counter(&stderr, "routes.by_category", "dropped"), 40);
    assert_eq!(counter(&stderr, "routes.by_category", "out"), 60);
}

#[test]
fn buckets_are_stable_and_spread() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = String::from("data_dir = \"$DIR/data\"\n");
    // 2,000 keys, three lines each, the copies far apart.
    config.push_str(&python_source(
        "gen",
        "for r in range(3):\n for k in range(2000):\n  print(f'user{k}:{r}')",
    ));
    config.push_str(
        r#"
        [routes.bucketed]
        type = "bucket"
        inputs = ["gen"]
        buckets = 5
        key = "prefix"
        delimiter = ":"
        "#,
    );
    for b in 0..5 {
        config.push_str(&format!(
            "[sinks.b{b}]\ntype = \"file\"\ninputs = [\"bucketed.{b}\"]\npath = \"$DIR/out/{b}.log\"\n"
        ));
    }
    run_to_end(dir.path(), &config);
    let mut home: HashMap<String, usize> = HashMap::new();
    for b in 0..5 {
        let got = read_lines(&dir.path().join(format!("out/{b}.log")));
        assert!(
            (400 * 3 * 9 / 10..=400 * 3 * 11 / 10).contains(&got.len()),
            "bucket {b}: {}",
            got.len()
        );
        for l in got {
            let key = l.split(':').next().unwrap().to_owned();
            assert_eq!(
                sluice::route::bucket::bucket(key.as_bytes(), 5) as usize,
                b,
                "{key}"
            );
            assert_eq!(
                *home.entry(key).or_insert(b),
                b,
                "key moved between buckets"
            );
        }
    }
    assert_eq!(home.len(), 2000);
}

#[test]
fn rate_limit_drop_holds_the_rate_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    // Offers ~4,000 lines/s for ~4 s; the limit is 1,000/s.
    let source = python_source(
        "gen",
        "import time\nt0 = time.time()\nfor t in range(200):\n for i in range(80):\n  print(f'x {t} {i}')\n time.sleep(0.02)\n\
         open('$DIR/span', 'w').write(str(time.time() - t0))",
    );
    let config = format!(
        r#"
        data_dir = "$DIR/data"
        {source}
        [routes.limit]
        type = "rate_limit"
        inputs = ["gen"]
        per = "{{tag}}"
        events_per_sec = 1000
        when_over = "drop"
        [sinks.f]
        type = "file"
        inputs = ["limit"]
        path = "$DIR/out.log"
        "#
    );
    let started = Instant::now();
    let mut d = Daemon::start(dir.path(), &config);
    wait_until(Duration::from_secs(60), "the generator to end", || {
        d.stderr().contains("Command exited")
    });
    let secs = started.elapsed().as_secs_f64();
    let st = d.wait(Duration::from_secs(30));
    let stderr = d.stderr();
    assert!(st.success(), "{stderr}");
    let admitted = read_lines(&dir.path().join("out.log")).len() as f64;
    // The window is at most `secs` (the daemon's start is inside it) and the
    // generator's own start-up makes it a little shorter: allow 5% + the burst.
    assert!(
        admitted <= 1000.0 * secs * 1.05 + 100.0,
        "admitted {admitted} in {secs:.2} s"
    );
    // Lines were offered for `span` seconds, by the generator's own clock (on
    // a loaded machine its start-up takes a good part of `secs`).
    let span: f64 = std::fs::read_to_string(dir.path().join("span"))
        .expect("the generator's span")
        .parse()
        .expect("a number of seconds");
    assert!(
        admitted >= 1000.0 * (span - 0.2) * 0.95,
        "admitted {admitted} while lines were offered for {span:.2} s"
    );
    let dropped = counter(&stderr, "routes.limit", "dropped");
    assert_eq!(dropped as f64 + admitted, 16_000.0);
    assert!(
        stderr.contains("Rate limit exceeded; events dropped."),
        "{stderr}"
    );
}

#[test]
fn rate_limit_block_slows_the_source_without_dropping() {
    let dir = tempfile::tempdir().unwrap();
    let source = python_source("gen", "for i in range(12000):\n print(i)");
    let config = format!(
        r#"
        data_dir = "$DIR/data"
        {source}
        [routes.limit]
        type = "rate_limit"
        inputs = ["gen"]
        events_per_sec = 4000
        when_over = "block"
        [sinks.f]
        type = "file"
        inputs = ["limit"]
        path = "$DIR/out.log"
        "#
    );
    let started = Instant::now();
    let stderr = run_to_end(dir.path(), &config);
    let took = started.elapsed().as_secs_f64();
    assert_eq!(read_lines(&dir.path().join("out.log")).len(), 12_000);
    assert_eq!(counter(&stderr, "routes.limit", "dropped"), 0);
    // 12,000 at 4,000/s, less the 0.1 s burst: at least 2.9 s.
    assert!(took >= 2.8, "took {took:.2} s");
}

#[test]
fn filter_keeps_warn_and_above() {
    let dir = tempfile::tempdir().unwrap();
    let source = python_source(
        "gen",
        "for l in ['12:00 INFO a', '12:00 WARN b', '[error] c', '<11>1 - h app - - - d', '<14>1 - h app - - - e', 'DEBUG f', 'no level g']:\n print(l)",
    );
    let config = format!(
        r#"
        data_dir = "$DIR/data"
        {source}
        [routes.warn_up]
        type = "filter"
        inputs = ["gen"]
        min_level = "warn"
        [sinks.f]
        type = "file"
        inputs = ["warn_up"]
        path = "$DIR/out.log"
        "#
    );
    let stderr = run_to_end(dir.path(), &config);
    let got = read_lines(&dir.path().join("out.log"));
    assert_eq!(
        got,
        vec![
            "12:00 WARN b",
            "[error] c",
            "<11>1 - h app - - - d",
            "no level g"
        ]
    );
    assert_eq!(counter(&stderr, "routes.warn_up", "dropped"), 3);
}

#[test]
fn bad_route_graphs_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        r#"
[sources.fw]
type = "stdin"
[routes.by_category]
type = "rules"
inputs = ["fw", "b"]
rules = [{ match = "app.**", to = "apps" }]
[routes.b]
type = "filter"
inputs = ["by_category.apps"]
min_level = "warn"
[routes.t]
type = "tenant"
inputs = ["fw"]
active_list = "/nonexistent"
strip = true
field = "id"
[sinks.out]
type = "stdout"
inputs = ["by_category", "by_category.aps", "b"]
[sinks.k]
type = "kafka"
inputs = ["fw"]
brokers = "127.0.0.1:9092"
topic = "logs"
partition = "{tag}"
"#,
    )
    .unwrap();
    let out = Command::new(sluice_bin())
        .args(["validate", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "routes.by_category.inputs: routes form a cycle: by_category -> b -> by_category"
        ),
        "{err}"
    );
    assert!(
        err.contains("route `by_category` has several outputs; name one of: by_category.apps"),
        "{err}"
    );
    assert!(err.contains("did you mean `by_category.apps`?"), "{err}");
    assert!(
        err.contains("routes.t.strip: strip applies to split = \"first_space\" only"),
        "{err}"
    );
    // FILE:LINE:COL of the value, then what is wrong.
    assert!(
        err.contains(&format!(
            "{}:26:13: sinks.k.partition: `{{tag}}` does not render a partition number",
            cfg.display()
        )),
        "{err}"
    );
}

/// The tenant path allocates nothing per event (issue 4): a read's worth of CDN
/// lines, 10,000 active tenants, strip, some unknown ids dropped.
#[test]
fn tenant_split_allocates_nothing_per_event() {
    use std::sync::Arc;

    use sluice::event::Event;
    use sluice::route::tenant::{ActiveSet, TenantRouteConfig, TenantSplit, Unknown};

    let ids: Vec<String> = (0..10_000).map(|i| format!("client{i}")).collect();
    let set = ActiveSet::from_ids(ids.iter().map(String::as_str));
    let split = TenantSplit::new(&TenantRouteConfig {
        split: None,
        field: None,
        strip: true,
        active_list: "/dev/null".into(),
        unknown: Unknown::Drop,
        poll_interval_ms: 250,
        admin: Default::default(),
    });
    // One buffer sliced per line, as line sources hand events over.
    let mut buf = Vec::new();
    let mut ranges = Vec::new();
    for i in 0..1000u64 {
        let start = buf.len();
        let id = i * 7919 % 11_000; // ids >= 10,000 are unknown
        buf.extend_from_slice(format!("client{id} GET /v1/objects/{i} 200 5120").as_bytes());
        ranges.push(start..buf.len());
    }
    let all = bytes::Bytes::from(buf);
    let (tag, src): (Arc<str>, Arc<str>) = ("edge".into(), "edge_pipe".into());
    let mut events: Vec<Event> = ranges
        .into_iter()
        .map(|r| Event::new(all.slice(r), 0, tag.clone(), src.clone()))
        .collect();
    let (dropped, allocations) = crate::alloc_count::count(|| split.apply(&mut events, &set));
    assert_eq!(allocations, 0, "allocations while routing 1,000 events");
    assert_eq!(dropped + events.len(), 1000);
    assert!(dropped > 0 && !events.is_empty(), "{dropped} dropped");
    for e in &events {
        let tenant = e.tenant.as_deref().expect("tenant set");
        assert!(set.contains(tenant), "{tenant}");
        assert!(e.body.starts_with(b"GET /v1/objects/"), "id stripped");
    }
    // The counter itself works: building an event's tenant string allocates.
    let (_, n) = crate::alloc_count::count(|| String::from("client1") + "x");
    assert!(n >= 1);
}

#[test]
fn missing_active_list_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = r#"
        data_dir = "$DIR/data"
        [sources.s]
        type = "exec"
        command = ["true"]
        [routes.t]
        type = "tenant"
        inputs = ["s"]
        active_list = "$DIR/missing.txt"
        [sinks.f]
        type = "null"
        inputs = ["t"]
    "#;
    let mut d = Daemon::start(dir.path(), config);
    let st = d.wait(Duration::from_secs(30));
    assert_eq!(st.code(), Some(1));
    assert!(
        d.stderr().contains("routes.t: reading active list"),
        "{}",
        d.stderr()
    );
}

// ---- Against a real broker (Apache Kafka) ----------------------------------------

mod broker {
    use std::collections::{BTreeMap, HashSet};
    use std::process::Command;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::{counter, python_source, write_atomically};
    use crate::common::Daemon;
    use crate::kafka_support::{Broker, consume, need_kafka};
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

        let mut names: Vec<String> = active.iter().map(|c| format!("logs-{c}")).collect();
        names.push("logs-c1".into());
        let on_broker = topics(&broker.addr());
        for i in (1..1000).step_by(2).filter(|i| *i != 1) {
            assert!(
                !on_broker.contains(&format!("logs-c{i}")),
                "inactive c{i} got a topic"
            );
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let recs = consume(&broker.addr(), &refs, 1500 + 2400, Duration::from_secs(20));
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
            assert_eq!(phase1, want, "c{c}: its own lines, id stripped, in order");
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
}
