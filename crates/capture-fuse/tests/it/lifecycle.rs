//! Mount lifecycle: ownership, stale mounts of dead daemons, lazy unmount, errors,
//! and what is (not) captured.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sluice_capture_fuse::{Capture, CaptureConfig, MountError, RecvTimeoutError, UnmountOutcome};

use crate::common::*;

const HOLD_DIR: &str = "SLUICE_CAPTURE_TEST_HOLD_DIR";
const HOLD_AUTO: &str = "SLUICE_CAPTURE_TEST_HOLD_AUTO_UNMOUNT";
const MOUNTED: &str = "SLUICE_CAPTURE_TEST_MOUNTED";

/// Not a test of its own: the body of a separate daemon process that the tests below
/// start (by re-running this binary) and kill. Does nothing when run normally.
#[test]
fn helper_hold_mount_until_killed() {
    let Some(dir) = std::env::var_os(HOLD_DIR) else {
        return;
    };
    let mut cfg = CaptureConfig::new(dir);
    cfg.auto_unmount = std::env::var_os(HOLD_AUTO).is_some();
    let (_handle, _rx) = Capture::mount(cfg).expect("helper mount");
    println!("{MOUNTED}");
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn spawn_holder(dir: &Path, auto_unmount: bool) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "lifecycle::helper_hold_mount_until_killed",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(HOLD_DIR, dir)
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    if auto_unmount {
        cmd.env(HOLD_AUTO, "1");
    }
    let mut child = cmd.spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let mounted = BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.contains(MOUNTED));
    assert!(mounted, "helper mounted");
    child
}

fn sluice_mounted_at(dir: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .any(|l| l.split(' ').nth(4) == dir.to_str() && l.contains(" - fuse.sluice "))
}

#[test]
fn stale_mount_of_a_killed_daemon_is_cleared_at_mount() {
    if !fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    std::fs::write(dir.join("pre"), b"existing\n").unwrap();
    let mut holder = spawn_holder(&dir, false);
    holder.kill().unwrap();
    holder.wait().unwrap();
    let err = std::fs::metadata(&dir).unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ENOTCONN),
        "dead mount left behind"
    );
    let (handle, _rx) = Capture::mount(CaptureConfig::new(&dir)).expect("stale mount cleared");
    assert_eq!(std::fs::read(dir.join("pre")).unwrap(), b"existing\n");
    assert_eq!(handle.unmount().unwrap(), UnmountOutcome::Complete);
    assert!(!sluice_mounted_at(&dir));
    assert_eq!(std::fs::read(dir.join("pre")).unwrap(), b"existing\n");
}

#[test]
fn auto_unmount_uncovers_the_directory_when_the_daemon_dies() {
    if !fuse_available() {
        return;
    }
    assert!(
        fusermount3_installed(),
        "auto_unmount needs fusermount3, which is not installed: run scripts/install-deps.sh \
         (fuse3), or set SLUICE_SKIP_FUSE_TESTS=1 to skip the FUSE tests on purpose"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    std::fs::write(dir.join("pre"), b"x").unwrap();
    let mut holder = spawn_holder(&dir, true);
    assert!(sluice_mounted_at(&dir));
    holder.kill().unwrap();
    holder.wait().unwrap();
    wait_for(
        "fusermount3 to detach the dead mount",
        Duration::from_secs(10),
        || !sluice_mounted_at(&dir),
    );
    assert_eq!(std::fs::read(dir.join("pre")).unwrap(), b"x");
}

#[test]
fn a_directory_owned_by_a_live_sluice_is_refused() {
    if !fuse_available() {
        return;
    }
    // Another process.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    let mut holder = spawn_holder(&dir, true);
    match Capture::mount(CaptureConfig::new(&dir)) {
        Err(e @ MountError::AlreadyMounted { .. }) => {
            let MountError::AlreadyMounted { pid, .. } = &e else {
                unreachable!()
            };
            assert_eq!(*pid, Some(holder.id()));
            assert!(e.to_string().contains(dir.to_str().unwrap()), "{e}");
        }
        other => panic!("expected AlreadyMounted, got {other:?}"),
    }
    holder.kill().unwrap();
    holder.wait().unwrap();
    // This process.
    let m = Mounted::new(|_| {});
    match Capture::mount(CaptureConfig::new(&m.dir)) {
        Err(MountError::AlreadyMounted { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
        other => panic!("expected AlreadyMounted, got {other:?}"),
    }
    m.finish();
}

#[test]
fn unmount_with_a_file_open_detaches_lazily_and_keeps_serving_it() {
    if !fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    let mut cfg = CaptureConfig::new(&dir);
    cfg.capture_own_process = true;
    cfg.unmount_grace = Duration::from_millis(300);
    let (handle, rx) = Capture::mount(cfg).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("held.log"))
        .unwrap();
    f.write_all(b"a\n").unwrap();
    assert_eq!(handle.unmount().unwrap(), UnmountOutcome::Detached);
    assert!(!sluice_mounted_at(&dir), "new opens see the real directory");
    f.write_all(b"b\n").unwrap();
    let got: Vec<_> = (0..2)
        .map(|_| rx.recv_timeout(Duration::from_secs(5)).unwrap().data)
        .collect();
    assert_eq!(got, [&b"a\n"[..], &b"b\n"[..]]);
    drop(f);
    // Last file closed: the detached filesystem goes away and the queue disconnects.
    let mut ended = false;
    for _ in 0..100 {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Err(RecvTimeoutError::Disconnected) => {
                ended = true;
                break;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Ok(w) => panic!("unexpected capture {w:?}"),
        }
    }
    assert!(ended, "capture ended after the last close");
    assert_eq!(std::fs::read(dir.join("held.log")).unwrap(), b"a\nb\n");
}

#[test]
fn configuration_errors_name_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing");
    let err = Capture::mount(CaptureConfig::new(&missing)).unwrap_err();
    if fuse_available() {
        assert!(matches!(err, MountError::Directory { .. }), "{err:?}");
        assert!(err.to_string().contains("missing"), "{err}");
        let file = tmp.path().join("file");
        std::fs::write(&file, b"").unwrap();
        let err = Capture::mount(CaptureConfig::new(&file)).unwrap_err();
        assert!(matches!(err, MountError::NotADirectory { .. }), "{err:?}");
    }
    let mut cfg = CaptureConfig::new(tmp.path());
    cfg.include = vec!["a[".into()];
    let err = Capture::mount(cfg).unwrap_err();
    assert!(matches!(err, MountError::InvalidGlob { ref pattern, .. } if pattern == "a["));
    let mut cfg = CaptureConfig::new(tmp.path());
    cfg.queue_capacity = 0;
    assert!(matches!(
        Capture::mount(cfg).unwrap_err(),
        MountError::InvalidConfig { .. }
    ));
    let mut cfg = CaptureConfig::new(tmp.path());
    cfg.quota_bytes_per_sec = Some(0);
    assert!(matches!(
        Capture::mount(cfg).unwrap_err(),
        MountError::InvalidConfig { .. }
    ));
    let err = Capture::mount(CaptureConfig::new("/")).unwrap_err();
    assert!(matches!(err, MountError::InvalidConfig { .. }), "{err:?}");
}

#[test]
fn globs_select_files_and_own_writes_pass_uncaptured() {
    if !fuse_available() {
        return;
    }
    let m = Mounted::new(|c| {
        c.include = vec!["*.log".into()];
        c.exclude = vec!["secret/**".into()];
    });
    sh(
        &m.dir,
        "mkdir secret sub && echo a > a.log && echo b > b.txt && echo c > secret/c.log \
         && echo d > sub/d.log",
    );
    // Written by this process: passed through, not captured.
    std::fs::write(m.path("own.log"), b"own\n").unwrap();
    assert_eq!(std::fs::read(m.path("own.log")).unwrap(), b"own\n");
    let done = m.finish();
    let mut paths: Vec<_> = done
        .writes
        .iter()
        .map(|w| {
            w.path
                .strip_prefix(&done.dir)
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    paths.sort();
    assert_eq!(paths, ["a.log", "sub/d.log"]);
    assert_eq!(std::fs::read(done.dir.join("b.txt")).unwrap(), b"b\n");
    assert_eq!(
        std::fs::read(done.dir.join("secret/c.log")).unwrap(),
        b"c\n"
    );
}

#[test]
fn writers_that_predate_the_mount_are_reported_and_bypass_capture() {
    if !fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    let mut holder = Command::new("sh")
        .arg("-c")
        .arg("exec 3>>held.log; echo ready; read go; echo late >&3")
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready, "ready\n");
    let (handle, rx) = Capture::mount(CaptureConfig::new(&dir)).unwrap();
    let found = handle.pre_mount_writers();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].pid, holder.id());
    assert_eq!(found[0].path, dir.join("held.log"));
    holder.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(holder.wait().unwrap().success());
    // The bytes are there (same backing file) but went around the mount.
    assert_eq!(std::fs::read(dir.join("held.log")).unwrap(), b"late\n");
    assert_eq!(handle.unmount().unwrap(), UnmountOutcome::Complete);
    assert_eq!(
        rx.try_recv().unwrap_err(),
        sluice_capture_fuse::TryRecvError::Disconnected
    );
}

#[test]
fn nested_watched_directories_are_refused() {
    if !fuse_available() {
        return;
    }
    let m = Mounted::new(|_| {});
    std::fs::create_dir(m.path("inner")).unwrap();
    match Capture::mount(CaptureConfig::new(m.path("inner"))) {
        Err(MountError::Nested { other, .. }) => assert_eq!(other, m.dir),
        other => panic!("expected Nested, got {other:?}"),
    }
    // (Other tests' mounts may be found first: all live under the same parent.)
    let parent = m.dir.parent().unwrap();
    match Capture::mount(CaptureConfig::new(parent)) {
        Err(MountError::Nested { other, .. }) => assert!(other.starts_with(parent)),
        other => panic!("expected Nested, got {other:?}"),
    }
    m.finish();
}

const NO_FUSERMOUNT: &str = "SLUICE_CAPTURE_TEST_NO_FUSERMOUNT";

/// Not a test of its own: run by the test below as an unprivileged user.
#[test]
fn helper_mount_as_unprivileged_user() {
    if std::env::var_os(NO_FUSERMOUNT).is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    match Capture::mount(CaptureConfig::new(tmp.path())) {
        Err(e @ MountError::FusermountMissing) => println!("RESULT FusermountMissing: {e}"),
        other => println!("RESULT unexpected: {other:?}"),
    }
}

#[test]
fn unprivileged_mount_without_fusermount3_is_a_clear_error() {
    if !fuse_available() {
        return;
    }
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "lifecycle::helper_mount_as_unprivileged_user",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(NO_FUSERMOUNT, "1")
        .env("FUSERMOUNT_PATH", "/nonexistent/fusermount3")
        .env("TMPDIR", "/tmp")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() || !stdout.is_empty(),
        "cannot run the test binary as nobody (setpriv from util-linux, and a target dir \
         readable by others, are needed): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("RESULT FusermountMissing: not root and fusermount3 is not installed"),
        "{stdout}"
    );
}
