//! File access behind a small trait: real files in a directory, and (for tests)
//! an in-memory directory that can simulate a crash losing unsynced bytes and a
//! full disk.
//!
//! The WAL only ever needs: list names, positional reads, positional writes,
//! `fdatasync`, truncate, create, remove, rename, directory fsync and an
//! exclusive lock. Names are plain file names inside the one directory.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Keeps the directory locked while alive.
pub type LockGuard = Box<dyn Send + Sync>;

/// A directory holding the WAL files. [`DirStorage`] is the real one; other
/// implementations exist for tests (an in-memory directory with a crash model,
/// a storage whose sync can be held open).
pub trait Storage: Send + Sync {
    /// The path shown in errors and reports for `name`.
    fn path(&self, name: &str) -> PathBuf;
    /// Names of the files in the directory, in no particular order.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Opens an existing file for positional reads.
    fn open_read(&self, name: &str) -> io::Result<Box<dyn ReadFile>>;
    /// Creates `name` empty (truncating an existing file) for positional writes.
    fn create(&self, name: &str) -> io::Result<Box<dyn WriteFile>>;
    /// Opens an existing file for positional writes, keeping its content.
    fn open_write(&self, name: &str) -> io::Result<Box<dyn WriteFile>>;
    /// Removes `name`.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Atomically renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Makes creations, removals and renames in the directory durable.
    fn sync_dir(&self) -> io::Result<()>;
    /// Takes the exclusive directory lock; `None` if someone else holds it.
    fn try_lock(&self) -> io::Result<Option<LockGuard>>;
}

/// A file opened for reading.
// `len` is a file's length, not a collection's size: no `is_empty` to go with it.
#[allow(clippy::len_without_is_empty)]
pub trait ReadFile: Send + Sync {
    /// Reads at `offset`; returns 0 at end of file.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
    /// Current file length.
    fn len(&mut self) -> io::Result<u64>;
}

/// A file opened for writing.
pub trait WriteFile: Send + Sync {
    /// Writes all of `buf` at `offset`; on error a prefix may have been written.
    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// `fdatasync`: makes the content and length durable.
    fn sync_data(&mut self) -> io::Result<()>;
    /// Truncates or extends the file to `len`.
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    /// Another handle on the same file (a `dup`ed descriptor), so that a
    /// [`SyncJob`](crate::SyncJob) can `fdatasync` it on another thread while
    /// this handle keeps writing.
    fn sync_handle(&self) -> io::Result<Box<dyn WriteFile>>;
}

/// Reads exactly `buf.len()` bytes at `offset`; `Ok(false)` if the file ends first.
pub(crate) fn read_exact_at(
    file: &mut dyn ReadFile,
    offset: u64,
    buf: &mut [u8],
) -> io::Result<bool> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(offset + done as u64, &mut buf[done..]) {
            Ok(0) => return Ok(false),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Real files in one directory.
#[derive(Debug)]
pub struct DirStorage {
    dir: PathBuf,
}

impl DirStorage {
    /// The files in `dir` (which must exist).
    pub fn new(dir: &Path) -> Self {
        DirStorage {
            dir: dir.to_path_buf(),
        }
    }
}

/// How long `try_lock` keeps retrying a lock that looks held.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

impl Storage for DirStorage {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            // Names that are not UTF-8 cannot be ours.
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    fn open_read(&self, name: &str) -> io::Result<Box<dyn ReadFile>> {
        Ok(Box::new(File::open(self.path(name))?))
    }

    fn create(&self, name: &str) -> io::Result<Box<dyn WriteFile>> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.path(name))?;
        Ok(Box::new(file))
    }

    fn open_write(&self, name: &str) -> io::Result<Box<dyn WriteFile>> {
        Ok(Box::new(
            OpenOptions::new().write(true).open(self.path(name))?,
        ))
    }

    fn remove(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.path(name))
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.path(from), self.path(to))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    fn try_lock(&self) -> io::Result<Option<LockGuard>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.path(crate::format::LOCK_NAME))?;
        // A flock belongs to the open file description, which a child forked
        // by any thread of this process shares until it execs. A lock we just
        // released can so look held for a moment: retry briefly before
        // reporting that another writer holds it.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Some(Box::new(file))),
                Err(TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Error(e)) => return Err(e),
            }
        }
    }
}

impl ReadFile for File {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }

    fn len(&mut self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

impl WriteFile for File {
    fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn set_len(&mut self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }

    fn sync_handle(&self) -> io::Result<Box<dyn WriteFile>> {
        Ok(Box::new(self.try_clone()?))
    }
}

#[cfg(test)]
pub(crate) use mem::MemStorage;

#[cfg(test)]
mod mem {
    //! In-memory directory with a crash model: each file keeps the bytes a
    //! reader sees (`data`, the page cache) and the bytes that survive a crash
    //! (`synced`, updated by `sync_data`); the directory keeps the live name
    //! table and the durable one (updated by `sync_dir`). `crash()` returns the
    //! directory a restarted machine would find: durable names, synced bytes.

    use super::*;
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex, MutexGuard};

    #[derive(Default)]
    struct Node {
        data: Vec<u8>,
        synced: Vec<u8>,
    }

    type NodeRef = Arc<Mutex<Node>>;

    #[derive(Default)]
    struct State {
        live: BTreeMap<String, NodeRef>,
        durable: BTreeMap<String, NodeRef>,
        /// Total live bytes allowed; writes past it fail with `StorageFull`.
        capacity: Option<u64>,
        /// The next this many `sync_data`/`sync_dir` calls fail with EIO (as
        /// Linux reports a writeback error once; a retry then returns 0).
        failing_syncs: u32,
        /// The same for `sync_dir`.
        failing_dir_syncs: u32,
        locked: bool,
    }

    /// Cloning shares the directory (like two handles on one path).
    #[derive(Clone, Default)]
    pub(crate) struct MemStorage {
        state: Arc<Mutex<State>>,
    }

    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn not_found(name: &str) -> io::Error {
        io::Error::new(io::ErrorKind::NotFound, format!("no file {name}"))
    }

    impl MemStorage {
        pub(crate) fn new() -> Self {
            Self::default()
        }

        /// The directory as found after a power loss at this instant.
        pub(crate) fn crash(&self) -> MemStorage {
            let state = lock(&self.state);
            let mut durable = BTreeMap::new();
            for (name, node) in &state.durable {
                let synced = lock(node).synced.clone();
                let node = Node {
                    data: synced.clone(),
                    synced,
                };
                durable.insert(name.clone(), Arc::new(Mutex::new(node)));
            }
            let state = State {
                live: durable.clone(),
                durable,
                capacity: state.capacity,
                failing_syncs: 0,
                failing_dir_syncs: 0,
                locked: false,
            };
            MemStorage {
                state: Arc::new(Mutex::new(state)),
            }
        }

        pub(crate) fn set_capacity(&self, capacity: Option<u64>) {
            lock(&self.state).capacity = capacity;
        }

        /// Makes the next `n` file syncs fail with EIO without making
        /// anything durable.
        pub(crate) fn fail_syncs(&self, n: u32) {
            lock(&self.state).failing_syncs = n;
        }

        /// The same for directory syncs.
        pub(crate) fn fail_dir_syncs(&self, n: u32) {
            lock(&self.state).failing_dir_syncs = n;
        }

        /// Consumes one failing sync of the kind, if any is left.
        fn sync_fails(&self, dir: bool) -> io::Result<()> {
            let mut state = lock(&self.state);
            let left = if dir {
                &mut state.failing_dir_syncs
            } else {
                &mut state.failing_syncs
            };
            if *left == 0 {
                return Ok(());
            }
            *left -= 1;
            Err(io::Error::from_raw_os_error(EIO))
        }

        /// Changes a file's bytes, both cached and durable (damage on disk).
        pub(crate) fn edit(&self, name: &str, f: impl FnOnce(&mut Vec<u8>)) {
            let node = self.node(name).expect("file to edit exists");
            let mut node = lock(&node);
            f(&mut node.data);
            node.synced = node.data.clone();
        }

        pub(crate) fn names(&self) -> Vec<String> {
            lock(&self.state).live.keys().cloned().collect()
        }

        fn node(&self, name: &str) -> io::Result<NodeRef> {
            lock(&self.state)
                .live
                .get(name)
                .cloned()
                .ok_or_else(|| not_found(name))
        }

        /// Bytes available before the capacity is reached.
        fn room(&self) -> u64 {
            let state = lock(&self.state);
            let Some(capacity) = state.capacity else {
                return u64::MAX;
            };
            let used: u64 = state.live.values().map(|n| lock(n).data.len() as u64).sum();
            capacity.saturating_sub(used)
        }
    }

    struct MemFile {
        node: NodeRef,
        storage: MemStorage,
    }

    impl Storage for MemStorage {
        fn path(&self, name: &str) -> PathBuf {
            Path::new("mem").join(name)
        }

        fn list(&self) -> io::Result<Vec<String>> {
            Ok(self.names())
        }

        fn open_read(&self, name: &str) -> io::Result<Box<dyn ReadFile>> {
            Ok(Box::new(MemFile {
                node: self.node(name)?,
                storage: self.clone(),
            }))
        }

        fn create(&self, name: &str) -> io::Result<Box<dyn WriteFile>> {
            let node = {
                let mut state = lock(&self.state);
                let node = state.live.entry(name.to_string()).or_default().clone();
                lock(&node).data.clear();
                node
            };
            Ok(Box::new(MemFile {
                node,
                storage: self.clone(),
            }))
        }

        fn open_write(&self, name: &str) -> io::Result<Box<dyn WriteFile>> {
            Ok(Box::new(MemFile {
                node: self.node(name)?,
                storage: self.clone(),
            }))
        }

        fn remove(&self, name: &str) -> io::Result<()> {
            let mut state = lock(&self.state);
            state
                .live
                .remove(name)
                .map(drop)
                .ok_or_else(|| not_found(name))
        }

        fn rename(&self, from: &str, to: &str) -> io::Result<()> {
            let mut state = lock(&self.state);
            let node = state.live.remove(from).ok_or_else(|| not_found(from))?;
            state.live.insert(to.to_string(), node);
            Ok(())
        }

        fn sync_dir(&self) -> io::Result<()> {
            self.sync_fails(true)?;
            let mut state = lock(&self.state);
            state.durable = state.live.clone();
            Ok(())
        }

        fn try_lock(&self) -> io::Result<Option<LockGuard>> {
            let mut state = lock(&self.state);
            if state.locked {
                return Ok(None);
            }
            state.locked = true;
            Ok(Some(Box::new(MemLock(self.clone()))))
        }
    }

    /// EIO, the errno a failed writeback reports (5 on every Linux arch).
    const EIO: i32 = 5;

    struct MemLock(MemStorage);

    impl Drop for MemLock {
        fn drop(&mut self) {
            lock(&self.0.state).locked = false;
        }
    }

    impl ReadFile for MemFile {
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
            let node = lock(&self.node);
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(node.data.len());
            let n = buf.len().min(node.data.len() - start);
            buf[..n].copy_from_slice(&node.data[start..start + n]);
            Ok(n)
        }

        fn len(&mut self) -> io::Result<u64> {
            Ok(lock(&self.node).data.len() as u64)
        }
    }

    impl WriteFile for MemFile {
        fn write_all_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
            let room = self.storage.room();
            let mut node = lock(&self.node);
            let offset = usize::try_from(offset).expect("test offsets fit in memory");
            let old_len = node.data.len() as u64;
            let growth = ((offset + buf.len()) as u64).saturating_sub(old_len);
            // A full disk accepts the bytes that fit, then fails, as write(2) does.
            let fits = if growth > room {
                buf.len().saturating_sub((growth - room) as usize)
            } else {
                buf.len()
            };
            if node.data.len() < offset + fits {
                node.data.resize(offset + fits, 0);
            }
            node.data[offset..offset + fits].copy_from_slice(&buf[..fits]);
            if fits < buf.len() {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "no space left"));
            }
            Ok(())
        }

        fn sync_data(&mut self) -> io::Result<()> {
            self.storage.sync_fails(false)?;
            let mut node = lock(&self.node);
            node.synced = node.data.clone();
            Ok(())
        }

        fn set_len(&mut self, len: u64) -> io::Result<()> {
            let len = usize::try_from(len).expect("test lengths fit in memory");
            lock(&self.node).data.resize(len, 0);
            Ok(())
        }

        fn sync_handle(&self) -> io::Result<Box<dyn WriteFile>> {
            Ok(Box::new(MemFile {
                node: self.node.clone(),
                storage: self.storage.clone(),
            }))
        }
    }
}
