//! The Kafka sink's loop: take batches, render and enqueue their records, hold
//! them while librdkafka's queue is full, resend what came back after a backoff,
//! create topics on first use, flush at the end, fail what is left at the deadline.
//!
//! The loop never waits on a delivery report itself (see [`super::delivery`]),
//! except to stop; blocking librdkafka calls run on `spawn_blocking`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

mod offsets;
mod resend;
mod topic_ensure;
mod txn;

use super::delivery::{InFlight, OwnedRecord, Shared};
use super::topics::Topics;
use super::{KafkaSinkConfig, WhenOversize};
use crate::ack::AckStatus;
use crate::encoding::Encoding;
use crate::event::{Event, EventBatch};
use crate::kafka::{Admin, ClientEvents, FailureClass, LOG_INTERVAL, Producer, Record, TopicState};
use crate::logging::{KeyedRateLimit, RateLimit};
use crate::metrics::Counters;
use crate::template::Template;
use crate::topology::{ComponentError, SinkContext};

/// How long the loop waits before offering records again to a full producer queue
/// (it also wakes as soon as a batch settles).
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(5);
/// First backoff before resending records that timed out; doubles per attempt.
const RESEND_BACKOFF: Duration = Duration::from_secs(1);
/// Longest backoff, for resends and topic creation.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Timeout of metadata lookups and topic creation requests.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of the start-up probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// A topic whose creation failed for good is tried again after this long.
const CREATE_FAILED_RETRY: Duration = Duration::from_secs(60);
/// Most topics created in one request ahead of need.
const CREATE_AHEAD_MAX: usize = 1000;
/// One flush call while stopping: short so the loop keeps checking its state.
const FLUSH_STEP: Duration = Duration::from_millis(500);

/// Work the loop has in hand: records being offered to the producer.
enum Job {
    Batch {
        events: Arc<Vec<Event>>,
        state: Arc<InFlight>,
        next: usize,
    },
    Resend {
        records: Vec<OwnedRecord>,
        state: Arc<InFlight>,
        next: usize,
    },
}

impl Job {
    /// Fail what was not offered yet and release the loop's hold.
    fn abandon(self) -> usize {
        let (state, unsent) = match self {
            Job::Batch {
                events,
                state,
                next,
            } => (state, events.len() - next),
            Job::Resend {
                records,
                state,
                next,
            } => (state, records.len() - next),
        };
        state.failed.fetch_add(unsent, Ordering::Relaxed);
        state.release(unsent + 1);
        unsent
    }
}

enum Advance {
    Done,
    /// Not finished; try again after the wait (or sooner when woken).
    Blocked(Job, Duration),
}

enum Ensure {
    Ready,
    Failed(String),
    Later(Duration),
}

enum Next {
    Batch(EventBatch),
    InputEnd,
    Wake,
    Flushed,
    Abort,
}

pub(super) struct KafkaSink {
    config: KafkaSinkConfig,
    encoding: Encoding,
    /// Pre-validated topic when the template is constant.
    static_topic: Option<String>,
    topic_template: Template,
    key_template: Option<Template>,
    partition_template: Option<Template>,
    producer: Producer<InFlight>,
    admin: Option<Admin>,
    shared: Arc<Shared>,
    /// Topics created or refused (bounded, see [`Topics`]).
    topics: Topics,
    create_backoff: Duration,
    /// Last topic that was valid and ready: most events repeat it.
    last_topic: String,
    topic_buf: String,
    key_buf: String,
    partition_buf: String,
    payload_buf: Vec<u8>,
    abort: CancellationToken,
    /// `exactly_once`: the transactional producer's settings and state.
    eo: Option<txn::ExactlyOnce>,
}

impl KafkaSink {
    pub(super) fn new(
        config: KafkaSinkConfig,
        encoding: Encoding,
        cx: &SinkContext,
    ) -> Result<Self, String> {
        let topic_template = Template::parse(&config.topic, false, false)?;
        let key_template = config
            .key
            .as_deref()
            .map(|k| Template::parse(k, false, false))
            .transpose()?;
        let partition_template = config
            .partition
            .as_deref()
            .map(|p| Template::parse(p, false, false))
            .transpose()?;
        let static_topic = topic_template.is_static().then(|| config.topic.clone());
        // librdkafka's statistics (queue depth, round-trip times) when the API
        // exports them; the producer alone asks (nobody polls the admin's queue).
        let api = cx.reload.borrow().global.api.address.is_some();
        let client = ClientEvents::with_stats(cx.name.clone(), api.then(|| cx.counters.clone()));
        let props = config.properties(&cx.name);
        let mut producer_props = props.clone();
        if api {
            producer_props.ask_statistics();
        }
        let eo = if config.exactly_once {
            let eo = txn::ExactlyOnce::new(&config, &props, cx, client.clone())?;
            producer_props.set("transactional.id", eo.transactional_id.clone());
            Some(eo)
        } else {
            None
        };
        let producer = Producer::create(&producer_props, client.clone(), config.producers)
            .map_err(|e| format!("creating the Kafka producer: {e}"))?;
        let admin = match config.create_topics {
            Some(_) => Some(
                Admin::create(&props, client.clone())
                    .map_err(|e| format!("creating the Kafka admin client: {e}"))?,
            ),
            None => None,
        };
        let shared = Arc::new(Shared {
            counters: cx.counters.clone(),
            client,
            wake: Notify::new(),
            returned: Mutex::new(Vec::new()),
            inflight_events: AtomicUsize::new(0),
            closing: AtomicBool::new(false),
            abandoned: Mutex::new(false),
            permanent_log: KeyedRateLimit::new(LOG_INTERVAL),
            resend_log: RateLimit::new(LOG_INTERVAL),
            oversize_log: RateLimit::new(LOG_INTERVAL),
            span: OnceLock::new(),
            transactional: eo.is_some(),
        });
        Ok(KafkaSink {
            config,
            encoding,
            static_topic,
            topic_template,
            key_template,
            partition_template,
            producer,
            admin,
            shared,
            topics: Topics::new(),
            create_backoff: RESEND_BACKOFF,
            last_topic: String::new(),
            topic_buf: String::new(),
            key_buf: String::new(),
            partition_buf: String::new(),
            payload_buf: Vec::new(),
            abort: cx.abort.clone(),
            eo,
        })
    }

    pub(super) async fn run(mut self, mut cx: SinkContext) -> Result<(), ComponentError> {
        let _ = self.shared.span.set(tracing::Span::current());
        if self.eo.is_some() {
            return self.run_exactly_once(cx).await;
        }
        self.spawn_probe();
        let mut job: Option<Job> = None;
        let mut waiting: Vec<(Instant, Arc<InFlight>)> = Vec::new();
        let mut input_open = true;
        let mut flush: Option<JoinHandle<bool>> = None;
        loop {
            let returned = std::mem::take(
                &mut *self
                    .shared
                    .returned
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()),
            );
            for state in returned {
                let attempt = state.attempts.fetch_add(1, Ordering::Relaxed);
                let wait = RESEND_BACKOFF
                    .saturating_mul(1 << attempt.min(5))
                    .min(MAX_BACKOFF);
                waiting.push((Instant::now() + wait, state));
            }
            if job.is_none() {
                let now = Instant::now();
                if let Some(i) = waiting.iter().position(|(due, _)| *due <= now) {
                    let (_, state) = waiting.swap_remove(i);
                    job = self.prepare_resend(state).await;
                }
            }
            let mut wait = None;
            if let Some(j) = job.take() {
                match self.advance(j).await {
                    Advance::Done => continue,
                    Advance::Blocked(j, w) => {
                        job = Some(j);
                        wait = Some(w);
                    }
                }
            }
            let idle = job.is_none();
            if idle
                && !input_open
                && waiting.is_empty()
                && self.shared.inflight_events.load(Ordering::Acquire) == 0
            {
                return self.finish().await;
            }
            if !input_open && flush.is_none() && self.producer.queued() > 0 {
                let producer = self.producer.clone();
                flush = Some(tokio::task::spawn_blocking(move || {
                    producer.flush_blocking(FLUSH_STEP)
                }));
            }
            let due = waiting.iter().map(|(d, _)| *d).min();
            let sleep_until = match (wait, due) {
                (Some(w), Some(d)) => Some((Instant::now() + w).min(d)),
                (Some(w), None) => Some(Instant::now() + w),
                (None, d) => d,
            };
            let next = tokio::select! {
                biased;
                _ = cx.abort.cancelled() => Next::Abort,
                _ = self.shared.wake.notified() => Next::Wake,
                b = cx.input.recv(), if idle && input_open => b.map_or(Next::InputEnd, Next::Batch),
                _ = sleep_opt(sleep_until) => Next::Wake,
                _ = join_opt(&mut flush) => Next::Flushed,
            };
            match next {
                Next::Batch(EventBatch { events, ack }) => {
                    if events.is_empty() {
                        ack.resolve(AckStatus::Delivered);
                        continue;
                    }
                    let state = InFlight::new(self.shared.clone(), ack, events.len());
                    job = Some(Job::Batch {
                        events,
                        state,
                        next: 0,
                    });
                }
                Next::InputEnd => {
                    input_open = false;
                    info!(
                        in_flight_events = self.shared.inflight_events.load(Ordering::Acquire),
                        "Input ended; flushing the Kafka producer."
                    );
                }
                Next::Wake => {}
                Next::Flushed => flush = None,
                Next::Abort => return self.stop_at_deadline(&mut cx, job, waiting).await,
            }
        }
    }

    /// Offer the job's records to the producer until done or blocked.
    async fn advance(&mut self, job: Job) -> Advance {
        match job {
            Job::Batch {
                events,
                state,
                next,
            } => self.advance_batch(events, state, next).await,
            Job::Resend {
                records,
                state,
                next,
            } => self.advance_resend(records, state, next),
        }
    }

    async fn advance_batch(
        &mut self,
        events: Arc<Vec<Event>>,
        state: Arc<InFlight>,
        mut next: usize,
    ) -> Advance {
        let all = events.clone();
        while next < all.len() {
            let e = &all[next];
            match self.topic_for(e) {
                Ok(()) => {}
                Err(reason) => {
                    self.shared.log_permanent(&self.topic_buf, &reason, 1);
                    state.reject(1);
                    next += 1;
                    continue;
                }
            }
            if self.admin.is_some() && self.last_topic != self.current_topic() {
                let topic = self.current_topic().to_owned();
                if !self.topics.contains_key(&topic) {
                    self.create_ahead(&topic, &all[next + 1..]).await;
                }
                match self.ensure_topic(&topic).await {
                    Ensure::Ready => self.last_topic = topic,
                    Ensure::Failed(reason) => {
                        self.shared.log_permanent(&topic, &reason, 1);
                        state.reject(1);
                        next += 1;
                        continue;
                    }
                    Ensure::Later(wait) => {
                        return Advance::Blocked(
                            Job::Batch {
                                events,
                                state,
                                next,
                            },
                            wait,
                        );
                    }
                }
            }
            match self.send_event(e, &state) {
                Sent::Ok => next += 1,
                Sent::QueueFull => {
                    return Advance::Blocked(
                        Job::Batch {
                            events,
                            state,
                            next,
                        },
                        QUEUE_FULL_WAIT,
                    );
                }
                Sent::Later => {
                    return Advance::Blocked(
                        Job::Batch {
                            events,
                            state,
                            next,
                        },
                        RESEND_BACKOFF,
                    );
                }
            }
        }
        state.release(1);
        Advance::Done
    }

    /// Encode, apply the size policy, and enqueue one event.
    fn send_event(&mut self, e: &Event, state: &Arc<InFlight>) -> Sent {
        let partition = match &self.partition_template {
            Some(t) => {
                self.partition_buf.clear();
                t.render(e, &mut self.partition_buf);
                match parse_partition(&self.partition_buf) {
                    Ok(p) => p,
                    Err(reason) => {
                        let topic = self.static_topic.as_deref().unwrap_or(&self.topic_buf);
                        self.shared.log_permanent(topic, &reason, 1);
                        state.reject(1);
                        return Sent::Ok;
                    }
                }
            }
            None => None,
        };
        let key: Option<&[u8]> = match &self.key_template {
            Some(t) => {
                self.key_buf.clear();
                t.render(e, &mut self.key_buf);
                (!self.key_buf.is_empty()).then_some(self.key_buf.as_bytes())
            }
            None => None,
        };
        let mut payload: &[u8] = if self.encoding == Encoding::Raw {
            &e.body
        } else {
            self.payload_buf.clear();
            self.encoding.encode(e, &mut self.payload_buf, false);
            &self.payload_buf
        };
        let max = self.config.max_message_bytes;
        let key_len = key.map_or(0, <[u8]>::len);
        if key_len + payload.len() > max {
            let size = key_len + payload.len();
            let truncate = self.config.when_oversize == WhenOversize::Truncate && key_len < max;
            if let Some(suppressed) = self.shared.oversize_log.allow() {
                warn!(
                    bytes = size,
                    max_message_bytes = max,
                    action = if truncate { "truncated" } else { "dropped" },
                    suppressed,
                    "Event larger than max_message_bytes."
                );
            }
            if truncate {
                payload = &payload[..max - key_len];
                Counters::add(&self.shared.counters.truncated, 1);
            } else {
                Counters::add(&self.shared.counters.dropped, 1);
                state.dropped.fetch_add(1, Ordering::Relaxed);
                state.clone().release(1);
                return Sent::Ok;
            }
        }
        let topic = self.static_topic.as_deref().unwrap_or(&self.topic_buf);
        let record = Record {
            topic,
            key,
            payload,
            timestamp_ms: Some(e.time_ns.div_euclid(1_000_000)),
            partition,
        };
        match self.producer.send(record, state.clone()) {
            Ok(()) => Sent::Ok,
            Err(f) if f.is_queue_full() => Sent::QueueFull,
            Err(f) => match f.class() {
                FailureClass::Retriable => Sent::Later,
                FailureClass::Permanent | FailureClass::Purged => {
                    self.shared.log_permanent(topic, &f, 1);
                    if f.is_record_specific() {
                        state.reject(1);
                    } else {
                        state.fail(1);
                    }
                    Sent::Ok
                }
            },
        }
    }

    /// Everything was delivered or failed: release the client off the runtime.
    async fn finish(self) -> Result<(), ComponentError> {
        let c = &self.shared.counters;
        info!(
            delivered = c.events_out.load(Ordering::Relaxed),
            errors = c.errors.load(Ordering::Relaxed),
            dropped = c.dropped.load(Ordering::Relaxed),
            topics_forgotten = self.topics.forgotten,
            "Kafka sink flushed and stopped."
        );
        let (producer, admin) = (self.producer, self.admin);
        let _ = tokio::task::spawn_blocking(move || {
            drop(admin);
            drop(producer);
        })
        .await;
        Ok(())
    }

    /// The shutdown deadline passed: fail what is left, purge the producer, report.
    async fn stop_at_deadline(
        self,
        cx: &mut SinkContext,
        job: Option<Job>,
        waiting: Vec<(Instant, Arc<InFlight>)>,
    ) -> Result<(), ComponentError> {
        self.shared.closing.store(true, Ordering::Release);
        let counters = self.shared.counters.clone();
        let errors_before = counters.errors.load(Ordering::Relaxed);
        let queued = cx.input.queued_events();
        if let Some(job) = job {
            job.abandon();
        }
        for (_, state) in waiting {
            state.settle();
        }
        // Purged records' reports fail their batches (on the polling thread, which
        // runs while any clone of the producer lives). librdkafka's teardown may
        // block, so not on this thread.
        self.producer.purge();
        let (producer, admin) = (self.producer, self.admin);
        let teardown = tokio::task::spawn_blocking(move || {
            drop(admin);
            drop(producer);
        });
        let _ = tokio::time::timeout(Duration::from_millis(1500), teardown).await;
        let failed = counters
            .errors
            .load(Ordering::Relaxed)
            .saturating_sub(errors_before);
        // What librdkafka has not reported by now is failed here, under the lock
        // settlements count under, so a late report cannot count it again.
        let unsettled = {
            let mut abandoned = self
                .shared
                .abandoned
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            *abandoned = true;
            let unsettled = self.shared.inflight_events.load(Ordering::Acquire);
            Counters::add(&counters.errors, unsettled);
            unsettled
        };
        if cx.input.is_durable() {
            // Not lost: unacknowledged in the disk buffer, sent again at the next start.
            warn!(
                undelivered_events = failed + (unsettled + queued) as u64,
                "Shutdown deadline reached before Kafka confirmed every event; they stay in the disk buffer."
            );
        } else {
            error!(
                undelivered_events = failed + (unsettled + queued) as u64,
                failed_in_producer = failed,
                unsettled_events = unsettled,
                buffered_events = queued,
                "Shutdown deadline reached before Kafka confirmed every event; they are counted as errors."
            );
        }
        Ok(())
    }
}

enum Sent {
    Ok,
    QueueFull,
    Later,
}

/// The partition a `partition` template rendered: empty = the partitioner's choice.
fn parse_partition(rendered: &str) -> Result<Option<i32>, String> {
    if rendered.is_empty() {
        return Ok(None);
    }
    match rendered.parse::<i32>() {
        Ok(p) if p >= 0 => Ok(Some(p)),
        _ => Err(format!(
            "partition renders `{rendered}`, not a partition number"
        )),
    }
}

async fn sleep_opt(until: Option<Instant>) {
    match until {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

async fn join_opt(handle: &mut Option<JoinHandle<bool>>) {
    match handle {
        Some(h) => {
            let _ = h.await;
        }
        None => std::future::pending().await,
    }
}
