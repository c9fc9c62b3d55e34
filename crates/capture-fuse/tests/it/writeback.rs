//! Writeback mode (`CaptureConfig::writeback`): many small appends from several
//! processes, captured completely, in file order, attributed per the documented rule
//! (the opener of the handle the kernel names), with fsync and kill -9 semantics.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use sluice_capture_fuse::{
    Capture, CaptureConfig, CaptureReceiver, RecvTimeoutError, TryRecvError, UnmountOutcome,
};

use crate::common::*;

pub(crate) const LINE: usize = 100;
const FILE_ENV: &str = "SLUICE_CAPTURE_TEST_APPEND_FILE";
const ID_ENV: &str = "SLUICE_CAPTURE_TEST_APPEND_ID";
const COUNT_ENV: &str = "SLUICE_CAPTURE_TEST_APPEND_COUNT";

/// Line `seq` of writer `id`: 100 bytes, one `write(2)`.
pub(crate) fn line(id: u8, seq: u64) -> [u8; LINE] {
    let mut l = [b'.'; LINE];
    let head = format!("w{id} {seq:010} ");
    l[..head.len()].copy_from_slice(head.as_bytes());
    l[LINE - 1] = b'\n';
    l
}

fn parse(l: &[u8]) -> (u8, u64) {
    let id = l[1] - b'0';
    let seq = std::str::from_utf8(&l[3..13]).unwrap().parse().unwrap();
    (id, seq)
}

/// Not a test of its own: the body of a writer process the tests below start (by
/// re-running this binary). Appends COUNT lines (0 = until killed) to FILE, one
/// `write(2)` each, through an `O_APPEND` descriptor. Does nothing when run normally.
#[test]
fn helper_append_lines() {
    let Some(file) = std::env::var_os(FILE_ENV) else {
        return;
    };
    let id: u8 = std::env::var(ID_ENV).unwrap().parse().unwrap();
    let count: u64 = std::env::var(COUNT_ENV).unwrap().parse().unwrap();
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .unwrap();
    let mut seq = 0;
    while count == 0 || seq < count {
        let n = f.write(&line(id, seq)).unwrap();
        assert_eq!(n, LINE);
        seq += 1;
    }
}

pub(crate) fn spawn_writer(file: &Path, id: u8, count: u64) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "writeback::helper_append_lines",
            "--exact",
            "--test-threads=1",
        ])
        .env(FILE_ENV, file)
        .env(ID_ENV, id.to_string())
        .env(COUNT_ENV, count.to_string())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// What the stream of captures of one file showed.
#[derive(Default, Debug)]
struct FileCheck {
    /// End of the contiguous captured prefix (every capture started exactly there).
    next_offset: u64,
    partial: Vec<u8>,
    /// Per writer id: next expected line number.
    next_seq: HashMap<u8, u64>,
    /// Captured bytes per attributed pid.
    bytes_by_pid: HashMap<u32, u64>,
    captures: u64,
    from_page_cache: u64,
}

/// Drains the receiver, checking as it goes that each file's captures are contiguous
/// and in offset order (no gap, no duplicate) and that every writer's lines arrive
/// whole and in sequence. Returns the per-file results once the receiver disconnects.
fn checker(rx: CaptureReceiver) -> JoinHandle<HashMap<PathBuf, FileCheck>> {
    std::thread::spawn(move || {
        let mut files: HashMap<PathBuf, FileCheck> = HashMap::new();
        loop {
            let w = match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(w) => w,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return files,
            };
            let c = files.entry(w.path.to_path_buf()).or_default();
            assert_eq!(
                w.offset,
                c.next_offset,
                "{}: capture {} at offset {} ({} bytes), expected the next at {}",
                w.path.display(),
                c.captures,
                w.offset,
                w.data.len(),
                c.next_offset
            );
            c.next_offset += w.data.len() as u64;
            c.captures += 1;
            c.from_page_cache += u64::from(w.from_page_cache);
            *c.bytes_by_pid.entry(w.pid).or_default() += w.data.len() as u64;
            c.partial.extend_from_slice(&w.data);
            let whole = c.partial.len() / LINE * LINE;
            for l in c.partial[..whole].chunks(LINE) {
                let (id, seq) = parse(l);
                assert_eq!(l, line(id, seq), "line {seq} of writer {id} intact");
                let next = c.next_seq.entry(id).or_default();
                assert_eq!(seq, *next, "writer {id}'s lines in order");
                *next += 1;
            }
            c.partial.drain(..whole);
        }
    })
}

fn mount_writeback(dir: &Path) -> (sluice_capture_fuse::CaptureHandle, CaptureReceiver) {
    let mut cfg = CaptureConfig::new(dir);
    cfg.writeback = true;
    cfg.capture_own_process = true;
    Capture::mount(cfg).expect("mount with writeback")
}

/// Lines on disk: writer id → count, checking each writer's lines are in sequence.
fn lines_on_disk(path: &Path) -> HashMap<u8, u64> {
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; LINE * 10_000];
    let mut counts: HashMap<u8, u64> = HashMap::new();
    loop {
        let mut got = 0;
        while got < buf.len() {
            match f.read(&mut buf[got..]).unwrap() {
                0 => break,
                n => got += n,
            }
        }
        assert_eq!(got % LINE, 0, "{} holds whole lines", path.display());
        for l in buf[..got].chunks(LINE) {
            let (id, seq) = parse(l);
            let next = counts.entry(id).or_default();
            assert_eq!(seq, *next, "writer {id}'s lines in order on disk");
            *next += 1;
        }
        if got < buf.len() {
            return counts;
        }
    }
}

#[test]
fn million_appends_from_three_writers_to_three_files_are_all_captured_in_order() {
    if !fuse_available() {
        return;
    }
    const N: u64 = 1_000_000;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    let (handle, rx) = mount_writeback(&dir);
    let check = checker(rx);
    let files: Vec<PathBuf> = (0..3).map(|i| dir.join(format!("app{i}.log"))).collect();
    let mut writers: Vec<Child> = (0..3)
        .map(|i| spawn_writer(&files[i], i as u8, N))
        .collect();
    let pids: Vec<u32> = writers.iter().map(Child::id).collect();
    for w in &mut writers {
        assert!(w.wait().unwrap().success());
    }
    let stats = handle.stats();
    assert_eq!(handle.unmount().unwrap(), UnmountOutcome::Complete);
    let results = check.join().expect("captures contiguous and in order");
    assert_eq!(stats.captured_bytes, 3 * N * LINE as u64, "{stats:?}");
    assert_eq!(stats.dropped_queue_full + stats.dropped_quota, 0);
    for (i, f) in files.iter().enumerate() {
        let c = &results[f];
        assert_eq!(c.next_offset, N * LINE as u64);
        assert_eq!(c.next_seq[&(i as u8)], N);
        assert_eq!(c.next_seq.len(), 1);
        // One opener per file: every byte is its writer's.
        assert_eq!(c.bytes_by_pid.keys().collect::<Vec<_>>(), [&pids[i]]);
        // Absorbed by the page cache: far fewer captures than writes.
        assert_eq!(c.from_page_cache, c.captures);
        assert!(
            c.captures < N / 20,
            "{} captures for {N} writes",
            c.captures
        );
        assert_eq!(lines_on_disk(f)[&(i as u8)], N);
    }
}

#[test]
fn two_writers_of_one_file_are_captured_in_order_and_attributed_to_an_opener() {
    if !fuse_available() {
        return;
    }
    const N: u64 = 1_000_000;
    const ALONE: u64 = 10_000;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    let (handle, rx) = mount_writeback(&dir);
    let check = checker(rx);
    let file = dir.join("shared.log");
    // Writer 0 alone first: its handle is the only one, so its bytes are its own.
    let mut first = spawn_writer(&file, 0, ALONE);
    let first_pid = first.id();
    assert!(first.wait().unwrap().success());
    let mut writers = [spawn_writer(&file, 1, N), spawn_writer(&file, 2, N)];
    let pids = [writers[0].id(), writers[1].id()];
    for w in &mut writers {
        assert!(w.wait().unwrap().success());
    }
    assert_eq!(handle.unmount().unwrap(), UnmountOutcome::Complete);
    let results = check.join().expect("captures contiguous and in order");
    let c = &results[&file];
    assert_eq!(c.next_offset, (ALONE + 2 * N) * LINE as u64);
    assert_eq!(c.next_seq[&0], ALONE);
    assert_eq!((c.next_seq[&1], c.next_seq[&2]), (N, N));
    assert_eq!(c.bytes_by_pid[&first_pid], ALONE * LINE as u64);
    // The rest: each capture names the opener of one of the two open handles.
    let rest: u64 = pids.iter().filter_map(|p| c.bytes_by_pid.get(p)).sum();
    assert_eq!(rest, 2 * N * LINE as u64, "{:?}", c.bytes_by_pid);
    let on_disk = lines_on_disk(&file);
    assert_eq!((on_disk[&0], on_disk[&1], on_disk[&2]), (ALONE, N, N));
}

#[test]
fn fsync_returns_after_the_cached_bytes_are_queued() {
    if !fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    let (handle, rx) = mount_writeback(&dir);
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("f.log"))
        .unwrap();
    let mut queued = 0;
    for round in 0..5u64 {
        for seq in 0..2_000 {
            f.write_all(&line(0, round * 2_000 + seq)).unwrap();
        }
        f.sync_all().unwrap();
        // Nothing waited for: everything written so far is already in the queue.
        loop {
            match rx.try_recv() {
                Ok(w) => {
                    assert_eq!(w.offset, queued);
                    queued += w.data.len() as u64;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => panic!("disconnected"),
            }
        }
        assert_eq!(queued, (round + 1) * 2_000 * LINE as u64);
    }
    drop(f);
    handle.unmount().unwrap();
}

#[test]
fn killed_writer_loses_nothing_it_wrote() {
    if !fuse_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    let (handle, rx) = mount_writeback(&dir);
    let check = checker(rx);
    let file = dir.join("killed.log");
    let mut w = spawn_writer(&file, 0, 0);
    wait_for("200,000 lines written", Duration::from_secs(60), || {
        std::fs::metadata(&file).is_ok_and(|m| m.len() >= 200_000 * LINE as u64)
    });
    w.kill().unwrap();
    w.wait().unwrap();
    assert_eq!(handle.unmount().unwrap(), UnmountOutcome::Complete);
    let results = check.join().expect("captures contiguous and in order");
    let c = &results[&file];
    let len = std::fs::metadata(&file).unwrap().len();
    assert!(len >= 200_000 * LINE as u64);
    assert_eq!(c.next_offset, len, "every byte on disk was captured");
    // SIGKILL can cut a write(2) between two pages: the file (and the captures) may
    // end with the first part of a line.
    let lines = c.next_seq[&0];
    let cut = (len - lines * LINE as u64) as usize;
    assert!(cut < LINE);
    assert_eq!(c.partial, line(0, lines)[..cut]);
    let mut expected: Vec<u8> = (0..lines).flat_map(|i| line(0, i)).collect();
    expected.extend_from_slice(&line(0, lines)[..cut]);
    assert!(
        std::fs::read(&file).unwrap() == expected,
        "file holds the lines in order"
    );
}

#[test]
fn unprivileged_writes_clear_set_id_bits() {
    if !fuse_available() {
        return;
    }
    // Under FUSE_HANDLE_KILLPRIV_V2 clearing set-id bits is ours: a write by a user
    // other than root clears them, as on a plain filesystem.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    let (handle, rx) = mount_writeback(&dir);
    let f = dir.join("setid");
    std::fs::write(&f, b"x").unwrap();
    sh(&dir, "chmod 06777 setid");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["sh", "-c", "echo more >> setid"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o777, "set-id bits cleared by an unprivileged write");
    sh(&dir, "chmod 06777 setid");
    sh(&dir, "echo root >> setid");
    let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o6777, "root keeps them");
    handle.unmount().unwrap();
    drop(rx);
}
