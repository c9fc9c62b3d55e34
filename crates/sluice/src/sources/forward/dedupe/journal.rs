//! The chunk id journal: remembered ids that outlive the process.
//!
//! Two files in the source's directory, `chunks.old` and `chunks.cur`, each
//! `SLCHUNK1` then entries appended in the order the ids were remembered:
//!
//! ```text
//! entry   len     u8, 1..=64
//!         id      len bytes
//!         secs    u64 LE, Unix time it was remembered
//!         crc     u32 LE, CRC-32C of the bytes above
//! ```
//!
//! Each id is one `write(2)` of its entry, done before its ack may be written,
//! so it survives a killed process (the page cache has it); the files are
//! fsynced only when they rotate. When `chunks.cur` holds `max_chunks` entries
//! it becomes `chunks.old` (replacing it) and a new one starts, so the two hold
//! the latest `max_chunks` ids and at most twice that on disk.
//!
//! Opening reads `chunks.old` then `chunks.cur` into the window (its bounds
//! drop what is too old or too many), each up to its first entry that is cut
//! short or fails its CRC (a write torn by a power loss: what follows is lost,
//! which costs duplicates, never data). It then writes the window as the new
//! `chunks.old` (through a temporary file, fsynced, renamed) and starts an empty
//! `chunks.cur`, so nothing is ever appended after a torn tail. A file with
//! another header is not ours: it is ignored and replaced.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::{MAX_CHUNK_ID_BYTES, Window};

const MAGIC: &[u8; 8] = b"SLCHUNK1";
const OLD: &str = "chunks.old";
const CUR: &str = "chunks.cur";
const TMP: &str = "chunks.tmp";
/// Bytes of an entry besides its id.
const ENTRY_OVERHEAD: usize = 1 + 8 + 4;

/// A journal file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("chunk id journal {}: {source}", path.display())]
pub struct JournalError {
    /// The file or directory.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

fn err(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError {
        path: path.to_owned(),
        source,
    }
}

/// The open journal of one source.
pub(crate) struct Journal {
    dir: PathBuf,
    cur: File,
    /// Entries in `chunks.cur`.
    entries: usize,
    /// Entries after which `chunks.cur` rotates (`max_chunks`).
    rotate_at: usize,
}

/// One entry's bytes.
pub(crate) fn encode_entry(id: &[u8], secs: u64, out: &mut Vec<u8>) {
    debug_assert!(!id.is_empty() && id.len() <= MAX_CHUNK_ID_BYTES);
    let start = out.len();
    out.push(id.len() as u8);
    out.extend_from_slice(id);
    out.extend_from_slice(&secs.to_le_bytes());
    let crc = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Read one file's entries into `each`; a missing file or a foreign header
/// reads as empty, a torn or corrupt entry ends it.
fn read_file(path: &Path, mut each: impl FnMut(Bytes, u64)) -> Result<(), JournalError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(path)(e)),
    };
    let mut r = BufReader::new(file);
    let mut magic = [0u8; 8];
    if r.read_exact(&mut magic).is_err() || &magic != MAGIC {
        return Ok(());
    }
    let mut entry = [0u8; MAX_CHUNK_ID_BYTES + ENTRY_OVERHEAD];
    loop {
        if r.read_exact(&mut entry[..1]).is_err() {
            return Ok(());
        }
        let n = usize::from(entry[0]);
        if n == 0 || n > MAX_CHUNK_ID_BYTES {
            return Ok(());
        }
        let len = n + ENTRY_OVERHEAD;
        if r.read_exact(&mut entry[1..len]).is_err() {
            return Ok(());
        }
        let body = &entry[..len - 4];
        let crc = u32::from_le_bytes([
            entry[len - 4],
            entry[len - 3],
            entry[len - 2],
            entry[len - 1],
        ]);
        if crc32c::crc32c(body) != crc {
            return Ok(());
        }
        let mut secs = [0u8; 8];
        secs.copy_from_slice(&entry[1 + n..1 + n + 8]);
        each(
            Bytes::copy_from_slice(&entry[1..1 + n]),
            u64::from_le_bytes(secs),
        );
    }
}

/// fsync a directory so renames in it are durable.
fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(err(dir))
}

/// Create `path` (truncating) holding the header and `body`, fsynced.
fn write_file(path: &Path, body: &[u8]) -> Result<File, JournalError> {
    let mut f = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)
        .map_err(err(path))?;
    f.write_all(MAGIC).map_err(err(path))?;
    f.write_all(body).map_err(err(path))?;
    f.sync_data().map_err(err(path))?;
    Ok(f)
}

impl Journal {
    /// Read the journal in `dir` (which exists) into `window`, then `more`
    /// (oldest first), then rewrite it as the window holds it now and start an
    /// empty current file.
    pub(crate) fn open(
        dir: &Path,
        window: &mut Window,
        more: Vec<(Bytes, u64)>,
        now: u64,
    ) -> Result<Journal, JournalError> {
        for name in [OLD, CUR] {
            read_file(&dir.join(name), |id, secs| window.insert(id, secs, now))?;
        }
        for (id, secs) in more {
            if !window.contains(&id, now) {
                window.insert(id, secs, now);
            }
        }
        let mut body = Vec::with_capacity(window.len() * (ENTRY_OVERHEAD + 32));
        for (id, secs) in window.entries() {
            encode_entry(id, secs, &mut body);
        }
        let (tmp, old, cur) = (dir.join(TMP), dir.join(OLD), dir.join(CUR));
        drop(write_file(&tmp, &body)?);
        std::fs::rename(&tmp, &old).map_err(err(&old))?;
        let cur_file = write_file(&cur, &[])?;
        sync_dir(dir)?;
        Ok(Journal {
            dir: dir.to_owned(),
            cur: cur_file,
            entries: 0,
            rotate_at: window.max_chunks.max(1),
        })
    }

    /// Append one remembered id (one write).
    pub(crate) fn append(&mut self, id: &[u8], secs: u64) -> Result<(), JournalError> {
        let mut entry = Vec::with_capacity(id.len() + ENTRY_OVERHEAD);
        encode_entry(id, secs, &mut entry);
        self.cur
            .write_all(&entry)
            .map_err(err(&self.dir.join(CUR)))?;
        self.entries += 1;
        if self.entries >= self.rotate_at {
            self.rotate()?;
        }
        Ok(())
    }

    /// `chunks.cur` becomes `chunks.old`; a new `chunks.cur` starts.
    fn rotate(&mut self) -> Result<(), JournalError> {
        let (old, cur) = (self.dir.join(OLD), self.dir.join(CUR));
        self.cur.sync_data().map_err(err(&cur))?;
        std::fs::rename(&cur, &old).map_err(err(&old))?;
        self.cur = write_file(&cur, &[])?;
        sync_dir(&self.dir)?;
        self.entries = 0;
        Ok(())
    }
}
