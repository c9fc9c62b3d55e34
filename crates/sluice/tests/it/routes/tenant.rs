//! The tenant route: splitting by tenant id, unknown tenants, the active list
//! reloaded live or missing at start, and no allocation per event.

use super::*;

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
