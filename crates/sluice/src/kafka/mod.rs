//! Kafka client plumbing: the only module that imports `rdkafka`.
//!
//! It hides the library behind a few plain types so that components (the Kafka
//! sink now, the Kafka source later) deal with records, delivery outcomes and
//! error classes, never with rdkafka generics or FFI:
//!
//! - [`Properties`]: librdkafka settings, our defaults first, the user's
//!   `[..librdkafka]` table last so it always wins, aliases included
//!   (`request.required.acks` replaces our `acks`).
//! - [`Producer`]: a producer with its own thread polling delivery reports, whose
//!   reports are handed to a [`Tracker`] per record, the `Arc` given at send time.
//! - [`Failure`] and [`FailureClass`]: what a delivery or enqueue error means for
//!   the caller (retry later, fail for good, or purged at shutdown).
//! - [`Admin`]: topic creation. ACL calls are deliberately absent: some brokers
//!   answer CreateAcls in a way that aborts librdkafka, taking the process down.
//!
//! Blocking calls (`flush`, metadata) are plain functions named `*_blocking`: the
//! caller runs them on `spawn_blocking`, never on the async worker threads.
//! librdkafka's own log lines and global errors are routed to `tracing` with the
//! component id, errors rate-limited.

pub mod consumer;

use std::collections::HashMap;
use std::ffi::{CString, c_void};
use std::fmt;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::bindings as rdsys;
use rdkafka::bindings::rd_kafka_vtype_t::*;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, FromClientConfigAndContext, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{
    BaseProducer, DeliveryResult, Producer as _, ProducerContext, PurgeConfig,
};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::util::IntoOpaque;
use tracing::{debug, error, info, warn};

use crate::logging::{KeyedRateLimit, RateLimit};

/// How often a repeated problem is logged at most.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// librdkafka settings in application order: later entries win.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    entries: Vec<(String, String)>,
}

/// Names librdkafka treats as the same setting; setting one must replace the others.
const ALIASES: &[&[&str]] = &[
    &["bootstrap.servers", "metadata.broker.list"],
    &["acks", "request.required.acks"],
    &["compression.codec", "compression.type"],
    &["linger.ms", "queue.buffering.max.ms"],
    &["message.timeout.ms", "delivery.timeout.ms"],
    &["retries", "message.send.max.retries"],
    &["retry.backoff.ms"],
];

fn same_setting(a: &str, b: &str) -> bool {
    a == b
        || ALIASES
            .iter()
            .any(|group| group.contains(&a) && group.contains(&b))
}

impl Properties {
    /// Empty set.
    pub fn new() -> Self {
        Properties::default()
    }

    /// Set `key`, replacing it and its aliases.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.entries.retain(|(k, _)| !same_setting(k, key));
        self.entries.push((key.to_owned(), value.into()));
    }

    /// The value of `key` or of one of its aliases.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| same_setting(k, key))
            .map(|(_, v)| v.as_str())
    }

    /// All entries, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        for (k, v) in &self.entries {
            c.set(k, v);
        }
        c
    }
}

/// Whether librdkafka accepts `key = value` (pure: no client is created, no I/O).
pub fn check_property(key: &str, value: &str) -> Result<(), String> {
    let mut c = ClientConfig::new();
    c.set(key, value);
    match c.create_native_config() {
        Ok(_) => Ok(()),
        Err(KafkaError::ClientConfig(_, desc, _, _)) => {
            Err(lower_first(desc.trim_end_matches('.')))
        }
        Err(e) => Err(e.to_string()),
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// What an error means for the records it hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// The broker or network may recover: send the record again after a backoff.
    Retriable,
    /// The record can never be accepted as it is (too large, not authorized,
    /// unknown topic, invalid): fail it.
    Permanent,
    /// Removed from the producer's queue at shutdown: not delivered, not retried.
    Purged,
}

/// One delivery or enqueue error.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    code: RDKafkaErrorCode,
}

impl Failure {
    /// What to do about it.
    pub fn class(&self) -> FailureClass {
        use RDKafkaErrorCode as C;
        match self.code {
            C::PurgeQueue | C::PurgeInflight => FailureClass::Purged,
            C::MessageSizeTooLarge
            | C::InvalidMessageSize
            | C::MessageBatchTooLarge
            | C::InvalidMessage
            | C::BadMessage
            | C::InvalidRecord
            | C::InvalidTopic
            | C::UnknownTopic
            | C::UnknownTopicOrPartition
            | C::UnknownPartition
            | C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed
            | C::InvalidRequiredAcks
            | C::UnsupportedForMessageFormat
            | C::UnsupportedCompressionType
            | C::PolicyViolation
            | C::InvalidArgument
            | C::InvalidTimestamp
            | C::Fatal => FailureClass::Permanent,
            _ => FailureClass::Retriable,
        }
    }

    /// A permanent refusal about this record itself (size, contents, topic),
    /// not about the producer's rights or settings: the record is dropped and
    /// counted rather than failing its batch.
    pub fn is_record_specific(&self) -> bool {
        use RDKafkaErrorCode as C;
        self.class() == FailureClass::Permanent
            && !matches!(
                self.code,
                C::TopicAuthorizationFailed
                    | C::ClusterAuthorizationFailed
                    | C::TransactionalIdAuthorizationFailed
                    | C::InvalidRequiredAcks
                    | C::UnsupportedForMessageFormat
                    | C::UnsupportedCompressionType
                    | C::Fatal
            )
    }

    /// Whether the producer's local queue was full (hold the record, try later).
    pub fn is_queue_full(&self) -> bool {
        self.code == RDKafkaErrorCode::QueueFull
    }

    fn from_error(e: &KafkaError) -> Failure {
        Failure {
            code: e.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Failure({:?})", self.code)
    }
}

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

/// State shared by a client's callbacks and its owner.
#[derive(Debug)]
pub struct ClientEvents {
    component: Arc<str>,
    brokers_down: AtomicBool,
    fatal: AtomicBool,
    errors: RateLimit,
    /// librdkafka's own warnings, one line per facility per interval: a broken
    /// TLS or SASL setup makes it warn on every reconnect attempt.
    warnings: KeyedRateLimit,
}

impl ClientEvents {
    /// Events of the client of component `component`.
    pub fn new(component: Arc<str>) -> Arc<Self> {
        Arc::new(ClientEvents {
            component,
            brokers_down: AtomicBool::new(false),
            fatal: AtomicBool::new(false),
            errors: RateLimit::new(LOG_INTERVAL),
            warnings: KeyedRateLimit::new(LOG_INTERVAL),
        })
    }

    /// Whether librdkafka last reported every broker down (cleared by the owner
    /// when a delivery succeeds again).
    pub fn brokers_down(&self) -> bool {
        self.brokers_down.load(Ordering::Relaxed)
    }

    /// Clear the all-brokers-down state; returns whether it was set.
    pub fn clear_brokers_down(&self) -> bool {
        self.brokers_down.swap(false, Ordering::Relaxed)
    }

    /// Whether the client hit a fatal error (idempotence broken): it sends no more.
    pub fn fatal(&self) -> bool {
        self.fatal.load(Ordering::Relaxed)
    }
}

struct Context<T> {
    events: Arc<ClientEvents>,
    _tracker: PhantomData<fn(T)>,
}

impl<T> ClientContext for Context<T> {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let id = &*self.events.component;
        // librdkafka calls connection refusals "errors"; for us ERROR means data loss,
        // which this layer cannot judge, so its lines are warnings at most.
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                if self.events.warnings.allow(fac) {
                    warn!(target: "librdkafka", component_id = id, facility = fac, "{message}")
                } else {
                    debug!(target: "librdkafka", component_id = id, facility = fac, "{message}")
                }
            }
            RDKafkaLogLevel::Notice => {
                info!(target: "librdkafka", component_id = id, facility = fac, "{message}")
            }
            RDKafkaLogLevel::Info | RDKafkaLogLevel::Debug => {
                debug!(target: "librdkafka", component_id = id, facility = fac, "{message}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let ev = &self.events;
        let id = &*ev.component;
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown) => {
                if !ev.brokers_down.swap(true, Ordering::Relaxed) {
                    warn!(
                        component_id = id,
                        reason, "Kafka brokers unreachable; events stay queued until they answer."
                    );
                }
            }
            Some(RDKafkaErrorCode::Fatal) => {
                ev.fatal.store(true, Ordering::Relaxed);
                error!(
                    component_id = id,
                    reason, "Kafka producer hit a fatal error; it sends no more."
                );
            }
            // librdkafka logs these itself (facility FAIL), rate-limited.
            Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::Resolve) => {
                debug!(component_id = id, reason, "Kafka connection failed.");
            }
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed) => {
                if let Some(suppressed) = ev.errors.allow() {
                    error!(
                        component_id = id,
                        reason,
                        suppressed,
                        "Kafka authentication failed; check the SASL/TLS settings."
                    );
                }
            }
            _ => {
                if let Some(suppressed) = ev.errors.allow() {
                    warn!(component_id = id, error = %error, reason, suppressed, "Kafka client error.");
                }
            }
        }
    }
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

fn creation_error(e: &KafkaError) -> String {
    match e {
        KafkaError::ClientConfig(_, desc, key, value) => {
            format!(
                "librdkafka rejects `{key}` = `{value}`: {}",
                lower_first(desc.trim_end_matches('.'))
            )
        }
        KafkaError::ClientCreation(msg) => lower_first(msg.trim_end_matches('.')),
        other => other.to_string(),
    }
}

/// Why a topic could not be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateError {
    /// Whether trying again cannot help (invalid name, not authorized, policy).
    pub permanent: bool,
    /// What the broker or client said.
    pub reason: String,
}

/// Admin operations: topic creation only.
pub struct Admin {
    inner: AdminClient<Context<()>>,
}

impl Admin {
    /// Create the admin client (starts its thread; no network I/O yet).
    pub fn create(props: &Properties, events: Arc<ClientEvents>) -> Result<Self, String> {
        let cx = Context {
            events,
            _tracker: PhantomData,
        };
        let inner = AdminClient::from_config_and_context(&props.client_config(), cx)
            .map_err(|e| creation_error(&e))?;
        Ok(Admin { inner })
    }

    /// Create several topics in one request; returns those that exist now
    /// (created, or already there). Failures are left to [`Admin::create_topic`].
    pub async fn create_topics(
        &self,
        topics: &[String],
        partitions: i32,
        replication_factor: i32,
        timeout: Duration,
    ) -> Result<Vec<String>, String> {
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(replication_factor)))
            .collect();
        let opts = AdminOptions::new()
            .operation_timeout(Some(timeout))
            .request_timeout(Some(timeout));
        let results = self
            .inner
            .create_topics(&new, &opts)
            .await
            .map_err(|e| e.to_string())?;
        Ok(results
            .into_iter()
            .filter_map(|r| match r {
                Ok(t) | Err((t, RDKafkaErrorCode::TopicAlreadyExists)) => Some(t),
                Err(_) => None,
            })
            .collect())
    }

    /// Create `topic`; an already existing topic is success.
    pub async fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        replication_factor: i32,
        timeout: Duration,
    ) -> Result<(), CreateError> {
        use RDKafkaErrorCode as C;
        let new = NewTopic::new(
            topic,
            partitions,
            TopicReplication::Fixed(replication_factor),
        );
        let opts = AdminOptions::new()
            .operation_timeout(Some(timeout))
            .request_timeout(Some(timeout));
        let results = self
            .inner
            .create_topics([&new], &opts)
            .await
            .map_err(|e| CreateError {
                permanent: false,
                reason: e.to_string(),
            })?;
        for r in results {
            if let Err((_, code)) = r {
                let permanent = matches!(
                    code,
                    C::InvalidTopic
                        | C::InvalidPartitions
                        | C::InvalidReplicationFactor
                        | C::InvalidReplicaAssignment
                        | C::InvalidConfig
                        | C::InvalidRequest
                        | C::PolicyViolation
                        | C::TopicAuthorizationFailed
                        | C::ClusterAuthorizationFailed
                        | C::UnsupportedVersion
                );
                if code != C::TopicAlreadyExists {
                    return Err(CreateError {
                        permanent,
                        reason: code.to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_setting_replaces_default_and_its_alias() {
        let mut p = Properties::new();
        p.set("acks", "all");
        p.set("linger.ms", "5");
        p.set("request.required.acks", "1");
        p.set("queue.buffering.max.ms", "1000");
        assert_eq!(p.get("acks"), Some("1"));
        assert_eq!(p.get("linger.ms"), Some("1000"));
        assert_eq!(p.iter().count(), 2);
    }

    #[test]
    fn unknown_property_is_reported() {
        assert!(check_property("queue.buffering.max.ms", "1000").is_ok());
        let e = check_property("queue.bufering.max.ms", "1").unwrap_err();
        assert!(e.contains("no such configuration property"), "{e}");
        assert!(check_property("linger.ms", "banana").is_err());
    }

    #[test]
    fn failures_are_classified() {
        let f = |code| Failure { code }.class();
        assert_eq!(
            f(RDKafkaErrorCode::MessageSizeTooLarge),
            FailureClass::Permanent
        );
        assert_eq!(
            f(RDKafkaErrorCode::TopicAuthorizationFailed),
            FailureClass::Permanent
        );
        assert_eq!(f(RDKafkaErrorCode::UnknownTopic), FailureClass::Permanent);
        assert_eq!(
            f(RDKafkaErrorCode::MessageTimedOut),
            FailureClass::Retriable
        );
        assert_eq!(
            f(RDKafkaErrorCode::BrokerTransportFailure),
            FailureClass::Retriable
        );
        assert_eq!(f(RDKafkaErrorCode::PurgeQueue), FailureClass::Purged);
        assert!(
            Failure {
                code: RDKafkaErrorCode::QueueFull
            }
            .is_queue_full()
        );
    }
}
