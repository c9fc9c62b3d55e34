//! The `fuse` source at the daemon level: the real `sluice` binary mounts a temp
//! directory over itself, real programs (`sh`, `dd`, `setpriv`) write through it, and
//! the events are read back from a file sink (or Kafka) as `logstash_json` documents.
//! The filesystem's own behaviour (rotation, cp -r, concurrent appenders, byte
//! identity) is covered by the capture crate's tests; these cover what the daemon adds:
//! the document, fields/tags, quota counters, start-up errors, kill -9 recovery, and
//! the full pipeline to Kafka.
//!
//! Needs /dev/fuse and root (or fusermount3); without them a test fails saying what is
//! missing, unless `SLUICE_SKIP_FUSE_TESTS=1` skips them on purpose. Every test
//! holds a [`MountGuard`] that kills the daemon and detaches any mount left on its
//! directory, even when the test panics.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

use crate::common::{Daemon, wait_until};
use crate::kafka_support::{consume, need_kafka, shared_broker};

pub(crate) fn fuse_usable() -> bool {
    if std::env::var_os("SLUICE_SKIP_FUSE_TESTS").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED: FUSE test skipped because SLUICE_SKIP_FUSE_TESTS=1.");
        return false;
    }
    let root = unsafe { libc::geteuid() } == 0;
    let fusermount =
        Path::new("/usr/bin/fusermount3").exists() || Path::new("/bin/fusermount3").exists();
    let mut missing = Vec::new();
    if !Path::new("/dev/fuse").exists() {
        missing.push("/dev/fuse (load the fuse module; in a container pass --device /dev/fuse)");
    }
    if !root && !fusermount {
        missing.push("root or fusermount3 (scripts/install-deps.sh installs fuse3)");
    }
    assert!(
        missing.is_empty(),
        "this FUSE test cannot run: missing {}; set SLUICE_SKIP_FUSE_TESTS=1 to skip the FUSE \
         tests on purpose",
        missing.join(" and ")
    );
    true
}

/// FUSE mounts stacked on `dir` right now (mountinfo order, bottom to top).
fn fuse_mounts_at(dir: &Path) -> usize {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-");
            let fstype = sep.and_then(|s| f.get(s + 1)).copied().unwrap_or("");
            f.get(4).map(|p| p.replace("\\040", " ")) == Some(dir.display().to_string())
                && fstype.starts_with("fuse")
        })
        .count()
}

/// A temp dir with `watched/` (captured), `locks/`, the config and the daemon's log.
/// Dropped last: detaches whatever mount a failed test left on `watched`.
struct MountGuard {
    tmp: tempfile::TempDir,
    watched: PathBuf,
}

impl MountGuard {
    fn new() -> MountGuard {
        let tmp = tempfile::tempdir().expect("temp dir");
        let watched = tmp
            .path()
            .canonicalize()
            .expect("canonical")
            .join("watched");
        std::fs::create_dir(&watched).expect("watched dir");
        // Other users write here too.
        std::fs::set_permissions(&watched, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        MountGuard { tmp, watched }
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.watched.join(name)
    }

    /// Starts sluice on `config` (`$DIR` → the temp dir, `$WATCHED` → the watched dir)
    /// and waits until the capture mount is up.
    fn start(&self, config: &str) -> Daemon {
        let config = config.replace("$WATCHED", self.watched.to_str().expect("utf-8"));
        let mut d = Daemon::start(self.dir(), &config);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !d.stderr().contains("Sluice started.") {
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!("sluice exited at start ({st}):\n{}", d.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "sluice did not start:\n{}",
                d.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            fuse_mounts_at(&self.watched) >= 1,
            "no capture mount on {}:\n{}",
            self.watched.display(),
            d.stderr()
        );
        d
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        for _ in 0..8 {
            if fuse_mounts_at(&self.watched) == 0 {
                break;
            }
            let c = std::ffi::CString::new(self.watched.to_str().unwrap_or("/nonexistent"))
                .unwrap_or_default();
            // SAFETY: umount2 with a valid NUL-terminated path.
            let r = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            if r != 0 {
                let _ = Command::new("fusermount3")
                    .arg("-uz")
                    .arg(&self.watched)
                    .status();
            }
        }
    }
}

/// `sh -c script` in `dir`; returns the shell's pid (the writer: `echo` is a builtin).
fn sh(dir: &Path, script: &str) -> u32 {
    let mut c = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .spawn()
        .expect("sh");
    let pid = c.id();
    let st = c.wait().expect("wait sh");
    assert!(st.success(), "{script:?} failed: {st}");
    pid
}

/// The file sink's `logstash_json` lines: (raw line, parsed document).
fn documents(path: &Path) -> Vec<(String, Value)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            (
                l.to_owned(),
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")),
            )
        })
        .collect()
}

fn message(doc: &Value) -> Vec<u8> {
    B64.decode(doc["@message"].as_str().expect("@message"))
        .expect("@message base64")
}

fn command(doc: &Value) -> String {
    let raw = B64
        .decode(doc["command"].as_str().expect("command"))
        .expect("command base64");
    String::from_utf8(raw)
        .expect("utf-8 command")
        .trim_end()
        .to_owned()
}

/// `YYYY-MM-DDTHH:MM:SS.mmm±hhmm`.
fn is_logstash_time(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        r.into_iter()
            .all(|i| b.get(i).is_some_and(u8::is_ascii_digit))
    };
    b.len() == 28
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..23)
        && (b[23] == b'+' || b[23] == b'-')
        && digits(24..28)
}

const KEY_ORDER: [&str; 12] = [
    "\"path\":",
    "\"pid\":",
    "\"uid\":",
    "\"gid\":",
    "\"@message\":",
    "\"@timestamp\":",
    "\"user\":",
    "\"group\":",
    "\"command\":",
    "\"@version\":",
    "\"@fields\":",
    "\"@tags\":",
];

fn assert_fuse_kafka_document(raw: &str, doc: &Value) {
    let mut at = 0;
    for k in KEY_ORDER {
        let i = raw[at..]
            .find(k)
            .unwrap_or_else(|| panic!("{k} missing or out of order in {raw}"));
        at += i + k.len();
    }
    assert_eq!(
        doc.as_object().map(|o| o.len()),
        Some(12),
        "exactly the fuse_kafka keys: {raw}"
    );
    assert!(
        is_logstash_time(doc["@timestamp"].as_str().unwrap_or("")),
        "{raw}"
    );
    assert_eq!(doc["@version"], env!("CARGO_PKG_VERSION"));
}

fn source_config(extra: &str) -> String {
    format!(
        r#"
[sources.cap]
type = "fuse"
directories = ["$WATCHED"]
lock_dir = "$DIR/locks"
{extra}
[sinks.out]
type = "file"
inputs = ["cap"]
path = "$DIR/out.jsonl"
encoding = "logstash_json"
"#
    )
}

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
fn quota_holds_back_a_burst_while_small_writes_elsewhere_pass() {
    if !fuse_usable() {
        return;
    }
    let g = MountGuard::new();
    let mut d = g.start(&source_config("quota_bytes_per_sec = 262144"));
    // Small writes to one file while another receives a 50 MiB burst.
    let small = std::thread::spawn({
        let w = g.watched.clone();
        move || {
            sh(
                &w,
                "for i in $(seq 1 40); do echo small line $i >> small.log; sleep 0.01; done",
            )
        }
    });
    sh(
        &g.watched,
        "dd if=/dev/zero of=big.log bs=1M count=50 status=none",
    );
    small.join().expect("small writer");
    assert!(d.stop().success(), "{}", d.stderr());
    assert_eq!(
        std::fs::metadata(g.file("big.log")).unwrap().len(),
        50 << 20,
        "the disk got everything"
    );

    let docs = documents(&g.dir().join("out.jsonl"));
    let bytes_of = |name: &str| -> Vec<u8> {
        let p = g.file(name);
        docs.iter()
            .filter(|(_, d)| d["path"] == p.to_str().unwrap())
            .flat_map(|(_, d)| message(d))
            .collect()
    };
    let expected: String = (1..=40).map(|i| format!("small line {i}\n")).collect();
    assert_eq!(String::from_utf8(bytes_of("small.log")).unwrap(), expected);
    let big = bytes_of("big.log").len();
    // A full bucket lets the first 1 MiB write through; then about 256 KiB/s.
    assert!(
        (1 << 20..=8 << 20).contains(&big),
        "big.log forwarded {big} bytes"
    );

    let log = d.stderr();
    assert!(
        log.contains("File over capture quota") && log.contains("big.log"),
        "{log}"
    );
    let stopped = log
        .lines()
        .find(|l| l.contains("Capture stopped."))
        .expect("stop line")
        .to_owned();
    let field = |name: &str| -> u64 {
        stopped
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert!(field("dropped_quota") >= 40, "{stopped}");
    assert!(field("dropped_quota_bytes") >= 40 << 20, "{stopped}");
    assert_eq!(field("dropped_queue_full"), 0, "{stopped}");
    let counters = log
        .lines()
        .find(|l| l.contains("Counters sources.cap:"))
        .expect("counters line");
    assert_eq!(
        crate::kafka_support::counter(counters, "dropped"),
        field("dropped_quota"),
        "{counters}"
    );
}

#[test]
fn kill_9_gives_writers_an_error_and_the_next_start_clears_the_stale_mount() {
    if !fuse_usable() {
        return;
    }
    let g = MountGuard::new();
    // Without auto_unmount the dead mount stays (with it, fusermount3 detaches it).
    let config = source_config("auto_unmount = false");
    let mut d = g.start(&config);
    let mut writer = Command::new("sh")
        .arg("-c")
        .arg("exec 3>>app.log; i=0; while :; do /bin/echo line $i >&3 || exit 7; i=$((i+1)); sleep 0.005; done")
        .current_dir(&g.watched)
        .stderr(Stdio::piped())
        .spawn()
        .expect("writer");
    wait_until(Duration::from_secs(10), "the writer to write", || {
        std::fs::read_to_string(g.file("app.log")).is_ok_and(|s| s.lines().count() > 20)
    });
    d.child.kill().expect("kill -9");
    d.child.wait().expect("reap");

    // The writer fails instead of hanging.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = writer.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = writer.kill();
            panic!("writer hung after sluice was killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut writer.stderr.take().expect("stderr"), &mut err)
        .expect("read");
    assert_eq!(status.code(), Some(7), "{err}");
    // ENOTCONN, or ECONNABORTED for a write that was in flight at the kill.
    assert!(
        err.contains("not connected") || err.contains("connection abort"),
        "{err}"
    );
    // Cached attributes may still answer a stat; a directory listing asks the daemon.
    let e = std::fs::read_dir(&g.watched).expect_err("stale mount");
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN));
    assert_eq!(
        fuse_mounts_at(&g.watched),
        1,
        "the dead mount is still there"
    );

    // Next start: the stale mount is cleared and capture resumes.
    std::fs::remove_file(g.dir().join("out.jsonl")).ok();
    let mut d = g.start(&config);
    assert!(
        d.stderr().contains("Clearing stale capture mount"),
        "{}",
        d.stderr()
    );
    assert_eq!(
        fuse_mounts_at(&g.watched),
        1,
        "one live mount, the stale one gone"
    );
    sh(&g.watched, "echo after restart >> app.log");
    assert!(d.stop().success(), "{}", d.stderr());
    let docs = documents(&g.dir().join("out.jsonl"));
    assert_eq!(docs.len(), 1, "{docs:?}");
    assert_eq!(message(&docs[0].1), b"after restart\n");
    assert!(
        std::fs::read_to_string(g.file("app.log"))
            .unwrap()
            .ends_with("after restart\n")
    );
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
fn a_stuck_pipeline_never_blocks_writers_and_drops_are_counted() {
    if !fuse_usable() {
        return;
    }
    let g = MountGuard::new();
    // A sink that really stops taking: a forward server that accepts the
    // connection (the kernel's backlog does) but never reads and never acks, with
    // one chunk in flight. The sink's small buffer fills, the drain blocks, the
    // capture queue fills, and from then on captures are dropped.
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = stalled.local_addr().expect("addr").port();
    let mut d = g.start(&format!(
        r#"
shutdown_timeout_secs = 2
[sources.cap]
type = "fuse"
directories = ["$WATCHED"]
lock_dir = "$DIR/locks"
queue_capacity = 16
[sinks.f]
type = "forward"
inputs = ["cap"]
servers = ["127.0.0.1:{port}"]
require_ack = true
max_inflight_chunks = 1
ack_timeout_secs = 3600
buffer = {{ max_events = 4 }}
"#
    ));
    let started = Instant::now();
    sh(
        &g.watched,
        "for i in $(seq 1 2000); do echo line $i >> app.log; done",
    );
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "writers were held up: {took:?}"
    );
    let expected: String = (1..=2000).map(|i| format!("line {i}\n")).collect();
    assert_eq!(
        std::fs::read_to_string(g.file("app.log")).unwrap(),
        expected
    );
    d.stop();
    let log = d.stderr();
    assert!(log.contains("Capture queue full"), "{log}");
    let stopped = log
        .lines()
        .find(|l| l.contains("Capture stopped."))
        .expect("stop line");
    let field = |name: &str| -> u64 {
        stopped
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    // The sink took one chunk and the buffer four events; the rest was dropped.
    assert!(field("dropped_queue_full") > 0, "{stopped}");
    assert_eq!(
        field("captured_writes") + field("dropped_queue_full"),
        2000,
        "{stopped}"
    );
    let counters = log
        .lines()
        .find(|l| l.contains("Counters sources.cap:"))
        .expect("counters");
    let dropped = crate::kafka_support::counter(counters, "dropped");
    assert_eq!(dropped, field("dropped_queue_full"), "{counters}");
    assert_eq!(
        fuse_mounts_at(&g.watched),
        0,
        "unmounted even with a stuck sink"
    );
    drop(stalled);
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
