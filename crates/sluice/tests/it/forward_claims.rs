//! Claims of docs/sources/forward.md and docs/operations.md that had no test: a
//! connection with 16 chunks awaiting their ack leaves the 17th in the socket, and
//! a second stop signal exits at once while the first waits for a stalled sink, and
//! a client that never reads its acks is closed after `ack_write_timeout_secs`.

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::api::{api_addr, get};
use crate::common::wait_until;
use crate::forward::{Fw, packed};
use crate::forward_memory::{deaf_server, metric};

/// A forward source whose only sink forwards to a server that never reads or
/// acks: nothing it takes is ever acknowledged.
fn stalled() -> Fw {
    let next_hop = deaf_server();
    Fw::with_sinks(
        "",
        &format!(
            "[api]\naddress = \"127.0.0.1:0\"\n\
             [sinks.stall]\ntype = \"forward\"\ninputs = [\"fw\"]\nservers = [\"{next_hop}\"]\n"
        ),
    )
}

/// Bytes waiting unread in the receive queue of the daemon's end of the TCP
/// connection `daemon` ↔ `client` (IPv4, from /proc/net/tcp).
fn unread_bytes(daemon: SocketAddr, client: SocketAddr) -> Option<u64> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => unreachable!("the tests listen on 127.0.0.1"),
    };
    let (local, remote) = (hex(daemon), hex(client));
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.get(1) == Some(&local.as_str()) && f.get(2) == Some(&remote.as_str()) {
            let rx = f.get(4)?.split(':').nth(1)?;
            u64::from_str_radix(rx, 16).ok()
        } else {
            None
        }
    })
}

/// Seventeen chunked requests on one connection while nothing is acked: the
/// source takes sixteen (their events reach the sink's buffer), and the
/// seventeenth's bytes stay in the daemon's socket receive queue, unread.
#[test]
fn the_17th_chunk_stays_in_the_socket_while_16_await_their_ack() {
    let fw = stalled();
    let api = api_addr(&fw.d);
    let mut s = crate::forward::connect(fw.addr);
    let requests: Vec<Vec<u8>> = (0..17)
        .map(|i| packed("win", "win", 1, Some(&format!("chunk-{i:02}"))))
        .collect();
    for r in &requests[..16] {
        s.write_all(r).unwrap();
    }
    let received = || {
        let (_, text) = get(api, "/metrics");
        metric(&text, "sluice_component_received_events", "fw").unwrap_or(0.0) as u64
    };
    wait_until(Duration::from_secs(20), "16 events taken", || {
        received() == 16
    });
    s.write_all(&requests[16]).unwrap();
    let last = requests[16].len() as u64;
    let client = s.local_addr().unwrap();
    wait_until(
        Duration::from_secs(20),
        "the 17th request waiting in the socket",
        || unread_bytes(fw.addr, client) == Some(last),
    );
    assert_eq!(received(), 16, "the 17th request was read");
    drop(s);
}

/// SIGTERM while a sink cannot deliver: the daemon starts its graceful stop and
/// waits (up to `shutdown_timeout_secs`, 20 s here); a second SIGTERM exits at once
/// with status 1 and says so.
#[test]
fn a_second_sigterm_exits_at_once() {
    let mut fw = stalled();
    let mut s = crate::forward::connect(fw.addr);
    s.write_all(&packed("stop", "stop", 5, Some("held")))
        .unwrap();
    let api = api_addr(&fw.d);
    // The events must be in the pipeline (held by the stalled sink) before the
    // stop, or there is nothing for it to wait for.
    wait_until(Duration::from_secs(20), "the 5 events taken", || {
        let (_, text) = get(api, "/metrics");
        metric(&text, "sluice_component_received_events", "fw").unwrap_or(0.0) as u64 == 5
    });
    fw.d.signal(libc::SIGTERM);
    wait_until(
        Duration::from_secs(20),
        "the graceful stop to begin",
        || {
            fw.d.stderr()
                .contains("Stopping: sources stop, sinks drain.")
        },
    );
    assert!(
        fw.d.child.try_wait().unwrap().is_none(),
        "the first SIGTERM must wait for the stalled sink:\n{}",
        fw.d.stderr()
    );
    let second = Instant::now();
    fw.d.signal(libc::SIGTERM);
    let st = fw.d.wait(Duration::from_secs(10));
    let took = second.elapsed();
    assert_eq!(st.code(), Some(1), "{}", fw.d.stderr());
    assert!(took < Duration::from_secs(5), "exited after {took:?}");
    assert!(
        fw.d.stderr().contains("Second stop signal: exiting now."),
        "{}",
        fw.d.stderr()
    );
}

/// A client that sends chunk after chunk and never reads an ack: its receive
/// window (shrunk to the minimum) and the daemon's send buffer fill with acks,
/// an ack write stalls, and after `ack_write_timeout_secs` (1 s here) the daemon
/// closes the connection, counts an error and says why.
#[test]
fn a_client_that_never_reads_its_acks_is_closed() {
    let mut fw = crate::forward::Fw::with_sinks(
        "limits = { ack_write_timeout_secs = 1 }\n[api]\naddress = \"127.0.0.1:0\"",
        "[sinks.out]\ntype = \"null\"\ninputs = [\"fw\"]\n",
    );
    let api = api_addr(&fw.d);
    // The smallest receive buffer, set before connecting so the window offered
    // at the handshake is small too.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(1).unwrap();
    sock.connect(&fw.addr.into()).unwrap();
    let mut s: std::net::TcpStream = sock.into();
    s.set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // Long chunk ids make long acks: the buffers fill after a few thousand.
    let pad = "x".repeat(200);
    let closed_line = "Client does not read its acks; connection closed.";
    let started = Instant::now();
    let (mut sent, mut request, mut at) = (0u64, Vec::new(), 0);
    let mut refused = false;
    while !fw.d.stderr().contains(closed_line) {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "still open after {sent} chunks:\n{}",
            fw.d.stderr()
        );
        if at == request.len() {
            request = packed("deaf", "deaf", 1, Some(&format!("{pad}-{sent}")));
            at = 0;
            sent += 1;
        }
        // Partial writes resume where they stopped: the stream stays well framed.
        match s.write(&request[at..]) {
            Ok(n) => at += n,
            // The daemon stopped reading: its window of chunks waits on acks.
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                refused = true;
                break;
            }
        }
    }
    wait_until(Duration::from_secs(20), "the close to be logged", || {
        fw.d.stderr().contains(closed_line)
    });
    // The connection is gone: what acks were sent can still be read, then EOF
    // or a reset, never a read that waits.
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut sink = Vec::new();
    match s.read_to_end(&mut sink) {
        Ok(_) => {}
        Err(e) => assert!(
            !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
            "the connection is still open (sent {sent}, refused {refused})"
        ),
    }
    let (_, text) = get(api, "/metrics");
    assert!(
        metric(&text, "sluice_component_errors", "fw").unwrap_or(0.0) >= 1.0,
        "the close is counted:\n{text}"
    );
    // The daemon goes on serving others.
    let mut other = crate::forward::connect(fw.addr);
    other
        .write_all(&packed("ok", "ok", 1, Some("other")))
        .unwrap();
    let ack = crate::forward::ack_bytes("other");
    let mut got = vec![0; ack.len()];
    other.read_exact(&mut got).unwrap();
    assert_eq!(got, ack);
    assert!(fw.d.stop().success(), "{}", fw.d.stderr());
}
