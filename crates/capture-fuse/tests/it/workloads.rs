//! Real programs through the mount, compared with the same run on a plain directory.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::common::*;

#[test]
fn shell_append_is_captured_with_writer_identity() {
    shell_append_is_captured_with_writer_identity_case(false);
}

#[test]
fn shell_append_is_captured_with_writer_identity_with_writeback() {
    shell_append_is_captured_with_writer_identity_case(true);
}

fn shell_append_is_captured_with_writer_identity_case(writeback: bool) {
    if !fuse_available() {
        return;
    }
    let plain = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let m = Mounted::new(|c| c.writeback = writeback);
    let pidfile = out.path().join("pid");
    let script = format!(
        "echo hello >> f; echo world >> f; echo $$ > {}",
        pidfile.display()
    );
    sh(plain.path(), &script);
    sh(&m.dir, &script);
    let sh_pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_same_tree(plain.path(), &m.dir);
    let ino = std::fs::metadata(m.path("f")).unwrap().ino();
    let done = m.finish();
    assert_same_tree(plain.path(), &done.dir);
    assert_captures_rebuild_tree(&done.dir, &done.writes);
    let writes = &done.writes;
    assert_eq!(writes.len(), 2, "{writes:?}");
    assert_eq!(done.stats.captured_writes, 2);
    assert_eq!(done.stats.captured_bytes, 12);
    assert_eq!(&writes[0].data[..], b"hello\n");
    assert_eq!(&writes[1].data[..], b"world\n");
    assert_eq!((writes[0].offset, writes[1].offset), (0, 6));
    for w in writes {
        assert_eq!(*w.path, *done.dir.join("f"));
        assert_eq!(w.pid, sh_pid);
        assert_eq!(w.tid, sh_pid);
        assert_eq!((w.uid, w.gid), (0, 0));
        assert_eq!((&*w.user, &*w.group), ("root", "root"));
        assert!(
            w.command.starts_with("sh -c echo hello >> f"),
            "command {:?}",
            w.command
        );
        assert_eq!(w.inode, ino);
        assert_eq!(w.from_page_cache, writeback);
        assert!(w.time.elapsed().unwrap().as_secs() < 60);
    }
}

#[test]
fn non_root_writer_owns_what_it_creates_and_is_identified() {
    if !fuse_available() {
        return;
    }
    let plain = tempfile::tempdir().unwrap();
    let m = Mounted::new(|_| {});
    let script = "setpriv --reuid=65534 --regid=65534 --clear-groups -- sh -c \
                  'umask 027; echo x > f; echo y >> f; mkdir d; ln -s f l; echo z > d/g'";
    for dir in [plain.path(), m.dir.as_path()] {
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        sh(dir, script);
    }
    assert_same_tree(plain.path(), &m.dir);
    let done = m.finish();
    assert_same_tree(plain.path(), &done.dir);
    assert_captures_rebuild_tree(&done.dir, &done.writes);
    let meta = std::fs::symlink_metadata(done.dir.join("l")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid()),
        (65534, 65534),
        "symlink owned by the caller"
    );
    assert_eq!(done.writes.len(), 3);
    for w in &done.writes {
        assert_eq!((w.uid, w.gid), (65534, 65534));
        assert_eq!((&*w.user, &*w.group), ("nobody", "nogroup"));
        assert!(w.command.contains("echo x > f"), "{:?}", w.command);
    }
}

const ROTATING_LOGGER: &str = r#"
import logging, logging.handlers, sys
h = logging.handlers.RotatingFileHandler("app.log", maxBytes=20000, backupCount=60)
h.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
log = logging.getLogger("svc")
log.addHandler(h)
log.setLevel(logging.INFO)
for i in range(6000):
    log.info("request %d handled path=/api/v1/items/%d status=200 bytes=%d", i, i * 7, i * 13)
"#;

#[test]
fn python_rotating_logger_output_is_identical_and_fully_captured() {
    python_rotating_logger_output_is_identical_and_fully_captured_case(false);
}

#[test]
fn python_rotating_logger_output_is_identical_and_fully_captured_with_writeback() {
    python_rotating_logger_output_is_identical_and_fully_captured_case(true);
}

fn python_rotating_logger_output_is_identical_and_fully_captured_case(writeback: bool) {
    if !fuse_available() {
        return;
    }
    let plain = tempfile::tempdir().unwrap();
    let m = Mounted::new(|c| c.writeback = writeback);
    for dir in [plain.path(), m.dir.as_path()] {
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(ROTATING_LOGGER)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_same_tree(plain.path(), &m.dir);
    let done = m.finish();
    assert_same_tree(plain.path(), &done.dir);
    assert_captures_rebuild_tree(&done.dir, &done.writes);
    let backups = std::fs::read_dir(&done.dir).unwrap().count() - 1;
    assert!(backups >= 10, "expected several rotations, got {backups}");
    // Every line was written while its file was named app.log: the captures of that
    // path, in order, are the backups oldest first, then the live file.
    let mut expected = Vec::new();
    for i in (1..=backups).rev() {
        expected.extend(std::fs::read(done.dir.join(format!("app.log.{i}"))).unwrap());
    }
    expected.extend(std::fs::read(done.dir.join("app.log")).unwrap());
    let captured: Vec<u8> = done
        .writes_to("app.log")
        .iter()
        .flat_map(|w| w.data.iter().copied())
        .collect();
    assert_eq!(captured.len(), expected.len());
    assert!(
        captured == expected,
        "captured stream equals the rotated files in order"
    );
    assert_eq!(done.writes_to("app.log").len(), done.writes.len());
}

#[test]
fn dd_of_100_mib_is_byte_identical_and_captured_exactly() {
    dd_of_100_mib_is_byte_identical_and_captured_exactly_case(false);
}

#[test]
fn dd_of_100_mib_is_byte_identical_and_captured_exactly_with_writeback() {
    dd_of_100_mib_is_byte_identical_and_captured_exactly_case(true);
}

fn dd_of_100_mib_is_byte_identical_and_captured_exactly_case(writeback: bool) {
    if !fuse_available() {
        return;
    }
    let src_dir = tempfile::tempdir().unwrap();
    let src = src_dir.path().join("src.bin");
    std::fs::write(&src, pseudo_random(100 << 20, 42)).unwrap();
    let m = Mounted::new(|c| c.writeback = writeback);
    sh(
        &m.dir,
        &format!(
            "dd if={} of=big bs=1M status=none conv=fsync",
            src.display()
        ),
    );
    let done = m.finish();
    let expected = std::fs::read(&src).unwrap();
    let got = std::fs::read(done.dir.join("big")).unwrap();
    assert!(got == expected, "dd output differs from source");
    assert_captures_rebuild_tree(&done.dir, &done.writes);
    assert_eq!(done.stats.captured_bytes, 100 << 20);
    assert_eq!(done.stats.dropped_queue_full + done.stats.dropped_quota, 0);
}

fn make_source_tree(root: &Path) {
    std::fs::create_dir_all(root.join("a/b/c")).unwrap();
    std::fs::create_dir_all(root.join("empty")).unwrap();
    std::fs::write(root.join("top.txt"), b"top\n").unwrap();
    std::fs::write(root.join("empty.txt"), b"").unwrap();
    for (i, size) in [1usize, 4095, 4096, 70_000, 1 << 20, 3 << 20]
        .iter()
        .enumerate()
    {
        std::fs::write(root.join(format!("a/f{i}")), pseudo_random(*size, i as u64)).unwrap();
    }
    for i in 0..200 {
        std::fs::write(
            root.join(format!("a/b/c/small{i:03}")),
            format!("line {i}\n"),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink("../top.txt", root.join("a/link")).unwrap();
    std::fs::set_permissions(
        root.join("a/f1"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
}

#[test]
fn cp_of_a_tree_matches_plain_copy() {
    cp_of_a_tree_matches_plain_copy_case(false);
}

#[test]
fn cp_of_a_tree_matches_plain_copy_with_writeback() {
    cp_of_a_tree_matches_plain_copy_case(true);
}

fn cp_of_a_tree_matches_plain_copy_case(writeback: bool) {
    if !fuse_available() {
        return;
    }
    let src = tempfile::tempdir().unwrap();
    make_source_tree(src.path());
    let plain = tempfile::tempdir().unwrap();
    let m = Mounted::new(|c| c.writeback = writeback);
    let script = format!("cp -r {}/. copy", src.path().display());
    sh(plain.path(), &script);
    sh(&m.dir, &script);
    assert_same_tree(plain.path(), &m.dir);
    let done = m.finish();
    assert_same_tree(plain.path(), &done.dir);
    assert_captures_rebuild_tree(&done.dir, &done.writes);
}

#[test]
fn eight_concurrent_appenders_keep_lines_whole_and_captures_exact() {
    if !fuse_available() {
        return;
    }
    let m = Mounted::new(|_| {});
    let children: Vec<_> = (0..8)
        .map(|n| {
            std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "exec 3>>shared.log; i=0; while [ $i -lt 1500 ]; do \
                     echo \"writer {n} line $i padding-padding-padding\" >&3; i=$((i+1)); done"
                ))
                .current_dir(&m.dir)
                .spawn()
                .unwrap()
        })
        .collect();
    let pids: Vec<u32> = children.iter().map(|c| c.id()).collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let done = m.finish();
    let content = String::from_utf8(std::fs::read(done.dir.join("shared.log")).unwrap()).unwrap();
    let mut lines: Vec<&str> = content.lines().collect();
    lines.sort_unstable();
    let mut expected: Vec<String> = (0..8)
        .flat_map(|n| {
            (0..1500).map(move |i| format!("writer {n} line {i} padding-padding-padding"))
        })
        .collect();
    expected.sort_unstable();
    assert_eq!(lines, expected);
    assert_captures_rebuild_tree(&done.dir, &done.writes);
    assert_eq!(done.writes.len(), 8 * 1500);
    for w in &done.writes {
        let line = std::str::from_utf8(&w.data).unwrap();
        let n: usize = line.split(' ').nth(1).unwrap().parse().unwrap();
        assert_eq!(w.pid, pids[n], "line {line:?} attributed to its writer");
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
    }
}

/// 200 appends by separate shell processes, rotated by rename at line 100.
fn tail_workload(dir: &Path) -> String {
    let mut expected = String::new();
    for i in 0..200 {
        if i == 100 {
            // Rotation while tail is following by name.
            sh(dir, "mv f f.1 && : > f");
        }
        let line = format!("event {i}\n");
        sh(dir, &format!("printf 'event {i}\\n' >> f"));
        expected.push_str(&line);
        if i % 20 == 0 {
            std::thread::sleep(std::time::Duration::from_millis(60));
        }
    }
    expected
}

#[test]
fn tail_follows_a_file_written_and_rotated_through_the_mount() {
    tail_follows_a_file_written_and_rotated_through_the_mount_case(false);
}

#[test]
fn tail_follows_a_file_written_and_rotated_through_the_mount_with_writeback() {
    tail_follows_a_file_written_and_rotated_through_the_mount_case(true);
}

fn tail_follows_a_file_written_and_rotated_through_the_mount_case(writeback: bool) {
    if !fuse_available() {
        return;
    }
    let plain = tempfile::tempdir().unwrap();
    std::fs::write(plain.path().join("f"), b"").unwrap();
    tail_workload(plain.path());
    let m = Mounted::new(|c| c.writeback = writeback);
    std::fs::write(m.path("f"), b"").unwrap();
    let outdir = tempfile::tempdir().unwrap();
    let tail_out = outdir.path().join("tail.out");
    let mut tail = std::process::Command::new("tail")
        .args(["-F", "-n", "+1", "-s", "0.05"])
        .arg(m.path("f"))
        .stdout(std::fs::File::create(&tail_out).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let expected = tail_workload(&m.dir);
    wait_for(
        "tail to print every line",
        std::time::Duration::from_secs(20),
        || std::fs::read_to_string(&tail_out).unwrap() == expected,
    );
    tail.kill().unwrap();
    tail.wait().unwrap();
    assert_same_tree(plain.path(), &m.dir);
    let done = m.finish();
    assert_same_tree(plain.path(), &done.dir);
    assert_captures_rebuild_tree(&done.dir, &done.writes);
    assert_eq!(done.writes.len(), 200);
    let captured: Vec<u8> = done
        .writes
        .iter()
        .flat_map(|w| w.data.iter().copied())
        .collect();
    assert_eq!(captured, expected.as_bytes(), "captures in write order");
}

#[test]
fn quota_drops_captures_but_never_bytes() {
    if !fuse_available() {
        return;
    }
    let m = Mounted::new(|c| {
        c.quota_bytes_per_sec = Some(2_000);
        c.quota_burst_bytes = Some(2_000);
    });
    let started = std::time::Instant::now();
    // 1,000 writes of 100 bytes each.
    sh(
        &m.dir,
        "i=0; exec 3>>q.log; while [ $i -lt 1000 ]; do \
         printf '%099d\\n' $i >&3; i=$((i+1)); done",
    );
    let elapsed = started.elapsed().as_secs_f64();
    let done = m.finish();
    let content = std::fs::read(done.dir.join("q.log")).unwrap();
    assert_eq!(content.len(), 100_000, "every byte reached the disk");
    let s = done.stats;
    assert_eq!(s.captured_writes + s.dropped_quota, 1000);
    assert!(s.dropped_quota > 0, "{s:?}");
    assert_eq!(s.dropped_quota_bytes, s.dropped_quota * 100);
    let allowed = 2_000.0 + 2_000.0 * elapsed + 100.0;
    assert!(
        (s.captured_bytes as f64) <= allowed,
        "{s:?} over {elapsed}s"
    );
    // What was captured is exactly what is on disk at those offsets.
    for w in &done.writes {
        let at = w.offset as usize;
        assert_eq!(&content[at..at + w.data.len()], &w.data[..]);
    }
}

#[test]
fn full_queue_drops_and_counts_without_blocking_the_writer() {
    if !fuse_available() {
        return;
    }
    let (m, rx) = Mounted::with_receiver(|c| c.queue_capacity = 8);
    let started = std::time::Instant::now();
    sh(
        &m.dir,
        "i=0; exec 3>>busy.log; while [ $i -lt 5000 ]; do \
         printf '%099d\\n' $i >&3; i=$((i+1)); done",
    );
    let elapsed = started.elapsed();
    let stats = m.stats();
    assert_eq!(stats.captured_writes, 8);
    assert_eq!(stats.dropped_queue_full, 5000 - 8);
    assert_eq!(stats.dropped_queue_full_bytes, (5000 - 8) * 100);
    assert!(
        elapsed < std::time::Duration::from_secs(60),
        "writer took {elapsed:?}"
    );
    assert_eq!(rx.len(), 8);
    let done = m.finish();
    assert_eq!(
        std::fs::read(done.dir.join("busy.log")).unwrap().len(),
        500_000
    );
    let first: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
    assert_eq!(first.len(), 8);
    assert_eq!(first[0].offset, 0, "the queue kept the oldest writes");
}

#[test]
fn exec_and_threads_are_attributed_to_the_right_program_and_process() {
    if !fuse_available() {
        return;
    }
    let m = Mounted::new(|_| {});
    let py = "import os, threading\n\
              def w(i):\n    os.write(3, b'thread %d\\n' % i)\n\
              ts = [threading.Thread(target=w, args=(i,)) for i in range(4)]\n\
              [t.start() for t in ts]; [t.join() for t in ts]\n\
              os.write(3, b'main\\n')\n";
    std::fs::write(m.path("prog.py"), py).unwrap();
    let out = sh(
        &m.dir,
        "exec 3>>f; echo from-shell >&3; echo $$; exec python3 prog.py",
    );
    let pid: u32 = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let done = m.finish();
    let writes = done.writes_to("f");
    assert_eq!(writes.len(), 6);
    assert!(
        writes.iter().all(|w| w.pid == pid),
        "same process across exec"
    );
    assert_eq!(&writes[0].data[..], b"from-shell\n");
    assert!(
        writes[0].command.starts_with("sh -c exec 3>>f"),
        "{:?}",
        writes[0].command
    );
    for w in &writes[1..] {
        // (python3 may be a shim that execs the real interpreter by full path)
        assert!(
            w.command.ends_with("python3 prog.py"),
            "exec noticed: {:?}",
            w.command
        );
    }
    let thread_tids: std::collections::HashSet<u32> = writes[1..5]
        .iter()
        .inspect(|w| assert!(w.data.starts_with(b"thread ")))
        .map(|w| w.tid)
        .collect();
    assert_eq!(thread_tids.len(), 4, "each thread has its own tid");
    assert!(!thread_tids.contains(&pid));
    assert_eq!(writes[5].tid, pid, "main thread tid is the pid");
}

#[test]
fn same_named_reexec_is_noticed_after_the_full_check_interval() {
    if !fuse_available() {
        return;
    }
    let m = Mounted::new(|_| {});
    sh(
        &m.dir,
        "exec 3>>f; echo first >&3; sleep 0.2; exec sh -c 'echo second >&3' second-sh",
    );
    let done = m.finish();
    let writes = done.writes_to("f");
    assert_eq!(writes.len(), 2);
    assert_eq!(writes[0].pid, writes[1].pid);
    assert!(
        writes[0].command.starts_with("sh -c exec 3>>f"),
        "{:?}",
        writes[0].command
    );
    assert_eq!(&*writes[1].command, "sh -c echo second >&3 second-sh");
}
