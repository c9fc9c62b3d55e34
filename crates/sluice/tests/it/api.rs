//! The `[api]` server: `/metrics` scraped during a real run and parsed by the
//! Prometheus project's Python parsers, counters exact at the end; `/health` and
//! `/ready` through a stop; the daemon listens only where configured; hostile
//! requests get errors and the server goes on.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{Daemon, file_len, line, sluice_bin, wait_until};

/// One parsed sample: name, labels, value.
pub type Sample = (String, HashMap<String, String>, f64);

/// The API's address, read back from the "API listening." line.
pub fn api_addr(d: &Daemon) -> SocketAddr {
    let mut addr = None;
    wait_until(Duration::from_secs(20), "the API listening line", || {
        addr = d
            .stderr()
            .lines()
            .find(|l| l.contains("API listening."))
            .and_then(|l| l.split("address=").nth(1))
            .and_then(|a| a.split_whitespace().next())
            .and_then(|a| a.parse().ok());
        addr.is_some()
    });
    addr.expect("address")
}

/// Send `request` as is; the status code (0 when the server closed without
/// answering) and the body.
pub fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
        return (0, String::new());
    };
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    // The server may answer and close before a huge request is fully written.
    let _ = s.write_all(request);
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    (status, body)
}

pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: sluice\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// Scrape `/metrics` and parse it with `prometheus_client` (both parsers).
pub fn scrape(addr: SocketAddr) -> Vec<Sample> {
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, 200, "{body}");
    let script = crate::common::manifest_dir().join("tests/it/api_parse.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser rejected the exposition: {}\n{body}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("parser output"))
        .collect()
}

/// The value of `name` for component `id` (0 when absent).
pub fn value(samples: &[Sample], name: &str, id: &str) -> f64 {
    samples
        .iter()
        .find(|(n, l, _)| n == name && l.get("component_id").map(String::as_str) == Some(id))
        .map_or(0.0, |s| s.2)
}

fn labels_of<'a>(samples: &'a [Sample], name: &str, id: &str) -> &'a HashMap<String, String> {
    &samples
        .iter()
        .find(|(n, l, _)| n == name && l.get("component_id").map(String::as_str) == Some(id))
        .unwrap_or_else(|| panic!("no {name} for {id}: {samples:?}"))
        .1
}

#[test]
fn metrics_scraped_during_a_pipe_to_file_run_match_the_events_exactly() {
    const N: u64 = 40_000;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(
        dir.path(),
        r#"
        data_dir = "$DIR/data"
        [api]
        address = "127.0.0.1:0"
        [sources.p]
        type = "pipe"
        path = "$DIR/in.fifo"
        [sinks.f]
        type = "file"
        inputs = ["p"]
        path = "$DIR/out.log"
        "#,
    );
    let addr = api_addr(&d);
    wait_until(Duration::from_secs(20), "/health 200", || {
        get(addr, "/health").0 == 200
    });
    assert_eq!(get(addr, "/ready").0, 200);
    let fifo = dir.path().join("in.fifo");
    let writer = std::thread::spawn(move || {
        let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        for chunk in (0..N).collect::<Vec<_>>().chunks(2_000) {
            let text: String = chunk.iter().map(|&i| line(i)).collect();
            w.write_all(text.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    // Scrape while the lines flow: every scrape parses, counters never go back.
    let out = dir.path().join("out.log");
    let mut last = 0.0;
    let mut scrapes = 0;
    while file_len(&out) < N * 100 || scrapes < 3 {
        let s = scrape(addr);
        let sent = value(&s, "sluice_component_sent_events_total", "f");
        assert!(sent >= last, "sent went back from {last} to {sent}");
        last = sent;
        scrapes += 1;
        assert!(scrapes < 2_000, "the file never got every line");
    }
    writer.join().unwrap();
    let mut s = Vec::new();
    wait_until(Duration::from_secs(20), "the sink's counter at N", || {
        s = scrape(addr);
        value(&s, "sluice_component_sent_events_total", "f") == N as f64
    });
    let n = N as f64;
    assert_eq!(value(&s, "sluice_component_received_events_total", "p"), n);
    assert_eq!(
        value(&s, "sluice_component_received_bytes_total", "p"),
        n * 100.0
    );
    assert_eq!(value(&s, "sluice_component_sent_events_total", "p"), n);
    assert_eq!(value(&s, "sluice_component_received_events_total", "f"), n);
    assert_eq!(value(&s, "sluice_component_errors_total", "f"), 0.0);
    assert_eq!(
        value(&s, "sluice_component_discarded_events_total", "f"),
        0.0
    );
    assert_eq!(value(&s, "sluice_buffer_events", "f"), 0.0);
    assert!(value(&s, "sluice_buffer_max_events", "f") > 0.0);
    let l = labels_of(&s, "sluice_component_sent_events_total", "f");
    assert_eq!(l["component_kind"], "sink");
    assert_eq!(l["component_type"], "file");
    let l = labels_of(&s, "sluice_component_received_events_total", "p");
    assert_eq!(l["component_kind"], "source");
    assert_eq!(l["component_type"], "pipe");
    assert!(d.stop().success(), "{}", d.stderr());
}

#[test]
fn buffer_gauge_rises_behind_a_stuck_sink_and_health_turns_503_while_draining() {
    // A sink that cannot finish: a forward server that accepts (the kernel's
    // backlog does) but never reads or acks. The stop then drains until the
    // deadline, and /health says so meanwhile.
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = stalled.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(
        dir.path(),
        &format!(
            r#"
            data_dir = "$DIR/data"
            shutdown_timeout_secs = 4
            [api]
            address = "127.0.0.1:0"
            [sources.p]
            type = "pipe"
            path = "$DIR/in.fifo"
            [sinks.fw]
            type = "forward"
            inputs = ["p"]
            servers = ["127.0.0.1:{port}"]
            require_ack = true
            max_inflight_chunks = 1
            ack_timeout_secs = 3600
            "#
        ),
    );
    let addr = api_addr(&d);
    wait_until(Duration::from_secs(20), "/health 200", || {
        get(addr, "/health") == (200, "running\n".into())
    });
    assert_eq!(get(addr, "/ready").0, 200);
    let fifo = dir.path().join("in.fifo");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .unwrap()
        .write_all(line(1).as_bytes())
        .unwrap();
    wait_until(
        Duration::from_secs(20),
        "the sink holding the event",
        || {
            value(
                &scrape(addr),
                "sluice_component_received_events_total",
                "fw",
            ) == 1.0
        },
    );
    // The sink has its one chunk in flight and takes no more: the buffer
    // gauge rises with what follows.
    let more: String = (2..=101).map(line).collect();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .unwrap()
        .write_all(more.as_bytes())
        .unwrap();
    wait_until(Duration::from_secs(20), "100 events in the buffer", || {
        value(&scrape(addr), "sluice_buffer_events", "fw") == 100.0
    });
    d.signal(libc::SIGTERM);
    wait_until(Duration::from_secs(3), "/health 503 stopping", || {
        get(addr, "/health") == (503, "stopping\n".into())
    });
    assert_eq!(get(addr, "/ready").0, 503);
    // Counters stay readable while draining.
    assert_eq!(
        value(
            &scrape(addr),
            "sluice_component_received_events_total",
            "fw"
        ),
        1.0
    );
    let st = d.wait(Duration::from_secs(20));
    assert!(!st.success(), "an undelivered event must fail the stop");
    assert_eq!(get(addr, "/health").0, 0, "nothing listens after the exit");
    drop(stalled);
}

/// TCP sockets `pid` listens on.
fn listening(pid: u32) -> Vec<SocketAddr> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|p| {
            let s = p.to_string_lossy().into_owned();
            Some(s.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let mut found = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap();
        for row in text.lines().skip(1) {
            let f: Vec<&str> = row.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" || !inodes.iter().any(|i| i == f[9]) {
                continue;
            }
            let (ip, port) = f[1].split_once(':').unwrap();
            let port = u16::from_str_radix(port, 16).unwrap();
            let ip: std::net::IpAddr = if ip.len() == 8 {
                let v = u32::from_str_radix(ip, 16).unwrap();
                std::net::Ipv4Addr::from(v.swap_bytes()).into()
            } else {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            };
            found.push(SocketAddr::new(ip, port));
        }
    }
    found
}

#[test]
fn the_api_listens_only_where_configured() {
    let config = |api: &str| {
        format!(
            "data_dir = \"$DIR/data\"\n{api}\n[sources.p]\ntype = \"pipe\"\npath = \"$DIR/in.fifo\"\n\
             [sinks.f]\ntype = \"file\"\ninputs = [\"p\"]\npath = \"$DIR/out.log\"\n"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let mut off = Daemon::start(dir.path(), &config(""));
    wait_until(Duration::from_secs(20), "the start", || {
        off.stderr().contains("Sluice started.")
    });
    assert_eq!(listening(off.child.id()), vec![], "no [api]: no socket");
    assert!(off.stop().success());

    let dir = tempfile::tempdir().unwrap();
    let mut on = Daemon::start(dir.path(), &config("[api]\naddress = \"127.0.0.1:0\""));
    let addr = api_addr(&on);
    wait_until(Duration::from_secs(20), "the start", || {
        on.stderr().contains("Sluice started.")
    });
    assert_eq!(listening(on.child.id()), vec![addr]);
    assert!(addr.ip().is_loopback());

    // The port taken: the second daemon fails its start and says why.
    let dir = tempfile::tempdir().unwrap();
    let mut taken = Daemon::start(dir.path(), &config(&format!("[api]\naddress = \"{addr}\"")));
    let st = taken.wait(Duration::from_secs(20));
    assert!(!st.success());
    assert!(
        taken.stderr().contains("api: cannot listen on"),
        "{}",
        taken.stderr()
    );
    assert!(on.stop().success());

    // A misspelt key is a config error with a suggestion.
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        config("[api]\nadress = \"127.0.0.1:9598\"\nmax_tenant_series = 0")
            .replace("$DIR", dir.path().to_str().unwrap()),
    )
    .unwrap();
    let out = Command::new(sluice_bin())
        .args(["validate", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("api.adress") && err.contains("address"),
        "{err}"
    );
    assert!(err.contains("api.max_tenant_series"), "{err}");
}

#[test]
fn hostile_requests_get_errors_and_the_server_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(
        dir.path(),
        r#"
        data_dir = "$DIR/data"
        [api]
        address = "127.0.0.1:0"
        [sources.p]
        type = "pipe"
        path = "$DIR/in.fifo"
        [sinks.f]
        type = "file"
        inputs = ["p"]
        path = "$DIR/out.log"
        "#,
    );
    let addr = api_addr(&d);
    wait_until(Duration::from_secs(20), "/health 200", || {
        get(addr, "/health").0 == 200
    });
    let mut huge = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 1 << 20));
    huge.extend(b"\r\n\r\n");
    let (status, _) = raw(addr, &huge);
    assert!(status == 431 || status == 0, "huge head answered {status}");
    assert_eq!(get(addr, "/nope").0, 404);
    assert_eq!(get(addr, "/../../etc/passwd").0, 404);
    assert_eq!(get(addr, "/metrics?x=1").0, 200);
    let (status, _) = raw(
        addr,
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    );
    assert_eq!(status, 405);
    assert_eq!(raw(addr, b"\x00\x01\x02 garbage\r\n\r\n").0, 400);
    let (status, body) = raw(
        addr,
        b"HEAD /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((status, body.as_str()), (200, ""));
    // More idle connections than the server serves at once: the extra ones are
    // closed, and once the idle ones go the server answers again.
    let idle: Vec<TcpStream> = (0..100)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect();
    assert!(idle.len() >= 64);
    drop(idle);
    wait_until(Duration::from_secs(20), "/health 200 again", || {
        get(addr, "/health").0 == 200
    });
    assert!(d.child.try_wait().unwrap().is_none(), "the daemon died");
    assert!(d.stop().success(), "{}", d.stderr());
}
