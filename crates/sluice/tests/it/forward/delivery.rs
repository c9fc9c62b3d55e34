//! Requests in, events and acks out: the shared byte vectors, Python
//! fluent-logger, pipelined chunks, a client that never reads acks, and acks
//! that wait for the next hop (a second sluice, Kafka).

use super::*;

#[test]
fn byte_vectors_produce_their_documented_events_and_acks() {
    // Two vectors (Fluentd str32, text and gzip) carry one chunk id for
    // different payloads: with de-duplication on, the second would be acked as a
    // resend of the first (tests/it/forward_dedupe.rs covers that behaviour).
    let mut fw = Fw::start("dedupe_window = { max_chunks = 0 }");
    let expected: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(testdata().join("expected.json")).unwrap())
            .unwrap();
    let mut want = Vec::new();
    for entry in &expected {
        let file = entry["file"].as_str().unwrap();
        let requests: Vec<&serde_json::Value> = match entry["kind"].as_str().unwrap() {
            "request" if file.ends_with(".bin") => vec![entry],
            "stream" | "captured" => entry["requests"].as_array().unwrap().iter().collect(),
            _ => continue,
        };
        for r in requests {
            if let (Some(tag), Some(events)) = (r["tag"].as_str(), r["events"].as_array()) {
                want.extend(events.iter().map(|e| expected_line(tag, e)));
            }
        }
        let bytes = std::fs::read(testdata().join(file)).unwrap();
        let mut s = connect(fw.addr);
        s.write_all(&bytes).unwrap();
        if let Some(resp) = entry["expected_response"].as_str() {
            let ack = std::fs::read(testdata().join(resp)).unwrap();
            let got = read_exact_within(&mut s, ack.len(), Duration::from_secs(20));
            assert_eq!(got, ack, "{file}: ack");
        }
        s.shutdown(Shutdown::Write).unwrap();
        let rest = read_to_close(&mut s, Duration::from_secs(20));
        assert!(rest.is_empty(), "{file}: unexpected bytes {rest:02x?}");
    }
    // UDP heartbeat on the same port.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let ping = std::fs::read(testdata().join("heartbeat/udp_request.bin")).unwrap();
    udp.send_to(&ping, fw.addr).unwrap();
    let mut b = [0u8; 16];
    let (n, from) = udp.recv_from(&mut b).expect("UDP heartbeat reply");
    assert_eq!(
        (&b[..n], from),
        (
            &std::fs::read(testdata().join("heartbeat/udp_response.bin")).unwrap()[..],
            fw.addr
        )
    );

    let got = fw.stop_and_read();
    assert_eq!(sorted(got), sorted(want));
}

#[test]
fn python_fluent_logger_records_arrive_with_tag_time_and_fields() {
    let mut fw = Fw::start("");
    let script = crate::common::manifest_dir().join("tests/it/forward_fluent_logger.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(fw.addr.port().to_string())
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "fluent-logger client failed (install it: python3 -m pip install fluent-logger): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(Duration::from_secs(20), "103 events", || {
        read_json_lines(&fw.out()).len() >= 103
    });
    let got = fw.stop_and_read();
    assert_eq!(got.len(), 103);
    let by_tag = |t: &str| got.iter().filter(|e| e["tag"] == t).collect::<Vec<_>>();
    let int = by_tag("py.int");
    assert_eq!(int.len(), 1);
    assert_eq!(int[0]["time"], "2023-11-14T22:13:20.000000000Z");
    assert_eq!(
        (&int[0]["message"], &int[0]["n"]),
        (&json!("int time"), &json!(1))
    );
    let nano = by_tag("py.nano");
    assert_eq!(nano[0]["time"], "2023-11-14T22:13:20.500000000Z");
    assert_eq!(nano[0]["nested"], json!({"ok": true}));
    let float = by_tag("py.float");
    assert_eq!(float[0]["time"], "2023-11-14T22:13:21.250000000Z");
    let mut many: Vec<i64> = by_tag("py.many")
        .iter()
        .map(|e| e["i"].as_i64().unwrap())
        .collect();
    many.sort();
    assert_eq!(many, (0..100).collect::<Vec<_>>());
}

#[test]
fn pipelined_chunks_are_acked_in_request_order() {
    let mut fw = Fw::start("");
    let mut s = connect(fw.addr);
    let ids: Vec<String> = (0..20).map(|i| format!("chunk-{i:02}")).collect();
    let mut all = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        all.extend(packed("pipe", &format!("c{i}"), 50, Some(id)));
    }
    s.write_all(&all).unwrap();
    for id in &ids {
        let want = ack_bytes(id);
        assert_eq!(
            read_exact_within(&mut s, want.len(), Duration::from_secs(20)),
            want,
            "ack order"
        );
    }
    drop(s);
    assert_eq!(fw.stop_and_read().len(), 20 * 50);
}

/// A client that sends chunks and never reads its acks does not stall the
/// connection's read loop while the acks fit the socket buffers (beyond that the
/// writer gives up after 30 s and closes).
#[test]
fn a_client_that_never_reads_acks_is_still_served() {
    let mut fw = Fw::start("");
    let mut s = connect(fw.addr);
    for i in 0..300 {
        s.write_all(&packed("deaf", "deaf", 10, Some(&format!("deaf-{i:04}"))))
            .unwrap();
    }
    let out = fw.out();
    wait_until(
        Duration::from_secs(30),
        "3,000 events from a deaf client",
        || read_json_lines(&out).len() >= 3000,
    );
    drop(s);
    assert_eq!(fw.stop_and_read().len(), 3000);
}

/// A collector whose sink cannot deliver yet (a forward sink to ports nobody
/// listens on) must not ack; once the next hop is up (the sink's second server),
/// the ack comes, after the event is in the next hop's file. Also: sluice forward
/// sink → source with gzip and failover.
#[test]
fn ack_waits_for_the_next_hop_to_deliver() {
    let next_port = free_port();
    let dead_port = free_port();
    // The first server never answers: failover to the second, gzip'd requests.
    let collector = Fw::with_sinks(
        "",
        &format!(
            "[sinks.next]\ntype = \"forward\"\ninputs = [\"fw\"]\n\
             servers = [\"127.0.0.1:{dead_port}\", \"127.0.0.1:{next_port}\"]\n\
             compression = \"gzip\"\nack_timeout_secs = 5\n"
        ),
    );
    let mut s = connect(collector.addr);
    s.write_all(&packed("hop", "hop", 10, Some("hop-chunk")))
        .unwrap();
    assert_silent(
        &mut s,
        Duration::from_secs(3),
        "ack before the next hop exists",
    );

    let dir = tempfile::tempdir().unwrap();
    let mut next = Daemon::start(
        dir.path(),
        &format!(
            "[sources.fw]\ntype = \"forward\"\naddress = \"127.0.0.1:{next_port}\"\n\
             [sinks.out]\ntype = \"file\"\ninputs = [\"fw\"]\npath = \"$DIR/out.json\"\nencoding = \"json\"\n"
        ),
    );
    let want = ack_bytes("hop-chunk");
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        read_exact_within(&mut s, want.len(), Duration::from_secs(40))
    }));
    let got = got.unwrap_or_else(|_| {
        panic!(
            "no ack; collector log:\n{}\nnext hop log:\n{}",
            collector.d.stderr(),
            next.stderr()
        )
    });
    assert_eq!(got, want);
    // The ack means the next hop has it on disk (fsynced) already.
    let lines = read_json_lines(&dir.path().join("out.json"));
    assert_eq!(lines.len(), 10, "events at the next hop when the ack came");
    assert_eq!(lines[0]["tag"], "hop");
    assert_eq!(lines[3]["message"], "hop 3");
    assert!(next.stop().success());
}

/// With a Kafka sink, a chunk is acked only once the broker confirmed it: no ack
/// while the broker is absent (at start) or stopped (mid-run), the ack as soon as
/// it is back, and the records are in the topic by then.
#[test]
fn ack_waits_for_the_kafka_broker() {
    let kafka = need_kafka!();
    let port = free_port();
    let fw = Fw::with_sinks(
        "",
        &format!(
            "[sinks.k]\ntype = \"kafka\"\ninputs = [\"fw\"]\nbrokers = \"127.0.0.1:{port}\"\ntopic = \"fwd\"\n\
             create_topics = {{ partitions = 1 }}\n[sinks.k.librdkafka]\n\"reconnect.backoff.max.ms\" = 500\n"
        ),
    );
    let mut s = connect(fw.addr);
    s.write_all(&packed("k", "before", 5, Some("kafka-1")))
        .unwrap();
    assert_silent(&mut s, Duration::from_secs(3), "ack with no broker yet");
    // SQLite storage: the topic survives the broker's kill.
    let mut broker = Broker::new(&kafka, port);
    broker.start_process();
    let want = ack_bytes("kafka-1");
    assert_eq!(
        read_exact_within(&mut s, want.len(), Duration::from_secs(60)),
        want
    );

    broker.kill();
    s.write_all(&packed("k", "during", 5, Some("kafka-2")))
        .unwrap();
    assert_silent(
        &mut s,
        Duration::from_secs(3),
        "ack with the broker stopped",
    );
    broker.start_process();
    let want = ack_bytes("kafka-2");
    assert_eq!(
        read_exact_within(&mut s, want.len(), Duration::from_secs(60)),
        want
    );

    let recs = consume(&broker.addr(), &["fwd"], 10, Duration::from_secs(5));
    let mut values: Vec<String> = recs
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect();
    values.sort();
    values.dedup();
    let mut want: Vec<String> = ["before", "during"]
        .iter()
        .flat_map(|p| (0..5).map(move |i| format!("{p} {i}")))
        .collect();
    want.sort();
    assert_eq!(values, want);
}
