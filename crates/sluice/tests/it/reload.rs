//! Reload on SIGHUP and with `--watch-config`, against the real daemon: a
//! million lines through FIFOs written by child processes while a sink's path
//! changes, a sink is removed and another added (every line in exactly one
//! file); a forward client with acks keeps its connection across a reload of an
//! unrelated sink, and a changed forward source keeps its port open; the same
//! flow with disk-buffered sinks (the changed one hands its directory over); a bad
//! config, or one that fails to build, leaves the pipeline running and says why.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use crate::api::{api_addr, get};
use crate::common::{Daemon, file_len, line, wait_until};
use crate::forward::{ack_bytes, bound_addrs, connect, packed, read_exact_within, read_json_lines};
use crate::forward_memory::metric;
use crate::kafka_broker::free_port;

/// Number of "Reload applied." lines logged so far.
fn applied(d: &Daemon) -> usize {
    d.stderr().matches("Reload applied.").count()
}

/// Rewrite the daemon's config file and send SIGHUP; wait for `log` to appear
/// once more than it did before.
fn reload(d: &Daemon, config: &str, log: &str) {
    let before = d.stderr().matches(log).count();
    let text = config.replace("$DIR", d.dir.to_str().unwrap());
    std::fs::write(d.dir.join("sluice.toml"), text).unwrap();
    d.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while d.stderr().matches(log).count() <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "no {log:?} within 30 s; log:\n{}",
            d.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child writing lines `0..n` of the standard stream into `fifo`: the first
/// `half` at once, the rest once `gate` exists.
fn generator(fifo: &Path, n: u64, half: u64, gate: &Path) -> Child {
    let awk = |from: u64, to: u64| {
        format!("awk 'BEGIN {{ for (i = {from}; i < {to}; i++) printf \"%099d\\n\", i }}'")
    };
    let script = format!(
        "exec > '{fifo}'; {first}; while [ ! -e '{gate}' ]; do sleep 0.01; done; {rest}",
        fifo = fifo.display(),
        gate = gate.display(),
        first = awk(0, half),
        rest = awk(half, n),
    );
    Command::new("sh").args(["-c", &script]).spawn().unwrap()
}

/// Every line of `files` together, each index counted; panics on a line that is
/// not of the standard stream.
fn census(files: &[&Path], n: u64) -> Vec<u32> {
    let mut seen = vec![0u32; n as usize];
    for f in files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for l in text.lines() {
            let i: u64 = l
                .parse()
                .unwrap_or_else(|_| panic!("stray line {l:?} in {f:?}"));
            assert_eq!(format!("{l}\n"), line(i), "line {i} mangled in {f:?}");
            seen[i as usize] += 1;
        }
    }
    seen
}

fn assert_exactly_once(seen: &[u32], what: &str) {
    let lost = seen.iter().filter(|&&c| c == 0).count();
    let dup = seen.iter().filter(|&&c| c > 1).count();
    assert_eq!(
        (lost, dup),
        (0, 0),
        "{what}: {lost} lines lost, {dup} duplicated"
    );
}

const FLOW: &str = r#"
shutdown_timeout_secs = 30
[sources.p1]
type = "pipe"
path = "$DIR/p1.fifo"
[sources.p2]
type = "pipe"
path = "$DIR/p2.fifo"
[sinks.out]
type = "file"
inputs = ["p1"]
path = "$DIR/OUT"
encoding = "raw"
[sinks.SINK2]
type = "file"
inputs = ["p2"]
path = "$DIR/SINK2.log"
encoding = "raw"
"#;

#[test]
fn reload_under_load_moves_adds_and_removes_sinks_without_loss_or_duplicates() {
    reload_under_load(FLOW);
}

/// The same with every sink on a disk buffer: the changed sink's new version
/// opens the directory once the old one has drained and closed it (sends wait
/// meanwhile); the removed one drains and closes its buffer.
#[test]
fn reload_under_load_changes_and_removes_disk_buffered_sinks_without_loss_or_duplicates() {
    let flow = format!(
        "data_dir = \"$DIR/data\"\n{FLOW}\n[sinks.out.buffer]\ntype = \"disk\"\n[sinks.SINK2.buffer]\ntype = \"disk\"\n"
    );
    let log = reload_under_load(&flow);
    assert!(
        log.contains("The old sink ended and its disk buffer closed; the new one runs."),
        "{log}"
    );
    assert!(!log.contains("Reload refused"), "{log}");
}

/// 1,000,000 lines through two FIFOs of `flow` (with `OUT` and `SINK2` to
/// fill in) while a reload moves one sink, removes the other and adds a third;
/// every line is in exactly one file. The daemon's log.
fn reload_under_load(flow: &str) -> String {
    // 1,000,000 lines: 500,000 through each FIFO.
    const N: u64 = 500_000;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        dir.path(),
        &flow.replace("OUT", "out-1.log").replace("SINK2", "old"),
    );
    let p = |name: &str| dir.path().join(name);
    wait_until(Duration::from_secs(20), "the FIFOs", || {
        p("p1.fifo").exists() && p("p2.fifo").exists()
    });
    let gate = p("go");
    let mut gens = [
        generator(&p("p1.fifo"), N, N / 2, &gate),
        generator(&p("p2.fifo"), N, N / 2, &gate),
    ];
    // Mid-flow: the first half is still being written and read.
    wait_until(Duration::from_secs(60), "lines in out-1.log", || {
        file_len(&p("out-1.log")) >= 2_000_000
    });
    // `out` moves to out-2.log, `old` is removed and `new` added in one reload.
    reload(
        &d,
        &flow.replace("OUT", "out-2.log").replace("SINK2", "new"),
        "Reload applied.",
    );
    std::fs::write(&gate, b"").unwrap();
    for g in &mut gens {
        assert!(g.wait().unwrap().success(), "generator failed");
    }
    let total = |files: &[&str]| files.iter().map(|f| file_len(&p(f))).sum::<u64>();
    wait_until(Duration::from_secs(90), "every line written", || {
        total(&["out-1.log", "out-2.log"]) >= N * 100 && total(&["old.log", "new.log"]) >= N * 100
    });
    let mut d = d;
    assert!(d.stop().success(), "{}", d.stderr());

    let seen = census(&[&p("out-1.log"), &p("out-2.log")], N);
    assert_exactly_once(&seen, "out-1.log + out-2.log");
    let seen = census(&[&p("old.log"), &p("new.log")], N);
    assert_exactly_once(&seen, "old.log + new.log");
    // Both generations took part: the old files before, the new ones after.
    for f in ["out-1.log", "out-2.log", "old.log", "new.log"] {
        assert!(file_len(&p(f)) > 0, "{f} is empty");
    }
    let log = d.stderr();
    assert!(
        log.contains(r#"added=["sinks.new"]"#) && log.contains(r#"removed=["sinks.old"]"#),
        "{log}"
    );
    log
}

fn forward_config(port: u16, other: &str, source_extra: &str) -> String {
    format!(
        r#"
[sources.fw]
type = "forward"
address = "127.0.0.1:{port}"
{source_extra}
[sinks.out]
type = "file"
inputs = ["fw"]
path = "$DIR/out.json"
encoding = "json"
[sinks.other]
type = "file"
inputs = ["fw"]
path = "$DIR/{other}"
encoding = "raw"
"#
    )
}

/// Send a chunk on `s` and wait for its ack.
fn send_acked(s: &mut std::net::TcpStream, prefix: &str, n: usize) {
    let id = format!("chunk-{prefix}");
    s.write_all(&packed("t", prefix, n, Some(&id))).unwrap();
    let want = ack_bytes(&id);
    assert_eq!(
        read_exact_within(s, want.len(), Duration::from_secs(20)),
        want,
        "ack for {prefix}"
    );
}

#[test]
fn forward_connection_survives_a_reload_and_a_changed_source_keeps_its_port() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut d = Daemon::start(dir.path(), &forward_config(port, "a.log", ""));
    let addr = bound_addrs(&d, 1)[0];
    let mut s = connect(addr);
    send_acked(&mut s, "before", 100);

    // An unrelated change: the other sink's path. The connection is untouched.
    reload(&d, &forward_config(port, "b.log", ""), "Reload applied.");
    send_acked(&mut s, "after", 100);
    assert_eq!(
        d.stderr().matches("Forward source listening.").count(),
        1,
        "the forward source was not rebuilt"
    );

    // The forward source itself changes (tag): a new source takes over the
    // listening socket; the port never stops accepting.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut refused = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if std::net::TcpStream::connect(addr).is_err() {
                    refused += 1;
                }
                // Pacing, not synchronisation: about a thousand probes a second.
                std::thread::sleep(Duration::from_millis(1));
            }
            refused
        })
    };
    reload(
        &d,
        &forward_config(port, "b.log", "tag = \"renamed\""),
        "Reload applied.",
    );
    wait_until(Duration::from_secs(20), "the new source listening", || {
        d.stderr().matches("Forward source listening.").count() == 2
    });
    let mut s2 = connect(addr);
    send_acked(&mut s2, "new-source", 10);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        prober.join().unwrap(),
        0,
        "connections refused during the reload"
    );
    assert!(!d.stderr().contains("ERROR"), "{}", d.stderr());
    drop((s, s2));
    assert!(d.stop().success(), "{}", d.stderr());

    let events = read_json_lines(&dir.path().join("out.json"));
    assert_eq!(events.len(), 210, "every acked record delivered once");
    let b = std::fs::read_to_string(dir.path().join("b.log")).unwrap();
    assert_eq!(
        b.lines().count(),
        110,
        "b.log holds what came after its reload"
    );
}

#[test]
fn a_bad_config_on_reload_keeps_the_pipeline_running_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let good = forward_config(port, "a.log", "");
    let mut d = Daemon::start_args(dir.path(), &good, &[], &["--watch-config"]);
    let addr = bound_addrs(&d, 1)[0];
    let mut s = connect(addr);
    send_acked(&mut s, "before", 10);

    // Invalid: an unknown key, reported as `sluice validate` reports it.
    reload(
        &d,
        &good.replace("encoding = \"raw\"", "encodng = \"raw\""),
        "Reload failed; keeping the running config",
    );
    assert!(d.stderr().contains("encodng"), "{}", d.stderr());
    send_acked(&mut s, "after-invalid", 10);

    // Valid but cannot build: a second forward source on a port already taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = format!(
        "{good}\n[sources.fw2]\ntype = \"forward\"\naddress = \"{}\"\n\
         [sinks.discard]\ntype = \"null\"\ninputs = [\"fw2\"]\n",
        taken.local_addr().unwrap()
    );
    reload(&d, &busy, "sources.fw2: binding");
    send_acked(&mut s, "after-build-error", 10);
    assert_eq!(applied(&d), 0, "no reload was applied");

    // --watch-config: writing a good file is enough, no signal.
    let before = applied(&d);
    std::fs::write(
        dir.path().join("sluice.toml"),
        forward_config(port, "c.log", "").replace("$DIR", dir.path().to_str().unwrap()),
    )
    .unwrap();
    wait_until(
        Duration::from_secs(20),
        "the watched file to reload",
        || applied(&d) > before,
    );
    send_acked(&mut s, "after-watch", 10);
    drop(s);
    assert!(d.stop().success(), "{}", d.stderr());
    assert_eq!(read_json_lines(&dir.path().join("out.json")).len(), 40);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("c.log"))
            .unwrap()
            .lines()
            .count(),
        10
    );
}

/// A disk-buffered sink whose destination is down is removed by a reload: it
/// tries for half of `shutdown_timeout_secs`, then closes its buffer with the
/// lines still in it. A later reload brings a sink of the same name back (now a
/// file sink): it opens the same buffer and delivers every line, once.
#[test]
fn a_removed_disk_buffered_sink_leaves_its_lines_on_disk_for_a_later_config() {
    const N: u64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let dead = free_port(); // nothing listens there
    // One sink at a time: a source feeding two sinks sheds a copy one of them
    // has no room for, and a pipe cannot resend it.
    let base = "data_dir = \"$DIR/data\"\nshutdown_timeout_secs = 2\n[api]\naddress = \"127.0.0.1:0\"\n\
                [sources.p]\ntype = \"pipe\"\npath = \"$DIR/p.fifo\"\n";
    let removed = format!("{base}[sinks.keep]\ntype = \"null\"\ninputs = [\"p\"]\n");
    let down = format!(
        "{base}[sinks.out]\ntype = \"forward\"\ninputs = [\"p\"]\nservers = [\"127.0.0.1:{dead}\"]\n\
         connect_timeout_secs = 1\n[sinks.out.buffer]\ntype = \"disk\"\n"
    );
    let back = format!(
        "{base}[sinks.out]\ntype = \"file\"\ninputs = [\"p\"]\npath = \"$DIR/out.log\"\n\
         encoding = \"raw\"\n[sinks.out.buffer]\ntype = \"disk\"\n"
    );
    let d = Daemon::start(dir.path(), &down);
    let p = |name: &str| dir.path().join(name);
    wait_until(Duration::from_secs(20), "the FIFO", || p("p.fifo").exists());
    let gate = p("never");
    let mut writer = generator(&p("p.fifo"), N, N, &gate);
    std::fs::write(&gate, b"").unwrap();
    assert!(writer.wait().unwrap().success(), "generator failed");
    // Every line handed to the sink's buffer.
    let api = api_addr(&d);
    wait_until(Duration::from_secs(30), "the lines read", || {
        let text = get(api, "/metrics").1;
        metric(&text, "sluice_component_sent_events", "p").unwrap_or(0.0) as u64 >= N
    });
    reload(&d, &removed, "Reload applied.");
    wait_until(
        Duration::from_secs(30),
        "the removed sink's buffer closed",
        || d.stderr().contains("its disk buffer is closed"),
    );
    assert!(!p("out.log").exists(), "nothing could be delivered yet");
    reload(&d, &back, "Reload applied.");
    wait_until(Duration::from_secs(30), "the kept lines delivered", || {
        file_len(&p("out.log")) >= N * 100
    });
    let mut d = d;
    assert!(d.stop().success(), "{}", d.stderr());
    let seen = census(&[&p("out.log")], N);
    let lost: Vec<_> = (0..N).filter(|&i| seen[i as usize] == 0).collect();
    let twice: Vec<_> = (0..N).filter(|&i| seen[i as usize] > 1).collect();
    assert!(
        lost.is_empty() && twice.is_empty(),
        "lost {} (first {:?}), twice {} (first {:?}); log:\n{}",
        lost.len(),
        &lost[..lost.len().min(5)],
        twice.len(),
        &twice[..twice.len().min(5)],
        d.stderr()
    );
}

/// Global keys on reload: `[api] address` moves (the new address answers, the
/// old one is closed) and `shutdown_timeout_secs` applies; a port in use fails
/// the reload and the old address keeps serving; `data_dir` is refused with the
/// reason. The forward flow is acked throughout.
#[test]
fn a_reload_moves_the_api_and_refuses_a_new_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (port, api_a, api_b) = (free_port(), free_port(), free_port());
    let config = |api: u16, extra: &str| {
        format!(
            "data_dir = \"$DIR/data\"\n{extra}\n[api]\naddress = \"127.0.0.1:{api}\"\n{}",
            forward_config(port, "a.log", "")
        )
    };
    let mut d = Daemon::start(dir.path(), &config(api_a, ""));
    let addr = bound_addrs(&d, 1)[0];
    let mut s = connect(addr);
    send_acked(&mut s, "before", 10);
    let a = format!("127.0.0.1:{api_a}").parse().unwrap();
    let b = format!("127.0.0.1:{api_b}").parse().unwrap();
    let healthy = |addr| get(addr, "/health").0 == 200;
    wait_until(Duration::from_secs(20), "the API to report health", || {
        healthy(a)
    });

    // A port in use: the reload fails, the API stays where it was.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port();
    reload(&d, &config(busy, ""), "api: cannot listen on");
    assert!(healthy(a));
    send_acked(&mut s, "after-busy", 10);

    // Moved, with a new shutdown timeout: applied.
    reload(
        &d,
        &config(api_b, "shutdown_timeout_secs = 7"),
        "Reload applied.",
    );
    assert!(healthy(b));
    wait_until(
        Duration::from_secs(10),
        "the old API address to close",
        || std::net::TcpStream::connect(a).is_err(),
    );
    send_acked(&mut s, "after-move", 10);

    // A new data_dir: refused, with the reason; nothing changes.
    reload(
        &d,
        &config(api_b, "shutdown_timeout_secs = 7").replace("$DIR/data", "$DIR/data2"),
        "Reload refused",
    );
    assert!(d.stderr().contains("data_dir"), "{}", d.stderr());
    assert!(healthy(b));
    send_acked(&mut s, "after-refused", 10);
    assert_eq!(applied(&d), 1);
    drop(s);
    assert!(d.stop().success(), "{}", d.stderr());
    assert_eq!(read_json_lines(&dir.path().join("out.json")).len(), 40);
}
