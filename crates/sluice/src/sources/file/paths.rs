//! Which paths the file source reads: `include` and `exclude` globs, the
//! directories to watch for them, and the directory walk of a scan.
//!
//! Globs are absolute paths. `*`, `?` and `[..]` stay within one path component;
//! `**` crosses directories. An `exclude` pattern without `/` is matched against
//! the file name (`*.gz`), one with `/` against the whole path.
//!
//! Each include has a *root*: its longest leading directory without glob
//! characters (`/var/log/pods` for `/var/log/pods/**/*.log`). The root is watched
//! (recursively when the pattern has directory components after it) and walked by
//! scans. Symbolic links to files are followed; links to directories are not
//! walked (no cycles), but a root may itself be a link.

use std::path::{Path, PathBuf};

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

/// Deepest directory level a scan descends below a root.
const MAX_DEPTH: usize = 32;

/// A directory to watch and walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    /// The directory.
    pub dir: PathBuf,
    /// Whether files below its subdirectories can match.
    pub recursive: bool,
}

/// The compiled `include` / `exclude` patterns.
#[derive(Debug)]
pub struct Patterns {
    include: GlobSet,
    exclude_path: GlobSet,
    exclude_name: GlobSet,
    /// Roots, deduplicated; a recursive root wins over a plain one.
    pub roots: Vec<Root>,
}

fn glob(pattern: &str) -> Result<Glob, String> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| format!("`{pattern}`: {}", e.kind()))
}

fn is_meta(component: &str) -> bool {
    component.contains(['*', '?', '[', '{'])
}

/// The root of one include pattern.
pub fn root_of(pattern: &str) -> Root {
    let comps: Vec<&str> = pattern.split('/').collect();
    let first_meta = comps.iter().position(|c| is_meta(c));
    let last = comps.len() - 1;
    let cut = first_meta.unwrap_or(last).min(last);
    let dir = comps[..cut].join("/");
    Root {
        dir: PathBuf::from(if dir.is_empty() { "/".to_owned() } else { dir }),
        recursive: cut < last,
    }
}

impl Patterns {
    /// Compile the patterns; errors name the pattern.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, String> {
        let mut inc = GlobSetBuilder::new();
        let mut roots: Vec<Root> = Vec::new();
        for p in include {
            inc.add(glob(p)?);
            let r = root_of(p);
            match roots.iter_mut().find(|x| x.dir == r.dir) {
                Some(x) => x.recursive |= r.recursive,
                None => roots.push(r),
            }
        }
        let (mut by_path, mut by_name) = (GlobSetBuilder::new(), GlobSetBuilder::new());
        for p in exclude {
            if p.contains('/') {
                by_path.add(glob(p)?);
            } else {
                by_name.add(glob(p)?);
            }
        }
        let e = |e: globset::Error| e.to_string();
        Ok(Patterns {
            include: inc.build().map_err(e)?,
            exclude_path: by_path.build().map_err(e)?,
            exclude_name: by_name.build().map_err(e)?,
            roots,
        })
    }

    /// Whether `path` is to be read.
    pub fn matches(&self, path: &Path) -> bool {
        if !self.include.is_match(path) || self.exclude_path.is_match(path) {
            return false;
        }
        path.file_name()
            .is_none_or(|n| !self.exclude_name.is_match(Path::new(n)))
    }

    /// Whether `dir` may hold matching files (it is a root or below a recursive one).
    pub fn covers_dir(&self, dir: &Path) -> bool {
        self.roots
            .iter()
            .any(|r| dir == r.dir || (r.recursive && dir.starts_with(&r.dir)))
    }

    /// Every matching file under `dir`, which lies at or below a root (descending
    /// when that root is recursive). Unreadable directories are skipped.
    pub fn walk(&self, dir: &Path, out: &mut Vec<PathBuf>) {
        let recursive = self
            .roots
            .iter()
            .any(|r| r.recursive && dir.starts_with(&r.dir));
        let mut stack = vec![(dir.to_owned(), 0usize)];
        while let Some((d, depth)) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for ent in rd.flatten() {
                let Ok(ft) = ent.file_type() else { continue };
                let p = ent.path();
                if ft.is_dir() {
                    if recursive && depth < MAX_DEPTH {
                        stack.push((p, depth + 1));
                    }
                } else if self.matches(&p) {
                    out.push(p);
                }
            }
        }
    }
}

/// Validate patterns without touching the disk (for `sluice check`).
pub fn check_pattern(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("`{p}` is not an absolute path"));
    }
    glob(p).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats(inc: &[&str], exc: &[&str]) -> Patterns {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        Patterns::new(&s(inc), &s(exc)).unwrap()
    }

    #[test]
    fn star_stays_in_one_component_double_star_crosses() {
        let p = pats(&["/var/log/app/*.log", "/var/log/pods/**/*.log"], &[]);
        assert!(p.matches(Path::new("/var/log/app/a.log")));
        assert!(!p.matches(Path::new("/var/log/app/sub/a.log")));
        assert!(p.matches(Path::new("/var/log/pods/ns_pod_uid/c/0.log")));
        assert!(p.matches(Path::new("/var/log/pods/x.log")));
    }

    #[test]
    fn exclude_by_name_and_by_path() {
        let p = pats(&["/l/**/*"], &["*.gz", "*.[0-9]", "/l/private/**"]);
        assert!(p.matches(Path::new("/l/a.log")));
        assert!(!p.matches(Path::new("/l/a.log.gz")));
        assert!(!p.matches(Path::new("/l/a.log.1")));
        assert!(!p.matches(Path::new("/l/private/a.log")));
    }

    #[test]
    fn roots_stop_at_the_first_glob_component() {
        assert_eq!(
            root_of("/var/log/pods/**/*.log"),
            Root {
                dir: "/var/log/pods".into(),
                recursive: true
            }
        );
        assert_eq!(
            root_of("/var/log/app/*.log"),
            Root {
                dir: "/var/log/app".into(),
                recursive: false
            }
        );
        assert_eq!(
            root_of("/var/log/app.log"),
            Root {
                dir: "/var/log".into(),
                recursive: false
            }
        );
        assert!(root_of("/var/*/x.log").recursive);
    }

    #[test]
    fn relative_and_broken_patterns_are_rejected() {
        assert!(check_pattern("logs/*.log").is_err());
        assert!(check_pattern("/logs/[a.log").is_err());
        assert!(check_pattern("/logs/**/*.log").is_ok());
    }

    #[test]
    fn walk_finds_nested_files_under_recursive_root_only() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().to_str().unwrap();
        std::fs::create_dir_all(d.path().join("a/b")).unwrap();
        std::fs::write(d.path().join("a/b/x.log"), b"").unwrap();
        std::fs::write(d.path().join("top.log"), b"").unwrap();
        let p = pats(&[&format!("{base}/**/*.log")], &[]);
        let mut out = Vec::new();
        p.walk(d.path(), &mut out);
        out.sort();
        assert_eq!(
            out,
            vec![d.path().join("a/b/x.log"), d.path().join("top.log")]
        );
        let flat = pats(&[&format!("{base}/*.log")], &[]);
        let mut out = Vec::new();
        flat.walk(d.path(), &mut out);
        assert_eq!(out, vec![d.path().join("top.log")]);
    }
}
