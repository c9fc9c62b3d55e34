//! Forward source and sink against real bytes and real peers: the shared byte
//! vectors, Python fluent-logger, hand-built chunked requests whose acks must wait
//! for delivery (file, a second sluice, Kafka), the handshake, TLS with client
//! certificates (made with the openssl CLI), hostile input next to a well-behaved
//! client, thousands of idle connections, and agent → collector with a collector
//! killed mid-run. Every daemon listens on 127.0.0.1; port 0 is read back from the
//! "Forward source listening." line.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use proto::forward::handshake::{Credentials, Ping, verify_pong};
use proto::forward::{Compression, EventTime, PackedForwardBuilder, Response, ResponseDecoder};
use rmpv::Value;
use serde_json::json;

use crate::common::{Daemon, file_len, make_certs, wait_until};
use crate::kafka_support::{Broker, consume, free_port, need_kafka};

mod auth;
mod config;
mod delivery;
mod hostile;
mod sink;

fn testdata() -> PathBuf {
    crate::common::manifest_dir().join("../../testdata/forward")
}

/// Bound address of forward source number `i` (in start order) from the log.
pub(crate) fn bound_addrs(d: &Daemon, n: usize) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    wait_until(
        Duration::from_secs(20),
        "the forward source to listen",
        || {
            out = d
                .stderr()
                .lines()
                .filter(|l| l.contains("Forward source listening."))
                .filter_map(|l| l.split("address=").nth(1))
                .filter_map(|rest| rest.split_whitespace().next())
                .filter_map(|a| {
                    a.trim_matches(|c: char| !c.is_ascii_digit() && c != '.' && c != ':')
                        .parse()
                        .ok()
                })
                .collect();
            if d.stderr().contains("ERROR") && out.len() < n {
                panic!("sluice failed to start:\n{}", d.stderr());
            }
            out.len() >= n
        },
    );
    out
}

/// A daemon with one forward source (`source_extra` appended to its table) whose
/// events go to `$DIR/out.json` (json encoding) unless `sinks` is given.
pub(crate) struct Fw {
    pub(crate) d: Daemon,
    pub(crate) addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Fw {
    pub(crate) fn start(source_extra: &str) -> Fw {
        Self::with_sinks(
            source_extra,
            "[sinks.out]\ntype = \"file\"\ninputs = [\"fw\"]\npath = \"$DIR/out.json\"\nencoding = \"json\"\n",
        )
    }

    pub(crate) fn with_sinks(source_extra: &str, sinks: &str) -> Fw {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "shutdown_timeout_secs = 20\n[sources.fw]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n{source_extra}\n{sinks}"
        );
        let d = Daemon::start(dir.path(), &config);
        let addr = bound_addrs(&d, 1)[0];
        Fw { d, addr, _dir: dir }
    }

    pub(crate) fn out(&self) -> PathBuf {
        self.d.dir.join("out.json")
    }

    /// Stop the daemon and parse its json output.
    pub(crate) fn stop_and_read(&mut self) -> Vec<serde_json::Value> {
        let st = self.d.stop();
        assert!(
            st.success(),
            "sluice exited with {st}:\n{}",
            self.d.stderr()
        );
        read_json_lines(&self.out())
    }
}

pub(crate) fn read_json_lines(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad json line {l:?}: {e}")))
        .collect()
}

pub(crate) fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to the forward source");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// A PackedForward request of `n` records `{"message": "<prefix> i", "i": i}`.
pub(crate) fn packed(tag: &str, prefix: &str, n: usize, chunk: Option<&str>) -> Vec<u8> {
    let mut b = PackedForwardBuilder::new(tag.as_bytes().to_vec());
    for i in 0..n {
        let rec = Value::Map(vec![
            (Value::from("message"), Value::from(format!("{prefix} {i}"))),
            (Value::from("i"), Value::from(i as u64)),
        ]);
        b.push(EventTime::new(1_700_000_000 + i as i64, 0), &rec);
    }
    b.finish(chunk.map(str::as_bytes), Compression::None)
        .to_vec()
}

pub(crate) fn ack_bytes(chunk: &str) -> Vec<u8> {
    proto::forward::encode_ack(chunk.as_bytes()).to_vec()
}

/// Read exactly `n` bytes or fail with what came.
pub(crate) fn read_exact_within(s: &mut TcpStream, n: usize, timeout: Duration) -> Vec<u8> {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match s.read(&mut buf[got..]) {
            Ok(0) => panic!(
                "connection closed after {got} of {n} bytes: {:02x?}",
                &buf[..got]
            ),
            Ok(k) => got += k,
            Err(e) => panic!("read failed after {got} of {n} bytes: {e}"),
        }
    }
    buf
}

/// Nothing arrives for `wait` (the connection stays open and silent).
pub(crate) fn assert_silent(s: &mut TcpStream, wait: Duration, what: &str) {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => panic!("{what}: connection closed"),
        Ok(n) => panic!("{what}: got {:02x?}", &b[..n]),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{what}: {e}"
        ),
    }
}

/// Everything until the server closes (a reset counts as closed).
pub(crate) fn read_to_close(s: &mut TcpStream, timeout: Duration) -> Vec<u8> {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut out = Vec::new();
    let mut b = [0u8; 4096];
    loop {
        match s.read(&mut b) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&b[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!(
                "server did not close within {timeout:?} ({e}); got {:02x?}",
                out
            ),
        }
    }
}

/// Expected json line of the file sink for one documented event.
fn expected_line(tag: &str, ev: &serde_json::Value) -> serde_json::Value {
    let secs = ev["sec"].as_i64().unwrap();
    let nsec = ev["nsec"].as_u64().unwrap() as u32;
    let time = chrono::DateTime::from_timestamp(secs, nsec)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let mut obj = serde_json::Map::new();
    obj.insert("time".into(), json!(time));
    obj.insert("tag".into(), json!(tag));
    obj.insert("host".into(), json!("127.0.0.1"));
    let record = ev["record"].as_object().unwrap();
    for (k, v) in record {
        obj.insert(k.clone(), debin(v));
    }
    if !record.contains_key("message") {
        // No message_key value: the body is the record as JSON.
        obj.insert(
            "message".into(),
            json!(serde_json::to_string(record).unwrap()),
        );
    }
    if let Some(meta) = ev
        .get("metadata")
        .filter(|m| m.as_object().is_some_and(|o| !o.is_empty()))
    {
        obj.insert("@metadata".into(), meta.clone());
    }
    serde_json::Value::Object(obj)
}

/// `{"$bin": hex}` → what the json encoding writes for bin: text if UTF-8, else base64.
fn debin(v: &serde_json::Value) -> serde_json::Value {
    use base64::Engine as _;
    match v {
        serde_json::Value::Object(o) if o.len() == 1 && o.contains_key("$bin") => {
            let hex = o["$bin"].as_str().unwrap();
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            match String::from_utf8(bytes.clone()) {
                Ok(s) => json!(s),
                Err(_) => json!(base64::engine::general_purpose::STANDARD.encode(bytes)),
            }
        }
        serde_json::Value::Object(o) => {
            serde_json::Value::Object(o.iter().map(|(k, v)| (k.clone(), debin(v))).collect())
        }
        serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(debin).collect()),
        other => other.clone(),
    }
}

fn sorted(mut v: Vec<serde_json::Value>) -> Vec<String> {
    let mut s: Vec<String> = v.drain(..).map(|x| x.to_string()).collect();
    s.sort();
    s
}

/// Raise this process's (and so its children's) open-file limit to at least
/// `want`, up to the hard limit: 5,000 connections need both ends.
pub(crate) fn raise_fd_limit(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Peak RSS (VmHWM) and current RSS of a process, in KiB.
pub(crate) fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// A well-behaved client: one chunked request at a time on one connection, each
/// acked, until told to stop. Returns how many were acked.
pub(crate) fn steady_client(
    addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut s = connect(addr);
        let mut acked = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let id = format!("steady-{acked}");
            s.write_all(&packed("steady", "steady", 10, Some(&id)))
                .unwrap();
            let want = ack_bytes(&id);
            assert_eq!(
                read_exact_within(&mut s, want.len(), Duration::from_secs(20)),
                want
            );
            acked += 1;
        }
        acked
    })
}

pub(crate) fn validate(config: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(&p, config).unwrap();
    let out = Command::new(crate::common::sluice_bin())
        .args(["validate", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
