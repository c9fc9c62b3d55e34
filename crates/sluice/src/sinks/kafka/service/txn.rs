//! The exactly-once loop (`exactly_once = true`): disk buffer → transactions.
//!
//! ```text
//!  start: init_transactions (fences the previous incarnation, aborting its
//!         open transaction) → read the last committed checkpoint (read_committed)
//!  loop:  batch from the disk buffer (seq s)
//!           s covered by the checkpoint → already in Kafka: acknowledge, skip
//!           else → begin (if none open), produce its records
//!         transaction_max_events reached, transaction_interval_ms passed, or input ended:
//!           a record refused at enqueue → abort; the batches resolve Errored (re-sent
//!           by the buffer)
//!           else → produce the checkpoint (positions settled after this commit) to the
//!                  checkpoint topic, commit (librdkafka flushes the records first; one
//!                  that failed fails the commit); on success the batches resolve as
//!                  delivered
//! ```
//! Failures: a retriable commit is retried; an abortable one (a record failed,
//! `INVALID_TXN_STATE` after the coordinator's timeout abort) aborts, and the
//! buffer sends the batches again; a fatal one recreates the producer
//! (`init_transactions` again) and re-reads the checkpoint, so a commit whose
//! outcome was unknown is settled by what Kafka holds. Fenced (a newer
//! producer with our `transactional.id`): the sink stops with an error. In every
//! case the batches of an unfinished transaction resolve `Errored` and stay in
//! the disk buffer: nothing is lost, and nothing committed is produced twice.

use tracing::debug;

use super::super::checkpoint::{self, Checkpoint};
use super::offsets::SourceOffsets;
use super::*;
use crate::ack::AckToken;
use crate::kafka::{Properties, TxnError, read_last_committed_blocking};

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
    deadline: Instant,
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
        let mut input_open = true;
        let mut max_seen: Option<u64> = None;
        loop {
            let due = open.as_ref().is_some_and(|o| {
                o.events >= eo(&self).max_events || !input_open || Instant::now() >= o.deadline
            });
            if due {
                let o = open.take().expect("checked above");
                match self.end_transaction(o, &mut cp, max_seen, &cx).await {
                    Ok(()) => {}
                    Err(Stop::Abort) => return self.finish_exactly_once(None).await,
                    Err(Stop::Fenced(m)) => return Err(ComponentError::Other(m)),
                    Err(Stop::Restart(reason)) => match self.restart_producer(&reason).await {
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
            let deadline = open.as_ref().map(|o| o.deadline);
            let batch = tokio::select! {
                biased;
                _ = cx.abort.cancelled() => return self.finish_exactly_once(open).await,
                _ = sleep_opt(deadline) => continue,
                b = cx.input.recv() => b,
            };
            let Some(EventBatch { events, ack }) = batch else {
                input_open = false;
                continue;
            };
            let Some(seq) = cx.input.disk().and_then(|d| d.last_seq()) else {
                // Built only with a disk buffer: every batch has a position.
                ack.resolve(AckStatus::Errored);
                return Err(ComponentError::Other(
                    "exactly_once: a batch without a disk buffer position".into(),
                ));
            };
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
                open = Some(Open {
                    entries: Vec::new(),
                    events: 0,
                    deadline: Instant::now() + eo(&self).interval,
                });
            }
            let o = open.as_mut().expect("opened above");
            // Its reports only count; the commit decides the batch's outcome.
            let state = InFlight::new(self.shared.clone(), AckToken::none(), events.len());
            o.events += events.len();
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

    /// Wait for the transaction's reports, then commit it with its checkpoint,
    /// or abort it.
    async fn end_transaction(
        &mut self,
        open: Open,
        cp: &mut Checkpoint,
        max_seen: Option<u64>,
        cx: &SinkContext,
    ) -> Result<(), Stop> {
        // A record refused at enqueue for a reason not its own: the batch must
        // go again, so nothing of this transaction may commit. (A record that
        // fails later fails the commit itself: librdkafka flushes the
        // transaction's records first and reports any failure as abortable.)
        if open
            .entries
            .iter()
            .any(|e| e.state.failed.load(Ordering::Relaxed) > 0)
        {
            return self.abort_transaction(open, "a record failed").await;
        }
        let mut next = cp.clone();
        for e in &open.entries {
            next.insert(e.seq);
        }
        // Every seq below this was settled before (or is in this transaction).
        let bound = max_seen.map_or(0, |m| m + 1);
        let low = cx
            .input
            .disk()
            .and_then(|d| d.first_unresolved())
            .map_or(bound, |f| f.min(bound));
        next.advance(low);
        if let Err(reason) = self.send_offsets().await {
            return self.abort_transaction(open, &reason).await;
        }
        if let Err(reason) = self.send_checkpoint(&next).await {
            return self.abort_transaction(open, &reason).await;
        }
        loop {
            let producer = self.producer.clone();
            let commit = tokio::task::spawn_blocking(move || {
                producer.commit_transaction_blocking(TXN_CALL_TIMEOUT)
            });
            let res = tokio::select! {
                r = commit => r.unwrap_or_else(|e| Err(join_error(&e))),
                _ = self.abort.cancelled() => {
                    fail_all(open.entries);
                    return Err(Stop::Abort);
                }
            };
            match res {
                Ok(()) => break,
                Err(e) if e.fenced() => {
                    fail_all(open.entries);
                    return Err(Stop::Fenced(fenced_message(self, &e)));
                }
                Err(e) if e.fatal => {
                    fail_all(open.entries);
                    return Err(Stop::Restart(format!("committing: {e}")));
                }
                Err(e) if e.abortable => {
                    return self
                        .abort_transaction(open, &format!("commit failed: {e}"))
                        .await;
                }
                Err(e) => {
                    warn!(error = %e, "Kafka transaction commit not confirmed yet; retrying.");
                }
            }
        }
        *cp = next;
        let eo = eo_mut(self);
        eo.commits += 1;
        eo.offsets.committed();
        let mut delivered = 0;
        for e in open.entries {
            let s = &e.state;
            let refused = s.rejected.load(Ordering::Relaxed) + s.dropped.load(Ordering::Relaxed);
            delivered += s.events.saturating_sub(refused);
            e.ack.resolve(if refused > 0 {
                AckStatus::Dropped
            } else {
                AckStatus::Delivered
            });
        }
        Counters::add(&self.shared.counters.events_out, delivered);
        debug!(
            events = delivered,
            low = cp.low,
            "Kafka transaction committed."
        );
        Ok(())
    }

    /// Kafka → Kafka: commit the consumed offsets of the open transaction's
    /// source events with it (`send_offsets_to_transaction`, one call per
    /// consumer group).
    async fn send_offsets(&mut self) -> Result<(), String> {
        for (group, offsets) in eo(self).offsets.pending() {
            let producer = self.producer.clone();
            let g = group.clone();
            let call = tokio::task::spawn_blocking(move || {
                producer.send_offsets_to_transaction_blocking(&g, &offsets, TXN_CALL_TIMEOUT)
            });
            let res = tokio::select! {
                r = call => r.unwrap_or_else(|e| Err(join_error(&e))),
                _ = self.abort.cancelled() => return Err("stopping".to_owned()),
            };
            res.map_err(|e| format!("committing the offsets of group `{group}`: {e}"))?;
        }
        Ok(())
    }

    /// Produce the checkpoint record into the open transaction (its delivery
    /// is part of the commit).
    async fn send_checkpoint(&mut self, next: &Checkpoint) -> Result<(), String> {
        let value = next.encode();
        let state = InFlight::new(self.shared.clone(), AckToken::none(), 1);
        let eo = eo(self);
        let record = Record {
            topic: &eo.checkpoint_topic,
            key: Some(eo.transactional_id.as_bytes()),
            payload: &value,
            timestamp_ms: None,
            partition: Some(0),
        };
        let res = loop {
            match self.producer.send(record, state.clone()) {
                Ok(()) => break Ok(()),
                Err(f) if f.is_queue_full() || f.class() == FailureClass::Retriable => {
                    tokio::select! {
                        _ = tokio::time::sleep(QUEUE_FULL_WAIT) => {}
                        _ = self.abort.cancelled() => {
                            state.fail(1);
                            break Err("stopping".to_owned());
                        }
                    }
                }
                Err(f) => {
                    state.fail(1);
                    break Err(format!(
                        "producing the checkpoint to `{}`: {f}",
                        record.topic
                    ));
                }
            }
        };
        state.release(1);
        res
    }

    /// Abort the open transaction; its batches resolve `Errored` and the disk
    /// buffer sends them again.
    async fn abort_transaction(&mut self, open: Open, reason: &str) -> Result<(), Stop> {
        eo_mut(self).aborts += 1;
        eo_mut(self).offsets.aborted();
        warn!(
            reason,
            events = open.events,
            "Kafka transaction aborted; its events stay in the disk buffer and are sent again."
        );
        let mut tries = 0;
        let res = loop {
            let producer = self.producer.clone();
            let timeout = if self.abort.is_cancelled() {
                Duration::from_secs(1)
            } else {
                TXN_CALL_TIMEOUT
            };
            let abort =
                tokio::task::spawn_blocking(move || producer.abort_transaction_blocking(timeout));
            let res = abort.await.unwrap_or_else(|e| Err(join_error(&e)));
            tries += 1;
            match res {
                Ok(()) => break Ok(()),
                Err(e) if e.fenced() => break Err(Stop::Fenced(fenced_message(self, &e))),
                Err(e) if e.fatal => break Err(Stop::Restart(format!("aborting: {e}"))),
                Err(_) if self.abort.is_cancelled() && tries > 1 => break Err(Stop::Abort),
                Err(e) => warn!(error = %e, "Kafka transaction abort not confirmed yet; retrying."),
            }
        };
        fail_all(open.entries);
        res
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
            skipped_events = eo.skipped,
            "Exactly-once Kafka sink stopped."
        );
        self.producer.purge();
        self.finish().await
    }
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
