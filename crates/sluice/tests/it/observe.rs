//! The operator's views of a running daemon, through its API: `sluice top` in a
//! real terminal (tmux: keys sent, the screen read back), `sluice tap` printing
//! the events leaving a source and a route, the acknowledgement-latency
//! histogram and librdkafka's statistics on a Kafka → Kafka run, and a removed
//! component's series leaving the exposition after a reload.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::api::{Sample, api_addr, get, scrape, value};
use crate::common::{Daemon, sluice_bin, wait_until};
use crate::kafka_support::{need_kafka, shared_broker};

const PIPELINE: &str = r#"
data_dir = "$DIR/data"
[api]
address = "127.0.0.1:0"
[sources.gen]
type = "pipe"
path = "$DIR/in.fifo"
[routes.keep]
type = "filter"
inputs = ["gen"]
min_level = "debug"
[sinks.out]
type = "file"
inputs = ["keep"]
path = "$DIR/out.log"
"#;

/// Writes numbered lines into the FIFO until dropped (at most 120 s).
struct Writer {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn start(fifo: PathBuf) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
            let end = Instant::now() + Duration::from_secs(120);
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) && Instant::now() < end {
                let chunk: String = (i..i + 200).map(|n| format!("event {n} INFO\n")).collect();
                i += 200;
                if w.write_all(chunk.as_bytes()).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Writer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A private tmux server (its own socket), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        let socket = format!("sluice-test-{}", std::process::id());
        Tmux { socket }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux (scripts/install-deps.sh installs it)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "top"])
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

/// The `IN/s` cell of `name`'s row on a `sluice top` screen.
fn in_rate<'a>(screen: &'a str, name: &str) -> Option<&'a str> {
    screen.lines().find_map(|l| {
        let cells: Vec<&str> = l.trim_matches('│').split_whitespace().collect();
        (cells.first() == Some(&name)).then(|| cells.get(3).copied())?
    })
}

#[test]
fn top_shows_every_component_with_a_rate_and_q_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), PIPELINE);
    let addr = api_addr(&d);
    let _writer = Writer::start(dir.path().join("in.fifo"));
    let tmux = Tmux::new();
    let rc = dir.path().join("top.rc");
    let cmd = format!(
        "{} top --api {addr}; echo $? > {}",
        sluice_bin(),
        rc.display()
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "150",
        "-y",
        "20",
        &cmd,
    ]);
    let mut screen = String::new();
    wait_until(
        Duration::from_secs(30),
        "every component with a non-zero rate",
        || {
            screen = tmux.screen();
            ["gen", "keep", "out"]
                .iter()
                .all(|n| in_rate(&screen, n).is_some_and(|r| r != "0"))
        },
    );
    assert!(
        screen.contains("IN/s") && screen.contains("ACK p99"),
        "{screen}"
    );
    // Sorting by another column keeps every row.
    tmux.run(&["send-keys", "-t", "top", "Right"]);
    wait_until(Duration::from_secs(10), "the sort mark on KIND", || {
        tmux.screen().contains("KINDv")
    });
    tmux.run(&["send-keys", "-t", "top", "q"]);
    wait_until(Duration::from_secs(10), "top to exit", || rc.exists());
    wait_until(Duration::from_secs(5), "the exit code", || {
        std::fs::read_to_string(&rc).is_ok_and(|s| s.ends_with('\n'))
    });
    assert_eq!(std::fs::read_to_string(&rc).unwrap().trim(), "0");
    assert!(d.stop().success(), "{}", d.stderr());
}

fn tap(addr: std::net::SocketAddr, component: &str, limit: u64) -> std::process::Output {
    Command::new(sluice_bin())
        .args(["tap", component, "--limit", &limit.to_string(), "--api"])
        .arg(addr.to_string())
        .output()
        .unwrap()
}

#[test]
fn tap_prints_the_events_leaving_a_source_and_a_route() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), PIPELINE);
    let addr = api_addr(&d);
    let _writer = Writer::start(dir.path().join("in.fifo"));
    for component in ["gen", "routes.keep"] {
        let out = tap(addr, component, 50);
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(text.lines().count(), 50, "{text}");
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            let msg = v["message"].as_str().expect("message");
            assert!(msg.starts_with("event ") && msg.ends_with(" INFO"), "{l}");
            assert_eq!(v["tag"], "gen");
        }
    }
    let out = tap(addr, "out", 1);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a sink"));
    let out = tap(addr, "nothing", 1);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no source or route named nothing"));
    // Nothing listens any more: the pipeline went on, none of its events lost.
    drop(_writer);
    let s = scrape(addr);
    assert_eq!(value(&s, "sluice_component_errors_total", "out"), 0.0);
    assert!(d.stop().success(), "{}", d.stderr());
}

#[test]
fn a_removed_component_series_leave_the_exposition_after_a_reload() {
    let extra = "[sinks.extra]\ntype = \"file\"\ninputs = [\"keep\"]\npath = \"$DIR/extra.log\"\n";
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(dir.path(), &format!("{PIPELINE}{extra}"));
    let addr = api_addr(&d);
    wait_until(Duration::from_secs(20), "/health 200", || {
        get(addr, "/health").0 == 200
    });
    let has = |s: &[Sample], id: &str| {
        s.iter()
            .any(|(_, l, _)| l.get("component_id").map(String::as_str) == Some(id))
    };
    let s = scrape(addr);
    assert!(has(&s, "extra") && has(&s, "out"));
    let text = PIPELINE.replace("$DIR", dir.path().to_str().unwrap());
    std::fs::write(dir.path().join("sluice.toml"), text).unwrap();
    d.signal(libc::SIGHUP);
    wait_until(Duration::from_secs(30), "the reload", || {
        d.stderr().contains("Reload applied.")
    });
    let s = scrape(addr);
    assert!(!has(&s, "extra"), "a removed sink's series stay: {s:?}");
    assert!(has(&s, "out") && has(&s, "gen"));
    assert!(d.stop().success(), "{}", d.stderr());
}

/// The series of `name` of component `id`.
fn series<'a>(s: &'a [Sample], name: &str, id: &str) -> Vec<&'a Sample> {
    s.iter()
        .filter(|(n, l, _)| n == name && l.get("component_id").map(String::as_str) == Some(id))
        .collect()
}

#[test]
fn kafka_statistics_and_ack_latency_are_exported() {
    let kafka = need_kafka!();
    let broker = shared_broker(&kafka);
    let addr = broker.addr();
    let (from, to, n) = ("obs-stats-in", "obs-stats-out", 5_000);
    broker.create_topic(from, 3);
    broker.create_topic(to, 1);
    crate::kafka_source::produce(&addr, from, n, |i| 1_700_000_000_000 + i as i64);
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(
        dir.path(),
        &format!(
            r#"
            data_dir = "$DIR/data"
            shutdown_timeout_secs = 5
            [api]
            address = "127.0.0.1:0"
            [sources.in]
            type = "kafka"
            brokers = "{addr}"
            topics = ["{from}"]
            group_id = "obs-stats-g"
            start_from = "earliest"
            [sources.in.librdkafka]
            "statistics.interval.ms" = "200"
            [sinks.k]
            type = "kafka"
            inputs = ["in"]
            brokers = "{addr}"
            topic = "{to}"
            [sinks.k.librdkafka]
            "statistics.interval.ms" = "200"
            "#
        ),
    );
    let api = api_addr(&d);
    let mut s = Vec::new();
    wait_until(
        Duration::from_secs(60),
        "every record delivered and the lag at 0",
        || {
            s = scrape(api);
            let lag = series(&s, "sluice_kafka_consumer_lag_messages", "in");
            value(&s, "sluice_component_sent_events_total", "k") == n as f64
                && lag.len() == 3
                && lag.iter().all(|x| x.2 == 0.0)
        },
    );
    let lag = series(&s, "sluice_kafka_consumer_lag_messages", "in");
    let mut parts: Vec<&str> = lag.iter().map(|x| x.1["partition"].as_str()).collect();
    parts.sort();
    assert_eq!(parts, ["0", "1", "2"]);
    assert!(lag.iter().all(|x| x.1["topic"] == from));
    // Every batch the source emitted waited for the broker's ack: all timed.
    let count = value(&s, "sluice_source_ack_latency_seconds_count", "in");
    assert!(count > 0.0, "no ack latency observed: {s:?}");
    let sum = value(&s, "sluice_source_ack_latency_seconds_sum", "in");
    assert!(sum > 0.0);
    // The producer's queue is empty once all is delivered; the broker answered.
    wait_until(Duration::from_secs(20), "the producer's queue at 0", || {
        s = scrape(api);
        series(&s, "sluice_kafka_producer_queue_messages", "k")
            .first()
            .is_some_and(|x| x.2 == 0.0)
    });
    let rtt = series(&s, "sluice_kafka_broker_rtt_avg_seconds", "k");
    assert!(!rtt.is_empty(), "no broker rtt: {s:?}");
    assert!(
        rtt.iter()
            .all(|x| x.2 > 0.0 && x.2 < 10.0 && x.1["broker"].contains('/'))
    );
    assert!(!series(&s, "sluice_kafka_broker_rtt_p99_seconds", "in").is_empty());
    assert!(d.stop().success(), "{}", d.stderr());
}
