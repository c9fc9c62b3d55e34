//! Syslog source under load and at its limits: UDP over several `SO_REUSEPORT`
//! sockets (`udp_threads`) with a named time zone; datagrams the kernel drops
//! while the pipeline is stalled counted as discarded (per socket, from
//! /proc/net/udp); 10,000 idle TCP connections held in bounded memory while a
//! healthy client flows.

use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use serde_json::Value;

use crate::api::{api_addr, get};
use crate::common::{Daemon, wait_until};
use crate::forward::{raise_fd_limit, rss_kib};
use crate::forward_memory::{deaf_server, metric};

/// Starts a daemon with `config` and reads back the syslog source's address.
fn start(dir: &std::path::Path, config: &str) -> (Daemon, SocketAddr) {
    let d = Daemon::start(dir, config);
    let mut addr = None;
    wait_until(
        Duration::from_secs(20),
        "the syslog source to listen",
        || {
            let log = d.stderr();
            assert!(!log.contains("ERROR"), "sluice failed to start:\n{log}");
            addr = log
                .lines()
                .find(|l| l.contains("Syslog source listening"))
                .and_then(|l| l.split("address=").nth(1))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|a| a.parse().ok());
            addr.is_some()
        },
    );
    (d, addr.unwrap())
}

fn json_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// 400 datagrams from 400 client sockets (400 source ports, so the kernel's
/// hash spreads them over the four sockets): every one arrives, and the RFC 3164
/// timestamps are read in Asia/Kolkata (+05:30) from the tz database.
#[test]
fn udp_threads_share_the_port_and_a_named_zone_reads_3164_times() {
    const N: usize = 400;
    let dir = tempfile::tempdir().unwrap();
    let (mut d, addr) = start(
        dir.path(),
        "[sources.sys]\ntype = \"syslog\"\nmode = \"udp\"\naddress = \"127.0.0.1:0\"\n\
         udp_threads = 4\ntimezone = \"Asia/Kolkata\"\n\
         [sinks.out]\ntype = \"file\"\ninputs = [\"sys\"]\npath = \"$DIR/out.json\"\nencoding = \"json\"\n",
    );
    // The four sockets share one port.
    let sockets = std::fs::read_to_string("/proc/net/udp").unwrap();
    let port = format!(":{:04X} ", addr.port());
    assert_eq!(
        sockets.lines().filter(|l| l.contains(&port)).count(),
        4,
        "{sockets}"
    );
    for i in 0..N {
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.send_to(
            format!("<13>Dec  7 12:00:00 host app: udp {i}").as_bytes(),
            addr,
        )
        .unwrap();
    }
    let out = dir.path().join("out.json");
    wait_until(Duration::from_secs(30), "every datagram", || {
        json_lines(&out).len() >= N
    });
    assert!(d.stop().success(), "{}", d.stderr());
    let events = json_lines(&out);
    assert_eq!(events.len(), N);
    let mut seen: Vec<usize> = events
        .iter()
        .map(|e| {
            let m = e["message"].as_str().unwrap();
            m.strip_prefix("udp ").unwrap().parse().unwrap()
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..N).collect::<Vec<_>>());
    // 12:00 in Kolkata is 06:30 UTC, whatever the year.
    for e in &events {
        let t = e["time"].as_str().unwrap();
        assert!(t.contains("-12-07T06:30:00"), "{t}");
    }
    let log = d.stderr();
    assert_eq!(
        log.matches("Syslog receive loop stopped.").count(),
        4,
        "{log}"
    );
}

/// The pipeline is stalled (a forward sink to a server that never reads, a
/// 10-event memory buffer that blocks): the source stops receiving, its small
/// socket buffer fills and the kernel drops the rest. Those drops show up as the
/// source's discarded events, from the socket's own counter.
#[test]
fn datagrams_the_kernel_drops_are_counted_as_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let next_hop = deaf_server();
    let (mut d, addr) = start(
        dir.path(),
        &format!(
            "[api]\naddress = \"127.0.0.1:0\"\n\
             [sources.sys]\ntype = \"syslog\"\nmode = \"udp\"\naddress = \"127.0.0.1:0\"\n\
             receive_buffer_bytes = 4096\n\
             [sinks.stall]\ntype = \"forward\"\ninputs = [\"sys\"]\nservers = [\"{next_hop}\"]\n\
             [sinks.stall.buffer]\nmax_events = 10\nwhen_full = \"block\"\n"
        ),
    );
    let api = api_addr(&d);
    let discarded = || {
        let (_, text) = get(api, "/metrics");
        metric(&text, "sluice_component_discarded_events", "sys").unwrap_or(0.0) as u64
    };
    let c = UdpSocket::bind("127.0.0.1:0").unwrap();
    let line = format!("<13>Dec  7 12:00:00 host app: {}", "x".repeat(200));
    let mut sent = 0u64;
    wait_until(
        Duration::from_secs(60),
        "kernel drops counted as discarded",
        || {
            for _ in 0..200 {
                c.send_to(line.as_bytes(), addr).unwrap();
                sent += 1;
            }
            discarded() > 0
        },
    );
    let dropped = discarded();
    assert!(dropped < sent, "dropped {dropped} of {sent}");
    // Stopping with a stalled sink takes the shutdown deadline: kill instead.
    d.signal(libc::SIGKILL);
    d.wait(Duration::from_secs(10));
    let log = d.stderr();
    assert!(log.contains("The kernel dropped UDP datagrams"), "{log}");
}

/// 10,000 connections that send nothing: sluice keeps each in a few KiB (its
/// peak RSS grows by less than 200 MiB), and a client sending beside them is
/// served at once.
#[test]
fn ten_thousand_idle_tcp_connections_stay_in_bounded_memory() {
    const IDLE: usize = 10_000;
    raise_fd_limit(2 * IDLE as u64 + 1000);
    let dir = tempfile::tempdir().unwrap();
    let (mut d, addr) = start(
        dir.path(),
        "[sources.sys]\ntype = \"syslog\"\nmode = \"tcp\"\naddress = \"127.0.0.1:0\"\n\
         max_connections = 11000\n\
         [sinks.out]\ntype = \"file\"\ninputs = [\"sys\"]\npath = \"$DIR/out.json\"\nencoding = \"json\"\n",
    );
    let pid = d.child.id();
    let (_, before) = rss_kib(pid);
    let idle: Vec<TcpStream> = (0..IDLE)
        .map(|_| TcpStream::connect(addr).expect("an idle connection"))
        .collect();
    // Every one was accepted: the daemon holds IDLE + its listener sockets.
    let sockets = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read_link(e.path())
                    .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
            })
            .count()
    };
    wait_until(Duration::from_secs(60), "every connection accepted", || {
        sockets() > IDLE
    });
    let mut good = TcpStream::connect(addr).unwrap();
    for i in 0..100 {
        writeln!(good, "<14>Dec  7 01:37:14 host good: line {i}").unwrap();
    }
    let out = dir.path().join("out.json");
    wait_until(
        Duration::from_secs(30),
        "the healthy client's lines",
        || json_lines(&out).len() >= 100,
    );
    let (peak, _) = rss_kib(pid);
    assert!(
        peak.saturating_sub(before) < 200 << 10,
        "peak RSS {peak} KiB, {before} KiB before {IDLE} idle connections"
    );
    drop(idle);
    drop(good);
    assert!(d.stop().success(), "{}", d.stderr());
}
