//! Per-component counters: plain atomics, cheap to bump on the hot path, read for the
//! shutdown report and periodic log lines. Queue depth is two counters (in, out),
//! never a gauge.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Counters of one component.
#[derive(Debug, Default)]
pub struct Counters {
    /// Events received (sources: produced; sinks: taken from their buffer).
    pub events_in: AtomicU64,
    /// Body bytes received.
    pub bytes_in: AtomicU64,
    /// Events delivered (sinks) or emitted (sources).
    pub events_out: AtomicU64,
    /// Events dropped by policy (`when_full`, quota, oversize, unknown tenant).
    pub dropped: AtomicU64,
    /// Events whose delivery failed.
    pub errors: AtomicU64,
    /// Lines truncated to `max_line_bytes` (line sources).
    pub truncated: AtomicU64,
}

impl Counters {
    /// Add to a counter.
    #[inline]
    pub fn add(c: &AtomicU64, n: usize) {
        c.fetch_add(n as u64, Relaxed);
    }

    fn summary(&self) -> String {
        let mut s = String::new();
        let parts = [
            ("in", &self.events_in),
            ("out", &self.events_out),
            ("dropped", &self.dropped),
            ("errors", &self.errors),
            ("truncated", &self.truncated),
        ];
        for (name, c) in parts {
            let v = c.load(Relaxed);
            if v > 0 || name == "in" || name == "out" {
                let _ = write!(s, "{name}={v} ");
            }
        }
        s.trim_end().to_owned()
    }
}

type Named = Vec<(String, Arc<Counters>)>;

/// All components' counters, by kind and name.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    inner: Arc<Mutex<Named>>,
}

impl Registry {
    /// Counters for a component (`"sink.out"`), created on first use.
    pub fn component(&self, id: &str) -> Arc<Counters> {
        let mut all = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, c)) = all.iter().find(|(n, _)| n == id) {
            return c.clone();
        }
        let c = Arc::new(Counters::default());
        all.push((id.to_owned(), c.clone()));
        c
    }

    /// One line per component, for the shutdown report.
    pub fn report(&self) -> Vec<String> {
        let all = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        all.iter()
            .map(|(n, c)| format!("{n}: {}", c.summary()))
            .collect()
    }

    /// Total of one counter over all components whose id starts with `prefix`.
    pub fn total(&self, prefix: &str, pick: fn(&Counters) -> &AtomicU64) -> u64 {
        let all = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        all.iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(_, c)| pick(c).load(Relaxed))
            .sum()
    }
}
