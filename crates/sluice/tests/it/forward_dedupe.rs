//! `dedupe_window` of the forward source against the real daemon: a chunk resent
//! (pipelined, after its ack, while its first copy is in flight, after a SIGKILL
//! with the chunk in a disk buffer) is acked and stored once; the window stays
//! within `max_chunks` and forgets the oldest ids.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::api::{api_addr, get};
use crate::common::{Daemon, wait_until};
use crate::forward::{
    Fw, ack_bytes, assert_silent, bound_addrs, connect, packed, read_exact_within, read_json_lines,
};
use crate::kafka_support::free_port;

const ACK_WAIT: Duration = Duration::from_secs(30);

/// Send `request` on a new connection and read its ack.
fn send_acked(addr: SocketAddr, request: &[u8], chunk: &str) {
    let mut s = connect(addr);
    s.write_all(request).unwrap();
    let want = ack_bytes(chunk);
    assert_eq!(read_exact_within(&mut s, want.len(), ACK_WAIT), want);
}

/// The `N` of `duplicates_suppressed=N` in the stop line.
fn suppressed_in_log(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("Forward source stopped."))
        .filter_map(|l| l.split("duplicates_suppressed=").nth(1))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .next_back()
        .unwrap_or_else(|| panic!("no stop line with duplicates_suppressed:\n{log}"))
}

/// A daemon that forwards `fw` to `127.0.0.1:next_port` through a disk buffer.
fn collector_config(next_port: u16) -> String {
    format!(
        "data_dir = \"$DIR/data\"\nshutdown_timeout_secs = 20\n\
         [sources.fw]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n\
         [sinks.next]\ntype = \"forward\"\ninputs = [\"fw\"]\n\
         servers = [\"127.0.0.1:{next_port}\"]\nack_timeout_secs = 5\n\
         buffer = {{ type = \"disk\" }}\n"
    )
}

/// The next hop: a forward source on `port` writing `$DIR/out.json`.
fn next_hop(dir: &Path, port: u16) -> Daemon {
    Daemon::start(
        dir,
        &format!(
            "[sources.fw]\ntype = \"forward\"\naddress = \"127.0.0.1:{port}\"\n\
             [sinks.out]\ntype = \"file\"\ninputs = [\"fw\"]\npath = \"$DIR/out.json\"\nencoding = \"json\"\n"
        ),
    )
}

#[test]
fn a_chunk_sent_again_is_acked_each_time_and_stored_once() {
    let mut fw = Fw::start("");
    let request = packed("dup", "dup", 10, Some("dup-chunk"));
    let want = ack_bytes("dup-chunk");
    // Twice in one write: the second copy finds the first in flight (or just
    // delivered); both are acked, in order.
    let mut s = connect(fw.addr);
    s.write_all(&[request.clone(), request.clone()].concat())
        .unwrap();
    for _ in 0..2 {
        assert_eq!(read_exact_within(&mut s, want.len(), ACK_WAIT), want);
    }
    drop(s);
    // Once more after its ack, on another connection: remembered.
    send_acked(fw.addr, &request, "dup-chunk");
    let lines = fw.stop_and_read();
    assert_eq!(lines.len(), 10, "one copy of the chunk");
    assert_eq!(suppressed_in_log(&fw.d.stderr()), 2);
    assert!(
        fw.d.stderr().contains("duplicates_suppressed=2"),
        "{}",
        fw.d.stderr()
    );
}

#[test]
fn with_the_window_off_a_resent_chunk_is_stored_again() {
    let mut fw = Fw::start("dedupe_window = { max_chunks = 0 }");
    let request = packed("dup", "dup", 10, Some("dup-chunk"));
    send_acked(fw.addr, &request, "dup-chunk");
    send_acked(fw.addr, &request, "dup-chunk");
    assert_eq!(fw.stop_and_read().len(), 20);
    assert_eq!(suppressed_in_log(&fw.d.stderr()), 0);
}

/// The next hop is down, so the first copy stays in flight (no disk buffer:
/// a memory buffer holds it); a resend on another connection is not emitted
/// and both get their ack once the next hop has the one copy.
#[test]
fn a_resend_while_the_first_copy_is_in_flight_waits_for_its_ack() {
    let next_port = free_port();
    let mut collector = Fw::with_sinks(
        "",
        &format!(
            "[sinks.next]\ntype = \"forward\"\ninputs = [\"fw\"]\n\
             servers = [\"127.0.0.1:{next_port}\"]\nack_timeout_secs = 5\n"
        ),
    );
    let request = packed("fly", "fly", 10, Some("fly-chunk"));
    let mut first = connect(collector.addr);
    first.write_all(&request).unwrap();
    let mut second = connect(collector.addr);
    second.write_all(&request).unwrap();
    assert_silent(&mut second, Duration::from_secs(2), "ack before delivery");

    let dir = tempfile::tempdir().unwrap();
    let mut next = next_hop(dir.path(), next_port);
    let want = ack_bytes("fly-chunk");
    for s in [&mut first, &mut second] {
        assert_eq!(read_exact_within(s, want.len(), ACK_WAIT), want);
    }
    drop((first, second));
    assert!(collector.d.stop().success());
    assert!(next.stop().success());
    assert_eq!(read_json_lines(&dir.path().join("out.json")).len(), 10);
    assert_eq!(suppressed_in_log(&collector.d.stderr()), 1);
}

/// The chunk is acked once the disk buffer has it (its next hop is down, so it
/// stays there); sluice is SIGKILLed, restarted on the same data dir, and the
/// client, which never saw that ack, resends: acked from the journal, not
/// stored again; the next hop, once up, gets the one copy.
#[test]
fn a_resend_after_a_kill_is_recognised_from_the_journal() {
    let next_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = collector_config(next_port);
    let request = packed("kill", "kill", 10, Some("kill-chunk"));

    let first = Daemon::start(dir.path(), &config);
    let addr = bound_addrs(&first, 1)[0];
    send_acked(addr, &request, "kill-chunk");
    first.signal(libc::SIGKILL);
    let mut first = first;
    first.wait(Duration::from_secs(10));

    let mut second = Daemon::start(dir.path(), &config);
    let addr = bound_addrs(&second, 1)[0];
    send_acked(addr, &request, "kill-chunk");

    let hop_dir = tempfile::tempdir().unwrap();
    let mut next = next_hop(hop_dir.path(), next_port);
    let out = hop_dir.path().join("out.json");
    wait_until(Duration::from_secs(40), "the chunk at the next hop", || {
        read_json_lines(&out).len() >= 10
    });
    assert!(second.stop().success(), "{}", second.stderr());
    assert!(next.stop().success());
    let lines = read_json_lines(&out);
    assert_eq!(lines.len(), 10, "exactly one copy");
    assert_eq!(lines[3]["message"], "kill 3");
    assert_eq!(suppressed_in_log(&second.stderr()), 1);
}

/// The moment the journal alone cannot cover: the chunk is durable in the disk
/// buffer and sluice dies before its id is journaled (`SLUICE_FAULT` kills it
/// with SIGKILL exactly there; a `kill -9` from outside cannot be aimed at
/// it). The client never saw the ack and resends after the restart: the id is
/// found with the chunk's records in the disk buffer, acked, not stored again.
#[test]
fn a_resend_after_a_kill_between_the_disk_append_and_the_journal_is_recognised() {
    use std::os::unix::process::ExitStatusExt;
    let next_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let config = collector_config(next_port);
    let request = packed("gap", "gap", 10, Some("gap-chunk"));

    let mut first = Daemon::start_with(
        dir.path(),
        &config,
        &[("SLUICE_FAULT", "before_chunk_journal")],
    );
    let addr = bound_addrs(&first, 1)[0];
    let mut s = connect(addr);
    s.write_all(&request).unwrap();
    let status = first.wait(Duration::from_secs(30));
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{}", first.stderr());
    assert!(first.stderr().contains("SLUICE_FAULT=before_chunk_journal"));
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut rest);
    assert!(rest.is_empty(), "no ack before the kill: {rest:?}");
    let journal = dir.path().join("data/forward_source/fw/chunks.cur");
    assert_eq!(
        std::fs::read(&journal).unwrap(),
        b"SLCHUNK1",
        "id not journaled"
    );

    let mut second = Daemon::start(dir.path(), &config);
    let addr = bound_addrs(&second, 1)[0];
    send_acked(addr, &request, "gap-chunk");

    let hop_dir = tempfile::tempdir().unwrap();
    let mut next = next_hop(hop_dir.path(), next_port);
    let out = hop_dir.path().join("out.json");
    wait_until(Duration::from_secs(40), "the chunk at the next hop", || {
        read_json_lines(&out).len() >= 10
    });
    assert!(second.stop().success(), "{}", second.stderr());
    assert!(next.stop().success());
    let lines = read_json_lines(&out);
    assert_eq!(lines.len(), 10, "exactly one copy");
    assert_eq!(lines[3]["message"], "gap 3");
    assert_eq!(suppressed_in_log(&second.stderr()), 1);
}

/// `sluice_component_dedupe_window_chunks` of source `fw`.
fn remembered(api: SocketAddr) -> u64 {
    let (status, body) = get(api, "/metrics");
    assert_eq!(status, 200);
    body.lines()
        .find(|l| {
            l.starts_with("sluice_component_dedupe_window_chunks{")
                && l.contains("component_id=\"fw\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no dedupe_window_chunks for fw:\n{body}"))
}

#[test]
fn the_window_keeps_at_most_max_chunks_ids_and_forgets_the_oldest() {
    const CAP: u64 = 50;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(
        dir.path(),
        &format!(
            "data_dir = \"$DIR/data\"\n[api]\naddress = \"127.0.0.1:0\"\n\
             [sources.fw]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n\
             dedupe_window = {{ max_chunks = {CAP}, max_age_secs = 3600 }}\n\
             [sinks.out]\ntype = \"file\"\ninputs = [\"fw\"]\npath = \"$DIR/out.json\"\n\
             encoding = \"json\"\nbuffer = {{ type = \"disk\" }}\n"
        ),
    );
    let addr = bound_addrs(&d, 1)[0];
    let api = api_addr(&d);
    let id = |i: u64| format!("win-{i:03}");
    let mut s = connect(addr);
    for i in 0..200 {
        s.write_all(&packed("win", &id(i), 1, Some(&id(i))))
            .unwrap();
        let want = ack_bytes(&id(i));
        assert_eq!(read_exact_within(&mut s, want.len(), ACK_WAIT), want);
        if i % 10 == 9 {
            let n = remembered(api);
            assert!(n <= CAP, "{n} ids remembered after {} chunks", i + 1);
        }
    }
    assert_eq!(remembered(api), CAP);
    // The newest is remembered, the oldest forgotten (stored again).
    send_acked(addr, &packed("win", &id(199), 1, Some(&id(199))), &id(199));
    send_acked(addr, &packed("win", &id(0), 1, Some(&id(0))), &id(0));
    drop(s);
    // The journal holds at most two files of CAP entries.
    let journal = dir.path().join("data/forward_source/fw");
    let on_disk: u64 = ["chunks.old", "chunks.cur"]
        .iter()
        .map(|f| std::fs::metadata(journal.join(f)).unwrap().len())
        .sum();
    let entry = (1 + id(0).len() + 8 + 4) as u64;
    assert!(on_disk <= 2 * (8 + CAP * entry), "journal {on_disk} bytes");
    assert!(d.stop().success());
    let lines = read_json_lines(&dir.path().join("out.json"));
    assert_eq!(lines.len(), 201);
    let zero = lines.iter().filter(|l| l["message"] == "win-000 0").count();
    assert_eq!(zero, 2, "the forgotten id was stored again");
    assert_eq!(suppressed_in_log(&d.stderr()), 1);
}

#[test]
fn dedupe_window_mistakes_are_reported_at_their_key() {
    let source = "[sources.fw]\ntype = \"forward\"\naddress = \"127.0.0.1:24224\"\n";
    let sink = "[sinks.n]\ntype = \"null\"\ninputs = [\"fw\"]\n";
    let (ok, err) = crate::forward::validate(&format!(
        "{source}dedupe_window = {{ max_chunks = 20000000 }}\n{sink}"
    ));
    assert!(!ok);
    assert!(err.contains("sources.fw.dedupe_window"), "{err}");
    let (ok, err) = crate::forward::validate(&format!(
        "{source}dedupe_window = {{ max_chunk = 10 }}\n{sink}"
    ));
    assert!(!ok);
    assert!(err.contains("max_chunk"), "{err}");
    let (ok, err) = crate::forward::validate(&format!(
        "{source}dedupe_window = {{ max_chunks = 0, max_age_secs = 60 }}\n{sink}"
    ));
    assert!(ok, "0 disables: {err}");
}
