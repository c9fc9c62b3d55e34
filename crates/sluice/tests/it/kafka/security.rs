//! SCRAM and TLS: SCRAM-SHA-256/512, a TLS-only broker, mutual TLS, a wrong CA.

use super::*;

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
