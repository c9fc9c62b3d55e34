//! `type = "fuse"`: every `write(2)` to a file under the watched directories becomes
//! an event, with the writer's pid, uid/gid, user/group names and command line.
//!
//! Each directory is mounted over itself by `sluice-capture-fuse` (one mount per
//! directory, see that crate for the filesystem and its limits): programs keep writing
//! their files as before, the bytes reach the disk first, then the capture is queued.
//! The queue is bounded and never blocks a writer: when full (the pipeline is slower
//! than the writers) the capture is dropped and counted, the file is still complete.
//!
//! Build mounts every directory, so "not root and no fusermount3", "already captured
//! by a live sluice" and the like fail start-up with the component id; a stale mount
//! left by a killed run is cleared (logged). Run: one thread per directory drains its
//! queue into batches (what is available, up to [`MAX_BATCH`] writes) and sends them
//! on. Stop: what is queued is sent, the directory is unmounted (lazily if files are
//! still open), and what arrived meanwhile is sent too.
//!
//! With `writeback = true` the kernel's page cache absorbs the writes and sluice gets
//! them later in pieces of up to 1 MiB, attributed to the opener of the file handle
//! the kernel names (docs/sources/fuse.md); read-only opens are served by kernel
//! passthrough unless `passthrough = false`.
//!
//! Event: body = the bytes of one write (with writeback: of one written-back piece),
//! time = when it reached the file, tag = the source's tag, origin = path as the
//! application sees it, pid, uid, gid, user, group, command, `@fields`/`@tags` from
//! the config (shared, not copied per event). Origins are shared between the writes of
//! one process to one file.

mod drain;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use capture_fuse::{Capture, CaptureConfig, CaptureHandle, CaptureReceiver};
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use tracing::{info, warn};

use crate::config::{Check, Validate};
use crate::topology::{ComponentError, SourceContext, Task};

/// Most writes put in one batch.
pub const MAX_BATCH: usize = 1_000;

/// `[sources.NAME] type = "fuse"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FuseSourceConfig {
    /// Directories to capture; each is mounted over itself. Created when missing.
    pub directories: Vec<PathBuf>,
    /// Globs over the path relative to its directory (`*` also crosses `/`); empty
    /// means every file.
    #[serde(default)]
    pub include: Vec<String>,
    /// Globs of files never captured; wins over `include`.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Per-file capture quota (token bucket); over it writes still reach the disk but
    /// are not captured (counted, logged once per file per 10 s).
    #[serde(default)]
    pub quota_bytes_per_sec: Option<u64>,
    /// Bucket size of the quota (default: one second's worth).
    #[serde(default)]
    pub quota_burst_bytes: Option<u64>,
    /// `@fields` of every event (values are strings; numbers and booleans are
    /// written as text). Order is kept.
    #[serde(default, deserialize_with = "string_pairs")]
    pub fields: Vec<(String, String)>,
    /// `@tags` of every event.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Capture queue bound per directory, in writes; beyond it captures are dropped.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Capture queue bound per directory, in payload bytes.
    #[serde(default = "default_queue_max_bytes")]
    pub queue_max_bytes: usize,
    /// FUSE request threads per directory (default: cores, clamped to 2..=8).
    #[serde(default)]
    pub threads: Option<usize>,
    /// Let fusermount3 detach the mount if sluice dies (default true).
    #[serde(default = "default_true")]
    pub auto_unmount: bool,
    /// How long a stop waits for files still open before detaching lazily.
    #[serde(default = "default_unmount_grace_ms")]
    pub unmount_grace_ms: u64,
    /// Where the per-directory owner lock files live (default `/run/sluice` as root).
    #[serde(default)]
    pub lock_dir: Option<PathBuf>,
    /// Put each write's file offset in its origin (`json` shows it as `offset`);
    /// costs one origin copy per write.
    #[serde(default)]
    pub offsets: bool,
    /// Mount with the kernel's writeback cache: small writes are absorbed by the page
    /// cache and captured in large pieces, attributed to the process that opened the
    /// file handle the kernel names (see docs/sources/fuse.md).
    #[serde(default)]
    pub writeback: bool,
    /// Serve read-only opens by kernel passthrough (Linux 6.9+, as root): readers of
    /// watched files cost nothing. Ignored with `writeback`. Default true.
    #[serde(default = "default_true")]
    pub passthrough: bool,
}

fn default_queue_capacity() -> usize {
    65_536
}

fn default_queue_max_bytes() -> usize {
    256 << 20
}

fn default_true() -> bool {
    true
}

fn default_unmount_grace_ms() -> u64 {
    2_000
}

/// A TOML table of scalars, in file order, values as text.
fn string_pairs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    struct Pairs;
    impl<'de> Visitor<'de> for Pairs {
        type Value = Vec<(String, String)>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a table of strings, e.g. { dc = \"par1\" }")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some((k, v)) = map.next_entry::<String, Scalar>()? {
                out.push((k, v.0));
            }
            Ok(out)
        }
    }
    d.deserialize_map(Pairs)
}

struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl Validate for FuseSourceConfig {
    fn validate(&self, v: &mut Check<'_, '_>) {
        if self.directories.is_empty() {
            v.error("directories", "needs at least one directory");
        }
        for (i, d) in self.directories.iter().enumerate() {
            if !d.is_absolute() {
                v.error(
                    "directories",
                    format!("{} is not an absolute path", d.display()),
                );
            } else if d.parent().is_none() {
                v.error("directories", "cannot capture /");
            }
            for other in &self.directories[..i] {
                if d == other {
                    v.error("directories", format!("{} is listed twice", d.display()));
                } else if d.starts_with(other) || other.starts_with(d) {
                    v.error(
                        "directories",
                        format!(
                            "{} and {} nest; watched directories must not",
                            other.display(),
                            d.display()
                        ),
                    );
                }
            }
        }
        for (key, list) in [("include", &self.include), ("exclude", &self.exclude)] {
            for p in list {
                if let Err(e) = capture_fuse::check_glob(p) {
                    v.error(key, format!("invalid glob {p:?}: {e}"));
                }
            }
        }
        if self.quota_bytes_per_sec == Some(0) {
            v.error(
                "quota_bytes_per_sec",
                "must be at least 1 (omit it for no quota)",
            );
        }
        match self.quota_burst_bytes {
            Some(_) if self.quota_bytes_per_sec.is_none() => {
                v.error("quota_burst_bytes", "needs quota_bytes_per_sec")
            }
            Some(0) => v.error("quota_burst_bytes", "must be at least 1"),
            _ => {}
        }
        if self.queue_capacity == 0 {
            v.error("queue_capacity", "must be at least 1");
        }
        if self.queue_max_bytes == 0 {
            v.error("queue_max_bytes", "must be at least 1");
        }
        if self.threads == Some(0) {
            v.error("threads", "must be at least 1");
        }
    }
}

impl FuseSourceConfig {
    fn capture_config(&self, dir: &Path) -> CaptureConfig {
        let mut c = CaptureConfig::new(dir);
        c.include = self.include.clone();
        c.exclude = self.exclude.clone();
        c.quota_bytes_per_sec = self.quota_bytes_per_sec;
        c.quota_burst_bytes = self.quota_burst_bytes;
        c.queue_capacity = self.queue_capacity;
        c.queue_max_bytes = self.queue_max_bytes;
        if let Some(n) = self.threads {
            c.n_threads = n;
        }
        c.auto_unmount = self.auto_unmount;
        c.lock_dir = self.lock_dir.clone();
        c.unmount_grace = Duration::from_millis(self.unmount_grace_ms);
        c.writeback = self.writeback;
        c.passthrough = self.passthrough;
        c
    }
}

/// One mounted directory.
pub(crate) struct Mounted {
    pub(crate) handle: CaptureHandle,
    pub(crate) rx: CaptureReceiver,
}

/// An error and its causes on one line, without "(os error N)".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    while let Some(i) = text.find(" (os error") {
        let end = text[i..].find(')').map_or(text.len(), |j| i + j + 1);
        text.replace_range(i..end, "");
    }
    text
}

/// Mounts every directory, or none: on the first failure the others are unmounted.
fn mount_all(config: &FuseSourceConfig) -> Result<Vec<Mounted>, ComponentError> {
    let mut mounted: Vec<Mounted> = Vec::new();
    let fail = |mounted: Vec<Mounted>, e: ComponentError| {
        for m in mounted {
            if let Err(err) = m.handle.unmount() {
                warn!(error = %error_chain(&err), "Cannot unmount after a failed start.");
            }
        }
        Err(e)
    };
    for dir in &config.directories {
        // `symlink_metadata`, not `exists`: a stale mount answers ENOTCONN, which the
        // capture crate clears.
        let missing =
            std::fs::symlink_metadata(dir).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
        if missing {
            if let Err(e) = std::fs::create_dir_all(dir) {
                let context = format!("creating watched directory {}", dir.display());
                return fail(mounted, ComponentError::io(context, e));
            }
            info!(path = %dir.display(), "Created missing watched directory.");
        }
        match Capture::mount(config.capture_config(dir)) {
            Ok((handle, rx)) => mounted.push(Mounted { handle, rx }),
            Err(e) => return fail(mounted, ComponentError::Other(error_chain(&e))),
        }
    }
    Ok(mounted)
}

pub(super) async fn build(
    config: FuseSourceConfig,
    cx: SourceContext,
) -> Result<Task, ComponentError> {
    // The capture crate logs (stale mount cleared, pre-mount writers) carry the id.
    let span = tracing::info_span!("component", component_kind = "source", component_id = %cx.name);
    let cfg = config.clone();
    let mounted = tokio::task::spawn_blocking(move || span.in_scope(|| mount_all(&cfg)))
        .await
        .map_err(|e| ComponentError::Other(format!("mount task failed: {e}")))??;
    Ok(Box::pin(run(config, mounted, cx)))
}

async fn run(
    config: FuseSourceConfig,
    mounted: Vec<Mounted>,
    cx: SourceContext,
) -> Result<(), ComponentError> {
    let statics = Arc::new(drain::Statics {
        fields: (!config.fields.is_empty()).then(|| Arc::new(config.fields.clone())),
        tags: (!config.tags.is_empty()).then(|| Arc::new(config.tags.clone())),
        offsets: config.offsets,
    });
    let stop = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Handle::current();
    let total = mounted.len();
    let (ended_tx, mut ended_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let span = tracing::Span::current();
    let mut threads = Vec::with_capacity(total);
    let mut spawn_error = None;
    for m in mounted {
        let drainer = drain::Drainer::new(m, &cx, statics.clone(), stop.clone(), rt.clone());
        let (span, ended) = (span.clone(), ended_tx.clone());
        let spawned = std::thread::Builder::new()
            .name("sluice-fuse-drain".into())
            .spawn(move || {
                span.in_scope(|| drainer.run());
                let _ = ended.send(());
            });
        match spawned {
            Ok(t) => threads.push(t),
            // The closure (and with it the mount) was dropped: unmounted.
            Err(e) => {
                spawn_error = Some(ComponentError::io("starting a capture drain thread", e));
                break;
            }
        }
    }
    drop(ended_tx);
    let mut result = match spawn_error {
        Some(e) => Err(e),
        None => Ok(()),
    };
    if result.is_ok() {
        let mut ended = 0;
        loop {
            tokio::select! {
                _ = cx.shutdown.cancelled() => break,
                r = ended_rx.recv() => {
                    ended += 1;
                    if r.is_none() || ended == total {
                        result = Err(ComponentError::Other(
                            "every capture mount went away (unmounted from outside?)".into(),
                        ));
                        break;
                    }
                }
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    })
    .await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<crate::config::Config, String> {
        crate::config::load_str(Path::new("t.toml"), text).map_err(|e| e.to_string())
    }

    #[test]
    fn keys_parse_with_defaults_and_ordered_fields() {
        let c = parse(
            r#"
[sources.cap]
type = "fuse"
directories = ["/var/log/app", "/srv/logs"]
include = ["*.log", "**/*.txt"]
exclude = ["*.gz"]
quota_bytes_per_sec = 1048576
fields = { role = "web", dc = "par1", n = 3 }
tags = ["edge"]
[sinks.out]
type = "null"
inputs = ["cap"]
"#,
        )
        .unwrap();
        let crate::config::SourceKind::Fuse(f) = &c.sources[0].kind else {
            panic!("not fuse")
        };
        assert_eq!(
            f.directories,
            [PathBuf::from("/var/log/app"), PathBuf::from("/srv/logs")]
        );
        assert_eq!(f.quota_bytes_per_sec, Some(1 << 20));
        let fields: Vec<(&str, &str)> = f
            .fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(fields, [("role", "web"), ("dc", "par1"), ("n", "3")]);
        assert_eq!(f.tags, ["edge"]);
        assert_eq!(f.queue_capacity, 65_536);
        assert!(f.auto_unmount && !f.offsets && !f.writeback && f.passthrough);
        assert_eq!(c.sources[0].kind.type_name(), "fuse");
    }

    #[test]
    fn bad_values_are_reported_on_their_keys() {
        let e = parse(
            r#"
[sources.cap]
type = "fuse"
directories = ["rel/dir", "/a", "/a/b"]
include = ["a[b"]
quota_bytes_per_sec = 0
queue_capacity = 0
[sources.other]
type = "fuse"
directories = ["/a"]
[sinks.out]
type = "null"
inputs = ["cap", "other"]
"#,
        )
        .unwrap_err();
        for needle in [
            "sources.cap.directories",
            "not an absolute path",
            "nest",
            "sources.cap.include",
            "sources.cap.quota_bytes_per_sec",
            "sources.cap.queue_capacity",
            "sources.other.directories",
        ] {
            assert!(e.contains(needle), "{needle:?} missing in:\n{e}");
        }
        let e = parse("[sources.cap]\ntype = \"fuse\"\ndirectories = []\nfield = 1\n").unwrap_err();
        assert!(
            e.contains("at least one directory") && e.contains("field"),
            "{e}"
        );
    }

    #[test]
    fn error_chain_drops_os_error_numbers() {
        let io = std::io::Error::from_raw_os_error(libc::EACCES);
        assert_eq!(error_chain(&io), "Permission denied");
    }
}
