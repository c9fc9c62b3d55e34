//! Archive sink into Azurite (Microsoft's Azure Storage emulator, from npm,
//! installed by `scripts/install-deps.sh` under `/var/tmp/sluice-azurite`) through
//! `az://`, read back by azure-storage-blob (Python): an archiver SIGKILLed once
//! mid-run still leaves every record exactly once, in blobs larger than the
//! single-PUT limit (block list upload) and smaller ones (one PUT).

use std::collections::{BTreeMap, HashSet};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{Daemon, manifest_dir, sluice_bin};
use crate::kafka_source::{BASE_TS_MS, committed, end_offsets, produce};
use crate::kafka_support::{free_port, need_kafka, shared_broker, wait_for};

/// An Azurite blob service on a free loopback port, killed on drop.
struct Azurite {
    child: Child,
    url: String,
    _data: tempfile::TempDir,
}

impl Azurite {
    fn start() -> Azurite {
        let home = std::env::var_os("SLUICE_AZURITE_HOME")
            .map_or_else(|| PathBuf::from("/var/tmp/sluice-azurite"), PathBuf::from);
        let bin = home.join("node_modules/.bin/azurite-blob");
        assert!(
            bin.exists(),
            "the Azure tests need Azurite at {}: run scripts/install-deps.sh",
            bin.display()
        );
        let ok = Command::new("python3")
            .args(["-c", "import azure.storage.blob"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "the Azure tests need azure-storage-blob (Python), which is not installed: run scripts/install-deps.sh"
        );
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(&bin)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(data.path())
            .args(["--silent", "--skipApiVersionCheck", "--loose"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start azurite");
        wait_for("azurite to listen", Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Azurite {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _data: data,
        }
    }

    fn tool(&self, args: &[&str]) {
        let script = manifest_dir().join("tests/it/az_tool.py");
        let out = Command::new("python3")
            .arg(&script)
            .arg(&self.url)
            .args(args)
            .output()
            .expect("run az_tool.py");
        assert!(
            out.status.success(),
            "az_tool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn azure_archive_is_exactly_once_after_a_kill_and_readable_by_azure_storage_blob() {
    let kafka = need_kafka!();
    let broker = shared_broker(&kafka);
    let azurite = Azurite::start();
    azurite.tool(&["mkcontainer", "cold"]);
    let addr = broker.addr();
    let (topic, group, n, parts) = ("archive-az", "archive-az-g", 100_000usize, 2);
    broker.create_topic(topic, parts as u32);
    produce(&addr, topic, n, |i| BASE_TS_MS + i as i64);
    let dir = tempfile::tempdir().unwrap();
    // The emulator's well-known account and key; its address from the
    // environment variable object_store reads in emulator mode.
    let env = [("AZURITE_BLOB_STORAGE_URL", azurite.url.as_str())];
    // ~50,000 records of ~210 encoded bytes per partition: one blob past the
    // 8 MiB single-PUT limit (blocks + block list), the rest closed by max_file_secs.
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
url = "az://cold/logs"
path = "{{field.kafka.topic}}/{{field.kafka.partition}}-{{first_offset}}.jsonl"
compression = "none"
max_file_bytes = 8800000
max_file_secs = 2
[sinks.cold.object_store]
azure_storage_use_emulator = "true"
"#
    );
    let mut d = Daemon::start_with(dir.path(), &config, &env);
    let ends = end_offsets(&addr, topic, parts);
    wait_for("a first commit", Duration::from_secs(60), || {
        committed(&addr, group, topic, parts)
            .iter()
            .any(Option::is_some)
    });
    d.signal(libc::SIGKILL);
    let _ = d.wait(Duration::from_secs(10));
    let mut d = Daemon::start_with(dir.path(), &config, &env);
    wait_for("every offset committed", Duration::from_secs(90), || {
        committed(&addr, group, topic, parts) == ends
    });
    assert!(d.stop().success(), "log:\n{}", d.stderr());

    let out = dir.path().join("records.tsv");
    azurite.tool(&["read", "cold", "logs", out.to_str().unwrap()]);
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
        "no blob went up in blocks: largest {largest}"
    );
    assert_eq!(values.len(), n);
    for (p, mut offs) in by_part {
        offs.sort_unstable();
        assert_eq!(offs, (0..ends[p as usize].unwrap()).collect::<Vec<_>>());
    }
    let verify = Command::new(sluice_bin())
        .args(["archive", "verify", "az://cold/logs"])
        .args(["--option", "azure_storage_use_emulator=true"])
        .envs(env)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(report.contains(&format!("records={n} ")), "{report}");
}
