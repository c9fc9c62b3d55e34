//! The file source's joins end to end, file → file sink (`encoding = "json"`):
//! partial container lines (CRI `P`, Docker `json-file` parts) still waiting
//! for their end while the sink fails batches (each failure sends the reader
//! back to the checkpoint: the parts are read again and must not be joined
//! twice), and `multiline` over container lines (`format = "cri"`), with
//! `condition = "halt_before"`, across a kill -9.
//!
//! The sink fails for real: its path is a symlink to `/dev/full`, whose writes
//! fail with ENOSPC, until the test points the symlink at a regular file.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::common::wait_until;
use crate::file_source_cases::{events, messages};
use crate::file_support::{append, json_config as config, start};

const T: &str = "2024-01-01T00:00:00.000000001Z";

fn docker(log: &str, stream: &str) -> String {
    format!("{{\"log\":\"{log}\",\"stream\":\"{stream}\",\"time\":\"{T}\"}}\n")
}

/// Point the sink's path `out` at `/dev/full` (writes fail) or at a regular file.
fn point(out: &Path, to: &Path) {
    let tmp = out.with_extension("tmp");
    std::os::unix::fs::symlink(to, &tmp).unwrap();
    std::fs::rename(&tmp, out).unwrap();
}

/// Partial lines in flight while the sink fails: every failed batch rewinds the
/// reader to the checkpoint (before the first part), so the parts are read
/// again — and must not be joined again onto the parts already held.
#[test]
fn partial_lines_are_joined_once_after_failed_batches() {
    let dir = tempfile::tempdir().unwrap();
    let pods = dir.path().join("pods/ns_web_u1/app");
    let dockers = dir.path().join("docker/c1");
    std::fs::create_dir_all(&pods).unwrap();
    std::fs::create_dir_all(&dockers).unwrap();
    let (out_c, out_d) = (dir.path().join("c.json"), dir.path().join("d.json"));
    let (real_c, real_d) = (dir.path().join("c.real"), dir.path().join("d.real"));
    point(&out_c, Path::new("/dev/full"));
    point(&out_d, Path::new("/dev/full"));
    let cri = pods.join("0.log");
    let dj = dockers.join("c1-json.log");
    // A full line, then the first parts of a line whose end is not written yet.
    append(
        &cri,
        &format!("{T} stdout F before\n{T} stdout P hel\n{T} stdout P lo \n"),
    );
    append(
        &dj,
        &(docker("d-before\\n", "stdout") + &docker("wor", "stdout") + &docker("ld ", "stdout")),
    );
    let cfg = format!(
        r#"
        data_dir = "$DIR/data"
        [sources.c]
        type = "file"
        include = ["{}/*.log"]
        format = "cri"
        [sources.d]
        type = "file"
        include = ["{}/*.log"]
        format = "docker_json"
        [sinks.c_out]
        type = "file"
        inputs = ["c"]
        path = "{}"
        encoding = "json"
        [sinks.d_out]
        type = "file"
        inputs = ["d"]
        path = "{}"
        encoding = "json"
        "#,
        pods.display(),
        dockers.display(),
        out_c.display(),
        out_d.display()
    );
    let mut d = start(dir.path(), &cfg);
    // Each sink failed the batch with the full line (ENOSPC): its reader goes
    // back to the checkpoint, before the first part, and reads the parts again.
    wait_until(Duration::from_secs(20), "both sinks to fail", || {
        d.stderr().matches("Writing failed").count() >= 2
    });
    // The sinks work again: the full lines come through once read again.
    std::fs::write(&real_c, "").unwrap();
    std::fs::write(&real_d, "").unwrap();
    point(&out_c, &real_c);
    point(&out_d, &real_d);
    wait_until(Duration::from_secs(20), "the full lines", || {
        messages(&real_c).contains(&"before".to_owned())
            && messages(&real_d).contains(&"d-before".to_owned())
    });
    append(&cri, &format!("{T} stdout F there\n"));
    append(&dj, &docker("!\\n", "stdout"));
    wait_until(Duration::from_secs(20), "the joined lines", || {
        messages(&real_c).len() >= 2 && messages(&real_d).len() >= 2
    });
    assert!(d.stop().success(), "{}", d.stderr());
    // A failed batch's full line may come twice; a joined line comes whole,
    // each part once.
    let mut c = messages(&real_c);
    c.dedup();
    assert_eq!(c, ["before", "hello there"]);
    let mut m = messages(&real_d);
    m.dedup();
    assert_eq!(m, ["d-before", "world !"]);
}

/// The checkpoint offset of the only file, once written.
fn checkpoint_offset(dir: &Path) -> Option<u64> {
    let p = dir.join("data/file_source/f/checkpoints.json");
    let v: Value = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
    v["files"][0]["offset"].as_u64()
}

fn cri_line(stream: &str, tag: &str, msg: &str) -> String {
    format!("{T} {stream} {tag} {msg}\n")
}

/// `multiline` with `format = "cri"`: the rule sees container lines with their
/// parts joined, per stream; `halt_before` ends an event before the next line
/// matching `start`. An event still open at a kill -9 (its first line split in
/// parts) is read again and completed after the restart: nothing lost, nothing
/// twice.
#[test]
fn multiline_halt_before_on_cri_lines_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let pod = dir.path().join("pods/prod_api-7_u-9/java");
    std::fs::create_dir_all(&pod).unwrap();
    let log = pod.join("0.log");
    let before_e2 = cri_line("stdout", "F", "E1 start")
        + &cri_line("stdout", "P", "\tat lo")
        + &cri_line("stdout", "F", "ng1")
        + &cri_line("stdout", "F", "\tat x1");
    let open = cri_line("stdout", "P", "E2 st")
        + &cri_line("stdout", "F", "art")
        + &cri_line("stderr", "F", "E9 err")
        + &cri_line("stderr", "F", " more")
        + &cri_line("stdout", "F", "\tat b2");
    append(&log, &(before_e2.clone() + &open));
    let cfg = config(
        &format!("{}/*.log", pod.display()),
        r#"format = "cri"
        multiline = { start = "^E[0-9]+ ", condition = "halt_before", timeout_ms = 60000 }"#,
    );
    let mut d = start(dir.path(), &cfg);
    let out = dir.path().join("out.json");
    wait_until(Duration::from_secs(20), "E1", || !messages(&out).is_empty());
    // E1 is acknowledged; the checkpoint stays before E2's first part, the
    // earliest line of an open event.
    let held = before_e2.len() as u64;
    wait_until(Duration::from_secs(20), "the checkpoint before E2", || {
        checkpoint_offset(dir.path()) == Some(held)
    });
    d.signal(libc::SIGKILL);
    let _ = d.wait(Duration::from_secs(10));
    append(
        &log,
        &(cri_line("stdout", "F", "\tat c2")
            + &cri_line("stdout", "F", "E3 next")
            + &cri_line("stderr", "F", "E10 err")),
    );
    let mut d = start(dir.path(), &cfg);
    wait_until(Duration::from_secs(20), "E2 and E9", || {
        messages(&out).len() >= 3
    });
    assert!(d.stop().success(), "{}", d.stderr());
    let ev = events(&out);
    let mut m = messages(&out);
    m.sort();
    assert_eq!(
        m,
        [
            "E1 start\n\tat long1\n\tat x1",
            "E10 err",
            "E2 start\n\tat b2\n\tat c2",
            "E3 next",
            "E9 err\n more",
        ],
        "each event once, whole"
    );
    let e1 = &ev[0];
    assert_eq!(e1["stream"], "stdout");
    assert_eq!(e1["kubernetes.pod"], "api-7", "{e1}");
    assert_eq!(e1["kubernetes.namespace"], "prod");
    assert!(
        e1["time"]
            .as_str()
            .unwrap()
            .starts_with("2024-01-01T00:00:00.000000001")
    );
    let e9 = ev.iter().find(|e| e["message"] == "E9 err\n more").unwrap();
    assert_eq!(e9["stream"], "stderr");
}
