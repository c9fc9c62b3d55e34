//! The forward sink: agent → collector over TLS with a collector killed
//! mid-run, and resending the same request after an ack timeout.

use super::*;

/// Agent (exec → forward sink, TLS + shared key) → collector (forward source →
/// file). The collector is killed (SIGKILL) mid-run and started again on the same
/// port: every event arrives at least once.
#[test]
fn agent_to_collector_over_tls_with_a_key_survives_a_collector_kill() {
    const N: u64 = 1_000_000;
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path());
    let c = certs.path().display();
    let port = free_port();
    let collector_dir = tempfile::tempdir().unwrap();
    let collector_cfg = format!(
        "[sources.fw]\ntype = \"forward\"\naddress = \"127.0.0.1:{port}\"\nshared_key = \"k\"\nself_hostname = \"collector\"\n\
         [sources.fw.tls]\ncert_file = \"{c}/server.crt\"\nkey_file = \"{c}/server.key\"\n\
         [sinks.out]\ntype = \"file\"\ninputs = [\"fw\"]\npath = \"$DIR/out.log\"\n"
    );
    let mut collector = Daemon::start(collector_dir.path(), &collector_cfg);
    bound_addrs(&collector, 1);
    let agent_dir = tempfile::tempdir().unwrap();
    let mut agent = Daemon::start(
        agent_dir.path(),
        &format!(
            "shutdown_timeout_secs = 60\n[sources.gen]\ntype = \"exec\"\nrestart = \"never\"\ncommand = {gen}\n\
             [sinks.fwd]\ntype = \"forward\"\ninputs = [\"gen\"]\nservers = [\"localhost:{port}\"]\nshared_key = \"k\"\n\
             self_hostname = \"agent\"\nack_timeout_secs = 10\n[sinks.fwd.tls]\nca_file = \"{c}/ca.crt\"\n",
            gen = crate::common::awk_generator(N)
        ),
    );
    let out = collector_dir.path().join("out.log");
    wait_until(
        Duration::from_secs(120),
        "a third of the events at the collector",
        || file_len(&out) > N * 100 / 3,
    );
    collector.signal(libc::SIGKILL);
    collector.wait(Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(1));
    let mut collector = Daemon::start(collector_dir.path(), &collector_cfg);
    let st = agent.wait(Duration::from_secs(150));
    assert!(st.success(), "agent failed:\n{}", agent.stderr());
    assert!(collector.stop().success());
    let data = std::fs::read(&out).unwrap();
    let mut seen = vec![false; N as usize];
    let mut lines = 0u64;
    for l in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let i: usize = std::str::from_utf8(l)
            .unwrap()
            .parse()
            .expect("a generated line");
        seen[i] = true;
        lines += 1;
    }
    let missing = seen.iter().filter(|s| !**s).count();
    eprintln!(
        "agent → collector: {lines} lines for {N} events ({} duplicates)",
        lines - (N - missing as u64)
    );
    assert_eq!(missing, 0, "events lost");
    let agent_log = agent.stderr();
    assert!(
        agent_log.contains("Connected to forward server."),
        "{agent_log}"
    );
}

/// Reads one whole request from `s` (the bytes as sent, and its chunk id).
fn read_request(s: &mut TcpStream) -> (Vec<u8>, Vec<u8>) {
    let mut dec = proto::forward::Decoder::new(proto::forward::Limits::default());
    let mut buf = BytesMut::new();
    let mut raw = Vec::new();
    loop {
        let mut b = [0u8; 65536];
        let n = s.read(&mut b).expect("read a request");
        assert!(n > 0, "client closed before a whole request");
        raw.extend_from_slice(&b[..n]);
        buf.extend_from_slice(&b[..n]);
        if let Some(r) = dec.decode(&mut buf).expect("a valid request") {
            let proto::forward::Request::Events(f) = r else {
                panic!("not events: {r:?}")
            };
            assert!(buf.is_empty(), "one request at a time");
            return (raw, f.chunk.expect("a chunk id").to_vec());
        }
    }
}

/// The sink resends an unacked request after `ack_timeout_secs` on a new
/// connection, byte for byte with the same chunk id, and finishes once acked.
#[test]
fn sink_resends_the_same_request_after_an_ack_timeout() {
    let fake = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = fake.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Daemon::start(
        dir.path(),
        &format!(
            "[sources.gen]\ntype = \"exec\"\nrestart = \"never\"\ncommand = {gen}\n\
             [sinks.fwd]\ntype = \"forward\"\ninputs = [\"gen\"]\nservers = [\"{addr}\"]\nack_timeout_secs = 1\n",
            gen = crate::common::awk_generator(5)
        ),
    );
    let (mut first, _) = fake.accept().unwrap();
    first
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (raw1, chunk1) = read_request(&mut first);
    // No ack: after a second the agent gives up on this connection.
    let (mut second, _) = fake.accept().unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (raw2, chunk2) = read_request(&mut second);
    assert_eq!(chunk1, chunk2, "same chunk id");
    assert_eq!(raw1, raw2, "same bytes");
    second
        .write_all(&proto::forward::encode_ack(&chunk2))
        .unwrap();
    let st = agent.wait(Duration::from_secs(20));
    assert!(st.success(), "{}", agent.stderr());
    assert!(
        agent
            .stderr()
            .contains("No ack from forward server in time"),
        "{}",
        agent.stderr()
    );
}
