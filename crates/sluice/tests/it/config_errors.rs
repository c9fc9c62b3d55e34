//! `sluice validate`: every error with FILE:LINE:COL, exit 2; valid → exit 0.

use std::process::Command;

use crate::common::sluice_bin;

fn validate(text: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(sluice_bin())
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).replace(path.to_str().unwrap(), "c.toml");
    (
        out.status.code().unwrap_or(-1),
        stderr,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

const GOOD: &str = r#"
[sources.gen]
type = "exec"
command = ["true"]
[sinks.out]
type = "file"
inputs = ["gen"]
path = "/tmp/x-{tag}-%Y.log"
"#;

#[test]
fn valid_config_exits_zero() {
    let (code, err, out) = validate(GOOD);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("valid"));
}

#[test]
fn unknown_key_has_position_and_suggestion() {
    let (code, err, _) = validate(&GOOD.replace("path =", "pth = \"a\"\npath ="));
    assert_eq!(code, 2);
    assert_eq!(
        err.trim(),
        "c.toml:8:1: sinks.out.pth: unknown key, did you mean `path`?"
    );
}

#[test]
fn wrong_type_is_reported_at_the_value() {
    let (code, err, _) = validate(&GOOD.replace("command = [\"true\"]", "command = 5"));
    assert_eq!(code, 2);
    assert!(
        err.starts_with("c.toml:4:11: sources.gen.command: invalid type"),
        "{err}"
    );
}

#[test]
fn missing_input_target_is_reported() {
    let (code, err, _) = validate(&GOOD.replace("inputs = [\"gen\"]", "inputs = [\"gne\"]"));
    assert_eq!(code, 2);
    assert_eq!(
        err.trim(),
        "c.toml:7:10: sinks.out.inputs: input `gne` is not a source, did you mean `gen`?"
    );
}

#[test]
fn duplicate_names_are_reported() {
    let (code, err, _) = validate(&format!(
        "{GOOD}\n[sinks.gen]\ntype = \"null\"\ninputs = [\"gen\"]\n"
    ));
    assert_eq!(code, 2);
    assert!(
        err.contains("c.toml:10:1: sinks.gen: name already used by a source"),
        "{err}"
    );
    let (code, err, _) = validate(&format!("{GOOD}\n[sources.gen]\ntype = \"stdin\"\n"));
    assert_eq!(code, 2);
    assert!(
        err.contains("c.toml:10:1: toml: invalid table header: duplicate key `gen`"),
        "{err}"
    );
}

#[test]
fn unreadable_file_is_exit_two() {
    let out = Command::new(sluice_bin())
        .args(["validate", "--config", "/nonexistent/sluice.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("/nonexistent/sluice.toml:1:1: file: cannot read config"),
        "{err}"
    );
}

#[test]
fn all_errors_reported_at_once() {
    let text = r#"
shutdown_timeout_sec = 5
[sources.gen]
type = "exec"
command = ["seq", "3"]
restrat = "never"
[sinks.out]
type = "fiel"
inputs = ["genn"]
[sinks.f2]
type = "file"
inputs = ["gen"]
path = "x-{tagg}"
rotate_bytes = 0
"#;
    let (code, err, _) = validate(text);
    assert_eq!(code, 2);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 6, "{err}");
    assert!(lines[0].starts_with("c.toml:2:1: config.shutdown_timeout_sec: unknown key"));
    assert!(
        lines[1]
            .starts_with("c.toml:6:1: sources.gen.restrat: unknown key, did you mean `restart`?")
    );
    assert!(
        lines[2]
            .starts_with("c.toml:8:8: sinks.out.type: unknown type `fiel`, did you mean `file`?")
    );
    assert!(lines[3].starts_with("c.toml:9:10: sinks.out.inputs: input `genn` is not a source"));
    assert!(
        lines
            .iter()
            .any(|l| l.contains("sinks.f2.path: unknown placeholder `{tagg}`")),
        "{err}"
    );
}

#[test]
fn unset_environment_variable_is_an_error_with_default_allowed() {
    let text = GOOD
        .replace("/tmp/x", "${SLUICE_IT_UNSET_VAR}/x")
        .replace("[\"true\"]", "[\"${SLUICE_IT_UNSET_2:-true}\"]");
    let (code, err, _) = validate(&text);
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("c.toml:8:9: ${SLUICE_IT_UNSET_VAR}: environment variable is not set"),
        "{err}"
    );
}

#[test]
fn a_source_or_route_output_nobody_consumes_is_refused() {
    // A second source wired to nothing: its events would be acknowledged and lost.
    let lonely = format!("{GOOD}[sources.fw]\ntype = \"forward\"\naddress = \"127.0.0.1:0\"\n");
    let (code, err, _) = validate(&lonely);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.trim()
            .starts_with("c.toml:9:1: sources.fw: source `fw` feeds nothing"),
        "{err}"
    );
    assert!(err.contains("a `null` sink to discard on purpose"), "{err}");
    // A rules port nobody reads.
    let port = GOOD.replace("inputs = [\"gen\"]", "inputs = [\"r.apps\"]")
        + "[routes.r]\ntype = \"rules\"\ninputs = [\"gen\"]\nrules = [{ match = \"app.**\", to = \"apps\" }]\ndefault = \"rest\"\n";
    let (code, err, _) = validate(&port);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("routes.r: route output `r.rest` feeds nothing"),
        "{err}"
    );
    assert!(!err.contains("r.apps` feeds"), "{err}");
}
