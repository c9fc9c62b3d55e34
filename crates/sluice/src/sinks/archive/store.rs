//! Where archive files go: one interface over a local directory (`file://`) and an
//! object store (`s3://`, `az://`, through the `object_store` crate).
//!
//! Every file is first written whole to a local staging file; [`Store::publish`]
//! then makes it visible under its final key atomically:
//! - local: the staging file lives under `<root>/_sluice/tmp/` (same filesystem),
//!   is fsynced, renamed to its key, and the key's directory is fsynced;
//! - object store: one `PUT` for a small file, else a multipart upload completed
//!   only at the end (an interrupted upload leaves no object), then the staging
//!   file is removed.
//!
//! Small objects (the manifests) are written by [`Store::put_small`], with the same
//! durability, and read back by [`Store::get_small`]. All calls block the calling
//! thread (the archive sink runs on its own thread; the object store's futures are
//! driven by the runtime handle).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt as _;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, PutPayload, WriteMultipart};

/// Files at most this large are uploaded with one `PUT`.
const SINGLE_PUT_BYTES: u64 = 8 << 20;
/// Part size of multipart uploads.
const PART_BYTES: usize = 8 << 20;
/// Directory (under the root) for the sink's own bookkeeping: staging, manifests.
pub const META_DIR: &str = "_sluice";

/// One archive file or manifest as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Key relative to the root, `/`-separated.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

enum Kind {
    Local(PathBuf),
    Object {
        store: Arc<dyn ObjectStore>,
        prefix: ObjPath,
        rt: tokio::runtime::Handle,
    },
}

/// An archive root.
pub struct Store {
    kind: Kind,
    staging: PathBuf,
}

fn io_err(what: &str, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{what}: {e}"))
}

fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Create `dir` and its missing parents, fsyncing each parent that gained an entry.
fn create_dirs(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    if let Some(parent) = dir.parent() {
        fsync_dir(parent)?;
    }
    Ok(())
}

impl Store {
    /// Open the root named by `url` (`file:///dir`, `s3://bucket/prefix`,
    /// `az://container/prefix`) with the object store `options`; object stores
    /// stage files in `staging`, which is created. No network I/O happens here.
    pub fn open(
        url: &str,
        options: &[(String, String)],
        staging: PathBuf,
        rt: tokio::runtime::Handle,
    ) -> Result<Store, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("`{url}`: {e}"))?;
        if parsed.scheme() == "file" {
            let root = PathBuf::from(parsed.path());
            let staging = root.join(META_DIR).join("tmp");
            create_dirs(&staging).map_err(|e| format!("{}: {e}", staging.display()))?;
            return Ok(Store {
                kind: Kind::Local(root),
                staging,
            });
        }
        let (store, mut prefix) = object_store::parse_url_opts(&parsed, options.iter().cloned())
            .map_err(|e| format!("`{url}`: {e}"))?;
        // object_store 0.12 builds `az://container/prefix` with the host as the
        // container but returns the path minus its first segment as the prefix
        // (reading `az://account/container/prefix`): `az://c/logs` lost `logs`.
        // The container is the host, so the prefix is the whole path.
        if parsed.scheme() == "az" && parsed.username().is_empty() {
            prefix = ObjPath::parse(parsed.path().trim_matches('/'))
                .map_err(|e| format!("`{url}`: {e}"))?;
        }
        create_dirs(&staging).map_err(|e| format!("{}: {e}", staging.display()))?;
        Ok(Store {
            kind: Kind::Object {
                store: Arc::from(store),
                prefix,
                rt,
            },
            staging,
        })
    }

    /// A fresh staging path for the file that will become `key`.
    pub fn staging_path(&self, key: &str) -> PathBuf {
        let flat: String = key
            .chars()
            .map(|c| if c == '/' { '_' } else { c })
            .collect();
        self.staging
            .join(format!(".{flat}.{}.tmp", std::process::id()))
    }

    fn object_path(prefix: &ObjPath, key: &str) -> ObjPath {
        let mut p = prefix.clone();
        for part in key.split('/').filter(|s| !s.is_empty()) {
            p = p.child(part);
        }
        p
    }

    /// Make the finished staging file `staged` visible as `key`, durably.
    pub fn publish(&self, staged: &Path, key: &str) -> std::io::Result<()> {
        match &self.kind {
            Kind::Local(root) => {
                File::open(staged)?.sync_all()?;
                let dest = root.join(key);
                let dir = dest.parent().unwrap_or(root);
                create_dirs(dir)?;
                std::fs::rename(staged, &dest)?;
                fsync_dir(dir)
            }
            Kind::Object { store, prefix, rt } => {
                let path = Self::object_path(prefix, key);
                let size = std::fs::metadata(staged)?.len();
                rt.block_on(async {
                    if size <= SINGLE_PUT_BYTES {
                        let data = std::fs::read(staged)?;
                        store
                            .put(&path, PutPayload::from(data))
                            .await
                            .map_err(|e| io_err("put", e))?;
                    } else {
                        let upload = store
                            .put_multipart(&path)
                            .await
                            .map_err(|e| io_err("starting a multipart upload", e))?;
                        let mut w = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
                        let mut f = File::open(staged)?;
                        let mut buf = vec![0; PART_BYTES];
                        loop {
                            let n = f.read(&mut buf)?;
                            if n == 0 {
                                break;
                            }
                            w.wait_for_capacity(2)
                                .await
                                .map_err(|e| io_err("uploading a part", e))?;
                            w.write(&buf[..n]);
                        }
                        w.finish()
                            .await
                            .map_err(|e| io_err("completing a multipart upload", e))?;
                    }
                    Ok::<(), std::io::Error>(())
                })?;
                std::fs::remove_file(staged)
            }
        }
    }

    /// Write a small object durably (replacing it).
    pub fn put_small(&self, key: &str, data: &[u8]) -> std::io::Result<()> {
        match &self.kind {
            Kind::Local(_) => {
                let staged = self.staging_path(key);
                let mut f = File::create(&staged)?;
                f.write_all(data)?;
                drop(f);
                self.publish(&staged, key)
            }
            Kind::Object { store, prefix, rt } => {
                let path = Self::object_path(prefix, key);
                rt.block_on(store.put(&path, PutPayload::from(data.to_vec())))
                    .map(|_| ())
                    .map_err(|e| io_err("put", e))
            }
        }
    }

    /// Read a small object; `None` when it does not exist.
    pub fn get_small(&self, key: &str) -> std::io::Result<Option<Vec<u8>>> {
        match &self.kind {
            Kind::Local(root) => match std::fs::read(root.join(key)) {
                Ok(d) => Ok(Some(d)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            },
            Kind::Object { store, prefix, rt } => {
                let path = Self::object_path(prefix, key);
                rt.block_on(async {
                    match store.get(&path).await {
                        Ok(r) => r.bytes().await.map(|b| Some(b.to_vec())),
                        Err(object_store::Error::NotFound { .. }) => Ok(None),
                        Err(e) => Err(e),
                    }
                })
                .map_err(|e| io_err("get", e))
            }
        }
    }

    /// Every object under the root except the sink's bookkeeping, sorted by key.
    pub fn list(&self) -> std::io::Result<Vec<Listed>> {
        let mut out = Vec::new();
        match &self.kind {
            Kind::Local(root) => walk(root, root, &mut out)?,
            Kind::Object { store, prefix, rt } => {
                let metas: Vec<_> = rt.block_on(store.list(Some(prefix)).collect());
                let skip = prefix.parts().count();
                for m in metas {
                    let m = m.map_err(|e| io_err("list", e))?;
                    let key: Vec<String> = m
                        .location
                        .parts()
                        .skip(skip)
                        .map(|p| p.as_ref().to_owned())
                        .collect();
                    if key.first().map(String::as_str) != Some(META_DIR) {
                        out.push(Listed {
                            key: key.join("/"),
                            size: m.size,
                        });
                    }
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Read a whole object.
    pub fn read(&self, key: &str) -> std::io::Result<Vec<u8>> {
        self.get_small(key)?
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, key.to_owned()))
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<Listed>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let path = e.path();
        let rel = path.strip_prefix(root).unwrap_or(&path);
        if rel.starts_with(META_DIR) {
            continue;
        }
        let ty = e.file_type()?;
        if ty.is_dir() {
            walk(root, &path, out)?;
        } else if ty.is_file() {
            out.push(Listed {
                key: rel.to_string_lossy().into_owned(),
                size: e.metadata()?.len(),
            });
        }
    }
    Ok(())
}
