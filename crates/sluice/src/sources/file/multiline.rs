//! `multiline`: lines that continue an event (a Java stack trace's `\tat …`
//! lines) are joined to the line that started it.
//!
//! With `condition = "continue_through"` (or `halt_before`: the event halts
//! before a line matching `start`, which starts the next) a line matching `start` begins an event
//! and every following line that does not match `start` is joined to it, with
//! `\n` between lines. An event ends at the next line matching `start`, or after
//! `timeout_ms` without a new line once its file is read to its end, or when its
//! file is released (rotated or deleted, read to its end), truncated, or the
//! source stops. A line that does not match `start` with no event open (the top
//! of a file read from its middle) begins an event too. A joined event is cut at
//! `max_line_bytes` (counted once as truncated); the rest of its lines are read
//! and dropped. Container lines (`format = "cri"`/`"docker_json"`) come with
//! their parts joined and are joined per file *and stream* (lane); the event
//! keeps its first line's time and fields.
//!
//! Checkpoints: while an event is open, its file's checkpoint stays before the
//! event's first line, so a crash re-reads and joins its lines again rather than
//! losing them; the batch that finally carries the event moves the checkpoint to
//! the end of its last line. Line offsets are exact when a read had no line cut
//! to `max_line_bytes` (the usual case); otherwise they are estimates that are
//! never past the true offset (re-reading more, never less).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use regex::bytes::Regex;
use serde::Deserialize;

use super::checkpoint::FileKey;
use crate::event::Event;

/// How lines after a start line are told apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Lines not matching `start` continue the open event.
    #[default]
    ContinueThrough,
    /// Lines are joined to the open event until one matches `start`: the
    /// event halts before it, and that line starts the next event.
    HaltBefore,
}

/// `multiline = { start = "…", condition = "…", timeout_ms = … }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultilineConfig {
    /// Regular expression matching the first line of an event.
    pub start: String,
    /// What the lines after it are.
    #[serde(default)]
    pub condition: Condition,
    /// An open event is sent after this long without a new line.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    1000
}

/// The compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    start: Regex,
    condition: Condition,
    /// Quiet time after which an open event is sent.
    pub timeout: Duration,
    max_bytes: usize,
}

impl Rule {
    /// Compile `c`; lines are capped at `max_bytes`.
    pub fn new(c: &MultilineConfig, max_bytes: usize) -> Result<Rule, regex::Error> {
        Ok(Rule {
            start: Regex::new(&c.start)?,
            condition: c.condition,
            timeout: Duration::from_millis(c.timeout_ms),
            max_bytes,
        })
    }

    /// Whether `line` ends the open event and starts the next one.
    fn starts_next(&self, line: &[u8]) -> bool {
        match self.condition {
            Condition::ContinueThrough | Condition::HaltBefore => self.start.is_match(line),
        }
    }
}

/// An event still open.
#[derive(Debug)]
pub struct Group {
    /// The start line alone (no copy) until a second line comes.
    head: Bytes,
    more: Option<BytesMut>,
    /// Offset of the first line (the checkpoint must not pass it).
    pub first: u64,
    /// Offset after the last line.
    pub end: u64,
    last: Instant,
    truncated: bool,
    /// The first line's event (container formats: its time and fields).
    meta: Option<Event>,
}

impl Group {
    fn new(line: Bytes, first: u64, end: u64, meta: Option<Event>) -> Group {
        Group {
            head: line,
            more: None,
            first,
            end,
            last: Instant::now(),
            truncated: false,
            meta,
        }
    }

    fn push(&mut self, line: &[u8], end: u64, max: usize) {
        let head = &self.head;
        let buf = self.more.get_or_insert_with(|| BytesMut::from(&head[..]));
        let room = max.saturating_sub(buf.len());
        let want = line.len() + 1;
        if want > room {
            self.truncated = true;
        }
        let mut joined = [&b"\n"[..], line].concat();
        joined.truncate(room);
        buf.extend_from_slice(&joined);
        self.end = end;
        self.last = Instant::now();
    }

    fn into_done(self) -> Done {
        let body = match self.more {
            Some(b) => b.freeze(),
            None => self.head,
        };
        Done {
            body,
            meta: self.meta,
            truncated: self.truncated,
        }
    }
}

/// A finished event.
#[derive(Debug)]
pub struct Done {
    pub body: Bytes,
    /// The first line's event, whose body `body` replaces (container formats).
    pub meta: Option<Event>,
    pub truncated: bool,
}

/// One line (or container line, parts joined) given to the joiner.
pub struct Line {
    pub body: Bytes,
    /// Offset of its first byte in the file (its first part's, for a joined
    /// container line), and after its last.
    pub start: u64,
    pub end: u64,
    /// Lines are joined per file and lane (a container's stream).
    pub lane: u8,
    pub meta: Option<Event>,
}

/// What one chunk of lines gave.
#[derive(Debug, Default)]
pub struct Joined {
    /// Finished events.
    pub done: Vec<Done>,
    /// Where the file's earliest open event starts, if one is open.
    pub hold_back: Option<u64>,
    /// Bodies cut at the cap.
    pub truncated: u64,
}

/// The open events, one per file and lane at most.
#[derive(Debug, Default)]
pub struct Joiner {
    groups: HashMap<(FileKey, u8), Group>,
}

impl Joiner {
    /// Join the lines of one chunk of `file`. `starts[i]` is the offset of
    /// `lines[i]` and `end` the offset after the last one.
    pub fn chunk(
        &mut self,
        rule: &Rule,
        file: FileKey,
        lines: Vec<Bytes>,
        starts: &[u64],
        end: u64,
    ) -> Joined {
        let items = lines.into_iter().enumerate().map(|(i, body)| Line {
            body,
            start: starts[i],
            end: starts.get(i + 1).copied().unwrap_or(end),
            lane: 0,
            meta: None,
        });
        self.lines(rule, file, items)
    }

    /// Join `file`'s lines, in file order.
    pub fn lines(
        &mut self,
        rule: &Rule,
        file: FileKey,
        items: impl Iterator<Item = Line>,
    ) -> Joined {
        let mut out = Joined::default();
        for l in items {
            let key = (file, l.lane);
            match self.groups.get_mut(&key) {
                Some(g) if !rule.starts_next(&l.body) => g.push(&l.body, l.end, rule.max_bytes),
                _ => {
                    let new = Group::new(l.body, l.start, l.end, l.meta);
                    // The framer already cut the line at `max_line_bytes`.
                    if let Some(g) = self.groups.insert(key, new) {
                        push_done(&mut out, g);
                    }
                }
            }
        }
        out.hold_back = self.hold_back(file);
        out
    }

    /// Where `file`'s earliest open event starts.
    pub fn hold_back(&self, file: FileKey) -> Option<u64> {
        self.groups
            .iter()
            .filter(|((f, _), _)| *f == file)
            .map(|(_, g)| g.first)
            .min()
    }

    /// Take `file`'s open events (those quiet for `quiet`, if given).
    pub fn take(&mut self, file: FileKey, quiet: Option<Duration>) -> Vec<Group> {
        let keys: Vec<_> = self
            .groups
            .iter()
            .filter(|((f, _), g)| *f == file && quiet.is_none_or(|t| g.last.elapsed() >= t))
            .map(|(k, _)| *k)
            .collect();
        keys.iter().filter_map(|k| self.groups.remove(k)).collect()
    }

    /// Files with an open event that had no new line for `timeout`.
    pub fn quiet(&self, timeout: Duration) -> Vec<FileKey> {
        let mut v: Vec<FileKey> = self
            .groups
            .iter()
            .filter(|(_, g)| g.last.elapsed() >= timeout)
            .map(|((f, _), _)| *f)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Files with an open event.
    pub fn files(&self) -> Vec<FileKey> {
        let mut v: Vec<FileKey> = self.groups.keys().map(|(f, _)| *f).collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// The finished event of `g`.
pub fn done(g: Group) -> Done {
    g.into_done()
}

fn push_done(out: &mut Joined, g: Group) {
    let d = g.into_done();
    out.truncated += u64::from(d.truncated);
    out.done.push(d);
}

/// Offsets of `lines`, which start at `start`: `exact` when the reader knew
/// them, else estimated from the lengths (a removed `\r` or a cut tail make the
/// estimate smaller than the truth, never larger), and never past `end`.
pub fn line_starts(lines: &[Bytes], exact: &[u64], start: u64, end: u64) -> Vec<u64> {
    if exact.len() == lines.len() {
        return exact.to_vec();
    }
    let mut at = start;
    lines
        .iter()
        .map(|l| {
            let s = at.min(end);
            at += l.len() as u64 + 1;
            s
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(start: &str, max: usize) -> Rule {
        let c = MultilineConfig {
            start: start.into(),
            condition: Condition::ContinueThrough,
            timeout_ms: 1000,
        };
        Rule::new(&c, max).unwrap()
    }

    /// Lines of `text` (each ending in `\n`) with their exact offsets.
    fn split(text: &str, at: u64) -> (Vec<Bytes>, Vec<u64>, u64) {
        let mut starts = Vec::new();
        let mut lines = Vec::new();
        let mut off = at;
        for l in text.split_inclusive('\n') {
            starts.push(off);
            off += l.len() as u64;
            lines.push(Bytes::copy_from_slice(l.trim_end_matches('\n').as_bytes()));
        }
        (lines, starts, off)
    }

    fn bodies(j: &Joined) -> Vec<String> {
        j.done
            .iter()
            .map(|d| String::from_utf8_lossy(&d.body).into_owned())
            .collect()
    }

    const TRACE: &str = "2024 INFO up\n\
        2024 ERROR boom\n\
        java.lang.RuntimeException: x\n\
        \tat a.B(B.java:1)\n\
        \tat c.D(D.java:2)\n\
        2024 INFO next\n";

    #[test]
    fn stack_trace_lines_join_the_line_that_started_them() {
        let r = rule("^[0-9]{4} ", 1 << 20);
        let mut j = Joiner::default();
        let (lines, starts, end) = split(TRACE, 100);
        let out = j.chunk(&r, (1, 1), lines, &starts, end);
        assert_eq!(
            bodies(&out),
            [
                "2024 INFO up",
                "2024 ERROR boom\njava.lang.RuntimeException: x\n\tat a.B(B.java:1)\n\tat c.D(D.java:2)"
            ]
        );
        // "2024 INFO next" is still open: the checkpoint waits before it.
        let next = 100 + TRACE.find("2024 INFO next").unwrap() as u64;
        assert_eq!(out.hold_back, Some(next));
        let g = j.take((1, 1), None).pop().unwrap();
        assert_eq!((g.first, g.end), (next, end));
        assert_eq!(&done(g).body[..], b"2024 INFO next");
    }

    #[test]
    fn an_event_split_across_reads_is_joined() {
        let r = rule("^\\S", 1 << 20);
        let mut j = Joiner::default();
        let (l1, s1, e1) = split("start\n  more\n", 0);
        let out = j.chunk(&r, (1, 1), l1, &s1, e1);
        assert!(out.done.is_empty());
        assert_eq!(out.hold_back, Some(0));
        let (l2, s2, e2) = split("  last\nnew\n", e1);
        let out = j.chunk(&r, (1, 1), l2, &s2, e2);
        assert_eq!(bodies(&out), ["start\n  more\n  last"]);
        assert_eq!(out.hold_back, Some(e1 + 7));
        // Another file's lines do not join this file's event.
        let (l3, s3, e3) = split("  other\n", 0);
        let out = j.chunk(&r, (1, 2), l3, &s3, e3);
        assert!(out.done.is_empty());
        assert_eq!(j.files().len(), 2);
    }

    #[test]
    fn halt_before_a_matching_line_starts_the_next_event_per_lane() {
        let c = MultilineConfig {
            start: "^BEGIN".into(),
            condition: Condition::HaltBefore,
            timeout_ms: 1000,
        };
        let r = Rule::new(&c, 1 << 20).unwrap();
        let mut j = Joiner::default();
        let line = |body: &str, start: u64, lane: u8| Line {
            body: Bytes::copy_from_slice(body.as_bytes()),
            start,
            end: start + 10,
            lane,
            meta: None,
        };
        // Lines before the first match form an event of their own; lanes
        // (container streams) interleave without mixing.
        let items = vec![
            line("orphan", 0, 1),
            line("BEGIN a", 10, 1),
            line("err 1", 20, 2),
            line("a2", 30, 1),
            line("err 2", 40, 2),
            line("BEGIN b", 50, 1),
            line("b2", 60, 1),
        ];
        let out = j.lines(&r, (1, 1), items.into_iter());
        assert_eq!(bodies(&out), ["orphan", "BEGIN a\na2"]);
        // The stderr event opened at 20 holds the checkpoint, not "BEGIN b".
        assert_eq!(out.hold_back, Some(20));
        let mut rest: Vec<String> = j
            .take((1, 1), None)
            .into_iter()
            .map(|g| String::from_utf8_lossy(&done(g).body).into_owned())
            .collect();
        rest.sort();
        assert_eq!(rest, ["BEGIN b\nb2", "err 1\nerr 2"]);
        assert_eq!(j.hold_back((1, 1)), None);
    }

    #[test]
    fn joined_event_is_capped_and_counted_once() {
        let r = rule("^\\S", 10);
        let mut j = Joiner::default();
        let (l, s, e) = split("abcdef\n ghij\n klmn\nnext\n", 0);
        let out = j.chunk(&r, (1, 1), l, &s, e);
        assert_eq!(bodies(&out), ["abcdef\n gh"]);
        assert_eq!(out.truncated, 1);
    }

    #[test]
    fn quiet_groups_are_found_after_the_timeout() {
        let r = rule("^\\S", 100);
        let mut j = Joiner::default();
        let (l, s, e) = split("a\n", 0);
        j.chunk(&r, (1, 1), l, &s, e);
        assert_eq!(j.quiet(Duration::from_secs(3600)), vec![]);
        assert_eq!(j.quiet(Duration::ZERO), vec![(1, 1)]);
    }

    #[test]
    fn estimated_starts_never_pass_the_end() {
        let lines = [Bytes::from_static(b"abc"), Bytes::from_static(b"de")];
        assert_eq!(line_starts(&lines, &[], 10, 20), [10, 14]);
        assert_eq!(line_starts(&lines, &[], 10, 12), [10, 12]);
        assert_eq!(line_starts(&lines, &[10, 15], 10, 20), [10, 15]);
    }
}
