//! Commands other than `run` that work on a config's surroundings rather than
//! run the pipeline: `sluice buffer` (inspect and replay a disk buffer),
//! `sluice tenant` (onboarding tenants on the brokers) and the graph
//! `sluice validate --graph/--dot` prints; `sluice top` and `sluice tap`, clients
//! of a running daemon's API.
//! Each parses its arguments and prints; the work it does lives with the
//! component it is about where one exists.

pub mod archive;
pub mod buffer;
pub mod graph;
mod http;
mod progress;
pub mod tap;
pub mod tenant;
pub mod top;
