//! One syslog message → one [`Event`].
//!
//! Body: the MSG part, a slice of the received bytes. Time: the message's
//! timestamp, else the time of receipt. Tag: `syslog.<facility>.<severity>` by
//! keyword (`syslog.auth.err`; a message without PRI counts as `user.notice`),
//! unless the source sets `tag`. Origin host: the peer's IP address (network modes).
//!
//! Fields, written as one msgpack map per event into a buffer shared by the batch
//! (one allocation per batch, none per event; a [`RawMap`] slice each):
//! `syslog.facility` and `syslog.severity` (numbers), `level` (`fatal` for emerg,
//! alert and crit, then `error`, `warn`, `notice`, `info`, `debug`: what the
//! `filter` route reads), `syslog.hostname`, `syslog.appname`, `syslog.procid`,
//! `syslog.msgid` (when present), `syslog.sd.<SD-ID>.<PARAM>` (unescaped) per
//! structured-data parameter. A message that parses as neither format keeps its raw
//! bytes as body and gets `syslog.parse_error` (the reason) and the `user.notice`
//! priority fields.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use proto::syslog::{Message, Options, Priority};

use super::Zone;
use crate::event::{Event, Origin, RawMap};

/// Field names.
pub(crate) const FACILITY: &[u8] = b"syslog.facility";
pub(crate) const SEVERITY: &[u8] = b"syslog.severity";
pub(crate) const LEVEL: &[u8] = b"level";
pub(crate) const HOSTNAME: &[u8] = b"syslog.hostname";
pub(crate) const APPNAME: &[u8] = b"syslog.appname";
pub(crate) const PROCID: &[u8] = b"syslog.procid";
pub(crate) const MSGID: &[u8] = b"syslog.msgid";
pub(crate) const SD_PREFIX: &[u8] = b"syslog.sd.";
pub(crate) const PARSE_ERROR: &[u8] = b"syslog.parse_error";

/// The `level` of each severity.
const LEVELS: [&str; 8] = [
    "fatal", "fatal", "fatal", "error", "warn", "notice", "info", "debug",
];

/// Turns messages into events for one source.
pub(crate) struct Mapper {
    source: Arc<str>,
    /// The configured tag, or `None` for per-priority tags.
    tag: Option<Arc<str>>,
    /// `syslog.<facility>.<severity>` for every PRI value.
    tags: Vec<Arc<str>>,
    zone: Zone,
}

/// Per-batch state: the clock, the zone offset and the shared fields buffer.
pub(crate) struct Batch {
    pub events: Vec<Event>,
    fields: BytesMut,
    options: Options,
    now_ns: i64,
}

impl Mapper {
    pub fn new(source: Arc<str>, tag: Option<Arc<str>>, zone: Zone) -> Self {
        let tags = (0u8..192)
            .map(|v| {
                let p = Priority {
                    facility: v / 8,
                    severity: v % 8,
                };
                Arc::from(format!(
                    "syslog.{}.{}",
                    p.facility_name(),
                    p.severity_name()
                ))
            })
            .collect();
        Mapper {
            source,
            tag,
            tags,
            zone,
        }
    }

    /// A batch for messages received now; `hint` is the expected event count.
    pub fn batch(&self, hint: usize) -> Batch {
        let now_ns = crate::event::now_ns();
        let now_secs = now_ns.div_euclid(1_000_000_000);
        Batch {
            events: Vec::with_capacity(hint),
            fields: BytesMut::with_capacity(hint * 160),
            options: Options {
                now_secs,
                utc_offset_secs: self.zone.offset_at(now_secs),
            },
            now_ns,
        }
    }

    /// Parses `frame` and appends its event to `batch`.
    pub fn push(&self, batch: &mut Batch, frame: Bytes, origin: Option<&Arc<Origin>>) {
        let parsed = proto::syslog::parse(&frame, &batch.options);
        let out = &mut batch.fields;
        let (body, time_ns, priority, pairs) = match &parsed {
            Ok(m) => {
                let pairs = write_message(out, m);
                let body = if m.msg.is_empty() {
                    Bytes::new()
                } else {
                    frame.slice_ref(m.msg)
                };
                let p = m.priority.unwrap_or(Priority::DEFAULT);
                (body, m.timestamp.unwrap_or(batch.now_ns), p, pairs)
            }
            Err(e) => {
                let p = Priority::DEFAULT;
                write_priority(out, p);
                put_str(out, PARSE_ERROR);
                put_str(out, e.to_string().as_bytes());
                let raw = proto::syslog::trim_end(&frame);
                let body = if raw.is_empty() {
                    Bytes::new()
                } else {
                    frame.slice_ref(raw)
                };
                (body, batch.now_ns, p, 4)
            }
        };
        let fields = out.split().freeze();
        // Written just above by the helpers below: valid by construction.
        let record = RawMap::parse_pairs(fields, pairs, 1).ok();
        let tag = match &self.tag {
            Some(t) => t.clone(),
            None => self.tags[usize::from(priority.value()).min(191)].clone(),
        };
        let mut event = Event::new(body, time_ns, tag, self.source.clone());
        event.fields = record.map(Into::into);
        event.origin = origin.cloned();
        batch.events.push(event);
    }
}

impl Batch {
    /// Events collected so far, leaving the batch empty.
    pub fn take(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }
}

/// Writes the fields of a parsed message; returns the number of pairs.
fn write_message(out: &mut BytesMut, m: &Message<'_>) -> u32 {
    write_priority(out, m.priority.unwrap_or(Priority::DEFAULT));
    let mut pairs = 3;
    for (key, value) in [
        (HOSTNAME, m.hostname),
        (APPNAME, m.appname),
        (PROCID, m.procid),
        (MSGID, m.msgid),
    ] {
        if let Some(v) = value {
            put_str(out, key);
            put_str(out, v);
            pairs += 1;
        }
    }
    for element in m.structured_data.elements() {
        for param in element.params() {
            let key_len = SD_PREFIX.len() + element.id.len() + 1 + param.name.len();
            put_str_header(out, key_len);
            out.put_slice(SD_PREFIX);
            out.put_slice(element.id);
            out.put_u8(b'.');
            out.put_slice(param.name);
            put_str(out, &param.value.unescaped());
            pairs += 1;
        }
    }
    pairs
}

fn write_priority(out: &mut BytesMut, p: Priority) {
    put_str(out, FACILITY);
    out.put_u8(p.facility); // positive fixint (< 128)
    put_str(out, SEVERITY);
    out.put_u8(p.severity);
    put_str(out, LEVEL);
    put_str(out, LEVELS[usize::from(p.severity & 7)].as_bytes());
}

fn put_str(out: &mut BytesMut, s: &[u8]) {
    put_str_header(out, s.len());
    out.put_slice(s);
}

/// msgpack str header (fixstr, str8, str16, str32). Messages are capped far below
/// 4 GiB (`max_message_bytes`), so a length never exceeds u32.
fn put_str_header(out: &mut BytesMut, len: usize) {
    match len {
        0..=31 => out.put_u8(0xa0 | len as u8),
        32..=0xff => {
            out.put_u8(0xd9);
            out.put_u8(len as u8);
        }
        0x100..=0xffff => {
            out.put_u8(0xda);
            out.put_u16(len as u16);
        }
        _ => {
            out.put_u8(0xdb);
            out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
        }
    }
}
