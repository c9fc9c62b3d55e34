//! The client context every client shares: librdkafka's log lines and global
//! errors routed to `tracing` with the component id, rate-limited.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use serde::Deserialize;
use tracing::{debug, error, info, warn};

use crate::logging::{KeyedRateLimit, RateLimit};
use crate::metrics::{Counters, KafkaSnapshot};

use super::LOG_INTERVAL;

/// State shared by a client's callbacks and its owner.
#[derive(Debug)]
pub struct ClientEvents {
    pub(crate) component: Arc<str>,
    pub(crate) brokers_down: AtomicBool,
    pub(crate) fatal: AtomicBool,
    errors: RateLimit,
    /// Where librdkafka's statistics go, when they are asked for.
    stats: Option<Arc<Counters>>,
    /// librdkafka's own warnings, one line per facility per interval: a broken
    /// TLS or SASL setup makes it warn on every reconnect attempt.
    warnings: KeyedRateLimit,
}

impl ClientEvents {
    /// Events of the client of component `component`.
    pub fn new(component: Arc<str>) -> Arc<Self> {
        Self::with_stats(component, None)
    }

    /// Events of the client of component `component`, keeping librdkafka's
    /// statistics (when `statistics.interval.ms` asks for them) in `counters`.
    pub fn with_stats(component: Arc<str>, counters: Option<Arc<Counters>>) -> Arc<Self> {
        Arc::new(ClientEvents {
            component,
            brokers_down: AtomicBool::new(false),
            fatal: AtomicBool::new(false),
            errors: RateLimit::new(LOG_INTERVAL),
            stats: counters,
            warnings: KeyedRateLimit::new(LOG_INTERVAL),
        })
    }

    /// Keep one statistics report (librdkafka's JSON), reduced to what the
    /// metrics endpoint exports. A report that does not parse is ignored.
    pub(crate) fn statistics(&self, json: &[u8]) {
        let Some(counters) = &self.stats else { return };
        match serde_json::from_slice::<RawStats>(json) {
            Ok(raw) => {
                let raw_name = raw.name.clone();
                let (mut snapshot, idle) = raw.reduce();
                // A broker with no request in the interval keeps its last figures.
                if let Some(prev) = counters.kafka.client(&raw_name) {
                    snapshot
                        .brokers
                        .extend(prev.brokers.into_iter().filter(|b| idle.contains(&b.0)));
                    snapshot.brokers.sort();
                }
                counters.kafka.set(&raw_name, snapshot);
            }
            Err(e) => {
                debug!(component_id = &*self.component, error = %e, "Kafka statistics not understood.")
            }
        }
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

/// The part of librdkafka's statistics JSON we read; serde skips the rest
/// (per-topic sections of a producer with many topics included, unread).
#[derive(Deserialize)]
struct RawStats {
    /// The client's name (`rdkafka#producer-2`): one report per client.
    #[serde(default)]
    name: String,
    #[serde(default)]
    msg_cnt: u64,
    #[serde(default)]
    msg_size: u64,
    #[serde(default)]
    brokers: HashMap<String, RawBroker>,
    #[serde(default, rename = "type")]
    kind: String,
    /// Read for consumers only (see [`RawStats::reduce`]).
    #[serde(default)]
    topics: HashMap<String, RawTopic>,
}

#[derive(Deserialize)]
struct RawBroker {
    #[serde(default)]
    nodeid: i32,
    #[serde(default)]
    rtt: Option<RawWindow>,
}

#[derive(Deserialize)]
struct RawWindow {
    #[serde(default)]
    avg: i64,
    #[serde(default)]
    p99: i64,
    #[serde(default)]
    cnt: i64,
}

#[derive(Deserialize)]
struct RawTopic {
    #[serde(default)]
    partitions: HashMap<String, RawPartition>,
}

#[derive(Deserialize)]
struct RawPartition {
    #[serde(default)]
    partition: i32,
    #[serde(default = "unknown_lag")]
    consumer_lag: i64,
}

fn unknown_lag() -> i64 {
    -1
}

impl RawStats {
    /// Brokers of the cluster only (bootstrap and logical entries have no id)
    /// with requests in the interval, and the names of those without; lag of the
    /// partitions where it is known (-1 otherwise: not assigned to us, or
    /// nothing committed yet).
    fn reduce(self) -> (KafkaSnapshot, Vec<String>) {
        let mut brokers = Vec::new();
        let mut idle = Vec::new();
        for (name, b) in self.brokers.into_iter().filter(|(_, b)| b.nodeid >= 0) {
            match b.rtt {
                Some(w) if w.cnt > 0 => brokers.push((name, w.avg, w.p99)),
                _ => idle.push(name),
            }
        }
        brokers.sort();
        let mut consumer_lag = Vec::new();
        if self.kind == "consumer" {
            for (topic, t) in self.topics {
                for p in t.partitions.into_values() {
                    if p.partition >= 0 && p.consumer_lag >= 0 {
                        consumer_lag.push((topic.clone(), p.partition, p.consumer_lag));
                    }
                }
            }
            consumer_lag.sort();
        }
        let snapshot = KafkaSnapshot {
            queue_messages: self.msg_cnt,
            queue_bytes: self.msg_size,
            brokers,
            consumer_lag,
        };
        (snapshot, idle)
    }
}

pub(crate) struct Context<T> {
    pub(crate) events: Arc<ClientEvents>,
    pub(crate) _tracker: PhantomData<fn(T)>,
}

impl<T> ClientContext for Context<T> {
    fn stats_raw(&self, statistics: &[u8]) {
        self.events.statistics(statistics);
    }

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
