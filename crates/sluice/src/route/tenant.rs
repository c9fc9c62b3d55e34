//! `type = "tenant"`: the CDN split. Each line starts with a client id and a space;
//! the id picks the tenant, the rest is the log line.
//!
//! Hot path (per event): find the first space (`memchr`), look the id up in the
//! active set (one hash probe of a borrowed `&[u8]`), set `tenant` to the set's
//! shared `Arc<str>` (a refcount increment) and, with `strip`, advance the body
//! past `"<id> "` in place (`Buf::advance`: a pointer bump, no copy). Nothing is
//! allocated per event. Events of unknown ids are removed in place (`retain`).
//!
//! The active set lives behind an `ArcSwap`: the data path loads it once per batch,
//! the watcher replaces it whole after re-reading the list. A reload therefore
//! never pauses traffic; a batch in flight finishes with the set it started with.
//!
//! List file format: one id per line; blank lines and `#` comments (whole line or
//! trailing) are ignored. An id is 1..=200 bytes of `[A-Za-z0-9._-]`, so that it
//! is always a valid part of a Kafka topic name; other lines are skipped (and
//! reported). Writers replace the file atomically (tmp + rename), as `sluice tenant`
//! does.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Buf;
use serde::Deserialize;

use crate::config::{Check, Validate};
use crate::event::Event;

/// How the tenant id is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// The body up to its first space.
    FirstSpace,
}

/// What happens to events whose id is not in the active list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Unknown {
    /// Dropped and counted.
    #[default]
    Drop,
    /// Passed on unchanged, with `tenant` unset.
    Pass,
}

/// `[routes.NAME] type = "tenant"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TenantRouteConfig {
    /// `"first_space"` (the default when `field` is absent).
    #[serde(default)]
    pub split: Option<Split>,
    /// Take the id from this structured field instead of the body.
    #[serde(default)]
    pub field: Option<String>,
    /// Remove `"<id> "` from the body (first_space only).
    #[serde(default)]
    pub strip: bool,
    /// The active list: one id per line.
    pub active_list: PathBuf,
    /// Ids not in the list: `drop` (counted) or `pass`.
    #[serde(default)]
    pub unknown: Unknown,
    /// How often the list file is checked for changes.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Settings of `sluice tenant` (brokers, topic template, bundle files).
    #[serde(default)]
    pub admin: super::tenant_admin::TenantAdminConfig,
}

fn default_poll_interval_ms() -> u64 {
    250
}

impl Validate for TenantRouteConfig {
    fn validate(&self, v: &mut Check<'_, '_>) {
        if self.split.is_some() && self.field.is_some() {
            v.error("field", "set either split or field, not both");
        }
        if self.strip && self.field.is_some() {
            v.error("strip", "strip applies to split = \"first_space\" only");
        }
        if self.field.as_deref() == Some("") {
            v.error("field", "must not be empty");
        }
        if self.active_list.as_os_str().is_empty() {
            v.error("active_list", "must not be empty");
        }
        if !(10..=60_000).contains(&self.poll_interval_ms) {
            v.error("poll_interval_ms", "must be between 10 and 60000");
        }
        self.admin.validate(v);
    }
}

/// Longest accepted id, in bytes (Kafka topic names stop at 249).
pub const MAX_ID_BYTES: usize = 200;

/// Whether `id` is an acceptable tenant id.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_BYTES
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

/// The active tenants, as the shared names events carry. The set holds the
/// `Arc<str>`s themselves: a lookup compares against the bytes that sit next to
/// the reference count it then increments, so a hit costs one cache line.
#[derive(Debug, Default)]
pub struct ActiveSet {
    ids: HashSet<Arc<str>, foldhash::fast::RandomState>,
}

impl ActiveSet {
    /// A set of the given ids (invalid ones are skipped).
    pub fn from_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> Self {
        let mut set = ActiveSet::default();
        for id in ids {
            if valid_id(id) {
                set.ids.insert(id.into());
            }
        }
        set
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The shared name of an active id.
    #[inline]
    pub fn get(&self, id: &[u8]) -> Option<&Arc<str>> {
        // Valid ids are ASCII; anything else cannot be in the set.
        self.ids.get(std::str::from_utf8(id).ok()?)
    }

    /// Whether `id` is active.
    pub fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }
}

/// A parsed list file: the ids in file order and the lines that were rejected.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ParsedList {
    /// Valid ids in order, duplicates removed.
    pub ids: Vec<String>,
    /// (1-based line number, text) of each invalid line.
    pub invalid: Vec<(usize, String)>,
}

/// Parse list text (see the module doc for the format).
pub fn parse_list(text: &str) -> ParsedList {
    let mut out = ParsedList::default();
    let mut seen = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if !valid_id(line) {
            out.invalid.push((i + 1, line.to_owned()));
        } else if seen.insert(line) {
            out.ids.push(line.to_owned());
        }
    }
    out
}

/// Read and parse a list file.
pub fn read_list(path: &Path) -> std::io::Result<ParsedList> {
    Ok(parse_list(&std::fs::read_to_string(path)?))
}

/// What identifies one version of the list file, cheaply (one `stat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    ino: u64,
    len: u64,
    mtime: Option<SystemTime>,
}

/// The stamp of `path`, `None` when it cannot be stat'ed.
pub fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        ino: m.ino(),
        len: m.len(),
        mtime: m.modified().ok(),
    })
}

/// The per-event logic of a tenant route, without the plumbing.
#[derive(Debug, Clone)]
pub struct TenantSplit {
    field: Option<String>,
    strip: bool,
    unknown: Unknown,
}

impl TenantSplit {
    /// From the route's config.
    pub fn new(config: &TenantRouteConfig) -> Self {
        TenantSplit {
            field: config.field.clone(),
            strip: config.strip,
            unknown: config.unknown,
        }
    }

    /// Assign tenants to `events` in place; events to drop are removed. Returns
    /// how many were removed.
    pub fn apply(&self, events: &mut Vec<Event>, set: &ActiveSet) -> usize {
        self.apply_noting(events, set, None)
    }

    /// [`apply`](Self::apply), noting each removed event's id (at most
    /// [`MAX_ID_BYTES`] + 1 bytes of it: longer is invalid anyway) and body size.
    pub fn apply_noting(
        &self,
        events: &mut Vec<Event>,
        set: &ActiveSet,
        mut removed: Option<&mut Vec<(Vec<u8>, u64)>>,
    ) -> usize {
        let before = events.len();
        let mut note = |id: &[u8], e: &Event| {
            if let Some(r) = removed.as_deref_mut() {
                r.push((
                    id[..id.len().min(MAX_ID_BYTES + 1)].to_vec(),
                    e.body.len() as u64,
                ));
            }
        };
        match &self.field {
            None => events.retain_mut(|e| {
                let kept = self.by_first_space(e, set);
                if !kept {
                    let end = memchr::memchr(b' ', &e.body).unwrap_or(0);
                    note(&e.body[..end], e);
                }
                kept
            }),
            Some(name) => events.retain_mut(|e| {
                let kept = self.by_field(e, name, set);
                if !kept {
                    let id = e
                        .field(name)
                        .and_then(|v| v.as_bytes())
                        .map(<[u8]>::to_vec)
                        .unwrap_or_default();
                    note(&id, e);
                }
                kept
            }),
        }
        before - events.len()
    }

    #[inline]
    fn by_first_space(&self, e: &mut Event, set: &ActiveSet) -> bool {
        let found = memchr::memchr(b' ', &e.body).and_then(|i| Some((i, set.get(&e.body[..i])?)));
        match found {
            Some((i, tenant)) => {
                e.tenant = Some(tenant.clone());
                if self.strip {
                    e.body.advance(i + 1);
                }
                true
            }
            None => self.unknown(e),
        }
    }

    fn by_field(&self, e: &mut Event, name: &str, set: &ActiveSet) -> bool {
        let tenant = e
            .field(name)
            .and_then(|v| v.as_bytes())
            .and_then(|b| set.get(b));
        match tenant {
            Some(t) => {
                e.tenant = Some(t.clone());
                true
            }
            None => self.unknown(e),
        }
    }

    #[inline]
    fn unknown(&self, e: &mut Event) -> bool {
        match self.unknown {
            Unknown::Drop => false,
            Unknown::Pass => {
                e.tenant = None;
                true
            }
        }
    }
}

/// The poll interval as a duration.
pub fn poll_interval(config: &TenantRouteConfig) -> Duration {
    Duration::from_millis(config.poll_interval_ms)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::event::Value;

    fn ev(body: &'static [u8]) -> Event {
        Event::new(Bytes::from_static(body), 0, "t".into(), "s".into())
    }

    fn split(strip: bool, unknown: Unknown) -> TenantSplit {
        TenantSplit {
            field: None,
            strip,
            unknown,
        }
    }

    #[test]
    fn list_skips_comments_blanks_duplicates_and_bad_ids() {
        let p = parse_list("# header\nacme\n\n  globex  # trailing\nacme\nbad id\nx/y\n");
        assert_eq!(p.ids, vec!["acme", "globex"]);
        assert_eq!(
            p.invalid,
            vec![(6, "bad id".to_owned()), (7, "x/y".to_owned())]
        );
    }

    #[test]
    fn first_space_split_strips_and_assigns_shared_tenant() {
        let set = ActiveSet::from_ids(["acme", "globex"]);
        let mut events = vec![
            ev(b"acme GET /a 200"),
            ev(b"globex GET /b 404"),
            ev(b"acme x"),
        ];
        assert_eq!(split(true, Unknown::Drop).apply(&mut events, &set), 0);
        let bodies: Vec<&[u8]> = events.iter().map(|e| &e.body[..]).collect();
        assert_eq!(bodies, vec![&b"GET /a 200"[..], b"GET /b 404", b"x"]);
        assert_eq!(events[0].tenant.as_deref(), Some("acme"));
        assert!(Arc::ptr_eq(
            events[0].tenant.as_ref().unwrap(),
            events[2].tenant.as_ref().unwrap()
        ));
    }

    #[test]
    fn strip_is_zero_copy() {
        let set = ActiveSet::from_ids(["acme"]);
        let body = Bytes::from_static(b"acme line");
        let start = body.as_ptr();
        let mut events = vec![Event::new(body, 0, "t".into(), "s".into())];
        split(true, Unknown::Drop).apply(&mut events, &set);
        assert_eq!(events[0].body.as_ptr(), start.wrapping_add(5));
    }

    #[test]
    fn unknown_ids_are_dropped_or_passed_untouched() {
        let set = ActiveSet::from_ids(["acme"]);
        let mk = || vec![ev(b"acme a"), ev(b"nope b"), ev(b"nospace"), ev(b" lead")];
        let mut events = mk();
        assert_eq!(split(true, Unknown::Drop).apply(&mut events, &set), 3);
        assert_eq!(events.len(), 1);
        let mut events = mk();
        assert_eq!(split(true, Unknown::Pass).apply(&mut events, &set), 0);
        assert_eq!(&events[1].body[..], b"nope b");
        assert_eq!(events[1].tenant, None);
    }

    #[test]
    fn field_split_reads_the_field() {
        let set = ActiveSet::from_ids(["acme"]);
        let mut e = ev(b"body");
        e.fields = Some(Arc::new(vec![(Value::from("client_id"), Value::from("acme"))]).into());
        let mut events = vec![e, ev(b"acme no field")];
        let s = TenantSplit {
            field: Some("client_id".into()),
            strip: false,
            unknown: Unknown::Drop,
        };
        assert_eq!(s.apply(&mut events, &set), 1);
        assert_eq!(events[0].tenant.as_deref(), Some("acme"));
        assert_eq!(&events[0].body[..], b"body");
    }

    #[test]
    fn ids_must_be_topic_safe() {
        assert!(valid_id("client-42_a.b"));
        assert!(!valid_id(""));
        assert!(!valid_id(".."));
        assert!(!valid_id("a b"));
        assert!(!valid_id(&"x".repeat(MAX_ID_BYTES + 1)));
    }
}
