//! `type = "null"`: discards events, counting them delivered (benchmarks, and
//! the far end of a pipeline under test).

use crate::ack::AckStatus;
use crate::metrics::Counters;
use crate::topology::{ComponentError, SinkContext};

/// `type = "null"`: discards events, counting them delivered.
pub async fn run(mut cx: SinkContext) -> Result<(), ComponentError> {
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
