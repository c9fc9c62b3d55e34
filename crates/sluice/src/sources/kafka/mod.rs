//! `type = "kafka"`: records consumed from Kafka topics by a consumer group.
//!
//! # Data path
//! One librdkafka consumer, polled by a thread of its own ([`service`]). Each
//! poll round (up to [`service::MAX_ROUND_RECORDS`] records or
//! [`service::MAX_ROUND_BYTES`] bytes) becomes one batch per partition, in offset
//! order: value → body, record timestamp → event time (the poll time when the
//! record has none), and the fields `kafka.topic`, `kafka.partition`,
//! `kafka.offset`, `kafka.key` (str when UTF-8, bin otherwise, nil when absent),
//! `kafka.timestamp` (milliseconds) and `kafka.headers` (a map). A full sink buffer
//! blocks the thread, which stops fetching (librdkafka's own queue is bounded by
//! `queued.max.messages.kbytes`).
//!
//! # Offsets and acknowledgements
//! Offsets are committed only when acknowledgements allow: each batch carries a
//! tracked token; a per-partition [`tracker`] turns resolutions (in any order)
//! into a commit point — offset N+1 only once every batch up to N in that
//! partition resolved `Delivered` (or `Dropped` by a sink's policy, counted there).
//! Commit points are committed every [`service::COMMIT_INTERVAL`] and at stop.
//! An `Errored` batch is read again: the thread seeks its partition back to the
//! batch's first offset (later batches of that partition may be delivered twice).
//!
//! # Rebalances
//! On revoke the thread stops taking from the revoked partitions (records of them
//! still in hand are dropped, not sent), waits up to [`service::REVOKE_WAIT`] for
//! their batches in flight to resolve, and commits what resolved before the
//! partitions go; the rest is re-read by the new owner (at-least-once, counted as
//! `rebalance_rereads` in the log line). At stop the consumer leaves the group the
//! same way, after its outputs are closed so sinks flush what they hold.
//!
//! # Lag
//! Every [`service::LAG_INTERVAL`] the consumer lag per partition (high watermark
//! minus position) is logged at INFO, one line for all partitions.

mod service;
pub mod tracker;

pub use service::{
    FIELD_HEADERS, FIELD_KEY, FIELD_OFFSET, FIELD_PARTITION, FIELD_TIMESTAMP, FIELD_TOPIC,
};

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::{Check, Validate};
use crate::kafka::{self, Properties};
use crate::sinks::kafka::RdValue;
use crate::topology::{ComponentError, SourceContext, Task};

/// Where a partition without a committed offset of the group begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// Only committed offsets are used: a partition without one is not consumed
    /// (an error is logged naming it).
    Committed,
    /// The oldest record kept.
    #[default]
    Earliest,
    /// Records produced from now on.
    Latest,
}

impl StartFrom {
    fn reset_policy(self) -> &'static str {
        match self {
            StartFrom::Committed => "error",
            StartFrom::Earliest => "earliest",
            StartFrom::Latest => "latest",
        }
    }
}

/// `[sources.NAME] type = "kafka"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct KafkaSourceConfig {
    /// Bootstrap brokers, comma-separated `host:port`.
    pub brokers: String,
    /// Topic names; a leading `^` makes a regex (librdkafka subscribe semantics).
    pub topics: Vec<String>,
    /// Consumer group.
    pub group_id: String,
    /// Where a partition without a committed offset begins.
    #[serde(default)]
    pub start_from: StartFrom,
    /// librdkafka settings, verbatim; they override the source's defaults.
    #[serde(default)]
    pub librdkafka: BTreeMap<String, RdValue>,
}

impl KafkaSourceConfig {
    /// librdkafka settings: the source's defaults, then the user's table.
    pub fn properties(&self, component: &str) -> Properties {
        let mut p = Properties::new();
        p.set("bootstrap.servers", self.brokers.trim());
        p.set("client.id", format!("sluice-{component}"));
        p.set("group.id", self.group_id.clone());
        // Offsets are ours to commit, after acknowledgement.
        p.set("enable.auto.commit", "false");
        p.set("enable.auto.offset.store", "false");
        p.set("auto.offset.reset", self.start_from.reset_policy());
        p.set("enable.partition.eof", "false");
        p.set("log.connection.close", "false");
        // librdkafka pauses a partition's fetching for this long once its local
        // queue is full (default 1 s): a consumer that empties the queue faster
        // than that sat idle for most of each second (5.5 s instead of 2.2 s for
        // 1M records in bench/archive.sh). Checking again after 10 ms costs nothing.
        p.set("fetch.queue.backoff.ms", "10");
        for (k, v) in &self.librdkafka {
            p.set(k, v.0.clone());
        }
        p
    }
}

impl Validate for KafkaSourceConfig {
    fn validate(&self, v: &mut Check<'_, '_>) {
        if self.brokers.split(',').any(|b| b.trim().is_empty()) {
            v.error(
                "brokers",
                "needs at least one `host:port`, comma-separated, no empty entries",
            );
        }
        if self.topics.is_empty() {
            v.error("topics", "needs at least one topic name or ^regex");
        }
        for t in &self.topics {
            if t.is_empty() || t == "^" {
                v.error("topics", "a topic name or ^regex may not be empty");
            } else if !t.starts_with('^')
                && let Some(e) = crate::sinks::kafka::topic_name_error(t)
            {
                v.error("topics", e);
            }
        }
        if self.group_id.trim().is_empty() {
            v.error("group_id", "may not be empty");
        }
        for (k, val) in &self.librdkafka {
            if let Err(e) = kafka::check_property(k, &val.0) {
                v.error("librdkafka", format!("`{k}`: {e}"));
            } else if matches!(
                k.as_str(),
                "enable.auto.commit" | "enable.auto.offset.store"
            ) && val.0 != "false"
            {
                v.error(
                    "librdkafka",
                    format!("`{k}` must stay false: offsets are committed after acknowledgement"),
                );
            }
        }
    }
}

/// Build the source: create the consumer and subscribe (no network I/O here; a
/// broker that is down is not an error, records come once it answers).
pub(super) fn build(config: KafkaSourceConfig, cx: SourceContext) -> Result<Task, ComponentError> {
    let source = service::KafkaSource::new(&config, &cx).map_err(ComponentError::Other)?;
    Ok(Box::pin(source.run(cx)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_settings_override_defaults_but_not_manual_commits() {
        let c: KafkaSourceConfig = toml_edit::de::from_str(
            r#"
brokers = "k:9092"
topics = ["a", "^logs-.*"]
group_id = "g"
start_from = "latest"
[librdkafka]
"fetch.min.bytes" = 1000
"#,
        )
        .unwrap();
        let p = c.properties("in");
        assert_eq!(p.get("auto.offset.reset"), Some("latest"));
        assert_eq!(p.get("fetch.min.bytes"), Some("1000"));
        assert_eq!(p.get("enable.auto.commit"), Some("false"));
        assert_eq!(p.get("group.id"), Some("g"));
        assert_eq!(p.get("fetch.queue.backoff.ms"), Some("10"));
    }
}
