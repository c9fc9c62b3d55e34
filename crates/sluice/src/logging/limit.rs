//! Keeping log lines about bad input or failures from flooding the log: each
//! limiter lets some lines through and counts the ones it held back, so the
//! next line that goes out can say how many were suppressed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Lets one log line through per interval and counts the ones it held back.
#[derive(Debug)]
pub struct RateLimit {
    interval: Duration,
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl RateLimit {
    /// A limiter letting one line through per `interval`.
    pub fn new(interval: Duration) -> Self {
        RateLimit {
            interval,
            last: Mutex::new(None),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines held back since the last one)` when a line may be logged now.
    pub fn allow(&self) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < self.interval) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(Instant::now());
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

/// Per-key rate limits (one per topic, say), bounded in size.
#[derive(Debug)]
pub struct KeyedRateLimit {
    interval: Duration,
    keys: Mutex<HashMap<String, Instant>>,
}

impl KeyedRateLimit {
    /// One line per key per `interval`.
    pub fn new(interval: Duration) -> Self {
        KeyedRateLimit {
            interval,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a line about `key` may be logged now.
    pub fn allow(&self, key: &str) -> bool {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if keys.len() > 1024 {
            keys.retain(|_, t| now.duration_since(*t) < self.interval);
        }
        match keys.get_mut(key) {
            Some(t) if now.duration_since(*t) < self.interval => false,
            Some(t) => {
                *t = now;
                true
            }
            None => {
                keys.insert(key.to_owned(), now);
                true
            }
        }
    }
}

/// Lets at most [`BurstLimit::BURST`] WARN lines through per second: one per bad
/// connection normally, bounded under a flood (the rest are counted and reported).
#[derive(Debug)]
pub struct BurstLimit {
    window: Mutex<(Instant, u32)>,
    suppressed: AtomicU64,
}

impl Default for BurstLimit {
    fn default() -> Self {
        Self::new()
    }
}

impl BurstLimit {
    pub const BURST: u32 = 50;

    pub fn new() -> Self {
        BurstLimit {
            window: Mutex::new((Instant::now(), 0)),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(lines suppressed since the last one let through)` if a line may go out.
    pub fn allow(&self) -> Option<u64> {
        let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
        if w.0.elapsed() >= Duration::from_secs(1) {
            *w = (Instant::now(), 0);
        }
        if w.1 >= Self::BURST {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        w.1 += 1;
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_counts_what_it_holds_back() {
        let r = RateLimit::new(Duration::from_secs(3600));
        assert_eq!(r.allow(), Some(0));
        assert_eq!(r.allow(), None);
        assert_eq!(r.allow(), None);
        let k = KeyedRateLimit::new(Duration::from_secs(3600));
        assert!(k.allow("a"));
        assert!(!k.allow("a"));
        assert!(k.allow("b"));
    }

    #[test]
    fn log_limit_lets_a_burst_through_then_counts() {
        let l = BurstLimit::new();
        for _ in 0..BurstLimit::BURST {
            assert_eq!(l.allow(), Some(0));
        }
        assert_eq!(l.allow(), None);
        assert_eq!(l.allow(), None);
        assert_eq!(l.suppressed.load(Ordering::Relaxed), 2);
    }
}
