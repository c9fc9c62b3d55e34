//! The Kafka sink's resends: records a delivery report returned as retriable go
//! back to the producer after a backoff, once their topics are checked.

use std::collections::HashSet;

use super::*;

impl KafkaSink {
    pub(super) fn advance_resend(
        &mut self,
        records: Vec<OwnedRecord>,
        state: Arc<InFlight>,
        mut next: usize,
    ) -> Advance {
        while next < records.len() {
            let r = &records[next];
            let record = Record {
                topic: &r.topic,
                key: r.key.as_deref(),
                payload: &r.payload,
                timestamp_ms: r.timestamp_ms,
                // An explicit partition stays; otherwise the partitioner chooses again.
                partition: r.partition.filter(|_| self.partition_template.is_some()),
            };
            match self.producer.send(record, state.clone()) {
                Ok(()) => next += 1,
                Err(f) if f.is_queue_full() => {
                    return Advance::Blocked(
                        Job::Resend {
                            records,
                            state,
                            next,
                        },
                        QUEUE_FULL_WAIT,
                    );
                }
                Err(f) if f.class() == FailureClass::Retriable => {
                    return Advance::Blocked(
                        Job::Resend {
                            records,
                            state,
                            next,
                        },
                        RESEND_BACKOFF,
                    );
                }
                Err(f) => {
                    self.shared.log_permanent(&r.topic, &f, 1);
                    if f.is_record_specific() {
                        state.reject(1);
                    } else {
                        state.fail(1);
                    }
                    next += 1;
                }
            }
        }
        state.release(1);
        Advance::Done
    }

    /// Take a returned batch's failed records for resending. Topics are looked up
    /// first: one the cluster says does not exist fails for good (or is created,
    /// with `create_topics`) instead of timing out again and again.
    pub(super) async fn prepare_resend(&mut self, state: Arc<InFlight>) -> Option<Job> {
        let mut records = std::mem::take(&mut *state.lock_resend());
        let topics: HashSet<String> = records.iter().map(|r| r.topic.clone()).collect();
        for topic in topics {
            let producer = self.producer.clone();
            let t = topic.clone();
            let lookup = tokio::task::spawn_blocking(move || {
                producer.topic_state_blocking(&t, ADMIN_TIMEOUT)
            });
            let answer = tokio::select! {
                r = lookup => r.unwrap_or_else(|e| Err(e.to_string())),
                _ = self.abort.cancelled() => Err("stopping".into()),
            };
            if answer != Ok(TopicState::Missing) {
                // Exists, or no answer (broker down): librdkafka queues them again.
                continue;
            }
            self.topics.remove(&topic);
            if self.last_topic == topic {
                self.last_topic.clear();
            }
            let refused = match self.ensure_topic(&topic).await {
                Ensure::Ready if self.admin.is_some() => None,
                Ensure::Ready => {
                    Some("topic does not exist and create_topics is not set".to_owned())
                }
                Ensure::Failed(reason) => Some(reason),
                // Creation failed for now: resend; a missing topic times out again.
                Ensure::Later(_) => None,
            };
            if let Some(reason) = refused {
                let before = records.len();
                records.retain(|r| r.topic != topic);
                let n = before - records.len();
                self.shared.log_permanent(&topic, &reason, n);
                state.rejected.fetch_add(n, Ordering::Relaxed);
            }
        }
        if records.is_empty() {
            state.remaining.fetch_add(1, Ordering::AcqRel);
            state.release(1);
            return None;
        }
        state
            .remaining
            .fetch_add(records.len() + 1, Ordering::AcqRel);
        Some(Job::Resend {
            records,
            state,
            next: 0,
        })
    }
}
