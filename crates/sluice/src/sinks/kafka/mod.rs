//! `type = "kafka"`: events produced to Kafka topics through librdkafka.
//!
//! Each event becomes one record: payload in the sink's `encoding` (raw: the body
//! bytes as they are), topic and optional key rendered from templates, timestamp
//! the event time. librdkafka batches, compresses and retries; its delivery reports
//! resolve the batch's acknowledgement:
//!
//! - `Delivered` only when every record of the batch was confirmed under `acks`;
//! - `Dropped` when records were dropped by policy (oversize with `when_oversize =
//!   "drop"`) or refused for a reason of their own (too large for the broker,
//!   unknown topic without `create_topics`, invalid rendered topic, invalid
//!   record: counted as errors, not retried, so a disk buffer moves on) and the
//!   rest delivered;
//! - `Errored` when a record failed for a reason that is not its own (topic or
//!   cluster not authorized, fatal producer error) or was still undelivered at the
//!   shutdown deadline.
//!
//! Transient failures that outlive librdkafka's own retries (`message.timeout.ms`)
//! are sent again by the sink after a backoff (1 s doubling to 30 s); before that
//! the topic is looked up, so a topic that does not exist fails for good instead of
//! cycling forever. Records are never resent in a tight loop nor lost silently.
//!
//! Flow control: when librdkafka's queue (`queue.buffering.max.messages`) is full
//! the sink holds the record in hand and stops taking batches, so the sink's buffer
//! fills and its `when_full` policy applies. A broker that is down at start is not
//! an error: records queue (bounded the same way) and go out once it answers.
//!
//! Settings precedence: the sink's keys set librdkafka defaults, and the
//! `[sinks.NAME.librdkafka]` table, passed verbatim, overrides them (aliases such
//! as `request.required.acks` for `acks` included).

mod checkpoint;
mod delivery;
mod service;
mod topics;

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::config::{Check, Validate};
use crate::encoding::Encoding;
use crate::kafka::{self, Properties};
use crate::template::Template;
use crate::topology::{ComponentError, SinkContext, Task};

/// Compression codec of produced batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KafkaCompression {
    /// No compression.
    #[default]
    None,
    /// gzip.
    Gzip,
    /// snappy.
    Snappy,
    /// lz4.
    Lz4,
    /// zstd.
    Zstd,
}

impl KafkaCompression {
    fn as_str(self) -> &'static str {
        match self {
            KafkaCompression::None => "none",
            KafkaCompression::Gzip => "gzip",
            KafkaCompression::Snappy => "snappy",
            KafkaCompression::Lz4 => "lz4",
            KafkaCompression::Zstd => "zstd",
        }
    }
}

/// Broker acknowledgement level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// Every in-sync replica (required for the idempotent producer).
    #[default]
    All,
    /// The partition leader only.
    Leader,
    /// No acknowledgement: a record counts delivered once sent.
    None,
}

impl Acks {
    fn as_str(self) -> &'static str {
        match self {
            Acks::All => "all",
            Acks::Leader => "1",
            Acks::None => "0",
        }
    }
}

impl<'de> Deserialize<'de> for Acks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Acks;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"all\", \"1\" or \"0\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Acks, E> {
                match s {
                    "all" | "-1" => Ok(Acks::All),
                    "1" => Ok(Acks::Leader),
                    "0" => Ok(Acks::None),
                    _ => Err(E::invalid_value(de::Unexpected::Str(s), &self)),
                }
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Acks, E> {
                match n {
                    -1 => Ok(Acks::All),
                    1 => Ok(Acks::Leader),
                    0 => Ok(Acks::None),
                    _ => Err(E::invalid_value(de::Unexpected::Signed(n), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// What to do with a record larger than `max_message_bytes` (key + payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WhenOversize {
    /// Drop it (counted as dropped; the batch resolves `Dropped`).
    #[default]
    Drop,
    /// Cut the payload to fit (counted as truncated).
    Truncate,
}

/// `create_topics = { partitions = 3, replication_factor = 1 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTopics {
    /// Partitions of a created topic.
    #[serde(default = "one")]
    pub partitions: i32,
    /// Replication factor of a created topic.
    #[serde(default = "one")]
    pub replication_factor: i32,
}

fn one() -> i32 {
    1
}

/// A librdkafka value: TOML strings, integers, floats and booleans are accepted
/// and passed as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdValue(pub String);

impl<'de> Deserialize<'de> for RdValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RdValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RdValue, E> {
                Ok(RdValue(s.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<RdValue, E> {
                Ok(RdValue(n.to_string()))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<RdValue, E> {
                Ok(RdValue(n.to_string()))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<RdValue, E> {
                Ok(RdValue(n.to_string()))
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<RdValue, E> {
                Ok(RdValue(b.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// `[sinks.NAME] type = "kafka"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct KafkaSinkConfig {
    /// Bootstrap brokers, comma-separated `host:port`.
    pub brokers: String,
    /// Topic template: `{tag}`, `{source}`, `{tenant}`, `{field.NAME}`, static text.
    pub topic: String,
    /// Key template; absent (or rendering empty) = no key.
    #[serde(default)]
    pub key: Option<String>,
    /// Partition template rendering a number (`{bucket}`, `{field.NAME}`, digits);
    /// absent (or rendering empty) = librdkafka's partitioner.
    #[serde(default)]
    pub partition: Option<String>,
    /// Compression codec.
    #[serde(default)]
    pub compression: KafkaCompression,
    /// Acknowledgement level; `all` also enables the idempotent producer.
    #[serde(default)]
    pub acks: Acks,
    /// Largest record (key + payload) sent.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Policy for larger records.
    #[serde(default)]
    pub when_oversize: WhenOversize,
    /// librdkafka clients the topics are spread over (by topic name).
    #[serde(default = "one_producer")]
    pub producers: usize,
    /// Create missing topics (once per distinct topic) with these settings.
    #[serde(default)]
    pub create_topics: Option<CreateTopics>,
    /// Exactly-once delivery from the disk buffer through transactions (the
    /// module doc, "Exactly once").
    #[serde(default)]
    pub exactly_once: bool,
    /// Exactly-once: most events in one transaction.
    #[serde(default = "default_transaction_max_events")]
    pub transaction_max_events: usize,
    /// Exactly-once: a transaction is committed at most this long after it began.
    #[serde(default = "default_transaction_interval_ms")]
    pub transaction_interval_ms: u64,
    /// Exactly-once: the compacted topic holding each sink's last committed
    /// disk-buffer position (created when missing).
    #[serde(default = "default_checkpoint_topic")]
    pub checkpoint_topic: String,
    /// librdkafka settings, verbatim; they override the sink's defaults.
    #[serde(default)]
    pub librdkafka: BTreeMap<String, RdValue>,
}

/// Default `transaction_max_events`: high, so that time sizes a transaction
/// (the disk buffer's read-ahead bound caps it too, see the service's `txn`).
pub const DEFAULT_TRANSACTION_MAX_EVENTS: usize = 1_000_000;
/// Default `transaction_interval_ms`: long enough to amortise a commit's fixed
/// cost (the pipeline drains, then the EndTxn round trip; at 100 ms, 0.8× the
/// idempotent rate), short enough that an acknowledgement waiting for the
/// commit comes within a second.
pub const DEFAULT_TRANSACTION_INTERVAL_MS: u64 = 400;
/// Longest `transaction_interval_ms`: well under the transaction timeout.
const MAX_TRANSACTION_INTERVAL_MS: u64 = 10_000;
/// Default `checkpoint_topic`.
pub const DEFAULT_CHECKPOINT_TOPIC: &str = "sluice-checkpoints";

fn default_transaction_max_events() -> usize {
    DEFAULT_TRANSACTION_MAX_EVENTS
}

fn default_transaction_interval_ms() -> u64 {
    DEFAULT_TRANSACTION_INTERVAL_MS
}

fn default_checkpoint_topic() -> String {
    DEFAULT_CHECKPOINT_TOPIC.to_owned()
}

/// `transaction.timeout.ms` of an exactly-once sink (a librdkafka key: the
/// `librdkafka` table may change it).
pub const TRANSACTION_TIMEOUT_MS: u64 = 60_000;

/// Default `max_message_bytes`: Kafka's default record size limit.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;
/// librdkafka's upper bound for `message.max.bytes`.
const LIBRDKAFKA_MAX_MESSAGE_BYTES: usize = 1_000_000_000;
/// Longest topic name Kafka accepts.
pub const MAX_TOPIC_LEN: usize = 249;

fn one_producer() -> usize {
    1
}

/// Most librdkafka clients one sink may use.
pub const MAX_PRODUCERS: usize = 64;

fn default_max_message_bytes() -> usize {
    DEFAULT_MAX_MESSAGE_BYTES
}

/// Why `name` is not a usable Kafka topic name, if it is not.
pub fn topic_name_error(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("topic renders empty".into());
    }
    if name.len() > MAX_TOPIC_LEN {
        return Some(format!("topic is longer than {MAX_TOPIC_LEN} bytes"));
    }
    if name == "." || name == ".." {
        return Some(format!("`{name}` is not a valid topic"));
    }
    if let Some(c) = name.chars().find(|c| !topic_char(*c)) {
        return Some(format!(
            "topic `{name}` contains {c:?}; topics use letters, digits, '.', '_' and '-'"
        ));
    }
    None
}

fn topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

impl KafkaSinkConfig {
    /// librdkafka settings: the sink's defaults, then the user's table.
    pub fn properties(&self, component: &str) -> Properties {
        let mut p = Properties::new();
        p.set("bootstrap.servers", self.brokers.trim());
        p.set("client.id", format!("sluice-{component}"));
        p.set("acks", self.acks.as_str());
        p.set("enable.idempotence", (self.acks == Acks::All).to_string());
        p.set("compression.codec", self.compression.as_str());
        // librdkafka refuses a record whose key + value exceed `message.max.bytes`
        // (default 1000000): raise it when our own limit is higher.
        if self.max_message_bytes > DEFAULT_MAX_MESSAGE_BYTES {
            p.set("message.max.bytes", self.max_message_bytes.to_string());
        }
        // Brokers closing idle connections is routine, not worth a warning.
        p.set("log.connection.close", "false");
        if self.exactly_once {
            // A transaction open longer than this is aborted by the coordinator;
            // librdkafka lowers message.timeout.ms to fit under it.
            p.set("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS.to_string());
        }
        for (k, v) in &self.librdkafka {
            p.set(k, v.0.clone());
        }
        p
    }
}

impl Validate for KafkaSinkConfig {
    fn validate(&self, v: &mut Check<'_, '_>) {
        if self.brokers.split(',').any(|b| b.trim().is_empty()) {
            v.error(
                "brokers",
                "needs at least one `host:port`, comma-separated, no empty entries",
            );
        }
        match Template::parse(&self.topic, false, false) {
            Err(e) => v.error("topic", e),
            Ok(t) if t.is_static() => {
                if let Some(e) = topic_name_error(&self.topic) {
                    v.error("topic", e);
                }
            }
            Ok(_) => {
                let literal: String = self.topic.split(['{', '}']).step_by(2).collect();
                if let Some(c) = literal.chars().find(|c| !topic_char(*c)) {
                    v.error(
                        "topic",
                        format!("contains {c:?}; topics use letters, digits, '.', '_' and '-'"),
                    );
                }
            }
        }
        if let Some(key) = &self.key
            && let Err(e) = Template::parse(key, false, false)
        {
            v.error("key", e);
        }
        if let Some(partition) = &self.partition {
            match Template::parse(partition, false, false) {
                Err(e) => v.error("partition", e),
                Ok(t) if !t.is_numeric() => v.error(
                    "partition",
                    format!(
                        "`{partition}` does not render a partition number; use {{bucket}}, {{field.NAME}} or digits"
                    ),
                ),
                Ok(_) => {}
            }
        }
        if self.max_message_bytes == 0 || self.max_message_bytes > LIBRDKAFKA_MAX_MESSAGE_BYTES {
            v.error(
                "max_message_bytes",
                format!("must be between 1 and {LIBRDKAFKA_MAX_MESSAGE_BYTES}"),
            );
        }
        if !(1..=MAX_PRODUCERS).contains(&self.producers) {
            v.error(
                "producers",
                format!("must be between 1 and {MAX_PRODUCERS}"),
            );
        }
        if let Some(c) = &self.create_topics {
            if c.partitions < 1 {
                v.error("create_topics", "partitions must be at least 1");
            }
            if c.replication_factor < 1 {
                v.error("create_topics", "replication_factor must be at least 1");
            }
        }
        for (k, val) in &self.librdkafka {
            if let Err(e) = kafka::check_property(k, &val.0) {
                v.error("librdkafka", format!("`{k}`: {e}"));
            }
        }
        self.validate_exactly_once(v);
        let props = self.properties("check");
        let idempotent = props.get("enable.idempotence") == Some("true");
        let acks_all = matches!(props.get("acks"), Some("all" | "-1"));
        if idempotent && !acks_all {
            v.error("acks", "the idempotent producer needs acks = \"all\" (or set librdkafka `enable.idempotence` = false)");
        }
    }
}

impl KafkaSinkConfig {
    fn validate_exactly_once(&self, v: &mut Check<'_, '_>) {
        if self.transaction_max_events == 0 {
            v.error("transaction_max_events", "must be at least 1");
        }
        if !(1..=MAX_TRANSACTION_INTERVAL_MS).contains(&self.transaction_interval_ms) {
            v.error(
                "transaction_interval_ms",
                format!("must be between 1 and {MAX_TRANSACTION_INTERVAL_MS}"),
            );
        }
        if let Some(e) = topic_name_error(&self.checkpoint_topic) {
            v.error("checkpoint_topic", e);
        }
        if !self.exactly_once {
            return;
        }
        if self.producers != 1 {
            v.error(
                "producers",
                "exactly_once uses one transactional producer: leave producers at 1",
            );
        }
        let props = self.properties("check");
        if !matches!(props.get("acks"), Some("all" | "-1"))
            || props.get("enable.idempotence") == Some("false")
        {
            v.error(
                "exactly_once",
                "needs acks = \"all\" and the idempotent producer (librdkafka `enable.idempotence` not false)",
            );
        }
        if props.get("transactional.id").is_some() {
            v.error(
                "librdkafka",
                "`transactional.id` is set by exactly_once (from the buffer directory); remove it",
            );
        }
    }
}

/// Build the sink: create the producer (and the admin client when topics are
/// created). No network I/O happens here; a broker that is down is not an error.
pub(super) fn build(
    config: KafkaSinkConfig,
    encoding: Encoding,
    cx: SinkContext,
) -> Result<Task, ComponentError> {
    let sink = service::KafkaSink::new(config, encoding, &cx).map_err(ComponentError::Other)?;
    Ok(Box::pin(sink.run(cx)))
}

#[cfg(test)]
mod tests;
