//! Sinks: where events leave. Each kind lives in its own module with its config.
//!
//! A sink takes batches from its own buffer, delivers them under its guarantee,
//! and resolves each batch's acknowledgement: `Delivered` only once the data is
//! where the guarantee says (written and, for tracked batches, fsynced for files).

pub mod archive;
pub mod file;
pub mod forward;
pub mod kafka;

use std::io::Write;

use crate::ack::AckStatus;
use crate::config::{SinkConfig, SinkKind};
use crate::encoding::Encoding;
use crate::metrics::Counters;
use crate::topology::{ComponentError, SinkContext, Task};

/// Build a sink's task: every fallible start-up act happens here.
pub async fn build(config: &SinkConfig, cx: SinkContext) -> Result<Task, ComponentError> {
    let encoding = config.encoding.unwrap_or(Encoding::Raw);
    match &config.kind {
        SinkKind::Stdout(_) => Ok(Box::pin(stdout(encoding, cx))),
        SinkKind::Null(_) => Ok(Box::pin(null(cx))),
        SinkKind::File(c) => file::build(c.clone(), encoding, cx),
        SinkKind::Kafka(c) => kafka::build(c.clone(), encoding, cx),
        SinkKind::Forward(c) => forward::build(c.clone(), cx),
        SinkKind::Archive(c) => {
            let data_dir = cx.reload.borrow().global.data_dir.clone();
            archive::build(c.clone(), config.encoding, cx, &data_dir)
        }
    }
}

/// `type = "stdout"`: encoded events on standard output, flushed per batch group.
async fn stdout(encoding: Encoding, mut cx: SinkContext) -> Result<(), ComponentError> {
    let mut buf = Vec::with_capacity(256 * 1024);
    loop {
        let first = tokio::select! {
            biased;
            _ = cx.abort.cancelled() => return Ok(()),
            b = cx.input.recv() => match b { Some(b) => b, None => return Ok(()) },
        };
        let mut group = vec![first];
        while let Some(b) = cx.input.try_recv() {
            group.push(b);
            if group.len() >= 256 {
                break;
            }
        }
        buf.clear();
        let mut events = 0;
        for b in &group {
            events += b.len();
            for e in b.events.iter() {
                encoding.encode(e, &mut buf, true);
            }
        }
        // Standard output is a blocking handle; write off the runtime threads.
        let data = std::mem::take(&mut buf);
        let (data, res) = tokio::task::spawn_blocking(move || {
            let mut out = std::io::stdout().lock();
            let r = out.write_all(&data).and_then(|()| out.flush());
            (data, r)
        })
        .await
        .map_err(|e| ComponentError::Other(format!("stdout writer failed: {e}")))?;
        buf = data;
        let status = match res {
            Ok(()) => {
                Counters::add(&cx.counters.events_out, events);
                AckStatus::Delivered
            }
            Err(e) => {
                Counters::add(&cx.counters.errors, events);
                tracing::error!(error = %e, "Writing to stdout failed.");
                AckStatus::Errored
            }
        };
        for b in group {
            b.ack.resolve(status);
        }
    }
}

/// `type = "null"`: discards events, counting them delivered.
async fn null(mut cx: SinkContext) -> Result<(), ComponentError> {
    loop {
        let b = tokio::select! {
            biased;
            _ = cx.abort.cancelled() => return Ok(()),
            b = cx.input.recv() => match b { Some(b) => b, None => return Ok(()) },
        };
        Counters::add(&cx.counters.events_out, b.len());
        b.ack.resolve(AckStatus::Delivered);
    }
}
