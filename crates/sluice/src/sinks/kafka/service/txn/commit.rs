//! Ending a transaction: the checkpoint and the source offsets go into it, then
//! the commit (while it is in flight the loop's read-ahead keeps taking batches
//! from the disk buffer for the next one), or the abort.

use tracing::debug;

use super::*;

impl KafkaSink {
    /// Commit the transaction with its checkpoint (`Ok(true)`), or abort it
    /// (`Ok(false)`: its batches go back to the disk buffer). While the commit
    /// is in flight, batches are read ahead into `ahead`.
    pub(super) async fn end_transaction(
        &mut self,
        open: Open,
        cp: &mut Checkpoint,
        max_seen: Option<u64>,
        cx: &mut SinkContext,
        ahead: &mut Ahead,
    ) -> Result<bool, Stop> {
        let ending = Instant::now();
        // A record refused at enqueue for a reason not its own: the batch must
        // go again, so nothing of this transaction may commit. (A record that
        // fails later fails the commit itself: librdkafka flushes the
        // transaction's records first and reports any failure as abortable.)
        if open
            .entries
            .iter()
            .any(|e| e.state.failed.load(Ordering::Relaxed) > 0)
        {
            return self
                .abort_transaction(open, "a record failed")
                .await
                .map(|()| false);
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
            return self.abort_transaction(open, &reason).await.map(|()| false);
        }
        if let Err(reason) = self.send_checkpoint(&next).await {
            return self.abort_transaction(open, &reason).await.map(|()| false);
        }
        // Flush first, then commit (which would flush too): the debug report
        // tells the delivery of the transaction's records from the commit's
        // own round trips.
        let flushing = Instant::now();
        let producer = self.producer.clone();
        let mut flush =
            tokio::task::spawn_blocking(move || producer.flush_blocking(TXN_CALL_TIMEOUT));
        if self.read_ahead_until(&mut flush, cx, ahead).await.is_none() {
            fail_all(open.entries);
            return Err(Stop::Abort);
        }
        let flushed = flushing.elapsed();
        loop {
            let producer = self.producer.clone();
            let mut commit = tokio::task::spawn_blocking(move || {
                producer.commit_transaction_blocking(TXN_CALL_TIMEOUT)
            });
            let Some(res) = self.read_ahead_until(&mut commit, cx, ahead).await else {
                fail_all(open.entries);
                return Err(Stop::Abort);
            };
            let res = res.unwrap_or_else(|e| Err(join_error(&e)));
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
                        .await
                        .map(|()| false);
                }
                Err(e) => {
                    warn!(error = %e, "Kafka transaction commit not confirmed yet; retrying.");
                }
            }
        }
        *cp = next;
        let committing = ending.elapsed();
        let eo = eo_mut(self);
        eo.commits += 1;
        eo.committed_events += open.events as u64;
        eo.commit_time += committing;
        eo.offsets.committed();
        let mut delivered = 0;
        let batches = open.entries.len();
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
            batches,
            open_ms = ending.duration_since(open.begun).as_millis() as u64,
            commit_ms = committing.as_millis() as u64,
            flush_ms = flushed.as_millis() as u64,
            read_ahead_events = ahead.events,
            low = cp.low,
            "Kafka transaction committed."
        );
        Ok(true)
    }

    /// Wait for a blocking call (flush, commit) while taking batches from the
    /// disk buffer into `ahead` for the next transaction: librdkafka refuses
    /// records until the commit returns, but reading the buffer need not stop.
    /// `None`: the shutdown deadline passed.
    async fn read_ahead_until<T>(
        &self,
        call: &mut JoinHandle<T>,
        cx: &mut SinkContext,
        ahead: &mut Ahead,
    ) -> Option<Result<T, tokio::task::JoinError>> {
        let max_events = eo(self).max_events;
        loop {
            tokio::select! {
                biased;
                r = &mut *call => return Some(r),
                _ = self.abort.cancelled() => return None,
                b = cx.input.recv(), if ahead.has_room(max_events) => match b {
                    Some(b) => match position(cx) {
                        Some(pos) => ahead.push(b, pos),
                        // Not with a disk buffer (the loop stops on it).
                        None => b.ack.resolve(AckStatus::Errored),
                    },
                    None => ahead.ended = true,
                },
            }
        }
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
    pub(super) async fn abort_transaction(&mut self, open: Open, reason: &str) -> Result<(), Stop> {
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
}
