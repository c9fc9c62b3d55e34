//! Archive sink into a real S3-compatible server (moto's server mode, from PyPI:
//! multipart uploads included), read back by boto3: an archiver SIGKILLed once
//! mid-run still leaves every record exactly once, in files larger than the
//! single-PUT limit (multipart) and smaller ones (one PUT).

use std::collections::{BTreeMap, HashSet};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{Daemon, manifest_dir, sluice_bin};
use crate::kafka_source::{BASE_TS_MS, committed, end_offsets, produce};
use crate::kafka_support::{free_port, need_kafka, shared_broker, wait_for};

/// A moto S3 server on a free loopback port, killed on drop.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start() -> Moto {
        let ok = Command::new("python3")
            .args(["-c", "import moto.server, boto3, flask"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "the S3 tests need moto[server] and boto3, which are not installed: run scripts/install-deps.sh"
        );
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto server");
        let endpoint = format!("http://127.0.0.1:{port}");
        wait_for("moto to listen", Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Moto { child, endpoint }
    }

    fn tool(&self, args: &[&str]) {
        let script = manifest_dir().join("tests/it/s3_tool.py");
        let out = Command::new("python3")
            .arg(&script)
            .arg(&self.endpoint)
            .args(args)
            .output()
            .expect("run s3_tool.py");
        assert!(
            out.status.success(),
            "s3_tool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn s3_archive_is_exactly_once_after_a_kill_and_readable_by_boto3() {
    let kafka = need_kafka!();
    let broker = shared_broker(&kafka);
    let moto = Moto::start();
    moto.tool(&["mkbucket", "cold"]);
    let addr = broker.addr();
    let (topic, group, n, parts) = ("archive-s3", "archive-s3-g", 100_000usize, 2);
    broker.create_topic(topic, parts as u32);
    produce(&addr, topic, n, |i| BASE_TS_MS + i as i64);
    let dir = tempfile::tempdir().unwrap();
    let options = format!(
        r#"aws_endpoint = "{}"
aws_allow_http = "true"
aws_access_key_id = "test"
aws_secret_access_key = "test"
aws_region = "us-east-1""#,
        moto.endpoint
    );
    // ~50,000 records of ~210 encoded bytes per partition: one file past the
    // 8 MiB single-PUT limit (multipart), the rest closed by max_file_secs.
    let config = format!(
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

[sinks.cold]
type = "archive"
inputs = ["in"]
url = "s3://cold/logs"
path = "{{field.kafka.topic}}/{{field.kafka.partition}}-{{first_offset}}.jsonl"
compression = "none"
max_file_bytes = 8800000
max_file_secs = 2
[sinks.cold.object_store]
{options}
"#
    );
    let mut d = Daemon::start(dir.path(), &config);
    let ends = end_offsets(&addr, topic, parts);
    wait_for("a first commit", Duration::from_secs(60), || {
        committed(&addr, group, topic, parts)
            .iter()
            .any(Option::is_some)
    });
    d.signal(libc::SIGKILL);
    let _ = d.wait(Duration::from_secs(10));
    let mut d = Daemon::start(dir.path(), &config);
    wait_for("every offset committed", Duration::from_secs(60), || {
        committed(&addr, group, topic, parts) == ends
    });
    assert!(d.stop().success(), "log:\n{}", d.stderr());

    let out = dir.path().join("records.tsv");
    moto.tool(&["read", "cold", "logs", out.to_str().unwrap()]);
    let text = std::fs::read_to_string(&out).unwrap();
    let mut values = HashSet::new();
    let mut by_part: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let mut largest = 0u64;
    for l in text.lines() {
        let f: Vec<&str> = l.split('\t').collect();
        largest = largest.max(f[1].parse().unwrap());
        assert!(values.insert(f[4].to_owned()), "duplicate {}", f[4]);
        by_part
            .entry(f[2].parse().unwrap())
            .or_default()
            .push(f[3].parse().unwrap());
    }
    assert!(
        largest > 8 << 20,
        "no file went up as a multipart upload: largest {largest}"
    );
    assert_eq!(values.len(), n);
    for (p, mut offs) in by_part {
        offs.sort_unstable();
        assert_eq!(offs, (0..ends[p as usize].unwrap()).collect::<Vec<_>>());
    }
    let verify = Command::new(sluice_bin())
        .args(["archive", "verify", "s3://cold/logs"])
        .args(["--option", &format!("aws_endpoint={}", moto.endpoint)])
        .args(["--option", "aws_allow_http=true"])
        .args(["--option", "aws_access_key_id=test"])
        .args(["--option", "aws_secret_access_key=test"])
        .args(["--option", "aws_region=us-east-1"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{report}");
    assert!(report.contains(&format!("records={n} ")), "{report}");
}
