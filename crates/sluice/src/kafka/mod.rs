//! Kafka client plumbing: the only module that imports `rdkafka`.
//!
//! It hides the library behind a few plain types so that components (the Kafka
//! sink now, the Kafka source later) deal with records, delivery outcomes and
//! error classes, never with rdkafka generics or FFI:
//!
//! - [`Properties`]: librdkafka settings, our defaults first, the user's
//!   `[..librdkafka]` table last so it always wins, aliases included
//!   (`request.required.acks` replaces our `acks`).
//! - [`Producer`]: a producer with its own thread polling delivery reports, whose
//!   reports are handed to a [`Tracker`] per record, the `Arc` given at send time.
//! - [`Failure`] and [`FailureClass`]: what a delivery or enqueue error means for
//!   the caller (retry later, fail for good, or purged at shutdown).
//! - [`Admin`]: topic creation. ACL calls are deliberately absent: some brokers
//!   answer CreateAcls in a way that aborts librdkafka, taking the process down.
//!
//! Blocking calls (`flush`, metadata) are plain functions named `*_blocking`: the
//! caller runs them on `spawn_blocking`, never on the async worker threads.
//! librdkafka's own log lines and global errors are routed to `tracing` with the
//! component id, errors rate-limited.

mod admin;
pub mod consumer;
mod context;
mod failure;
mod producer;
mod properties;
mod transaction;

use std::time::Duration;

pub use admin::{Admin, CreateError};
pub use context::ClientEvents;
pub(crate) use context::Context;
pub use failure::{Failure, FailureClass};
pub use producer::{Producer, Record, TopicState, Tracker};
pub(crate) use properties::creation_error;
pub use properties::{Properties, check_property};
pub use transaction::{TxnError, read_last_committed_blocking};

/// How often a repeated problem is logged at most.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests;
