//! sluice: a log pipeline daemon — sources → routes → buffers → sinks, with
//! end-to-end acknowledgements. README.md is the front page; `docs/` the reference,
//! `docs/architecture.md` the tour of this crate.
//!
//! What each module holds, in the order data moves:
//!
//! - [`config`]: the TOML model, loading (interpolation, spans, unknown keys with a
//!   did-you-mean) and pure validation; each kind's own struct lives beside it.
//! - [`sources`]: where events enter — `stdin`, `exec`, `pipe`, `forward`, `fuse`;
//!   [`framing`] cuts their byte streams into lines.
//! - [`event`] and [`ack`]: the unit of data (`Event`, Arc-shared `EventBatch`) and
//!   the token that tells a source what became of its batch.
//! - [`route`]: tenant, rules, bucket, rate_limit and filter routes, run inline in
//!   the sender.
//! - [`topology`]: builds every component, wires outputs to buffers, runs them and
//!   stops them in order; [`topology::output`] is the fan-out.
//! - [`buffer`]: each sink's queue — bounded memory, or disk (`sluice-wal`) — and
//!   the `sluice buffer` commands.
//! - [`sinks`]: where events leave — `file`, `stdout`, `null`, `kafka`, `forward`;
//!   [`encoding`] turns events into bytes, [`template`] renders paths, topics, keys.
//! - [`kafka`]: the librdkafka wrapper (the only `rdkafka` importer).
//! - Around them: [`cli`] (commands, exit codes, signals), [`commands`] (`sluice
//!   tenant`: topics, ACLs, credentials and bundles on the brokers), [`logging`] (format,
//!   colour), [`metrics`] (per-component counters), [`dirs`] (directories components
//!   need, with errors that say why they cannot be made), [`systemd`] (readiness and
//!   reload notifications to the service manager).

pub mod ack;
pub mod api;
pub mod buffer;
pub mod cli;
pub mod commands;
pub mod config;
pub mod dirs;
pub mod encoding;
pub mod event;
pub mod fault;
pub mod framing;
pub mod host;
pub mod kafka;
pub mod latency;
pub mod logging;
pub mod metrics;
pub mod route;
pub mod sinks;
pub mod sources;
pub mod systemd;
pub mod template;
pub mod tls;
pub mod topology;

/// An I/O error's text without the "(os error N)" noise.
pub fn error_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}
