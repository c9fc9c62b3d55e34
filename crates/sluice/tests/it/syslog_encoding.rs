//! `encoding = "syslog"`: messages sent by util-linux `logger` into a syslog
//! source come out of a file sink as RFC 5424 lines, and rsyslog — a real
//! syslog server, reading them from its own socket with its RFC 5424 parser —
//! finds the same priority, host, app, procid, msgid, structured data and text.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{Daemon, wait_until};

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn syslog_encoded_file_is_read_back_by_rsyslog_field_for_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = r#"
[sources.sys]
type = "syslog"
mode = "unix_dgram"
path = "$DIR/in.sock"

[sinks.out]
type = "file"
inputs = ["sys"]
path = "$DIR/out.log"
encoding = "syslog"
"#;
    let mut d = Daemon::start(dir.path(), config);
    let sock = dir.path().join("in.sock");
    wait_until(Duration::from_secs(20), "the source's socket", || {
        sock.exists()
    });
    let send = |args: &[&str]| {
        let out = Command::new("logger")
            .arg("-u")
            .arg(&sock)
            .args(["-d", "--socket-errors=on"])
            .args(args)
            .output()
            .expect("util-linux logger (scripts/install-deps.sh installs it)");
        assert!(out.status.success(), "logger: {out:?}");
    };
    send(&[
        "--rfc5424=notq",
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
        "note=\"x\\]y\"",
        "invoice sent",
    ]);
    send(&["--rfc3164", "-t", "cron", "-p", "cron.err", "job failed"]);
    let out = dir.path().join("out.log");
    wait_until(Duration::from_secs(20), "2 encoded lines", || {
        lines(&out).len() >= 2
    });
    let ours = lines(&out);
    assert!(
        ours[0].starts_with("<156>1 ") && ours[0].ends_with(" invoice sent"),
        "{}",
        ours[0]
    );
    assert!(
        ours[0].contains(r#" billing 4242 INVOICE [order@32473 id="A-1" note="x\]y"] "#),
        "{}",
        ours[0]
    );
    assert!(ours[1].starts_with("<75>1 "), "{}", ours[1]);
    assert!(ours[1].contains(" cron - - - job failed"), "{}", ours[1]);
    assert!(d.stop().success(), "{}", d.stderr());

    // rsyslog reads each line as a datagram on its own socket, parses it as
    // RFC 5424, and writes the properties it found.
    let conf = dir.path().join("rsyslog.conf");
    let rs_sock = dir.path().join("rs.sock");
    let parsed = dir.path().join("parsed.txt");
    std::fs::write(
        &conf,
        format!(
            r#"global(workDirectory="{dir}")
module(load="imuxsock" SysSock.Use="off")
template(name="props" type="string"
         string="%pri%|%hostname%|%app-name%|%procid%|%msgid%|%structured-data%|%msg%\n")
input(type="imuxsock" Socket="{sock}" RateLimit.Interval="0" UseSpecialParser="off"
      ParseHostname="on" UseSysTimeStamp="off")
action(type="omfile" file="{parsed}" template="props")
"#,
            dir = dir.path().display(),
            sock = rs_sock.display(),
            parsed = parsed.display(),
        ),
    )
    .unwrap();
    let mut rsyslog = Command::new("/usr/sbin/rsyslogd")
        .args(["-n", "-f"])
        .arg(&conf)
        .arg("-i")
        .arg(dir.path().join("rsyslog.pid"))
        .stdout(Stdio::null())
        .spawn()
        .expect("rsyslogd (scripts/install-deps.sh installs rsyslog)");
    wait_until(Duration::from_secs(20), "rsyslog's socket", || {
        rs_sock.exists()
    });
    let tx = UnixDatagram::unbound().unwrap();
    for l in &ours {
        tx.send_to(l.as_bytes(), &rs_sock).unwrap();
    }
    wait_until(Duration::from_secs(20), "rsyslog's 2 lines", || {
        lines(&parsed).len() >= 2
    });
    let _ = rsyslog.kill();
    let _ = rsyslog.wait();
    let theirs = lines(&parsed);
    let host = ours[0].split(' ').nth(2).unwrap();
    assert_eq!(
        theirs[0],
        format!(
            r#"156|{host}|billing|4242|INVOICE|[order@32473 id="A-1" note="x\]y"]|invoice sent"#
        )
    );
    let fields: Vec<&str> = theirs[1].split('|').collect();
    assert_eq!(
        (fields[0], fields[2], fields[3], fields[4], fields[5]),
        ("75", "cron", "-", "-", "-"),
        "{}",
        theirs[1]
    );
    assert!(theirs[1].ends_with("|job failed"), "{}", theirs[1]);
}
