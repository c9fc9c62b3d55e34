//! Captured writes as documents: the writer's identity (write-through and
//! writeback), order into Kafka, a file per captured path.

use super::*;

#[test]
fn writes_become_fuse_kafka_documents_with_the_writers_identity() {
    writes_become_fuse_kafka_documents_with_the_writers_identity_case(false);
}

/// With the writeback cache each `sh` writes into the page cache and its bytes are
/// captured at its close, attributed to it as the opener of its handle.
#[test]
fn writes_become_fuse_kafka_documents_with_the_writers_identity_with_writeback() {
    writes_become_fuse_kafka_documents_with_the_writers_identity_case(true);
}

fn writes_become_fuse_kafka_documents_with_the_writers_identity_case(writeback: bool) {
    if !fuse_usable() {
        return;
    }
    let g = MountGuard::new();
    // A writer whose file was open before the mount: not captured, named at start.
    let mut holder = Command::new("sh")
        .args(["-c", "exec 3>>held.log; exec sleep 30"])
        .current_dir(&g.watched)
        .spawn()
        .expect("holder");
    wait_until(
        Duration::from_secs(5),
        "the holder to open its file",
        || g.file("held.log").exists(),
    );
    let mut d = g.start(&source_config(&format!(
        r#"include = ["*.log"]
fields = {{ dc = "par1", role = "web" }}
tags = ["edge", "fuse"]
writeback = {writeback}"#
    )));

    let log = d.stderr();
    let _ = holder.kill();
    let _ = holder.wait();
    let warning = log
        .lines()
        .find(|l| l.contains("Processes hold files open for writing"));
    let warning = warning.unwrap_or_else(|| panic!("no pre-mount writer warning:\n{log}"));
    assert!(
        warning.contains("held.log") && warning.contains(&holder.id().to_string()),
        "{warning}"
    );
    assert!(warning.contains("cap"), "names the component: {warning}");

    // A second daemon on the same directory is refused at start, naming the source.
    let second = tempfile::tempdir().expect("temp dir");
    let cfg = source_config("")
        .replace("$WATCHED", g.watched.to_str().unwrap())
        .replace("$DIR/locks", &format!("{}/locks", g.dir().display()));
    let mut other = Daemon::start(second.path(), &cfg);
    let st = other.wait(Duration::from_secs(20));
    assert!(!st.success());
    let err = other.stderr();
    assert!(
        err.contains("sources.cap") && err.contains("already captured by a live sluice"),
        "{err}"
    );

    let root_pid = sh(&g.watched, "echo hello from root >> app.log");
    std::fs::set_permissions(g.file("app.log"), std::fs::Permissions::from_mode(0o666))
        .expect("chmod");
    sh(&g.watched, "echo not captured > notes.txt");
    let mut nobody = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            "sh",
            "-c",
            "echo from nobody >> app.log",
        ])
        .current_dir(&g.watched)
        .stderr(Stdio::piped())
        .spawn()
        .expect("setpriv");
    let nobody_pid = nobody.id();
    assert!(nobody.wait().expect("setpriv").success());

    assert!(d.stop().success(), "{}", d.stderr());
    let log = d.stderr();
    assert!(
        log.contains("Capture stopped.") && log.contains("captured_writes=2"),
        "{log}"
    );
    assert_eq!(fuse_mounts_at(&g.watched), 0, "unmounted at stop");
    assert_eq!(
        std::fs::read(g.file("app.log")).unwrap(),
        b"hello from root\nfrom nobody\n"
    );
    assert_eq!(
        std::fs::read(g.file("notes.txt")).unwrap(),
        b"not captured\n"
    );

    let docs = documents(&g.dir().join("out.jsonl"));
    assert_eq!(docs.len(), 2, "{docs:?}");
    for (raw, doc) in &docs {
        assert_fuse_kafka_document(raw, doc);
        assert_eq!(doc["path"], g.file("app.log").to_str().unwrap());
        assert_eq!(
            doc["@fields"],
            serde_json::json!({"dc": "par1", "role": "web"})
        );
        assert!(
            raw.contains(r#""@fields":{"dc":"par1","role":"web"}"#),
            "field order kept: {raw}"
        );
        assert_eq!(doc["@tags"], serde_json::json!(["edge", "fuse"]));
    }
    let (_, root) = &docs[0];
    assert_eq!(message(root), b"hello from root\n");
    assert_eq!(
        (
            root["pid"].as_u64(),
            root["uid"].as_u64(),
            root["gid"].as_u64()
        ),
        (Some(root_pid.into()), Some(0), Some(0))
    );
    assert_eq!(
        (root["user"].as_str(), root["group"].as_str()),
        (Some("root"), Some("root"))
    );
    assert_eq!(command(root), "sh -c echo hello from root >> app.log");
    let (_, nb) = &docs[1];
    assert_eq!(message(nb), b"from nobody\n");
    assert_eq!(nb["pid"].as_u64(), Some(nobody_pid.into()));
    assert_eq!(
        (nb["uid"].as_u64(), nb["gid"].as_u64()),
        (Some(65534), Some(65534))
    );
    assert_eq!(nb["user"].as_str(), Some("nobody"));
    assert_eq!(command(nb), "sh -c echo from nobody >> app.log");
}

#[test]
fn fuse_to_kafka_delivers_the_documents_in_order() {
    let kafka = need_kafka!();
    if !fuse_usable() {
        return;
    }
    let broker = shared_broker(&kafka);
    broker.create_topic("fuse", 1);
    let g = MountGuard::new();
    let mut d = g.start(&format!(
        r#"
[sources.cap]
type = "fuse"
directories = ["$WATCHED"]
lock_dir = "$DIR/locks"
fields = {{ host = "web-1" }}
[sinks.k]
type = "kafka"
inputs = ["cap"]
brokers = "{}"
topic = "fuse"
encoding = "logstash_json"
"#,
        broker.addr()
    ));
    let pid = sh(
        &g.watched,
        "for i in $(seq 1 300); do echo request $i >> app.log; done",
    );
    assert!(d.stop().success(), "{}", d.stderr());
    let recs = consume(&broker.addr(), &["fuse"], 300, Duration::from_secs(10));
    assert_eq!(recs.len(), 300);
    for (i, r) in recs.iter().enumerate() {
        let raw = String::from_utf8(r.value.clone()).expect("utf-8 document");
        let doc: Value = serde_json::from_str(&raw).expect("JSON document");
        assert_fuse_kafka_document(&raw, &doc);
        assert_eq!(message(&doc), format!("request {}\n", i + 1).as_bytes());
        assert_eq!(doc["pid"].as_u64(), Some(pid.into()));
        assert_eq!(doc["path"], g.file("app.log").to_str().unwrap());
        assert_eq!(doc["@fields"]["host"], "web-1");
    }
}

#[test]
fn path_placeholder_gives_each_captured_file_its_own_output() {
    if !fuse_usable() {
        return;
    }
    let g = MountGuard::new();
    let mut d = g.start(
        r#"
[sources.cap]
type = "fuse"
directories = ["$WATCHED"]
lock_dir = "$DIR/locks"
[sinks.per_file]
type = "file"
inputs = ["cap"]
path = "$DIR/per-file/{path}.jsonl"
encoding = "logstash_json"
"#,
    );
    sh(
        &g.watched,
        "mkdir sub && echo a1 >> a.log && echo b1 >> sub/b.log && echo a2 >> a.log",
    );
    assert!(d.stop().success(), "{}", d.stderr());
    let out = g.dir().join("per-file");
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .expect("per-file dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    // `{path}` is the writer-visible path with `/` as `_`: one file name per source file.
    let name = |rel: &str| format!("{}.jsonl", g.file(rel).to_str().unwrap().replace('/', "_"));
    assert_eq!(names, [name("a.log"), name("sub/b.log")]);
    for (rel, expected) in [("a.log", "a1\na2\n"), ("sub/b.log", "b1\n")] {
        let docs = documents(&out.join(name(rel)));
        let bytes: Vec<u8> = docs.iter().flat_map(|(_, doc)| message(doc)).collect();
        assert_eq!(String::from_utf8(bytes).unwrap(), expected, "{rel}");
        for (_, doc) in &docs {
            assert_eq!(doc["path"], g.file(rel).to_str().unwrap());
        }
    }
}
