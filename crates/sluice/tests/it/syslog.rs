//! Syslog source against real senders: util-linux `logger` over UDP, TCP (octet
//! counting and newline framing), Unix datagram and stream sockets, RFC 5424 with
//! structured data and RFC 3164; rsyslog relaying 100,000 messages over TCP with
//! `omfwd` (octet-counted and LF-framed) and 10,000 over TLS (the `ossl` driver, mutual
//! certificates from the test CA); hostile TCP input next to a healthy client.
//! Events go to a JSON file sink; the source's bound port is read back from its
//! "Syslog source listening" line.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::{Daemon, wait_until};

/// A daemon with one syslog source `sys` (`source` appended to its table) writing
/// events as JSON lines to `$DIR/out.json`.
struct Sys {
    d: Daemon,
    addr: Option<SocketAddr>,
    dir: tempfile::TempDir,
}

impl Sys {
    fn start(source: &str) -> Sys {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "[sources.sys]\ntype = \"syslog\"\ntimezone = \"UTC\"\n{source}\n\
             [sinks.out]\ntype = \"file\"\ninputs = [\"sys\"]\npath = \"$DIR/out.json\"\nencoding = \"json\"\n"
        );
        let d = Daemon::start(dir.path(), &config);
        let mut addr = None;
        wait_until(
            Duration::from_secs(20),
            "the syslog source to listen",
            || {
                let log = d.stderr();
                assert!(!log.contains("ERROR"), "sluice failed to start:\n{log}");
                let Some(line) = log.lines().find(|l| l.contains("Syslog source listening")) else {
                    return false;
                };
                addr = line
                    .split("address=")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|a| a.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok());
                true
            },
        );
        Sys { d, addr, dir }
    }

    fn port(&self) -> String {
        self.addr.expect("a network source").port().to_string()
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_owned()
    }

    /// The events written so far.
    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("out.json"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    }

    /// Waits until `n` events were written (counting lines, parsing once).
    fn wait_events(&self, n: usize) -> Vec<Value> {
        let out = self.dir.path().join("out.json");
        wait_until(Duration::from_secs(60), &format!("{n} events"), || {
            let text = std::fs::read(&out).unwrap_or_default();
            text.iter().filter(|&&b| b == b'\n').count() >= n
        });
        self.events()
    }
}

/// Runs util-linux `logger` with `args`; it must succeed.
fn logger(args: &[&str]) {
    let out = Command::new("logger")
        .args(args)
        .output()
        .expect("util-linux logger (scripts/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "logger {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn s<'a>(e: &'a Value, key: &str) -> &'a str {
    e[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {e}"))
}

#[test]
fn logger_udp_rfc5424_with_structured_data_and_rfc3164() {
    let sys = Sys::start("mode = \"udp\"\naddress = \"127.0.0.1:0\"");
    let port = sys.port();
    let base = ["--udp", "-n", "127.0.0.1", "-P", &port];
    logger(
        &[
            &base[..],
            &[
                "--rfc5424",
                "-t",
                "billing",
                "--id=4242",
                "--msgid",
                "INVOICE",
                "-p",
                "local3.warning",
                "--sd-id",
                "order@32473",
                "--sd-param",
                "id=\"A-1\"",
                "--sd-param",
                "note=\"x\\\"y\"",
                "invoice sent",
            ],
        ]
        .concat(),
    );
    let first = &sys.wait_events(1)[0];
    assert_eq!(s(first, "message"), "invoice sent");
    assert_eq!(s(first, "tag"), "syslog.local3.warning");
    assert_eq!(first["syslog.facility"], 19);
    assert_eq!(first["syslog.severity"], 4);
    assert_eq!(s(first, "level"), "warn");
    assert_eq!(s(first, "syslog.appname"), "billing");
    assert_eq!(s(first, "syslog.procid"), "4242");
    assert_eq!(s(first, "syslog.msgid"), "INVOICE");
    assert_eq!(s(first, "syslog.sd.order@32473.id"), "A-1");
    assert_eq!(s(first, "syslog.sd.order@32473.note"), "x\"y");
    // logger adds its own timeQuality element.
    assert!(
        first.get("syslog.sd.timeQuality.tzKnown").is_some(),
        "{first}"
    );
    assert_eq!(s(first, "host"), "127.0.0.1");
    let hostname = s(first, "syslog.hostname").to_owned();
    assert!(!hostname.is_empty());

    logger(
        &[
            &base[..],
            &["--rfc3164", "-t", "cron", "-p", "cron.err", "job failed"],
        ]
        .concat(),
    );
    let second = &sys.wait_events(2)[1];
    assert_eq!(s(second, "message"), "job failed");
    assert_eq!(s(second, "tag"), "syslog.cron.err");
    assert_eq!(s(second, "level"), "error");
    assert_eq!(s(second, "syslog.appname"), "cron");
    assert_eq!(s(second, "syslog.hostname"), hostname);
    assert!(second.get("syslog.parse_error").is_none());
}

#[test]
fn logger_tcp_octet_counting_and_newline_framing() {
    let sys = Sys::start("mode = \"tcp\"\naddress = \"127.0.0.1:0\"");
    let port = sys.port();
    let base = ["--tcp", "-n", "127.0.0.1", "-P", &port, "-t", "app"];
    logger(&[&base[..], &["--rfc5424", "--octet-count", "counted 5424"]].concat());
    logger(&[&base[..], &["--rfc5424", "newline 5424"]].concat());
    logger(&[&base[..], &["--rfc3164", "--octet-count", "counted 3164"]].concat());
    logger(&[&base[..], &["--rfc3164", "newline 3164"]].concat());
    let events = sys.wait_events(4);
    let mut got: Vec<&str> = events.iter().map(|e| s(e, "message")).collect();
    got.sort_unstable();
    assert_eq!(
        got,
        [
            "counted 3164",
            "counted 5424",
            "newline 3164",
            "newline 5424"
        ]
    );
    for e in &events {
        assert_eq!(s(e, "syslog.appname"), "app", "{e}");
        assert_eq!(s(e, "tag"), "syslog.user.notice", "{e}");
    }
}

#[test]
fn logger_unix_datagram_and_stream_sockets() {
    let dgram = Sys::start("mode = \"unix_dgram\"\npath = \"$DIR/log.sock\"");
    let path = dgram.path("log.sock");
    let mode = std::fs::metadata(&path).map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o777
    });
    assert_eq!(
        mode.ok(),
        Some(0o666),
        "socket writable by every local user"
    );
    logger(&[
        "-u",
        &path,
        "--socket-errors=on",
        "-d",
        "-t",
        "sshd",
        "-p",
        "auth.crit",
        "local dgram",
    ]);
    let e = &dgram.wait_events(1)[0];
    assert_eq!(s(e, "message"), "local dgram");
    assert_eq!(s(e, "syslog.appname"), "sshd");
    assert_eq!(s(e, "level"), "fatal");
    assert_eq!(s(e, "tag"), "syslog.auth.crit");
    let mut d = dgram.d;
    assert!(d.stop().success());
    assert!(!Path::new(&path).exists(), "socket removed at stop");

    let stream = Sys::start("mode = \"unix_stream\"\npath = \"$DIR/log.sock\"");
    let path = stream.path("log.sock");
    logger(&[
        "-u",
        &path,
        "--socket-errors=on",
        "-T",
        "-t",
        "app",
        "local stream",
    ]);
    logger(&[
        "-u",
        &path,
        "--socket-errors=on",
        "-T",
        "--octet-count",
        "--rfc5424",
        "-t",
        "app",
        "local counted",
    ]);
    let mut got: Vec<String> = stream
        .wait_events(2)
        .iter()
        .map(|e| s(e, "message").to_owned())
        .collect();
    got.sort_unstable();
    assert_eq!(got, ["local counted", "local stream"]);
}

#[test]
fn hostile_tcp_input_does_not_stop_healthy_clients() {
    let sys = Sys::start(
        "mode = \"tcp\"\naddress = \"127.0.0.1:0\"\nmax_message_bytes = 1024\nidle_timeout_secs = 2",
    );
    let addr = sys.addr.unwrap();
    // rsyslog #4283: an over-long counted frame is cut, the next one read whole.
    let mut over = TcpStream::connect(addr).unwrap();
    let big = format!("<13>1 - h big - - - {}", "x".repeat(5000));
    write!(over, "{} {big}", big.len()).unwrap();
    let next = "<13>1 - h next - - - after";
    write!(over, "{} {next}", next.len()).unwrap();
    // An octet count of 2^63: discarded as it arrives, the connection stays bounded.
    let mut huge = TcpStream::connect(addr).unwrap();
    huge.write_all(b"9223372036854775808 <13>1 - h huge - - - ")
        .unwrap();
    huge.write_all(&vec![b'y'; 256 << 10]).unwrap();
    // A broken count closes only its own connection.
    let mut bad = TcpStream::connect(addr).unwrap();
    bad.write_all(b"12x <13>oops\n").unwrap();
    // Slowloris: a line that never ends, one byte at a time; closed after the
    // idle timeout (2 s) even though bytes keep coming.
    let mut slow = TcpStream::connect(addr).unwrap();
    let slowloris = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        slow.write_all(b"<13>never ends").unwrap();
        while started.elapsed() < Duration::from_secs(20) {
            if slow.write_all(b"z").is_err() {
                return Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    });
    // A healthy newline client keeps flowing.
    let mut good = TcpStream::connect(addr).unwrap();
    for i in 0..100 {
        writeln!(good, "<14>Dec  7 01:37:14 host good: line {i}").unwrap();
    }
    let events = sys.wait_events(103);
    let by_app = |app: &str| -> Vec<&Value> {
        events
            .iter()
            .filter(|e| e["syslog.appname"] == app)
            .collect()
    };
    assert_eq!(by_app("good").len(), 100);
    let big_ev = by_app("big");
    assert_eq!(big_ev.len(), 1);
    assert_eq!(
        s(big_ev[0], "message").len(),
        1024 - "<13>1 - h big - - - ".len()
    );
    assert_eq!(s(by_app("next")[0], "message"), "after");
    assert_eq!(
        s(by_app("huge")[0], "message").len(),
        1024 - "<13>1 - h huge - - - ".len()
    );
    // The bad connection was closed by the server: a read sees the end.
    bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(std::io::Read::read(&mut bad, &mut buf).unwrap_or(0), 0);
    let closed_after = slowloris
        .join()
        .unwrap()
        .expect("slowloris connection closed");
    assert!(closed_after >= Duration::from_secs(2), "{closed_after:?}");
    drop((over, huge, good));
    let mut d = sys.d;
    assert!(d.stop().success());
    let log = d.stderr();
    assert!(log.contains("invalid octet count header"), "{log}");
    assert!(log.contains("truncated=2"), "two frames cut: {log}");
}

/// rsyslog reads `lines` from its own Unix socket (fed by `logger`) and forwards
/// them to `port` with omfwd over TCP in `framing` (`omfwd_extra`: TLS settings);
/// returns rsyslogd, still running.
fn rsyslog_relay(
    dir: &Path,
    port: &str,
    framing: &str,
    omfwd_extra: &str,
    lines: u64,
) -> std::process::Child {
    let conf = dir.join("rsyslog.conf");
    let sock = dir.join("rs.sock");
    std::fs::write(
        &conf,
        format!(
            r#"global(workDirectory="{dir}")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{sock}" RateLimit.Interval="0" UseSpecialParser="off")
action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp" TCP_Framing="{framing}"
       template="RSYSLOG_SyslogProtocol23Format" action.resumeRetryCount="-1" {omfwd_extra})
"#,
            dir = dir.display(),
            sock = sock.display(),
        ),
    )
    .unwrap();
    let pid = dir.join("rsyslog.pid");
    let rsyslog = Command::new("/usr/sbin/rsyslogd")
        .args(["-n", "-f"])
        .arg(&conf)
        .arg("-i")
        .arg(&pid)
        .stdout(Stdio::null())
        .spawn()
        .expect("rsyslogd (scripts/install-deps.sh installs rsyslog)");
    wait_until(Duration::from_secs(20), "rsyslog's socket", || {
        sock.exists()
    });
    let mut feeder = Command::new("logger")
        .args([
            "-u",
            sock.to_str().unwrap(),
            "-d",
            "--socket-errors=on",
            "-t",
            "relay",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("logger");
    {
        let mut stdin = feeder.stdin.take().unwrap();
        let mut text = String::with_capacity(lines as usize * 12);
        for i in 0..lines {
            text.push_str(&format!("msg {i}\n"));
        }
        stdin.write_all(text.as_bytes()).unwrap();
    }
    assert!(feeder.wait().unwrap().success());
    rsyslog
}

#[test]
fn rsyslog_relays_100k_messages_over_tcp_none_lost() {
    for framing in ["octet-counted", "traditional"] {
        let sys = Sys::start("mode = \"tcp\"\naddress = \"127.0.0.1:0\"");
        let n = 100_000u64;
        let rsyslog = rsyslog_relay(sys.dir.path(), &sys.port(), framing, "", n);
        assert_relayed(&sys, rsyslog, n, framing);
    }
}

/// Waits for `n` relayed events, stops rsyslog, and checks each message came once.
fn assert_relayed(sys: &Sys, mut rsyslog: std::process::Child, n: u64, what: &str) {
    let events = sys.wait_events(n as usize);
    // SAFETY: plain syscall on our own child's pid.
    unsafe { libc::kill(rsyslog.id() as libc::pid_t, libc::SIGTERM) };
    let _ = rsyslog.wait();
    let mut seen = vec![false; n as usize];
    for e in &events {
        assert_eq!(s(e, "syslog.appname"), "relay", "{e}");
        // rsyslog keeps the space after the 3164 tag's colon in its MSG.
        let i: usize = s(e, "message")
            .trim_start()
            .strip_prefix("msg ")
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| panic!("{e}"));
        seen[i] = true;
    }
    assert_eq!(events.len(), n as usize, "{what}: no duplicates");
    assert!(seen.iter().all(|&x| x), "{what}: every message arrived");
}

#[test]
fn rsyslog_relays_over_tls_with_client_certificates() {
    let certs = tempfile::tempdir().unwrap();
    crate::common::make_certs(certs.path());
    let c = |f: &str| certs.path().join(f).display().to_string();
    let sys = Sys::start(&format!(
        "mode = \"tcp\"\naddress = \"127.0.0.1:0\"\n[sources.sys.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"",
        c("server.crt"),
        c("server.key"),
        c("ca.crt"),
    ));
    let tls = format!(
        r#"StreamDriver="ossl" StreamDriverMode="1" StreamDriverAuthMode="x509/name"
       StreamDriverPermittedPeers="localhost" StreamDriver.CAFile="{}"
       StreamDriver.CertFile="{}" StreamDriver.KeyFile="{}""#,
        c("ca.crt"),
        c("client.crt"),
        c("client.key"),
    );
    let n = 10_000;
    let rsyslog = rsyslog_relay(sys.dir.path(), &sys.port(), "octet-counted", &tls, n);
    assert_relayed(&sys, rsyslog, n, "tls");
}

#[test]
fn filter_on_severity_and_rules_on_facility() {
    let dir = tempfile::tempdir().unwrap();
    let config = r#"
[sources.sys]
type = "syslog"
mode = "unix_dgram"
path = "$DIR/log.sock"

[routes.by_facility]               # like the rsyslog selector auth,authpriv.*
type = "rules"
inputs = ["sys"]
rules = [{ match = "syslog.{auth,authpriv}.*", to = "auth" }]

[routes.warn_up]
type = "filter"
inputs = ["sys"]
min_level = "warn"

[sinks.auth]
type = "file"
inputs = ["by_facility.auth"]
path = "$DIR/auth.json"
encoding = "json"

[sinks.important]
type = "file"
inputs = ["warn_up"]
path = "$DIR/important.json"
encoding = "json"
"#;
    let d = Daemon::start(dir.path(), config);
    let sock = dir.path().join("log.sock");
    wait_until(Duration::from_secs(20), "the socket", || {
        assert!(!d.stderr().contains("ERROR"), "{}", d.stderr());
        sock.exists()
    });
    let sock = sock.to_str().unwrap();
    for (prio, msg) in [
        ("auth.info", "login ok"),
        ("authpriv.err", "login failed"),
        ("user.debug", "noise"),
        ("user.notice", "note"),
        ("local0.warning", "disk 90%"),
        ("daemon.emerg", "on fire"),
    ] {
        logger(&[
            "-u",
            sock,
            "-d",
            "--socket-errors=on",
            "-p",
            prio,
            "-t",
            "t",
            msg,
        ]);
    }
    let read = |name: &str, n: usize| -> Vec<String> {
        let p = dir.path().join(name);
        wait_until(Duration::from_secs(20), name, || {
            std::fs::read_to_string(&p).is_ok_and(|t| t.lines().count() >= n)
        });
        std::fs::read_to_string(&p)
            .unwrap()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                s(&v, "message").to_owned()
            })
            .collect()
    };
    let important = read("important.json", 3);
    assert_eq!(important, ["login failed", "disk 90%", "on fire"]);
    let auth = read("auth.json", 2);
    assert_eq!(auth, ["login ok", "login failed"]);
    drop(d);
}
