//! The client context every client shares: librdkafka's log lines and global
//! errors routed to `tracing` with the component id, rate-limited.

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing::{debug, error, info, warn};

use crate::logging::{KeyedRateLimit, RateLimit};

use super::LOG_INTERVAL;

/// State shared by a client's callbacks and its owner.
#[derive(Debug)]
pub struct ClientEvents {
    pub(crate) component: Arc<str>,
    pub(crate) brokers_down: AtomicBool,
    pub(crate) fatal: AtomicBool,
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

pub(crate) struct Context<T> {
    pub(crate) events: Arc<ClientEvents>,
    pub(crate) _tracker: PhantomData<fn(T)>,
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
