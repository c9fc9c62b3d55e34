//! Transactions of a [`Producer`] (librdkafka's transactional producer) and the
//! read of a checkpoint record with `isolation.level = read_committed`.
//!
//! A transactional producer has a single client (`transactional.id` names one
//! producer), so these calls use the producer's only shard. Every call here
//! blocks (on the transaction coordinator): run them on `spawn_blocking`.
//!
//! Errors keep librdkafka's classification ([`TxnError`]): retriable (call
//! again), abortable (abort the transaction, then go on), fatal (the client is
//! unusable; `fenced` when a newer producer with the same id took over).

use std::ffi::CStr;
use std::fmt;
use std::time::{Duration, Instant};

use rdkafka::Offset;
use rdkafka::TopicPartitionList;
use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message as _;

use super::{Producer, Properties, Tracker, creation_error};

/// A failed transaction call, as librdkafka classified it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnError {
    code: RDKafkaErrorCode,
    /// The call may be made again.
    pub retriable: bool,
    /// The transaction must be aborted; the producer stays usable.
    pub abortable: bool,
    /// The producer is unusable.
    pub fatal: bool,
    message: String,
}

impl TxnError {
    /// A newer producer with the same `transactional.id` fenced this one.
    pub fn fenced(&self) -> bool {
        use RDKafkaErrorCode as C;
        matches!(
            self.code,
            C::Fenced | C::ProducerFenced | C::InvalidProducerEpoch
        )
    }

    /// A failure of our own around a call (it did not run): fatal, so the
    /// producer is created again.
    pub fn other(message: impl Into<String>) -> TxnError {
        TxnError {
            code: RDKafkaErrorCode::Fail,
            retriable: false,
            abortable: false,
            fatal: true,
            message: message.into(),
        }
    }

    /// librdkafka's error name (`INVALID_TXN_STATE`, `_FENCED`...).
    pub fn code_name(&self) -> String {
        format!("{:?}", self.code)
    }

    /// Take an `rd_kafka_error_t` (destroyed here); `None` for no error.
    ///
    /// # Safety
    /// `e` is null or an error object returned by librdkafka, owned by the caller.
    unsafe fn take(e: *mut rdsys::rd_kafka_error_t) -> Option<TxnError> {
        if e.is_null() {
            return None;
        }
        // SAFETY: a live error object (caller), destroyed once at the end.
        unsafe {
            let code: RDKafkaErrorCode = rdsys::rd_kafka_error_code(e).into();
            let message = CStr::from_ptr(rdsys::rd_kafka_error_string(e))
                .to_string_lossy()
                .into_owned();
            let err = TxnError {
                code,
                retriable: rdsys::rd_kafka_error_is_retriable(e) != 0,
                abortable: rdsys::rd_kafka_error_txn_requires_abort(e) != 0,
                fatal: rdsys::rd_kafka_error_is_fatal(e) != 0,
                message,
            };
            rdsys::rd_kafka_error_destroy(e);
            Some(err)
        }
    }
}

impl fmt::Display for TxnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?})", self.message, self.code)
    }
}

fn ms(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

impl<T: Tracker> Producer<T> {
    /// `init_transactions`: register `transactional.id` with the coordinator,
    /// fencing any older producer with the same id and aborting its open
    /// transaction. Blocking.
    pub fn init_transactions_blocking(&self, timeout: Duration) -> Result<(), TxnError> {
        // SAFETY: a live client of this producer.
        let e = unsafe { rdsys::rd_kafka_init_transactions(self.native(), ms(timeout)) };
        // SAFETY: returned by librdkafka, ours.
        unsafe { TxnError::take(e) }.map_or(Ok(()), Err)
    }

    /// Begin a transaction (local, does not block on the network).
    pub fn begin_transaction(&self) -> Result<(), TxnError> {
        // SAFETY: a live client of this producer.
        let e = unsafe { rdsys::rd_kafka_begin_transaction(self.native()) };
        // SAFETY: returned by librdkafka, ours.
        unsafe { TxnError::take(e) }.map_or(Ok(()), Err)
    }

    /// Commit the open transaction: flushes its records, then ends it. Blocking.
    pub fn commit_transaction_blocking(&self, timeout: Duration) -> Result<(), TxnError> {
        // SAFETY: a live client; its polling thread serves the delivery reports
        // while this waits.
        let e = unsafe { rdsys::rd_kafka_commit_transaction(self.native(), ms(timeout)) };
        // SAFETY: returned by librdkafka, ours.
        unsafe { TxnError::take(e) }.map_or(Ok(()), Err)
    }

    /// `send_offsets_to_transaction`: commit `offsets` (topic, partition, next
    /// offset to read) for consumer group `group_id` as part of the open
    /// transaction, so they are committed if and only if it is. The group
    /// metadata is made from the group id alone (no member id or generation:
    /// the broker then checks the group, not the member). Blocking.
    pub fn send_offsets_to_transaction_blocking(
        &self,
        group_id: &str,
        offsets: &[(String, i32, i64)],
        timeout: Duration,
    ) -> Result<(), TxnError> {
        let mut tpl = TopicPartitionList::new();
        for (topic, partition, next) in offsets {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*next))
                .map_err(|e| TxnError::other(format!("offset list: {e}")))?;
        }
        let group = std::ffi::CString::new(group_id)
            .map_err(|_| TxnError::other("a group.id with a NUL byte"))?;
        // SAFETY: a valid C string; the metadata is destroyed below.
        let meta = unsafe { rdsys::rd_kafka_consumer_group_metadata_new(group.as_ptr()) };
        if meta.is_null() {
            return Err(TxnError::other(
                "librdkafka could not make the group metadata",
            ));
        }
        // SAFETY: a live client, a live list and metadata (the call copies them).
        let e = unsafe {
            rdsys::rd_kafka_send_offsets_to_transaction(self.native(), tpl.ptr(), meta, ms(timeout))
        };
        // SAFETY: made above, destroyed once.
        unsafe { rdsys::rd_kafka_consumer_group_metadata_destroy(meta) };
        // SAFETY: returned by librdkafka, ours.
        unsafe { TxnError::take(e) }.map_or(Ok(()), Err)
    }

    /// Abort the open transaction (its records are purged or marked aborted).
    /// Blocking.
    pub fn abort_transaction_blocking(&self, timeout: Duration) -> Result<(), TxnError> {
        // SAFETY: a live client of this producer.
        let e = unsafe { rdsys::rd_kafka_abort_transaction(self.native(), ms(timeout)) };
        // SAFETY: returned by librdkafka, ours.
        unsafe { TxnError::take(e) }.map_or(Ok(()), Err)
    }
}

/// The value of the last record keyed `key` in partition 0 of `topic` that a
/// `read_committed` reader sees, reading backwards from the end in growing
/// windows (the topic may be shared by many producers). `Ok(None)`: no such
/// record. Blocking, bounded by `timeout`.
pub fn read_last_committed_blocking(
    props: &Properties,
    topic: &str,
    key: &[u8],
    timeout: Duration,
) -> Result<Option<Vec<u8>>, String> {
    let deadline = Instant::now() + timeout;
    let mut config = props.client_config();
    config
        .set("group.id", "sluice-checkpoint-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest");
    for k in [
        "transactional.id",
        "transaction.timeout.ms",
        "enable.idempotence",
        "acks",
        "linger.ms",
        "compression.codec",
        "message.timeout.ms",
    ] {
        config.remove(k);
    }
    let consumer: BaseConsumer = config.create().map_err(|e| creation_error(&e))?;
    let (low, high) = consumer
        .fetch_watermarks(topic, 0, timeout)
        .map_err(|e| format!("reading the end of `{topic}`: {e}"))?;
    let mut end = high;
    let mut window = 10_000i64;
    while end > low {
        let start = (end - window).max(low);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Offset(start))
            .map_err(|e| e.to_string())?;
        consumer.assign(&tpl).map_err(|e| e.to_string())?;
        let mut found = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("timed out reading `{topic}`"));
            }
            match consumer.poll(left.min(Duration::from_millis(200))) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => return Err(format!("reading `{topic}`: {e}")),
                Some(Ok(m)) => {
                    if m.offset() >= end {
                        break;
                    }
                    if m.key() == Some(key) {
                        found = Some(m.payload().unwrap_or_default().to_vec());
                    }
                }
            }
        }
        if found.is_some() {
            return Ok(found);
        }
        end = start;
        window = window.saturating_mul(8);
    }
    Ok(None)
}
