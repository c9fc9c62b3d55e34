//! Rules, buckets and filters, and route graphs refused at validation.

use super::*;

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
