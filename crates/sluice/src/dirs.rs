//! Directories a component needs — a FIFO's parent, a file sink's fixed directory,
//! a disk buffer's directory — are created when the component is built, so a config
//! whose paths live under a `data_dir` that does not exist yet (the quickstart on a
//! fresh clone) just runs, and a location that cannot work fails at start with the
//! component id instead of at the first event.
//!
//! When a directory cannot be made, the error names it and says why. For
//! "permission denied" that is the nearest existing ancestor, its owner and mode, and
//! the user sluice runs as — the three facts an operator needs to fix it (`chown`,
//! `chmod`, or run as another user) without reading the code.

use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::topology::ComponentError;

/// A directory that could not be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot create directory {} ({purpose}): {detail}", dir.display())]
pub struct DirError {
    /// The directory asked for.
    pub dir: PathBuf,
    /// What it was for (`parent of FIFO ./data/inbox.pipe`).
    pub purpose: String,
    /// Why not, with the path and permission at fault.
    pub detail: String,
    /// The underlying error's kind.
    pub kind: ErrorKind,
}

impl From<DirError> for ComponentError {
    fn from(e: DirError) -> Self {
        ComponentError::Other(e.to_string())
    }
}

/// Create `dir` and its missing parents (mode 0777 less the umask, as `mkdir -p`).
/// Returns whether anything was created. `purpose` says what needs it, for the error.
pub fn ensure(dir: &Path, purpose: impl Into<String>) -> Result<bool, DirError> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(false);
    }
    match std::fs::create_dir_all(dir) {
        Ok(()) => {
            tracing::debug!(path = %dir.display(), "Created directory.");
            Ok(true)
        }
        Err(e) => Err(DirError {
            dir: dir.to_owned(),
            purpose: purpose.into(),
            detail: explain(dir, &e),
            kind: e.kind(),
        }),
    }
}

/// Why creating something at `path` failed with `e`, naming the path at fault.
pub fn explain(path: &Path, e: &std::io::Error) -> String {
    let (ancestor, meta) = nearest_existing(path);
    let shown = if ancestor.as_os_str().is_empty() {
        Path::new(".")
    } else {
        ancestor
    };
    match (e.kind(), meta) {
        (ErrorKind::PermissionDenied, Some(m)) => format!(
            "permission denied: sluice runs as uid {} gid {} and needs write and search \
             permission on {} (owner uid {} gid {}, mode {:04o})",
            // SAFETY: plain syscalls without arguments; they cannot fail.
            unsafe { libc::geteuid() },
            unsafe { libc::getegid() },
            shown.display(),
            m.uid(),
            m.gid(),
            m.mode() & 0o7777,
        ),
        (_, Some(m)) if !m.is_dir() => {
            format!("{} exists and is not a directory", shown.display())
        }
        _ => crate::error_text(e),
    }
}

/// The longest prefix of `path` that exists (possibly `path` itself), with its
/// metadata; symlinks are followed, as creating below them does.
fn nearest_existing(path: &Path) -> (&Path, Option<std::fs::Metadata>) {
    let mut p = path;
    loop {
        let probe = if p.as_os_str().is_empty() {
            Path::new(".")
        } else {
            p
        };
        if let Ok(m) = std::fs::metadata(probe) {
            return (p, Some(m));
        }
        match p.parent() {
            Some(parent) => p = parent,
            None => return (p, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_missing_parents_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b/c");
        assert!(ensure(&dir, "test").unwrap());
        assert!(dir.is_dir());
        assert!(!ensure(&dir, "test").unwrap());
    }

    #[test]
    fn a_file_in_the_way_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let err = ensure(&file.join("sub"), "parent of FIFO x").unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("{}/sub", file.display())), "{text}");
        assert!(text.contains("(parent of FIFO x)"), "{text}");
        assert!(
            text.contains(&format!("{} exists and is not a directory", file.display())),
            "{text}"
        );
    }

    #[test]
    fn permission_denied_names_the_ancestor_owner_and_mode() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o750)).unwrap();
        let e = std::io::Error::from(ErrorKind::PermissionDenied);
        let text = explain(&tmp.path().join("x/y"), &e);
        let expected = format!("on {} (owner uid ", tmp.path().display());
        assert!(text.contains(&expected), "{text}");
        assert!(text.contains("mode 0750"), "{text}");
    }
}
