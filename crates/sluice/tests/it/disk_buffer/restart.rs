//! A disk buffer across failures: `kill -9` before delivery, a sink that fails
//! and recovers, a torn tail on disk.

use std::io::Write;
use std::time::Duration;

use super::{
    ENCODED_LINE, block_sink, buffer_bytes, buffer_dir, closed_counter, config, delivered, feed,
    stranded_buffer, unblock_sink, wait_lines,
};
use crate::common::{Daemon, wait_until};

#[test]
fn kill_9_before_delivery_loses_nothing_and_restart_delivers_in_order() {
    const N: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    block_sink(dir.path());
    let mut d = Daemon::start(dir.path(), &config(""));
    feed(dir.path(), 0, N);
    wait_until(Duration::from_secs(30), "every line in the buffer", || {
        buffer_bytes(dir.path()) >= N * ENCODED_LINE
    });
    assert!(d.stderr().contains("Writing failed"), "{}", d.stderr());
    d.child.kill().unwrap();
    d.child.wait().unwrap();

    unblock_sink(dir.path());
    let mut d = Daemon::start(dir.path(), &config(""));
    wait_lines(dir.path(), N, Duration::from_secs(60), &d);
    // New lines after the backlog.
    feed(dir.path(), N, N + 1000);
    wait_lines(dir.path(), N + 1000, Duration::from_secs(30), &d);
    assert!(d.stop().success(), "{}", d.stderr());
    let log = d.stderr();
    assert!(log.contains("unacked_records="), "{log}");
    let got = delivered(dir.path());
    assert_eq!(
        got,
        (0..N + 1000).collect::<Vec<_>>(),
        "every line once, in order"
    );
    assert!(closed_counter(&log, "replayed_records") > 0, "{log}");
    assert_eq!(closed_counter(&log, "dropped_events"), 0);
}

#[test]
fn store_on_failure_delivers_the_backlog_in_order_when_the_sink_recovers() {
    const N: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    block_sink(dir.path());
    let mut d = Daemon::start(dir.path(), &config(""));
    feed(dir.path(), 0, N);
    wait_until(Duration::from_secs(30), "the sink to fail", || {
        d.stderr().contains("Writing failed")
    });
    // A failed batch is retried from the buffer: once the sink works again the
    // retry is a redelivery, counted below.
    unblock_sink(dir.path());
    feed(dir.path(), N, 2 * N);
    wait_lines(dir.path(), 2 * N, Duration::from_secs(60), &d);
    assert!(d.stop().success(), "{}", d.stderr());
    let log = d.stderr();
    assert_eq!(
        delivered(dir.path()),
        (0..2 * N).collect::<Vec<_>>(),
        "in order, once"
    );
    assert!(
        closed_counter(&log, "redelivered_events") > 0,
        "retries are counted:\n{log}"
    );
    assert_eq!(closed_counter(&log, "unacked_records"), 0);
}

#[test]
fn a_torn_tail_is_cut_with_a_log_line_and_the_rest_is_delivered() {
    const N: u64 = 3000;
    let dir = tempfile::tempdir().unwrap();
    stranded_buffer(dir.path(), N);
    let seg = buffer_dir(dir.path()).join("00000000000000000000.seg");
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[0xde, 0xad, 0xbe, 0xef, 0x01]).unwrap();
    drop(f);
    unblock_sink(dir.path());
    let mut d = Daemon::start(dir.path(), &config(""));
    wait_lines(dir.path(), N, Duration::from_secs(30), &d);
    assert!(d.stop().success(), "{}", d.stderr());
    assert!(
        d.stderr().contains("torn or corrupt tail cut off"),
        "{}",
        d.stderr()
    );
    assert_eq!(delivered(dir.path()), (0..N).collect::<Vec<_>>());
}
