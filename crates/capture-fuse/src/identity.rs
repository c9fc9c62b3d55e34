//! Who wrote: thread id → (process id, command line), and uid/gid → names.
//!
//! FUSE writes are synchronous for `write(2)` callers: the writing thread is blocked in
//! the kernel until we reply, so `/proc/<tid>` names that very thread while we look at
//! it — short-lived writers cannot vanish and their tid cannot be reused under us.
//! What can change between two writes of one tid is the process behind it (the tid died
//! and was reused) or its program (`exec`). Each cache entry keeps `/proc/<tid>/comm`
//! and `/proc/<tid>/stat` open. Reading a procfs file of a dead task fails with `ESRCH`,
//! which catches reuse exactly. Every write re-reads `comm` (cheap), which changes on an
//! `exec` of a differently named program; an `exec` of a same-named one (`sh` → `sh`)
//! shows only in `stat`'s `startstack` (re-randomised by every `exec` under ASLR), and
//! `stat` — about 2 µs to format here, a third of a small write's cost — is re-read at
//! most every [`FULL_CHECK_INTERVAL`] per thread. So a same-named re-`exec` may keep the
//! previous command line for that long; pid and tid are always exact.
//!
//! Names: NSS may call out to LDAP/sssd, whose own logs could sit in a watched
//! directory, so a filesystem thread never calls NSS itself. Misses are resolved by a
//! dedicated thread; the filesystem thread waits at most [`NAME_WAIT`] and otherwise
//! reports an empty name (later writes get the resolved one).

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::RwLock;

/// Identity of a process image, shared by all cache users.
#[derive(Debug)]
pub(crate) struct ProcInfo {
    pub(crate) tgid: u32,
    pub(crate) command: Arc<str>,
}

impl ProcInfo {
    pub(crate) fn unknown() -> Arc<ProcInfo> {
        Arc::new(ProcInfo {
            tgid: 0,
            command: Arc::from(""),
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StatSig {
    starttime: u64,
    startstack: u64,
    comm_hash: u64,
}

/// How long a thread's `stat` signature is trusted between full checks.
pub(crate) const FULL_CHECK_INTERVAL: Duration = Duration::from_millis(50);

struct ProcEntry {
    comm: File,
    comm_hash: u64,
    stat: File,
    sig: StatSig,
    /// When `stat` last matched, in ns since the cache's epoch.
    checked_ns: AtomicU64,
    info: Arc<ProcInfo>,
}

impl ProcEntry {
    /// Still the same task running the same program?
    fn still_valid(&self, now_ns: u64) -> bool {
        let mut buf = [0u8; 64];
        match self.comm.read_at(&mut buf, 0) {
            Ok(n) if n > 0 && fnv1a(&buf[..n]) == self.comm_hash => {}
            _ => return false,
        }
        let checked = self.checked_ns.load(Ordering::Relaxed);
        if now_ns.saturating_sub(checked) < FULL_CHECK_INTERVAL.as_nanos() as u64 {
            return true;
        }
        let mut buf = [0u8; 1024];
        match self.stat.read_at(&mut buf, 0) {
            Ok(n) if parse_stat(&buf[..n]) == Some(self.sig) => {
                self.checked_ns.store(now_ns, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }
}

/// Upper bound on cached tids before dead ones are swept.
const PROC_CACHE_SWEEP_AT: usize = 2048;

pub(crate) struct ProcCache {
    map: RwLock<HashMap<u32, Arc<ProcEntry>>>,
    epoch: Instant,
}

impl ProcCache {
    pub(crate) fn new() -> Self {
        ProcCache {
            map: RwLock::new(HashMap::new()),
            epoch: Instant::now(),
        }
    }

    /// Identity of the process that thread `tid` belongs to, `None` if it cannot be read
    /// (tid 0, a task outside our pid namespace, or procfs hidden from us).
    pub(crate) fn lookup(&self, tid: u32) -> Option<Arc<ProcInfo>> {
        if tid == 0 {
            return None;
        }
        let cached = self.map.read().get(&tid).cloned();
        let now_ns = self.epoch.elapsed().as_nanos() as u64;
        if let Some(entry) = cached {
            if entry.still_valid(now_ns) {
                return Some(entry.info.clone());
            }
        }
        let entry = Arc::new(resolve(tid, now_ns)?);
        let info = entry.info.clone();
        let mut map = self.map.write();
        if map.len() >= PROC_CACHE_SWEEP_AT {
            let mut probe = [0u8; 64];
            map.retain(|_, e| e.comm.read_at(&mut probe, 0).is_ok());
            if map.len() >= PROC_CACHE_SWEEP_AT {
                map.clear();
            }
        }
        map.insert(tid, entry);
        Some(info)
    }
}

fn resolve(tid: u32, now_ns: u64) -> Option<ProcEntry> {
    let comm = File::open(format!("/proc/{tid}/comm")).ok()?;
    let stat = File::open(format!("/proc/{tid}/stat")).ok()?;
    let mut buf = [0u8; 1024];
    let n = stat.read_at(&mut buf, 0).ok()?;
    let sig = parse_stat(&buf[..n])?;
    let n = comm.read_at(&mut buf[..64], 0).ok()?;
    let comm_hash = fnv1a(&buf[..n]);
    let status = std::fs::read(format!("/proc/{tid}/status")).ok()?;
    let tgid = parse_tgid(&status).unwrap_or(tid);
    let command = read_cmdline(tgid).unwrap_or_default();
    Some(ProcEntry {
        comm,
        comm_hash,
        stat,
        sig,
        checked_ns: AtomicU64::new(now_ns),
        info: Arc::new(ProcInfo {
            tgid,
            command: Arc::from(command),
        }),
    })
}

/// `(starttime, startstack, comm)` from `/proc/<tid>/stat` (fields 22, 28 and 2).
fn parse_stat(buf: &[u8]) -> Option<StatSig> {
    let open = buf.iter().position(|&b| b == b'(')?;
    let close = buf.iter().rposition(|&b| b == b')')?;
    let comm = buf.get(open + 1..close)?;
    let rest = std::str::from_utf8(buf.get(close + 2..)?).ok()?;
    // `rest` starts at field 3 (state).
    let mut fields = rest.split(' ');
    let starttime = fields.nth(22 - 3)?.parse().ok()?;
    let startstack = fields.nth(28 - 22 - 1)?.parse().ok()?;
    Some(StatSig {
        starttime,
        startstack,
        comm_hash: fnv1a(comm),
    })
}

fn parse_tgid(status: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(status).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Longest command line kept; longer ones are cut.
const MAX_CMDLINE: u64 = 4096;

fn read_cmdline(pid: u32) -> Option<String> {
    let mut raw = Vec::new();
    File::open(format!("/proc/{pid}/cmdline"))
        .ok()?
        .take(MAX_CMDLINE)
        .read_to_end(&mut raw)
        .ok()?;
    Some(cmdline_to_string(&raw))
}

/// NUL-separated argv → space-separated string, trailing NULs dropped.
pub(crate) fn cmdline_to_string(raw: &[u8]) -> String {
    let end = raw.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let joined: Vec<u8> = raw[..end]
        .iter()
        .map(|&b| if b == 0 { b' ' } else { b })
        .collect();
    String::from_utf8_lossy(&joined).into_owned()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// How long a filesystem thread waits for a name lookup before reporting it empty.
pub(crate) const NAME_WAIT: Duration = Duration::from_millis(100);
/// Unresolved (empty) names are retried after this long.
const NEGATIVE_TTL: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum IdKind {
    User,
    Group,
}

struct NameEntry {
    name: Arc<str>,
    fetched: Instant,
}

type NameMap = RwLock<HashMap<(IdKind, u32), NameEntry>>;

/// uid/gid → name cache backed by a resolver thread.
pub(crate) struct NameCache {
    map: Arc<NameMap>,
    requests: crossbeam_channel::Sender<(IdKind, u32, crossbeam_channel::Sender<()>)>,
    empty: Arc<str>,
}

impl NameCache {
    pub(crate) fn new() -> std::io::Result<Self> {
        let map: Arc<NameMap> = Arc::default();
        let (tx, rx) =
            crossbeam_channel::bounded::<(IdKind, u32, crossbeam_channel::Sender<()>)>(256);
        let resolver_map = map.clone();
        std::thread::Builder::new()
            .name("sluice-names".into())
            .spawn(move || {
                // Ends when the cache (the only sender) is dropped.
                for (kind, id, done) in rx {
                    let name = resolve_name(kind, id);
                    resolver_map.write().insert(
                        (kind, id),
                        NameEntry {
                            name: Arc::from(name),
                            fetched: Instant::now(),
                        },
                    );
                    let _ = done.try_send(());
                }
            })?;
        Ok(NameCache {
            map,
            requests: tx,
            empty: Arc::from(""),
        })
    }

    pub(crate) fn user(&self, uid: u32) -> Arc<str> {
        self.name(IdKind::User, uid)
    }

    pub(crate) fn group(&self, gid: u32) -> Arc<str> {
        self.name(IdKind::Group, gid)
    }

    fn name(&self, kind: IdKind, id: u32) -> Arc<str> {
        let stale = {
            let map = self.map.read();
            match map.get(&(kind, id)) {
                Some(e) if !e.name.is_empty() || e.fetched.elapsed() < NEGATIVE_TTL => {
                    return e.name.clone();
                }
                Some(e) => Some(e.name.clone()),
                None => None,
            }
        };
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        if self.requests.try_send((kind, id, done_tx)).is_err() {
            return stale.unwrap_or_else(|| self.empty.clone());
        }
        if let Some(name) = stale {
            // Retry in the background; keep answering with what we had.
            return name;
        }
        if done_rx.recv_timeout(NAME_WAIT).is_ok() {
            if let Some(e) = self.map.read().get(&(kind, id)) {
                return e.name.clone();
            }
        }
        self.empty.clone()
    }
}

fn resolve_name(kind: IdKind, id: u32) -> String {
    match kind {
        IdKind::User => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(id))
            .ok()
            .flatten()
            .map(|u| u.name),
        IdKind::Group => nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(id))
            .ok()
            .flatten()
            .map(|g| g.name),
    }
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_nuls_become_spaces_and_trailing_nul_is_trimmed() {
        assert_eq!(cmdline_to_string(b"sh\0-c\0echo hi\0"), "sh -c echo hi");
        assert_eq!(cmdline_to_string(b""), "");
        assert_eq!(cmdline_to_string(b"\0\0"), "");
        assert_eq!(
            cmdline_to_string(b"rewritten by itself"),
            "rewritten by itself"
        );
    }

    #[test]
    fn stat_parse_survives_spaces_and_parens_in_comm() {
        let mut line = String::from("1234 (a b) c)) S");
        // fields 4..=52
        for f in 4..=52 {
            line.push(' ');
            line.push_str(&f.to_string());
        }
        let sig = parse_stat(line.as_bytes()).unwrap();
        assert_eq!(sig.starttime, 22);
        assert_eq!(sig.startstack, 28);
        assert_eq!(sig.comm_hash, fnv1a(b"a b) c)"));
    }

    #[test]
    fn own_thread_resolves_to_own_pid_and_command() {
        let cache = ProcCache::new();
        let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
        let info = cache.lookup(tid).expect("own tid is readable");
        assert_eq!(info.tgid, std::process::id());
        assert!(!info.command.is_empty());
        let again = cache.lookup(tid).unwrap();
        assert!(
            Arc::ptr_eq(&info, &again),
            "second lookup is served from the cache"
        );
        assert!(cache.lookup(0).is_none());
    }

    #[test]
    fn root_names_resolve() {
        let names = NameCache::new().unwrap();
        assert_eq!(&*names.user(0), "root");
        assert_eq!(&*names.group(0), "root");
    }
}
