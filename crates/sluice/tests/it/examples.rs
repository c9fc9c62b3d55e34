//! The files under `examples/`, as a newcomer meets them: every one validates, and
//! every one that needs no outside service runs from a fresh clone (only the files
//! git tracks, no `data/`, relative paths resolved from the clone's root), takes a
//! line through its pipe, stops on SIGINT with exit 0 and leaves the expected
//! outputs. A new example must be added to `RUN_HERE` or `NEEDS_A_SERVICE`.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{manifest_dir, sluice_bin, wait_until};

/// Examples run end to end below.
const RUN_HERE: &[&str] = &["quickstart.toml", "routes-scribe.toml"];

/// Examples only validated, with what they need that the tests cannot give them
/// without a harness of their own (the Kafka and forward tests cover their parts).
const NEEDS_A_SERVICE: &[(&str, &str)] = &[
    ("forward-agent.toml", "forward collectors and their TLS CA"),
    (
        "forward-collector.toml",
        "a Kafka broker and TLS certificates",
    ),
    ("fuse-kafka.toml", "a Kafka broker and a FUSE mount"),
    ("kafka-cdn.toml", "a Kafka broker and varnishncsa"),
    (
        "kubernetes.toml",
        "a Kafka broker and the kubelet's /var/log/pods",
    ),
    ("routes-cdn.toml", "a Kafka broker and varnishncsa"),
];

/// Files under examples/ that are not sluice configs, and what they are.
const NOT_CONFIGS: &[(&str, &str)] = &[(
    "grafana-dashboard.json",
    "a Grafana dashboard over the /metrics names",
)];

fn repo_root() -> PathBuf {
    manifest_dir()
        .join("../..")
        .canonicalize()
        .expect("repository root")
}

fn example_names() -> BTreeSet<String> {
    std::fs::read_dir(repo_root().join("examples"))
        .expect("read examples/")
        .map(|e| e.expect("examples/ entry").file_name())
        .map(|n| n.into_string().expect("UTF-8 example name"))
        .collect()
}

#[test]
fn every_example_validates() {
    let names = example_names();
    assert!(names.contains("quickstart.toml"), "{names:?}");
    for name in names
        .iter()
        .filter(|n| !NOT_CONFIGS.iter().any(|(c, _)| c == n))
    {
        let out = Command::new(sluice_bin())
            .args(["validate", "--config"])
            .arg(repo_root().join("examples").join(name))
            .env_remove("SLUICE_DATA")
            .output()
            .expect("sluice validate");
        assert!(
            out.status.success(),
            "examples/{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_example_is_run_here_or_names_the_service_it_needs() {
    let listed: BTreeSet<String> = RUN_HERE
        .iter()
        .copied()
        .chain(NEEDS_A_SERVICE.iter().map(|(n, _)| *n))
        .chain(NOT_CONFIGS.iter().map(|(n, _)| *n))
        .map(str::to_owned)
        .collect();
    assert_eq!(
        example_names(),
        listed,
        "add each example to RUN_HERE (and a test running it), NEEDS_A_SERVICE or NOT_CONFIGS"
    );
}

#[test]
fn the_grafana_dashboard_queries_only_metrics_sluice_exports() {
    let text = read(&repo_root().join("examples/grafana-dashboard.json"));
    let dash: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let exposition = read(&manifest_dir().join("src/api/exposition.rs"));
    let mut checked = 0;
    for panel in dash["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if !word.starts_with("sluice_") {
                    continue;
                }
                let family = ["_total", "_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| word.strip_suffix(s))
                    .unwrap_or(word);
                assert!(
                    exposition.contains(&format!("\"{family}\"")),
                    "{}: {word} is not a metric of src/api/exposition.rs",
                    panel["title"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 15, "only {checked} metric names found");
}

/// The files git tracks, copied from the working tree into a new temp dir: what a
/// fresh clone holds (uncommitted edits included, nothing untracked).
pub fn fresh_clone() -> tempfile::TempDir {
    let root = repo_root();
    let out = Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["ls-files", "-z"])
        .output()
        .expect("git ls-files (git must be installed: scripts/install-deps.sh)");
    assert!(out.status.success(), "git ls-files in {}", root.display());
    let clone = tempfile::tempdir().expect("temp dir");
    let mut copied = 0;
    for name in out.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let rel = Path::new(std::str::from_utf8(name).expect("UTF-8 path"));
        let from = root.join(rel);
        if !from.is_file() {
            continue; // deleted in the working tree, not yet committed
        }
        let to = clone.path().join(rel);
        std::fs::create_dir_all(to.parent().expect("a parent")).expect("mkdir");
        std::fs::copy(&from, &to).expect("copy");
        copied += 1;
    }
    assert!(copied > 0, "no tracked files in {}", root.display());
    clone
}

/// `sluice run --config examples/NAME` with the clone as working directory,
/// stdout and stderr to files there, the environment cleared of sluice's variables.
fn run_example(clone: &Path, name: &str, env: &[(&str, &Path)]) -> Child {
    let mut cmd = Command::new(sluice_bin());
    cmd.args(["run", "--config", &format!("examples/{name}")])
        .current_dir(clone)
        .env_remove("SLUICE_DATA")
        .env_remove("SLUICE_LOG_FORMAT")
        .env("SLUICE_LOG", "info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(clone.join("stdout.txt")).expect("stdout file"))
        .stderr(std::fs::File::create(clone.join("stderr.txt")).expect("stderr file"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("start sluice")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Everything in the files under `dir` (recursively), concatenated.
fn read_tree(dir: &Path) -> String {
    let mut s = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            s.push_str(&read_tree(&p));
        } else {
            s.push_str(&read(&p));
        }
    }
    s
}

/// Write `line` into the FIFO at `path` once sluice has created and opened it
/// (a non-blocking open fails with ENXIO until a reader is there).
fn send_to_pipe(path: &Path, line: &str, clone: &Path) {
    let mut fifo = None;
    wait_until(Duration::from_secs(20), "the FIFO to be open", || {
        let is_fifo = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_fifo());
        if is_fifo {
            fifo = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
                .ok();
        }
        assert!(
            !read(&clone.join("stderr.txt")).contains("ERROR"),
            "{}",
            read(&clone.join("stderr.txt"))
        );
        fifo.is_some()
    });
    fifo.expect("opened")
        .write_all(line.as_bytes())
        .expect("write to FIFO");
}

/// SIGINT, then the exit status within 30 s.
fn interrupt(child: &mut Child, clone: &Path) -> std::process::ExitStatus {
    // SAFETY: plain syscall on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let mut status = None;
    wait_until(
        Duration::from_secs(30),
        "sluice to exit after SIGINT",
        || {
            status = child.try_wait().expect("try_wait");
            status.is_some()
        },
    );
    let status = status.expect("exited");
    assert_eq!(
        status.code(),
        Some(0),
        "stderr:\n{}",
        read(&clone.join("stderr.txt"))
    );
    status
}

#[test]
fn the_quickstart_runs_from_a_fresh_clone() {
    let clone = fresh_clone();
    let c = clone.path();
    assert!(!c.join("data").exists(), "a fresh clone has no data/");
    let mut child = run_example(c, "quickstart.toml", &[]);
    let line = "hello from a fresh clone";
    send_to_pipe(&c.join("data/inbox.pipe"), &format!("{line}\n"), c);
    wait_until(Duration::from_secs(20), "both sources in the files", || {
        read_tree(&c.join("data/app.inbox")).contains(line)
            && read_tree(&c.join("data/app.web")).contains("acme GET /index.html 200 0")
            && read(&c.join("stdout.txt")).contains("acme GET /index.html 200 0")
    });
    interrupt(&mut child, c);

    let inbox = read_tree(&c.join("data/app.inbox"));
    let doc: serde_json::Value = serde_json::from_str(inbox.trim_end()).expect("one JSON line");
    assert_eq!(doc["message"], line);
    assert_eq!(doc["tag"], "app.inbox");
    for l in read_tree(&c.join("data/app.web")).lines() {
        let doc: serde_json::Value = serde_json::from_str(l).expect("JSON line");
        assert_eq!(doc["tag"], "app.web");
    }
    let stdout = read(&c.join("stdout.txt"));
    assert!(
        stdout.lines().all(|l| l.starts_with("acme GET")),
        "{stdout}"
    );
    assert!(!stdout.contains(line), "the inbox does not go to stdout");
}

#[test]
fn the_scribe_routes_example_runs_from_a_fresh_clone() {
    let clone = fresh_clone();
    let c = clone.path();
    let sessions = c.join("sessions.log");
    std::fs::write(&sessions, "alice:login\n").expect("write sessions log");
    let (pipe, logs, data) = (c.join("run/app.pipe"), c.join("logs"), c.join("state"));
    let mut child = run_example(
        c,
        "routes-scribe.toml",
        &[
            ("SLUICE_PIPE", &pipe),
            ("SESSIONS_LOG", &sessions),
            ("SLUICE_LOG_DIR", &logs),
            ("SLUICE_DATA", &data),
        ],
    );
    send_to_pipe(&pipe, "WARN disk almost full\nINFO all good\n", c);
    wait_until(Duration::from_secs(20), "the routed outputs", || {
        let apps = read_tree(&logs.join("apps"));
        apps.contains("WARN disk almost full")
            && apps.contains("INFO all good")
            && read_tree(&logs.join("buckets")).contains("alice:login")
            && read(&c.join("stdout.txt")).contains("WARN disk almost full")
    });
    interrupt(&mut child, c);
    assert!(
        !read(&c.join("stdout.txt")).contains("INFO all good"),
        "the filter passes warnings and above only"
    );
    let buckets: Vec<String> = (0..4)
        .map(|i| read(&logs.join(format!("buckets/{i}.log"))))
        .collect();
    assert_eq!(
        buckets.iter().filter(|b| b.contains("alice:login")).count(),
        1,
        "one user, one bucket: {buckets:?}"
    );
    assert!(
        read_tree(&logs.join("rest")).is_empty(),
        "nothing falls to rest"
    );
}
