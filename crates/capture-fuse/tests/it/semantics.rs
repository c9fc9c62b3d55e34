//! POSIX behaviour through the mount, checked from this process (captured too, with
//! `capture_own_process`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::common::*;

fn own() -> Mounted {
    own_wb(false)
}

fn own_wb(writeback: bool) -> Mounted {
    Mounted::new(|c| {
        c.capture_own_process = true;
        c.writeback = writeback;
    })
}

#[test]
fn unlink_while_open_keeps_the_file_usable_and_named() {
    unlink_while_open_keeps_the_file_usable_and_named_case(false);
}

#[test]
fn unlink_while_open_keeps_the_file_usable_and_named_with_writeback() {
    unlink_while_open_keeps_the_file_usable_and_named_case(true);
}

fn unlink_while_open_keeps_the_file_usable_and_named_case(writeback: bool) {
    if !fuse_available() {
        return;
    }
    let m = own_wb(writeback);
    let mut f = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(m.path("gone.log"))
        .unwrap();
    f.write_all(b"before\n").unwrap();
    std::fs::remove_file(m.path("gone.log")).unwrap();
    assert!(!m.path("gone.log").exists());
    f.write_all(b"after\n").unwrap();
    assert_eq!(f.metadata().unwrap().nlink(), 0);
    let mut back = String::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_string(&mut back).unwrap();
    assert_eq!(back, "before\nafter\n");
    let listing: Vec<_> = std::fs::read_dir(&m.dir).unwrap().collect();
    assert!(listing.is_empty(), "no .fuse_hidden leftovers: {listing:?}");
    drop(f);
    let done = m.finish();
    let captured: Vec<u8> = done.writes.iter().flat_map(|w| w.data.to_vec()).collect();
    assert_eq!(captured, b"before\nafter\n");
    if !writeback {
        assert_eq!(done.writes.len(), 2);
        assert_eq!(done.writes[1].offset, 7);
    }
    for w in &done.writes {
        assert_eq!(*w.path, *done.dir.join("gone.log"), "last name kept");
        assert_eq!(w.pid, std::process::id());
    }
}

#[test]
fn rename_moves_the_capture_path_of_open_files() {
    if !fuse_available() {
        return;
    }
    let m = own();
    std::fs::create_dir(m.path("sub")).unwrap();
    let mut f = File::create(m.path("a.log")).unwrap();
    f.write_all(b"one\n").unwrap();
    std::fs::rename(m.path("a.log"), m.path("sub/b.log")).unwrap();
    f.write_all(b"two\n").unwrap();
    // rename over an existing file (logrotate's create mode)
    std::fs::write(m.path("c.log"), b"old\n").unwrap();
    std::fs::rename(m.path("sub/b.log"), m.path("c.log")).unwrap();
    f.write_all(b"three\n").unwrap();
    drop(f);
    assert_eq!(
        std::fs::read(m.path("c.log")).unwrap(),
        b"one\ntwo\nthree\n"
    );
    let done = m.finish();
    let paths: Vec<_> = done
        .writes
        .iter()
        .map(|w| w.path.strip_prefix(&done.dir).unwrap().to_path_buf())
        .collect();
    let expect: Vec<&Path> = ["a.log", "sub/b.log", "c.log", "c.log"]
        .iter()
        .map(Path::new)
        .collect();
    assert_eq!(paths, expect);
}

#[test]
fn symlinks_hard_links_and_inode_numbers_pass_through() {
    symlinks_hard_links_and_inode_numbers_pass_through_case(false);
}

#[test]
fn symlinks_hard_links_and_inode_numbers_pass_through_with_writeback() {
    symlinks_hard_links_and_inode_numbers_pass_through_case(true);
}

fn symlinks_hard_links_and_inode_numbers_pass_through_case(writeback: bool) {
    if !fuse_available() {
        return;
    }
    let m = own_wb(writeback);
    std::fs::write(m.path("target"), b"data").unwrap();
    std::os::unix::fs::symlink("target", m.path("link")).unwrap();
    assert_eq!(
        std::fs::read_link(m.path("link")).unwrap(),
        Path::new("target")
    );
    assert_eq!(std::fs::read(m.path("link")).unwrap(), b"data");
    assert!(
        std::fs::symlink_metadata(m.path("link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    std::os::unix::fs::symlink("/nonexistent/dangling", m.path("dangling")).unwrap();
    assert!(!m.path("dangling").exists());
    std::fs::hard_link(m.path("target"), m.path("hard")).unwrap();
    let (a, b) = (
        std::fs::metadata(m.path("target")).unwrap(),
        std::fs::metadata(m.path("hard")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.nlink(), 2);
    let mut h = OpenOptions::new()
        .append(true)
        .open(m.path("hard"))
        .unwrap();
    h.write_all(b"+more").unwrap();
    drop(h);
    assert_eq!(std::fs::read(m.path("target")).unwrap(), b"data+more");
    let through_mount = a.ino();
    let done = m.finish();
    let under = std::fs::metadata(done.dir.join("target")).unwrap();
    assert_eq!(
        under.ino(),
        through_mount,
        "stat shows the backing inode number"
    );
    assert_eq!(under.nlink(), 2);
    assert_eq!(
        std::fs::read_link(done.dir.join("dangling")).unwrap(),
        Path::new("/nonexistent/dangling")
    );
    assert_captures_rebuild_tree(&done.dir, &done.writes);
}

#[test]
fn chmod_chown_utimens_truncate_and_fsync() {
    chmod_chown_utimens_truncate_and_fsync_case(false);
}

#[test]
fn chmod_chown_utimens_truncate_and_fsync_with_writeback() {
    chmod_chown_utimens_truncate_and_fsync_case(true);
}

fn chmod_chown_utimens_truncate_and_fsync_case(writeback: bool) {
    if !fuse_available() {
        return;
    }
    let m = own_wb(writeback);
    let p = m.path("f");
    let f = File::create(&p).unwrap();
    f.write_all_at(b"0123456789abcdef", 0).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o7777, 0o640);
    f.set_permissions(std::fs::Permissions::from_mode(0o604))
        .unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o7777, 0o604);
    std::os::unix::fs::chown(&p, Some(1234), Some(5678)).unwrap();
    let meta = std::fs::metadata(&p).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
    let when = std::time::UNIX_EPOCH + std::time::Duration::new(1_500_000_000, 123_456_789);
    f.set_modified(when).unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().modified().unwrap(), when);
    sh(&m.dir, "touch -d '2001-02-03 04:05:06' f");
    assert_eq!(std::fs::metadata(&p).unwrap().mtime(), 981_173_106);
    f.set_len(10).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"0123456789");
    sh(&m.dir, "truncate -s 4 f");
    assert_eq!(std::fs::read(&p).unwrap(), b"0123");
    f.sync_all().unwrap();
    f.sync_data().unwrap();
    // O_TRUNC through open
    let mut t = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    t.write_all(b"new").unwrap();
    drop((f, t));
    let done = m.finish();
    let meta = std::fs::metadata(done.dir.join("f")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o604);
    assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
    assert_eq!(std::fs::read(done.dir.join("f")).unwrap(), b"new");
}

#[test]
fn xattrs_round_trip() {
    if !fuse_available() {
        return;
    }
    let m = own();
    let p = m.path("x");
    std::fs::write(&p, b"").unwrap();
    let ps = p.to_str().unwrap();
    rustix::fs::setxattr(
        ps,
        "user.sluice",
        b"value-1",
        rustix::fs::XattrFlags::CREATE,
    )
    .unwrap();
    let mut buf = [0u8; 64];
    let n = rustix::fs::getxattr(ps, "user.sluice", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"value-1");
    assert_eq!(rustix::fs::getxattr_query(ps, "user.sluice").unwrap(), 7);
    let n = rustix::fs::listxattr(ps, &mut buf[..]).unwrap();
    assert!(
        buf[..n]
            .split(|&b| b == 0)
            .any(|name| name == b"user.sluice")
    );
    assert_eq!(
        rustix::fs::getxattr(ps, "user.sluice", &mut [0u8; 2][..]),
        Err(rustix::io::Errno::RANGE)
    );
    rustix::fs::removexattr(ps, "user.sluice").unwrap();
    assert_eq!(
        rustix::fs::getxattr(ps, "user.sluice", &mut buf[..]),
        Err(rustix::io::Errno::NODATA)
    );
    rustix::fs::setxattr(ps, "user.kept", b"k", rustix::fs::XattrFlags::empty()).unwrap();
    let done = m.finish();
    let under = done.dir.join("x");
    let n = rustix::fs::getxattr(under.to_str().unwrap(), "user.kept", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"k");
}

#[test]
fn writes_beyond_4_gib_land_and_are_captured_at_their_offset() {
    writes_beyond_4_gib_land_and_are_captured_at_their_offset_case(false);
}

#[test]
fn writes_beyond_4_gib_land_and_are_captured_at_their_offset_with_writeback() {
    writes_beyond_4_gib_land_and_are_captured_at_their_offset_case(true);
}

fn writes_beyond_4_gib_land_and_are_captured_at_their_offset_case(writeback: bool) {
    if !fuse_available() {
        return;
    }
    let m = own_wb(writeback);
    let f = File::create(m.path("sparse")).unwrap();
    let at = 5u64 << 30;
    f.write_all_at(b"far away", at).unwrap();
    f.write_all_at(b"start", 0).unwrap();
    assert_eq!(f.metadata().unwrap().len(), at + 8);
    let mut buf = [0u8; 8];
    File::open(m.path("sparse"))
        .unwrap()
        .read_exact_at(&mut buf, at)
        .unwrap();
    assert_eq!(&buf, b"far away");
    // SEEK_DATA/SEEK_HOLE are forwarded.
    let mut r = File::open(m.path("sparse")).unwrap();
    let hole = rustix::fs::seek(&r, rustix::fs::SeekFrom::Hole(0)).unwrap();
    assert!(hole < at, "hole found before the far data ({hole})");
    r.seek(SeekFrom::Start(0)).unwrap();
    drop((f, r));
    let done = m.finish();
    let mut got: Vec<(u64, &[u8])> = done
        .writes
        .iter()
        .map(|w| (w.offset, &w.data[..]))
        .collect();
    if writeback {
        // Written back in page order. Page 0 went out while the backing file was still
        // empty: all of it is new there, so it is captured whole (zeros after "start").
        assert_eq!(got.len(), 2, "{got:?}");
        let (head, rest) = got[0].1.split_at(5);
        assert_eq!((got[0].0, head), (0, &b"start"[..]));
        assert!(rest.len() < 4096 && rest.iter().all(|&b| b == 0));
        assert_eq!(got[1], (at, &b"far away"[..]));
        got[0].1 = head;
    }
    got.sort_unstable();
    assert_eq!(got, [(0, &b"start"[..]), (at, &b"far away"[..])]);
    assert_eq!(
        std::fs::metadata(done.dir.join("sparse")).unwrap().len(),
        at + 8
    );
}

#[test]
fn directories_listing_and_statfs() {
    if !fuse_available() {
        return;
    }
    let plain = tempfile::tempdir().unwrap();
    let m = own();
    let script = "mkdir -p d/e/f && i=0; while [ $i -lt 3000 ]; do : > d/file$i; i=$((i+1)); done; \
                  mkdir gone && rmdir gone && mkfifo d/fifo";
    sh(plain.path(), script);
    sh(&m.dir, script);
    let list = |dir: &Path| {
        let mut v: Vec<_> = std::fs::read_dir(dir.join("d"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name(), e.file_type().unwrap().is_dir())
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(list(plain.path()), list(&m.dir));
    assert_eq!(list(&m.dir).len(), 3002);
    assert!(std::fs::remove_dir(m.path("d/e")).is_err(), "not empty");
    let via_mount = rustix::fs::statvfs(&m.dir).unwrap();
    let under = rustix::fs::statvfs(plain.path()).unwrap();
    assert_eq!(via_mount.f_bsize, under.f_bsize);
    assert_eq!(
        via_mount.f_blocks, under.f_blocks,
        "same backing filesystem"
    );
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(m.dir.to_str().unwrap()))
        .expect("mount listed");
    assert!(line.contains(" - fuse.sluice sluice "), "{line}");
    assert!(line.contains("nosuid") && line.contains("nodev"), "{line}");
    assert!(
        line.contains("default_permissions") && line.contains("allow_other"),
        "{line}"
    );
    let done = m.finish();
    assert_same_tree(plain.path(), &done.dir);
}

#[test]
fn shared_mmap_writes_are_captured_from_the_page_cache() {
    shared_mmap_writes_are_captured_from_the_page_cache_case(false);
}

#[test]
fn shared_mmap_writes_are_captured_from_the_page_cache_with_writeback() {
    shared_mmap_writes_are_captured_from_the_page_cache_case(true);
}

fn shared_mmap_writes_are_captured_from_the_page_cache_case(writeback: bool) {
    if !fuse_available() {
        return;
    }
    let m = own_wb(writeback);
    let p = m.path("mapped");
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .mode(0o644)
        .open(&p)
        .unwrap();
    f.set_len(4096).unwrap();
    let src = b"via mmap";
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import mmap\nf=open('{}','r+b')\nm=mmap.mmap(f.fileno(),4096)\nm[100:108]=b'{}'\nm.flush()\n",
            p.display(),
            std::str::from_utf8(src).unwrap()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(f);
    let done = m.finish();
    let content = std::fs::read(done.dir.join("mapped")).unwrap();
    assert_eq!(&content[100..108], src);
    let cached: Vec<_> = done.writes.iter().filter(|w| w.from_page_cache).collect();
    assert!(
        !cached.is_empty(),
        "page-cache writes flagged: {:?}",
        done.writes
    );
    if writeback {
        // Only the bytes the mapping changed (the rest of the page is what set_len
        // made, not a write).
        let got: Vec<(u64, &[u8])> = done
            .writes
            .iter()
            .map(|w| (w.offset, &w.data[..]))
            .collect();
        assert_eq!(got, [(100, &src[..])]);
    } else {
        assert_captures_rebuild_tree(&done.dir, &done.writes);
    }
}

#[test]
fn other_users_get_the_permissions_of_the_underlying_files() {
    if !fuse_available() {
        return;
    }
    let plain = tempfile::tempdir().unwrap();
    let m = own();
    // As root: a world-readable file, a private file, a closed directory, an open one.
    let setup = "echo public > pub.log && chmod 644 pub.log && echo secret > priv.log && \
                 chmod 600 priv.log && mkdir closed && chmod 700 closed && mkdir open && \
                 chmod 777 open";
    // As nobody: each attempt reports its exit status; none may hang or crash.
    let attempts = "for c in 'echo x >> pub.log' 'cat priv.log' 'echo x > closed/f' \
                    'ls closed' 'echo x > new.log' 'chmod 666 pub.log' 'echo ok >> open/mine.log' \
                    'cat pub.log'; do sh -c \"$c\" >/dev/null 2>&1; printf '%s=%s\\n' \"$c\" $?; done";
    let mut results = Vec::new();
    for dir in [plain.path(), m.dir.as_path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        sh(dir, setup);
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(["sh", "-c", attempts])
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        results.push(String::from_utf8(out.stdout).unwrap());
    }
    assert_eq!(results[0], results[1], "same verdicts through the mount");
    let denied: Vec<&str> = results[1]
        .lines()
        .filter(|l| !l.ends_with("=0"))
        .filter_map(|l| l.rsplit_once('=').map(|(c, _)| c))
        .collect();
    assert_eq!(
        denied,
        [
            "echo x >> pub.log",
            "cat priv.log",
            "echo x > closed/f",
            "ls closed",
            "echo x > new.log",
            "chmod 666 pub.log",
        ],
        "{}",
        results[1]
    );
    assert_same_tree(plain.path(), &m.dir);
    let done = m.finish();
    assert_same_tree(plain.path(), &done.dir);
    let by_nobody: Vec<_> = done.writes.iter().filter(|w| w.uid == 65534).collect();
    assert_eq!(
        by_nobody.len(),
        1,
        "only the permitted write: {by_nobody:?}"
    );
    assert_eq!(&by_nobody[0].data[..], b"ok\n");
    assert_eq!(*by_nobody[0].path, *done.dir.join("open/mine.log"));
}
