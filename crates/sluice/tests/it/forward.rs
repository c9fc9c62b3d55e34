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

#[test]
fn byte_vectors_produce_their_documented_events_and_acks() {
    // Two vectors (Fluentd str32, text and gzip) carry one chunk id for
    // different payloads: with de-duplication on, the second would be acked as a
    // resend of the first (tests/it/forward_dedupe.rs covers that behaviour).
    let mut fw = Fw::start("dedupe_window = { max_chunks = 0 }");
    let expected: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(testdata().join("expected.json")).unwrap())
            .unwrap();
    let mut want = Vec::new();
    for entry in &expected {
        let file = entry["file"].as_str().unwrap();
        let requests: Vec<&serde_json::Value> = match entry["kind"].as_str().unwrap() {
            "request" if file.ends_with(".bin") => vec![entry],
            "stream" | "captured" => entry["requests"].as_array().unwrap().iter().collect(),
            _ => continue,
        };
        for r in requests {
            if let (Some(tag), Some(events)) = (r["tag"].as_str(), r["events"].as_array()) {
                want.extend(events.iter().map(|e| expected_line(tag, e)));
            }
        }
        let bytes = std::fs::read(testdata().join(file)).unwrap();
        let mut s = connect(fw.addr);
        s.write_all(&bytes).unwrap();
        if let Some(resp) = entry["expected_response"].as_str() {
            let ack = std::fs::read(testdata().join(resp)).unwrap();
            let got = read_exact_within(&mut s, ack.len(), Duration::from_secs(20));
            assert_eq!(got, ack, "{file}: ack");
        }
        s.shutdown(Shutdown::Write).unwrap();
        let rest = read_to_close(&mut s, Duration::from_secs(20));
        assert!(rest.is_empty(), "{file}: unexpected bytes {rest:02x?}");
    }
    // UDP heartbeat on the same port.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let ping = std::fs::read(testdata().join("heartbeat/udp_request.bin")).unwrap();
    udp.send_to(&ping, fw.addr).unwrap();
    let mut b = [0u8; 16];
    let (n, from) = udp.recv_from(&mut b).expect("UDP heartbeat reply");
    assert_eq!(
        (&b[..n], from),
        (
            &std::fs::read(testdata().join("heartbeat/udp_response.bin")).unwrap()[..],
            fw.addr
        )
    );

    let got = fw.stop_and_read();
    assert_eq!(sorted(got), sorted(want));
}

#[test]
fn python_fluent_logger_records_arrive_with_tag_time_and_fields() {
    let mut fw = Fw::start("");
    let script = crate::common::manifest_dir().join("tests/it/forward_fluent_logger.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(fw.addr.port().to_string())
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "fluent-logger client failed (install it: python3 -m pip install fluent-logger): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(Duration::from_secs(20), "103 events", || {
        read_json_lines(&fw.out()).len() >= 103
    });
    let got = fw.stop_and_read();
    assert_eq!(got.len(), 103);
    let by_tag = |t: &str| got.iter().filter(|e| e["tag"] == t).collect::<Vec<_>>();
    let int = by_tag("py.int");
    assert_eq!(int.len(), 1);
    assert_eq!(int[0]["time"], "2023-11-14T22:13:20.000000000Z");
    assert_eq!(
        (&int[0]["message"], &int[0]["n"]),
        (&json!("int time"), &json!(1))
    );
    let nano = by_tag("py.nano");
    assert_eq!(nano[0]["time"], "2023-11-14T22:13:20.500000000Z");
    assert_eq!(nano[0]["nested"], json!({"ok": true}));
    let float = by_tag("py.float");
    assert_eq!(float[0]["time"], "2023-11-14T22:13:21.250000000Z");
    let mut many: Vec<i64> = by_tag("py.many")
        .iter()
        .map(|e| e["i"].as_i64().unwrap())
        .collect();
    many.sort();
    assert_eq!(many, (0..100).collect::<Vec<_>>());
}

#[test]
fn pipelined_chunks_are_acked_in_request_order() {
    let mut fw = Fw::start("");
    let mut s = connect(fw.addr);
    let ids: Vec<String> = (0..20).map(|i| format!("chunk-{i:02}")).collect();
    let mut all = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        all.extend(packed("pipe", &format!("c{i}"), 50, Some(id)));
    }
    s.write_all(&all).unwrap();
    for id in &ids {
        let want = ack_bytes(id);
        assert_eq!(
            read_exact_within(&mut s, want.len(), Duration::from_secs(20)),
            want,
            "ack order"
        );
    }
    drop(s);
    assert_eq!(fw.stop_and_read().len(), 20 * 50);
}

/// A client that sends chunks and never reads its acks does not stall the
/// connection's read loop while the acks fit the socket buffers (beyond that the
/// writer gives up after 30 s and closes).
#[test]
fn a_client_that_never_reads_acks_is_still_served() {
    let mut fw = Fw::start("");
    let mut s = connect(fw.addr);
    for i in 0..300 {
        s.write_all(&packed("deaf", "deaf", 10, Some(&format!("deaf-{i:04}"))))
            .unwrap();
    }
    let out = fw.out();
    wait_until(
        Duration::from_secs(30),
        "3,000 events from a deaf client",
        || read_json_lines(&out).len() >= 3000,
    );
    drop(s);
    assert_eq!(fw.stop_and_read().len(), 3000);
}

/// A collector whose sink cannot deliver yet (a forward sink to ports nobody
/// listens on) must not ack; once the next hop is up (the sink's second server),
/// the ack comes, after the event is in the next hop's file. Also: sluice forward
/// sink → source with gzip and failover.
#[test]
fn ack_waits_for_the_next_hop_to_deliver() {
    let next_port = free_port();
    let dead_port = free_port();
    // The first server never answers: failover to the second, gzip'd requests.
    let collector = Fw::with_sinks(
        "",
        &format!(
            "[sinks.next]\ntype = \"forward\"\ninputs = [\"fw\"]\n\
             servers = [\"127.0.0.1:{dead_port}\", \"127.0.0.1:{next_port}\"]\n\
             compression = \"gzip\"\nack_timeout_secs = 5\n"
        ),
    );
    let mut s = connect(collector.addr);
    s.write_all(&packed("hop", "hop", 10, Some("hop-chunk")))
        .unwrap();
    assert_silent(
        &mut s,
        Duration::from_secs(3),
        "ack before the next hop exists",
    );

    let dir = tempfile::tempdir().unwrap();
    let mut next = Daemon::start(
        dir.path(),
        &format!(
            "[sources.fw]\ntype = \"forward\"\naddress = \"127.0.0.1:{next_port}\"\n\
             [sinks.out]\ntype = \"file\"\ninputs = [\"fw\"]\npath = \"$DIR/out.json\"\nencoding = \"json\"\n"
        ),
    );
    let want = ack_bytes("hop-chunk");
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        read_exact_within(&mut s, want.len(), Duration::from_secs(40))
    }));
    let got = got.unwrap_or_else(|_| {
        panic!(
            "no ack; collector log:\n{}\nnext hop log:\n{}",
            collector.d.stderr(),
            next.stderr()
        )
    });
    assert_eq!(got, want);
    // The ack means the next hop has it on disk (fsynced) already.
    let lines = read_json_lines(&dir.path().join("out.json"));
    assert_eq!(lines.len(), 10, "events at the next hop when the ack came");
    assert_eq!(lines[0]["tag"], "hop");
    assert_eq!(lines[3]["message"], "hop 3");
    assert!(next.stop().success());
}

/// With a Kafka sink, a chunk is acked only once the broker confirmed it: no ack
/// while the broker is absent (at start) or stopped (mid-run), the ack as soon as
/// it is back, and the records are in the topic by then.
#[test]
fn ack_waits_for_the_kafka_broker() {
    let kafka = need_kafka!();
    let port = free_port();
    let fw = Fw::with_sinks(
        "",
        &format!(
            "[sinks.k]\ntype = \"kafka\"\ninputs = [\"fw\"]\nbrokers = \"127.0.0.1:{port}\"\ntopic = \"fwd\"\n\
             create_topics = {{ partitions = 1 }}\n[sinks.k.librdkafka]\n\"reconnect.backoff.max.ms\" = 500\n"
        ),
    );
    let mut s = connect(fw.addr);
    s.write_all(&packed("k", "before", 5, Some("kafka-1")))
        .unwrap();
    assert_silent(&mut s, Duration::from_secs(3), "ack with no broker yet");
    // SQLite storage: the topic survives the broker's kill.
    let mut broker = Broker::new(&kafka, port);
    broker.start_process();
    let want = ack_bytes("kafka-1");
    assert_eq!(
        read_exact_within(&mut s, want.len(), Duration::from_secs(60)),
        want
    );

    broker.kill();
    s.write_all(&packed("k", "during", 5, Some("kafka-2")))
        .unwrap();
    assert_silent(
        &mut s,
        Duration::from_secs(3),
        "ack with the broker stopped",
    );
    broker.start_process();
    let want = ack_bytes("kafka-2");
    assert_eq!(
        read_exact_within(&mut s, want.len(), Duration::from_secs(60)),
        want
    );

    let recs = consume(&broker.addr(), &["fwd"], 10, Duration::from_secs(5));
    let mut values: Vec<String> = recs
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect();
    values.sort();
    values.dedup();
    let mut want: Vec<String> = ["before", "during"]
        .iter()
        .flat_map(|p| (0..5).map(move |i| format!("{p} {i}")))
        .collect();
    want.sort();
    assert_eq!(values, want);
}

struct Handshaken {
    s: TcpStream,
    pong: proto::forward::handshake::Pong,
}

/// Read HELO, send a PING with `key` and `user`, read the PONG.
fn handshake(addr: SocketAddr, key: &str, user: Option<(&str, &str)>) -> Handshaken {
    let mut s = connect(addr);
    let mut dec = ResponseDecoder::new();
    let mut buf = BytesMut::new();
    let helo = match next_response(&mut s, &mut dec, &mut buf) {
        Response::Helo(h) => h,
        other => panic!("expected HELO, got {other:?}"),
    };
    let creds = user.map(|(u, p)| Credentials {
        username: u.into(),
        password: p.into(),
    });
    let ping = Ping::new(&helo, b"test-client", key.as_bytes(), creds.as_ref());
    s.write_all(&ping.encode()).unwrap();
    let pong = match next_response(&mut s, &mut dec, &mut buf) {
        Response::Pong(p) => p,
        other => panic!("expected PONG, got {other:?}"),
    };
    if pong.auth_result {
        verify_pong(&pong, &ping, &helo, key.as_bytes()).expect("server proves it knows the key");
    }
    Handshaken { s, pong }
}

fn next_response(s: &mut TcpStream, dec: &mut ResponseDecoder, buf: &mut BytesMut) -> Response {
    loop {
        if let Some(r) = dec.decode(buf).expect("valid server message") {
            return r;
        }
        let mut b = [0u8; 4096];
        let n = s.read(&mut b).expect("read server message");
        assert!(n > 0, "server closed before a complete message");
        buf.extend_from_slice(&b[..n]);
    }
}

#[test]
fn handshake_accepts_the_key_and_user_and_refuses_everything_else() {
    let mut fw = Fw::start(
        "shared_key = \"s3cr3t\"\nself_hostname = \"collector-1\"\nusers = [{ username = \"alice\", password = \"pw\" }]",
    );
    // Right key and user: events flow and are acked.
    let mut ok = handshake(fw.addr, "s3cr3t", Some(("alice", "pw")));
    assert!(ok.pong.auth_result);
    assert_eq!(&ok.pong.hostname[..], b"collector-1");
    ok.s.write_all(&packed("auth", "authed", 3, Some("auth-1")))
        .unwrap();
    let want = ack_bytes("auth-1");
    assert_eq!(
        read_exact_within(&mut ok.s, want.len(), Duration::from_secs(20)),
        want
    );

    // Wrong key: PONG false with Fluentd's reason, then close.
    let mut bad = handshake(fw.addr, "wrong", Some(("alice", "pw")));
    assert!(!bad.pong.auth_result);
    assert_eq!(&bad.pong.reason[..], b"shared_key mismatch");
    assert!(read_to_close(&mut bad.s, Duration::from_secs(10)).is_empty());

    // Wrong password.
    let mut bad = handshake(fw.addr, "s3cr3t", Some(("alice", "nope")));
    assert!(!bad.pong.auth_result);
    assert_eq!(&bad.pong.reason[..], b"username/password mismatch");
    assert!(read_to_close(&mut bad.s, Duration::from_secs(10)).is_empty());

    // Data before the handshake: PONG false "invalid ping message", close, nothing kept.
    let mut s = connect(fw.addr);
    let mut dec = ResponseDecoder::new();
    let mut buf = BytesMut::new();
    assert!(matches!(
        next_response(&mut s, &mut dec, &mut buf),
        Response::Helo(_)
    ));
    s.write_all(&packed("auth", "sneaky", 1, Some("sneak")))
        .unwrap();
    match next_response(&mut s, &mut dec, &mut buf) {
        Response::Pong(p) => {
            assert!(!p.auth_result);
            assert_eq!(&p.reason[..], b"invalid ping message");
        }
        other => panic!("expected PONG false, got {other:?}"),
    }
    assert!(read_to_close(&mut s, Duration::from_secs(10)).is_empty());

    // A large request before the handshake is refused as soon as its declared
    // size passes the pre-authentication cap (4 KiB), not buffered until it is
    // complete or the idle timeout (300 s) ends it.
    let mut s = connect(fw.addr);
    let mut dec = ResponseDecoder::new();
    let mut buf = BytesMut::new();
    assert!(matches!(
        next_response(&mut s, &mut dec, &mut buf),
        Response::Helo(_)
    ));
    let mut frame = vec![0x92, 0xa3, b'b', b'i', b'g', 0xc6];
    frame.extend_from_slice(&1_000_000u32.to_be_bytes());
    frame.extend(std::iter::repeat_n(0u8, 16 * 1024));
    let _ = s.write_all(&frame); // the server may close before taking it all
    match next_response(&mut s, &mut dec, &mut buf) {
        Response::Pong(p) => assert!(!p.auth_result),
        other => panic!("expected PONG false, got {other:?}"),
    }
    assert!(read_to_close(&mut s, Duration::from_secs(10)).is_empty());

    drop(ok);
    let got = fw.stop_and_read();
    assert_eq!(got.len(), 3, "only the authenticated events");
    assert!(
        got.iter()
            .all(|e| e["message"].as_str().unwrap().starts_with("authed"))
    );
    assert!(fw.d.stderr().contains("shared_key mismatch"));
}

fn tls_client(dir: &Path, with_cert: bool) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(dir.join("ca.crt")).unwrap())
        .unwrap();
    let b = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let cfg = if with_cert {
        let cert = CertificateDer::from_pem_file(dir.join("client.crt")).unwrap();
        let key = PrivateKeyDer::from_pem_file(dir.join("client.key")).unwrap();
        b.with_client_auth_cert(vec![cert], key).unwrap()
    } else {
        b.with_no_client_auth()
    };
    std::sync::Arc::new(cfg)
}

#[test]
fn tls_with_client_certificates() {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let c = certs.path().display();
    let mut fw = Fw::start(&format!(
        "[sources.fw.tls]\ncert_file = \"{c}/server.crt\"\nkey_file = \"{c}/server.key\"\nclient_ca_file = \"{c}/ca.crt\""
    ));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    // With a client certificate: events and acks.
    let conn = rustls::ClientConnection::new(tls_client(certs.path(), true), name.clone()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, connect(fw.addr));
    tls.write_all(&packed("tls", "secure", 4, Some("tls-1")))
        .unwrap();
    let want = ack_bytes("tls-1");
    let mut got = vec![0u8; want.len()];
    tls.read_exact(&mut got).unwrap();
    assert_eq!(got, want);
    drop(tls);
    // Without: the server refuses the handshake, nothing gets in.
    let conn = rustls::ClientConnection::new(tls_client(certs.path(), false), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, connect(fw.addr));
    let refused = tls
        .write_all(&packed("tls", "anonymous", 1, Some("tls-2")))
        .and_then(|()| tls.flush())
        .and_then(|()| tls.read(&mut [0u8; 64]));
    assert!(
        !matches!(refused, Ok(n) if n > 0),
        "a client without certificate got an answer"
    );
    // Plain TCP to a TLS port: the TLS handshake fails, the server goes on.
    let mut plain = connect(fw.addr);
    plain
        .write_all(&packed("tls", "plain", 1, Some("tls-3")))
        .unwrap();
    let _ = read_to_close(&mut plain, Duration::from_secs(15));
    let got = fw.stop_and_read();
    assert_eq!(got.len(), 4);
    assert!(fw.d.stderr().contains("TLS handshake failed"));
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

/// Hostile input (every `bad/` vector, a gzip bomb of valid entries, random bytes,
/// a slowloris sender, 5,000 idle connections) while a well-behaved client keeps being served; each bad
/// connection is closed without an ack and logged; peak RSS stays under 150 MiB.
#[test]
fn hostile_input_closes_only_its_connection_and_memory_stays_bounded() {
    raise_fd_limit(12_000);
    let mut fw = Fw::with_sinks(
        "[sources.fw.limits]\nidle_timeout_secs = 3\nmax_connections = 6000\nmax_decompressed_bytes = 16777216",
        "[sinks.out]\ntype = \"null\"\ninputs = [\"fw\"]\n",
    );
    let pid = fw.d.child.id();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let steady = steady_client(fw.addr, stop.clone());

    // Policy: these two are accepted (float time as seconds + fraction; tag kept as bytes).
    let accepted = ["time_float_message.bin", "tag_invalid_utf8.bin"];
    let mut rejected = 0;
    let mut names: Vec<_> = std::fs::read_dir(testdata().join("bad"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in &names {
        let name = p.file_name().unwrap().to_str().unwrap();
        let mut s = connect(fw.addr);
        // The server may close before it has read everything: a failed write is fine.
        let _ = s.write_all(&std::fs::read(p).unwrap());
        let _ = s.shutdown(Shutdown::Write);
        let got = read_to_close(&mut s, Duration::from_secs(20));
        assert!(got.is_empty(), "{name}: server answered {got:02x?}");
        if !accepted.contains(&name) {
            rejected += 1;
        }
    }
    // A gzip bomb of valid entries: ~300 KiB inflating to 256 MiB, with a chunk.
    let bomb = {
        use std::io::Write as _;
        let mut entry = Vec::new();
        let mut one = PackedForwardBuilder::new(&b"bomb"[..]);
        one.push(
            EventTime::new(1_700_000_000, 0),
            &Value::Map(vec![(Value::from("message"), Value::from("x".repeat(100)))]),
        );
        let len = one.payload_len();
        let single = one.finish(None, Compression::None);
        // The entry is the bin payload: after the array marker, the tag and the bin8 header.
        entry.extend_from_slice(&single[1 + 5 + 2..1 + 5 + 2 + len]);
        assert_eq!(entry[0], 0x92, "an entry array");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let mut inflated = 0;
        let block = entry.repeat(8192);
        while inflated < 256 << 20 {
            gz.write_all(&block).unwrap();
            inflated += block.len();
        }
        let payload = gz.finish().unwrap();
        let mut req = vec![0x93, 0xa4];
        req.extend_from_slice(b"bomb");
        req.push(0xc6);
        req.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        req.extend_from_slice(&payload);
        req.extend_from_slice(b"\x82\xaacompressed\xa4gzip\xa5chunk\xa4bomb");
        req
    };
    let mut s = connect(fw.addr);
    let _ = s.write_all(&bomb);
    let _ = s.shutdown(Shutdown::Write);
    assert!(
        read_to_close(&mut s, Duration::from_secs(30)).is_empty(),
        "gzip bomb acked"
    );
    rejected += 1;

    // Random bytes (seeded xorshift), a few connections of 256 KiB each.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..4 {
        let data: Vec<u8> = (0..256 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut s = connect(fw.addr);
        let _ = s.write_all(&data);
        let _ = s.shutdown(Shutdown::Write);
        assert!(read_to_close(&mut s, Duration::from_secs(20)).is_empty());
        rejected += 1;
    }
    // Slowloris: one byte every 200 ms of a valid request never completes in time.
    let mut slow = connect(fw.addr);
    let frame = packed("slow", "slow", 100, Some("slow"));
    let started = Instant::now();
    let mut closed = false;
    for b in &frame {
        if slow.write_all(std::slice::from_ref(b)).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        if started.elapsed() > Duration::from_secs(15) {
            break;
        }
    }
    if !closed {
        assert!(
            read_to_close(&mut slow, Duration::from_secs(10)).is_empty(),
            "slowloris"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "slowloris connection lived {:?}",
        started.elapsed()
    );
    rejected += 1;

    // 5,000 idle connections at once.
    let idle: Vec<TcpStream> = (0..5000)
        .map(|_| TcpStream::connect(fw.addr).expect("idle connection"))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (_, rss_idle) = rss_kib(pid);
    // The steady client is still served while they are open.
    let mut s = connect(fw.addr);
    s.write_all(&packed("late", "late", 5, Some("late")))
        .unwrap();
    let want = ack_bytes("late");
    assert_eq!(
        read_exact_within(&mut s, want.len(), Duration::from_secs(20)),
        want
    );
    drop(idle);

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = steady.join().expect("steady client");
    assert!(acked > 10, "the steady client got only {acked} acks");
    let (peak, _) = rss_kib(pid);
    eprintln!(
        "forward hostile test: peak RSS {} MiB, RSS with 5000 idle connections {} MiB",
        peak / 1024,
        rss_idle / 1024
    );
    assert!(peak < 150 * 1024, "peak RSS {} MiB", peak / 1024);
    let st = fw.d.stop();
    assert!(st.success());
    let log = fw.d.stderr();
    let logged = log
        .lines()
        .filter(|l| l.contains("connection closed") && l.contains("peer=127.0.0.1:"))
        .count();
    assert!(
        logged >= rejected,
        "{logged} close lines for {rejected} bad connections:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        log.contains("gzip payload inflates past the 16777216-byte limit"),
        "{log}"
    );
}

#[test]
fn address_in_use_fails_at_start_with_the_component_id() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(
        dir.path(),
        &format!(
            "[sources.busy]\ntype = \"forward\"\naddress = \"127.0.0.1:{port}\"\n[sinks.n]\ntype = \"null\"\ninputs = [\"busy\"]\n"
        ),
    );
    let st = d.wait(Duration::from_secs(20));
    assert!(!st.success());
    let log = d.stderr();
    assert!(
        log.contains("sources.busy") && log.to_lowercase().contains("address"),
        "{log}"
    );
}

/// Agent (exec → forward sink, TLS + shared key) → collector (forward source →
/// file). The collector is killed (SIGKILL) mid-run and started again on the same
/// port: every event arrives at least once.
#[test]
fn agent_to_collector_over_tls_with_a_key_survives_a_collector_kill() {
    const N: u64 = 1_000_000;
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let c = certs.path().display();
    let port = free_port();
    let collector_dir = tempfile::tempdir().unwrap();
    let collector_cfg = format!(
        "[sources.fw]\ntype = \"forward\"\naddress = \"127.0.0.1:{port}\"\nshared_key = \"k\"\nself_hostname = \"collector\"\n\
         [sources.fw.tls]\ncert_file = \"{c}/server.crt\"\nkey_file = \"{c}/server.key\"\n\
         [sinks.out]\ntype = \"file\"\ninputs = [\"fw\"]\npath = \"$DIR/out.log\"\n"
    );
    let mut collector = Daemon::start(collector_dir.path(), &collector_cfg);
    bound_addrs(&collector, 1);
    let agent_dir = tempfile::tempdir().unwrap();
    let mut agent = Daemon::start(
        agent_dir.path(),
        &format!(
            "shutdown_timeout_secs = 60\n[sources.gen]\ntype = \"exec\"\nrestart = \"never\"\ncommand = {gen}\n\
             [sinks.fwd]\ntype = \"forward\"\ninputs = [\"gen\"]\nservers = [\"localhost:{port}\"]\nshared_key = \"k\"\n\
             self_hostname = \"agent\"\nack_timeout_secs = 10\n[sinks.fwd.tls]\nca_file = \"{c}/ca.crt\"\n",
            gen = crate::common::awk_generator(N)
        ),
    );
    let out = collector_dir.path().join("out.log");
    wait_until(
        Duration::from_secs(120),
        "a third of the events at the collector",
        || file_len(&out) > N * 100 / 3,
    );
    collector.signal(libc::SIGKILL);
    collector.wait(Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    let mut collector = Daemon::start(collector_dir.path(), &collector_cfg);
    let st = agent.wait(Duration::from_secs(150));
    assert!(st.success(), "agent failed:\n{}", agent.stderr());
    assert!(collector.stop().success());
    let data = std::fs::read(&out).unwrap();
    let mut seen = vec![false; N as usize];
    let mut lines = 0u64;
    for l in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let i: usize = std::str::from_utf8(l)
            .unwrap()
            .parse()
            .expect("a generated line");
        seen[i] = true;
        lines += 1;
    }
    let missing = seen.iter().filter(|s| !**s).count();
    eprintln!(
        "agent → collector: {lines} lines for {N} events ({} duplicates)",
        lines - (N - missing as u64)
    );
    assert_eq!(missing, 0, "events lost");
    let agent_log = agent.stderr();
    assert!(
        agent_log.contains("Connected to forward server."),
        "{agent_log}"
    );
}

/// Reads one whole request from `s` (the bytes as sent, and its chunk id).
fn read_request(s: &mut TcpStream) -> (Vec<u8>, Vec<u8>) {
    let mut dec = proto::forward::Decoder::new(proto::forward::Limits::default());
    let mut buf = BytesMut::new();
    let mut raw = Vec::new();
    loop {
        let mut b = [0u8; 65536];
        let n = s.read(&mut b).expect("read a request");
        assert!(n > 0, "client closed before a whole request");
        raw.extend_from_slice(&b[..n]);
        buf.extend_from_slice(&b[..n]);
        if let Some(r) = dec.decode(&mut buf).expect("a valid request") {
            let proto::forward::Request::Events(f) = r else {
                panic!("not events: {r:?}")
            };
            assert!(buf.is_empty(), "one request at a time");
            return (raw, f.chunk.expect("a chunk id").to_vec());
        }
    }
}

/// The sink resends an unacked request after `ack_timeout_secs` on a new
/// connection, byte for byte with the same chunk id, and finishes once acked.
#[test]
fn sink_resends_the_same_request_after_an_ack_timeout() {
    let fake = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = fake.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Daemon::start(
        dir.path(),
        &format!(
            "[sources.gen]\ntype = \"exec\"\nrestart = \"never\"\ncommand = {gen}\n\
             [sinks.fwd]\ntype = \"forward\"\ninputs = [\"gen\"]\nservers = [\"{addr}\"]\nack_timeout_secs = 1\n",
            gen = crate::common::awk_generator(5)
        ),
    );
    let (mut first, _) = fake.accept().unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (raw1, chunk1) = read_request(&mut first);
    // No ack: after a second the agent gives up on this connection.
    let (mut second, _) = fake.accept().unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (raw2, chunk2) = read_request(&mut second);
    assert_eq!(chunk1, chunk2, "same chunk id");
    assert_eq!(raw1, raw2, "same bytes");
    second
        .write_all(&proto::forward::encode_ack(&chunk2))
        .unwrap();
    let st = agent.wait(Duration::from_secs(20));
    assert!(st.success(), "{}", agent.stderr());
    assert!(
        agent
            .stderr()
            .contains("No ack from forward server in time"),
        "{}",
        agent.stderr()
    );
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

#[test]
fn forward_mistakes_are_reported_at_their_keys() {
    // The examples are validated by examples::every_example_validates.
    let (ok, err) = validate(
        "[sources.fw]\ntype = \"forward\"\naddress = \"nowhere\"\nusers = [{ username = \"a\", password = \"b\" }]\n\
         [sources.fw.limits]\nmax_frame_byte = 1\n[sinks.f]\ntype = \"forward\"\ninputs = [\"fw\"]\nservers = [\"x\"]\n",
    );
    assert!(!ok);
    for needle in ["sources.fw.limits", "max_frame_byte"] {
        assert!(err.contains(needle), "{needle} not in:\n{err}");
    }
    let (ok, err) = validate(
        "[sources.fw]\ntype = \"forward\"\naddress = \"nowhere\"\nusers = [{ username = \"a\", password = \"b\" }]\n\
         [sinks.f]\ntype = \"forward\"\ninputs = [\"fw\"]\nservers = [\"x\"]\nmax_inflight_chunks = 0\n",
    );
    assert!(!ok);
    for needle in [
        "sources.fw.address",
        "sources.fw.users",
        "sinks.f.servers",
        "sinks.f.max_inflight_chunks",
    ] {
        assert!(err.contains(needle), "{needle} not in:\n{err}");
    }
}
