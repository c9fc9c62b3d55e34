//! The API (`[api]`): a small HTTP/1.1 server for operators and their
//! orchestrators, off unless `address` is set.
//!
//! - `GET /metrics`: every component's counters and every sink buffer's level in
//!   the OpenMetrics text format (see [`exposition`]). The hot path only bumps
//!   the plain atomics of [`crate::metrics::Counters`]; a scrape reads them.
//! - `GET /health`: 200 while the pipeline runs; 503 while it starts (components
//!   building) and once it stops (sources stopped, sinks draining).
//! - `GET /ready`: 200 once every component was built (sources bound, sinks
//!   connected as far as their build goes) and while running; 503 otherwise.
//! - `GET /tap/NAME[?limit=N]`: the events leaving a source or route, as JSON
//!   lines, streamed (see [`tap`]: bounded, lossy, counted).
//!
//! The server starts before the components are built (so `/health` answers 503
//! during a slow start) and ends after the stop report. It binds at start, so a
//! port in use fails the start like a source's would.
//!
//! Limits: request heads over 16 KiB get 431, a head not complete within 10 s
//! ends the connection, at most 64 connections at once (more are closed at
//! accept), only `GET`/`HEAD` (405 otherwise), unknown paths 404. No label takes
//! its values from clients except the bounded `tenant` label.

pub mod exposition;
mod server;
pub mod tap;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use serde::Deserialize;

pub use server::{ApiServer, bind};

use crate::config::{Check, Validate};

/// `[api]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
// Unknown keys are reported by the loader (with a suggestion), not by serde.
pub struct ApiConfig {
    /// Where to listen (`127.0.0.1:9598`); no API when absent.
    #[serde(default)]
    pub address: Option<SocketAddr>,
    /// Tenants exported with their own `tenant` label; the rest are summed under
    /// `tenant="other"`.
    #[serde(default = "default_max_tenant_series")]
    pub max_tenant_series: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            address: None,
            max_tenant_series: default_max_tenant_series(),
        }
    }
}

fn default_max_tenant_series() -> usize {
    10_000
}

impl Validate for ApiConfig {
    fn validate(&self, v: &mut Check<'_, '_>) {
        if self.max_tenant_series == 0 {
            v.error("max_tenant_series", "must be at least 1");
        }
    }
}

/// The pipeline's phase, as `/health` and `/ready` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Components are being built.
    Starting = 0,
    /// Every component runs.
    Running = 1,
    /// Sources stopped; sinks drain.
    Stopping = 2,
}

/// Shared phase, set by the topology, read by the server.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<AtomicU8>);

impl Health {
    /// Move to `phase`.
    pub fn set(&self, phase: Phase) {
        self.0.store(phase as u8, Ordering::Relaxed);
    }

    /// The phase now.
    pub fn get(&self) -> Phase {
        match self.0.load(Ordering::Relaxed) {
            0 => Phase::Starting,
            1 => Phase::Running,
            _ => Phase::Stopping,
        }
    }
}
