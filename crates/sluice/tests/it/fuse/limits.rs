//! The quota holds back a burst while small writes elsewhere pass; a stuck
//! pipeline never blocks writers and drops are counted.

use super::*;

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
