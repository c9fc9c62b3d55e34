//! Directories components need are created at start (a FIFO's parent, a file
//! sink's fixed directory, a disk buffer's directory); when one cannot be, sluice
//! exits 1 before running with an error per component naming the directory, the
//! ancestor at fault, its owner and mode, and the user sluice runs as.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{Daemon, sluice_bin, wait_until};

/// A pipe source, a templated file sink and a disk-buffered null sink, all under
/// `$DIR/$SUB` (one sink per directory, as a sink whose buffer fails is not built).
fn config(sub: &str) -> String {
    format!(
        r#"
data_dir = "$DIR/{sub}/state"
[sources.in]
type = "pipe"
path = "$DIR/{sub}/run/in.pipe"
[sinks.out]
type = "file"
inputs = ["in"]
path = "$DIR/{sub}/out/{{tag}}/%Y.log"
[sinks.kept]
type = "null"
inputs = ["in"]
buffer = {{ type = "disk", max_bytes = 1048576 }}
"#
    )
}

#[test]
fn missing_directories_are_created_at_start() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let d = tmp.path();
    let mut daemon = Daemon::start(d, &config("a/b"));
    wait_until(Duration::from_secs(20), "the FIFO and directories", || {
        std::fs::symlink_metadata(d.join("a/b/run/in.pipe")).is_ok_and(|m| m.file_type().is_fifo())
            && d.join("a/b/out").is_dir()
            && d.join("a/b/state/buffers/kept").is_dir()
    });
    let status = daemon.stop();
    assert_eq!(status.code(), Some(0), "{}", daemon.stderr());
}

#[test]
fn an_unwritable_parent_is_named_with_its_owner_mode_and_our_uid() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let d = tmp.path();
    let ro = d.join("ro");
    std::fs::create_dir(&ro).expect("mkdir");
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).expect("chmod");
    // The unprivileged user must reach the config and the binary.
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let cfg = d.join("sluice.toml");
    std::fs::write(
        &cfg,
        config("ro/data").replace("$DIR", d.to_str().expect("UTF-8")),
    )
    .expect("write config");
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    let mut cmd = Command::new(sluice_bin());
    cmd.args(["run", "--config"])
        .arg(&cfg)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    // SAFETY: geteuid is a plain syscall.
    let uid = if unsafe { libc::geteuid() } == 0 {
        // Root writes anywhere: run as `nobody`, so the mode bits apply.
        // SAFETY: only async-signal-safe syscalls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(65534) != 0
                    || libc::setuid(65534) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        65534
    } else {
        // SAFETY: as above.
        unsafe { libc::geteuid() }
    };
    let out = cmd.output().expect("run sluice");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let fault = format!(
        "needs write and search permission on {} (owner uid ",
        ro.display()
    );
    for (component, dir, purpose) in [
        ("sources.in", "run", "parent of FIFO"),
        ("sinks.out", "out", "file sink path"),
        ("sinks.kept", "state/buffers/kept", "disk buffer"),
    ] {
        let want = format!(
            "Cannot start {component}: cannot create directory {}/data/{dir} ({purpose}",
            ro.display()
        );
        let line = stderr
            .lines()
            .find(|l| l.contains(&want))
            .unwrap_or_else(|| panic!("no `{want}` in:\n{stderr}"));
        assert!(line.contains(&fault), "{line}");
        assert!(line.contains("mode 0555"), "{line}");
        assert!(
            line.contains(&format!("sluice runs as uid {uid} ")),
            "{line}"
        );
    }
    assert!(!Path::new(&ro.join("data")).exists());
}
