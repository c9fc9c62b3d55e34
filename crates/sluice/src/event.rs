//! Events and batches: the unit of data moving through sluice.
//!
//! An [`Event`] is one log record. Its body is bytes, never forced to UTF-8. Every
//! heavier part sits behind a reference count so that a fan-out to several sinks
//! costs a few atomic increments per event, not copies: `body` is [`Bytes`] (often
//! a slice of the buffer one `read()` filled), `tag`/`source` are shared `Arc<str>`,
//! structured fields and origin metadata are `Arc`s that many events may share.
//!
//! Events travel in an [`EventBatch`], which carries exactly one [`AckToken`]. The
//! batch's events are behind an `Arc` so that cloning a batch for each sink of a
//! fan-out is O(1).

use std::sync::Arc;

use bytes::Bytes;

use crate::ack::AckToken;

/// A structured value (msgpack model: forward records decode into it as-is).
pub type Value = rmpv::Value;

/// Structured fields of an event: ordered key/value pairs, keys usually strings.
pub type Fields = Vec<(Value, Value)>;

/// Where an event came from, beyond the source name: filled by the capturing source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    /// Path of the file as the writing application saw it.
    pub path: Option<String>,
    /// Process id (thread-group id) of the writer.
    pub pid: Option<u32>,
    /// User id of the writer (filesystem uid).
    pub uid: Option<u32>,
    /// Group id of the writer (filesystem gid).
    pub gid: Option<u32>,
    /// User name for `uid`.
    pub user: Option<String>,
    /// Group name for `gid`.
    pub group: Option<String>,
    /// Command line of the writer, arguments separated by spaces.
    pub command: Option<String>,
    /// Host the event was produced on (peer host for network sources).
    pub host: Option<String>,
    /// Byte offset of the write within the file.
    pub offset: Option<u64>,
    /// `@fields` given at start-up (fuse source), rendered by `logstash_json`.
    pub static_fields: Option<Arc<Vec<(String, String)>>>,
    /// `@tags` given at start-up (fuse source).
    pub static_tags: Option<Arc<Vec<String>>>,
}

/// One log record.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Time of the event in nanoseconds since the Unix epoch.
    pub time_ns: i64,
    /// The record's bytes (a line, a write, a forward record's message).
    pub body: Bytes,
    /// Tag / category used for routing and templates.
    pub tag: Arc<str>,
    /// Name of the source component that produced the event.
    pub source: Arc<str>,
    /// Tenant (client id) once a tenant route has assigned one.
    pub tenant: Option<Arc<str>>,
    /// Structured fields (forward records, parsed syslog).
    pub fields: Option<Arc<Fields>>,
    /// Origin metadata (fuse writes, network peers).
    pub origin: Option<Arc<Origin>>,
    /// Bucket number once a bucket route has assigned one (`{bucket}`).
    pub bucket: Option<u32>,
}

impl Event {
    /// A plain event with a body, time, tag and source, and nothing else.
    pub fn new(body: Bytes, time_ns: i64, tag: Arc<str>, source: Arc<str>) -> Self {
        Event {
            time_ns,
            body,
            tag,
            source,
            tenant: None,
            fields: None,
            origin: None,
            bucket: None,
        }
    }

    /// Look up a structured field by its (string) key.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields
            .as_deref()?
            .iter()
            .find(|(k, _)| key_matches(k, name))
            .map(|(_, v)| v)
    }
}

fn key_matches(key: &Value, name: &str) -> bool {
    match key {
        Value::String(s) => s.as_bytes() == name.as_bytes(),
        Value::Binary(b) => b.as_slice() == name.as_bytes(),
        _ => false,
    }
}

/// Current time in nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// A group of events with one acknowledgement token.
#[derive(Debug)]
pub struct EventBatch {
    /// The events; shared between the copies of a fan-out.
    pub events: Arc<Vec<Event>>,
    /// This copy's acknowledgement.
    pub ack: AckToken,
}

impl EventBatch {
    /// A batch with its token.
    pub fn new(events: Vec<Event>, ack: AckToken) -> Self {
        EventBatch {
            events: Arc::new(events),
            ack,
        }
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Sum of body sizes.
    pub fn byte_size(&self) -> usize {
        self.events.iter().map(|e| e.body.len()).sum()
    }

    /// Another copy of this batch for one more consumer (O(1)); the copy carries a
    /// clone of the token and must be resolved on its own.
    pub fn share(&self) -> EventBatch {
        EventBatch {
            events: self.events.clone(),
            ack: self.ack.clone(),
        }
    }
}
