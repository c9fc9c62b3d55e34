//! The producer: records, delivery reports to a [`Tracker`], topic handles,
//! shards, its polling thread.

use std::collections::HashMap;
use std::ffi::{CString, c_void};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::bindings as rdsys;
use rdkafka::bindings::rd_kafka_vtype_t::*;
use rdkafka::config::FromClientConfigAndContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::producer::{
    BaseProducer, DeliveryResult, Producer as _, ProducerContext, PurgeConfig,
};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::util::IntoOpaque;

use super::{ClientEvents, Context, Failure, Properties, creation_error};

/// A record to produce. The payload and key are copied by librdkafka at send.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Key; `None` lets the partitioner spread records.
    pub key: Option<&'a [u8]>,
    /// Payload.
    pub payload: &'a [u8],
    /// Record timestamp in milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
    /// Partition; `None` lets the partitioner choose.
    pub partition: Option<i32>,
}

/// Receives the delivery report of each record sent with it. Called on the
/// producer's polling thread: keep it short and never block.
pub trait Tracker: Send + Sync + 'static {
    /// The broker acknowledged the record under the configured `acks`.
    fn delivered(self: Arc<Self>);
    /// The record failed; `record` is what was sent, for a later resend.
    fn failed(self: Arc<Self>, failure: Failure, record: Record<'_>);
}

impl<T: Tracker> ProducerContext for Context<T> {
    type DeliveryOpaque = Arc<T>;

    fn delivery(&self, result: &DeliveryResult<'_>, tracker: Arc<T>) {
        match result {
            Ok(_) => tracker.delivered(),
            Err((e, msg)) => {
                let record = Record {
                    topic: msg.topic(),
                    key: msg.key(),
                    payload: msg.payload().unwrap_or_default(),
                    timestamp_ms: msg.timestamp().to_millis(),
                    partition: (msg.partition() >= 0).then_some(msg.partition()),
                };
                tracker.failed(Failure::from_error(e), record);
            }
        }
    }
}

/// Whether a topic exists, as the broker answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicState {
    /// It exists with at least one partition.
    Exists,
    /// The broker does not know it.
    Missing,
}

/// How long one poll of the delivery-report queue may block. rdkafka's `poll`
/// spins through the last sub-millisecond of each call, so a long call keeps an
/// idle producer near zero CPU (rdkafka's `ThreadedProducer`, at 100 ms, costs
/// about 0.7% of a core doing nothing). Reports are served as they arrive.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Tells the polling thread to end once the last [`Producer`] handle is gone.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// At most this many topic handles are kept; records for further topics are
/// produced through a handle made for the call (librdkafka's lookup by name).
const MAX_TOPIC_HANDLES: usize = 100_000;

/// A topic handle (`rd_kafka_topic_t`), thread-safe in librdkafka.
#[derive(Clone, Copy)]
struct TopicHandle(NonNull<rdsys::rd_kafka_topic_t>);

// SAFETY: librdkafka topic handles may be used from any thread.
unsafe impl Send for TopicHandle {}

/// The client and the handles of the topics it produced to. Producing by handle
/// matters with many topics (a topic per tenant): librdkafka's producev by *name*
/// looks the topic up with a linear scan of every topic the client knows
/// (`rd_kafka_topic_find`, a `memcmp` each): with 10,000 topics, 27% of the
/// process's CPU samples, on the sending thread.
struct Client<T: Tracker> {
    topics: Mutex<HashMap<Box<str>, TopicHandle, foldhash::fast::RandomState>>,
    producer: BaseProducer<Context<T>>,
}

impl<T: Tracker> Client<T> {
    /// The handle of `name`, and whether it is a temporary one the caller must
    /// destroy after use (the cache is full).
    fn topic(&self, name: &str) -> Result<(*mut rdsys::rd_kafka_topic_t, bool), Failure> {
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = topics.get(name) {
            return Ok((t.0.as_ptr(), false));
        }
        let invalid = Failure {
            code: RDKafkaErrorCode::InvalidTopic,
        };
        let cname = CString::new(name).map_err(|_| invalid)?;
        // SAFETY: a live client and a NUL-terminated name; NULL conf = defaults.
        let raw = unsafe {
            rdsys::rd_kafka_topic_new(
                self.producer.client().native_ptr(),
                cname.as_ptr(),
                std::ptr::null_mut(),
            )
        };
        let Some(handle) = NonNull::new(raw) else {
            // SAFETY: reads librdkafka's thread-local last error.
            let code = unsafe { rdsys::rd_kafka_last_error() };
            return Err(Failure { code: code.into() });
        };
        if topics.len() >= MAX_TOPIC_HANDLES {
            return Ok((handle.as_ptr(), true));
        }
        topics.insert(name.into(), TopicHandle(handle));
        Ok((handle.as_ptr(), false))
    }
}

impl<T: Tracker> Drop for Client<T> {
    fn drop(&mut self) {
        let topics = self.topics.get_mut().unwrap_or_else(|e| e.into_inner());
        for (_, t) in topics.drain() {
            // SAFETY: our reference from `rd_kafka_topic_new`, released once, before
            // the client itself (the `producer` field) is destroyed.
            unsafe { rdsys::rd_kafka_topic_destroy(t.0.as_ptr()) };
        }
    }
}

/// A producer whose delivery reports go to a [`Tracker`] of type `T`, served by
/// its own thread. The thread holds the client too and ends within
/// [`POLL_INTERVAL`] of the last handle's drop; whichever drops the client last
/// tears it down (a blocking call: drop handles off the async runtime).
///
/// It may spread topics over several librdkafka clients (`shards`, each topic
/// always on the same one, so per-partition order holds). One client serves
/// thousands of topics badly: its broker thread walks every partition it knows
/// on each wake-up (`rd_kafka_broker_produce_toppars`), and librdkafka puts one
/// partition in each produce request, of which an idempotent client keeps at
/// most 5 in flight per broker.
pub struct Producer<T: Tracker> {
    shards: Arc<[Arc<Client<T>>]>,
    hasher: foldhash::fast::FixedState,
    _stop: Arc<StopOnDrop>,
}

impl<T: Tracker> Clone for Producer<T> {
    fn clone(&self) -> Self {
        Producer {
            shards: self.shards.clone(),
            hasher: self.hasher.clone(),
            _stop: self._stop.clone(),
        }
    }
}

impl<T: Tracker> Producer<T> {
    /// Create `shards` clients (at least one; each starts its threads and connects
    /// in the background, so a broker that is down is not an error here).
    pub fn create(
        props: &Properties,
        events: Arc<ClientEvents>,
        shards: usize,
    ) -> Result<Self, String> {
        let component = events.component.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let mut clients = Vec::new();
        for i in 0..shards.max(1) {
            let cx = Context {
                events: events.clone(),
                _tracker: PhantomData,
            };
            let producer = BaseProducer::from_config_and_context(&props.client_config(), cx)
                .map_err(|e| creation_error(&e))?;
            let client = Arc::new(Client {
                topics: Mutex::default(),
                producer,
            });
            let (polled, stopped) = (client.clone(), stop.clone());
            let name = match shards {
                0 | 1 => format!("kafka-poll-{component}"),
                _ => format!("kafka-poll-{component}-{i}"),
            };
            std::thread::Builder::new()
                .name(name)
                .spawn(move || {
                    while !stopped.load(Ordering::Relaxed) {
                        polled.producer.poll(POLL_INTERVAL);
                    }
                })
                .map_err(|e| format!("starting the delivery report thread: {e}"))?;
            clients.push(client);
        }
        Ok(Producer {
            shards: clients.into(),
            hasher: foldhash::fast::FixedState::default(),
            _stop: Arc::new(StopOnDrop(stop)),
        })
    }

    /// The client serving `topic`.
    fn shard(&self, topic: &str) -> &Client<T> {
        let i = match self.shards.len() {
            1 => 0,
            n => (std::hash::BuildHasher::hash_one(&self.hasher, topic) % n as u64) as usize,
        };
        &self.shards[i]
    }

    /// Enqueue a record (never blocks). On error the tracker is not called.
    pub fn send(&self, record: Record<'_>, tracker: Arc<T>) -> Result<(), Failure> {
        let client = self.shard(record.topic);
        let (topic, temporary) = client.topic(record.topic)?;
        let (key_ptr, key_len) = match record.key {
            Some(k) => (k.as_ptr() as *mut c_void, k.len()),
            None => (std::ptr::null_mut(), 0),
        };
        let opaque = tracker.into_ptr();
        // SAFETY: as rdkafka's `BaseProducer::send`, with a topic handle instead of
        // a name: `topic` is a live handle of this client (cached ones live as long
        // as the client, a temporary one until after this call), payload and key
        // are copied (`F_COPY`), and `opaque` is the `Arc` that the delivery report
        // turns back into the tracker — or that we take back below on failure.
        let rc = unsafe {
            rdsys::rd_kafka_producev(
                client.producer.client().native_ptr(),
                RD_KAFKA_VTYPE_RKT,
                topic,
                RD_KAFKA_VTYPE_PARTITION,
                record.partition.unwrap_or(-1), // RD_KAFKA_PARTITION_UA
                RD_KAFKA_VTYPE_MSGFLAGS,
                rdsys::RD_KAFKA_MSG_F_COPY,
                RD_KAFKA_VTYPE_VALUE,
                record.payload.as_ptr() as *mut c_void,
                record.payload.len(),
                RD_KAFKA_VTYPE_KEY,
                key_ptr,
                key_len,
                RD_KAFKA_VTYPE_OPAQUE,
                opaque,
                RD_KAFKA_VTYPE_TIMESTAMP,
                record.timestamp_ms.unwrap_or(0),
                RD_KAFKA_VTYPE_END,
            )
        };
        if temporary {
            // SAFETY: our own reference from `rd_kafka_topic_new`, used only above.
            unsafe { rdsys::rd_kafka_topic_destroy(topic) };
        }
        if rc != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
            // SAFETY: librdkafka did not take the message, so the reference is ours.
            drop(unsafe { Arc::<T>::from_ptr(opaque) });
            return Err(Failure { code: rc.into() });
        }
        Ok(())
    }

    /// The first client (a transactional producer has only one).
    pub(super) fn native(&self) -> *mut rdsys::rd_kafka_t {
        self.shards[0].producer.client().native_ptr()
    }

    /// Drop every queued and in-flight record; their reports arrive as
    /// [`FailureClass::Purged`]. Never blocks.
    pub fn purge(&self) {
        for c in self.shards.iter() {
            c.producer.purge(PurgeConfig::default().queue().inflight());
        }
    }

    /// Records enqueued or in flight, not yet reported.
    pub fn queued(&self) -> i32 {
        self.shards
            .iter()
            .map(|c| c.producer.in_flight_count())
            .sum()
    }

    /// Send everything queued now, ignoring linger, and wait up to `timeout` for
    /// it to be reported. Blocking. Returns whether the queue emptied.
    pub fn flush_blocking(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut all = true;
        for c in self.shards.iter() {
            let left = deadline.saturating_duration_since(Instant::now());
            let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
            // rdkafka's own flush loops on `rd_kafka_flush(0)`, which lets linger
            // apply between its calls; one call with the real timeout keeps flushing.
            // SAFETY: the pointer is a live client owned by `self.shards`; with the
            // event API in use, rd_kafka_flush only waits (its polling thread serves
            // the reports).
            let rc = unsafe { rdsys::rd_kafka_flush(c.producer.client().native_ptr(), ms) };
            all &= rc == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR;
        }
        all
    }

    /// Ask the cluster for metadata: the number of brokers it lists. Blocking.
    pub fn probe_blocking(&self, timeout: Duration) -> Result<usize, String> {
        let md = self.shards[0]
            .producer
            .client()
            .fetch_metadata(None, timeout)
            .map_err(|e| e.to_string())?;
        Ok(md.brokers().len())
    }

    /// Whether `topic` exists. Blocking; `Err` when the cluster did not answer.
    pub fn topic_state_blocking(
        &self,
        topic: &str,
        timeout: Duration,
    ) -> Result<TopicState, String> {
        let md = self
            .shard(topic)
            .producer
            .client()
            .fetch_metadata(Some(topic), timeout)
            .map_err(|e| e.to_string())?;
        let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
            return Ok(TopicState::Missing);
        };
        match t.error().map(RDKafkaErrorCode::from) {
            None if !t.partitions().is_empty() => Ok(TopicState::Exists),
            None
            | Some(RDKafkaErrorCode::UnknownTopicOrPartition)
            | Some(RDKafkaErrorCode::UnknownTopic)
            | Some(RDKafkaErrorCode::InvalidTopic) => Ok(TopicState::Missing),
            Some(other) => Err(other.to_string()),
        }
    }
}
