//! Power loss (an in-memory storage dropping what was not synced), `kill -9`
//! of a writing process, and a tail cut mid-record.

use super::*;

#[test]
fn power_loss_drops_unsynced_appends_and_keeps_synced_ones() {
    let st = MemStorage::new();
    let mut wal = open_mem(&st, small_opts(LAZY));
    append_range(&mut wal, 0..4);
    wal.sync().expect("sync");
    append_range(&mut wal, 4..6);
    // Power loss now: the directory as the disk has it. (The old handle's
    // drop syncs into the pre-crash directory, which no longer matters.)
    let crashed = st.crash();
    drop(wal);
    let mut wal = open_mem(&crashed, small_opts(LAZY));
    assert!(wal.recovery().is_clean());
    assert_eq!(read_all(&mut wal), expected(0..4));
    assert_eq!(wal.next_seq(), 4);
    assert_eq!(wal.append(b"after").expect("append"), 4);
}

#[test]
fn power_loss_with_fsync_always_keeps_every_returned_append() {
    let st = MemStorage::new();
    let mut wal = open_mem(&st, small_opts(Fsync::Always));
    append_range(&mut wal, 0..7);
    let crashed = st.crash();
    drop(wal);
    let mut wal = open_mem(&crashed, small_opts(Fsync::Always));
    assert_eq!(read_all(&mut wal), expected(0..7));
}

const KILL_CHILD_ENV: &str = "SLUICE_WAL_KILL_CHILD_DIR";

#[test]
fn kill_9_keeps_written_but_unsynced_records() {
    if let Some(dir) = std::env::var_os(KILL_CHILD_ENV) {
        // Child: append without any sync, then wait to be killed.
        let mut wal = open_dir(Path::new(&dir), small_opts(LAZY));
        append_range(&mut wal, 0..7);
        println!("READY");
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let tmp = TempDir::new().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "tests::crash::power_loss::kill_9_keeps_written_but_unsynced_records",
        ])
        .args(["--nocapture", "--test-threads=1"])
        .env(KILL_CHILD_ENV, tmp.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("piped");
    let ready = BufReader::new(stdout)
        .lines()
        .any(|l| l.is_ok_and(|l| l.contains("READY")));
    child.kill().expect("SIGKILL"); // kill -9: no destructor, no sync
    child.wait().expect("wait");
    assert!(ready, "child did not get to append");
    let mut wal = open_dir(tmp.path(), small_opts(LAZY));
    assert!(wal.recovery().is_clean());
    assert_eq!(read_all(&mut wal), expected(0..7));
}

#[test]
fn restart_truncates_tail_cut_mid_record() {
    let tmp = TempDir::new().expect("tempdir");
    let mut wal = open_dir(tmp.path(), small_opts(Fsync::Always));
    append_range(&mut wal, 0..5);
    drop(wal);
    let path = seg_path(tmp.path(), 3);
    let file = OpenOptions::new().write(true).open(&path).expect("open");
    file.set_len(record_offset(2) - 10).expect("cut");

    let mut wal = open_dir(tmp.path(), small_opts(Fsync::Always));
    let damage = Damage {
        path: path.clone(),
        offset: record_offset(1),
        bytes: FRAME - 10,
        corruption: Corruption::Truncated,
    };
    assert_eq!(wal.recovery().truncated, Some(damage));
    assert_eq!(read_all(&mut wal), expected(0..4));
    assert_eq!(
        std::fs::metadata(&path).expect("stat").len(),
        record_offset(1)
    );
    // Appends continue right after the last good record.
    assert_eq!(wal.append(&payload(4)).expect("append"), 4);
    drop(wal);
    let mut wal = open_dir(tmp.path(), small_opts(Fsync::Always));
    assert!(wal.recovery().is_clean());
    assert_eq!(read_all(&mut wal), expected(0..5));
}
