//! The files on disk: a (compressed) stream, an open file's buffer and counters,
//! directories created and fsynced, rotated names.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::Compression;

pub(super) enum Stream {
    Plain(File),
    Gzip(flate2::write::GzEncoder<File>),
    Zstd(zstd::stream::write::Encoder<'static, File>),
}

/// The directories whose entries change when `dir` and its missing ancestors
/// are created (the parent of each directory to create), to be fsynced.
pub(super) fn missing_parents(dir: &Path) -> Vec<PathBuf> {
    let mut parents = Vec::new();
    let mut d = dir;
    while !d.as_os_str().is_empty() && !d.exists() {
        match d.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(p) => {
                parents.push(p.to_path_buf());
                d = p;
            }
            None => {
                // A relative path's first component: its parent is `.`.
                parents.push(PathBuf::from("."));
                break;
            }
        }
    }
    parents
}

/// Creates `dir` and its missing ancestors (a failure names the path and the
/// permission at fault); returns the directories whose entries changed.
pub(super) fn create_dirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let parents = missing_parents(dir);
    crate::dirs::ensure(dir, "file sink output")
        .map_err(|e| std::io::Error::new(e.kind, e.detail))?;
    Ok(parents)
}

/// Makes the creations, removals and renames in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| with_path(e, "syncing directory", dir))
}

impl Stream {
    /// Opens `path` for appending, creating it and its directories; also
    /// returns the directories whose entries changed (to fsync).
    pub(super) fn open(
        path: &Path,
        compression: Compression,
    ) -> std::io::Result<(Stream, Vec<PathBuf>)> {
        let parent = path.parent().filter(|d| !d.as_os_str().is_empty());
        let mut new_entries = match parent {
            Some(dir) => create_dirs(dir)?,
            None => Vec::new(),
        };
        let file = match OpenOptions::new().create_new(true).append(true).open(path) {
            Ok(file) => {
                new_entries.push(parent.map_or_else(|| PathBuf::from("."), Path::to_path_buf));
                file
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                OpenOptions::new().append(true).open(path)?
            }
            Err(e) => return Err(e),
        };
        let stream = match compression {
            Compression::None => Stream::Plain(file),
            Compression::Gzip => Stream::Gzip(flate2::write::GzEncoder::new(
                file,
                flate2::Compression::default(),
            )),
            Compression::Zstd => Stream::Zstd(zstd::stream::write::Encoder::new(file, 3)?),
        };
        Ok((stream, new_entries))
    }

    pub(super) fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Plain(f) => f.write_all(buf),
            Stream::Gzip(g) => g.write_all(buf),
            Stream::Zstd(z) => z.write_all(buf),
        }
    }

    /// Push everything written so far to the file (a sync flush for compressors).
    pub(super) fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(f) => f.flush(),
            Stream::Gzip(g) => g.flush(),
            Stream::Zstd(z) => z.flush(),
        }
    }

    pub(super) fn file(&self) -> &File {
        match self {
            Stream::Plain(f) => f,
            Stream::Gzip(g) => g.get_ref(),
            Stream::Zstd(z) => z.get_ref(),
        }
    }

    /// Finish the compressed stream and fsync.
    pub(super) fn close(self) -> std::io::Result<()> {
        let file = match self {
            Stream::Plain(f) => f,
            Stream::Gzip(g) => g.finish()?,
            Stream::Zstd(z) => z.finish()?,
        };
        file.sync_all()
    }
}

pub(super) struct OpenFile {
    pub(super) stream: Stream,
    pub(super) buf: Vec<u8>,
    pub(super) written: u64,
    pub(super) opened: Instant,
    pub(super) last_write: Instant,
    /// Written since the last flush.
    pub(super) unflushed: bool,
    /// Written since the last fsync.
    pub(super) dirty: bool,
}

impl OpenFile {
    pub(super) fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            self.stream.write_all(&self.buf)?;
            self.buf.clear();
        }
        self.stream.flush()
    }
}
pub(super) fn with_path(e: std::io::Error, what: &str, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

pub(super) fn next_rotated_name(path: &Path, compression: Compression) -> PathBuf {
    let s = path.to_string_lossy();
    let ext = match compression {
        Compression::Gzip if s.ends_with(".gz") => ".gz",
        Compression::Zstd if s.ends_with(".zst") => ".zst",
        _ => "",
    };
    let stem = &s[..s.len() - ext.len()];
    (1u64..)
        .map(|n| PathBuf::from(format!("{stem}.{n}{ext}")))
        .find(|p| !p.exists())
        .expect("an unused rotation number exists")
}
