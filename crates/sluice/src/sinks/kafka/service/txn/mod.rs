//! The exactly-once loop (`exactly_once = true`): disk buffer → transactions.
//!
//! ```text
//!  start: init_transactions (fences the previous incarnation, aborting its
//!         open transaction) → read the last committed checkpoint (read_committed)
//!  loop:  batch read ahead during the last commit, else from the disk buffer (seq s)
//!           s covered by the checkpoint → already in Kafka: acknowledge, skip
//!           else → begin (if none open), produce its records
//!         transaction_max_events reached, transaction_interval_ms passed, half the
//!         buffer's read-ahead bound held by the transaction, or input ended:
//!           a record refused at enqueue → abort; the batches resolve Errored (re-sent
//!           by the buffer)
//!           else → produce the checkpoint (positions settled after this commit) to the
//!                  checkpoint topic, flush, commit (a record that failed fails the
//!                  commit); on success the batches resolve as delivered.
//!                  Meanwhile batches are read ahead for the next transaction; if
//!                  this one does not commit they resolve Errored with it.
//! ```
//! Where the time goes (measured, `bench/kafka-txn.sh`): the loop enqueues a
//! transaction's records faster than librdkafka delivers them, so most of an
//! end is the flush (the delivery of the tail, work the idempotent sink does
//! too); the cost of a transaction is the bubble after it — EndTxn, then the
//! next transaction's AddPartitionsToTxn before its first produce request —
//! with nothing in flight. It is paid per commit, hence commits sized by time
//! (`transaction_interval_ms`, default 400 ms) rather than by a small count,
//! and the buffer is read during the commit rather than after it.
//! Failures: a retriable commit is retried; an abortable one (a record failed,
//! `INVALID_TXN_STATE` after the coordinator's timeout abort) aborts, and the
//! buffer sends the batches again; a fatal one recreates the producer
//! (`init_transactions` again) and re-reads the checkpoint, so a commit whose
//! outcome was unknown is settled by what Kafka holds. Fenced (a newer
//! producer with our `transactional.id`): the sink stops with an error. In every
//! case the batches of an unfinished transaction resolve `Errored` and stay in
//! the disk buffer: nothing is lost, and nothing committed is produced twice.

use std::collections::VecDeque;

use super::super::checkpoint::{self, Checkpoint};
use super::offsets::SourceOffsets;
use super::*;
use crate::ack::AckToken;
use crate::buffer::disk::{MAX_HELD_BYTES, MAX_HELD_RECORDS};
use crate::kafka::{Properties, TxnError, read_last_committed_blocking};

mod commit;

/// Timeout of one transaction call (commit, abort, init); retried after it.
const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout of the checkpoint read at start.
const CHECKPOINT_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Settings and clients of an exactly-once sink.
pub(in super::super) struct ExactlyOnce {
    pub(in super::super) transactional_id: String,
    /// The producer's settings, `transactional.id` included (to recreate it).
    props: Properties,
    checkpoint_topic: String,
    max_events: usize,
    interval: Duration,
    admin: Admin,
    replication_factor: i32,
    client: Arc<ClientEvents>,
    /// Events acknowledged at start because the checkpoint covers them.
    skipped: u64,
    /// The first skip since the last start was logged.
    skip_logged: bool,
    /// The first second copy of a kafka source's records was logged.
    reread_logged: bool,
    commits: u64,
    aborts: u64,
    /// Events of the committed transactions, and the time spent ending them
    /// (checkpoint, offsets, commit), for the report at the stop.
    committed_events: u64,
    commit_time: Duration,
    /// Kafka → Kafka: the sources whose offsets commit in our transactions.
    offsets: SourceOffsets,
}

impl ExactlyOnce {
    pub(in super::super) fn new(
        config: &KafkaSinkConfig,
        props: &Properties,
        cx: &SinkContext,
        client: Arc<ClientEvents>,
    ) -> Result<ExactlyOnce, String> {
        let Some(disk) = cx.input.disk() else {
            return Err("exactly_once needs a disk buffer (buffer.type = \"disk\")".into());
        };
        let transactional_id = checkpoint::transactional_id(disk.dir(), &cx.name)
            .map_err(|e| format!("the transactional id in {}: {e}", disk.dir().display()))?;
        let mut props = props.clone();
        props.set("transactional.id", transactional_id.clone());
        let admin = Admin::create(&props, client.clone())
            .map_err(|e| format!("creating the Kafka admin client: {e}"))?;
        Ok(ExactlyOnce {
            transactional_id,
            props,
            checkpoint_topic: config.checkpoint_topic.clone(),
            max_events: config.transaction_max_events,
            interval: Duration::from_millis(config.transaction_interval_ms),
            admin,
            replication_factor: config.create_topics.map_or(-1, |c| c.replication_factor),
            client,
            skipped: 0,
            skip_logged: false,
            reread_logged: false,
            commits: 0,
            aborts: 0,
            committed_events: 0,
            commit_time: Duration::ZERO,
            offsets: SourceOffsets::new(&cx.reload.borrow(), &cx.name),
        })
    }
}

/// One batch of the open transaction.
struct Entry {
    seq: u64,
    /// The source's acknowledgement: resolved only after the commit.
    ack: AckToken,
    state: Arc<InFlight>,
}

struct Open {
    entries: Vec<Entry>,
    events: usize,
    /// Stored bytes of its batches' buffer records, as the disk buffer's
    /// read-ahead bound counts them ([`DiskReceiver::last_bytes`]): fields
    /// included, which for forward events are nearly as large as the bodies —
    /// counted by bodies, a 400 ms transaction filled the whole bound and
    /// nothing could be read ahead during its commit.
    ///
    /// [`DiskReceiver::last_bytes`]: crate::buffer::disk::DiskReceiver::last_bytes
    bytes: usize,
    begun: Instant,
    deadline: Instant,
}

impl Open {
    /// Commit now: the size or the interval is reached, or the transaction
    /// holds half of what the disk buffer hands out unresolved (its batches
    /// resolve only at the commit; the other half is read ahead meanwhile).
    fn due(&self, max_events: usize) -> bool {
        self.events >= max_events
            || self.entries.len() >= MAX_HELD_RECORDS / 2
            || self.bytes >= MAX_HELD_BYTES / 2
            || Instant::now() >= self.deadline
    }
}

/// Batches taken from the disk buffer while a commit was in flight, with their
/// positions: the next transaction produces them first. Without it the loop
/// would stop reading for the whole commit (librdkafka refuses records between
/// commit and the next begin).
#[derive(Default)]
struct Ahead {
    batches: VecDeque<(EventBatch, Position)>,
    events: usize,
    /// Stored bytes of their buffer records.
    bytes: usize,
    /// The input ended while a commit was in flight.
    ended: bool,
}

impl Ahead {
    fn has_room(&self, max_events: usize) -> bool {
        !self.ended
            && self.events < max_events
            && self.batches.len() < MAX_HELD_RECORDS / 2
            && self.bytes < MAX_HELD_BYTES / 2
    }

    fn push(&mut self, batch: EventBatch, pos: Position) {
        self.events += batch.events.len();
        self.bytes += pos.bytes;
        self.batches.push_back((batch, pos));
    }

    fn pop(&mut self) -> Option<(EventBatch, Position)> {
        let (b, pos) = self.batches.pop_front()?;
        self.events -= b.events.len();
        self.bytes -= pos.bytes;
        Some((b, pos))
    }

    /// The transaction they were to follow did not commit: they go back to the
    /// disk buffer (resolved `Errored`), which sends them again in order.
    fn fail_all(&mut self) {
        for (b, _) in self.batches.drain(..) {
            b.ack.resolve(AckStatus::Errored);
        }
        self.events = 0;
        self.bytes = 0;
    }
}

/// Where a batch came from in the disk buffer: the record's seq and its stored
/// size.
#[derive(Clone, Copy)]
struct Position {
    seq: u64,
    bytes: usize,
}

/// Why the loop stops or starts over.
enum Stop {
    /// The shutdown deadline passed.
    Abort,
    /// A newer producer took the transactional id.
    Fenced(String),
    /// The producer is unusable: create it again and re-read the checkpoint.
    Restart(String),
}

fn eo(sink: &KafkaSink) -> &ExactlyOnce {
    sink.eo
        .as_ref()
        .expect("the exactly-once loop runs with its settings")
}

fn eo_mut(sink: &mut KafkaSink) -> &mut ExactlyOnce {
    sink.eo
        .as_mut()
        .expect("the exactly-once loop runs with its settings")
}

impl KafkaSink {
    pub(super) async fn run_exactly_once(
        mut self,
        mut cx: SinkContext,
    ) -> Result<(), ComponentError> {
        let mut cp = match self.start_transactions().await {
            Ok(cp) => cp,
            Err(Stop::Abort) => return self.finish_exactly_once(None).await,
            Err(Stop::Fenced(m) | Stop::Restart(m)) => return Err(ComponentError::Other(m)),
        };
        let mut open: Option<Open> = None;
        let mut ahead = Ahead::default();
        let mut input_open = true;
        let mut max_seen: Option<u64> = None;
        loop {
            if ahead.ended && ahead.batches.is_empty() {
                input_open = false;
            }
            let due = open
                .as_ref()
                .is_some_and(|o| !input_open || o.due(eo(&self).max_events));
            if due {
                let o = open.take().expect("checked above");
                let stop = match self
                    .end_transaction(o, &mut cp, max_seen, &mut cx, &mut ahead)
                    .await
                {
                    Ok(true) => continue,
                    Ok(false) => None,
                    Err(stop) => Some(stop),
                };
                // Not committed: what was read ahead goes back to the buffer
                // too, so the re-sent batches keep their order.
                ahead.fail_all();
                match stop {
                    None => {}
                    Some(Stop::Abort) => return self.finish_exactly_once(None).await,
                    Some(Stop::Fenced(m)) => return Err(ComponentError::Other(m)),
                    Some(Stop::Restart(reason)) => match self.restart_producer(&reason).await {
                        Ok(c) => cp = c,
                        Err(Stop::Abort) => return self.finish_exactly_once(None).await,
                        Err(Stop::Fenced(m) | Stop::Restart(m)) => {
                            return Err(ComponentError::Other(m));
                        }
                    },
                }
                continue;
            }
            if !input_open {
                return self.finish_exactly_once(None).await;
            }
            let (EventBatch { events, ack }, pos) = match ahead.pop() {
                Some(read_ahead) => read_ahead,
                None => {
                    let deadline = open.as_ref().map(|o| o.deadline);
                    let batch = tokio::select! {
                        biased;
                        _ = cx.abort.cancelled() => return self.finish_exactly_once(open).await,
                        _ = sleep_opt(deadline) => continue,
                        b = cx.input.recv() => b,
                    };
                    let Some(batch) = batch else {
                        input_open = false;
                        continue;
                    };
                    let Some(pos) = position(&cx) else {
                        // Built only with a disk buffer: every batch has a position.
                        batch.ack.resolve(AckStatus::Errored);
                        return Err(ComponentError::Other(
                            "exactly_once: a batch without a disk buffer position".into(),
                        ));
                    };
                    (batch, pos)
                }
            };
            let seq = pos.seq;
            max_seen = Some(max_seen.map_or(seq, |m| m.max(seq)));
            if cp.covers(seq) {
                let eo = eo_mut(&mut self);
                eo.offsets.settled(&events);
                eo.skipped += events.len() as u64;
                if !eo.skip_logged {
                    eo.skip_logged = true;
                    info!(
                        seq,
                        settled_below = cp.low,
                        "Exactly-once: buffer records replayed after the restart are already in Kafka; \
                         acknowledging them without producing."
                    );
                }
                if let Some(d) = cx.input.disk() {
                    // Not sent again: not a re-send in the tenants' accounts.
                    d.already_delivered(seq);
                }
                ack.resolve(AckStatus::Delivered);
                continue;
            }
            let events = match eo_mut(&mut self).offsets.admit(&events) {
                None => events,
                Some(rest) => {
                    // A kafka source read these again (restart, rebalance):
                    // the copy before them is produced already.
                    let eo = eo_mut(&mut self);
                    eo.skipped += (events.len() - rest.len()) as u64;
                    if !eo.reread_logged {
                        eo.reread_logged = true;
                        info!(
                            seq,
                            "Kafka → Kafka exactly once: records the source read again are already \
                             produced; dropping the second copy."
                        );
                    }
                    Arc::new(rest)
                }
            };
            if events.is_empty() {
                ack.resolve(AckStatus::Delivered);
                continue;
            }
            if open.is_none() {
                if let Err(e) = self.producer.begin_transaction() {
                    ack.resolve(AckStatus::Errored);
                    ahead.fail_all();
                    let reason = format!("beginning a transaction: {e}");
                    if e.fenced() {
                        return Err(ComponentError::Other(fenced_message(&self, &e)));
                    }
                    match self.restart_producer(&reason).await {
                        Ok(c) => cp = c,
                        Err(Stop::Abort) => return self.finish_exactly_once(None).await,
                        Err(Stop::Fenced(m) | Stop::Restart(m)) => {
                            return Err(ComponentError::Other(m));
                        }
                    }
                    continue;
                }
                let now = Instant::now();
                open = Some(Open {
                    entries: Vec::new(),
                    events: 0,
                    bytes: 0,
                    begun: now,
                    deadline: now + eo(&self).interval,
                });
            }
            let o = open.as_mut().expect("opened above");
            // Its reports only count; the commit decides the batch's outcome.
            let state = InFlight::new(self.shared.clone(), AckToken::none(), events.len());
            o.events += events.len();
            o.bytes += pos.bytes;
            o.entries.push(Entry {
                seq,
                ack,
                state: state.clone(),
            });
            let mut job = Job::Batch {
                events,
                state,
                next: 0,
            };
            loop {
                match self.advance(job).await {
                    Advance::Done => break,
                    Advance::Blocked(j, wait) => {
                        tokio::select! {
                            _ = cx.abort.cancelled() => {
                                j.abandon();
                                return self.finish_exactly_once(open).await;
                            }
                            _ = tokio::time::sleep(wait) => job = j,
                        }
                    }
                }
            }
        }
    }

    /// `init_transactions` (retried until the cluster answers), the checkpoint
    /// topic, and the last committed checkpoint.
    async fn start_transactions(&mut self) -> Result<Checkpoint, Stop> {
        let mut backoff = RESEND_BACKOFF;
        loop {
            let producer = self.producer.clone();
            let init = tokio::task::spawn_blocking(move || {
                producer.init_transactions_blocking(TXN_CALL_TIMEOUT)
            });
            let res = tokio::select! {
                r = init => r.unwrap_or_else(|e| Err(join_error(&e))),
                _ = self.abort.cancelled() => return Err(Stop::Abort),
            };
            match res {
                Ok(()) => break,
                Err(e) if e.fenced() => return Err(Stop::Fenced(fenced_message(self, &e))),
                Err(e) if e.fatal => {
                    return Err(Stop::Restart(format!(
                        "Kafka refused the transactional producer: {e}"
                    )));
                }
                Err(e) => {
                    warn!(error = %e, retry_in = ?backoff, "Kafka transactions could not be initialised yet; retrying.");
                    self.pause(&mut backoff).await?;
                }
            }
        }
        let settings = eo(self);
        if let Err(e) = tokio::select! {
            r = settings.admin.create_compacted_topic(&settings.checkpoint_topic, settings.replication_factor, ADMIN_TIMEOUT) => r,
            _ = self.abort.cancelled() => return Err(Stop::Abort),
        } {
            warn!(topic = %settings.checkpoint_topic, error = %e, "Could not create the checkpoint topic; it must exist.");
        }
        let mut backoff = RESEND_BACKOFF;
        loop {
            let eo = eo(self);
            let (props, topic, key) = (
                eo.props.clone(),
                eo.checkpoint_topic.clone(),
                eo.transactional_id.clone(),
            );
            let read = tokio::task::spawn_blocking(move || {
                read_last_committed_blocking(
                    &props,
                    &topic,
                    key.as_bytes(),
                    CHECKPOINT_READ_TIMEOUT,
                )
            });
            let res = tokio::select! {
                r = read => r.unwrap_or_else(|e| Err(e.to_string())),
                _ = self.abort.cancelled() => return Err(Stop::Abort),
            };
            match res {
                Ok(value) => {
                    let cp = match value {
                        Some(v) => Checkpoint::decode(&v).map_err(|e| {
                            Stop::Restart(format!(
                                "the checkpoint of {} in `{}` is unreadable ({e}); refusing to guess \
                                 what is in Kafka",
                                eo.transactional_id, eo.checkpoint_topic
                            ))
                        })?,
                        None => Checkpoint::default(),
                    };
                    info!(
                        transactional_id = %eo.transactional_id,
                        checkpoint_topic = %eo.checkpoint_topic,
                        settled_below = cp.low,
                        ranges_above = cp.ranges(),
                        transaction_max_events = eo.max_events,
                        "Exactly-once: transactions ready; buffer records already in Kafka are skipped."
                    );
                    return Ok(cp);
                }
                Err(e) => {
                    warn!(topic = %eo.checkpoint_topic, error = %e, retry_in = ?backoff, "Could not read the last checkpoint yet; retrying.");
                    self.pause(&mut backoff).await?;
                }
            }
        }
    }

    async fn pause(&self, backoff: &mut Duration) -> Result<(), Stop> {
        tokio::select! {
            _ = tokio::time::sleep(*backoff) => {}
            _ = self.abort.cancelled() => return Err(Stop::Abort),
        }
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
        Ok(())
    }

    /// Replace an unusable producer and read the checkpoint again: what a
    /// failed commit left in Kafka decides what is re-sent.
    async fn restart_producer(&mut self, reason: &str) -> Result<Checkpoint, Stop> {
        eo_mut(self).offsets.aborted();
        warn!(
            reason,
            "Kafka transactional producer unusable; creating it again."
        );
        let props = eo(self).props.clone();
        let client = eo(self).client.clone();
        let new = Producer::create(&props, client, 1)
            .map_err(|e| Stop::Restart(format!("creating the Kafka producer: {e}")))?;
        let old = std::mem::replace(&mut self.producer, new);
        old.purge();
        let _ = tokio::task::spawn_blocking(move || drop(old)).await;
        self.start_transactions().await
    }

    /// Stop: abort what is open (its batches stay in the disk buffer), report.
    async fn finish_exactly_once(mut self, open: Option<Open>) -> Result<(), ComponentError> {
        if let Some(o) = open {
            let _ = self.abort_transaction(o, "stopping").await;
        }
        self.shared.closing.store(true, Ordering::Release);
        let eo = eo(&self);
        info!(
            transactional_id = %eo.transactional_id,
            commits = eo.commits,
            aborts = eo.aborts,
            events_per_commit = eo.committed_events.checked_div(eo.commits).unwrap_or(0),
            commit_secs = format_args!("{:.3}", eo.commit_time.as_secs_f64()),
            skipped_events = eo.skipped,
            "Exactly-once Kafka sink stopped."
        );
        self.producer.purge();
        self.finish().await
    }
}

/// The disk buffer position of the batch `recv` returned last.
fn position(cx: &SinkContext) -> Option<Position> {
    let d = cx.input.disk()?;
    Some(Position {
        seq: d.last_seq()?,
        bytes: d.last_bytes(),
    })
}

fn fail_all(entries: Vec<Entry>) {
    for e in entries {
        e.ack.resolve(AckStatus::Errored);
    }
}

fn fenced_message(sink: &KafkaSink, e: &TxnError) -> String {
    format!(
        "another producer with transactional.id {} took over ({e}): this sink stops producing; \
         is a second sluice running on a copy of this data directory?",
        eo(sink).transactional_id
    )
}

fn join_error(e: &tokio::task::JoinError) -> TxnError {
    TxnError::other(format!("the blocking Kafka call did not complete: {e}"))
}
