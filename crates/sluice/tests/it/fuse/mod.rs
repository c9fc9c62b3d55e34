//! The `fuse` source at the daemon level: the real `sluice` binary mounts a temp
//! directory over itself, real programs (`sh`, `dd`, `setpriv`) write through it, and
//! the events are read back from a file sink (or Kafka) as `logstash_json` documents.
//! The filesystem's own behaviour (rotation, cp -r, concurrent appenders, byte
//! identity) is covered by the capture crate's tests; these cover what the daemon adds:
//! the document, fields/tags, quota counters, start-up errors, kill -9 recovery, and
//! the full pipeline to Kafka.
//!
//! Needs /dev/fuse and root (or fusermount3); without them a test fails saying what is
//! missing, unless `SLUICE_SKIP_FUSE_TESTS=1` skips them on purpose. Every test
//! holds a [`MountGuard`] that kills the daemon and detaches any mount left on its
//! directory, even when the test panics.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

use crate::common::{Daemon, wait_until};
use crate::kafka_support::{consume, need_kafka, shared_broker};

mod crash;
mod documents;
mod limits;

pub(crate) fn fuse_usable() -> bool {
    if std::env::var_os("SLUICE_SKIP_FUSE_TESTS").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED: FUSE test skipped because SLUICE_SKIP_FUSE_TESTS=1.");
        return false;
    }
    let root = unsafe { libc::geteuid() } == 0;
    let fusermount =
        Path::new("/usr/bin/fusermount3").exists() || Path::new("/bin/fusermount3").exists();
    let mut missing = Vec::new();
    if !Path::new("/dev/fuse").exists() {
        missing.push("/dev/fuse (load the fuse module; in a container pass --device /dev/fuse)");
    }
    if !root && !fusermount {
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

/// FUSE mounts stacked on `dir` right now (mountinfo order, bottom to top).
fn fuse_mounts_at(dir: &Path) -> usize {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-");
            let fstype = sep.and_then(|s| f.get(s + 1)).copied().unwrap_or("");
            f.get(4).map(|p| p.replace("\\040", " ")) == Some(dir.display().to_string())
                && fstype.starts_with("fuse")
        })
        .count()
}

/// A temp dir with `watched/` (captured), `locks/`, the config and the daemon's log.
/// Dropped last: detaches whatever mount a failed test left on `watched`.
struct MountGuard {
    tmp: tempfile::TempDir,
    watched: PathBuf,
}

impl MountGuard {
    fn new() -> MountGuard {
        let tmp = tempfile::tempdir().expect("temp dir");
        let watched = tmp
            .path()
            .canonicalize()
            .expect("canonical")
            .join("watched");
        std::fs::create_dir(&watched).expect("watched dir");
        // Other users write here too.
        std::fs::set_permissions(&watched, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        MountGuard { tmp, watched }
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.watched.join(name)
    }

    /// Starts sluice on `config` (`$DIR` → the temp dir, `$WATCHED` → the watched dir)
    /// and waits until the capture mount is up.
    fn start(&self, config: &str) -> Daemon {
        let config = config.replace("$WATCHED", self.watched.to_str().expect("utf-8"));
        let mut d = Daemon::start(self.dir(), &config);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !d.stderr().contains("Sluice started.") {
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!("sluice exited at start ({st}):\n{}", d.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "sluice did not start:\n{}",
                d.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            fuse_mounts_at(&self.watched) >= 1,
            "no capture mount on {}:\n{}",
            self.watched.display(),
            d.stderr()
        );
        d
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        for _ in 0..8 {
            if fuse_mounts_at(&self.watched) == 0 {
                break;
            }
            let c = std::ffi::CString::new(self.watched.to_str().unwrap_or("/nonexistent"))
                .unwrap_or_default();
            // SAFETY: umount2 with a valid NUL-terminated path.
            let r = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            if r != 0 {
                let _ = Command::new("fusermount3")
                    .arg("-uz")
                    .arg(&self.watched)
                    .status();
            }
        }
    }
}

/// `sh -c script` in `dir`; returns the shell's pid (the writer: `echo` is a builtin).
fn sh(dir: &Path, script: &str) -> u32 {
    let mut c = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .spawn()
        .expect("sh");
    let pid = c.id();
    let st = c.wait().expect("wait sh");
    assert!(st.success(), "{script:?} failed: {st}");
    pid
}

/// The file sink's `logstash_json` lines: (raw line, parsed document).
fn documents(path: &Path) -> Vec<(String, Value)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            (
                l.to_owned(),
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")),
            )
        })
        .collect()
}

fn message(doc: &Value) -> Vec<u8> {
    B64.decode(doc["@message"].as_str().expect("@message"))
        .expect("@message base64")
}

fn command(doc: &Value) -> String {
    let raw = B64
        .decode(doc["command"].as_str().expect("command"))
        .expect("command base64");
    String::from_utf8(raw)
        .expect("utf-8 command")
        .trim_end()
        .to_owned()
}

/// `YYYY-MM-DDTHH:MM:SS.mmm±hhmm`.
fn is_logstash_time(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        r.into_iter()
            .all(|i| b.get(i).is_some_and(u8::is_ascii_digit))
    };
    b.len() == 28
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..23)
        && (b[23] == b'+' || b[23] == b'-')
        && digits(24..28)
}

const KEY_ORDER: [&str; 12] = [
    "\"path\":",
    "\"pid\":",
    "\"uid\":",
    "\"gid\":",
    "\"@message\":",
    "\"@timestamp\":",
    "\"user\":",
    "\"group\":",
    "\"command\":",
    "\"@version\":",
    "\"@fields\":",
    "\"@tags\":",
];

fn assert_fuse_kafka_document(raw: &str, doc: &Value) {
    let mut at = 0;
    for k in KEY_ORDER {
        let i = raw[at..]
            .find(k)
            .unwrap_or_else(|| panic!("{k} missing or out of order in {raw}"));
        at += i + k.len();
    }
    assert_eq!(
        doc.as_object().map(|o| o.len()),
        Some(12),
        "exactly the fuse_kafka keys: {raw}"
    );
    assert!(
        is_logstash_time(doc["@timestamp"].as_str().unwrap_or("")),
        "{raw}"
    );
    assert_eq!(doc["@version"], env!("CARGO_PKG_VERSION"));
}

fn source_config(extra: &str) -> String {
    format!(
        r#"
[sources.cap]
type = "fuse"
directories = ["$WATCHED"]
lock_dir = "$DIR/locks"
{extra}
[sinks.out]
type = "file"
inputs = ["cap"]
path = "$DIR/out.jsonl"
encoding = "logstash_json"
"#
    )
}
