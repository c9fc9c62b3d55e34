//! Per-tenant re-sends after `kill -9` (`sluice_tenant_resent_events_total`):
//! a pipe → tenant route → forward sink with a disk buffer, the forward
//! server a fake in this test that records every event it receives and acks
//! only while told to. The situation is made, not waited for:
//! - phase A, acked: every event delivered once; a clean stop and start
//!   re-sends nothing (resent 0 for every tenant);
//! - phase B, not acked: the sink sends every event (the server has them all)
//!   and none is acknowledged; a line of an inactive id then goes through the
//!   buffer's WAL thread (its count shows on `/metrics` only once that thread
//!   wrote the journal, hand-off mark included); then `kill -9`;
//! - the server acks again and sluice restarts: the buffer re-sends phase B,
//!   the server receives each of those events a second time.
//!
//! Then, for every tenant, the resent count equals the events the server
//! received twice (counted by the test from what it received), which is
//! phase B's; the balance holds; another clean stop and start changes nothing.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;

use crate::api::{Sample, api_addr, get, scrape};
use crate::common::{Daemon, wait_until};
use crate::tenant_accounting_kill::total;

/// A forward server that keeps every event's message, in arrival order, and
/// acks each request only while `acking` is set.
struct FakeServer {
    addr: SocketAddr,
    acking: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl FakeServer {
    fn start() -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let s = FakeServer {
            addr: listener.local_addr().unwrap(),
            acking: Arc::new(AtomicBool::new(true)),
            seen: Arc::default(),
            stop: Arc::default(),
        };
        let (acking, seen, stop) = (s.acking.clone(), s.seen.clone(), s.stop.clone());
        std::thread::spawn(move || {
            while !stop.load(SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (acking, seen, stop) = (acking.clone(), seen.clone(), stop.clone());
                        std::thread::spawn(move || serve(conn, &acking, &seen, &stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        s
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
    }
}

fn serve(mut conn: TcpStream, acking: &AtomicBool, seen: &Mutex<Vec<String>>, stop: &AtomicBool) {
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut dec = proto::forward::Decoder::new(proto::forward::Limits::default());
    let mut buf = BytesMut::new();
    let mut b = vec![0u8; 65536];
    while !stop.load(SeqCst) {
        let n = match conn.read(&mut b) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(_) => return,
        };
        buf.extend_from_slice(&b[..n]);
        while let Some(r) = dec.decode(&mut buf).expect("a valid request") {
            let proto::forward::Request::Events(f) = r else {
                continue;
            };
            {
                let mut seen = seen.lock().unwrap();
                for e in &f.entries {
                    let m = e.record.get(b"message").and_then(|v| v.as_bytes());
                    seen.push(String::from_utf8_lossy(m.expect("a message")).into_owned());
                }
            }
            if acking.load(SeqCst)
                && let Some(chunk) = &f.chunk
                && conn.write_all(&proto::forward::encode_ack(chunk)).is_err()
            {
                return;
            }
        }
    }
}

/// The forward sink to the fake server, with a disk buffer.
fn forward_sink(server: SocketAddr) -> String {
    format!(
        r#"
        [sinks.f]
        type = "forward"
        inputs = ["by_tenant"]
        servers = ["{server}"]
        # Nothing is re-sent within a run: only the restart re-sends.
        ack_timeout_secs = 600
        max_inflight_chunks = 64
        [sinks.f.buffer]
        type = "disk"
        "#
    )
}

/// pipe → tenant route → `sink`, with the API; waits until ready.
fn start(dir: &Path, sink: &str) -> (Daemon, SocketAddr) {
    let d = Daemon::start(
        dir,
        &format!(
            r#"
            data_dir = "$DIR/data"
            shutdown_timeout_secs = 20
            [api]
            address = "127.0.0.1:0"
            [sources.p]
            type = "pipe"
            path = "$DIR/in.fifo"
            [routes.by_tenant]
            type = "tenant"
            inputs = ["p"]
            active_list = "$DIR/tenants.txt"
            {sink}
            "#
        ),
    );
    let addr = api_addr(&d);
    wait_until(Duration::from_secs(60), "sluice ready", || {
        get(addr, "/ready").0 == 200
    });
    (d, addr)
}

/// Write `lines` to the pipe and wait until sluice counted `received` in all.
fn write(dir: &Path, addr: SocketAddr, lines: &[String], received: usize) {
    let fifo = dir.join("in.fifo");
    wait_until(Duration::from_secs(20), "the FIFO", || fifo.exists());
    let mut pipe = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    pipe.write_all(lines.concat().as_bytes()).unwrap();
    drop(pipe);
    wait_until(Duration::from_secs(30), "the lines received", || {
        total(addr, "sluice_tenant_received_events_total") == received as f64
    });
}

fn by_tenant(s: &[Sample], name: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for (n, l, v) in s {
        if n == name {
            *out.entry(l["tenant"].clone()).or_default() += v;
        }
    }
    out
}

/// Every tenant's (received, delivered, dropped, buffered) balances; returns
/// the resent counts.
fn balanced_resent(addr: SocketAddr) -> HashMap<String, f64> {
    let s = scrape(addr);
    let rx = by_tenant(&s, "sluice_tenant_received_events_total");
    let dl = by_tenant(&s, "sluice_tenant_delivered_events_total");
    let dr = by_tenant(&s, "sluice_tenant_dropped_events_total");
    let bf = by_tenant(&s, "sluice_tenant_buffered_events");
    for (t, r) in &rx {
        assert_eq!(*r, dl[t] + dr[t] + bf[t], "{t} balance");
    }
    let resent = by_tenant(&s, "sluice_tenant_resent_events_total");
    assert_eq!(resent.len(), rx.len(), "a resent series per tenant");
    resent
}

fn drained(addr: SocketAddr, delivered: usize) {
    wait_until(Duration::from_secs(60), "everything delivered", || {
        total(addr, "sluice_tenant_delivered_events_total") == delivered as f64
            && total(addr, "sluice_tenant_buffered_events") == 0.0
    });
}

#[test]
fn events_resent_after_kill_9_are_counted_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let tenants: Vec<String> = (0..6).map(|k| format!("t{k}")).collect();
    std::fs::write(dir.path().join("tenants.txt"), tenants.join("\n") + "\n").unwrap();
    let server = FakeServer::start();
    let sink = forward_sink(server.addr);

    // Phase A, acked: t0..t4, 3 + k events each.
    let a: Vec<String> = (0..5)
        .flat_map(|k| (0..3 + k).map(move |i| format!("t{k} a{i}\n")))
        .collect();
    let (mut d, addr) = start(dir.path(), &sink);
    write(dir.path(), addr, &a, a.len());
    drained(addr, a.len());
    assert!(d.stop().success(), "{}", d.stderr());
    let (mut d, addr) = start(dir.path(), &sink);
    let resent = balanced_resent(addr);
    assert!(
        resent.values().all(|v| *v == 0.0),
        "a clean stop and start re-sends nothing: {resent:?}"
    );

    // Phase B, sent and never acked: t1..t5, 2k events each.
    server.acking.store(false, SeqCst);
    let b: Vec<String> = (1..6)
        .flat_map(|k| (0..2 * k).map(move |i| format!("t{k} b{i}\n")))
        .collect();
    write(dir.path(), addr, &b, a.len() + b.len());
    wait_until(Duration::from_secs(30), "phase B at the server", || {
        server.seen().len() == a.len() + b.len()
    });
    // Through the WAL thread after the hand-offs: the journal holds the mark.
    write(
        dir.path(),
        addr,
        &["zz marker\n".into()],
        a.len() + b.len() + 1,
    );
    d.child.kill().unwrap();
    d.child.wait().unwrap();

    server.acking.store(true, SeqCst);
    let (mut d, addr) = start(dir.path(), &sink);
    drained(addr, a.len() + b.len());
    let resent = balanced_resent(addr);

    // What the test counts itself: per tenant, events the server received twice.
    let mut times: HashMap<String, u32> = HashMap::new();
    for m in server.seen() {
        *times.entry(m).or_default() += 1;
    }
    assert!(times.values().all(|&n| n <= 2), "none three times");
    let mut twice: HashMap<String, f64> = HashMap::new();
    for (m, n) in &times {
        if *n == 2 {
            *twice
                .entry(m.split(' ').next().unwrap().to_owned())
                .or_default() += 1.0;
        }
    }
    for (k, t) in tenants.iter().enumerate() {
        let phase_b = if k == 0 { 0.0 } else { 2.0 * k as f64 };
        let got = resent.get(t).copied().unwrap_or(0.0);
        let twice_t = twice.get(t).copied().unwrap_or(0.0);
        assert_eq!(twice_t, phase_b, "{t}: the server got phase B twice");
        assert_eq!(got, twice_t, "{t}: resent = received twice by the server");
    }
    assert_eq!(resent.get("zz").copied(), Some(0.0), "inactive: never sent");
    eprintln!("resent per tenant: {resent:?}");

    // A clean stop and start: nothing re-sent, the counts kept.
    assert!(d.stop().success(), "{}", d.stderr());
    let before = server.seen().len();
    let (mut d, addr) = start(dir.path(), &sink);
    assert_eq!(balanced_resent(addr), resent, "kept, and no more");
    assert!(d.stop().success(), "{}", d.stderr());
    assert_eq!(server.seen().len(), before, "nothing sent again");
}

/// Copy directory `from` to `to` (files and subdirectories).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// The exactly-once Kafka sink: records its checkpoint shows already in Kafka
/// are skipped, not re-sent, and not counted. Made deterministic by putting
/// the buffer back: records handed to the sink while the broker is paused,
/// `kill -9`, the buffer directory saved; the broker resumes and a run
/// delivers them (committed with a checkpoint); then the saved directory (the
/// records unacknowledged, handed before, counted nowhere) is put back and
/// sluice started again: the checkpoint covers every record, the sink skips
/// them all, and no tenant's resent count moves.
#[test]
fn records_an_exactly_once_kafka_sink_skips_are_not_counted_resent() {
    let kafka = crate::kafka_support::need_kafka!();
    let broker = crate::kafka_support::Broker::start(&kafka);
    broker.create_topic("resent-eo", 1);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tenants.txt"), "t1\nt2\n").unwrap();
    let sink = format!(
        r#"
        [sinks.k]
        type = "kafka"
        inputs = ["by_tenant"]
        brokers = "{}"
        topic = "resent-eo"
        encoding = "raw"
        exactly_once = true
        checkpoint_topic = "resent-eo-checkpoints"
        transaction_interval_ms = 200
        [sinks.k.librdkafka]
        "reconnect.backoff.max.ms" = 500
        [sinks.k.buffer]
        type = "disk"
        "#,
        broker.addr()
    );
    let lines: Vec<String> = [("t1", 3), ("t2", 5)]
        .iter()
        .flat_map(|&(t, n)| (0..n).map(move |i| format!("{t} e{i}\n")))
        .collect();
    let n = lines.len();

    let (mut d, addr) = start(dir.path(), &sink);
    // A first event committed: the sink's transactions are under way.
    let first = "t1 first\n".to_owned();
    write(dir.path(), addr, std::slice::from_ref(&first), 1);
    drained(addr, 1);
    let n_before = 1;
    broker.pause();
    write(dir.path(), addr, &lines, n_before + n);
    // One write, one batch, one record: handed to the sink whole.
    wait_until(Duration::from_secs(30), "the sink took the record", || {
        let (_, body) = get(addr, "/metrics");
        let took = body
            .lines()
            .filter(|l| {
                l.starts_with("sluice_component_received_events_total{")
                    && l.contains("component_id=\"k\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        eprintln!("sink k took {took} events");
        took >= (n_before + n) as f64
    });
    // Through the WAL thread after the hand-offs: the journal holds the mark.
    write(dir.path(), addr, &["zz marker\n".into()], n_before + n + 1);
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    let buffer = dir.path().join("data/buffers/k");
    let saved = dir.path().join("saved");
    copy_dir(&buffer, &saved);

    broker.resume();
    let (mut d, addr) = start(dir.path(), &sink);
    drained(addr, n_before + n);
    let resent = balanced_resent(addr);
    assert!(d.stop().success(), "{}", d.stderr());
    let skipped =
        |log: &str| log.contains("already in Kafka; acknowledging them without producing");
    // The transaction the kill left open is aborted (re-sent: counted), or
    // was committed by what the paused broker read after the kill (skipped).
    eprintln!(
        "after the kill: resent {resent:?}, skipped: {}",
        skipped(&d.stderr())
    );
    let expect = if skipped(&d.stderr()) {
        [0.0, 0.0]
    } else {
        [3.0, 5.0]
    };
    assert_eq!([resent["t1"], resent["t2"]], expect, "{resent:?}");

    std::fs::remove_dir_all(&buffer).unwrap();
    copy_dir(&saved, &buffer);
    let (mut d, addr) = start(dir.path(), &sink);
    drained(addr, n_before + n);
    let resent = balanced_resent(addr);
    assert!(d.stop().success(), "{}", d.stderr());
    assert!(
        skipped(&d.stderr()),
        "the checkpoint covered the records: {}",
        d.stderr()
    );
    assert!(
        resent.values().all(|v| *v == 0.0),
        "skipped records are not re-sends: {resent:?}"
    );
    let recs = crate::kafka_support::consume_with(
        &broker.addr(),
        &["resent-eo"],
        n_before + n,
        Duration::from_secs(30),
        &[("isolation.level", "read_committed")],
    );
    let mut got: Vec<String> = recs
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned() + "\n")
        .collect();
    got.sort();
    let mut want = lines.clone();
    want.push(first);
    want.sort();
    assert_eq!(got, want, "each event once in Kafka");
}
