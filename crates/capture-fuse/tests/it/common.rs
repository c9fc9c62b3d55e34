//! Shared test scaffolding: real mounts over temp dirs, a draining collector, tree
//! snapshots and per-inode reconstruction of captured writes.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sluice_capture_fuse::{
    Capture, CaptureConfig, CaptureHandle, CaptureReceiver, CaptureStats, CapturedWrite,
    RecvTimeoutError, UnmountOutcome,
};

/// Real mounts need /dev/fuse and root or fusermount3. A test never skips
/// itself because they are missing: it fails saying what is missing, unless
/// `SLUICE_SKIP_FUSE_TESTS=1` (for laptops; never set in CI) asks to skip.
pub fn fuse_available() -> bool {
    if std::env::var_os("SLUICE_SKIP_FUSE_TESTS").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED: FUSE test skipped because SLUICE_SKIP_FUSE_TESTS=1.");
        return false;
    }
    let root = unsafe { libc::geteuid() } == 0;
    let mut missing = Vec::new();
    if !Path::new("/dev/fuse").exists() {
        missing.push("/dev/fuse (load the fuse module; in a container pass --device /dev/fuse)");
    }
    if !root && !fusermount3_installed() {
        missing.push("root or fusermount3 (scripts/install-deps.sh installs fuse3)");
    }
    assert!(
        missing.is_empty(),
        "this FUSE test cannot run: missing {}; set SLUICE_SKIP_FUSE_TESTS=1 to skip the FUSE \
         tests on purpose",
        missing.join(" and ")
    );
    true
}

/// Whether the fusermount3 helper is installed.
pub fn fusermount3_installed() -> bool {
    ["/usr/bin/fusermount3", "/bin/fusermount3"]
        .iter()
        .any(|p| Path::new(p).exists())
}

/// A capture filesystem over a fresh temp dir, with a thread draining the queue.
/// Dropping it unmounts before the directory is removed.
pub struct Mounted {
    handle: Option<CaptureHandle>,
    collector: Option<JoinHandle<Vec<CapturedWrite>>>,
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Mounted {
    pub fn new(configure: impl FnOnce(&mut CaptureConfig)) -> Mounted {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().canonicalize().expect("canonical temp dir");
        let mut cfg = CaptureConfig::new(&dir);
        configure(&mut cfg);
        let (handle, rx) = Capture::mount(cfg).expect("mount capture fs");
        let collector = std::thread::spawn(move || drain(rx));
        Mounted {
            handle: Some(handle),
            collector: Some(collector),
            dir,
            _tmp: tmp,
        }
    }

    /// Mounted without a collector: the caller drains (or deliberately does not).
    pub fn with_receiver(configure: impl FnOnce(&mut CaptureConfig)) -> (Mounted, CaptureReceiver) {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path().canonicalize().expect("canonical temp dir");
        let mut cfg = CaptureConfig::new(&dir);
        configure(&mut cfg);
        let (handle, rx) = Capture::mount(cfg).expect("mount capture fs");
        (
            Mounted {
                handle: Some(handle),
                collector: None,
                dir,
                _tmp: tmp,
            },
            rx,
        )
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn stats(&self) -> CaptureStats {
        self.handle.as_ref().expect("mounted").stats()
    }

    /// Unmounts (asserting a complete unmount) and returns every captured write, with
    /// the now uncovered directory.
    pub fn finish(mut self) -> Finished {
        let handle = self.handle.take().expect("mounted");
        let counters = handle.counters();
        let outcome = handle.unmount().expect("unmount");
        assert_eq!(outcome, UnmountOutcome::Complete);
        let writes = self
            .collector
            .take()
            .map(|c| c.join().expect("collector"))
            .unwrap_or_default();
        let tmp = tempfile::TempDir::new().expect("placeholder");
        Finished {
            writes,
            stats: counters.snapshot(),
            dir: self.dir.clone(),
            _tmp: std::mem::replace(&mut self._tmp, tmp),
        }
    }
}

/// After unmount: the captures and the real directory they must describe.
pub struct Finished {
    pub writes: Vec<CapturedWrite>,
    pub stats: CaptureStats,
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Finished {
    /// Captured writes whose path is `dir/rel`, in queue order.
    pub fn writes_to(&self, rel: &str) -> Vec<&CapturedWrite> {
        let p = self.dir.join(rel);
        self.writes.iter().filter(|w| *w.path == *p).collect()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.unmount();
        }
    }
}

fn drain(rx: CaptureReceiver) -> Vec<CapturedWrite> {
    let mut out = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(w) => out.push(w),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return out,
        }
    }
}

/// Runs `sh -c script` in `cwd` and asserts success.
pub fn sh(cwd: &Path, script: &str) -> Output {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(cwd)
        .output()
        .expect("spawn sh");
    assert!(
        out.status.success(),
        "sh -c {script:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// What a tree looks like: per relative path, its kind, mode, owner and content.
#[derive(Debug, PartialEq, Eq)]
pub enum Node {
    File {
        mode: u32,
        uid: u32,
        gid: u32,
        content: Vec<u8>,
    },
    Dir {
        mode: u32,
        uid: u32,
        gid: u32,
    },
    Symlink {
        target: PathBuf,
    },
    Other {
        mode: u32,
    },
}

pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Node>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let meta = std::fs::symlink_metadata(&path).expect("lstat");
        let rel = path.strip_prefix(root).expect("under root").to_path_buf();
        let mode = meta.permissions().mode() & 0o7777;
        let node = if meta.file_type().is_symlink() {
            Node::Symlink {
                target: std::fs::read_link(&path).expect("readlink"),
            }
        } else if meta.is_dir() {
            walk(root, &path, out);
            Node::Dir {
                mode,
                uid: meta.uid(),
                gid: meta.gid(),
            }
        } else if meta.is_file() {
            Node::File {
                mode,
                uid: meta.uid(),
                gid: meta.gid(),
                content: std::fs::read(&path).expect("read"),
            }
        } else {
            Node::Other { mode }
        };
        out.insert(rel, node);
    }
}

/// Asserts two trees are identical, naming the first difference.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let (sa, sb) = (snapshot(a), snapshot(b));
    let names_a: Vec<_> = sa.keys().collect();
    let names_b: Vec<_> = sb.keys().collect();
    assert_eq!(
        names_a,
        names_b,
        "same names in {} and {}",
        a.display(),
        b.display()
    );
    for (k, va) in &sa {
        let vb = &sb[k];
        if va != vb {
            let brief = |n: &Node| match n {
                Node::File {
                    mode,
                    uid,
                    gid,
                    content,
                } => format!("file mode {mode:o} {uid}:{gid} {} bytes", content.len()),
                other => format!("{other:?}"),
            };
            panic!("{} differs: {} vs {}", k.display(), brief(va), brief(vb));
        }
    }
}

/// Applies captured writes at their offsets, per inode.
pub fn reconstruct(writes: &[CapturedWrite]) -> HashMap<u64, Vec<u8>> {
    let mut files: HashMap<u64, Vec<u8>> = HashMap::new();
    for w in writes {
        let buf = files.entry(w.inode).or_default();
        let start = w.offset as usize;
        let end = start + w.data.len();
        if buf.len() < end {
            buf.resize(end, 0);
        }
        buf[start..end].copy_from_slice(&w.data);
    }
    files
}

/// Every regular file under `root` with content equals what its captures rebuild,
/// and nothing was captured for inodes that are not there.
pub fn assert_captures_rebuild_tree(root: &Path, writes: &[CapturedWrite]) {
    let rebuilt = reconstruct(writes);
    let mut seen = std::collections::HashSet::new();
    for (rel, node) in snapshot(root) {
        if let Node::File { content, .. } = node {
            let ino = std::fs::metadata(root.join(&rel)).expect("stat").ino();
            seen.insert(ino);
            let got = rebuilt.get(&ino).map(Vec::as_slice).unwrap_or_default();
            assert!(
                got == content,
                "{}: captures rebuild {} bytes, file has {} bytes{}",
                rel.display(),
                got.len(),
                content.len(),
                first_diff(got, &content)
            );
        }
    }
    let strays: Vec<_> = rebuilt.keys().filter(|i| !seen.contains(*i)).collect();
    assert!(
        strays.is_empty(),
        "captures for inodes not in the tree: {strays:?}"
    );
}

fn first_diff(a: &[u8], b: &[u8]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!(" (first difference at byte {i})"),
        None => String::new(),
    }
}

/// Polls `cond` until true or the deadline passes.
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Deterministic pseudo-random bytes (xorshift), so plain and mounted runs match.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
