//! Checkpoints of the file source: per file, its identity and the offset up to
//! which every line was acknowledged by the sinks.
//!
//! One JSON document per source, `<data_dir>/file_source/<source>/checkpoints.json`:
//! `{"version":1,"files":[{"dev":..,"ino":..,"fp_len":..,"fp":..,"offset":..,
//! "path":"..","seen_unix":..}]}`. It is replaced atomically: written to a
//! temporary file, fsynced, renamed over the old one, and the directory fsynced, so
//! a crash at any moment leaves either the old or the new document, never a mix.
//!
//! The offset only ever names bytes whose lines were acknowledged, so a restart
//! after kill -9 re-reads (duplicates) at most what was unacknowledged, and loses
//! nothing. An entry whose file was not seen for `retention` is forgotten.
//!
//! Identity: `(dev, ino)` locates the entry, `fp` (FNV-1a 64 of the first `fp_len`
//! bytes) confirms it is still the same file: an inode recycled by a new file has
//! other first bytes and is read from its start, not from a stale offset.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `(device, inode)` of a file.
pub type FileKey = (u64, u64);

/// Hash of a file's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Bytes hashed (0: the file was empty, nothing to compare).
    pub fp_len: u32,
    /// FNV-1a 64 of those bytes.
    pub fp: u64,
}

impl Fingerprint {
    /// Fingerprint of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        Fingerprint {
            fp_len: u32::try_from(bytes.len()).unwrap_or(u32::MAX),
            fp: h,
        }
    }
}

/// One file's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Identity check.
    #[serde(flatten)]
    pub fingerprint: Fingerprint,
    /// Every line before this byte offset was acknowledged.
    pub offset: u64,
    /// Last path the file was seen at (for operators; not used to match).
    pub path: PathBuf,
    /// When the file was last seen (Unix seconds).
    pub seen_unix: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Document {
    version: u32,
    files: Vec<Entry>,
}

const VERSION: u32 = 1;
const FILE_NAME: &str = "checkpoints.json";

/// The checkpoint store of one source.
#[derive(Debug)]
pub struct Checkpoints {
    dir: PathBuf,
    /// Entries by identity.
    pub entries: HashMap<FileKey, Entry>,
    dirty: bool,
}

impl Checkpoints {
    /// Open (creating the directory) and load the document, if any. A document
    /// that cannot be parsed is an error: silently starting over would re-read
    /// every file.
    pub fn open(dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let path = dir.join(FILE_NAME);
        let entries = match std::fs::read(&path) {
            Ok(bytes) => {
                let doc: Document = serde_json::from_slice(&bytes).map_err(|e| {
                    format!(
                        "{}: not a checkpoint document ({e}); move it away to start over",
                        path.display()
                    )
                })?;
                if doc.version != VERSION {
                    return Err(format!(
                        "{}: checkpoint version {} is not {VERSION}",
                        path.display(),
                        doc.version
                    ));
                }
                doc.files.into_iter().map(|e| ((e.dev, e.ino), e)).collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        Ok(Checkpoints {
            dir: dir.to_owned(),
            entries,
            dirty: false,
        })
    }

    /// Record `entry` (written at the next [`Self::save`]).
    pub fn set(&mut self, entry: Entry) {
        let key = (entry.dev, entry.ino);
        if self.entries.get(&key) != Some(&entry) {
            self.entries.insert(key, entry);
            self.dirty = true;
        }
    }

    /// Forget a file (it is gone and was read to its end).
    pub fn remove(&mut self, key: FileKey) {
        if self.entries.remove(&key).is_some() {
            self.dirty = true;
        }
    }

    /// Drop entries not seen since `cutoff_unix`; returns how many.
    pub fn expire(&mut self, cutoff_unix: u64) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| e.seen_unix >= cutoff_unix);
        let n = before - self.entries.len();
        self.dirty |= n > 0;
        n
    }

    /// Write the document atomically if anything changed.
    pub fn save(&mut self) -> std::io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let mut files: Vec<Entry> = self.entries.values().cloned().collect();
        files.sort_by_key(|e| (e.dev, e.ino));
        let doc = Document {
            version: VERSION,
            files,
        };
        let bytes = serde_json::to_vec(&doc).map_err(std::io::Error::other)?;
        write_atomically(&self.dir, FILE_NAME, &bytes)?;
        self.dirty = false;
        Ok(())
    }
}

/// temp + fsync + rename + directory fsync.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ino: u64, offset: u64) -> Entry {
        Entry {
            dev: 1,
            ino,
            fingerprint: Fingerprint::of(b"first line\n"),
            offset,
            path: PathBuf::from(format!("/x/{ino}.log")),
            seen_unix: 100,
        }
    }

    #[test]
    fn saved_entries_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Checkpoints::open(dir.path()).unwrap();
        c.set(entry(7, 42));
        c.set(entry(8, 0));
        c.save().unwrap();
        let c2 = Checkpoints::open(dir.path()).unwrap();
        assert_eq!(c2.entries.len(), 2);
        assert_eq!(c2.entries[&(1, 7)], entry(7, 42));
        assert!(!dir.path().join("checkpoints.json.tmp").exists());
    }

    #[test]
    fn garbage_document_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        let e = Checkpoints::open(dir.path()).unwrap_err();
        assert!(e.contains("not a checkpoint document"), "{e}");
    }

    #[test]
    fn expire_forgets_only_old_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Checkpoints::open(dir.path()).unwrap();
        c.set(entry(1, 1));
        let mut fresh = entry(2, 1);
        fresh.seen_unix = 500;
        c.set(fresh);
        assert_eq!(c.expire(200), 1);
        assert!(c.entries.contains_key(&(1, 2)));
    }

    #[test]
    fn fingerprint_differs_for_other_bytes() {
        assert_ne!(Fingerprint::of(b"abc"), Fingerprint::of(b"abd"));
        assert_eq!(Fingerprint::of(b"abc").fp_len, 3);
    }
}
