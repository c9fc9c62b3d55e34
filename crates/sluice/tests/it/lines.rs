//! Line sources end to end: pipe and exec into file sinks, byte for byte; a stalled
//! sink does not slow its sibling; SIGTERM loses no line already read.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use crate::common::{Daemon, awk_generator, file_len, lines, wait_until};

const N: u64 = 1_000_000;

#[test]
fn pipe_to_file_million_lines_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(
        dir.path(),
        r#"
        data_dir = "$DIR/data"
        [sources.p]
        type = "pipe"
        path = "$DIR/in.fifo"
        [sinks.f]
        type = "file"
        inputs = ["p"]
        path = "$DIR/out/{source}.log"
        "#,
    );
    let fifo = dir.path().join("in.fifo");
    wait_until(Duration::from_secs(20), "the FIFO", || fifo.exists());
    let expected = lines(N);
    {
        let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        w.write_all(&expected).unwrap();
    }
    let out = dir.path().join("out/p.log");
    wait_until(Duration::from_secs(120), "all lines in the file", || {
        file_len(&out) >= expected.len() as u64
    });
    assert!(d.stop().success(), "{}", d.stderr());
    let got = std::fs::read(&out).unwrap();
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "pipe output differs from input");
}

#[test]
fn exec_to_file_million_lines_then_exits_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
        data_dir = "$DIR/data"
        [sources.gen]
        type = "exec"
        command = {}
        restart = "never"
        [sinks.f]
        type = "file"
        inputs = ["gen"]
        path = "$DIR/out.log"
        "#,
        awk_generator(N)
    );
    let mut d = Daemon::start(dir.path(), &config);
    let st = d.wait(Duration::from_secs(120));
    assert!(st.success(), "{}", d.stderr());
    let got = std::fs::read(dir.path().join("out.log")).unwrap();
    assert!(got == lines(N), "exec output differs ({} bytes)", got.len());
}

#[test]
fn stalled_sink_does_not_slow_sibling() {
    let dir = tempfile::tempdir().unwrap();
    // The "stalled" sink writes into a FIFO that is opened but never read.
    let stall = dir.path().join("stall.fifo");
    let c = std::ffi::CString::new(stall.to_str().unwrap()).unwrap();
    // SAFETY: valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let _held = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&stall)
        .unwrap();
    let n = 300_000;
    let config = format!(
        r#"
        data_dir = "$DIR/data"
        shutdown_timeout_secs = 2
        [sources.gen]
        type = "exec"
        command = {}
        restart = "never"
        [sinks.fast]
        type = "file"
        inputs = ["gen"]
        path = "$DIR/fast.log"
        [sinks.stalled]
        type = "file"
        inputs = ["gen"]
        path = "$DIR/stall.fifo"
        buffer.max_events = 1000
        "#,
        awk_generator(n)
    );
    let mut d = Daemon::start(dir.path(), &config);
    let fast = dir.path().join("fast.log");
    // Generous: the suite runs tests in parallel on two shared cores. Without the
    // fan-out rule the healthy sink would wait for ever, so this still fails then.
    wait_until(
        Duration::from_secs(240),
        "the healthy sink to get every line",
        || file_len(&fast) >= n * 100,
    );
    // The stalled sink cannot drain: the stop deadline cuts it off.
    let _ = d.wait(Duration::from_secs(60));
    assert!(std::fs::read(&fast).unwrap() == lines(n));
    let log = d.stderr();
    let stalled_line = log
        .lines()
        .find(|l| l.contains("Counters sinks.stalled"))
        .unwrap_or_else(|| panic!("no counters line for the stalled sink:\n{log}"));
    assert!(
        stalled_line.contains("dropped="),
        "stalled sink shed nothing: {stalled_line}"
    );
}

#[test]
fn sigterm_mid_run_loses_no_line_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(
        dir.path(),
        r#"
        data_dir = "$DIR/data"
        [sources.p]
        type = "pipe"
        path = "$DIR/in.fifo"
        [sinks.f]
        type = "file"
        inputs = ["p"]
        path = "$DIR/out.log"
        "#,
    );
    let fifo = dir.path().join("in.fifo");
    wait_until(Duration::from_secs(20), "the FIFO", || fifo.exists());
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
            let data = lines(N);
            // Stops with EPIPE once sluice is gone.
            for chunk in data.chunks(4096) {
                if w.write_all(chunk).is_err() {
                    break;
                }
            }
        })
    };
    let out = dir.path().join("out.log");
    wait_until(Duration::from_secs(60), "a partial run", || {
        file_len(&out) >= 10_000_000
    });
    assert!(d.stop().success(), "{}", d.stderr());
    let _ = writer.join();
    let got = std::fs::read(&out).unwrap();
    assert!(got.len() >= 10_000_000);
    assert_eq!(got.len() % 100, 0, "a partial line was written");
    let n = got.len() as u64 / 100;
    assert!(
        got == lines(n),
        "output is not the gap-free prefix of {n} lines"
    );
}
