//! `exactly_once = true` on the Kafka sink (Apache Kafka, transactions): what a
//! `read_committed` reader sees through kill -9, a broker outage and a zombie
//! producer. Visibility is checked by reading, never by configuration.
//!
//! The client never resends an unacknowledged chunk: a resent chunk that was in
//! fact stored is a duplicate only forward chunk de-duplication removes (issue
//! 17 item 1). So here every event appears at most once by construction of the
//! input, and a duplicate in Kafka can only come from the sink.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::{Daemon, wait_until};
use crate::disk_buffer::wal_unacked;
use crate::kafka_support::{Broker, Rec, consume_with, free_port, need_kafka};

const PER_REQUEST: u64 = 500;

fn request(req: u64, chunk: &str) -> Vec<u8> {
    use proto::forward::{Compression, EventTime, PackedForwardBuilder};
    let mut b = PackedForwardBuilder::new(&b"eo"[..]);
    for i in 0..PER_REQUEST {
        let id = req * PER_REQUEST + i;
        let rec = rmpv::Value::Map(vec![(
            rmpv::Value::from("message"),
            rmpv::Value::from(format!("e{id:09}")),
        )]);
        b.push(EventTime::new(1_700_000_000, 0), &rec);
    }
    b.finish(Some(chunk.as_bytes()), Compression::None).to_vec()
}

/// A forward client with chunk acks: `requests` requests of [`PER_REQUEST`]
/// events at `rate` events/s, at most 8 awaiting their ack. When the
/// connection breaks it reconnects and goes on with the *next* request: the
/// unacknowledged ones are not resent. Returns per request whether it was
/// acknowledged.
fn client(addr: std::net::SocketAddr, requests: u64, rate: f64) -> Vec<bool> {
    use std::collections::VecDeque;
    use std::io::Read;
    use std::net::TcpStream;
    use std::sync::mpsc;

    use proto::forward::{Response, ResponseDecoder};
    let mut acked = vec![false; requests as usize];
    let mut next = 0u64;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(300);
    while next < requests {
        assert!(Instant::now() < deadline, "client did not finish");
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        s.set_nodelay(true).unwrap();
        let mut reader = s.try_clone().unwrap();
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let acks = std::thread::spawn(move || {
            let mut dec = ResponseDecoder::new();
            let mut buf = bytes::BytesMut::new();
            let mut tmp = vec![0u8; 4096];
            loop {
                match dec.decode(&mut buf) {
                    Ok(Some(Response::Ack(a))) => {
                        if tx.send(a.to_vec()).is_err() {
                            return;
                        }
                        continue;
                    }
                    Ok(Some(_)) | Err(_) => return,
                    Ok(None) => {}
                }
                match reader.read(&mut tmp) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&tmp[..n]),
                }
            }
        });
        let mut inflight: VecDeque<(u64, String)> = VecDeque::new();
        loop {
            while inflight.len() < 8 && next < requests {
                let req = next;
                next += 1;
                let due = start + Duration::from_secs_f64((req * PER_REQUEST) as f64 / rate);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let chunk = format!("c{req}");
                if s.write_all(&request(req, &chunk)).is_err() {
                    break;
                }
                inflight.push_back((req, chunk));
            }
            let Some((req, chunk)) = inflight.front().cloned() else {
                break;
            };
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(a) => {
                    assert_eq!(a, chunk.as_bytes(), "acks come in request order");
                    acked[req as usize] = true;
                    inflight.pop_front();
                }
                Err(_) => break,
            }
        }
        let _ = s.shutdown(std::net::Shutdown::Both);
        let _ = acks.join();
    }
    acked
}

fn config(port: u16, brokers: &str, topic: &str) -> String {
    format!(
        r#"
        data_dir = "$DIR/data"
        shutdown_timeout_secs = 20
        [sources.fw]
        type = "forward"
        address = "127.0.0.1:{port}"
        [sinks.k]
        type = "kafka"
        inputs = ["fw"]
        brokers = "{brokers}"
        topic = "{topic}"
        encoding = "raw"
        exactly_once = true
        checkpoint_topic = "{topic}-checkpoints"
        [sinks.k.librdkafka]
        "reconnect.backoff.max.ms" = 500
        [sinks.k.buffer]
        type = "disk"
        fsync = "interval"
        # Acknowledgements reach the WAL's checkpoint only every 3 s, so a kill
        # finds records committed to Kafka and still unacknowledged in the
        # buffer: the restart must skip them.
        fsync_interval_ms = 3000
        "#
    )
}

fn buffer_dir(dir: &Path) -> PathBuf {
    dir.join("data/buffers/k")
}

fn read_committed(addr: &str, topic: &str, expect: usize) -> Vec<Rec> {
    consume_with(
        addr,
        &[topic],
        expect,
        Duration::from_secs(60),
        &[("isolation.level", "read_committed")],
    )
}

/// Occurrences of each event id in `recs`.
fn occurrences(recs: &[Rec]) -> HashMap<u64, u32> {
    let mut seen = HashMap::new();
    for r in recs {
        let text = std::str::from_utf8(&r.value).unwrap();
        let id: u64 = text
            .strip_prefix('e')
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("bad record {text:?}"));
        *seen.entry(id).or_insert(0) += 1;
    }
    seen
}

/// Starts that found buffer records already committed to Kafka.
fn skipping_starts(logs: &[String]) -> usize {
    logs.iter()
        .filter(|l| l.contains("already in Kafka; acknowledging them without producing"))
        .count()
}

#[test]
fn forward_to_kafka_exactly_once_through_four_kill_9_and_a_broker_outage() {
    let kafka = need_kafka!();
    let broker = Broker::start(&kafka);
    broker.create_topic("eo", 3);
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(port, &broker.addr(), "eo");
    let mut d = Daemon::start(dir.path(), &cfg);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    const REQUESTS: u64 = 800; // 400,000 events over ~20 s
    let client = std::thread::spawn(move || client(addr, REQUESTS, 20_000.0));

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("exactly-once fault seed {seed}");
    let mut x = seed | 1;
    let mut rand_ms = |lo: u64, hi: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        Duration::from_millis(lo + x % (hi - lo))
    };
    let mut logs = Vec::new();
    let kill = |d: &mut Daemon, logs: &mut Vec<String>| {
        d.child.kill().unwrap();
        d.child.wait().unwrap();
        logs.push(d.stderr());
        *d = Daemon::start(dir.path(), &cfg);
    };
    std::thread::sleep(rand_ms(2000, 4000));
    kill(&mut d, &mut logs); // 1: while sending
    std::thread::sleep(rand_ms(1500, 3000));
    broker.pause();
    std::thread::sleep(rand_ms(1000, 3000));
    kill(&mut d, &mut logs); // 2: during the outage
    std::thread::sleep(rand_ms(3000, 5000));
    broker.resume();
    std::thread::sleep(rand_ms(1000, 3000));
    kill(&mut d, &mut logs); // 3: replaying the backlog
    std::thread::sleep(rand_ms(2000, 4000));
    kill(&mut d, &mut logs); // 4

    let acked = client.join().unwrap();
    wait_until(
        Duration::from_secs(120),
        "the disk buffer to drain into Kafka",
        || wal_unacked(&buffer_dir(dir.path())) == 0,
    );
    assert!(d.stop().success(), "{}", d.stderr());
    logs.push(d.stderr());

    let recs = read_committed(&broker.addr(), "eo", 1);
    let seen = occurrences(&recs);
    let acked_ids: Vec<u64> = acked
        .iter()
        .enumerate()
        .filter(|(_, ok)| **ok)
        .flat_map(|(req, _)| (req as u64 * PER_REQUEST)..((req as u64 + 1) * PER_REQUEST))
        .collect();
    let missing: Vec<u64> = acked_ids
        .iter()
        .copied()
        .filter(|id| !seen.contains_key(id))
        .collect();
    let duplicated: Vec<(u64, u32)> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(&id, &n)| (id, n))
        .collect();
    eprintln!(
        "exactly-once: {} events acknowledged of {}, {} records read_committed, {} distinct, \
         {} duplicated; starts that skipped committed records: {}",
        acked_ids.len(),
        REQUESTS * PER_REQUEST,
        recs.len(),
        seen.len(),
        duplicated.len(),
        skipping_starts(&logs),
    );
    assert!(
        acked_ids.len() as u64 > REQUESTS * PER_REQUEST / 2,
        "most requests were acknowledged"
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged events missing, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        duplicated.is_empty(),
        "{} events more than once, e.g. {:?}",
        duplicated.len(),
        &duplicated[..duplicated.len().min(10)]
    );
    assert!(
        skipping_starts(&logs) >= 1,
        "no restart found committed records in the buffer: the scenario was not created"
    );
}

/// A producer with the sink's `transactional.id` takes over (fencing sluice,
/// which stops producing with an error), leaves a transaction open, and is
/// fenced in turn by the next start of sluice: its records never become
/// visible to `read_committed`. A second sluice on the same data directory
/// cannot start.
#[test]
fn a_zombie_with_the_same_transactional_id_is_fenced_and_invisible() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _};
    let kafka = need_kafka!();
    let broker = Broker::start(&kafka);
    broker.create_topic("zombie", 1);
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        r#"
        data_dir = "$DIR/data"
        shutdown_timeout_secs = 10
        [sources.p]
        type = "pipe"
        path = "$DIR/in.fifo"
        [sinks.k]
        type = "kafka"
        inputs = ["p"]
        brokers = "{}"
        topic = "zombie"
        encoding = "raw"
        exactly_once = true
        [sinks.k.buffer]
        type = "disk"
        "#,
        broker.addr()
    );
    let fifo = dir.path().join("in.fifo");
    let write = |from: u64, to: u64| {
        wait_until(Duration::from_secs(20), "the FIFO", || fifo.exists());
        let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        let text: String = (from..to).map(|i| format!("e{i:09}\n")).collect();
        w.write_all(text.as_bytes()).unwrap();
    };
    let mut a = Daemon::start(dir.path(), &cfg);
    write(0, 100);
    wait_until(Duration::from_secs(60), "the first 100 events", || {
        read_committed(&broker.addr(), "zombie", 100).len() >= 100
    });
    let id_file = buffer_dir(dir.path()).join("transactional-id");
    let id = format!(
        "sluice-k-{}",
        std::fs::read_to_string(&id_file).unwrap().trim()
    );

    // The zombie: same transactional.id, a transaction left open.
    let mut zc = broker.client_config();
    zc.set("transactional.id", &id);
    let zombie: BaseProducer = zc.create().unwrap();
    zombie.init_transactions(Duration::from_secs(30)).unwrap();
    zombie.begin_transaction().unwrap();
    for i in 0..10 {
        let payload = format!("zombie{i}");
        zombie
            .send(BaseRecord::<(), _>::to("zombie").payload(&payload))
            .unwrap();
    }
    zombie.flush(Duration::from_secs(30)).unwrap();

    // sluice was fenced: its next transaction fails, and it says why.
    write(100, 200);
    wait_until(
        Duration::from_secs(60),
        "sluice to report the fencing",
        || a.stderr().contains("took over"),
    );
    a.child.kill().unwrap();
    a.child.wait().unwrap();

    // The next start fences the zombie, aborting its open transaction, and
    // delivers what the fenced run left in the buffer.
    let mut b = Daemon::start(dir.path(), &cfg);
    let recs = read_committed(&broker.addr(), "zombie", 200);
    assert!(
        zombie.commit_transaction(Duration::from_secs(30)).is_err(),
        "the zombie's commit must fail: it was fenced"
    );
    // A second sluice on the same data directory cannot start.
    let other = tempfile::tempdir().unwrap();
    let same_dir = cfg.replace("$DIR", dir.path().to_str().unwrap());
    let mut c = Daemon::start(other.path(), &same_dir);
    let st = c.wait(Duration::from_secs(30));
    assert!(!st.success(), "a second sluice on the same data dir ran");
    assert!(
        c.stderr().contains("locked"),
        "the second sluice should name the lock: {}",
        c.stderr()
    );
    let values: Vec<String> = recs
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect();
    assert!(
        !values.iter().any(|v| v.starts_with("zombie")),
        "the zombie's records are visible to read_committed"
    );
    let seen = occurrences(&recs);
    assert_eq!(seen.len(), 200, "every event once: {values:?}");
    assert!(seen.values().all(|n| *n == 1), "duplicates: {values:?}");
    assert!(b.stop().success(), "{}", b.stderr());
}

/// The broker crashes (SIGKILL; its log directories kept) for 20 s while
/// events flow, and sluice is SIGKILLed in the middle of the outage: the open
/// transaction dies with the broker, the restarted sluice fences it, and once
/// the broker is back a read_committed reader finds every acknowledged event
/// exactly once.
#[test]
fn exactly_once_through_a_20s_broker_crash_and_a_kill_9_during_it() {
    use crate::kafka_support::{records_in, wait_for};
    let kafka = need_kafka!();
    let mut broker = Broker::start(&kafka);
    broker.create_topic("eo-crash", 1);
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(port, &broker.addr(), "eo-crash");
    let mut d = Daemon::start(dir.path(), &cfg);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    const REQUESTS: u64 = 200; // 100,000 events over ~10 s
    let client = std::thread::spawn(move || client(addr, REQUESTS, 10_000.0));

    // The crash comes once transactions commit (events in Kafka), mid-run.
    wait_for(
        "events in Kafka before the crash",
        Duration::from_secs(60),
        || records_in(&broker.addr(), "eo-crash", 1) >= 10_000,
    );
    broker.kill();
    let outage = Instant::now();
    // sluice keeps taking events into its disk buffer meanwhile; killed once
    // some arrived after the crash.
    let unacked = || wal_unacked(&buffer_dir(dir.path()));
    wait_until(
        Duration::from_secs(30),
        "events buffered during the crash",
        || unacked() > 0,
    );
    let mut logs = Vec::new();
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    logs.push(d.stderr());
    d = Daemon::start(dir.path(), &cfg);
    // The outage itself lasts 20 s.
    std::thread::sleep(Duration::from_secs(20).saturating_sub(outage.elapsed()));
    broker.start_process();
    let outage = outage.elapsed();

    let acked = client.join().unwrap();
    wait_until(
        Duration::from_secs(120),
        "the disk buffer to drain into Kafka",
        || unacked() == 0,
    );
    assert!(d.stop().success(), "{}", d.stderr());
    logs.push(d.stderr());

    let recs = read_committed(&broker.addr(), "eo-crash", 1);
    let seen = occurrences(&recs);
    let acked_ids: Vec<u64> = acked
        .iter()
        .enumerate()
        .filter(|(_, ok)| **ok)
        .flat_map(|(req, _)| (req as u64 * PER_REQUEST)..((req as u64 + 1) * PER_REQUEST))
        .collect();
    let missing = acked_ids.iter().filter(|id| !seen.contains_key(id)).count();
    let duplicated = seen.values().filter(|n| **n > 1).count();
    eprintln!(
        "exactly-once, broker crash of {outage:?}: {} events acknowledged, {} records read_committed, \
         {} distinct, {missing} missing, {duplicated} duplicated",
        acked_ids.len(),
        recs.len(),
        seen.len(),
    );
    assert!(outage >= Duration::from_secs(20));
    assert!(
        acked_ids.len() as u64 > REQUESTS * PER_REQUEST / 2,
        "most requests were acknowledged"
    );
    assert_eq!(missing, 0, "acknowledged events missing");
    assert_eq!(duplicated, 0, "events more than once");
}
