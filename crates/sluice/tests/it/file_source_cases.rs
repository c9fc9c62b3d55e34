//! The file source end to end, file → file sink (`encoding = "json"`, so each
//! event is one object), beyond `file_source.rs`: `multiline` (stack traces
//! joined, an open event sent after its timeout, its lines kept across a kill
//! -9), `format = "docker_json"`, a recycled inode under a stale checkpoint
//! (Vector #23076), and 10,000 files created in an inotify queue overflow
//! (Fluent Bit #1108) with the daemon's peak memory.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::common::wait_until;
use crate::file_support::{append, json_config, start};

fn config(logs: &Path, extra: &str) -> String {
    json_config(&format!("{}/*.log", logs.display()), extra)
}

/// Every event written so far (a torn last line is left for the next look).
pub(crate) fn events(out: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

pub(crate) fn messages(out: &Path) -> Vec<String> {
    events(out)
        .iter()
        .map(|e| e["message"].as_str().unwrap_or("<not utf-8>").to_owned())
        .collect()
}

fn trace(i: u32) -> String {
    format!("E{i} start\n\tat a{i}(A.java:1)\n\tat b{i}(B.java:2)\n")
}

#[test]
fn multiline_joins_stack_traces_and_sends_the_last_after_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join("app.log");
    // A line before the first start line is an event of its own.
    append(&log, "orphan line\n");
    for i in 0..300 {
        append(&log, &trace(i));
    }
    let cfg = config(
        &logs,
        r#"multiline = { start = "^E[0-9]+ ", condition = "continue_through", timeout_ms = 300 }"#,
    );
    let mut d = start(dir.path(), &cfg);
    let out = dir.path().join("out.json");
    // The last trace has no start line after it: only the timeout sends it.
    wait_until(Duration::from_secs(20), "301 events", || {
        messages(&out).len() >= 301
    });
    // One more, its continuation lines written a little later (same event).
    append(&log, "E300 start\n");
    append(&log, "\tat a300(A.java:1)\n\tat b300(B.java:2)\n");
    wait_until(Duration::from_secs(20), "302 events", || {
        messages(&out).len() >= 302
    });
    assert!(d.stop().success(), "{}", d.stderr());
    let m = messages(&out);
    assert_eq!(m[0], "orphan line");
    for i in 0..=300u32 {
        let want = trace(i);
        assert_eq!(m[i as usize + 1], want.trim_end(), "event {i}");
    }
    assert_eq!(m.len(), 302, "extra events");
    // A restart resumes after the last event: nothing is sent again.
    let mut d = start(dir.path(), &cfg);
    append(&log, &trace(301));
    wait_until(
        Duration::from_secs(20),
        "the event after the restart",
        || messages(&out).len() >= 303,
    );
    assert!(d.stop().success(), "{}", d.stderr());
    let m = messages(&out);
    assert_eq!(m.len(), 303, "events sent again after the restart");
    assert_eq!(m[302], trace(301).trim_end());
}

#[test]
fn multiline_open_event_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join("app.log");
    let ckpt = dir.path().join("data/file_source/f/checkpoints.json");
    // The timeout is far away: E1 stays open until the next start line.
    let cfg = config(
        &logs,
        r#"multiline = { start = "^E[0-9]+ ", timeout_ms = 600000 }"#,
    );
    let mut d = start(dir.path(), &cfg);
    append(&log, &trace(0));
    append(&log, &trace(1));
    let out = dir.path().join("out.json");
    wait_until(Duration::from_secs(20), "E0 sent", || {
        messages(&out).len() == 1
    });
    // E0 was acknowledged: the checkpoint moves to E1's first line, not past it.
    let e1_at = trace(0).len() as u64;
    wait_until(Duration::from_secs(20), "the checkpoint at E1", || {
        std::fs::read_to_string(&ckpt).is_ok_and(|t| t.contains(&format!("\"offset\":{e1_at},")))
    });
    d.signal(libc::SIGKILL);
    let _ = d.wait(Duration::from_secs(10));
    // Restarted, E1's lines are read again and completed by E2's start line.
    let mut d = start(dir.path(), &cfg);
    append(&log, "E2 start\n");
    wait_until(Duration::from_secs(20), "E1 after the restart", || {
        messages(&out).len() >= 2
    });
    assert!(d.stop().success(), "{}", d.stderr());
    let m = messages(&out);
    assert_eq!(m[0], trace(0).trim_end());
    assert_eq!(m[1], trace(1).trim_end(), "the open event was lost or cut");
    // E2 was sent at stop.
    assert_eq!(m[2..], ["E2 start".to_owned()]);
}

#[test]
fn docker_json_lines_partial_joined_hostile_kept_raw() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join("c1-json.log");
    let long = "x".repeat(40_000);
    let mut text = String::new();
    for i in 0..100 {
        let stream = if i % 10 == 0 { "stderr" } else { "stdout" };
        text += &format!(
            "{{\"log\":\"line {i} \\\"q\\\"\\n\",\"stream\":\"{stream}\",\"time\":\"2024-01-01T00:00:{:02}.000000001Z\"}}\n",
            i % 60
        );
    }
    // Docker splits a long line into 16 KiB parts without their newline.
    for (k, part) in long.as_bytes().chunks(16 * 1024).enumerate() {
        let nl = if (k + 1) * 16 * 1024 >= long.len() {
            "\\n"
        } else {
            ""
        };
        text += &format!(
            "{{\"log\":\"{}{nl}\",\"stream\":\"stdout\",\"time\":\"2024-01-01T00:01:00Z\"}}\n",
            std::str::from_utf8(part).unwrap()
        );
    }
    text += "{\"log\":\"broken\n";
    text += "{\"log\":\"far\\n\",\"stream\":\"stdout\",\"time\":\"999999999-01-01T00:00:00Z\"}\n";
    append(&log, &text);
    let mut d = start(dir.path(), &config(&logs, r#"format = "docker_json""#));
    let out = dir.path().join("out.json");
    wait_until(Duration::from_secs(20), "every event", || {
        events(&out).len() >= 103
    });
    assert!(d.stop().success(), "{}", d.stderr());
    assert!(d.stderr().contains("parse_errors=2"), "{}", d.stderr());
    let ev = events(&out);
    assert_eq!(ev.len(), 103);
    for (i, e) in ev[..100].iter().enumerate() {
        assert_eq!(e["message"], format!("line {i} \"q\""));
        let stream = if i % 10 == 0 { "stderr" } else { "stdout" };
        assert_eq!(e["stream"], stream, "{e}");
        assert!(e.get("parse_error").is_none(), "{e}");
        let t = e["time"].as_str().unwrap();
        assert!(
            t.starts_with(&format!("2024-01-01T00:00:{:02}.000000001", i % 60)),
            "{t}"
        );
    }
    assert_eq!(ev[100]["message"], long, "partial lines joined");
    assert_eq!(ev[101]["message"], "{\"log\":\"broken");
    assert!(ev[101].get("parse_error").is_some());
    assert_eq!(ev[102]["message"], "far");
    assert!(ev[102].get("parse_error").is_some());
}

/// A new file whose inode is named by a checkpoint of a deleted file (the
/// inode was recycled): without the fingerprint check the reader would start
/// at the stale offset and silently skip the new file's first lines. The
/// checkpoint is written as the old file left it, so the inode is "reused"
/// whatever the filesystem's allocator does.
#[test]
fn recycled_inode_under_a_stale_checkpoint_is_read_from_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join("new.log");
    let text: String = (0..200).map(|i| format!("fresh-{i}\n")).collect();
    append(&log, &text);
    let m = std::fs::metadata(&log).unwrap();
    let ckpt_dir = dir.path().join("data/file_source/f");
    std::fs::create_dir_all(&ckpt_dir).unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // The old file's first 256 bytes were other bytes; it was read to 1000.
    std::fs::write(
        ckpt_dir.join("checkpoints.json"),
        format!(
            r#"{{"version":1,"files":[{{"dev":{},"ino":{},"fp_len":256,"fp":12345,"offset":1000,"path":"/gone/old.log","seen_unix":{now}}}]}}"#,
            m.dev(),
            m.ino()
        ),
    )
    .unwrap();
    let mut d = start(dir.path(), &config(&logs, ""));
    let out = dir.path().join("out.json");
    wait_until(
        Duration::from_secs(20),
        "every line of the new file",
        || messages(&out).len() >= 200,
    );
    assert!(d.stop().success(), "{}", d.stderr());
    let m = messages(&out);
    let want: Vec<String> = (0..200).map(|i| format!("fresh-{i}")).collect();
    assert_eq!(m, want);
    assert!(d.stderr().contains("Inode reused"), "{}", d.stderr());
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

/// 10,000 files (more than inotify's queue holds) are created while the daemon
/// is stopped by SIGSTOP, so the kernel queue overflows for certain; once it
/// runs again the overflow forces a rescan (the periodic one is an hour away)
/// and every line of every file arrives. The daemon's peak RSS is reported
/// and bounded loosely.
#[test]
fn ten_thousand_files_created_in_an_inotify_overflow_are_all_read() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let queue: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // At least one event per file: more files than the queue holds.
    let files = 10_000.max(queue + 100);
    let per_file = 10;
    // One batch per file: the sink's fdatasync per group of batches is what
    // costs on a disk, so its output is on tmpfs (the source is under test).
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let out = shm.path().join("out.json");
    let cfg = config(&logs, "rescan_secs = 3600").replace("$DIR/out.json", out.to_str().unwrap());
    let mut d = start(dir.path(), &cfg);
    d.signal(libc::SIGSTOP);
    for f in 0..files {
        let text: String = (0..per_file).map(|i| format!("f{f}-{i}\n")).collect();
        std::fs::write(logs.join(format!("{f}.log")), text).unwrap();
    }
    d.signal(libc::SIGCONT);
    let total = files * per_file;
    wait_until(Duration::from_secs(300), "every line of every file", || {
        std::fs::read(&out).map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count()) >= total
    });
    let peak = peak_rss_kib(d.child.id());
    assert!(d.stop().success(), "{}", d.stderr());
    assert!(
        d.stderr().contains("File events lost"),
        "no overflow rescan:\n{}",
        d.stderr()
    );
    let m = messages(&out);
    let distinct: std::collections::HashSet<&String> = m.iter().collect();
    assert_eq!(distinct.len(), total, "lines lost");
    assert_eq!(m.len(), total, "lines duplicated");
    eprintln!("{files} files, {total} lines: peak RSS {} MiB", peak / 1024);
    assert!(peak < 512 * 1024, "peak RSS {} MiB", peak / 1024);
}
