//! How the daemon's logs look to what reads them: no escape codes when stderr is a
//! pipe or a file, colour on a terminal (a real pty from util-linux `script`) unless
//! `NO_COLOR` is set, and one JSON object per line with `SLUICE_LOG_FORMAT=json`.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::sluice_bin;

/// A pipeline that logs a start, a warning (a command exiting with failure) and
/// a stop, then ends on its own: every source ends.
const ENDS_BY_ITSELF: &str = r#"
[sources.once]
type = "exec"
command = ["echo", "hi"]
restart = "never"
[sources.failing]
type = "exec"
command = ["false"]
restart = "never"
[sinks.n]
type = "null"
inputs = ["once", "failing"]
"#;

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let cfg = dir.join("sluice.toml");
    std::fs::write(&cfg, text).expect("write config");
    cfg
}

/// `sluice run` with stderr to a pipe and `env` set (the log variables cleared first).
fn run_piped(cfg: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(sluice_bin());
    cmd.args(["run", "--config"])
        .arg(cfg)
        .env_remove("NO_COLOR")
        .env_remove("SLUICE_LOG_FORMAT")
        .env("SLUICE_LOG", "info")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run sluice")
}

#[test]
fn logs_to_a_pipe_have_no_escape_codes() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let out = run_piped(&write_config(tmp.path(), ENDS_BY_ITSELF), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("WARN"), "{stderr}");
    assert!(stderr.contains("Stopped."), "{stderr}");
    assert!(!out.stderr.contains(&0x1b), "escape codes in:\n{stderr}");
}

#[test]
fn logs_on_a_terminal_are_coloured_unless_no_color() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let cfg = write_config(tmp.path(), ENDS_BY_ITSELF);
    let line = format!("{} run --config {}", sluice_bin(), cfg.display());
    let on_tty = |no_color: Option<&str>| {
        let mut cmd = Command::new("script");
        // -q quiet, -e the child's exit code, -c the command; the typescript is dropped.
        cmd.args(["-q", "-e", "-c", &line, "/dev/null"])
            .env_remove("NO_COLOR")
            .env_remove("SLUICE_LOG_FORMAT")
            .env("SLUICE_LOG", "info")
            .stdin(Stdio::null());
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let out = cmd
            .output()
            .expect("util-linux `script` (scripts/install-deps.sh installs bsdutils)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(0), "{text}");
        assert!(text.contains("Stopped."), "{text}");
        text
    };
    assert!(on_tty(None).contains("\x1b["), "no colour on a terminal");
    let plain = on_tty(Some("1"));
    assert!(!plain.contains('\x1b'), "colour despite NO_COLOR:\n{plain}");
}

/// Every stderr line of `out` as a JSON object with a level and a message.
fn json_lines(out: &Output) -> Vec<serde_json::Value> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let docs: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{stderr}"))
        })
        .collect();
    assert!(!docs.is_empty(), "no log lines");
    for d in &docs {
        assert!(d["level"].is_string(), "{d}");
        assert!(d["fields"]["message"].is_string(), "{d}");
    }
    docs
}

#[test]
fn json_logs_are_one_object_per_line() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let cfg = write_config(tmp.path(), ENDS_BY_ITSELF);
    let out = run_piped(&cfg, &[("SLUICE_LOG_FORMAT", "json")]);
    assert_eq!(out.status.code(), Some(0));
    let docs = json_lines(&out);
    assert!(docs.iter().any(|d| d["level"] == "WARN"), "{docs:?}");
    assert!(
        docs.iter().any(|d| d["fields"]["message"] == "Stopped."),
        "{docs:?}"
    );

    // A failed start is JSON too, with the error in the message.
    std::fs::write(tmp.path().join("file"), b"").expect("write");
    let broken = format!(
        "[sources.p]\ntype = \"pipe\"\npath = \"{}/file/in.pipe\"\n[sinks.n]\ntype = \"null\"\ninputs = [\"p\"]\n",
        tmp.path().display()
    );
    let out = run_piped(
        &write_config(tmp.path(), &broken),
        &[("SLUICE_LOG_FORMAT", "json")],
    );
    assert_eq!(out.status.code(), Some(1));
    let docs = json_lines(&out);
    let err = docs
        .iter()
        .find(|d| d["level"] == "ERROR")
        .unwrap_or_else(|| panic!("no ERROR in {docs:?}"));
    let msg = err["fields"]["message"].as_str().expect("message");
    assert!(msg.contains("file exists and is not a directory"), "{msg}");
}

#[test]
fn an_unknown_log_format_is_a_usage_error() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let cfg = write_config(tmp.path(), ENDS_BY_ITSELF);
    let out = run_piped(&cfg, &[("SLUICE_LOG_FORMAT", "yaml")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("SLUICE_LOG_FORMAT must be `text` or `json`, not `yaml`"),
        "{stderr}"
    );
}
