//! `type = "stdout"`: encoded events on standard output.

use std::io::Write;

use crate::ack::AckStatus;
use crate::encoding::Encoding;
use crate::metrics::Counters;
use crate::topology::{ComponentError, SinkContext};

/// `type = "stdout"`: encoded events on standard output, flushed per batch group.
pub async fn run(encoding: Encoding, mut cx: SinkContext) -> Result<(), ComponentError> {
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
