//! The file source end to end, file → file sink: appended lines, directories
//! created after start, rotation by the real `logrotate` (create and
//! copytruncate), truncation, deletion while open, and kill -9 with restart.
//!
//! Lines are `<stream>-<number>` so the output can be checked per number:
//! exactly once where the source promises it, at least once after a crash.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::wait_until;
use crate::file_support::{append, config, start};

/// How often each line of the output occurs.
fn counts(out: &Path) -> HashMap<String, u32> {
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let mut m = HashMap::new();
    for l in text.lines() {
        *m.entry(l.to_owned()).or_insert(0) += 1;
    }
    m
}

fn line_count(out: &Path) -> usize {
    std::fs::read(out)
        .map(|b| bytecount(&b))
        .unwrap_or_default()
}

fn bytecount(b: &[u8]) -> usize {
    b.iter().filter(|&&c| c == b'\n').count()
}

fn numbered(stream: &str, range: std::ops::Range<u64>) -> String {
    range.map(|i| format!("{stream}-{i}\n")).collect()
}

#[test]
fn appended_lines_of_every_matching_file_are_delivered_once() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    append(&logs.join("a.log"), &numbered("a", 0..1000));
    append(&logs.join("skip.gz"), "never\n");
    let base = logs.to_str().unwrap();
    let mut d = start(
        dir.path(),
        &config(&format!("{base}/*"), r#"exclude = ["*.gz"]"#),
    );
    for k in 0..10 {
        append(
            &logs.join("a.log"),
            &numbered("a", 1000 + k * 1000..2000 + k * 1000),
        );
        append(
            &logs.join("b.log"),
            &numbered("b", k * 1000..(k + 1) * 1000),
        );
    }
    let out = dir.path().join("out.log");
    wait_until(Duration::from_secs(30), "all 21,000 lines", || {
        line_count(&out) >= 21_000
    });
    assert!(d.stop().success(), "{}", d.stderr());
    let c = counts(&out);
    assert_eq!(c.len(), 21_000, "distinct lines");
    assert!(c.values().all(|&n| n == 1), "a line was duplicated");
    assert!(!c.contains_key("never"), "excluded file was read");
    // Order within a file is kept.
    let text = std::fs::read_to_string(&out).unwrap();
    let a: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("a-")?.parse().ok())
        .collect();
    assert!(
        a.windows(2).all(|w| w[0] < w[1]),
        "lines of a.log out of order"
    );
}

#[test]
fn file_in_directories_created_after_start_is_read_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    // Neither `pods` nor anything below it exists at start.
    let pods = dir.path().join("var/log/pods");
    let mut d = start(
        dir.path(),
        &config(&format!("{}/**/*.log", pods.to_str().unwrap()), ""),
    );
    let out = dir.path().join("out.log");
    let mut seen = Vec::new();
    for i in 0..5 {
        let cdir = pods.join(format!("ns_pod{i}_uid{i}/app"));
        std::fs::create_dir_all(&cdir).unwrap();
        let t0 = Instant::now();
        append(&cdir.join("0.log"), &format!("pod{i}-hello\n"));
        wait_until(Duration::from_secs(10), "the new pod's line", || {
            counts(&out).contains_key(&format!("pod{i}-hello"))
        });
        seen.push(t0.elapsed());
        // A short-lived pod: its directory goes away soon after the write.
        let gone = pods.join(format!("ns_short{i}_uid/app"));
        std::fs::create_dir_all(&gone).unwrap();
        append(&gone.join("0.log"), &format!("short{i}\n"));
        wait_until(
            Duration::from_secs(10),
            "the short-lived pod's line",
            || counts(&out).contains_key(&format!("short{i}")),
        );
        std::fs::remove_dir_all(pods.join(format!("ns_short{i}_uid"))).unwrap();
    }
    eprintln!("discovery latency of a file in a new directory: {seen:?}");
    let worst = seen.iter().max().copied().unwrap_or_default();
    assert!(
        worst < Duration::from_secs(2),
        "discovery took {worst:?} (goal < 1 s)"
    );
    assert!(d.stop().success(), "{}", d.stderr());
}

fn logrotate_bin() -> &'static str {
    for p in [
        "/usr/sbin/logrotate",
        "/sbin/logrotate",
        "/usr/bin/logrotate",
    ] {
        if Path::new(p).exists() {
            return p;
        }
    }
    panic!("logrotate is not installed: run scripts/install-deps.sh");
}

/// Lines the logrotate tests write (the issue's figure).
const ROTATE_LINES: u64 = 1_000_000;
/// Rotated files kept (logrotate looks at every name up to it on each run:
/// 100,000 costs it 0.4 s a run).
const MAX_ROTATIONS: u32 = 1000;

/// A writer appending `w-0` … `w-{lines-1}` to `path` in bursts. With `reopen`,
/// it reopens the path when its inode changed (an application reacting to
/// rotation, a little late as real ones are). It reopens only a file that
/// exists (as an application told by logrotate's postrotate does): creating it
/// itself would race logrotate's own `create`, which then fails with "File
/// exists".
fn writer(path: PathBuf, reopen: bool, lines: u64) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .unwrap();
        let mut ino = f.metadata().unwrap().ino();
        for i in (0..lines).step_by(1000) {
            f.write_all(numbered("w", i..(i + 1000).min(lines)).as_bytes())
                .unwrap();
            if reopen && std::fs::metadata(&path).map(|m| m.ino()).ok() != Some(ino) {
                // Renamed away and not created yet: go on writing to the old
                // file and look again after the next burst.
                if let Ok(g) = std::fs::OpenOptions::new().append(true).open(&path) {
                    ino = g.metadata().unwrap().ino();
                    f = g;
                }
            }
            // Pace: about 10 bursts per rotation period.
            std::thread::sleep(Duration::from_millis(10));
        }
    })
}

/// Run logrotate every 100 ms while a writer writes `lines` lines; return
/// how many times it ran.
fn rotate_while_writing(dir: &Path, log: &Path, mode: &str, reopen: bool, lines: u64) -> u32 {
    let conf = dir.join("logrotate.conf");
    std::fs::write(
        &conf,
        format!(
            "{} {{\n  rotate {MAX_ROTATIONS}\n  {mode}\n  missingok\n  nocompress\n}}\n",
            log.display()
        ),
    )
    .unwrap();
    let state = dir.join("logrotate.state");
    let w = writer(log.to_owned(), reopen, lines);
    let mut runs = 0;
    let t0 = Instant::now();
    loop {
        // One run every 100 ms (logrotate takes some of it).
        let next = t0 + Duration::from_millis(100) * (runs + 1);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        if w.is_finished() {
            break;
        }
        assert!(runs < MAX_ROTATIONS, "the writer is too slow");
        let st = Command::new(logrotate_bin())
            .arg("-f")
            .arg("-s")
            .arg(&state)
            .arg(&conf)
            .status()
            .expect("run logrotate");
        assert!(st.success(), "logrotate failed");
        runs += 1;
    }
    w.join().unwrap();
    // A last line after the last rotation: once it is delivered, every line
    // before it was read.
    append(log, "w-end\n");
    runs
}

#[test]
fn logrotate_create_mode_loses_and_duplicates_no_line() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join("app.log");
    // Only the live name matches: rotated files are read through their open
    // descriptor, never found by the glob.
    let mut d = start(dir.path(), &config(log.to_str().unwrap(), ""));
    let n = ROTATE_LINES;
    let t0 = Instant::now();
    let runs = rotate_while_writing(dir.path(), &log, "create 0644", true, n);
    // Every run rotated once: app.log.1 ..= app.log.<runs> (other names, if
    // any, are listed in the message).
    let names: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let rotated = names
        .iter()
        .filter(|n| {
            n.strip_prefix("app.log.")
                .is_some_and(|k| k.parse::<u32>().is_ok_and(|k| (1..=runs).contains(&k)))
        })
        .count();
    assert_eq!(rotated, runs as usize, "rotated files: {names:?}");
    let out = dir.path().join("out.log");
    wait_until(Duration::from_secs(60), "every line", || {
        line_count(&out) > n as usize
    });
    assert!(d.stop().success(), "{}", d.stderr());
    let c = counts(&out);
    let missing: Vec<u64> = (0..n)
        .filter(|i| !c.contains_key(&format!("w-{i}")))
        .collect();
    assert!(
        missing.is_empty(),
        "{} lines lost, first {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    let dups = c.values().filter(|&&k| k > 1).count();
    assert_eq!(dups, 0, "duplicated lines after {runs} rotations");
    eprintln!(
        "create mode: {n} lines, {runs} rotations, none lost or duplicated ({:?})",
        t0.elapsed()
    );
}

#[test]
fn logrotate_copytruncate_is_noticed_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join("app.log");
    let mut d = start(dir.path(), &config(log.to_str().unwrap(), ""));
    let n = ROTATE_LINES;
    let t0 = Instant::now();
    let runs = rotate_while_writing(dir.path(), &log, "copytruncate", false, n);
    // The last line is in the live file, so it must arrive.
    let out = dir.path().join("out.log");
    wait_until(Duration::from_secs(60), "the last line", || {
        std::fs::read(&out).is_ok_and(|b| b.ends_with(b"w-end\n"))
    });
    assert!(d.stop().success(), "{}", d.stderr());
    let c = counts(&out);
    let dups = c.values().filter(|&&k| k > 1).count();
    assert_eq!(dups, 0, "duplicated lines");
    // Every line still in the live file at the end was delivered.
    let live = std::fs::read_to_string(&log).unwrap();
    for l in live.lines() {
        assert!(c.contains_key(l), "{l} of the live file not delivered");
    }
    let lost: Vec<String> = (0..n)
        .map(|i| format!("w-{i}"))
        .filter(|l| !c.contains_key(l))
        .collect();
    // Lost lines found in a rotated copy were not read before the truncate;
    // the others were written between copy and truncate and exist nowhere.
    let mut copies = std::collections::HashSet::new();
    for e in std::fs::read_dir(&logs).unwrap().flatten() {
        if e.file_name() != "app.log" {
            for l in std::fs::read_to_string(e.path()).unwrap().lines() {
                copies.insert(l.to_owned());
            }
        }
    }
    let in_copy = lost.iter().filter(|l| copies.contains(*l)).count();
    let lost = lost.len();
    eprintln!(
        "copytruncate: {n} lines, {runs} rotations, {lost} lost: {} in the copy-then-truncate window, {in_copy} unread before the truncate (in the copies) ({:?})",
        lost - in_copy,
        t0.elapsed()
    );
    let log_text = d.stderr();
    assert!(
        log_text.contains("File truncated"),
        "no truncation noticed:\n{log_text}"
    );
    assert!(lost < n as usize / 4, "{lost} of {n} lines lost");
}

#[test]
fn truncation_and_deletion_while_open() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let t = logs.join("t.log");
    let del = logs.join("del.log");
    append(&t, &numbered("t", 0..100));
    append(&del, &numbered("d", 0..100));
    let mut d = start(
        dir.path(),
        &config(&format!("{}/*.log", logs.display()), ""),
    );
    let out = dir.path().join("out.log");
    wait_until(Duration::from_secs(10), "first lines", || {
        line_count(&out) >= 200
    });
    // Truncate to zero, then write fewer bytes than before.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&t)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&t, "t-after\n");
    wait_until(Duration::from_secs(10), "the line after truncation", || {
        counts(&out).contains_key("t-after")
    });
    // Deleted while open, with unread lines and no trailing newline.
    {
        let mut f = std::fs::OpenOptions::new().append(true).open(&del).unwrap();
        std::fs::remove_file(&del).unwrap();
        f.write_all(b"d-late\nd-unterminated").unwrap();
    }
    wait_until(
        Duration::from_secs(10),
        "the deleted file's last lines",
        || {
            let c = counts(&out);
            c.contains_key("d-late") && c.contains_key("d-unterminated")
        },
    );
    // Its descriptor is released, so the space comes back.
    let fds = format!("/proc/{}/fd", d.child.id());
    wait_until(
        Duration::from_secs(10),
        "the deleted file's descriptor to close",
        || {
            std::fs::read_dir(&fds).unwrap().flatten().all(|e| {
                std::fs::read_link(e.path())
                    .map(|t| !t.to_string_lossy().contains("del.log"))
                    .unwrap_or(true)
            })
        },
    );
    assert!(d.stop().success(), "{}", d.stderr());
    assert!(d.stderr().contains("File truncated"), "{}", d.stderr());
    let c = counts(&out);
    assert!(c.values().all(|&k| k == 1), "duplicates");
    assert_eq!(c.len(), 203);
}

#[test]
fn kill_9_mid_stream_then_restart_loses_no_line() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let cfg = config(&format!("{}/*.log", logs.display()), "");
    let out = dir.path().join("out.log");
    let ckpt = dir.path().join("data/file_source/f/checkpoints.json");
    let files = 4u64;
    let per_file = 50_000u64;
    let total = (files * per_file) as usize;
    let mut d = start(dir.path(), &cfg);
    // Four writers append in bursts while sluice reads; it is killed mid-stream,
    // once a checkpoint exists, and started again while they keep writing.
    let writers: Vec<_> = (0..files)
        .map(|f| {
            let path = logs.join(format!("{f}.log"));
            std::thread::spawn(move || {
                for from in (0..per_file).step_by(100) {
                    append(&path, &numbered(&format!("f{f}"), from..from + 100));
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    // Written only once some file's acknowledged offset is past 0.
    wait_until(Duration::from_secs(30), "a checkpoint", || ckpt.exists());
    d.signal(libc::SIGKILL);
    let _ = d.wait(Duration::from_secs(10));
    let at_kill = line_count(&out);
    assert!(at_kill < total, "the stream was over before the kill");
    let mut d = start(dir.path(), &cfg);
    for w in writers {
        w.join().unwrap();
    }
    wait_until(
        Duration::from_secs(60),
        "every line after the restart",
        || counts(&out).len() >= total,
    );
    assert!(d.stop().success(), "{}", d.stderr());
    let c = counts(&out);
    for f in 0..files {
        for i in 0..per_file {
            assert!(c.contains_key(&format!("f{f}-{i}")), "f{f}-{i} lost");
        }
    }
    assert_eq!(c.len(), total, "unexpected lines (a torn write?)");
    let dups: u32 = c.values().map(|&k| k - 1).sum();
    eprintln!(
        "kill -9: {total} lines, {at_kill} delivered before the kill, {dups} delivered again after the restart"
    );
    assert!(
        c.values().all(|&k| k <= 2),
        "a line was delivered more than twice"
    );
    // Only what was delivered after the last checkpoint comes again.
    assert!(
        (dups as usize) < at_kill,
        "{dups} duplicates of {at_kill} delivered: the checkpoint was not used"
    );
}

/// CRI lines of one container: `lines` messages `<ns>-<pod>-<i>`, every 10th on
/// stderr, every 7th split by the runtime into three parts (P, P, F).
fn cri_lines(ns: &str, pod: u32, lines: u32) -> String {
    let mut s = String::new();
    for i in 0..lines {
        let stream = if i % 10 == 0 { "stderr" } else { "stdout" };
        let msg = format!("{ns}-{pod}-{i}");
        let t = format!("2024-01-01T00:00:{:02}.{:09}Z", i % 60, i);
        if i % 7 == 0 {
            let (a, rest) = msg.split_at(2);
            let (b, c) = rest.split_at(2);
            s += &format!("{t} {stream} P {a}\n{t} {stream} P {b}\n{t} {stream} F {c}\n");
        } else {
            s += &format!("{t} {stream} F {msg}\n");
        }
    }
    s
}

#[test]
fn short_lived_pods_cri_lines_joined_with_kubernetes_fields() {
    let dir = tempfile::tempdir().unwrap();
    let pods_dir = dir.path().join("pods");
    let mut d = start(
        dir.path(),
        &format!(
            r#"
            data_dir = "$DIR/data"
            [sources.k8s]
            type = "file"
            include = ["{}/**/*.log"]
            format = "cri"
            [sinks.out]
            type = "file"
            inputs = ["k8s"]
            path = "$DIR/out/{{field.kubernetes.namespace}}/{{field.kubernetes.container}}-{{field.stream}}.log"
            "#,
            pods_dir.display()
        ),
    );
    let (pods, per_pod) = (40u32, 100u32);
    let mut alive: Vec<(Instant, PathBuf)> = Vec::new();
    for p in 0..pods {
        let ns = format!("ns{}", p % 2);
        let pod_dir = pods_dir.join(format!("{ns}_pod-{p}_uid-{p}"));
        std::fs::create_dir_all(pod_dir.join("app")).unwrap();
        let text = cri_lines(&ns, p, per_pod);
        // Two writes, the first ending inside a partial sequence.
        let cut = text.find(" P ").map_or(text.len() / 2, |i| i + 3);
        let log = pod_dir.join("app/0.log");
        append(&log, &text[..cut]);
        append(&log, &text[cut..]);
        alive.push((Instant::now(), pod_dir));
        // Pods live about half a second after their last write.
        while alive
            .first()
            .is_some_and(|(t, _)| t.elapsed() > Duration::from_millis(500))
        {
            std::fs::remove_dir_all(alive.remove(0).1).unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for (t, p) in alive {
        std::thread::sleep(Duration::from_millis(500).saturating_sub(t.elapsed()));
        std::fs::remove_dir_all(p).unwrap();
    }
    let out = dir.path().join("out");
    let total = (pods * per_pod) as usize;
    let delivered = || {
        ["ns0", "ns1"]
            .iter()
            .flat_map(|ns| ["stdout", "stderr"].map(|s| out.join(format!("{ns}/app-{s}.log"))))
            .map(|p| line_count(&p))
            .sum::<usize>()
    };
    wait_until(Duration::from_secs(30), "every pod's lines", || {
        delivered() >= total
    });
    assert!(d.stop().success(), "{}", d.stderr());
    for ns in ["ns0", "ns1"] {
        for stream in ["stdout", "stderr"] {
            let c = counts(&out.join(format!("{ns}/app-{stream}.log")));
            for p in (0..pods).filter(|p| format!("ns{}", p % 2) == ns) {
                for i in (0..per_pod).filter(|i| (i % 10 == 0) == (stream == "stderr")) {
                    let m = format!("{ns}-{p}-{i}");
                    assert_eq!(c.get(&m), Some(&1), "{m} in {ns}/{stream}");
                }
            }
        }
    }
    assert_eq!(delivered(), total, "extra lines (unjoined parts?)");
}

#[test]
fn kubernetes_example_is_valid_and_bad_globs_are_reported() {
    let example = crate::common::manifest_dir().join("../../examples/kubernetes.toml");
    let out = Command::new(crate::common::sluice_bin())
        .args(["validate", "--config"])
        .arg(&example)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[sources.f]\ntype = \"file\"\ninclude = [\"logs/*.log\", \"/x/[a.log\"]\nmax_open_files = 0\n\
         [sinks.n]\ntype = \"null\"\ninputs = [\"f\"]\n",
    )
    .unwrap();
    let out = Command::new(crate::common::sluice_bin())
        .args(["validate", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "sources.f.include",
        "not an absolute path",
        "/x/[a.log",
        "sources.f.max_open_files",
    ] {
        assert!(err.contains(needle), "{needle} not in:\n{err}");
    }
}
