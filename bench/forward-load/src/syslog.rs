//! `forward-load syslog ADDR MESSAGES [--conns K] [--octet]`: MESSAGES syslog
//! lines of 100 bytes (RFC 3164, newline-framed; RFC 5424 octet-counted with
//! `--octet`) written over K TCP connections (default 1) from K threads, in
//! 64 KiB writes. Prints the bytes and the time the writes took; the end to end
//! time is the caller's (it waits for sluice's counter).

use std::io::Write;
use std::net::TcpStream;
use std::time::Instant;

/// One message of exactly 100 bytes on the wire (framing included).
fn message(i: usize, octet: bool) -> Vec<u8> {
    if octet {
        let head = format!("<14>1 2026-12-07T01:37:14.000Z host app 123 - - m{i:09} ");
        // "96 " + 97 bytes of message.
        let mut m = head.into_bytes();
        m.resize(97, b'x');
        let mut out = b"97 ".to_vec();
        out.extend_from_slice(&m);
        out
    } else {
        let mut m = format!("<14>Dec  7 01:37:14 host app[123]: m{i:09} ").into_bytes();
        m.resize(99, b'x');
        m.push(b'\n');
        m
    }
}

pub fn run(args: &[String]) {
    let addr = args[0].clone();
    let total: usize = args[1].parse().expect("MESSAGES");
    let conns = crate::opt(args, "--conns", 1).max(1);
    let octet = args.iter().any(|a| a == "--octet");
    let started = Instant::now();
    let threads: Vec<_> = (0..conns)
        .map(|c| {
            let addr = addr.clone();
            let n = total / conns + usize::from(c < total % conns);
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(&addr).expect("connect");
                let mut buf = Vec::with_capacity(64 << 10);
                let mut bytes = 0;
                for i in 0..n {
                    buf.extend_from_slice(&message(c * n + i, octet));
                    if buf.len() >= 64 << 10 {
                        s.write_all(&buf).expect("write");
                        bytes += buf.len();
                        buf.clear();
                    }
                }
                s.write_all(&buf).expect("write");
                bytes + buf.len()
            })
        })
        .collect();
    let bytes: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "messages={total} conns={conns} bytes={bytes} write_secs={secs:.3} write_mb_per_sec={:.1}",
        bytes as f64 / secs / 1e6
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_message_is_100_bytes_on_the_wire() {
        assert_eq!(super::message(7, false).len(), 100);
        assert_eq!(super::message(7, true).len(), 100);
    }
}
