//! One partition's archive state: the file being written, its boundaries, the
//! manifest that records every boundary, and how far the partition is archived.
//! The rules are in the module doc of [`super`].

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use super::ArchiveCompression;
use super::store::{META_DIR, Store};

/// Compressing writer of a staging file.
pub enum Compressor {
    /// No compression.
    None(BufWriter<File>),
    /// gzip, level 6.
    Gzip(flate2::write::GzEncoder<BufWriter<File>>),
    /// zstd, level 3.
    Zstd(zstd::Encoder<'static, BufWriter<File>>),
}

impl Compressor {
    fn create(path: &std::path::Path, c: ArchiveCompression) -> std::io::Result<Self> {
        let f = BufWriter::with_capacity(256 * 1024, File::create(path)?);
        Ok(match c {
            ArchiveCompression::None => Compressor::None(f),
            ArchiveCompression::Gzip => Compressor::Gzip(flate2::write::GzEncoder::new(
                f,
                flate2::Compression::new(6),
            )),
            ArchiveCompression::Zstd => Compressor::Zstd(zstd::Encoder::new(f, 3)?),
        })
    }

    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Compressor::None(w) => w.write_all(b),
            Compressor::Gzip(w) => w.write_all(b),
            Compressor::Zstd(w) => w.write_all(b),
        }
    }

    fn finish(self) -> std::io::Result<()> {
        let mut inner = match self {
            Compressor::None(w) => w,
            Compressor::Gzip(w) => w.finish()?,
            Compressor::Zstd(w) => w.finish()?,
        };
        inner.flush()
    }
}

/// A file being written.
pub struct OpenFile {
    /// Offset the file is named by.
    pub first: i64,
    /// Last offset written.
    pub last: i64,
    /// Records written.
    pub records: u64,
    /// Final key.
    pub key: String,
    /// Rendered path around `{first_offset}`: a record rendering another one
    /// starts a new file.
    pub ident: String,
    /// Encoded bytes written (before compression).
    pub raw_bytes: u64,
    /// When it was opened (for `max_file_secs`).
    pub opened: Instant,
    /// End offset a manifest imposes on this file.
    pub forced_end: Option<i64>,
    staged: PathBuf,
    out: Compressor,
}

impl OpenFile {
    /// Open a staging file for `key`.
    pub fn open(
        store: &Store,
        compression: ArchiveCompression,
        first: i64,
        key: String,
        ident: String,
        forced_end: Option<i64>,
    ) -> std::io::Result<Self> {
        let staged = store.staging_path(&key);
        let out = Compressor::create(&staged, compression)?;
        Ok(OpenFile {
            first,
            last: first - 1,
            records: 0,
            key,
            ident,
            raw_bytes: 0,
            opened: Instant::now(),
            forced_end,
            staged,
            out,
        })
    }

    /// Append one encoded record.
    pub fn append(&mut self, offset: i64, encoded: &[u8]) -> std::io::Result<()> {
        self.out.write_all(encoded)?;
        self.last = offset;
        self.records += 1;
        self.raw_bytes += encoded.len() as u64;
        Ok(())
    }

    /// Finish compression; the staged file is complete.
    pub fn finish(self) -> std::io::Result<Finished> {
        self.out.finish()?;
        Ok(Finished {
            first: self.first,
            last: self.last,
            records: self.records,
            key: self.key,
            staged: self.staged,
        })
    }

    /// Throw the staged file away.
    pub fn discard(self) {
        drop(self.out);
        let _ = std::fs::remove_file(&self.staged);
    }
}

/// A complete staged file waiting to be published.
pub struct Finished {
    /// Offset range.
    pub first: i64,
    /// Last offset.
    pub last: i64,
    /// Records in it.
    pub records: u64,
    /// Final key.
    pub key: String,
    /// The staged file.
    pub staged: PathBuf,
}

/// The manifest of a partition: the offset range of its latest file, recorded
/// before that file is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Manifest {
    /// First offset of the latest file.
    pub first: i64,
    /// Its last offset.
    pub last: i64,
}

impl Manifest {
    /// Key of the manifest of `topic`/`partition`.
    pub fn key(topic: &str, partition: i64) -> String {
        let safe: String = topic
            .chars()
            .map(|c| if c == '/' { '_' } else { c })
            .collect();
        format!("{META_DIR}/manifest/{safe}/{partition}")
    }

    /// Parse `first last`; `None` when malformed.
    pub fn parse(data: &[u8]) -> Option<Manifest> {
        let text = std::str::from_utf8(data).ok()?;
        let mut it = text.split_whitespace();
        let first = it.next()?.parse().ok()?;
        let last = it.next()?.parse().ok()?;
        (first <= last).then_some(Manifest { first, last })
    }

    /// The stored form.
    pub fn encode(&self) -> String {
        format!("{} {}\n", self.first, self.last)
    }
}

/// State of one partition.
pub struct Partition {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition number.
    pub partition: i64,
    /// Every offset up to this one is archived (or was found archived).
    pub archived_through: i64,
    /// Offset expected next; `None` until the first record after (re)start.
    pub next: Option<i64>,
    /// A file the manifest says must be re-written with these bounds.
    pub forced: Option<Manifest>,
    /// The file being written.
    pub open: Option<OpenFile>,
}

impl Partition {
    /// A partition not seen yet.
    pub fn new(topic: Arc<str>, partition: i64) -> Self {
        Partition {
            topic,
            partition,
            archived_through: i64::MIN,
            next: None,
            forced: None,
            open: None,
        }
    }

    /// Start (or restart) at `offset`, the first record seen since, under the
    /// partition's manifest: records another attempt already archived are skipped,
    /// and a file whose publication may not have completed is cut again at the
    /// recorded end.
    pub fn start(&mut self, offset: i64, manifest: Option<Manifest>) {
        if let Some(f) = self.open.take() {
            f.discard();
        }
        self.next = Some(offset);
        self.forced = None;
        match manifest {
            None => self.archived_through = offset - 1,
            // The latest file may be unpublished: re-write it with the same bounds,
            // skip what precedes it (published before its manifest was written).
            Some(m) if offset <= m.first => {
                self.archived_through = m.first - 1;
                self.forced = Some(m);
            }
            // A record of the latest file was committed: the file is published.
            Some(m) => self.archived_through = m.last.max(offset - 1),
        }
    }
}
