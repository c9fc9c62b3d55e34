//! Load generator for the forward source (used by `bench/forward.sh`).
//!
//! `forward-load send ADDR EVENTS [--per-frame N] [--record-bytes B] [--window W] [--no-ack]`
//! sends PackedForward requests of N records (~B bytes each, entry included) on
//! one connection. With acks (default) every request carries a chunk and exactly
//! W (default 16) wait for their ack: the next request is written when an ack
//! arrives; latency is measured per request from the end of its write
//! to its ack. With `--no-ack` only the last request carries a chunk, and its ack
//! marks the end. Prints one `key=value` line.
//!
//! `--raw` sends no chunk at all and just closes (for the baseline sink).
//!
//! `forward-load syslog ADDR MESSAGES [--conns K] [--octet]`: syslog over TCP
//! (`bench/syslog.sh`), see `syslog.rs`.
//!
//! `forward-load sink ADDR OUT` is the baseline: accept one connection and copy
//! it to OUT (a file, or /dev/null) without decoding; prints the bytes and time.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{channel, sync_channel};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use proto::forward::{Compression, EventTime, PackedForwardBuilder, Response, ResponseDecoder};
use rmpv::Value;

mod syslog;

const CHUNK_LEN: usize = 24;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("send") => send(&args[2..]),
        Some("sink") => sink(&args[2], &args[3]),
        Some("syslog") => syslog::run(&args[2..]),
        _ => {
            eprintln!(
                "usage: forward-load send ADDR EVENTS [options] | forward-load sink ADDR OUT"
            );
            std::process::exit(2);
        }
    }
}

pub(crate) fn opt(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

/// One request of `n` records of about `record_bytes` (entry included).
fn request(n: usize, record_bytes: usize, chunk: Option<&[u8]>) -> Vec<u8> {
    let mut b = PackedForwardBuilder::new(&b"bench.forward"[..]);
    // Entry overhead: array(1) + EventTime(10) + map(1) + key "message"(8) + str header(2).
    let text: String = "x".repeat(record_bytes.saturating_sub(22).max(1));
    let rec = Value::Map(vec![(Value::from("message"), Value::from(text.as_str()))]);
    for i in 0..n {
        b.push(
            EventTime::new(1_700_000_000 + (i as i64 % 60), i as u32),
            &rec,
        );
    }
    b.finish(chunk, Compression::None).to_vec()
}

/// A request with a placeholder chunk id, and where the id sits, so it can be
/// patched for every request.
fn template(n: usize, record_bytes: usize) -> (Vec<u8>, usize) {
    let placeholder = [b'#'; CHUNK_LEN];
    let frame = request(n, record_bytes, Some(&placeholder));
    let at = frame
        .windows(CHUNK_LEN)
        .rposition(|w| w == placeholder)
        .expect("placeholder in the option map");
    (frame, at)
}

fn send(args: &[String]) {
    let addr = &args[0];
    let events: usize = args[1].parse().expect("EVENTS");
    let per_frame = opt(args, "--per-frame", 1000);
    let record_bytes = opt(args, "--record-bytes", 100);
    let window = opt(args, "--window", 16).max(1);
    let raw = args.iter().any(|a| a == "--raw");
    let no_ack = raw || args.iter().any(|a| a == "--no-ack");
    let frames = events.div_ceil(per_frame);
    let (mut frame, at) = template(per_frame, record_bytes);
    let plain = request(per_frame, record_bytes, None);
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).unwrap();
    let mut reader = stream.try_clone().unwrap();
    let (tx, rx) = channel::<([u8; CHUNK_LEN], Instant)>();
    // Exactly `window` requests await their ack: one permit per request
    // written, given back when its ack arrives.
    let (permit_tx, permits) = sync_channel::<()>(window);
    for _ in 0..window {
        permit_tx.send(()).expect("room for every permit");
    }
    let acks = std::thread::spawn(move || {
        let mut dec = ResponseDecoder::new();
        let mut buf = BytesMut::with_capacity(64 << 10);
        let mut lat_us: Vec<u32> = Vec::new();
        let mut tmp = vec![0u8; 64 << 10];
        while let Ok((id, sent)) = rx.recv() {
            let got = loop {
                if let Some(r) = dec.decode(&mut buf).expect("server response") {
                    break r;
                }
                let n = reader.read(&mut tmp).expect("read acks");
                assert!(n > 0, "server closed the connection");
                buf.extend_from_slice(&tmp[..n]);
            };
            match got {
                Response::Ack(a) => assert_eq!(&a[..], &id[..], "acks out of order"),
                other => panic!("unexpected {other:?}"),
            }
            lat_us.push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
            let _ = permit_tx.send(());
        }
        lat_us
    });
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id().rotate_left(16);
    let start = Instant::now();
    let mut wire = 0usize;
    for i in 0..frames {
        let last = i + 1 == frames;
        if (no_ack && !last) || raw {
            stream.write_all(&plain).expect("write");
            wire += plain.len();
            continue;
        }
        permits.recv().expect("ack reader alive");
        // Unique across runs: sluice remembers delivered chunk ids
        // (`dedupe_window`) and would ack a repeated one without storing it.
        let id = format!("{run:08x}{i:016}");
        let mut idb = [0u8; CHUNK_LEN];
        idb.copy_from_slice(id.as_bytes());
        frame[at..at + CHUNK_LEN].copy_from_slice(&idb);
        stream.write_all(&frame).expect("write");
        wire += frame.len();
        tx.send((idb, Instant::now())).expect("ack reader alive");
    }
    drop(tx);
    if raw {
        stream
            .shutdown(std::net::Shutdown::Write)
            .expect("shutdown");
    }
    let mut lat = acks.join().expect("ack reader");
    let secs = start.elapsed().as_secs_f64();
    let sent = frames * per_frame;
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    println!(
        "events={sent} secs={secs:.3} events_per_sec={:.0} wire_mb_per_sec={:.1} acks={} ack_p50_ms={:.2} ack_p99_ms={:.2}",
        sent as f64 / secs,
        wire as f64 / secs / 1e6,
        lat.len(),
        pct(0.5),
        pct(0.99)
    );
}

fn sink(addr: &str, out: &str) {
    let listener = TcpListener::bind(addr).expect("bind");
    println!("listening");
    std::io::stdout().flush().unwrap();
    let (mut s, _) = listener.accept().expect("accept");
    let mut f = std::fs::File::create(out).expect("output");
    let mut buf = vec![0u8; 1 << 20];
    let mut first: Option<Instant> = None;
    let mut total = 0usize;
    loop {
        let n = s.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        first.get_or_insert_with(Instant::now);
        total += n;
        f.write_all(&buf[..n]).expect("write");
    }
    f.sync_all().ok();
    let secs = first.map_or(Duration::ZERO, |t| t.elapsed()).as_secs_f64();
    println!(
        "bytes={total} secs={secs:.3} mb_per_sec={:.1}",
        total as f64 / secs.max(1e-9) / 1e6
    );
}
