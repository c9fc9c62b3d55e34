//! The tenant route's active list file, edited by `sluice tenant add/remove`
//! under a lock, atomically, keeping comments.

use std::io::Write;
use std::path::Path;

use crate::route::tenant::{parse_list, valid_id};

/// Rewrite the list under an exclusive lock: `edit` changes the ids and says
/// whether anything changed; comments and blank lines of the file are kept.
pub fn edit_list(
    path: &Path,
    edit: impl FnOnce(&mut Vec<String>) -> bool,
) -> std::io::Result<bool> {
    let lock_path = path.with_extension("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)?;
    // SAFETY: flock on a descriptor we own; released when `lock` is closed.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e),
    };
    let before = parse_list(&text).ids;
    let mut ids = before.clone();
    if !edit(&mut ids) {
        return Ok(false);
    }
    // Keep every line that is not a removed id; append the new ids.
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.lines() {
        let id = line.split('#').next().unwrap_or("").trim();
        if !id.is_empty() && valid_id(id) && !ids.iter().any(|i| i == id) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    for id in ids.iter().filter(|i| !before.contains(i)) {
        out.push_str(id);
        out.push('\n');
    }
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(out.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_list_keeps_comments_and_is_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tenants.txt");
        std::fs::write(&p, "# customers\nacme # since 2024\nglobex\n").unwrap();
        assert!(
            edit_list(&p, |ids| {
                ids.push("initech".into());
                true
            })
            .unwrap()
        );
        assert!(
            edit_list(&p, |ids| {
                ids.retain(|i| i != "globex");
                true
            })
            .unwrap()
        );
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "# customers\nacme # since 2024\ninitech\n"
        );
        assert!(!p.with_extension("tmp").exists());
        let missing = dir.path().join("new.txt");
        assert!(
            edit_list(&missing, |ids| {
                ids.push("a".into());
                true
            })
            .unwrap()
        );
        assert_eq!(std::fs::read_to_string(&missing).unwrap(), "a\n");
    }
}
