//! `format = "cri"` and `format = "docker_json"`: container runtime lines into
//! events.
//!
//! Each line is parsed by [`proto::cri`] or [`proto::docker`] (Docker
//! `json-file`: the message is `log` without its newline, a `log` without one is
//! a partial line). A full (`F`) line becomes an event whose
//! body is the message (a slice of the read buffer, no copy), whose time is the
//! runtime's, with fields `stream`, and — when the path is a kubelet pod log
//! (`…/<namespace>_<pod>_<uid>/<container>/<n>.log`) — `kubernetes.namespace`,
//! `kubernetes.pod`, `kubernetes.pod_uid`, `kubernetes.container`.
//!
//! Partial (`P`) lines are joined with what follows on the same stream of the same
//! container *directory*, so a line split across a rotation (its `P` at the end
//! of `0.log.<date>`, its `F` at the start of the new `0.log`) is still joined.
//! A joined line is capped at `max_line_bytes` (the rest is dropped, counted as
//! truncated). A line that is not CRI, or whose time cannot be read, is kept as
//! it is with the field `parse_error` naming the problem (and the reader's time).
//!
//! Checkpoints: while a partial line waits for its end, the checkpoint of its
//! file stays before its first part, so after a crash the parts are read again
//! and joined, not lost.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use proto::cri::{self, Stream};
use proto::docker;

use super::Format;
use super::checkpoint::FileKey;
use crate::event::{Event, Fields, Origin, Record, Value, now_ns};

/// Parts of a line waiting for its final part.
struct Pending {
    buf: BytesMut,
    /// Where each file's parts begin, in order (one mark per file, two when a
    /// line is split across a rotation): the checkpoint of each file must not
    /// pass its mark, and a file read again from its checkpoint drops its parts.
    marks: Vec<Mark>,
    time_ns: i64,
    truncated: bool,
}

/// The first part of `file` in a pending line.
struct Mark {
    file: FileKey,
    /// Offset of that part in `file`.
    offset: u64,
    /// Length of the buffer before it (and whether it was cut already).
    len: usize,
    truncated: bool,
}

/// Joins partial lines, per container directory and stream.
#[derive(Default)]
pub struct Joiner {
    pending: HashMap<(PathBuf, Stream), Pending>,
}

/// What one chunk of lines gave.
pub struct Output {
    pub events: Vec<Event>,
    /// Lowest offset in this file where a still-pending partial line starts.
    pub hold_back: Option<u64>,
    /// Joined lines cut at the cap.
    pub truncated: u64,
    /// Lines kept raw (not of the format) or with an unreadable time.
    pub parse_errors: u64,
    /// Per event: offset of its first part in this file (of its last line when
    /// its first parts came from another file), offset after its last line, and
    /// its lane for `multiline` (0 raw, 1 stdout, 2 stderr).
    pub spans: Vec<(u64, u64, u8)>,
}

fn lane(stream: Option<Stream>) -> u8 {
    match stream {
        None => 0,
        Some(Stream::Stdout) => 1,
        Some(Stream::Stderr) => 2,
    }
}

/// One line of either format, parsed.
struct Part {
    time_ns: Option<i64>,
    stream: Stream,
    partial: bool,
    message: Bytes,
}

fn parse(format: Format, line: &Bytes) -> Result<Part, String> {
    if format == Format::DockerJson {
        let d = docker::parse_line(line).map_err(|e| e.to_string())?;
        let message = match d.message {
            Cow::Borrowed(s) => line.slice_ref(s.as_bytes()),
            Cow::Owned(s) => Bytes::from(s),
        };
        return Ok(Part {
            time_ns: cri::parse_rfc3339_ns(d.time.as_bytes()),
            stream: d.stream,
            partial: d.partial,
            message,
        });
    }
    let c = cri::parse_line(line).map_err(|e| e.to_string())?;
    Ok(Part {
        time_ns: cri::parse_rfc3339_ns(c.time),
        stream: c.stream,
        partial: c.partial,
        message: line.slice_ref(c.message),
    })
}

/// Shared strings of one batch.
pub struct Names {
    pub tag: Arc<str>,
    pub source: Arc<str>,
    pub max_line_bytes: usize,
}

fn fields(path: &Path, stream: Option<Stream>, error: Option<&str>) -> Arc<Fields> {
    let mut f: Fields = Vec::with_capacity(6);
    let s = |v: &str| Value::from(v);
    if let Some(st) = stream {
        f.push((s("stream"), s(st.as_str())));
    }
    if let Some(p) = path.to_str().and_then(cri::pod_path) {
        f.push((s("kubernetes.namespace"), s(p.namespace)));
        f.push((s("kubernetes.pod"), s(p.pod)));
        f.push((s("kubernetes.pod_uid"), s(p.pod_uid)));
        f.push((s("kubernetes.container"), s(p.container)));
    }
    if let Some(e) = error {
        f.push((s("parse_error"), s(e)));
    }
    Arc::new(f)
}

impl Joiner {
    /// Turn one chunk of `file`'s lines into events; `starts[i]` is the offset
    /// of `lines[i]` (exact, or an estimate never past it) and `end` the offset
    /// after the last.
    #[allow(clippy::too_many_arguments)]
    pub fn chunk(
        &mut self,
        format: Format,
        file: FileKey,
        path: &Path,
        starts: &[u64],
        end: u64,
        lines: Vec<Bytes>,
        origin: &Arc<Origin>,
        names: &Names,
    ) -> Output {
        let dir = path.parent().unwrap_or(Path::new("/")).to_owned();
        let by_stream = [
            fields(path, Some(Stream::Stdout), None),
            fields(path, Some(Stream::Stderr), None),
        ];
        let mut out = Output {
            events: Vec::with_capacity(lines.len()),
            hold_back: None,
            truncated: 0,
            parse_errors: 0,
            spans: Vec::with_capacity(lines.len()),
        };
        let now = now_ns();
        for (i, line) in lines.into_iter().enumerate() {
            let line_start = starts[i];
            let line_end = starts.get(i + 1).copied().unwrap_or(end);
            let event = |body: Bytes, time_ns: i64, f: &Arc<Fields>| {
                let mut ev = Event::new(body, time_ns, names.tag.clone(), names.source.clone());
                ev.origin = Some(origin.clone());
                ev.fields = Some(Record::from(f.clone()));
                ev
            };
            let parsed = match parse(format, &line) {
                Ok(p) => p,
                Err(e) => {
                    out.parse_errors += 1;
                    let f = fields(path, None, Some(&e));
                    out.events.push(event(line, now, &f));
                    out.spans.push((line_start, line_end, 0));
                    continue;
                }
            };
            let time = parsed.time_ns;
            let f = match (time, parsed.stream) {
                (None, st) => {
                    out.parse_errors += 1;
                    fields(path, Some(st), Some("time is not RFC 3339"))
                }
                (Some(_), Stream::Stdout) => by_stream[0].clone(),
                (Some(_), Stream::Stderr) => by_stream[1].clone(),
            };
            let time_ns = time.unwrap_or(now);
            let key = (dir.clone(), parsed.stream);
            if parsed.partial {
                let p = self.pending.entry(key).or_insert_with(|| Pending {
                    buf: BytesMut::new(),
                    marks: Vec::new(),
                    time_ns,
                    truncated: false,
                });
                if p.marks.last().is_none_or(|m| m.file != file) {
                    p.marks.push(Mark {
                        file,
                        offset: line_start,
                        len: p.buf.len(),
                        truncated: p.truncated,
                    });
                }
                let room = names.max_line_bytes.saturating_sub(p.buf.len());
                if parsed.message.len() > room {
                    p.truncated = true;
                }
                p.buf
                    .extend_from_slice(&parsed.message[..parsed.message.len().min(room)]);
                continue;
            }
            let lane = lane(Some(parsed.stream));
            let body = match self.pending.remove(&key) {
                Some(mut p) => {
                    let room = names.max_line_bytes.saturating_sub(p.buf.len());
                    let m = parsed.message;
                    p.truncated |= m.len() > room;
                    p.buf.extend_from_slice(&m[..m.len().min(room)]);
                    out.truncated += u64::from(p.truncated);
                    out.events.push(event(p.buf.freeze(), p.time_ns, &f));
                    let first = p.marks.iter().find(|m| m.file == file);
                    let from = first.map_or(line_start, |m| m.offset);
                    out.spans.push((from, line_end, lane));
                    continue;
                }
                None => parsed.message,
            };
            out.events.push(event(body, time_ns, &f));
            out.spans.push((line_start, line_end, lane));
        }
        out.hold_back = self.hold_back(file);
        out
    }

    /// Lowest offset in `file` where parts of a still-pending line start.
    pub fn hold_back(&self, file: FileKey) -> Option<u64> {
        self.pending
            .values()
            .flat_map(|p| p.marks.iter())
            .filter(|m| m.file == file)
            .map(|m| m.offset)
            .min()
    }

    /// `file` is read again from its checkpoint, which is before its parts
    /// (held back): forget them, they come again. A line whose earlier parts
    /// came from another file keeps those.
    pub fn rewind(&mut self, file: FileKey) {
        self.pending.retain(|_, p| {
            if let Some(i) = p.marks.iter().position(|m| m.file == file) {
                let m = &p.marks[i];
                p.buf.truncate(m.len);
                p.truncated = m.truncated;
                p.marks.truncate(i);
            }
            !p.marks.is_empty()
        });
    }

    /// `dir` has no file left: its waiting parts become events as they are.
    pub fn flush_dir(&mut self, dir: &Path, origin: &Arc<Origin>, names: &Names) -> Vec<Event> {
        let keys: Vec<_> = self
            .pending
            .keys()
            .filter(|(d, _)| d == dir)
            .cloned()
            .collect();
        let mut events = Vec::new();
        for k in keys {
            if let Some(p) = self.pending.remove(&k) {
                let f = fields(
                    &dir.join("x.log"),
                    Some(k.1),
                    Some("partial line without its end"),
                );
                let mut ev = Event::new(
                    p.buf.freeze(),
                    p.time_ns,
                    names.tag.clone(),
                    names.source.clone(),
                );
                ev.origin = Some(origin.clone());
                ev.fields = Some(Record::from(f));
                events.push(ev);
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names {
            tag: "t".into(),
            source: "s".into(),
            max_line_bytes: 1024,
        }
    }

    fn lines(v: &[&str]) -> Vec<Bytes> {
        v.iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    impl Joiner {
        /// `chunk` with the offsets worked out from the lengths.
        #[allow(clippy::too_many_arguments)]
        fn chunk_at(
            &mut self,
            format: Format,
            file: FileKey,
            path: &Path,
            start: u64,
            lines: Vec<Bytes>,
            origin: &Arc<Origin>,
            names: &Names,
        ) -> Output {
            let end = start + lines.iter().map(|l| l.len() as u64 + 1).sum::<u64>();
            let starts = crate::sources::file::multiline::line_starts(&lines, &[], start, end);
            self.chunk(format, file, path, &starts, end, lines, origin, names)
        }
    }

    const POD: &str = "/var/log/pods/prod_web-1_u-1/nginx/0.log";

    #[test]
    fn partial_lines_join_and_carry_pod_fields() {
        let mut j = Joiner::default();
        let o = Arc::new(Origin::default());
        let out = j.chunk_at(
            Format::Cri,
            (1, 1),
            Path::new(POD),
            0,
            lines(&[
                "2024-01-01T00:00:00Z stdout P hel",
                "2024-01-01T00:00:00Z stderr F oops",
                "2024-01-01T00:00:01Z stdout F lo",
            ]),
            &o,
            &names(),
        );
        assert_eq!(out.events.len(), 2);
        assert_eq!(&out.events[0].body[..], b"oops");
        assert_eq!(&out.events[1].body[..], b"hello");
        assert_eq!(out.events[1].time_ns, 1_704_067_200_000_000_000);
        let e = &out.events[1];
        let get = |k: &str| e.field(k).and_then(|v| v.as_bytes()).map(|b| b.to_vec());
        assert_eq!(get("stream"), Some(b"stdout".to_vec()));
        assert_eq!(get("kubernetes.namespace"), Some(b"prod".to_vec()));
        assert_eq!(get("kubernetes.pod"), Some(b"web-1".to_vec()));
        assert_eq!(get("kubernetes.pod_uid"), Some(b"u-1".to_vec()));
        assert_eq!(get("kubernetes.container"), Some(b"nginx".to_vec()));
        assert_eq!(out.hold_back, None);
    }

    #[test]
    fn pending_partial_holds_the_checkpoint_and_joins_across_files() {
        let mut j = Joiner::default();
        let o = Arc::new(Origin::default());
        let first = "2024-01-01T00:00:00Z stdout F a";
        let out = j.chunk_at(
            Format::Cri,
            (1, 1),
            Path::new(POD),
            100,
            lines(&[first, "2024-01-01T00:00:00Z stdout P par"]),
            &o,
            &names(),
        );
        assert_eq!(out.events.len(), 1);
        assert_eq!(out.hold_back, Some(100 + first.len() as u64 + 1));
        // The rest arrives in the next file of the same container (rotation).
        let rotated = "/var/log/pods/prod_web-1_u-1/nginx/1.log";
        let out = j.chunk_at(
            Format::Cri,
            (1, 2),
            Path::new(rotated),
            0,
            lines(&["2024-01-01T00:00:00Z stdout F t"]),
            &o,
            &names(),
        );
        assert_eq!(&out.events[0].body[..], b"part");
    }

    #[test]
    fn parts_read_again_after_a_rewind_are_joined_once() {
        let mut j = Joiner::default();
        let o = Arc::new(Origin::default());
        let chunk = |j: &mut Joiner, file, v: &[&str]| {
            j.chunk_at(Format::Cri, file, Path::new(POD), 0, lines(v), &o, &names())
        };
        let first = ["t stdout F before", "t stdout P hel", "t stdout P lo "];
        let out = chunk(&mut j, (1, 1), &first);
        assert_eq!(out.hold_back, Some(18));
        // The batch failed: the file is read again from its checkpoint.
        j.rewind((1, 1));
        let out = chunk(&mut j, (1, 1), &first);
        assert_eq!(
            &out.events[0].body[..],
            b"before",
            "not joined to old parts"
        );
        let out = chunk(&mut j, (1, 1), &["t stdout F there"]);
        assert_eq!(&out.events[0].body[..], b"hello there");
        // Split across a rotation: the new file's parts go, the old file's stay.
        chunk(&mut j, (1, 1), &["t stdout P a"]);
        chunk(&mut j, (1, 2), &["t stdout P b"]);
        j.rewind((1, 2));
        assert_eq!(j.hold_back((1, 2)), None);
        let out = chunk(&mut j, (1, 2), &["t stdout P b", "t stdout F c"]);
        assert_eq!(&out.events[0].body[..], b"abc");
    }

    #[test]
    fn hostile_lines_are_kept_raw_with_a_parse_error() {
        let mut j = Joiner::default();
        let o = Arc::new(Origin::default());
        let out = j.chunk_at(
            Format::Cri,
            (1, 1),
            Path::new("/tmp/x.log"),
            0,
            lines(&["not cri at all", "99999-01-01T00:00:00Z stdout F big time"]),
            &o,
            &names(),
        );
        assert_eq!(out.events.len(), 2);
        assert_eq!(&out.events[0].body[..], b"not cri at all");
        assert!(out.events[0].field("parse_error").is_some());
        assert_eq!(&out.events[1].body[..], b"big time");
        assert!(out.events[1].field("parse_error").is_some());
    }

    #[test]
    fn joined_line_is_capped() {
        let mut j = Joiner::default();
        let o = Arc::new(Origin::default());
        let mut n = names();
        n.max_line_bytes = 4;
        let out = j.chunk_at(
            Format::Cri,
            (1, 1),
            Path::new(POD),
            0,
            lines(&["t stdout P abc", "t stdout F def"]),
            &o,
            &n,
        );
        assert_eq!(&out.events[0].body[..], b"abcd");
        assert_eq!(out.truncated, 1);
    }

    #[test]
    fn docker_json_lines_partial_joined_hostile_kept_raw() {
        let mut j = Joiner::default();
        let o = Arc::new(Origin::default());
        let out = j.chunk_at(
            Format::DockerJson,
            (1, 1),
            Path::new("/var/lib/docker/containers/c1/c1-json.log"),
            0,
            lines(&[
                r#"{"log":"hel","stream":"stdout","time":"2024-01-01T00:00:00Z"}"#,
                r#"{"log":"err\n","stream":"stderr","time":"2024-01-01T00:00:01Z"}"#,
                r#"{"log":"lo\n","stream":"stdout","time":"2024-01-01T00:00:02Z"}"#,
                r#"{"log":"oops"#,
                r#"{"log":"late\n","stream":"stdout","time":"99999-01-01T00:00:00Z"}"#,
            ]),
            &o,
            &names(),
        );
        let bodies: Vec<&[u8]> = out.events.iter().map(|e| &e.body[..]).collect();
        assert_eq!(bodies, [&b"err"[..], b"hello", br#"{"log":"oops"#, b"late"]);
        assert_eq!(out.events[1].time_ns, 1_704_067_200_000_000_000);
        let stream = |i: usize| {
            out.events[i]
                .field("stream")
                .and_then(|v| v.as_bytes())
                .map(<[u8]>::to_vec)
        };
        assert_eq!(stream(0), Some(b"stderr".to_vec()));
        assert_eq!(stream(1), Some(b"stdout".to_vec()));
        assert!(out.events[1].field("parse_error").is_none());
        assert!(
            out.events[2].field("parse_error").is_some(),
            "bad JSON kept raw"
        );
        assert!(
            out.events[3].field("parse_error").is_some(),
            "huge time flagged"
        );
        assert_eq!(out.parse_errors, 2);
        assert_eq!(out.hold_back, None);
    }
}
