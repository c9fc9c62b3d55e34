//! Delivery tracking: how librdkafka's reports become acknowledgements.
//!
//! One [`InFlight`] per batch is the delivery opaque of each of its records (an
//! `Arc` clone per record, no allocation). It counts records not yet reported,
//! starting at `events + 1`: the extra one is held by the loop while it enqueues,
//! so a batch cannot settle before all its records were offered. Records the loop
//! does not send (dropped, invalid topic, refused at enqueue) are released at once.
//! When the count reaches zero on the producer's polling thread the batch settles:
//! if records failed transiently it goes back to the loop ([`Shared::returned`]) to
//! be resent after a backoff; otherwise its acknowledgement resolves and its
//! counters move: `events_out` for delivered records, `errors` for failed ones
//! (oversize drops were counted in `dropped` when dropped).
//!
//! Records refused for a reason of their own (invalid topic name, unknown
//! topic, too large for the broker, invalid) are *rejected*: counted in
//! `errors` and dropped — the batch resolves `Dropped`, not `Errored`, so a
//! disk buffer acknowledges it instead of sending it (and its delivered
//! neighbours) again for ever. Anything else that fails a record (shutdown,
//! authorization, fatal producer state) resolves `Errored`.
//!
//! At the shutdown deadline `closing` is set: failures are then final and nothing
//! goes back for a resend. Once the producer is torn down, what is still
//! unsettled is counted as errors at once and the batches are marked
//! `abandoned`, so a report librdkafka serves later does not count them twice
//! (and the counters printed at the stop are complete).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::Notify;
use tracing::{error, info, warn};

use crate::ack::{AckStatus, AckToken};
use crate::kafka::{ClientEvents, Failure, FailureClass, Record, Tracker};
use crate::logging::{KeyedRateLimit, RateLimit};
use crate::metrics::Counters;

/// Sink-wide state shared with the delivery callbacks.
pub(super) struct Shared {
    pub(super) counters: Arc<Counters>,
    pub(super) client: Arc<ClientEvents>,
    /// Woken when a batch settles or comes back for a resend.
    pub(super) wake: Notify,
    /// Batches with records to resend, handed back by the callbacks.
    pub(super) returned: Mutex<Vec<Arc<InFlight>>>,
    /// Events of batches taken but not settled.
    pub(super) inflight_events: AtomicUsize,
    /// Set at the shutdown deadline: failures are final, nothing is resent.
    pub(super) closing: AtomicBool,
    /// Set once the stop counted every unsettled event as an error; guards the
    /// counting of settlements so that no event is counted twice.
    pub(super) abandoned: Mutex<bool>,
    pub(super) permanent_log: KeyedRateLimit,
    pub(super) resend_log: RateLimit,
    pub(super) oversize_log: RateLimit,
    /// The sink's span, entered by callbacks that log from librdkafka's threads.
    pub(super) span: OnceLock<tracing::Span>,
    /// Exactly-once: a failed record fails its batch (the transaction aborts and
    /// the disk buffer sends it again), and `events_out` moves at the commit.
    pub(super) transactional: bool,
}

impl Shared {
    pub(super) fn log_permanent(&self, topic: &str, reason: &dyn std::fmt::Display, events: usize) {
        if self.permanent_log.allow(topic) {
            let _entered = self.span.get().map(tracing::Span::enter);
            error!(
                topic,
                reason = %reason,
                events,
                "Kafka refused events permanently; they are counted as errors (logged once per topic per 10 s)."
            );
        }
    }
}

/// A record kept for resending (a copy of what librdkafka reported failed).
pub(super) struct OwnedRecord {
    pub(super) topic: String,
    pub(super) key: Option<Vec<u8>>,
    pub(super) payload: Vec<u8>,
    pub(super) timestamp_ms: Option<i64>,
    pub(super) partition: Option<i32>,
}

/// Delivery state of one batch: the opaque of each of its records.
pub(super) struct InFlight {
    pub(super) shared: Arc<Shared>,
    pub(super) ack: Mutex<Option<AckToken>>,
    pub(super) events: usize,
    pub(super) remaining: AtomicUsize,
    pub(super) failed: AtomicUsize,
    /// Refused for a reason of their own: counted as errors, resolved `Dropped`.
    pub(super) rejected: AtomicUsize,
    pub(super) dropped: AtomicUsize,
    pub(super) resend: Mutex<Vec<OwnedRecord>>,
    pub(super) attempts: AtomicU32,
}

impl InFlight {
    pub(super) fn new(shared: Arc<Shared>, ack: AckToken, events: usize) -> Arc<InFlight> {
        shared.inflight_events.fetch_add(events, Ordering::AcqRel);
        Arc::new(InFlight {
            shared,
            ack: Mutex::new(Some(ack)),
            events,
            remaining: AtomicUsize::new(events + 1),
            failed: AtomicUsize::new(0),
            rejected: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
            resend: Mutex::new(Vec::new()),
            attempts: AtomicU32::new(0),
        })
    }

    /// `n` records are accounted for.
    pub(super) fn release(self: Arc<Self>, n: usize) {
        if n > 0 && self.remaining.fetch_sub(n, Ordering::AcqRel) == n {
            self.settle();
        }
    }

    /// Fail `n` records for good (counted at settlement).
    pub(super) fn fail(self: &Arc<Self>, n: usize) {
        self.failed.fetch_add(n, Ordering::Relaxed);
        self.clone().release(n);
    }

    /// Reject `n` records for a reason of their own (counted at settlement).
    pub(super) fn reject(self: &Arc<Self>, n: usize) {
        self.rejected.fetch_add(n, Ordering::Relaxed);
        self.clone().release(n);
    }

    pub(super) fn lock_resend(&self) -> std::sync::MutexGuard<'_, Vec<OwnedRecord>> {
        self.resend.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every record is accounted for: resend what failed transiently, or resolve.
    pub(super) fn settle(self: Arc<Self>) {
        let shared = self.shared.clone();
        let pending = self.lock_resend().len();
        if pending > 0 {
            if !shared.closing.load(Ordering::Acquire) {
                shared
                    .returned
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(self);
                shared.wake.notify_one();
                return;
            }
            self.lock_resend().clear();
            self.failed.fetch_add(pending, Ordering::Relaxed);
        }
        let failed = self.failed.load(Ordering::Relaxed);
        let rejected = self.rejected.load(Ordering::Relaxed);
        let dropped = self.dropped.load(Ordering::Relaxed);
        let delivered = self.events.saturating_sub(failed + rejected + dropped);
        let abandoned = shared.abandoned.lock().unwrap_or_else(|e| e.into_inner());
        // Abandoned at the stop: already counted as errors, and failed for the
        // source whatever librdkafka reports now.
        let status = if *abandoned || failed > 0 {
            AckStatus::Errored
        } else if dropped > 0 || rejected > 0 {
            AckStatus::Dropped
        } else {
            AckStatus::Delivered
        };
        if !*abandoned {
            if !shared.transactional {
                Counters::add(&shared.counters.events_out, delivered);
            }
            Counters::add(&shared.counters.errors, failed + rejected);
        }
        if let Some(ack) = self.ack.lock().unwrap_or_else(|e| e.into_inner()).take() {
            ack.resolve(status);
        }
        shared
            .inflight_events
            .fetch_sub(self.events, Ordering::AcqRel);
        drop(abandoned);
        shared.wake.notify_one();
    }
}

impl Tracker for InFlight {
    fn delivered(self: Arc<Self>) {
        let client = &self.shared.client;
        if client.brokers_down() && client.clear_brokers_down() {
            let _entered = self.shared.span.get().map(tracing::Span::enter);
            info!("Kafka brokers reachable again; queued events are flowing.");
        }
        self.release(1);
    }

    fn failed(self: Arc<Self>, failure: Failure, record: Record<'_>) {
        let shared = &self.shared;
        let closing = shared.closing.load(Ordering::Acquire);
        match failure.class() {
            FailureClass::Retriable if !closing && !shared.transactional => {
                if let Some(suppressed) = shared.resend_log.allow() {
                    let _entered = shared.span.get().map(tracing::Span::enter);
                    warn!(
                        topic = record.topic,
                        reason = %failure,
                        suppressed,
                        "Kafka delivery failed after librdkafka's retries; resending after a backoff."
                    );
                }
                self.lock_resend().push(OwnedRecord {
                    topic: record.topic.to_owned(),
                    key: record.key.map(<[u8]>::to_vec),
                    payload: record.payload.to_vec(),
                    timestamp_ms: record.timestamp_ms,
                    partition: record.partition,
                });
                self.release(1);
            }
            FailureClass::Permanent => {
                shared.log_permanent(record.topic, &failure, 1);
                if failure.is_record_specific() {
                    self.reject(1);
                } else {
                    self.fail(1);
                }
            }
            FailureClass::Retriable | FailureClass::Purged => self.fail(1),
        }
    }
}
