//! Kafka sink against a real broker (Apache Kafka): delivery, templates, codecs,
//! outages, size policy, SCRAM, TLS and mutual TLS (the broker behind a rustls
//! terminator, `tls_proxy.rs`), and acknowledgements resolved from delivery
//! reports. Tests share one broker (unique topics per test) unless they stop,
//! freeze or reconfigure it, which run their own on free loopback ports; records are
//! read back by an independent client (Python confluent-kafka) and counted by
//! reading, never by watermarks.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sluice::ack::{AckStatus, AckToken};
use sluice::buffer::{self, BufferSender, WhenFull};
use sluice::event::{Event, EventBatch, now_ns};
use sluice::metrics::Counters;
use sluice::topology::SinkContext;
use tokio_util::sync::CancellationToken;

use crate::common::{Daemon, make_certs};
use crate::kafka_support::{
    Broker, Kafka, Options, Rec, consume, consume_with, counter, counters, free_port, need_kafka,
    records_in, shared_broker, wait_for, write_lines,
};
use crate::tls_proxy::TlsProxy;

/// A line of `len` bytes or more, unique by (`src`, `i`), with bytes a text
/// pipeline might mangle: multi-byte UTF-8, invalid UTF-8, tabs, quotes.
fn line(src: &str, i: usize, len: usize) -> Vec<u8> {
    let mut l = format!("{src} {i:07} \t\"é✓\" ").into_bytes();
    l.extend_from_slice(&[0xff, 0xfe, b' ']);
    while l.len() < len {
        l.push(b'a' + (l.len() % 26) as u8);
    }
    l
}

fn by_topic(recs: &[Rec]) -> HashMap<&str, Vec<&Rec>> {
    let mut m: HashMap<&str, Vec<&Rec>> = HashMap::new();
    for r in recs {
        m.entry(r.topic.as_str()).or_default().push(r);
    }
    for v in m.values_mut() {
        v.sort_by_key(|r| (r.partition, r.offset));
    }
    m
}

#[test]
fn exec_100k_events_arrive_once_in_order_with_template_topics_and_keys() {
    let kafka = need_kafka!();
    let broker = shared_broker(&kafka);
    broker.create_topic("logs-app-a", 3);
    broker.create_topic("logs-app-b", 3);
    let dir = tempfile::tempdir().unwrap();
    let a: Vec<Vec<u8>> = (0..50_000).map(|i| line("a", i, 100)).collect();
    let b: Vec<Vec<u8>> = (0..50_000).map(|i| line("b", i, 100)).collect();
    write_lines(&dir.path().join("a.txt"), &a);
    write_lines(&dir.path().join("b.txt"), &b);
    let config = format!(
        r#"
[sources.a]
type = "exec"
command = ["cat", "{dir}/a.txt"]
restart = "never"
tag = "app-a"

[sources.b]
type = "exec"
command = ["cat", "{dir}/b.txt"]
restart = "never"
tag = "app-b"

[sinks.k]
type = "kafka"
inputs = ["a", "b"]
brokers = "{addr}"
topic = "logs-{{tag}}"
key = "{{source}}"
encoding = "raw"
"#,
        dir = dir.path().display(),
        addr = broker.addr()
    );
    let started = Instant::now();
    let mut sluice = Daemon::start(dir.path(), &config);
    let status = sluice.wait(Duration::from_secs(60));
    assert!(
        status.success(),
        "sluice failed: {status}\n{}",
        sluice.stderr()
    );
    let took = started.elapsed();
    let report = counters(&sluice.stderr(), "sinks.k");
    assert_eq!(counter(&report, "out"), 100_000, "{report}");
    assert_eq!(counter(&report, "errors"), 0, "{report}");

    let recs = consume(
        &broker.addr(),
        &["logs-app-a", "logs-app-b"],
        100_000,
        Duration::from_secs(10),
    );
    assert_eq!(recs.len(), 100_000, "records read back");
    let topics = by_topic(&recs);
    for (topic, source, lines) in [("logs-app-a", "a", &a), ("logs-app-b", "b", &b)] {
        let got = &topics[topic];
        assert!(
            got.iter()
                .all(|r| r.key.as_deref() == Some(source.as_bytes())),
            "keys of {topic}"
        );
        // One key → one partition → the exact source order, byte for byte, no duplicates.
        let partitions: HashSet<u32> = got.iter().map(|r| r.partition).collect();
        assert_eq!(partitions.len(), 1, "{topic} spread over {partitions:?}");
        let values: Vec<&[u8]> = got.iter().map(|r| r.value.as_slice()).collect();
        let expected: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        assert!(
            values == expected,
            "{topic}: records differ from the source lines"
        );
    }
    eprintln!("100k events exec → kafka in {took:?} (debug build)");
}

#[test]
fn every_compression_codec_round_trips() {
    let kafka = need_kafka!();
    let broker = shared_broker(&kafka);
    let codecs = ["none", "gzip", "snappy", "lz4", "zstd"];
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<Vec<u8>> = (0..2_000).map(|i| line("c", i, 200)).collect();
    write_lines(&dir.path().join("in.txt"), &lines);
    let mut config = format!(
        "[sources.in]\ntype = \"exec\"\ncommand = [\"cat\", \"{}/in.txt\"]\nrestart = \"never\"\n",
        dir.path().display()
    );
    for c in codecs {
        broker.create_topic(&format!("c-{c}"), 1);
        config.push_str(&format!(
            "\n[sinks.{c}]\ntype = \"kafka\"\ninputs = [\"in\"]\nbrokers = \"{}\"\ntopic = \"c-{c}\"\ncompression = \"{c}\"\n",
            broker.addr()
        ));
    }
    let mut sluice = Daemon::start(dir.path(), &config);
    let status = sluice.wait(Duration::from_secs(60));
    assert!(
        status.success(),
        "sluice failed: {status}\n{}",
        sluice.stderr()
    );
    let topics: Vec<String> = codecs.iter().map(|c| format!("c-{c}")).collect();
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let recs = consume(
        &broker.addr(),
        &names,
        5 * lines.len(),
        Duration::from_secs(10),
    );
    let got = by_topic(&recs);
    for t in &names {
        let values: Vec<&[u8]> = got
            .get(t)
            .map(|v| v.iter().map(|r| r.value.as_slice()).collect())
            .unwrap_or_default();
        let expected: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
        assert!(
            values == expected,
            "{t}: {} records, not the {} lines sent",
            values.len(),
            expected.len()
        );
    }
}

#[test]
fn broker_down_for_10s_mid_run_loses_nothing() {
    let kafka = need_kafka!();
    let mut broker = Broker::start(&kafka);
    broker.create_topic("outage", 2);
    // About 2,000 lines/s for 16 s; the broker is away from 3 s to 13 s.
    let total = 32_000;
    let generator = format!(
        "import sys, time\nfor i in range({total}):\n    sys.stdout.write('outage %07d %s\\n' % (i, 'x' * 80))\n    \
         if i % 100 == 99:\n        sys.stdout.flush(); time.sleep(0.05)\n"
    );
    let config = format!(
        r#"
shutdown_timeout_secs = 60
[sources.gen]
type = "exec"
command = ["python3", "-c", {generator:?}]
restart = "never"

[sinks.k]
type = "kafka"
inputs = ["gen"]
brokers = "{addr}"
topic = "outage"
key = "{{source}}"
[sinks.k.librdkafka]
"reconnect.backoff.max.ms" = 1000
"#,
        addr = broker.addr()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut sluice = Daemon::start(dir.path(), &config);
    // The outage comes once events flow (some are in Kafka), mid-run.
    wait_for(
        "records in Kafka before the outage",
        Duration::from_secs(60),
        || records_in(&broker.addr(), "outage", 2) >= 2_000,
    );
    broker.kill();
    // The outage itself: the broker is away for 10 s.
    std::thread::sleep(Duration::from_secs(10));
    broker.start_process();
    let status = sluice.wait(Duration::from_secs(90));
    assert!(
        status.success(),
        "sluice failed: {status}\n{}",
        sluice.stderr()
    );
    let recs = consume(&broker.addr(), &["outage"], total, Duration::from_secs(10));
    let unique: HashSet<&[u8]> = recs.iter().map(|r| r.value.as_slice()).collect();
    let missing: Vec<usize> = (0..total)
        .filter(|i| !unique.contains(format!("outage {i:07} {}", "x".repeat(80)).as_bytes()))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {total} events missing after the outage (first {:?}); {} records read\n{}",
        missing.len(),
        &missing[..missing.len().min(5)],
        recs.len(),
        sluice.stderr()
    );
    let log = sluice.stderr();
    assert!(
        log.contains("unreachable"),
        "the outage went unnoticed:\n{log}"
    );
    assert!(
        log.contains("reachable again"),
        "the recovery went unnoticed:\n{log}"
    );
    eprintln!(
        "outage: {total} events all present, {} duplicates",
        recs.len() - unique.len()
    );
}

#[test]
fn broker_absent_at_start_then_all_events_arrive() {
    let kafka = need_kafka!();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<Vec<u8>> = (0..10_000).map(|i| line("late", i, 100)).collect();
    write_lines(&dir.path().join("in.txt"), &lines);
    let config = format!(
        r#"
shutdown_timeout_secs = 60
[sources.in]
type = "exec"
command = ["cat", "{dir}/in.txt"]
restart = "never"

[sinks.k]
type = "kafka"
inputs = ["in"]
brokers = "127.0.0.1:{port}"
topic = "late"
create_topics = {{ partitions = 2, replication_factor = 1 }}
[sinks.k.librdkafka]
"reconnect.backoff.max.ms" = 1000
"#,
        dir = dir.path().display()
    );
    let mut sluice = Daemon::start(dir.path(), &config);
    wait_for(
        "the unreachable-broker line",
        Duration::from_secs(30),
        || sluice.stderr().contains("unreachable"),
    );
    let mut broker = Broker::new(&kafka, port);
    broker.start_process();
    let status = sluice.wait(Duration::from_secs(60));
    assert!(
        status.success(),
        "sluice failed: {status}\n{}",
        sluice.stderr()
    );
    let recs = consume(
        &broker.addr(),
        &["late"],
        lines.len(),
        Duration::from_secs(10),
    );
    let got: HashSet<&[u8]> = recs.iter().map(|r| r.value.as_slice()).collect();
    assert_eq!(recs.len(), lines.len(), "records read back");
    assert!(
        lines.iter().all(|l| got.contains(l.as_slice())),
        "some events are missing"
    );
}

#[test]
fn oversize_events_are_dropped_or_truncated_and_counted() {
    let kafka = need_kafka!();
    let broker = shared_broker(&kafka);
    broker.create_topic("ov-drop", 1);
    broker.create_topic("ov-cut", 1);
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<Vec<u8>> = (0..1_000)
        .map(|i| line("ov", i, if i % 10 == 0 { 300 } else { 60 }))
        .collect();
    write_lines(&dir.path().join("in.txt"), &lines);
    let mut config = format!(
        "[sources.in]\ntype = \"exec\"\ncommand = [\"cat\", \"{}/in.txt\"]\nrestart = \"never\"\n",
        dir.path().display()
    );
    for (name, policy) in [("drop", "drop"), ("cut", "truncate")] {
        config.push_str(&format!(
            "\n[sinks.{name}]\ntype = \"kafka\"\ninputs = [\"in\"]\nbrokers = \"{}\"\ntopic = \"ov-{name}\"\n\
             max_message_bytes = 200\nwhen_oversize = \"{policy}\"\n",
            broker.addr()
        ));
    }
    let mut sluice = Daemon::start(dir.path(), &config);
    let status = sluice.wait(Duration::from_secs(60));
    assert!(
        status.success(),
        "sluice failed: {status}\n{}",
        sluice.stderr()
    );
    let dropped = counters(&sluice.stderr(), "sinks.drop");
    assert_eq!(
        (counter(&dropped, "out"), counter(&dropped, "dropped")),
        (900, 100),
        "{dropped}"
    );
    let cut = counters(&sluice.stderr(), "sinks.cut");
    assert_eq!(
        (counter(&cut, "out"), counter(&cut, "truncated")),
        (1_000, 100),
        "{cut}"
    );

    let recs = consume(
        &broker.addr(),
        &["ov-drop", "ov-cut"],
        1_900,
        Duration::from_secs(10),
    );
    let got = by_topic(&recs);
    let values = |t: &str| -> Vec<Vec<u8>> { got[t].iter().map(|r| r.value.clone()).collect() };
    let small: Vec<Vec<u8>> = lines.iter().filter(|l| l.len() <= 200).cloned().collect();
    assert_eq!(values("ov-drop"), small);
    let cut_lines: Vec<Vec<u8>> = lines
        .iter()
        .map(|l| l[..l.len().min(200)].to_vec())
        .collect();
    assert_eq!(values("ov-cut"), cut_lines);
}

#[test]
fn scram_sha_256_and_512_authenticate() {
    let kafka = need_kafka!();
    // A broker that requires SASL/SCRAM from every client (no authorizer: any
    // authenticated user may write); the users exist from its first start.
    let users = [("alice", "SCRAM-SHA-256"), ("bob", "SCRAM-SHA-512")]
        .map(|(u, m)| (u.to_owned(), format!("{u}-secret"), m.to_owned()));
    let mut broker = Broker::with_options(
        &kafka,
        free_port(),
        Options {
            sasl_users: Some(users.to_vec()),
            ..Options::default()
        },
    );
    broker.start_process();
    broker.create_topic("sec-256", 1);
    broker.create_topic("sec-512", 1);
    let mut config =
        "[sources.in]\ntype = \"exec\"\ncommand = [\"seq\", \"1\", \"500\"]\nrestart = \"never\"\n"
            .to_owned();
    let dir = tempfile::tempdir().unwrap();
    for (name, mech, user) in [
        ("s256", "SCRAM-SHA-256", "alice"),
        ("s512", "SCRAM-SHA-512", "bob"),
    ] {
        let topic = if name == "s256" { "sec-256" } else { "sec-512" };
        config.push_str(&format!(
            r#"
[sinks.{name}]
type = "kafka"
inputs = ["in"]
brokers = "{addr}"
topic = "{topic}"
[sinks.{name}.librdkafka]
"security.protocol" = "sasl_plaintext"
"sasl.mechanisms" = "{mech}"
"sasl.username" = "{user}"
"sasl.password" = "{user}-secret"
"#,
            addr = broker.addr()
        ));
    }
    let mut sluice = Daemon::start(dir.path(), &config);
    let status = sluice.wait(Duration::from_secs(60));
    assert!(
        status.success(),
        "sluice failed: {status}\n{}",
        sluice.stderr()
    );
    for sink in ["sinks.s256", "sinks.s512"] {
        assert_eq!(
            counter(&counters(&sluice.stderr(), sink), "out"),
            500,
            "{sink}\n{}",
            sluice.stderr()
        );
    }
}

// ---- TLS: the broker behind a TLS terminator of ours. ----

/// A memory broker reachable only through TLS: the proxy terminates TLS on its
/// own port and copies to the broker's plain port, which it advertises as the proxy
/// (`localhost:PROXY`), so every connection librdkafka makes after bootstrap
/// is TLS too. Certificates (CA, server and client for localhost/127.0.0.1) are
/// in the returned temp dir; `require_client_cert` makes it mutual TLS.
struct TlsBroker {
    proxy: TlsProxy,
    broker: Broker,
    certs: tempfile::TempDir,
}

impl TlsBroker {
    fn start(kafka: &Kafka, require_client_cert: bool) -> TlsBroker {
        let certs = tempfile::tempdir().unwrap();
        make_certs(certs.path());
        let port = free_port();
        let upstream = format!("127.0.0.1:{port}").parse().unwrap();
        let proxy = TlsProxy::start(certs.path(), require_client_cert, upstream);
        let mut broker = Broker::with_options(
            kafka,
            port,
            Options {
                advertised_port: Some(proxy.port()),
                ..Options::default()
            },
        );
        broker.start_process();
        TlsBroker {
            proxy,
            broker,
            certs,
        }
    }

    /// The bootstrap address clients use: the TLS port, by the certificate's name.
    fn tls_addr(&self) -> String {
        format!("localhost:{}", self.proxy.port())
    }

    fn cert(&self, name: &str) -> String {
        self.certs.path().join(name).display().to_string()
    }

    /// exec `command` (a TOML array) → kafka sink `k` to this broker over TLS:
    /// `"security.protocol" = "ssl"` plus the librdkafka lines `tls`.
    fn sink_config(&self, command: &str, topic: &str, tls: &str) -> String {
        format!(
            r#"
shutdown_timeout_secs = 10
[sources.in]
type = "exec"
command = {command}
restart = "never"

[sinks.k]
type = "kafka"
inputs = ["in"]
brokers = "{addr}"
topic = "{topic}"
[sinks.k.librdkafka]
"security.protocol" = "ssl"
{tls}
"#,
            addr = self.tls_addr()
        )
    }

    /// A daemon in `dir` sending `n` events to `topic` with `tls` whose source
    /// then stays up, so that only SIGTERM ends the run.
    fn start_unending(&self, dir: &Path, n: u32, topic: &str, tls: &str) -> Daemon {
        let command = format!("[\"sh\", \"-c\", \"seq 1 {n}; exec sleep 600\"]");
        Daemon::start(dir, &self.sink_config(&command, topic, tls))
    }

    /// Read back through the proxy over TLS with the independent reader.
    fn consume(&self, topics: &[&str], expect: usize, idle: Duration) -> Vec<Rec> {
        let (ca, cert, key) = (
            self.cert("ca.crt"),
            self.cert("client.crt"),
            self.cert("client.key"),
        );
        let props = [
            ("security.protocol", "ssl"),
            ("ssl.ca.location", ca.as_str()),
            ("ssl.certificate.location", cert.as_str()),
            ("ssl.key.location", key.as_str()),
        ];
        consume_with(&self.tls_addr(), topics, expect, idle, &props)
    }
}

/// exec (`cat` of `lines`) → kafka sink with `tls` (librdkafka properties) →
/// the TLS broker, the daemon in `dir`; it runs until its source ended and the
/// sink drained.
fn deliver_over_tls(
    dir: &Path,
    tb: &TlsBroker,
    topic: &str,
    lines: &[Vec<u8>],
    tls: &str,
) -> Daemon {
    write_lines(&dir.join("in.txt"), lines);
    let command = format!("[\"cat\", \"{}/in.txt\"]", dir.display());
    let config = tb.sink_config(&command, topic, tls);
    let mut sluice = Daemon::start(dir, &config);
    let status = sluice.wait(Duration::from_secs(60));
    assert!(
        status.success(),
        "sluice failed: {status}\n{}",
        sluice.stderr()
    );
    sluice
}

#[test]
fn tls_sink_delivers_every_event_through_a_tls_only_broker() {
    let kafka = need_kafka!();
    let tb = TlsBroker::start(&kafka, false);
    tb.broker.create_topic("tls", 2);
    let lines: Vec<Vec<u8>> = (0..5_000).map(|i| line("tls", i, 100)).collect();
    let tls = format!("\"ssl.ca.location\" = \"{}\"", tb.cert("ca.crt"));
    let dir = tempfile::tempdir().unwrap();
    let sluice = deliver_over_tls(dir.path(), &tb, "tls", &lines, &tls);
    let report = counters(&sluice.stderr(), "sinks.k");
    assert_eq!(
        (counter(&report, "out"), counter(&report, "errors")),
        (5_000, 0),
        "{report}"
    );
    // The bootstrap connection, then the one to the broker the metadata named.
    assert!(
        tb.proxy.handshakes() >= 2,
        "{} TLS connections",
        tb.proxy.handshakes()
    );
    assert_eq!(
        tb.proxy.handshake_failures(),
        0,
        "{}",
        tb.proxy.last_failure()
    );
    let recs = tb.consume(&["tls"], lines.len(), Duration::from_secs(10));
    assert_eq!(recs.len(), lines.len(), "records read back over TLS");
    let got: HashSet<&[u8]> = recs.iter().map(|r| r.value.as_slice()).collect();
    assert!(
        lines.iter().all(|l| got.contains(l.as_slice())),
        "events missing or altered"
    );
}

#[test]
fn mutual_tls_delivers_with_a_client_certificate_and_nothing_without() {
    let kafka = need_kafka!();
    let tb = TlsBroker::start(&kafka, true);
    tb.broker.create_topic("mtls", 1);
    let lines: Vec<Vec<u8>> = (0..2_000).map(|i| line("mtls", i, 100)).collect();
    let tls = format!(
        "\"ssl.ca.location\" = \"{}\"\n\"ssl.certificate.location\" = \"{}\"\n\"ssl.key.location\" = \"{}\"",
        tb.cert("ca.crt"),
        tb.cert("client.crt"),
        tb.cert("client.key")
    );
    let dir = tempfile::tempdir().unwrap();
    let sluice = deliver_over_tls(dir.path(), &tb, "mtls", &lines, &tls);
    let report = counters(&sluice.stderr(), "sinks.k");
    assert_eq!(counter(&report, "out"), 2_000, "{report}");
    // The bootstrap connection, then the one to the broker the metadata named.
    assert!(
        tb.proxy.handshakes() >= 2,
        "{} TLS connections",
        tb.proxy.handshakes()
    );
    let recs = tb.consume(&["mtls"], lines.len(), Duration::from_secs(10));
    let values: Vec<Vec<u8>> = recs.into_iter().map(|r| r.value).collect();
    assert_eq!(values, lines, "one partition: every event, in order");

    // Without the client certificate the proxy refuses the sink: nothing more arrives.
    let anon_dir = tempfile::tempdir().unwrap();
    let ca = format!("\"ssl.ca.location\" = \"{}\"", tb.cert("ca.crt"));
    let mut anon = tb.start_unending(anon_dir.path(), 10, "mtls", &ca);
    wait_for(
        "the proxy to refuse a client without certificate",
        Duration::from_secs(30),
        || tb.proxy.handshake_failures() > 0,
    );
    assert_eq!(anon.stop().code(), Some(1), "{}", anon.stderr());
    let report = counters(&anon.stderr(), "sinks.k");
    assert_eq!(counter(&report, "out"), 0, "{report}");
    let recs = tb.consume(&["mtls"], lines.len(), Duration::from_secs(10));
    assert_eq!(
        recs.len(),
        lines.len(),
        "records in the topic after the refusal"
    );
}

#[test]
fn tls_with_a_wrong_ca_delivers_nothing_logs_the_handshake_failure_and_stops_on_sigterm() {
    let kafka = need_kafka!();
    let tb = TlsBroker::start(&kafka, false);
    tb.broker.create_topic("wrong-ca", 1);
    // A CA of its own that did not sign the proxy's certificate.
    let other = tempfile::tempdir().unwrap();
    make_certs(other.path());
    let dir = tempfile::tempdir().unwrap();
    let ca = format!(
        "\"ssl.ca.location\" = \"{}\"",
        other.path().join("ca.crt").display()
    );
    let mut sluice = tb.start_unending(dir.path(), 100, "wrong-ca", &ca);
    wait_for(
        "the TLS handshake failure in the log",
        Duration::from_secs(30),
        || sluice.stderr().contains("SSL handshake failed"),
    );
    assert!(
        sluice.child.try_wait().unwrap().is_none(),
        "sluice exited on a TLS failure:\n{}",
        sluice.stderr()
    );
    let log = sluice.stderr();
    assert!(
        log.contains("certificate verify failed"),
        "the log does not say why:\n{log}"
    );
    assert!(
        tb.proxy.handshake_failures() > 0,
        "the proxy saw no refusal"
    );
    assert_eq!(
        tb.proxy.handshakes(),
        0,
        "a handshake with the wrong CA passed"
    );

    assert!(
        !log.contains("All sources ended"),
        "the source must outlive the handshake failure:\n{log}"
    );
    let status = sluice.stop();
    let log = sluice.stderr();
    // Stopped by SIGTERM, within the shutdown deadline; the events still
    // unconfirmed at the deadline make it a failure (exit 1), counted as errors.
    assert_eq!(
        status.code(),
        Some(1),
        "undelivered events at the deadline:\n{log}"
    );
    assert!(log.contains("undelivered_events=100"), "{log}");
    let report = counters(&log, "sinks.k");
    assert_eq!(
        (counter(&report, "out"), counter(&report, "errors")),
        (0, 100),
        "{report}\n{log}"
    );
    // Nothing reached the broker: the right CA reads an empty topic.
    let recs = tb.consume(&["wrong-ca"], 0, Duration::from_secs(3));
    assert!(recs.is_empty(), "{} records delivered", recs.len());
}

// ---- Library level: acknowledgements follow the broker's delivery reports. ----

struct TestSink {
    tx: Option<BufferSender>,
    abort: CancellationToken,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<Result<(), sluice::topology::ComponentError>>,
}

impl TestSink {
    async fn start(sink_toml: &str) -> TestSink {
        let text = format!(
            "[sources.in]\ntype = \"stdin\"\n\n[sinks.k]\ntype = \"kafka\"\ninputs = [\"in\"]\n{sink_toml}"
        );
        let config = match sluice::config::load_str(Path::new("test.toml"), &text) {
            Ok(c) => c,
            Err(e) => panic!("config: {e}"),
        };
        let counters = Arc::new(Counters::default());
        let (tx, rx) = buffer::memory(10_000, WhenFull::Block, counters.clone());
        let abort = CancellationToken::new();
        let sink_config = config.sinks[0].clone();
        let (_reload_tx, reload) = tokio::sync::watch::channel(Arc::new(config));
        let cx = SinkContext {
            name: "k".into(),
            input: rx,
            abort: abort.clone(),
            counters: counters.clone(),
            reload,
        };
        let task = match sluice::sinks::build(&sink_config, cx).await {
            Ok(t) => tokio::spawn(t),
            Err(e) => panic!("build: {e}"),
        };
        TestSink {
            tx: Some(tx),
            abort,
            counters,
            task,
        }
    }

    async fn send(&self, tag: &str, bodies: &[Vec<u8>]) -> sluice::ack::AckReceiver {
        let (token, rx) = AckToken::channel();
        let events = bodies
            .iter()
            .map(|b| Event::new(Bytes::from(b.clone()), now_ns(), tag.into(), "in".into()))
            .collect();
        let tx = self.tx.as_ref().expect("sender open");
        tx.send(EventBatch::new(events, token), true).await;
        rx
    }

    async fn stop(mut self, within: Duration) {
        drop(self.tx.take());
        match tokio::time::timeout(within, self.task).await {
            Ok(r) => r.expect("sink task").expect("sink result"),
            Err(_) => panic!("sink did not stop within {within:?}"),
        }
    }
}

async fn ack_within(rx: sluice::ack::AckReceiver, within: Duration) -> AckStatus {
    tokio::time::timeout(within, rx)
        .await
        .expect("acknowledgement in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_resolves_delivered_only_after_the_broker_confirms() {
    let kafka = need_kafka!();
    let port = free_port();
    let sink = TestSink::start(&format!(
        "brokers = \"127.0.0.1:{port}\"\ntopic = \"acked\"\ncreate_topics = {{ partitions = 1 }}\n\
         [sinks.k.librdkafka]\n\"reconnect.backoff.max.ms\" = 500\n"
    ))
    .await;
    let bodies: Vec<Vec<u8>> = (0..5).map(|i| format!("acked {i}").into_bytes()).collect();
    let mut rx = sink.send("t", &bodies).await;
    // No broker yet: the batch must stay unacknowledged.
    assert!(
        tokio::time::timeout(Duration::from_secs(2), &mut rx)
            .await
            .is_err(),
        "acked with no broker"
    );
    let mut broker = Broker::new(&kafka, port);
    broker.start_process();
    assert_eq!(
        ack_within(rx, Duration::from_secs(30)).await,
        AckStatus::Delivered
    );
    let addr = broker.addr();
    let recs =
        tokio::task::spawn_blocking(move || consume(&addr, &["acked"], 5, Duration::from_secs(5)))
            .await
            .unwrap();
    let values: Vec<Vec<u8>> = recs.into_iter().map(|r| r.value).collect();
    assert_eq!(values, bodies, "an acknowledged batch is in the topic");
    sink.stop(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_refused_for_good_and_oversize_drops_resolve_dropped_and_are_counted() {
    let kafka = need_kafka!();
    let broker = shared_broker(&kafka);
    broker.create_topic("present", 1);
    // librdkafka refuses records over 1000 bytes; our own limit (5000) is higher, so
    // a 2000-byte record reaches the producer and fails there, for good.
    let sink = TestSink::start(&format!(
        "brokers = \"{}\"\ntopic = \"{{tag}}\"\nmax_message_bytes = 5000\n\
         [sinks.k.librdkafka]\n\"message.max.bytes\" = 1000\n\"message.timeout.ms\" = 1500\n",
        broker.addr()
    ))
    .await;
    let ok = sink
        .send("present", &[b"fine".to_vec(), b"also fine".to_vec()])
        .await;
    let too_large = sink
        .send("present", &[b"small".to_vec(), vec![b'x'; 2000]])
        .await;
    let unknown_topic = sink.send("missing-topic", &[b"nowhere".to_vec()]).await;
    let oversize = sink
        .send("present", &[b"kept".to_vec(), vec![b'y'; 6000]])
        .await;
    let bad_topic = sink.send("no/slash", &[b"bad".to_vec()]).await;
    assert_eq!(
        ack_within(ok, Duration::from_secs(10)).await,
        AckStatus::Delivered
    );
    // Refused for a reason of the record's own: dropped (counted as errors),
    // so a disk buffer does not send it again for ever.
    assert_eq!(
        ack_within(too_large, Duration::from_secs(10)).await,
        AckStatus::Dropped
    );
    assert_eq!(
        ack_within(oversize, Duration::from_secs(10)).await,
        AckStatus::Dropped
    );
    assert_eq!(
        ack_within(bad_topic, Duration::from_secs(10)).await,
        AckStatus::Dropped
    );
    // Times out in librdkafka, then the lookup finds no such topic: refused for good.
    assert_eq!(
        ack_within(unknown_topic, Duration::from_secs(20)).await,
        AckStatus::Dropped
    );
    let c = &sink.counters;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        (load(&c.events_out), load(&c.errors), load(&c.dropped)),
        (4, 3, 1)
    );
    sink.stop(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_deadline_fails_unconfirmed_batches_promptly() {
    let _kafka = need_kafka!();
    let port = free_port();
    let mut sink = TestSink::start(&format!(
        "brokers = \"127.0.0.1:{port}\"\ntopic = \"never\"\n"
    ))
    .await;
    let rx = sink
        .send("t", &[b"a".to_vec(), b"b".to_vec(), b"c".to_vec()])
        .await;
    drop(sink.tx.take());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !sink.task.is_finished(),
        "the sink must keep trying until the deadline"
    );
    let started = Instant::now();
    sink.abort.cancel();
    let counters = sink.counters.clone();
    sink.stop(Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "stop took {:?}",
        started.elapsed()
    );
    assert_eq!(
        ack_within(rx, Duration::from_secs(2)).await,
        AckStatus::Errored
    );
    wait_for("the errors counter", Duration::from_secs(2), || {
        counters.errors.load(std::sync::atomic::Ordering::Relaxed) == 3
    });
}
