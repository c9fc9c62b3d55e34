//! The Kafka sink's topics: the rendered name of each event, creating topics
//! ahead of use and on first use, and the start-up probe of the cluster.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use tracing::{Instrument, info, warn};

use super::super::topic_name_error;
use super::super::topics::TopicStatus;
use crate::event::Event;

use super::*;

impl KafkaSink {
    pub(super) fn current_topic(&self) -> &str {
        self.static_topic.as_deref().unwrap_or(&self.topic_buf)
    }

    /// Render the event's topic into `topic_buf` (unless static) and check it.
    pub(super) fn topic_for(&mut self, e: &Event) -> Result<(), String> {
        if self.static_topic.is_some() {
            return Ok(());
        }
        self.topic_buf.clear();
        self.topic_template.render(e, &mut self.topic_buf);
        if self.topic_buf == self.last_topic {
            return Ok(());
        }
        match topic_name_error(&self.topic_buf) {
            Some(reason) => Err(reason),
            None => {
                if self.admin.is_none() {
                    self.last_topic.clone_from(&self.topic_buf);
                }
                Ok(())
            }
        }
    }

    /// Before creating `first`, find the other topics the rest of the batch needs
    /// that are not known yet and create them all in one request: one round trip
    /// instead of one per topic (a tenant route's first batches name thousands).
    /// Those not created are left to [`Self::ensure_topic`], one by one.
    pub(super) async fn create_ahead(&mut self, first: &str, rest: &[Event]) {
        let (Some(admin), Some(ct)) = (&self.admin, self.config.create_topics) else {
            return;
        };
        if self.static_topic.is_some() {
            return;
        }
        let mut names = vec![first.to_owned()];
        let mut seen: HashSet<String> = HashSet::from([first.to_owned()]);
        let mut buf = String::new();
        for e in rest {
            if names.len() >= CREATE_AHEAD_MAX {
                break;
            }
            buf.clear();
            self.topic_template.render(e, &mut buf);
            if topic_name_error(&buf).is_none()
                && !self.topics.contains_key(&buf)
                && seen.insert(buf.clone())
            {
                names.push(buf.clone());
            }
        }
        if names.len() == 1 {
            return;
        }
        let created = tokio::select! {
            r = admin.create_topics(&names, ct.partitions, ct.replication_factor, ADMIN_TIMEOUT) => r,
            _ = self.abort.cancelled() => return,
        };
        if let Ok(ready) = created {
            info!(
                requested = names.len(),
                ready = ready.len(),
                partitions = ct.partitions,
                replication_factor = ct.replication_factor,
                "Kafka topics ready."
            );
            for t in ready {
                self.topics.insert(t, TopicStatus::Ready);
            }
        }
    }

    /// Create `topic` once (with `create_topics`), remembering the outcome.
    pub(super) async fn ensure_topic(&mut self, topic: &str) -> Ensure {
        match self.topics.get(topic) {
            Some(TopicStatus::Ready) => return Ensure::Ready,
            Some(TopicStatus::Failed(at, reason)) if at.elapsed() < CREATE_FAILED_RETRY => {
                return Ensure::Failed(reason.clone());
            }
            _ => {}
        }
        let (Some(admin), Some(ct)) = (&self.admin, self.config.create_topics) else {
            return Ensure::Ready;
        };
        let created = tokio::select! {
            r = admin.create_topic(topic, ct.partitions, ct.replication_factor, ADMIN_TIMEOUT) => r,
            _ = self.abort.cancelled() => return Ensure::Later(Duration::ZERO),
        };
        match created {
            Ok(()) => {
                info!(
                    topic,
                    partitions = ct.partitions,
                    replication_factor = ct.replication_factor,
                    "Kafka topic ready."
                );
                self.topics.insert(topic.to_owned(), TopicStatus::Ready);
                self.create_backoff = RESEND_BACKOFF;
                Ensure::Ready
            }
            Err(e) if e.permanent => {
                self.topics.insert(
                    topic.to_owned(),
                    TopicStatus::Failed(Instant::now(), e.reason.clone()),
                );
                Ensure::Failed(format!("cannot create topic: {}", e.reason))
            }
            Err(e) => {
                let wait = self.create_backoff;
                self.create_backoff = (wait * 2).min(MAX_BACKOFF);
                warn!(topic, reason = %e.reason, retry_in_secs = wait.as_secs(), "Cannot create Kafka topic yet; holding its events.");
                Ensure::Later(wait)
            }
        }
    }

    /// Log whether the cluster answers, without holding up the sink.
    pub(super) fn spawn_probe(&self) {
        let producer = self.producer.clone();
        let brokers = self.config.brokers.clone();
        let client = self.shared.client.clone();
        let task = async move {
            let answer =
                tokio::task::spawn_blocking(move || producer.probe_blocking(PROBE_TIMEOUT)).await;
            match answer {
                Ok(Ok(n)) => {
                    info!(brokers = %brokers, cluster_brokers = n, "Kafka cluster reachable.")
                }
                Ok(Err(e)) => {
                    if !client.brokers_down() {
                        warn!(brokers = %brokers, error = %e, "Kafka brokers unreachable at start; events queue until they answer.");
                    }
                }
                Err(_) => {}
            }
        };
        tokio::spawn(task.instrument(tracing::Span::current()));
    }
}
