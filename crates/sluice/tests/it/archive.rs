//! Archive sink against a real broker: Kafka → archive files, with the archiver
//! SIGKILLed at random moments and restarted — every record exactly once across
//! the files (read here independently: zstd decode + JSON parse, and by `sluice
//! archive verify`), committed offsets equal to the archived ranges — and time
//! partitions from the record timestamps.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{Daemon, sluice_bin};
use crate::kafka_source::{BASE_TS_MS, committed, end_offsets, produce};
use crate::kafka_support::{need_kafka, shared_broker, wait_for};

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n == "_sluice") {
            continue;
        }
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

pub fn count_files(root: &Path) -> usize {
    let mut files = Vec::new();
    files_under(root, &mut files);
    files.len()
}

/// Every record of the archive: (path relative to root, partition, offset, value).
pub fn read_all(root: &Path) -> Vec<(String, i64, i64, String)> {
    let mut files = Vec::new();
    files_under(root, &mut files);
    let mut out = Vec::new();
    for f in files {
        let raw = std::fs::read(&f).unwrap();
        let mut text = String::new();
        zstd::stream::read::Decoder::new(&raw[..])
            .unwrap()
            .read_to_string(&mut text)
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let rel = f.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            out.push((
                rel.clone(),
                v["kafka.partition"].as_i64().unwrap(),
                v["kafka.offset"].as_i64().unwrap(),
                v["message"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

fn archiver_config(addr: &str, topic: &str, group: &str, root: &Path, extra: &str) -> String {
    format!(
        r#"
shutdown_timeout_secs = 5
data_dir = "$DIR/data"

[sources.in]
type = "kafka"
brokers = "{addr}"
topics = ["{topic}"]
group_id = "{group}"
[sources.in.librdkafka]
"group.instance.id" = "{group}-1"
"session.timeout.ms" = 6000

[sinks.cold]
type = "archive"
inputs = ["in"]
url = "file://{root}"
{extra}
"#,
        root = root.display()
    )
}

pub fn verify(root: &Path) -> (bool, String) {
    let out = Command::new(sluice_bin())
        .args(["archive", "verify"])
        .arg(format!("file://{}", root.display()))
        .output()
        .expect("run sluice archive verify");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn sigkilled_archiver_leaves_every_record_exactly_once() {
    let kafka = need_kafka!();
    let broker = shared_broker(&kafka);
    let addr = broker.addr();
    let (topic, group, n, parts) = ("archive-kill", "archive-kill-g", 200_000usize, 4);
    broker.create_topic(topic, parts as u32);
    produce(&addr, topic, n, |i| BASE_TS_MS + (i as i64) * 10);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    let config = archiver_config(
        &addr,
        topic,
        group,
        &root,
        r#"path = "{field.kafka.topic}/dt=%Y-%m-%d/{field.kafka.partition}-{first_offset}.jsonl.zst"
max_file_bytes = 400000
max_file_secs = 1
"#,
    );
    // Each run is killed once it has published files of its own, 0 .. 700 ms
    // later (a seed printed for a rerun): mid-file, mid-upload, before commits.
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    eprintln!("kill seed {seed}");
    let ends = end_offsets(&addr, topic, parts);
    let mut kills = 0;
    for round in 0..5 {
        let before = count_files(&root);
        let mut d = Daemon::start(dir.path(), &config);
        wait_for("new archive files", Duration::from_secs(30), || {
            count_files(&root) > before
        });
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(seed % 700);
        let until = Instant::now() + delay;
        while Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        d.signal(libc::SIGKILL);
        let _ = d.wait(Duration::from_secs(10));
        let done = committed(&addr, group, topic, parts);
        eprintln!("round {round}: killed {delay:?} after new files; committed {done:?}");
        kills += 1;
        if done == ends {
            break;
        }
    }
    assert!(
        kills >= 3,
        "the archive was complete after {kills} kills: too fast to test"
    );
    let mut d = Daemon::start(dir.path(), &config);
    wait_for("every offset committed", Duration::from_secs(90), || {
        committed(&addr, group, topic, parts) == ends
    });
    assert!(d.stop().success(), "log:\n{}", d.stderr());

    // Independent read: every value once, every partition's offsets 0..end once.
    let records = read_all(&root);
    let values: HashSet<&str> = records.iter().map(|r| r.3.as_str()).collect();
    assert_eq!(records.len(), n, "records in the archive");
    assert_eq!(values.len(), n, "distinct values");
    let mut by_part: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for r in &records {
        by_part.entry(r.1).or_default().push(r.2);
    }
    for (p, mut offs) in by_part {
        offs.sort_unstable();
        let end = ends[p as usize].unwrap();
        assert_eq!(offs, (0..end).collect::<Vec<_>>(), "partition {p}");
    }
    let (ok, report) = verify(&root);
    assert!(ok, "verify failed:\n{report}");
    assert!(
        report.contains(&format!("records={n} ")) && report.contains("gaps=0 overlaps=0"),
        "{report}"
    );
}

#[test]
fn records_land_in_the_hour_of_their_timestamp() {
    let kafka = need_kafka!();
    let broker = shared_broker(&kafka);
    let addr = broker.addr();
    let (topic, group, n) = ("archive-hours", "archive-hours-g", 720usize);
    broker.create_topic(topic, 2);
    // One record every 6 minutes over 3 days, produced in that order.
    let ts = |i: usize| BASE_TS_MS + (i as i64) * 6 * 60_000;
    produce(&addr, topic, n, ts);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    let config = archiver_config(
        &addr,
        topic,
        group,
        &root,
        r#"path = "{field.kafka.topic}/dt=%Y-%m-%d/hr=%H/{field.kafka.partition}-{first_offset}.jsonl.zst"
max_file_secs = 1
"#,
    );
    let mut d = Daemon::start(dir.path(), &config);
    let ends = end_offsets(&addr, topic, 2);
    wait_for("every offset committed", Duration::from_secs(60), || {
        committed(&addr, group, topic, 2) == ends
    });
    assert!(d.stop().success(), "log:\n{}", d.stderr());
    let records = read_all(&root);
    assert_eq!(records.len(), n);
    let mut dirs = HashSet::new();
    for (path, _, _, value) in &records {
        let i: usize = value.strip_prefix("v-").unwrap().parse().unwrap();
        let t = chrono::DateTime::from_timestamp_millis(ts(i)).unwrap();
        let want = format!("{topic}/{}/", t.format("dt=%Y-%m-%d/hr=%H"));
        assert!(path.starts_with(&want), "{value} in {path}, want {want}");
        dirs.insert(want);
    }
    assert_eq!(dirs.len(), 72, "3 days of hours");
    let (ok, report) = verify(&root);
    assert!(ok, "{report}");
}

/// A record's key and value.
type KeyValue = (Option<Vec<u8>>, Vec<u8>);

/// Archive a 3-partition topic, then `sluice archive restore` it into a new
/// topic through a kafka sink keyed and partitioned by the archived fields: an
/// independent reader finds, partition by partition, the same keys and values
/// in the same order; `--topic` of another topic restores nothing.
#[test]
fn archive_restore_reproduces_each_partition_in_a_new_topic() {
    use crate::kafka_support::consume;
    let kafka = need_kafka!();
    let broker = shared_broker(&kafka);
    let addr = broker.addr();
    let (topic, group, copy, n) = ("restore-src", "restore-src-g", "restore-copy", 3000usize);
    broker.create_topic(topic, 3);
    broker.create_topic(copy, 3);
    produce(&addr, topic, n, |i| BASE_TS_MS + i as i64 * 1000);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("archive");
    let mut d = Daemon::start(
        dir.path(),
        &archiver_config(
            &addr,
            topic,
            group,
            &root,
            "path = \"{field.kafka.topic}/{field.kafka.partition}-{first_offset}.jsonl.zst\"\nmax_file_secs = 1\n",
        ),
    );
    let ends = end_offsets(&addr, topic, 3);
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed(&addr, group, topic, 3) != ends {
        assert!(
            Instant::now() < deadline,
            "offsets {:?} of {ends:?} committed; log:\n{}",
            committed(&addr, group, topic, 3),
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(d.stop().success(), "log:\n{}", d.stderr());
    let restore_cfg = dir.path().join("restore.toml");
    std::fs::write(
        &restore_cfg,
        format!(
            r#"
[sources.none]
type = "stdin"
[sinks.k]
type = "kafka"
inputs = ["none"]
brokers = "{addr}"
topic = "{copy}"
key = "{{field.kafka.key}}"
partition = "{{field.kafka.partition}}"
"#
        ),
    )
    .unwrap();
    let url = format!("file://{}", root.display());
    let run = |extra: &[&str]| {
        let out = Command::new(sluice_bin())
            .args(["archive", "restore", &url, "--to-config"])
            .arg(&restore_cfg)
            .args(extra)
            .output()
            .expect("run sluice archive restore");
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (st, log) = run(&["--topic", "no-such-topic"]);
    assert!(st.success(), "{log}");
    assert!(log.contains("Restored 0 events"), "{log}");
    let (st, log) = run(&[]);
    assert!(st.success(), "{log}");
    assert!(log.contains(&format!("Restored {n} events")), "{log}");
    let by_partition = |t: &str| {
        let mut parts: BTreeMap<u32, Vec<KeyValue>> = BTreeMap::new();
        for r in consume(&addr, &[t], n, Duration::from_secs(10)) {
            parts.entry(r.partition).or_default().push((r.key, r.value));
        }
        parts
    };
    let (original, restored) = (by_partition(topic), by_partition(copy));
    assert_eq!(original.values().map(Vec::len).sum::<usize>(), n);
    assert_eq!(original.len(), 3);
    assert!(original == restored, "partitions differ");
}
