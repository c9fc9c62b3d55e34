//! Forward source memory under hostile volume, measured from outside (VmHWM of the
//! real daemon): compressed requests against a sink that has stalled are held back
//! by the memory buffer's `max_bytes`, not by its event count.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::forward::{Compression, EventTime, PackedForwardBuilder};
use rmpv::Value;

use crate::api::{api_addr, get};
use crate::forward::{Fw, rss_kib};

/// A next hop that accepts connections and never reads from them: whatever is sent
/// to it stays in the sender (and the kernel's socket buffers).
pub(crate) fn deaf_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    // Detached: it lives as long as the test binary, like the sockets it holds.
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            held.lock().unwrap().push(s);
        }
    });
    addr
}

/// The value of metric `name` for component `id` in a Prometheus exposition.
pub(crate) fn metric(text: &str, name: &str, id: &str) -> Option<f64> {
    text.lines()
        .filter(|l| {
            let rest = l.strip_prefix(name).unwrap_or("");
            rest.starts_with('{') || rest.starts_with("_total{")
        })
        .find(|l| l.contains(&format!("component_id=\"{id}\"")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A CompressedPackedForward request without `chunk`: `n` records of `size` bytes
/// that inflate to about `n × size` from a few KiB.
fn gzip_request(n: usize, size: usize) -> Vec<u8> {
    let mut b = PackedForwardBuilder::new(&b"bulk"[..]);
    let rec = Value::Map(vec![(
        Value::from("message"),
        Value::from("x".repeat(size)),
    )]);
    for _ in 0..n {
        b.push(EventTime::new(1_700_000_000, 0), &rec);
    }
    b.finish(None, Compression::Gzip).to_vec()
}

/// 500 requests that inflate to 1 MiB each (500 MiB, only 5,000 events: far
/// below `max_events`) from four connections into a forward sink whose server
/// never reads. The sink's memory buffer fills to its 32 MiB `max_bytes`, the
/// source stops reading (the clients' writes stall), and the daemon's peak RSS
/// stays under the bound plus a small baseline.
#[test]
fn compressed_requests_against_a_stalled_sink_stay_within_buffer_max_bytes() {
    const MAX_BYTES: u64 = 32 << 20;
    let next_hop = deaf_server();
    let fw = Fw::with_sinks(
        "",
        &format!(
            "[api]\naddress = \"127.0.0.1:0\"\n\
             [sinks.stall]\ntype = \"forward\"\ninputs = [\"fw\"]\nservers = [\"{next_hop}\"]\n\
             max_inflight_chunks = 1\nmax_chunk_bytes = 1048576\n\
             buffer = {{ max_bytes = {MAX_BYTES} }}\n"
        ),
    );
    let api = api_addr(&fw.d);
    let pid = fw.d.child.id();
    let (_, baseline) = rss_kib(pid);
    let request = Arc::new(gzip_request(10, 100 << 10));
    assert!(request.len() < 64 << 10, "{} bytes", request.len());

    // Four senders of 125 requests each (a write stalled for 2 s gives up).
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let (addr, request) = (fw.addr, request.clone());
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
                let mut sent = 0;
                for _ in 0..125 {
                    if s.write_all(&request).is_err() {
                        break;
                    }
                    sent += 1;
                }
                (sent, s)
            })
        })
        .collect();
    let mut sent = 0;
    let mut open = Vec::new();
    for t in senders {
        let (n, s) = t.join().unwrap();
        sent += n;
        open.push(s);
    }
    // Back-pressure: the buffer holds about max_bytes, and the source took only
    // part of what the clients sent.
    let mut queued = 0.0;
    let mut text = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while queued < (MAX_BYTES as f64) * 0.9 {
        assert!(
            std::time::Instant::now() < deadline,
            "the buffer did not fill ({sent} requests sent):\n{text}\n{}",
            fw.d.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
        text = get(api, "/metrics").1;
        queued = metric(&text, "sluice_buffer_bytes", "stall").unwrap_or(0.0);
    }
    assert!(queued <= MAX_BYTES as f64, "queued {queued} bytes");
    // The kernel's socket buffers take the few KiB requests; the source must not.
    let received = metric(&text, "sluice_component_received_events", "fw").unwrap_or(0.0);
    assert!(
        received < 5000.0,
        "the source took all {received} events: no back-pressure"
    );

    let (peak, rss) = rss_kib(pid);
    eprintln!(
        "forward_memory: baseline {} MiB, peak {} MiB, now {} MiB, {sent} of 500 requests sent, {} MiB queued, {received} events received",
        baseline / 1024,
        peak / 1024,
        rss / 1024,
        queued as u64 >> 20,
    );
    // Bound + baseline + what is outside the buffer: the sink's chunk in flight,
    // one request per connection waiting at the buffer, allocator slack.
    let limit_kib = (MAX_BYTES >> 10) + baseline + 16 * 1024;
    assert!(
        peak < limit_kib,
        "peak RSS {} MiB over {} MiB",
        peak / 1024,
        limit_kib / 1024
    );
    drop(open);
}

/// 2,000 connections each declare a 20 MB request and send 60 KB of it (120 MB
/// in all, 240 MB of read buffers without a budget) against a 32 MiB
/// `max_pending_bytes`: the connections past the budget stop being read, the
/// oldest partial requests are closed (logged, counted), a healthy client that
/// connects afterwards is acked, and the daemon's RSS stays under the budget plus
/// the per-connection baseline.
#[test]
fn partial_requests_on_many_connections_stay_within_max_pending_bytes() {
    const CONNS: usize = 2000;
    const BUDGET: u64 = 32 << 20;
    crate::forward::raise_fd_limit(2 * CONNS as u64 + 500);
    let mut fw = Fw::with_sinks(
        &format!("[sources.fw.limits]\nmax_frame_bytes = 25165824\nmax_pending_bytes = {BUDGET}\n"),
        "[sinks.out]\ntype = \"null\"\ninputs = [\"fw\"]\n",
    );
    let pid = fw.d.child.id();
    let (_, baseline) = rss_kib(pid);
    // A PackedForward request whose bin32 payload declares 20 MB; 60 KB of it sent.
    let mut head = vec![0x93, 0xa4];
    head.extend_from_slice(b"part");
    head.push(0xc6);
    head.extend_from_slice(&20_000_000u32.to_be_bytes());
    head.resize(60_000, 0x92);
    let attackers: Vec<TcpStream> = (0..CONNS)
        .map(|_| {
            let mut s = TcpStream::connect(fw.addr).expect("attacker connection");
            s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(&head).expect("60 KB fit the socket buffers");
            s
        })
        .collect();
    // The budget runs out and waiters close the oldest partial requests.
    crate::common::wait_until(
        Duration::from_secs(20),
        "a partial request closed for the budget",
        || {
            fw.d.stderr()
                .contains("Partial request closed to free max_pending_bytes")
        },
    );
    // A healthy client is still read and acked.
    let mut s = crate::forward::connect(fw.addr);
    s.write_all(&crate::forward::packed("ok", "ok", 10, Some("healthy")))
        .unwrap();
    let want = crate::forward::ack_bytes("healthy");
    assert_eq!(
        crate::forward::read_exact_within(&mut s, want.len(), Duration::from_secs(20)),
        want
    );
    let (peak, rss) = rss_kib(pid);
    eprintln!(
        "forward_memory: {CONNS} partial requests: baseline {} MiB, peak {} MiB, now {} MiB",
        baseline / 1024,
        peak / 1024,
        rss / 1024
    );
    // Uncharged per connection: 8 KiB of read buffer, the tasks, socket state.
    let per_conn_kib = 24 * CONNS as u64;
    let limit_kib = (BUDGET >> 10) + baseline + per_conn_kib;
    assert!(
        peak < limit_kib,
        "peak RSS {} MiB over {} MiB",
        peak / 1024,
        limit_kib / 1024
    );
    drop(attackers);
    let st = fw.d.stop();
    assert!(st.success(), "{}", fw.d.stderr());
    let log = fw.d.stderr();
    let closed: u64 = log
        .split("pending_closed=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no pending_closed in the stop line:\n{log}"));
    assert!(closed >= 1, "{log}");
}
