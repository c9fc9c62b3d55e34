//! Sources: where events enter. Each kind lives in its own module with its config.
//!
//! Line sources (stdin, exec, pipe; file has its own loop) share [`read_lines`]: read into a
//! [`LineFramer`], turn each read's complete lines into one batch, send it, and
//! repeat. They have nobody to acknowledge to, so their batches carry
//! [`AckToken::none`]; what sinks deliver or drop is counted there.

pub mod exec;
pub mod file;
pub mod forward;
pub mod fuse;
pub mod kafka;
pub mod pipe;
pub mod stdin;
pub mod syslog;

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

use crate::ack::AckToken;
use crate::config::{SourceConfig, SourceKind};
use crate::event::{Event, EventBatch, Origin, now_ns};
use crate::framing::LineFramer;
use crate::metrics::Counters;
use crate::topology::{ComponentError, SourceContext, Task};

/// The sinks the events of source `name` reach, directly or through routes.
pub(crate) fn reached_sinks<'a>(
    config: &'a crate::config::Config,
    name: &str,
) -> Vec<&'a crate::config::SinkConfig> {
    let component = |input: &str| input.split('.').next().unwrap_or(input).to_owned();
    let mut reached = std::collections::HashSet::from([name.to_owned()]);
    loop {
        let before = reached.len();
        for r in &config.routes {
            if r.inputs.iter().any(|i| reached.contains(&component(i))) {
                reached.insert(r.name.clone());
            }
        }
        if reached.len() == before {
            break;
        }
    }
    config
        .sinks
        .iter()
        .filter(|s| s.inputs.iter().any(|i| reached.contains(&component(i))))
        .collect()
}

/// Kafka → Kafka exactly once: when kafka source `name` feeds one sink only,
/// a kafka sink with `exactly_once = true`, that sink's name. The source then
/// commits no offsets itself; the sink commits them inside its transactions
/// (`send_offsets_to_transaction`).
pub(crate) fn offsets_in_transaction(config: &crate::config::Config, name: &str) -> Option<String> {
    let is_kafka = config
        .sources
        .iter()
        .any(|s| s.name == name && matches!(s.kind, SourceKind::Kafka(_)));
    match reached_sinks(config, name)[..] {
        [sink] if is_kafka => match &sink.kind {
            crate::config::SinkKind::Kafka(k) if k.exactly_once => Some(sink.name.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// Build a source's task: every fallible start-up act happens here.
pub async fn build(config: &SourceConfig, cx: SourceContext) -> Result<Task, ComponentError> {
    match &config.kind {
        SourceKind::Stdin(c) => stdin::build(c.clone(), cx),
        SourceKind::Exec(c) => exec::build(c.clone(), cx),
        SourceKind::File(c) => file::build(c.clone(), cx),
        SourceKind::Pipe(c) => pipe::build(c.clone(), cx).await,
        SourceKind::Fuse(c) => fuse::build(c.clone(), cx).await,
        SourceKind::Forward(c) => forward::build(c.clone(), cx).await,
        SourceKind::Syslog(c) => syslog::build(c.clone(), cx).await,
        SourceKind::Kafka(c) => kafka::build(c.clone(), cx),
    }
}

/// How a read loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadEnd {
    /// The stream ended.
    Eof,
    /// `stop` was cancelled.
    Stopped,
}

/// Bytes asked of one read.
const READ_CHUNK: usize = 256 * 1024;

/// Read lines from `reader` until end of stream or `stop`, sending one batch per
/// read. On end of stream an unterminated last line is sent too; on `stop` a
/// partial line is not (it would be a fragment) and its size is logged.
pub async fn read_lines<R: AsyncRead + Unpin>(
    reader: &mut R,
    framer: &mut LineFramer,
    cx: &SourceContext,
    origin: Option<&Arc<Origin>>,
    stop: Option<&CancellationToken>,
) -> std::io::Result<ReadEnd> {
    loop {
        framer.reserve(READ_CHUNK);
        let n = match stop {
            Some(stop) => tokio::select! {
                biased;
                r = reader.read_buf(framer.buffer()) => r?,
                _ = stop.cancelled() => {
                    if framer.pending() > 0 {
                        tracing::debug!(bytes = framer.pending(), "Partial line not sent at stop.");
                    }
                    return Ok(ReadEnd::Stopped);
                }
            },
            None => reader.read_buf(framer.buffer()).await?,
        };
        Counters::add(&cx.counters.bytes_in, n);
        let before = framer.truncated;
        // One allocation of the right size per read (a memchr pass is far
        // cheaper than growing the vector a dozen times).
        let mut events = Vec::with_capacity(framer.complete_lines() + 1);
        let time_ns = now_ns();
        // Fresh copies of the names per batch: every event clones them, and the
        // sink thread drops them; sharing one count across all batches would
        // bounce its cache line between the two threads on every event.
        let tag: Arc<str> = Arc::from(&*cx.tag);
        let name: Arc<str> = Arc::from(&*cx.name);
        let mut push = |body| {
            let mut ev = Event::new(body, time_ns, tag.clone(), name.clone());
            ev.origin = origin.cloned();
            events.push(ev);
        };
        if n == 0 {
            framer.finish(&mut push);
        } else {
            framer.drain_lines(&mut push);
        }
        Counters::add(&cx.counters.truncated, (framer.truncated - before) as usize);
        if !events.is_empty() {
            Counters::add(&cx.counters.events_out, events.len());
            cx.out.send(EventBatch::new(events, AckToken::none())).await;
        }
        if n == 0 {
            return Ok(ReadEnd::Eof);
        }
    }
}

/// Ask for a 1 MiB pipe buffer (Linux default 64 KiB): fewer reads, bigger
/// batches, and writers block less often. Best effort: the limit may be lower.
pub fn enlarge_pipe(fd: &impl std::os::fd::AsRawFd) {
    // SAFETY: fcntl on a valid descriptor we own; failure is harmless.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
}

fn default_max_line_bytes() -> usize {
    crate::framing::DEFAULT_MAX_LINE_BYTES
}
