//! Running as a system service: the shipped unit verifies with Debian's
//! `systemd-analyze`, and the notify protocol is driven against a socket of the
//! test's own (NOTIFY_SOCKET): READY=1 only once the forward port accepts,
//! RELOADING=1 then READY=1 around a SIGHUP, STOPPING=1 at SIGTERM.

use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{Daemon, manifest_dir, sluice_bin};
use crate::kafka_broker::free_port;

/// The unit as shipped, with `ExecStart` pointing at the binary under test
/// (`systemd-analyze verify` checks that the command exists).
fn unit_for_test(dir: &std::path::Path) -> std::path::PathBuf {
    let shipped = manifest_dir().join("../../deploy/systemd/sluice.service");
    let text = std::fs::read_to_string(&shipped).expect("read deploy/systemd/sluice.service");
    assert_eq!(
        text.matches("ExecStart=/usr/bin/sluice run").count(),
        1,
        "the unit starts /usr/bin/sluice run"
    );
    let path = dir.join("sluice.service");
    std::fs::write(&path, text.replace("/usr/bin/sluice", sluice_bin())).unwrap();
    path
}

#[test]
fn unit_file_verifies_with_systemd_analyze() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_test(dir.path());
    // --man=no: the man page is installed by the package (checked in the .deb test).
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect(
            "systemd-analyze (Debian's systemd package) is installed by scripts/install-deps.sh",
        );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    // Unknown or misplaced keys are only warnings: none allowed.
    assert!(
        stderr.trim().is_empty(),
        "systemd-analyze warned:\n{stderr}"
    );
    let text = std::fs::read_to_string(&unit).unwrap();
    for key in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
    ] {
        assert!(text.contains(key), "the unit lacks {key}");
    }
}

/// Notifications received on `sock` until `want` arrives (each datagram whole).
fn recv_until(sock: &UnixDatagram, want: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no {want} within {timeout:?}; got {got:?}");
        sock.set_read_timeout(Some(left)).unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = msg.lines().any(|l| l == want);
                got.push(msg);
                if done {
                    return got;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => panic!("recv on the notify socket: {e}"),
        }
    }
}

#[test]
fn ready_after_sources_bind_then_reloading_ready_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let port = free_port();
    let config = format!(
        "[sources.fw]\ntype = \"forward\"\naddress = \"127.0.0.1:{port}\"\n\
         [sinks.out]\ntype = \"null\"\ninputs = [\"fw\"]\n"
    );
    let mut d = Daemon::start_with(
        dir.path(),
        &config,
        &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())],
    );
    let got = recv_until(&sock, "READY=1", Duration::from_secs(30));
    // At READY the port (chosen free before the start) accepts: the source is bound.
    if let Err(e) = TcpStream::connect(("127.0.0.1", port)) {
        panic!("READY=1 before the forward port accepts ({e}): {got:?}");
    }
    assert!(got.last().unwrap().contains("STATUS="), "{got:?}");

    d.signal(libc::SIGHUP);
    let got = recv_until(&sock, "READY=1", Duration::from_secs(30));
    assert!(
        got[0].lines().any(|l| l == "RELOADING=1"),
        "a reload starts with RELOADING=1: {got:?}"
    );

    d.signal(libc::SIGTERM);
    recv_until(&sock, "STOPPING=1", Duration::from_secs(30));
    assert!(d.wait(Duration::from_secs(30)).success(), "{}", d.stderr());
}
