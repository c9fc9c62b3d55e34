//! Hostile input next to a well-behaved client: only the offending connection
//! closes, and memory stays bounded.

use super::*;

/// Hostile input (every `bad/` vector, a gzip bomb of valid entries, random bytes,
/// a slowloris sender, 5,000 idle connections) while a well-behaved client keeps being served; each bad
/// connection is closed without an ack and logged; peak RSS stays under 150 MiB.
#[test]
fn hostile_input_closes_only_its_connection_and_memory_stays_bounded() {
    raise_fd_limit(12_000);
    let mut fw = Fw::with_sinks(
        "[sources.fw.limits]\nidle_timeout_secs = 3\nmax_connections = 6000\nmax_decompressed_bytes = 16777216",
        "[sinks.out]\ntype = \"null\"\ninputs = [\"fw\"]\n",
    );
    let pid = fw.d.child.id();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let steady = steady_client(fw.addr, stop.clone());

    // Policy: these two are accepted (float time as seconds + fraction; tag kept as bytes).
    let accepted = ["time_float_message.bin", "tag_invalid_utf8.bin"];
    let mut rejected = 0;
    let mut names: Vec<_> = std::fs::read_dir(testdata().join("bad"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for p in &names {
        let name = p.file_name().unwrap().to_str().unwrap();
        let mut s = connect(fw.addr);
        // The server may close before it has read everything: a failed write is fine.
        let _ = s.write_all(&std::fs::read(p).unwrap());
        let _ = s.shutdown(Shutdown::Write);
        let got = read_to_close(&mut s, Duration::from_secs(20));
        assert!(got.is_empty(), "{name}: server answered {got:02x?}");
        if !accepted.contains(&name) {
            rejected += 1;
        }
    }
    // A gzip bomb of valid entries: ~300 KiB inflating to 256 MiB, with a chunk.
    let bomb = {
        use std::io::Write as _;
        let mut entry = Vec::new();
        let mut one = PackedForwardBuilder::new(&b"bomb"[..]);
        one.push(
            EventTime::new(1_700_000_000, 0),
            &Value::Map(vec![(Value::from("message"), Value::from("x".repeat(100)))]),
        );
        let len = one.payload_len();
        let single = one.finish(None, Compression::None);
        // The entry is the bin payload: after the array marker, the tag and the bin8 header.
        entry.extend_from_slice(&single[1 + 5 + 2..1 + 5 + 2 + len]);
        assert_eq!(entry[0], 0x92, "an entry array");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let mut inflated = 0;
        let block = entry.repeat(8192);
        while inflated < 256 << 20 {
            gz.write_all(&block).unwrap();
            inflated += block.len();
        }
        let payload = gz.finish().unwrap();
        let mut req = vec![0x93, 0xa4];
        req.extend_from_slice(b"bomb");
        req.push(0xc6);
        req.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        req.extend_from_slice(&payload);
        req.extend_from_slice(b"\x82\xaacompressed\xa4gzip\xa5chunk\xa4bomb");
        req
    };
    let mut s = connect(fw.addr);
    let _ = s.write_all(&bomb);
    let _ = s.shutdown(Shutdown::Write);
    assert!(
        read_to_close(&mut s, Duration::from_secs(30)).is_empty(),
        "gzip bomb acked"
    );
    rejected += 1;

    // Random bytes (seeded xorshift), a few connections of 256 KiB each.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..4 {
        let data: Vec<u8> = (0..256 * 1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut s = connect(fw.addr);
        let _ = s.write_all(&data);
        let _ = s.shutdown(Shutdown::Write);
        assert!(read_to_close(&mut s, Duration::from_secs(20)).is_empty());
        rejected += 1;
    }
    // Slowloris: one byte every 200 ms of a valid request never completes in time.
    let mut slow = connect(fw.addr);
    let frame = packed("slow", "slow", 100, Some("slow"));
    let started = Instant::now();
    let mut closed = false;
    for b in &frame {
        if slow.write_all(std::slice::from_ref(b)).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        if started.elapsed() > Duration::from_secs(15) {
            break;
        }
    }
    if !closed {
        assert!(
            read_to_close(&mut slow, Duration::from_secs(10)).is_empty(),
            "slowloris"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "slowloris connection lived {:?}",
        started.elapsed()
    );
    rejected += 1;

    // 5,000 idle connections at once.
    let idle: Vec<TcpStream> = (0..5000)
        .map(|_| TcpStream::connect(fw.addr).expect("idle connection"))
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (_, rss_idle) = rss_kib(pid);
    // The steady client is still served while they are open.
    let mut s = connect(fw.addr);
    s.write_all(&packed("late", "late", 5, Some("late")))
        .unwrap();
    let want = ack_bytes("late");
    assert_eq!(
        read_exact_within(&mut s, want.len(), Duration::from_secs(20)),
        want
    );
    drop(idle);

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = steady.join().expect("steady client");
    assert!(acked > 10, "the steady client got only {acked} acks");
    let (peak, _) = rss_kib(pid);
    eprintln!(
        "forward hostile test: peak RSS {} MiB, RSS with 5000 idle connections {} MiB",
        peak / 1024,
        rss_idle / 1024
    );
    assert!(peak < 150 * 1024, "peak RSS {} MiB", peak / 1024);
    let st = fw.d.stop();
    assert!(st.success());
    let log = fw.d.stderr();
    let logged = log
        .lines()
        .filter(|l| l.contains("connection closed") && l.contains("peer=127.0.0.1:"))
        .count();
    assert!(
        logged >= rejected,
        "{logged} close lines for {rejected} bad connections:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    assert!(
        log.contains("gzip payload inflates past the 16777216-byte limit"),
        "{log}"
    );
}
