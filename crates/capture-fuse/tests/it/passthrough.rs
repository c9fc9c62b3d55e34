//! Kernel passthrough for read-only opens: readers get the backing file's bytes
//! without a request to sluice, writers of the same file are still captured.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::time::Duration;

use crate::common::*;
use crate::writeback::{line, spawn_writer};

/// Opens `path` read-only until the open is served by passthrough (a writer's handle
/// being released a moment earlier can still make the first attempt a plain one).
fn open_passthrough(m: &Mounted, rel: &str) -> File {
    let mut reader = None;
    wait_for("a passthrough open", Duration::from_secs(10), || {
        let before = m.stats().passthrough_opens;
        let f = File::open(m.path(rel)).unwrap();
        let ok = m.stats().passthrough_opens > before;
        reader = ok.then_some(f);
        ok
    });
    reader.unwrap()
}

#[test]
fn passthrough_reads_follow_an_appending_writer_who_is_still_captured() {
    if !fuse_available() {
        return;
    }
    const N: u64 = 20_000;
    let m = Mounted::new(|_| {});
    std::fs::write(m.path("app.log"), b"").unwrap();
    let mut reader = open_passthrough(&m, "app.log");
    let reads_before = m.stats().read_requests;
    let mut writer = spawn_writer(&m.path("app.log"), 7, N);
    let writer_pid = writer.id();
    let mut seen = Vec::new();
    let mut done = false;
    loop {
        let mut chunk = Vec::new();
        reader.read_to_end(&mut chunk).unwrap();
        seen.extend_from_slice(&chunk);
        if done {
            break;
        }
        done = writer.try_wait().unwrap().is_some();
        if chunk.is_empty() && !done {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert!(writer.wait().unwrap().success());
    let expected: Vec<u8> = (0..N).flat_map(|i| line(7, i)).collect();
    assert!(
        seen == expected,
        "reader saw {} of {} bytes",
        seen.len(),
        expected.len()
    );
    assert_eq!(
        m.stats().read_requests,
        reads_before,
        "the reader's reads never reached sluice"
    );
    drop(reader);
    let done = m.finish();
    assert_eq!(done.writes.len() as u64, N, "one capture per write(2)");
    assert!(done.writes.iter().all(|w| w.pid == writer_pid));
    assert_captures_rebuild_tree(&done.dir, &done.writes);
}

#[test]
fn read_write_handles_beside_passthrough_readers_are_captured_and_never_fail() {
    if !fuse_available() {
        return;
    }
    let m = Mounted::new(|c| c.capture_own_process = true);
    std::fs::write(m.path("f"), b"0123456789").unwrap();
    let reader = open_passthrough(&m, "f");
    // Opened read-write while a passthrough reader is open: writes and reads work and
    // the write is captured.
    let rw = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("f"))
        .unwrap();
    rw.write_all_at(b"abc", 10).unwrap();
    let mut back = [0u8; 13];
    rw.read_exact_at(&mut back, 0).unwrap();
    assert_eq!(&back, b"0123456789abc");
    let mut via_reader = [0u8; 13];
    reader.read_exact_at(&mut via_reader, 0).unwrap();
    assert_eq!(&via_reader, b"0123456789abc");
    drop((rw, reader));
    // A file mapped shared by a writer, then opened read-only: a plain handle (the
    // kernel would refuse passthrough beside the mapping with EIO).
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import mmap\nf=open('{0}','r+b')\nm=mmap.mmap(f.fileno(),0)\nm[0:2]=b'XY'\n\
             r=open('{0}','rb').read()\nassert r[:2]==b'XY', r\nm.flush()\n",
            m.path("f").display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut plain = OpenOptions::new().append(true).open(m.path("f")).unwrap();
    plain.write_all(b"\n").unwrap();
    drop(plain);
    let done = m.finish();
    assert_eq!(
        std::fs::read(done.dir.join("f")).unwrap(),
        b"XY23456789abc\n"
    );
    let abc: Vec<_> = done
        .writes
        .iter()
        .filter(|w| &w.data[..] == b"abc")
        .collect();
    assert_eq!(abc.len(), 1);
    assert_eq!((abc[0].offset, abc[0].pid), (10, std::process::id()));
    assert!(
        done.writes
            .iter()
            .any(|w| w.from_page_cache && w.data.starts_with(b"XY"))
    );
}
