//! A group consumer for the Kafka source, hiding rdkafka behind plain types.
//!
//! [`Consumer`] is polled by one thread of its owner (rebalance callbacks run on
//! that thread, inside [`Consumer::poll`], so they may block for a bounded time).
//! Offsets are never committed automatically (`enable.auto.commit = false`,
//! `enable.auto.offset.store = false`): the owner commits exactly what its
//! acknowledgements allow, through [`Consumer::commit`] or the offsets its
//! [`Rebalance::revoked`] hook returns, committed synchronously before the
//! partitions go.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use proto::forward::PairsWriter;
use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::client::ClientContext;
use rdkafka::config::{FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers as _, Message as _};

use super::{ClientEvents, Context, Properties, creation_error};

/// Field names of a consumed record's metadata: the topic.
pub const FIELD_TOPIC: &str = "kafka.topic";
/// Partition number.
pub const FIELD_PARTITION: &str = "kafka.partition";
/// Offset.
pub const FIELD_OFFSET: &str = "kafka.offset";
/// Key (str, bin or nil).
pub const FIELD_KEY: &str = "kafka.key";
/// Record timestamp, milliseconds since the epoch.
pub const FIELD_TIMESTAMP: &str = "kafka.timestamp";
/// Headers, a map.
pub const FIELD_HEADERS: &str = "kafka.headers";

/// One partition: topic and number.
pub type Partition = (Arc<str>, i32);

/// One consumed record: its metadata, with its value and structured fields
/// (`kafka.*`, written by [`Consumer::poll_into`]) as ranges of the round's arena.
#[derive(Debug, Clone)]
pub struct Message {
    /// Topic (shared between the records of a round).
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Record timestamp in milliseconds since the epoch, when known.
    pub timestamp_ms: Option<i64>,
    /// The value's bytes in the arena (empty for a null value).
    pub payload: Range<usize>,
    /// The fields' msgpack pairs in the arena, and their count.
    pub fields: (Range<usize>, u32),
}

/// Records polled in one round: their values and fields are written one after the
/// other into one arena, so a round costs a few allocations, not several per record.
#[derive(Debug, Default)]
pub struct Round {
    /// Values and fields of every record, back to back.
    pub arena: BytesMut,
    /// The records, in poll order.
    pub records: Vec<Message>,
}

/// What the owner does on a rebalance. Called on the polling thread.
pub trait Rebalance: Send + Sync + 'static {
    /// These partitions are now ours.
    fn assigned(&self, partitions: &[Partition]);
    /// These partitions are going: stop taking from them, wait (bounded) for what
    /// is in flight, and return the offsets to commit before they go.
    fn revoked(&self, partitions: &[Partition]) -> Vec<(Partition, i64)>;
}

struct ConsumerCx {
    base: Context<()>,
    hooks: Arc<dyn Rebalance>,
}

impl ClientContext for ConsumerCx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.base.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.base.error(error, reason);
    }

    fn stats_raw(&self, statistics: &[u8]) {
        self.base.stats_raw(statistics);
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<Partition> {
    tpl.elements()
        .iter()
        .map(|e| (Arc::from(e.topic()), e.partition()))
        .collect()
}

fn offsets_list(offsets: &[(Partition, i64)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in offsets {
        // Only fails for an invalid offset value, which an i64 cannot be.
        let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset));
    }
    tpl
}

impl ConsumerContext for ConsumerCx {
    fn pre_rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        if let rdkafka::consumer::Rebalance::Revoke(tpl) = rebalance {
            let offsets = self.hooks.revoked(&partitions_of(tpl));
            if !offsets.is_empty()
                && let Err(e) = consumer.commit(&offsets_list(&offsets), CommitMode::Sync)
            {
                tracing::warn!(
                    component_id = &*self.base.events.component,
                    error = %e,
                    "Committing the offsets of revoked partitions failed; their new owner re-reads from the last commit."
                );
            }
        }
    }

    fn post_rebalance(
        &self,
        _consumer: &BaseConsumer<Self>,
        rebalance: &rdkafka::consumer::Rebalance<'_>,
    ) {
        if let rdkafka::consumer::Rebalance::Assign(tpl) = rebalance {
            self.hooks.assigned(&partitions_of(tpl));
        }
    }
}

/// A group consumer.
pub struct Consumer {
    inner: BaseConsumer<ConsumerCx>,
}

impl Consumer {
    /// Create the client (connects in the background) and subscribe to `topics`
    /// (a leading `^` makes a regex, as librdkafka's subscribe).
    pub fn create(
        props: &Properties,
        events: Arc<ClientEvents>,
        hooks: Arc<dyn Rebalance>,
        topics: &[String],
    ) -> Result<Self, String> {
        let cx = ConsumerCx {
            base: Context {
                events,
                _tracker: std::marker::PhantomData,
            },
            hooks,
        };
        let inner = BaseConsumer::from_config_and_context(&props.client_config(), cx)
            .map_err(|e| creation_error(&e))?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        inner
            .subscribe(&names)
            .map_err(|e| format!("subscribing to {topics:?}: {e}"))?;
        Ok(Consumer { inner })
    }

    /// Wait up to `timeout` for a record and append it to `round`: `Some(Ok(()))`
    /// when one was added. Rebalance callbacks run in here. `Err` is a consumer
    /// error (logged by the caller, consumption goes on).
    ///
    /// The record's fields are `kafka.topic`, `kafka.partition`, `kafka.offset`,
    /// `kafka.key` (str, bin or nil), `kafka.timestamp` (ms or nil) and
    /// `kafka.headers` (a map; a null header value is empty).
    pub fn poll_into(&self, timeout: Duration, round: &mut Round) -> Option<Result<(), String>> {
        let m = match self.inner.poll(timeout)? {
            Ok(m) => m,
            Err(e) => return Some(Err(e.to_string())),
        };
        // Consecutive records of one topic share its name.
        let topic = match round.records.last() {
            Some(prev) if &*prev.topic == m.topic() => prev.topic.clone(),
            _ => Arc::from(m.topic()),
        };
        let arena = &mut round.arena;
        let start = arena.len();
        arena.extend_from_slice(m.payload().unwrap_or_default());
        let payload = start..arena.len();
        let timestamp_ms = m.timestamp().to_millis();
        let mut w = PairsWriter::new(arena);
        w.str(FIELD_TOPIC, m.topic());
        w.int(FIELD_PARTITION, i64::from(m.partition()));
        w.int(FIELD_OFFSET, m.offset());
        match m.key() {
            Some(k) => w.text(FIELD_KEY, k),
            None => w.nil(FIELD_KEY),
        }
        match timestamp_ms {
            Some(ms) => w.int(FIELD_TIMESTAMP, ms),
            None => w.nil(FIELD_TIMESTAMP),
        }
        let headers = m.headers();
        let entries = headers
            .iter()
            .flat_map(|h| h.iter())
            .map(|h| (h.key, h.value.unwrap_or_default()));
        w.text_map(FIELD_HEADERS, entries);
        let fields = w.finish();
        round.records.push(Message {
            topic,
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms,
            payload,
            fields,
        });
        Some(Ok(()))
    }

    /// Commit `offsets` (the next offset to read, per partition).
    pub fn commit(&self, offsets: &[(Partition, i64)], sync: bool) -> Result<(), String> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mode = if sync {
            CommitMode::Sync
        } else {
            CommitMode::Async
        };
        self.inner
            .commit(&offsets_list(offsets), mode)
            .map_err(|e| e.to_string())
    }

    /// Make the next poll of `partition` return `offset` again.
    pub fn seek(&self, partition: &Partition, offset: i64) -> Result<(), String> {
        self.inner
            .seek(
                &partition.0,
                partition.1,
                Offset::Offset(offset),
                Duration::from_secs(5),
            )
            .map_err(|e| e.to_string())
    }

    /// Per assigned partition: the next offset to read and the high watermark
    /// (asks the brokers: blocking, up to `timeout` per partition).
    pub fn lag_blocking(&self, timeout: Duration) -> Vec<(Partition, i64, i64)> {
        let Ok(positions) = self.inner.position() else {
            return Vec::new();
        };
        positions
            .elements()
            .iter()
            .filter_map(|e| {
                let pos = match e.offset() {
                    Offset::Offset(o) => o,
                    _ => return None,
                };
                let (_, high) = self
                    .inner
                    .fetch_watermarks(e.topic(), e.partition(), timeout)
                    .ok()?;
                Some(((Arc::from(e.topic()), e.partition()), pos, high))
            })
            .collect()
    }

    /// Leave the group (revoking every partition, so the revoke hook commits).
    pub fn close_blocking(&self) {
        self.inner.unsubscribe();
        // Serve the revoke callback that unsubscribing triggers.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            match self.inner.assignment() {
                Ok(a) if a.count() == 0 => break,
                Err(_) => break,
                Ok(_) => {
                    let _ = self.inner.poll(Duration::from_millis(100));
                }
            }
        }
    }
}
