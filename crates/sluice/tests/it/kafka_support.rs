//! Test harness for the Kafka tests: a real `tansu` broker per test on a free
//! loopback port (memory storage, or sqlite in a temp dir when it must survive a
//! kill), an independent reader (Python confluent-kafka, `kafka_consume.py`) that
//! counts records by reading them, and the counters of a daemon's shutdown report
//! (the daemon itself is `common::Daemon`).
//!
//! A missing broker or Python client fails the test with the command that
//! installs it (`scripts/install-deps.sh`); `SLUICE_SKIP_KAFKA_TESTS=1` skips
//! them instead, printing why.

#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

const INSTALL: &str = "run scripts/install-deps.sh (or: cargo install tansu --locked --version 0.6.0 \
                       --features dynostore,libsql; python3 -m pip install confluent-kafka==2.16.1)";

/// The broker binary, or `None` when the tests are to be skipped. Panics with the
/// install command when it is missing.
pub fn tansu() -> Option<PathBuf> {
    if std::env::var_os("SLUICE_SKIP_KAFKA_TESTS").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED: Kafka test skipped because SLUICE_SKIP_KAFKA_TESTS=1.");
        return None;
    }
    let from_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("tansu"))
            .find(|p| p.is_file())
    });
    let home = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin/tansu"));
    let bin = from_path.or(home.filter(|p| p.is_file()));
    let Some(bin) = bin else {
        panic!("the Kafka tests need the tansu broker, which is not installed: {INSTALL}");
    };
    let python_ok = Command::new("python3")
        .args(["-c", "import confluent_kafka"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        python_ok,
        "the Kafka tests need Python confluent-kafka, which is not installed: {INSTALL}"
    );
    Some(bin)
}

/// Start of a Kafka test: the broker binary, or return early (skip) when asked to.
macro_rules! need_tansu {
    () => {
        match crate::kafka_support::tansu() {
            Some(bin) => bin,
            None => return,
        }
    };
}
pub(crate) use need_tansu;

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local address").port()
}

/// Where the broker keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// Lost when the process stops.
    Memory,
    /// A SQLite file in the broker's temp dir: survives kill -9.
    Sqlite,
}

/// A tansu broker process.
pub struct Broker {
    bin: PathBuf,
    pub port: u16,
    pub dir: tempfile::TempDir,
    storage: Storage,
    authentication: bool,
    advertised: Option<String>,
    child: Option<Child>,
}

impl Broker {
    /// Start a broker on a free port.
    pub fn start(bin: &Path, storage: Storage) -> Broker {
        let mut b = Broker::new(bin, free_port(), storage);
        b.start_process();
        b
    }

    /// A broker for `port`, not started yet.
    pub fn new(bin: &Path, port: u16, storage: Storage) -> Broker {
        let dir = tempfile::tempdir().expect("temp dir");
        Broker {
            bin: bin.to_owned(),
            port,
            dir,
            storage,
            authentication: false,
            advertised: None,
            child: None,
        }
    }

    /// Require SASL (SCRAM) authentication from the next start on.
    pub fn require_authentication(&mut self) {
        self.authentication = true;
    }

    /// From the next start on, tell clients (metadata) that the broker is at
    /// `localhost:PORT` — a TLS terminator in front — instead of its own listener,
    /// so every connection after bootstrap goes through that port too.
    pub fn advertise_port(&mut self, port: u16) {
        self.advertised = Some(format!("tcp://localhost:{port}"));
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Start (or restart) the process and wait until it accepts connections.
    pub fn start_process(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = self.advertised.clone().unwrap_or_else(|| url.clone());
        let storage = match self.storage {
            Storage::Memory => "memory://tansu/".to_owned(),
            Storage::Sqlite => "sqlite://tansu.db".to_owned(),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("broker.log"))
            .expect("broker log");
        let mut cmd = Command::new(&self.bin);
        cmd.args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &advertised,
        ])
        .args(["--storage-engine", &storage])
        .current_dir(self.dir.path())
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log);
        if self.authentication {
            cmd.arg("--authentication");
        }
        self.child = Some(cmd.spawn().expect("start tansu"));
        let addr: SocketAddr = self.addr().parse().expect("socket address");
        wait_for("the broker to listen", Duration::from_secs(10), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        });
    }

    /// SIGSTOP: the broker stops answering (connections stay open, requests
    /// wait) and keeps its data, even with memory storage; `resume` continues it.
    pub fn pause(&self) {
        if let Some(c) = &self.child {
            // SAFETY: plain syscall on our own child's pid.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGSTOP) };
        }
    }

    /// SIGCONT after `pause`.
    pub fn resume(&self) {
        if let Some(c) = &self.child {
            // SAFETY: plain syscall on our own child's pid.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGCONT) };
        }
    }

    /// Kill -9 and reap (an outage).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Run a `tansu` admin subcommand against this broker.
    fn admin(&self, args: &[&str]) {
        let out = Command::new(&self.bin)
            .args(args)
            .args(["--broker", &format!("tcp://127.0.0.1:{}", self.port)])
            .output()
            .expect("run tansu admin command");
        assert!(
            out.status.success(),
            "tansu {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Create a topic (this broker never creates them by itself).
    pub fn create_topic(&self, name: &str, partitions: u32) {
        self.admin(&[
            "topic",
            "create",
            name,
            "--partitions",
            &partitions.to_string(),
        ]);
    }

    /// Create a SCRAM user (`mechanism`: scram256 or scram512).
    pub fn create_user(&self, name: &str, password: &str, mechanism: &str) {
        self.admin(&["user", "create", name, password, "--mechanism", mechanism]);
    }

    /// What the broker logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Poll `cond` until true; panic after `timeout` naming `what`.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
}

/// Read every record of `topics` from the beginning with the independent reader;
/// stops once `expect` records were read and nothing more came for a second (or
/// after `idle` without any record).
pub fn consume(addr: &str, topics: &[&str], expect: usize, idle: Duration) -> Vec<Rec> {
    consume_with(addr, topics, expect, idle, &[])
}

/// [`consume`] with extra librdkafka properties for the reader (TLS, for instance).
pub fn consume_with(
    addr: &str,
    topics: &[&str],
    expect: usize,
    idle: Duration,
    properties: &[(&str, &str)],
) -> Vec<Rec> {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("records.tsv");
    let script = crate::common::manifest_dir().join("tests/it/kafka_consume.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .args(["--brokers", addr, "--out"])
        .arg(&out);
    cmd.args([
        "--expect",
        &expect.to_string(),
        "--idle",
        &idle.as_secs_f64().to_string(),
    ]);
    for t in topics {
        cmd.args(["--topic", t]);
    }
    for (k, v) in properties {
        cmd.args(["--set", &format!("{k}={v}")]);
    }
    let res = cmd.output().expect("run kafka_consume.py");
    assert!(
        res.status.success(),
        "reader failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let text = std::fs::read_to_string(&out).expect("reader output");
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 5, "bad reader line {l:?}");
            Rec {
                topic: f[0].to_owned(),
                partition: f[1].parse().expect("partition"),
                offset: f[2].parse().expect("offset"),
                key: (f[3] != "-").then(|| B64.decode(f[3]).expect("key base64")),
                value: B64.decode(f[4]).expect("value base64"),
            }
        })
        .collect()
}

/// The shutdown report's counter line for component `id` (`sinks.k`) in a
/// daemon's log, empty when absent.
pub fn counters(log: &str, id: &str) -> String {
    let needle = format!("Counters {id}:");
    log.lines()
        .find_map(|l| {
            l.find(&needle)
                .map(|i| l[i + needle.len()..].trim().to_owned())
        })
        .unwrap_or_default()
}

/// Value of `name=N` in a counters line, 0 when absent.
pub fn counter(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| {
            kv.trim_end_matches('.')
                .strip_prefix(&format!("{name}="))
                .map(str::to_owned)
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Write `lines` to a file (one per line) for an exec source to `cat`.
pub fn write_lines(path: &Path, lines: &[Vec<u8>]) {
    let mut data = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for l in lines {
        data.extend_from_slice(l);
        data.push(b'\n');
    }
    std::fs::write(path, data).expect("write lines");
}
