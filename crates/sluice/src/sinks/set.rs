//! Sinks of a config run outside a pipeline: the commands that deliver stored
//! events somewhere else (`sluice buffer replay`, `sluice archive restore`)
//! build the chosen sinks, each behind its own memory buffer that blocks when
//! full, hand every batch to all of them, and wait for them to drain.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::buffer::{self, BufferSender, WhenFull};
use crate::config::{Config, SinkConfig};
use crate::event::EventBatch;
use crate::metrics::Counters;
use crate::topology::{ComponentError, SinkContext};

/// Running sinks that batches can be sent to.
pub struct SinkSet {
    senders: Vec<BufferSender>,
    tasks: Vec<JoinHandle<Result<(), ComponentError>>>,
    names: Vec<String>,
    /// Kept so the sinks see the config they were built from.
    _reload: tokio::sync::watch::Sender<Arc<Config>>,
}

impl SinkSet {
    /// Build `sinks` (sinks of `cfg`) and start them on the current runtime.
    pub async fn build(cfg: Config, sinks: &[SinkConfig]) -> anyhow::Result<SinkSet> {
        let (reload_tx, reload) = tokio::sync::watch::channel(Arc::new(cfg));
        let abort = CancellationToken::new();
        let mut set = SinkSet {
            senders: Vec::new(),
            tasks: Vec::new(),
            names: Vec::new(),
            _reload: reload_tx,
        };
        for s in sinks {
            let counters = Arc::new(Counters::default());
            let (tx, rx) = buffer::memory(
                buffer::DEFAULT_MAX_EVENTS,
                WhenFull::Block,
                counters.clone(),
            );
            let cx = SinkContext {
                name: s.name.as_str().into(),
                input: rx,
                abort: abort.clone(),
                counters,
                reload: reload.clone(),
            };
            let task = super::build(s, cx)
                .await
                .map_err(|e| anyhow::anyhow!("sinks.{}: {e}", s.name))?;
            set.tasks.push(tokio::spawn(task));
            set.senders.push(tx);
            set.names.push(s.name.clone());
        }
        Ok(set)
    }

    /// The sinks' names, in config order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Hand `batch` to every sink (waiting for room). Its token resolves once
    /// every sink settled its copy; the caller's own reference is resolved
    /// `Delivered` here, so only the sinks' outcomes count.
    pub async fn send(&self, batch: EventBatch) {
        for s in &self.senders {
            s.send(batch.share(), true).await;
        }
        batch.ack.resolve(crate::ack::AckStatus::Delivered);
    }

    /// Close the sinks' inputs and wait until they delivered what they hold;
    /// returns what went wrong, one line per failed sink.
    pub async fn finish(self) -> Vec<String> {
        drop(self.senders);
        let mut problems = Vec::new();
        for (t, name) in self.tasks.into_iter().zip(&self.names) {
            match t.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => problems.push(format!("sinks.{name} failed: {e}")),
                Err(e) => problems.push(format!("sinks.{name} task failed: {e}")),
            }
        }
        problems
    }
}
