//! `kill -9` of the daemon: writers get an error, the next start clears the
//! stale mount.

use super::*;

#[test]
fn kill_9_gives_writers_an_error_and_the_next_start_clears_the_stale_mount() {
    if !fuse_usable() {
        return;
    }
    let g = MountGuard::new();
    // Without auto_unmount the dead mount stays (with it, fusermount3 detaches it).
    let config = source_config("auto_unmount = false");
    let mut d = g.start(&config);
    let mut writer = Command::new("sh")
        .arg("-c")
        .arg("exec 3>>app.log; i=0; while :; do /bin/echo line $i >&3 || exit 7; i=$((i+1)); sleep 0.005; done")
        .current_dir(&g.watched)
        .stderr(Stdio::piped())
        .spawn()
        .expect("writer");
    wait_until(Duration::from_secs(10), "the writer to write", || {
        std::fs::read_to_string(g.file("app.log")).is_ok_and(|s| s.lines().count() > 20)
    });
    d.child.kill().expect("kill -9");
    d.child.wait().expect("reap");

    // The writer fails instead of hanging.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = writer.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = writer.kill();
            panic!("writer hung after sluice was killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut writer.stderr.take().expect("stderr"), &mut err)
        .expect("read");
    assert_eq!(status.code(), Some(7), "{err}");
    // ENOTCONN, or ECONNABORTED for a write that was in flight at the kill.
    assert!(
        err.contains("not connected") || err.contains("connection abort"),
        "{err}"
    );
    // Cached attributes may still answer a stat; a directory listing asks the daemon.
    let e = std::fs::read_dir(&g.watched).expect_err("stale mount");
    assert_eq!(e.raw_os_error(), Some(libc::ENOTCONN));
    assert_eq!(
        fuse_mounts_at(&g.watched),
        1,
        "the dead mount is still there"
    );

    // Next start: the stale mount is cleared and capture resumes.
    std::fs::remove_file(g.dir().join("out.jsonl")).ok();
    let mut d = g.start(&config);
    assert!(
        d.stderr().contains("Clearing stale capture mount"),
        "{}",
        d.stderr()
    );
    assert_eq!(
        fuse_mounts_at(&g.watched),
        1,
        "one live mount, the stale one gone"
    );
    sh(&g.watched, "echo after restart >> app.log");
    assert!(d.stop().success(), "{}", d.stderr());
    let docs = documents(&g.dir().join("out.jsonl"));
    assert_eq!(docs.len(), 1, "{docs:?}");
    assert_eq!(message(&docs[0].1), b"after restart\n");
    assert!(
        std::fs::read_to_string(g.file("app.log"))
            .unwrap()
            .ends_with("after restart\n")
    );
}
