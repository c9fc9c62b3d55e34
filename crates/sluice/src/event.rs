//! Events and batches: the unit of data moving through sluice.
//!
//! An [`Event`] is one log record. Its body is bytes, never forced to UTF-8. Every
//! heavier part sits behind a reference count so that a fan-out to several sinks
//! costs a few atomic increments per event, not copies: `body` is [`Bytes`] (often
//! a slice of the buffer one `read()` filled), `tag`/`source` are shared `Arc<str>`,
//! structured fields and origin metadata are `Arc`s that many events may share.
//!
//! Structured fields come in two forms ([`Record`]): a forward record stays the
//! msgpack bytes it arrived in ([`Record::Raw`], a slice of the request buffer, read
//! in place: lookups, JSON and msgpack output never decode it into values), other
//! producers hand decoded pairs ([`Record::Decoded`]). [`Event::field`] and the
//! encoders accept both.
//!
//! Events travel in an [`EventBatch`], which carries exactly one [`AckToken`]. The
//! batch's events are behind an `Arc` so that cloning a batch for each sink of a
//! fan-out is O(1).

use std::sync::Arc;

use bytes::Bytes;
pub use proto::forward::{RawMap, RawValue};

use crate::ack::AckToken;

/// A structured value (msgpack model).
pub type Value = rmpv::Value;

/// Decoded structured fields: ordered key/value pairs, keys usually strings.
pub type Fields = Vec<(Value, Value)>;

/// The structured fields of an event.
#[derive(Debug, Clone)]
pub enum Record {
    /// A msgpack map kept as received (forward records), validated at decode time
    /// and read in place. Cloning is a reference-count increment.
    Raw(RawMap),
    /// Decoded pairs, shared.
    Decoded(Arc<Fields>),
}

impl From<Arc<Fields>> for Record {
    fn from(f: Arc<Fields>) -> Self {
        Record::Decoded(f)
    }
}

impl From<RawMap> for Record {
    fn from(m: RawMap) -> Self {
        Record::Raw(m)
    }
}

impl PartialEq for Record {
    /// Same pairs, whatever the form (a raw map is compared by its decoded value
    /// only against a decoded one).
    fn eq(&self, other: &Record) -> bool {
        match (self, other) {
            (Record::Raw(a), Record::Raw(b)) => a == b,
            (Record::Decoded(a), Record::Decoded(b)) => a == b,
            (Record::Raw(r), Record::Decoded(d)) | (Record::Decoded(d), Record::Raw(r)) => {
                r.len() == d.len() && r.to_value().as_map() == Some(&**d)
            }
        }
    }
}

impl Record {
    /// Number of pairs.
    pub fn len(&self) -> usize {
        match self {
            Record::Raw(m) => m.len(),
            Record::Decoded(f) => f.len(),
        }
    }

    /// Whether there is no pair.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of the first pair whose str/bin key is `name` (no allocation).
    pub fn get(&self, name: &[u8]) -> Option<FieldRef<'_>> {
        match self {
            Record::Raw(m) => m.get(name).map(FieldRef::Raw),
            Record::Decoded(f) => f
                .iter()
                .find(|(k, _)| key_matches(k, name))
                .map(|(_, v)| FieldRef::Value(v)),
        }
    }

    /// Whether both are the same shared record (not merely equal): runs of events
    /// sharing one record are stored once by the disk buffer.
    pub fn same_as(&self, other: &Record) -> bool {
        match (self, other) {
            (Record::Raw(a), Record::Raw(b)) => {
                let (a, b) = (a.pairs_bytes(), b.pairs_bytes());
                a.len() == b.len() && a.as_ptr() == b.as_ptr()
            }
            (Record::Decoded(a), Record::Decoded(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// The pairs as owned values (allocates; for consumers that need [`Value`]s).
    pub fn to_fields(&self) -> Fields {
        match self {
            Record::Raw(m) => m
                .iter()
                .map(|(k, v)| (k.to_value(), v.to_value()))
                .collect(),
            Record::Decoded(f) => f.to_vec(),
        }
    }

    /// The record as a raw map (a reference-count increment when already raw).
    pub fn to_raw(&self) -> RawMap {
        match self {
            Record::Raw(m) => m.clone(),
            Record::Decoded(f) => RawMap::encode(f),
        }
    }
}

/// A field value borrowed from either form of [`Record`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldRef<'a> {
    /// Read in place from a raw record.
    Raw(RawValue<'a>),
    /// From decoded pairs.
    Value(&'a Value),
}

impl<'a> FieldRef<'a> {
    /// The bytes of a str or bin value.
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match *self {
            FieldRef::Raw(v) => v.as_bytes(),
            FieldRef::Value(Value::String(s)) => Some(s.as_bytes()),
            FieldRef::Value(Value::Binary(b)) => Some(b),
            FieldRef::Value(_) => None,
        }
    }

    /// A non-negative integer value.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            FieldRef::Raw(v) => v.as_u64(),
            FieldRef::Value(v) => v.as_u64(),
        }
    }

    /// Whether the value is nil.
    pub fn is_nil(&self) -> bool {
        matches!(
            self,
            FieldRef::Raw(RawValue::Nil) | FieldRef::Value(Value::Nil)
        )
    }

    /// An owned copy of the value.
    pub fn to_value(&self) -> Value {
        match *self {
            FieldRef::Raw(v) => v.to_value(),
            FieldRef::Value(v) => v.clone(),
        }
    }
}

impl std::fmt::Display for FieldRef<'_> {
    /// rmpv's text form (strings quoted).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldRef::Raw(v) => v.fmt(f),
            FieldRef::Value(v) => v.fmt(f),
        }
    }
}

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
    pub fields: Option<Record>,
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

    /// Look up a structured field by its (str or bin) key, without allocating.
    pub fn field(&self, name: &str) -> Option<FieldRef<'_>> {
        self.fields.as_ref()?.get(name.as_bytes())
    }
}

fn key_matches(key: &Value, name: &[u8]) -> bool {
    match key {
        Value::String(s) => s.as_bytes() == name,
        Value::Binary(b) => b.as_slice() == name,
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

    /// Bytes this batch keeps in memory, as a memory buffer counts them against
    /// `max_bytes`: per event its `Event` struct, its body, and its raw record (a
    /// forward record is a slice of the request, or of the inflated payload, so the
    /// records of one request add up to about the buffer they keep alive; a body
    /// that is a slice of its own record is not counted twice). Decoded fields and
    /// origin metadata are shared and not counted.
    pub fn footprint(&self) -> usize {
        self.events
            .iter()
            .map(|e| {
                let record = match &e.fields {
                    Some(Record::Raw(m)) => m.pairs_bytes(),
                    _ => return std::mem::size_of::<Event>() + e.body.len(),
                };
                let (r, b) = (record.as_ptr() as usize, e.body.as_ptr() as usize);
                let inside = b >= r && b + e.body.len() <= r + record.len();
                let body = if inside { 0 } else { e.body.len() };
                std::mem::size_of::<Event>() + record.len() + body
            })
            .sum()
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
