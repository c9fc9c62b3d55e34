//! Disk buffers end to end: the real `sluice` binary with a file sink that cannot
//! write yet (its path is a directory), `kill -9`, restarts, `when_full`
//! policies with counters matching what is missing, `sluice buffer inspect` and
//! `replay`; and at library level, when sources' acknowledgements resolve.
//!
//! A file per scenario: `restart.rs` (kill -9, store-on-failure, a torn tail),
//! `when_full.rs` (the three policies, with a file sink and with Kafka),
//! `cli.rs` (`sluice buffer inspect` and `replay`), `acks.rs` (when sources'
//! acknowledgements resolve, and the keys that need a disk buffer). The helpers
//! below are shared with `disk_buffer_headline.rs`, `disk_buffer_stop.rs` and
//! `kafka_exactly_once.rs`.

mod acks;
mod cli;
mod restart;
mod when_full;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{Daemon, file_len, line, sluice_bin, wait_until};

/// Bytes one standard test line (99 digits, newline stripped) takes in a record,
/// beyond the first event of the record: flags, time, length, body.
const ENCODED_LINE: u64 = 1 + 8 + 1 + 99;

fn config(extra_buffer: &str) -> String {
    format!(
        r#"
        data_dir = "$DIR/data"
        shutdown_timeout_secs = 6
        [sources.p]
        type = "pipe"
        path = "$DIR/in.fifo"
        [sinks.f]
        type = "file"
        inputs = ["p"]
        path = "$DIR/out.log"
        [sinks.f.buffer]
        type = "disk"
        {extra_buffer}
        "#
    )
}

fn buffer_dir(dir: &Path) -> PathBuf {
    dir.join("data/buffers/f")
}

/// Bytes of the buffer's segment files.
fn buffer_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(buffer_dir(dir)) else {
        return 0;
    };
    rd.filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// Write lines `from..to` of the standard stream into the FIFO.
fn feed(dir: &Path, from: u64, to: u64) {
    let fifo = dir.join("in.fifo");
    wait_until(Duration::from_secs(20), "the FIFO", || fifo.exists());
    let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let mut buf = Vec::with_capacity(1 << 20);
    for i in from..to {
        buf.extend_from_slice(line(i).as_bytes());
        if buf.len() >= 1 << 20 {
            w.write_all(&buf).unwrap();
            buf.clear();
        }
    }
    w.write_all(&buf).unwrap();
}

/// The line numbers in the output file, in file order.
fn delivered(dir: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(dir.join("out.log")).unwrap_or_default();
    text.lines()
        .map(|l| l.parse::<u64>().expect("a standard line"))
        .collect()
}

/// A counter from the "Disk buffer closed (...)" line of a log.
pub(crate) fn closed_counter(log: &str, name: &str) -> u64 {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("Disk buffer closed"))
        .unwrap_or_else(|| panic!("no close report in:\n{log}"));
    let key = format!("{name}=");
    let at = line
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {line}"))
        + key.len();
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// The sink cannot write: its path is a directory.
fn block_sink(dir: &Path) {
    std::fs::create_dir_all(dir.join("out.log")).unwrap();
}

fn unblock_sink(dir: &Path) {
    std::fs::remove_dir(dir.join("out.log")).unwrap();
}

/// Wait until source `id` made `n` events (read from `/metrics`; the config
/// needs `[api] address = "127.0.0.1:0"`).
fn wait_source_read(d: &Daemon, id: &str, n: u64) {
    use crate::api::{api_addr, get};
    let addr = api_addr(d);
    let name = "sluice_component_received_events_total";
    let pattern = format!("component_id=\"{id}\"");
    let mut seen = 0;
    wait_until(
        Duration::from_secs(60),
        "the source to read every line",
        || {
            let (_, body) = get(addr, "/metrics");
            seen = body
                .lines()
                .find(|l| l.starts_with(name) && l.contains(&pattern))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0) as u64;
            seen >= n
        },
    );
    assert_eq!(seen, n, "the source made more events than lines sent");
}

fn wait_lines(dir: &Path, n: u64, within: Duration, d: &Daemon) {
    let out = dir.join("out.log");
    let deadline = Instant::now() + within;
    while file_len(&out) < n * 100 {
        assert!(
            Instant::now() < deadline,
            "{} of {n} lines delivered; log:\n{}",
            file_len(&out) / 100,
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run_cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(sluice_bin())
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A stopped sluice whose buffer holds lines 0..n undelivered.
fn stranded_buffer(dir: &Path, n: u64) {
    block_sink(dir);
    let mut d = Daemon::start(dir, &config(""));
    feed(dir, 0, n);
    wait_until(Duration::from_secs(30), "every line in the buffer", || {
        buffer_bytes(dir) >= n * ENCODED_LINE
    });
    assert!(d.stop().success(), "{}", d.stderr());
}

/// Unacknowledged records according to `sluice buffer inspect`.
pub(crate) fn wal_unacked(dir: &Path) -> u64 {
    let (_, out, _) = run_cli(&["buffer", "inspect", dir.to_str().unwrap()]);
    out.lines()
        .find_map(|l| l.strip_prefix("unacked records:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("no unacked line in {out}"))
}
